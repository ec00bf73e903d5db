//! The policy configuration: identities, plans, JWT issuers, routes, limits and the detector.
//!
//! Every struct refuses unknown fields. [`PolicyConfig::validate`] (in [`super::check`])
//! checks references and values and names every problem it finds (not only the first); key
//! material (hashes, PEM, JWK) is checked by [`super::engine::Engine::new`], which reports
//! into the same list.

use std::{collections::BTreeMap, fmt, time::Duration};

mod abuse;

pub use abuse::{CountRule, DetectorConfig, OverQuotaRule, PasswordBudgetConfig};

use serde::Deserialize;

use super::time::CalendarWindow;

/// Longest identity, user name or key id accepted.
pub const MAX_NAME_LEN: usize = 256;
/// Most events a count rule may require (bounds the detector's memory per IP).
pub const MAX_RULE_COUNT: u32 = 10_000;

/// The whole policy: what the engine is built from.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Realm in `WWW-Authenticate` challenges.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// What happens to a request that matches no route.
    #[serde(default)]
    pub unmatched: Unmatched,
    /// API keys, stored as `sha256:<hex>` hashes.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// HTTP Basic users with argon2id or bcrypt PHC hashes.
    #[serde(default)]
    pub basic_users: Vec<BasicUserConfig>,
    /// Trusted JWT issuers.
    #[serde(default)]
    pub jwt_issuers: Vec<JwtIssuerConfig>,
    /// Plans by name: the limits an identity gets.
    #[serde(default)]
    pub plans: BTreeMap<String, PlanConfig>,
    /// Route policies; the longest matching `path_prefix` wins (a host match beats no host).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Limiter memory bounds.
    #[serde(default)]
    pub limiter: LimiterConfig,
    /// Rate-limit response headers.
    #[serde(default)]
    pub headers: HeaderConfig,
    /// Abuse detection per client IP.
    #[serde(default)]
    pub detector: DetectorConfig,
    /// Failed password checks allowed per source before Basic credentials are refused
    /// without hashing.
    #[serde(default)]
    pub password_budget: PasswordBudgetConfig,
}

fn default_realm() -> String {
    "api".to_owned()
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            realm: default_realm(),
            unmatched: Unmatched::default(),
            api_keys: Vec::new(),
            basic_users: Vec::new(),
            jwt_issuers: Vec::new(),
            plans: BTreeMap::new(),
            routes: Vec::new(),
            limiter: LimiterConfig::default(),
            headers: HeaderConfig::default(),
            detector: DetectorConfig::default(),
            password_budget: PasswordBudgetConfig::default(),
        }
    }
}

/// Fate of a request that matches no route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// 403.
    #[default]
    Deny,
    /// Allowed, anonymous, unlimited.
    Allow,
}

/// One API key. The key itself never appears in configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// `sha256:<64 hex digits>` of the key (`api_shield::policy::apikey::hash_api_key`).
    pub hash: String,
    /// The identity this key authenticates.
    pub identity: String,
    /// Plan name (else the route's `default_plan`).
    #[serde(default)]
    pub plan: Option<String>,
    /// Scopes granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Roles granted.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// One HTTP Basic user.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicUserConfig {
    /// User name (also the identity).
    pub username: String,
    /// PHC string: `$argon2id$...` or bcrypt `$2b$...`.
    pub password_hash: String,
    /// Plan name (else the route's `default_plan`).
    #[serde(default)]
    pub plan: Option<String>,
    /// Scopes granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Roles granted.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl fmt::Debug for BasicUserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicUserConfig")
            .field("username", &self.username)
            .field("password_hash", &"[redacted]")
            .field("plan", &self.plan)
            .field("scopes", &self.scopes)
            .field("roles", &self.roles)
            .finish()
    }
}

