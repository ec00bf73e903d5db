//! The `[metrics]` settings.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Loopback only, beside the push API's 9380: exposing the metrics is the operator's choice.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9381);

/// The Prometheus endpoint; on when the `[metrics]` section is present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address and port of the HTTP listener serving `GET /metrics`.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_loopback() {
        let cfg: MetricsConfig = toml::from_str("").unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:9381".parse().unwrap());
        let cfg: MetricsConfig = toml::from_str("listen = \"[::1]:9100\"").unwrap();
        assert_eq!(cfg.listen, "[::1]:9100".parse().unwrap());
        assert!(toml::from_str::<MetricsConfig>("port = 1").is_err());
    }
}
