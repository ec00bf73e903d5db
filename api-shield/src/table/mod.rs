//! Compiles allow and block decisions into the layouts the kernel reads, with no kernel
//! involved, so every rule of precedence is unit-tested here and the loader only copies bytes.
//!
//! The kernel answers one lookup per packet and, for a block, reads one rule (its expiry).
//! So the table must already hold, for every address, the single entry that decides it:
//! any covering allow; otherwise the covering block that expires last (never is latest of
//! all), then the longer prefix, then the entry given first. `precedence` encodes that order
//! once and both families use it.
//!
//! "Expires" means the expiry the kernel holds (`expiry::kernel_expiry`, the exact deadline
//! rounded up), not the daemon's exact one: the entry chosen is then the one whose kernel rule
//! lasts longest, which is at least as long as every covering block's exact deadline, so an
//! address stays blocked in the kernel for as long as any block covering it is due to.

pub mod expiry;
pub mod rules;
pub mod v4;
pub mod v6;

use api_shield_common::entry;
use ipnet::IpNet;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(
        "the IPv4 table needs {needed} nodes (one per /24 that holds a prefix longer than /24, \
         one per /28 that holds a prefix longer than /28) but has room for {limit}; raise v4_nodes"
    )]
    V4NodesExhausted { needed: usize, limit: u32 },
    #[error(
        "the rule table is full: its {limit} slots hold {} rules (slot 0 is reserved); raise rules",
        .limit.saturating_sub(1)
    )]
    RulesExhausted { limit: u32 },
    #[error("the IPv6 list needs {needed} trie entries but has room for {limit}; raise v6_entries")]
    V6EntriesExhausted { needed: usize, limit: u32 },
    #[error(
        "entry {net} has action {action}, neither allow ({}) nor block ({})",
        entry::ACTION_ALLOW,
        entry::ACTION_BLOCK
    )]
    InvalidAction { net: IpNet, action: u32 },
    #[error("entry {net} names rule {rule}, outside 1..={}", entry::MAX_RULE)]
    InvalidRule { net: IpNet, rule: u32 },
    #[error("the IPv4 first level has {len} slots instead of {expected}")]
    Tbl24Size { len: usize, expected: u32 },
    #[error("the IPv4 node array has {len} slots, not a whole number of {node_slots}-slot nodes")]
    NodesSize { len: usize, node_slots: u32 },
}

/// One compiled list entry, kernel-ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compiled<N> {
    /// Host bits are ignored, as the kernel's tables ignore them.
    pub net: N,
    /// `entry::ACTION_ALLOW` or `entry::ACTION_BLOCK`.
    pub action: u32,
    /// Index into `RULES`, from `rules::RuleTable::intern`.
    pub rule: u32,
    /// `CLOCK_MONOTONIC` ns as the rule holds it (rounded up, see `expiry`); 0 never expires.
    pub expires_at_ns: u64,
}

impl<N> Compiled<N> {
    /// The slot value the kernel finds for addresses this entry decides.
    pub const fn value(&self) -> u32 {
        entry::encode(self.action, self.rule)
    }

    pub const fn is_allow(&self) -> bool {
        self.action == entry::ACTION_ALLOW
    }
}

impl<N: Copy + Into<IpNet>> Compiled<N> {
    /// Refuses what `entry::encode` would silently mangle: an unknown action would read as no
    /// entry (or a group) in the kernel, and a rule outside the mask would name another rule.
    /// Rule 0 is refused too, as `RuleTable` never hands it out.
    pub fn check(&self) -> Result<(), TableError> {
        if self.action != entry::ACTION_ALLOW && self.action != entry::ACTION_BLOCK {
            return Err(TableError::InvalidAction {
                net: self.net.into(),
                action: self.action,
            });
        }
        if self.rule == 0 || self.rule > entry::MAX_RULE {
            return Err(TableError::InvalidRule {
                net: self.net.into(),
                rule: self.rule,
            });
        }
        Ok(())
    }
}

