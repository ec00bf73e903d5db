//! The engine: route → authenticate → authorise → limit → headers, plus the detector.
//! No sockets, no clocks of its own: every call gets the time from the caller.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use super::apikey::ApiKeyStore;
use super::basic::BasicStore;
use super::config::{AuthMethod, PolicyConfig, RouteConfig, Unmatched};
use super::decision::{AccessDecision, DenyReason, Verdict};
use super::detector::{Detector, Escalation};
use super::headers;
use super::jwks::{JwksCache, JwksFetcher};
use super::jwt::JwtVerifier;
use super::password::{PasswordCheck, PasswordVerdict};
use super::password_budget::PasswordBudget;
use super::path::normalize_path;
use super::quota::{LimitSpec, Limiter};
use super::request::RequestMeta;
use super::time::Now;

mod authn;
mod build;
mod limits;
mod routing;
mod stats;

use authn::AuthStop;
use routing::{Plan, Route};
use stats::Counters;

pub use stats::EngineStats;

/// The policy engine. `Send + Sync`; share it behind an `Arc`.
pub struct Engine {
    config: PolicyConfig,
    api_keys: ApiKeyStore,
    basic: BasicStore,
    jwt: JwtVerifier,
    plans: HashMap<String, Plan>,
    routes: Vec<Route>,
    limiter: Arc<Limiter>,
    detector: Arc<Detector>,
    password_budget: Arc<PasswordBudget>,
    fetcher: Arc<dyn JwksFetcher>,
    counters: Arc<Counters>,
    /// Every route's identity and plan header, lower-cased and deduplicated.
    identity_headers: Vec<String>,
}

/// What [`Engine::begin`] got to.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "moved once per request, straight into a match; boxing would allocate per request"
)]
pub enum Step {
    /// Decided without any password hash (none needed, or answered from the success cache).
    Decided(AccessDecision),
    /// A Basic password must be hashed first: run the check (off any event loop), then call
    /// [`Engine::finish`] with the same request. Or answer [`PasswordCheck::unavailable`].
    Password(PasswordCheck),
}

/// Where a decision stopped short of allowing the request.
enum Stop {
    /// The denial (applied unless dry-run).
    Deny(Verdict, DenyReason),
    /// A password hash is needed to go on.
    Hash(PasswordCheck),
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field(
                "routes",
                &self.routes.iter().map(|r| &r.cfg.name).collect::<Vec<_>>(),
            )
            .field("api_keys", &self.api_keys.len())
            .field("basic_users", &self.basic.len())
            .field("jwt_issuers", &self.jwt)
            .field("limiter", &self.limiter)
            .field("detector", &self.detector)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// The configuration this engine was built from.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// The limiter (for its stats).
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Every limit of the policy: the routes', then the plans' rates and quotas.
    pub fn limit_specs(&self) -> Vec<&LimitSpec> {
        let routes = self
            .routes
            .iter()
            .flat_map(|r| r.limits.iter().map(|(s, _)| s));
        let plans = self.plans.values().flat_map(|p| {
            p.rates
                .iter()
                .map(|(s, _)| s)
                .chain(p.quotas.iter().map(|(s, _)| s))
        });
        routes.chain(plans).collect()
    }

    /// The detector (for its stats).
    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// The password failure budget (for its stats).
    pub fn password_budget(&self) -> &PasswordBudget {
        &self.password_budget
    }

    /// The JWKS caches, e.g. for a background task calling [`JwksCache::refresh_if_due`].
    pub fn jwks_caches(&self) -> Vec<Arc<JwksCache>> {
        self.jwt.jwks_caches()
    }

    /// Refreshes every stale JWKS cache (respecting cooldowns); returns how many got new keys.
    pub fn refresh_jwks(&self, now: Instant) -> usize {
        self.jwt
            .jwks_caches()
            .iter()
            .filter(|c| c.refresh_if_due(now))
            .count()
    }

    /// Decides one request at `now`, computing any password hash on the calling thread.
    /// A transport with an event loop uses [`Self::begin`] and [`Self::finish`] instead.
    pub fn check(&self, req: &RequestMeta, now: Now) -> AccessDecision {
        match self.begin(req, now) {
            Step::Decided(d) => d,
            Step::Password(check) => self.finish(req, check.run(), now),
        }
    }

    /// Decides one request at `now` unless a password must be hashed first: everything that
    /// is cheap (routing, API keys, JWTs, the success cache, the failure budget, limits)
    /// happens here; a hash is handed back as [`Step::Password`].
    pub fn begin(&self, req: &RequestMeta, now: Now) -> Step {
        match self.evaluate(req, now, None) {
            Ok(d) => Step::Decided(d),
            Err(check) => Step::Password(check),
        }
    }

