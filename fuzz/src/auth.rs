//! The HTTP authentication inputs of the policy engine (`api_shield::policy`): the
//! `Authorization` header (Basic and Bearer), the API-key header and query parameter, stored
//! API-key hashes, and JWKs and key sets.
//!
//! `jwt` and `api_key_hash` send their input to one engine built from
//! `fixtures/auth_policy.toml` (an API key, an argon2id Basic user, an HS256 issuer and an
//! RS256/ES256 issuer, one route accepting all three methods). Its only valid credentials are
//! the `valid-*` seeds of `seeds/jwt/`; an input let in with anything else is a forgery and
//! fails the target. `fixtures/make_auth_fixtures.py` writes the policy and the seeds.

use api_shield::policy::apikey::{hash_api_key, parse_hash};
use api_shield::policy::basic::parse_authorization;
use api_shield::policy::config::AuthMethod;
use api_shield::policy::jwks::{JwksCache, MAX_JWKS_KEYS, ParsedJwks, parse_jwks};
use api_shield::policy::keys::{VerifyKey, key_from_jwk, parse_algorithms};
use api_shield::policy::{
    AccessDecision, DenyReason, Engine, Identity, NoFetcher, Now, PolicyConfig, RequestMeta,
    Verdict,
};
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

// ---- the fixture engine ---------------------------------------------------------------------------

const POLICY: &str = include_str!("../fixtures/auth_policy.toml");

/// The credentials the fixture policy accepts, and nothing else.
const VALID_API_KEY: &str = include_str!("../seeds/jwt/valid-api-key");
const VALID_BASIC: &str = include_str!("../seeds/jwt/valid-basic");
const VALID_TOKENS: [&str; 5] = [
    include_str!("../seeds/jwt/valid-hs256"),
    include_str!("../seeds/jwt/valid-hs256-numeric-sub"),
    include_str!("../seeds/jwt/valid-rs256"),
    include_str!("../seeds/jwt/valid-es256"),
    include_str!("../seeds/jwt/valid-es256-nokid"),
];

/// 2026-01-01T00:00:00Z, the wall clock of every check: the fixture tokens are valid from ten
/// seconds before it to an hour after it, whenever the target runs.
const T0_SECS: u64 = 1_767_225_600;
/// A documentation address (RFC 5737) as the client.
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
const HOST: &str = "api.fuzz.example";
const PATH: &str = "/v1/items";
/// The route's `api_key_header` (the default) and `api_key_query`.
const API_KEY_HEADER: &str = "x-api-key";
const API_KEY_QUERY: &str = "api_key";
/// What the route answers to a refused credential: it has no limit and requires no scope, so
/// every denial is an authentication failure.
const UNAUTHORIZED: u16 = 401;
/// What a spent password budget answers.
const TOO_MANY_REQUESTS: u16 = 429;

struct Fixture {
    engine: Engine,
    /// One fixed moment: checks do not depend on when the target runs.
    now: Now,
    /// The identity each valid credential authenticates as.
    api_key_identity: Identity,
    basic_identity: Identity,
    token_identities: Vec<Identity>,
}

