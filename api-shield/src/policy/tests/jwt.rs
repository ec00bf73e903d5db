//! JWT verification: every algorithm against every claim failure, `alg: none`, algorithm
//! confusion, published vectors (RFC 7515 A.1, RFC 8037 A.4).

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, EncodingKey, jwk::Jwk};
use serde_json::json;

use super::*;
use crate::policy::{
    check::Problems,
    jwks::{JwksFetcher, NoFetcher},
    jwt::{JwtError, JwtVerifier},
    keys,
};

const ALL: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn verifier(cfgs: &[crate::policy::config::JwtIssuerConfig]) -> JwtVerifier {
    let fetcher: Arc<dyn JwksFetcher> = Arc::new(NoFetcher);
    let mut p = Problems::default();
    let v = JwtVerifier::build(cfgs, &fetcher, &[], &mut p);
    p.into_result().unwrap();
    v
}

fn check(v: &JwtVerifier, token: &str, now: Now) -> Result<String, JwtError> {
    v.verify(token, now, &|_| true).map(|g| g.grant.identity)
}

fn name(alg: Algorithm) -> String {
    format!("{alg:?}")
}

fn tamper(token: &str) -> String {
    // Re-encode the payload with another subject, keep header and signature.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = b64url(claims(json!({"sub": "admin"})).to_string().as_bytes());
    parts.join(".")
}

#[test]
fn every_algorithm_valid_expired_early_wrong_aud_wrong_iss_tampered() {
    for alg in ALL {
        let v = verifier(&[issuer(&[&name(alg)], vec![key_config(alg)])]);
        let at = now();
        let ok = sign(alg, None, &claims(json!({})));
        assert_eq!(check(&v, &ok, at), Ok("user-1".into()), "{alg:?} valid");
        let expired = sign(alg, None, &claims(json!({"exp": T0 - 31})));
        assert_eq!(
            check(&v, &expired, at),
            Err(JwtError::Expired),
            "{alg:?} expired"
        );
        let early = sign(alg, None, &claims(json!({"nbf": T0 + 31})));
        assert_eq!(
            check(&v, &early, at),
            Err(JwtError::NotYetValid),
            "{alg:?} nbf"
        );
        let aud = sign(alg, None, &claims(json!({"aud": "api://other"})));
        assert_eq!(
            check(&v, &aud, at),
            Err(JwtError::WrongAudience),
            "{alg:?} aud"
        );
        let iss = sign(alg, None, &claims(json!({"iss": "https://evil.example"})));
        assert_eq!(
            check(&v, &iss, at),
            Err(JwtError::WrongIssuer),
            "{alg:?} iss"
        );
        assert_eq!(
            check(&v, &tamper(&ok), at),
            Err(JwtError::BadSignature),
            "{alg:?} tampered"
        );
    }
}

#[test]
fn leeway_edges_and_claim_types() {
    let alg = Algorithm::HS256;
    let v = verifier(&[issuer(&["HS256"], vec![key_config(alg)])]);
    let at = now();
    // exp + leeway (30 s) is the first invalid instant.
    let t = sign(alg, None, &claims(json!({"exp": T0 - 29})));
    assert!(check(&v, &t, at).is_ok());
    let t = sign(alg, None, &claims(json!({"exp": T0 - 30})));
    assert_eq!(check(&v, &t, at), Err(JwtError::Expired));
    let t = sign(alg, None, &claims(json!({"nbf": T0 + 30})));
    assert!(check(&v, &t, at).is_ok());
    // Wrong types are refused, not ignored.
    let t = sign(alg, None, &claims(json!({"exp": "never"})));
    assert_eq!(check(&v, &t, at), Err(JwtError::Malformed));
    let t = sign(alg, None, &claims(json!({"aud": 7})));
    assert_eq!(check(&v, &t, at), Err(JwtError::Malformed));
    // exp and aud are required; aud may be a list.
    let t = sign(alg, None, &claims(json!({"exp": null})));
    assert_eq!(check(&v, &t, at), Err(JwtError::MissingExp));
    let t = sign(alg, None, &claims(json!({"aud": null})));
    assert_eq!(check(&v, &t, at), Err(JwtError::WrongAudience));
    let t = sign(alg, None, &claims(json!({"aud": ["x", AUD]})));
    assert!(check(&v, &t, at).is_ok());
    // An identity that could smuggle a header line is refused.
    let t = sign(alg, None, &claims(json!({"sub": "a\r\nX-Admin: 1"})));
    assert_eq!(check(&v, &t, at), Err(JwtError::BadIdentity));
    let t = sign(alg, None, &claims(json!({"sub": null})));
    assert_eq!(check(&v, &t, at), Err(JwtError::BadIdentity));
}