// `precedence` packs the whole decision order into one integer, most significant first, so
// sorting (IPv4) and taking a maximum (IPv6) need no comparator and 1,000,000 keys sort fast.
const POSITION_BITS: u32 = u32::BITS;
const LEN_SHIFT: u32 = POSITION_BITS;
const LEN_BITS: u32 = u8::BITS;
const EXPIRY_SHIFT: u32 = LEN_SHIFT + LEN_BITS;
const NEVER_SHIFT: u32 = EXPIRY_SHIFT + u64::BITS;
const ALLOW_SHIFT: u32 = NEVER_SHIFT + 1;
const _: () = assert!(ALLOW_SHIFT < u128::BITS);
const POSITION_MASK: u128 = (1 << POSITION_BITS) - 1;

/// How strongly an entry claims the addresses it covers; of all entries covering an address,
/// the greatest decides it. `position` is the entry's index in the caller's slice: an earlier
/// entry must beat an identical later one, hence it is stored inverted.
pub(crate) fn precedence(action: u32, expires_at_ns: u64, prefix_len: u8, position: usize) -> u128 {
    // Beyond 2^32 entries (not reachable with the kernel's capacities) only the tie-break
    // between identical prefixes degrades, never the decision order.
    let position = u32::try_from(position).unwrap_or(u32::MAX);
    let allow = u128::from(action == entry::ACTION_ALLOW);
    let never = u128::from(expires_at_ns == 0);
    (allow << ALLOW_SHIFT)
        | (never << NEVER_SHIFT)
        | (u128::from(expires_at_ns) << EXPIRY_SHIFT)
        | (u128::from(prefix_len) << LEN_SHIFT)
        | u128::from(u32::MAX - position)
}

/// The entry index a `precedence` key was built from.
pub(crate) fn position(key: u128) -> usize {
    let inverted = (key & POSITION_MASK) as u32;
    (u32::MAX - inverted) as usize
}

/// The decision semantics written out rule by rule, independently of `precedence`, so the
/// randomised tests compare the compiled tables against the specification itself.
#[cfg(test)]
pub(crate) mod reference {
    use api_shield_common::entry;

    #[derive(Clone, Copy, Debug)]
    pub struct Covering {
        pub position: usize,
        pub action: u32,
        pub rule: u32,
        pub expires_at_ns: u64,
        pub prefix_len: u8,
    }

    fn beats(c: &Covering, best: &Covering) -> bool {
        let (c_allow, b_allow) = (
            c.action == entry::ACTION_ALLOW,
            best.action == entry::ACTION_ALLOW,
        );
        if c_allow != b_allow {
            return c_allow;
        }
        if c.expires_at_ns != best.expires_at_ns {
            if c.expires_at_ns == 0 {
                return true;
            }
            if best.expires_at_ns == 0 {
                return false;
            }
            return c.expires_at_ns > best.expires_at_ns;
        }
        if c.prefix_len != best.prefix_len {
            return c.prefix_len > best.prefix_len;
        }
        c.position < best.position
    }

    /// The slot value for an address covered by exactly `covering`.
    pub fn decide(covering: impl IntoIterator<Item = Covering>) -> u32 {
        let mut best: Option<Covering> = None;
        for c in covering {
            if best.is_none_or(|b| beats(&c, &b)) {
                best = Some(c);
            }
        }
        best.map_or(entry::NONE, |b| entry::encode(b.action, b.rule))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::Ipv4Net;
    use std::net::Ipv4Addr;

    fn net() -> Ipv4Net {
        Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15)
    }

    #[test]
    fn precedence_orders_allow_then_expiry_then_length_then_position() {
        let block = entry::ACTION_BLOCK;
        let allow = entry::ACTION_ALLOW;
        // Each pair: (weaker, stronger).
        let pairs = [
            // Any allow beats any block, however permanent and specific.
            (precedence(block, 0, 32, 0), precedence(allow, 5, 0, 9)),
            // Never expiring beats the largest finite expiry.
            (
                precedence(block, u64::MAX, 32, 0),
                precedence(block, 0, 8, 9),
            ),
            (precedence(block, 10, 32, 0), precedence(block, 11, 8, 9)),
            (precedence(block, 10, 16, 0), precedence(block, 10, 17, 9)),
            (precedence(block, 10, 16, 1), precedence(block, 10, 16, 0)),
            (precedence(allow, 10, 16, 1), precedence(allow, 0, 16, 1)),
            (precedence(block, 0, 127, 0), precedence(block, 0, 128, 0)),
        ];
        for (i, (weak, strong)) in pairs.into_iter().enumerate() {
            assert!(weak < strong, "pair {i}");
        }
    }

