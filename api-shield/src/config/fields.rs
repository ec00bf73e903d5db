//! Field-level (de)serializers. Each check that concerns one key lives here, so the key-by-key
//! pass in `validate` reports it at that key's line.

use std::path::PathBuf;

use ipnet::IpNet;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use crate::parse;

pub(super) const V4_BITS: u8 = 32;
const V6_BITS: u8 = 128;

use crate::parse::deserialize_in_range as in_range;

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
