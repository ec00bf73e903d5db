//! One request through the gateway: decide it with the policy engine, answer denials
//! directly, forward the rest to the route's upstream and relay its answer, feeding the
//! upstream's status back to the detector.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use tokio::time::timeout;

use super::body::{self, BodyStop, Guarded, ProxyBody, StopFlag};
use super::upgrade::{self, Upgrade};
use super::upstream::Upstream;
use super::validation::{self, Target};
use super::{ConnInfo, ProxyShared};
use crate::gateway::client_ip::{Client, client_ip};
use crate::gateway::dispatch_escalations;
use crate::gateway::live::Live;
use crate::gateway::observe;
use crate::gateway::password_pool;
use crate::policy::{AccessDecision, Headers, RequestMeta};

/// Listener label of the gateway's requests in the metrics.
pub const METRICS_LISTENER: &str = "proxy";

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Set by the gateway for the upstream; a client's own copies are never passed on.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

pub async fn handle(
    req: Request<Incoming>,
    info: ConnInfo,
    shared: Arc<ProxyShared>,
) -> Result<Response<ProxyBody>, Infallible> {
    let arrived = Instant::now();
    // Before the engine: a CONNECT target is an authority, not a path to route.
    if let Some(refused) = upgrade::refuse_connect(&req) {
        shared
            .metrics
            .record_without_decision(METRICS_LISTENER, refused.status().as_u16());
        return Ok(refused);
    }
    let live = shared.live.load_full();
    let Client {
        ip: client,
        is_proxy,
    } = match info.proxied_client {
        Some(ip) => Client::proxied(&live.cfg, ip),
        None => client_ip(&live.cfg, info.peer.ip(), req.headers()),
    };
    let host = request_host(&req);
    let query = req.uri().query().map(str::to_owned);
    let mut meta = RequestMeta::new(
        client,
        req.method().as_str(),
        host.clone(),
        req.uri().path(),
    );
    meta.client_is_proxy = is_proxy;
    meta.query = query.clone();
    meta.headers = policy_headers(req.headers());
    let decision = password_pool::decide(&live.engine, &shared.passwords, &meta).await;
    if !decision.escalations.is_empty() {
        dispatch_escalations(
            Arc::clone(&shared.escalator),
            decision.escalations.clone(),
            arrived,
            Arc::clone(&shared.metrics),
        );
    }
    let response = if decision.is_allowed() {
        forward(
            req,
            &decision,
            &live,
            &shared,
            client,
            info,
            &host,
            query.as_deref(),
        )
        .await
    } else {
        tracing::debug!(%client, status = decision.status(), reason = ?decision.reason, route = ?decision.route, "gateway denied");
        denial(&decision)
    };
    let status = response.status().as_u16();
    shared.metrics.record(METRICS_LISTENER, &decision, status);
    observe::record_answered(&shared.recorder, &meta, &decision, &response);
    if decision.is_allowed()
        && let Some(client) = meta.network_ip()
        && let Some(e) =
            live.engine
                .observe_response(client, &decision.path, status, std::time::Instant::now())
    {
        dispatch_escalations(
            Arc::clone(&shared.escalator),
            vec![e],
            arrived,
            Arc::clone(&shared.metrics),
        );
    }
    Ok(response)
}

/// `:authority` (HTTP/2, absolute-form) or `Host`.
fn request_host<B>(req: &Request<B>) -> String {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

fn policy_headers(headers: &HeaderMap) -> Headers {
    let mut h = Headers::new();
    for (name, value) in headers {
        if let Ok(v) = value.to_str() {
            h.append(name.as_str(), v);
        }
    }
    h
}

pub(super) fn text(status: StatusCode, msg: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(body::full(msg));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn append_pairs(h: &mut HeaderMap, pairs: &[(String, String)]) {
    for (name, value) in pairs {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.append(n, v);
        }
    }
}

/// The engine's denial: 401 with `WWW-Authenticate`, 403, or 429 with `Retry-After` and the
/// `RateLimit` headers. The body says no more than the status (no oracle for guessing).
fn denial(decision: &AccessDecision) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(decision.status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut r = text(status, status.canonical_reason().unwrap_or("denied"));
    append_pairs(r.headers_mut(), &decision.response_headers);
    r
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        h.remove(name);
    }
    h.remove(header::UPGRADE);
}

