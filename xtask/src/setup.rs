//! `cargo xtask setup`: check every prerequisite and install only what is missing.

use crate::util::{self, command, output, run};
use anyhow::{Context, Result, bail};
use std::{collections::HashSet, fs, process::Stdio};

/// Debian packages, each with why the project needs it.
const PACKAGES: &[(&str, &str)] = &[
    (
        "rustc-web",
        "Debian's rustc, which ships a prebuilt `core` for bpfel-unknown-none",
    ),
    (
        "cargo-web",
        "Debian's cargo, which api-shield/build.rs runs for the eBPF crate",
    ),
    (
        "libstd-rust-web-dev-bpf",
        "the prebuilt `core` library for the BPF targets",
    ),
    (
        "llvm-22-dev",
        "LLVM 22 (the major of Debian's rustc), which bpf-linker links against",
    ),
    (
        "iproute2",
        "`ip`: namespaces, veth pairs and bridges for the demo and the end-to-end tests",
    ),
    (
        "util-linux",
        "`nsenter`: runs the daemon in a namespace without remounting /sys",
    ),
    ("procps", "`sysctl`: turns off IPv6 DAD inside the lab"),
    ("iputils-ping", "`ping`: the lab's connectivity check"),
    ("curl", "the demo's legitimate HTTP client"),
    ("python3", "the demo's HTTP server"),
    (
        "tmux",
        "drives the CLI in a terminal for interactive checks",
    ),
];

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPFFS: &str = "/sys/fs/bpf";

pub fn setup() -> Result<()> {
    let installed = install_packages(PACKAGES)?;
    let linker = ensure_bpf_linker()?;
    let mounted = ensure_bpffs()?;
    if !(installed || linker || mounted) {
        println!(
            "setup: all present ({} Debian packages, bpf-linker {BPF_LINKER_VERSION}, bpffs at {BPFFS})",
            PACKAGES.len()
        );
    }
    Ok(())
}

fn require_root(what: &str) -> Result<()> {
    if !util::is_root() {
        bail!("{what} needs root; run `cargo xtask setup` as root");
    }
    Ok(())
}

/// Installs the Debian packages a benchmark runs as peers, if missing.
pub fn ensure_packages(names: &[&'static str]) -> Result<()> {
    let wanted: Vec<(&str, &str)> = names
        .iter()
        .map(|n| (*n, "a peer a benchmark compares against"))
        .collect();
    install_packages(&wanted).map(|_| ())
}

/// Installs the missing Debian packages; true if it installed any.
fn install_packages(packages: &[(&str, &str)]) -> Result<bool> {
    let names: Vec<&str> = packages.iter().map(|(name, _)| *name).collect();
    // dpkg-query exits 1 when a package is unknown to dpkg; its stdout still lists the rest.
    let out = command("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${Status}\n")
        .args(&names)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("cannot run dpkg-query (is this Debian?)")?;
    let present: HashSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.ends_with(" install ok installed"))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect();
    let missing: Vec<&(&str, &str)> = packages
        .iter()
        .filter(|(name, _)| !present.contains(*name))
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    require_root("installing Debian packages")?;
    for (name, why) in &missing {
        println!("setup: installing {name}: {why}");
    }
    let apt = |args: &[&str], what: &str| {
        run(
            command("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null()),
            what,
        )
    };
    apt(&["update", "-q"], "apt-get update")?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing.iter().map(|(name, _)| *name));
    apt(&args, "apt-get install")?;
    Ok(true)
}

/// The version line of the `bpf-linker` on the search path, if there is one.
fn bpf_linker_version() -> Option<String> {
    let out = command("bpf-linker")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Installs bpf-linker unless the right version is there; true if it installed it.
fn ensure_bpf_linker() -> Result<bool> {
    let found = bpf_linker_version();
    if found
        .as_deref()
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION))
    {
        return Ok(false);
    }
    println!(
        "setup: installing bpf-linker {BPF_LINKER_VERSION} against LLVM 22 ({}); it links the \
         XDP object; this takes about 3 minutes",
        match &found {
            Some(v) => format!("found `{v}`"),
            None => "none found".to_owned(),
        }
    );
    run(
        util::cargo()
            .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}")])
            .args([
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .stdin(Stdio::null()),
        "cargo install bpf-linker",
    )?;
    match bpf_linker_version() {
        Some(v) if v.contains(BPF_LINKER_VERSION) => Ok(true),
        other => bail!(
            "bpf-linker was installed into {} but `bpf-linker --version` says {other:?}; \
             put that directory first on PATH",
            util::cargo_bin_dir().display()
        ),
    }
}

fn bpffs_mounted() -> Result<bool> {
    let mounts = fs::read_to_string("/proc/mounts").context("read /proc/mounts")?;
    Ok(mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(BPFFS) && fields.next() == Some("bpf")
    }))
}

/// Mounts bpffs where pins live; true if it mounted it.
fn ensure_bpffs() -> Result<bool> {
    if bpffs_mounted()? {
        return Ok(false);
    }
    require_root("mounting bpffs")?;
    println!("setup: mounting bpffs at {BPFFS}: the shield pins its program and maps there");
    output(
        command("mount").args(["-t", "bpf", "bpf", BPFFS]),
        "mount bpffs",
    )?;
    Ok(true)
}