#[test]
fn alg_none_and_unsigned_tokens_are_refused() {
    let v = verifier(&[issuer(&["HS256"], vec![key_config(Algorithm::HS256)])]);
    let body = b64url(claims(json!({})).to_string().as_bytes());
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None"}"#,
        r#"{"alg":"NONE"}"#,
        r#"{"typ":"JWT"}"#,
        r#"{"alg":"HS1"}"#,
    ] {
        let h = b64url(header.as_bytes());
        for token in [format!("{h}.{body}."), format!("{h}.{body}")] {
            assert!(check(&v, &token, now()).is_err(), "{header} accepted");
        }
        assert_eq!(
            check(&v, &format!("{h}.{body}."), now()),
            Err(JwtError::AlgorithmNotAllowed),
            "{header}"
        );
    }
    // A valid header with the signature cut off.
    let good = sign(Algorithm::HS256, None, &claims(json!({})));
    let unsigned = &good[..good.rfind('.').unwrap() + 1];
    assert_eq!(check(&v, unsigned, now()), Err(JwtError::Malformed));
    assert_eq!(check(&v, "not-a-token", now()), Err(JwtError::Malformed));
    assert_eq!(
        check(&v, &"a".repeat(9000), now()),
        Err(JwtError::Malformed)
    );
}

#[test]
fn an_rsa_public_key_used_as_an_hmac_secret_is_refused() {
    // The classic confusion: the attacker signs HS256 with the server's public key bytes.
    let v = verifier(&[issuer(&["RS256"], vec![key_config(Algorithm::RS256)])]);
    for secret in [RSA_PUB.as_bytes(), RSA_PUB.trim().as_bytes()] {
        let forged = sign_with(
            Algorithm::HS256,
            None,
            &claims(json!({})),
            &EncodingKey::from_secret(secret).unwrap(),
        );
        assert_eq!(
            check(&v, &forged, now()),
            Err(JwtError::AlgorithmNotAllowed)
        );
    }
    // The key itself never verifies HMAC, whatever the issuer allows.
    let key = keys::key_from_pem(RSA_PUB, None, &[Algorithm::RS256, Algorithm::PS256]).unwrap();
    assert!(!key.allows(Algorithm::HS256));
    assert_eq!(key.algorithms(), &[Algorithm::RS256, Algorithm::PS256]);
    // An issuer may not mix HMAC with public-key algorithms at all.
    assert!(keys::parse_algorithms(&["RS256".into(), "HS256".into()]).is_err());
    assert!(keys::parse_algorithms(&["none".into()]).is_err());
    // An EC key of the other curve, or a token claiming the other EC algorithm, fails too.
    let v = verifier(&[issuer(
        &["ES256", "ES384"],
        vec![key_config(Algorithm::ES256)],
    )]);
    let t = sign(Algorithm::ES384, None, &claims(json!({})));
    assert_eq!(check(&v, &t, now()), Err(JwtError::UnknownKey));
}

#[test]
fn keys_are_chosen_by_kid() {
    let mut a = key_config(Algorithm::ES256);
    a.kid = Some("a".into());
    let b = crate::policy::config::JwtKeyConfig {
        kid: Some("b".into()),
        pem: Some(EC256B_PUB.into()),
        jwk: None,
        secret_base64: None,
    };
    let v = verifier(&[issuer(&["ES256"], vec![a, b])]);
    let key_b = EncodingKey::from_ec_pem(EC256B_KEY.as_bytes()).unwrap();
    let c = claims(json!({}));
    assert!(
        check(
            &v,
            &sign_with(Algorithm::ES256, Some("b"), &c, &key_b),
            now()
        )
        .is_ok()
    );
    assert!(check(&v, &sign(Algorithm::ES256, Some("a"), &c), now()).is_ok());
    // Signed by b but naming a: only key a is tried.
    assert_eq!(
        check(
            &v,
            &sign_with(Algorithm::ES256, Some("a"), &c, &key_b),
            now()
        ),
        Err(JwtError::BadSignature)
    );
    assert_eq!(
        check(&v, &sign(Algorithm::ES256, Some("zzz"), &c), now()),
        Err(JwtError::UnknownKey)
    );
    // No kid: every key is a candidate.
    assert!(check(&v, &sign_with(Algorithm::ES256, None, &c, &key_b), now()).is_ok());
}

