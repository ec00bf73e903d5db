//! Where allowed requests go: an upstream base URL per policy route, and the pooled HTTP/1.1
//! client that carries them.

use std::collections::HashMap;

use hyper::Uri;
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::ProxyBody;
use crate::gateway::config::GatewayConfig;
use crate::policy::PolicyConfig;
use crate::policy::config::Unmatched;

/// An upstream base: `http://authority` plus a path prefix (no trailing `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub authority: Authority,
    pub prefix: String,
}

/// Why an upstream base URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamUrlError {
    #[error("not a URL: {0}")]
    NotUrl(#[from] hyper::http::uri::InvalidUri),
    #[error("must be an http:// URL (upstreams are reached over plain HTTP/1.1)")]
    NotHttp,
    #[error("has no host")]
    NoHost,
    #[error("must not carry credentials")]
    Credentials,
    #[error("must not carry a query")]
    Query,
}

/// Parses an upstream base URL. Only `http://`: the upstream is on this host or its private
/// network, and TLS towards it would spend the CPU the gateway saves.
pub fn parse_base(url: &str) -> Result<Upstream, UpstreamUrlError> {
    let uri: Uri = url.parse()?;
    if uri.scheme() != Some(&Scheme::HTTP) {
        return Err(UpstreamUrlError::NotHttp);
    }
    let authority = uri.authority().cloned().ok_or(UpstreamUrlError::NoHost)?;
    if authority.as_str().contains('@') {
        return Err(UpstreamUrlError::Credentials);
    }
    if uri.query().is_some() {
        return Err(UpstreamUrlError::Query);
    }
    Ok(Upstream {
        authority,
        prefix: uri.path().trim_end_matches('/').to_owned(),
    })
}

impl Upstream {
    /// The upstream URI of a request for `path` with `query`.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, hyper::http::Error> {
        let pq = match query {
            Some(q) if !q.is_empty() => format!("{}{path}?{q}", self.prefix),
            _ => format!("{}{path}", self.prefix),
        };
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::try_from(pq)?)
            .build()
    }
}

/// Upstream of every policy route.
#[derive(Clone, Debug, Default)]
pub struct Routing {
    by_route: HashMap<String, Upstream>,
    default: Option<Upstream>,
}

impl Routing {
    /// Resolves `cfg`'s upstreams against `policy`'s routes. Every route must reach an
    /// upstream, every `upstreams` key must name a route; each problem is named.
    pub fn new(cfg: &GatewayConfig, policy: &PolicyConfig) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut by_route = HashMap::new();
        for (route, url) in &cfg.upstreams {
            if !policy.routes.iter().any(|r| &r.name == route) {
                problems.push(format!(
                    "gateway.upstreams.{route}: the policy has no route named `{route}`"
                ));
            }
            match parse_base(url) {
                Ok(u) => {
                    by_route.insert(route.clone(), u);
                }
                Err(e) => problems.push(format!("gateway.upstreams.{route} = `{url}`: {e}")),
            }
        }
        let default = match cfg.default_upstream.as_deref().map(parse_base).transpose() {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("gateway.default_upstream: {e}"));
                None
            }
        };
        if !cfg.listeners.is_empty() && default.is_none() {
            for r in &policy.routes {
                if !cfg.upstreams.contains_key(&r.name) {
                    problems.push(format!(
                        "policy route `{}` has no upstream: add gateway.upstreams.{} or \
                         gateway.default_upstream",
                        r.name, r.name
                    ));
                }
            }
            if policy.unmatched == Unmatched::Allow {
                problems.push(
                    "the policy allows unmatched requests (unmatched = \"allow\"): they need \
                     gateway.default_upstream"
                        .into(),
                );
            }
        }
        if problems.is_empty() {
            Ok(Self { by_route, default })
        } else {
            Err(problems)
        }
    }

    /// The upstream for a request that matched `route` (or none).
    pub fn upstream(&self, route: Option<&str>) -> Option<&Upstream> {
        route
            .and_then(|r| self.by_route.get(r))
            .or(self.default.as_ref())
    }
}

pub type UpstreamClient = Client<HttpConnector, ProxyBody>;

/// The pooled keep-alive client to every upstream.
pub fn client(cfg: &GatewayConfig) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(cfg.timeouts.upstream_connect));
    connector.set_nodelay(true);
    // Upstream URIs are built here, never taken from clients.
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(cfg.timeouts.upstream_idle)
        .pool_max_idle_per_host(cfg.limits.upstream_pool_idle_per_host)
        .http1_max_buf_size(cfg.limits.max_header_bytes.max(UPSTREAM_MIN_HEAD))
        .build(connector)
}

/// Upstream response heads may be larger than what clients may send.
const UPSTREAM_MIN_HEAD: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_and_uris() {
        let u = parse_base("http://127.0.0.1:8080/api/").unwrap();
        assert_eq!(u.prefix, "/api");
        assert_eq!(
            u.uri("/v1/x", Some("a=1")).unwrap().to_string(),
            "http://127.0.0.1:8080/api/v1/x?a=1"
        );
        assert_eq!(
            parse_base("http://[::1]:81")
                .unwrap()
                .uri("/", None)
                .unwrap()
                .to_string(),
            "http://[::1]:81/"
        );
        for bad in [
            "https://x",
            "ftp://x",
            "http://u:p@x",
            "http://x/?q",
            "nope",
        ] {
            assert!(parse_base(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_route_needs_an_upstream() {
        let policy = PolicyConfig::from_toml_str(
            "[[routes]]\nname = \"a\"\npath_prefix = \"/a\"\n[[routes]]\nname = \"b\"\npath_prefix = \"/b\"\n",
        )
        .unwrap();
        let mut cfg = GatewayConfig {
            listeners: vec![crate::gateway::config::ListenerConfig {
                listen: "127.0.0.1:1".parse().unwrap(),
                tls_cert: None,
                tls_key: None,
                client_ca: None,
                client_auth: Default::default(),
                proxy_protocol: false,
                http2: true,
                max_connections_per_source: 1,
            }],
            ..GatewayConfig::default()
        };
        cfg.upstreams
            .insert("a".into(), "http://127.0.0.1:2".into());
        cfg.upstreams
            .insert("zz".into(), "http://127.0.0.1:3".into());
        let problems = Routing::new(&cfg, &policy).unwrap_err().join("\n");
        assert!(problems.contains("route `b` has no upstream"), "{problems}");
        assert!(problems.contains("no route named `zz`"), "{problems}");
        cfg.upstreams.remove("zz");
        cfg.default_upstream = Some("http://127.0.0.1:4".into());
        let r = Routing::new(&cfg, &policy).unwrap();
        assert_eq!(r.upstream(Some("a")).unwrap().authority, "127.0.0.1:2");
        assert_eq!(r.upstream(Some("b")).unwrap().authority, "127.0.0.1:4");
    }
}
