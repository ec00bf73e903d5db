//! The policy configuration: identities, plans, JWT issuers, routes, limits and the detector.
//!
//! Every struct refuses unknown fields. [`PolicyConfig::validate`] checks references and values
//! and names every problem it finds (not only the first); key material (hashes, PEM, JWK) is
//! checked by [`super::engine::Engine::new`], which reports into the same list.

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::Deserialize;

use super::time::CalendarWindow;

/// Every problem found in a policy configuration, each with the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy configuration:\n  {}", .problems.join("\n  "))]
pub struct InvalidPolicy {
    /// `path: message`, one per problem.
    pub problems: Vec<String>,
}

/// Collects problems while a configuration is checked and built.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<String>);

impl Problems {
    pub(crate) fn add(&mut self, path: impl fmt::Display, message: impl fmt::Display) {
        self.0.push(format!("{path}: {message}"));
    }

    pub(crate) fn into_result(self) -> Result<(), InvalidPolicy> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(InvalidPolicy { problems: self.0 })
        }
    }
}

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
fn yes() -> bool {
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
fn default_ipv6_prefix() -> u8 {
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

/// Abuse detection per client prefix; a firing rule yields an escalation (a kernel block of
/// that prefix).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// Whether the detector runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Report escalations marked as dry-run (the daemon logs instead of blocking).
    #[serde(default)]
    pub dry_run: bool,
    /// Most client prefixes tracked at once.
    #[serde(default = "default_max_tracked_ips")]
    pub max_tracked_ips: usize,
    /// IPv4 clients are counted, and blocked, per prefix of this length (1..=32), as the
    /// kernel limiter's `[limits] v4_prefix`.
    #[serde(default = "default_detector_v4_prefix")]
    pub v4_prefix: u8,
    /// IPv6 clients are counted, and blocked, per prefix of this length (1..=128): a host
    /// usually owns a whole /64, as the kernel limiter's `[limits] v6_prefix`.
    #[serde(default = "default_ipv6_prefix")]
    pub v6_prefix: u8,
    /// Invalid credentials presented (401s, from the engine or the upstream).
    #[serde(default = "default_auth_failures")]
    pub auth_failures: CountRule,
    /// 429s (from the engine or the upstream).
    #[serde(default = "default_too_many")]
    pub too_many_requests: CountRule,
    /// Distinct paths answered 404 by the upstream (reconnaissance).
    #[serde(default = "default_not_found")]
    pub not_found_paths: CountRule,
    /// Requests rejected far beyond a limit.
    #[serde(default)]
    pub over_quota: OverQuotaRule,
}

fn default_max_tracked_ips() -> usize {
    65_536
}
fn default_detector_v4_prefix() -> u8 {
    32
}
fn default_auth_failures() -> CountRule {
    CountRule::new(20, 60, 3600)
}
fn default_too_many() -> CountRule {
    CountRule::new(200, 60, 600)
}
fn default_not_found() -> CountRule {
    CountRule::new(30, 60, 3600)
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dry_run: false,
            max_tracked_ips: default_max_tracked_ips(),
            v4_prefix: default_detector_v4_prefix(),
            v6_prefix: default_ipv6_prefix(),
            auth_failures: default_auth_failures(),
            too_many_requests: default_too_many(),
            not_found_paths: default_not_found(),
            over_quota: OverQuotaRule::default(),
        }
    }
}

/// "`count` events within `within`" fires a block of `ttl`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountRule {
    /// Whether this rule runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Events that fire the rule (1..=10000).
    pub count: u32,
    /// The sliding window.
    #[serde(with = "humantime_serde")]
    pub within: Duration,
    /// Block duration.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl CountRule {
    /// An enabled rule.
    pub fn new(count: u32, within_secs: u64, ttl_secs: u64) -> Self {
        Self {
            enabled: true,
            count,
            within: Duration::from_secs(within_secs),
            ttl: Duration::from_secs(ttl_secs),
        }
    }
}

/// Fires when the requests rejected by one limit within that limit's window reach
/// `factor` times its quota (`q`): a client sending `(1 + factor)` times its allowance.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverQuotaRule {
    /// Whether this rule runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Rejections per `q` of the rejecting limit (> 0).
    #[serde(default = "default_factor")]
    pub factor: f64,
    /// Block duration.
    #[serde(default = "default_over_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

fn default_factor() -> f64 {
    10.0
}
fn default_over_ttl() -> Duration {
    Duration::from_secs(3600)
}

