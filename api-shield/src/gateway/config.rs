//! The `[gateway]` settings.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Loopback: the proxy asking runs on the same host.
const DEFAULT_CHECK_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9382);
const DEFAULT_POLICY_FILE: &str = "/etc/api-shield/policy.toml";
const DEFAULT_ENVOY_PREFIX: &str = "/ext_authz";

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Plain-HTTP listener of the check endpoint (auth_request / ForwardAuth / ext_authz).
    pub check_listen: SocketAddr,
    /// Peers whose `X-Real-IP` / `X-Forwarded-For` name the client; from anyone else the
    /// client is the TCP peer.
    pub trusted_proxies: Vec<IpNet>,
    /// The policy (a `PolicyConfig` TOML file), validated when the daemon starts.
    pub policy_file: PathBuf,
    /// Envoy's `path_prefix`: a check request under it carries the original path after it.
    pub envoy_prefix: String,
    /// The gateway's own listeners (`[[gateway.listeners]]`): TLS-terminating or plain HTTP,
    /// each forwarding what the policy allows to the upstream of the matched route.
    pub listeners: Vec<ListenerConfig>,
    /// Upstream base URL (`http://host:port`, optionally with a path prefix) per policy route
    /// name.
    pub upstreams: BTreeMap<String, String>,
    /// Where allowed requests of routes without an entry in `upstreams` go.
    pub default_upstream: Option<String>,
    pub timeouts: Timeouts,
    pub limits: HttpLimits,
    /// Threads serving the listeners, each with its own event loop and its own socket per
    /// listener (SO_REUSEPORT), as nginx workers; 0 is one per CPU.
    pub threads: usize,
    /// Saving quota and slow rate-limit counters across restarts.
    pub quota_state: QuotaStateConfig,
    /// OpenAPI contracts (`[[gateway.apis]]`): requests to each API are validated against
    /// its document before they reach the upstream ([`super::contracts`]).
    pub apis: Vec<crate::contract::ApiConfig>,
}

/// `[gateway.quota_state]`: long-window limit counters saved in `state_dir/<iface>/` and
/// restored at start, so a restart does not refill daily and monthly quotas.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaStateConfig {
    pub enabled: bool,
    /// How often counters are saved (and once more at shutdown); after a crash at most this
    /// much consumption is lost.
    #[serde(with = "humantime_serde")]
    pub save_interval: Duration,
    /// Limits whose allowance takes at least this long to come back (a quota's window, a token
    /// bucket's refill time) are saved; shorter ones refill within moments anyway.
    #[serde(with = "humantime_serde")]
    pub min_window: Duration,
}

impl Default for QuotaStateConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            save_interval: Duration::from_secs(10),
            min_window: Duration::from_secs(60),
        }
    }
}

/// One gateway listener.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain; with `tls_key`, the listener terminates TLS (1.2 and 1.3).
    /// Without both, it serves plain HTTP (behind a load balancer that terminates TLS).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: clients must present a certificate they signed (mTLS).
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: `required` (the default) refuses the handshake without a client
    /// certificate; `optional` verifies one when presented.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Read a PROXY protocol v2 header first on connections from `trusted_proxies`; other
    /// peers are served as they are and cannot name another client.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Offer HTTP/2 by ALPN (TLS listeners only; plain listeners detect the h2 preface).
    #[serde(default = "yes")]
    pub http2: bool,
    /// Connections one source (an IPv4 address, an IPv6 prefix of the policy's
    /// `limiter.ipv6_prefix`) may hold at once on this listener; more are closed at accept.
    /// Trusted proxies count only against `limits.max_connections`.
    #[serde(default = "default_per_source")]
    pub max_connections_per_source: usize,
}

/// A client (or an office behind one NAT address) rarely needs more; 40 of them still cannot
/// fill the default `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: usize = 256;

fn default_per_source() -> usize {
    DEFAULT_MAX_CONNECTIONS_PER_SOURCE
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    Required,
    Optional,
}

/// Timeouts of the gateway's client and upstream connections.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// From connection (or previous response) to a complete request head; also bounds the
    /// TLS handshake and the PROXY header.
    #[serde(with = "humantime_serde")]
    pub header: Duration,
    /// Whole request body, from head to last byte.
    #[serde(with = "humantime_serde")]
    pub body: Duration,
    /// A client connection with no bytes moving either way is closed.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// Connecting to the upstream.
    #[serde(with = "humantime_serde")]
    pub upstream_connect: Duration,
    /// From the request sent upstream to the upstream's response head.
    #[serde(with = "humantime_serde")]
    pub upstream_response: Duration,
    /// An idle pooled upstream connection is closed.
    #[serde(with = "humantime_serde")]
    pub upstream_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header: Duration::from_secs(10),
            body: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            upstream_connect: Duration::from_secs(5),
            upstream_response: Duration::from_secs(30),
            upstream_idle: Duration::from_secs(90),
        }
    }
}

/// Size limits of client requests and connection counts.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    /// Request line and headers (HTTP/1.1), or the header list (HTTP/2), in bytes.
    pub max_header_bytes: usize,
    /// Request body in bytes; larger requests get 413.
    pub max_body_bytes: u64,
    /// Client connections served at once per listener; more are closed at accept.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_h2_streams: u32,
    /// Idle pooled connections kept per upstream host.
    pub upstream_pool_idle_per_host: usize,
    /// Threads hashing Basic passwords (argon2id/bcrypt) off the serving threads, shared by
    /// every listener and the check endpoint; 0 is one per two CPUs (at least one).
    pub password_workers: usize,
    /// Password checks waiting for a hashing thread; beyond, 503 with `Retry-After`.
    pub password_queue: usize,
}

