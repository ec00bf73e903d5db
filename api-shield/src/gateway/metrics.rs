//! Prometheus metrics of the gateway: every answer of a gateway listener, the engine's quota
//! rejections, and the escalations into the kernel with their latency.
//!
//! Families (label values from fixed sets or from the policy's route and limit names, never
//! addresses or identities):
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | `api_shield_gateway_requests_total` | counter | `listener`, `route`, `status_class`, `auth` |
//! | `api_shield_gateway_quota_rejections_total` | counter | `route`, `limit` |
//! | `api_shield_gateway_quota_dry_run_rejections_total` | counter | `route`, `limit` |
//! | `api_shield_gateway_escalations_total` | counter | `rule`, `outcome` |
//! | `api_shield_gateway_escalation_latency_seconds` | histogram | `rule` |
//! | `api_shield_gateway_password_checks_total` | counter | `outcome` |
//! | `api_shield_gateway_connections_refused_total` | counter | `listener`, `reason` |
//!
//! - `listener`: the caller's fixed name, `check` (the check endpoint) or `proxy`.
//! - `route`: the matched route's name, `none` when no route matched or no request could be
//!   read.
//! - `status_class`: `1xx` … `5xx` of the status the client got.
//! - `auth`: see [`AuthOutcome`].
//! - `rule`: a detector rule ([`Rule::as_str`]); `outcome`: see [`EscalationOutcome`].
//! - connections refused at accept: `listener` is `check` or a gateway listener's address,
//!   `reason` `full` (every slot taken) or `per_source` (its source holds its share).
//! - password check `outcome`: see [`PasswordOutcome`] (`cached`, `verified`, `rejected`,
//!   `budget_spent`, `unavailable`).
//!
//! Dry-run rejections have a family of their own so that a sum over the real one never mixes
//! in requests that went through. The escalation families start with every rule and outcome
//! at zero: an escalation is rare, and `increase()` misses the first sample of a new series.
//! The latency histogram counts only escalations that reached the kernel (`blocked`): it
//! measures the offending request's arrival to its kernel entry.
//!
//! Recording takes a shared (reader) lock of the family's map, which readers never wait on
//! each other for, and an atomic add; the map is written only when a label set is new.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::escalate::EscalationOutcome;
use crate::accept::slots::RefusalCounters;
use crate::inventory::SharedInventory;
use crate::inventory::metrics::InventoryCollector;
use crate::policy::{AccessDecision, DenyReason, PasswordOutcome, Rule, Verdict};

/// The `route` label of a request that matched no route.
pub const NO_ROUTE: &str = "none";

/// Upper bounds of the latency buckets: 0.5 ms doubling to about 4 s (then `+Inf`). The
/// decision path is sub-millisecond when idle; seconds mean the daemon's lock was contended.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_5, 2.0, 14)
}

fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// How a request fared with authentication: the `auth` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthOutcome {
    /// Credentials accepted (whatever came after: a 429 for an identified client is this).
    Authenticated,
    /// A route that asks for no credentials, and none were needed.
    Anonymous,
    /// The route needs credentials and none were presented.
    Missing,
    /// Credentials presented and refused.
    Invalid,
    /// A password presented and not checked: its source had spent its failure budget, or
    /// there was no room to hash it.
    Unverified,
    /// Authenticated, lacking a scope or role.
    Forbidden,
    /// No route matched (allowed or denied by `unmatched`).
    NoRoute,
    /// No decision was made: the request itself could not be read.
    NotApplicable,
}

impl AuthOutcome {
    /// Every outcome.
    pub const ALL: [AuthOutcome; 8] = [
        Self::Authenticated,
        Self::Anonymous,
        Self::Missing,
        Self::Invalid,
        Self::Unverified,
        Self::Forbidden,
        Self::NoRoute,
        Self::NotApplicable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authenticated => "authenticated",
            Self::Anonymous => "anonymous",
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::Unverified => "unverified",
            Self::Forbidden => "forbidden",
            Self::NoRoute => "no_route",
            Self::NotApplicable => "not_applicable",
        }
    }

    /// The outcome of `decision`. A dry-run route reports the authentication failure it did
    /// not enforce (with a 2xx status), so that dry runs show what enforcing would refuse.
    pub fn of(decision: &AccessDecision) -> Self {
        match &decision.reason {
            Some(DenyReason::MissingCredentials) => Self::Missing,
            Some(DenyReason::InvalidCredentials { .. }) => Self::Invalid,
            Some(DenyReason::PasswordBudgetSpent | DenyReason::PasswordCheckUnavailable) => {
                Self::Unverified
            }
            Some(DenyReason::Forbidden { .. }) => Self::Forbidden,
            _ if decision.route.is_none() => Self::NoRoute,
            _ if decision.identity.is_some() => Self::Authenticated,
            _ => Self::Anonymous,
        }
    }
}

