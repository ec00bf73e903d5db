//! The IPv4 DIR-24-4-4 table: `tbl24` answers every address by its top 24 bits, except where a
//! prefix longer than /24 splits a /24 into a 16-slot node (indexed by bits 4..8), and where a
//! prefix longer than /28 splits a slot of that node into a second 16-slot node (indexed by
//! bits 0..4). Both kinds of node live in one array, `nodes`. An isolated /32 costs two nodes
//! (128 bytes), a /25../28 prefix one.
//!
//! Entries are painted weakest first so that a later paint may simply overwrite: then the
//! strongest covering entry is the last one written to every slot, allow included, and no
//! slot needs to look at what it overwrites.

use super::{Compiled, TableError, position, precedence};
use api_shield_common::entry;
use api_shield_common::maps::{NODE_BITS, NODE_SLOTS, TBL24_SLOTS};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// Prefix lengths up to this are painted into `tbl24` directly.
const FIRST_LEVEL_BITS: u8 = (u32::BITS - 2 * NODE_BITS) as u8;
/// Prefix lengths up to this (and above `FIRST_LEVEL_BITS`) are painted into first-level nodes.
const SECOND_LEVEL_BITS: u8 = FIRST_LEVEL_BITS + NODE_BITS as u8;
const NIBBLE_MASK: u32 = NODE_SLOTS - 1;
const NODE: usize = NODE_SLOTS as usize;
const _: () = assert!(NODE_SLOTS == 1 << NODE_BITS);
const _: () = assert!(TBL24_SLOTS == 1 << FIRST_LEVEL_BITS);
const _: () = assert!(SECOND_LEVEL_BITS as u32 + NODE_BITS == u32::BITS);

/// The node allocator and painter over one copy of the tables.
struct Painter<'a> {
    tbl24: &'a mut [u32],
    nodes: &'a mut [u32],
    used: u32,
    limit: u32,
}

/// Out of nodes; `paint` turns it into `V4NodesExhausted` with the count needed.
struct Exhausted;

impl Painter<'_> {
    /// The node a slot holding `slot` names, as a slot value: `slot` itself when it already
    /// names one, else a new node that starts with `slot` in every slot, so the rest of the
    /// range keeps deciding as it did before the split.
    fn split(&mut self, slot: u32) -> Result<u32, Exhausted> {
        if entry::is_group(slot) {
            return Ok(slot);
        }
        if self.used == self.limit {
            return Err(Exhausted);
        }
        let n = self.used as usize * NODE;
        self.nodes[n..n + NODE].fill(slot);
        self.used += 1;
        Ok(entry::group(self.used - 1))
    }

    /// Writes `value` into slots `range` of the first-level node `group`, and into the whole
    /// second-level node wherever one of them is split.
    fn fill_first(&mut self, group: u32, range: std::ops::Range<usize>, value: u32) {
        let base = start(group);
        for slot in base + range.start..base + range.end {
            let current = self.nodes[slot];
            if entry::is_group(current) {
                // The node stays: only its content is overridden, so the nodes used depend
                // on the entries alone, not on the order they are painted in.
                let n = start(current);
                self.nodes[n..n + NODE].fill(value);
            } else {
                self.nodes[slot] = value;
            }
        }
    }

    fn paint(&mut self, e: &Compiled<Ipv4Net>) -> Result<(), Exhausted> {
        let value = e.value();
        let addr = u32::from(e.net.network());
        let len = e.net.prefix_len();
        let first = (addr >> (2 * NODE_BITS)) as usize;
        let high = ((addr >> NODE_BITS) & NIBBLE_MASK) as usize;
        let low = (addr & NIBBLE_MASK) as usize;
        if len <= FIRST_LEVEL_BITS {
            let count = 1usize << (FIRST_LEVEL_BITS - len);
            for slot in first..first + count {
                let current = self.tbl24[slot];
                if entry::is_group(current) {
                    self.fill_first(current, 0..NODE, value);
                } else {
                    self.tbl24[slot] = value;
                }
            }
            return Ok(());
        }
        let node = self.split(self.tbl24[first])?;
        self.tbl24[first] = node;
        if len <= SECOND_LEVEL_BITS {
            let count = 1usize << (SECOND_LEVEL_BITS - len);
            self.fill_first(node, high..high + count, value);
        } else {
            let slot = start(node) + high;
            let second = self.split(self.nodes[slot])?;
            self.nodes[slot] = second;
            let base = start(second);
            let count = 1usize << (u32::BITS as u8 - len);
            self.nodes[base + low..base + low + count].fill(value);
        }
        Ok(())
    }
}

/// The index in `nodes` of the first slot of the node a slot value names.
fn start(group: u32) -> usize {
    entry::group_index(group) as usize * NODE
}

