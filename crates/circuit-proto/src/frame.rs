//! Length-prefixed frames: a 4-byte little-endian length word, then a
//! postcard body. A message larger than one frame ([`MAX_FRAME`]) travels as
//! several: every frame but the last has the [`MORE`] bit set in its length
//! word, and the reader joins them, so no message has a size ceiling.
//! Requests do: at most [`MAX_REQUEST`] bytes, in one frame.

use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame body, in bytes; a longer message is split in frames this size.
pub const MAX_FRAME: usize = 1 << 20;

/// Set in a length word when more frames of the same message follow.
/// (A length over [`MAX_FRAME`] was always refused, so the bit was free.)
pub const MORE: u32 = 1 << 31;

/// Largest request, in bytes of its one frame's body. Requests are small: a
/// path of at most 4 KiB, and for `mkproc` and `mkwatch` a spec whose
/// arguments and environment go to `execve` (which takes 128 KiB per string).
pub const MAX_REQUEST: usize = 256 << 10;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Eof,
    #[error("frame of {0} bytes is over the limit of {MAX_FRAME} bytes")]
    TooLarge(usize),
    #[error("request of {0} bytes is over the limit of {MAX_REQUEST} bytes per request")]
    RequestTooLarge(usize),
    #[error("malformed frame: {0}")]
    Decode(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Decodes a frame body (no length prefix). Never panics on any input. A
/// path that breaks a rule is named in the error, with the rule.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    crate::path::take_refused();
    postcard::from_bytes(body).map_err(|e| match crate::path::take_refused() {
        Some(p) => FrameError::Decode(p.to_string()),
        None => FrameError::Decode(e.to_string()),
    })
}

/// A length word: the frame's body length, and whether more frames follow.
pub fn parse_word(word: [u8; 4]) -> Result<(usize, bool), FrameError> {
    let w = u32::from_le_bytes(word);
    let n = (w & !MORE) as usize;
    if n > MAX_FRAME {
        return Err(FrameError::TooLarge(n));
    }
    Ok((n, w & MORE != 0))
}

/// Splits the first whole frame off `buf`: its body and the bytes it takes
/// (prefix included), or `None` while `buf` holds only part of it. For the
/// small frames inside streams: a message in several frames is refused.
pub fn split(buf: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(len) = buf.get(..4) else { return Ok(None) };
    let (n, more) = parse_word(len.try_into().expect("4 bytes"))?;
    if more {
        return Err(FrameError::TooLarge(MAX_FRAME + 1));
    }
    Ok(buf.get(4..4 + n).map(|body| (body, 4 + n)))
}

/// Encodes `v` as a whole message, length words included: one frame, or
/// several when it is larger than [`MAX_FRAME`].
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = postcard::to_extend(v, vec![0u8; 4]).map_err(|e| FrameError::Decode(e.to_string()))?;
    let n = out.len() - 4;
    if n <= MAX_FRAME {
        out[..4].copy_from_slice(&(n as u32).to_le_bytes());
        return Ok(out);
    }
    let pieces = n.div_ceil(MAX_FRAME);
    let mut split = Vec::with_capacity(n + 4 * pieces);
    for (i, piece) in out[4..].chunks(MAX_FRAME).enumerate() {
        let more = if i + 1 < pieces { MORE } else { 0 };
        split.extend_from_slice(&(piece.len() as u32 | more).to_le_bytes());
        split.extend_from_slice(piece);
    }
    Ok(split)
}

fn eof(e: std::io::Error) -> FrameError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Eof,
        _ => e.into(),
    }
}

/// Reads a length word (see [`parse_word`]). [`FrameError::Eof`] if the
/// stream ends first.
pub async fn read_word<R: AsyncRead + Unpin>(r: &mut R) -> Result<(usize, bool), FrameError> {
    let mut word = [0u8; 4];
    r.read_exact(&mut word).await.map_err(eof)?;
    parse_word(word)
}

/// Appends a frame body of `n` bytes to `body`. Memory grows with the bytes
/// that arrive, not with what the length word claims.
pub async fn read_body<R: AsyncRead + Unpin>(r: &mut R, n: usize, body: &mut Vec<u8>) -> Result<(), FrameError> {
    let want = body.len() + n;
    body.reserve(n.min(64 << 10));
    (&mut *r).take(n as u64).read_to_end(body).await.map_err(eof)?;
    if body.len() < want {
        return Err(FrameError::Eof);
    }
    Ok(())
}

/// Reads one message (one frame or several) and decodes it.
pub async fn read_frame<T: DeserializeOwned, R: AsyncRead + Unpin>(r: &mut R) -> Result<T, FrameError> {
    let (n, mut more) = read_word(r).await?;
    let mut body = Vec::new();
    read_body(r, n, &mut body).await?;
    while more {
        let (n, m) = read_word(r).await?;
        read_body(r, n, &mut body).await?;
        more = m;
    }
    decode(&body)
}

