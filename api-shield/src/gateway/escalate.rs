//! The daemon's [`Escalator`]: a firing detector rule becomes a kernel block through the same
//! decision path as `api-shield block --list gateway` (snapshot first, then the kernel),
//! audited with the rule as its reason.

use super::Escalator;
use crate::audit::AuditLog;
use crate::daemon::handler::audit_self;
use crate::daemon::ops::{OpError, State};
use crate::policy::Escalation;
use serde_json::json;
use std::sync::{Arc, Mutex, PoisonError};

/// The list (origin) of every gateway block.
pub const GATEWAY_LIST: &str = "gateway";

pub struct StateEscalator {
    pub state: Arc<Mutex<State>>,
    pub audit: Arc<AuditLog>,
}

impl Escalator for StateEscalator {
    fn escalate(&self, e: &Escalation) {
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
            return;
        }
        let ttl = e.ttl.as_secs().max(1);
        let started = std::time::Instant::now();
        let result = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .block(
                &[e.ip.to_string()],
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
        audit_self(
            &self.audit,
            "gateway_escalate",
            args,
            result.is_ok(),
            result.unwrap_or_else(|e| json!(e.to_string())),
        );
    }
}
