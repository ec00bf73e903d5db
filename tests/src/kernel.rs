//! A harness around the real XDP object for BPF_PROG_TEST_RUN: load it detached, configure
//! it through `Shield`, run frames, and read the counters each frame moved.

use api_shield::kernel::{
    clock,
    loader::Kernel,
    maps::Capacity,
    shield::{ApplyStats, Shield},
};
use api_shield::model::{Action, Decision};
use api_shield_common::{
    NS_PER_SEC,
    config::{MODE_ENFORCE, RateParams, ShieldConfig, port_word},
    maps::PORT_WORDS,
    state::Counter,
    verdict,
};
use aya::programs::{TestRun, TestRunOptions, TestRunResult, Xdp};
use std::fmt;

/// `XDP_DROP` as the program returns it.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS` as the program returns it.
pub const XDP_PASS: u32 = 2;

/// Small maps: each test loads its own copy of the program.
pub const TEST_CAPACITY: Capacity = Capacity {
    v4_nodes: 64,
    rules: 1024,
    v6_entries: 1024,
    sketch_width: 1024,
    offenders: 1024,
    auto_blocks: 1024,
};

/// Fixed, non-zero sketch seeds, so a test's cell placement is the same on every run.
pub const SEEDS: [u64; 2] = [0x5EED_0000_0000_0001, 0x5EED_0000_0000_0002];
/// Sources share a bucket per host (IPv4) and per /64 (IPv6).
pub const V4_RATE_PREFIX: u32 = 32;
pub const V6_RATE_PREFIX: u32 = 64;
pub const AUTOBLOCK_WINDOW_NS: u64 = 10 * NS_PER_SEC;
pub const AUTOBLOCK_TTL_NS: u64 = 3_600 * NS_PER_SEC;
/// Auto-block events per second (and burst) the kernel may send.
pub const EVENT_RATE: u64 = 100;

/// Enforcing, every rate limit off, auto-block off: only the lists decide.
pub fn base_config(caps: &Capacity) -> ShieldConfig {
    ShieldConfig {
        mode: MODE_ENFORCE,
        active_table: 0,
        v4_nodes: caps.v4_nodes,
        flags: 0,
        v4_rate_prefix: V4_RATE_PREFIX,
        v6_rate_prefix: V6_RATE_PREFIX,
        sketch_mask: caps.sketch_width - 1,
        autoblock_strikes: 0,
        seeds: SEEDS,
        pkt: RateParams::new(0, 0),
        syn: RateParams::new(0, 0),
        autoblock_window_ns: AUTOBLOCK_WINDOW_NS,
        autoblock_ttl_ns: AUTOBLOCK_TTL_NS,
        events: RateParams::new(EVENT_RATE, EVENT_RATE),
    }
}

/// The `PORTS` bitmap with exactly `ports` set.
pub fn port_bitmap(ports: &[u16]) -> Vec<u32> {
    let mut words = vec![0u32; PORT_WORDS as usize];
    for &p in ports {
        let (word, bit) = port_word(p);
        words[word as usize] |= bit;
    }
    words
}

/// A never-expiring decision on `net` (e.g. `"198.18.0.0/16"`).
pub fn decision(net: &str, action: Action, origin: &str) -> Decision {
    Decision {
        net: net.parse().unwrap_or_else(|e| panic!("{net}: {e}")),
        action,
        origin: origin.to_string(),
        reason: None,
        created_at_ms: clock::now_unix_ms(),
        expires_at_ms: None,
    }
}

pub fn block(net: &str) -> Decision {
    decision(net, Action::Block, "test")
}

pub fn allow(net: &str) -> Decision {
    decision(net, Action::Allow, "test")
}

/// Counter values at one moment: the verdict and detail slots, and the per-origin drops.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub counters: Vec<Counter>,
    pub origins: Vec<Counter>,
}

/// What moved between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    pub counters: Vec<Counter>,
    pub origins: Vec<Counter>,
}

fn diff(after: &[Counter], before: &[Counter]) -> Vec<Counter> {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| Counter {
            packets: a.packets - b.packets,
            bytes: a.bytes - b.bytes,
        })
        .collect()
}

impl Snapshot {
    pub fn delta_since(&self, before: &Snapshot) -> Delta {
        Delta {
            counters: diff(&self.counters, &before.counters),
            origins: diff(&self.origins, &before.origins),
        }
    }
}

impl Delta {
    pub fn packets(&self, slot: u32) -> u64 {
        self.counters[slot as usize].packets
    }

    pub fn bytes(&self, slot: u32) -> u64 {
        self.counters[slot as usize].bytes
    }

    pub fn origin_packets(&self, origin: u32) -> u64 {
        self.origins[origin as usize].packets
    }

    /// Counter slots that moved, as (slot, packets).
    pub fn moved(&self) -> Vec<(u32, u64)> {
        (0..verdict::SLOTS)
            .filter(|&s| self.packets(s) != 0)
            .map(|s| (s, self.packets(s)))
            .collect()
    }

