//! Packet fuzzing of the real XDP object through BPF_PROG_TEST_RUN.
//!
//! Random frames are described with the frame builder (VLAN stacks up to three tags, IPv4
//! options, fragments and bad length fields, IPv6 extension-header chains of up to eight
//! headers of every kind, every transport), then often mutated byte-wise: truncated, bytes
//! overwritten, inserted or deleted, garbage appended, EtherTypes and next-header fields
//! swapped. Each frame is its own test run, against one loaded shield that holds allow and
//! block entries (IPv4 and IPv6, exact and CIDR, overlapping both ways, with and without
//! expiry, one already expired) and has its rate limits and auto-blocking on.
//!
//! An independent reference parser in this file reads every frame the way the program is
//! specified to (two VLAN tags, IPv4 options and fragments, at most six IPv6 extension headers,
//! the transport header of first fragments) and the reference policy decides what the lists
//! say about the source it finds. Invariants:
//!
//! - the program never fails: every test run succeeds and returns `XDP_PASS` or `XDP_DROP`;
//! - a frame whose parsed source is blocklisted (and not allowlisted) is dropped;
//! - a frame whose parsed source is allowlisted is passed;
//! - malformed frames are dropped and non-IP frames passed, as the reference parser says;
//! - every frame lands in exactly one verdict counter, with its bytes: checked exactly, frame
//!   by frame, for one frame in `EXACT_EVERY`, and as totals per class for every chunk of
//!   frames (verdicts, fragments, expired matches, per-origin drops against `blocklisted`);
//! - for frames built unmutated, the reference parser finds the source the builder wrote.
//!
//! `PACKET_FUZZ_FRAMES` sets the number of random frames (100,000 in the CI test, about a second, 1,000,000 in
//! the ignored full run that `cargo xtask fuzz` starts); `PACKET_FUZZ_SEED` sets the seed (the
//! CI test uses a fixed one, the full run a fresh one, printed so a failure can be replayed).
//! Both runs first feed every truncation of a set of template frames. Needs root.

use api_shield::kernel::maps::Capacity;
use api_shield::model::{Action, Decision};
use api_shield_common::{
    config::RateParams,
    state::{Counter, ORIGIN_KERNEL},
    verdict::*,
};
use aya::programs::{TestRun, TestRunOptions};
use ipnet::IpNet;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use tests::frames::*;
use tests::kernel::*;

/// Random frames of the CI test.
const CI_FRAMES: u64 = 100_000;
/// Random frames of the full run.
const FULL_FRAMES: u64 = 1_000_000;
/// The CI test's seed, so CI runs the same frames every time.
const CI_SEED: u64 = 0x5EED_FA22_0000_0001;
/// One frame in this many has its counters read before and after, and checked exactly.
const EXACT_EVERY: u64 = 32;
/// Frames between two checks of the counter totals.
const CHUNK: u64 = 4_096;
/// Longest frame generated: well below what BPF_PROG_TEST_RUN takes for XDP (a page less
/// head- and tailroom).
const MAX_FRAME: usize = 1_600;
/// The kernel refuses shorter test-run input (an Ethernet header).
const MIN_FRAME: usize = ETH_HEADER_LEN;
/// Failures described in full in the report; the rest are only counted.
const MAX_REPORTED: usize = 12;

// ---- the policy under test (198.18.0.0/15 and 2001:db8::/32 only) --------------------------

/// Rate limits: 100 packets per second per /24 (IPv4) or /64 (IPv6), burst 100; 20 SYNs per
/// second, burst 20; 50 over-limit packets within 10 s auto-block the prefix for an hour.
const PKT_RATE: u64 = 100;
const SYN_RATE: u64 = 20;
const STRIKES: u32 = 50;
const FUZZ_V4_RATE_PREFIX: u32 = 24;
const FUZZ_V6_RATE_PREFIX: u32 = 64;
const HOUR_MS: u64 = 3_600_000;
/// Lifetime of the entries that expire before the first frame, and the wait for it.
const PAST_MS: u64 = 300;
const PAST_WAIT: Duration = Duration::from_millis(PAST_MS + 100);

/// Room for every entry below (the /32s need two IPv4 nodes each).
const FUZZ_CAPACITY: Capacity = Capacity {
    v4_nodes: 64,
    rules: 1024,
    v6_entries: 1024,
    sketch_width: 1024,
    offenders: 1024,
    auto_blocks: 1024,
};

/// How an entry expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    Never,
    /// An hour from now: enforced through the rule table.
    Later,
    /// Shortly after the load (`PAST_MS`), so it is in the kernel's table but no longer
    /// blocks by the time frames run (the shield leaves out what has expired already).
    Past,
}

/// The entries: (net, action, origin, expiry).
const ENTRIES: &[(&str, Action, &str, Expiry)] = &[
    ("198.18.0.66/32", Action::Block, "fuzz-a", Expiry::Never),
    ("198.18.4.0/24", Action::Block, "fuzz-b", Expiry::Never),
    ("198.18.64.0/18", Action::Block, "fuzz-b", Expiry::Never),
    ("198.18.6.0/28", Action::Block, "fuzz-ttl", Expiry::Later),
    ("198.18.5.0/24", Action::Block, "fuzz-old", Expiry::Past),
    ("198.18.2.5/32", Action::Allow, "fuzz-allow", Expiry::Never),
    ("198.18.3.0/24", Action::Allow, "fuzz-allow", Expiry::Never),
    // A blocked host inside an allowed /24, an allowed host inside a blocked /24.
    ("198.18.3.77/32", Action::Block, "fuzz-a", Expiry::Never),
    ("198.18.4.9/32", Action::Allow, "fuzz-allow", Expiry::Never),
    (
        "2001:db8:bad::1/128",
        Action::Block,
        "fuzz-a",
        Expiry::Never,
    ),
    ("2001:db8:bad1::/48", Action::Block, "fuzz-b", Expiry::Never),
    ("2001:db8:77::/64", Action::Block, "fuzz-ttl", Expiry::Later),
    ("2001:db8:e::/64", Action::Block, "fuzz-old", Expiry::Past),
    (
        "2001:db8:a11::/64",
        Action::Allow,
        "fuzz-allow",
        Expiry::Never,
    ),
    (
        "2001:db8:a11::66/128",
        Action::Block,
        "fuzz-a",
        Expiry::Never,
    ),
    (
        "2001:db8:bad1:1::7/128",
        Action::Allow,
        "fuzz-allow",
        Expiry::Never,
    ),
    // Alone in a /64 whose other hosts are only rate limited: its bucket and any auto-block
    // of the /64 must never drop it.
    (
        "2001:db8:c::5/128",
        Action::Allow,
        "fuzz-allow",
        Expiry::Never,
    ),
];

