//! Tests across modules: JWT verification and published vectors, the JWKS cache, and the engine
//! end to end (without sockets). Key pairs in `../testdata` are test-only.

mod engine;
mod jwks;
mod jwt;
mod password;
mod paths;

use std::time::{Duration, Instant, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::config::{JwtIssuerConfig, JwtKeyConfig};
use super::time::Now;

pub(super) const RSA_KEY: &str = include_str!("../testdata/rsa.key");
pub(super) const RSA_PUB: &str = include_str!("../testdata/rsa.pub");
pub(super) const RSA1024_PUB: &str = include_str!("../testdata/rsa1024.pub");
pub(super) const EC256A_KEY: &str = include_str!("../testdata/ec256a.key");
pub(super) const EC256A_PUB: &str = include_str!("../testdata/ec256a.pub");
pub(super) const EC256B_KEY: &str = include_str!("../testdata/ec256b.key");
pub(super) const EC256B_PUB: &str = include_str!("../testdata/ec256b.pub");
pub(super) const EC384_KEY: &str = include_str!("../testdata/ec384.key");
pub(super) const EC384_PUB: &str = include_str!("../testdata/ec384.pub");
pub(super) const ED_KEY: &str = include_str!("../testdata/ed25519.key");
pub(super) const ED_PUB: &str = include_str!("../testdata/ed25519.pub");
pub(super) const HMAC_SECRET: &[u8] = b"test-only-hmac-secret-of-40-bytes-000000";

pub(super) const ISS: &str = "https://idp.example";
pub(super) const AUD: &str = "api://orders";
/// 2026-01-01T00:00:00Z.
pub(super) const T0: u64 = 1_767_225_600;

pub(super) fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall: UNIX_EPOCH + Duration::from_secs(T0),
    }
}

pub(super) fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Good claims at [`T0`], with `extra` merged over them (`null` removes a claim).
pub(super) fn claims(extra: Value) -> Value {
    let mut c = json!({
        "iss": ISS,
        "aud": AUD,
        "sub": "user-1",
        "iat": T0 - 10,
        "nbf": T0 - 10,
        "exp": T0 + 300,
        "scope": "orders:read orders:write",
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if v.is_null() {
                c.remove(k);
            } else {
                c.insert(k.clone(), v.clone());
            }
        }
    }
    c
}

pub(super) fn encoding_key(alg: Algorithm) -> EncodingKey {
    use jsonwebtoken::AlgorithmFamily as F;
    match (alg.family(), alg) {
        (F::Hmac, _) => EncodingKey::from_secret(HMAC_SECRET).unwrap(),
        (F::Rsa, _) => EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).unwrap(),
        (F::Ec, Algorithm::ES384) => EncodingKey::from_ec_pem(EC384_KEY.as_bytes()).unwrap(),
        (F::Ec, _) => EncodingKey::from_ec_pem(EC256A_KEY.as_bytes()).unwrap(),
        (F::Ed, _) => EncodingKey::from_ed_pem(ED_KEY.as_bytes()).unwrap(),
    }
}

/// A token signed with the test key of `alg`'s family.
pub(super) fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    sign_with(alg, kid, claims, &encoding_key(alg))
}

pub(super) fn sign_with(
    alg: Algorithm,
    kid: Option<&str>,
    claims: &Value,
    key: &EncodingKey,
) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

/// A static key config for `alg`'s test key.
pub(super) fn key_config(alg: Algorithm) -> JwtKeyConfig {
    use jsonwebtoken::AlgorithmFamily as F;
    let pem = match (alg.family(), alg) {
        (F::Hmac, _) => None,
        (F::Rsa, _) => Some(RSA_PUB),
        (F::Ec, Algorithm::ES384) => Some(EC384_PUB),
        (F::Ec, _) => Some(EC256A_PUB),
        (F::Ed, _) => Some(ED_PUB),
    };
    JwtKeyConfig {
        kid: None,
        pem: pem.map(str::to_owned),
        jwk: None,
        secret_base64: pem.is_none().then(|| b64(HMAC_SECRET)),
    }
}

pub(super) fn issuer(algs: &[&str], keys: Vec<JwtKeyConfig>) -> JwtIssuerConfig {
    JwtIssuerConfig {
        issuer: ISS.into(),
        audiences: vec![AUD.into()],
        leeway: Duration::from_secs(30),
        algorithms: algs.iter().map(|s| (*s).to_owned()).collect(),
        require_exp: true,
        identity_claim: "sub".into(),
        scope_claim: "scope".into(),
        roles_claim: "roles".into(),
        plan: None,
        plan_claim: None,
        keys,
        jwks: None,
    }
}

/// The example policy shipped for operators parses, validates and builds.
#[test]
fn example_policy_builds() {
    let cfg = super::PolicyConfig::from_toml_str(include_str!("../example.toml")).unwrap();
    let engine = super::Engine::new(cfg, std::sync::Arc::new(super::NoFetcher)).unwrap();
    let req = super::RequestMeta::new(
        "192.0.2.1".parse().unwrap(),
        "GET",
        "api.example.com",
        "/v1/items",
    )
    .header("X-Api-Key", "ak_example_replace_me_0123456789");
    let d = engine.check(&req, now());
    assert!(d.is_allowed(), "{d:?}");
    assert_eq!(d.upstream_header("x-auth-identity"), Some("example-client"));
}
