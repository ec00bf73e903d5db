//! Names and fixed geometry of the kernel maps. Names are limited to 15 bytes by the kernel.

/// Name of the XDP program in the object file.
pub const PROGRAM: &str = "api_shield";
/// Name of the minimal drop-everything program benchmarks compare against.
pub const BASELINE_PROGRAM: &str = "baseline_drop";
/// Name of the flood generator the benchmarks drive with live frames.
pub const BENCH_TX_PROGRAM: &str = "bench_tx";

pub const CONFIG: &str = "CONFIG";
pub const COUNTERS: &str = "COUNTERS";
pub const ORIGIN_COUNTERS: &str = "ORIGIN_COUNTERS";
pub const V4_TBL24: &str = "V4_TBL24";
pub const V4_TBL8: &str = "V4_TBL8";
pub const RULES: &str = "RULES";
pub const V6_FILTER: &str = "V6_FILTER";
/// The IPv6 trie exists twice, like the IPv4 tables: `active_table` picks one.
pub const V6_LIST0: &str = "V6_LIST0";
pub const V6_LIST1: &str = "V6_LIST1";
pub const V6_LISTS: [&str; TABLE_COPIES as usize] = [V6_LIST0, V6_LIST1];
pub const PORTS: &str = "PORTS";
pub const BUCKETS: &str = "BUCKETS";
pub const OFFENDERS: &str = "OFFENDERS";
pub const AUTO_BLOCKS: &str = "AUTO_BLOCKS";
pub const EVENTS: &str = "EVENTS";
pub const EVENT_STATE: &str = "EVENT_STATE";
pub const META: &str = "META";

/// Every map the program owns, in pin order.
pub const ALL: [&str; 16] = [
    CONFIG,
    COUNTERS,
    ORIGIN_COUNTERS,
    V4_TBL24,
    V4_TBL8,
    RULES,
    V6_FILTER,
    V6_LIST0,
    V6_LIST1,
    PORTS,
    BUCKETS,
    OFFENDERS,
    AUTO_BLOCKS,
    EVENTS,
    EVENT_STATE,
    META,
];

/// The IPv4 table is DIR-24-4-4: a first level indexed by the top 24 bits of the source, then
/// up to two levels of 16-slot nodes (in `V4_TBL8`) for the last 8 bits: a node of the first
/// kind is indexed by bits 4..8 of the address, one of the second by bits 0..4.
pub const TBL24_SLOTS: u32 = 1 << 24;
/// Address bits one node resolves.
pub const NODE_BITS: u32 = 4;
/// Slots per node of `V4_TBL8`.
pub const NODE_SLOTS: u32 = 1 << NODE_BITS;
/// Array elements are padded to 8 bytes by the kernel, so table entries (u32) are stored in
/// pairs: one element holds two consecutive slots and no memory is wasted.
pub const ENTRIES_PER_ELEMENT: u32 = 2;
/// The IPv4 tables exist twice: a bulk rebuild fills the copy packets do not read, then one
/// config write flips `active_table`.
pub const TABLE_COPIES: u32 = 2;
/// Elements of one copy of the first level.
pub const TBL24_ELEMENTS_PER_COPY: u32 = TBL24_SLOTS / ENTRIES_PER_ELEMENT;
/// Elements per node of `V4_TBL8`.
pub const NODE_ELEMENTS: u32 = NODE_SLOTS / ENTRIES_PER_ELEMENT;

/// The IPv6 negative filter: one bit per /24 of IPv6 space that holds any list entry, so a
/// clean IPv6 packet costs one array lookup instead of an LPM trie walk. Two copies, one per
/// trie, `V6_FILTER_WORDS` words each.
pub const V6_FILTER_BITS: u32 = 1 << 24;
pub const V6_FILTER_WORDS: u32 = V6_FILTER_BITS / 64;
/// Bits of an IPv6 address that index the filter.
pub const V6_FILTER_PREFIX: u32 = 24;

/// Destination ports in rate-limit scope, as a bitmap of 32-bit words.
pub const PORT_WORDS: u32 = 65_536 / 32;

/// Origins (lists, feeds, the CLI, the kernel itself) that get their own drop counter.
pub const MAX_ORIGINS: u32 = 256;

/// Default capacities; the daemon overrides them from its config at load time.
/// Nodes per copy of `V4_TBL8`: 4 MiB per copy, room for 32,768 isolated /32s.
pub const DEFAULT_V4_NODES: u32 = 65_536;
pub const DEFAULT_RULES: u32 = 65_536;
pub const DEFAULT_V6_ENTRIES: u32 = 262_144;
pub const DEFAULT_SKETCH_WIDTH: u32 = 65_536;
pub const DEFAULT_OFFENDERS: u32 = 65_536;
pub const DEFAULT_AUTO_BLOCKS: u32 = 65_536;
pub const EVENTS_BYTES: u32 = 256 * 1024;
/// The sketch of token buckets has two rows.
pub const SKETCH_ROWS: u32 = 2;
