//! A deliberately plain HTTP/1.1 client: requests written by hand on a TCP (or TLS) stream,
//! so the tests see exactly what goes over the wire.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const HEAD_END: &[u8] = b"\r\n\r\n";
const TLS_NAME: &str = "localhost";

#[derive(Debug)]
pub(super) struct Reply {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// What a request carries besides its method and path.
#[derive(Clone, Debug, Default)]
pub(super) struct Extra<'a> {
    pub token: Option<&'a str>,
    pub body: Option<Vec<u8>>,
    /// Sends the body as one chunk of a chunked body instead of with a length.
    pub chunked: bool,
    /// Raw header lines (without line ends).
    pub headers: Vec<String>,
}

#[derive(Clone)]
pub(super) struct Client {
    addr: SocketAddr,
    tls: Option<TlsConnector>,
}

impl Client {
    pub(super) fn plain(addr: SocketAddr) -> Self {
        Self { addr, tls: None }
    }

    /// A TLS client that trusts only `cert`.
    pub(super) fn tls(addr: SocketAddr, cert: CertificateDer<'static>) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            addr,
            tls: Some(TlsConnector::from(Arc::new(config))),
        }
    }

    pub(super) async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(
            "GET",
            path,
            Extra {
                token,
                ..Extra::default()
            },
        )
        .await
    }

    pub(super) async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send(
            "POST",
            path,
            Extra {
                token,
                body: Some(serde_json::to_vec(body).unwrap()),
                ..Extra::default()
            },
        )
        .await
    }

    pub(super) async fn send(&self, method: &str, path: &str, extra: Extra<'_>) -> Reply {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        match &self.tls {
            None => exchange(tcp, method, path, extra).await,
            Some(connector) => {
                let name = ServerName::try_from(TLS_NAME).unwrap();
                let stream = connector.connect(name, tcp).await.unwrap();
                exchange(stream, method, path, extra).await
            }
        }
    }
}

async fn exchange<S>(mut stream: S, method: &str, path: &str, extra: Extra<'_>) -> Reply
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {TLS_NAME}\r\nConnection: close\r\n");
    if let Some(token) = extra.token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for line in &extra.headers {
        head.push_str(line);
        head.push_str("\r\n");
    }
    let mut wire = Vec::new();
    match &extra.body {
        Some(body) if extra.chunked => {
            head.push_str("Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
            wire.extend_from_slice(head.as_bytes());
            wire.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
            wire.extend_from_slice(body);
            wire.extend_from_slice(b"\r\n0\r\n\r\n");
        }
        Some(body) => {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ));
            wire.extend_from_slice(head.as_bytes());
            wire.extend_from_slice(body);
        }
        None => {
            head.push_str("\r\n");
            wire.extend_from_slice(head.as_bytes());
        }
    }
    // The server may answer (413) and close before reading everything: a failed write is
    // fine as long as the answer arrives.
    let _ = stream.write_all(&wire).await;
    let _ = stream.flush().await;
    let mut received = Vec::new();
    // An abrupt close after the answer (a reset, a TLS close without close_notify) still
    // leaves what was received.
    let _ = stream.read_to_end(&mut received).await;
    parse(&received)
}

fn parse(received: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(received);
    let split = received
        .windows(HEAD_END.len())
        .position(|w| w == HEAD_END)
        .unwrap_or_else(|| panic!("no complete answer: {text:?}"));
    let head = String::from_utf8(received[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = received[split + HEAD_END.len()..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse::<usize>().unwrap());
    if let Some(length) = length {
        assert!(body.len() >= length, "short body: {text:?}");
        body.truncate(length);
    }
    Reply {
        status,
        headers,
        body,
    }
}
