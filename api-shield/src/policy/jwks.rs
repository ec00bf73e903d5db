//! JWKS cache: keys by `kid`, refreshed when stale or when an unknown `kid` arrives, never more
//! often than `min_refresh_interval` per URL, whatever tokens clients send.
//!
//! The fetch itself is the transport's: [`JwksFetcher`] is called synchronously, at most once per
//! cooldown per URL and by one thread at a time (single flight: while a fetch runs, other
//! requests use the keys they have). A transport on an async runtime implements it with a short
//! timeout (e.g. `block_in_place` around its HTTP client) and should call
//! [`JwksCache::refresh_if_due`] from a background task, so requests rarely wait on a fetch.
//! A failed fetch keeps the previous keys (an identity provider's outage does not log every user
//! out) and still starts the cooldown.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, jwk::Jwk};
use serde_json::Value;

use super::keys::{KeyError, VerifyKey, key_from_jwk};

/// Largest key-set document accepted.
pub const MAX_JWKS_BYTES: usize = 512 * 1024;
/// Most keys kept from one document.
pub const MAX_JWKS_KEYS: usize = 64;

/// A fetch that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("JWKS fetch failed: {0}")]
pub struct JwksFetchError(pub String);

/// Why a key set was not installed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error(transparent)]
    Fetch(#[from] JwksFetchError),
    #[error("document over {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// Not JSON (the parser's message).
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("no \"keys\" array")]
    NoKeys,
    #[error("no usable key ({skipped} skipped)")]
    NoUsableKey { skipped: usize },
}

/// Fetches a JWKS document (the transport implements it; no socket lives in the engine).
pub trait JwksFetcher: Send + Sync {
    /// The body of `url`. Called at most once per `min_refresh_interval` per URL.
    fn fetch(&self, url: &str) -> Result<String, JwksFetchError>;
}

/// A fetcher for engines without JWKS URLs: every fetch fails.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFetcher;

impl JwksFetcher for NoFetcher {
    fn fetch(&self, url: &str) -> Result<String, JwksFetchError> {
        Err(JwksFetchError(format!("no JWKS fetcher for {url}")))
    }
}

/// The keys of a JWKS document, as [`parse_jwks`] reads them.
#[derive(Debug, Default)]
pub struct ParsedJwks {
    /// Keys with a `kid` (a later key replaces an earlier one of the same `kid`).
    pub by_kid: HashMap<String, Arc<VerifyKey>>,
    /// Keys without a `kid`.
    pub unnamed: Vec<Arc<VerifyKey>>,
    /// Why each unusable key was skipped, in document order.
    pub skipped: Vec<KeyError>,
}

impl ParsedJwks {
    /// Keys kept.
    pub fn usable(&self) -> usize {
        self.by_kid.len() + self.unnamed.len()
    }
}

/// Reads a JWKS document: the first [`MAX_JWKS_KEYS`] entries of its `keys` array, each
/// through [`key_from_jwk`] with symmetric keys refused. Keys that cannot be used (encryption
/// keys, symmetric keys, unsupported types or curves, weak RSA, algorithms outside `algorithms`)
/// are skipped, not errors: an exotic key must not make the whole set unreadable. The document
/// itself is an error when it is too large, not JSON, or has no `keys` array; one without a
/// usable key is not (the cache refuses it).
pub fn parse_jwks(body: &str, algorithms: &[Algorithm]) -> Result<ParsedJwks, JwksError> {
    if body.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    let doc: Value = serde_json::from_str(body).map_err(|e| JwksError::NotJson(e.to_string()))?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwksError::NoKeys)?;
    let mut parsed = ParsedJwks::default();
    for entry in entries.iter().take(MAX_JWKS_KEYS) {
        let key = serde_json::from_value::<Jwk>(entry.clone())
            .map_err(|e| KeyError::Rejected(e.to_string()))
            .and_then(|jwk| key_from_jwk(&jwk, None, algorithms, false));
        match key {
            Ok(key) => match key.kid.clone() {
                Some(kid) => {
                    parsed.by_kid.insert(kid, Arc::new(key));
                }
                None => parsed.unnamed.push(Arc::new(key)),
            },
            Err(e) => parsed.skipped.push(e),
        }
    }
    Ok(parsed)
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    unnamed: Vec<Arc<VerifyKey>>,
    fetched_at: Option<Instant>,
}

