//! The list operations of the daemon: named lists replaced or updated as a whole (`import`,
//! watched files, CrowdSec, the push API), flushed, and listed with their health.

use super::guard::{Applied, OnLockout};
use super::ops::{ORIGIN_KERNEL_NAME, OpError, State, origin_of};
use crate::control::{CounterBody, FlushBody, ListsRowBody};
use crate::decisions::store::{Entry, OriginList};
use crate::kernel::clock;
use crate::lists::ListEntry;
use crate::model::Action;
use api_shield_common::state::{Counter, ORIGIN_KERNEL};
use ipnet::IpNet;
use std::sync::Arc;

fn entry_of(e: &ListEntry, now_ms: u64, forced: bool) -> Entry {
    Entry {
        reason: e.reason.as_deref().map(Arc::from),
        created_at_ms: now_ms,
        expires_at_ms: e.ttl.map(|t| clock::expiry_after(now_ms, t)),
        forced,
    }
}

/// Refuses entries whose TTL is beyond `max_ttl`, naming the first, as the CLI refuses a
/// `--ttl`: a list file or a feed must not slip in what a person could not type.
fn check_ttls(entries: &[ListEntry], max_ttl: std::time::Duration) -> Result<(), OpError> {
    match entries.iter().find(|e| e.ttl.is_some_and(|t| t > max_ttl)) {
        Some(e) => Err(OpError::Invalid(format!(
            "{}: a ttl of {} is longer than max_ttl ({}); nothing was applied",
            e.net,
            humantime::format_duration(e.ttl.unwrap_or_default()),
            humantime::format_duration(max_ttl)
        ))),
        None => Ok(()),
    }
}

impl State {
    /// Replaces list `name` whole with `entries`, atomically for packets, treating entries
    /// that would cut this host off as `on_lockout` says (`Refuse`: the error names each one).
    pub fn replace_list(
        &mut self,
        name: &str,
        source: &str,
        entries: &[ListEntry],
        on_lockout: OnLockout,
    ) -> Result<Applied, OpError> {
        let origin = origin_of(Some(name))?;
        check_ttls(entries, self.config.max_ttl)?;
        let screened = self.screen(entries, on_lockout)?;
        let now = clock::now_unix_ms();
        let mut list = OriginList::new(source, now);
        list.entries.reserve(entries.len());
        for (i, e) in entries.iter().enumerate() {
            if let Some(forced) = screened.keep(i) {
                list.entries
                    .insert((Action::Block, e.net), entry_of(e, now, forced));
            }
        }
        let mut next = self.store.clone();
        let revision = next.replace_origin(&origin, list);
        self.commit_changed(next, &[origin])?;
        Ok(screened.applied(revision))
    }

    /// Adds and removes entries of list `name` in one step. With `expected`, refuses the change
    /// when the list's revision moved since the writer read it.
    pub fn update_list(
        &mut self,
        name: &str,
        source: &str,
        expected: Option<u64>,
        add: &[ListEntry],
        remove: &[IpNet],
        on_lockout: OnLockout,
    ) -> Result<Applied, UpdateError> {
        let origin = origin_of(Some(name)).map_err(UpdateError::Op)?;
        let current = self.store.revision(&origin);
        if let Some(expected) = expected.filter(|e| *e != current) {
            return Err(UpdateError::Conflict { current, expected });
        }
        check_ttls(add, self.config.max_ttl).map_err(UpdateError::Op)?;
        let screened = self.screen(add, on_lockout).map_err(UpdateError::Op)?;
        let now = clock::now_unix_ms();
        let mut next = self.store.clone();
        let removals: Vec<(Action, IpNet)> = remove.iter().map(|n| (Action::Block, *n)).collect();
        let revision = next.update_origin(
            &origin,
            source,
            now,
            add.iter().enumerate().filter_map(|(i, e)| {
                let forced = screened.keep(i)?;
                Some(((Action::Block, e.net), entry_of(e, now, forced)))
            }),
            &removals,
        );
        self.commit_changed(next, &[origin])
            .map_err(UpdateError::Op)?;
        Ok(screened.applied(revision))
    }

    /// The health record of feed `name`, created on first use.
    pub fn feed_health(&mut self, name: &str) -> crate::feeds::SharedHealth {
        self.feeds.entry(name.to_string()).or_default().clone()
    }

    /// Empties list `name`.
    pub fn flush(&mut self, name: &str) -> Result<FlushBody, OpError> {
        let origin = origin_of(Some(name))?;
        let mut next = self.store.clone();
        let removed = next.drop_origin(&origin);
        self.commit_changed(next, std::slice::from_ref(&origin))?;
        Ok(FlushBody {
            list: origin,
            removed,
        })
    }

    /// Every origin with its size, source, last update, revision and kernel drops.
    pub fn lists(&self) -> Result<Vec<ListsRowBody>, OpError> {
        let drops = self
            .shield
            .origin_counters()
            .map_err(|e| OpError::Internal(e.to_string()))?;
        let ids = self.shield.origins();
        let counter = |c: &Counter| CounterBody {
            packets: c.packets,
            bytes: c.bytes,
        };
        let drops_of = |name: &str| {
            ids.get(name)
                .and_then(|id| drops.get(*id as usize))
                .map_or_else(CounterBody::default, counter)
        };
        let health_of = |h: &crate::feeds::SharedHealth| {
            h.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        };
        let mut out: Vec<ListsRowBody> = self
            .store
            .origins()
            .map(|(name, list)| ListsRowBody {
                name: name.to_owned(),
                entries: list.entries.len(),
                source: list.meta.source.clone(),
                updated_at_ms: Some(list.meta.updated_at_ms),
                revision: Some(list.meta.revision),
                drops: Some(drops_of(name)),
                // `null` for a list no feed fills: the key is always there for a stored list.
                feed: Some(self.feeds.get(name).map(health_of)),
            })
            .collect();
        for (name, health) in &self.feeds {
            if self.store.origin(name).is_none() {
                out.push(ListsRowBody {
                    name: name.clone(),
                    entries: 0,
                    source: "feed (nothing loaded yet)".to_owned(),
                    updated_at_ms: None,
                    revision: None,
                    drops: Some(drops_of(name)),
                    feed: Some(Some(health_of(health))),
                });
            }
        }
        out.push(ListsRowBody {
            name: ORIGIN_KERNEL_NAME.to_owned(),
            entries: self.shield.kernel.maps.auto_blocks().len(),
            source: "kernel auto-block".to_owned(),
            updated_at_ms: None,
            revision: None,
            drops: drops.get(ORIGIN_KERNEL as usize).map(counter),
            feed: None,
        });
        Ok(out)
    }
}

/// Why a list update was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("the list is at revision {current}, not {expected}")]
    Conflict { current: u64, expected: u64 },
    #[error(transparent)]
    Op(OpError),
}
