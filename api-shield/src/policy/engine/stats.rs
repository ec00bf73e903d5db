//! The engine's request counters, kept across reloads.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::super::decision::{AccessDecision, Verdict};
use super::Engine;

/// Request counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Allowed (including dry-run passes).
    pub allowed: u64,
    /// 401s.
    pub unauthorized: u64,
    /// 403s.
    pub forbidden: u64,
    /// 429s.
    pub throttled: u64,
    /// Denials not applied because of dry-run.
    pub dry_run_would_deny: u64,
    /// Escalations produced.
    pub escalations: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    allowed: AtomicU64,
    unauthorized: AtomicU64,
    forbidden: AtomicU64,
    throttled: AtomicU64,
    dry_run: AtomicU64,
    pub(super) escalations: AtomicU64,
}

impl Engine {
    /// Request counters since the first engine of this lineage (kept across reloads).
    pub fn stats(&self) -> EngineStats {
        let c = &self.counters;
        EngineStats {
            allowed: c.allowed.load(Ordering::Relaxed),
            unauthorized: c.unauthorized.load(Ordering::Relaxed),
            forbidden: c.forbidden.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            dry_run_would_deny: c.dry_run.load(Ordering::Relaxed),
            escalations: c.escalations.load(Ordering::Relaxed),
        }
    }

    pub(super) fn count(&self, d: &AccessDecision) {
        let c = &self.counters;
        let counter = match d.verdict {
            Verdict::Allow => &c.allowed,
            Verdict::Deny { status: 401, .. } => &c.unauthorized,
            Verdict::Deny { status: 429, .. } => &c.throttled,
            Verdict::Deny { .. } => &c.forbidden,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if d.dry_run_would_deny.is_some() {
            c.dry_run.fetch_add(1, Ordering::Relaxed);
        }
        c.escalations
            .fetch_add(d.escalations.len() as u64, Ordering::Relaxed);
    }
}
