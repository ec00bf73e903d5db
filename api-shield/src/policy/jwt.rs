//! OAuth2 bearer JWTs: key loading (PEM, inline JWK, JWKS), signature and claim checks.
//!
//! Defences, each one tested:
//! - `alg: none` and unsigned tokens: `none` is not an algorithm `jsonwebtoken` can parse, and
//!   a token always needs a signature from a configured key.
//! - Algorithm confusion: every key carries the algorithms it may verify, derived from its own
//!   family (an RSA key never verifies HS256), and an issuer may not mix HMAC with public-key
//!   algorithms. The token's `alg` must be allowed by the issuer *and* by the key.
//! - Claims are checked here, against the caller's clock: `iss` exact, `aud` intersecting the
//!   configured audiences (required), `exp` (required by default) and `nbf` with leeway. Claims
//!   of the wrong JSON type are refused, not ignored.
//! - Bounded work: tokens over 8 KiB are refused before parsing, and at most 4 keys are tried.

use std::{collections::HashSet, fmt, str::FromStr, sync::Arc};

use base64::Engine as _;
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse},
};
use serde_json::{Map, Value};

use super::config::{self, JwtIssuerConfig, Problems};
use super::identity::Grant;
use super::jwks::{JwksCache, JwksFetcher};
use super::time::Now;

/// Longest token accepted.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Most keys tried for one token.
pub const MAX_CANDIDATE_KEYS: usize = 4;
/// Smallest RSA modulus accepted (RFC 7518 §3.3).
pub const MIN_RSA_BITS: usize = 2048;
/// Shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash size; we ask 32 bytes).
pub const MIN_HMAC_BYTES: usize = 32;

/// A verification key with the algorithms it may verify.
#[derive(Clone)]
pub struct VerifyKey {
    /// Key id, matched against the token's `kid`.
    pub kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("family", &self.key.family())
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// Whether this key may verify `alg`.
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }

    /// The algorithms this key may verify.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// Verifies the signature of a JWS in compact form (any payload, JSON or not) with this key,
    /// if its header's `alg` is one this key may verify. Claims are not looked at.
    pub fn verify_jws(&self, compact: &str) -> bool {
        let Some((message, signature)) = compact.rsplit_once('.') else {
            return false;
        };
        let Ok(header) = jsonwebtoken::decode_header(compact) else {
            return false;
        };
        self.allows(header.alg)
            && !signature.is_empty()
            && jsonwebtoken::crypto::verify(signature, message.as_bytes(), &self.key, header.alg)
                .unwrap_or(false)
    }
}

/// Why a token was refused. Holds nothing from the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a well-formed JWS compact token, or a claim of the wrong type.
    #[error("malformed token")]
    Malformed,
    /// `alg` is not allowed for the issuer, or is `none`.
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// `iss` missing or not a configured issuer.
    #[error("unknown issuer")]
    WrongIssuer,
    /// No configured key fits the token's `kid` and `alg`.
    #[error("no key for this token")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed (beyond leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `exp` required but absent.
    #[error("token has no exp")]
    MissingExp,
    /// `aud` absent or naming none of the configured audiences.
    #[error("wrong audience")]
    WrongAudience,
    /// The identity claim is absent or unusable (empty, too long, control characters).
    #[error("bad identity claim")]
    BadIdentity,
}

/// Parses algorithm names; refuses `none`, unknown names, and HMAC mixed with public-key ones.
pub fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
    if names.is_empty() {
        return Err("list at least one algorithm".into());
    }
    let mut out = Vec::new();
    for n in names {
        let alg = Algorithm::from_str(n).map_err(|_| {
            format!("{n:?} is not an accepted algorithm (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)")
        })?;
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    let hmac = out
        .iter()
        .filter(|a| a.family() == jsonwebtoken::AlgorithmFamily::Hmac)
        .count();
    if hmac != 0 && hmac != out.len() {
        return Err("HMAC and public-key algorithms may not be mixed on one issuer".into());
    }
    Ok(out)
}

/// The algorithms of `allowed` that a key of `family` (and, for EC, `curve`) can verify,
/// narrowed to `declared` if the key names its own algorithm.
fn algorithms_for(
    family: jsonwebtoken::AlgorithmFamily,
    curve: Option<&EllipticCurve>,
    declared: Option<Algorithm>,
    allowed: &[Algorithm],
) -> Result<Vec<Algorithm>, String> {
    let algs: Vec<Algorithm> = allowed
        .iter()
        .copied()
        .filter(|a| a.family() == family)
        .filter(|a| match curve {
            Some(EllipticCurve::P256) => *a == Algorithm::ES256,
            Some(EllipticCurve::P384) => *a == Algorithm::ES384,
            _ => true,
        })
        .filter(|a| declared.is_none_or(|d| d == *a))
        .collect();
    if algs.is_empty() {
        return Err(format!(
            "a {family:?} key{} fits none of the issuer's algorithms {allowed:?}",
            declared
                .map(|d| format!(" declared for {d:?}"))
                .unwrap_or_default()
        ));
    }
    Ok(algs)
}

