//! `api-shield`: the daemon (`run`) and the CLI that drives it, in one binary.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    api_shield::commands::dispatch(api_shield::cli::Cli::parse())
}
