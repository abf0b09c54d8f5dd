//! A watcher's listening sockets (Circus's sockets).
//!
//! - **Bound once.** [`Sockets::bind`] binds and listens on each socket of
//!   the spec when the watcher is made; a bind error fails `mkwatch` with a
//!   message naming the socket and its address. The server keeps each
//!   listening descriptor (close-on-exec in the server, so no other child
//!   gets it) for the life of the watcher, and never accepts on it.
//! - **Inherited.** [`Sockets::inherit`] clears close-on-exec on those
//!   descriptors in the child only (between fork and exec), so every process
//!   of the watcher gets the same listening socket under the same descriptor
//!   number, which `$(socket.NAME.fd)` in Args and Env becomes
//!   ([`Sockets::substitute`]). The socket stays blocking, as programs
//!   expect of an inherited listener.
//! - **No refused connection.** Since the server holds the socket, a restart
//!   or reload only leaves connections in the backlog until a process
//!   accepts them.
//! - **Closed at scrub.** Dropping [`Sockets`] (when the watcher's task ends,
//!   once its processes are gone) closes the descriptors and removes a unix
//!   socket file it created, if that file is still the one it bound.
//! - **Handed over.** Once a watcher is scrubbed ([`Sockets::release`]), its
//!   sockets stay open until its last process is gone; a new watcher that
//!   asks for the same address meanwhile (a spec changed by `reloadconfig`,
//!   or a scrub followed by `mkwatch`) takes the very same listening socket
//!   over instead of failing to bind, so no connection is refused in between.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use circuit_proto::{SocketSpec, SocketStat, WatchSpec};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, SockAddr, Socket, Type};

use super::WatchError;

/// The most sockets one watcher may have.
pub const MAX_SOCKETS: usize = 64;

/// What substitution of a socket's descriptor looks like: `$(socket.NAME.fd)`.
const OPEN: &str = "$(socket.";
const CLOSE: &str = ".fd)";

/// A listening socket, shared by the watchers that hold it (one, or two
/// while a scrubbed watcher's processes finish and a new one took it over).
struct Shared {
    socket: Socket,
    /// `IP:PORT` or the unix path.
    address: String,
    /// The unix socket file it created: its path, device and inode.
    file: Option<(PathBuf, u64, u64)>,
    /// Its watcher was scrubbed: a new watcher may take it over.
    released: AtomicBool,
}

/// A socket of a watcher.
struct Bound {
    name: String,
    shared: Arc<Shared>,
}

/// Every listening socket of this server's watchers, by address (`tcp
/// IP:PORT` or `unix PATH`), for hand-overs.
static HELD: Mutex<Vec<(String, Weak<Shared>)>> = Mutex::new(Vec::new());

/// The socket at `key` if its watcher was scrubbed; it is no longer released.
fn take_over(key: &str) -> Option<Arc<Shared>> {
    let mut held = HELD.lock().unwrap();
    held.retain(|(_, w)| w.strong_count() > 0);
    let shared = held.iter().find(|(k, _)| k == key).and_then(|(_, w)| w.upgrade())?;
    shared.released.swap(false, Ordering::SeqCst).then_some(shared)
}

fn hold(key: String, shared: &Arc<Shared>) {
    let mut held = HELD.lock().unwrap();
    held.retain(|(k, w)| w.strong_count() > 0 && *k != key);
    held.push((key, Arc::downgrade(shared)));
}

/// The listening sockets of one watcher; closed (and their unix files
/// removed) on drop.
#[derive(Default)]
pub struct Sockets {
    bound: Vec<Bound>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The socket names `text` refers to with `$(socket.NAME.fd)`; an error
/// names a malformed reference.
fn references<'a>(what: &str, text: &'a str) -> Result<Vec<&'a str>, String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(OPEN) {
        let after = &rest[at + OPEN.len()..];
        let Some(end) = after.find(')') else {
            return Err(format!("{what} has an unterminated {OPEN}…; write $(socket.NAME.fd)"));
        };
        let inner = &after[..end + 1];
        match inner.strip_suffix(CLOSE) {
            Some(name) if valid_name(name) => names.push(name),
            _ => {
                return Err(format!(
                    "{what} has {:?}; write $(socket.NAME.fd)",
                    &rest[at..at + OPEN.len() + end + 1]
                ));
            }
        }
        rest = &after[end + 1..];
    }
    Ok(names)
}