/// The query without the parameters the decision removes (an API key given in the query).
pub(super) fn strip_query(query: Option<&str>, remove: &[String]) -> Option<String> {
    let q = query?;
    if remove.is_empty() {
        return Some(q.to_owned());
    }
    let kept: Vec<&str> = q
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            let key = crate::policy::request::percent_decode(key).unwrap_or_default();
            !remove.contains(&key)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// Replaces the client's `X-Forwarded-*`, `X-Real-IP` and `Forwarded` headers with the
/// gateway's own; the `X-Forwarded-For` chain of a trusted proxy is kept and extended.
fn set_forwarding_headers(
    headers: &mut HeaderMap,
    trusted_peer: bool,
    info: ConnInfo,
    client: IpAddr,
    host: &str,
) {
    let mut forwarded_for = if trusted_peer && info.proxied_client.is_none() {
        headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        String::new()
    };
    if !forwarded_for.is_empty() {
        forwarded_for.push_str(", ");
    }
    forwarded_for.push_str(&if info.proxied_client.is_some() {
        client.to_string()
    } else {
        canonical_peer(info)
    });
    for name in [
        &X_FORWARDED_FOR,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_HOST,
        &X_REAL_IP,
    ] {
        headers.remove(name);
    }
    headers.remove(header::FORWARDED);
    let set = |h: &mut HeaderMap, name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set(headers, X_FORWARDED_FOR, &forwarded_for);
    set(headers, X_REAL_IP, &client.to_string());
    set(
        headers,
        X_FORWARDED_PROTO,
        if info.tls { "https" } else { "http" },
    );
    if !host.is_empty() {
        set(headers, X_FORWARDED_HOST, host);
        // HTTP/2 carries the host in `:authority`; HTTP/1.1 upstreams need `Host`.
        set(headers, header::HOST, host);
    }
}

/// The answer when the upstream request failed: the body's fault when the client's body was
/// cut off (too large, too slow), else the upstream's.
fn upstream_failed(
    body: Option<BodyStop>,
    upstream: &Upstream,
    e: &dyn std::fmt::Display,
) -> Response<ProxyBody> {
    match body {
        Some(BodyStop::TooLarge) => text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        Some(BodyStop::TimedOut) => text(
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time",
        ),
        None => {
            tracing::warn!(upstream = %upstream.authority, error = %e, "gateway: upstream request failed");
            text(StatusCode::BAD_GATEWAY, "upstream unavailable")
        }
    }
}

#[expect(clippy::too_many_arguments, reason = "one request's parts, borrowed")]
#[expect(
    clippy::too_many_lines,
    reason = "the forwarding steps in the order a request meets them"
)]
async fn forward(
    mut req: Request<Incoming>,
    decision: &AccessDecision,
    live: &Live,
    shared: &ProxyShared,
    client: IpAddr,
    info: ConnInfo,
    host: &str,
    query: Option<&str>,
) -> Response<ProxyBody> {
    let limits = &live.cfg.limits;
    let timeouts = &live.cfg.timeouts;
    if let Some(refused) = upgrade::refuse_connect(&req) {
        return refused;
    }
    let websocket = Upgrade::take(&mut req);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        // Read and discard what the client is still sending (bounded in bytes and time): an
        // HTTP/2 stream dropped unread is reset, and an HTTP/1.1 client still writing gets a
        // broken pipe instead of the 413.
        body::drain(req.into_body(), timeouts.body);
        return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let target = Target::of(decision, host, query, client);
    let req = match validation::gate(req, live, &shared.metrics, target).await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    let Some(upstream) = live.routing.upstream(decision.route.as_deref()) else {
        return text(StatusCode::BAD_GATEWAY, "no upstream for this route");
    };
    let query = strip_query(query, &decision.strip_query_params);
    // The path the route was matched on, never the raw one: they differ by encoding only.
    let Ok(uri) = upstream.uri(&decision.path, query.as_deref()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "request target cannot be forwarded",
        );
    };
    let (parts, incoming) = req.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    if websocket.is_some() {
        Upgrade::restore_headers(&mut headers);
    }
    for name in &decision.strip_headers {
        headers.remove(name.as_str());
    }
    set_forwarding_headers(
        &mut headers,
        live.cfg.trusts(info.peer.ip()),
        info,
        client,
        host,
    );
    append_pairs(&mut headers, &decision.upstream_headers);

    let flag = StopFlag::default();
    let mut guarded = Guarded::new(incoming, limits.max_body_bytes, timeouts.body, flag.clone());
    if parts.version == Version::HTTP_2 {
        guarded = guarded.drain_when_too_large(timeouts.body);
    }
    let mut up = Request::new(body::boxed(guarded));
    *up.method_mut() = parts.method;
    *up.uri_mut() = uri;
    *up.version_mut() = Version::HTTP_11;
    *up.headers_mut() = headers;

    let answered = observe::timed(shared.client.request(up));
    let answer = match timeout(timeouts.upstream_response, answered).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return upstream_failed(flag.get(), upstream, &e),
        Err(_) => {
            tracing::warn!(upstream = %upstream.authority, "gateway: upstream response timed out");
            return text(StatusCode::GATEWAY_TIMEOUT, "upstream timed out");
        }
    };
    let mut answer = answer;
    let switched = (answer.status() == StatusCode::SWITCHING_PROTOCOLS)
        .then(|| hyper::upgrade::on(&mut answer));
    let (mut parts, upstream_body) = answer.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    append_pairs(&mut parts.headers, &decision.response_headers);
    match (websocket, switched) {
        (Some(websocket), Some(upstream)) => websocket.splice(parts, upstream),
        // A 101 the client did not ask for cannot be relayed: nothing would carry the bytes.
        (None, Some(_)) => text(
            StatusCode::BAD_GATEWAY,
            "upstream switched protocols unasked",
        ),
        _ => Response::from_parts(parts, body::boxed(upstream_body)),
    }
}

fn canonical_peer(info: ConnInfo) -> String {
    info.peer.ip().to_canonical().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keys_are_removed_by_decoded_name() {
        let remove = vec!["api_key".to_owned()];
        assert_eq!(
            strip_query(Some("a=1&api_key=s3cret&b=2"), &remove).as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(strip_query(Some("api%5Fkey=s3cret"), &remove), None);
        assert_eq!(strip_query(Some("a=1"), &[]).as_deref(), Some("a=1"));
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
