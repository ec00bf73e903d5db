//! The check endpoint: a plain-HTTP listener that answers "may this request pass?" for a
//! proxy that terminates TLS itself, with the same policy engine as the gateway.
//!
//! Three dialects, told apart per request:
//! - **nginx `auth_request`**: the original method and URI in `X-Original-Method` /
//!   `X-Original-URI`, the original headers passed along. nginx turns any subrequest status
//!   other than 2xx, 401 and 403 into a 500, so a 429 is answered as **403** with
//!   `X-Shield-Status: 429` and `Retry-After`; the README's nginx configuration maps it back
//!   to a 429 with `error_page 403`.
//! - **Traefik `ForwardAuth`**: `X-Forwarded-Method`, `X-Forwarded-Uri`, `X-Forwarded-Host`.
//! - **Envoy HTTP `ext_authz`**: a request under `envoy_prefix` (Envoy's `path_prefix`)
//!   whose path after the prefix is the original path, with the original method and headers.
//!
//! Every answer carries `X-Shield-Status` (the engine's status). 200 allows and carries the
//! identity headers to copy upstream (`X-Auth-Identity`, …) and the `RateLimit` headers;
//! 401/403/429 deny with the engine's headers (`WWW-Authenticate`, `Retry-After`, …).
//!
//! The client is the TCP peer, unless the peer is in `trusted_proxies`: then `X-Real-IP`, else
//! the right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
//!
//! Upstream statuses are not seen here (the proxy forwards after this answer), so
//! `Engine::observe_response` is not called: 404 probing and upstream 401/429s do not feed the
//! detector through this endpoint. Escalations come from `check` itself (authentication
//! failures, 429s, requests far over quota); each becomes a kernel block through the
//! [`Escalator`], off the request path, and the time from the offending request's arrival to
//! the kernel entry is logged as `latency_us` and observed by the escalation latency metric.
//!
//! Every answer is counted in [`GatewayMetrics`] as listener `check`, with the engine's
//! status: nginx gets a 403 for a 429 but turns it back into the 429 its client sees.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::Escalator;
use super::client_ip::client_ip;
use super::config::GatewayConfig;
use super::escalate::dispatch_escalations;
use super::live::SharedLive;
use super::metrics::GatewayMetrics;
use super::observe::{self, Recorder};
use super::password_pool::{self, PasswordPool};
use crate::accept::Accept;
use crate::accept::http::{Http1Limits, serve_http1};
use crate::accept::slots::SlotLimits;
use crate::policy::{AccessDecision, Headers, RequestMeta};

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Check requests are small; a proxy's pool of keep-alive connections stays well below.
const MAX_CONNECTIONS: usize = 1024;
/// Of them from one untrusted source (trusted proxies, the usual callers, only count
/// against the total).
const MAX_CONNECTIONS_PER_SOURCE: usize = MAX_CONNECTIONS / 4;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Largest request head accepted (nginx passes every original header).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The engine's status, on every answer.
pub const STATUS_HEADER: &str = "x-shield-status";
/// The `listener` label of the check endpoint's metrics.
pub const LISTENER: &str = "check";

/// Headers that describe the check request itself, never the original request.
const DIALECT_HEADERS: &[&str] = &[
    "x-original-method",
    "x-original-uri",
    "x-forwarded-method",
    "x-forwarded-uri",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "connection",
    "content-length",
];

/// A bound check listener, not yet serving.
#[derive(Debug)]
pub struct AuthzListener {
    listener: TcpListener,
}

/// Checks `cfg` and binds the check listener. Must be called within a Tokio runtime.
pub async fn bind(cfg: &GatewayConfig) -> io::Result<AuthzListener> {
    let problems = cfg.problems();
    if !problems.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            problems.join("; "),
        ));
    }
    let listener = TcpListener::bind(cfg.check_listen).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("binding gateway.check_listen {}: {e}", cfg.check_listen),
        )
    })?;
    if !cfg.check_listen.ip().is_loopback() {
        tracing::warn!(listen = %cfg.check_listen, "the check endpoint listens beyond loopback: anyone reaching it can probe credentials");
    }
    Ok(AuthzListener { listener })
}