/// Fills one copy of the IPv4 tables with `entries`. tbl24.len() == maps::TBL24_SLOTS,
/// nodes.len() == node count * maps::NODE_SLOTS. Returns the number of nodes used. Err if more
/// nodes are needed than fit.
///
/// Nodes are allocated from 0 upwards and each is written whole when allocated, so only
/// `tbl24` and the first `nodes used` nodes are written: the caller may pass the whole node
/// array, however large, and what lies beyond the nodes used is neither read nor cleared.
/// On error the tables hold a partial paint and must not be published.
pub fn paint(
    entries: &[Compiled<Ipv4Net>],
    tbl24: &mut [u32],
    nodes: &mut [u32],
) -> Result<u32, TableError> {
    if tbl24.len() != TBL24_SLOTS as usize {
        return Err(TableError::Tbl24Size {
            len: tbl24.len(),
            expected: TBL24_SLOTS,
        });
    }
    if !nodes.len().is_multiple_of(NODE) {
        return Err(TableError::NodesSize {
            len: nodes.len(),
            node_slots: NODE_SLOTS,
        });
    }
    for e in entries {
        e.check()?;
    }
    // Node indices share the slot with `GROUP_FLAG`, so more could not be named.
    let limit = u32::try_from(nodes.len() / NODE)
        .unwrap_or(u32::MAX)
        .min(entry::GROUP_FLAG - 1);

    tbl24.fill(entry::NONE);

    let mut order: Vec<u128> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| precedence(e.action, e.expires_at_ns, e.net.prefix_len(), i))
        .collect();
    order.sort_unstable();

    let mut painter = Painter {
        tbl24,
        nodes,
        used: 0,
        limit,
    };
    for key in order {
        if painter.paint(&entries[position(key)]).is_err() {
            return Err(TableError::V4NodesExhausted {
                needed: nodes_needed(entries),
                limit,
            });
        }
    }
    Ok(painter.used)
}

/// Nodes `paint` uses for `entries`: one per /24 holding a prefix longer than /24, plus one
/// per /28 holding a prefix longer than /28, so the daemon can size `v4_nodes` or explain a
/// failure.
pub fn nodes_needed(entries: &[Compiled<Ipv4Net>]) -> usize {
    let distinct = |min_len: u8, bits: u8| {
        let mut keys: Vec<u32> = entries
            .iter()
            .filter(|e| e.net.prefix_len() > min_len)
            .map(|e| u32::from(e.net.network()) >> (u32::BITS as u8 - bits))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys.len()
    };
    distinct(FIRST_LEVEL_BITS, FIRST_LEVEL_BITS) + distinct(SECOND_LEVEL_BITS, SECOND_LEVEL_BITS)
}

/// Resolves one address the way the kernel does (for tests and for `explain` tooling).
pub fn resolve(tbl24: &[u32], nodes: &[u32], addr: Ipv4Addr) -> u32 {
    let addr = u32::from(addr);
    let Some(&first) = tbl24.get((addr >> (2 * NODE_BITS)) as usize) else {
        return entry::NONE;
    };
    if !entry::is_group(first) {
        return first;
    }
    let second = node_slot(nodes, first, (addr >> NODE_BITS) & NIBBLE_MASK);
    if !entry::is_group(second) {
        return second;
    }
    // Second-level nodes hold entries only; like the kernel, what is there is the answer.
    node_slot(nodes, second, addr & NIBBLE_MASK)
}

