//! Field-level (de)serializers. Each check that concerns one key lives here, so the key-by-key
//! pass in `validate` reports it at that key's line.

use std::fmt::Display;
use std::path::PathBuf;

use api_shield_common::entry::MAX_RULE;
use api_shield_common::maps::{NODE_ELEMENTS, SKETCH_ROWS, TABLE_COPIES};
use ipnet::IpNet;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use crate::parse;

pub(super) const V4_BITS: u8 = 32;
const V6_BITS: u8 = 128;

/// `V4_TBL8` holds `nodes * NODE_ELEMENTS` elements per copy; all copies must be indexable by
/// a `u32`.
const MAX_V4_NODES: u32 = u32::MAX / (NODE_ELEMENTS * TABLE_COPIES);
/// Rule indices run from 0 to `MAX_RULE`.
const MAX_RULES: u32 = MAX_RULE + 1;
/// The sketch's rows are laid end to end in one array whose size is a `u32`.
const MAX_SKETCH_WIDTH: u32 = 1 << (u32::BITS - 1 - SKETCH_ROWS.ilog2());

fn in_range<'de, D: Deserializer<'de>, T>(d: D, min: T, max: T) -> Result<T, D::Error>
where
    T: Deserialize<'de> + PartialOrd + Display,
{
    let value = T::deserialize(d)?;
    if value < min || value > max {
        return Err(D::Error::custom(format!("must be between {min} and {max}")));
    }
    Ok(value)
}

pub(super) fn v4_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    in_range(d, 0, V4_BITS)
}

pub(super) fn v6_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    in_range(d, 0, V6_BITS)
}

/// A size of which zero makes no sense.
pub(super) fn positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, 1, u64::MAX)
}

/// A count of which zero makes no sense (a map of no entries, no events at all).
pub(super) fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, 1, u32::MAX)
}

pub(super) fn v4_nodes<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, 1, MAX_V4_NODES)
}

pub(super) fn rules<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, 1, MAX_RULES)
}

/// The kernel masks hashes with `width - 1`, which only works for powers of two.
pub(super) fn sketch_width<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let width = in_range(d, 1, MAX_SKETCH_WIDTH)?;
    if !width.is_power_of_two() {
        return Err(D::Error::custom(format!(
            "must be a power of two (like {})",
            width.next_power_of_two()
        )));
    }
    Ok(width)
}

/// Port 0 never appears on the wire; listing it is a mistake.
pub(super) fn ports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    let ports = Vec::<u16>::deserialize(d)?;
    if ports.contains(&0) {
        return Err(D::Error::custom("port 0 is not a valid destination port"));
    }
    Ok(ports)
}

pub(super) fn nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|token| parse::parse_net(token).map_err(D::Error::custom))
        .collect()
}

/// A daemon's paths must not depend on the directory it happens to start in.
pub(super) fn absolute_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(d)?;
    if !path.is_absolute() {
        return Err(D::Error::custom("must be an absolute path"));
    }
    Ok(path)
}

/// `""` in the file, `None` in memory.
pub(super) mod group {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let name = String::deserialize(d)?;
        if name.is_empty() {
            return Ok(None);
        }
        if name.chars().any(|c| c.is_whitespace() || c == ':') {
            return Err(D::Error::custom("is not a valid group name"));
        }
        Ok(Some(name))
    }

    pub(crate) fn serialize<S: Serializer>(name: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name.as_deref().unwrap_or_default())
    }
}

/// `humantime` text such as `"10m"`; positive and at most `u64::MAX` nanoseconds, the kernel's
/// unit.
pub(super) mod duration {
    use std::time::Duration;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::parse;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        let duration = parse::parse_duration(&text).map_err(D::Error::custom)?;
        if u64::try_from(duration.as_nanos()).is_err() {
            return Err(D::Error::custom("is too long"));
        }
        Ok(duration)
    }

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}
