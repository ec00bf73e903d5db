//! An in-memory backend that keeps what a daemon would, and counts what it was asked.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{Value, json};

use crate::lists::ListEntry;
use crate::push::{BatchError, PushBackend};

#[derive(Default)]
struct List {
    revision: u64,
    entries: BTreeMap<IpNet, ListEntry>,
}

#[derive(Default)]
pub(super) struct FakeBackend {
    lists: Mutex<BTreeMap<String, List>>,
    applies: AtomicUsize,
    actors: Mutex<Vec<String>>,
    /// Returned by the next `apply` instead of applying.
    refusal: Mutex<Option<BatchError>>,
    /// How long each `apply` takes, as a slow kernel update would.
    delay: Mutex<Duration>,
}

impl FakeBackend {
    /// How often `apply` was called, refused calls included.
    pub(super) fn applies(&self) -> usize {
        self.applies.load(Ordering::SeqCst)
    }

    pub(super) fn actors(&self) -> Vec<String> {
        self.actors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn slow_down(&self, delay: Duration) {
        *self.delay.lock().unwrap_or_else(PoisonError::into_inner) = delay;
    }

    pub(super) fn refuse_next(&self, error: BatchError) {
        *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
    }
}

impl PushBackend for FakeBackend {
    fn revision(&self, list: &str) -> (u64, usize) {
        let lists = self.lists.lock().unwrap_or_else(PoisonError::into_inner);
        lists
            .get(list)
            .map_or((0, 0), |l| (l.revision, l.entries.len()))
    }

    fn apply(
        &self,
        list: &str,
        expected: u64,
        add: Vec<ListEntry>,
        remove: Vec<IpNet>,
        actor: &str,
    ) -> Result<u64, BatchError> {
        self.applies.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(*self.delay.lock().unwrap_or_else(PoisonError::into_inner));
        self.actors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(actor.to_owned());
        if let Some(error) = self
            .refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(error);
        }
        // Check and apply under one lock, as the daemon must.
        let mut lists = self.lists.lock().unwrap_or_else(PoisonError::into_inner);
        let current = lists.get(list).map_or(0, |l| l.revision);
        if current != expected {
            return Err(BatchError::Conflict { current });
        }
        let target = lists.entry(list.to_owned()).or_default();
        for entry in add {
            target.entries.insert(entry.net, entry);
        }
        for net in remove {
            target.entries.remove(&net);
        }
        target.revision += 1;
        Ok(target.revision)
    }

    fn entries(&self, list: &str) -> Option<(u64, Vec<Value>)> {
        let lists = self.lists.lock().unwrap_or_else(PoisonError::into_inner);
        let list = lists.get(list)?;
        let entries = list
            .entries
            .values()
            .map(|e| {
                json!({
                    "net": e.net.to_string(),
                    "ttl_secs": e.ttl.map(|t| t.as_secs()),
                    "reason": e.reason,
                })
            })
            .collect();
        Some((list.revision, entries))
    }

    fn lists(&self) -> Vec<Value> {
        let lists = self.lists.lock().unwrap_or_else(PoisonError::into_inner);
        lists
            .iter()
            .map(|(name, l)| json!({"name": name, "revision": l.revision, "size": l.entries.len()}))
            .collect()
    }
}
