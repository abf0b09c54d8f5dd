//! The DNS element's operations: `mkdns`, `set`, `unset`, and the config
//! file's wholesale replace. Each is one log line.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use circuit_proto::{DnsOp, DnsSpec, ErrorKind, Path, Reply, Response, WireError};
use tracing::info;

use super::Dns;
use super::zone::{self, Zone};
use crate::elements::{Ctx, Element};

fn invalid(path: &Path, msg: impl std::fmt::Display) -> WireError {
    WireError::at(ErrorKind::Invalid, path, format!("{path}: {msg}"))
}

/// Where `mkdns` binds: `addr` is `IP`, `IP:PORT`, `:PORT` or nothing; a
/// missing IP is `server_ip`, a missing port is any free one.
pub fn resolve(addr: Option<&str>, server_ip: IpAddr) -> Result<SocketAddr, String> {
    let a = addr.map(str::trim).unwrap_or("");
    if a.is_empty() {
        return Ok(SocketAddr::new(server_ip, 0));
    }
    let bad = || format!("invalid DNS address {a:?}: give IP, IP:PORT or :PORT");
    if let Ok(sa) = a.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let ip = a.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(a);
    if let Ok(ip) = ip.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 0));
    }
    match a.strip_prefix(':') {
        Some(port) => Ok(SocketAddr::new(server_ip, port.parse().map_err(|_| bad())?)),
        None => Err(bad()),
    }
}

/// The IP this server listens on (its URL's), for `mkdns` without one.
fn server_ip(ctx: &Ctx) -> IpAddr {
    ctx.url
        .addr
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

fn parse_all(records: &[String]) -> Result<Zone, String> {
    let parsed = records.iter().map(|r| zone::parse(r)).collect::<Result<Vec<_>, _>>()?;
    Zone::from_records(parsed)
}

/// `mkdns PATH [ADDR]`: binds UDP and TCP, then places the element. A
/// port in use (or any other failure) keeps nothing.
pub(crate) fn make(ctx: &Ctx, path: &Path, spec: DnsSpec) -> Response {
    let refused = |e: WireError| {
        info!(op = "mkdns", %path, error = %e.message, "refused");
        e
    };
    let addr = resolve(spec.addr.as_deref(), server_ip(ctx)).map_err(|e| refused(invalid(path, e)))?;
    let zone = parse_all(&spec.records).map_err(|e| refused(invalid(path, e)))?;
    let count = zone.len();
    ctx.check_free(path, "DNS server").map_err(refused)?;
    let dns = ctx
        .make(path, "DNS server", || {
            match Dns::start(addr, zone, ctx.rt.shutdown.child_token()) {
                Ok(d) => (Some(Element::Dns(d.clone())), Ok(d)),
                Err(e) => (None, Err(e)),
            }
        })
        .map_err(refused)?
        .map_err(|e| {
            refused(WireError::at(
                ErrorKind::Io,
                path,
                format!("{path}: cannot start a DNS server: {e}"),
            ))
        })?;
    info!(op = "mkdns", %path, addr = %dns.addr(), records = count, "made");
    Ok(Reply::Done)
}

/// Serves `op` on the DNS element at `path`.
pub(crate) fn serve(dns: &Arc<Dns>, path: &Path, op: DnsOp) -> Response {
    match op {
        DnsOp::Make(_) => Err(WireError::at(
            ErrorKind::Exists,
            path,
            format!("anchor {path} already holds a dns"),
        )),
        DnsOp::Set(text) => set(dns, path, &text),
        DnsOp::Unset(name) => unset(dns, path, &name),
        DnsOp::Replace(records) => replace(dns, path, &records),
    }
}

fn set(dns: &Dns, path: &Path, text: &str) -> Response {
    let done = zone::parse(text).and_then(|rec| {
        let shown = rec.text();
        dns.update(|z| z.insert(rec).map(|()| (shown, z.len())))
    });
    match done {
        Ok((record, total)) => {
            info!(op = "set", %path, %record, records = total, "set");
            Ok(Reply::Done)
        }
        Err(e) => {
            info!(op = "set", %path, error = %e, "refused");
            Err(invalid(path, e))
        }
    }
}

fn unset(dns: &Dns, path: &Path, name: &str) -> Response {
    let key = zone::parse_name(name).map_err(|e| {
        info!(op = "unset", %path, error = %e, "refused");
        invalid(path, e)
    })?;
    let (removed, total) = dns.update(|z| (z.remove(&key), z.len()));
    info!(op = "unset", %path, name = name.trim(), removed, records = total, "unset");
    Ok(Reply::Done)
}

/// Replaces every record at once, or none if one is bad; the sockets stay.
pub(crate) fn replace(dns: &Dns, path: &Path, records: &[String]) -> Response {
    let zone = parse_all(records).map_err(|e| {
        info!(op = "setall", %path, error = %e, "refused");
        invalid(path, e)
    })?;
    let total = zone.len();
    dns.update(|z| *z = zone);
    info!(op = "setall", %path, records = total, "replaced the records");
    Ok(Reply::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let r = |a| resolve(a, ip);
        assert_eq!(r(None).unwrap(), "10.0.0.5:0".parse().unwrap());
        assert_eq!(r(Some("")).unwrap(), "10.0.0.5:0".parse().unwrap());
        assert_eq!(r(Some(":7711")).unwrap(), "10.0.0.5:7711".parse().unwrap());
        assert_eq!(r(Some("127.0.0.1")).unwrap(), "127.0.0.1:0".parse().unwrap());
        assert_eq!(r(Some("127.0.0.1:53")).unwrap(), "127.0.0.1:53".parse().unwrap());
        assert_eq!(r(Some("[::1]:53")).unwrap(), "[::1]:53".parse().unwrap());
        assert_eq!(r(Some("::1")).unwrap(), "[::1]:0".parse().unwrap());
        for bad in ["localhost", ":x", "1.2.3.4:99999", "1.2.3"] {
            assert!(r(Some(bad)).unwrap_err().contains("IP, IP:PORT or :PORT"), "{bad}");
        }
    }
}