/// Slot `nibble` of the node `group` names; like the kernel, a node beyond the table reads as
/// no entry.
fn node_slot(nodes: &[u32], group: u32, nibble: u32) -> u32 {
    nodes
        .get(start(group) + nibble as usize)
        .copied()
        .unwrap_or(entry::NONE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::reference::{Covering, decide};
    use api_shield_common::maps::DEFAULT_V4_NODES;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;

    const ALLOW: u32 = entry::ACTION_ALLOW;
    const BLOCK: u32 = entry::ACTION_BLOCK;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn allow(s: &str, rule: u32) -> Compiled<Ipv4Net> {
        Compiled {
            net: net(s),
            action: ALLOW,
            rule,
            expires_at_ns: 0,
        }
    }

    fn block(s: &str, rule: u32, expires_at_ns: u64) -> Compiled<Ipv4Net> {
        Compiled {
            net: net(s),
            action: BLOCK,
            rule,
            expires_at_ns,
        }
    }

    /// The address bits below the first level, which the nodes resolve.
    const LOW_MASK: u32 = (1 << (2 * NODE_BITS)) - 1;

    struct Tables {
        tbl24: Vec<u32>,
        nodes: Vec<u32>,
        used: u32,
    }

    impl Tables {
        fn paint(entries: &[Compiled<Ipv4Net>], nodes: u32) -> Result<Self, TableError> {
            let mut tbl24 = vec![0u32; TBL24_SLOTS as usize];
            let mut node_slots = vec![0u32; nodes as usize * NODE];
            let used = paint(entries, &mut tbl24, &mut node_slots)?;
            Ok(Self {
                tbl24,
                nodes: node_slots,
                used,
            })
        }

        fn at(&self, addr: &str) -> u32 {
            resolve(&self.tbl24, &self.nodes, ip(addr))
        }

        /// The tbl24 slot of `addr`.
        fn first(&self, addr: &str) -> u32 {
            self.tbl24[(u32::from(ip(addr)) >> (2 * NODE_BITS)) as usize]
        }

        /// The first-level node slot of `addr` (its /24 must be split).
        fn second(&self, addr: &str) -> u32 {
            let first = self.first(addr);
            assert!(entry::is_group(first), "{addr}: its /24 is not split");
            self.nodes[start(first) + ((u32::from(ip(addr)) >> NODE_BITS) & NIBBLE_MASK) as usize]
        }
    }

    fn blocked_by(rule: u32) -> u32 {
        entry::encode(BLOCK, rule)
    }

    fn allowed_by(rule: u32) -> u32 {
        entry::encode(ALLOW, rule)
    }

    #[test]
    fn empty_list_resolves_nothing() {
        let t = Tables::paint(&[], 1).unwrap();
        assert_eq!(t.used, 0);
        for a in ["0.0.0.0", "198.18.0.1", "255.255.255.255"] {
            assert_eq!(t.at(a), entry::NONE);
        }
    }

    #[test]
    fn allow_24_beats_block_32_inside_it() {
        // Given in both orders: the outcome must not depend on it.
        for entries in [
            vec![block("198.18.1.7/32", 1, 0), allow("198.18.1.0/24", 2)],
            vec![allow("198.18.1.0/24", 2), block("198.18.1.7/32", 1, 0)],
        ] {
            let t = Tables::paint(&entries, 4).unwrap();
            assert_eq!(t.at("198.18.1.7"), allowed_by(2));
            assert_eq!(t.at("198.18.1.6"), allowed_by(2));
            assert_eq!(t.at("198.18.1.255"), allowed_by(2));
            assert_eq!(t.at("198.18.2.7"), entry::NONE);
        }
    }

    #[test]
    fn allow_32_inside_block_8() {
        let t = Tables::paint(&[block("198.0.0.0/8", 1, 0), allow("198.18.0.7/32", 2)], 4).unwrap();
        // One first-level node for the /24, one second-level node for the /28.
        assert_eq!(t.used, 2);
        assert_eq!(t.at("198.18.0.7"), allowed_by(2));
        assert_eq!(t.at("198.18.0.6"), blocked_by(1));
        assert_eq!(t.at("198.18.0.8"), blocked_by(1));
        assert_eq!(t.at("198.18.1.7"), blocked_by(1));
        assert_eq!(t.at("198.255.255.255"), blocked_by(1));
        assert_eq!(t.at("199.0.0.0"), entry::NONE);
        assert_eq!(t.at("197.255.255.255"), entry::NONE);
    }

    #[test]
    fn expiring_block_32_inside_permanent_block_16_resolves_to_the_16() {
        let t = Tables::paint(
            &[
                block("198.18.0.0/16", 1, 0),
                block("198.18.3.4/32", 2, 5_000),
            ],
            4,
        )
        .unwrap();
        // Were the /32 written, the kernel would let the source through once it expired,
        // although the /16 still blocks it.
        assert_eq!(t.at("198.18.3.4"), blocked_by(1));
        assert_eq!(t.at("198.18.3.5"), blocked_by(1));
    }

    #[test]
    fn block_16_expiring_later_than_block_32_wins() {
        let t = Tables::paint(
            &[
                block("198.18.3.4/32", 2, 5_000),
                block("198.18.0.0/16", 1, 9_000),
            ],
            4,
        )
        .unwrap();
        assert_eq!(t.at("198.18.3.4"), blocked_by(1));
    }

    #[test]
    fn block_32_expiring_later_than_block_16_wins_only_its_address() {
        let t = Tables::paint(
            &[
                block("198.18.3.4/32", 2, 9_000),
                block("198.18.0.0/16", 1, 5_000),
            ],
            4,
        )
        .unwrap();
        assert_eq!(t.at("198.18.3.4"), blocked_by(2));
        assert_eq!(t.at("198.18.3.3"), blocked_by(1));
        assert_eq!(t.at("198.18.3.5"), blocked_by(1));
        // A permanent /32 likewise beats an expiring /16.
        let t = Tables::paint(
            &[
                block("198.18.3.4/32", 2, 0),
                block("198.18.0.0/16", 1, 5_000),
            ],
            4,
        )
        .unwrap();
        assert_eq!(t.at("198.18.3.4"), blocked_by(2));
    }

    #[test]
    fn equal_expiry_goes_to_the_longer_prefix() {
        for expiry in [0, 7_000] {
            let t = Tables::paint(
                &[
                    block("198.18.3.0/24", 3, expiry),
                    block("198.18.0.0/16", 1, expiry),
                    block("198.18.3.4/31", 2, expiry),
                ],
                4,
            )
            .unwrap();
            assert_eq!(t.at("198.18.3.5"), blocked_by(2));
            assert_eq!(t.at("198.18.3.6"), blocked_by(3));
            assert_eq!(t.at("198.18.4.6"), blocked_by(1));
        }
    }

    #[test]
    fn identical_prefixes_go_to_the_first_given() {
        let t = Tables::paint(
            &[
                block("198.18.3.0/24", 5, 100),
                block("198.18.3.0/24", 6, 100),
                block("198.18.4.1/32", 7, 100),
                block("198.18.4.1/32", 8, 100),
                allow("198.18.5.0/24", 9),
                allow("198.18.5.0/24", 10),
            ],
            4,
        )
        .unwrap();
        assert_eq!(t.at("198.18.3.9"), blocked_by(5));
        assert_eq!(t.at("198.18.4.1"), blocked_by(7));
        assert_eq!(t.at("198.18.5.1"), allowed_by(9));
    }

    #[test]
    fn any_allow_beats_the_strongest_block() {
        // A short allow against a permanent host block painted around it.
        let t = Tables::paint(
            &[
                block("198.18.0.1/32", 1, 0),
                allow("198.0.0.0/8", 2),
                block("198.18.0.0/16", 3, 0),
                block("198.18.0.2/31", 4, 0),
            ],
            4,
        )
        .unwrap();
        for a in ["198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.9.9"] {
            assert_eq!(t.at(a), allowed_by(2), "{a}");
        }
    }

    #[test]
    fn a_split_24_keeps_the_covering_value_outside_the_long_prefix() {
        let t = Tables::paint(
            &[block("198.18.0.0/16", 1, 0), block("198.18.7.128/25", 2, 0)],
            4,
        )
        .unwrap();
        // A /25 is whole first-level node slots: no second-level node.
        assert_eq!(t.used, 1);
        assert!(entry::is_group(t.first("198.18.7.0")));
        assert_eq!(t.second("198.18.7.0"), blocked_by(1));
        assert_eq!(t.second("198.18.7.128"), blocked_by(2));
        assert_eq!(t.at("198.18.7.0"), blocked_by(1));
        assert_eq!(t.at("198.18.7.127"), blocked_by(1));
        assert_eq!(t.at("198.18.7.128"), blocked_by(2));
        assert_eq!(t.at("198.18.7.255"), blocked_by(2));
        assert_eq!(t.at("198.18.8.0"), blocked_by(1));
    }

    #[test]
    fn a_shorter_prefix_painted_later_overrides_inside_nodes() {
        // The /32 splits its /24 and its /28 first (it expires earlier, so it is painted
        // first); the /16 must then override inside both nodes, on both sides of the /32.
        let t = Tables::paint(
            &[
                block("198.18.7.9/32", 2, 100),
                block("198.18.0.0/16", 1, 200),
            ],
            4,
        )
        .unwrap();
        assert_eq!(t.used, 2);
        for a in [
            "198.18.7.0",
            "198.18.7.8",
            "198.18.7.9",
            "198.18.7.10",
            "198.18.7.15",
            "198.18.7.16",
            "198.18.7.255",
            "198.18.8.9",
        ] {
            assert_eq!(t.at(a), blocked_by(1), "{a}");
        }
    }

    #[test]
    fn long_prefixes_in_one_24_share_its_nodes() {
        let t = Tables::paint(
            &[
                block("198.18.7.9/32", 1, 0),
                block("198.18.7.10/31", 2, 0),
                block("198.18.7.64/26", 3, 0),
                block("198.18.8.1/32", 4, 0),
            ],
            4,
        )
        .unwrap();
        // 198.18.7.0/24: one first-level node and one second-level node (for .0/28, which
        // holds the /32 and the /31; the /26 is whole first-level slots); 198.18.8.0/24: two.
        assert_eq!(t.used, 4);
        assert_eq!(t.at("198.18.7.8"), entry::NONE);
        assert_eq!(t.at("198.18.7.9"), blocked_by(1));
        assert_eq!(t.at("198.18.7.10"), blocked_by(2));
        assert_eq!(t.at("198.18.7.11"), blocked_by(2));
        assert_eq!(t.at("198.18.7.100"), blocked_by(3));
        assert_eq!(t.at("198.18.7.128"), entry::NONE);
        assert_eq!(t.at("198.18.8.1"), blocked_by(4));
        assert_eq!(t.at("198.18.8.2"), entry::NONE);
    }

    #[test]
    fn zero_length_prefix_covers_everything() {
        let t = Tables::paint(&[block("0.0.0.0/0", 1, 0), allow("198.18.0.1/32", 2)], 2).unwrap();
        assert_eq!(t.at("0.0.0.0"), blocked_by(1));
        assert_eq!(t.at("255.255.255.255"), blocked_by(1));
        assert_eq!(t.at("198.18.0.1"), allowed_by(2));
        assert_eq!(t.at("198.18.0.2"), blocked_by(1));
    }

    #[test]
    fn host_bits_are_ignored() {
        let t = Tables::paint(
            &[block("198.18.7.9/24", 1, 0), block("198.18.8.9/30", 2, 0)],
            2,
        )
        .unwrap();
        assert_eq!(t.at("198.18.7.0"), blocked_by(1));
        assert_eq!(t.at("198.18.7.255"), blocked_by(1));
        assert_eq!(t.at("198.18.8.8"), blocked_by(2));
        assert_eq!(t.at("198.18.8.11"), blocked_by(2));
        assert_eq!(t.at("198.18.8.12"), entry::NONE);
    }

    #[test]
    fn a_28_and_a_32_in_one_24() {
        // The /32 inside the /28 is stronger (longer, same expiry): the /28's first-level
        // slot is split into a second-level node that keeps the /28 around it. The other /32
        // splits a slot nothing else covers.
        let t = Tables::paint(
            &[
                block("198.18.7.16/28", 1, 0),
                block("198.18.7.20/32", 2, 0),
                block("198.18.7.40/32", 3, 0),
            ],
            8,
        )
        .unwrap();
        assert_eq!(t.used, 3);
        assert!(entry::is_group(t.second("198.18.7.20")));
        assert!(entry::is_group(t.second("198.18.7.40")));
        assert_eq!(t.second("198.18.7.0"), entry::NONE);
        for (a, want) in [
            ("198.18.7.15", entry::NONE),
            ("198.18.7.16", blocked_by(1)),
            ("198.18.7.19", blocked_by(1)),
            ("198.18.7.20", blocked_by(2)),
            ("198.18.7.21", blocked_by(1)),
            ("198.18.7.31", blocked_by(1)),
            ("198.18.7.32", entry::NONE),
            ("198.18.7.39", entry::NONE),
            ("198.18.7.40", blocked_by(3)),
            ("198.18.7.41", entry::NONE),
            ("198.18.7.47", entry::NONE),
            ("198.18.7.48", entry::NONE),
            ("198.18.6.20", entry::NONE),
            ("198.18.8.20", entry::NONE),
        ] {
            assert_eq!(t.at(a), want, "{a}");
        }

        // A /28 expiring later is painted after the /32 and overrides its second-level node
        // whole; the node stays (the count depends on the entries, not the paint order).
        let t = Tables::paint(
            &[
                block("198.18.7.20/32", 2, 100),
                block("198.18.7.16/28", 1, 200),
            ],
            8,
        )
        .unwrap();
        assert_eq!(t.used, 2);
        for a in ["198.18.7.16", "198.18.7.20", "198.18.7.31"] {
            assert_eq!(t.at(a), blocked_by(1), "{a}");
        }
        assert_eq!(t.at("198.18.7.32"), entry::NONE);
    }

    #[test]
    fn a_26_painted_after_a_30_overrides_inside_nodes() {
        // The /30 expires first, so it is painted first and splits .64/28; the /26 then
        // paints four first-level slots, one of them through the /30's second-level node.
        let t = Tables::paint(
            &[
                block("198.18.7.68/30", 2, 100),
                block("198.18.7.64/26", 1, 200),
            ],
            8,
        )
        .unwrap();
        assert_eq!(t.used, 2);
        for a in [
            "198.18.7.64",
            "198.18.7.67",
            "198.18.7.68",
            "198.18.7.71",
            "198.18.7.72",
            "198.18.7.80",
            "198.18.7.127",
        ] {
            assert_eq!(t.at(a), blocked_by(1), "{a}");
        }
        assert_eq!(t.at("198.18.7.63"), entry::NONE);
        assert_eq!(t.at("198.18.7.128"), entry::NONE);

        // The other way round the /30 keeps its four addresses, and an allow /30 wins
        // against a permanent /26 whatever the order.
        for entries in [
            vec![
                block("198.18.7.64/26", 1, 100),
                block("198.18.7.68/30", 2, 200),
            ],
            vec![block("198.18.7.64/26", 1, 0), allow("198.18.7.68/30", 2)],
        ] {
            let t = Tables::paint(&entries, 8).unwrap();
            assert_eq!(t.used, 2);
            let inner = entries[1].value();
            for (a, want) in [
                ("198.18.7.67", blocked_by(1)),
                ("198.18.7.68", inner),
                ("198.18.7.71", inner),
                ("198.18.7.72", blocked_by(1)),
                ("198.18.7.79", blocked_by(1)),
                ("198.18.7.100", blocked_by(1)),
            ] {
                assert_eq!(t.at(a), want, "{a}");
            }
        }
    }

    #[test]
    fn painting_starts_from_clean_tables_and_writes_only_the_nodes_used() {
        let dirty = blocked_by(9);
        let mut tbl24 = vec![dirty; TBL24_SLOTS as usize];
        let mut nodes = vec![dirty; 5 * NODE];
        let used = paint(&[block("198.18.0.1/32", 1, 0)], &mut tbl24, &mut nodes).unwrap();
        assert_eq!(used, 2);
        assert_eq!(resolve(&tbl24, &nodes, ip("198.18.0.1")), blocked_by(1));
        assert_eq!(resolve(&tbl24, &nodes, ip("198.18.0.2")), entry::NONE);
        assert_eq!(resolve(&tbl24, &nodes, ip("198.18.0.17")), entry::NONE);
        assert_eq!(resolve(&tbl24, &nodes, ip("1.2.3.4")), entry::NONE);
        // Nodes beyond those used are neither cleared nor read.
        assert!(nodes[2 * NODE..].iter().all(|&s| s == dirty));
    }

    #[test]
    fn nodes_exhausted_is_an_error_naming_the_setting() {
        let entries = [
            block("198.18.1.1/32", 1, 0),
            block("198.18.1.2/32", 1, 0),
            block("198.18.2.1/32", 1, 0),
            block("198.18.3.0/25", 1, 0),
            block("198.18.4.0/24", 1, 0),
        ];
        // 198.18.1.0/24 and 198.18.2.0/24: two nodes each; 198.18.3.0/24: one.
        assert_eq!(nodes_needed(&entries), 5);
        let Err(err) = Tables::paint(&entries, 4) else {
            panic!("four nodes cannot hold five");
        };
        assert!(
            matches!(
                err,
                TableError::V4NodesExhausted {
                    needed: 5,
                    limit: 4
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("v4_nodes"), "{err}");
        // Exactly enough fits.
        assert_eq!(Tables::paint(&entries, 5).unwrap().used, 5);
        // No room at all still paints what needs no node.
        assert!(Tables::paint(&entries[4..], 0).is_ok());
        assert!(Tables::paint(&entries, 0).is_err());
        // A /32 whose first-level node fits but whose second-level node does not.
        let Err(err) = Tables::paint(&entries[..1], 1) else {
            panic!("a /32 needs two nodes");
        };
        assert!(
            matches!(
                err,
                TableError::V4NodesExhausted {
                    needed: 2,
                    limit: 1
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn ten_thousand_scattered_hosts_use_twenty_thousand_nodes() {
        // One /32 in each of 10,000 distinct /24s spread over the whole address space.
        let entries: Vec<_> = (0..10_000u32)
            .map(|i| {
                let addr = ((i * 1_677) << (2 * NODE_BITS)) | (i % 256);
                block(&format!("{}/32", Ipv4Addr::from(addr)), 1 + i % 64, 0)
            })
            .collect();
        assert_eq!(nodes_needed(&entries), 20_000);
        let t = Tables::paint(&entries, 20_000).unwrap();
        assert_eq!(t.used, 20_000);
        // 128 bytes per host instead of DIR-24-8's 1 KiB.
        let bytes = t.used as usize * NODE * size_of::<u32>();
        assert_eq!(bytes, 10_000 * 128);
        for e in &entries {
            let a = u32::from(e.net.network());
            assert_eq!(resolve(&t.tbl24, &t.nodes, e.net.network()), e.value());
            let neighbour = Ipv4Addr::from(a ^ 1);
            assert_eq!(resolve(&t.tbl24, &t.nodes, neighbour), entry::NONE);
        }
        assert!(Tables::paint(&entries, 19_999).is_err());
    }

    #[test]
    fn wrong_table_sizes_are_refused() {
        let mut short24 = vec![0u32; TBL24_SLOTS as usize - 1];
        let mut nodes = vec![0u32; NODE];
        assert!(matches!(
            paint(&[], &mut short24, &mut nodes),
            Err(TableError::Tbl24Size { .. })
        ));
        let mut tbl24 = vec![0u32; TBL24_SLOTS as usize];
        let mut ragged = vec![0u32; NODE + 1];
        assert!(matches!(
            paint(&[], &mut tbl24, &mut ragged),
            Err(TableError::NodesSize { .. })
        ));
    }

    #[test]
    fn invalid_entries_are_refused() {
        let mut tbl24 = vec![0u32; TBL24_SLOTS as usize];
        let mut nodes = vec![0u32; NODE];
        let bad = Compiled {
            action: 0,
            ..block("198.18.0.0/16", 1, 0)
        };
        assert!(matches!(
            paint(&[bad], &mut tbl24, &mut nodes),
            Err(TableError::InvalidAction { .. })
        ));
        assert!(matches!(
            paint(&[block("198.18.0.0/16", 0, 0)], &mut tbl24, &mut nodes),
            Err(TableError::InvalidRule { .. })
        ));
    }

    #[test]
    fn resolve_reads_a_node_beyond_the_table_as_no_entry() {
        let mut tbl24 = vec![0u32; TBL24_SLOTS as usize];
        let slot = (u32::from(ip("198.18.0.0")) >> (2 * NODE_BITS)) as usize;
        tbl24[slot] = entry::group(5);
        let mut nodes = vec![blocked_by(1); 2 * NODE];
        assert_eq!(resolve(&tbl24, &nodes, ip("198.18.0.1")), entry::NONE);
        // The same for a second-level node named by a first-level one.
        tbl24[slot] = entry::group(0);
        nodes[0] = entry::group(2);
        assert_eq!(resolve(&tbl24, &nodes, ip("198.18.0.1")), entry::NONE);
        assert_eq!(resolve(&tbl24, &nodes, ip("198.18.0.16")), blocked_by(1));
        nodes[0] = entry::group(1);
        assert_eq!(resolve(&tbl24, &nodes, ip("198.18.0.1")), blocked_by(1));
    }

    // --- Randomised equivalence with the reference semantics ---

    /// Generates entries and probe addresses that overlap a lot: prefixes longer than /24 all
    /// fall into a few "hot" /24s (which also bounds the nodes needed), shorter ones half
    /// into hot /24s and half anywhere in the clusters.
    struct Gen {
        rng: StdRng,
        /// (network, host bits) of the areas addresses are drawn from.
        clusters: &'static [(u32, u32)],
        hot: Vec<u32>,
        allow_p: f64,
    }

    /// Expiries drawn from a small set so that ties happen, 0 (never) among them.
    const EXPIRIES: [u64; 5] = [0, 1_000, 2_000, 3_000, 4_000];

    fn mask(len: u8) -> u32 {
        u32::MAX
            .checked_shl(u32::BITS - u32::from(len))
            .unwrap_or(0)
    }

    impl Gen {
        fn new(seed: u64, clusters: &'static [(u32, u32)], hot: usize, allow_p: f64) -> Self {
            let mut g = Self {
                rng: StdRng::seed_from_u64(seed),
                clusters,
                hot: Vec::new(),
                allow_p,
            };
            g.hot = (0..hot)
                .map(|_| g.cluster_addr() & mask(FIRST_LEVEL_BITS))
                .collect();
            g
        }

        fn cluster_addr(&mut self) -> u32 {
            let (base, bits) = self.clusters[self.rng.random_range(0..self.clusters.len())];
            base | (self.rng.random::<u32>() & !mask((u32::BITS - bits) as u8))
        }

        fn hot_addr(&mut self) -> u32 {
            self.hot[self.rng.random_range(0..self.hot.len())]
                | (self.rng.random::<u32>() & LOW_MASK)
        }

        fn probe(&mut self) -> u32 {
            if self.rng.random_bool(0.5) {
                self.hot_addr()
            } else {
                self.cluster_addr()
            }
        }

        fn entry(&mut self, len: u8) -> Compiled<Ipv4Net> {
            let addr = if len > FIRST_LEVEL_BITS || self.rng.random_bool(0.5) {
                self.hot_addr()
            } else {
                self.cluster_addr()
            };
            // Short allows would swallow whole clusters and leave few blocks to check.
            let allow_p = if len >= FIRST_LEVEL_BITS {
                self.allow_p
            } else {
                self.allow_p / 5.0
            };
            let action = if self.rng.random_bool(allow_p) {
                ALLOW
            } else {
                BLOCK
            };
            Compiled {
                net: Ipv4Net::new_assert(Ipv4Addr::from(addr & mask(len)), len),
                action,
                rule: self.rng.random_range(1..=64),
                expires_at_ns: EXPIRIES[self.rng.random_range(0..EXPIRIES.len())],
            }
        }

        /// Random probes, then every entry's edges and their outside neighbours, where an
        /// off-by-one in a painted range would show.
        fn probes(&mut self, entries: &[Compiled<Ipv4Net>], random: usize) -> Vec<u32> {
            let mut out: Vec<u32> = (0..random).map(|_| self.probe()).collect();
            for e in entries {
                let (lo, hi) = (u32::from(e.net.network()), u32::from(e.net.broadcast()));
                out.extend([lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)]);
            }
            out
        }
    }

    fn covering(position: usize, e: &Compiled<Ipv4Net>) -> Covering {
        Covering {
            position,
            action: e.action,
            rule: e.rule,
            expires_at_ns: e.expires_at_ns,
            prefix_len: e.net.prefix_len(),
        }
    }

    /// Fails when some outcome is rarer than `1 / per` of the probes, so a generator that
    /// stopped producing a mix (everything allowed, nothing covered) cannot pass unnoticed.
    fn assert_mixed(outcomes: &[u32], per: usize) {
        let count = |a| outcomes.iter().filter(|&&v| entry::action(v) == a).count();
        let (none, allowed, blocked) = (count(0), count(ALLOW), count(BLOCK));
        let floor = outcomes.len() / per;
        eprintln!("none {none}, allowed {allowed}, blocked {blocked}");
        assert!(
            none > floor && allowed > floor && blocked > floor,
            "none {none}, allowed {allowed}, blocked {blocked}"
        );
    }

    /// Six /12s in distinct /8s, around the reserved and documentation ranges.
    const CLUSTERS: [(u32, u32); 6] = [
        (0xC610_0000, 20), // 198.16.0.0/12
        (0xC000_0000, 20), // 192.0.0.0/12
        (0xCB00_0000, 20), // 203.0.0.0/12
        (0x6440_0000, 20), // 100.64.0.0/12
        (0xF000_0000, 20), // 240.0.0.0/12
        (0xE9F0_0000, 20), // 233.240.0.0/12
    ];

    #[test]
    fn random_lists_resolve_like_the_reference() {
        for round in 0..3u64 {
            let mut g = Gen::new(0x5EED_0400 + round, &CLUSTERS, 300, 0.15);
            let entries: Vec<_> = (0..2_000)
                .map(|_| {
                    // Per mille: short prefixes are rare, or they would cover everything.
                    let len = match g.rng.random_range(0..1_000) {
                        0..2 => g.rng.random_range(8..=15),
                        2..100 => g.rng.random_range(16..=24),
                        _ => g.rng.random_range(25..=32),
                    };
                    g.entry(len)
                })
                .collect();
            let t = Tables::paint(&entries, DEFAULT_V4_NODES).unwrap();
            assert_eq!(t.used as usize, nodes_needed(&entries));
            let probes = g.probes(&entries, 8_000);
            // ipnet's own network and netmask, so the reference shares no arithmetic with
            // `paint`; precomputed because a debug-mode scan of every entry per probe is slow.
            let spans: Vec<(u32, u32)> = entries
                .iter()
                .map(|e| (u32::from(e.net.network()), u32::from(e.net.netmask())))
                .collect();
            let mut outcomes = Vec::with_capacity(probes.len());
            for &a in &probes {
                let expected = decide(
                    entries
                        .iter()
                        .zip(&spans)
                        .enumerate()
                        .filter(|(_, (_, (net, mask)))| a & mask == *net)
                        .map(|(i, (e, _))| covering(i, e)),
                );
                let got = resolve(&t.tbl24, &t.nodes, Ipv4Addr::from(a));
                assert_eq!(
                    got,
                    expected,
                    "round {round}, address {}: got {got:#x}, expected {expected:#x}",
                    Ipv4Addr::from(a)
                );
                outcomes.push(got);
            }
            assert_mixed(&outcomes, 20);
        }
    }

    /// The whole address space: the short prefixes of a large list would cover any cluster.
    const EVERYWHERE: [(u32, u32); 1] = [(0, u32::BITS)];

    #[test]
    fn two_hundred_thousand_entries_paint_correctly() {
        let mut g = Gen::new(0x5EED_0200, &EVERYWHERE, 4_000, 0.05);
        // Realistic mix: 60% host routes, the rest /16 to /31.
        let entries: Vec<_> = (0..200_000)
            .map(|_| {
                let len = if g.rng.random_bool(0.6) {
                    32
                } else {
                    g.rng.random_range(16..=31)
                };
                g.entry(len)
            })
            .collect();
        // 4,000 hot /24s need at most 17 nodes each.
        let t = Tables::paint(&entries, 4_000 * 17).unwrap();
        assert_eq!(t.used as usize, nodes_needed(&entries));

        // Index the entries by exact prefix so the reference needs 33 probes per address
        // rather than a scan of 200,000 entries.
        let mut by_prefix: HashMap<(u32, u8), Vec<usize>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            by_prefix
                .entry((u32::from(e.net.network()), e.net.prefix_len()))
                .or_default()
                .push(i);
        }
        let sample: Vec<_> = entries.iter().step_by(50).copied().collect();
        let probes = g.probes(&sample, 20_000);
        let mut outcomes = Vec::with_capacity(probes.len());
        for &a in &probes {
            let expected = decide((0..=u32::BITS as u8).flat_map(|len| {
                by_prefix
                    .get(&(a & mask(len), len))
                    .into_iter()
                    .flatten()
                    .map(|&i| covering(i, &entries[i]))
            }));
            let got = resolve(&t.tbl24, &t.nodes, Ipv4Addr::from(a));
            assert_eq!(got, expected, "address {}", Ipv4Addr::from(a));
            outcomes.push(got);
        }
        assert_mixed(&outcomes, 50);
    }
}
