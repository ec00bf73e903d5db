//! HTTP Basic: users with argon2id or bcrypt hashes in PHC/modular-crypt form.
//!
//! Password hashing is slow on purpose, which makes Basic a CPU-exhaustion lever. The store
//! therefore never hashes by itself: [`BasicStore::lookup`] answers from the success cache or
//! hands out a [`PasswordCheck`] for the caller to run where it does no harm (see
//! [`super::password`]), and [`BasicStore::complete`] takes its verdict. An unknown user name
//! costs the same as a wrong password (a configured user's hash is checked and the result
//! thrown away). Failures are never cached: each guess pays the full price (the detector and
//! the failure budget count them).

use std::{collections::HashMap, sync::Arc, time::Instant};

use argon2::PasswordHash;
use base64::Engine as _;

use super::check::Problems;
use super::config::{BasicUserConfig, MAX_NAME_LEN};
use super::identity::Grant;
use super::password::{PasswordCheck, PasswordVerdict, StoredHash, SuccessCache};

pub use super::password::SUCCESS_CACHE_TTL;

/// Longest password checked (longer ones are refused without hashing).
pub const MAX_PASSWORD_LEN: usize = 1024;

struct User {
    hash: Arc<StoredHash>,
    /// The configured hash text: part of the cache tag, so a changed password (a new hash)
    /// never matches a success remembered for the old one.
    hash_text: String,
    grant: Grant,
}

/// The configured Basic users.
pub struct BasicStore {
    users: HashMap<String, User>,
    /// User checked when the presented name is unknown, to equalise timing.
    decoy: Option<String>,
    successes: Arc<SuccessCache>,
}

impl std::fmt::Debug for BasicStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicStore")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

/// What [`BasicStore::lookup`] found.
pub enum Lookup<'a> {
    /// Refused without hashing (too long, or no user is configured at all).
    Refused,
    /// A success remembered from an earlier check.
    Cached(&'a Grant),
    /// A hash to compute.
    Hash(PasswordCheck),
}

/// Why a configured password hash was refused.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("not a valid bcrypt hash: {0}")]
    Bcrypt(bcrypt::BcryptError),
    #[error("not a PHC string: {0}")]
    NotPhc(argon2::password_hash::phc::Error),
    #[error("algorithm {0:?} refused: use argon2id or bcrypt")]
    Algorithm(String),
    #[error("argon2id hash lacks a salt or an output")]
    MissingSaltOrOutput,
    #[error("bad argon2 parameters: {0}")]
    Params(argon2::password_hash::Error),
}