/// Sources the generator draws from, so every policy path is hit often.
const V4_SOURCES: &[&str] = &[
    "198.18.0.66",
    "198.18.4.1",
    "198.18.4.200",
    "198.18.100.3",
    "198.18.6.5",
    "198.18.6.16",
    "198.18.5.5",
    "198.18.2.5",
    "198.18.2.6",
    "198.18.3.1",
    "198.18.3.77",
    "198.18.4.9",
    "198.18.4.8",
    "198.18.0.1",
    "198.18.9.9",
];
const V6_SOURCES: &[&str] = &[
    "2001:db8:bad::1",
    "2001:db8:bad::2",
    "2001:db8:bad1::1",
    "2001:db8:bad1:ffff::9",
    "2001:db8:77::1",
    "2001:db8:e::1",
    "2001:db8:a11::1",
    "2001:db8:a11::66",
    "2001:db8:bad1:1::7",
    "2001:db8:bad1:1::8",
    "2001:db8:c::5",
    "2001:db8:c::6",
    "2001:db8:1::1",
];

#[derive(Clone, Debug)]
struct Rule {
    net: IpNet,
    action: Action,
    expiry: Expiry,
}

/// What the lists say about a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListVerdict {
    Allow,
    Block,
    /// Only an expired block covers it: the packet goes on to the rate limits.
    Expired,
    None,
}

/// The reference policy: any covering allow wins; otherwise any live covering block blocks;
/// otherwise an expired covering block is reported as such.
fn list_verdict(rules: &[Rule], src: IpAddr) -> ListVerdict {
    let covering = || rules.iter().filter(|r| r.net.contains(&src));
    if covering().any(|r| r.action == Action::Allow) {
        ListVerdict::Allow
    } else if covering().any(|r| r.action == Action::Block && r.expiry != Expiry::Past) {
        ListVerdict::Block
    } else if covering().any(|r| r.action == Action::Block) {
        ListVerdict::Expired
    } else {
        ListVerdict::None
    }
}

// ---- the reference parser ------------------------------------------------------------------

const REF_MAX_VLAN_TAGS: usize = 2;
const REF_MAX_EXT_HEADERS: usize = 6;
const REF_IPV4_OFFSET_MASK: u16 = 0x1FFF;
const REF_IPV4_MF: u16 = 0x2000;
const REF_IPV6_FRAG_OFFSET_MASK: u16 = 0xFFF8;
/// Offsets inside the headers, per the RFCs.
const V4_TOTAL_LEN_AT: usize = 2;
const V4_FRAG_AT: usize = 6;
const V4_PROTO_AT: usize = 9;
const V4_SRC_AT: usize = 12;
const V6_NEXT_AT: usize = 6;
const V6_SRC_AT: usize = 8;
const TCP_DOFF_AT: usize = 12;
const ICMP_FIXED_LEN: usize = 4;

/// How the program is specified to read a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RefParsed {
    NotIp,
    Malformed,
    Ip { src: IpAddr, fragment: bool },
}

/// Bounds-checked reads: `None` past the end of the frame.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn has(&self, n: usize) -> bool {
        self.at
            .checked_add(n)
            .is_some_and(|end| end <= self.b.len())
    }

    fn u8_at(&self, off: usize) -> u8 {
        self.b[self.at + off]
    }

    fn u16_at(&self, off: usize) -> u16 {
        u16::from_be_bytes([self.b[self.at + off], self.b[self.at + off + 1]])
    }

    /// Moves past `n` bytes, or `None` if the frame ends first.
    fn skip(&mut self, n: usize) -> Option<()> {
        self.has(n).then(|| self.at += n)
    }
}

fn ref_parse(frame: &[u8]) -> RefParsed {
    ref_parse_inner(frame).unwrap_or(RefParsed::Malformed)
}

/// `None` means "ran out of frame": malformed.
fn ref_parse_inner(frame: &[u8]) -> Option<RefParsed> {
    let mut r = Reader { b: frame, at: 0 };
    r.has(ETH_HEADER_LEN).then_some(())?;
    let mut ethertype = r.u16_at(2 * MAC_LEN);
    r.skip(ETH_HEADER_LEN)?;
    let is_tag = |t: u16| t == ETHERTYPE_8021Q || t == ETHERTYPE_8021AD;
    for _ in 0..REF_MAX_VLAN_TAGS {
        if !is_tag(ethertype) {
            break;
        }
        r.has(VLAN_TAG_LEN).then_some(())?;
        ethertype = r.u16_at(2);
        r.skip(VLAN_TAG_LEN)?;
    }
    match ethertype {
        ETHERTYPE_IPV4 => ref_ipv4(&mut r),
        ETHERTYPE_IPV6 => ref_ipv6(&mut r),
        t if is_tag(t) => Some(RefParsed::Malformed),
        _ => Some(RefParsed::NotIp),
    }
}

