//! `api-shield`: the daemon (`run`) and the CLI that drives it, in one binary.
// A function past `too-many-lines-threshold` (clippy.toml) does more than one step: name the
// steps, or say why not with an `#[expect]`. Scenario tests under `tests/tests` are exempt.
#![warn(clippy::too_many_lines)]

use clap::Parser;
use std::process::ExitCode;

/// The gateway allocates per request on every worker thread; glibc's allocator spent about a
/// tenth of the gateway's CPU in a profile of `cargo xtask bench gateway`, mimalloc's
/// thread-local free lists much less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    api_shield::commands::dispatch(api_shield::cli::Cli::parse())
}
