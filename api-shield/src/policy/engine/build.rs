//! Building an engine from a configuration: afresh, or as a reload that keeps the state
//! that still applies.

use std::{collections::HashMap, sync::Arc};

use super::super::apikey::ApiKeyStore;
use super::super::basic::BasicStore;
use super::super::check::{InvalidPolicy, Problems};
use super::super::config::{KeyPart, PolicyConfig, RateLimitConfig, default_identity_header};
use super::super::detector::Detector;
use super::super::jwks::{JwksCache, JwksFetcher};
use super::super::jwt::JwtVerifier;
use super::super::password_budget::PasswordBudget;
use super::super::path::normalize_path;
use super::super::quota::{LimitSpec, Limiter};
use super::Engine;
use super::routing::{HostMatch, Plan, Route};
use super::stats::Counters;

/// The state an engine inherits from its predecessor (or starts afresh with).
struct Lineage<'a> {
    limiter: Arc<Limiter>,
    detector: Arc<Detector>,
    budget: Arc<PasswordBudget>,
    basic: Option<&'a BasicStore>,
    jwks: &'a [Arc<JwksCache>],
    counters: Arc<Counters>,
}

impl Engine {
    fn budget_for(config: &PolicyConfig) -> Arc<PasswordBudget> {
        Arc::new(PasswordBudget::new(
            config.password_budget.clone(),
            config.limiter.ipv6_prefix,
        ))
    }

    /// Validates `config`, loads every key and hash, and builds an engine with fresh state.
    /// Every problem is reported, each with its path.
    pub fn new(config: PolicyConfig, fetcher: Arc<dyn JwksFetcher>) -> Result<Self, InvalidPolicy> {
        let limiter = Arc::new(Limiter::new(
            config.limiter.max_tracked_keys,
            config.limiter.when_full,
        ));
        let detector = Arc::new(Detector::new(config.detector.clone()));
        let budget = Self::budget_for(&config);
        let state = Lineage {
            limiter,
            detector,
            budget,
            basic: None,
            jwks: &[],
            counters: Arc::default(),
        };
        Self::build(config, fetcher, state)
    }

    /// A new engine from `config` that keeps this one's state where it still applies: limit
    /// counters (keyed by stable limit ids, so an unchanged limit continues exactly where it
    /// was: a reload never refills a bucket), the detector's windows, JWKS caches of unchanged
    /// URLs, the fetcher and the counters, the failure budget and the remembered password
    /// successes (of users whose hash did not change). A changed `[limiter]`, `[detector]` or
    /// `[password_budget]` section starts that part afresh.
    pub fn reload(&self, config: PolicyConfig) -> Result<Self, InvalidPolicy> {
        let limiter = if config.limiter == self.config.limiter {
            self.limiter.clone()
        } else {
            Arc::new(Limiter::new(
                config.limiter.max_tracked_keys,
                config.limiter.when_full,
            ))
        };
        let detector = if config.detector == self.config.detector {
            self.detector.clone()
        } else {
            Arc::new(Detector::new(config.detector.clone()))
        };
        let budget = if self.password_budget.settings()
            == (&config.password_budget, config.limiter.ipv6_prefix)
        {
            self.password_budget.clone()
        } else {
            Self::budget_for(&config)
        };
        let jwks = self.jwt.jwks_caches();
        let state = Lineage {
            limiter,
            detector,
            budget,
            basic: Some(&self.basic),
            jwks: &jwks,
            counters: self.counters.clone(),
        };
        Self::build(config, self.fetcher.clone(), state)
    }

    fn build(
        config: PolicyConfig,
        fetcher: Arc<dyn JwksFetcher>,
        state: Lineage<'_>,
    ) -> Result<Self, InvalidPolicy> {
        let Lineage {
            limiter,
            detector,
            budget,
            basic,
            jwks,
            counters,
        } = state;
        let mut p = Problems::default();
        config.check(&mut p);
        if !config.jwt_issuers.is_empty()
            && jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none()
        {
            p.add(
                "jwt_issuers",
                "jsonwebtoken has no crypto provider (build feature problem)",
            );
            return Err(p.into_result().unwrap_err());
        }
        let api_keys = ApiKeyStore::build(&config.api_keys, &mut p);
        let basic = BasicStore::build(&config.basic_users, basic, &mut p);
        let jwt = JwtVerifier::build(&config.jwt_issuers, &fetcher, jwks, &mut p);
        p.into_result()?;
        Ok(Self {
            identity_headers: identity_headers(&config),
            plans: compile_plans(&config),
            routes: compile_routes(&config),
            config,
            api_keys,
            basic,
            jwt,
            limiter,
            detector,
            password_budget: budget,
            fetcher,
            counters,
        })
    }
}

fn compile_rates(owner: &str, rates: &[RateLimitConfig]) -> Vec<(LimitSpec, Vec<KeyPart>)> {
    rates
        .iter()
        .map(|r| {
            let id = format!("{owner}/{}", r.name);
            let spec = LimitSpec::gcra(&id, &r.name, r.rate, r.per, r.burst.unwrap_or(r.rate));
            (spec, r.key.clone())
        })
        .collect()
}

fn compile_plans(config: &PolicyConfig) -> HashMap<String, Plan> {
    config
        .plans
        .iter()
        .map(|(name, plan)| {
            let owner = format!("plan/{name}");
            let quotas = plan
                .quota
                .iter()
                .map(|q| {
                    let id = format!("{owner}/{}", q.name);
                    (LimitSpec::window(&id, &q.name, q.limit, q.window), q.scope)
                })
                .collect();
            (
                name.clone(),
                Plan {
                    rates: compile_rates(&owner, &plan.rate),
                    quotas,
                },
            )
        })
        .collect()
}

fn compile_routes(config: &PolicyConfig) -> Vec<Route> {
    config
        .routes
        .iter()
        .map(|r| Route {
            host: match r.host.as_deref().map(str::to_ascii_lowercase) {
                None => HostMatch::Any,
                Some(h) => match h.strip_prefix('*') {
                    Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
                    None => HostMatch::Exact(h),
                },
            },
            prefix: normalize_path(&r.path_prefix)
                .unwrap_or_else(|_| r.path_prefix.clone())
                .trim_end_matches('/')
                .to_owned(),
            limits: compile_rates(&format!("route/{}", r.name), &r.rate),
            cfg: r.clone(),
        })
        .collect()
}

/// Every route's identity and plan header, lower-cased and deduplicated.
fn identity_headers(config: &PolicyConfig) -> Vec<String> {
    let mut headers: Vec<String> = config
        .routes
        .iter()
        .flat_map(|r| std::iter::once(&r.identity_header).chain(r.plan_header.as_ref()))
        .map(|h| h.to_ascii_lowercase())
        .collect();
    headers.push(default_identity_header());
    headers.sort();
    headers.dedup();
    headers
}
