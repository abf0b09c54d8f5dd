//! A message of any length on a stream, as chunks: each chunk is a 4-byte
//! little-endian length and that many bytes. An empty chunk ends the message
//! (it is whole); the marker [`FAIL`] followed by a frame holding a
//! [`WireError`] ends it with a failure. A stream that stops before either
//! carried a message that was cut short, never a shorter message.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::{FrameError, decode, encode, read_frame, split as split_frame};
use crate::msg::WireError;

/// Largest chunk body accepted, in bytes.
pub const MAX_CHUNK: usize = 64 * 1024;

/// The length word of the chunk that ends a whole message.
pub const END: u32 = 0;

/// The length word that announces a failure frame instead of data.
pub const FAIL: u32 = u32::MAX;

/// A word some streams allow between two messages, alone: the writer asks
/// the reader to report (see [`crate::ChanOp::SendMany`]).
pub const SYNC: u32 = u32::MAX - 1;

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

/// Appends `data` to `out` as a whole message: its data chunks, then the end
/// chunk. One buffer, so a small message goes out in one write.
pub fn encode_message(data: &[u8], out: &mut Vec<u8>) {
    for piece in data.chunks(MAX_CHUNK) {
        out.extend_from_slice(&header(piece.len()));
        out.extend_from_slice(piece);
    }
    out.extend_from_slice(&END.to_le_bytes());
}

/// Appends a failure chunk carrying `err` to `out`.
pub fn encode_fail(err: &WireError, out: &mut Vec<u8>) -> Result<(), FrameError> {
    out.extend_from_slice(&FAIL.to_le_bytes());
    out.extend_from_slice(&encode(err)?);
    Ok(())
}

/// Splits the first whole chunk off `buf`, without I/O: the chunk and the
/// bytes it takes, or `None` while `buf` holds only part of it.
pub fn split(buf: &[u8]) -> Result<Option<(Chunk, usize)>, FrameError> {
    let Some(len) = buf.get(..4) else { return Ok(None) };
    match u32::from_le_bytes(len.try_into().expect("4 bytes")) {
        END => Ok(Some((Chunk::End, 4))),
        FAIL => match split_frame(&buf[4..])? {
            None => Ok(None),
            Some((body, used)) => Ok(Some((Chunk::Fail(decode(body)?), 4 + used))),
        },
        n if n as usize > MAX_CHUNK => Err(FrameError::TooLarge(n as usize)),
        n => {
            let n = n as usize;
            Ok(buf.get(4..4 + n).map(|d| (Chunk::Data(d.to_vec()), 4 + n)))
        }
    }
}

fn eof(e: std::io::Error) -> FrameError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Eof,
        _ => e.into(),
    }
}

/// Reads one chunk. End of stream before a whole chunk is [`FrameError::Eof`].
pub async fn read_chunk<R: AsyncRead + Unpin>(r: &mut R) -> Result<Chunk, FrameError> {
    let word = read_word(r).await?;
    read_after(r, word).await
}

/// Reads a chunk's length word (or another word, like [`SYNC`]).
pub async fn read_word<R: AsyncRead + Unpin>(r: &mut R) -> Result<u32, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.map_err(eof)?;
    Ok(u32::from_le_bytes(len))
}

/// Reads the rest of the chunk whose length word was `word`.
pub async fn read_after<R: AsyncRead + Unpin>(r: &mut R, word: u32) -> Result<Chunk, FrameError> {
    match word {
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
    async fn split_agrees_with_the_reader() {
        let err = WireError::new(ErrorKind::Closed, "channel closed");
        let mut buf = Vec::new();
        encode_message(b"one", &mut buf);
        encode_message(b"", &mut buf);
        encode_message(&vec![3u8; MAX_CHUNK + 1], &mut buf);
        encode_fail(&err, &mut buf).unwrap();
        let mut by_reader = Vec::new();
        let mut r = &buf[..];
        while !r.is_empty() {
            by_reader.push(read_chunk(&mut r).await.unwrap());
        }
        assert_eq!(by_reader.len(), 7);
        assert_eq!(by_reader[6], Chunk::Fail(err));
        // Fed one byte at a time, `split` finds the same chunks, each only
        // once it is whole.
        let mut by_split = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for b in &buf {
            pending.push(*b);
            if let Some((c, used)) = split(&pending).unwrap() {
                assert_eq!(used, pending.len(), "a chunk ends exactly where its last byte is");
                by_split.push(c);
                pending.clear();
            }
        }
        assert!(pending.is_empty());
        assert_eq!(by_split, by_reader);
        let too_big = ((MAX_CHUNK + 1) as u32).to_le_bytes();
        assert!(matches!(split(&too_big), Err(FrameError::TooLarge(_))));
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
