//! OAuth2 bearer JWTs: signature and claim checks, with keys loaded by [`super::keys`] (PEM,
//! inline JWK) or fetched by [`super::jwks`].
//!
//! Defences, each one tested:
//! - `alg: none` and unsigned tokens: `none` is not an algorithm `jsonwebtoken` can parse, and
//!   a token always needs a signature from a configured key.
//! - Algorithm confusion: every key carries the algorithms it may verify (see [`super::keys`]).
//!   The token's `alg` must be allowed by the issuer *and* by the key.
//! - Claims are checked here, against the caller's clock: `iss` exact, `aud` intersecting the
//!   configured audiences (required), `exp` (required by default) and `nbf` with leeway. Claims
//!   of the wrong JSON type are refused, not ignored.
//! - Bounded work: tokens over 8 KiB are refused before parsing, and at most 4 keys are tried.

use std::{collections::HashSet, fmt, str::FromStr, sync::Arc};

use jsonwebtoken::{Algorithm, Header, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use super::check::{Problems, is_token_text};
use super::config::{JwtIssuerConfig, MAX_NAME_LEN};
use super::identity::Grant;
use super::jwks::{JwksCache, JwksFetcher};
use super::keys::{VerifyKey, b64url, key_from_config, parse_algorithms};
use super::time::Now;

/// Longest token accepted.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Most keys tried for one token.
pub const MAX_CANDIDATE_KEYS: usize = 4;

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
                match key_from_config(kc, &algorithms) {
                    Some(Ok(key)) => keys.push(Arc::new(key)),
                    Some(Err(e)) => problems.add(format!("{at}.keys[{k}]"), e),
                    None => {} // reported by PolicyConfig::check
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
        let (issuer, header) = self.pick_issuer(token)?;
        let alg = header.alg;
        let candidates = issuer.candidates(header.kid.as_deref(), alg, now);
        if candidates.is_empty() {
            return Err(JwtError::UnknownKey);
        }
        let claims = decode_claims(token, alg, &candidates)?;
        issuer.check_claims(&claims, now)?;
        issuer.grant(&claims, plans)
    }

    /// The issuer a token names and its header, read before the signature is checked only to
    /// pick the issuer and key: nothing else is trusted until `decode` has verified it.
    fn pick_issuer(&self, token: &str) -> Result<(&Issuer, Header), JwtError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Malformed);
        }
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
        if !issuer.algorithms.contains(&header.alg) {
            return Err(JwtError::AlgorithmNotAllowed);
        }
        Ok((issuer, header))
    }
}

/// The claims of `token`, verified with the first of `candidates` (at most
/// [`MAX_CANDIDATE_KEYS`] are tried) whose signature matches.
fn decode_claims(
    token: &str,
    alg: Algorithm,
    candidates: &[Arc<VerifyKey>],
) -> Result<Map<String, Value>, JwtError> {
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    for key in candidates.iter().take(MAX_CANDIDATE_KEYS) {
        match jsonwebtoken::decode::<Map<String, Value>>(token, key.decoding_key(), &validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat => {}
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                    return Err(JwtError::AlgorithmNotAllowed);
                }
                _ => return Err(JwtError::Malformed),
            },
        }
    }
    Err(JwtError::BadSignature)
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
    /// The keys that may verify a token of `kid` and `alg`: the configured ones, else the key
    /// set's (which may refresh it).
    fn candidates(&self, kid: Option<&str>, alg: Algorithm, now: Now) -> Vec<Arc<VerifyKey>> {
        let configured: Vec<Arc<VerifyKey>> = self
            .keys
            .iter()
            .filter(|k| match kid {
                Some(kid) => k.kid.as_deref().is_none_or(|k| k == kid),
                None => true,
            })
            .filter(|k| k.allows(alg))
            .cloned()
            .collect();
        match &self.jwks {
            Some(jwks) if configured.is_empty() => jwks
                .keys_for(kid, now.mono)
                .into_iter()
                .filter(|k| k.allows(alg))
                .collect(),
            _ => configured,
        }
    }

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
        if identity.len() > MAX_NAME_LEN || !is_token_text(&identity) {
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
