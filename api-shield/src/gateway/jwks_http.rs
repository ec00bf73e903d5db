//! The gateway's JWKS transport: fetches a key set over HTTP(S) for the policy engine's
//! cache. Blocking by design (the cache calls it synchronously, single-flight and at most once
//! per cooldown per URL), so on a runtime worker it steps aside with `block_in_place` and the
//! runtime moves other tasks off the thread while it waits.

use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};

use crate::policy::jwks::MAX_JWKS_BYTES;
use crate::policy::{JwksFetchError, JwksFetcher};

/// A whole fetch, connect to last byte: a slow identity provider must not hold a request.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

pub struct HttpJwksFetcher {
    agent: ureq::Agent,
}

impl Default for HttpJwksFetcher {
    fn default() -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(FETCH_TIMEOUT))
            .http_status_as_error(true)
            .max_redirects(0)
            .build()
            .into();
        Self { agent }
    }
}

impl HttpJwksFetcher {
    fn get(&self, url: &str) -> Result<String, JwksFetchError> {
        let mut response = self
            .agent
            .get(url)
            .header("accept", "application/jwk-set+json, application/json")
            .call()
            .map_err(|e| JwksFetchError(format!("{url}: {e}")))?;
        response
            .body_mut()
            .with_config()
            .limit(u64::try_from(MAX_JWKS_BYTES).unwrap_or(u64::MAX))
            .read_to_string()
            .map_err(|e| JwksFetchError(format!("{url}: {e}")))
    }
}

impl JwksFetcher for HttpJwksFetcher {
    fn fetch(&self, url: &str) -> Result<String, JwksFetchError> {
        match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.get(url))
            }
            _ => self.get(url),
        }
    }
}
