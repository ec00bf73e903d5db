//! The data path's cost per packet, measured by the kernel itself (BPF_PROG_TEST_RUN with
//! `repeat`), side by side with the minimal XDP program of the same object.
//!
//! `cargo xtask bench datapath` runs the ignored `datapath` test: every path is timed once per
//! round, the rounds alternate the paths, and the median of each path is reported as ns per
//! packet and as a ratio to the minimal program measured in the same rounds. The result is
//! printed and written to `target/bench/datapath.json`. Each path's verdict is checked before
//! it is timed, and the counters are checked after, so a path cannot silently time another.
//!
//! `datapath_smoke` runs the same paths with a small repeat and table, so CI sees it work.

use api_shield::kernel::maps::Capacity;
use api_shield::model::{Action, Decision};
use api_shield_common::{config::RateParams, maps::BASELINE_PROGRAM, verdict};
use aya::programs::Xdp;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tests::frames::Frame;
use tests::kernel::{
    Harness, XDP_DROP, XDP_PASS, action_name, base_config, decision, run_program, slot_name,
};

/// Runs per measurement unless `BENCH_REPEAT` says otherwise.
const DEFAULT_REPEAT: u32 = 2_000_000;
/// Measurements per path unless `BENCH_ROUNDS` says otherwise.
const DEFAULT_ROUNDS: usize = 7;
/// IPv4 prefixes loaded for the CIDR path.
const CIDR_PREFIXES: usize = 1_000_000;
const SMOKE_CIDR_PREFIXES: usize = 10_000;
const SMOKE_REPEAT: u32 = 1_000;
/// Exact entries among which the exact-block target sits.
const EXACT_ENTRIES: usize = 1_000;
/// IPv6 hosts and /48s in the IPv6 list.
const V6_HOSTS: usize = 1_000;
const V6_NETS: usize = 16;
/// Prefix lengths of the random CIDR list.
const CIDR_MIN_LEN: u8 = 16;
const CIDR_MAX_LEN: u8 = 24;
/// The share of a rate-limited run that may still pass (tokens refilled during the run).
const LIMITED_SLACK_DIVISOR: u64 = 1_000;
/// A 74-byte UDP frame, as in the design notes' measurements.
const UDP_PAYLOAD: usize = 32;
const DNS: u16 = 53;
const SEED: u64 = 0xDA7A_9A7E;

/// "Clean pass at most 2x the minimal program, blocked drop at most 1.5x".
const BLOCKED_MAX_RATIO: f64 = 1.5;
const PASS_MAX_RATIO: f64 = 2.0;

/// Rates high enough that the timed runs never empty a bucket.
const HIGH_RATE: u64 = 1_000_000_000;

// Sources. Test hosts are in 198.18.0.0/15 and 2001:db8::/32; the IPv6 list lives in the
// other documentation prefix, 3fff::/20, so a 2001:db8:: source is negative in the filter.
const PASS_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);
const ALLOWED_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
const EXACT_TARGET: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 3);
/// Exact entries are drawn from this /16.
const EXACT_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
const CIDR_TARGET: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 7);
const CIDR_TARGET_NET: &str = "198.18.192.0/20";
/// The random CIDR list stays out of the test hosts' /15, except for the target's prefix.
const TEST_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
const TEST_NET_LEN: u32 = 15;
const CLEAN_1M_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 1);
const RATE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 50, 1);
const AUTO_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 60, 1);
const PASS_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 1);
const V6_LIST_PREFIX: u128 = 0x3fff << 112;
const V6_LIST_PREFIX_LEN: u32 = 20;
const BLOCKED_V6: Ipv6Addr = Ipv6Addr::new(0x3fff, 0, 0, 1, 0, 0, 0, 3);
const MISS_V6: Ipv6Addr = Ipv6Addr::new(0x3fff, 0, 0, 2, 0, 0, 0, 0x99);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Baseline,
    Main,
    Cidr,
    Rate,
    Auto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Minimal,
    Pass,
    Blocked,
    Limited,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Minimal => "minimal",
            Class::Pass => "pass",
            Class::Blocked => "blocked",
            Class::Limited => "limited",
        }
    }

    fn max_ratio(self) -> Option<f64> {
        match self {
            Class::Pass => Some(PASS_MAX_RATIO),
            Class::Blocked => Some(BLOCKED_MAX_RATIO),
            Class::Minimal | Class::Limited => None,
        }
    }
}

