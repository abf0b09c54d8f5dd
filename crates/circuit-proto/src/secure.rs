//! The secure channel: a greeting that says whether a key is in use, then a
//! Noise `NNpsk0` handshake (ephemeral X25519, ChaCha20-Poly1305, BLAKE2s) keyed
//! by the cluster key. Both sides prove they hold the key; ephemeral keys give
//! forward secrecy. After the handshake, bytes travel in sealed records of at
//! most 64 KiB.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The Noise protocol used for every keyed connection.
pub const NOISE_PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
const MAGIC: &[u8; 7] = b"CIRCUIT";
const VERSION: u8 = 1;
const MAX_RECORD: usize = 65535;
const TAG: usize = 16;
/// How long a peer may take to complete the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive on every connection, dialed or accepted: the first probe
/// after this long without traffic, then [`KEEPALIVE_INTERVAL`] apart,
/// [`KEEPALIVE_RETRIES`] of them; so a peer that vanished (host down, cable
/// cut) frees its connection in about 90 s, not hours.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Between two keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered keepalive probes before the connection is dropped.
pub const KEEPALIVE_RETRIES: u32 = 3;

/// The socket options of every circuit connection: no Nagle delay, keepalive.
fn tune(tcp: &TcpStream) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    let ka = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    socket2::SockRef::from(tcp).set_tcp_keepalive(&ka)
}

/// The cluster key, read from the file `circuit keygen` wrote.
#[derive(Clone)]
pub struct Key {
    secret: Vec<u8>,
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {err}")]
    Read { path: String, err: std::io::Error },
    #[error("key file {0} does not hold base64 text (make one with `circuit keygen > FILE`)")]
    Base64(String),
    #[error("key file {0} holds a key of {1} bytes; at least 16 are needed (make one with `circuit keygen > FILE`)")]
    Short(String, usize),
    #[error("key file {0} holds only zero bytes, which anyone could guess (make one with `circuit keygen > FILE`)")]
    Zero(String),
}

impl Key {
    /// A fresh key as base64 text: 32 bytes from the OS CSPRNG.
    pub fn generate() -> String {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).expect("OS random source");
        B64.encode(b)
    }

    /// Decodes a key from base64 text; `origin` names it in errors.
    pub fn from_base64(text: &str, origin: &str) -> Result<Key, KeyError> {
        if !text.is_empty() && text.bytes().all(|b| b == 0) {
            return Err(KeyError::Zero(origin.to_string()));
        }
        let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let secret = B64
            .decode(clean.as_bytes())
            .map_err(|_| KeyError::Base64(origin.to_string()))?;
        if secret.len() < 16 {
            return Err(KeyError::Short(origin.to_string(), secret.len()));
        }
        if secret.iter().all(|&b| b == 0) {
            return Err(KeyError::Zero(origin.to_string()));
        }
        Ok(Key { secret })
    }

    /// Reads a key file.
    pub fn load(path: &std::path::Path) -> Result<Key, KeyError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|err| KeyError::Read {
            path: shown.clone(),
            err,
        })?;
        // A file of raw zero bytes (say, cut from /dev/zero) is refused as
        // such, not as text that is not base64.
        if !bytes.is_empty() && bytes.iter().all(|&b| b == 0) {
            return Err(KeyError::Zero(shown));
        }
        let text = String::from_utf8(bytes).map_err(|_| KeyError::Base64(shown.clone()))?;
        Key::from_base64(&text, &shown)
    }

    /// A 32-byte subkey for one purpose, so no two uses share key material.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"circuit key v1\0");
        h.update(purpose.as_bytes());
        h.update([0]);
        h.update(&self.secret);
        h.finalize().into()
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the peer is not a circuit server or client of a compatible version")]
    Protocol,
    #[error("the server requires a key: give -hmac FILE (or set CIRCUIT_HMAC)")]
    KeyRequired,
    #[error("the server runs without a key, but a key was given: drop -hmac / CIRCUIT_HMAC")]
    NoKeyExpected,
    #[error("authentication failed: the peer holds a different key")]
    WrongKey,
    #[error("handshake timed out after {0:?}")]
    Timeout(Duration),
    #[error("noise: {0}")]
    Noise(String),
    /// Seen by a server: a greeting that is not circuit's (what it was).
    #[error("the peer is not a circuit server or client of a compatible version")]
    Greeting(String),
    /// Seen by a server: the peer closed without sending a byte (another
    /// server checking that this one listens, or a port scan).
    #[error("the peer closed the connection without a greeting")]
    Silent,
}