fn b64url(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| "invalid base64url".to_owned())
}

fn rsa_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|b| *b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

/// Loads a public key or certificate from PEM.
pub fn key_from_pem(
    pem: &str,
    kid: Option<String>,
    allowed: &[Algorithm],
) -> Result<VerifyKey, String> {
    if pem.contains("PRIVATE KEY") {
        return Err("this is a private key: configure the public key".into());
    }
    let bytes = pem.as_bytes();
    let (key, curve) = if let Ok(k) = DecodingKey::from_rsa_pem(bytes) {
        let jwk = Jwk::from_decoding_key(&k, None).map_err(|e| format!("bad RSA key: {e}"))?;
        if let AlgorithmParameters::RSA(p) = &jwk.algorithm {
            let bits = rsa_bits(&b64url(&p.n)?);
            if bits < MIN_RSA_BITS {
                return Err(format!("RSA key of {bits} bits: at least {MIN_RSA_BITS}"));
            }
        }
        (k, None)
    } else if let Ok(k) = DecodingKey::from_ec_pem(bytes) {
        let curve = match k.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => EllipticCurve::P256,
            Ok(97) => EllipticCurve::P384,
            _ => return Err("EC key: only P-256 and P-384 are supported".into()),
        };
        (k, Some(curve))
    } else if let Ok(k) = DecodingKey::from_ed_pem(bytes) {
        if k.try_get_as_bytes().map(<[u8]>::len) != Ok(32) {
            return Err("EdDSA key: only Ed25519 is supported".into());
        }
        (k, None)
    } else {
        return Err("not a PEM public key (RSA, EC P-256/P-384, Ed25519) or certificate".into());
    };
    let algorithms = algorithms_for(key.family(), curve.as_ref(), None, allowed)?;
    Ok(VerifyKey {
        kid,
        key,
        algorithms,
    })
}

/// Loads an HMAC secret given in base64 (standard or URL-safe alphabet).
pub fn key_from_secret(
    secret_b64: &str,
    kid: Option<String>,
    allowed: &[Algorithm],
) -> Result<VerifyKey, String> {
    let s = secret_b64.trim().trim_end_matches('=');
    let secret = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
        .map_err(|_| "secret_base64 is not base64".to_owned())?;
    if secret.len() < MIN_HMAC_BYTES {
        return Err(format!(
            "HMAC secret of {} bytes: at least {MIN_HMAC_BYTES}",
            secret.len()
        ));
    }
    let key = DecodingKey::from_secret(&secret).map_err(|e| e.to_string())?;
    let algorithms = algorithms_for(key.family(), None, None, allowed)?;
    Ok(VerifyKey {
        kid,
        key,
        algorithms,
    })
}

/// Loads a JWK. `allow_symmetric` is false for keys from a JWKS URL: a published key set must
/// never carry an HMAC secret, and accepting one would let anyone who can read it mint tokens.
pub fn key_from_jwk(
    jwk: &Jwk,
    kid: Option<String>,
    allowed: &[Algorithm],
    allow_symmetric: bool,
) -> Result<VerifyKey, String> {
    if let Some(u) = &jwk.common.public_key_use
        && *u != PublicKeyUse::Signature
    {
        return Err("key is not for signatures (use)".into());
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("key_ops lacks verify".into());
    }
    let declared = match jwk.common.key_algorithm {
        Some(ka) => Some(
            Algorithm::try_from(ka)
                .map_err(|_| format!("alg {ka} is not a signature algorithm"))?,
        ),
        None => None,
    };
    let kid = kid.or_else(|| jwk.common.key_id.clone());
    let (key, curve) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let bits = rsa_bits(&b64url(&p.n)?);
            if bits < MIN_RSA_BITS {
                return Err(format!("RSA key of {bits} bits: at least {MIN_RSA_BITS}"));
            }
            b64url(&p.e)?;
            (
                DecodingKey::from_rsa_components(&p.n, &p.e).map_err(|e| e.to_string())?,
                None,
            )
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let len = match p.curve {
                EllipticCurve::P256 => 32,
                EllipticCurve::P384 => 48,
                _ => return Err("EC key: only P-256 and P-384 are supported".into()),
            };
            if b64url(&p.x)?.len() != len || b64url(&p.y)?.len() != len {
                return Err("EC key: coordinates of the wrong length".into());
            }
            (
                DecodingKey::from_ec_components(&p.x, &p.y).map_err(|e| e.to_string())?,
                Some(p.curve.clone()),
            )
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 || b64url(&p.x)?.len() != 32 {
                return Err("OKP key: only Ed25519 (32-byte x) is supported".into());
            }
            (
                DecodingKey::from_ed_components(&p.x).map_err(|e| e.to_string())?,
                None,
            )
        }
        AlgorithmParameters::OctetKey(p) => {
            if !allow_symmetric {
                return Err("symmetric (oct) keys are refused from a key set URL".into());
            }
            if b64url(&p.value)?.len() < MIN_HMAC_BYTES {
                return Err(format!("HMAC secret shorter than {MIN_HMAC_BYTES} bytes"));
            }
            (DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?, None)
        }
        _ => return Err("unsupported key type".into()),
    };
    let algorithms = algorithms_for(key.family(), curve.as_ref(), declared, allowed)?;
    Ok(VerifyKey {
        kid,
        key,
        algorithms,
    })
}

