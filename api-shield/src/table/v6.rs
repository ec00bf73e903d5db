//! The IPv6 list: an LPM trie whose values are already decided, behind a negative filter of
//! one bit per /24 so clean traffic costs one array lookup.
//!
//! The kernel returns the value of the longest prefix in the trie that matches, and nothing
//! else. Every address whose longest match is a given prefix is covered by exactly that prefix
//! and its ancestors in the list, so storing, per prefix, the decision over itself and its
//! ancestors makes the single trie lookup exact.

use super::{Compiled, TableError, position, precedence};
use api_shield_common::entry;
use api_shield_common::maps::{V6_FILTER_BITS, V6_FILTER_PREFIX, V6_FILTER_WORDS};
use api_shield_common::state::V6LpmKey;
use ipnet::Ipv6Net;
use std::collections::BTreeMap;
use std::net::Ipv6Addr;

/// Trie content: (network address, prefix length) to slot value.
pub type Trie = BTreeMap<(u128, u8), u32>;

const ADDR_BITS: u8 = u128::BITS as u8;
/// Shift that leaves the bits indexing the filter.
const FILTER_SHIFT: u32 = u128::BITS - V6_FILTER_PREFIX;
const WORD_BITS: usize = u64::BITS as usize;
const _: () = assert!(V6_FILTER_BITS == 1 << V6_FILTER_PREFIX);
const _: () = assert!(V6_FILTER_WORDS as usize * WORD_BITS == V6_FILTER_BITS as usize);

/// Both IPv6 maps' content, ready to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V6Tables {
    pub trie: Trie,
    pub filter: Vec<u64>,
}

/// Checks `entries`, then builds both maps; Err if the trie would hold more than `capacity`
/// (the `V6_LIST` map's size) prefixes.
pub fn compile(entries: &[Compiled<Ipv6Net>], capacity: u32) -> Result<V6Tables, TableError> {
    for e in entries {
        e.check()?;
    }
    let trie = trie_values(entries);
    if trie.len() > capacity as usize {
        return Err(TableError::V6EntriesExhausted {
            needed: trie.len(),
            limit: capacity,
        });
    }
    Ok(V6Tables {
        trie,
        filter: filter(entries),
    })
}

fn mask(len: u8) -> u128 {
    u128::MAX
        .checked_shl(u32::from(ADDR_BITS - len))
        .unwrap_or(0)
}

fn contains(outer: (u128, u8), inner: (u128, u8)) -> bool {
    outer.1 <= inner.1 && inner.0 & mask(outer.1) == outer.0
}

/// The trie content: for every distinct prefix among entries, the value the kernel must
/// return for addresses whose longest match is that prefix (the decision semantics applied to
/// the prefix's ancestors and itself). Expects entries that pass `Compiled::check`.
pub fn trie_values(entries: &[Compiled<Ipv6Net>]) -> Trie {
    // Sorted by (network, length), prefixes come in pre-order of the binary trie: every
    // ancestor before its descendants, and a prefix's descendants right after it. So a stack
    // of the current chain of ancestors, carrying the strongest claim along it, finds every
    // prefix's ancestors in O(n log n) overall, with no probing per prefix length.
    let mut own: Vec<(u128, u8, u128)> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let len = e.net.prefix_len();
            let key = precedence(e.action, e.expires_at_ns, len, i);
            (u128::from(e.net.network()), len, key)
        })
        .collect();
    // Strongest claim first within a prefix, so dedup keeps it.
    own.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(b.2.cmp(&a.2)));
    own.dedup_by_key(|&mut (net, len, _)| (net, len));

    let mut chain: Vec<(u128, u8, u128)> = Vec::with_capacity(usize::from(ADDR_BITS) + 1);
    let mut out = Vec::with_capacity(own.len());
    for (net, len, key) in own {
        while chain
            .last()
            .is_some_and(|&(n, l, _)| !contains((n, l), (net, len)))
        {
            chain.pop();
        }
        let best = chain
            .last()
            .map_or(key, |&(_, _, inherited)| inherited.max(key));
        chain.push((net, len, best));
        out.push(((net, len), entries[position(best)].value()));
    }
    // Already sorted: the map is built in one pass.
    out.into_iter().collect()
}