    /// Completes the decision of `req` (the same request given to [`Self::begin`]) with the
    /// verdict of its password check. A verdict computed for another credential counts as a
    /// wrong password.
    pub fn finish(&self, req: &RequestMeta, verdict: PasswordVerdict, now: Now) -> AccessDecision {
        match self.evaluate(req, now, Some(verdict)) {
            Ok(d) => d,
            // With a verdict given, authentication never asks for another hash.
            Err(check) => check.unavailable(Duration::from_secs(1)),
        }
    }

    fn evaluate(
        &self,
        req: &RequestMeta,
        now: Now,
        verdict: Option<PasswordVerdict>,
    ) -> Result<AccessDecision, PasswordCheck> {
        let normalized = normalize_path(&req.path);
        let mut d = AccessDecision::allowed(normalized.clone().unwrap_or_default());
        // Client-sent copies of every configured identity and plan header go, whatever the
        // route (also with no route and `unmatched = "allow"`).
        d.strip_headers
            .extend(self.identity_headers.iter().cloned());
        let path = match normalized {
            Ok(p) => p,
            Err(e) => {
                d.verdict = deny(400, None, None);
                d.reason = Some(DenyReason::BadPath {
                    detail: e.to_string(),
                });
                self.count(&d);
                return Ok(d);
            }
        };
        let Some(route) = self.route_for(req, &path) else {
            if self.config.unmatched == Unmatched::Deny {
                d.verdict = deny(403, None, None);
                d.reason = Some(DenyReason::NoRoute);
            }
            self.count(&d);
            return Ok(d);
        };
        d.route = Some(route.cfg.name.clone());
        self.upstream_plumbing(route, &mut d);
        let dry = route.cfg.dry_run;
        let outcome = match self.decide(route, req, now, verdict, &mut d) {
            Ok(()) => Ok(()),
            Err(Stop::Deny(verdict, reason)) => Err((verdict, reason)),
            Err(Stop::Hash(mut check)) => {
                // Nothing was counted or consumed yet: the request starts over in `finish`.
                check.route = d.route.take();
                return Err(check);
            }
        };
        if let Err((verdict, reason)) = outcome {
            self.apply_denial(route, req, verdict, reason, &mut d);
        }
        if dry {
            for e in &mut d.escalations {
                e.dry_run = true;
            }
        }
        if let Some(id) = &d.identity {
            d.upstream_headers
                .push((route.cfg.identity_header.clone(), id.id.clone()));
            if let (Some(h), Some(plan)) = (&route.cfg.plan_header, &d.plan) {
                d.upstream_headers.push((h.clone(), plan.clone()));
            }
        }
        self.count(&d);
        Ok(d)
    }

    /// Denies `d`, or in dry-run only notes the denial: the client sees a normal response.
    fn apply_denial(
        &self,
        route: &Route,
        req: &RequestMeta,
        verdict: Verdict,
        reason: DenyReason,
        d: &mut AccessDecision,
    ) {
        if route.cfg.dry_run {
            tracing::info!(
                route = %route.cfg.name,
                client = %req.client_ip,
                ?reason,
                "dry-run: request would be denied"
            );
            d.dry_run_would_deny = Some(verdict);
            d.reason = Some(reason);
            // Only informational rate-limit headers stay.
            d.response_headers.retain(|(n, _)| {
                self.config.headers.on_allow && n.to_ascii_lowercase().starts_with("ratelimit")
            });
        } else {
            d.verdict = verdict;
            d.reason = Some(reason);
        }
    }

    fn upstream_plumbing(&self, route: &Route, d: &mut AccessDecision) {
        let cfg = &route.cfg;
        if cfg.strip_credentials {
            if cfg
                .auth
                .iter()
                .any(|m| matches!(m, AuthMethod::Basic | AuthMethod::Jwt))
            {
                d.strip_headers.push("authorization".to_owned());
            }
            if cfg.auth.contains(&AuthMethod::ApiKey) {
                d.strip_headers.push(cfg.api_key_header.clone());
                if let Some(q) = &cfg.api_key_query {
                    d.strip_query_params.push(q.clone());
                }
            }
        }
    }