/// More serving threads than this is a typo, not a machine.
pub const MAX_THREADS: usize = 1024;

/// hyper's floor for an HTTP/1 read buffer.
pub const MIN_HEADER_BYTES: usize = 8192;

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            max_connections: 10_000,
            max_h2_streams: 100,
            upstream_pool_idle_per_host: 64,
            password_workers: 0,
            password_queue: 32,
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            check_listen: DEFAULT_CHECK_LISTEN,
            trusted_proxies: vec![
                IpNet::from(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                IpNet::from(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
            ],
            policy_file: PathBuf::from(DEFAULT_POLICY_FILE),
            envoy_prefix: DEFAULT_ENVOY_PREFIX.into(),
            listeners: Vec::new(),
            upstreams: BTreeMap::new(),
            default_upstream: None,
            timeouts: Timeouts::default(),
            limits: HttpLimits::default(),
            threads: 0,
            quota_state: QuotaStateConfig::default(),
            apis: Vec::new(),
        }
    }
}

impl GatewayConfig {
    /// How many serving threads `threads` means on this machine.
    pub fn serving_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        }
    }

    /// How many password hashing threads `limits.password_workers` means on this machine.
    pub fn password_workers(&self) -> usize {
        if self.limits.password_workers > 0 {
            self.limits.password_workers
        } else {
            std::thread::available_parallelism()
                .map_or(1, std::num::NonZero::get)
                .div_ceil(2)
        }
    }

    /// Every problem of these settings, each naming its key; empty when they are usable.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.policy_file.is_absolute() {
            problems.push(format!(
                "gateway.policy_file = `{}`: must be an absolute path",
                self.policy_file.display()
            ));
        }
        if !self.envoy_prefix.starts_with('/') || self.envoy_prefix.len() < 2 {
            problems.push(format!(
                "gateway.envoy_prefix = `{}`: must start with `/` and not be `/` alone",
                self.envoy_prefix
            ));
        }
        self.listener_problems(&mut problems);
        for (route, url) in &self.upstreams {
            if let Err(e) = super::proxy::upstream::parse_base(url) {
                problems.push(format!("gateway.upstreams.{route} = `{url}`: {e}"));
            }
        }
        if let Some(url) = &self.default_upstream
            && let Err(e) = super::proxy::upstream::parse_base(url)
        {
            problems.push(format!("gateway.default_upstream = `{url}`: {e}"));
        }
        self.limit_problems(&mut problems);
        problems.extend(super::contracts::config_problems(&self.apis));
        let t = &self.timeouts;
        for (name, d) in [
            ("header", t.header),
            ("body", t.body),
            ("idle", t.idle),
            ("upstream_connect", t.upstream_connect),
            ("upstream_response", t.upstream_response),
            ("upstream_idle", t.upstream_idle),
        ] {
            if d.is_zero() {
                problems.push(format!("gateway.timeouts.{name}: must be positive"));
            }
        }
        if self.quota_state.save_interval.is_zero() {
            problems.push(
                "gateway.quota_state.save_interval: must be positive (`enabled = false` turns saving off)"
                    .into(),
            );
        }
        problems
    }

    fn listener_problems(&self, problems: &mut Vec<String>) {
        for (i, l) in self.listeners.iter().enumerate() {
            let at = format!("gateway.listeners[{i}] ({})", l.listen);
            if l.tls_cert.is_some() != l.tls_key.is_some() {
                problems.push(format!("{at}: tls_cert and tls_key go together"));
            }
            if l.client_ca.is_some() && l.tls_cert.is_none() {
                problems.push(format!("{at}: client_ca needs TLS (tls_cert and tls_key)"));
            }
            if self.listeners[..i].iter().any(|o| o.listen == l.listen) {
                problems.push(format!("{at}: listen address used twice"));
            }
            if l.max_connections_per_source == 0 {
                problems.push(format!(
                    "{at}: max_connections_per_source must be at least 1"
                ));
            }
            if l.listen == self.check_listen {
                problems.push(format!("{at}: same address as gateway.check_listen"));
            }
        }
    }

    fn limit_problems(&self, problems: &mut Vec<String>) {
        if self.limits.max_header_bytes < MIN_HEADER_BYTES {
            problems.push(format!(
                "gateway.limits.max_header_bytes = {}: must be at least {MIN_HEADER_BYTES}",
                self.limits.max_header_bytes
            ));
        }
        if self.limits.max_connections == 0 || self.limits.max_h2_streams == 0 {
            problems.push(
                "gateway.limits.max_connections and max_h2_streams must be at least 1".into(),
            );
        }
        if self.limits.password_workers > MAX_THREADS {
            problems.push(format!(
                "gateway.limits.password_workers = {}: at most {MAX_THREADS}",
                self.limits.password_workers
            ));
        }
        if self.limits.password_queue == 0 {
            problems.push("gateway.limits.password_queue: must be at least 1".into());
        }
        if self.threads > MAX_THREADS {
            problems.push(format!(
                "gateway.threads = {}: at most {MAX_THREADS}",
                self.threads
            ));
        }
    }

    /// Whether `peer` may name the client in forwarding headers.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted_proxies.iter().any(|n| n.contains(&peer))
    }
}