fn request() -> RequestMeta {
    RequestMeta::new(CLIENT, "GET", HOST, PATH)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `scheme` and credentials of an `Authorization` value, split as RFC 9110 §11.4 does (one
/// space after the scheme, surrounding whitespace ignored): the oracle's own reading, not the
/// engine's.
fn authorization(req: &RequestMeta) -> Option<(&str, &str)> {
    let (scheme, rest) = req.headers.get("authorization")?.trim().split_once(' ')?;
    Some((scheme, rest.trim()))
}

/// What a JWS signature covers: header and payload, as sent.
fn signing_input(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(message, _)| message)
}

impl Fixture {
    fn new() -> Self {
        let config = PolicyConfig::from_toml_str(POLICY)
            .unwrap_or_else(|e| panic!("fixtures/auth_policy.toml: {e}"));
        let engine = Engine::new(config, Arc::new(NoFetcher))
            .unwrap_or_else(|e| panic!("fixtures/auth_policy.toml: {e}"));
        let now = Now {
            mono: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_secs(T0_SECS),
        };
        // Each valid credential must get in, or the forgery check below would be vacuous.
        let admitted = |req: RequestMeta, what: &str| {
            let d = engine.check(&req, now);
            assert!(d.is_allowed(), "the fixture refuses its own {what}: {d:?}");
            d.identity
                .unwrap_or_else(|| panic!("{what}: allowed without an identity"))
        };
        let api_key_identity = admitted(
            request().header(API_KEY_HEADER, VALID_API_KEY),
            "valid-api-key",
        );
        let basic_identity = admitted(
            request().header("Authorization", VALID_BASIC),
            "valid-basic",
        );
        let token_identities = VALID_TOKENS
            .iter()
            .map(|t| admitted(request().header("Authorization", &bearer(t)), t))
            .collect();
        Self {
            engine,
            now,
            api_key_identity,
            basic_identity,
            token_identities,
        }
    }

    /// The identity of the valid credential of `method` that `req` carries, if it carries one.
    fn credential_in(&self, req: &RequestMeta, method: AuthMethod) -> Option<&Identity> {
        match method {
            AuthMethod::ApiKey => {
                let presented = match req.headers.get(API_KEY_HEADER) {
                    Some(v) => Some(v.trim().to_owned()),
                    None => req.query_param(API_KEY_QUERY),
                };
                (presented.as_deref() == Some(VALID_API_KEY)).then_some(&self.api_key_identity)
            }
            AuthMethod::Basic => {
                let (scheme, credentials) = authorization(req)?;
                let valid = VALID_BASIC.split_once(' ').map(|(_, c)| c);
                (scheme.eq_ignore_ascii_case("basic") && Some(credentials) == valid)
                    .then_some(&self.basic_identity)
            }
            AuthMethod::Jwt => {
                let (scheme, token) = authorization(req)?;
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return None;
                }
                // The same header and payload as a valid token (an ECDSA signature has a
                // second valid form, which changes nothing the token says).
                VALID_TOKENS
                    .iter()
                    .position(|t| signing_input(t) == signing_input(token))
                    .map(|i| &self.token_identities[i])
            }
        }
    }

    /// Checks `req` and judges the decision: a refusal is a 401 with a challenge; a request let
    /// in carries one of the valid credentials and gets its identity.
    fn check(&self, req: &RequestMeta) {
        let d: AccessDecision = self.engine.check(req, self.now);
        match &d.verdict {
            // Many password checks in a row spend the engine's password budget, which
            // protects the CPU from bad-password floods: a 429 naming it, with no identity.
            Verdict::Deny { status, .. }
                if matches!(d.reason, Some(DenyReason::PasswordBudgetSpent)) =>
            {
                assert_eq!(*status, TOO_MANY_REQUESTS, "{d:?}");
                assert!(d.identity.is_none(), "refused, yet identified: {d:?}");
            }
            Verdict::Deny {
                status,
                www_authenticate,
                ..
            } => {
                assert_eq!(*status, UNAUTHORIZED, "{d:?}");
                assert!(www_authenticate.is_some(), "a 401 without a challenge");
                assert!(d.identity.is_none(), "refused, yet identified: {d:?}");
                assert!(
                    matches!(
                        d.reason,
                        Some(
                            DenyReason::MissingCredentials | DenyReason::InvalidCredentials { .. }
                        )
                    ),
                    "{d:?}"
                );
            }
            Verdict::Allow => {
                let identity = d
                    .identity
                    .as_ref()
                    .unwrap_or_else(|| panic!("let in anonymously: {d:?}"));
                let expected = self.credential_in(req, identity.method).unwrap_or_else(|| {
                    panic!(
                        "forged credentials: {req:?} (authorization {:?}, key {:?}, \
                             query {:?}) let in as {identity:?}",
                        req.headers.get("authorization"),
                        req.headers.get(API_KEY_HEADER),
                        req.query,
                    )
                });
                assert_eq!(identity, expected, "a valid credential, the wrong identity");
                assert_eq!(
                    d.upstream_header("x-auth-identity"),
                    Some(identity.id.as_str()),
                    "{d:?}"
                );
            }
        }
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(Fixture::new)
}

// ---- targets ------------------------------------------------------------------------------------

/// `basic::parse_authorization`: an accepted value is a Basic one whose user name has no colon,
/// and the pair survives its own encoding; any bytes encoded as credentials read back as the
/// split at their first colon (when they are UTF-8 and have one).
pub fn http_basic(data: &[u8]) {
    let data = &data[..data.len().min(super::MAX_INPUT)];
    let encode = |bytes: &[u8]| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    };
    if let Some(value) = super::text(data)
        && let Some((user, pass)) = parse_authorization(value)
    {
        assert!(!user.contains(':'), "{value:?}: user {user:?} has a colon");
        let scheme = value.trim().split_once(' ').map(|(s, _)| s);
        assert!(
            scheme.is_some_and(|s| s.eq_ignore_ascii_case("basic")),
            "{value:?} accepted as Basic"
        );
        let again = encode(format!("{user}:{pass}").as_bytes());
        assert_eq!(
            parse_authorization(&again),
            Some((user, pass)),
            "{value:?} -> {again:?}"
        );
    }
    let expected = std::str::from_utf8(data)
        .ok()
        .and_then(|t| t.split_once(':'))
        .map(|(u, p)| (u.to_owned(), p.to_owned()));
    assert_eq!(parse_authorization(&encode(data)), expected, "{data:?}");
}

