//! The body of a request that carries data (`import`): the bytes follow the request line as
//! frames, each a 4-byte big-endian length and that many bytes, ended by an empty frame.
//!
//! The end frame is what tells a complete list from one cut short: a client whose file read
//! fails, or that is killed, closes without it, and the daemon applies nothing. The daemon
//! reads with a cap on the total and on the wait for each frame, so a stalled pipe or an
//! endless source costs one connection, never the daemon's state lock or its memory.

use std::io::{self, Read, Write};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of one frame the client sends, and the most a frame may announce.
pub const FRAME_BYTES: usize = 64 * 1024;
/// Length prefix of a frame.
const LENGTH_BYTES: usize = 4;

/// Limits on a body the daemon reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimits {
    /// Most bytes a body may hold.
    pub max_bytes: u64,
    /// Longest wait for the next frame.
    pub read_timeout: Duration,
}

/// Why a body was not read whole. Each message says that nothing was applied.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the list is larger than {limit} bytes (import.max_bytes); nothing was applied")]
    TooLarge { limit: u64 },
    #[error("no data arrived for {0:?} (import.read_timeout); nothing was applied")]
    Timeout(Duration),
    #[error(
        "the client stopped before the end of the list (its read failed or it was \
         interrupted); nothing was applied"
    )]
    Truncated,
    #[error("a frame announced {0} bytes, more than {FRAME_BYTES}; nothing was applied")]
    BadFrame(u32),
    #[error(
        "other imports kept the daemon busy for {0:?} (import.read_timeout); nothing was \
         applied: try again"
    )]
    Busy(Duration),
    #[error("reading the list failed: {0}; nothing was applied")]
    Io(#[from] io::Error),
}

/// Reads a framed body up to its end frame, within `limits`.
pub async fn read<R: AsyncRead + Unpin>(
    reader: &mut R,
    limits: BodyLimits,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    loop {
        let mut prefix = [0u8; LENGTH_BYTES];
        timed(limits.read_timeout, reader.read_exact(&mut prefix)).await?;
        let announced = u32::from_be_bytes(prefix);
        if announced == 0 {
            return Ok(body);
        }
        let len = usize::try_from(announced).unwrap_or(usize::MAX);
        if len > FRAME_BYTES {
            return Err(BodyError::BadFrame(announced));
        }
        if (body.len() + len) as u64 > limits.max_bytes {
            return Err(BodyError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        let start = body.len();
        body.resize(start + len, 0);
        timed(limits.read_timeout, reader.read_exact(&mut body[start..])).await?;
    }
}

async fn timed(
    limit: Duration,
    read: impl Future<Output = io::Result<usize>>,
) -> Result<(), BodyError> {
    match tokio::time::timeout(limit, read).await {
        Err(_) => Err(BodyError::Timeout(limit)),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Err(BodyError::Truncated),
        Ok(Err(e)) => Err(BodyError::Io(e)),
        Ok(Ok(_)) => Ok(()),
    }
}

/// Why sending a body stopped.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Reading the source failed; the end frame was not sent, so the daemon applies nothing.
    #[error("{0}")]
    Source(io::Error),
    /// Writing to the daemon failed (it may have refused the body and closed).
    #[error("{0}")]
    Sink(io::Error),
}

/// Copies `source` to `sink` as frames and ends with the end frame. Returns the bytes sent.
pub fn send<R: Read + ?Sized, W: Write + ?Sized>(
    source: &mut R,
    sink: &mut W,
) -> Result<u64, SendError> {
    let mut buf = vec![0u8; LENGTH_BYTES + FRAME_BYTES];
    let mut total = 0u64;
    loop {
        let n = match source.read(&mut buf[LENGTH_BYTES..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SendError::Source(e)),
        };
        // At most FRAME_BYTES, which fits the prefix.
        let prefix = u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
        buf[..LENGTH_BYTES].copy_from_slice(&prefix);
        sink.write_all(&buf[..LENGTH_BYTES + n])
            .map_err(SendError::Sink)?;
        if n == 0 {
            sink.flush().map_err(SendError::Sink)?;
            return Ok(total);
        }
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BodyLimits = BodyLimits {
        max_bytes: 1 << 20,
        read_timeout: Duration::from_secs(5),
    };

    fn framed(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        send(&mut &data[..], &mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn round_trip_of_empty_small_and_multi_frame_bodies() {
        for len in [0, 1, FRAME_BYTES - 1, FRAME_BYTES, 3 * FRAME_BYTES + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let wire = framed(&data);
            let got = read(&mut &wire[..], LIMITS).await.unwrap();
            assert_eq!(got, data, "length {len}");
        }
    }

    #[tokio::test]
    async fn a_body_without_its_end_frame_is_refused() {
        let mut wire = framed(b"198.18.0.1\n198.18.0.2\n");
        wire.truncate(wire.len() - LENGTH_BYTES);
        let err = read(&mut &wire[..], LIMITS).await.unwrap_err();
        assert!(matches!(err, BodyError::Truncated), "{err}");
        // Cut inside a frame too.
        wire.truncate(LENGTH_BYTES + 3);
        let err = read(&mut &wire[..], LIMITS).await.unwrap_err();
        assert!(matches!(err, BodyError::Truncated), "{err}");
    }

    #[tokio::test]
    async fn the_cap_is_enforced_before_the_bytes_are_kept() {
        let limits = BodyLimits {
            max_bytes: 100,
            ..LIMITS
        };
        let wire = framed(&[b'x'; 101]);
        let err = read(&mut &wire[..], limits).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "the list is larger than 100 bytes (import.max_bytes); nothing was applied"
        );
        let wire = framed(&[b'x'; 100]);
        assert_eq!(read(&mut &wire[..], limits).await.unwrap().len(), 100);
    }

    #[tokio::test]
    async fn an_oversize_frame_is_refused_without_allocating_it() {
        let wire = u32::MAX.to_be_bytes();
        let err = read(&mut &wire[..], LIMITS).await.unwrap_err();
        assert!(matches!(err, BodyError::BadFrame(u32::MAX)), "{err}");
    }

    #[tokio::test]
    async fn a_stalled_client_times_out() {
        let limits = BodyLimits {
            read_timeout: Duration::from_millis(100),
            ..LIMITS
        };
        let (mut client, mut server) = tokio::io::duplex(64);
        // One frame arrives, then nothing: the wait is per frame, not for the whole body.
        tokio::io::AsyncWriteExt::write_all(&mut client, &[0, 0, 0, 1, b'x'])
            .await
            .unwrap();
        let err = read(&mut server, limits).await.unwrap_err();
        assert!(
            matches!(err, BodyError::Timeout(t) if t == limits.read_timeout),
            "{err}"
        );
    }

    #[test]
    fn a_failing_source_sends_no_end_frame() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk on fire"));
                }
                self.0 -= 1;
                buf[0] = b'1';
                Ok(1)
            }
        }
        let mut out = Vec::new();
        let err = send(&mut Failing(2), &mut out).unwrap_err();
        assert!(matches!(err, SendError::Source(_)));
        // Two one-byte frames, no end frame.
        assert_eq!(out, [0, 0, 0, 1, b'1', 0, 0, 0, 1, b'1']);
    }
}