/// Checks the spec's sockets, and that every `$(socket.NAME.fd)` in Args
/// and Env names one of them.
pub fn validate(spec: &WatchSpec) -> Result<(), WatchError> {
    let bad = |m: String| Err(WatchError::Spec(m));
    if spec.sockets.len() > MAX_SOCKETS {
        return bad(format!(
            "a watcher has at most {MAX_SOCKETS} sockets, not {}",
            spec.sockets.len()
        ));
    }
    for (i, s) in spec.sockets.iter().enumerate() {
        if !valid_name(&s.name) {
            return bad(format!(
                "socket {:?}: a socket's Name is 1 to 64 letters, digits, '_' or '-'",
                s.name
            ));
        }
        if spec.sockets[..i].iter().any(|o| o.name == s.name) {
            return bad(format!("two sockets are named {:?}", s.name));
        }
        if s.backlog == 0 || s.backlog > i32::MAX as u32 {
            return bad(format!(
                "socket {:?}: Backlog must be at least 1, not {}",
                s.name, s.backlog
            ));
        }
        if !s.path.is_empty() && !s.path.starts_with('/') {
            return bad(format!("socket {:?}: Path {:?} must be absolute", s.name, s.path));
        }
    }
    let places = spec
        .args
        .iter()
        .map(|a| ("Args", a))
        .chain(spec.env.iter().map(|e| ("Env", e)));
    for (what, text) in places {
        for name in references(what, text).map_err(WatchError::Spec)? {
            if !spec.sockets.iter().any(|s| s.name == name) {
                let known: Vec<&str> = spec.sockets.iter().map(|s| s.name.as_str()).collect();
                return bad(format!(
                    "{what} refers to $(socket.{name}.fd) but the watcher has no socket named {name:?} (its sockets: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
        }
    }
    Ok(())
}

/// Where a TCP socket binds: `host` (default 127.0.0.1; brackets around
/// an IPv6 address allowed) and `port`.
fn tcp_address(s: &SocketSpec) -> Result<SocketAddr, String> {
    let host = s.host.trim();
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    let shown = if host.contains(':') {
        format!("[{host}]:{}", s.port)
    } else {
        format!("{host}:{}", s.port)
    };
    match (host, s.port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("socket {:?} cannot bind {shown}: the host has no address", s.name)),
        Err(e) => Err(format!("socket {:?} cannot bind {shown}: {e}", s.name)),
    }
}

fn bind_tcp(s: &SocketSpec, addr: SocketAddr) -> Result<Shared, String> {
    let fail = |e: std::io::Error| format!("socket {:?} cannot bind {addr}: {e}", s.name);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    if s.reuseport {
        setsockopt(&socket, sockopt::ReusePort, &true).map_err(|e| fail(e.into()))?;
    }
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(s.backlog as i32).map_err(fail)?;
    let actual = socket.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(addr);
    Ok(Shared {
        socket,
        address: actual.to_string(),
        file: None,
        released: AtomicBool::new(false),
    })
}

fn bind_unix(s: &SocketSpec) -> Result<Shared, String> {
    let path = PathBuf::from(&s.path);
    let fail = |e: std::io::Error| format!("socket {:?} cannot bind unix socket {}: {e}", s.name, s.path);
    // A socket file nobody listens on any more (its server died) is stale:
    // it is replaced. A live one, or any other file, is left alone.
    if let Ok(meta) = std::fs::symlink_metadata(&path)
        && meta.file_type().is_socket()
        && std::os::unix::net::UnixStream::connect(&path)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    {
        let _ = std::fs::remove_file(&path);
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(fail)?;
    socket.bind(&SockAddr::unix(&path).map_err(fail)?).map_err(fail)?;
    let meta = std::fs::symlink_metadata(&path).ok();
    let file = meta.map(|m| (path.clone(), m.dev(), m.ino()));
    let shared = Shared {
        socket,
        address: s.path.clone(),
        file,
        released: AtomicBool::new(false),
    };
    // From here on, dropping `shared` removes the file it created.
    shared.socket.listen(s.backlog as i32).map_err(fail)?;
    Ok(shared)
}

/// Binds `s`, or takes over the same address from a scrubbed watcher.
fn bind_one(s: &SocketSpec) -> Result<Arc<Shared>, String> {
    let (key, addr) = if s.path.is_empty() {
        let addr = tcp_address(s)?;
        (format!("tcp {addr}"), Some(addr))
    } else {
        (format!("unix {}", s.path), None)
    };
    if addr.is_none_or(|a| a.port() != 0)
        && let Some(shared) = take_over(&key)
    {
        // The backlog of the new spec (listen(2) again only updates it).
        let _ = shared.socket.listen(s.backlog as i32);
        return Ok(shared);
    }
    let shared = Arc::new(match addr {
        Some(addr) => bind_tcp(s, addr)?,
        None => bind_unix(s)?,
    });
    let key = match addr {
        Some(_) => format!("tcp {}", shared.address),
        None => key,
    };
    hold(key, &shared);
    Ok(shared)
}

impl Sockets {
    /// Binds and listens on every socket of `specs` (checked by
    /// [`validate`]); on an error, those already bound are closed.
    pub fn bind(specs: &[SocketSpec]) -> Result<Sockets, WatchError> {
        let mut sockets = Sockets::default();
        for s in specs {
            let shared = bind_one(s).map_err(WatchError::Spawn)?;
            sockets.bound.push(Bound {
                name: s.name.clone(),
                shared,
            });
        }
        Ok(sockets)
    }

    /// The watcher was scrubbed: its sockets stay open while its processes
    /// finish, for a new watcher of the same address to take over.
    pub fn release(&self) {
        for b in &self.bound {
            b.shared.released.store(true, Ordering::SeqCst);
        }
    }

    /// A guard that [releases](Sockets::release) these sockets when dropped:
    /// held by the watcher's handle, so that a scrub followed at once by a
    /// new watcher on the same address (as `reloadconfig` does) hands over.
    pub fn released_on_drop(&self) -> Released {
        Released(self.bound.iter().map(|b| b.shared.clone()).collect())
    }

    /// `text` with each `$(socket.NAME.fd)` replaced by the descriptor
    /// number the processes get.
    pub fn substitute(&self, text: &str) -> String {
        if !text.contains(OPEN) {
            return text.to_string();
        }
        let mut out = text.to_string();
        for b in &self.bound {
            out = out.replace(
                &format!("{OPEN}{}{CLOSE}", b.name),
                &b.shared.socket.as_raw_fd().to_string(),
            );
        }
        out
    }

    /// Makes `cmd`'s process inherit every socket, under the same
    /// descriptor numbers: close-on-exec is cleared in the child only.
    pub fn inherit(&self, cmd: &mut Command) {
        if self.bound.is_empty() {
            return;
        }
        let fds: Vec<RawFd> = self.bound.iter().map(|b| b.shared.socket.as_raw_fd()).collect();
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls fcntl(2), which is async-signal-safe; it neither
        // allocates nor takes locks. The descriptors are open: the parent
        // keeps them (in `self`) while it spawns.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &fds {
                    let fd = BorrowedFd::borrow_raw(fd);
                    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
                }
                Ok(())
            });
        }
    }

    /// Each socket's name, actual address and descriptor number.
    pub fn stat(&self) -> Vec<SocketStat> {
        self.bound
            .iter()
            .map(|b| SocketStat {
                name: b.name.clone(),
                address: b.shared.address.clone(),
                fd: b.shared.socket.as_fd().as_raw_fd(),
            })
            .collect()
    }
}