/// The negative filter words: bit `i` (word `i / 64`, bit `i % 64`) is set when the /24 with
/// index `i` intersects any entry, the only case in which the kernel walks the trie.
pub fn filter(entries: &[Compiled<Ipv6Net>]) -> Vec<u64> {
    let mut words = vec![0u64; V6_FILTER_WORDS as usize];
    for e in entries {
        let first = (u128::from(e.net.network()) >> FILTER_SHIFT) as usize;
        let len = u32::from(e.net.prefix_len());
        let count = 1usize << V6_FILTER_PREFIX.saturating_sub(len);
        set_bits(&mut words, first, count);
    }
    words
}

/// Sets bits `start..start + count`, whole words at a time where it can, so a /0 costs
/// 2^18 word writes rather than 2^24 bit writes.
fn set_bits(words: &mut [u64], start: usize, count: usize) {
    let end = start + count;
    let mut i = start;
    while i < end {
        let bit = i % WORD_BITS;
        let n = (WORD_BITS - bit).min(end - i);
        let run = if n == WORD_BITS {
            u64::MAX
        } else {
            ((1u64 << n) - 1) << bit
        };
        words[i / WORD_BITS] |= run;
        i += n;
    }
}

/// Resolves one address the way the kernel does: the filter first, then the longest prefix
/// in the trie that matches.
pub fn resolve(trie: &Trie, filter: &[u64], addr: Ipv6Addr) -> u32 {
    let addr = u128::from(addr);
    let bit = (addr >> FILTER_SHIFT) as usize;
    let Some(word) = filter.get(bit / WORD_BITS) else {
        return entry::NONE;
    };
    if word & (1u64 << (bit % WORD_BITS)) == 0 {
        return entry::NONE;
    }
    (0..=ADDR_BITS)
        .rev()
        .find_map(|len| trie.get(&(addr & mask(len), len)).copied())
        .unwrap_or(entry::NONE)
}

