//! The gateway's front-door side of the exchange pipeline: after a request was answered, the
//! gateway and the check endpoint make one [`Exchange`] of it and hand it to the daemon's
//! inventory. One function each front door calls once; nothing here waits.
//!
//! What the exchange carries is what the shield decided on: the host as routing saw it
//! (lower case, no port, no trailing dot), the one normalised path the route matched and the
//! upstream was given, the query's parameter names (decoded, never the values), the
//! request's media type, and the identity the policy authenticated.

use std::sync::Arc;
use std::time::Duration;

use crate::exchange::{Exchange, Identity};
use crate::inventory::SharedInventory;
use crate::policy::request::percent_decode;
use crate::policy::{AccessDecision, RequestMeta};

/// Query parameter names kept per exchange: the inventory keeps fewer per endpoint, and this
/// bounds the work one request with a huge query can cause under the inventory's lock.
pub const MAX_QUERY_NAMES: usize = 64;
/// Longest query parameter name or media type kept; longer ones are left out.
pub const MAX_NAME_LEN: usize = 128;
/// The host of a request that named none (HTTP/1.0 without `Host`). Not a valid host name,
/// so no request's host is ever it.
pub const NO_HOST: &str = "{none}";

/// Set by the gateway on a response the upstream gave: how long the upstream took to send its
/// response head. Its absence means the shield answered itself.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamAnswered(pub Duration);

/// `request` (the upstream's answer to come), its response marked with
/// [`UpstreamAnswered`] and the time from now to its head.
pub async fn timed<B, E>(
    request: impl std::future::Future<Output = Result<hyper::Response<B>, E>>,
) -> Result<hyper::Response<B>, E> {
    let sent = std::time::Instant::now();
    let mut answer = request.await;
    if let Ok(response) = &mut answer {
        response
            .extensions_mut()
            .insert(UpstreamAnswered(sent.elapsed()));
    }
    answer
}

/// Where the front doors record exchanges; `None` when the inventory is off.
pub type Recorder = Option<Arc<SharedInventory>>;

/// What the front door knows of the answer.
#[derive(Clone, Copy, Debug)]
pub struct Answer {
    /// The status the client got; `None` when the front door answers before the upstream
    /// (the check endpoint allowing a request).
    pub status: Option<u16>,
    pub upstream_latency: Option<Duration>,
}

/// Records the exchange of `meta` decided by `decision` and answered as `answer`. A request
/// whose path was refused (no normalised path) is not an exchange with the API.
pub fn record(recorder: &Recorder, meta: &RequestMeta, decision: &AccessDecision, answer: Answer) {
    let Some(inventory) = recorder else {
        return;
    };
    if let Some(exchange) = exchange(meta, decision, answer, crate::kernel::clock::now_unix_ms()) {
        inventory.record(&exchange);
    }
}

/// Records a request the gateway answered with `response`: the upstream's answer when it
/// carries [`UpstreamAnswered`], the shield's own otherwise.
pub fn record_answered<B>(
    recorder: &Recorder,
    meta: &RequestMeta,
    decision: &AccessDecision,
    response: &hyper::Response<B>,
) {
    let answer = Answer {
        status: Some(response.status().as_u16()),
        upstream_latency: response.extensions().get::<UpstreamAnswered>().map(|u| u.0),
    };
    record(recorder, meta, decision, answer);
}

/// The exchange, or `None` when there is no path to record.
pub fn exchange(
    meta: &RequestMeta,
    decision: &AccessDecision,
    answer: Answer,
    at_ms: u64,
) -> Option<Exchange> {
    if decision.path.is_empty() {
        return None;
    }
    // Standard methods parse without allocating; anything else is one `OTHER` endpoint.
    let method = hyper::Method::from_bytes(meta.method.as_bytes()).ok()?;
    let host = host_of(meta);
    let mut exchange = Exchange::new(at_ms, meta.client_ip, &host, method, &decision.path);
    exchange.status = answer.status;
    exchange.upstream_latency = answer.upstream_latency;
    exchange.identity = decision.identity.as_ref().map(|i| Identity {
        id: i.id.clone(),
        method: i.method,
    });
    exchange.content_type = meta.headers.get("content-type").and_then(media_type);
    exchange.query_names = query_names(meta.query.as_deref());
    Some(exchange)
}

fn host_of(meta: &RequestMeta) -> String {
    let mut host = meta.host_name();
    while host.ends_with('.') {
        host.pop();
    }
    if host.is_empty() {
        NO_HOST.to_owned()
    } else {
        host
    }
}

/// `application/json; charset=utf-8` → `application/json`.
fn media_type(value: &str) -> Option<String> {
    let media = value.split(';').next()?.trim();
    (!media.is_empty() && media.len() <= MAX_NAME_LEN).then(|| media.to_ascii_lowercase())
}

