//! Map keys and values.

use core::mem::size_of;

/// Packets and bytes of one counter, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<Counter>() == 16);

/// What a table entry points to: who decided it and until when.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// `CLOCK_MONOTONIC` deadline in ns (the clock of `bpf_ktime_get_*`); 0 never expires.
    pub expires_at_ns: u64,
    /// Index of the origin's drop counter.
    pub origin: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Rule>() == 16);

pub const FAMILY_V4: u32 = 4;
pub const FAMILY_V6: u32 = 6;

/// A source as rate limiting sees it: the address masked to the configured prefix.
/// Words hold the address as host-order integers (IPv4 in `addr[0]`, the rest zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RateKey {
    pub family: u32,
    pub addr: [u32; 4],
}
const _: () = assert!(size_of::<RateKey>() == 20);

/// A token bucket's state: scaled tokens and the time they were last refilled.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenState {
    pub tokens: u64,
    pub last_ns: u64,
}
const _: () = assert!(size_of::<TokenState>() == 16);

/// One cell of the count-min sketch of token buckets. A source owns one cell per row and is
/// limited only when every one of its cells is empty, so a collision never limits it alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketSlot {
    pub pkt: TokenState,
    pub syn: TokenState,
    /// Until when a source hashing here may be auto-blocked: when every cell of a source says
    /// so, the exact `AUTO_BLOCKS` map is consulted. Keeps that hash lookup off clean traffic.
    pub block_hint_until_ns: u64,
    pub _pad: u64,
}
const _: () = assert!(size_of::<BucketSlot>() == 48);

/// Strikes of a source over its limit, tracked exactly (LRU) only once it is over.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offender {
    pub window_start_ns: u64,
    pub strikes: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Offender>() == 16);

/// A block the kernel decided itself. Lives in a map that never evicts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AutoBlock {
    pub expires_at_ns: u64,
    pub created_ns: u64,
}
const _: () = assert!(size_of::<AutoBlock>() == 16);

/// Sent through the `EVENTS` ring buffer when the kernel auto-blocks a source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AutoBlockEvent {
    pub key: RateKey,
    pub strikes: u32,
    pub expires_at_ns: u64,
    pub created_ns: u64,
}
const _: () = assert!(size_of::<AutoBlockEvent>() == 40);

/// Key of the IPv6 LPM trie: the kernel's `bpf_lpm_trie_key` layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V6LpmKey {
    pub prefix_len: u32,
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<V6LpmKey>() == 20);

/// Origin id of blocks the kernel decides itself (auto-blocks); userspace numbers the other
/// origins from `FIRST_USER_ORIGIN`.
pub const ORIGIN_KERNEL: u32 = 0;
pub const FIRST_USER_ORIGIN: u32 = 1;

pub const XDP_MODE_NATIVE: u32 = 1;
pub const XDP_MODE_SKB: u32 = 2;

/// Who left the pins of an interface: kept in the `META` map, whose first field never moves,
/// so any later build can read at least the layout version and refuse what it cannot adopt.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinRecord {
    /// `ABI_VERSION` of the build that created the maps.
    pub abi: u32,
    pub ifindex: u32,
    /// Identifies the exact program; a different one is swapped in atomically on adopt.
    pub object_id: u64,
    pub attached_at_ms: u64,
    /// `XDP_MODE_*`.
    pub xdp_mode: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<PinRecord>() == 32);
