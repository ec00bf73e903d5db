//! The daemon's [`Escalator`]: a firing detector rule becomes a kernel block (of the prefix the
//! detector counted the client under) through the same decision path as
//! `api-shield block --list gateway` (snapshot first, then the kernel), audited with the rule
//! as its reason. The lockout guard refuses a prefix that covers this host, a management
//! prefix or a trusted proxy (blocking one cuts off everyone behind it): counted as
//! `refused`, logged and audited.

use super::handler::audit_self;
use super::ops::{BlockOptions, OpError, State};
use crate::audit::AuditLog;
use crate::gateway::Escalator;
use crate::gateway::escalate::{EscalationOutcome, GATEWAY_LIST};
use crate::policy::Escalation;
use serde_json::json;
use std::sync::{Arc, Mutex, PoisonError};

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
                let opts = BlockOptions {
                    ttl_secs: Some(ttl),
                    reason: Some(format!("{rule}: {}", e.reason)),
                    list: Some(GATEWAY_LIST.to_owned()),
                    force: false,
                };
                state.block_guarded(&[e.net], opts, &protected.with_trusted_proxies(&proxies))
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
            result.map_or_else(|e| json!(e.to_string()), |blocked| json!(blocked)),
        );
        outcome
    }
}
