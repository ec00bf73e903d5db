//! The one-element `CONFIG` map: every run-time setting of the data path. The daemon writes
//! it whole; the program reads it once per packet, so settings change without a reload.

use core::mem::size_of;

/// Enforce: drop what the policy says to drop.
pub const MODE_ENFORCE: u32 = 0;
/// Monitor (dry run): count what would have been dropped as `monitored`, and pass it.
pub const MODE_MONITOR: u32 = 1;

/// How long past its expiry an auto-blocked source still reaches the exact map (at least),
/// so that its expired entry is freed when it returns.
pub const AUTO_BLOCK_HINT_GRACE_NS: u64 = 60 * crate::NS_PER_SEC;

/// Rate limits apply only to destination ports set in the `PORTS` bitmap.
pub const FLAG_PORT_SCOPED: u32 = 1 << 0;

/// One token bucket's parameters, precomputed by userspace so the kernel never divides.
/// Tokens are kept in units of `1 / NS_PER_SEC` of a packet; `rate_per_sec == 0` disables it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateParams {
    pub rate_per_sec: u64,
    /// `burst * NS_PER_SEC`: the bucket's capacity in scaled tokens.
    pub capacity: u64,
    /// Time after which an idle bucket is full again: `ceil(capacity / rate_per_sec)`.
    pub full_refill_ns: u64,
}
const _: () = assert!(size_of::<RateParams>() == 24);

impl RateParams {
    /// Parameters for `rate_per_sec` packets per second with bursts of `burst` packets.
    /// A zero rate disables the bucket; a zero burst is raised to one packet.
    pub const fn new(rate_per_sec: u64, burst: u64) -> Self {
        if rate_per_sec == 0 {
            return Self {
                rate_per_sec: 0,
                capacity: 0,
                full_refill_ns: 0,
            };
        }
        let burst = if burst == 0 { 1 } else { burst };
        let capacity = burst.saturating_mul(crate::NS_PER_SEC);
        Self {
            rate_per_sec,
            capacity,
            full_refill_ns: capacity.div_ceil(rate_per_sec),
        }
    }

    pub const fn enabled(&self) -> bool {
        self.rate_per_sec != 0
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShieldConfig {
    /// `MODE_ENFORCE` or `MODE_MONITOR`.
    pub mode: u32,
    /// Which copy of the IPv4 tables packets read: 0 or 1.
    pub active_table: u32,
    /// 16-slot nodes per copy of `V4_TBL8`; a node index at or beyond it reads as no entry.
    pub v4_nodes: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// IPv4 sources share a bucket per prefix of this length (32 by default).
    pub v4_rate_prefix: u32,
    /// IPv6 sources share a bucket per prefix of this length (64 by default).
    pub v6_rate_prefix: u32,
    /// Width of one sketch row minus one (width is a power of two).
    pub sketch_mask: u32,
    /// Over-limit packets within `autoblock_window_ns` that make the kernel block a source;
    /// zero disables auto-blocking.
    pub autoblock_strikes: u32,
    /// Secret seeds for the two sketch rows, so collisions cannot be aimed.
    pub seeds: [u64; 2],
    /// Limit on all packets of a source.
    pub pkt: RateParams,
    /// Limit on TCP SYNs (SYN without ACK) of a source.
    pub syn: RateParams,
    pub autoblock_window_ns: u64,
    pub autoblock_ttl_ns: u64,
    /// Limit on auto-block events sent to userspace.
    pub events: RateParams,
}
const _: () = assert!(size_of::<ShieldConfig>() == 32 + 16 + 24 * 2 + 16 + 24);

/// Sets `port` in a `PORTS` bitmap word index and bit.
#[inline(always)]
pub const fn port_word(port: u16) -> (u32, u32) {
    ((port as u32) / 32, 1 << ((port as u32) % 32))
}