impl HandshakeError {
    /// What a server saw, for its log line: the peer's side of a refusal,
    /// not the hint [`Display`](std::fmt::Display) gives a client.
    pub fn seen(&self) -> String {
        match self {
            HandshakeError::Io(e) => format!("socket error during the handshake: {e}"),
            HandshakeError::Protocol => "not a circuit greeting".into(),
            HandshakeError::Greeting(what) => what.clone(),
            HandshakeError::KeyRequired => "the client holds no key, and this server requires one".into(),
            HandshakeError::NoKeyExpected => "the client holds a key, and this server runs without one".into(),
            HandshakeError::WrongKey => {
                "the client's handshake message did not open with the cluster key (it holds a different key, or the message is forged)".into()
            }
            HandshakeError::Timeout(d) => format!("the peer did not complete the handshake within {d:?}"),
            HandshakeError::Noise(e) => format!("noise: {e}"),
            HandshakeError::Silent => "the peer closed the connection without a byte".into(),
        }
    }

    /// A short stable name of the refusal (one log limiter per kind).
    pub fn kind(&self) -> &'static str {
        match self {
            HandshakeError::Io(_) => "io",
            HandshakeError::Protocol | HandshakeError::Greeting(_) => "greeting",
            HandshakeError::KeyRequired => "key required",
            HandshakeError::NoKeyExpected => "no key expected",
            HandshakeError::WrongKey => "wrong key",
            HandshakeError::Timeout(_) => "timeout",
            HandshakeError::Noise(_) => "noise",
            HandshakeError::Silent => "silent",
        }
    }
}

/// What the record layer of an accepted connection saw go wrong: a record
/// that did not open (the first: a replayed handshake; a later one: forged
/// or corrupted bytes). Read once the connection has ended.
#[derive(Clone, Default)]
pub struct SealReport(Option<Arc<OnceLock<String>>>);

impl SealReport {
    /// Why the record layer stopped, if a record did not open.
    pub fn failure(&self) -> Option<&str> {
        self.0.as_ref()?.get().map(String::as_str)
    }
}

/// Status byte a server answers the greeting with.
#[repr(u8)]
enum Status {
    Ok = 0,
    KeyRequired = 1,
    NoKeyExpected = 2,
}

/// A byte stream that is either plain TCP or sealed by the secure channel.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A connected, authenticated byte stream.
pub type BoxIo = Box<dyn Io>;

fn noise_builder() -> snow::Builder<'static> {
    snow::Builder::new(NOISE_PATTERN.parse().expect("valid noise pattern"))
}

fn noise_err(e: snow::Error) -> HandshakeError {
    HandshakeError::Noise(e.to_string())
}

async fn read_record<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let n = r.read_u16_le().await? as usize;
    buf.resize(n, 0);
    r.read_exact(buf).await?;
    Ok(n)
}

async fn write_record<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(2 + body.len());
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(body);
    w.write_all(&out).await
}

