//! The abuse settings of a policy: the detector's rules and the password failure budget.

use std::time::Duration;

use serde::Deserialize;

use super::{default_ipv6_prefix, yes};

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
