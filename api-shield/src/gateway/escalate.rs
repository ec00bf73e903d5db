//! The daemon's [`Escalator`]: a firing detector rule becomes a kernel block (of the prefix the
//! detector counted the client under) through the same decision path as
//! `api-shield block --list gateway` (snapshot first, then the kernel), audited with the rule
//! as its reason. The lockout guard refuses a prefix that covers this host, a management
//! prefix or a trusted proxy (blocking one cuts off everyone behind it): counted as
//! `refused`, logged and audited.

use super::Escalator;
use super::metrics::GatewayMetrics;
use crate::audit::AuditLog;
use crate::daemon::guard::OnLockout;
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

pub struct StateEscalator {
    pub state: Arc<Mutex<State>>,
    pub audit: Arc<AuditLog>,
}

impl Escalator for StateEscalator {
    fn escalate(&self, e: &Escalation) -> EscalationOutcome {
        let rule = e.rule.as_str();
        let args = json!({
            "ip": e.ip, "net": e.net, "rule": rule, "ttl_secs": e.ttl.as_secs(), "reason": e.reason,
            "list": GATEWAY_LIST, "dry_run": e.dry_run,
        });
        if e.dry_run {
            tracing::warn!(ip = %e.ip, net = %e.net, rule, reason = e.reason, "gateway rule fired (dry run: not blocked)");
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
        let result = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let proxies = state
                .config
                .gateway
                .as_ref()
                .map(|g| g.trusted_proxies.clone())
                .unwrap_or_default();
            state.protected().and_then(|protected| {
                state.block_guarded(
                    &[e.net.to_string()],
                    Some(ttl),
                    Some(format!("{rule}: {}", e.reason)),
                    Some(GATEWAY_LIST),
                    &protected.with_trusted_proxies(&proxies),
                    OnLockout::Refuse,
                )
            })
        };
        // Lock wait, snapshot write and kernel update.
        let block_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match &result {
            Ok(_) => tracing::warn!(
                ip = %e.ip,
                net = %e.net,
                rule,
                ttl_secs = ttl,
                block_us,
                "gateway blocked a client in the kernel"
            ),
            Err(OpError::Lockout { message, .. }) => {
                tracing::warn!(ip = %e.ip, net = %e.net, rule, error = message, "gateway block refused by the lockout guard");
            }
            Err(err) => {
                tracing::error!(ip = %e.ip, net = %e.net, rule, error = %err, "gateway block failed");
            }
        }
        let outcome = match &result {
            Ok(_) => EscalationOutcome::Blocked,
            Err(OpError::Lockout { .. }) => EscalationOutcome::Refused,
            // A full table or a failed write: the guard did not refuse, the path failed.
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
