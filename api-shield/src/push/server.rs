//! The listener: TCP (and TLS) connections served by hyper's HTTP/1.1 server.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::auth::Token;
use super::backend::PushBackend;
use super::config::PushConfig;
use super::routes::{self, State};
use super::{PushError, tls};
use crate::accept::Accept;
use crate::accept::http::{Http1Limits, serve_http1, tls_handshake};
use crate::accept::slots::{RefusalCounters, SlotLimits};

/// Names the listener in logs.
const WHAT: &str = "push API";

/// A client must send a request's headers within this time, also on an idle keep-alive
/// connection, so silent clients cannot hold connections open.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed on arrival so descriptors cannot run out.
const MAX_CONNECTIONS: usize = 256;
/// Of them from one source: a quarter, so one client cannot hold the push API alone.
const MAX_CONNECTIONS_PER_SOURCE: usize = MAX_CONNECTIONS / 4;
/// Time requests in flight get to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A bound push API listener, not yet serving.
pub struct PushListener {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    max_batch: usize,
    body_limit: usize,
}

impl std::fmt::Debug for PushListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushListener")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .field("max_batch", &self.max_batch)
            .field("body_limit", &self.body_limit)
            .finish()
    }
}

/// Checks `cfg`, loads the TLS files if any and binds the listener. Must be called within a
/// Tokio runtime.
pub async fn bind(cfg: &PushConfig) -> Result<PushListener, PushError> {
    cfg.validate()?;
    let tls = cfg
        .tls_files()
        .map(|(cert, key)| tls::acceptor(cert, key))
        .transpose()?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| PushError::Bind {
            addr: cfg.listen,
            source,
        })?;
    if tls.is_none() && !cfg.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %cfg.listen,
            "the push API listens beyond loopback without TLS: its token crosses the network in \
             clear; set push.tls_cert and push.tls_key"
        );
    }
    Ok(PushListener {
        listener,
        tls,
        max_batch: cfg.max_batch,
        body_limit: cfg.body_limit(),
    })
}

/// Binds as `bind` does and serves until `shutdown` completes.
pub async fn serve(
    cfg: &PushConfig,
    token: Token,
    backend: Arc<dyn PushBackend>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PushError> {
    bind(cfg).await?.serve(token, backend, shutdown).await
}

impl PushListener {
    /// The address bound, with the port the system chose for port 0.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Accepts connections until `shutdown` completes, then lets requests in flight finish
    /// for a moment and drops the connections left.
    pub async fn serve(
        self,
        token: Token,
        backend: Arc<dyn PushBackend>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), PushError> {
        let state = Arc::new(State {
            token,
            backend,
            max_batch: self.max_batch,
            body_limit: self.body_limit,
        });
        let tls = self.tls;
        let limits = SlotLimits {
            per_source: MAX_CONNECTIONS_PER_SOURCE,
            ..SlotLimits::total(MAX_CONNECTIONS)
        };
        Accept::new(WHAT, limits, RefusalCounters::default(), SHUTDOWN_GRACE)
            .serve(self.listener, shutdown, |stream, peer, stopping| {
                connection(stream, peer, tls.clone(), Arc::clone(&state), stopping)
            })
            .await;
        Ok(())
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    stopping: watch::Receiver<bool>,
) {
    let service = service_fn(move |req| routes::handle(Arc::clone(&state), peer, req));
    let limits = Http1Limits {
        header_read_timeout: HEADER_READ_TIMEOUT,
        max_buf_size: None,
    };
    let Some(acceptor) = tls else {
        return serve_http1(stream, peer, service, limits, stopping, WHAT).await;
    };
    if let Some(tls) = tls_handshake(&acceptor, stream, TLS_HANDSHAKE_TIMEOUT, WHAT, peer).await {
        serve_http1(tls, peer, service, limits, stopping, WHAT).await;
    }
}