/// Encodes and writes one message, then flushes.
pub async fn write_frame<T: Serialize, W: AsyncWrite + Unpin>(w: &mut W, v: &T) -> Result<(), FrameError> {
    let buf = encode(v)?;
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{AnchorOp, Request, Response};
    use crate::path::Path;

    #[tokio::test]
    async fn round_trip_and_limits() {
        let req = Request::new("/X0000000000000001/a".parse::<Path>().unwrap(), AnchorOp::Peek);
        let buf = encode(&req).unwrap();
        let mut r = &buf[..];
        let back: Request = read_frame(&mut r).await.unwrap();
        assert_eq!(back, req);

        let big = ((MAX_FRAME + 1) as u32).to_le_bytes();
        let mut r = &big[..];
        assert!(matches!(
            read_frame::<Request, _>(&mut r).await,
            Err(FrameError::TooLarge(_))
        ));

        let garbage = [3u8, 0, 0, 0, 0xff, 0xff, 0xff];
        let mut r = &garbage[..];
        assert!(matches!(
            read_frame::<Response, _>(&mut r).await,
            Err(FrameError::Decode(_))
        ));

        let short = [9u8, 0, 0, 0, 1];
        let mut r = &short[..];
        assert!(matches!(read_frame::<Request, _>(&mut r).await, Err(FrameError::Eof)));

        // A forged path is refused, and the error says why.
        let good = encode(&req).unwrap();
        let forged: Vec<u8> = good[4..].iter().map(|&b| if b == b'a' { b'/' } else { b }).collect();
        let e = decode::<Request>(&forged).unwrap_err().to_string();
        assert!(e.contains("anchor name \"/\" is invalid"), "{e}");
        assert!(decode::<Request>(&good[4..]).is_ok(), "nothing stale is left behind");
    }

    #[test]
    fn split_takes_whole_frames_only() {
        let req = Request::new("/X0000000000000001/a".parse::<Path>().unwrap(), AnchorOp::Peek);
        let one = encode(&req).unwrap();
        let mut two = one.clone();
        two.extend_from_slice(&one);
        for cut in 0..one.len() {
            assert!(split(&two[..cut]).unwrap().is_none(), "{cut} bytes are not a frame");
        }
        let (body, used) = split(&two).unwrap().unwrap();
        assert_eq!(used, one.len());
        assert_eq!(decode::<Request>(body).unwrap(), req);
        let (body, used2) = split(&two[used..]).unwrap().unwrap();
        assert_eq!((used2, decode::<Request>(body).unwrap()), (one.len(), req));
        let big = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(matches!(split(&big), Err(FrameError::TooLarge(_))));
        let more = (1 | MORE).to_le_bytes();
        assert!(matches!(split(&more), Err(FrameError::TooLarge(_))));
    }

    #[tokio::test]
    async fn large_messages_travel_in_several_frames() {
        use crate::msg::{Entry, Reply};
        // A listing of 3 MiB and a bit: four frames, joined by the reader.
        let entry = Entry {
            path: format!("/X0000000000000001/{}", "a".repeat(250)).parse().unwrap(),
            kind: Some(crate::element::ElementKind::Chan),
        };
        let resp: Response = Ok(Reply::List(vec![entry; 13_000]));
        let buf = encode(&resp).unwrap();
        let mut at = 0;
        let mut words = Vec::new();
        while at < buf.len() {
            let (n, more) = parse_word(buf[at..at + 4].try_into().unwrap()).unwrap();
            words.push((n, more));
            at += 4 + n;
        }
        assert_eq!(at, buf.len());
        assert_eq!(words.len(), 4);
        assert!(words[..3].iter().all(|&(n, more)| n == MAX_FRAME && more));
        assert!(!words[3].1);
        let mut r = &buf[..];
        assert_eq!(read_frame::<Response, _>(&mut r).await.unwrap(), resp);
        // Cut anywhere, it is an unfinished message, never a shorter one.
        for cut in [3, 4, MAX_FRAME, MAX_FRAME + 4, MAX_FRAME + 6, buf.len() - 1] {
            let mut r = &buf[..cut];
            assert!(
                matches!(read_frame::<Response, _>(&mut r).await, Err(FrameError::Eof)),
                "{cut}"
            );
        }
        // Written and read through a pipe smaller than one frame.
        let (mut a, mut b) = tokio::io::duplex(64 << 10);
        let writer = tokio::spawn(async move { write_frame(&mut a, &resp).await.map(|_| resp) });
        let back: Response = read_frame(&mut b).await.unwrap();
        assert_eq!(back, writer.await.unwrap().unwrap());
    }
}
