//! The `RULES` array: what a block slot points to. Entries share a rule whenever they share
//! origin and expiry, so a million entries from a few lists need only a handful of rules.
//!
//! The table outlives one compilation: a rule the live tables point to must keep its index
//! and content until they no longer do, so indices are only recycled through `retain`.

use super::TableError;
use api_shield_common::entry;
use api_shield_common::state::Rule;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Assigns RULES indices, deduplicated by (origin id, expires_at_ns). Index 0 is reserved
/// (never handed out) so a zeroed table slot can never name a real rule.
#[derive(Clone, Debug)]
pub struct RuleTable {
    capacity: u32,
    by_key: HashMap<(u32, u64), u32>,
    /// Every index in use; ordered so `rules()` lists them as the array holds them.
    slots: BTreeMap<u32, Rule>,
    /// Indices given back by `retain`, reused lowest first to keep the array dense.
    free: BTreeSet<u32>,
    /// Lowest index never handed out.
    next: u32,
}

/// Indices below this are never handed out.
const FIRST_INDEX: u32 = 1;

impl RuleTable {
    /// `capacity` is the size of the `RULES` array, slot 0 included.
    pub fn new(capacity: u32) -> Self {
        Self {
            capacity,
            by_key: HashMap::new(),
            slots: BTreeMap::new(),
            free: BTreeSet::new(),
            next: FIRST_INDEX,
        }
    }

    /// Takes over a `RULES` array as the kernel holds it (pinned by an earlier run), given as
    /// (index, rule) pairs, so tables still pointing into it stay right. All-zero slots are
    /// unused (no rule has the kernel's origin and no expiry), as are index 0 and indices the
    /// array cannot hold. A rule found twice keeps both indices in use, since either may be
    /// referenced; new entries are interned to the first.
    pub fn adopt(capacity: u32, rules: impl IntoIterator<Item = (u32, Rule)>) -> Self {
        let mut t = Self::new(capacity);
        for (index, rule) in rules {
            if index < FIRST_INDEX || !t.can_hold(index) || rule == Rule::default() {
                continue;
            }
            let rule = Rule { _pad: 0, ..rule };
            if t.slots.insert(index, rule).is_none() {
                t.by_key
                    .entry((rule.origin, rule.expires_at_ns))
                    .and_modify(|i| *i = (*i).min(index))
                    .or_insert(index);
            }
        }
        t.next = t.slots.keys().next_back().map_or(FIRST_INDEX, |&i| i + 1);
        t.free = (FIRST_INDEX..t.next)
            .filter(|i| !t.slots.contains_key(i))
            .collect();
        t
    }

    fn can_hold(&self, index: u32) -> bool {
        index < self.capacity && index <= entry::MAX_RULE
    }

    /// The index of the rule for `origin` expiring at `expires_at_ns` (0 = never), adding it
    /// if it is new.
    pub fn intern(&mut self, origin: u32, expires_at_ns: u64) -> Result<u32, TableError> {
        if let Some(&index) = self.by_key.get(&(origin, expires_at_ns)) {
            return Ok(index);
        }
        let index = match self.free.pop_first() {
            Some(i) => i,
            None if self.can_hold(self.next) => {
                self.next += 1;
                self.next - 1
            }
            None => {
                return Err(TableError::RulesExhausted {
                    limit: self.capacity,
                });
            }
        };
        self.by_key.insert((origin, expires_at_ns), index);
        self.slots.insert(
            index,
            Rule {
                expires_at_ns,
                origin,
                _pad: 0,
            },
        );
        Ok(index)
    }

    /// The index of the rule for `origin` expiring at `expires_at_ns`, if one is held.
    pub fn find(&self, origin: u32, expires_at_ns: u64) -> Option<u32> {
        self.by_key.get(&(origin, expires_at_ns)).copied()
    }

    /// Gives back every index not in `keep`, once nothing that will be read points to it any
    /// more; the next `intern` may hand it out with other content.
    pub fn retain(&mut self, keep: &HashSet<u32>) {
        let dropped: Vec<u32> = self
            .slots
            .keys()
            .copied()
            .filter(|i| !keep.contains(i))
            .collect();
        for index in dropped {
            if let Some(rule) = self.slots.remove(&index) {
                let key = (rule.origin, rule.expires_at_ns);
                // An adopted duplicate that stays is not promoted: the key is interned anew
                // if needed, which costs one slot until the duplicate is dropped in turn.
                if self.by_key.get(&key) == Some(&index) {
                    self.by_key.remove(&key);
                }
                self.free.insert(index);
            }
        }
    }

