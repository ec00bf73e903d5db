//! `cargo xtask build`: the daemon+CLI binary, with the XDP object embedded by its build.rs.

use crate::{setup, util};
use anyhow::{Result, ensure};
use std::path::PathBuf;

/// Sets up the machine, then builds; returns the binary's path.
pub fn build(debug: bool) -> Result<PathBuf> {
    setup::setup()?;
    compile(debug)
}

/// `cargo build [--release] -p api-shield`; returns the binary's absolute path.
pub fn compile(debug: bool) -> Result<PathBuf> {
    let mut cmd = util::cargo();
    cmd.args(["build", "-p", "api-shield"]);
    if !debug {
        cmd.arg("--release");
    }
    util::run(&mut cmd, "cargo build -p api-shield")?;
    let bin = binary(debug);
    ensure!(
        bin.is_file(),
        "the build finished but {} is missing",
        bin.display()
    );
    Ok(bin)
}

/// Where `compile` puts the binary.
pub fn binary(debug: bool) -> PathBuf {
    let profile = if debug { "debug" } else { "release" };
    util::target_dir().join(profile).join("api-shield")
}
