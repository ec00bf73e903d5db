//! The daemon's side of feeds: every feed change goes through the same decision path as the
//! CLI (snapshot first, then the kernel), and is audited with the feed as its author. Entries
//! that would cut this host off are left out of a feed's list and counted in its health; a
//! push batch holding one is refused whole.

use super::guard::{Applied, OnLockout};
use super::handler::audit_self;
use super::ops::{OpError, State, UpdateError};
use crate::audit::AuditLog;
use crate::feeds::{FeedSink, SinkError};
use crate::lists::ListEntry;
use crate::push::BatchError;
use ipnet::IpNet;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

pub struct StateSink {
    pub state: Arc<Mutex<State>>,
    pub audit: Arc<AuditLog>,
}

impl StateSink {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts and logs what the guard left out of feed `origin`; the audit detail of the change.
fn feed_outcome<E: std::fmt::Display>(
    state: &mut State,
    origin: &str,
    result: &Result<Applied, E>,
) -> Value {
    match result {
        Ok(applied) => {
            for c in &applied.skipped {
                tracing::warn!(
                    list = origin,
                    net = %c.net,
                    why = %c,
                    "feed entry not enforced: it would cut this host off"
                );
            }
            state
                .feed_health(origin)
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record_lockout_skips(&applied.skipped);
            json!({
                "revision": applied.revision,
                "lockout_skipped": applied.skipped.iter().map(|c| c.net).collect::<Vec<_>>(),
            })
        }
        Err(e) => json!(e.to_string()),
    }
}

impl FeedSink for StateSink {
    fn max_ttl(&self) -> Option<std::time::Duration> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Some(state.config.max_ttl)
    }

    fn current_len(&self, origin: &str) -> Option<usize> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Some(state.store.origin(origin).map_or(0, |l| l.entries.len()))
    }

    fn refused(&self, origin: &str, source: &str, why: &str) {
        audit_self(
            &self.audit,
            "feed_refused",
            json!({"list": origin, "source": source}),
            false,
            json!(why),
        );
    }

    fn replace(
        &self,
        origin: &str,
        source: &str,
        entries: Vec<ListEntry>,
    ) -> Result<(), SinkError> {
        let count = entries.len();
        let detail;
        let result = {
            let mut state = self.lock();
            let result = state.replace_list(origin, source, &entries, OnLockout::Skip);
            detail = feed_outcome(&mut state, origin, &result);
            result
        };
        audit_self(
            &self.audit,
            "feed_replace",
            json!({"list": origin, "source": source, "entries": count}),
            result.is_ok(),
            detail,
        );
        result.map(|_| ()).map_err(|e| SinkError(e.to_string()))
    }

    fn update(
        &self,
        origin: &str,
        source: &str,
        add: Vec<ListEntry>,
        remove: Vec<IpNet>,
    ) -> Result<(), SinkError> {
        let detail;
        let result = {
            let mut state = self.lock();
            let result = state.update_list(origin, source, None, &add, &remove, OnLockout::Skip);
            detail = feed_outcome(&mut state, origin, &result);
            result
        };
        audit_self(
            &self.audit,
            "feed_update",
            json!({"list": origin, "source": source, "added": add.len(), "removed": remove.len()}),
            result.is_ok(),
            detail,
        );
        result.map(|_| ()).map_err(|e| SinkError(e.to_string()))
    }
}

/// The push API's view of the daemon: batches go through the same decision path, each one
/// checked against the list's revision.
impl crate::push::PushBackend for StateSink {
    fn revision(&self, list: &str) -> (u64, usize) {
        let state = self.lock();
        let size = state.store.origin(list).map_or(0, |l| l.entries.len());
        (state.store.revision(list), size)
    }

    fn apply(
        &self,
        list: &str,
        expected: u64,
        add: Vec<ListEntry>,
        remove: Vec<IpNet>,
        actor: &str,
    ) -> Result<u64, BatchError> {
        let result = self.lock().update_list(
            list,
            actor,
            Some(expected),
            &add,
            &remove,
            OnLockout::Refuse,
        );
        audit_self(
            &self.audit,
            "push_batch",
            json!({"list": list, "actor": actor, "expected_revision": expected, "added": add.len(), "removed": remove.len()}),
            result.is_ok(),
            match &result {
                Ok(applied) => json!({"revision": applied.revision}),
                Err(e) => json!(e.to_string()),
            },
        );
        result.map(|a| a.revision).map_err(|e| match e {
            UpdateError::Conflict { current, .. } => BatchError::Conflict { current },
            UpdateError::Op(OpError::Lockout { refused, .. }) => {
                // Named by its place in the batch, as a malformed entry is.
                let first = refused.refused.first().map(|c| c.net);
                let index = first.and_then(|net| add.iter().position(|e| e.net == net));
                BatchError::Lockout {
                    index: index.unwrap_or_default(),
                    message: format!(
                        "{refused}; a pushed list may not cut this host off, nothing was applied"
                    ),
                }
            }
            UpdateError::Op(OpError::Invalid(m)) => BatchError::Invalid(m),
            UpdateError::Op(OpError::Refused(m)) => BatchError::Capacity(m),
            UpdateError::Op(OpError::Internal(m)) => BatchError::Internal(m),
        })
    }

    fn entries(&self, list: &str) -> Option<(u64, Vec<serde_json::Value>)> {
        let state = self.lock();
        let origin = state.store.origin(list)?;
        let entries = origin
            .entries
            .iter()
            .map(|((action, net), e)| {
                json!({"net": net, "action": action, "reason": e.reason.as_deref(), "created_at_ms": e.created_at_ms, "expires_at_ms": e.expires_at_ms})
            })
            .collect();
        Some((origin.meta.revision, entries))
    }

    fn lists(&self) -> Vec<serde_json::Value> {
        let state = self.lock();
        state
            .store
            .origins()
            .map(|(name, l)| json!({"name": name, "revision": l.meta.revision, "entries": l.entries.len(), "source": l.meta.source, "updated_at_ms": l.meta.updated_at_ms}))
            .collect()
    }
}