struct Shared {
    live: SharedLive,
    escalator: Arc<dyn Escalator>,
    metrics: Arc<GatewayMetrics>,
    passwords: Arc<PasswordPool>,
    recorder: Recorder,
}

impl AuthzListener {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets checks in flight finish for a moment.
    pub async fn serve(
        self,
        live: SharedLive,
        escalator: Arc<dyn Escalator>,
        metrics: Arc<GatewayMetrics>,
        passwords: Arc<PasswordPool>,
        recorder: Recorder,
        shutdown: impl Future<Output = ()>,
    ) {
        let shared = Arc::new(Shared {
            live,
            escalator,
            metrics,
            passwords,
            recorder,
        });
        let live = shared.live.load();
        let limits = SlotLimits {
            max: MAX_CONNECTIONS,
            per_source: MAX_CONNECTIONS_PER_SOURCE,
            v6_prefix: live.engine.config().limiter.ipv6_prefix,
            exempt: live.cfg.trusted_proxies.clone(),
        };
        drop(live);
        let refused = shared.metrics.refusal_counters(LISTENER);
        Accept::new("check endpoint", limits, refused, SHUTDOWN_GRACE)
            .serve(self.listener, shutdown, |stream, peer, stopping| {
                let _ = stream.set_nodelay(true);
                connection(stream, peer, Arc::clone(&shared), stopping)
            })
            .await;
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stopping: watch::Receiver<bool>,
) {
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, std::convert::Infallible>(handle(&shared, peer, &req).await) }
    });
    let limits = Http1Limits {
        header_read_timeout: HEADER_READ_TIMEOUT,
        max_buf_size: Some(MAX_HEAD_BYTES),
    };
    serve_http1(stream, peer, service, limits, stopping, "check endpoint").await;
}

/// Which proxy asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Nginx,
    Traefik,
    Envoy,
}

/// The original request described by a check request, or why it cannot be read.
pub fn original_request(
    cfg: &GatewayConfig,
    peer: IpAddr,
    method: &str,
    uri_path_and_query: &str,
    headers: &HeaderMap,
) -> Result<(Dialect, RequestMeta), &'static str> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host_header = get("host").unwrap_or("");
    let (dialect, method, host, target) = if let Some(uri) = get("x-original-uri") {
        let m = get("x-original-method").unwrap_or("GET");
        (
            Dialect::Nginx,
            m.to_owned(),
            host_header.to_owned(),
            uri.to_owned(),
        )
    } else if let Some(uri) = get("x-forwarded-uri") {
        let m = get("x-forwarded-method").unwrap_or("GET");
        let h = get("x-forwarded-host").unwrap_or(host_header);
        (Dialect::Traefik, m.to_owned(), h.to_owned(), uri.to_owned())
    } else if let Some(rest) = strip_prefix(uri_path_and_query, &cfg.envoy_prefix) {
        let target = if rest.starts_with('/') {
            rest.to_owned()
        } else {
            format!("/{rest}")
        };
        (
            Dialect::Envoy,
            method.to_owned(),
            host_header.to_owned(),
            target,
        )
    } else {
        return Err("not a check request: no X-Original-URI, X-Forwarded-Uri or Envoy prefix");
    };
    let target = absolute_form_path(&target);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if !path.starts_with('/') {
        return Err("the original URI is not a path");
    }
    let client = client_ip(cfg, peer, headers);
    let mut meta = RequestMeta::new(client.ip, method, host, path);
    meta.client_is_proxy = client.is_proxy;
    meta.query = query.map(str::to_owned);
    let mut h = Headers::new();
    for (name, value) in headers {
        if DIALECT_HEADERS.contains(&name.as_str()) {
            continue;
        }
        if let Ok(v) = value.to_str() {
            h.append(name.as_str(), v);
        }
    }
    meta.headers = h;
    Ok((dialect, meta))
}

/// `https://host/p?q` → `/p?q`; a path is returned as is.
fn absolute_form_path(target: &str) -> &str {
    match target.split_once("://") {
        Some((scheme, rest)) if !scheme.contains('/') => rest.find('/').map_or("/", |i| &rest[i..]),
        _ => target,
    }
}

/// `prefix` followed by end, `/` or `?`.
fn strip_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix.trim_end_matches('/'))?;
    (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')).then_some(rest)
}