impl Drop for Sockets {
    /// The watcher is gone (or never started): a socket that another
    /// scrubbed watcher still holds may be taken over again.
    fn drop(&mut self) {
        self.release();
    }
}

/// Releases its sockets when dropped; see [`Sockets::released_on_drop`].
pub struct Released(Vec<Arc<Shared>>);

impl Drop for Released {
    fn drop(&mut self) {
        for shared in &self.0 {
            shared.released.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for Shared {
    /// Removes the unix socket file this socket created, if the file there
    /// is still that one (not one bound since by someone else).
    fn drop(&mut self) {
        if let Some((path, dev, ino)) = &self.file
            && let Ok(meta) = std::fs::symlink_metadata(path)
            && meta.dev() == *dev
            && meta.ino() == *ino
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    fn spec(sockets: Vec<SocketSpec>, args: &[&str]) -> WatchSpec {
        let mut s = WatchSpec::new("/bin/true", args.iter().copied());
        s.sockets = sockets;
        s
    }

    fn tcp(name: &str) -> SocketSpec {
        SocketSpec {
            name: name.into(),
            ..SocketSpec::default()
        }
    }

    #[test]
    fn specs_and_references_are_checked() {
        assert!(validate(&spec(vec![tcp("web")], &["--fd=$(socket.web.fd)"])).is_ok());
        let err = |s: WatchSpec| validate(&s).unwrap_err().to_string();
        assert!(
            err(spec(vec![tcp("web")], &["$(socket.api.fd)"])).contains("no socket named \"api\" (its sockets: web)")
        );
        assert!(err(spec(vec![], &["$(socket.api.fd)"])).contains("(its sockets: none)"));
        assert!(err(spec(vec![tcp("web")], &["$(socket.web)"])).contains("write $(socket.NAME.fd)"));
        assert!(err(spec(vec![tcp("web")], &["$(socket.web.fd"])).contains("unterminated"));
        assert!(err(spec(vec![tcp("web"), tcp("web")], &[])).contains("two sockets are named \"web\""));
        assert!(err(spec(vec![tcp("a b")], &[])).contains("Name is 1 to 64"));
        let mut s = tcp("web");
        s.backlog = 0;
        assert!(err(spec(vec![s], &[])).contains("Backlog must be at least 1"));
        let mut s = tcp("u");
        s.path = "relative.sock".into();
        assert!(err(spec(vec![s], &[])).contains("must be absolute"));
        let mut e = spec(vec![], &[]);
        e.env = vec!["FD=$(socket.x.fd)".into()];
        assert!(err(e).starts_with("Env refers to"));
    }

    #[test]
    fn binds_substitutes_and_reports() {
        let sockets = Sockets::bind(&[tcp("web")]).unwrap();
        let st = sockets.stat();
        assert_eq!(st.len(), 1);
        let addr: SocketAddr = st[0].address.parse().unwrap();
        assert_ne!(addr.port(), 0, "port 0 becomes the actual port");
        assert_eq!(
            sockets.substitute("fd=$(socket.web.fd) other=$(socket.x.fd)"),
            format!("fd={} other=$(socket.x.fd)", st[0].fd)
        );
        // Close-on-exec in the server.
        let flags = fcntl(sockets.bound[0].shared.socket.as_fd(), FcntlArg::F_GETFD).unwrap();
        assert!(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
        // A second bind of the same port fails, naming socket and address.
        let mut again = tcp("again");
        again.port = addr.port();
        let e = Sockets::bind(&[again]).err().unwrap().to_string();
        assert!(
            e.starts_with(&format!("socket \"again\" cannot bind 127.0.0.1:{}: ", addr.port())),
            "{e}"
        );
        // Connections queue in the backlog although nobody accepts.
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"hi").unwrap();
        drop(sockets);
        let mut buf = [0u8; 8];
        c.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        assert!(!matches!(c.read(&mut buf), Ok(n) if n > 0));
        assert!(TcpStream::connect(addr).is_err(), "closed on drop");
    }

    #[test]
    fn a_released_socket_is_handed_over() {
        let first = Sockets::bind(&[tcp("web")]).unwrap();
        let addr: SocketAddr = first.stat()[0].address.parse().unwrap();
        let mut same = tcp("web2");
        same.port = addr.port();
        // In use by a live watcher: refused.
        assert!(Sockets::bind(std::slice::from_ref(&same)).is_err());
        drop(first.released_on_drop());
        let second = Sockets::bind(std::slice::from_ref(&same)).unwrap();
        assert_eq!(second.stat()[0].fd, first.stat()[0].fd, "the very same socket");
        assert_eq!(second.stat()[0].address, addr.to_string());
        // Taken over once: a third watcher cannot have it.
        assert!(Sockets::bind(std::slice::from_ref(&same)).is_err());
        drop(first);
        TcpStream::connect(addr).expect("still listening for the new watcher");
        drop(second);
        assert!(TcpStream::connect(addr).is_err(), "closed with its last watcher");
    }

    #[test]
    fn children_inherit_the_socket() {
        let sockets = Sockets::bind(&[tcp("web")]).unwrap();
        let fd = sockets.stat()[0].fd;
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", &sockets.substitute("test -e /proc/self/fd/$(socket.web.fd)")]);
        sockets.inherit(&mut cmd);
        assert!(cmd.status().unwrap().success(), "fd {fd} inherited");
        let mut plain = Command::new("/bin/sh");
        plain.args(["-c", &format!("test -e /proc/self/fd/{fd}")]);
        assert!(
            !plain.status().unwrap().success(),
            "fd {fd} not inherited without inherit()"
        );
    }

    #[test]
    fn unix_sockets_and_their_files() {
        let dir = std::env::temp_dir().join(format!("circuit-sockets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let unix = SocketSpec {
            name: "u".into(),
            path: path.to_string_lossy().into_owned(),
            ..SocketSpec::default()
        };
        let sockets = Sockets::bind(std::slice::from_ref(&unix)).unwrap();
        assert_eq!(sockets.stat()[0].address, unix.path);
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        // In use: a second bind fails and leaves the file alone.
        let e = Sockets::bind(std::slice::from_ref(&unix)).err().unwrap().to_string();
        assert!(e.contains("cannot bind unix socket"), "{e}");
        assert!(path.exists());
        drop(sockets);
        assert!(!path.exists(), "removed on drop");
        // A stale socket file (nobody listening) is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let sockets = Sockets::bind(std::slice::from_ref(&unix)).unwrap();
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        drop(sockets);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