impl EncodeLabelValue for AuthOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

impl EncodeLabelValue for EscalationOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// `2xx` for 200 …; a status outside 100–599 (none that hyper sends) is `other`.
pub fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: &'static str,
    route: String,
    status_class: &'static str,
    auth: AuthOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    route: String,
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EscalationLabels {
    rule: &'static str,
    outcome: EscalationOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    listener: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PasswordLabels {
    outcome: &'static str,
}

/// The gateway's live metrics; share one behind an `Arc` between the gateway listeners and
/// the metrics listener.
#[derive(Debug)]
pub struct GatewayMetrics {
    requests: Family<RequestLabels, Counter>,
    quota_rejections: Family<QuotaLabels, Counter>,
    quota_dry_run: Family<QuotaLabels, Counter>,
    escalations: Family<EscalationLabels, Counter>,
    escalation_latency: Family<RuleLabels, Histogram, fn() -> Histogram>,
    password_checks: Family<PasswordLabels, Counter>,
    connections_refused: Family<RefusalLabels, Counter>,
    /// OpenAPI contract validation outcomes.
    pub contract: super::contract_metrics::ContractMetrics,
    /// The inventory's families, when the daemon keeps one ([`crate::inventory::metrics`]).
    inventory: OnceLock<Arc<SharedInventory>>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let m = Self {
            requests: Family::default(),
            quota_rejections: Family::default(),
            quota_dry_run: Family::default(),
            escalations: Family::default(),
            escalation_latency: Family::new_with_constructor(latency_histogram),
            password_checks: Family::default(),
            connections_refused: Family::default(),
            contract: super::contract_metrics::ContractMetrics::default(),
            inventory: OnceLock::new(),
        };
        for outcome in PasswordOutcome::ALL {
            let outcome = outcome.as_str();
            drop(m.password_checks.get_or_create(&PasswordLabels { outcome }));
        }
        // Creating a series is all that is wanted: each guard is released at once.
        for rule in Rule::ALL {
            let rule = rule.as_str();
            for outcome in EscalationOutcome::ALL {
                drop(
                    m.escalations
                        .get_or_create(&EscalationLabels { rule, outcome }),
                );
            }
            drop(m.escalation_latency.get_or_create(&RuleLabels { rule }));
        }
        m
    }

    /// Counts one answer of `listener` decided by `decision`; `status` is what the client got
    /// (an upstream's status when the request went through).
    pub fn record(&self, listener: &'static str, decision: &AccessDecision, status: u16) {
        let route = decision.route.as_deref().unwrap_or(NO_ROUTE);
        self.count_request(listener, route, status, AuthOutcome::of(decision));
        if let Some(outcome) = decision.password {
            let outcome = outcome.as_str();
            self.password_checks
                .get_or_create(&PasswordLabels { outcome })
                .inc();
        }
        if let Some(DenyReason::RateLimited { limit }) = &decision.reason {
            let family = match decision.verdict {
                Verdict::Deny { .. } => &self.quota_rejections,
                Verdict::Allow if decision.dry_run_would_deny.is_some() => &self.quota_dry_run,
                Verdict::Allow => return,
            };
            let labels = QuotaLabels {
                route: route.to_owned(),
                limit: limit.to_string(),
            };
            family.get_or_create(&labels).inc();
        }
    }

    /// The refusal counters of the listener named `listener` (created at zero).
    pub fn refusal_counters(&self, listener: &str) -> RefusalCounters {
        let counter = |reason| {
            let labels = RefusalLabels {
                listener: listener.to_owned(),
                reason,
            };
            self.connections_refused.get_or_create(&labels).clone()
        };
        RefusalCounters {
            full: counter("full"),
            per_source: counter("per_source"),
        }
    }

    /// Counts an answer given without a decision (a request that could not be read).
    pub fn record_without_decision(&self, listener: &'static str, status: u16) {
        self.count_request(listener, NO_ROUTE, status, AuthOutcome::NotApplicable);
    }

    fn count_request(&self, listener: &'static str, route: &str, status: u16, auth: AuthOutcome) {
        let labels = RequestLabels {
            listener,
            route: route.to_owned(),
            status_class: status_class(status),
            auth,
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// Counts one escalation of `rule`; `latency` (offending request's arrival to the end of
    /// the escalation) is observed only when the client was blocked in the kernel.
    pub fn record_escalation(&self, rule: Rule, outcome: EscalationOutcome, latency: Duration) {
        let rule = rule.as_str();
        self.escalations
            .get_or_create(&EscalationLabels { rule, outcome })
            .inc();
        if outcome == EscalationOutcome::Blocked {
            self.escalation_latency
                .get_or_create(&RuleLabels { rule })
                .observe(latency.as_secs_f64());
        }
    }

    /// Adds the inventory's families to every scrape from now on (set once, at start).
    pub fn set_inventory(&self, inventory: Arc<SharedInventory>) {
        let _ = self.inventory.set(inventory);
    }

    /// Registers the families into `registry`. The families registered are handles on the
    /// same storage, so a registry built per scrape reads the live values.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "api_shield_gateway_requests",
            "Answers of the gateway listeners by listener, matched route, status class the \
             client got and authentication outcome",
            self.requests.clone(),
        );
        registry.register(
            "api_shield_gateway_quota_rejections",
            "Requests the policy engine refused with 429, by route and the first limit that \
             refused",
            self.quota_rejections.clone(),
        );
        registry.register(
            "api_shield_gateway_quota_dry_run_rejections",
            "Requests a dry-run route let through that its limits would have refused, by route \
             and limit",
            self.quota_dry_run.clone(),
        );
        registry.register(
            "api_shield_gateway_escalations",
            "Escalations of abusive clients by detector rule and outcome (blocked in the kernel, \
             dry_run, refused by the lockout guard, failed)",
            self.escalations.clone(),
        );
        registry.register_with_unit(
            "api_shield_gateway_escalation_latency",
            "Time from the offending request's arrival to the client's kernel block, by rule",
            Unit::Seconds,
            self.escalation_latency.clone(),
        );
        registry.register(
            "api_shield_gateway_connections_refused",
            "Connections closed at accept by listener and reason: every slot taken (full), or \
             the source already holding its share (per_source)",
            self.connections_refused.clone(),
        );
        registry.register(
            "api_shield_gateway_password_checks",
            "Basic passwords presented, by outcome: cached (a recent success, no hash), \
             verified or rejected (hashed), budget_spent (the source's failure budget was spent: \
             refused unhashed), unavailable (no room in the hashing pool: 503)",
            self.password_checks.clone(),
        );
        self.contract.register(registry);
        if let Some(inventory) = self.inventory.get() {
            registry.register_collector(Box::new(InventoryCollector(Arc::clone(inventory))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Engine, Now, PolicyConfig, RequestMeta};
    use std::net::IpAddr;
    use std::sync::Arc;

    const KEY: &str = "metrics-test-key";

    fn engine() -> Engine {
        let hash = crate::policy::apikey::hash_api_key(KEY);
        let text = format!(
            "unmatched = \"deny\"\n\
             [[api_keys]]\nhash = \"{hash}\"\nidentity = \"alice\"\nplan = \"p\"\nscopes = []\n\
             [plans.p]\nrate = [{{ name = \"burst\", rate = 1, per = \"1h\", burst = 2, key = [\"identity\"] }}]\n\
             [[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nauth = [\"api_key\"]\n\
             [[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\nauth = [\"api_key\"]\n\
             require_scopes = [\"admin\"]\n\
             [[routes]]\nname = \"open\"\npath_prefix = \"/open\"\n\
             [[routes]]\nname = \"trial\"\npath_prefix = \"/trial\"\ndry_run = true\n\
             rate = [{{ name = \"per-ip\", rate = 1, per = \"1h\", burst = 1, key = [\"ip\"] }}]\n"
        );
        let policy = PolicyConfig::from_toml_str(&text).unwrap();
        Engine::new(policy, Arc::new(crate::policy::NoFetcher)).unwrap()
    }

    fn render(m: &GatewayMetrics) -> String {
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        out
    }

    /// The value of the sample line `name{labels}` (labels in encoding order).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn requests(listener: &str, route: &str, class: &str, auth: &str) -> String {
        format!(
            "api_shield_gateway_requests_total{{listener=\"{listener}\",route=\"{route}\",\
             status_class=\"{class}\",auth=\"{auth}\"}}"
        )
    }

    #[test]
    fn auth_outcomes_and_quota_rejections_follow_the_decisions() {
        let engine = engine();
        let m = GatewayMetrics::new();
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let get = |path: &str, key: Option<&str>| {
            let mut req = RequestMeta::new(ip, "GET", "api", path);
            if let Some(k) = key {
                req = req.header("x-api-key", k);
            }
            engine.check(&req, Now::system())
        };
        let mut expected = Vec::new();
        let mut answer = |decision: AccessDecision, route: &str, class: &str, auth: &str| {
            m.record("check", &decision, decision.status());
            expected.push(requests("check", route, class, auth));
        };
        answer(get("/api/x", Some(KEY)), "api", "2xx", "authenticated");
        answer(get("/api/x", Some(KEY)), "api", "2xx", "authenticated");
        answer(get("/api/x", Some(KEY)), "api", "4xx", "authenticated");
        answer(get("/api/x", None), "api", "4xx", "missing");
        answer(get("/api/x", Some("wrong")), "api", "4xx", "invalid");
        answer(get("/admin", Some(KEY)), "admin", "4xx", "forbidden");
        answer(get("/open", None), "open", "2xx", "anonymous");
        answer(get("/elsewhere", None), "none", "4xx", "no_route");
        answer(get("/trial", None), "trial", "2xx", "anonymous");
        answer(get("/trial", None), "trial", "2xx", "anonymous");
        m.record_without_decision("check", 400);
        expected.push(requests("check", "none", "4xx", "not_applicable"));

        let text = render(&m);
        let mut counts = std::collections::HashMap::<&str, f64>::new();
        for series in &expected {
            *counts.entry(series).or_default() += 1.0;
        }
        for (series, n) in &counts {
            assert_eq!(value(&text, series), Some(*n), "{series} in:\n{text}");
        }
        let sent: f64 = text
            .lines()
            .filter(|l| l.starts_with("api_shield_gateway_requests_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        assert_eq!(sent, expected.len() as f64, "{text}");
        assert_eq!(
            value(
                &text,
                "api_shield_gateway_quota_rejections_total{route=\"api\",limit=\"burst\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                "api_shield_gateway_quota_dry_run_rejections_total{route=\"trial\",limit=\"per-ip\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert!(
            !text.contains("api_shield_gateway_quota_rejections_total{route=\"trial\""),
            "{text}"
        );
    }

    #[test]
    fn escalations_start_at_zero_and_only_blocks_have_a_latency() {
        let m = GatewayMetrics::new();
        let text = render(&m);
        for rule in Rule::ALL {
            for outcome in EscalationOutcome::ALL {
                let series = format!(
                    "api_shield_gateway_escalations_total{{rule=\"{}\",outcome=\"{}\"}}",
                    rule.as_str(),
                    outcome.as_str()
                );
                assert_eq!(value(&text, &series), Some(0.0), "{series} in:\n{text}");
            }
            let count = format!(
                "api_shield_gateway_escalation_latency_seconds_count{{rule=\"{}\"}}",
                rule.as_str()
            );
            assert_eq!(value(&text, &count), Some(0.0), "{count} in:\n{text}");
        }

        let ms = Duration::from_millis;
        m.record_escalation(Rule::AuthFailures, EscalationOutcome::Blocked, ms(3));
        m.record_escalation(Rule::AuthFailures, EscalationOutcome::Blocked, ms(40));
        m.record_escalation(Rule::AuthFailures, EscalationOutcome::Refused, ms(1));
        m.record_escalation(Rule::OverQuota, EscalationOutcome::DryRun, ms(1));
        let text = render(&m);
        let escalations = |rule: &str, outcome: &str| {
            value(
                &text,
                &format!(
                    "api_shield_gateway_escalations_total{{rule=\"{rule}\",outcome=\"{outcome}\"}}"
                ),
            )
        };
        assert_eq!(escalations("auth_failures", "blocked"), Some(2.0));
        assert_eq!(escalations("auth_failures", "refused"), Some(1.0));
        assert_eq!(escalations("over_quota", "dry_run"), Some(1.0));
        assert_eq!(escalations("over_quota", "blocked"), Some(0.0));
        let latency = |suffix: &str, labels: &str| {
            value(
                &text,
                &format!("api_shield_gateway_escalation_latency_seconds_{suffix}{{{labels}}}"),
            )
        };
        assert_eq!(latency("count", "rule=\"auth_failures\""), Some(2.0));
        assert_eq!(latency("count", "rule=\"over_quota\""), Some(0.0));
        let sum = latency("sum", "rule=\"auth_failures\"").unwrap();
        assert!((sum - 0.043).abs() < 1e-9, "{sum}");
        // 3 ms falls in the 4 ms bucket, 40 ms in the 64 ms one; buckets are cumulative.
        assert_eq!(
            latency("bucket", "rule=\"auth_failures\",le=\"0.002\""),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            latency("bucket", "rule=\"auth_failures\",le=\"0.004\""),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            latency("bucket", "rule=\"auth_failures\",le=\"0.064\""),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            latency("bucket", "rule=\"auth_failures\",le=\"+Inf\""),
            Some(2.0),
            "{text}"
        );
    }

    #[test]
    fn buckets_span_half_a_millisecond_to_seconds() {
        let b: Vec<f64> = latency_buckets().collect();
        assert_eq!(b.first().copied(), Some(0.000_5));
        assert!((4.0..=5.0).contains(b.last().unwrap()), "{b:?}");
        assert!(b.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn status_classes() {
        assert_eq!(
            [101, 200, 204, 302, 401, 429, 502, 999].map(status_class),
            ["1xx", "2xx", "2xx", "3xx", "4xx", "4xx", "5xx", "other"]
        );
    }

    #[test]
    fn every_auth_outcome_has_its_own_label() {
        let mut seen: Vec<&str> = AuthOutcome::ALL.iter().map(|a| a.as_str()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), AuthOutcome::ALL.len());
    }
}