fn ref_ipv4(r: &mut Reader<'_>) -> Option<RefParsed> {
    r.has(IPV4_HEADER_LEN).then_some(())?;
    let first = r.u8_at(0);
    let (version, ihl) = (first >> 4, first & 0x0F);
    if version != IPV4_VERSION || ihl < IPV4_MIN_IHL {
        return Some(RefParsed::Malformed);
    }
    let header_len = usize::from(ihl) * IPV4_WORD;
    if usize::from(r.u16_at(V4_TOTAL_LEN_AT)) < header_len {
        return Some(RefParsed::Malformed);
    }
    let s = r.at + V4_SRC_AT;
    let src = Ipv4Addr::new(r.b[s], r.b[s + 1], r.b[s + 2], r.b[s + 3]);
    let proto = r.u8_at(V4_PROTO_AT);
    let frag = r.u16_at(V4_FRAG_AT);
    let offset = frag & REF_IPV4_OFFSET_MASK;
    r.skip(header_len)?;
    if offset == 0 {
        ref_transport(r, proto)?;
    }
    Some(RefParsed::Ip {
        src: IpAddr::V4(src),
        fragment: offset != 0 || frag & REF_IPV4_MF != 0,
    })
}

fn ref_ipv6(r: &mut Reader<'_>) -> Option<RefParsed> {
    r.has(IPV6_HEADER_LEN).then_some(())?;
    if r.u8_at(0) >> 4 != IPV6_VERSION {
        return Some(RefParsed::Malformed);
    }
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&r.b[r.at + V6_SRC_AT..r.at + V6_SRC_AT + 16]);
    let src = IpAddr::V6(Ipv6Addr::from(octets));
    let mut next = r.u8_at(V6_NEXT_AT);
    r.skip(IPV6_HEADER_LEN)?;
    let is_ext = |n: u8| {
        matches!(
            n,
            IPV6_NEXT_HOP_BY_HOP
                | IPV6_NEXT_ROUTING
                | IPV6_NEXT_DEST_OPTS
                | IPV6_NEXT_AUTH
                | IPV6_NEXT_FRAGMENT
        )
    };
    let (mut fragment, mut later) = (false, false);
    let mut resolved = false;
    for _ in 0..REF_MAX_EXT_HEADERS {
        if !is_ext(next) {
            resolved = true;
            break;
        }
        r.has(IPV6_EXT_MIN_LEN).then_some(())?;
        let (this, len) = (next, usize::from(r.u8_at(1)));
        next = r.u8_at(0);
        let off_flags = r.u16_at(2);
        r.skip(IPV6_EXT_MIN_LEN)?;
        match this {
            IPV6_NEXT_FRAGMENT => {
                fragment = true;
                if off_flags & REF_IPV6_FRAG_OFFSET_MASK != 0 {
                    later = true;
                    resolved = true;
                    break;
                }
            }
            IPV6_NEXT_AUTH => r.skip(len * IPV6_AUTH_UNIT)?,
            _ => r.skip(len * IPV6_EXT_UNIT)?,
        }
    }
    if !resolved && is_ext(next) {
        return Some(RefParsed::Malformed);
    }
    if !later && next != IPV6_NEXT_NONE {
        ref_transport(r, next)?;
    }
    Some(RefParsed::Ip { src, fragment })
}

/// Checks the transport header a first fragment (or unfragmented packet) must carry.
fn ref_transport(r: &mut Reader<'_>, proto: u8) -> Option<()> {
    match proto {
        IPPROTO_TCP => {
            r.has(TCP_HEADER_LEN).then_some(())?;
            (r.u8_at(TCP_DOFF_AT) >> 4 >= TCP_MIN_DOFF).then_some(())
        }
        IPPROTO_UDP => r.has(UDP_HEADER_LEN).then_some(()),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => r.has(ICMP_FIXED_LEN).then_some(()),
        _ => Some(()),
    }
}

// ---- what a frame must do --------------------------------------------------------------------

/// The class a frame falls in, as the reference sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    NotIp,
    Malformed,
    Allowed,
    Blocked,
    /// Not on any list (or only on an expired block): passed, rate limited or auto-blocked.
    Other {
        expired: bool,
    },
}

fn classify(rules: &[Rule], parsed: RefParsed) -> Class {
    match parsed {
        RefParsed::NotIp => Class::NotIp,
        RefParsed::Malformed => Class::Malformed,
        RefParsed::Ip { src, .. } => match list_verdict(rules, src) {
            ListVerdict::Allow => Class::Allowed,
            ListVerdict::Block => Class::Blocked,
            ListVerdict::Expired => Class::Other { expired: true },
            ListVerdict::None => Class::Other { expired: false },
        },
    }
}

/// Totals the reference expects for a run of frames, and what the program returned.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    frames: u64,
    bytes: u64,
    not_ip: u64,
    malformed: u64,
    allowed: u64,
    blocked: u64,
    other: u64,
    other_passed: u64,
    fragments: u64,
    expired: u64,
}

/// Where a frame came from, for failure reports.
#[derive(Clone, Debug)]
struct Origin {
    what: String,
    /// The source the builder wrote, when the frame was not mutated.
    built_src: Option<IpAddr>,
    /// The builder described a frame every parser must accept.
    well_formed: bool,
}

struct Fuzzer {
    h: Harness,
    rules: Vec<Rule>,
    seed: u64,
    failures: Vec<String>,
    failure_count: u64,
    tally: Tally,
    chunk_start: Snapshot,
    frames_run: u64,
    /// Random frames asked for (after the truncation templates).
    random_frames: u64,
    exact_checks: u64,
    classes: Tally,
}

