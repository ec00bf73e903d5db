//! HTTP Basic: users with argon2id or bcrypt hashes in PHC/modular-crypt form.
//!
//! Password hashing is slow on purpose, which makes Basic a CPU-exhaustion lever. Two
//! mitigations: an unknown user name costs the same as a wrong password (a configured user's hash
//! is checked and the result thrown away), and successful checks are remembered for a minute
//! under a salted SHA-256 of user and password, so a legitimate client costs one hash per minute
//! rather than one per request. Failures are never cached: each guess pays the full price (and the
//! detector counts them).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::config::{BasicUserConfig, Problems};
use super::identity::Grant;

/// Longest password checked (longer ones are refused without hashing).
pub const MAX_PASSWORD_LEN: usize = 1024;
/// How long a successful check is remembered.
pub const SUCCESS_CACHE_TTL: Duration = Duration::from_secs(60);
/// Most remembered successes.
const SUCCESS_CACHE_MAX: usize = 4096;

enum StoredHash {
    Argon2id(Box<PasswordHash>),
    Bcrypt(String),
}

struct User {
    hash: StoredHash,
    grant: Grant,
}

/// The configured Basic users.
pub struct BasicStore {
    users: HashMap<String, User>,
    /// User checked when the presented name is unknown, to equalise timing.
    decoy: Option<String>,
    salt: [u8; 32],
    successes: Mutex<HashMap<[u8; 32], Instant>>,
}

impl std::fmt::Debug for BasicStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicStore")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

/// Parses a stored hash: argon2id PHC (`$argon2id$v=19$m=..,t=..,p=..$salt$hash`) or bcrypt
/// (`$2a$`, `$2b$`, `$2y$`).
fn parse_stored(text: &str) -> Result<StoredHash, String> {
    if text.starts_with("$2a$") || text.starts_with("$2b$") || text.starts_with("$2y$") {
        // bcrypt's own parser is private; a check against the empty password validates the form.
        return match bcrypt::verify("", text) {
            Ok(_) => Ok(StoredHash::Bcrypt(text.to_owned())),
            Err(e) => Err(format!("not a valid bcrypt hash: {e}")),
        };
    }
    let parsed = PasswordHash::new(text).map_err(|e| format!("not a PHC string: {e}"))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "algorithm {:?} refused: use argon2id or bcrypt",
            parsed.algorithm.as_str()
        ));
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err("argon2id hash lacks a salt or an output".into());
    }
    argon2::Params::try_from(&parsed).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    Ok(StoredHash::Argon2id(Box::new(parsed)))
}