    /// Origins whose drop counter moved, as (origin, packets).
    pub fn origins_moved(&self) -> Vec<(u32, u64)> {
        (0..self.origins.len() as u32)
            .filter(|&o| self.origin_packets(o) != 0)
            .map(|o| (o, self.origin_packets(o)))
            .collect()
    }

    /// Asserts that exactly the `expected` counter slots moved, by exactly these packet counts.
    #[track_caller]
    pub fn assert_counters(&self, expected: &[(u32, u64)], what: &str) {
        let mut want: Vec<(u32, u64)> = expected.iter().copied().filter(|e| e.1 != 0).collect();
        want.sort_unstable();
        assert_eq!(
            Names(&self.moved()),
            Names(&want),
            "{what}: counters moved (left) differ from expected (right)"
        );
    }

    /// Asserts that exactly the `expected` origin drop counters moved.
    #[track_caller]
    pub fn assert_origins(&self, expected: &[(u32, u64)], what: &str) {
        let mut want: Vec<(u32, u64)> = expected.iter().copied().filter(|e| e.1 != 0).collect();
        want.sort_unstable();
        assert_eq!(
            self.origins_moved(),
            want,
            "{what}: origin counters moved (left) differ from expected (right)"
        );
    }
}

/// Prints counter slots by name in assertion messages.
#[derive(PartialEq, Eq)]
pub struct Names<'a>(pub &'a [(u32, u64)]);

impl fmt::Debug for Names<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(s, n)| {
                let name = verdict::NAMES.get(*s as usize).copied().unwrap_or("?");
                (name, n)
            }))
            .finish()
    }
}

/// The name of a verdict counter slot.
pub fn slot_name(slot: u32) -> &'static str {
    verdict::NAMES.get(slot as usize).copied().unwrap_or("?")
}

/// One frame's outcome.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub ret: u32,
    pub delta: Delta,
}

/// A detached load of the real program, owned by one test.
pub struct Harness {
    pub shield: Shield,
}

impl Harness {
    /// Loads the program with `caps`, writes `cfg` and the port list.
    pub fn with_capacity(caps: &Capacity, cfg: &ShieldConfig, ports: &[u16]) -> Self {
        let kernel = Kernel::load_detached(caps).expect("load the XDP object (needs root)");
        let mut shield = Shield::new(kernel).expect("shield over a fresh load");
        shield
            .set_settings(cfg, &port_bitmap(ports))
            .expect("write settings");
        Self { shield }
    }

    /// `TEST_CAPACITY`, `cfg`, no scoped ports.
    pub fn new(cfg: &ShieldConfig) -> Self {
        Self::with_capacity(&TEST_CAPACITY, cfg, &[])
    }

    /// `TEST_CAPACITY` and the base configuration changed by `f`.
    pub fn configured(f: impl FnOnce(&mut ShieldConfig)) -> Self {
        let mut cfg = base_config(&TEST_CAPACITY);
        f(&mut cfg);
        Self::new(&cfg)
    }

    pub fn apply(&mut self, decisions: &[Decision]) -> ApplyStats {
        self.shield.apply(decisions).expect("apply decisions")
    }

    pub fn origin_id(&mut self, origin: &str) -> u32 {
        self.shield.origin_id(origin).expect("origin id")
    }

    pub fn program(&self) -> &Xdp {
        self.shield
            .kernel
            .program()
            .expect("a detached load keeps its program")
    }

    /// Runs `frame` `repeat` times through the program.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> TestRunResult {
        run_program(self.program(), frame, repeat)
    }

    /// Runs `frame` once; returns the XDP action.
    pub fn run(&self, frame: &[u8]) -> u32 {
        self.test_run(frame, 1).return_value
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            counters: self.shield.counters().expect("read counters"),
            origins: self.shield.origin_counters().expect("read origin counters"),
        }
    }

    /// Runs `frame` once and returns its action and the counters it moved.
    pub fn send(&self, frame: &[u8]) -> Outcome {
        let before = self.snapshot();
        let ret = self.run(frame);
        Outcome {
            ret,
            delta: self.snapshot().delta_since(&before),
        }
    }

    /// Runs `frame` `n` times, one run per call (so each run reads the clock), and returns the
    /// actions and the counters moved by all of them.
    pub fn send_n(&self, frame: &[u8], n: usize) -> (Vec<u32>, Delta) {
        let before = self.snapshot();
        let rets = (0..n).map(|_| self.run(frame)).collect();
        (rets, self.snapshot().delta_since(&before))
    }
}

/// One BPF_PROG_TEST_RUN of `prog` on `frame`, `repeat` times.
pub fn run_program(prog: &Xdp, frame: &[u8], repeat: u32) -> TestRunResult {
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::new()
    })
    .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of a {}-byte frame: {e}", frame.len()))
}

/// The name of an XDP action, for messages.
pub fn action_name(ret: u32) -> &'static str {
    match ret {
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        _ => "other",
    }
}
