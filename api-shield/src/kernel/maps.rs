//! Typed userspace handles on every map of the program, from a fresh load or from pins.

use super::{KernelError, mmap::MapMemory};
use api_shield_common::{
    config::ShieldConfig,
    maps as names,
    state::{AutoBlock, BucketSlot, Counter, Offender, PinRecord, RateKey, Rule},
};
use aya::maps::{
    Array, HashMap, LpmTrie, Map, MapData, MapType, PerCpuArray, RingBuf, lpm_trie::Key,
};
use std::os::fd::{AsFd, AsRawFd};

/// Expected kind and shape of each map, checked before pinned maps are reused.
struct Shape {
    name: &'static str,
    kind: MapType,
    key: usize,
    value: usize,
}

const SHAPES: [Shape; 16] = [
    shape::<u32, ShieldConfig>(names::CONFIG, MapType::Array),
    shape::<u32, Counter>(names::COUNTERS, MapType::PerCpuArray),
    shape::<u32, Counter>(names::ORIGIN_COUNTERS, MapType::PerCpuArray),
    shape::<u32, [u32; 2]>(names::V4_TBL24, MapType::Array),
    shape::<u32, [u32; 2]>(names::V4_TBL8, MapType::Array),
    shape::<u32, Rule>(names::RULES, MapType::Array),
    shape::<u32, u64>(names::V6_FILTER, MapType::Array),
    shape::<Key<[u8; 16]>, u32>(names::V6_LIST0, MapType::LpmTrie),
    shape::<Key<[u8; 16]>, u32>(names::V6_LIST1, MapType::LpmTrie),
    shape::<u32, u32>(names::PORTS, MapType::Array),
    shape::<u32, BucketSlot>(names::BUCKETS, MapType::Array),
    shape::<RateKey, Offender>(names::OFFENDERS, MapType::LruHash),
    shape::<RateKey, AutoBlock>(names::AUTO_BLOCKS, MapType::Hash),
    Shape {
        name: names::EVENTS,
        kind: MapType::RingBuf,
        key: 0,
        value: 0,
    },
    shape::<u32, api_shield_common::state::TokenState>(names::EVENT_STATE, MapType::Array),
    shape::<u32, PinRecord>(names::META, MapType::Array),
];

const fn shape<K, V>(name: &'static str, kind: MapType) -> Shape {
    Shape {
        name,
        kind,
        key: size_of::<K>(),
        value: size_of::<V>(),
    }
}

/// Refuses a map whose kind or key/value sizes differ from what this build expects.
pub fn check_shape(name: &str, data: &MapData) -> Result<(), KernelError> {
    let Some(want) = SHAPES.iter().find(|s| s.name == name) else {
        return Err(KernelError::Incompatible(format!("unknown map {name}")));
    };
    let info = data.info().map_err(|e| KernelError::map(name, e))?;
    let kind = info.map_type().map_err(|e| KernelError::map(name, e))?;
    let sizes_ok = want.kind == MapType::RingBuf
        || (info.key_size() as usize == want.key && info.value_size() as usize == want.value);
    if kind != want.kind || !sizes_ok {
        return Err(KernelError::Incompatible(format!(
            "map {name} is {kind:?} with key {} / value {} bytes; this build expects {:?} with {} / {}",
            info.key_size(),
            info.value_size(),
            want.kind,
            want.key,
            want.value
        )));
    }
    Ok(())
}

pub fn max_entries(name: &str, data: &MapData) -> Result<u32, KernelError> {
    Ok(data
        .info()
        .map_err(|e| KernelError::map(name, e))?
        .max_entries())
}

