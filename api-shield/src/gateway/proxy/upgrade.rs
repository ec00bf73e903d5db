//! WebSocket through the gateway (HTTP/1.1 `Upgrade: websocket`, RFC 6455): the upgrade
//! request is decided like any other (authentication and quotas apply to it, so a refused one
//! never reaches the upstream), forwarded with its upgrade headers, and when the upstream
//! answers 101 both connections are spliced into one byte tunnel.
//!
//! The tunnel runs inside the client connection's own task (handed over through [`Tunnels`]
//! once hyper has written the 101), so it holds the connection's slot of `max_connections`,
//! and the connection's idle timeout and the gateway's shutdown end it like any connection.
//!
//! HTTP/2 WebSockets (extended CONNECT, RFC 8441) are not offered: the gateway does not send
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL`, so clients use HTTP/1.1 for them, and a `CONNECT`
//! request is answered 501.

use std::future::Future;
use std::pin::Pin;

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use super::body::{self, ProxyBody};

const WEBSOCKET: &str = "websocket";
const UPGRADE_TOKEN: &str = "upgrade";

/// A spliced connection pair, to be run by the client connection's task.
pub type Tunnel = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Carries the tunnel of an upgraded request back to its connection's task. Put in each
/// request's extensions by the HTTP/1.1 connection; absent on HTTP/2.
#[derive(Clone, Debug)]
pub struct Tunnels(mpsc::Sender<Tunnel>);

/// One per connection: the sender for its requests, the receiver for its task.
pub fn tunnels() -> (Tunnels, mpsc::Receiver<Tunnel>) {
    // One upgrade ends an HTTP/1.1 connection: there is never a second tunnel.
    let (tx, rx) = mpsc::channel(1);
    (Tunnels(tx), rx)
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// An HTTP/1.1 `GET` asking to switch to WebSocket.
pub fn is_websocket<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.method() == Method::GET
        && has_token(req.headers(), header::CONNECTION, UPGRADE_TOKEN)
        && has_token(req.headers(), header::UPGRADE, WEBSOCKET)
}

/// A WebSocket upgrade on its way: the client's side, waiting for the 101.
pub struct Upgrade {
    client: OnUpgrade,
    tunnels: Tunnels,
}

impl Upgrade {
    /// Takes the client side of a WebSocket upgrade request, when it is one and its
    /// connection can carry a tunnel.
    pub fn take<B>(req: &mut Request<B>) -> Option<Self> {
        if !is_websocket(req) {
            return None;
        }
        let tunnels = req.extensions_mut().remove::<Tunnels>()?;
        Some(Self {
            client: hyper::upgrade::on(req),
            tunnels,
        })
    }

    /// The upgrade headers, back on a request or a 101 after hop-by-hop headers were removed.
    pub fn restore_headers(headers: &mut HeaderMap) {
        headers.insert(header::CONNECTION, HeaderValue::from_static(UPGRADE_TOKEN));
        headers.insert(header::UPGRADE, HeaderValue::from_static(WEBSOCKET));
    }

    /// Answers the client with the upstream's 101 (`parts` already cleaned of hop-by-hop
    /// headers) and hands the splice of both connections to the client connection's task.
    /// `upstream` is the upstream response's upgrade.
    pub fn splice(
        self,
        mut parts: hyper::http::response::Parts,
        upstream: OnUpgrade,
    ) -> Response<ProxyBody> {
        let client = self.client;
        let tunnel: Tunnel = Box::pin(async move {
            let (client, upstream) = match tokio::try_join!(client, upstream) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(error = %e, "gateway: WebSocket upgrade failed");
                    return;
                }
            };
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                Ok((up, down)) => {
                    tracing::debug!(up, down, "gateway: WebSocket closed");
                }
                Err(e) => tracing::debug!(error = %e, "gateway: WebSocket ended with an error"),
            }
        });
        if self.tunnels.0.try_send(tunnel).is_err() {
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "connection cannot be upgraded",
            );
        }
        Self::restore_headers(&mut parts.headers);
        Response::from_parts(parts, body::full(""))
    }
}

/// `CONNECT` (a tunnel to anywhere, or HTTP/2's extended CONNECT for WebSocket) is not served.
pub fn refuse_connect<B>(req: &Request<B>) -> Option<Response<ProxyBody>> {
    (req.method() == Method::CONNECT).then(|| {
        refusal(
            StatusCode::NOT_IMPLEMENTED,
            "CONNECT is not supported; WebSocket is served over HTTP/1.1",
        )
    })
}

fn refusal(status: StatusCode, msg: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(body::full(msg));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder()
            .method(method)
            .version(version)
            .uri("/ws");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn only_http11_get_with_both_tokens_is_a_websocket_upgrade() {
        let both = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ];
        assert!(is_websocket(&req(Version::HTTP_11, Method::GET, &both)));
        assert!(!is_websocket(&req(Version::HTTP_10, Method::GET, &both)));
        assert!(!is_websocket(&req(Version::HTTP_11, Method::POST, &both)));
        assert!(!is_websocket(&req(
            Version::HTTP_11,
            Method::GET,
            &[("upgrade", "websocket")]
        )));
        assert!(!is_websocket(&req(
            Version::HTTP_11,
            Method::GET,
            &[("connection", "upgrade"), ("upgrade", "h2c")]
        )));
        // A token is a whole list element, not a substring.
        assert!(!is_websocket(&req(
            Version::HTTP_11,
            Method::GET,
            &[("connection", "upgraded"), ("upgrade", "websockets")]
        )));
    }

    #[test]
    fn an_upgrade_without_a_tunnel_carrier_is_not_taken() {
        let mut r = req(
            Version::HTTP_11,
            Method::GET,
            &[("connection", "upgrade"), ("upgrade", "websocket")],
        );
        assert!(Upgrade::take(&mut r).is_none());
        let (tx, _rx) = tunnels();
        r.extensions_mut().insert(tx);
        assert!(Upgrade::take(&mut r).is_some());
    }
}
