//! Commands on DNS elements: mkdns, set, unset. (`peek` and `scrub` work
//! on any element: see `anchor`.)

use anyhow::Result;
use circuit_client::{Client, Path};
use clap::Subcommand;

use crate::cmd::failed;
use crate::values;

/// The DNS commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Start a DNS server (UDP and TCP on one port) on the host of PATH's server; `peek PATH` shows its address
    #[command(
        long_about = "Start a DNS server element at PATH: a real DNS server, UDP and TCP on one port, \
        on the host of PATH's server. ADDR is IP, IP:PORT or :PORT; without it the server's own IP and a free \
        port are used. `circuit peek PATH` prints the address and the records, `circuit scrub PATH` stops it.\n\n\
        Example:\n  circuit mkdns /X88550014d4c82e4d/mydns 127.0.0.1:7711"
    )]
    Mkdns(Mkdns),
    /// Add one resource record in zone-file syntax to the DNS element at PATH
    #[command(
        long_about = "Add one resource record to the DNS element at PATH, in zone-file syntax \
        (RFC 1035 §5): NAME [TTL] [CLASS] TYPE DATA. TTL defaults to 3600, CLASS to IN; names without a \
        final dot are taken from the root. Types: A, AAAA, CNAME, MX, NS, PTR, SRV, TXT, CAA, SOA and the \
        others hickory-proto parses. Queries get every record of the asked name and type.\n\n\
        Example:\n  circuit set /X88550014d4c82e4d/mydns \"miek.nl. 3600 IN MX 10 mx.miek.nl.\""
    )]
    Set(Set),
    /// Remove every record of NAME from the DNS element at PATH
    #[command(long_about = "Remove every record of NAME from the DNS element at PATH. NAME is \
        case-insensitive and its final dot is optional.\n\n\
        Example:\n  circuit unset /X88550014d4c82e4d/mydns miek.nl.")]
    Unset(Unset),
}

impl Cmd {
    /// Runs the command.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Cmd::Mkdns(a) => {
                let anchor = client.anchor(a.path.clone());
                anchor
                    .make_dns(a.addr.as_deref())
                    .await
                    .map_err(|e| failed("mkdns", &a.path, e))?;
            }
            Cmd::Set(a) => {
                let dns = client.anchor(a.path.clone()).dns();
                dns.set(&a.record).await.map_err(|e| failed("set", &a.path, e))?;
            }
            Cmd::Unset(a) => {
                let dns = client.anchor(a.path.clone()).dns();
                dns.unset(&a.name).await.map_err(|e| failed("unset", &a.path, e))?;
            }
        }
        Ok(())
    }
}

/// `mkdns PATH [ADDR]`
#[derive(clap::Args, Debug)]
pub struct Mkdns {
    /// Anchor path, /X…/name
    #[arg(value_parser = values::path)]
    path: Path,
    /// Where to listen: IP, IP:PORT or :PORT (default: the server's IP, a free port)
    addr: Option<String>,
}

/// `set PATH RR`
#[derive(clap::Args, Debug)]
pub struct Set {
    /// DNS element path
    #[arg(value_parser = values::path)]
    path: Path,
    /// One record, like "miek.nl. 3600 IN MX 10 mx.miek.nl."
    #[arg(value_name = "RR", allow_hyphen_values = true)]
    record: String,
}

/// `unset PATH NAME`
#[derive(clap::Args, Debug)]
pub struct Unset {
    /// DNS element path
    #[arg(value_parser = values::path)]
    path: Path,
    /// The name whose records go, like miek.nl.
    name: String,
}
