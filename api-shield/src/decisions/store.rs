//! All decisions, keyed by (action, prefix, origin): each origin owns its entries, so one
//! origin's change never touches another's, and re-adding an entry is idempotent.

use crate::model::{Action, Decision};
use ipnet::IpNet;
use std::collections::BTreeMap;

type Key = (Action, IpNet, String);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Store {
    entries: BTreeMap<Key, Decision>,
}

impl Store {
    pub fn from_decisions(decisions: impl IntoIterator<Item = Decision>) -> Self {
        let mut s = Self::default();
        for d in decisions {
            s.upsert(d);
        }
        s
    }

    fn key(d: &Decision) -> Key {
        (d.action, d.net, d.origin.clone())
    }

    /// Adds or replaces (same action, prefix and origin). Returns the replaced decision.
    pub fn upsert(&mut self, d: Decision) -> Option<Decision> {
        self.entries.insert(Self::key(&d), d)
    }

    /// Removes `net`'s `action` entries of `origin` (or of every origin when `None`).
    pub fn remove(&mut self, action: Action, net: &IpNet, origin: Option<&str>) -> Vec<Decision> {
        let keys: Vec<Key> = self
            .entries
            .keys()
            .filter(|(a, n, o)| *a == action && n == net && origin.is_none_or(|want| want == o))
            .cloned()
            .collect();
        keys.iter().filter_map(|k| self.entries.remove(k)).collect()
    }

    pub fn remove_expired(&mut self, now_ms: u64) -> Vec<Decision> {
        let keys: Vec<Key> = self
            .entries
            .iter()
            .filter(|(_, d)| d.is_expired(now_ms))
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter().filter_map(|k| self.entries.remove(k)).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Decision> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries of `net` with `action` from any origin.
    pub fn find(&self, action: Action, net: &IpNet) -> Vec<&Decision> {
        self.entries
            .values()
            .filter(|d| d.action == action && d.net == *net)
            .collect()
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
}
