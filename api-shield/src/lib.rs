//! The api-shield daemon and CLI, as a library the binary and the tests share.
// A function past `too-many-lines-threshold` (clippy.toml) does more than one step: name the
// steps, or say why not with an `#[expect]`. Scenario tests under `tests/tests` are exempt.
#![warn(clippy::too_many_lines)]

/// The XDP object, built by `build.rs` and embedded so the binary is self-contained.
pub static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("API_SHIELD_BPF_OBJ"));

pub mod accept;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod config;
pub mod contract;
pub mod control;
pub mod daemon;
pub mod decisions;
pub mod exchange;
pub mod feeds;
pub mod gateway;
pub mod inventory;
pub mod kernel;
pub mod lists;
pub mod lockout;
pub mod metrics;
pub mod model;
pub mod parse;
pub mod policy;
pub mod privilege;
pub mod push;
pub mod state_dir;
pub mod table;
pub mod text;
pub mod top;
