//! Indices of the per-CPU counters. The first `VERDICTS` are final verdicts (every packet
//! lands in exactly one); the rest are finer detail counters that stand beside them.

pub const PASS: u32 = 0;
pub const NON_IP: u32 = 1;
pub const ALLOWLISTED: u32 = 2;
pub const BLOCKLISTED: u32 = 3;
pub const RATE_LIMITED: u32 = 4;
pub const MALFORMED: u32 = 5;
pub const MONITORED: u32 = 6;
/// Number of final verdicts.
pub const VERDICTS: u32 = 7;

/// Detail: the source matched an exact or CIDR list entry. The kernel counts it in monitor
/// mode only; when enforcing, userspace reports it as `blocklisted - block_auto`.
pub const BLOCK_LIST: u32 = 7;
/// Detail: the source was blocked by the kernel's own auto-block (part of `blocklisted`).
pub const BLOCK_AUTO: u32 = 8;
/// Detail: the SYN bucket, not the packet bucket, was empty (part of `rate_limited`).
pub const SYN_LIMITED: u32 = 9;
/// Detail: a list entry matched but its expiry had passed, so the packet went on.
pub const BLOCK_EXPIRED: u32 = 10;
/// Detail: the kernel auto-blocked a source.
pub const AUTO_BLOCK_ADDED: u32 = 11;
/// Detail: an auto-block was due but its map was full.
pub const AUTO_BLOCK_FULL: u32 = 12;
/// Detail: auto-block events sent to userspace, and those held back by the event limit.
pub const EVENTS_SENT: u32 = 13;
pub const EVENTS_SUPPRESSED: u32 = 14;
/// Detail: IP fragments seen (non-first fragments carry no L4 header).
pub const FRAGMENTS: u32 = 15;
/// Number of counter slots.
pub const SLOTS: u32 = 16;

/// Snake-case names, indexed like the counters; the names are the public JSON contract.
pub const NAMES: [&str; SLOTS as usize] = [
    "pass",
    "non_ip",
    "allowlisted",
    "blocklisted",
    "rate_limited",
    "malformed",
    "monitored",
    "block_list",
    "block_auto",
    "syn_limited",
    "block_expired",
    "auto_block_added",
    "auto_block_full",
    "events_sent",
    "events_suppressed",
    "fragments",
];
