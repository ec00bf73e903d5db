//! The program's maps. Capacities here are defaults: the daemon sizes them from its config
//! at load time. Everything an attacker can create (offender records) lives in LRU maps;
//! everything decided (list entries, auto-blocks) lives in maps that never evict.

use api_shield_common::{
    config::ShieldConfig,
    maps::*,
    state::{AutoBlock, BucketSlot, Counter, Offender, PinRecord, RateKey, Rule, TokenState},
};
use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};

/// Userspace fills the big tables through `mmap`, not one syscall per entry.
const MMAPABLE: u32 = BPF_F_MMAPABLE;

#[map]
pub static CONFIG: Array<ShieldConfig> = Array::with_max_entries(1, 0);

#[map]
pub static COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(api_shield_common::verdict::SLOTS, 0);

#[map]
pub static ORIGIN_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_ORIGINS, 0);

/// Two copies of the first level, each `TBL24_ELEMENTS_PER_COPY` pairs of slots.
#[map]
pub static V4_TBL24: Array<[u32; 2]> =
    Array::with_max_entries(TBL24_ELEMENTS_PER_COPY * TABLE_COPIES, MMAPABLE);

/// Two copies of `v4_nodes` 16-slot nodes.
#[map]
pub static V4_TBL8: Array<[u32; 2]> =
    Array::with_max_entries(DEFAULT_V4_NODES * NODE_ELEMENTS * TABLE_COPIES, MMAPABLE);

#[map]
pub static RULES: Array<Rule> = Array::with_max_entries(DEFAULT_RULES, MMAPABLE);

#[map]
pub static V6_FILTER: Array<u64> =
    Array::with_max_entries(V6_FILTER_WORDS * TABLE_COPIES, MMAPABLE);

/// The trie packets read when `active_table` is 0.
#[map]
pub static V6_LIST0: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(DEFAULT_V6_ENTRIES, 0);

/// The trie packets read when `active_table` is 1.
#[map]
pub static V6_LIST1: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(DEFAULT_V6_ENTRIES, 0);

#[map]
pub static PORTS: Array<u32> = Array::with_max_entries(PORT_WORDS, 0);

#[map]
pub static BUCKETS: Array<BucketSlot> =
    Array::with_max_entries(DEFAULT_SKETCH_WIDTH * SKETCH_ROWS, 0);

#[map]
pub static OFFENDERS: LruHashMap<RateKey, Offender> =
    LruHashMap::with_max_entries(DEFAULT_OFFENDERS, 0);

#[map]
pub static AUTO_BLOCKS: HashMap<RateKey, AutoBlock> =
    HashMap::with_max_entries(DEFAULT_AUTO_BLOCKS, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map]
pub static EVENT_STATE: Array<TokenState> = Array::with_max_entries(1, 0);

/// Written by the daemon, never read by the program: which build left the pins.
#[map]
pub static META: Array<PinRecord> = Array::with_max_entries(1, 0);
