//! The `[push]` settings.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::PushError;

/// Loopback only: exposing the API is a decision the operator makes by setting `listen`.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9380);
const DEFAULT_TOKEN_FILE: &str = "/etc/api-shield/push.token";
/// A full feed (a CrowdSec community list, say) in one batch.
const DEFAULT_MAX_BATCH: usize = 100_000;
/// Beyond this a single request body (see `body_limit`) would run to hundreds of megabytes.
const MAX_BATCH_CEILING: usize = 1_000_000;
/// Room for one `add` item with an IPv6 prefix, a TTL and a reason of about 150 characters,
/// JSON punctuation included. Most entries are far smaller, so the average stays well below.
const BYTES_PER_ENTRY: usize = 256;
/// The envelope (`revision`, keys, whitespace) of a batch.
const BODY_SLACK: usize = 64 * 1024;

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Address and port of the HTTP listener; loopback by default.
    pub listen: SocketAddr,
    /// File holding the bearer token; must not be accessible to group or others.
    pub token_file: PathBuf,
    /// PEM certificate chain; with `tls_key`, the API speaks HTTPS only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Most entries (`add` plus `remove`) in one batch.
    pub max_batch: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            token_file: PathBuf::from(DEFAULT_TOKEN_FILE),
            tls_cert: None,
            tls_key: None,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

impl PushConfig {
    /// Every problem of these settings, each naming its key; empty when they are usable.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut absolute = |key: &str, path: &Path| {
            if !path.is_absolute() {
                problems.push(format!(
                    "push.{key} = `{}`: must be an absolute path",
                    path.display()
                ));
            }
        };
        absolute("token_file", &self.token_file);
        if let Some(cert) = &self.tls_cert {
            absolute("tls_cert", cert);
        }
        if let Some(key) = &self.tls_key {
            absolute("tls_key", key);
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => problems.push(
                "push.tls_cert is set but push.tls_key is not: give both or neither".to_owned(),
            ),
            (None, Some(_)) => problems.push(
                "push.tls_key is set but push.tls_cert is not: give both or neither".to_owned(),
            ),
            _ => {}
        }
        if !(1..=MAX_BATCH_CEILING).contains(&self.max_batch) {
            problems.push(format!(
                "push.max_batch = {}: must be 1 to {MAX_BATCH_CEILING}",
                self.max_batch
            ));
        }
        problems
    }

    pub fn validate(&self) -> Result<(), PushError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PushError::Config(problems))
        }
    }

    /// Largest request body accepted, in bytes: room for `max_batch` entries.
    pub fn body_limit(&self) -> usize {
        self.max_batch
            .saturating_mul(BYTES_PER_ENTRY)
            .saturating_add(BODY_SLACK)
    }

    /// The certificate and key files when TLS is configured.
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_loopback_and_valid() {
        let cfg: PushConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, PushConfig::default());
        assert_eq!(cfg.listen, "127.0.0.1:9380".parse().unwrap());
        assert_eq!(cfg.max_batch, DEFAULT_MAX_BATCH);
        assert!(cfg.validate().is_ok());
        assert_eq!(cfg.tls_files(), None);
    }

    #[test]
    fn round_trips_through_toml() {
        let text = r#"
            listen = "0.0.0.0:9443"
            token_file = "/run/secrets/push"
            tls_cert = "/etc/api-shield/push.crt"
            tls_key = "/etc/api-shield/push.key"
            max_batch = 500
        "#;
        let cfg: PushConfig = toml::from_str(text).unwrap();
        assert!(cfg.validate().is_ok());
        assert_eq!(
            cfg.tls_files(),
            Some((
                Path::new("/etc/api-shield/push.crt"),
                Path::new("/etc/api-shield/push.key")
            ))
        );
        let again: PushConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(again, cfg);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<PushConfig>("token = \"s3cret\"").unwrap_err();
        assert!(err.to_string().contains("token"), "{err}");
    }

    #[test]
    fn problems_name_their_keys() {
        let cfg = PushConfig {
            token_file: PathBuf::from("push.token"),
            tls_cert: Some(PathBuf::from("/etc/push.crt")),
            max_batch: 0,
            ..PushConfig::default()
        };
        let problems = cfg.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("push.token_file = `push.token`"));
        assert!(problems[1].contains("push.tls_key is not"));
        assert!(problems[2].contains("push.max_batch = 0"));
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("push.tls_key") && err.contains("push.max_batch"),
            "{err}"
        );

        let key_only = PushConfig {
            tls_key: Some(PathBuf::from("/etc/push.key")),
            ..PushConfig::default()
        };
        assert_eq!(
            key_only.problems(),
            ["push.tls_key is set but push.tls_cert is not: give both or neither"]
        );
    }

    #[test]
    fn body_limit_grows_with_max_batch() {
        let cfg = PushConfig {
            max_batch: 10,
            ..PushConfig::default()
        };
        assert_eq!(cfg.body_limit(), 10 * BYTES_PER_ENTRY + BODY_SLACK);
        let huge = PushConfig {
            max_batch: usize::MAX,
            ..PushConfig::default()
        };
        assert_eq!(huge.body_limit(), usize::MAX);
    }
}