fn hex(frame: &[u8]) -> String {
    frame.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Fuzzer {
    fn new(seed: u64) -> Fuzzer {
        let mut cfg = base_config(&FUZZ_CAPACITY);
        cfg.v4_rate_prefix = FUZZ_V4_RATE_PREFIX;
        cfg.v6_rate_prefix = FUZZ_V6_RATE_PREFIX;
        cfg.pkt = RateParams::new(PKT_RATE, PKT_RATE);
        cfg.syn = RateParams::new(SYN_RATE, SYN_RATE);
        cfg.autoblock_strikes = STRIKES;
        let mut h = Harness::with_capacity(&FUZZ_CAPACITY, &cfg, &[]);
        let now = api_shield::kernel::clock::now_unix_ms();
        let rules: Vec<Rule> = ENTRIES
            .iter()
            .map(|&(net, action, _, expiry)| Rule {
                net: net.parse().unwrap_or_else(|e| panic!("{net}: {e}")),
                action,
                expiry,
            })
            .collect();
        let decisions: Vec<Decision> = ENTRIES
            .iter()
            .zip(&rules)
            .map(|(&(_, _, origin, expiry), rule)| Decision {
                net: rule.net,
                action: rule.action,
                origin: origin.to_string(),
                reason: None,
                created_at_ms: now,
                expires_at_ms: match expiry {
                    Expiry::Never => None,
                    Expiry::Later => Some(now + HOUR_MS),
                    Expiry::Past => Some(now + PAST_MS),
                },
            })
            .collect();
        h.apply(&decisions);
        std::thread::sleep(PAST_WAIT);
        let chunk_start = h.snapshot();
        Fuzzer {
            h,
            rules,
            seed,
            failures: Vec::new(),
            failure_count: 0,
            tally: Tally::default(),
            chunk_start,
            frames_run: 0,
            random_frames: 0,
            exact_checks: 0,
            classes: Tally::default(),
        }
    }

    fn fail(&mut self, index: u64, origin: &Origin, frame: &[u8], message: String) {
        self.failure_count += 1;
        if self.failures.len() < MAX_REPORTED {
            self.failures.push(format!(
                "frame #{index} (seed {:#x}; {}): {message}\n    {} bytes: {}",
                self.seed,
                origin.what,
                frame.len(),
                hex(frame)
            ));
        }
    }

    /// Runs one frame and checks it; `exact` reads the counters around it.
    fn frame(&mut self, frame: &[u8], origin: &Origin) {
        let index = self.frames_run;
        self.frames_run += 1;
        let parsed = ref_parse(frame);
        if let (Some(built), RefParsed::Ip { src, .. }) = (origin.built_src, parsed)
            && built != src
        {
            self.fail(
                index,
                origin,
                frame,
                format!("the reference parser read source {src}, the builder wrote {built}"),
            );
        }
        if origin.well_formed && !matches!(parsed, RefParsed::Ip { .. }) {
            self.fail(
                index,
                origin,
                frame,
                format!("a well-formed frame reads as {parsed:?}"),
            );
        }
        let class = classify(&self.rules, parsed);
        let exact = index.is_multiple_of(EXACT_EVERY);
        let before = exact.then(|| self.h.shield.counters().expect("read counters"));
        let run = self.h.program().test_run(TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        });
        let ret = match run {
            Ok(r) => r.return_value,
            Err(e) => {
                // The kernel refused the run: nothing was counted, so the totals skip it.
                self.fail(
                    index,
                    origin,
                    frame,
                    format!("BPF_PROG_TEST_RUN failed: {e}"),
                );
                return;
            }
        };
        let t = &mut self.tally;
        t.frames += 1;
        t.bytes += frame.len() as u64;
        let want_ret = match class {
            Class::NotIp => {
                t.not_ip += 1;
                Some(XDP_PASS)
            }
            Class::Malformed => {
                t.malformed += 1;
                Some(XDP_DROP)
            }
            Class::Allowed => {
                t.allowed += 1;
                Some(XDP_PASS)
            }
            Class::Blocked => {
                t.blocked += 1;
                Some(XDP_DROP)
            }
            Class::Other { expired } => {
                t.other += 1;
                t.expired += u64::from(expired);
                t.other_passed += u64::from(ret == XDP_PASS);
                None
            }
        };
        if let RefParsed::Ip { fragment: true, .. } = parsed {
            t.fragments += 1;
        }
        if ret != XDP_PASS && ret != XDP_DROP {
            self.fail(index, origin, frame, format!("returned action {ret}"));
        } else if let Some(want) = want_ret
            && ret != want
        {
            self.fail(
                index,
                origin,
                frame,
                format!(
                    "{class:?} ({parsed:?}) returned {} instead of {}",
                    action_name(ret),
                    action_name(want)
                ),
            );
        }
        if let Some(before) = before {
            self.exact_checks += 1;
            let after = self.h.shield.counters().expect("read counters");
            if let Err(message) = check_exact(&before, &after, frame, parsed, class, ret) {
                self.fail(index, origin, frame, message);
            }
        }
        if self.tally.frames >= CHUNK {
            self.check_totals();
        }
    }

    /// Compares the counters moved since the chunk started with the reference's totals.
    fn check_totals(&mut self) {
        let now = self.h.snapshot();
        let d = now.delta_since(&self.chunk_start);
        let t = std::mem::take(&mut self.tally);
        self.chunk_start = now;
        for (field, add) in [
            (&mut self.classes.frames, t.frames),
            (&mut self.classes.not_ip, t.not_ip),
            (&mut self.classes.malformed, t.malformed),
            (&mut self.classes.allowed, t.allowed),
            (&mut self.classes.blocked, t.blocked),
            (&mut self.classes.other, t.other),
            (&mut self.classes.other_passed, t.other_passed),
            (&mut self.classes.fragments, t.fragments),
            (&mut self.classes.expired, t.expired),
        ] {
            *field += add;
        }
        let verdict_packets: u64 = (0..VERDICTS).map(|s| d.packets(s)).sum();
        let verdict_bytes: u64 = (0..VERDICTS).map(|s| d.bytes(s)).sum();
        let origin_packets: u64 = d.origins.iter().map(|c| c.packets).sum();
        let auto = d.packets(BLOCK_AUTO);
        let checks = [
            ("frames in one verdict each", verdict_packets, t.frames),
            ("bytes of the verdicts", verdict_bytes, t.bytes),
            ("non_ip", d.packets(NON_IP), t.not_ip),
            ("malformed", d.packets(MALFORMED), t.malformed),
            ("allowlisted", d.packets(ALLOWLISTED), t.allowed),
            (
                "blocklisted by a list (blocklisted - block_auto)",
                d.packets(BLOCKLISTED).saturating_sub(auto),
                t.blocked,
            ),
            (
                "pass + rate_limited + block_auto",
                d.packets(PASS) + d.packets(RATE_LIMITED) + auto,
                t.other,
            ),
            ("pass", d.packets(PASS), t.other_passed),
            ("monitored", d.packets(MONITORED), 0),
            ("block_list (enforcing)", d.packets(BLOCK_LIST), 0),
            ("fragments", d.packets(FRAGMENTS), t.fragments),
            ("block_expired", d.packets(BLOCK_EXPIRED), t.expired),
            (
                "origin drops = blocklisted",
                origin_packets,
                d.packets(BLOCKLISTED),
            ),
            (
                "kernel origin drops = block_auto",
                d.origin_packets(ORIGIN_KERNEL),
                auto,
            ),
        ];
        let wrong: Vec<String> = checks
            .iter()
            .filter(|(_, got, want)| got != want)
            .map(|(what, got, want)| format!("{what}: counted {got}, expected {want}"))
            .collect();
        if !wrong.is_empty() {
            self.failure_count += 1;
            if self.failures.len() < MAX_REPORTED {
                self.failures.push(format!(
                    "counter totals of frames {}..{} (seed {:#x}) differ: {}\n    moved: {:?}",
                    self.frames_run - t.frames,
                    self.frames_run,
                    self.seed,
                    wrong.join("; "),
                    Names(&d.moved()),
                ));
            }
        }
    }

    fn finish(mut self, started: Instant) {
        self.check_totals();
        let elapsed = started.elapsed();
        let c = self.classes;
        eprintln!(
            "packet fuzz: {} frames in {:.2?} ({:.0} frames/s), seed {:#x}; {} checked exactly; \
             not IP {}, malformed {}, allowed {}, blocked {}, other {} ({} passed, {} on an \
             expired block), fragments {}",
            self.frames_run,
            elapsed,
            self.frames_run as f64 / elapsed.as_secs_f64().max(1e-9),
            self.seed,
            self.exact_checks,
            c.not_ip,
            c.malformed,
            c.allowed,
            c.blocked,
            c.other,
            c.other_passed,
            c.expired,
            c.fragments,
        );
        // Every class must have been exercised, or the run proves little.
        for (what, n) in [
            ("non-IP", c.not_ip),
            ("malformed", c.malformed),
            ("allowlisted", c.allowed),
            ("blocklisted", c.blocked),
            ("unlisted", c.other),
            ("fragment", c.fragments),
        ] {
            assert!(
                n > 0,
                "no {what} frame was generated: the generator is broken"
            );
        }
        assert!(
            self.failure_count == 0,
            "{} of {} frames or chunks broke an invariant (seed {:#x}; replay with \
             PACKET_FUZZ_SEED={:#x} PACKET_FUZZ_FRAMES={}):\n{}",
            self.failure_count,
            self.frames_run,
            self.seed,
            self.seed,
            self.random_frames,
            self.failures.join("\n")
        );
    }
}

