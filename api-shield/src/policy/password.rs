//! Password checks as a unit of work a transport can run off its event loop.
//!
//! argon2id and bcrypt are slow on purpose (tens of milliseconds of CPU each, argon2id also
//! ~19 MiB of memory); run on a serving thread, a handful of bad guesses a second stalls every
//! other request that thread carries. So the engine never hashes inside
//! [`super::Engine::begin`]: when a Basic credential needs a hash it hands back a
//! [`PasswordCheck`] (the stored hash, the presented password and a tag binding them), the
//! transport runs [`PasswordCheck::run`] wherever it likes (a bounded pool of its own) and
//! gives the [`PasswordVerdict`] to [`super::Engine::finish`].
//!
//! Successful checks are remembered for [`SUCCESS_CACHE_TTL`] under an HMAC-SHA256 (a random
//! key per engine lineage) of the user name, the stored hash and the password: a good client
//! pays one hash a minute, not one per request; a password changed by a reload no longer
//! matches its old entries (the stored hash is part of the tag), and nothing in memory can be
//! reversed into a password. Failures are never cached.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use ring::hmac;

use super::decision::{AccessDecision, DenyReason, Verdict};

/// How long a successful check is remembered.
pub const SUCCESS_CACHE_TTL: Duration = Duration::from_secs(60);
/// Most remembered successes (each is a live user/password pair; more than this many users
/// logging in within a TTL only costs them a hash).
const SUCCESS_CACHE_MAX: usize = 4096;
/// HMAC-SHA256 key length: the hash's block-size-independent recommended size.
const TAG_KEY_BYTES: usize = 32;

/// A stored password hash, parsed once at load.
pub(crate) enum StoredHash {
    Argon2id(Box<PasswordHash>),
    Bcrypt(String),
}

impl StoredHash {
    pub(crate) fn verify(&self, password: &str) -> bool {
        match self {
            Self::Argon2id(h) => Argon2::default()
                .verify_password(password.as_bytes(), h.as_ref())
                .is_ok(),
            // Non-truncating: a password longer than bcrypt's 72 bytes is refused rather than
            // compared on its first 72 bytes only.
            Self::Bcrypt(h) => bcrypt::non_truncating_verify(password, h).unwrap_or(false),
        }
    }
}

/// Binds a verdict to the credential it was computed for: an HMAC of user, stored hash and
/// password.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CredentialTag([u8; 32]);

/// The successes remembered, shared by every engine of one lineage (kept across reloads).
pub(crate) struct SuccessCache {
    key: hmac::Key,
    entries: Mutex<HashMap<CredentialTag, Instant>>,
}

impl Default for SuccessCache {
    fn default() -> Self {
        let secret: [u8; TAG_KEY_BYTES] = rand::random();
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl SuccessCache {
    pub(crate) fn tag(&self, user: &str, stored_hash: &str, password: &str) -> CredentialTag {
        let mut ctx = hmac::Context::with_key(&self.key);
        // Lengths first, so no two (user, hash, password) triples share an input.
        ctx.update(&(user.len() as u64).to_le_bytes());
        ctx.update(user.as_bytes());
        ctx.update(&(stored_hash.len() as u64).to_le_bytes());
        ctx.update(stored_hash.as_bytes());
        ctx.update(password.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        CredentialTag(out)
    }

    pub(crate) fn hit(&self, tag: CredentialTag, now: Instant) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(&tag).is_some_and(|until| *until > now)
    }

    pub(crate) fn remember(&self, tag: CredentialTag, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= SUCCESS_CACHE_MAX {
            entries.retain(|_, until| *until > now);
            if entries.len() >= SUCCESS_CACHE_MAX {
                // Only live successes left: forgetting them costs each user one hash.
                entries.clear();
            }
        }
        entries.insert(tag, now + SUCCESS_CACHE_TTL);
    }
}

/// A password hash to verify, handed out by [`super::Engine::begin`]. Holds the presented
/// password: keep it no longer than the check takes.
pub struct PasswordCheck {
    pub(crate) hash: Arc<StoredHash>,
    pub(crate) password: String,
    pub(crate) tag: CredentialTag,
    /// An unknown user name: a configured user's hash is checked anyway so that guessing
    /// names costs as much (and takes as long) as guessing passwords, and the result is
    /// thrown away.
    pub(crate) decoy: bool,
    pub(crate) route: Option<String>,
}

impl std::fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordCheck")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

/// The outcome of a [`PasswordCheck`], for [`super::Engine::finish`].
#[derive(Clone, Copy)]
pub struct PasswordVerdict {
    pub(crate) tag: CredentialTag,
    pub(crate) matched: bool,
}

impl std::fmt::Debug for PasswordVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordVerdict")
            .field("matched", &self.matched)
            .finish_non_exhaustive()
    }
}

