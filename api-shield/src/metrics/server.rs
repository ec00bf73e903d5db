//! The metrics listener: plain HTTP/1.1, `GET /metrics`, served by hyper. Every scrape reads
//! the live state through the daemon's [`SnapshotSource`], so nothing is cached and nothing is
//! counted twice.

use crate::accept::Accept;
use crate::accept::slots::{RefusalCounters, SlotLimits};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use super::config::MetricsConfig;
use super::encode::{CONTENT_TYPE as EXPOSITION, render};
use super::snapshot::SnapshotSource;
use crate::gateway::GatewayMetrics;

/// A scraper must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; a scraper needs one.
const MAX_CONNECTIONS: usize = 16;
/// Of them from one source: half, so one stuck client leaves room for the scraper.
const MAX_CONNECTIONS_PER_SOURCE: usize = MAX_CONNECTIONS / 2;

type Body = Full<Bytes>;

/// A bound metrics listener, not yet serving.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: io::Error,
}

/// Binds `cfg.listen`. Must be called within a Tokio runtime.
pub async fn bind(cfg: &MetricsConfig) -> Result<MetricsListener, BindError> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| BindError {
            addr: cfg.listen,
            source,
        })?;
    Ok(MetricsListener { listener })
}

impl MetricsListener {
    /// The address bound, with the port the system chose for port 0.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves scrapes of what `source` reads, and of `gateway` when a gateway runs, until `shutdown`
    /// completes; connections still open then are dropped (a scrape is short, and the scraper
    /// retries).
    pub async fn serve(
        self,
        source: SnapshotSource,
        gateway: Option<Arc<GatewayMetrics>>,
        shutdown: impl Future<Output = ()>,
    ) {
        // A scrape is short and the scraper retries: nothing to wait for at shutdown.
        let limits = SlotLimits {
            per_source: MAX_CONNECTIONS_PER_SOURCE,
            ..SlotLimits::total(MAX_CONNECTIONS)
        };
        let accept = Accept::new(
            "metrics",
            limits,
            RefusalCounters::default(),
            Duration::ZERO,
        );
        accept
            .serve(self.listener, shutdown, |stream, peer, _stopping| {
                connection(stream, peer, Arc::clone(&source), gateway.clone())
            })
            .await;
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    source: SnapshotSource,
    gateway: Option<Arc<GatewayMetrics>>,
) {
    let service = service_fn(move |req| handle(Arc::clone(&source), gateway.clone(), req));
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn handle(
    source: SnapshotSource,
    gateway: Option<Arc<GatewayMetrics>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    if path != "/metrics" && path != "/" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found; try /metrics\n",
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "use GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    if path == "/" {
        return Ok(reply(
            StatusCode::OK,
            TEXT,
            "api-shield: metrics at /metrics\n",
        ));
    }
    // Reading the kernel maps is a handful of syscalls under the state lock: off the runtime.
    let gathered = tokio::task::spawn_blocking(move || source().map_err(|e| e.to_string()))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
    let rendered = gathered.and_then(|s| render(s, gateway.as_deref()).map_err(|e| e.to_string()));
    Ok(match rendered {
        Ok(text) => reply(StatusCode::OK, EXPOSITION, text),
        Err(e) => {
            tracing::error!(error = %e, "metrics: reading the shield's state failed");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                format!("reading the shield's state failed: {e}\n"),
            )
        }
    })
}
