//! `cargo xtask bench ingest`: loading 1,000,000 list entries (900,000 IPv4 and 100,000 IPv6
//! prefixes, 60% host routes) into the kernel with `api-shield import`, side by side in one run
//! with `nft -f` (interval sets) and `ipset restore` (hash:net), each in a fresh namespace.
//! Writes `target/bench/ingest.json`. The peers must be installed (`nftables`, `ipset`).

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tests::daemon::Daemon;
use tests::netns::{Lab, ip};

const V4_ENTRIES: usize = 900_000;
const V6_ENTRIES: usize = 100_000;
/// Share of IPv4 entries that are host routes (/32), as in real community lists.
const V4_HOSTS: f64 = 0.6;
/// Elements per `add element` statement of the nft script.
const NFT_CHUNK: usize = 10_000;
const SEED: u64 = 0x5eed_1e57;
/// Targets from the issue: under 3 s, and at least 2x faster than the faster peer.
const TARGET_SECS: f64 = 3.0;
const TARGET_RATIO: f64 = 2.0;

struct Lists {
    v4: Vec<(Ipv4Addr, u8)>,
    v6: Vec<(Ipv6Addr, u8)>,
}

/// Random, realistic, distinct prefixes with their host bits cleared.
fn generate() -> Lists {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut seen4 = std::collections::HashSet::new();
    let mut v4 = Vec::with_capacity(V4_ENTRIES);
    while v4.len() < V4_ENTRIES {
        let len: u8 = if rng.random_bool(V4_HOSTS) {
            32
        } else {
            // Mostly /24s, the rest spread over /16../31.
            if rng.random_bool(0.5) {
                24
            } else {
                rng.random_range(16..=31)
            }
        };
        let addr: u32 = rng.random::<u32>() & (u32::MAX << (32 - u32::from(len)));
        // Keep clear of 0/8, 127/8 and multicast: nothing real lists there.
        let first = addr >> 24;
        if first == 0 || first == 127 || first >= 224 {
            continue;
        }
        if seen4.insert((addr, len)) {
            v4.push((Ipv4Addr::from(addr), len));
        }
    }
    let mut seen6 = std::collections::HashSet::new();
    let mut v6 = Vec::with_capacity(V6_ENTRIES);
    while v6.len() < V6_ENTRIES {
        let len: u8 = match rng.random_range(0..10) {
            0..=4 => 128,
            5..=7 => 64,
            8 => 48,
            _ => 32,
        };
        // Global unicast 2000::/3.
        let bits: u128 = (rng.random::<u128>() & (u128::MAX >> 3)) | (1u128 << 125);
        let addr = bits & (u128::MAX << (128 - u32::from(len)));
        if seen6.insert((addr, len)) {
            v6.push((Ipv6Addr::from(addr), len));
        }
    }
    Lists { v4, v6 }
}

fn write_files(lists: &Lists, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut plain = String::with_capacity(24 * (V4_ENTRIES + V6_ENTRIES));
    let mut ipset = String::from(
        "create bench4 hash:net family inet hashsize 1048576 maxelem 2000000\n\
         create bench6 hash:net family inet6 hashsize 131072 maxelem 2000000\n",
    );
    for (a, l) in &lists.v4 {
        writeln!(plain, "{a}/{l}").unwrap();
        writeln!(ipset, "add bench4 {a}/{l}").unwrap();
    }
    for (a, l) in &lists.v6 {
        writeln!(plain, "{a}/{l}").unwrap();
        writeln!(ipset, "add bench6 {a}/{l}").unwrap();
    }
    let mut nft = String::from(
        "table inet bench {\n  set v4 { type ipv4_addr; flags interval; auto-merge; }\n  \
         set v6 { type ipv6_addr; flags interval; auto-merge; }\n}\n",
    );
    for chunk in lists.v4.chunks(NFT_CHUNK) {
        let elems: Vec<String> = chunk.iter().map(|(a, l)| format!("{a}/{l}")).collect();
        writeln!(nft, "add element inet bench v4 {{ {} }}", elems.join(", ")).unwrap();
    }
    for chunk in lists.v6.chunks(NFT_CHUNK) {
        let elems: Vec<String> = chunk.iter().map(|(a, l)| format!("{a}/{l}")).collect();
        writeln!(nft, "add element inet bench v6 {{ {} }}", elems.join(", ")).unwrap();
    }
    let paths = (
        dir.join("list.txt"),
        dir.join("list.nft"),
        dir.join("list.ipset"),
    );
    std::fs::write(&paths.0, plain).unwrap();
    std::fs::write(&paths.1, nft).unwrap();
    std::fs::write(&paths.2, ipset).unwrap();
    paths
}

/// Runs `cmd` to completion, returning wall time and the child's peak RSS in KiB.
fn timed(cmd: &mut Command) -> (Duration, u64) {
    let started = Instant::now();
    #[expect(
        clippy::zombie_processes,
        reason = "reaped by wait4 below, which also reports its peak memory"
    )]
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 fills it for the child we just spawned.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing into locals we own.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    assert_eq!(rc, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed with status {status}"
    );
    (elapsed, usage.ru_maxrss as u64)
}

