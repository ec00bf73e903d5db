//! Request bodies on their way upstream: bounded in size and in time, and saying afterwards
//! which bound stopped them, so the client gets 413 or 408 rather than a bare 502.
//!
//! On HTTP/2 a request body dropped unread resets its stream, and clients (curl among them)
//! then report a framing error instead of the 413 they were sent. So an HTTP/2 body refused
//! for its size is read to its end and discarded ([`drain`]), bounded in time and bytes, after
//! the answer went out.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep, sleep_until};

pub type BoxError = Box<dyn StdError + Send + Sync>;
/// Every body the gateway sends, either way.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Why a guarded body stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyStop {
    #[error("request body larger than the limit")]
    TooLarge,
    #[error("request body not received in time")]
    TimedOut,
}

const RUNNING: u8 = 0;
const TOO_LARGE: u8 = 1;
const TIMED_OUT: u8 = 2;

/// Shared with the handler: what stopped the body, if anything.
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<AtomicU8>);

impl StopFlag {
    pub fn get(&self) -> Option<BodyStop> {
        match self.0.load(Ordering::Acquire) {
            TOO_LARGE => Some(BodyStop::TooLarge),
            TIMED_OUT => Some(BodyStop::TimedOut),
            _ => None,
        }
    }

    fn set(&self, stop: BodyStop) -> BodyStop {
        let v = match stop {
            BodyStop::TooLarge => TOO_LARGE,
            BodyStop::TimedOut => TIMED_OUT,
        };
        let _ = self
            .0
            .compare_exchange(RUNNING, v, Ordering::AcqRel, Ordering::Acquire);
        stop
    }
}

/// Most bytes of a refused HTTP/2 body read and discarded: past this the stream is reset.
pub const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Reads `body` to its end in the background and discards it, for at most `within` and
/// [`DRAIN_MAX_BYTES`]; then drops it.
pub fn drain<B>(body: B, within: Duration)
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    tokio::spawn(async move {
        let mut body = body;
        let mut left = DRAIN_MAX_BYTES;
        let discard = async {
            while let Some(Ok(frame)) = body.frame().await {
                let len = frame.data_ref().map_or(0, Bytes::len);
                match left.checked_sub(u64::try_from(len).unwrap_or(u64::MAX)) {
                    Some(l) => left = l,
                    None => break,
                }
            }
        };
        let _ = tokio::time::timeout(within, discard).await;
    });
}

/// A body that fails once more than `max` bytes arrived or `deadline` passed.
pub struct Guarded<B> {
    /// `None` once handed to [`drain`].
    inner: Option<B>,
    left: u64,
    deadline: Pin<Box<Sleep>>,
    flag: StopFlag,
    /// Set for HTTP/2: a body over the limit is drained this long rather than dropped.
    drain_within: Option<Duration>,
}

impl<B> Guarded<B> {
    pub fn new(inner: B, max: u64, within: Duration, flag: StopFlag) -> Self {
        Self {
            inner: Some(inner),
            left: max,
            deadline: Box::pin(sleep_until(Instant::now() + within)),
            flag,
            drain_within: None,
        }
    }

    /// Once over the limit, the rest of the body is drained for up to `within` (HTTP/2).
    #[must_use]
    pub fn drain_when_too_large(mut self, within: Duration) -> Self {
        self.drain_within = Some(within);
        self
    }
}

impl<B> Body for Guarded<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Some(Err(BodyStop::TooLarge.into())));
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    match this.left.checked_sub(len) {
                        Some(left) => this.left = left,
                        None => {
                            if let (Some(within), Some(rest)) =
                                (this.drain_within, this.inner.take())
                            {
                                drain(rest, within);
                            }
                            return Poll::Ready(Some(Err(this
                                .flag
                                .set(BodyStop::TooLarge)
                                .into())));
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(this.flag.set(BodyStop::TimedOut).into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Any body as a [`ProxyBody`].
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Chunks, then (when `stall`) a body that never ends.
    struct Chunks {
        left: VecDeque<Bytes>,
        stall: bool,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            match self.left.pop_front() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None if self.stall => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn chunks(n: usize, size: usize, stall: bool) -> Chunks {
        Chunks {
            left: (0..n).map(|_| Bytes::from(vec![0u8; size])).collect(),
            stall,
        }
    }

    #[tokio::test]
    async fn size_limit_trips_and_says_so() {
        let flag = StopFlag::default();
        let body = Guarded::new(
            chunks(3, 10, false),
            25,
            Duration::from_secs(5),
            flag.clone(),
        );
        assert!(body.collect().await.is_err());
        assert_eq!(flag.get(), Some(BodyStop::TooLarge));
        let flag = StopFlag::default();
        let body = Guarded::new(
            chunks(3, 10, false),
            30,
            Duration::from_secs(5),
            flag.clone(),
        );
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 30);
        assert_eq!(flag.get(), None);
    }

    /// Counts the frames taken from it.
    struct Counted(Chunks, Arc<std::sync::atomic::AtomicUsize>);

    impl Body for Counted {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let r = Pin::new(&mut self.0).poll_frame(cx);
            if matches!(r, Poll::Ready(Some(Ok(_)))) {
                self.1.fetch_add(1, Ordering::Relaxed);
            }
            r
        }
    }

    #[tokio::test]
    async fn an_oversize_body_is_drained_when_asked_not_dropped() {
        let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let flag = StopFlag::default();
        let body = Guarded::new(
            Counted(chunks(10, 10, false), Arc::clone(&taken)),
            25,
            Duration::from_secs(5),
            flag.clone(),
        )
        .drain_when_too_large(Duration::from_secs(5));
        assert!(body.collect().await.is_err());
        assert_eq!(flag.get(), Some(BodyStop::TooLarge));
        // The drain runs beside us and reads the other 7 chunks to the end.
        for _ in 0..100 {
            if taken.load(Ordering::Relaxed) == 10 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(taken.load(Ordering::Relaxed), 10);
        // Without it, nothing past the limit is read.
        let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let body = Guarded::new(
            Counted(chunks(10, 10, false), Arc::clone(&taken)),
            25,
            Duration::from_secs(5),
            StopFlag::default(),
        );
        assert!(body.collect().await.is_err());
        tokio::task::yield_now().await;
        assert_eq!(taken.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let flag = StopFlag::default();
        let body = Guarded::new(
            chunks(1, 10, true),
            100,
            Duration::from_millis(50),
            flag.clone(),
        );
        assert!(body.collect().await.is_err());
        assert_eq!(flag.get(), Some(BodyStop::TimedOut));
    }
}
