//! The decision order: non-IP passes; allowlisted passes; blocklisted drops; over-limit
//! drops; the rest passes. Monitor mode turns every drop into a counted pass.

use crate::counters::{count, count_origin};
use crate::cursor::Cursor;
use crate::lists::{self, ListMatch};
use crate::maps::CONFIG;
use crate::parse::{self, Parsed};
use crate::ratelimit::{self, Clock, RateOutcome};
use crate::{XDP_DROP, XDP_PASS};
use api_shield_common::{config::MODE_MONITOR, state::ORIGIN_KERNEL, verdict};
use aya_ebpf::programs::XdpContext;

enum Verdict {
    Pass(u32),
    /// A drop: the final reason, a finer detail counter, and the origin to charge.
    Drop {
        reason: u32,
        detail: Option<u32>,
        origin: Option<u32>,
    },
}

#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let Some(cfg) = CONFIG.get(0) else {
        return XDP_PASS;
    };
    match decide(ctx, cfg) {
        Verdict::Pass(reason) => {
            count(reason, bytes);
            XDP_PASS
        }
        Verdict::Drop {
            reason,
            detail,
            origin,
        } => {
            if cfg.mode == MODE_MONITOR {
                count(verdict::MONITORED, bytes);
                if let Some(detail) = detail {
                    count(detail, bytes);
                }
                return XDP_PASS;
            }
            // When enforcing, list drops are told apart by their per-origin counter, so the
            // hot path skips the detail counter (userspace adds them up for `block_list`).
            if let Some(detail) = detail.filter(|d| *d != verdict::BLOCK_LIST) {
                count(detail, bytes);
            }
            count(reason, bytes);
            if let Some(origin) = origin {
                count_origin(origin, bytes);
            }
            XDP_DROP
        }
    }
}

#[inline(always)]
fn decide(ctx: &XdpContext, cfg: &api_shield_common::config::ShieldConfig) -> Verdict {
    let mut cursor = Cursor::new(ctx);
    let pkt = match parse::parse(&mut cursor) {
        Parsed::NotIp => return Verdict::Pass(verdict::NON_IP),
        Parsed::Malformed => {
            return Verdict::Drop {
                reason: verdict::MALFORMED,
                detail: None,
                origin: None,
            };
        }
        Parsed::Ip(pkt) => pkt,
    };
    if pkt.fragment {
        count(verdict::FRAGMENTS, 0);
    }
    let mut clock = Clock::new();
    match lists::lookup(cfg, &pkt.src, &mut clock) {
        ListMatch::Allow => return Verdict::Pass(verdict::ALLOWLISTED),
        ListMatch::Block { origin } => {
            return Verdict::Drop {
                reason: verdict::BLOCKLISTED,
                detail: Some(verdict::BLOCK_LIST),
                origin: Some(origin),
            };
        }
        ListMatch::Expired => count(verdict::BLOCK_EXPIRED, 0),
        ListMatch::None => {}
    }
    match ratelimit::check(cfg, &pkt, &mut clock) {
        RateOutcome::Within => Verdict::Pass(verdict::PASS),
        RateOutcome::AutoBlocked => Verdict::Drop {
            reason: verdict::BLOCKLISTED,
            detail: Some(verdict::BLOCK_AUTO),
            origin: Some(ORIGIN_KERNEL),
        },
        RateOutcome::Limited { syn } => Verdict::Drop {
            reason: verdict::RATE_LIMITED,
            detail: syn.then_some(verdict::SYN_LIMITED),
            origin: None,
        },
    }
}