impl PasswordCheck {
    /// Computes the hash: CPU-heavy, blocking. Run it off any event loop.
    pub fn run(self) -> PasswordVerdict {
        let matched = std::hint::black_box(self.hash.verify(&self.password));
        PasswordVerdict {
            tag: self.tag,
            matched: matched && !self.decoy,
        }
    }

    /// The route the request matched.
    pub fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }

    /// The decision when the transport cannot run the check now: see [`unavailable`].
    pub fn unavailable(&self, retry_after: Duration) -> AccessDecision {
        unavailable(self.route.clone(), retry_after)
    }
}

/// The decision for a password the transport could not check now (its pool is full): 503
/// with `Retry-After`, nothing hashed, nothing counted against the client.
pub fn unavailable(route: Option<String>, retry_after: Duration) -> AccessDecision {
    let secs = retry_after.as_secs().max(1);
    AccessDecision {
        verdict: Verdict::Deny {
            status: 503,
            www_authenticate: None,
            retry_after: Some(secs),
        },
        reason: Some(DenyReason::PasswordCheckUnavailable),
        path: String::new(),
        route,
        identity: None,
        plan: None,
        limits: Vec::new(),
        response_headers: vec![("Retry-After".into(), secs.to_string())],
        upstream_headers: Vec::new(),
        strip_headers: Vec::new(),
        strip_query_params: Vec::new(),
        dry_run_would_deny: None,
        escalations: Vec::new(),
        password: Some(PasswordOutcome::Unavailable),
    }
}

/// What happened to a Basic password in one request (for metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordOutcome {
    /// Matched a success remembered from an earlier check: no hash.
    Cached,
    /// Hashed, and right.
    Verified,
    /// Hashed (or refused for its length), and wrong, or the user is unknown.
    Rejected,
    /// The source had spent its failure budget: refused (429) without hashing.
    BudgetSpent,
    /// The transport had no room to hash it now: 503 without hashing.
    Unavailable,
}

impl PasswordOutcome {
    /// Every outcome, for metrics that report each one from the start.
    pub const ALL: [PasswordOutcome; 5] = [
        Self::Cached,
        Self::Verified,
        Self::Rejected,
        Self::BudgetSpent,
        Self::Unavailable,
    ];

    /// Label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cached => "cached",
            Self::Verified => "verified",
            Self::Rejected => "rejected",
            Self::BudgetSpent => "budget_spent",
            Self::Unavailable => "unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_bind_user_stored_hash_and_password() {
        let cache = SuccessCache::default();
        let t = cache.tag("ann", "$h1", "pw");
        assert!(t == cache.tag("ann", "$h1", "pw"));
        assert!(t != cache.tag("ann", "$h2", "pw"), "a new stored hash");
        assert!(t != cache.tag("ann", "$h1", "pW"));
        assert!(
            t != cache.tag("an", "n$h1", "pw"),
            "lengths separate fields"
        );
        // Another lineage (another key) never matches.
        assert!(t != SuccessCache::default().tag("ann", "$h1", "pw"));
    }

    #[test]
    fn successes_expire_and_the_cache_stays_bounded() {
        let cache = SuccessCache::default();
        let now = Instant::now();
        let t = cache.tag("ann", "$h", "pw");
        assert!(!cache.hit(t, now));
        cache.remember(t, now);
        assert!(cache.hit(t, now + SUCCESS_CACHE_TTL - Duration::from_millis(1)));
        assert!(!cache.hit(t, now + SUCCESS_CACHE_TTL));
        for i in 0..(SUCCESS_CACHE_MAX * 2) {
            cache.remember(cache.tag(&format!("u{i}"), "$h", "pw"), now);
            let len = cache.entries.lock().unwrap().len();
            assert!(len <= SUCCESS_CACHE_MAX, "{len}");
        }
    }
}
