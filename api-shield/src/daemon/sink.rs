//! The daemon's side of feeds: every feed change goes through the same decision path as the
//! CLI (snapshot first, then the kernel), and is audited with the feed as its author.

use super::handler::audit_self;
use super::ops::State;
use crate::audit::AuditLog;
use crate::feeds::FeedSink;
use crate::lists::ListEntry;
use ipnet::IpNet;
use serde_json::json;
use std::sync::{Arc, Mutex, PoisonError};

pub struct StateSink {
    pub state: Arc<Mutex<State>>,
    pub audit: Arc<AuditLog>,
}

impl FeedSink for StateSink {
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

    fn replace(&self, origin: &str, source: &str, entries: Vec<ListEntry>) -> Result<(), String> {
        let count = entries.len();
        let result = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace_list(origin, source, &entries)
            .map_err(|e| e.to_string());
        audit_self(
            &self.audit,
            "feed_replace",
            json!({"list": origin, "source": source, "entries": count}),
            result.is_ok(),
            result
                .as_ref()
                .map_or_else(|e| json!(e), |rev| json!({"revision": rev})),
        );
        result.map(|_| ())
    }

    fn update(
        &self,
        origin: &str,
        source: &str,
        add: Vec<ListEntry>,
        remove: Vec<IpNet>,
    ) -> Result<(), String> {
        let result = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update_list(origin, source, None, &add, &remove)
            .map_err(|e| e.to_string());
        audit_self(
            &self.audit,
            "feed_update",
            json!({"list": origin, "source": source, "added": add.len(), "removed": remove.len()}),
            result.is_ok(),
            result
                .as_ref()
                .map_or_else(|e| json!(e), |rev| json!({"revision": rev})),
        );
        result.map(|_| ())
    }
}

/// The push API's view of the daemon: batches go through the same decision path, each one
/// checked against the list's revision.
impl crate::push::PushBackend for StateSink {
    fn revision(&self, list: &str) -> (u64, usize) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
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
    ) -> Result<u64, crate::push::BatchError> {
        use super::ops::{OpError, UpdateError};
        use crate::push::BatchError;
        let result = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update_list(list, actor, Some(expected), &add, &remove);
        audit_self(
            &self.audit,
            "push_batch",
            json!({"list": list, "actor": actor, "expected_revision": expected, "added": add.len(), "removed": remove.len()}),
            result.is_ok(),
            match &result {
                Ok(rev) => json!({"revision": rev}),
                Err(e) => json!(e.to_string()),
            },
        );
        result.map_err(|e| match e {
            UpdateError::Conflict { current, .. } => BatchError::Conflict { current },
            UpdateError::Op(OpError::Invalid(m)) => BatchError::Invalid(m),
            UpdateError::Op(OpError::Refused(m)) => BatchError::Capacity(m),
            UpdateError::Op(OpError::Internal(m)) => BatchError::Internal(m),
        })
    }

    fn entries(&self, list: &str) -> Option<(u64, Vec<serde_json::Value>)> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
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
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .store
            .origins()
            .map(|(name, l)| json!({"name": name, "revision": l.meta.revision, "entries": l.entries.len(), "source": l.meta.source, "updated_at_ms": l.meta.updated_at_ms}))
            .collect()
    }
}
