//! A real HTTPS client for the gateway tests: rustls (TLS 1.2/1.3, ALPN), hyper's HTTP/1.1 or
//! HTTP/2 client connection, optional client certificate, run from inside a lab namespace.
//! One connection can carry several requests, so a test can hold it across a reload.

use anyhow::{Context, Result, anyhow};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the gateway.
#[derive(Clone)]
pub struct Tls {
    /// PEM of the CA that signed the server certificate.
    pub ca_pem: String,
    pub server_name: String,
    /// PEM certificate and key of the client (mTLS).
    pub client: Option<(String, String)>,
    pub http2: bool,
}

/// One answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub version: Version,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A request: method, path, headers, body.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send the body without a declared length (chunked on HTTP/1.1, bare DATA frames on
    /// HTTP/2), as a streaming client does.
    pub unsized_body: bool,
}

/// A complete body that does not tell its size, so no `Content-Length` is derived from it.
struct Unsized(Full<Bytes>);

impl hyper::body::Body for Unsized {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.0).poll_frame(cx)
    }
}

type ClientBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

impl Req {
    pub fn get(path: &str) -> Req {
        Req {
            method: "GET",
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            unsized_body: false,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// The rustls client configuration for `tls` (roots, client certificate, ALPN).
pub fn client_config(tls: &Tls) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(tls.ca_pem.as_bytes()) {
        roots
            .add(c.context("the CA certificate")?)
            .context("a root certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS protocol versions")?
        .with_root_certificates(roots);
    let mut cfg = match &tls.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .context("the client certificate")?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).context("the client key")?;
            builder
                .with_client_auth_cert(chain, key)
                .context("the client certificate and key")?
        }
    };
    cfg.alpn_protocols = if tls.http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(cfg)
}

enum Sender {
    H1(http1::SendRequest<ClientBody>),
    H2(http2::SendRequest<ClientBody>),
}

/// Opens one TLS connection to `addr` (from the current thread's namespace) and sends every
/// request of `batch` on it in order, calling `between(i)` before request `i` (e.g. to reload
/// the daemon mid-connection). Stops at the first failure.
pub fn session(
    addr: SocketAddr,
    tls: &Tls,
    batch: &[Req],
    mut between: impl FnMut(usize),
) -> Result<Vec<Answer>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a tokio runtime")?;
    rt.block_on(async {
        let connector = TlsConnector::from(Arc::new(client_config(tls)?));
        let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connect timed out"))?
            .context("connect")?;
        let name = ServerName::try_from(tls.server_name.clone()).context("the server name")?;
        let stream = tokio::time::timeout(TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| anyhow!("TLS handshake timed out"))?
            .context("TLS handshake")?;
        let io = TokioIo::new(stream);
        let mut sender = if tls.http2 {
            let (s, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .context("h2 handshake")?;
            tokio::spawn(conn);
            Sender::H2(s)
        } else {
            let (s, conn) = http1::handshake(io).await.context("h1 handshake")?;
            tokio::spawn(conn);
            Sender::H1(s)
        };
        let mut answers = Vec::new();
        for (i, r) in batch.iter().enumerate() {
            between(i);
            let uri = if tls.http2 {
                format!("https://{}{}", tls.server_name, r.path)
            } else {
                r.path.clone()
            };
            let mut req = Request::builder().method(r.method).uri(uri);
            if !tls.http2 {
                req = req.header("host", &tls.server_name);
            }
            for (n, v) in &r.headers {
                req = req.header(n, v);
            }
            let full = Full::new(Bytes::from(r.body.clone()));
            let body = if r.unsized_body {
                Unsized(full).boxed()
            } else {
                full.boxed()
            };
            let req = req.body(body).context("the request")?;
            let resp = match &mut sender {
                Sender::H1(s) => {
                    s.ready().await.context("h1 not ready")?;
                    tokio::time::timeout(TIMEOUT, s.send_request(req)).await
                }
                Sender::H2(s) => {
                    s.ready().await.context("h2 not ready")?;
                    tokio::time::timeout(TIMEOUT, s.send_request(req)).await
                }
            }
            .map_err(|_| anyhow!("response timed out"))?
            .context("request")?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.context("body")?.to_bytes();
            answers.push(Answer {
                status: parts.status.as_u16(),
                version: parts.version,
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(answers)
    })
}

/// One request on its own connection.
pub fn once(addr: SocketAddr, tls: &Tls, req: Req) -> Result<Answer> {
    session(addr, tls, &[req], |_| {}).map(|mut a| a.remove(0))
}
