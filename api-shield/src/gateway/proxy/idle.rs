//! Idle detection for client connections: any byte read or written counts as activity, so a
//! connection that moves nothing for the idle timeout is closed whatever protocol it speaks
//! (hyper bounds request heads, not silence between requests or HTTP/2 streams). While the
//! listener is short of connection slots, a connection with no request in flight is closed
//! sooner: after the header timeout rather than the idle one.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

/// When the connection last moved a byte, as milliseconds since it was accepted.
#[derive(Clone, Debug)]
pub struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
    in_flight: Arc<AtomicUsize>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last_ms: Arc::default(),
            in_flight: Arc::default(),
        }
    }
}

/// A request in flight on a connection; over when dropped.
#[derive(Debug)]
pub struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long nothing has moved.
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Marks a request in flight until the guard drops.
    pub fn busy(&self) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(&self.in_flight))
    }

    fn has_requests_in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    /// Resolves once nothing has moved for `limit`, or, while `scarce` is true, once nothing
    /// has moved for `scarce_limit` and no request is in flight (a keep-alive connection
    /// holding a slot others need).
    pub async fn idle_or_scarce(
        &self,
        limit: Duration,
        scarce_limit: Duration,
        mut scarce: watch::Receiver<bool>,
    ) {
        loop {
            let short = *scarce.borrow_and_update();
            let idle = self.idle_for();
            if idle >= limit {
                return;
            }
            let wait = if short && !self.has_requests_in_flight() {
                if idle >= scarce_limit {
                    return;
                }
                scarce_limit - idle
            } else if short {
                // A request may finish any time: look again within a header timeout.
                scarce_limit.min(limit - idle)
            } else {
                limit - idle
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = scarce.changed() => {
                    if changed.is_err() {
                        // The listener is gone: only the ordinary idle rule is left.
                        return self.idle(limit).await;
                    }
                }
            }
        }
    }

    /// Resolves once nothing has moved for `limit`.
    pub async fn idle(&self, limit: Duration) {
        loop {
            let idle = self.idle_for();
            if idle >= limit {
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }
}

/// An I/O object that records its activity.
pub struct IdleIo<T> {
    inner: T,
    activity: Activity,
}

impl<T> IdleIo<T> {
    pub fn new(inner: T, activity: Activity) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn silence_is_measured_from_the_last_byte() {
        let (a, mut b) = tokio::io::duplex(64);
        let activity = Activity::default();
        let mut io = IdleIo::new(a, activity.clone());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(activity.idle_for() >= Duration::from_millis(100));
        b.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        io.read_exact(&mut one).await.unwrap();
        assert!(activity.idle_for() < Duration::from_millis(50));
        let started = Instant::now();
        activity.idle(Duration::from_millis(60)).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn scarcity_closes_a_silent_connection_at_the_shorter_limit_unless_busy() {
        let (scarce_tx, scarce) = watch::channel(false);
        let activity = Activity::default();
        let long = Duration::from_secs(60);
        let short = Duration::from_millis(100);
        let waiting = activity.clone();
        let closed = tokio::spawn(async move { waiting.idle_or_scarce(long, short, scarce).await });
        tokio::time::sleep(short * 3).await;
        assert!(
            !closed.is_finished(),
            "plentiful slots: the idle limit applies"
        );
        let busy = activity.busy();
        scarce_tx.send_replace(true);
        tokio::time::sleep(short * 3).await;
        assert!(!closed.is_finished(), "a request in flight keeps it");
        drop(busy);
        tokio::time::timeout(short * 3, closed)
            .await
            .expect("closed once no request is in flight")
            .unwrap();
    }
}
