//! Checks a policy configuration: names, references and ranges, every problem named with
//! the path of the offending field (not only the first).

use std::{collections::HashSet, fmt, time::Duration};

use super::config::{
    AuthMethod, MAX_NAME_LEN, MAX_RULE_COUNT, PolicyConfig, RateLimitConfig, RouteConfig,
};

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
        self.check_identities(p);
        self.check_issuers(p);
        self.check_plans(p);
        let mut routes = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            self.check_route(p, &at, r, &mut routes);
            check_route_headers(p, &at, r);
        }
        self.check_bounds(p);
    }

    fn plan_ref(&self, p: &mut Problems, path: String, plan: Option<&String>) {
        if let Some(plan) = plan
            && !self.plans.contains_key(plan)
        {
            p.add(path, format_args!("unknown plan {plan:?}"));
        }
    }

    /// API keys and Basic users.
    fn check_identities(&self, p: &mut Problems) {
        for (i, k) in self.api_keys.iter().enumerate() {
            check_identity(p, format!("api_keys[{i}].identity"), &k.identity);
            self.plan_ref(p, format!("api_keys[{i}].plan"), k.plan.as_ref());
            check_labels(p, &format!("api_keys[{i}]"), &k.scopes, &k.roles);
        }
        let mut users = HashSet::new();
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
            self.plan_ref(p, format!("basic_users[{i}].plan"), u.plan.as_ref());
            check_labels(p, &format!("basic_users[{i}]"), &u.scopes, &u.roles);
        }
    }

    fn check_issuers(&self, p: &mut Problems) {
        let mut issuers = HashSet::new();
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
            self.plan_ref(p, format!("{at}.plan"), iss.plan.as_ref());
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
    }

    fn check_plans(&self, p: &mut Problems) {
        for (name, plan) in &self.plans {
            if !is_policy_name(name) {
                p.add(
                    format!("plans.{name}"),
                    "plan names: letters, digits, '-', '_', '.'",
                );
            }
            let mut names = HashSet::new();
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
    }

    /// One route, but for its header settings; `names` holds the route names seen so far.
    fn check_route<'a>(
        &self,
        p: &mut Problems,
        at: &str,
        r: &'a RouteConfig,
        names: &mut HashSet<&'a str>,
    ) {
        if !is_policy_name(&r.name) {
            p.add(
                format!("{at}.name"),
                "letters, digits, '-', '_', '.' (1..=64)",
            );
        }
        if !names.insert(r.name.as_str()) {
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
        let mut seen = HashSet::new();
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
                at,
                "require_scopes/require_roles need at least one auth method",
            );
        }
        self.plan_ref(p, format!("{at}.default_plan"), r.default_plan.as_ref());
        let mut names = HashSet::new();
        for (k, rate) in r.rate.iter().enumerate() {
            check_rate(p, &format!("{at}.rate[{k}]"), rate);
            if !names.insert(rate.name.as_str()) {
                p.add(format!("{at}.rate[{k}].name"), "duplicate limit name");
            }
        }
    }

    /// Limiter, headers, detector and password budget.
    fn check_bounds(&self, p: &mut Problems) {
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

/// A route's header names and the query parameter of its API key.
fn check_route_headers(p: &mut Problems, at: &str, r: &RouteConfig) {
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