/// A trusted token issuer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerConfig {
    /// Exact `iss` value.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one. Required, not empty.
    pub audiences: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf` (at most 5 minutes).
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Accepted algorithms: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA.
    /// One issuer may not mix HMAC with public-key algorithms (algorithm confusion).
    pub algorithms: Vec<String>,
    /// Whether `exp` must be present.
    #[serde(default = "yes")]
    pub require_exp: bool,
    /// Claim naming the identity.
    #[serde(default = "default_identity_claim")]
    pub identity_claim: String,
    /// Claim with scopes: a space-separated string or an array of strings.
    #[serde(default = "default_scope_claim")]
    pub scope_claim: String,
    /// Claim with roles: a string or an array of strings.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Plan for this issuer's tokens.
    #[serde(default)]
    pub plan: Option<String>,
    /// Claim naming a plan; used when it names a configured plan, else `plan` applies.
    #[serde(default)]
    pub plan_claim: Option<String>,
    /// Static keys.
    #[serde(default)]
    pub keys: Vec<JwtKeyConfig>,
    /// Keys fetched from a JWKS URL.
    #[serde(default)]
    pub jwks: Option<JwksConfig>,
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
pub(super) fn yes() -> bool {
    true
}
fn default_identity_claim() -> String {
    "sub".to_owned()
}
fn default_scope_claim() -> String {
    "scope".to_owned()
}
fn default_roles_claim() -> String {
    "roles".to_owned()
}

/// One static verification key: exactly one of `pem`, `jwk`, `secret_base64`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// Key id to match the token's `kid` (a JWK's own `kid` is used when this is absent).
    #[serde(default)]
    pub kid: Option<String>,
    /// A public key or certificate in PEM (`PUBLIC KEY`, `RSA PUBLIC KEY`, `CERTIFICATE`).
    #[serde(default)]
    pub pem: Option<String>,
    /// A JWK as JSON text (`{"kty":"EC",...}`).
    #[serde(default)]
    pub jwk: Option<String>,
    /// An HMAC secret, base64 (standard or URL-safe alphabet). At least 32 bytes.
    #[serde(default)]
    pub secret_base64: Option<String>,
}

impl fmt::Debug for JwtKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeyConfig")
            .field("kid", &self.kid)
            .field("pem", &self.pem.as_ref().map(|_| "[pem]"))
            // A JWK may be an `oct` key: a secret.
            .field("jwk", &self.jwk.as_ref().map(|_| "[redacted]"))
            .field(
                "secret_base64",
                &self.secret_base64.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// A JWKS endpoint.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// `https://` URL of the key set (fetched by the transport's `JwksFetcher`).
    pub url: String,
    /// How long a fetched set is used before it is refreshed.
    #[serde(default = "default_cache_duration", with = "humantime_serde")]
    pub cache_duration: Duration,
    /// Minimum time between two fetches, whatever `kid`s arrive (the cooldown).
    #[serde(default = "default_min_refresh", with = "humantime_serde")]
    pub min_refresh_interval: Duration,
}

fn default_cache_duration() -> Duration {
    Duration::from_secs(600)
}
fn default_min_refresh() -> Duration {
    Duration::from_secs(30)
}

/// A plan: limits applied to every identity on it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    /// Token-bucket (GCRA) limits.
    #[serde(default)]
    pub rate: Vec<RateLimitConfig>,
    /// Long-window quotas.
    #[serde(default)]
    pub quota: Vec<QuotaConfig>,
}

/// A token-bucket limit: `rate` requests per `per`, bursts of up to `burst`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Policy name in `RateLimit-Policy` (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Requests per `per`.
    pub rate: u32,
    /// The period of `rate`.
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    /// Bucket size (default: `rate`).
    #[serde(default)]
    pub burst: Option<u32>,
    /// What one bucket is for: any combination of `identity`, `ip`, `route`.
    /// An anonymous request's `identity` is its client IP.
    #[serde(default = "default_key")]
    pub key: Vec<KeyPart>,
}

fn default_key() -> Vec<KeyPart> {
    vec![KeyPart::Identity]
}

/// A component of a limit's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPart {
    /// The authenticated identity (the client IP when anonymous).
    Identity,
    /// The client IP (IPv6 grouped by `limiter.ipv6_prefix`).
    Ip,
    /// The route's name.
    Route,
}

/// A long-window quota: `limit` requests per calendar `window` (UTC).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Policy name in `RateLimit-Policy`.
    pub name: String,
    /// Requests per window.
    pub limit: u64,
    /// `hour`, `day` or `month`.
    pub window: CalendarWindow,
    /// One counter per identity, or one for the whole plan.
    #[serde(default)]
    pub scope: QuotaScope,
}

/// Who shares a quota counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaScope {
    /// Each identity has its own counter.
    #[default]
    Identity,
    /// All identities of the plan share one counter.
    Plan,
}

