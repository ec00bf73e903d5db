//! All decisions, grouped by origin (the CLI, a named list, a feed, the gateway). Each origin
//! owns its entries and has its own revision, so one origin's change never touches another's
//! and re-adding an entry is idempotent.
//!
//! Origins are shared copy-on-write: the daemon prepares the next state as a cheap clone,
//! changes only the origins concerned, and swaps it in once the kernel has taken it, so a
//! refused change leaves the current state untouched without copying a million entries.

use crate::model::{Action, Decision, DecisionRef};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One entry of an origin, keyed by (action, prefix) in its list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Arc<str>>,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// A person blocked this past the lockout guard (`--force`): a restore keeps it even
    /// though it covers this host or a management prefix.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

/// What is known of an origin besides its entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginMeta {
    /// Where its entries come from (`cli`, a file path, a feed URL, `push api`).
    pub source: String,
    pub updated_at_ms: u64,
    /// Bumped by every change, so concurrent writers notice each other.
    pub revision: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginList {
    pub meta: OriginMeta,
    pub entries: HashMap<(Action, IpNet), Entry>,
}

impl OriginList {
    pub fn new(source: &str, now_ms: u64) -> Self {
        Self {
            meta: OriginMeta {
                source: source.to_string(),
                updated_at_ms: now_ms,
                revision: 0,
            },
            entries: HashMap::new(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Store {
    origins: BTreeMap<String, Arc<OriginList>>,
}

impl Store {
    pub fn from_decisions(decisions: impl IntoIterator<Item = Decision>) -> Self {
        let mut s = Self::default();
        for d in decisions {
            s.upsert(d);
        }
        s
    }

    fn touch(&mut self, origin: &str, source: &str, now_ms: u64) -> &mut OriginList {
        let list = self
            .origins
            .entry(origin.to_string())
            .or_insert_with(|| Arc::new(OriginList::new(source, now_ms)));
        let list = Arc::make_mut(list);
        list.meta.updated_at_ms = now_ms.max(list.meta.updated_at_ms);
        list.meta.revision = list.meta.revision.saturating_add(1);
        list
    }

    /// Adds or replaces (same action, prefix and origin). Returns the replaced decision.
    pub fn upsert(&mut self, d: Decision) -> Option<Decision> {
        let origin = d.origin.clone();
        let list = self.touch(&origin, &origin, d.created_at_ms);
        let old = list.entries.insert(
            (d.action, d.net),
            Entry {
                reason: d.reason.map(Arc::from),
                created_at_ms: d.created_at_ms,
                expires_at_ms: d.expires_at_ms,
                forced: false,
            },
        );
        old.map(|e| to_decision(&origin, d.action, d.net, &e))
    }

    /// Marks `net`'s `action` entry of `origin` as forced past the lockout guard.
    pub fn mark_forced(&mut self, origin: &str, action: Action, net: &IpNet) {
        if let Some(list) = self.origins.get_mut(origin)
            && let Some(entry) = Arc::make_mut(list).entries.get_mut(&(action, *net))
        {
            entry.forced = true;
        }
    }

    /// Replaces origin `name` whole; returns its new revision.
    pub fn replace_origin(&mut self, name: &str, mut list: OriginList) -> u64 {
        let revision = self.revision(name).saturating_add(1);
        list.meta.revision = revision;
        self.origins.insert(name.to_string(), Arc::new(list));
        revision
    }

    /// Adds and removes entries of origin `name` in one step; returns its new revision.
    pub fn update_origin(
        &mut self,
        name: &str,
        source: &str,
        now_ms: u64,
        add: impl IntoIterator<Item = ((Action, IpNet), Entry)>,
        remove: &[(Action, IpNet)],
    ) -> u64 {
        let list = self.touch(name, source, now_ms);
        list.meta.source = source.to_string();
        for key in remove {
            list.entries.remove(key);
        }
        list.entries.extend(add);
        list.meta.revision
    }

    /// Empties origin `name`; returns how many entries it had.
    pub fn drop_origin(&mut self, name: &str) -> usize {
        self.origins.remove(name).map_or(0, |l| l.entries.len())
    }

    /// Sets the revision of a restored origin (see `snapshot`).
    pub fn set_revision(&mut self, name: &str, revision: u64) {
        if let Some(list) = self.origins.get_mut(name) {
            Arc::make_mut(list).meta.revision = revision;
        }
    }

    pub fn revision(&self, name: &str) -> u64 {
        self.origins.get(name).map_or(0, |l| l.meta.revision)
    }

    pub fn origin(&self, name: &str) -> Option<&OriginList> {
        self.origins.get(name).map(AsRef::as_ref)
    }

    pub fn origins(&self) -> impl Iterator<Item = (&str, &OriginList)> {
        self.origins.iter().map(|(n, l)| (n.as_str(), l.as_ref()))
    }

    /// Removes `net`'s `action` entries of `origin` (or of every origin when `None`).
    pub fn remove(&mut self, action: Action, net: &IpNet, origin: Option<&str>) -> Vec<Decision> {
        let names: Vec<String> = self
            .origins
            .iter()
            .filter(|(n, l)| {
                origin.is_none_or(|o| o == n.as_str()) && l.entries.contains_key(&(action, *net))
            })
            .map(|(n, _)| n.clone())
            .collect();
        let mut removed = Vec::new();
        for name in names {
            let list = self.touch(&name, &name, 0);
            if let Some(e) = list.entries.remove(&(action, *net)) {
                removed.push(to_decision(&name, action, *net, &e));
            }
        }
        removed
    }

    /// Removes what has expired. Only origins holding an expired entry are copied.
    pub fn remove_expired(&mut self, now_ms: u64) -> Vec<Decision> {
        let names: Vec<String> = self
            .origins
            .iter()
            .filter(|(_, l)| {
                l.entries
                    .values()
                    .any(|e| e.expires_at_ms.is_some_and(|t| t <= now_ms))
            })
            .map(|(n, _)| n.clone())
            .collect();
        let mut removed = Vec::new();
        for name in names {
            let list = self.touch(&name, &name, now_ms);
            list.entries.retain(|(action, net), e| {
                let expired = e.expires_at_ms.is_some_and(|t| t <= now_ms);
                if expired {
                    removed.push(to_decision(&name, *action, *net, e));
                }
                !expired
            });
        }
        removed
    }

    pub fn iter(&self) -> impl Iterator<Item = DecisionRef<'_>> {
        self.origins.iter().flat_map(|(name, list)| {
            list.entries
                .iter()
                .map(move |((action, net), e)| DecisionRef {
                    net: *net,
                    action: *action,
                    origin: name.as_str(),
                    reason: e.reason.as_deref(),
                    created_at_ms: e.created_at_ms,
                    expires_at_ms: e.expires_at_ms,
                })
        })
    }

    pub fn len(&self) -> usize {
        self.origins.values().map(|l| l.entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries of `net` with `action` from any origin.
    pub fn find(&self, action: Action, net: &IpNet) -> Vec<Decision> {
        self.origins
            .iter()
            .filter_map(|(n, l)| {
                l.entries
                    .get(&(action, *net))
                    .map(|e| to_decision(n, action, *net, e))
            })
            .collect()
    }

    /// Names of origins whose content differs between `self` and `other` (cheap: shared
    /// origins are compared by pointer first).
    pub fn changed_origins(&self, other: &Store) -> Vec<String> {
        let mut names: Vec<String> = self
            .origins
            .iter()
            .filter(|(n, l)| {
                other
                    .origins
                    .get(*n)
                    .is_none_or(|o| !Arc::ptr_eq(o, l) && o != *l)
            })
            .map(|(n, _)| n.clone())
            .collect();
        names.extend(
            other
                .origins
                .keys()
                .filter(|n| !self.origins.contains_key(*n))
                .cloned(),
        );
        names
    }
}

fn to_decision(origin: &str, action: Action, net: IpNet, e: &Entry) -> Decision {
    Decision {
        net,
        action,
        origin: origin.to_string(),
        reason: e.reason.as_deref().map(str::to_string),
        created_at_ms: e.created_at_ms,
        expires_at_ms: e.expires_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(net: &str, origin: &str, expires: Option<u64>) -> Decision {
        Decision {
            net: net.parse().unwrap(),
            action: Action::Block,
            origin: origin.into(),
            reason: None,
            created_at_ms: 1,
            expires_at_ms: expires,
        }
    }

    #[test]
    fn same_entry_twice_is_idempotent() {
        let mut s = Store::default();
        assert!(s.upsert(block("198.18.0.1/32", "cli", None)).is_none());
        assert!(s.upsert(block("198.18.0.1/32", "cli", Some(5))).is_some());
        assert_eq!(s.len(), 1);
        assert_eq!(s.iter().next().unwrap().expires_at_ms, Some(5));
    }

    #[test]
    fn origins_own_their_entries() {
        let mut s = Store::default();
        s.upsert(block("198.18.0.1/32", "cli", None));
        s.upsert(block("198.18.0.1/32", "feed", None));
        let net = "198.18.0.1/32".parse().unwrap();
        assert_eq!(s.remove(Action::Block, &net, Some("cli")).len(), 1);
        assert_eq!(s.find(Action::Block, &net).len(), 1);
        assert_eq!(s.remove(Action::Allow, &net, None).len(), 0);
        assert_eq!(s.remove(Action::Block, &net, None).len(), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn expired_entries_are_removed() {
        let mut s = Store::default();
        s.upsert(block("198.18.0.1/32", "cli", Some(100)));
        s.upsert(block("198.18.0.2/32", "cli", Some(300)));
        s.upsert(block("198.18.0.3/32", "cli", None));
        assert_eq!(s.remove_expired(200).len(), 1);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn clones_share_untouched_origins_and_revisions_move() {
        let mut s = Store::default();
        s.upsert(block("198.18.0.1/32", "big", None));
        s.upsert(block("198.18.0.2/32", "cli", None));
        let r = s.revision("cli");
        let mut next = s.clone();
        next.upsert(block("198.18.0.3/32", "cli", None));
        assert_eq!(next.revision("cli"), r + 1);
        assert_eq!(s.revision("cli"), r, "the original is untouched");
        assert_eq!(next.changed_origins(&s), vec!["cli".to_string()]);
        let mut replaced = OriginList::new("file", 9);
        replaced.entries.insert(
            (Action::Block, "198.18.7.0/24".parse().unwrap()),
            Entry {
                reason: None,
                created_at_ms: 9,
                expires_at_ms: None,
                forced: false,
            },
        );
        let rev = next.replace_origin("big", replaced);
        assert_eq!(rev, s.revision("big") + 1);
        assert_eq!(next.origin("big").unwrap().entries.len(), 1);
        assert_eq!(next.drop_origin("big"), 1);
        let mut changed = next.changed_origins(&s);
        changed.sort();
        assert_eq!(changed, vec!["big".to_string(), "cli".to_string()]);
    }
}
