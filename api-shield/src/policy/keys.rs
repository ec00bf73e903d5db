//! JWT verification keys: loading them from PEM, base64 secrets and JWKs, and the algorithms
//! each may verify.
//!
//! Algorithm confusion is refused here: every key carries the algorithms it may verify, derived
//! from its own family (an RSA key never verifies HS256), and an issuer may not mix HMAC with
//! public-key algorithms. Weak keys (RSA under 2048 bits, short HMAC secrets) and private keys
//! given by mistake are refused.

use std::{fmt, str::FromStr};

use base64::Engine as _;
use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse},
};

use super::config::JwtKeyConfig;

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
    /// The key to verify with.
    pub(super) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }

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

/// Why a key or an algorithm list was refused. Holds no key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("list at least one algorithm")]
    NoAlgorithm,
    #[error(
        "{0:?} is not an accepted algorithm (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)"
    )]
    UnknownAlgorithm(String),
    #[error("HMAC and public-key algorithms may not be mixed on one issuer")]
    MixedAlgorithms,
    #[error(
        "a {family:?} key{} fits none of the issuer's algorithms {allowed:?}",
        declared.map(|d| format!(" declared for {d:?}")).unwrap_or_default()
    )]
    NoFittingAlgorithm {
        family: AlgorithmFamily,
        declared: Option<Algorithm>,
        allowed: Vec<Algorithm>,
    },
    #[error("invalid base64url")]
    Base64Url,
    #[error("this is a private key: configure the public key")]
    PrivateKey,
    #[error("bad RSA key: {0}")]
    BadRsaKey(String),
    #[error("RSA key of {0} bits: at least {MIN_RSA_BITS}")]
    WeakRsaKey(usize),
    #[error("EC key: only P-256 and P-384 are supported")]
    UnsupportedCurve,
    #[error("EdDSA key: only Ed25519 is supported")]
    UnsupportedEdCurve,
    #[error("not a PEM public key (RSA, EC P-256/P-384, Ed25519) or certificate")]
    NotPem,
    #[error("secret_base64 is not base64")]
    SecretNotBase64,
    #[error("HMAC secret of {0} bytes: at least {MIN_HMAC_BYTES}")]
    ShortSecret(usize),
    #[error("HMAC secret shorter than {MIN_HMAC_BYTES} bytes")]
    ShortJwkSecret,
    /// The key library or the JWK parser refused the key (their message).
    #[error("{0}")]
    Rejected(String),
    #[error("not a JWK: {0}")]
    NotJwk(String),
    #[error("key is not for signatures (use)")]
    NotForSignatures,
    #[error("key_ops lacks verify")]
    NoVerifyOperation,
    #[error("alg {0} is not a signature algorithm")]
    NotSignatureAlgorithm(String),
    #[error("EC key: coordinates of the wrong length")]
    CoordinateLength,
    #[error("OKP key: only Ed25519 (32-byte x) is supported")]
    UnsupportedOkp,
    #[error("symmetric (oct) keys are refused from a key set URL")]
    SymmetricFromUrl,
    #[error("unsupported key type")]
    UnsupportedKeyType,
}

impl From<jsonwebtoken::errors::Error> for KeyError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        Self::Rejected(e.to_string())
    }
}

/// Loads a key given in the configuration (`pem`, `secret_base64` or `jwk`); `None` when it
/// gives none (reported by the configuration check).
pub fn key_from_config(
    kc: &JwtKeyConfig,
    allowed: &[Algorithm],
) -> Option<Result<VerifyKey, KeyError>> {
    let kid = kc.kid.clone();
    Some(if let Some(pem) = &kc.pem {
        key_from_pem(pem, kid, allowed)
    } else if let Some(secret) = &kc.secret_base64 {
        key_from_secret(secret, kid, allowed)
    } else if let Some(text) = &kc.jwk {
        serde_json::from_str::<Jwk>(text)
            .map_err(|e| KeyError::NotJwk(e.to_string()))
            .and_then(|jwk| key_from_jwk(&jwk, kid, allowed, true))
    } else {
        return None;
    })
}