/// One frame's counters, exactly: one verdict slot moved by one packet and the frame's bytes,
/// and the detail slots the reference predicts.
fn check_exact(
    before: &[Counter],
    after: &[Counter],
    frame: &[u8],
    parsed: RefParsed,
    class: Class,
    ret: u32,
) -> Result<(), String> {
    let moved = |s: u32| after[s as usize].packets - before[s as usize].packets;
    let moved_bytes = |s: u32| after[s as usize].bytes - before[s as usize].bytes;
    let verdicts: Vec<(u32, u64)> = (0..VERDICTS)
        .filter(|&s| moved(s) != 0)
        .map(|s| (s, moved(s)))
        .collect();
    let [(slot, 1)] = verdicts[..] else {
        return Err(format!(
            "verdict counters moved {:?}, not exactly one by one packet",
            Names(&verdicts)
        ));
    };
    if moved_bytes(slot) != frame.len() as u64 {
        return Err(format!(
            "{} counted {} bytes for a {}-byte frame",
            slot_name(slot),
            moved_bytes(slot),
            frame.len()
        ));
    }
    let auto = moved(BLOCK_AUTO);
    let want_slot: &[u32] = match class {
        Class::NotIp => &[NON_IP],
        Class::Malformed => &[MALFORMED],
        Class::Allowed => &[ALLOWLISTED],
        Class::Blocked => &[BLOCKLISTED],
        Class::Other { .. } if auto == 1 => &[BLOCKLISTED],
        Class::Other { .. } => &[PASS, RATE_LIMITED],
    };
    if !want_slot.contains(&slot) {
        return Err(format!(
            "{class:?} counted as {} (block_auto moved {auto})",
            slot_name(slot)
        ));
    }
    let slot_ret = if matches!(slot, PASS | NON_IP | ALLOWLISTED) {
        XDP_PASS
    } else {
        XDP_DROP
    };
    if slot_ret != ret {
        return Err(format!(
            "counted as {} but returned {}",
            slot_name(slot),
            action_name(ret)
        ));
    }
    let fragment = matches!(parsed, RefParsed::Ip { fragment: true, .. });
    let details = [
        ("fragments", moved(FRAGMENTS), u64::from(fragment)),
        ("block_list", moved(BLOCK_LIST), 0),
        (
            "block_expired",
            moved(BLOCK_EXPIRED),
            u64::from(class == Class::Other { expired: true }),
        ),
        (
            "block_auto",
            auto,
            u64::from(matches!(class, Class::Other { .. }) && slot == BLOCKLISTED),
        ),
    ];
    for (what, got, want) in details {
        if got != want {
            return Err(format!("{what} moved by {got}, expected {want}"));
        }
    }
    if moved(SYN_LIMITED) > moved(RATE_LIMITED) {
        return Err("syn_limited moved without rate_limited".into());
    }
    Ok(())
}

