//! JWKS cache: one fetch per unknown kid at most per cooldown, rotation, stale refresh,
//! failures keep the old keys, unusable keys are skipped.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, jwk::Jwk};
use serde_json::{Value, json};

use super::*;
use crate::policy::{
    check::Problems,
    config::JwksConfig,
    jwks::{JwksCache, JwksFetchError, JwksFetcher},
    jwt::{JwtError, JwtVerifier},
};

/// Serves whatever document it holds and counts fetches.
pub(super) struct FakeFetcher {
    pub doc: Mutex<Result<String, String>>,
    pub count: AtomicUsize,
}

impl Default for FakeFetcher {
    fn default() -> Self {
        Self {
            doc: Mutex::new(Err("nothing served".into())),
            count: AtomicUsize::new(0),
        }
    }
}

impl FakeFetcher {
    pub(super) fn serving(doc: Value) -> Arc<Self> {
        let f = Self::default();
        *f.doc.lock().unwrap() = Ok(doc.to_string());
        Arc::new(f)
    }

    pub(super) fn set(&self, doc: Result<Value, &str>) {
        *self.doc.lock().unwrap() = doc.map(|d| d.to_string()).map_err(str::to_owned);
    }

    pub(super) fn fetches(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl JwksFetcher for FakeFetcher {
    fn fetch(&self, url: &str) -> Result<String, JwksFetchError> {
        assert_eq!(url, "https://idp.example/jwks.json");
        self.count.fetch_add(1, Ordering::SeqCst);
        self.doc.lock().unwrap().clone().map_err(JwksFetchError)
    }
}

/// The public JWK of an EC P-256 test key with `kid`.
pub(super) fn ec_jwk(pem: &str, kid: &str) -> Value {
    let key = DecodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let mut jwk = Jwk::from_decoding_key(&key, Some(Algorithm::ES256)).unwrap();
    jwk.common.key_id = Some(kid.into());
    serde_json::to_value(jwk).unwrap()
}

fn signed_by(pem_key: &str, kid: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_ec_pem(pem_key.as_bytes()).unwrap();
    sign_with(
        Algorithm::ES256,
        Some(kid),
        &claims(json!({"exp": T0 + 86_400})),
        &key,
    )
}

fn verifier(fetcher: Arc<FakeFetcher>) -> JwtVerifier {
    let mut cfg = issuer(&["ES256"], vec![]);
    cfg.jwks = Some(JwksConfig {
        url: "https://idp.example/jwks.json".into(),
        cache_duration: Duration::from_secs(600),
        min_refresh_interval: Duration::from_secs(30),
    });
    let fetcher: Arc<dyn JwksFetcher> = fetcher;
    let mut p = Problems::default();
    let v = JwtVerifier::build(&[cfg], &fetcher, &[], &mut p);
    p.into_result().unwrap();
    v
}

fn at(base: Now, secs: u64) -> Now {
    base.after(Duration::from_secs(secs))
}

#[test]
fn unknown_kid_fetches_once_and_random_kids_cannot_force_more() {
    let f = FakeFetcher::serving(json!({"keys": [ec_jwk(EC256A_PUB, "a")]}));
    let v = verifier(f.clone());
    let t = now();
    let ok = |n: Now| v.verify(&signed_by(EC256A_KEY, "a"), n, &|_| true);
    assert!(ok(t).is_ok());
    assert_eq!(f.fetches(), 1);
    assert!(ok(at(t, 1)).is_ok());
    assert_eq!(f.fetches(), 1, "a known kid needs no fetch");
    // A burst of random kids inside the cooldown: no fetch at all.
    for i in 0..200 {
        let forged = signed_by(EC256B_KEY, &format!("random-{i}"));
        assert_eq!(
            v.verify(&forged, at(t, 2), &|_| true),
            Err(JwtError::UnknownKey)
        );
    }
    assert_eq!(f.fetches(), 1);
    // After the cooldown one unknown kid causes exactly one fetch, then the cooldown again.
    for i in 0..50 {
        let forged = signed_by(EC256B_KEY, &format!("later-{i}"));
        assert!(v.verify(&forged, at(t, 31), &|_| true).is_err());
    }
    assert_eq!(f.fetches(), 2);
    assert!(ok(at(t, 32)).is_ok(), "known keys keep working");
}

#[test]
fn rotation_picks_up_new_keys_and_drops_old_ones() {
    let f = FakeFetcher::serving(json!({"keys": [ec_jwk(EC256A_PUB, "a")]}));
    let v = verifier(f.clone());
    let t = now();
    assert!(v.verify(&signed_by(EC256A_KEY, "a"), t, &|_| true).is_ok());
    // The IdP rotates: b is published, a withdrawn.
    f.set(Ok(json!({"keys": [ec_jwk(EC256B_PUB, "b")]})));
    // Within the cooldown the new kid is not yet known.
    assert_eq!(
        v.verify(&signed_by(EC256B_KEY, "b"), at(t, 10), &|_| true),
        Err(JwtError::UnknownKey)
    );
    assert!(
        v.verify(&signed_by(EC256B_KEY, "b"), at(t, 40), &|_| true)
            .is_ok()
    );
    assert_eq!(f.fetches(), 2);
    assert_eq!(
        v.verify(&signed_by(EC256A_KEY, "a"), at(t, 41), &|_| true),
        Err(JwtError::UnknownKey)
    );
}

#[test]
fn stale_sets_refresh_and_failures_keep_the_old_keys() {
    let f = FakeFetcher::serving(json!({"keys": [ec_jwk(EC256A_PUB, "a")]}));
    let v = verifier(f.clone());
    let cache: Arc<JwksCache> = v.jwks_caches().remove(0);
    let t = now();
    assert!(cache.refresh_if_due(t.mono));
    assert!(!cache.refresh_if_due(at(t, 100).mono), "fresh for 600 s");
    assert_eq!(f.fetches(), 1);
    // Stale and the IdP is down: the fetch fails, the old key still verifies.
    f.set(Err("connection refused"));
    assert!(
        v.verify(&signed_by(EC256A_KEY, "a"), at(t, 601), &|_| true)
            .is_ok()
    );
    assert_eq!(f.fetches(), 2);
    assert!(cache.last_error().unwrap().contains("connection refused"));
    // A document without a usable key changes nothing either.
    f.set(Ok(
        json!({"keys": [{"kty": "oct", "k": b64url(HMAC_SECRET)}]}),
    ));
    assert!(!cache.refresh_if_due(at(t, 700).mono));
    assert_eq!(cache.key_count(), 1);
    assert!(
        v.verify(&signed_by(EC256A_KEY, "a"), at(t, 701), &|_| true)
            .is_ok()
    );
}

#[test]
fn unusable_keys_are_skipped_without_losing_the_rest() {
    let cache = JwksCache::new(
        "https://idp.example/jwks.json".into(),
        Duration::from_secs(600),
        Duration::from_secs(30),
        vec![Algorithm::ES256, Algorithm::ES384],
        Arc::new(FakeFetcher::default()),
    );
    let mut enc = ec_jwk(EC256B_PUB, "enc");
    enc["use"] = json!("enc");
    let doc = json!({"keys": [
        {"kty": "oct", "k": b64url(HMAC_SECRET), "kid": "hmac"},
        enc,
        {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "p521"},
        {"kty": "RSA", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB", "kid": "oaep"},
        {"kty": "weird", "kid": "weird"},
        ec_jwk(EC256A_PUB, "good"),
    ]});
    assert_eq!(cache.install(&doc.to_string(), Instant::now()), Ok(1));
    assert_eq!(cache.keys_for(Some("good"), Instant::now()).len(), 1);
    assert!(cache.install("{}", Instant::now()).is_err());
    assert!(
        cache
            .install(&"x".repeat(600 * 1024), Instant::now())
            .is_err()
    );
    assert_eq!(cache.key_count(), 1);
}