/// A verified token's grant and issuer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtGrant {
    /// Identity, plan, scopes, roles.
    pub grant: Grant,
    /// The issuer that signed it.
    pub issuer: String,
    /// The plan claim's value when it named a configured plan.
    pub claimed_plan: Option<String>,
}

struct Issuer {
    issuer: String,
    audiences: HashSet<String>,
    leeway: f64,
    algorithms: Vec<Algorithm>,
    require_exp: bool,
    identity_claim: String,
    scope_claim: String,
    roles_claim: String,
    plan: Option<String>,
    plan_claim: Option<String>,
    keys: Vec<Arc<VerifyKey>>,
    jwks: Option<Arc<JwksCache>>,
}

/// All configured issuers.
#[derive(Default)]
pub struct JwtVerifier {
    issuers: Vec<Issuer>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.issuers.iter().map(|i| &i.issuer))
            .finish()
    }
}

impl JwtVerifier {
    /// Builds the issuers. `existing` lends JWKS caches of a previous engine whose URL and
    /// settings are unchanged, so a reload neither refetches nor loses the cooldown.
    pub(crate) fn build(
        cfgs: &[JwtIssuerConfig],
        fetcher: &Arc<dyn JwksFetcher>,
        existing: &[Arc<JwksCache>],
        problems: &mut Problems,
    ) -> Self {
        let mut issuers = Vec::new();
        for (i, c) in cfgs.iter().enumerate() {
            let at = format!("jwt_issuers[{i}]");
            let algorithms = match parse_algorithms(&c.algorithms) {
                Ok(a) => a,
                Err(e) => {
                    problems.add(format!("{at}.algorithms"), e);
                    continue;
                }
            };
            let mut keys = Vec::new();
            for (k, kc) in c.keys.iter().enumerate() {
                let loaded = if let Some(pem) = &kc.pem {
                    key_from_pem(pem, kc.kid.clone(), &algorithms)
                } else if let Some(secret) = &kc.secret_base64 {
                    key_from_secret(secret, kc.kid.clone(), &algorithms)
                } else if let Some(text) = &kc.jwk {
                    serde_json::from_str::<Jwk>(text)
                        .map_err(|e| format!("not a JWK: {e}"))
                        .and_then(|jwk| key_from_jwk(&jwk, kc.kid.clone(), &algorithms, true))
                } else {
                    continue; // reported by PolicyConfig::check
                };
                match loaded {
                    Ok(key) => keys.push(Arc::new(key)),
                    Err(e) => problems.add(format!("{at}.keys[{k}]"), e),
                }
            }
            let jwks = c.jwks.as_ref().map(|j| {
                existing
                    .iter()
                    .find(|e| {
                        e.same_source(
                            &j.url,
                            j.cache_duration,
                            j.min_refresh_interval,
                            &algorithms,
                        )
                    })
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(JwksCache::new(
                            j.url.clone(),
                            j.cache_duration,
                            j.min_refresh_interval,
                            algorithms.clone(),
                            fetcher.clone(),
                        ))
                    })
            });
            issuers.push(Issuer {
                issuer: c.issuer.clone(),
                audiences: c.audiences.iter().cloned().collect(),
                leeway: c.leeway.as_secs_f64(),
                algorithms,
                require_exp: c.require_exp,
                identity_claim: c.identity_claim.clone(),
                scope_claim: c.scope_claim.clone(),
                roles_claim: c.roles_claim.clone(),
                plan: c.plan.clone(),
                plan_claim: c.plan_claim.clone(),
                keys,
                jwks,
            });
        }
        Self { issuers }
    }

    /// The JWKS caches, for background refresh and for reuse across a reload.
    pub fn jwks_caches(&self) -> Vec<Arc<JwksCache>> {
        self.issuers.iter().filter_map(|i| i.jwks.clone()).collect()
    }

    /// Verifies a bearer token at `now`. `plans` says whether a plan name is configured.
    pub fn verify(
        &self,
        token: &str,
        now: Now,
        plans: &dyn Fn(&str) -> bool,
    ) -> Result<JwtGrant, JwtError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Malformed);
        }
        // Header and issuer are read before the signature is checked, only to pick the issuer
        // and key; nothing else is trusted until `decode` has verified the signature.
        let mut parts = token.split('.');
        let (Some(head), Some(_), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let head: Value = b64url(head)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or(JwtError::Malformed)?;
        match head.get("alg").and_then(Value::as_str) {
            Some(a) if Algorithm::from_str(a).is_ok() => {}
            // `none`, `None`, absent, or anything else we do not verify.
            _ => return Err(JwtError::AlgorithmNotAllowed),
        }
        if sig.is_empty() {
            return Err(JwtError::Malformed); // an unsigned token
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        let unverified: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| JwtError::Malformed)?;
        let iss = match unverified.get("iss") {
            Some(Value::String(s)) => s.as_str(),
            _ => return Err(JwtError::WrongIssuer),
        };
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or(JwtError::WrongIssuer)?;
        let alg = header.alg;
        if !issuer.algorithms.contains(&alg) {
            return Err(JwtError::AlgorithmNotAllowed);
        }
        let kid = header.kid.as_deref();
        let mut candidates: Vec<Arc<VerifyKey>> = issuer
            .keys
            .iter()
            .filter(|k| match kid {
                Some(kid) => k.kid.as_deref().is_none_or(|k| k == kid),
                None => true,
            })
            .filter(|k| k.allows(alg))
            .cloned()
            .collect();
        if candidates.is_empty()
            && let Some(jwks) = &issuer.jwks
        {
            candidates = jwks
                .keys_for(kid, now.mono)
                .into_iter()
                .filter(|k| k.allows(alg))
                .collect();
        }
        if candidates.is_empty() {
            return Err(JwtError::UnknownKey);
        }
        let mut validation = Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let mut claims = None;
        for key in candidates.iter().take(MAX_CANDIDATE_KEYS) {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => match e.kind() {
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidEddsaKey
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::InvalidKeyFormat => continue,
                    ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                        return Err(JwtError::AlgorithmNotAllowed);
                    }
                    _ => return Err(JwtError::Malformed),
                },
            }
        }
        let claims = claims.ok_or(JwtError::BadSignature)?;
        issuer.check_claims(&claims, now)?;
        issuer.grant(&claims, plans)
    }
}

