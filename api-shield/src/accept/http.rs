//! Serving HTTP on an accepted connection, the same way for every HTTP listener (the gateway,
//! the check endpoint and the push API): an optional TLS handshake within a deadline, then a
//! hyper connection driven until it ends, until something cuts it (the gateway's idle
//! timeout), or until the listener stops, when the request in flight finishes and the
//! connection closes.

use std::error::Error as StdError;
use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::Stopping;

/// Runs the TLS handshake of `stream` within `within`; `None` (logged at debug, as a client's
/// fault) when it fails or takes too long. `what` names the listener in logs.
pub async fn tls_handshake<IO>(
    acceptor: &TlsAcceptor,
    stream: IO,
    within: Duration,
    what: &str,
    peer: SocketAddr,
) -> Option<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(within, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "{what}: TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "{what}: TLS handshake timed out");
            None
        }
    }
}

/// How a connection [`drive`]n to its end ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Closed cleanly, by the client or after the listener stopped.
    Closed,
    /// With an error (logged at debug: a client's fault as often as not).
    Failed,
    /// Cut off by the `cut` future and dropped at once.
    Cut,
}

/// Drives a hyper connection until it ends, until `cut` resolves (dropped at once), or
/// until the listener stops: then the request in flight, if any, finishes and the
/// connection closes. An error is logged at debug, naming the listener (`what`).
pub fn drive<'s, C, Cut>(
    conn: C,
    stopping: &'s mut Stopping,
    cut: Cut,
    what: &'static str,
    peer: SocketAddr,
) -> Drive<C, Cut, impl Future<Output = bool> + 's>
where
    C: GracefulConnection,
    C::Error: Display,
    Cut: Future<Output = ()>,
{
    Drive {
        conn,
        cut,
        // `wait_for` yields a guard that must not live across an await, hence the `is_ok`;
        // `false` when the listener is gone without saying stop.
        stop: async move { stopping.wait_for(|stop| *stop).await.is_ok() },
        state: DriveState::Serving,
        what,
        peer,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DriveState {
    Serving,
    /// The stop signal can no longer come.
    Unstoppable,
    /// Told to finish: only the connection is polled now.
    Finishing,
}

pin_project! {
    /// The future [`drive`] returns. A hand-written future rather than an `async fn`: the
    /// gateway's connection type holds `Box<dyn Error>`s, and a generic `async fn` over it
    /// makes its task fail the compiler's `Send` check (a higher-ranked lifetime it cannot
    /// prove), which a plain struct, `Send` field by field, does not.
    pub struct Drive<C, Cut, Stop> {
        #[pin]
        conn: C,
        #[pin]
        cut: Cut,
        #[pin]
        stop: Stop,
        state: DriveState,
        what: &'static str,
        peer: SocketAddr,
    }
}

impl<C, Cut, Stop> Future for Drive<C, Cut, Stop>
where
    C: GracefulConnection,
    C::Error: Display,
    Cut: Future<Output = ()>,
    Stop: Future<Output = bool>,
{
    type Output = Ended;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        let mut this = self.project();
        if *this.state != DriveState::Finishing {
            if this.cut.poll(cx).is_ready() {
                return Poll::Ready(Ended::Cut);
            }
            if *this.state == DriveState::Serving
                && let Poll::Ready(stop) = this.stop.poll(cx)
            {
                *this.state = if stop {
                    this.conn.as_mut().graceful_shutdown();
                    DriveState::Finishing
                } else {
                    DriveState::Unstoppable
                };
            }
        }
        match this.conn.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ended::Closed),
            Poll::Ready(Err(e)) => {
                let (what, peer) = (*this.what, *this.peer);
                tracing::debug!(%peer, error = %e, "{what} connection ended with an error");
                Poll::Ready(Ended::Failed)
            }
        }
    }
}

/// The bounds of an HTTP/1.1-only listener.
#[derive(Clone, Copy, Debug)]
pub struct Http1Limits {
    /// A request head must arrive within this.
    pub header_read_timeout: Duration,
    /// The largest read buffer, which bounds a request head; hyper's default when `None`.
    pub max_buf_size: Option<usize>,
}

/// Serves HTTP/1.1 on `io` with `service` until the connection ends or the listener stops
/// (see [`drive`]); an error is logged at debug, naming the listener (`what`).
pub async fn serve_http1<I, S>(
    io: I,
    peer: SocketAddr,
    service: S,
    limits: Http1Limits,
    mut stopping: Stopping,
    what: &'static str,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    if let Some(max) = limits.max_buf_size {
        builder.max_buf_size(max);
    }
    let conn = builder.serve_connection(TokioIo::new(io), service);
    drive(conn, &mut stopping, std::future::pending(), what, peer).await;
}
