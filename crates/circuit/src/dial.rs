//! How a client command finds its dial-in server and key.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use circuit_client::{Client, Key};
use clap::Args;

/// The flags that say how to reach the cluster, declared once for every
/// command (global: they go before or after the command's name). Client
/// commands dial with them; `start` uses `-discover`, `-if` and `-hmac` as a
/// server (see `cmd::start`).
#[derive(Args, Debug, Clone, Default)]
pub struct DialArgs {
    /// Dial-in server URL (circuit://HOST:PORT/PID/X…)
    #[arg(short = 'd', long = "dial", value_name = "URL", global = true)]
    pub dial: Option<String>,
    /// UDP multicast discovery on ADDR (default group 228.8.8.8:8822): clients find a server there, `start` answers there ('' turns it off)
    #[arg(long, value_name = "ADDR", num_args = 0..=1, require_equals = true, global = true,
          default_missing_value = circuit_proto::beacon::DEFAULT_GROUP, env = "CIRCUIT_DISCOVER")]
    pub discover: Option<String>,
    /// Network interface for multicast discovery (default: the system's choice); `start` also listens on its first IPv4 address
    #[arg(long = "if", value_name = "IFACE", global = true)]
    pub iface: Option<String>,
    /// File holding the cluster key (as written by `circuit keygen`)
    #[arg(long, value_name = "FILE", env = "CIRCUIT_HMAC", global = true)]
    pub hmac: Option<PathBuf>,
    /// The dial flags given on the command line (not from the
    /// environment), as spelled in errors: a Redis breaker command refuses them.
    #[arg(skip)]
    pub given: Vec<&'static str>,
}

/// Reads the key file, if one is given.
pub fn load_key(hmac: &Option<PathBuf>) -> Result<Option<Key>> {
    match hmac {
        Some(p) if !p.as_os_str().is_empty() => Ok(Some(Key::load(p)?)),
        _ => Ok(None),
    }
}

/// Parses a multicast group `A.B.C.D:PORT`.
pub fn parse_group(s: &str) -> Result<SocketAddrV4> {
    let g: SocketAddrV4 = s
        .parse()
        .with_context(|| format!("-discover {s:?}: expected a multicast IPv4 address and port, like 228.8.8.8:8822"))?;
    if !g.ip().is_multicast() {
        bail!(
            "-discover {s}: {} is not a multicast address (224.0.0.0 to 239.255.255.255)",
            g.ip()
        );
    }
    Ok(g)
}

/// The IPv4 address of a named interface.
pub fn iface_ip(name: &str) -> Result<Ipv4Addr> {
    circuit_server::net::interface_ipv4(name)
        .with_context(|| format!("-if {name}: no such interface, or it has no IPv4 address (see `ip -4 addr`)"))
}

impl DialArgs {
    /// Connects as the flags and environment say: `-d URL`, else `-discover`
    /// (or `CIRCUIT_DISCOVER`), else the URL in the file named by `CIRCUIT`.
    /// The one place a client command connects.
    pub async fn connect(&self) -> Result<Client> {
        let key = load_key(&self.hmac)?;
        let url = if let Some(url) = &self.dial {
            url.clone()
        } else if let Some(group) = self.discover.as_deref().filter(|g| !g.is_empty()) {
            let group = parse_group(group)?;
            let iface = match &self.iface {
                Some(name) => iface_ip(name)?,
                None => Ipv4Addr::UNSPECIFIED,
            };
            let url = circuit_client::discover_url(group, iface, key.as_ref()).await?;
            url.to_string()
        } else if let Some(file) = std::env::var_os("CIRCUIT").filter(|f| !f.is_empty()) {
            let file = PathBuf::from(file);
            let file = expand_home(&file);
            std::fs::read_to_string(&file)
                .with_context(|| format!("reading the dial-in URL from {} (named by $CIRCUIT)", file.display()))?
                .trim()
                .to_string()
        } else {
            bail!(
                "no dial-in server: give -d URL, or -discover [ADDR] (or set CIRCUIT_DISCOVER), or set CIRCUIT to a file holding a circuit URL"
            );
        };
        Ok(Client::dial(&url, key.as_ref()).await?)
    }
}

/// `~/x` → `$HOME/x`, since the README's example quotes the tilde.
fn expand_home(p: &std::path::Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_path_buf(),
    }
}