/// Parses algorithm names; refuses `none`, unknown names, and HMAC mixed with public-key ones.
pub fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, KeyError> {
    if names.is_empty() {
        return Err(KeyError::NoAlgorithm);
    }
    let mut out = Vec::new();
    for n in names {
        let alg = Algorithm::from_str(n).map_err(|_| KeyError::UnknownAlgorithm(n.clone()))?;
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    let hmac = out
        .iter()
        .filter(|a| a.family() == AlgorithmFamily::Hmac)
        .count();
    if hmac != 0 && hmac != out.len() {
        return Err(KeyError::MixedAlgorithms);
    }
    Ok(out)
}

/// The algorithms of `allowed` that a key of `family` (and, for EC, `curve`) can verify,
/// narrowed to `declared` if the key names its own algorithm.
fn algorithms_for(
    family: AlgorithmFamily,
    curve: Option<&EllipticCurve>,
    declared: Option<Algorithm>,
    allowed: &[Algorithm],
) -> Result<Vec<Algorithm>, KeyError> {
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
        return Err(KeyError::NoFittingAlgorithm {
            family,
            declared,
            allowed: allowed.to_vec(),
        });
    }
    Ok(algs)
}

/// Decodes base64url, padded or not.
pub(super) fn b64url(s: &str) -> Result<Vec<u8>, KeyError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| KeyError::Base64Url)
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
) -> Result<VerifyKey, KeyError> {
    if pem.contains("PRIVATE KEY") {
        return Err(KeyError::PrivateKey);
    }
    let bytes = pem.as_bytes();
    let (key, curve) = if let Ok(k) = DecodingKey::from_rsa_pem(bytes) {
        let jwk =
            Jwk::from_decoding_key(&k, None).map_err(|e| KeyError::BadRsaKey(e.to_string()))?;
        if let AlgorithmParameters::RSA(p) = &jwk.algorithm {
            let bits = rsa_bits(&b64url(&p.n)?);
            if bits < MIN_RSA_BITS {
                return Err(KeyError::WeakRsaKey(bits));
            }
        }
        (k, None)
    } else if let Ok(k) = DecodingKey::from_ec_pem(bytes) {
        let curve = match k.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => EllipticCurve::P256,
            Ok(97) => EllipticCurve::P384,
            _ => return Err(KeyError::UnsupportedCurve),
        };
        (k, Some(curve))
    } else if let Ok(k) = DecodingKey::from_ed_pem(bytes) {
        if k.try_get_as_bytes().map(<[u8]>::len) != Ok(32) {
            return Err(KeyError::UnsupportedEdCurve);
        }
        (k, None)
    } else {
        return Err(KeyError::NotPem);
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
) -> Result<VerifyKey, KeyError> {
    let s = secret_b64.trim().trim_end_matches('=');
    let secret = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
        .map_err(|_| KeyError::SecretNotBase64)?;
    if secret.len() < MIN_HMAC_BYTES {
        return Err(KeyError::ShortSecret(secret.len()));
    }
    let key = DecodingKey::from_secret(&secret)?;
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
) -> Result<VerifyKey, KeyError> {
    if let Some(u) = &jwk.common.public_key_use
        && *u != PublicKeyUse::Signature
    {
        return Err(KeyError::NotForSignatures);
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err(KeyError::NoVerifyOperation);
    }
    let declared = match jwk.common.key_algorithm {
        Some(ka) => Some(
            Algorithm::try_from(ka).map_err(|_| KeyError::NotSignatureAlgorithm(ka.to_string()))?,
        ),
        None => None,
    };
    let kid = kid.or_else(|| jwk.common.key_id.clone());
    let (key, curve) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let bits = rsa_bits(&b64url(&p.n)?);
            if bits < MIN_RSA_BITS {
                return Err(KeyError::WeakRsaKey(bits));
            }
            b64url(&p.e)?;
            (DecodingKey::from_rsa_components(&p.n, &p.e)?, None)
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let len = match p.curve {
                EllipticCurve::P256 => 32,
                EllipticCurve::P384 => 48,
                _ => return Err(KeyError::UnsupportedCurve),
            };
            if b64url(&p.x)?.len() != len || b64url(&p.y)?.len() != len {
                return Err(KeyError::CoordinateLength);
            }
            (
                DecodingKey::from_ec_components(&p.x, &p.y)?,
                Some(p.curve.clone()),
            )
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 || b64url(&p.x)?.len() != 32 {
                return Err(KeyError::UnsupportedOkp);
            }
            (DecodingKey::from_ed_components(&p.x)?, None)
        }
        AlgorithmParameters::OctetKey(p) => {
            if !allow_symmetric {
                return Err(KeyError::SymmetricFromUrl);
            }
            if b64url(&p.value)?.len() < MIN_HMAC_BYTES {
                return Err(KeyError::ShortJwkSecret);
            }
            (DecodingKey::from_jwk(jwk)?, None)
        }
        _ => return Err(KeyError::UnsupportedKeyType),
    };
    let algorithms = algorithms_for(key.family(), curve.as_ref(), declared, allowed)?;
    Ok(VerifyKey {
        kid,
        key,
        algorithms,
    })
}
