//! The IPv4 DIR-24-8 table: `tbl24` answers every address by its top 24 bits, except where a
//! prefix longer than /24 splits a /24 into a 256-slot group of `tbl8`.
//!
//! Entries are painted weakest first so that a later paint may simply overwrite: then the
//! strongest covering entry is the last one written to every slot, allow included, and no
//! slot needs to look at what it overwrites.

use super::{Compiled, TableError, position, precedence};
use api_shield_common::entry;
use api_shield_common::maps::{TBL8_GROUP_SLOTS, TBL24_SLOTS};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// Address bits resolved inside a group.
const GROUP_BITS: u32 = TBL8_GROUP_SLOTS.trailing_zeros();
/// Prefix lengths up to this are painted into `tbl24` directly.
const FIRST_LEVEL_BITS: u8 = (u32::BITS - GROUP_BITS) as u8;
const LOW_MASK: u32 = TBL8_GROUP_SLOTS - 1;
const GROUP_SLOTS: usize = TBL8_GROUP_SLOTS as usize;
const _: () = assert!(TBL8_GROUP_SLOTS.is_power_of_two());
const _: () = assert!(TBL24_SLOTS == 1 << FIRST_LEVEL_BITS);

/// Fills a zeroed copy of the two IPv4 tables with `entries`. tbl24.len() == maps::TBL24_SLOTS,
/// tbl8.len() == groups * maps::TBL8_GROUP_SLOTS. Zeroes both first. Returns the number of
/// groups used. Err if more groups are needed than fit.
///
/// Groups are allocated from 0 upwards, so only the first `groups used` of `tbl8` matter.
/// On error the tables hold a partial paint and must not be published.
pub fn paint(
    entries: &[Compiled<Ipv4Net>],
    tbl24: &mut [u32],
    tbl8: &mut [u32],
) -> Result<u32, TableError> {
    if tbl24.len() != TBL24_SLOTS as usize {
        return Err(TableError::Tbl24Size {
            len: tbl24.len(),
            expected: TBL24_SLOTS,
        });
    }
    if !tbl8.len().is_multiple_of(GROUP_SLOTS) {
        return Err(TableError::Tbl8Size {
            len: tbl8.len(),
            group_slots: TBL8_GROUP_SLOTS,
        });
    }
    for e in entries {
        e.check()?;
    }
    // Group indices share the slot with `GROUP_FLAG`, so more could not be named.
    let limit = u32::try_from(tbl8.len() / GROUP_SLOTS)
        .unwrap_or(u32::MAX)
        .min(entry::GROUP_FLAG - 1);

    tbl24.fill(entry::NONE);
    tbl8.fill(entry::NONE);

    let mut order: Vec<u128> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| precedence(e.action, e.expires_at_ns, e.net.prefix_len(), i))
        .collect();
    order.sort_unstable();

    let mut used: u32 = 0;
    for key in order {
        let e = &entries[position(key)];
        let value = e.value();
        let addr = u32::from(e.net.network());
        let len = e.net.prefix_len();
        if len <= FIRST_LEVEL_BITS {
            let first = (addr >> GROUP_BITS) as usize;
            let count = 1usize << (FIRST_LEVEL_BITS - len);
            for slot in &mut tbl24[first..first + count] {
                if entry::is_group(*slot) {
                    // The group stays: only its content is overridden, so the groups used
                    // depend on the entries alone, not on the order they are painted in.
                    let g = entry::group_index(*slot) as usize * GROUP_SLOTS;
                    tbl8[g..g + GROUP_SLOTS].fill(value);
                } else {
                    *slot = value;
                }
            }
        } else {
            let slot = &mut tbl24[(addr >> GROUP_BITS) as usize];
            if !entry::is_group(*slot) {
                if used == limit {
                    return Err(TableError::V4GroupsExhausted {
                        needed: groups_needed(entries),
                        limit,
                    });
                }
                let g = used as usize * GROUP_SLOTS;
                // The rest of the /24 keeps deciding as it did before the split.
                tbl8[g..g + GROUP_SLOTS].fill(*slot);
                *slot = entry::group(used);
                used += 1;
            }
            let base = entry::group_index(*slot) as usize * GROUP_SLOTS;
            let low = (addr & LOW_MASK) as usize;
            let count = 1usize << (u32::BITS as u8 - len);
            tbl8[base + low..base + low + count].fill(value);
        }
    }
    Ok(used)
}