/// A namespace of its own for a peer, removed on drop.
struct Netns(String);

impl Netns {
    fn new(role: &str) -> Netns {
        let name = format!("asbench-{}-{role}", std::process::id());
        ip(&["netns", "add", &name]);
        Netns(name)
    }

    fn exec(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0, program]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "a benchmark: run with `cargo xtask bench ingest`"]
fn ingest() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let started = Instant::now();
    let lists = generate();
    let lab = Lab::new();
    // Room for every scattered host route (two 16-slot nodes each) and the IPv6 prefixes.
    let config = "[limits]\npackets_per_second = 0\nsyn_per_second = 0\n[autoblock]\nstrikes = 0\n\
                  [capacity]\nv4_nodes = 1400000\nv6_entries = 200000\n";
    let daemon = Daemon::start(&lab, config);
    let (plain, nft, ipset) = write_files(&lists, &daemon.dir);
    eprintln!(
        "generated {} entries in {:?}",
        V4_ENTRIES + V6_ENTRIES,
        started.elapsed()
    );

    let (mut ours, mut nfts, mut ipsets) = (Vec::new(), Vec::new(), Vec::new());
    let (mut nft_rss, mut ipset_rss) = (0, 0);
    for round in 0..rounds {
        // Alternate who goes first, so cache warmth favours nobody.
        let mut order = ["ours", "nft", "ipset"];
        let turn = round % order.len();
        order.rotate_left(turn);
        for who in order {
            match who {
                "ours" => {
                    let t = Instant::now();
                    let out = daemon.cli(&[
                        "import",
                        plain.to_str().unwrap(),
                        "--list",
                        "bench",
                        "--json",
                    ]);
                    let secs = t.elapsed().as_secs_f64();
                    assert!(out.success(), "import failed: {}", out.stderr);
                    let body: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
                    assert_eq!(body["entries"], V4_ENTRIES + V6_ENTRIES);
                    eprintln!(
                        "api-shield import: parse {} ms, daemon total {} ms, wall {:.0} ms",
                        body["parse_ms"],
                        body["total_ms"],
                        secs * 1000.0
                    );
                    // Empty it again so every round loads into the same state.
                    daemon.ok(&["flush", "--list", "bench"]);
                    ours.push(secs);
                }
                "nft" => {
                    let ns = Netns::new("nft");
                    let (d, rss) = timed(ns.exec("nft").arg("-f").arg(&nft));
                    nfts.push(d.as_secs_f64());
                    nft_rss = nft_rss.max(rss);
                }
                _ => {
                    let ns = Netns::new("ipset");
                    let (d, rss) = timed(ns.exec("ipset").arg("restore").arg("-file").arg(&ipset));
                    ipsets.push(d.as_secs_f64());
                    ipset_rss = ipset_rss.max(rss);
                }
            }
        }
    }
    let daemon_rss = daemon.pid().map_or(0, vm_hwm_kib);
    let (o, n, i) = (
        median(ours.clone()),
        median(nfts.clone()),
        median(ipsets.clone()),
    );
    let faster_peer = n.min(i);
    let ratio = faster_peer / o;
    println!(
        "\ningest: {} entries ({V4_ENTRIES} IPv4, {V6_ENTRIES} IPv6), {rounds} rounds, medians",
        V4_ENTRIES + V6_ENTRIES
    );
    println!("{:<24} {:>10} {:>14}", "method", "seconds", "peak RSS MiB");
    println!(
        "{:<24} {:>10.2} {:>14.0}",
        "api-shield import",
        o,
        daemon_rss as f64 / 1024.0
    );
    println!(
        "{:<24} {:>10.2} {:>14.0}",
        "nft -f",
        n,
        nft_rss as f64 / 1024.0
    );
    println!(
        "{:<24} {:>10.2} {:>14.0}",
        "ipset restore",
        i,
        ipset_rss as f64 / 1024.0
    );
    println!(
        "faster peer / api-shield: {ratio:.2}x (target >= {TARGET_RATIO}x); api-shield {o:.2} s (target < {TARGET_SECS} s)"
    );
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    let report = json!({
        "date": humantime_now(),
        "entries": {"ipv4": V4_ENTRIES, "ipv6": V6_ENTRIES, "ipv4_host_share": V4_HOSTS},
        "rounds": rounds,
        "seconds": {"api_shield": o, "nft": n, "ipset": i},
        "runs": {"api_shield": ours, "nft": nfts, "ipset": ipsets},
        "peak_rss_kib": {"api_shield_daemon": daemon_rss, "nft": nft_rss, "ipset": ipset_rss},
        "ratio_faster_peer_over_api_shield": ratio,
        "targets": {"max_seconds": TARGET_SECS, "min_ratio": TARGET_RATIO},
        "command": "cargo xtask bench ingest",
    });
    std::fs::write(
        out_dir.join("ingest.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    println!("wrote {}", out_dir.join("ingest.json").display());
}

fn humantime_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("unix {secs}")
}
