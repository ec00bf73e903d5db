//! API keys: stored as `sha256:<hex>` digests, looked up by the digest of what a client presents.
//!
//! Why a digest lookup is safe from timing attacks: the map is keyed by SHA-256 of the presented
//! key, so any timing difference depends on that digest, which a client cannot steer toward a
//! stored one without a preimage. The final comparison of the 32-byte digests is constant-time
//! (`subtle`) all the same. Keys are high-entropy random strings, so an unsalted fast hash is the
//! right tool (as for GitHub or Stripe tokens); passwords go through `basic.rs` instead.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::check::Problems;
use super::config::ApiKeyConfig;
use super::identity::Grant;

/// Longest API key accepted from a client (longer ones are refused before hashing).
pub const MAX_KEY_LEN: usize = 512;

/// The config form of a key: `sha256:` and 64 lower-case hex digits.
pub fn hash_api_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Parses `sha256:<64 hex>` (either case).
pub fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    let hex = text
        .strip_prefix("sha256:")
        .ok_or("must start with \"sha256:\" (store the hash, never the key)")?;
    if hex.len() != 64 {
        return Err(format!(
            "expected 64 hex digits after sha256:, found {}",
            hex.len()
        ));
    }
    // ASCII hex digits only, checked first: the pairs sliced below then fall on character
    // boundaries (a multi-byte character panicked the slicing), and `from_str_radix` never sees
    // the leading `+` it would read as a sign (`+a` as 0x0a).
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("not hexadecimal".to_owned());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| "not hexadecimal".to_owned())?;
    }
    Ok(out)
}

/// The configured keys.
#[derive(Debug, Default)]
pub struct ApiKeyStore {
    by_digest: HashMap<[u8; 32], Grant>,
}

impl ApiKeyStore {
    pub(crate) fn build(keys: &[ApiKeyConfig], problems: &mut Problems) -> Self {
        let mut by_digest = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            match parse_hash(&k.hash) {
                Ok(digest) => {
                    let grant = Grant {
                        identity: k.identity.clone(),
                        plan: k.plan.clone(),
                        scopes: k.scopes.clone(),
                        roles: k.roles.clone(),
                    };
                    if by_digest.insert(digest, grant).is_some() {
                        problems.add(format!("api_keys[{i}].hash"), "duplicate key hash");
                    }
                }
                Err(e) => problems.add(format!("api_keys[{i}].hash"), e),
            }
        }
        Self { by_digest }
    }

    /// The grant of a presented key, if it is one of ours.
    pub fn verify(&self, presented: &str) -> Option<&Grant> {
        if presented.is_empty() || presented.len() > MAX_KEY_LEN {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let (stored, grant) = self.by_digest.get_key_value(&digest)?;
        bool::from(stored.ct_eq(&digest)).then_some(grant)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(keys: &[(&str, &str)]) -> ApiKeyStore {
        let cfg: Vec<_> = keys
            .iter()
            .map(|(key, id)| ApiKeyConfig {
                hash: hash_api_key(key),
                identity: (*id).to_owned(),
                plan: None,
                scopes: vec![],
                roles: vec![],
            })
            .collect();
        let mut p = Problems::default();
        let s = ApiKeyStore::build(&cfg, &mut p);
        p.into_result().unwrap();
        s
    }

    #[test]
    fn hash_format_is_sha256_hex() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            hash_api_key("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(parse_hash(&hash_api_key("abc")).is_ok());
        assert!(parse_hash("abc").is_err());
        assert!(parse_hash("sha256:zz").is_err());
        assert!(parse_hash(&format!("sha256:{}", "g".repeat(64))).is_err());
        // Found by the `api_key_hash` fuzz target: 64 bytes holding a two-byte character
        // panicked, and a `+` was read as a sign.
        assert!(parse_hash(&format!("sha256:a\u{e9}{}", "0".repeat(61))).is_err());
        assert!(parse_hash(&format!("sha256:+a{}", "0".repeat(62))).is_err());
        let upper = hash_api_key("abc")
            .to_ascii_uppercase()
            .replacen("SHA256", "sha256", 1);
        assert_eq!(parse_hash(&upper), parse_hash(&hash_api_key("abc")));
    }

    #[test]
    fn keys_match_only_themselves() {
        let s = store(&[
            ("key-alice-0123456789", "alice"),
            ("key-bob-0123456789", "bob"),
        ]);
        assert_eq!(s.verify("key-alice-0123456789").unwrap().identity, "alice");
        assert_eq!(s.verify("key-bob-0123456789").unwrap().identity, "bob");
        assert!(s.verify("key-alice-012345678").is_none());
        assert!(s.verify("").is_none());
        assert!(s.verify(&"x".repeat(MAX_KEY_LEN + 1)).is_none());
        // The stored hash itself is not a key.
        assert!(s.verify(&hash_api_key("key-alice-0123456789")).is_none());
    }

    #[test]
    fn plain_keys_and_duplicates_are_refused_in_config() {
        let cfg = [
            ApiKeyConfig {
                hash: "my-plain-key".into(),
                identity: "a".into(),
                plan: None,
                scopes: vec![],
                roles: vec![],
            },
            ApiKeyConfig {
                hash: hash_api_key("k"),
                identity: "b".into(),
                plan: None,
                scopes: vec![],
                roles: vec![],
            },
            ApiKeyConfig {
                hash: hash_api_key("k"),
                identity: "c".into(),
                plan: None,
                scopes: vec![],
                roles: vec![],
            },
        ];
        let mut p = Problems::default();
        ApiKeyStore::build(&cfg, &mut p);
        let err = p.into_result().unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(err.problems[0].starts_with("api_keys[0].hash"));
        assert!(err.problems[1].starts_with("api_keys[2].hash"));
    }
}