#[derive(Default)]
struct RefreshState {
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

/// The cached keys of one JWKS URL.
pub struct JwksCache {
    url: String,
    cache_duration: Duration,
    min_refresh_interval: Duration,
    algorithms: Vec<Algorithm>,
    fetcher: Arc<dyn JwksFetcher>,
    keys: RwLock<KeySet>,
    refresh: Mutex<RefreshState>,
    fetches: AtomicU64,
}

impl fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksCache")
            .field("url", &self.url)
            .field("keys", &self.key_count())
            .field("fetches", &self.fetch_count())
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    /// An empty cache; the first token (or [`Self::refresh_if_due`]) fetches.
    pub fn new(
        url: String,
        cache_duration: Duration,
        min_refresh_interval: Duration,
        algorithms: Vec<Algorithm>,
        fetcher: Arc<dyn JwksFetcher>,
    ) -> Self {
        Self {
            url,
            cache_duration,
            min_refresh_interval,
            algorithms,
            fetcher,
            keys: RwLock::new(KeySet::default()),
            refresh: Mutex::new(RefreshState::default()),
            fetches: AtomicU64::new(0),
        }
    }

    pub(crate) fn same_source(
        &self,
        url: &str,
        cache_duration: Duration,
        min_refresh_interval: Duration,
        algorithms: &[Algorithm],
    ) -> bool {
        self.url == url
            && self.cache_duration == cache_duration
            && self.min_refresh_interval == min_refresh_interval
            && self.algorithms == algorithms
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fetches made so far (attempts, successful or not).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Keys currently held.
    pub fn key_count(&self) -> usize {
        let set = self.keys.read().unwrap_or_else(|e| e.into_inner());
        set.by_kid.len() + set.unnamed.len()
    }

    /// The last fetch or parse error, if the last attempt failed.
    pub fn last_error(&self) -> Option<String> {
        self.refresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_error
            .clone()
    }

    /// Keys for a token's `kid` (all keys when it has none), refreshing first when the set is
    /// stale or the `kid` is unknown and the cooldown allows.
    pub fn keys_for(&self, kid: Option<&str>, now: Instant) -> Vec<Arc<VerifyKey>> {
        let (found, stale) = self.lookup(kid, now);
        if !found.is_empty() && !stale {
            return found;
        }
        if self.try_refresh(now) {
            return self.lookup(kid, now).0;
        }
        found
    }

    /// Refreshes if the set is stale (never fetched, or older than `cache_duration`) and the
    /// cooldown allows; for a background task. Returns whether new keys were installed.
    pub fn refresh_if_due(&self, now: Instant) -> bool {
        self.is_stale(now) && self.try_refresh(now)
    }

    fn is_stale(&self, now: Instant) -> bool {
        let set = self.keys.read().unwrap_or_else(|e| e.into_inner());
        set.fetched_at
            .is_none_or(|t| now.saturating_duration_since(t) >= self.cache_duration)
    }

    fn lookup(&self, kid: Option<&str>, now: Instant) -> (Vec<Arc<VerifyKey>>, bool) {
        let set = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let stale = set
            .fetched_at
            .is_none_or(|t| now.saturating_duration_since(t) >= self.cache_duration);
        let found = match kid {
            Some(kid) => set.by_kid.get(kid).cloned().into_iter().collect(),
            None => set
                .unnamed
                .iter()
                .chain(set.by_kid.values())
                .cloned()
                .collect(),
        };
        (found, stale)
    }

    /// One fetch, unless the cooldown since the last attempt has not passed or another thread is
    /// fetching. Returns whether new keys were installed.
    fn try_refresh(&self, now: Instant) -> bool {
        let Ok(mut state) = self.refresh.try_lock() else {
            return false; // single flight: someone else is fetching
        };
        if state
            .last_attempt
            .is_some_and(|t| now.saturating_duration_since(t) < self.min_refresh_interval)
        {
            return false;
        }
        state.last_attempt = Some(now);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = self
            .fetcher
            .fetch(&self.url)
            .map_err(JwksError::from)
            .and_then(|body| self.install(&body, now));
        match result {
            Ok(_) => {
                state.last_error = None;
                true
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "JWKS refresh failed; keeping the previous keys");
                state.last_error = Some(e.to_string());
                false
            }
        }
    }

    /// Parses a JWKS document (see [`parse_jwks`]) and replaces the keys. A document with no
    /// usable key is an error and changes nothing.
    pub fn install(&self, body: &str, now: Instant) -> Result<usize, JwksError> {
        let parsed = parse_jwks(body, &self.algorithms)?;
        for e in &parsed.skipped {
            tracing::debug!(url = %self.url, error = %e, "JWKS key skipped");
        }
        let usable = parsed.usable();
        if usable == 0 {
            return Err(JwksError::NoUsableKey {
                skipped: parsed.skipped.len(),
            });
        }
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = KeySet {
            by_kid: parsed.by_kid,
            unnamed: parsed.unnamed,
            fetched_at: Some(now),
        };
        Ok(usable)
    }
}