/// The bearer-token path of `Engine::check`, and the others with it: the input as the whole
/// `Authorization` value, as the API-key header, and as a `Bearer` token. Nothing but the
/// fixture's valid credentials gets in.
pub fn jwt(data: &[u8]) {
    let Some(input) = super::text(data) else {
        return;
    };
    let f = fixture();
    f.check(&request().header("Authorization", input));
    f.check(&request().header(API_KEY_HEADER, input));
    f.check(&request().header("Authorization", &bearer(input)));
}

/// The algorithms a key may be loaded for: every public-key one, and HMAC only.
fn algorithm_sets() -> &'static [Vec<Algorithm>; 2] {
    static SETS: OnceLock<[Vec<Algorithm>; 2]> = OnceLock::new();
    SETS.get_or_init(|| {
        let names = |n: &[&str]| {
            parse_algorithms(&n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap_or_else(|e| panic!("{n:?}: {e}"))
        };
        [
            names(&[
                "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
            ]),
            names(&["HS256", "HS384", "HS512"]),
        ]
    })
}

/// A loaded key may verify some of `allowed` and only those, all of one family, never HMAC
/// unless symmetric keys were allowed, and exactly the algorithm it declares, if it declares one.
fn check_key(key: &VerifyKey, allowed: &[Algorithm], symmetric: bool) {
    let algorithms = key.algorithms();
    assert!(!algorithms.is_empty(), "{key:?} verifies nothing");
    for alg in algorithms {
        assert!(
            allowed.contains(alg),
            "{key:?} allows {alg:?}, not in {allowed:?}"
        );
        assert_eq!(
            alg.family(),
            algorithms[0].family(),
            "{key:?} mixes families"
        );
    }
    if !symmetric {
        assert_ne!(
            algorithms[0].family(),
            AlgorithmFamily::Hmac,
            "{key:?}: a symmetric key where none may be"
        );
    }
}

/// The cache's timings (its defaults), which play no part: the target installs documents
/// itself and never asks the cache for a key.
const JWKS_CACHE_DURATION: Duration = Duration::from_secs(600);
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);

/// A key set read by `parse_jwks` holds sound keys only, no more than it may, and the cache
/// installs exactly those.
fn check_key_set(text: &str, allowed: &[Algorithm]) {
    let parsed = parse_jwks(text, allowed);
    if let Ok(ParsedJwks {
        by_kid,
        unnamed,
        skipped,
    }) = &parsed
    {
        let keys = by_kid.len() + unnamed.len();
        assert!(
            keys + skipped.len() <= MAX_JWKS_KEYS,
            "{keys} keys and {} skipped",
            skipped.len()
        );
        for (kid, key) in by_kid {
            assert_eq!(key.kid.as_deref(), Some(kid.as_str()));
            check_key(key, allowed, false);
        }
        for key in unnamed {
            assert!(key.kid.is_none());
            check_key(key, allowed, false);
        }
    }
    let cache = JwksCache::new(
        "https://idp.fuzz.example/jwks.json".to_owned(),
        JWKS_CACHE_DURATION,
        JWKS_MIN_REFRESH,
        allowed.to_vec(),
        Arc::new(NoFetcher),
    );
    let installed = cache.install(text, Instant::now());
    match (&parsed, installed) {
        (Ok(p), Ok(n)) => {
            assert_eq!(n, p.usable());
            assert_eq!(cache.key_count(), n);
        }
        (Ok(p), Err(e)) => assert_eq!(p.usable(), 0, "installed nothing ({e}) of {p:?}"),
        (Err(_), Err(_)) => {}
        (Err(e), Ok(n)) => panic!("parse_jwks refused ({e}) what the cache installed ({n} keys)"),
    }
}