#[test]
fn bad_key_material_is_named() {
    let algs = [Algorithm::RS256];
    assert!(
        keys::key_from_pem(RSA_KEY, None, &algs)
            .unwrap_err()
            .to_string()
            .contains("private key")
    );
    assert!(
        keys::key_from_pem(RSA1024_PUB, None, &algs)
            .unwrap_err()
            .to_string()
            .contains("1024 bits")
    );
    assert!(keys::key_from_pem("garbage", None, &algs).is_err());
    assert!(
        keys::key_from_pem(ED_PUB, None, &algs)
            .unwrap_err()
            .to_string()
            .contains("fits none")
    );
    assert!(keys::key_from_secret(&b64(b"short"), None, &[Algorithm::HS256]).is_err());
    // A truncated Ed25519 JWK would make the verifier index out of bounds: refused first.
    let jwk: Jwk = serde_json::from_value(json!({"kty":"OKP","crv":"Ed25519","x":"AAAA"})).unwrap();
    assert!(keys::key_from_jwk(&jwk, None, &[Algorithm::EdDSA], true).is_err());
    let jwk: Jwk = serde_json::from_value(json!({"kty":"oct","k": b64url(HMAC_SECRET)})).unwrap();
    assert!(
        keys::key_from_jwk(&jwk, None, &[Algorithm::HS256], false)
            .unwrap_err()
            .to_string()
            .contains("oct")
    );
    assert!(keys::key_from_jwk(&jwk, None, &[Algorithm::HS256], true).is_ok());
    let jwk: Jwk =
        serde_json::from_value(json!({"kty":"oct","k": b64url(HMAC_SECRET), "use": "enc"}))
            .unwrap();
    assert!(keys::key_from_jwk(&jwk, None, &[Algorithm::HS256], true).is_err());
}

/// RFC 7515 appendix A.1: the HS256 example, key as a JWK (`oct`).
const RFC7515_A1_TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const RFC7515_A1_JWK: &str = r#"{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}"#;

#[test]
fn rfc7515_a1_hs256_vector() {
    let jwk: Jwk = serde_json::from_str(RFC7515_A1_JWK).unwrap();
    let key = keys::key_from_jwk(&jwk, None, &[Algorithm::HS256], true).unwrap();
    assert!(key.verify_jws(RFC7515_A1_TOKEN));
    // One character of the signature changed ("dBjf" → "eBjf").
    let tampered = RFC7515_A1_TOKEN.replace(".dBjf", ".eBjf");
    assert_ne!(tampered, RFC7515_A1_TOKEN);
    assert!(!key.verify_jws(&tampered));

    // Through the verifier: issuer "joe", exp 1300819380 (2011-03-22T18:43:00Z); the vector has
    // no `aud`, so a verified signature surfaces as WrongAudience, and the clock as Expired.
    let mut cfg = issuer(&["HS256"], vec![]);
    cfg.issuer = "joe".into();
    cfg.keys.push(crate::policy::config::JwtKeyConfig {
        kid: None,
        pem: None,
        jwk: Some(RFC7515_A1_JWK.into()),
        secret_base64: None,
    });
    let v = verifier(&[cfg]);
    let at = |t: u64| Now {
        mono: std::time::Instant::now(),
        wall: std::time::UNIX_EPOCH + Duration::from_secs(t),
    };
    assert_eq!(
        check(&v, RFC7515_A1_TOKEN, at(1_300_819_000)),
        Err(JwtError::WrongAudience)
    );
    assert_eq!(
        check(&v, RFC7515_A1_TOKEN, at(1_300_819_410)),
        Err(JwtError::Expired)
    );
    assert_eq!(
        check(&v, &tampered, at(1_300_819_000)),
        Err(JwtError::BadSignature)
    );
}

/// RFC 8037 appendix A.4: Ed25519 signature of "Example of Ed25519 signing" with the key of A.1.
#[test]
fn rfc8037_a4_eddsa_vector() {
    let jwk: Jwk = serde_json::from_value(json!({
        "kty": "OKP", "crv": "Ed25519",
        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    }))
    .unwrap();
    let key = keys::key_from_jwk(&jwk, None, &[Algorithm::EdDSA], false).unwrap();
    let jws = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    assert!(key.verify_jws(jws));
    assert!(!key.verify_jws(&jws.replace("RXhhbXBsZSBvZiBF", "RXhhbXBsZSBvZiBG")));
    // The same key refuses to verify under another algorithm name.
    let other =
        keys::key_from_jwk(&jwk, None, &[Algorithm::EdDSA, Algorithm::ES256], false).unwrap();
    assert_eq!(other.algorithms(), &[Algorithm::EdDSA]);
}

#[test]
fn debug_output_holds_no_key_material() {
    let key =
        keys::key_from_secret(&b64(HMAC_SECRET), Some("k".into()), &[Algorithm::HS256]).unwrap();
    let dbg = format!("{key:?}");
    assert!(
        !dbg.contains("test-only") && !dbg.contains(&b64(HMAC_SECRET)),
        "{dbg}"
    );
    let cfg = key_config(Algorithm::HS256);
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains(&b64(HMAC_SECRET)), "{dbg}");
}