    /// (index, api_shield_common::state::Rule) for every interned rule
    pub fn rules(&self) -> impl Iterator<Item = (u32, Rule)> + '_ {
        self.slots.iter().map(|(&i, &r)| (i, r))
    }

    /// Every index in use.
    pub fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.keys().copied()
    }

    /// Number of rules in use (slot 0 not counted).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_shield_common::maps::DEFAULT_RULES;

    #[test]
    fn index_zero_is_never_handed_out() {
        let mut t = RuleTable::new(DEFAULT_RULES);
        let indices: Vec<u32> = (0..100u64).map(|e| t.intern(1, e).unwrap()).collect();
        assert!(!indices.contains(&0));
        assert_eq!(indices.first(), Some(&1));
        assert!(t.rules().all(|(i, _)| i != 0));
    }

    #[test]
    fn same_origin_and_expiry_share_one_rule() {
        let mut t = RuleTable::new(DEFAULT_RULES);
        let a = t.intern(3, 1_000).unwrap();
        let b = t.intern(3, 1_000).unwrap();
        assert_eq!(a, b);
        assert_eq!(t.len(), 1);
        // Either part differing makes another rule.
        let c = t.intern(3, 2_000).unwrap();
        let d = t.intern(4, 1_000).unwrap();
        let e = t.intern(3, 0).unwrap();
        let mut all = vec![a, c, d, e];
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 4);
        assert_eq!(t.len(), 4);
        // Re-interning after others were added still finds the first.
        assert_eq!(t.intern(3, 1_000).unwrap(), a);
    }

    #[test]
    fn rules_report_what_was_interned_at_its_index() {
        let mut t = RuleTable::new(DEFAULT_RULES);
        let keys = [(1u32, 0u64), (2, 5_000), (1, 9_000), (7, 0)];
        let idx: Vec<u32> = keys.iter().map(|&(o, e)| t.intern(o, e).unwrap()).collect();
        let listed: HashMap<u32, Rule> = t.rules().collect();
        assert_eq!(listed.len(), keys.len());
        for (&(origin, expires_at_ns), i) in keys.iter().zip(idx) {
            assert_eq!(
                listed[&i],
                Rule {
                    expires_at_ns,
                    origin,
                    _pad: 0
                }
            );
        }
    }

    #[test]
    fn exhaustion_is_an_error_and_leaves_the_table_usable() {
        // Three slots: 0 is reserved, so two rules fit.
        let mut t = RuleTable::new(3);
        assert_eq!(t.intern(1, 1).unwrap(), 1);
        assert_eq!(t.intern(1, 2).unwrap(), 2);
        let err = t.intern(1, 3).unwrap_err();
        assert!(
            matches!(err, TableError::RulesExhausted { limit: 3 }),
            "{err:?}"
        );
        assert!(err.to_string().contains("raise rules"), "{err}");
        assert_eq!(t.len(), 2);
        // Known rules are still found once full.
        assert_eq!(t.intern(1, 2).unwrap(), 2);
    }

    #[test]
    fn tables_too_small_for_any_rule_refuse_the_first() {
        for capacity in [0, 1] {
            let mut t = RuleTable::new(capacity);
            assert!(t.is_empty());
            assert!(matches!(
                t.intern(1, 0),
                Err(TableError::RulesExhausted { limit }) if limit == capacity
            ));
            assert_eq!(t.rules().count(), 0);
        }
    }

    #[test]
    fn indices_are_dense_and_stay_within_the_capacity() {
        let capacity = 1_000;
        let mut t = RuleTable::new(capacity);
        let mut handed = Vec::new();
        for e in 0.. {
            match t.intern(9, e) {
                Ok(i) => handed.push(i),
                Err(_) => break,
            }
        }
        assert_eq!(handed, (1..capacity).collect::<Vec<_>>());
        assert_eq!(t.capacity(), capacity);
    }

    fn rule(origin: u32, expires_at_ns: u64) -> Rule {
        Rule {
            expires_at_ns,
            origin,
            _pad: 0,
        }
    }

    #[test]
    fn retain_keeps_indices_in_use_and_recycles_the_rest_lowest_first() {
        let mut t = RuleTable::new(DEFAULT_RULES);
        let idx: Vec<u32> = (1..=5u64).map(|e| t.intern(1, e).unwrap()).collect();
        assert_eq!(idx, [1, 2, 3, 4, 5]);
        t.retain(&HashSet::from([2, 5]));
        assert_eq!(t.indices().collect::<Vec<_>>(), [2, 5]);
        assert_eq!(t.len(), 2);
        // Kept rules keep index and content, and are still found.
        assert_eq!(t.intern(1, 2).unwrap(), 2);
        assert_eq!(t.intern(1, 5).unwrap(), 5);
        assert_eq!(
            t.rules().collect::<Vec<_>>(),
            [(2, rule(1, 2)), (5, rule(1, 5))]
        );
        // Dropped keys are forgotten; their indices come back lowest first, then new ones.
        assert_eq!(t.intern(1, 1).unwrap(), 1);
        assert_eq!(t.intern(9, 9).unwrap(), 3);
        assert_eq!(t.intern(9, 10).unwrap(), 4);
        assert_eq!(t.intern(9, 11).unwrap(), 6);
        assert_eq!(t.rules().find(|&(i, _)| i == 3), Some((3, rule(9, 9))));
    }

    #[test]
    fn retain_makes_room_in_a_full_table() {
        let mut t = RuleTable::new(3);
        t.intern(1, 1).unwrap();
        t.intern(1, 2).unwrap();
        assert!(t.intern(1, 3).is_err());
        t.retain(&HashSet::from([2]));
        assert_eq!(t.intern(1, 3).unwrap(), 1);
        assert!(t.intern(1, 4).is_err());
    }

    #[test]
    fn adopt_takes_over_the_rules_a_kernel_array_holds() {
        // As read from a pinned array of 8 slots: slot 0 garbage, holes, a duplicate.
        let array = [
            rule(5, 5),
            rule(1, 0),
            Rule::default(),
            rule(2, 7_000),
            rule(1, 0),
            Rule::default(),
            rule(3, 9),
            Rule::default(),
        ];
        let mut t = RuleTable::adopt(8, (0u32..).zip(array));
        assert_eq!(t.indices().collect::<Vec<_>>(), [1, 3, 4, 6]);
        assert_eq!(t.rules().find(|&(i, _)| i == 3), Some((3, rule(2, 7_000))));
        // Known rules are found where the kernel has them; a duplicate goes to the first.
        assert_eq!(t.intern(2, 7_000).unwrap(), 3);
        assert_eq!(t.intern(1, 0).unwrap(), 1);
        assert_eq!(t.intern(3, 9).unwrap(), 6);
        // New rules fill the holes, then go past the highest adopted index.
        assert_eq!(t.intern(4, 1).unwrap(), 2);
        assert_eq!(t.intern(4, 2).unwrap(), 5);
        assert_eq!(t.intern(4, 3).unwrap(), 7);
        assert!(matches!(
            t.intern(4, 4),
            Err(TableError::RulesExhausted { limit: 8 })
        ));
    }

    #[test]
    fn adopt_drops_what_the_capacity_cannot_hold() {
        let t = RuleTable::adopt(4, [(1, rule(1, 1)), (3, rule(1, 3)), (4, rule(1, 4))]);
        assert_eq!(t.indices().collect::<Vec<_>>(), [1, 3]);
        let t = RuleTable::adopt(DEFAULT_RULES, []);
        assert!(t.is_empty());
    }

    #[test]
    fn a_dropped_duplicate_owner_leaves_the_other_copy_in_use() {
        let mut t = RuleTable::adopt(DEFAULT_RULES, [(1, rule(1, 0)), (2, rule(1, 0))]);
        t.retain(&HashSet::from([2]));
        assert_eq!(t.indices().collect::<Vec<_>>(), [2]);
        // Interning again never hands out an index still in use for other content.
        let i = t.intern(1, 0).unwrap();
        assert!(i == 1 || i == 2, "{i}");
        let j = t.intern(7, 7).unwrap();
        assert_ne!(j, 2);
        assert_ne!(j, i);
    }
}
