//! `circuit start`: run a server on this host.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use circuit_server::{Config, Server};
use clap::ValueEnum;

use crate::dial::{DialArgs, iface_ip, load_key, parse_group};

/// How the server writes its log lines.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    /// One human-readable line per operation.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `circuit start`; `-discover`, `-if` and `-hmac` are the global
/// ones ([`DialArgs`]).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on, HOST:PORT (port 0 picks a free port)
    #[arg(short = 'a', long = "addr", value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// Join the cluster of the server at URL
    #[arg(short = 'j', long = "join", value_name = "URL")]
    pub join: Option<String>,
    /// State directory (default: a fresh one under $TMPDIR, removed at exit)
    #[arg(long = "var", value_name = "DIR")]
    pub var: Option<PathBuf>,
    /// Worker threads serving requests (1 runs everything on one thread)
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub threads: usize,
    /// Log line format
    #[arg(long = "log-format", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// TOML file of elements to make at boot ([watch.NAME], [chan.NAME]); `reloadconfig` reads it again
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Also write the URL to FILE (replaced whole; removed at a clean stop), for clients' $CIRCUIT
    #[arg(long = "url-file", value_name = "FILE")]
    pub url_file: Option<PathBuf>,
    /// Close a client connection that carries no request (a web console connection: no byte) for this long (like 300s, 5m, 1h)
    #[arg(long = "idle-timeout", value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// The most connections one client address may hold open at once (to the circuit port, and to the web console's)
    #[arg(long = "max-conns-per-addr", value_name = "N", default_value_t = circuit_server::DEFAULT_MAX_CONNS_PER_ADDR as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_conns_per_addr: u64,
    /// Enable docker elements (mkdkr), through the Docker engine's unix socket ($DOCKER_HOST, default unix:///var/run/docker.sock)
    #[arg(long = "docker")]
    pub docker: bool,
    /// Serve the web console on HOST:PORT (also `[console] Http` in the --config file); with -hmac, log in with `circuit console-login`
    #[arg(long = "http", value_name = "HOST:PORT")]
    pub http: Option<String>,
    /// Let the web console listen on a non-loopback address without a key (anyone who reaches it controls the cluster)
    #[arg(long = "http-insecure")]
    pub http_insecure: bool,
}

/// A duration: a number and a unit, `ms`, `s`, `m` or `h` (seconds if none).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("{text:?}: expected a duration like 300s, 5m, 1h or 500ms");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(format!("{text:?}: must be more than zero"));
    }
    Ok(d)
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    };
    full.to_socket_addrs()
        .with_context(|| format!("-a {addr}: expected HOST:PORT, like 127.0.0.1:11022 or 0.0.0.0:0"))?
        .next()
        .with_context(|| format!("-a {addr}: the host name has no address"))
}

fn config(args: &Args, net: &DialArgs) -> Result<Config> {
    if net.dial.is_some() {
        bail!("start takes no -d URL: give -j URL to join the cluster of the server at URL");
    }
    let iface = net.iface.as_deref().map(iface_ip).transpose()?;
    let addr = match (&args.addr, iface) {
        (Some(a), _) => resolve(a)?,
        (None, Some(ip)) => SocketAddr::new(IpAddr::V4(ip), 0),
        (None, None) => bail!("start needs -a HOST:PORT or -if IFACE to know where to listen"),
    };
    let join = args
        .join
        .as_deref()
        .map(|u| u.parse::<circuit_proto::CircuitUrl>())
        .transpose()
        .map_err(|e| anyhow::anyhow!("-join: {e}"))?;
    let multicast_if = match (iface, addr.ip()) {
        (Some(ip), _) => ip,
        (None, IpAddr::V4(ip)) if !ip.is_unspecified() => ip,
        _ => Ipv4Addr::UNSPECIFIED,
    };
    let discover = net
        .discover
        .as_deref()
        .filter(|g| !g.is_empty())
        .map(parse_group)
        .transpose()?;
    Ok(Config {
        addr,
        key: load_key(&net.hmac)?,
        discover,
        multicast_if,
        var_dir: args.var.clone(),
        join,
        config_file: args.config.as_deref().map(crate::cmd::config::file).transpose()?,
        idle_timeout: args.idle_timeout,
        max_conns_per_addr: args.max_conns_per_addr as usize,
        docker: args.docker,
        console: crate::cmd::console::config(args.http.as_deref(), args.http_insecure, args.config.as_deref())?,
    })
}

