//! Per-source rate limits on a count-min sketch of token buckets, and the kernel's own
//! auto-block of sources that keep exceeding them.
//!
//! Clean traffic touches two array cells and no hash map: no allocation, no eviction churn
//! under spoofed floods. Only a source that is over its limit gets an exact (LRU) strike
//! record, and only a source whose cells carry a block hint pays the exact auto-block lookup.

use crate::counters::count;
use crate::maps::{AUTO_BLOCKS, BUCKETS, EVENT_STATE, EVENTS, OFFENDERS, PORTS};
use crate::parse::{Packet, Source};
use api_shield_common::{
    bucket,
    config::{AUTO_BLOCK_HINT_GRACE_NS, FLAG_PORT_SCOPED, MODE_MONITOR, ShieldConfig, port_word},
    hash,
    state::{AutoBlock, AutoBlockEvent, BucketSlot, FAMILY_V4, FAMILY_V6, Offender, RateKey},
    verdict,
};
use aya_ebpf::{bindings::BPF_ANY, helpers::bpf_ktime_get_coarse_ns};

/// The packet's view of time, read at most once (millisecond resolution is enough here).
pub struct Clock(u64);

impl Clock {
    pub const fn new() -> Self {
        Self(0)
    }

    #[inline(always)]
    pub fn now(&mut self) -> u64 {
        if self.0 == 0 {
            // SAFETY: a helper with no arguments and no preconditions.
            self.0 = unsafe { bpf_ktime_get_coarse_ns() };
        }
        self.0
    }
}

pub enum RateOutcome {
    Within,
    AutoBlocked,
    Limited { syn: bool },
}

#[inline(always)]
fn mask_v4(addr: u32, prefix: u32) -> u32 {
    if prefix == 0 {
        0
    } else if prefix >= 32 {
        addr
    } else {
        addr & !(u32::MAX >> prefix)
    }
}

#[inline(always)]
fn rate_key(cfg: &ShieldConfig, src: &Source) -> RateKey {
    match src {
        Source::V4(addr) => RateKey {
            family: FAMILY_V4,
            addr: [mask_v4(*addr, cfg.v4_rate_prefix), 0, 0, 0],
        },
        Source::V6(a) => {
            let mut words = [
                u32::from_be_bytes([a[0], a[1], a[2], a[3]]),
                u32::from_be_bytes([a[4], a[5], a[6], a[7]]),
                u32::from_be_bytes([a[8], a[9], a[10], a[11]]),
                u32::from_be_bytes([a[12], a[13], a[14], a[15]]),
            ];
            let prefix = cfg.v6_rate_prefix;
            for (i, w) in words.iter_mut().enumerate() {
                let start = i as u32 * 32;
                *w = if prefix <= start {
                    0
                } else {
                    mask_v4(*w, prefix - start)
                };
            }
            RateKey {
                family: FAMILY_V6,
                addr: words,
            }
        }
    }
}

#[inline(always)]
fn in_scope(cfg: &ShieldConfig, pkt: &Packet) -> bool {
    if cfg.flags & FLAG_PORT_SCOPED == 0 {
        return true;
    }
    match pkt.dst_port {
        Some(port) => {
            let (word, bit) = port_word(port);
            PORTS.get(word).is_some_and(|w| w & bit != 0)
        }
        // A later fragment's port is unknown: limiting it keeps fragments from being a way
        // around a port-scoped limit.
        None => pkt.later_fragment,
    }
}

