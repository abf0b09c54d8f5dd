//! The tool's stdin, read on a plain thread of its own: a read still blocked
//! (on a terminal, or on a process that stopped reading) when the command
//! ends must not hold up the exit, as a read on the runtime's blocking pool
//! would. Pieces travel through a small channel, so reading has back-pressure.

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Reads stdin on a plain thread, in pieces, with back-pressure: a read
/// blocked on a terminal must not keep the runtime from shutting down, as a
/// read on the runtime's blocking pool would.
pub fn pieces() -> tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        loop {
            let mut buf = vec![0u8; 32 * 1024];
            match input.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(buf)).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

/// The tool's stdin, read on a thread of its own: a read pending when the
/// command ends (the process stopped reading) must not hold up the exit, as
/// a read on the runtime's blocking pool would.
pub struct StdinThread {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl StdinThread {
    /// Starts reading the tool's stdin.
    pub fn start() -> StdinThread {
        let rx = pieces();
        StdinThread {
            rx,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl AsyncRead for StdinThread {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.pos == self.buf.len() {
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Some(Ok(b))) => {
                    self.buf = b;
                    self.pos = 0;
                }
            }
        }
        let n = out.remaining().min(self.buf.len() - self.pos);
        let pos = self.pos;
        out.put_slice(&self.buf[pos..pos + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// Reads all of the tool's stdin as text (a spec, a list of paths), on the
/// reading thread, so the runtime (and the client's connection) keeps running.
pub async fn read_to_string() -> std::io::Result<String> {
    let mut rx = pieces();
    let mut all = Vec::new();
    while let Some(piece) = rx.recv().await {
        all.extend_from_slice(&piece?);
    }
    String::from_utf8(all)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "stream did not contain valid UTF-8"))
}