/// Second-level groups `paint` uses for `entries`: one per /24 holding a prefix longer than
/// /24, so the daemon can size `v4_host_groups` or explain a failure.
pub fn groups_needed(entries: &[Compiled<Ipv4Net>]) -> usize {
    let mut slots: Vec<u32> = entries
        .iter()
        .filter(|e| e.net.prefix_len() > FIRST_LEVEL_BITS)
        .map(|e| u32::from(e.net.network()) >> GROUP_BITS)
        .collect();
    slots.sort_unstable();
    slots.dedup();
    slots.len()
}

/// Resolves one address the way the kernel does (for tests and for `explain` tooling).
pub fn resolve(tbl24: &[u32], tbl8: &[u32], addr: Ipv4Addr) -> u32 {
    let addr = u32::from(addr);
    let Some(&first) = tbl24.get((addr >> GROUP_BITS) as usize) else {
        return entry::NONE;
    };
    if !entry::is_group(first) {
        return first;
    }
    // Like the kernel, a group beyond the table reads as no entry.
    let index = entry::group_index(first) as usize * GROUP_SLOTS + (addr & LOW_MASK) as usize;
    tbl8.get(index).copied().unwrap_or(entry::NONE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::reference::{Covering, decide};
    use api_shield_common::maps::DEFAULT_TBL8_GROUPS;
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

    struct Tables {
        tbl24: Vec<u32>,
        tbl8: Vec<u32>,
        used: u32,
    }

    impl Tables {
        fn paint(entries: &[Compiled<Ipv4Net>], groups: u32) -> Result<Self, TableError> {
            let mut tbl24 = vec![0u32; TBL24_SLOTS as usize];
            let mut tbl8 = vec![0u32; (groups * TBL8_GROUP_SLOTS) as usize];
            let used = paint(entries, &mut tbl24, &mut tbl8)?;
            Ok(Self { tbl24, tbl8, used })
        }

        fn at(&self, addr: &str) -> u32 {
            resolve(&self.tbl24, &self.tbl8, ip(addr))
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
        assert_eq!(t.used, 1);
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
        assert_eq!(t.used, 1);
        assert!(entry::is_group(
            t.tbl24[(u32::from(ip("198.18.7.0")) >> 8) as usize]
        ));
        assert_eq!(t.at("198.18.7.0"), blocked_by(1));
        assert_eq!(t.at("198.18.7.127"), blocked_by(1));
        assert_eq!(t.at("198.18.7.128"), blocked_by(2));
        assert_eq!(t.at("198.18.7.255"), blocked_by(2));
        assert_eq!(t.at("198.18.8.0"), blocked_by(1));
    }

    #[test]
    fn a_shorter_prefix_painted_later_overrides_inside_groups() {
        // The /32 splits its /24 first (it expires earlier, so it is painted first); the
        // /16 must then override inside the group too, on both sides of the /32.
        let t = Tables::paint(
            &[
                block("198.18.7.9/32", 2, 100),
                block("198.18.0.0/16", 1, 200),
            ],
            4,
        )
        .unwrap();
        assert_eq!(t.used, 1);
        for a in ["198.18.7.0", "198.18.7.9", "198.18.7.255", "198.18.8.9"] {
            assert_eq!(t.at(a), blocked_by(1), "{a}");
        }
    }

    #[test]
    fn long_prefixes_in_one_24_share_one_group() {
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
        assert_eq!(t.used, 2);
        assert_eq!(t.at("198.18.7.9"), blocked_by(1));
        assert_eq!(t.at("198.18.7.11"), blocked_by(2));
        assert_eq!(t.at("198.18.7.100"), blocked_by(3));
        assert_eq!(t.at("198.18.7.128"), entry::NONE);
        assert_eq!(t.at("198.18.8.1"), blocked_by(4));
        assert_eq!(t.at("198.18.8.2"), entry::NONE);
    }

    #[test]
    fn zero_length_prefix_covers_everything() {
        let t = Tables::paint(&[block("0.0.0.0/0", 1, 0), allow("198.18.0.1/32", 2)], 1).unwrap();
        assert_eq!(t.at("0.0.0.0"), blocked_by(1));
        assert_eq!(t.at("255.255.255.255"), blocked_by(1));
        assert_eq!(t.at("198.18.0.1"), allowed_by(2));
        assert_eq!(t.at("198.18.0.2"), blocked_by(1));
    }

    #[test]
    fn host_bits_are_ignored() {
        let t = Tables::paint(
            &[block("198.18.7.9/24", 1, 0), block("198.18.8.9/30", 2, 0)],
            1,
        )
        .unwrap();
        assert_eq!(t.at("198.18.7.0"), blocked_by(1));
        assert_eq!(t.at("198.18.7.255"), blocked_by(1));
        assert_eq!(t.at("198.18.8.8"), blocked_by(2));
        assert_eq!(t.at("198.18.8.11"), blocked_by(2));
        assert_eq!(t.at("198.18.8.12"), entry::NONE);
    }

    #[test]
    fn painting_starts_from_clean_tables() {
        let mut tbl24 = vec![blocked_by(9); TBL24_SLOTS as usize];
        let mut tbl8 = vec![blocked_by(9); 2 * GROUP_SLOTS];
        let used = paint(&[block("198.18.0.1/32", 1, 0)], &mut tbl24, &mut tbl8).unwrap();
        assert_eq!(used, 1);
        assert_eq!(resolve(&tbl24, &tbl8, ip("198.18.0.1")), blocked_by(1));
        assert_eq!(resolve(&tbl24, &tbl8, ip("198.18.0.2")), entry::NONE);
        assert_eq!(resolve(&tbl24, &tbl8, ip("1.2.3.4")), entry::NONE);
        assert!(tbl8[GROUP_SLOTS..].iter().all(|&s| s == entry::NONE));
    }

    #[test]
    fn groups_exhausted_is_an_error_naming_the_setting() {
        let entries = [
            block("198.18.1.1/32", 1, 0),
            block("198.18.1.2/32", 1, 0),
            block("198.18.2.1/32", 1, 0),
            block("198.18.3.0/25", 1, 0),
            block("198.18.4.0/24", 1, 0),
        ];
        assert_eq!(groups_needed(&entries), 3);
        let Err(err) = Tables::paint(&entries, 2) else {
            panic!("two groups cannot hold three split /24s");
        };
        assert!(
            matches!(
                err,
                TableError::V4GroupsExhausted {
                    needed: 3,
                    limit: 2
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("v4_host_groups"), "{err}");
        // Exactly enough fits.
        assert_eq!(Tables::paint(&entries, 3).unwrap().used, 3);
        // No room at all still paints what needs no group.
        assert!(Tables::paint(&entries[4..], 0).is_ok());
        assert!(Tables::paint(&entries, 0).is_err());
    }

    #[test]
    fn wrong_table_sizes_are_refused() {
        let mut short24 = vec![0u32; TBL24_SLOTS as usize - 1];
        let mut tbl8 = vec![0u32; GROUP_SLOTS];
        assert!(matches!(
            paint(&[], &mut short24, &mut tbl8),
            Err(TableError::Tbl24Size { .. })
        ));
        let mut tbl24 = vec![0u32; TBL24_SLOTS as usize];
        let mut ragged8 = vec![0u32; GROUP_SLOTS + 1];
        assert!(matches!(
            paint(&[], &mut tbl24, &mut ragged8),
            Err(TableError::Tbl8Size { .. })
        ));
    }

    #[test]
    fn invalid_entries_are_refused() {
        let mut tbl24 = vec![0u32; TBL24_SLOTS as usize];
        let mut tbl8 = vec![0u32; GROUP_SLOTS];
        let bad = Compiled {
            action: 0,
            ..block("198.18.0.0/16", 1, 0)
        };
        assert!(matches!(
            paint(&[bad], &mut tbl24, &mut tbl8),
            Err(TableError::InvalidAction { .. })
        ));
        assert!(matches!(
            paint(&[block("198.18.0.0/16", 0, 0)], &mut tbl24, &mut tbl8),
            Err(TableError::InvalidRule { .. })
        ));
    }

    #[test]
    fn resolve_reads_a_group_beyond_the_table_as_no_entry() {
        let mut tbl24 = vec![0u32; TBL24_SLOTS as usize];
        tbl24[(u32::from(ip("198.18.0.0")) >> GROUP_BITS) as usize] = entry::group(5);
        let tbl8 = vec![blocked_by(1); 2 * GROUP_SLOTS];
        assert_eq!(resolve(&tbl24, &tbl8, ip("198.18.0.1")), entry::NONE);
    }

    // --- Randomised equivalence with the reference semantics ---

    /// Generates entries and probe addresses that overlap a lot: prefixes longer than /24 all
    /// fall into a few "hot" /24s (which also bounds the groups needed), shorter ones half
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
            let t = Tables::paint(&entries, DEFAULT_TBL8_GROUPS).unwrap();
            assert_eq!(t.used as usize, groups_needed(&entries));
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
                let got = resolve(&t.tbl24, &t.tbl8, Ipv4Addr::from(a));
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
        let t = Tables::paint(&entries, DEFAULT_TBL8_GROUPS).unwrap();
        assert_eq!(t.used as usize, groups_needed(&entries));

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
            let got = resolve(&t.tbl24, &t.tbl8, Ipv4Addr::from(a));
            assert_eq!(got, expected, "address {}", Ipv4Addr::from(a));
            outcomes.push(got);
        }
        assert_mixed(&outcomes, 50);
    }
}