#[inline(always)]
pub fn check(cfg: &ShieldConfig, pkt: &Packet, clock: &mut Clock) -> RateOutcome {
    let key = rate_key(cfg, &pkt.src);
    let (cell_a, cell_b) = hash::cells(&cfg.seeds, &key, cfg.sketch_mask);
    let (Some(a), Some(b)) = (BUCKETS.get_ptr_mut(cell_a), BUCKETS.get_ptr_mut(cell_b)) else {
        return RateOutcome::Within;
    };
    // SAFETY: array values live as long as the map; concurrent CPUs may race on a cell, which
    // can only misplace a few tokens, never touch memory outside it.
    let (a, b) = unsafe { (&mut *a, &mut *b) };
    let now = clock.now();

    if a.block_hint_until_ns > now && b.block_hint_until_ns > now && auto_blocked(&key, now) {
        return RateOutcome::AutoBlocked;
    }
    if !in_scope(cfg, pkt) {
        return RateOutcome::Within;
    }
    // Both cells are charged; the source passes if either had room, so a collision with a
    // heavy source in one row never limits it alone.
    let pkt_a = bucket::take(&mut a.pkt, now, &cfg.pkt);
    let pkt_b = bucket::take(&mut b.pkt, now, &cfg.pkt);
    let mut outcome = RateOutcome::Within;
    if !(pkt_a || pkt_b) {
        outcome = RateOutcome::Limited { syn: false };
    } else if pkt.syn {
        let syn_a = bucket::take(&mut a.syn, now, &cfg.syn);
        let syn_b = bucket::take(&mut b.syn, now, &cfg.syn);
        if !(syn_a || syn_b) {
            outcome = RateOutcome::Limited { syn: true };
        }
    }
    if matches!(outcome, RateOutcome::Limited { .. }) && cfg.mode != MODE_MONITOR {
        strike(cfg, &key, now, a, b);
    }
    outcome
}

#[inline(always)]
fn auto_blocked(key: &RateKey, now: u64) -> bool {
    // SAFETY: the value is copied out before anything else can touch the entry.
    match unsafe { AUTO_BLOCKS.get(key) } {
        Some(block) if block.expires_at_ns > now => true,
        Some(_) => {
            // Expired: tidy up so the map does not fill with dead entries.
            let _ = AUTO_BLOCKS.remove(key);
            false
        }
        None => false,
    }
}

#[inline(always)]
fn strike(cfg: &ShieldConfig, key: &RateKey, now: u64, a: &mut BucketSlot, b: &mut BucketSlot) {
    if cfg.autoblock_strikes == 0 {
        return;
    }
    let strikes = match OFFENDERS.get_ptr_mut(key) {
        Some(o) => {
            // SAFETY: an LRU value pointer stays valid for this program run.
            let o = unsafe { &mut *o };
            if now.saturating_sub(o.window_start_ns) > cfg.autoblock_window_ns {
                o.window_start_ns = now;
                o.strikes = 1;
            } else {
                o.strikes += 1;
            }
            o.strikes
        }
        None => {
            let fresh = Offender {
                window_start_ns: now,
                strikes: 1,
                _pad: 0,
            };
            let _ = OFFENDERS.insert(key, fresh, BPF_ANY as u64);
            1
        }
    };
    if strikes < cfg.autoblock_strikes {
        return;
    }
    let block = AutoBlock {
        expires_at_ns: now + cfg.autoblock_ttl_ns,
        created_ns: now,
    };
    if AUTO_BLOCKS.insert(key, block, BPF_ANY as u64).is_err() {
        count(verdict::AUTO_BLOCK_FULL, 0);
        return;
    }
    count(verdict::AUTO_BLOCK_ADDED, 0);
    let _ = OFFENDERS.remove(key);
    // The hint outlives the block, so a source that comes back after its block expired
    // reaches the exact map once more and frees its slot there; the daemon sweeps the slots
    // of sources that never come back.
    let grace = if cfg.autoblock_ttl_ns > AUTO_BLOCK_HINT_GRACE_NS {
        cfg.autoblock_ttl_ns
    } else {
        AUTO_BLOCK_HINT_GRACE_NS
    };
    let hint = block.expires_at_ns + grace;
    if a.block_hint_until_ns < hint {
        a.block_hint_until_ns = hint;
    }
    if b.block_hint_until_ns < hint {
        b.block_hint_until_ns = hint;
    }
    emit(cfg, key, strikes, &block, now);
}

#[inline(always)]
fn emit(cfg: &ShieldConfig, key: &RateKey, strikes: u32, block: &AutoBlock, now: u64) {
    let allowed = match EVENT_STATE.get_ptr_mut(0) {
        // SAFETY: one shared cell; a race can only let one extra event through.
        Some(state) => bucket::take(unsafe { &mut *state }, now, &cfg.events),
        None => false,
    };
    let event = AutoBlockEvent {
        key: *key,
        strikes,
        expires_at_ns: block.expires_at_ns,
        created_ns: block.created_ns,
    };
    if allowed && EVENTS.output::<AutoBlockEvent>(&event, 0).is_ok() {
        count(verdict::EVENTS_SENT, 0);
    } else {
        count(verdict::EVENTS_SUPPRESSED, 0);
    }
}
