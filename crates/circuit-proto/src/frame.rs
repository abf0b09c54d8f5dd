//! Length-prefixed frames: a 4-byte little-endian length, then a postcard body.

use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame body accepted, in bytes.
pub const MAX_FRAME: usize = 1 << 20;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Eof,
    #[error("frame of {0} bytes is over the limit of {MAX_FRAME} bytes")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Decode(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Decodes a frame body (no length prefix). Never panics on any input.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    postcard::from_bytes(body).map_err(|e| FrameError::Decode(e.to_string()))
}

/// Splits the first whole frame off `buf`: its body and the bytes it takes
/// (prefix included), or `None` while `buf` holds only part of it.
pub fn split(buf: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(len) = buf.get(..4) else { return Ok(None) };
    let n = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    if n > MAX_FRAME {
        return Err(FrameError::TooLarge(n));
    }
    Ok(buf.get(4..4 + n).map(|body| (body, 4 + n)))
}

/// Encodes `v` as a whole frame, length prefix included.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = postcard::to_extend(v, vec![0u8; 4]).map_err(|e| FrameError::Decode(e.to_string()))?;
    let n = out.len() - 4;
    if n > MAX_FRAME {
        return Err(FrameError::TooLarge(n));
    }
    out[..4].copy_from_slice(&(n as u32).to_le_bytes());
    Ok(out)
}

/// Reads one frame and decodes it.
pub async fn read_frame<T: DeserializeOwned, R: AsyncRead + Unpin>(r: &mut R) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Eof),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(FrameError::TooLarge(n));
    }
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Eof,
        _ => e.into(),
    })?;
    decode(&body)
}

/// Encodes and writes one frame, then flushes.
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
    }
}