/// The decoded names of the query's parameters, in order, each once; values are never read.
fn query_names(query: Option<&str>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for pair in query.unwrap_or_default().split('&') {
        if names.len() >= MAX_QUERY_NAMES {
            break;
        }
        let raw = pair.split_once('=').map_or(pair, |(k, _)| k);
        if raw.is_empty() || raw.len() > MAX_NAME_LEN * 3 {
            continue;
        }
        let Some(name) = percent_decode(raw) else {
            continue;
        };
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            continue;
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::config::AuthMethod;
    use std::net::{IpAddr, Ipv4Addr};

    fn decision(path: &str) -> AccessDecision {
        AccessDecision::allowed(path.to_owned())
    }

    fn meta(host: &str, query: Option<&str>) -> RequestMeta {
        let client = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let mut meta = RequestMeta::new(client, "GET", host, "/raw/%75sers");
        meta.query = query.map(str::to_owned);
        meta
    }

    const ANSWERED: Answer = Answer {
        status: Some(200),
        upstream_latency: Some(Duration::from_millis(2)),
    };

    #[test]
    fn the_exchange_has_the_normalised_host_path_and_only_query_names() {
        let mut m = meta(
            "API.Example.COM.:8443",
            Some("token=s3cret&page=2&a%5Fb=1&page=3&=x&bad=%ZZ&%01=1"),
        );
        m.headers
            .append("Content-Type", "Application/JSON; charset=utf-8");
        let mut d = decision("/users/42");
        d.identity = Some(crate::policy::identity::Identity {
            id: "alice".into(),
            method: AuthMethod::Basic,
            issuer: None,
            scopes: Vec::new(),
            roles: Vec::new(),
        });
        let e = exchange(&m, &d, ANSWERED, 7).unwrap();
        assert_eq!(e.host, "api.example.com");
        assert_eq!(e.path, "/users/42", "the decision's path, not the raw one");
        assert_eq!(e.query_names, ["token", "page", "a_b", "bad"]);
        assert!(!format!("{e:?}").contains("s3cret"), "no value is kept");
        assert_eq!(e.content_type.as_deref(), Some("application/json"));
        assert_eq!(e.identity.unwrap().id, "alice");
        assert_eq!((e.status, e.at_ms), (Some(200), 7));
    }

    #[test]
    fn hosts_without_a_name_and_refused_paths() {
        assert_eq!(
            exchange(&meta("", None), &decision("/a"), ANSWERED, 0)
                .unwrap()
                .host,
            NO_HOST
        );
        assert_eq!(
            exchange(
                &meta("[2001:DB8::1]:443", None),
                &decision("/a"),
                ANSWERED,
                0
            )
            .unwrap()
            .host,
            "2001:db8::1"
        );
        assert!(exchange(&meta("a.test", None), &decision(""), ANSWERED, 0).is_none());
    }

    #[test]
    fn a_huge_query_is_bounded() {
        let query: String = (0..10_000).map(|i| format!("n{i}=v&")).collect();
        let long = format!("{}=1", "x".repeat(MAX_NAME_LEN + 1));
        assert_eq!(query_names(Some(&query)).len(), MAX_QUERY_NAMES);
        assert!(query_names(Some(&long)).is_empty());
    }

    /// What recording costs a gateway request: making the exchange from the request's meta
    /// and decision, and counting it under the shared lock, on `threads` threads at once.
    /// `cargo test --release -p api-shield --lib gateway::observe -- --ignored --nocapture`.
    fn recording_cost(threads: usize, per_thread: usize) -> f64 {
        let shared = Arc::new(SharedInventory::new(crate::inventory::Inventory::default()));
        let recorder: Recorder = Some(Arc::clone(&shared));
        let start = std::time::Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let recorder = recorder.clone();
                std::thread::spawn(move || {
                    let mut m = meta("api.example.com:443", Some("page=2&sort=name"));
                    m.headers.append("content-type", "application/json");
                    m.headers.append("user-agent", "bench/1.0");
                    for i in 0..per_thread {
                        let d = decision(&format!("/api/v1/users/{}/orders", t * per_thread + i));
                        record(&recorder, &m, &d, ANSWERED);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let ns = start.elapsed().as_nanos() as f64 / (threads * per_thread) as f64;
        assert_eq!(shared.exchanges(), (threads * per_thread) as u64);
        println!("recording: {threads} thread(s), {ns:.0} ns of wall time per request");
        ns
    }

    #[test]
    fn recording_smoke() {
        assert!(recording_cost(2, 1_000) > 0.0);
    }

    #[test]
    #[ignore = "benchmark: run in release with --ignored --nocapture"]
    fn recording_cost_per_request() {
        for threads in [1, 2, 4] {
            recording_cost(threads, 200_000);
        }
    }
}