    /// Authenticate, authorise, limit. `Err` carries the denial (applied unless dry-run), or
    /// the password hash needed before going on.
    fn decide(
        &self,
        route: &Route,
        req: &RequestMeta,
        now: Now,
        verdict: Option<PasswordVerdict>,
        d: &mut AccessDecision,
    ) -> Result<(), Stop> {
        let cfg = &route.cfg;
        let mut grant_plan = None;
        if !cfg.auth.is_empty() {
            let Some((method, presented)) = self.presented(cfg, req) else {
                let challenge = self.challenges(cfg, None);
                d.response_headers
                    .push(("WWW-Authenticate".into(), challenge.clone()));
                return Err(Stop::Deny(
                    deny(401, Some(challenge), None),
                    DenyReason::MissingCredentials,
                ));
            };
            match self.authenticate(presented, req.network_ip(), now, verdict, d) {
                Ok((identity, plan)) => {
                    grant_plan = plan;
                    d.identity = Some(identity);
                }
                Err(AuthStop::Hash(check)) => return Err(Stop::Hash(check)),
                Err(AuthStop::BudgetSpent(wait)) => {
                    // A 429 like a limit's: persisting through it is what the detector's
                    // `too_many_requests` rule escalates.
                    if let Some(e) = req
                        .network_ip()
                        .and_then(|ip| self.detector.record_too_many(ip, now.mono))
                    {
                        d.escalations.push(e);
                    }
                    let secs = headers::retry_after_secs(wait, self.config.headers.max_retry_after);
                    d.response_headers
                        .push(("Retry-After".into(), secs.to_string()));
                    return Err(Stop::Deny(
                        deny(429, None, Some(secs)),
                        DenyReason::PasswordBudgetSpent,
                    ));
                }
                Err(AuthStop::Invalid(detail)) => {
                    if let Some(e) = req
                        .network_ip()
                        .and_then(|ip| self.detector.record_auth_failure(ip, now.mono))
                    {
                        d.escalations.push(e);
                    }
                    let challenge = self.challenges(cfg, Some(method));
                    d.response_headers
                        .push(("WWW-Authenticate".into(), challenge.clone()));
                    return Err(Stop::Deny(
                        deny(401, Some(challenge), None),
                        DenyReason::InvalidCredentials {
                            method,
                            detail: detail.to_owned(),
                        },
                    ));
                }
            }
        }
        self.authorise(cfg, d)?;
        d.plan = grant_plan.or_else(|| cfg.default_plan.clone());
        self.limit(route, req, now, d)
            .map_err(|(verdict, reason)| Stop::Deny(verdict, reason))
    }

    /// The route's required scopes and roles, for an authenticated request.
    fn authorise(&self, cfg: &RouteConfig, d: &mut AccessDecision) -> Result<(), Stop> {
        let realm = &self.config.realm;
        if let Some(identity) = &d.identity {
            let missing: Vec<&String> = cfg
                .require_scopes
                .iter()
                .filter(|s| !identity.scopes.contains(s))
                .collect();
            let role_ok = cfg.require_roles.is_empty()
                || cfg.require_roles.iter().any(|r| identity.roles.contains(r));
            if !missing.is_empty() || !role_ok {
                let detail = if missing.is_empty() {
                    format!("needs one of the roles {:?}", cfg.require_roles)
                } else {
                    format!("missing scopes {missing:?}")
                };
                let challenge =
                    (identity.method == AuthMethod::Jwt && !missing.is_empty()).then(|| {
                        let scope = cfg.require_scopes.join(" ");
                        headers::bearer_challenge(realm, Some("insufficient_scope"), Some(&scope))
                    });
                if let Some(c) = &challenge {
                    d.response_headers
                        .push(("WWW-Authenticate".into(), c.clone()));
                }
                return Err(Stop::Deny(
                    deny(403, challenge, None),
                    DenyReason::Forbidden { detail },
                ));
            }
        }
        Ok(())
    }

    /// Feeds the detector with the upstream's answer to a forwarded request: 404s count as
    /// distinct paths probed, 401s as authentication failures, 429s as rate-limited requests.
    pub fn observe_response(
        &self,
        client_ip: IpAddr,
        path: &str,
        status: u16,
        now: Instant,
    ) -> Option<Escalation> {
        let e = match status {
            404 => self.detector.record_not_found(
                client_ip,
                &normalize_path(path).unwrap_or_else(|_| path.to_owned()),
                now,
            ),
            401 => self.detector.record_auth_failure(client_ip, now),
            429 => self.detector.record_too_many(client_ip, now),
            _ => None,
        };
        if e.is_some() {
            self.counters.escalations.fetch_add(1, Ordering::Relaxed);
        }
        e
    }
}

fn deny(status: u16, www_authenticate: Option<String>, retry_after: Option<u64>) -> Verdict {
    Verdict::Deny {
        status,
        www_authenticate,
        retry_after,
    }
}