async fn handle(
    shared: &Shared,
    peer: SocketAddr,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let arrived = Instant::now();
    let live = shared.live.load_full();
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let (dialect, meta) = match original_request(
        &live.cfg,
        peer.ip(),
        req.method().as_str(),
        target,
        req.headers(),
    ) {
        Ok(x) => x,
        Err(why) => {
            tracing::debug!(%peer, why, "check endpoint: bad request");
            shared
                .metrics
                .record_without_decision(LISTENER, StatusCode::BAD_REQUEST.as_u16());
            return plain(StatusCode::BAD_REQUEST, why);
        }
    };
    let mut decision = password_pool::decide(&live.engine, &shared.passwords, &meta).await;
    dispatch_escalations(
        Arc::clone(&shared.escalator),
        std::mem::take(&mut decision.escalations),
        arrived,
        Arc::clone(&shared.metrics),
    );
    if let Some(reason) = &decision.reason {
        tracing::debug!(client = %meta.client_ip, status = decision.status(), ?reason, route = ?decision.route, "check denied");
    }
    if decision.is_allowed()
        && let Some(refused) =
            super::contracts::check_head(&live.contracts, dialect, &meta, &shared.metrics)
    {
        shared
            .metrics
            .record(LISTENER, &decision, refused.status().as_u16());
        return refused;
    }
    shared
        .metrics
        .record(LISTENER, &decision, decision.status());
    observe::record(&shared.recorder, &meta, &decision, check_answer(&decision));
    respond(dialect, &decision)
}

