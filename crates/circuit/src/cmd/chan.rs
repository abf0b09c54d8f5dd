//! Commands on channel elements: mkchan, send, recv, close. (`peek` and
//! `scrub` work on any element: see `anchor`.) Errors start with the
//! operation, as the original's did ("send error: …"), and the server's
//! message names the path and the cause.

use std::io::Write;

use anyhow::{Context, Result};
use circuit_client::{Client, Path};
use clap::Subcommand;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::values;

/// The channel commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Make a channel at PATH holding up to CAP buffered messages (0: every send waits for a receiver)
    Mkchan(Mkchan),
    /// Send stdin as one message on the channel at PATH; waits for a receiver or buffer room
    Send(Send),
    /// Receive one message from the channel at PATH and print it on stdout (on a subscription: one event, a server path)
    Recv(Recv),
    /// Close the channel at PATH: later sends fail, receivers drain what is left
    Close(Close),
}

impl Cmd {
    /// Runs the command.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Cmd::Mkchan(a) => a.run(client).await,
            Cmd::Send(a) => a.run(client).await,
            Cmd::Recv(a) => a.run(client).await,
            Cmd::Close(a) => a.run(client).await,
        }
    }
}

/// `mkchan PATH CAP`
#[derive(clap::Args, Debug)]
pub struct Mkchan {
    /// Anchor path
    #[arg(value_parser = values::path)]
    path: Path,
    /// Buffer capacity, in messages (an integer ≥ 0)
    #[arg(allow_hyphen_values = true, value_parser = values::capacity)]
    cap: u64,
}

impl Mkchan {
    /// Makes the channel.
    pub async fn run(self, client: &Client) -> Result<()> {
        client
            .anchor(self.path)
            .make_chan(self.cap)
            .await
            .context("mkchan error")?;
        Ok(())
    }
}

/// `send PATH`: stdin becomes one message.
#[derive(clap::Args, Debug)]
pub struct Send {
    /// Channel path
    #[arg(value_parser = values::path)]
    path: Path,
}

impl Send {
    /// Waits until the message has a place in the channel, then sends stdin
    /// up to its end.
    pub async fn run(self, client: &Client) -> Result<()> {
        let chan = client.anchor(self.path).chan();
        let mut msg = chan.send_stream().await.context("send error")?;
        let mut input = crate::stdin::pieces();
        while let Some(piece) = input.recv().await {
            // On any error, dropping `msg` abandons the message.
            let piece = piece.context("send error: reading stdin")?;
            msg.write_all(&piece).await.context("send error")?;
        }
        msg.finish().await.context("send error")
    }
}

/// `recv PATH`: one message to stdout.
#[derive(clap::Args, Debug)]
pub struct Recv {
    /// Channel or subscription path
    #[arg(value_parser = values::path)]
    path: Path,
}

impl Recv {
    /// Copies one message to stdout.
    pub async fn run(self, client: &Client) -> Result<()> {
        let chan = client.anchor(self.path).chan();
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
}

/// `close PATH`
#[derive(clap::Args, Debug)]
pub struct Close {
    /// Channel path
    #[arg(value_parser = values::path)]
    path: Path,
}

impl Close {
    /// Closes the channel.
    pub async fn run(self, client: &Client) -> Result<()> {
        client.anchor(self.path).chan().close().await.context("close error")
    }
}
