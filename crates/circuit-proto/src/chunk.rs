//! A message of any length on a stream, as chunks: each chunk is a 4-byte
//! little-endian length and that many bytes. An empty chunk ends the message
//! (it is whole); the marker [`FAIL`] followed by a frame holding a
//! [`WireError`] ends it with a failure. A stream that stops before either
//! carried a message that was cut short, never a shorter message.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::{FrameError, encode, read_frame};
use crate::msg::WireError;

/// Largest chunk body accepted, in bytes.
pub const MAX_CHUNK: usize = 64 * 1024;

/// The length word of the chunk that ends a whole message.
pub const END: u32 = 0;

/// The length word that announces a failure frame instead of data.
pub const FAIL: u32 = u32::MAX;

/// One piece of a message as read from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Bytes of the message (never empty).
    Data(Vec<u8>),
    /// The message is whole.
    End,
    /// The message failed; the rest of it will not come.
    Fail(WireError),
}

/// The length word for a data chunk of `len` bytes (`0 < len <= MAX_CHUNK`).
pub fn header(len: usize) -> [u8; 4] {
    debug_assert!(len > 0 && len <= MAX_CHUNK);
    (len as u32).to_le_bytes()
}

/// Writes `data` as one or more data chunks (nothing for empty data).
pub async fn write_data<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
    for piece in data.chunks(MAX_CHUNK) {
        let mut buf = Vec::with_capacity(4 + piece.len());
        buf.extend_from_slice(&header(piece.len()));
        buf.extend_from_slice(piece);
        w.write_all(&buf).await?;
    }
    Ok(())
}

/// Writes the end-of-message chunk and flushes.
pub async fn write_end<W: AsyncWrite + Unpin>(w: &mut W) -> std::io::Result<()> {
    w.write_all(&END.to_le_bytes()).await?;
    w.flush().await
}

/// Ends the message with a failure and flushes.
pub async fn write_fail<W: AsyncWrite + Unpin>(w: &mut W, err: &WireError) -> Result<(), FrameError> {
    let mut buf = FAIL.to_le_bytes().to_vec();
    buf.extend_from_slice(&encode(err)?);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one chunk. End of stream before a whole chunk is [`FrameError::Eof`].
pub async fn read_chunk<R: AsyncRead + Unpin>(r: &mut R) -> Result<Chunk, FrameError> {
    let eof = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Eof,
        _ => e.into(),
    };
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.map_err(eof)?;
    match u32::from_le_bytes(len) {
        END => Ok(Chunk::End),
        FAIL => Ok(Chunk::Fail(read_frame(r).await?)),
        n if n as usize > MAX_CHUNK => Err(FrameError::TooLarge(n as usize)),
        n => {
            let mut data = vec![0u8; n as usize];
            r.read_exact(&mut data).await.map_err(eof)?;
            Ok(Chunk::Data(data))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::ErrorKind;

    #[tokio::test]
    async fn chunks_round_trip() {
        let big = vec![7u8; MAX_CHUNK + 10];
        let mut buf = Vec::new();
        write_data(&mut buf, b"hello").await.unwrap();
        write_data(&mut buf, &big).await.unwrap();
        write_data(&mut buf, b"").await.unwrap();
        write_end(&mut buf).await.unwrap();
        let err = WireError::new(ErrorKind::Aborted, "channel aborted");
        write_fail(&mut buf, &err).await.unwrap();
        let mut r = &buf[..];
        assert_eq!(read_chunk(&mut r).await.unwrap(), Chunk::Data(b"hello".to_vec()));
        assert_eq!(
            read_chunk(&mut r).await.unwrap(),
            Chunk::Data(big[..MAX_CHUNK].to_vec())
        );
        assert_eq!(
            read_chunk(&mut r).await.unwrap(),
            Chunk::Data(big[MAX_CHUNK..].to_vec())
        );
        assert_eq!(read_chunk(&mut r).await.unwrap(), Chunk::End);
        assert_eq!(read_chunk(&mut r).await.unwrap(), Chunk::Fail(err));
        assert!(matches!(read_chunk(&mut r).await, Err(FrameError::Eof)));
    }

    #[tokio::test]
    async fn cut_short_and_oversized() {
        let mut r = &[5u8, 0, 0, 0, b'a', b'b'][..];
        assert!(matches!(read_chunk(&mut r).await, Err(FrameError::Eof)));
        let mut r = &[1u8, 0][..];
        assert!(matches!(read_chunk(&mut r).await, Err(FrameError::Eof)));
        let too_big = ((MAX_CHUNK + 1) as u32).to_le_bytes();
        let mut r = &too_big[..];
        assert!(matches!(read_chunk(&mut r).await, Err(FrameError::TooLarge(_))));
    }
}