/// Parses a stored hash: argon2id PHC (`$argon2id$v=19$m=..,t=..,p=..$salt$hash`) or bcrypt
/// (`$2a$`, `$2b$`, `$2y$`).
fn parse_stored(text: &str) -> Result<StoredHash, HashError> {
    if text.starts_with("$2a$") || text.starts_with("$2b$") || text.starts_with("$2y$") {
        // bcrypt's own parser is private; a check against the empty password validates the form.
        return match bcrypt::verify("", text) {
            Ok(_) => Ok(StoredHash::Bcrypt(text.to_owned())),
            Err(e) => Err(HashError::Bcrypt(e)),
        };
    }
    let parsed = PasswordHash::new(text).map_err(HashError::NotPhc)?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(HashError::Algorithm(parsed.algorithm.as_str().to_owned()));
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(HashError::MissingSaltOrOutput);
    }
    argon2::Params::try_from(&parsed).map_err(HashError::Params)?;
    Ok(StoredHash::Argon2id(Box::new(parsed)))
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
    /// Loads `users`; with `previous` (a reload), its remembered successes stay valid for
    /// every user whose hash did not change.
    pub(crate) fn build(
        users: &[BasicUserConfig],
        previous: Option<&BasicStore>,
        problems: &mut Problems,
    ) -> Self {
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
                    let user = User {
                        hash: Arc::new(hash),
                        hash_text: u.password_hash.clone(),
                        grant,
                    };
                    map.insert(u.username.clone(), user);
                }
                Err(e) => problems.add(format!("basic_users[{i}].password_hash"), e),
            }
        }
        let decoy = users.first().map(|u| u.username.clone());
        Self {
            users: map,
            decoy,
            successes: previous
                .map(|p| Arc::clone(&p.successes))
                .unwrap_or_default(),
        }
    }

    /// The cached grant of `user` with `password`, or the hash to compute to find out.
    pub fn lookup(&self, user: &str, password: &str, now: Instant) -> Lookup<'_> {
        if password.len() > MAX_PASSWORD_LEN || user.len() > MAX_NAME_LEN {
            return Lookup::Refused;
        }
        let Some(entry) = self.users.get(user) else {
            return match self.decoy.as_ref().and_then(|d| self.users.get(d)) {
                Some(decoy) => Lookup::Hash(PasswordCheck {
                    hash: Arc::clone(&decoy.hash),
                    password: password.to_owned(),
                    tag: self.successes.tag(user, "", password),
                    decoy: true,
                    route: None,
                }),
                None => Lookup::Refused,
            };
        };
        let tag = self.successes.tag(user, &entry.hash_text, password);
        if self.successes.hit(tag, now) {
            return Lookup::Cached(&entry.grant);
        }
        Lookup::Hash(PasswordCheck {
            hash: Arc::clone(&entry.hash),
            password: password.to_owned(),
            tag,
            decoy: false,
            route: None,
        })
    }

    /// The grant of `user` if `verdict` says `password` was right (and was computed for this
    /// very credential); remembers the success.
    pub fn complete(
        &self,
        user: &str,
        password: &str,
        verdict: PasswordVerdict,
        now: Instant,
    ) -> Option<&Grant> {
        let entry = self.users.get(user)?;
        let tag = self.successes.tag(user, &entry.hash_text, password);
        if !verdict.matched || verdict.tag != tag {
            return None;
        }
        self.successes.remember(tag, now);
        Some(&entry.grant)
    }

    /// The grant of `user` if `password` is right, hashing on the calling thread if needed.
    pub fn verify(&self, user: &str, password: &str, now: Instant) -> Option<&Grant> {
        match self.lookup(user, password, now) {
            Lookup::Refused => None,
            Lookup::Cached(grant) => Some(grant),
            Lookup::Hash(check) => self.complete(user, password, check.run(), now),
        }
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
    use argon2::{Argon2, PasswordHasher};

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
            None,
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
            None,
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

    #[test]
    fn a_reload_keeps_remembered_successes_only_for_unchanged_hashes() {
        let mut p = Problems::default();
        let first = BasicStore::build(
            &[
                user("ann", argon2id_hash("old ann")),
                user("bob", bcrypt_hash("bob's")),
            ],
            None,
            &mut p,
        );
        let now = Instant::now();
        assert!(first.verify("ann", "old ann", now).is_some());
        assert!(first.verify("bob", "bob's", now).is_some());
        // ann's password changes; bob's stays.
        let second = BasicStore::build(
            &[
                user("ann", argon2id_hash("new ann")),
                user("bob", bcrypt_hash("bob's")),
            ],
            Some(&first),
            &mut p,
        );
        p.into_result().unwrap();
        assert!(
            matches!(second.lookup("ann", "old ann", now), Lookup::Hash(_)),
            "the old password's success is not remembered for the new hash"
        );
        assert!(second.verify("ann", "old ann", now).is_none());
        assert!(matches!(
            second.lookup("bob", "bob's", now),
            Lookup::Cached(_)
        ));
    }

    #[test]
    fn a_verdict_counts_only_for_the_credential_it_was_computed_for() {
        let mut p = Problems::default();
        let s = BasicStore::build(&[user("ann", argon2id_hash("pw"))], None, &mut p);
        let now = Instant::now();
        let Lookup::Hash(check) = s.lookup("ann", "pw", now) else {
            panic!("a first check hashes");
        };
        let verdict = check.run();
        assert!(s.complete("ann", "other", verdict, now).is_none());
        assert!(matches!(s.lookup("ann", "other", now), Lookup::Hash(_)));
        assert!(s.complete("ann", "pw", verdict, now).is_some());
        assert!(matches!(s.lookup("ann", "pw", now), Lookup::Cached(_)));
        // An unknown user is hashed against a configured one (same cost), and never passes.
        let Lookup::Hash(decoy) = s.lookup("carol", "pw", now) else {
            panic!("unknown users cost a hash too");
        };
        assert!(!decoy.run().matched);
    }
}