// ---- frame generation ----------------------------------------------------------------------

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn source_v4(rng: &mut StdRng) -> Ipv4Addr {
    match rng.random_range(0..10) {
        0 => Ipv4Addr::from(rng.random::<u32>()),
        1 => Ipv4Addr::new(198, 18 + rng.random_range(0..2), rng.random(), rng.random()),
        _ => pick(rng, V4_SOURCES).parse().expect("an IPv4 source"),
    }
}

fn source_v6(rng: &mut StdRng) -> Ipv6Addr {
    match rng.random_range(0..10) {
        0 => Ipv6Addr::from(rng.random::<u128>()),
        1 => {
            let base = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0));
            Ipv6Addr::from(
                base | u128::from(rng.random::<u64>()) << 16 | rng.random::<u16>() as u128,
            )
        }
        _ => pick(rng, V6_SOURCES).parse().expect("an IPv6 source"),
    }
}

fn random_tags(rng: &mut StdRng) -> Vec<Tag> {
    let n = match rng.random_range(0..100) {
        0..60 => 0,
        60..80 => 1,
        80..95 => 2,
        _ => 3,
    };
    (0..n)
        .map(|_| {
            let vid = rng.random_range(0..4096);
            if rng.random_bool(0.5) {
                Tag::Dot1Q(vid)
            } else {
                Tag::Dot1Ad(vid)
            }
        })
        .collect()
}

fn random_ext(rng: &mut StdRng) -> Ext {
    match rng.random_range(0..5) {
        0 => Ext::HopByHop {
            units: rng.random_range(0..4),
        },
        1 => Ext::Routing {
            units: rng.random_range(0..4),
        },
        2 => Ext::DestOpts {
            units: rng.random_range(0..4),
        },
        3 => Ext::Fragment {
            offset: if rng.random_bool(0.5) {
                0
            } else {
                rng.random_range(1..8192)
            },
            more: rng.random_bool(0.5),
        },
        _ => Ext::Auth {
            icv_words: rng.random_range(0..7),
        },
    }
}

fn random_transport(rng: &mut StdRng) -> Transport {
    const FLAGS: [u8; 5] = [
        TCP_SYN,
        TCP_SYN | TCP_ACK,
        TCP_ACK,
        TCP_ACK | TCP_PSH,
        TCP_RST,
    ];
    let port = if rng.random_bool(0.5) {
        *pick(rng, &[53, 80, 443, 8080])
    } else {
        rng.random()
    };
    match rng.random_range(0..10) {
        0..3 => Transport::Tcp {
            dst_port: port,
            flags: if rng.random_bool(0.8) {
                *pick(rng, &FLAGS)
            } else {
                rng.random()
            },
        },
        3..6 => Transport::Udp { dst_port: port },
        6 => Transport::Icmp,
        7..9 => Transport::Raw {
            proto: if rng.random_bool(0.5) {
                *pick(rng, &[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, 47, 50])
            } else {
                rng.random()
            },
            len: rng.random_range(0..32),
        },
        _ => Transport::None,
    }
}

/// A random frame described with the builder; `well_formed` when every parser must accept it.
fn random_frame(rng: &mut StdRng) -> (Frame, Option<IpAddr>, bool) {
    let tags = random_tags(rng);
    let mut well_formed = tags.len() <= REF_MAX_VLAN_TAGS;
    let (mut frame, src) = match rng.random_range(0..100) {
        0..45 => {
            let src = source_v4(rng);
            let mut f = Frame::ipv4(src);
            if rng.random_bool(0.2) {
                f = f.ipv4_options(rng.random_range(0..=IPV4_MAX_IHL - IPV4_MIN_IHL));
            }
            if rng.random_bool(0.15) {
                let offset = if rng.random_bool(0.4) {
                    0
                } else {
                    rng.random_range(1..=IPV4_OFFSET_MASK)
                };
                f = f.ipv4_fragment(offset, rng.random_bool(0.5));
            }
            if rng.random_bool(0.03) {
                f = f.ipv4_ihl(rng.random_range(0..16));
                well_formed = false;
            }
            if rng.random_bool(0.05) {
                f = f.ipv4_total_len(rng.random());
                well_formed = false;
            }
            if rng.random_bool(0.02) {
                f = f.ip_version(rng.random_range(0..16));
                well_formed = false;
            }
            (f, Some(IpAddr::V4(src)))
        }
        45..92 => {
            let src = source_v6(rng);
            let n = match rng.random_range(0..100) {
                0..50 => 0,
                50..85 => rng.random_range(1..4),
                _ => rng.random_range(4..9),
            };
            let exts: Vec<Ext> = (0..n).map(|_| random_ext(rng)).collect();
            well_formed &= exts.len() <= REF_MAX_EXT_HEADERS;
            (Frame::ipv6(src).exts(&exts), Some(IpAddr::V6(src)))
        }
        92..96 => (Frame::arp(source_v4(rng)), None),
        _ => {
            let ethertype = if rng.random_bool(0.5) {
                *pick(rng, &[ETHERTYPE_ARP, 0x88CC, 0x8847, 0x8906, 0x0000])
            } else {
                rng.random()
            };
            let net = Net::Other {
                ethertype,
                len: rng.random_range(0..64),
            };
            (Frame::with_net(net), None)
        }
    };
    if matches!(frame.net, Net::V4(_) | Net::V6(_)) {
        frame.transport = random_transport(rng);
        well_formed &= !matches!(frame.transport, Transport::Raw { .. });
        frame.payload = if rng.random_bool(0.05) {
            rng.random_range(0..1_400)
        } else {
            rng.random_range(0..64)
        };
    } else {
        well_formed = false;
    }
    frame.tags = tags;
    (frame, src, well_formed)
}