impl Default for OverQuotaRule {
    fn default() -> Self {
        Self {
            enabled: true,
            factor: default_factor(),
            ttl: default_over_ttl(),
        }
    }
}

/// Failed password checks per source (IPv4 address, IPv6 prefix of `limiter.ipv6_prefix`)
/// before its Basic credentials are refused with 429 without hashing, refilling steadily.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordBudgetConfig {
    /// Failures per `per` (0 turns the budget off).
    #[serde(default = "default_budget_failures")]
    pub failures: u32,
    /// The window the budget refills over.
    #[serde(default = "default_budget_per", with = "humantime_serde")]
    pub per: Duration,
    /// Most sources tracked at once.
    #[serde(default = "default_budget_sources")]
    pub max_tracked_sources: usize,
}

/// As many as the default `detector.auth_failures` rule counts before it escalates.
fn default_budget_failures() -> u32 {
    20
}
fn default_budget_per() -> Duration {
    Duration::from_secs(60)
}
fn default_budget_sources() -> usize {
    65_536
}

impl Default for PasswordBudgetConfig {
    fn default() -> Self {
        Self {
            failures: default_budget_failures(),
            per: default_budget_per(),
            max_tracked_sources: default_budget_sources(),
        }
    }
}

/// Longest identity, user name or key id accepted.
pub const MAX_NAME_LEN: usize = 256;
/// Most events a count rule may require (bounds the detector's memory per IP).
pub const MAX_RULE_COUNT: u32 = 10_000;

impl PolicyConfig {
    /// Parses TOML.
    pub fn from_toml_str(text: &str) -> Result<Self, InvalidPolicy> {
        toml::from_str(text).map_err(|e| InvalidPolicy {
            problems: vec![e.to_string()],
        })
    }

