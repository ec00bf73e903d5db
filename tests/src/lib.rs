//! Helpers shared by the kernel verdict tests, the end-to-end tests and the benchmarks.
// A function past `too-many-lines-threshold` (clippy.toml) does more than one step: name the
// steps, or say why not with an `#[expect]`. Scenario tests under `tests/tests` are exempt.
#![warn(clippy::too_many_lines)]

pub mod crowdsec;
pub mod daemon;
pub mod frames;
pub mod http;
pub mod https;
pub mod kernel;
pub mod lab_env;
pub mod lapi_standin;
pub mod metrics;
pub mod netns;
pub mod pki;
pub mod proc;
pub mod relay;
