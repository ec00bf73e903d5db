//! Allow and block lists: IPv4 in a DIR-24-4-4 table (one to three array lookups whatever the
//! list size), IPv6 in an LPM trie behind a one-bit-per-/24 negative filter. Every structure
//! exists twice and `active_table` picks the copy, so a list change is published to both
//! families in one config write.

use crate::maps::{RULES, V4_TBL8, V4_TBL24, V6_FILTER, V6_LIST0, V6_LIST1};
use crate::parse::Source;
use crate::ratelimit::Clock;
use api_shield_common::{
    config::ShieldConfig,
    entry,
    maps::{
        NODE_BITS, NODE_ELEMENTS, NODE_SLOTS, TBL24_ELEMENTS_PER_COPY, V6_FILTER_PREFIX,
        V6_FILTER_WORDS,
    },
};
use aya_ebpf::maps::lpm_trie::Key;

pub enum ListMatch {
    None,
    Allow,
    Block {
        origin: u32,
    },
    /// A block entry whose expiry has passed: the packet goes on to the rate limits.
    Expired,
}

#[inline(always)]
pub fn lookup(cfg: &ShieldConfig, src: &Source, clock: &mut Clock) -> ListMatch {
    let e = match src {
        Source::V4(addr) => v4_entry(cfg, *addr),
        Source::V6(addr) => v6_entry(cfg, addr),
    };
    match entry::action(e) {
        entry::ACTION_ALLOW => ListMatch::Allow,
        entry::ACTION_BLOCK => {
            if let Some(origin) = entry::as_direct_origin(entry::rule(e)) {
                return ListMatch::Block { origin };
            }
            let Some(rule) = RULES.get(entry::rule(e)) else {
                // An entry pointing past the rule table is a daemon bug; blocking is the safe side.
                return ListMatch::Block { origin: 0 };
            };
            if rule.expires_at_ns != 0 && clock.now() >= rule.expires_at_ns {
                ListMatch::Expired
            } else {
                ListMatch::Block {
                    origin: rule.origin,
                }
            }
        }
        _ => ListMatch::None,
    }
}

/// The first level answers by the top 24 bits; a split /24 names a node resolving bits 4..8,
/// whose split slots name a node resolving bits 0..4. At most three array lookups.
#[inline(always)]
fn v4_entry(cfg: &ShieldConfig, addr: u32) -> u32 {
    let copy = cfg.active_table & 1;
    let slot = addr >> (2 * NODE_BITS);
    let Some(pair) = V4_TBL24.get(copy * TBL24_ELEMENTS_PER_COPY + (slot >> 1)) else {
        return entry::NONE;
    };
    let first = pair[(slot & 1) as usize];
    if !entry::is_group(first) {
        return first;
    }
    let second = v4_node(cfg, copy, first, (addr >> NODE_BITS) & (NODE_SLOTS - 1));
    if !entry::is_group(second) {
        return second;
    }
    // Second-level nodes hold entries only.
    v4_node(cfg, copy, second, addr & (NODE_SLOTS - 1))
}

/// Slot `nibble` of the node `group` names; a node beyond the table reads as no entry.
#[inline(always)]
fn v4_node(cfg: &ShieldConfig, copy: u32, group: u32, nibble: u32) -> u32 {
    let node = entry::group_index(group);
    if node >= cfg.v4_nodes {
        return entry::NONE;
    }
    let index = (copy * cfg.v4_nodes + node) * NODE_ELEMENTS + (nibble >> 1);
    match V4_TBL8.get(index) {
        Some(pair) => pair[(nibble & 1) as usize],
        None => entry::NONE,
    }
}

#[inline(always)]
fn v6_entry(cfg: &ShieldConfig, addr: &[u8; 16]) -> u32 {
    let copy = cfg.active_table & 1;
    let top = u32::from_be_bytes([0, addr[0], addr[1], addr[2]]) >> (24 - V6_FILTER_PREFIX);
    let Some(word) = V6_FILTER.get(copy * V6_FILTER_WORDS + top / 64) else {
        return entry::NONE;
    };
    if word & (1u64 << (top % 64)) == 0 {
        return entry::NONE;
    }
    let key = Key::new(128, *addr);
    let found = if copy == 0 {
        V6_LIST0.get(key)
    } else {
        V6_LIST1.get(key)
    };
    match found {
        Some(e) => *e,
        None => entry::NONE,
    }
}
