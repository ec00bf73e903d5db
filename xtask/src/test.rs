//! `cargo xtask test`: the whole gate CI runs, step by step, stopping at the first failure.

use crate::{build_cmd, setup, util};
use anyhow::{Context, Result};
use std::process::Command;

/// The eBPF crate only builds for the BPF target (build.rs builds it with Debian's toolchain).
const BPF_CRATE: &str = "api-shield-ebpf";

pub fn test() -> Result<()> {
    step("setup", setup::setup)?;
    step("cargo fmt --check", || {
        util::run(
            util::cargo().args(["fmt", "--all", "--", "--check"]),
            "cargo fmt",
        )
    })?;
    step("cargo clippy", || {
        util::run(
            util::cargo()
                .args(["clippy", "--workspace", "--exclude", BPF_CRATE])
                .args(["--all-targets", "--release", "--", "-D", "warnings"]),
            "cargo clippy",
        )
    })?;
    let bin = step("cargo build --release -p api-shield", || {
        build_cmd::compile(false)
    })?;
    step("cargo test", || {
        util::run(
            tests_command(&bin).args(["test", "--workspace", "--exclude", BPF_CRATE, "--release"]),
            "cargo test",
        )
    })?;
    println!("xtask test: every step passed");
    Ok(())
}

/// Cargo with `API_SHIELD_BIN` pointing at the built binary, for the tests that run it.
pub fn tests_command(bin: &std::path::Path) -> Command {
    let mut cmd = util::cargo();
    cmd.env("API_SHIELD_BIN", bin);
    cmd
}

fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    println!("==> {name}");
    f().with_context(|| format!("xtask test: step `{name}` failed"))
}