/// `keys::key_from_jwk` on any JWK, for either set of algorithms, with and without symmetric
/// keys and a configured `kid`; each key it loads then verifies the fixture tokens (a signature
/// only ever verifies under an algorithm the key allows). The input also goes through
/// `jwks::parse_jwks` and `JwksCache::install` as a key set.
pub fn jwk(data: &[u8]) {
    let Some(text) = super::text(data) else {
        return;
    };
    if let Ok(jwk) = serde_json::from_str::<Jwk>(text) {
        let declared = jwk
            .common
            .key_algorithm
            .and_then(|a| Algorithm::try_from(a).ok());
        for allowed in algorithm_sets() {
            for symmetric in [false, true] {
                for kid in [None, Some("configured-kid")] {
                    let Ok(key) = key_from_jwk(&jwk, kid.map(str::to_owned), allowed, symmetric)
                    else {
                        continue;
                    };
                    check_key(&key, allowed, symmetric);
                    if let Some(alg) = declared {
                        assert_eq!(key.algorithms(), [alg], "declared {alg:?}: {key:?}");
                    }
                    let expected_kid = kid.map(str::to_owned).or_else(|| jwk.common.key_id.clone());
                    assert_eq!(key.kid, expected_kid);
                    for token in VALID_TOKENS {
                        if key.verify_jws(token) {
                            let alg = jsonwebtoken::decode_header(token)
                                .map(|h| h.alg)
                                .unwrap_or_else(|e| panic!("a fixture token: {e}"));
                            assert!(key.allows(alg), "{key:?} verified a {alg:?} token");
                        }
                    }
                }
            }
        }
    }
    for allowed in algorithm_sets() {
        check_key_set(text, allowed);
    }
}

/// A policy with one API key, whose hash each input replaces.
const HASH_POLICY: &str = r#"
[[api_keys]]
hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
identity = "hash-fuzz"

[[routes]]
name = "keys"
auth = ["api_key"]
"#;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `apikey::parse_hash` (what reads the `hash` of an `[[api_keys]]` entry): it accepts
/// `sha256:` and 64 hex digits, nothing else, and an engine takes exactly the hashes it
/// accepts; `hash_api_key` always writes one it accepts. Then the API-key path of
/// `Engine::check`: the input as the `x-api-key` header and as the `api_key` query parameter,
/// where nothing but the fixture's key gets in.
pub fn api_key_hash(data: &[u8]) {
    let Some(text) = super::text(data) else {
        return;
    };
    let parsed = parse_hash(text);
    if let Ok(digest) = &parsed {
        let digits = text.strip_prefix("sha256:");
        assert!(
            digits.is_some_and(|d| d.eq_ignore_ascii_case(&hex(digest))),
            "{text:?} read as {}",
            hex(digest)
        );
    }
    let stored = hash_api_key(text);
    let digest = parse_hash(&stored).unwrap_or_else(|e| panic!("{stored:?}: {e}"));
    assert_eq!(stored, format!("sha256:{}", hex(&digest)));

    static BASE: OnceLock<PolicyConfig> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        PolicyConfig::from_toml_str(HASH_POLICY).unwrap_or_else(|e| panic!("HASH_POLICY: {e}"))
    });
    let mut config = base.clone();
    config.api_keys[0].hash = text.to_owned();
    match Engine::new(config, Arc::new(NoFetcher)) {
        Ok(engine) => {
            assert!(parsed.is_ok(), "an engine took the hash {text:?}");
            // The stored hash is not a key.
            let d = engine.check(&request().header(API_KEY_HEADER, text), fixture().now);
            assert!(!d.is_allowed(), "the hash {text:?} let in as a key: {d:?}");
        }
        Err(e) => assert!(
            parsed.is_err(),
            "parse_hash takes {text:?}, the engine does not: {e}"
        ),
    }

    let f = fixture();
    f.check(&request().header(API_KEY_HEADER, text));
    f.check(&request().query(&format!("{API_KEY_QUERY}={text}")));
}
