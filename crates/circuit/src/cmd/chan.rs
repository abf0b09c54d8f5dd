//! Commands on channel elements: mkchan, send, recv, close. (`peek` and
//! `scrub` work on any element: see `anchor`.) Errors start with the
//! operation, as the original's did ("send error: …"), and the server's
//! message names the path and the cause.

use std::io::Write;

use anyhow::{Context, Result, bail};
use circuit_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cmd::anchor::parse_path;

/// Parses the capacity argument of `mkchan`.
pub fn parse_cap(arg: &str) -> Result<u64> {
    match arg.parse::<u64>() {
        Ok(cap) => Ok(cap),
        Err(_) => bail!("second argument to mkchan must be a non-negative integral capacity"),
    }
}

/// `mkchan PATH CAP`
pub async fn mkchan(client: &Client, arg: &str, cap: u64) -> Result<()> {
    let path = parse_path(arg)?;
    client.anchor(path).make_chan(cap).await.context("mkchan error")?;
    Ok(())
}

/// `send PATH`: stdin becomes one message. Waits until the message has a
/// place in the channel, then sends stdin up to its end.
pub async fn send(client: &Client, arg: &str) -> Result<()> {
    let path = parse_path(arg)?;
    let chan = client.anchor(path).chan();
    let mut msg = chan.send_stream().await.context("send error")?;
    let mut input = crate::stdin::pieces();
    while let Some(piece) = input.recv().await {
        // On any error, dropping `msg` abandons the message.
        let piece = piece.context("send error: reading stdin")?;
        msg.write_all(&piece).await.context("send error")?;
    }
    msg.finish().await.context("send error")
}

/// `recv PATH`: one message to stdout.
pub async fn recv(client: &Client, arg: &str) -> Result<()> {
    let path = parse_path(arg)?;
    let chan = client.anchor(path).chan();
    let mut msg = chan.recv_stream().await.context("recv error")?;
    let mut buf = vec![0u8; 32 * 1024];
    let stdout = std::io::stdout();
    loop {
        let n = msg.read(&mut buf).await.context("recv error")?;
        if n == 0 {
            return Ok(());
        }
        let mut out = stdout.lock();
        match out.write_all(&buf[..n]).and_then(|_| out.flush()) {
            Ok(()) => {}
            // Whoever reads our output has gone (`| head`): stop quietly.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).context("recv error: writing to stdout"),
        }
    }
}

/// `close PATH`
pub async fn close(client: &Client, arg: &str) -> Result<()> {
    let path = parse_path(arg)?;
    client.anchor(path).chan().close().await.context("close error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities() {
        assert_eq!(parse_cap("0").unwrap(), 0);
        assert_eq!(parse_cap("3").unwrap(), 3);
        for bad in ["-1", "x", "", "1.5", " 3"] {
            assert_eq!(
                parse_cap(bad).unwrap_err().to_string(),
                "second argument to mkchan must be a non-negative integral capacity",
                "{bad:?}"
            );
        }
    }
}