fn data(map: Map) -> MapData {
    match map {
        Map::Array(d)
        | Map::PerCpuArray(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::LpmTrie(d)
        | Map::RingBuf(d) => d,
        other => unreachable!("the program has no map of kind {other:?}"),
    }
}

pub struct ShieldMaps {
    pub config: Array<MapData, ShieldConfig>,
    pub counters: PerCpuArray<MapData, Counter>,
    pub origin_counters: PerCpuArray<MapData, Counter>,
    /// The two IPv6 tries, indexed like the table copies.
    pub v6_lists: [LpmTrie<MapData, [u8; 16], u32>; 2],
    pub ports: Array<MapData, u32>,
    pub meta: Array<MapData, PinRecord>,
    pub buckets: Array<MapData, BucketSlot>,
    pub offenders: HashMap<MapData, RateKey, Offender>,
    pub auto_blocks: HashMap<MapData, RateKey, AutoBlock>,
    /// Taken by the event reader once it starts.
    pub events: Option<RingBuf<MapData>>,
    pub tbl24: MapMemory<u32>,
    pub tbl8: MapMemory<u32>,
    pub rules: MapMemory<Rule>,
    pub v6_filter: MapMemory<u64>,
    pub capacity: Capacity,
    /// Kept open so the mmaps and pins refer to live maps.
    _tables: Vec<MapData>,
}

pub use super::capacity::Capacity;

impl ShieldMaps {
    /// Builds the handles from a source of maps by name (a fresh load or the pin directory).
    pub fn open(
        mut take: impl FnMut(&str) -> Result<Map, KernelError>,
    ) -> Result<Self, KernelError> {
        let mut get = |name: &'static str| -> Result<MapData, KernelError> {
            let d = data(take(name)?);
            check_shape(name, &d)?;
            Ok(d)
        };
        let tbl24 = get(names::V4_TBL24)?;
        let tbl8 = get(names::V4_TBL8)?;
        let rules = get(names::RULES)?;
        let v6_filter = get(names::V6_FILTER)?;
        let slots_per_element = names::ENTRIES_PER_ELEMENT as usize;
        let tbl8_elements = max_entries(names::V4_TBL8, &tbl8)?;
        let rules_len = max_entries(names::RULES, &rules)?;
        let v4_nodes = tbl8_elements / (names::NODE_ELEMENTS * names::TABLE_COPIES);
        let tbl24_mem = mmap(
            names::V4_TBL24,
            &tbl24,
            max_entries(names::V4_TBL24, &tbl24)? as usize * slots_per_element,
        )?;
        let tbl8_mem = mmap(
            names::V4_TBL8,
            &tbl8,
            tbl8_elements as usize * slots_per_element,
        )?;
        let rules_mem = mmap(names::RULES, &rules, rules_len as usize)?;
        let filter_mem = mmap(
            names::V6_FILTER,
            &v6_filter,
            (names::V6_FILTER_WORDS * names::TABLE_COPIES) as usize,
        )?;

        let v6_0 = get(names::V6_LIST0)?;
        let v6_1 = get(names::V6_LIST1)?;
        let buckets = get(names::BUCKETS)?;
        let offenders = get(names::OFFENDERS)?;
        let auto_blocks = get(names::AUTO_BLOCKS)?;
        let capacity = Capacity {
            v4_nodes,
            rules: rules_len,
            v6_entries: max_entries(names::V6_LIST0, &v6_0)?,
            sketch_width: max_entries(names::BUCKETS, &buckets)? / names::SKETCH_ROWS,
            offenders: max_entries(names::OFFENDERS, &offenders)?,
            auto_blocks: max_entries(names::AUTO_BLOCKS, &auto_blocks)?,
        };
        let conv = |name: &str, e: aya::maps::MapError| KernelError::map(name, e);
        Ok(Self {
            config: Array::try_from(Map::Array(get(names::CONFIG)?))
                .map_err(|e| conv(names::CONFIG, e))?,
            counters: PerCpuArray::try_from(Map::PerCpuArray(get(names::COUNTERS)?))
                .map_err(|e| conv(names::COUNTERS, e))?,
            origin_counters: PerCpuArray::try_from(Map::PerCpuArray(get(names::ORIGIN_COUNTERS)?))
                .map_err(|e| conv(names::ORIGIN_COUNTERS, e))?,
            v6_lists: [
                LpmTrie::try_from(Map::LpmTrie(v6_0)).map_err(|e| conv(names::V6_LIST0, e))?,
                LpmTrie::try_from(Map::LpmTrie(v6_1)).map_err(|e| conv(names::V6_LIST1, e))?,
            ],
            ports: Array::try_from(Map::Array(get(names::PORTS)?))
                .map_err(|e| conv(names::PORTS, e))?,
            meta: Array::try_from(Map::Array(get(names::META)?))
                .map_err(|e| conv(names::META, e))?,
            buckets: Array::try_from(Map::Array(buckets)).map_err(|e| conv(names::BUCKETS, e))?,
            offenders: HashMap::try_from(Map::LruHashMap(offenders))
                .map_err(|e| conv(names::OFFENDERS, e))?,
            auto_blocks: HashMap::try_from(Map::HashMap(auto_blocks))
                .map_err(|e| conv(names::AUTO_BLOCKS, e))?,
            events: Some(
                RingBuf::try_from(Map::RingBuf(get(names::EVENTS)?))
                    .map_err(|e| conv(names::EVENTS, e))?,
            ),
            tbl24: tbl24_mem,
            tbl8: tbl8_mem,
            rules: rules_mem,
            v6_filter: filter_mem,
            capacity,
            _tables: vec![tbl24, tbl8, rules, v6_filter, get(names::EVENT_STATE)?],
        })
    }

    pub fn read_config(&self) -> Result<ShieldConfig, KernelError> {
        self.config
            .get(&0, 0)
            .map_err(|e| KernelError::map(names::CONFIG, e))
    }

    pub fn write_config(&mut self, cfg: &ShieldConfig) -> Result<(), KernelError> {
        self.config
            .set(0, cfg, 0)
            .map_err(|e| KernelError::map(names::CONFIG, e))
    }

    pub fn write_ports(&mut self, words: &[u32]) -> Result<(), KernelError> {
        for (i, w) in words.iter().enumerate() {
            self.ports
                .set(i as u32, w, 0)
                .map_err(|e| KernelError::map(names::PORTS, e))?;
        }
        Ok(())
    }

    /// Sums a per-CPU counter array.
    fn sum(
        map: &PerCpuArray<MapData, Counter>,
        name: &str,
        len: u32,
    ) -> Result<Vec<Counter>, KernelError> {
        (0..len)
            .map(|i| {
                let per_cpu = map.get(&i, 0).map_err(|e| KernelError::map(name, e))?;
                Ok(per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                    packets: acc.packets + c.packets,
                    bytes: acc.bytes + c.bytes,
                }))
            })
            .collect()
    }

    pub fn counters(&self) -> Result<Vec<Counter>, KernelError> {
        Self::sum(
            &self.counters,
            names::COUNTERS,
            api_shield_common::verdict::SLOTS,
        )
    }

    pub fn origin_counters(&self) -> Result<Vec<Counter>, KernelError> {
        Self::sum(
            &self.origin_counters,
            names::ORIGIN_COUNTERS,
            names::MAX_ORIGINS,
        )
    }

    /// Entries of the kernel's own auto-block map.
    pub fn auto_blocks(&self) -> Vec<(RateKey, AutoBlock)> {
        self.auto_blocks.iter().filter_map(Result::ok).collect()
    }
}

fn mmap<T: Copy>(name: &str, data: &MapData, len: usize) -> Result<MapMemory<T>, KernelError> {
    MapMemory::map(&data.fd().as_fd().as_raw_fd(), len).map_err(|e| KernelError::Mmap {
        map: name.to_string(),
        source: e,
    })
}