struct PathSpec {
    name: &'static str,
    class: Class,
    target: Target,
    frame: Vec<u8>,
    ret: u32,
    /// The counter every run of this path must move (none for the minimal program).
    slot: Option<u32>,
}

/// Every program the paths run, each with the state its paths need.
struct Bench {
    baseline: aya::Ebpf,
    main: Harness,
    cidr: Harness,
    rate: Harness,
    auto: Harness,
}

fn caps(v4_nodes: u32, v6_entries: u32) -> Capacity {
    Capacity {
        v4_nodes,
        rules: 1024,
        v6_entries,
        sketch_width: 65_536,
        offenders: 65_536,
        auto_blocks: 65_536,
    }
}

fn udp4(src: Ipv4Addr) -> Vec<u8> {
    Frame::ipv4(src).udp(DNS).payload(UDP_PAYLOAD).build()
}

fn udp6(src: Ipv6Addr) -> Vec<u8> {
    Frame::ipv6(src).udp(DNS).payload(UDP_PAYLOAD).build()
}

fn block_net(net: IpNet, origin: &str) -> Decision {
    Decision {
        net,
        action: Action::Block,
        origin: origin.to_string(),
        reason: None,
        created_at_ms: 0,
        expires_at_ms: None,
    }
}

/// `n` distinct random /16../24 prefixes outside the test hosts' /15.
fn random_prefixes(rng: &mut StdRng, n: usize) -> Vec<Ipv4Net> {
    let test_net = u32::from(TEST_NET) >> (u32::BITS - TEST_NET_LEN);
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = rng.random_range(CIDR_MIN_LEN..=CIDR_MAX_LEN);
        let addr = rng.random::<u32>() & (u32::MAX << (u32::BITS - u32::from(len)));
        if addr >> (u32::BITS - TEST_NET_LEN) == test_net {
            continue;
        }
        if seen.insert((addr, len)) {
            out.push(Ipv4Net::new(Ipv4Addr::from(addr), len).expect("length checked"));
        }
    }
    out
}

