//! The `[gateway]` settings.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

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
        }
    }
}

impl GatewayConfig {
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
        problems
    }

    /// Whether `peer` may name the client in forwarding headers.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = canonical(peer);
        self.trusted_proxies.iter().any(|n| n.contains(&peer))
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