/// An authentication method a route accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// API key in a header or query parameter.
    ApiKey,
    /// HTTP Basic.
    Basic,
    /// OAuth2 bearer JWT.
    Jwt,
}

impl AuthMethod {
    /// Config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Basic => "basic",
            Self::Jwt => "jwt",
        }
    }
}

/// Policy for one route.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name (used in limit keys and logs).
    pub name: String,
    /// Exact host, or `*.example.com` for any subdomain; absent matches any host.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix, matched on segment boundaries (`/v1` matches `/v1` and `/v1/x`, not `/v10`)
    /// against the normalised request path.
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// Match `path_prefix` ignoring ASCII case (for upstreams that serve `/Admin` as `/admin`).
    #[serde(default)]
    pub case_insensitive: bool,
    /// Methods this route covers (empty: all).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Accepted methods, tried in this order; empty means the route is public.
    #[serde(default)]
    pub auth: Vec<AuthMethod>,
    /// Scopes the identity must all have (403 otherwise).
    #[serde(default)]
    pub require_scopes: Vec<String>,
    /// Roles of which the identity must have at least one (403 otherwise).
    #[serde(default)]
    pub require_roles: Vec<String>,
    /// Plan for anonymous requests and identities without one.
    #[serde(default)]
    pub default_plan: Option<String>,
    /// Limits for every request of this route, on top of the plan's.
    #[serde(default)]
    pub rate: Vec<RateLimitConfig>,
    /// Count and report what would be denied (401, 403, 429), but let it through.
    #[serde(default)]
    pub dry_run: bool,
    /// Header carrying an API key.
    #[serde(default = "default_api_key_header")]
    pub api_key_header: String,
    /// Query parameter carrying an API key (off unless set: query strings end up in logs).
    #[serde(default)]
    pub api_key_query: Option<String>,
    /// Header that passes the identity upstream (any client-sent copy is removed).
    #[serde(default = "default_identity_header")]
    pub identity_header: String,
    /// Header that passes the plan upstream (any client-sent copy is removed).
    #[serde(default)]
    pub plan_header: Option<String>,
    /// Remove credentials (Authorization, the API-key header and query parameter) upstream.
    #[serde(default = "yes")]
    pub strip_credentials: bool,
}

fn default_prefix() -> String {
    "/".to_owned()
}
fn default_api_key_header() -> String {
    "x-api-key".to_owned()
}
pub(crate) fn default_identity_header() -> String {
    "x-auth-identity".to_owned()
}

/// What the limiter does when it tracks `max_tracked_keys` and none can be evicted safely.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// New keys share one overflow bucket per limit (same rate and burst): a flood of new keys
    /// gets one key's worth of service in total, and nobody gets a fresh bucket.
    #[default]
    Overflow,
    /// New keys are refused with 429 until a slot frees up.
    Deny,
}

/// Limiter memory bounds.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimiterConfig {
    /// Most (limit, key) pairs tracked at once.
    #[serde(default = "default_max_tracked_keys")]
    pub max_tracked_keys: usize,
    /// Behaviour at capacity.
    #[serde(default)]
    pub when_full: WhenFull,
    /// IPv6 clients are keyed by this prefix length (a host usually owns a /64).
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
}

fn default_max_tracked_keys() -> usize {
    100_000
}
pub(super) fn default_ipv6_prefix() -> u8 {
    64
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            max_tracked_keys: default_max_tracked_keys(),
            when_full: WhenFull::default(),
            ipv6_prefix: default_ipv6_prefix(),
        }
    }
}

/// Rate-limit response headers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderConfig {
    /// Also send `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`.
    #[serde(default)]
    pub legacy: bool,
    /// Send `RateLimit-Policy`/`RateLimit` on allowed responses too (always on 429).
    #[serde(default = "yes")]
    pub on_allow: bool,
    /// Upper bound of `Retry-After` (a monthly quota would otherwise say "come back in 30 days").
    #[serde(default = "default_max_retry_after", with = "humantime_serde")]
    pub max_retry_after: Duration,
}

fn default_max_retry_after() -> Duration {
    Duration::from_secs(3600)
}

impl Default for HeaderConfig {
    fn default() -> Self {
        Self {
            legacy: false,
            on_allow: true,
            max_retry_after: default_max_retry_after(),
        }
    }
}