impl Bench {
    fn new(cidr_prefixes: usize) -> (Self, Vec<PathSpec>) {
        let mut rng = StdRng::seed_from_u64(SEED);

        let mut baseline = aya::EbpfLoader::new()
            .load(api_shield::BPF_OBJECT)
            .expect("load the object for its baseline program");
        let prog: &mut Xdp = baseline
            .program_mut(BASELINE_PROGRAM)
            .expect("the object has the baseline program")
            .try_into()
            .expect("an XDP program");
        prog.load().expect("load the baseline program");

        let high = |h: &Capacity| {
            let mut c = base_config(h);
            c.pkt = RateParams::new(HIGH_RATE, HIGH_RATE);
            c.syn = RateParams::new(HIGH_RATE, HIGH_RATE);
            c
        };

        // Main: an allowlisted host, 1,000 exact IPv4 blocks, an IPv6 list; high limits.
        // 1,000 hosts in one /16: ~256 first-level and ~900 second-level IPv4 nodes.
        let main_caps = caps(4096, 4096);
        let mut main = Harness::with_capacity(&main_caps, &high(&main_caps), &[]);
        let mut decisions = vec![decision(
            &format!("{ALLOWED_V4}/32"),
            Action::Allow,
            "bench",
        )];
        let mut exact: HashSet<Ipv4Addr> = HashSet::from([EXACT_TARGET]);
        while exact.len() < EXACT_ENTRIES {
            let low = rng.random::<u16>();
            exact.insert(Ipv4Addr::from(u32::from(EXACT_NET) | u32::from(low)));
        }
        decisions.extend(
            exact
                .iter()
                .map(|a| block_net(IpNet::V4(Ipv4Net::from(*a)), "bench-exact")),
        );
        let host_bits = u128::MAX >> V6_LIST_PREFIX_LEN;
        decisions.push(block_net(IpNet::V6(Ipv6Net::from(BLOCKED_V6)), "bench-v6"));
        for _ in 0..V6_HOSTS {
            let a = Ipv6Addr::from(V6_LIST_PREFIX | (rng.random::<u128>() & host_bits));
            decisions.push(block_net(IpNet::V6(Ipv6Net::from(a)), "bench-v6"));
        }
        for _ in 0..V6_NETS {
            let a = Ipv6Addr::from(V6_LIST_PREFIX | (rng.random::<u128>() & host_bits));
            let net = Ipv6Net::new(a, 48).expect("valid length").trunc();
            decisions.push(block_net(IpNet::V6(net), "bench-v6"));
        }
        let stats = main.apply(&decisions);
        println!("main table: {stats:?}");

        // CIDR: the random prefixes and the one covering the target.
        let cidr_caps = caps(64, 1024);
        let mut cidr = Harness::with_capacity(&cidr_caps, &high(&cidr_caps), &[]);
        let mut decisions: Vec<Decision> = random_prefixes(&mut rng, cidr_prefixes)
            .into_iter()
            .map(|n| block_net(IpNet::V4(n), "bench-cidr"))
            .collect();
        decisions.push(block_net(
            CIDR_TARGET_NET.parse().expect("valid"),
            "bench-cidr",
        ));
        let started = Instant::now();
        let stats = cidr.apply(&decisions);
        println!(
            "cidr table: {} prefixes applied in {:.2?}: {stats:?}",
            decisions.len(),
            started.elapsed()
        );
        drop(decisions);

        // Rate: one packet per second, so every timed run but a rare refill drops.
        let small = caps(64, 1024);
        let mut rate_cfg = base_config(&small);
        rate_cfg.pkt = RateParams::new(1, 1);
        let rate = Harness::with_capacity(&small, &rate_cfg, &[]);
        // Auto: the same limit, and a source the kernel has already blocked.
        let mut auto_cfg = rate_cfg;
        auto_cfg.autoblock_strikes = 2;
        let auto = Harness::with_capacity(&small, &auto_cfg, &[]);

        let path = |name, class, target, frame, ret, slot| PathSpec {
            name,
            class,
            target,
            frame,
            ret,
            slot,
        };
        use Class::*;
        use Target::*;
        let paths = vec![
            path("minimal", Minimal, Baseline, udp4(PASS_V4), XDP_DROP, None),
            path(
                "pass",
                Pass,
                Main,
                udp4(PASS_V4),
                XDP_PASS,
                Some(verdict::PASS),
            ),
            path(
                "allowlisted",
                Pass,
                Main,
                udp4(ALLOWED_V4),
                XDP_PASS,
                Some(verdict::ALLOWLISTED),
            ),
            path(
                "exact_block",
                Blocked,
                Main,
                udp4(EXACT_TARGET),
                XDP_DROP,
                Some(verdict::BLOCKLISTED),
            ),
            path(
                "cidr_block",
                Blocked,
                Cidr,
                udp4(CIDR_TARGET),
                XDP_DROP,
                Some(verdict::BLOCKLISTED),
            ),
            path(
                "pass_cidr_loaded",
                Pass,
                Cidr,
                udp4(CLEAN_1M_V4),
                XDP_PASS,
                Some(verdict::PASS),
            ),
            path(
                "rate_limited",
                Limited,
                Rate,
                udp4(RATE_V4),
                XDP_DROP,
                Some(verdict::RATE_LIMITED),
            ),
            path(
                "auto_blocked",
                Blocked,
                Auto,
                udp4(AUTO_V4),
                XDP_DROP,
                Some(verdict::BLOCK_AUTO),
            ),
            path(
                "ipv6_pass",
                Pass,
                Main,
                udp6(PASS_V6),
                XDP_PASS,
                Some(verdict::PASS),
            ),
            path(
                "ipv6_pass_listed_24",
                Pass,
                Main,
                udp6(MISS_V6),
                XDP_PASS,
                Some(verdict::PASS),
            ),
            path(
                "ipv6_block",
                Blocked,
                Main,
                udp6(BLOCKED_V6),
                XDP_DROP,
                Some(verdict::BLOCKLISTED),
            ),
        ];
        let bench = Self {
            baseline,
            main,
            cidr,
            rate,
            auto,
        };
        bench.prime(&paths);
        (bench, paths)
    }