/// What the check endpoint knows of the answer: nothing when it lets the request go on (the
/// proxy asks the upstream after it), the shield's own status when it refuses.
fn check_answer(decision: &AccessDecision) -> observe::Answer {
    observe::Answer {
        status: (!decision.is_allowed()).then(|| decision.status()),
        upstream_latency: None,
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r
}

/// The answer to the proxy for `decision`.
pub fn respond(dialect: Dialect, decision: &AccessDecision) -> Response<Full<Bytes>> {
    let engine_status = decision.status();
    // nginx treats anything but 2xx/401/403 from the subrequest as an error (500); the engine's
    // status stays in the status header for `auth_request_set`.
    let status = if dialect == Dialect::Nginx && matches!(engine_status, 400 | 429) {
        403
    } else {
        engine_status
    };
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    let h = r.headers_mut();
    h.insert(STATUS_HEADER, HeaderValue::from(engine_status));
    let mut add = |name: &str, value: &str| {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.append(n, v);
        }
    };
    for (name, value) in &decision.response_headers {
        add(name, value);
    }
    if decision.is_allowed() {
        for (name, value) in &decision.upstream_headers {
            add(name, value);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Engine, Now};

    fn cfg() -> GatewayConfig {
        GatewayConfig {
            trusted_proxies: vec![
                "127.0.0.1/32".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ],
            ..GatewayConfig::default()
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn nginx_request_with_trusted_real_ip() {
        let h = headers(&[
            ("x-original-uri", "/v1/items?a=1"),
            ("x-original-method", "POST"),
            ("x-real-ip", "198.51.100.7"),
            ("host", "api.example.com"),
            ("x-api-key", "k"),
        ]);
        let (d, m) =
            original_request(&cfg(), "127.0.0.1".parse().unwrap(), "GET", "/check", &h).unwrap();
        assert_eq!(d, Dialect::Nginx);
        assert_eq!(
            (m.method.as_str(), m.path.as_str(), m.query.as_deref()),
            ("POST", "/v1/items", Some("a=1"))
        );
        assert_eq!(m.client_ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(m.headers.get("x-api-key"), Some("k"));
        assert_eq!(m.headers.get("x-original-uri"), None);
    }

    #[test]
    fn forwarding_headers_from_untrusted_peers_are_ignored() {
        let h = headers(&[
            ("x-original-uri", "/"),
            ("x-real-ip", "198.51.100.7"),
            ("x-forwarded-for", "198.51.100.8"),
        ]);
        let (_, m) =
            original_request(&cfg(), "192.0.2.9".parse().unwrap(), "GET", "/", &h).unwrap();
        assert_eq!(m.client_ip, "192.0.2.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn traefik_and_xff_right_to_left() {
        let h = headers(&[
            ("x-forwarded-uri", "/v1/x"),
            ("x-forwarded-method", "DELETE"),
            ("x-forwarded-host", "api.example.com"),
            ("x-forwarded-for", "203.0.113.1, 198.51.100.9, 10.1.2.3"),
        ]);
        let (d, m) =
            original_request(&cfg(), "::ffff:127.0.0.1".parse().unwrap(), "GET", "/", &h).unwrap();
        assert_eq!(d, Dialect::Traefik);
        assert_eq!(
            (m.method.as_str(), m.host.as_str(), m.path.as_str()),
            ("DELETE", "api.example.com", "/v1/x")
        );
        assert_eq!(m.client_ip, "198.51.100.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn envoy_prefix_carries_the_path() {
        let h = headers(&[("host", "api.example.com")]);
        let (d, m) = original_request(
            &cfg(),
            "127.0.0.1".parse().unwrap(),
            "PUT",
            "/ext_authz/v1/items?x=2",
            &h,
        )
        .unwrap();
        assert_eq!(d, Dialect::Envoy);
        assert_eq!(
            (m.method.as_str(), m.path.as_str(), m.query.as_deref()),
            ("PUT", "/v1/items", Some("x=2"))
        );
        assert!(
            original_request(
                &cfg(),
                "127.0.0.1".parse().unwrap(),
                "GET",
                "/ext_authzfoo",
                &h
            )
            .is_err()
        );
        assert!(
            original_request(&cfg(), "127.0.0.1".parse().unwrap(), "GET", "/other", &h).is_err()
        );
    }

    fn engine() -> Engine {
        let key = crate::policy::apikey::hash_api_key("good-key");
        let text = format!(
            "[[api_keys]]\nhash = \"{key}\"\nidentity = \"alice\"\nplan = \"p\"\n\
             [plans.p]\nrate = [{{ name = \"b\", rate = 1, per = \"1h\", burst = 1, key = [\"identity\"] }}]\n\
             [[routes]]\nname = \"api\"\npath_prefix = \"/\"\nauth = [\"api_key\"]\n\
             api_key_header = \"x-api-key\"\nidentity_header = \"x-auth-identity\"\n"
        );
        let policy = crate::policy::PolicyConfig::from_toml_str(&text).unwrap();
        Engine::new(policy, Arc::new(crate::policy::NoFetcher)).unwrap()
    }

    #[test]
    fn answers_per_dialect() {
        let engine = engine();
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let req = RequestMeta::new(ip, "GET", "api", "/x").header("x-api-key", "good-key");
        let allowed = engine.check(&req, Now::system());
        let r = respond(Dialect::Nginx, &allowed);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-auth-identity"], "alice");
        assert_eq!(r.headers()[STATUS_HEADER], "200");
        let throttled = engine.check(&req, Now::system());
        assert_eq!(throttled.status(), 429);
        let nginx = respond(Dialect::Nginx, &throttled);
        assert_eq!(
            nginx.status(),
            403,
            "nginx cannot pass a 429 from auth_request"
        );
        assert_eq!(nginx.headers()[STATUS_HEADER], "429");
        assert!(nginx.headers().contains_key("retry-after"));
        assert!(!nginx.headers().contains_key("x-auth-identity"));
        let traefik = respond(Dialect::Traefik, &throttled);
        assert_eq!(traefik.status(), 429);
        let anon = engine.check(&RequestMeta::new(ip, "GET", "api", "/x"), Now::system());
        let r = respond(Dialect::Envoy, &anon);
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key("www-authenticate"));
    }

    #[test]
    fn gateway_section_parses() {
        let c = crate::config::parse_config(
            "[gateway]\ncheck_listen = \"127.0.0.1:9999\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n\
             policy_file = \"/etc/p.toml\"\n",
            std::path::Path::new("cfg.toml"),
        )
        .unwrap();
        let g = c.gateway.unwrap();
        assert_eq!(g.check_listen.port(), 9999);
        assert!(g.trusts("10.2.3.4".parse().unwrap()));
        assert!(!g.trusts("127.0.0.1".parse().unwrap()));
        assert!(
            GatewayConfig {
                policy_file: "rel.toml".into(),
                ..g
            }
            .problems()
            .len()
                == 1
        );
    }
}
