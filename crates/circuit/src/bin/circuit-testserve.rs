//! A helper for circuit's tests of watcher sockets, not a tool for users:
//! `circuit-testserve FD WID` accepts connections on the inherited listening
//! socket FD (TCP or unix) and answers each, after the request's blank line
//! (or end of input), with `HTTP/1.0 200 OK` and a body
//! `pid=PID wid=WID`.
//!
//! On SIGTERM it finishes the connection in hand and exits 0 without
//! accepting another, so a graceful stop never drops an accepted
//! connection: whatever is still queued stays in the socket's backlog for
//! the next process.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: std::ffi::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Reads the request up to its blank line (or EOF, or 5 s), then answers.
fn serve(conn: OwnedFd, wid: &str) -> std::io::Result<()> {
    // Any connected stream socket reads and writes the same way; the
    // listener may be TCP or unix.
    let mut conn = UnixStream::from(conn);
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let body = format!("pid={} wid={wid}\n", std::process::id());
    write!(
        conn,
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(fd), Some(wid)) = (args.get(1).and_then(|a| a.parse::<RawFd>().ok()), args.get(2)) else {
        eprintln!("usage: circuit-testserve FD WID (FD: an inherited listening socket)");
        return ExitCode::from(2);
    };
    // No SA_RESTART: a SIGTERM interrupts a blocked accept(2).
    let term = SigAction::new(SigHandler::Handler(on_term), SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    if let Err(e) = unsafe { sigaction(Signal::SIGTERM, &term) } {
        eprintln!("circuit-testserve: sigaction: {e}");
        return ExitCode::from(1);
    }
    while !STOP.load(Ordering::SeqCst) {
        match nix::sys::socket::accept(fd) {
            Ok(conn) => {
                // SAFETY: accept(2) just returned this descriptor; nothing else owns it.
                let conn = unsafe { OwnedFd::from_raw_fd(conn) };
                if let Err(e) = serve(conn, wid) {
                    eprintln!("circuit-testserve: {e}");
                }
            }
            Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
            Err(e) => {
                eprintln!("circuit-testserve: accept on fd {fd}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}