/// Sets up the client side of a connection.
pub async fn client_handshake(mut tcp: TcpStream, key: Option<&Key>) -> Result<BoxIo, HandshakeError> {
    tune(&tcp)?;
    let run = async {
        let mut hello = [0u8; 9];
        hello[..7].copy_from_slice(MAGIC);
        hello[7] = VERSION;
        hello[8] = key.is_some() as u8;
        tcp.write_all(&hello).await?;
        let status = tcp.read_u8().await.map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => HandshakeError::Protocol,
            _ => e.into(),
        })?;
        match status {
            s if s == Status::Ok as u8 => {}
            s if s == Status::KeyRequired as u8 => return Err(HandshakeError::KeyRequired),
            s if s == Status::NoKeyExpected as u8 => return Err(HandshakeError::NoKeyExpected),
            _ => return Err(HandshakeError::Protocol),
        }
        let Some(key) = key else { return Ok(None) };
        let mut hs = noise_builder()
            .psk(0, &key.derive("noise psk"))
            .map_err(noise_err)?
            .build_initiator()
            .map_err(noise_err)?;
        let mut buf = vec![0u8; MAX_RECORD];
        let n = hs.write_message(&[], &mut buf).map_err(noise_err)?;
        write_record(&mut tcp, &buf[..n]).await?;
        let mut msg = Vec::new();
        let n = read_record(&mut tcp, &mut msg)
            .await
            .map_err(|_| HandshakeError::WrongKey)?;
        if n == 0 {
            return Err(HandshakeError::WrongKey);
        }
        hs.read_message(&msg, &mut buf).map_err(|_| HandshakeError::WrongKey)?;
        Ok(Some(hs.into_transport_mode().map_err(noise_err)?))
    };
    let transport = tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| HandshakeError::Timeout(HANDSHAKE_TIMEOUT))??;
    Ok(match transport {
        None => Box::new(tcp),
        Some(t) => seal(tcp, t, None),
    })
}

/// Sets up the server side of a connection. Refusals are returned as errors
/// for the caller to log ([`HandshakeError::seen`] says what the server
/// saw); the peer has been told why where that is safe. The [`SealReport`]
/// tells, once the connection has ended, whether a sealed record failed.
pub async fn server_handshake(mut tcp: TcpStream, key: Option<&Key>) -> Result<(BoxIo, SealReport), HandshakeError> {
    tune(&tcp)?;
    let run = async {
        let mut hello = [0u8; 9];
        let mut got = 0;
        while got < hello.len() {
            match tcp.read(&mut hello[got..]).await {
                Ok(0) if got == 0 => return Err(HandshakeError::Silent),
                Ok(0) | Err(_) => {
                    return Err(HandshakeError::Greeting(format!(
                        "the peer left after {got} of the greeting's 9 bytes"
                    )));
                }
                Ok(n) => got += n,
            }
        }
        if &hello[..7] != MAGIC {
            return Err(HandshakeError::Greeting(format!(
                "a greeting that is not circuit's: \"{}\"",
                hello.escape_ascii()
            )));
        }
        if hello[7] != VERSION || hello[8] > 1 {
            return Err(HandshakeError::Greeting(format!(
                "a circuit greeting of version {} (flag {}); this server speaks version {VERSION}",
                hello[7], hello[8]
            )));
        }
        let wants_key = hello[8] == 1;
        match (key, wants_key) {
            (Some(_), false) => {
                tcp.write_u8(Status::KeyRequired as u8).await?;
                return Err(HandshakeError::KeyRequired);
            }
            (None, true) => {
                tcp.write_u8(Status::NoKeyExpected as u8).await?;
                return Err(HandshakeError::NoKeyExpected);
            }
            _ => tcp.write_u8(Status::Ok as u8).await?,
        }
        let Some(key) = key else { return Ok(None) };
        let mut hs = noise_builder()
            .psk(0, &key.derive("noise psk"))
            .map_err(noise_err)?
            .build_responder()
            .map_err(noise_err)?;
        let mut msg = Vec::new();
        read_record(&mut tcp, &mut msg).await?;
        let mut buf = vec![0u8; MAX_RECORD];
        if hs.read_message(&msg, &mut buf).is_err() {
            let _ = write_record(&mut tcp, &[]).await;
            return Err(HandshakeError::WrongKey);
        }
        let n = hs.write_message(&[], &mut buf).map_err(noise_err)?;
        write_record(&mut tcp, &buf[..n]).await?;
        Ok(Some(hs.into_transport_mode().map_err(noise_err)?))
    };
    let transport = tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| HandshakeError::Timeout(HANDSHAKE_TIMEOUT))??;
    Ok(match transport {
        None => (Box::new(tcp), SealReport::default()),
        Some(t) => {
            let report = Arc::new(OnceLock::new());
            (seal(tcp, t, Some(report.clone())), SealReport(Some(report)))
        }
    })
}

