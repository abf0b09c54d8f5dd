//! The web console's edges in the binary: `start --http`'s settings (flags
//! or the config file's `[console]` table), the spec parser of its "make"
//! form, and `circuit console-login`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use circuit_proto::{Op, ProcOp, WatchOp};
use circuit_server::console::ConsoleConfig;

/// Reads the spec of the console's "make" form with the parser of
/// `mkproc` (`kind` proc) or `mkwatch` (watch).
pub fn parse_spec(kind: &str, text: &str) -> std::result::Result<Op, String> {
    match kind {
        "proc" => crate::cmd::proc::parse_spec(text)
            .map(|s| ProcOp::Make(s).into())
            .map_err(|e| format!("proc spec: {e}")),
        "watch" => crate::cmd::watch_spec::parse_spec(text)
            .map(|s| WatchOp::Make(Box::new(s)).into())
            .map_err(|e| format!("watch spec: {e}")),
        other => Err(format!("cannot make a {other:?} from the console; give proc or watch")),
    }
}

/// `HOST:PORT` (or `:PORT`, on every interface) as an address.
fn resolve(flag: &str, addr: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    };
    full.to_socket_addrs()
        .with_context(|| format!("{flag} {addr}: expected HOST:PORT, like 127.0.0.1:8080"))?
        .next()
        .with_context(|| format!("{flag} {addr}: the host name has no address"))
}

/// The console's settings: `--http` wins over the config file's
/// `[console] Http`; `--http-insecure` or `Insecure = true` allows a
/// non-loopback address without a key.
pub fn config(http: Option<&str>, insecure: bool, file: Option<&std::path::Path>) -> Result<Option<ConsoleConfig>> {
    let from_file = match file {
        Some(f) => crate::cmd::config::console_table(f).map_err(anyhow::Error::msg)?,
        None => None,
    };
    let (addr, flag, insecure) = match (http, from_file) {
        (Some(a), file) => (a.to_string(), "--http", insecure || file.is_some_and(|f| f.insecure)),
        (None, Some(f)) => match f.http {
            Some(a) => (a, "[console] Http", insecure || f.insecure),
            None => return Ok(None),
        },
        (None, None) => {
            if insecure {
                bail!("--http-insecure needs --http ADDR (or [console] Http in the config file)");
            }
            return Ok(None);
        }
    };
    Ok(Some(ConsoleConfig {
        addr: resolve(flag, &addr)?,
        insecure,
        specs: parse_spec,
    }))
}

/// `console-login [-hmac FILE] ADDR`: prints a one-time login URL for the
/// web console at ADDR, good for a few minutes.
#[derive(clap::Args, Debug)]
pub struct Login {
    /// The console's address, HOST:PORT or http://HOST:PORT (as given to start --http)
    #[arg(value_name = "ADDR")]
    addr: String,
}

impl Login {
    /// Prints the URL.
    pub fn run(self, hmac: &Option<PathBuf>) -> Result<()> {
        let Some(key) = crate::dial::load_key(hmac)? else {
            bail!(
                "console-login needs the cluster key (-hmac FILE or $CIRCUIT_HMAC); a console without a key has no login"
            );
        };
        let base = self.addr.trim_end_matches('/');
        let base = base.strip_prefix("http://").unwrap_or(base);
        if base.is_empty() || base.contains('/') || base.starts_with("https:") {
            bail!("console-login {}: expected HOST:PORT or http://HOST:PORT", self.addr);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the system clock is before 1970")?
            .as_secs();
        let token = circuit_server::console::auth::login_token(&key, now);
        println!("http://{base}/login?t={token}");
        Ok(())
    }
}
