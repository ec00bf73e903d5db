//! Allow and block lists: IPv4 in a DIR-24-8 table (one or two array lookups whatever the
//! list size), IPv6 in an LPM trie behind a one-bit-per-/24 negative filter.

use crate::maps::{RULES, V4_TBL8, V4_TBL24, V6_FILTER, V6_LIST};
use crate::parse::Source;
use crate::ratelimit::Clock;
use api_shield_common::{
    config::ShieldConfig,
    entry,
    maps::{TBL8_ELEMENTS_PER_GROUP, TBL24_ELEMENTS_PER_COPY, V6_FILTER_PREFIX},
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
        Source::V6(addr) => v6_entry(addr),
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

#[inline(always)]
fn v4_entry(cfg: &ShieldConfig, addr: u32) -> u32 {
    let copy = cfg.active_table & 1;
    let slot = addr >> 8;
    let Some(pair) = V4_TBL24.get(copy * TBL24_ELEMENTS_PER_COPY + (slot >> 1)) else {
        return entry::NONE;
    };
    let first = pair[(slot & 1) as usize];
    if !entry::is_group(first) {
        return first;
    }
    let group = entry::group_index(first);
    if group >= cfg.tbl8_groups {
        return entry::NONE;
    }
    let low = addr & 0xFF;
    let index = (copy * cfg.tbl8_groups + group) * TBL8_ELEMENTS_PER_GROUP + (low >> 1);
    match V4_TBL8.get(index) {
        Some(pair) => pair[(low & 1) as usize],
        None => entry::NONE,
    }
}

#[inline(always)]
fn v6_entry(addr: &[u8; 16]) -> u32 {
    let top = u32::from_be_bytes([0, addr[0], addr[1], addr[2]]) >> (24 - V6_FILTER_PREFIX);
    let Some(word) = V6_FILTER.get(top / 64) else {
        return entry::NONE;
    };
    if word & (1u64 << (top % 64)) == 0 {
        return entry::NONE;
    }
    match V6_LIST.get(Key::new(128, *addr)) {
        Some(e) => *e,
        None => entry::NONE,
    }
}