impl StoredHash {
    fn verify(&self, password: &str) -> bool {
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

/// Splits `Authorization: Basic <base64(user:password)>`; `None` if malformed.
pub fn parse_authorization(value: &str) -> Option<(String, String)> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

impl BasicStore {
    pub(crate) fn build(users: &[BasicUserConfig], problems: &mut Problems) -> Self {
        let mut map = HashMap::new();
        for (i, u) in users.iter().enumerate() {
            match parse_stored(&u.password_hash) {
                Ok(hash) => {
                    let grant = Grant {
                        identity: u.username.clone(),
                        plan: u.plan.clone(),
                        scopes: u.scopes.clone(),
                        roles: u.roles.clone(),
                    };
                    map.insert(u.username.clone(), User { hash, grant });
                }
                Err(e) => problems.add(format!("basic_users[{i}].password_hash"), e),
            }
        }
        let decoy = users.first().map(|u| u.username.clone());
        Self {
            users: map,
            decoy,
            salt: rand::random(),
            successes: Mutex::new(HashMap::new()),
        }
    }

    /// The grant of `user` if `password` is right.
    pub fn verify(&self, user: &str, password: &str, now: Instant) -> Option<&Grant> {
        if password.len() > MAX_PASSWORD_LEN || user.len() > super::config::MAX_NAME_LEN {
            return None;
        }
        let Some(entry) = self.users.get(user) else {
            if let Some(decoy) = self.decoy.as_ref().and_then(|d| self.users.get(d)) {
                let _ = std::hint::black_box(decoy.hash.verify(password));
            }
            return None;
        };
        let tag = self.cache_tag(user, password);
        {
            let cache = self.successes.lock().unwrap_or_else(|e| e.into_inner());
            if cache.get(&tag).is_some_and(|until| *until > now) {
                return Some(&entry.grant);
            }
        }
        if !entry.hash.verify(password) {
            return None;
        }
        let mut cache = self.successes.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= SUCCESS_CACHE_MAX {
            cache.retain(|_, until| *until > now);
            if cache.len() >= SUCCESS_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(tag, now + SUCCESS_CACHE_TTL);
        Some(&entry.grant)
    }

    fn cache_tag(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether no user is configured.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use argon2::PasswordHasher;

    /// An argon2id PHC string with small test parameters and a fixed salt.
    pub(crate) fn argon2id_hash(password: &str) -> String {
        let params = argon2::Params::new(8 * 1024, 1, 1, None).unwrap();
        let a = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        a.hash_password_with_salt(password.as_bytes(), b"fixed-test-salt!")
            .unwrap()
            .to_string()
    }

    /// A bcrypt hash with cost 4 and a fixed salt.
    pub(crate) fn bcrypt_hash(password: &str) -> String {
        bcrypt::hash_with_salt(password, 4, *b"0123456789abcdef")
            .unwrap()
            .format_for_version(bcrypt::Version::TwoB)
    }

    fn user(name: &str, hash: String) -> BasicUserConfig {
        BasicUserConfig {
            username: name.into(),
            password_hash: hash,
            plan: None,
            scopes: vec![],
            roles: vec![],
        }
    }

    #[test]
    fn argon2id_and_bcrypt_users_verify() {
        let mut p = Problems::default();
        let s = BasicStore::build(
            &[
                user("ann", argon2id_hash("correct horse")),
                user("bob", bcrypt_hash("battery staple")),
            ],
            &mut p,
        );
        p.into_result().unwrap();
        let now = Instant::now();
        assert_eq!(
            s.verify("ann", "correct horse", now).unwrap().identity,
            "ann"
        );
        assert!(s.verify("ann", "correct horsE", now).is_none());
        assert!(s.verify("ann", "battery staple", now).is_none());
        assert_eq!(
            s.verify("bob", "battery staple", now).unwrap().identity,
            "bob"
        );
        assert!(s.verify("bob", "battery stapl", now).is_none());
        assert!(s.verify("carol", "correct horse", now).is_none());
        // Cached success still requires the same password.
        assert!(s.verify("ann", "correct horse", now).is_some());
        assert!(s.verify("ann", "wrong", now).is_none());
        assert!(
            s.verify("ann", &"x".repeat(MAX_PASSWORD_LEN + 1), now)
                .is_none()
        );
    }

    #[test]
    fn weak_or_malformed_hashes_are_refused_and_not_shown() {
        let argon2i = argon2id_hash("pw").replace("$argon2id$", "$argon2i$");
        let mut p = Problems::default();
        BasicStore::build(
            &[
                user("a", "plaintext".into()),
                user("b", argon2i),
                user("c", "$2b$04$short".into()),
                user("d", argon2id_hash("ok")),
            ],
            &mut p,
        );
        let err = p.into_result().unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        assert!(err.problems[1].contains("argon2i"), "{err}");
        let dbg = format!("{:?}", user("d", argon2id_hash("ok")));
        assert!(!dbg.contains("argon2id"), "{dbg}");
    }

    #[test]
    fn authorization_header_parsing() {
        // RFC 7617 example: Aladdin / open sesame.
        assert_eq!(
            parse_authorization("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            Some(("Aladdin".into(), "open sesame".into()))
        );
        assert_eq!(
            parse_authorization("basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            Some(("Aladdin".into(), "open sesame".into()))
        );
        assert_eq!(parse_authorization("Bearer abc"), None);
        assert_eq!(parse_authorization("Basic !!!"), None);
        assert_eq!(parse_authorization("Basic QWxhZGRpbg=="), None); // no colon
    }
}
