//! Escalations off the request path: what became of each (the metric's outcome), and the
//! task that hands them to an [`Escalator`]. The daemon's escalator lives in
//! `daemon::escalate`, so nothing below the daemon imports it.

use super::Escalator;
use super::metrics::GatewayMetrics;
use crate::policy::Escalation;
use std::sync::Arc;
use std::time::Instant;

/// The list (origin) of every gateway block.
pub const GATEWAY_LIST: &str = "gateway";

/// What became of one escalation: the `outcome` label of the escalation metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EscalationOutcome {
    /// The client is blocked in the kernel.
    Blocked,
    /// The rule runs in dry-run: logged and audited only.
    DryRun,
    /// The lockout guard refused (the prefix covers this host, a management prefix or a
    /// trusted proxy).
    Refused,
    /// The decision path failed (snapshot or kernel write).
    Failed,
}

impl EscalationOutcome {
    /// Every outcome.
    pub const ALL: [EscalationOutcome; 4] =
        [Self::Blocked, Self::DryRun, Self::Refused, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blocked => "blocked",
            Self::DryRun => "dry_run",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

/// Hands `escalations` of a request that arrived at `arrived` to `escalator` on a blocking
/// task, off the request path (the escalator may wait for the daemon's lock), and logs and
/// counts each with its latency to the kernel entry. Must be called within a Tokio runtime.
pub fn dispatch_escalations(
    escalator: Arc<dyn Escalator>,
    escalations: Vec<Escalation>,
    arrived: Instant,
    metrics: Arc<GatewayMetrics>,
) {
    if escalations.is_empty() {
        return;
    }
    tokio::task::spawn_blocking(move || {
        for e in &escalations {
            let outcome = escalator.escalate(e);
            let latency = arrived.elapsed();
            metrics.record_escalation(e.rule, outcome, latency);
            tracing::warn!(
                ip = %e.ip,
                net = %e.net,
                rule = e.rule.as_str(),
                outcome = outcome.as_str(),
                latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
                "escalation: offending request to kernel entry"
            );
        }
    });
}
