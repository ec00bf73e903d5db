//! `cargo xtask`: set up the machine, build, test, bench and demo api-shield.
// A function past `too-many-lines-threshold` (clippy.toml) does more than one step: name the
// steps, or say why not with an `#[expect]`. Scenario tests under `tests/tests` are exempt.
#![warn(clippy::too_many_lines)]

mod auth_flood_bench;
mod bench;
mod bench_common;
mod build_cmd;
mod demo;
mod flood;
mod fuzz;
mod gateway_bench;
mod lab;
mod setup;
mod test;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::{path::PathBuf, process::ExitCode};

#[derive(Parser)]
#[command(name = "xtask", about = "Build, test, bench and demo api-shield")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (Debian packages, bpf-linker) and mount bpffs; needs root
    Setup,
    /// Set up, then build target/release/api-shield with the XDP object embedded
    Build {
        /// Build the debug profile (target/debug/api-shield) instead
        #[arg(long)]
        debug: bool,
    },
    /// Set up, then fmt check, clippy, build and every test of the workspace
    Test,
    /// A live demo in network namespaces: a legit client, an attacker, the shield between
    Demo {
        /// How long the traffic runs
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Use this api-shield binary instead of building one
        #[arg(long, hide = true)]
        bin: Option<PathBuf>,
    },
    /// Fuzz the parsers (cargo-fuzz, nightly) for a bounded time each, then 1,000,000 frames
    /// through the XDP program; needs root
    Fuzz(fuzz::Args),
    /// Benchmarks
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
    /// A bounded UDP flood (run inside the attacker's namespace by the demo)
    #[command(hide = true)]
    Flood(flood::Args),
    /// Create the demo lab, check it forwards, tear it down and check nothing is left
    #[command(hide = true)]
    LabSmoke {
        /// Keep the lab up this many seconds before tearing it down (to try Ctrl-C)
        #[arg(long, default_value_t = 0)]
        hold: u64,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Build { debug } => {
            let bin = build_cmd::build(debug)?;
            println!("built {}", bin.display());
            Ok(())
        }
        Cmd::Test => test::test(),
        Cmd::Demo { seconds, bin } => demo::demo(seconds, bin),
        Cmd::Fuzz(args) => fuzz::fuzz(&args),
        Cmd::Bench { which } => bench::bench(which),
        Cmd::Flood(args) => flood::flood(&args),
        Cmd::LabSmoke { hold } => lab::smoke(hold),
    }
}
