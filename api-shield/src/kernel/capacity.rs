//! How large the kernel maps are: fixed when the program is loaded, asked for by the
//! configuration's `[capacity]` section, and read back from pinned maps (which keep the size
//! they were created with). The limits are the kernel layout's own, so they live here.

use api_shield_common::entry::MAX_RULE;
use api_shield_common::maps::{self, NODE_ELEMENTS, SKETCH_ROWS, TABLE_COPIES};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::parse::deserialize_in_range as in_range;

/// `V4_TBL8` holds `nodes * NODE_ELEMENTS` elements per copy; all copies must be indexable by
/// a `u32`.
const MAX_V4_NODES: u32 = u32::MAX / (NODE_ELEMENTS * TABLE_COPIES);
/// Rule indices run from 0 to `MAX_RULE`.
const MAX_RULES: u32 = MAX_RULE + 1;
/// The sketch's rows are laid end to end in one array whose size is a `u32`.
const MAX_SKETCH_WIDTH: u32 = 1 << (u32::BITS - 1 - SKETCH_ROWS.ilog2());

/// Sizes of the kernel maps, fixed when the program is loaded: what the configuration asks
/// for, and what the kernel reports it has (pinned maps keep the size they were created with).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Capacity {
    /// 16-slot second-level nodes of the IPv4 table; an isolated /32 needs 2, a /25../28
    /// prefix 1.
    #[serde(deserialize_with = "v4_nodes")]
    pub v4_nodes: u32,
    /// Rules (allow and block entries with their origin and expiry).
    #[serde(deserialize_with = "rules")]
    pub rules: u32,
    /// IPv6 list entries.
    #[serde(deserialize_with = "positive")]
    pub v6_entries: u32,
    /// Cells per row of the rate-limit sketch; a power of two.
    #[serde(deserialize_with = "sketch_width")]
    pub sketch_width: u32,
    /// Sources over their limit tracked exactly for auto-blocking.
    #[serde(deserialize_with = "positive")]
    pub offenders: u32,
    /// Auto-blocks held at once.
    #[serde(deserialize_with = "positive")]
    pub auto_blocks: u32,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            v4_nodes: maps::DEFAULT_V4_NODES,
            rules: maps::DEFAULT_RULES,
            v6_entries: maps::DEFAULT_V6_ENTRIES,
            sketch_width: maps::DEFAULT_SKETCH_WIDTH,
            offenders: maps::DEFAULT_OFFENDERS,
            auto_blocks: maps::DEFAULT_AUTO_BLOCKS,
        }
    }
}

/// A map of no entries makes no sense.
fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, 1, u32::MAX)
}

fn v4_nodes<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, 1, MAX_V4_NODES)
}

fn rules<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, 1, MAX_RULES)
}

/// The kernel masks hashes with `width - 1`, which only works for powers of two.
fn sketch_width<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let width = in_range(d, 1, MAX_SKETCH_WIDTH)?;
    if !width.is_power_of_two() {
        return Err(D::Error::custom(format!(
            "must be a power of two (like {})",
            width.next_power_of_two()
        )));
    }
    Ok(width)
}