/// Values worth writing into an EtherType or a next-header field.
const ETHERTYPES: [u16; 6] = [
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    ETHERTYPE_8021Q,
    ETHERTYPE_8021AD,
    ETHERTYPE_ARP,
    0xFFFF,
];
const NEXT_HEADERS: [u8; 10] = [
    IPV6_NEXT_HOP_BY_HOP,
    IPV6_NEXT_ROUTING,
    IPV6_NEXT_FRAGMENT,
    IPV6_NEXT_AUTH,
    IPV6_NEXT_NONE,
    IPV6_NEXT_DEST_OPTS,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPPROTO_ICMPV6,
    IPPROTO_ICMP,
];

/// Mutates `bytes` (built from `frame`) in place; returns what was done.
fn mutate(rng: &mut StdRng, frame: &Frame, bytes: &mut Vec<u8>) -> &'static str {
    // Most mutations aim at the headers, where parsing happens.
    let header_end = (frame.l4_offset() + TCP_HEADER_LEN).min(bytes.len());
    let in_headers = |rng: &mut StdRng, len: usize| rng.random_range(0..header_end.clamp(1, len));
    match rng.random_range(0..9) {
        0 | 1 if bytes.len() > MIN_FRAME => {
            let len = rng.random_range(MIN_FRAME..bytes.len());
            bytes.truncate(len);
            "truncated"
        }
        2 | 3 => {
            for _ in 0..rng.random_range(1..=4) {
                let at = in_headers(rng, bytes.len());
                bytes[at] = rng.random();
            }
            "bytes overwritten"
        }
        4 => {
            let at = rng.random_range(2 * MAC_LEN..=bytes.len());
            let n = rng.random_range(1..=8);
            let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            bytes.splice(at..at, junk);
            "bytes inserted"
        }
        5 if bytes.len() > MIN_FRAME => {
            let at = rng.random_range(2 * MAC_LEN..bytes.len());
            let n = rng
                .random_range(1..=8)
                .min(bytes.len() - MIN_FRAME)
                .min(bytes.len() - at);
            bytes.drain(at..at + n);
            "bytes deleted"
        }
        6 => {
            let n = rng.random_range(1..=32);
            bytes.extend((0..n).map(|_| rng.random::<u8>()));
            "garbage appended"
        }
        7 => {
            // The EtherType (or a tag's inner type) becomes another interesting one.
            let slots = 1 + frame.tags.len();
            let at = 2 * MAC_LEN + rng.random_range(0..slots) * VLAN_TAG_LEN;
            let value = *pick(rng, &ETHERTYPES);
            bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
            "ethertype swapped"
        }
        _ => match &frame.net {
            Net::V6(ip) => {
                // The IPv6 next header or one extension header's next / length byte.
                let l3 = frame.l3_offset();
                let k = rng.random_range(0..=ip.exts.len());
                let at = if k == 0 {
                    l3 + V6_NEXT_AT
                } else {
                    let before: usize = ip.exts[..k - 1].iter().map(|e| e.wire_len()).sum();
                    l3 + IPV6_HEADER_LEN + before + usize::from(rng.random_bool(0.3))
                };
                if at < bytes.len() {
                    bytes[at] = if rng.random_bool(0.7) {
                        *pick(rng, &NEXT_HEADERS)
                    } else {
                        rng.random()
                    };
                }
                "ipv6 chain field changed"
            }
            _ => {
                let at = in_headers(rng, bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
                "bit flipped"
            }
        },
    }
}

/// Every truncation of frames whose parse paths are long: tags, options, chains, fragments.
fn truncation_templates() -> Vec<(String, Frame)> {
    let v4: Ipv4Addr = "198.18.0.66".parse().expect("v4");
    let v6: Ipv6Addr = "2001:db8:bad::1".parse().expect("v6");
    let allowed6: Ipv6Addr = "2001:db8:a11::1".parse().expect("v6");
    let chain = [
        Ext::HopByHop { units: 1 },
        Ext::DestOpts { units: 0 },
        Ext::Routing { units: 2 },
        Ext::Auth { icv_words: 3 },
        Ext::Fragment {
            offset: 0,
            more: true,
        },
    ];
    vec![
        (
            "blocked udp4 in QinQ".into(),
            Frame::ipv4(v4).qinq(10, 20).udp(53).payload(8),
        ),
        (
            "blocked tcp4 SYN with maximal options".into(),
            Frame::ipv4(v4).ipv4_options(10).tcp(443, TCP_SYN),
        ),
        (
            "blocked later fragment v4".into(),
            Frame::ipv4(v4).ipv4_fragment(100, true).raw(IPPROTO_TCP, 8),
        ),
        (
            "blocked tcp6 behind five extension headers in 802.1Q".into(),
            Frame::ipv6(v6).vlan(7).exts(&chain).tcp(443, TCP_SYN),
        ),
        (
            "allowed udp6 behind five extension headers".into(),
            Frame::ipv6(allowed6).exts(&chain).udp(53).payload(4),
        ),
        (
            "blocked later fragment v6 behind hop-by-hop".into(),
            Frame::ipv6(v6)
                .ext(Ext::HopByHop { units: 0 })
                .ext(Ext::Fragment {
                    offset: 9,
                    more: false,
                })
                .raw(IPPROTO_UDP, 8),
        ),
        (
            "icmpv6 at the chain bound".into(),
            Frame::ipv6(v6).ext_chain(REF_MAX_EXT_HEADERS).icmp(),
        ),
        (
            "ARP in QinQ".into(),
            Frame::arp("198.18.0.1".parse().expect("v4")).qinq(1, 2),
        ),
    ]
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={text}: {e}")))
}

