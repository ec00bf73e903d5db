//! Types shared by the api-shield XDP program and its userspace daemon.
//!
//! Everything here is `no_std`, `#[repr(C)]`, `Copy`, with explicit padding and a size
//! assertion per type, so the kernel and userspace agree on every byte. The pure arithmetic
//! both sides need (token-bucket step, source hashing, table-entry encoding) lives here too,
//! where host unit tests cover it.
#![no_std]
// A function past `too-many-lines-threshold` (clippy.toml) does more than one step: name the
// steps, or say why not with an `#[expect]`. Scenario tests under `tests/tests` are exempt.
#![warn(clippy::too_many_lines)]

#[cfg(test)]
extern crate std;

pub mod bucket;
pub mod config;
pub mod entry;
pub mod hash;
pub mod maps;
pub mod state;
pub mod verdict;

#[cfg(feature = "user")]
mod pod;

/// Bumped whenever a map's layout, a map's meaning or the entry encoding changes. Pins left by
/// a build with another value are refused instead of being reused.
pub const ABI_VERSION: u32 = 3;

/// Nanoseconds per second, the unit of every kernel-side time.
pub const NS_PER_SEC: u64 = 1_000_000_000;
