//! The limits a request is subject to (the route's, its plan's rates and quotas), checked
//! together, and the `RateLimit` headers and 429 that follow.

use std::time::Duration;

use super::super::config::{HeaderConfig, KeyPart, QuotaScope};
use super::super::decision::{AccessDecision, DenyReason, Verdict};
use super::super::headers;
use super::super::identity::Identity;
use super::super::quota::{LimitSpec, LimitStatus, ip_key};
use super::super::request::RequestMeta;
use super::super::time::Now;
use super::{Engine, Route, deny};

impl Engine {
    pub(super) fn limit(
        &self,
        route: &Route,
        req: &RequestMeta,
        now: Now,
        d: &mut AccessDecision,
    ) -> Result<(), (Verdict, DenyReason)> {
        // No per-address key for a client known only as a trusted proxy: that limit would
        // throttle everyone behind the proxy. Limits keyed on it are left out.
        let ip = req
            .network_ip()
            .map(|ip| format!("ip:{}", ip_key(ip, self.config.limiter.ipv6_prefix)));
        let who = d
            .identity
            .as_ref()
            .map(Identity::limit_key)
            .or_else(|| ip.clone());
        let key_of = |parts: &[KeyPart]| {
            parts
                .iter()
                .map(|p| match p {
                    KeyPart::Identity => who.clone(),
                    KeyPart::Ip => ip.clone(),
                    KeyPart::Route => Some(format!("route:{}", route.cfg.name)),
                })
                .collect::<Option<Vec<_>>>()
                .map(|parts| parts.join("|"))
        };
        let mut checks: Vec<(&LimitSpec, String)> = route
            .limits
            .iter()
            .filter_map(|(spec, parts)| Some((spec, key_of(parts)?)))
            .collect();
        if let Some(plan) = d.plan.as_ref().and_then(|p| self.plans.get(p)) {
            checks.extend(
                plan.rates
                    .iter()
                    .filter_map(|(spec, parts)| Some((spec, key_of(parts)?))),
            );
            for (spec, scope) in &plan.quotas {
                let key = match scope {
                    QuotaScope::Identity => who.clone(),
                    QuotaScope::Plan => Some(format!("plan:{}", d.plan.as_deref().unwrap_or(""))),
                };
                checks.extend(key.map(|key| (spec, key)));
            }
        }
        if checks.is_empty() {
            return Ok(());
        }
        d.limits = self.limiter.check(&checks, now);
        let hc: &HeaderConfig = &self.config.headers;
        let denied: Vec<&LimitStatus> = d.limits.iter().filter(|s| !s.allowed).collect();
        if denied.is_empty() {
            if hc.on_allow {
                push_ratelimit_headers(&mut d.response_headers, &d.limits, hc);
            }
            return Ok(());
        }
        let wait = denied
            .iter()
            .map(|s| s.retry_after)
            .max()
            .unwrap_or(Duration::ZERO);
        let retry_after = headers::retry_after_secs(wait, hc.max_retry_after);
        let first = denied[0];
        if !first.untracked
            && let Some(client) = req.network_ip()
        {
            if let Some(e) = self.detector.record_too_many(client, now.mono) {
                d.escalations.push(e);
            }
            let window = Duration::from_secs(first.window_secs);
            if let Some(e) = self
                .detector
                .record_over_quota(client, first.quota, window, now.mono)
            {
                d.escalations.push(e);
            }
        }
        let reason = DenyReason::RateLimited {
            limit: first.name.clone(),
        };
        push_ratelimit_headers(&mut d.response_headers, &d.limits, hc);
        d.response_headers
            .push(("Retry-After".into(), retry_after.to_string()));
        Err((deny(429, None, Some(retry_after)), reason))
    }
}

fn push_ratelimit_headers(
    out: &mut Vec<(String, String)>,
    limits: &[LimitStatus],
    hc: &HeaderConfig,
) {
    if limits.is_empty() {
        return;
    }
    out.push(("RateLimit-Policy".into(), headers::ratelimit_policy(limits)));
    out.push(("RateLimit".into(), headers::ratelimit(limits)));
    if hc.legacy {
        out.extend(headers::legacy(limits));
    }
}