    fn program(&self, t: Target) -> &Xdp {
        match t {
            Target::Baseline => self
                .baseline
                .program(BASELINE_PROGRAM)
                .expect("baseline program")
                .try_into()
                .expect("an XDP program"),
            other => self.harness(other).expect("a shield target").program(),
        }
    }

    fn harness(&self, t: Target) -> Option<&Harness> {
        match t {
            Target::Baseline => None,
            Target::Main => Some(&self.main),
            Target::Cidr => Some(&self.cidr),
            Target::Rate => Some(&self.rate),
            Target::Auto => Some(&self.auto),
        }
    }

    /// Empties the rate-limited source's bucket and gets the auto-blocked source blocked.
    fn prime(&self, paths: &[PathSpec]) {
        const PRIMING_RUNS: u32 = 8;
        for p in paths
            .iter()
            .filter(|p| matches!(p.target, Target::Rate | Target::Auto))
        {
            let h = self.harness(p.target).expect("shield target");
            for _ in 0..PRIMING_RUNS {
                h.run(&p.frame);
            }
        }
    }

    /// One run of `p`: checks its action and that exactly its counter moved.
    fn verify(&self, p: &PathSpec) {
        let prog = self.program(p.target);
        let Some(h) = self.harness(p.target) else {
            let r = run_program(prog, &p.frame, 1);
            assert_eq!(r.return_value, p.ret, "{}: wrong action", p.name);
            return;
        };
        let out = h.send(&p.frame);
        assert_eq!(
            out.ret,
            p.ret,
            "{}: returned {}, expected {}",
            p.name,
            action_name(out.ret),
            action_name(p.ret)
        );
        let slot = p.slot.expect("shield paths name their counter");
        assert_eq!(
            out.delta.packets(slot),
            1,
            "{}: counter {} did not move: {:?}",
            p.name,
            slot_name(slot),
            out.delta.moved()
        );
    }

    /// Times `repeat` runs of `p` and returns the kernel's own ns per run (whole ns: the
    /// loop's time divided by `repeat`, time spent rescheduled excluded), after checking that
    /// the runs took the intended path.
    fn measure(&self, p: &PathSpec, repeat: u32) -> f64 {
        let prog = self.program(p.target);
        let h = self.harness(p.target);
        let before = h.map(Harness::snapshot);
        let r = run_program(prog, &p.frame, repeat);
        assert_eq!(
            r.return_value,
            p.ret,
            "{}: the timed run returned {}",
            p.name,
            action_name(r.return_value)
        );
        if let (Some(h), Some(before), Some(slot)) = (h, before, p.slot) {
            let moved = h.snapshot().delta_since(&before).packets(slot);
            let want = u64::from(repeat);
            let slack = if p.class == Class::Limited {
                want / LIMITED_SLACK_DIVISOR + 1
            } else {
                0
            };
            assert!(
                moved <= want && moved + slack >= want,
                "{}: {} of {want} timed runs took the {} path",
                p.name,
                moved,
                slot_name(slot)
            );
        }
        r.duration.as_nanos() as f64
    }
}

struct Row {
    name: &'static str,
    class: Class,
    samples: Vec<f64>,
}

fn lowest(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Keeps this thread on the CPU it runs on, so every measurement sees the same caches and
/// the same per-CPU map slots. Best effort: an unpinned run is only noisier.
fn pin_to_current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu has no arguments; the cpu_set_t is ours and zero-initialised, and
    // sched_setaffinity only reads it.
    unsafe {
        let cpu = usize::try_from(libc::sched_getcpu()).ok()?;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        (libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0).then_some(cpu)
    }
}