    /// Structural checks: names, references, ranges. Returns every problem found.
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        let mut p = Problems::default();
        self.check(&mut p);
        p.into_result()
    }

    pub(crate) fn check(&self, p: &mut Problems) {
        if !is_token_text(&self.realm) || self.realm.contains('"') {
            p.add("realm", "must be printable ASCII without quotes");
        }
        let plan_ref = |p: &mut Problems, path: String, plan: &Option<String>| {
            if let Some(plan) = plan
                && !self.plans.contains_key(plan)
            {
                p.add(path, format_args!("unknown plan {plan:?}"));
            }
        };
        for (i, k) in self.api_keys.iter().enumerate() {
            check_identity(p, format!("api_keys[{i}].identity"), &k.identity);
            plan_ref(p, format!("api_keys[{i}].plan"), &k.plan);
            check_labels(p, &format!("api_keys[{i}]"), &k.scopes, &k.roles);
        }
        let mut users = std::collections::HashSet::new();
        for (i, u) in self.basic_users.iter().enumerate() {
            check_identity(p, format!("basic_users[{i}].username"), &u.username);
            if u.username.contains(':') {
                p.add(format!("basic_users[{i}].username"), "may not contain ':'");
            }
            if !users.insert(u.username.as_str()) {
                p.add(
                    format!("basic_users[{i}].username"),
                    format_args!("duplicate user {:?}", u.username),
                );
            }
            plan_ref(p, format!("basic_users[{i}].plan"), &u.plan);
            check_labels(p, &format!("basic_users[{i}]"), &u.scopes, &u.roles);
        }
        let mut issuers = std::collections::HashSet::new();
        for (i, iss) in self.jwt_issuers.iter().enumerate() {
            let at = format!("jwt_issuers[{i}]");
            if iss.issuer.is_empty() {
                p.add(format!("{at}.issuer"), "must not be empty");
            }
            if !issuers.insert(iss.issuer.as_str()) {
                p.add(
                    format!("{at}.issuer"),
                    format_args!("duplicate issuer {:?}", iss.issuer),
                );
            }
            if iss.audiences.is_empty() || iss.audiences.iter().any(String::is_empty) {
                p.add(
                    format!("{at}.audiences"),
                    "list at least one non-empty audience",
                );
            }
            if iss.leeway > Duration::from_secs(300) {
                p.add(format!("{at}.leeway"), "at most 5m");
            }
            if iss.keys.is_empty() && iss.jwks.is_none() {
                p.add(&at, "give `keys`, `jwks`, or both");
            }
            plan_ref(p, format!("{at}.plan"), &iss.plan);
            if let Some(jwks) = &iss.jwks {
                if !(jwks.url.starts_with("https://") || jwks.url.starts_with("http://")) {
                    p.add(format!("{at}.jwks.url"), "must be an http(s) URL");
                }
                if jwks.min_refresh_interval.is_zero() {
                    p.add(
                        format!("{at}.jwks.min_refresh_interval"),
                        "must be positive",
                    );
                }
                if jwks.cache_duration < jwks.min_refresh_interval {
                    p.add(
                        format!("{at}.jwks.cache_duration"),
                        "must not be shorter than min_refresh_interval",
                    );
                }
            }
            for (k, key) in iss.keys.iter().enumerate() {
                let given = [
                    key.pem.is_some(),
                    key.jwk.is_some(),
                    key.secret_base64.is_some(),
                ]
                .iter()
                .filter(|b| **b)
                .count();
                if given != 1 {
                    p.add(
                        format!("{at}.keys[{k}]"),
                        "give exactly one of `pem`, `jwk`, `secret_base64`",
                    );
                }
            }
            // Algorithm names are checked in jwt.rs, where they are parsed.
        }
        for (name, plan) in &self.plans {
            if !is_policy_name(name) {
                p.add(
                    format!("plans.{name}"),
                    "plan names: letters, digits, '-', '_', '.'",
                );
            }
            let mut names = std::collections::HashSet::new();
            for (i, r) in plan.rate.iter().enumerate() {
                check_rate(p, &format!("plans.{name}.rate[{i}]"), r);
                if !names.insert(r.name.as_str()) {
                    p.add(
                        format!("plans.{name}.rate[{i}].name"),
                        "duplicate limit name",
                    );
                }
            }
            for (i, q) in plan.quota.iter().enumerate() {
                let at = format!("plans.{name}.quota[{i}]");
                if !is_policy_name(&q.name) {
                    p.add(
                        format!("{at}.name"),
                        "letters, digits, '-', '_', '.' (1..=64)",
                    );
                }
                if q.limit == 0 {
                    p.add(format!("{at}.limit"), "must be positive");
                }
                if !names.insert(q.name.as_str()) {
                    p.add(format!("{at}.name"), "duplicate limit name");
                }
            }
        }
        let mut routes = std::collections::HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            if !is_policy_name(&r.name) {
                p.add(
                    format!("{at}.name"),
                    "letters, digits, '-', '_', '.' (1..=64)",
                );
            }
            if !routes.insert(r.name.as_str()) {
                p.add(
                    format!("{at}.name"),
                    format_args!("duplicate route {:?}", r.name),
                );
            }
            match super::path::normalize_path(&r.path_prefix) {
                Err(e) => p.add(format!("{at}.path_prefix"), e),
                Ok(n) if n.trim_end_matches('/') != r.path_prefix.trim_end_matches('/') => p.add(
                    format!("{at}.path_prefix"),
                    format_args!("not in normal form: write {n:?}"),
                ),
                Ok(_) => {}
            }
            if let Some(host) = &r.host
                && (host.is_empty() || host.contains(['/', ' ']))
            {
                p.add(format!("{at}.host"), "a host name or *.domain");
            }
            for m in &r.methods {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                    p.add(
                        format!("{at}.methods"),
                        format_args!("{m:?}: upper-case method names"),
                    );
                }
            }
            let mut seen = std::collections::HashSet::new();
            for m in &r.auth {
                if !seen.insert(*m) {
                    p.add(
                        format!("{at}.auth"),
                        format_args!("{} listed twice", m.as_str()),
                    );
                }
                let configured = match m {
                    AuthMethod::ApiKey => !self.api_keys.is_empty(),
                    AuthMethod::Basic => !self.basic_users.is_empty(),
                    AuthMethod::Jwt => !self.jwt_issuers.is_empty(),
                };
                if !configured {
                    p.add(
                        format!("{at}.auth"),
                        format_args!("{} accepted but none is configured", m.as_str()),
                    );
                }
            }
            if r.auth.is_empty() && !(r.require_scopes.is_empty() && r.require_roles.is_empty()) {
                p.add(
                    &at,
                    "require_scopes/require_roles need at least one auth method",
                );
            }
            plan_ref(p, format!("{at}.default_plan"), &r.default_plan);
            let mut names = std::collections::HashSet::new();
            for (k, rate) in r.rate.iter().enumerate() {
                check_rate(p, &format!("{at}.rate[{k}]"), rate);
                if !names.insert(rate.name.as_str()) {
                    p.add(format!("{at}.rate[{k}].name"), "duplicate limit name");
                }
            }
            for (field, name) in [
                ("api_key_header", Some(&r.api_key_header)),
                ("identity_header", Some(&r.identity_header)),
                ("plan_header", r.plan_header.as_ref()),
            ] {
                if let Some(name) = name
                    && !is_header_name(name)
                {
                    p.add(
                        format!("{at}.{field}"),
                        format_args!("{name:?} is not a header name"),
                    );
                }
            }
            if r.identity_header.eq_ignore_ascii_case("authorization")
                || r.identity_header.eq_ignore_ascii_case(&r.api_key_header)
            {
                p.add(
                    format!("{at}.identity_header"),
                    "must differ from credential headers",
                );
            }
            if let Some(q) = &r.api_key_query
                && q.is_empty()
            {
                p.add(format!("{at}.api_key_query"), "must not be empty");
            }
        }
        if self.limiter.max_tracked_keys == 0 {
            p.add("limiter.max_tracked_keys", "must be positive");
        }
        if !(1..=128).contains(&self.limiter.ipv6_prefix) {
            p.add("limiter.ipv6_prefix", "1..=128");
        }
        if self.headers.max_retry_after < Duration::from_secs(1) {
            p.add("headers.max_retry_after", "at least 1s");
        }
        let d = &self.detector;
        if d.max_tracked_ips == 0 {
            p.add("detector.max_tracked_ips", "must be positive");
        }
        if !(1..=32).contains(&d.v4_prefix) {
            p.add("detector.v4_prefix", "1..=32");
        }
        if !(1..=128).contains(&d.v6_prefix) {
            p.add("detector.v6_prefix", "1..=128");
        }
        for (name, rule) in [
            ("auth_failures", &d.auth_failures),
            ("too_many_requests", &d.too_many_requests),
            ("not_found_paths", &d.not_found_paths),
        ] {
            if !(1..=MAX_RULE_COUNT).contains(&rule.count) {
                p.add(
                    format!("detector.{name}.count"),
                    format_args!("1..={MAX_RULE_COUNT}"),
                );
            }
            if rule.within.is_zero() {
                p.add(format!("detector.{name}.within"), "must be positive");
            }
            if rule.ttl < Duration::from_secs(1) {
                p.add(format!("detector.{name}.ttl"), "at least 1s");
            }
        }
        if !(d.over_quota.factor.is_finite() && d.over_quota.factor > 0.0) {
            p.add("detector.over_quota.factor", "must be a positive number");
        }
        if d.over_quota.ttl < Duration::from_secs(1) {
            p.add("detector.over_quota.ttl", "at least 1s");
        }
        let b = &self.password_budget;
        if b.failures > MAX_RULE_COUNT {
            p.add(
                "password_budget.failures",
                format_args!("0..={MAX_RULE_COUNT}"),
            );
        }
        if b.per < Duration::from_secs(1) {
            p.add("password_budget.per", "at least 1s");
        }
        if b.max_tracked_sources == 0 {
            p.add("password_budget.max_tracked_sources", "must be positive");
        }
    }
}

