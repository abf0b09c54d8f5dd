//! DNS elements: a real DNS server (UDP and TCP on one port) on a server's
//! host, answering from records set in zone-file syntax.
//!
//! ```no_run
//! # async fn demo(client: circuit_client::Client) -> Result<(), circuit_client::Error> {
//! let dns = client.walk("/X88550014d4c82e4d/mydns")?.make_dns(None).await?;
//! dns.set("miek.nl. 3600 IN MX 10 mx.miek.nl.").await?;
//! dns.set("miek.nl. 3600 IN MX 20 mx2.miek.nl.").await?;
//! let stat = dns.peek().await?;
//! println!("dig @{} miek.nl MX: {:?}", stat.address, stat.records["miek.nl."]);
//! dns.unset("miek.nl").await?;
//! dns.scrub().await?;
//! # Ok(()) }
//! ```

use circuit_proto::{DnsOp, DnsSpec, DnsStat, ElementStat, Path};

use crate::anchor::Anchor;
use crate::error::Error;

impl Anchor {
    /// Starts a DNS server on the anchor's server and places it here. `addr`
    /// is `IP`, `IP:PORT` or `:PORT`; `None` binds the server's own IP on a
    /// free port. Fails if the anchor is taken or the address cannot be
    /// bound (then nothing is kept).
    pub async fn make_dns(&self, addr: Option<&str>) -> Result<Dns, Error> {
        self.make_dns_with(DnsSpec {
            addr: addr.map(String::from),
            records: Vec::new(),
        })
        .await
    }

    /// Like [`Anchor::make_dns`], with first records: all of them are
    /// checked before anything starts.
    pub async fn make_dns_with(&self, spec: DnsSpec) -> Result<Dns, Error> {
        self.ask_done(DnsOp::Make(spec)).await?;
        Ok(self.dns())
    }

    /// A handle on the DNS element held here. Nothing is checked until it
    /// is used.
    pub fn dns(&self) -> Dns {
        Dns(self.clone())
    }
}

/// A handle on a DNS element. Cheap to clone.
#[derive(Clone)]
pub struct Dns(Anchor);

impl Dns {
    /// The element's path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// The anchor that holds it.
    pub fn anchor(&self) -> &Anchor {
        &self.0
    }

    /// Adds one record in zone-file syntax, like
    /// `"miek.nl. 3600 IN MX 10 mx.miek.nl."` (TTL and class optional; names
    /// without a final dot are taken from the root). A malformed record is
    /// an error saying what is wrong.
    pub async fn set(&self, record: &str) -> Result<(), Error> {
        self.0.ask_done(DnsOp::Set(record.to_string())).await
    }

    /// Removes every record of `name` (case-insensitive, final dot optional).
    pub async fn unset(&self, name: &str) -> Result<(), Error> {
        self.0.ask_done(DnsOp::Unset(name.to_string())).await
    }

    /// Replaces every record at once; if one is malformed nothing changes.
    pub async fn set_all(&self, records: Vec<String>) -> Result<(), Error> {
        self.0.ask_done(DnsOp::Replace(records)).await
    }

    /// Its address and records.
    pub async fn peek(&self) -> Result<DnsStat, Error> {
        match self.0.stat().await? {
            Some(ElementStat::Dns(s)) => Ok(s),
            other => Err(Error::missing_or_wrong(self.path(), "dns", "dns", other.as_ref())),
        }
    }

    /// Stops the server; its port is free again when this returns.
    pub async fn scrub(&self) -> Result<(), Error> {
        self.0.scrub().await
    }
}
