//! The gateway side of the policy engine, in two forms sharing one engine:
//! - the TLS-terminating gateway ([`proxy`]): listeners that decide every request and forward
//!   what passes to the route's upstream;
//! - the check endpoint ([`authz`]) that nginx `auth_request`, Traefik `ForwardAuth` and
//!   Envoy's HTTP `ext_authz` ask when they terminate TLS themselves.
//!
//! Abusive clients are escalated into the kernel blocklist through the daemon's decision path
//! ([`escalate`]). A SIGHUP swaps settings, policy, routes and certificates at once
//! ([`live`]) without closing a connection. The process runs as `run_as`, not root
//! ([`crate::privilege`]).

pub mod authz;
pub mod client_ip;
pub mod config;
pub mod contract_metrics;
pub mod contracts;
pub mod escalate;
pub mod jwks_http;
pub mod live;
pub mod metrics;
pub mod observe;
pub mod password_pool;
pub mod proxy;
pub mod quota_store;

pub use authz::{AuthzListener, bind};
pub use config::GatewayConfig;
pub use escalate::{EscalationOutcome, dispatch_escalations};
pub use metrics::GatewayMetrics;

use crate::policy::Escalation;

/// Whoever turns an [`Escalation`] into a kernel block (the daemon; tests use a recorder).
/// Called off the async runtime (from a blocking task): it may take the daemon's lock and
/// write the snapshot and the kernel maps.
pub trait Escalator: Send + Sync {
    /// Blocks `e.net` for `e.ttl` (or only logs it when `e.dry_run`), and says what came of it
    /// (for the escalation metric).
    fn escalate(&self, e: &Escalation) -> EscalationOutcome;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::NoFetcher;
    use std::sync::Arc;

    fn load_engine(cfg: &GatewayConfig) -> Result<(), live::LiveError> {
        live::Live::load(cfg.clone(), None, Arc::new(NoFetcher)).map(|_| ())
    }

    #[test]
    fn a_bad_policy_file_names_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(
            &path,
            "[[routes]]\nname = \"a\"\npath_prefix = \"/\"\nauth = [\"api_key\"]\ndefault_plan = \"nope\"\n\
             [[api_keys]]\nhash = \"sha256:zz\"\nidentity = \"x\"\n",
        )
        .unwrap();
        let cfg = GatewayConfig {
            policy_file: path.clone(),
            ..GatewayConfig::default()
        };
        let err = load_engine(&cfg).unwrap_err().to_string();
        assert!(err.contains("policy.toml"), "{err}");
        assert!(err.contains("nope") && err.contains("hash"), "{err}");
        let missing = GatewayConfig {
            policy_file: dir.path().join("missing.toml"),
            ..GatewayConfig::default()
        };
        let err = load_engine(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.toml"), "{err}");
        std::fs::write(&path, "").unwrap();
        assert!(load_engine(&cfg).is_ok());
    }
}