fn check_rate(p: &mut Problems, at: &str, r: &RateLimitConfig) {
    if !is_policy_name(&r.name) {
        p.add(
            format!("{at}.name"),
            "letters, digits, '-', '_', '.' (1..=64)",
        );
    }
    if r.rate == 0 {
        p.add(format!("{at}.rate"), "must be positive");
    }
    if r.per.is_zero() {
        p.add(format!("{at}.per"), "must be positive");
    }
    if r.burst == Some(0) {
        p.add(format!("{at}.burst"), "must be positive");
    }
    if r.key.is_empty() {
        p.add(
            format!("{at}.key"),
            "name at least one of identity, ip, route",
        );
    }
    let mut key = r.key.clone();
    key.sort();
    key.dedup();
    if key.len() != r.key.len() {
        p.add(format!("{at}.key"), "a part is listed twice");
    }
}

fn check_identity(p: &mut Problems, at: String, id: &str) {
    if id.is_empty() || id.len() > MAX_NAME_LEN || !is_token_text(id) {
        p.add(
            at,
            format_args!("1..={MAX_NAME_LEN} printable characters, no control characters"),
        );
    }
}

fn check_labels(p: &mut Problems, at: &str, scopes: &[String], roles: &[String]) {
    for s in scopes.iter().chain(roles) {
        if s.is_empty() || s.contains(char::is_whitespace) {
            p.add(
                at,
                format_args!("scope/role {s:?} must be non-empty without spaces"),
            );
        }
    }
}

/// Printable text without control characters (safe in a header value).
pub(crate) fn is_token_text(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_control)
}

/// A name usable as a structured-field string and in keys.
pub(crate) fn is_policy_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// An HTTP header name (RFC 9110 token).
pub(crate) fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