fn numeric(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or(JwtError::Malformed),
    }
}

fn strings(v: Option<&Value>, split_spaces: bool) -> Result<Vec<String>, JwtError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::String(s)) if split_spaces => {
            Ok(s.split_ascii_whitespace().map(str::to_owned).collect())
        }
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or(JwtError::Malformed))
            .collect(),
        Some(_) => Err(JwtError::Malformed),
    }
}

impl Issuer {
    fn check_claims(&self, claims: &Map<String, Value>, now: Now) -> Result<(), JwtError> {
        let t = now
            .wall
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        match numeric(claims, "exp")? {
            Some(exp) if t >= exp + self.leeway => return Err(JwtError::Expired),
            None if self.require_exp => return Err(JwtError::MissingExp),
            _ => {}
        }
        if let Some(nbf) = numeric(claims, "nbf")?
            && t < nbf - self.leeway
        {
            return Err(JwtError::NotYetValid);
        }
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(JwtError::WrongIssuer);
        }
        let aud = match claims.get("aud") {
            None => return Err(JwtError::WrongAudience),
            Some(v) => strings(Some(v), false)?,
        };
        if !aud.iter().any(|a| self.audiences.contains(a)) {
            return Err(JwtError::WrongAudience);
        }
        Ok(())
    }

    fn grant(
        &self,
        claims: &Map<String, Value>,
        plans: &dyn Fn(&str) -> bool,
    ) -> Result<JwtGrant, JwtError> {
        let identity = match claims.get(&self.identity_claim) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(JwtError::BadIdentity),
        };
        if identity.len() > config::MAX_NAME_LEN || !config::is_token_text(&identity) {
            return Err(JwtError::BadIdentity);
        }
        let scopes = strings(claims.get(&self.scope_claim), true)?;
        let roles = strings(claims.get(&self.roles_claim), false)?;
        let claimed_plan = self
            .plan_claim
            .as_ref()
            .and_then(|c| claims.get(c))
            .and_then(Value::as_str)
            .filter(|p| plans(p))
            .map(str::to_owned);
        Ok(JwtGrant {
            grant: Grant {
                identity,
                plan: claimed_plan.clone().or_else(|| self.plan.clone()),
                scopes,
                roles,
            },
            issuer: self.issuer.clone(),
            claimed_plan,
        })
    }
}