/// Runs the record layer in two small tasks and hands back a plain byte
/// stream for the multiplexer. Either task ends when its side closes. A
/// record that does not open ends the connection, said in `report`.
fn seal(tcp: TcpStream, transport: snow::TransportState, report: Option<Arc<OnceLock<String>>>) -> BoxIo {
    let (app, pump) = tokio::io::duplex(MAX_RECORD * 2);
    let (mut pump_r, mut pump_w) = tokio::io::split(pump);
    let (mut tcp_r, mut tcp_w) = tcp.into_split();
    let state = Arc::new(Mutex::new(transport));
    let rx_state = state.clone();
    tokio::spawn(async move {
        let mut rec = Vec::with_capacity(MAX_RECORD);
        let mut plain = vec![0u8; MAX_RECORD];
        let mut opened = 0u64;
        loop {
            if read_record(&mut tcp_r, &mut rec).await.is_err() {
                break;
            }
            let n = match rx_state.lock().unwrap().read_message(&rec, &mut plain) {
                Ok(n) => n,
                Err(_) => {
                    if let Some(r) = &report {
                        let _ = r.set(if opened == 0 {
                            "the first sealed record did not open: a replayed handshake, or bytes not sealed in this session".into()
                        } else {
                            format!("sealed record {} did not open: forged or corrupted bytes", opened + 1)
                        });
                    }
                    break;
                }
            };
            opened += 1;
            if pump_w.write_all(&plain[..n]).await.is_err() {
                break;
            }
        }
        let _ = pump_w.shutdown().await;
    });
    tokio::spawn(async move {
        let mut plain = vec![0u8; MAX_RECORD - TAG];
        let mut rec = vec![0u8; MAX_RECORD + 2];
        loop {
            let n = match pump_r.read(&mut plain).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let m = match state.lock().unwrap().write_message(&plain[..n], &mut rec[2..]) {
                Ok(m) => m,
                Err(_) => break,
            };
            rec[..2].copy_from_slice(&(m as u16).to_le_bytes());
            if tcp_w.write_all(&rec[..2 + m]).await.is_err() {
                break;
            }
        }
        let _ = tcp_w.shutdown().await;
    });
    Box::new(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(ck: Option<Key>, sk: Option<Key>) -> (Result<BoxIo, HandshakeError>, Result<BoxIo, HandshakeError>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            server_handshake(s, sk.as_ref()).await.map(|(io, _)| io)
        });
        let c = client_handshake(TcpStream::connect(addr).await.unwrap(), ck.as_ref()).await;
        (c, server.await.unwrap())
    }

    fn key() -> Key {
        Key::from_base64(&Key::generate(), "test").unwrap()
    }

    #[tokio::test]
    async fn sealed_bytes_flow_both_ways() {
        let k = key();
        let (c, s) = pair(Some(k.clone()), Some(k)).await;
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        let big = vec![7u8; 300_000];
        let w = big.clone();
        let writer = tokio::spawn(async move {
            c.write_all(&w).await.unwrap();
            c.shutdown().await.unwrap();
            c
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, big);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn refusals_are_clear() {
        let (c, s) = pair(Some(key()), Some(key())).await;
        assert!(matches!(c, Err(HandshakeError::WrongKey)));
        assert!(matches!(s, Err(HandshakeError::WrongKey)));
        let (c, _) = pair(None, Some(key())).await;
        assert!(matches!(c, Err(HandshakeError::KeyRequired)));
        let (c, _) = pair(Some(key()), None).await;
        assert!(matches!(c, Err(HandshakeError::NoKeyExpected)));
        let (c, s) = pair(None, None).await;
        assert!(c.is_ok() && s.is_ok());
    }

    #[test]
    fn keys() {
        assert!(matches!(Key::from_base64("!!!", "f"), Err(KeyError::Base64(_))));
        assert!(matches!(Key::from_base64("AAAA", "f"), Err(KeyError::Short(..))));
        assert!(matches!(Key::from_base64("", "f"), Err(KeyError::Short(_, 0))));
        // 15 random-looking bytes are too short; 32 zero bytes are refused as guessable.
        assert!(matches!(
            Key::from_base64("AQIDBAUGBwgJCgsMDQ4P", "f"),
            Err(KeyError::Short(_, 15))
        ));
        let zeros = B64.encode([0u8; 32]);
        let e = Key::from_base64(&zeros, "f").unwrap_err();
        assert!(matches!(e, KeyError::Zero(_)), "{e}");
        assert!(e.to_string().contains("only zero bytes"), "{e}");
        let text = Key::generate();
        assert_eq!(text.len(), 44);
        let k = Key::from_base64(&format!("{text}\n"), "f").unwrap();
        assert_ne!(k.derive("a"), k.derive("b"));
    }

    #[test]
    fn weak_key_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("circuit-keytest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let raw = dir.join("raw-zeros");
        std::fs::write(&raw, [0u8; 32]).unwrap();
        let text = dir.join("b64-zeros");
        std::fs::write(&text, format!("{}\n", B64.encode([0u8; 32]))).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, B64.encode([7u8; 8])).unwrap();
        let raw_err = Key::load(&raw).unwrap_err();
        let text_err = Key::load(&text).unwrap_err();
        let short_err = Key::load(&short).unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(raw_err, KeyError::Zero(_)), "{raw_err}");
        assert!(matches!(text_err, KeyError::Zero(_)), "{text_err}");
        assert!(matches!(short_err, KeyError::Short(_, 8)), "{short_err}");
    }

    /// A recorded client session played again to a server: the handshake
    /// passes (NNpsk0's first message carries no freshness), the first
    /// record does not open, and the server's report says so.
    #[tokio::test]
    async fn a_replayed_handshake_is_reported() {
        let k = key();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let sk = k.clone();
        let server = tokio::spawn(async move {
            let mut ends = Vec::new();
            for _ in 0..2 {
                let (s, _) = l.accept().await.unwrap();
                let (mut io, report) = server_handshake(s, Some(&sk)).await.unwrap();
                let mut got = Vec::new();
                let _ = io.read_to_end(&mut got).await;
                ends.push((got, report.failure().map(str::to_string)));
            }
            ends
        });
        // A genuine session, written by hand so its bytes can be kept.
        let mut sent = Vec::new();
        sent.extend_from_slice(MAGIC);
        sent.extend_from_slice(&[VERSION, 1]);
        let mut hs = noise_builder()
            .psk(0, &k.derive("noise psk"))
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut buf = vec![0u8; MAX_RECORD];
        let n = hs.write_message(&[], &mut buf).unwrap();
        sent.extend_from_slice(&(n as u16).to_le_bytes());
        sent.extend_from_slice(&buf[..n]);
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&sent).await.unwrap();
        assert_eq!(tcp.read_u8().await.unwrap(), Status::Ok as u8);
        let mut msg = Vec::new();
        read_record(&mut tcp, &mut msg).await.unwrap();
        hs.read_message(&msg, &mut buf).unwrap();
        let mut t = hs.into_transport_mode().unwrap();
        let m = t.write_message(b"hello", &mut buf).unwrap();
        let mut rec = (m as u16).to_le_bytes().to_vec();
        rec.extend_from_slice(&buf[..m]);
        tcp.write_all(&rec).await.unwrap();
        sent.extend_from_slice(&rec);
        drop(tcp);
        // The same bytes again.
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&sent).await.unwrap();
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest).await;
        let ends = server.await.unwrap();
        assert_eq!(ends[0], (b"hello".to_vec(), None));
        assert!(ends[1].0.is_empty());
        let why = ends[1].1.as_deref().expect("the replay is reported");
        assert!(why.contains("replayed handshake"), "{why}");
    }

    #[tokio::test]
    async fn servers_say_what_they_saw() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (s, _) = l.accept().await.unwrap();
                seen.push(server_handshake(s, None).await.err().unwrap().seen());
            }
            seen
        });
        let mut a = TcpStream::connect(addr).await.unwrap();
        a.write_all(b"GET / HTTP/1.0\r\n").await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        b.write_all(b"CIRC").await.unwrap();
        drop(b);
        let seen = server.await.unwrap();
        assert!(seen[0].contains("not circuit's: \"GET / HTT\""), "{}", seen[0]);
        assert!(
            seen[1].contains("left after 4 of the greeting's 9 bytes"),
            "{}",
            seen[1]
        );
        drop(a);
    }
}