fn init_logs(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CIRCUIT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The tunable that turns glibc's per-thread malloc caches off.
const NO_TCACHE: &str = "glibc.malloc.tcache_count=0";
/// Carries the caller's `GLIBC_TUNABLES` across the exec, to be put back.
const TUNABLES_WAS: &str = "CIRCUIT_GLIBC_TUNABLES_WAS";

/// Restarts this process (same pid, arguments and descriptors) with glibc's
/// per-thread malloc caches off, unless they are off already. Chunks parked
/// in a worker thread's cache pin the pages around them, so after 2,000
/// connections or 60,000 requests the server kept 2.5–3 MiB it no longer
/// used even after `malloc_trim` (which cannot reach another thread's
/// cache); without them it returns to within 0.3 MiB of idle, at no
/// measurable cost in requests per second (`--bench memory`). glibc reads
/// its tunables only when a program starts, hence the exec. If it fails the
/// server runs as it is.
fn without_thread_caches() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        // Restarted: glibc has read the tunables; give the processes this
        // server starts the environment it was given.
        if let Some(was) = std::env::var_os(TUNABLES_WAS) {
            // SAFETY: no other thread runs yet (the runtime is built after).
            unsafe {
                std::env::remove_var(TUNABLES_WAS);
                if was.is_empty() {
                    std::env::remove_var("GLIBC_TUNABLES");
                } else {
                    std::env::set_var("GLIBC_TUNABLES", was);
                }
            }
            return;
        }
        let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if current.contains("glibc.malloc.tcache_count") {
            return;
        }
        let tunables = if current.is_empty() {
            NO_TCACHE.to_string()
        } else {
            format!("{current}:{NO_TCACHE}")
        };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_default();
        // Returns only if the exec failed.
        let _ = std::process::Command::new("/proc/self/exe")
            .arg0(arg0)
            .args(args)
            .env("GLIBC_TUNABLES", tunables)
            .env(TUNABLES_WAS, current)
            .exec();
    }
}

impl Args {
    /// Runs the server until it is stopped.
    pub fn run(self, net: &DialArgs) -> Result<()> {
        serve(self, net)
    }
}

fn serve(args: Args, net: &DialArgs) -> Result<()> {
    without_thread_caches();
    let config = config(&args, net)?;
    init_logs(args.log_format);
    let mut rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    };
    let rt = rt.max_blocking_threads(16).enable_all().build()?;
    rt.block_on(async {
        let server = Server::bind(config).await?;
        server.boot_config().map_err(anyhow::Error::msg)?;
        server.restore_breakers();
        // The file first: whoever reads the URL on stdout finds the file written.
        let url = server.url().to_string();
        if let Some(file) = &args.url_file {
            write_url(file, &url)?;
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "{url}")?;
        out.flush()?;
        drop(out);
        // Once settled, what ran only to start (argument parsing, binding,
        // joining) need not stay in memory.
        let run = server.run();
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => r?,
            _ = tokio::time::sleep(SHED_AFTER) => {
                shed_startup_code();
                run.await?;
            }
        }
        if let Some(file) = &args.url_file {
            // Only our own URL: another server may have taken the file since.
            if std::fs::read_to_string(file).is_ok_and(|s| s.trim() == url) {
                let _ = std::fs::remove_file(file);
            }
        }
        anyhow::Ok(())
    })
}