fn fuzz(default_frames: u64, default_seed: u64) {
    let frames = env_u64("PACKET_FUZZ_FRAMES").unwrap_or(default_frames);
    let seed = env_u64("PACKET_FUZZ_SEED").unwrap_or(default_seed);
    let mut fz = Fuzzer::new(seed);
    fz.random_frames = frames;
    let started = Instant::now();

    for (name, template) in truncation_templates() {
        let full = template.build();
        for len in MIN_FRAME..=full.len() {
            let origin = Origin {
                what: format!("{name}, cut to {len} bytes"),
                built_src: None,
                well_formed: len == full.len() && matches!(template.net, Net::V4(_) | Net::V6(_)),
            };
            fz.frame(&full[..len], &origin);
        }
    }

    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..frames {
        let (frame, src, well_formed) = random_frame(&mut rng);
        let mut bytes = frame.build();
        let mutated = rng.random_bool(0.5);
        let what = if mutated {
            mutate(&mut rng, &frame, &mut bytes)
        } else {
            "as built"
        };
        if bytes.len() < MIN_FRAME {
            bytes.resize(MIN_FRAME, 0);
        }
        bytes.truncate(MAX_FRAME);
        let origin = Origin {
            what: format!("{what}: {frame:?}"),
            built_src: if mutated { None } else { src },
            well_formed: !mutated && well_formed && bytes.len() == frame.len(),
        };
        fz.frame(&bytes, &origin);
    }
    fz.finish(started);
}

/// The CI version: 100,000 random frames (`PACKET_FUZZ_FRAMES`), fixed seed.
#[test]
fn packet_fuzz() {
    fuzz(CI_FRAMES, CI_SEED);
}

/// At least 1,000,000 random frames with a fresh seed; `cargo xtask fuzz` runs it.
#[test]
#[ignore = "1,000,000 frames: run by `cargo xtask fuzz`"]
fn packet_fuzz_full() {
    let seed = StdRng::from_os_rng().next_u64();
    fuzz(FULL_FRAMES, seed);
}

/// The reference parser itself, on frames whose reading is known (no kernel needed).
#[test]
fn reference_parser_reads_known_frames() {
    let v4: Ipv4Addr = "198.18.0.66".parse().expect("v4");
    let v6: Ipv6Addr = "2001:db8:bad::1".parse().expect("v6");
    let ip = |src: IpAddr, fragment| RefParsed::Ip { src, fragment };
    let cases = [
        (Frame::ipv4(v4).udp(53).build(), ip(v4.into(), false)),
        (
            Frame::ipv4(v4).qinq(1, 2).tcp(80, TCP_SYN).build(),
            ip(v4.into(), false),
        ),
        (
            Frame::ipv4(v4).qinq(1, 2).vlan(3).udp(53).build(),
            RefParsed::Malformed,
        ),
        (
            Frame::ipv4(v4)
                .ipv4_fragment(5, false)
                .raw(IPPROTO_TCP, 4)
                .build(),
            ip(v4.into(), true),
        ),
        (
            Frame::ipv4(v4).ipv4_ihl(4).udp(1).build(),
            RefParsed::Malformed,
        ),
        (
            Frame::ipv4(v4).ipv4_total_len(19).udp(1).build(),
            RefParsed::Malformed,
        ),
        (Frame::arp(v4).build(), RefParsed::NotIp),
        (
            Frame::ipv6(v6).ext_chain(6).udp(53).build(),
            ip(v6.into(), false),
        ),
        (
            Frame::ipv6(v6).ext_chain(7).udp(53).build(),
            RefParsed::Malformed,
        ),
        (
            Frame::ipv6(v6)
                .ext_chain(5)
                .ext(Ext::Fragment {
                    offset: 3,
                    more: true,
                })
                .raw(IPPROTO_TCP, 2)
                .build(),
            ip(v6.into(), true),
        ),
        (
            Frame::ipv6(v6)
                .ext(Ext::Auth { icv_words: 3 })
                .tcp(1, TCP_ACK)
                .build(),
            ip(v6.into(), false),
        ),
        (
            Frame::ipv6(v6)
                .tcp(1, TCP_ACK)
                .build_truncated(ETH_HEADER_LEN + 40 + 19),
            RefParsed::Malformed,
        ),
        (Frame::ipv6(v6).build(), ip(v6.into(), false)),
    ];
    for (i, (frame, want)) in cases.iter().enumerate() {
        assert_eq!(ref_parse(frame), *want, "case {i}: {}", hex(frame));
    }
    let rules: Vec<Rule> = ENTRIES
        .iter()
        .map(|&(net, action, _, expiry)| Rule {
            net: net.parse().expect("net"),
            action,
            expiry,
        })
        .collect();
    for (src, want) in [
        ("198.18.3.77", ListVerdict::Allow),
        ("198.18.4.9", ListVerdict::Allow),
        ("198.18.4.8", ListVerdict::Block),
        ("198.18.5.5", ListVerdict::Expired),
        ("198.18.6.16", ListVerdict::None),
        ("2001:db8:a11::66", ListVerdict::Allow),
        ("2001:db8:bad1:1::7", ListVerdict::Allow),
        ("2001:db8:bad1:1::8", ListVerdict::Block),
        ("2001:db8:e::1", ListVerdict::Expired),
    ] {
        let addr: IpAddr = src.parse().expect("address");
        assert_eq!(list_verdict(&rules, addr), want, "{src}");
    }
}