/// Verifies every path, warms each up once, then times each once per round, rotating the
/// order every round.
fn run(cidr_prefixes: usize, repeat: u32, rounds: usize) -> Vec<Row> {
    let (bench, paths) = Bench::new(cidr_prefixes);
    for p in &paths {
        bench.verify(p);
    }
    match pin_to_current_cpu() {
        Some(cpu) => println!("measuring on CPU {cpu}"),
        None => println!("measuring unpinned: {}", std::io::Error::last_os_error()),
    }
    for p in &paths {
        bench.measure(p, repeat);
    }
    let mut rows: Vec<Row> = paths
        .iter()
        .map(|p| Row {
            name: p.name,
            class: p.class,
            samples: Vec::with_capacity(rounds),
        })
        .collect();
    for round in 0..rounds {
        for i in 0..paths.len() {
            let k = (i + round) % paths.len();
            rows[k].samples.push(bench.measure(&paths[k], repeat));
        }
    }
    rows
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a valid number")),
        Err(_) => default,
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (civil-from-days, proleptic Gregorian).
fn utc_rfc3339(secs: u64) -> String {
    const SECS_PER_DAY: u64 = 86_400;
    let days = (secs / SECS_PER_DAY) as i64;
    let rem = secs % SECS_PER_DAY;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

fn output_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("bench").join("datapath.json")
}

#[test]
#[ignore = "benchmark: cargo xtask bench datapath"]
fn datapath() {
    let repeat: u32 = env_or("BENCH_REPEAT", DEFAULT_REPEAT);
    let rounds: usize = env_or("BENCH_ROUNDS", DEFAULT_ROUNDS);
    assert!(repeat > 0 && rounds > 0);
    let rows = run(CIDR_PREFIXES, repeat, rounds);
    let minimal = median(&rows[0].samples);
    let minimal_min = lowest(&rows[0].samples);
    assert_eq!(rows[0].class, Class::Minimal);

    println!();
    println!("datapath: BPF_PROG_TEST_RUN, repeat {repeat}, {rounds} rounds, medians");
    println!(
        "{:<22} {:<8} {:>10} {:>6} {:>6} {:>7} {:>9}  target (median ratio)",
        "path", "class", "ns/packet", "min", "max", "ratio", "min ratio"
    );
    let mut paths = serde_json::Map::new();
    for r in &rows {
        let med = median(&r.samples);
        let min = lowest(&r.samples);
        let min_ratio = min / minimal_min;
        let max = r.samples.iter().copied().fold(0.0, f64::max);
        let ratio = med / minimal;
        let target = r
            .class
            .max_ratio()
            .map(|t| format!("<= {t:.1}x {}", if ratio <= t { "met" } else { "MISSED" }))
            .unwrap_or_default();
        println!(
            "{:<22} {:<8} {med:>10.1} {min:>6.0} {max:>6.0} {ratio:>6.2}x {min_ratio:>8.2}x  {target}",
            r.name,
            r.class.name()
        );
        paths.insert(
            r.name.to_string(),
            serde_json::json!({
                "ns_median": med,
                "ratio": (ratio * 1000.0).round() / 1000.0,
                "ns_min": min,
                "ns_max": max,
                "ratio_of_mins": (min_ratio * 1000.0).round() / 1000.0,
                "class": r.class.name(),
            }),
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let report = serde_json::json!({
        "date": utc_rfc3339(now),
        "repeat": repeat,
        "rounds": rounds,
        "cidr_prefixes": CIDR_PREFIXES + 1,
        "exact_entries": EXACT_ENTRIES,
        "paths": paths,
        "targets": {
            "blocked_max_ratio": BLOCKED_MAX_RATIO,
            "pass_max_ratio": PASS_MAX_RATIO,
        },
    });
    let out = output_path();
    std::fs::create_dir_all(out.parent().expect("has a parent")).expect("create target/bench");
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&report).expect("serialisable") + "\n",
    )
    .unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    println!("wrote {}", out.display());
}

/// Every path once with a small repeat and table: each verdict holds and each time is positive.
#[test]
fn datapath_smoke() {
    let rows = run(SMOKE_CIDR_PREFIXES, SMOKE_REPEAT, 1);
    assert_eq!(rows.len(), 11);
    for r in &rows {
        assert_eq!(r.samples.len(), 1);
        assert!(r.samples[0] > 0.0, "{}: {} ns", r.name, r.samples[0]);
    }
}

#[test]
fn date_format() {
    assert_eq!(utc_rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(utc_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(utc_rfc3339(1_764_288_000 + 3_661), "2025-11-28T01:01:01Z");
}