/// How long after its start a server drops the code it ran only to start.
const SHED_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// Drops this program's code pages from the server's memory once it is
/// serving: start-up code (clap, config, binding, joining) is never run again,
/// and the kernel maps code in 64 KiB blocks around each page touched, so an
/// idle server kept several MiB of machine code it does not run. The pages
/// stay in the page cache; code that runs again is mapped back from there
/// (a minor fault), one page at a time (`MADV_RANDOM`: no fault-around).
/// Only the executable's `r-xp` mappings: never written, so dropping them
/// loses nothing (a written private page, such as relocated data, would).
fn shed_startup_code() {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::mman::{MmapAdvise, madvise};
        let (Ok(exe), Ok(maps)) = (
            std::fs::read_link("/proc/self/exe"),
            std::fs::read_to_string("/proc/self/maps"),
        ) else {
            return;
        };
        let exe = exe.to_string_lossy();
        let mut bytes = 0usize;
        for line in maps.lines() {
            let Some((range, perms, path)) = maps_line(line) else {
                continue;
            };
            if perms != "r-xp" || path != exe {
                continue;
            }
            let Some((start, end)) = range
                .split_once('-')
                .and_then(|(a, b)| Some((usize::from_str_radix(a, 16).ok()?, usize::from_str_radix(b, 16).ok()?)))
            else {
                continue;
            };
            let Some(addr) = std::ptr::NonNull::new(start as *mut std::ffi::c_void) else {
                continue;
            };
            let len = end.saturating_sub(start);
            // SAFETY: a read-only, executable, private mapping of our own
            // file, never written: dropping its pages only makes the next
            // use read them again from the file.
            let done = unsafe {
                madvise(addr, len, MmapAdvise::MADV_DONTNEED).is_ok()
                    && madvise(addr, len, MmapAdvise::MADV_RANDOM).is_ok()
            };
            if done {
                bytes += len;
            }
        }
        tracing::debug!(mapped_kib = bytes / 1024, "dropped start-up code from memory");
    }
}

/// A `/proc/self/maps` line's address range, permissions and path.
fn maps_line(line: &str) -> Option<(&str, &str, &str)> {
    let mut rest = line;
    let mut fields = [""; 5];
    for f in &mut fields {
        rest = rest.trim_start();
        let end = rest.find(' ').unwrap_or(rest.len());
        *f = &rest[..end];
        rest = &rest[end..];
    }
    Some((fields[0], fields[1], rest.trim_start())).filter(|(r, p, _)| !r.is_empty() && !p.is_empty())
}

/// Writes `url` to `file` whole: into a file beside it, then renamed over it,
/// so a client never reads half a URL.
fn write_url(file: &std::path::Path, url: &str) -> Result<()> {
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{url}\n"))
        .and_then(|()| std::fs::rename(&tmp, file))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow::anyhow!("--url-file {}: {e}", file.display())
        })
}

#[cfg(test)]
mod tests {
    use super::maps_line;

    #[test]
    fn maps_lines_give_range_permissions_and_path() {
        assert_eq!(
            maps_line("55d0c2a00000-55d0c2f3e000 r-xp 00155000 fd:01 1234567                    /usr/bin/circuit"),
            Some(("55d0c2a00000-55d0c2f3e000", "r-xp", "/usr/bin/circuit"))
        );
        assert_eq!(
            maps_line("7f0000000000-7f0000001000 r-xp 00000000 fd:01 42  /opt/my tools/circuit (deleted)"),
            Some(("7f0000000000-7f0000001000", "r-xp", "/opt/my tools/circuit (deleted)"))
        );
        // Anonymous mappings have no path.
        assert_eq!(
            maps_line("7ffd1a000000-7ffd1a021000 rw-p 00000000 00:00 0"),
            Some(("7ffd1a000000-7ffd1a021000", "rw-p", ""))
        );
        assert_eq!(maps_line(""), None);
    }
}
