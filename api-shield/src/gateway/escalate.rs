//! The daemon's [`Escalator`]: a firing detector rule becomes a kernel block through the same
//! decision path as `api-shield block --list gateway` (snapshot first, then the kernel),
//! audited with the rule as its reason.

use super::Escalator;
use super::metrics::GatewayMetrics;
use crate::audit::AuditLog;
use crate::daemon::handler::audit_self;
use crate::daemon::ops::{OpError, State};
use crate::policy::Escalation;
use serde_json::json;
use std::sync::{Arc, Mutex, PoisonError};
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
    /// The lockout guard refused (the client is this host or management).
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
                rule = e.rule.as_str(),
                outcome = outcome.as_str(),
                latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
                "escalation: offending request to kernel entry"
            );
        }
    });
}

pub struct StateEscalator {
    pub state: Arc<Mutex<State>>,
    pub audit: Arc<AuditLog>,
}

impl Escalator for StateEscalator {
    fn escalate(&self, e: &Escalation) -> EscalationOutcome {
        let rule = e.rule.as_str();
        let args = json!({
            "ip": e.ip, "rule": rule, "ttl_secs": e.ttl.as_secs(), "reason": e.reason,
            "list": GATEWAY_LIST, "dry_run": e.dry_run,
        });
        if e.dry_run {
            tracing::warn!(ip = %e.ip, rule, reason = e.reason, "gateway rule fired (dry run: not blocked)");
            audit_self(
                &self.audit,
                "gateway_escalate",
                args,
                true,
                json!("dry run"),
            );
            return EscalationOutcome::DryRun;
        }
        let ttl = e.ttl.as_secs().max(1);
        let started = std::time::Instant::now();
        let result = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .block(
                // The control path refuses `::ffff:a.b.c.d`; the kernel matches the IPv4 form.
                &[e.ip.to_canonical().to_string()],
                Some(ttl),
                Some(format!("{rule}: {}", e.reason)),
                false,
                Some(GATEWAY_LIST),
            );
        // Lock wait, snapshot write and kernel update.
        let block_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match &result {
            Ok(_) => tracing::warn!(
                ip = %e.ip,
                rule,
                ttl_secs = ttl,
                block_us,
                "gateway blocked a client in the kernel"
            ),
            // The lockout guard refused (the client is this host or management): logged only.
            Err(OpError::Refused(msg)) => {
                tracing::warn!(ip = %e.ip, rule, error = msg, "gateway block refused");
            }
            Err(err) => tracing::error!(ip = %e.ip, rule, error = %err, "gateway block failed"),
        }
        let outcome = match &result {
            Ok(_) => EscalationOutcome::Blocked,
            Err(OpError::Refused(_)) => EscalationOutcome::Refused,
            Err(_) => EscalationOutcome::Failed,
        };
        audit_self(
            &self.audit,
            "gateway_escalate",
            args,
            result.is_ok(),
            result.unwrap_or_else(|e| json!(e.to_string())),
        );
        outcome
    }
}