/// The kernel's key for one trie prefix.
pub fn lpm_key(network: u128, prefix_len: u8) -> V6LpmKey {
    V6LpmKey {
        prefix_len: u32::from(prefix_len),
        addr: network.to_be_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::reference::{Covering, decide};
    use api_shield_common::maps::DEFAULT_V6_ENTRIES;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const ALLOW: u32 = entry::ACTION_ALLOW;
    const BLOCK: u32 = entry::ACTION_BLOCK;

    fn net(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn allow(s: &str, rule: u32) -> Compiled<Ipv6Net> {
        Compiled {
            net: net(s),
            action: ALLOW,
            rule,
            expires_at_ns: 0,
        }
    }

    fn block(s: &str, rule: u32, expires_at_ns: u64) -> Compiled<Ipv6Net> {
        Compiled {
            net: net(s),
            action: BLOCK,
            rule,
            expires_at_ns,
        }
    }

    fn blocked_by(rule: u32) -> u32 {
        entry::encode(BLOCK, rule)
    }

    fn allowed_by(rule: u32) -> u32 {
        entry::encode(ALLOW, rule)
    }

    fn tables(entries: &[Compiled<Ipv6Net>]) -> V6Tables {
        compile(entries, DEFAULT_V6_ENTRIES).unwrap()
    }

    fn at(t: &V6Tables, addr: &str) -> u32 {
        resolve(&t.trie, &t.filter, ip(addr))
    }

    fn set_bits_of(words: &[u64]) -> Vec<usize> {
        (0..words.len() * WORD_BITS)
            .filter(|&i| words[i / WORD_BITS] & (1 << (i % WORD_BITS)) != 0)
            .collect()
    }

    fn top24(s: &str) -> usize {
        (u128::from(ip(s)) >> FILTER_SHIFT) as usize
    }

    #[test]
    fn filter_has_the_kernel_geometry() {
        let f = filter(&[]);
        assert_eq!(f.len(), V6_FILTER_WORDS as usize);
        assert!(f.iter().all(|&w| w == 0));
    }

    #[test]
    fn filter_bits_for_16_24_48_128() {
        // /16 sets the bits of its 256 /24s, and nothing else.
        let f = filter(&[block("2001::/16", 1, 0)]);
        let first = top24("2001::");
        assert_eq!(set_bits_of(&f), (first..first + 256).collect::<Vec<_>>());

        for (prefix, inside) in [
            ("2001:db00::/24", "2001:db00::"),
            ("2001:db8:1::/48", "2001:db8:1::"),
            ("2001:db8::1/128", "2001:db8::1"),
            ("3fff:ab::7/128", "3fff:ab::7"),
        ] {
            let f = filter(&[block(prefix, 1, 0)]);
            assert_eq!(set_bits_of(&f), vec![top24(inside)], "{prefix}");
        }

        // Together: the union, each /24 once.
        let f = filter(&[
            block("2001::/16", 1, 0),
            block("2001:db8:1::/48", 1, 0),
            block("3fff:ab::7/128", 1, 0),
        ]);
        assert_eq!(set_bits_of(&f).len(), 256 + 1);
    }

    #[test]
    fn filter_covers_prefixes_between_16_and_24_within_and_across_words() {
        for (len, bits) in [(17u8, 128usize), (18, 64), (19, 32), (20, 16), (23, 2)] {
            // An odd-looking network so the bits do not start at a word boundary when fewer
            // than a word's worth are set.
            let network = u128::from(ip("2001:0d40::")) & mask(len);
            let n = Ipv6Net::new_assert(Ipv6Addr::from(network), len);
            let f = filter(&[Compiled {
                net: n,
                action: BLOCK,
                rule: 1,
                expires_at_ns: 0,
            }]);
            let first = (network >> FILTER_SHIFT) as usize;
            assert_eq!(
                set_bits_of(&f),
                (first..first + bits).collect::<Vec<_>>(),
                "/{len}"
            );
        }
    }

    #[test]
    fn filter_for_a_zero_length_prefix_sets_every_bit() {
        let f = filter(&[block("::/0", 1, 0)]);
        assert_eq!(f.len(), V6_FILTER_WORDS as usize);
        assert!(f.iter().all(|&w| w == u64::MAX));
    }

    #[test]
    fn filter_reaches_the_last_bit() {
        let f = filter(&[block("ffff:ff00::/24", 1, 0)]);
        assert_eq!(set_bits_of(&f), vec![V6_FILTER_BITS as usize - 1]);
        let f = filter(&[block("ff00::/8", 1, 0)]);
        assert_eq!(set_bits_of(&f).len(), 1 << 16);
        assert_eq!(f.last(), Some(&u64::MAX));
    }

    #[test]
    fn set_bits_handles_partial_words_on_both_sides() {
        let mut w = vec![0u64; 4];
        set_bits(&mut w, 60, 70);
        assert_eq!(set_bits_of(&w), (60..130).collect::<Vec<_>>());
    }

    #[test]
    fn allow_beats_a_longer_block_inside_it() {
        let t = tables(&[
            block("2001:db8:1::7/128", 1, 0),
            allow("2001:db8:1::/48", 2),
        ]);
        assert_eq!(at(&t, "2001:db8:1::7"), allowed_by(2));
        assert_eq!(at(&t, "2001:db8:1::8"), allowed_by(2));
        assert_eq!(at(&t, "2001:db8:2::7"), entry::NONE);
    }

    #[test]
    fn allow_128_inside_block_32() {
        let t = tables(&[block("2001:db8::/32", 1, 0), allow("2001:db8::7/128", 2)]);
        assert_eq!(at(&t, "2001:db8::7"), allowed_by(2));
        assert_eq!(at(&t, "2001:db8::6"), blocked_by(1));
        assert_eq!(at(&t, "2001:db8:ffff::"), blocked_by(1));
        assert_eq!(at(&t, "2001:db9::"), entry::NONE);
    }

    #[test]
    fn expiring_block_inside_permanent_block_resolves_to_the_permanent_one() {
        let t = tables(&[
            block("2001:db8::/32", 1, 0),
            block("2001:db8::7/128", 2, 5_000),
        ]);
        assert_eq!(at(&t, "2001:db8::7"), blocked_by(1));
        // The /128 is still in the trie (it is the longest match) but carries the /32's value.
        assert_eq!(
            t.trie.get(&(u128::from(ip("2001:db8::7")), 128)),
            Some(&blocked_by(1))
        );
    }

    #[test]
    fn later_expiring_short_block_wins_and_earlier_loses() {
        let t = tables(&[
            block("2001:db8::7/128", 2, 5_000),
            block("2001:db8::/32", 1, 9_000),
        ]);
        assert_eq!(at(&t, "2001:db8::7"), blocked_by(1));
        let t = tables(&[
            block("2001:db8::7/128", 2, 9_000),
            block("2001:db8::/32", 1, 5_000),
        ]);
        assert_eq!(at(&t, "2001:db8::7"), blocked_by(2));
        assert_eq!(at(&t, "2001:db8::8"), blocked_by(1));
    }

    #[test]
    fn equal_expiry_goes_to_the_longer_prefix_then_the_first_given() {
        let t = tables(&[
            block("2001:db8::/32", 1, 100),
            block("2001:db8:1::/48", 2, 100),
            block("2001:db8:1::/48", 3, 100),
            block("2001:db8:1::/64", 4, 0),
        ]);
        assert_eq!(at(&t, "2001:db8:1:1::"), blocked_by(2));
        assert_eq!(at(&t, "2001:db8:1::1"), blocked_by(4));
        assert_eq!(at(&t, "2001:db8:2::"), blocked_by(1));
        assert_eq!(t.trie.len(), 3);
    }

    #[test]
    fn siblings_do_not_inherit_from_each_other() {
        // 2001:db8:1::/48 comes right after 2001:db8::/48's descendants in trie order; the
        // stack must drop them, or the allow would leak into its sibling.
        let t = tables(&[
            allow("2001:db8::/48", 1),
            block("2001:db8::5/128", 2, 0),
            block("2001:db8:1::5/128", 3, 0),
            block("2001:db8::/32", 4, 100),
        ]);
        assert_eq!(at(&t, "2001:db8::5"), allowed_by(1));
        assert_eq!(at(&t, "2001:db8:1::5"), blocked_by(3));
        assert_eq!(at(&t, "2001:db8:1::6"), blocked_by(4));
    }

    #[test]
    fn the_filter_hides_the_trie() {
        let mut t = tables(&[block("2001:db8::/32", 1, 0)]);
        assert_eq!(at(&t, "2001:db8::1"), blocked_by(1));
        t.filter.fill(0);
        assert_eq!(at(&t, "2001:db8::1"), entry::NONE);
    }

    #[test]
    fn zero_length_prefix_covers_everything() {
        let t = tables(&[block("::/0", 1, 0), allow("2001:db8::1/128", 2)]);
        assert_eq!(at(&t, "::"), blocked_by(1));
        assert_eq!(
            at(&t, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            blocked_by(1)
        );
        assert_eq!(at(&t, "2001:db8::1"), allowed_by(2));
    }

    #[test]
    fn host_bits_are_ignored() {
        let t = tables(&[block("2001:db8::7/32", 1, 0)]);
        assert_eq!(
            t.trie.keys().next(),
            Some(&(u128::from(ip("2001:db8::")), 32))
        );
        assert_eq!(at(&t, "2001:db8:ffff::"), blocked_by(1));
    }

    #[test]
    fn compile_refuses_more_prefixes_than_the_trie_holds() {
        let entries = [
            block("2001:db8::/32", 1, 0),
            block("2001:db8::/32", 2, 0),
            block("2001:db8::1/128", 1, 0),
            block("2001:db8::2/128", 1, 0),
        ];
        // Duplicates share one trie entry.
        assert_eq!(compile(&entries, 3).unwrap().trie.len(), 3);
        let err = compile(&entries, 2).unwrap_err();
        assert!(
            matches!(
                err,
                TableError::V6EntriesExhausted {
                    needed: 3,
                    limit: 2
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("v6_entries"), "{err}");
    }

    #[test]
    fn compile_refuses_invalid_entries() {
        let bad = Compiled {
            action: 7,
            ..block("2001:db8::/32", 1, 0)
        };
        assert!(matches!(
            compile(&[bad], DEFAULT_V6_ENTRIES),
            Err(TableError::InvalidAction { action: 7, .. })
        ));
        assert!(matches!(
            compile(&[block("2001:db8::/32", 0, 0)], DEFAULT_V6_ENTRIES),
            Err(TableError::InvalidRule { rule: 0, .. })
        ));
    }

    #[test]
    fn lpm_key_is_length_and_network_bytes() {
        let k = lpm_key(u128::from(ip("2001:db8::")), 32);
        assert_eq!(k.prefix_len, 32);
        assert_eq!(k.addr, ip("2001:db8::").octets());
    }

    // --- Randomised equivalence with the reference semantics ---

    /// Networks addresses are drawn under, /32s in distinct /16s (documentation and ULA).
    const CLUSTERS: [u128; 6] = [
        0x2001_0db8 << 96,
        0x3fff_0000 << 96,
        0x3ffe_0001 << 96,
        0xfd12_3456 << 96,
        0xfd00_0001 << 96,
        0xfdff_0002 << 96,
    ];

    /// Expiries drawn from a small set so that ties happen, 0 (never) among them.
    const EXPIRIES: [u64; 5] = [0, 1_000, 2_000, 3_000, 4_000];

    const GROUP_BITS: u32 = u16::BITS;
    const GROUPS_BELOW_32: u32 = (u128::BITS - u32::BITS) / GROUP_BITS;

    /// An address in a cluster whose 16-bit groups come from a tiny alphabet, so random
    /// prefixes nest and collide often.
    fn random_addr(rng: &mut StdRng) -> u128 {
        let mut a = CLUSTERS[rng.random_range(0..CLUSTERS.len())];
        for g in 0..GROUPS_BELOW_32 {
            let group: u16 = match rng.random_range(0..4) {
                0 => 0,
                1 => 1,
                2 => 0x8000,
                _ => rng.random(),
            };
            a |= u128::from(group) << (g * GROUP_BITS);
        }
        a
    }

    fn random_entry(rng: &mut StdRng) -> Compiled<Ipv6Net> {
        // Per mille: short prefixes are rare and seldom allows, or they would cover
        // everything and leave few blocks to check.
        let len = match rng.random_range(0..1_000) {
            0..2 => rng.random_range(16..=31),
            2..250 => rng.random_range(40..=64),
            _ => rng.random_range(65..=128),
        };
        let allow_p = if len >= 64 { 0.15 } else { 0.02 };
        let action = if rng.random_bool(allow_p) {
            ALLOW
        } else {
            BLOCK
        };
        Compiled {
            net: Ipv6Net::new_assert(Ipv6Addr::from(random_addr(rng) & mask(len)), len),
            action,
            rule: rng.random_range(1..=64),
            expires_at_ns: EXPIRIES[rng.random_range(0..EXPIRIES.len())],
        }
    }

    fn filter_has(filter: &[u64], addr: u128) -> bool {
        let bit = (addr >> FILTER_SHIFT) as usize;
        filter[bit / WORD_BITS] & (1 << (bit % WORD_BITS)) != 0
    }

    #[test]
    fn random_lists_resolve_like_the_reference() {
        for round in 0..3u64 {
            let mut rng = StdRng::seed_from_u64(0x5EED_0600 + round);
            let entries: Vec<_> = (0..2_000).map(|_| random_entry(&mut rng)).collect();
            let t = tables(&entries);

            let mut probes: Vec<u128> = (0..5_000).map(|_| random_addr(&mut rng)).collect();
            // Anywhere at all: mostly stopped by the filter.
            probes.extend((0..500).map(|_| rng.random::<u128>()));
            // Entry edges and their outside neighbours.
            for e in entries.iter().step_by(4) {
                let (lo, hi) = (u128::from(e.net.network()), u128::from(e.net.broadcast()));
                probes.extend([lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)]);
            }

            // ipnet's own network and netmask, so the reference shares no arithmetic with
            // the compiler; precomputed because a debug-mode scan per probe is slow.
            let spans: Vec<(u128, u128)> = entries
                .iter()
                .map(|e| (u128::from(e.net.network()), u128::from(e.net.netmask())))
                .collect();
            let (mut none, mut allowed, mut blocked, mut trie_misses) = (0, 0, 0, 0);
            for &a in &probes {
                let addr = Ipv6Addr::from(a);
                let expected = decide(
                    entries
                        .iter()
                        .zip(&spans)
                        .enumerate()
                        .filter(|(_, (_, (net, mask)))| a & mask == *net)
                        .map(|(position, (e, _))| Covering {
                            position,
                            action: e.action,
                            rule: e.rule,
                            expires_at_ns: e.expires_at_ns,
                            prefix_len: e.net.prefix_len(),
                        }),
                );
                let got = resolve(&t.trie, &t.filter, addr);
                assert_eq!(
                    got, expected,
                    "round {round}, address {addr}: got {got:#x}, expected {expected:#x}"
                );
                match entry::action(got) {
                    ALLOW => allowed += 1,
                    BLOCK => blocked += 1,
                    _ if filter_has(&t.filter, a) => trie_misses += 1,
                    _ => none += 1,
                }
            }
            eprintln!(
                "filtered {none}, trie misses {trie_misses}, allowed {allowed}, blocked {blocked}"
            );
            // A generator that stopped producing a mix would test little; misses in the trie
            // behind a set filter bit are the path most easily gotten wrong.
            let floor = probes.len() / 20;
            assert!(
                none > floor && allowed > floor && blocked > floor && trie_misses > floor,
                "filtered {none}, trie misses {trie_misses}, allowed {allowed}, blocked {blocked}"
            );
        }
    }
}