    #[test]
    fn position_round_trips() {
        for p in [0, 1, 77, 1_000_000, u32::MAX as usize] {
            assert_eq!(position(precedence(entry::ACTION_BLOCK, 3, 24, p)), p);
        }
    }

    #[test]
    fn check_refuses_unknown_actions_and_rules_outside_the_mask() {
        let ok = Compiled {
            net: net(),
            action: entry::ACTION_BLOCK,
            rule: 1,
            expires_at_ns: 0,
        };
        ok.check().unwrap();
        Compiled {
            rule: entry::MAX_RULE,
            action: entry::ACTION_ALLOW,
            ..ok
        }
        .check()
        .unwrap();
        for action in [0, 3, 4] {
            let err = Compiled { action, ..ok }.check().unwrap_err();
            assert!(
                matches!(err, TableError::InvalidAction { action: a, .. } if a == action),
                "{err}"
            );
        }
        for rule in [0, entry::MAX_RULE + 1] {
            let err = Compiled { rule, ..ok }.check().unwrap_err();
            assert!(
                matches!(err, TableError::InvalidRule { rule: r, .. } if r == rule),
                "{err}"
            );
        }
    }

    #[test]
    fn capacity_errors_name_the_setting_to_raise() {
        let cases = [
            (
                TableError::V4NodesExhausted {
                    needed: 9,
                    limit: 8,
                },
                "v4_nodes",
            ),
            (TableError::RulesExhausted { limit: 4 }, "raise rules"),
            (
                TableError::V6EntriesExhausted {
                    needed: 9,
                    limit: 8,
                },
                "v6_entries",
            ),
        ];
        for (err, setting) in cases {
            let msg = err.to_string();
            assert!(msg.contains(setting), "{msg}");
        }
        assert!(
            TableError::RulesExhausted { limit: 4 }
                .to_string()
                .contains("hold 3 rules")
        );
    }

    #[test]
    fn value_encodes_action_and_rule() {
        let c = Compiled {
            net: net(),
            action: entry::ACTION_ALLOW,
            rule: 42,
            expires_at_ns: 7,
        };
        assert!(c.is_allow());
        assert_eq!(entry::action(c.value()), entry::ACTION_ALLOW);
        assert_eq!(entry::rule(c.value()), 42);
        assert!(!entry::is_group(c.value()));
    }

    #[test]
    fn reference_follows_the_written_semantics() {
        use reference::{Covering, decide};
        let c = |position, action, rule, expires_at_ns, prefix_len| Covering {
            position,
            action,
            rule,
            expires_at_ns,
            prefix_len,
        };
        let (a, b) = (entry::ACTION_ALLOW, entry::ACTION_BLOCK);
        assert_eq!(decide([]), entry::NONE);
        assert_eq!(
            decide([c(0, b, 1, 0, 32), c(1, a, 2, 5, 8)]),
            entry::encode(a, 2)
        );
        assert_eq!(
            decide([c(0, b, 1, 0, 16), c(1, b, 2, 50, 32)]),
            entry::encode(b, 1)
        );
        assert_eq!(
            decide([c(0, b, 1, 60, 16), c(1, b, 2, 50, 32)]),
            entry::encode(b, 1)
        );
        assert_eq!(
            decide([c(0, b, 1, 50, 16), c(1, b, 2, 50, 32)]),
            entry::encode(b, 2)
        );
        assert_eq!(
            decide([c(1, b, 2, 50, 32), c(0, b, 1, 50, 32)]),
            entry::encode(b, 1)
        );
    }
}
