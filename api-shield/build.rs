//! Builds the XDP program for the BPF target and hands its path to the crate, which embeds it.
//!
//! The eBPF crate is built with Debian's rustc, which ships a prebuilt `core` for the BPF
//! targets (no nightly, no `rust-src` download), linked by `bpf-linker`. `cargo xtask setup`
//! installs both. `API_SHIELD_BPF_OBJ` may point at an object built elsewhere.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const BPF_TARGET: &str = "bpfel-unknown-none";
/// Crates of the eBPF build that use unstable features, enabled for them alone.
const BOOTSTRAP_CRATES: &str = "aya_ebpf,aya_ebpf_bindings,aya_ebpf_cty";

fn main() {
    println!("cargo:rerun-if-env-changed=API_SHIELD_BPF_OBJ");
    println!("cargo:rerun-if-env-changed=API_SHIELD_BPF_CARGO");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let dest = out.join("api-shield.bpf.o");
    if let Ok(prebuilt) = env::var("API_SHIELD_BPF_OBJ") {
        std::fs::copy(&prebuilt, &dest).unwrap_or_else(|e| panic!("copy {prebuilt}: {e}"));
    } else {
        build(&dest);
    }
    println!("cargo:rustc-env=API_SHIELD_BPF_OBJ={}", dest.display());
}

fn build(dest: &Path) {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("workspace root").to_path_buf();
    for dir in ["api-shield-ebpf/src", "api-shield-common/src"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("api-shield-ebpf/Cargo.toml").display()
    );
    let cargo = env::var("API_SHIELD_BPF_CARGO").unwrap_or_else(|_| "/usr/bin/cargo".into());
    let rustc = Path::new(&cargo).with_file_name("rustc");
    let target_dir = root.join("target/bpf");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(root.join("api-shield-ebpf"))
        .args(["build", "--release", "--target", BPF_TARGET, "--target-dir"])
        .arg(&target_dir);
    // The outer build's settings are for the host toolchain; none of them apply here.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO_") || key.starts_with("RUSTC") || key == "RUSTFLAGS" {
            cmd.env_remove(&key);
        }
    }
    cmd.env("RUSTC", &rustc)
        .env("RUSTC_BOOTSTRAP", BOOTSTRAP_CRATES);
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run {cargo} for the eBPF build ({e}); run `cargo xtask setup` first")
    });
    assert!(
        status.success(),
        "the eBPF build failed; `cargo xtask setup` installs Debian's rustc for BPF and bpf-linker"
    );
    let object = target_dir.join(BPF_TARGET).join("release/api-shield");
    std::fs::copy(&object, dest).unwrap_or_else(|e| panic!("copy {}: {e}", object.display()));
}
