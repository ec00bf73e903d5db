//! The gateway side of the policy engine.
//!
//! Done: the check endpoint ([`authz`]) that nginx `auth_request`, Traefik `ForwardAuth` and
//! Envoy's HTTP `ext_authz` ask before forwarding a request, with escalation of abusive clients
//! into the kernel blocklist through the daemon's decision path ([`escalate`]).
//!
//! Not done yet: the TLS-terminating gateway itself (routes, upstream pool). Until it exists,
//! TLS is terminated by the proxy in front, which asks the check endpoint.

pub mod authz;
pub mod config;
pub mod escalate;

pub use authz::{AuthzListener, bind};
pub use config::GatewayConfig;

use crate::policy::{Engine, Escalation, NoFetcher, PolicyConfig};
use std::sync::Arc;

/// Whoever turns an [`Escalation`] into a kernel block (the daemon; tests use a recorder).
/// Called off the async runtime (from a blocking task): it may take the daemon's lock and
/// write the snapshot and the kernel maps.
pub trait Escalator: Send + Sync {
    /// Blocks `e.ip` for `e.ttl` (or only logs it when `e.dry_run`).
    fn escalate(&self, e: &Escalation);
}

/// Reads, parses and validates the policy file of `cfg` and builds the engine. Every problem
/// is named in the error.
///
/// JWKS URLs are not fetched by the check endpoint yet ([`NoFetcher`]): issuers need static
/// keys (`[[jwt_issuers.keys]]`) for now.
pub fn load_engine(cfg: &GatewayConfig) -> Result<Engine, String> {
    let text = std::fs::read_to_string(&cfg.policy_file)
        .map_err(|e| format!("gateway.policy_file {}: {e}", cfg.policy_file.display()))?;
    let policy = PolicyConfig::from_toml_str(&text)
        .map_err(|e| format!("gateway.policy_file {}: {e}", cfg.policy_file.display()))?;
    Engine::new(policy, Arc::new(NoFetcher))
        .map_err(|e| format!("gateway.policy_file {}: {e}", cfg.policy_file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let err = load_engine(&cfg).unwrap_err();
        assert!(err.contains("policy.toml"), "{err}");
        assert!(err.contains("nope") && err.contains("hash"), "{err}");
        let missing = GatewayConfig {
            policy_file: dir.path().join("missing.toml"),
            ..GatewayConfig::default()
        };
        assert!(load_engine(&missing).unwrap_err().contains("missing.toml"));
        std::fs::write(&path, "").unwrap();
        assert!(load_engine(&cfg).is_ok());
    }
}
