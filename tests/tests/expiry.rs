//! Expiring entries end to end: however many distinct expiries the lists hold, the rule table
//! does not run out, every entry is enforced, entries leave the kernel on time, and `block`,
//! `unblock`, `flush` and a restart keep working. The real daemon in a namespace lab, lists
//! imported from ipset save files, outcomes read from the receiving socket and the CLI.

use serde_json::Value;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::thread;
use std::time::{Duration, Instant};
use tests::daemon::KERNEL_QUIET;
use tests::lab_env::Env;
use tests::metrics::scrape;
use tests::netns::{BAD_V4, BAD_V6, Host};

/// Datagrams per probe.
const N: u64 = 50;
/// How often the daemon sweeps expired entries (`daemon::SWEEP_INTERVAL`).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// What an expired entry may take beyond its deadline and one sweep to leave the kernel.
const EXPIRY_SLACK: Duration = Duration::from_secs(1);
/// Longest the CLI may take for an import of a million entries.
const BIG_IMPORT_LIMIT: Duration = Duration::from_secs(60);
/// The bad client's other addresses (all inside its 198.18.1.32/28).
const LONG_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 36);
const LATER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 37);

/// The shared lab, the bad client with its other addresses.
fn start(config: &str) -> Env {
    let env = Env::new(config).with_probes(N);
    for v4 in [LONG_V4, LATER_V4] {
        env.add_bad_address(v4);
    }
    env
}

/// What only these tests ask of the shared lab.
trait ExpiryEnv {
    /// Imports `text` as `list` and returns the CLI's JSON and how long it took.
    fn import(&self, name: &str, text: &str, list: &str) -> (Value, Duration);
    fn rules(&self) -> Value;
    /// Waits until `host` gets through, at most until `deadline`; returns when it did.
    fn passes_by(&self, host: &Host, v6: bool, deadline: Instant) -> Option<Instant>;
}

impl ExpiryEnv for Env {
    fn import(&self, name: &str, text: &str, list: &str) -> (Value, Duration) {
        let path = self.file(name, text);
        let started = Instant::now();
        let body = self.daemon.json(&[
            "import",
            path.to_str().expect("utf-8 path"),
            "--list",
            list,
            "--json",
        ]);
        (body, started.elapsed())
    }

    fn rules(&self) -> Value {
        self.daemon.status()["maps"]["rules"].clone()
    }

    fn passes_by(&self, host: &Host, v6: bool, deadline: Instant) -> Option<Instant> {
        loop {
            if self.probe(host, v6) == N {
                return Some(Instant::now());
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// An ipset save file of `count` IPv6 hosts from 2001:db8:ffff::/64 (never a lab host), each
/// with its own timeout (`first_timeout`, `first_timeout + 1`, ...).
fn ipset_file(count: u32, first_timeout: u64) -> String {
    let mut text = String::with_capacity(count as usize * 48);
    text.push_str("create big hash:net family inet6 timeout 0 maxelem 2000000\n");
    let base = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0));
    for i in 0..count {
        let addr = Ipv6Addr::from(base + u128::from(i));
        writeln!(
            text,
            "add big {addr} timeout {}",
            first_timeout + u64::from(i)
        )
        .unwrap();
    }
    text
}

/// IPv4 hosts from 198.19.0.0/16 (never a lab host), each with its own timeout.
fn ipset_file_v4(count: u32, first_timeout: u64) -> String {
    let mut text = String::from("create v4 hash:net family inet timeout 0\n");
    let base = u32::from(Ipv4Addr::new(198, 19, 0, 0));
    for i in 0..count {
        let addr = Ipv4Addr::from(base + i);
        writeln!(
            text,
            "add v4 {addr} timeout {}",
            first_timeout + u64::from(i)
        )
        .unwrap();
    }
    text
}

/// Clock ticks a second in /proc (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// User plus system CPU time of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat format") + 2..]
        .split(' ')
        .collect();
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// The issue this guards against: every expiring entry took a rule of its own (and a new one
/// at each rebuild), so 65,000 distinct expiries filled the 65,536-slot table and every
/// `block`, `unblock` and push that followed was refused.
#[test]
fn sixty_five_thousand_distinct_expiries_leave_block_and_unblock_working() {
    let env = start(KERNEL_QUIET);
    let (body, took) = env.import("v4.ipset", &ipset_file_v4(65_000, 3_600), "feed");
    eprintln!("imported 65,000 distinct expiries in {took:?}: {body}");

    env.daemon
        .ok(&["block", &BAD_V4.to_string(), "--ttl", "600s"]);
    assert_eq!(
        env.probe(&env.lab.bad, false),
        0,
        "the new block is enforced"
    );
    env.daemon.ok(&["unblock", "198.19.0.7", "--list", "feed"]);
    env.daemon.ok(&["unblock", &BAD_V4.to_string()]);
    assert_eq!(env.probe(&env.lab.bad, false), N, "the unblock is enforced");

    let rules = env.rules();
    assert!(
        count(&rules["used"]) < 10_000,
        "distinct expiries must not take a rule each: {rules}"
    );
    assert_eq!(rules["expiry_level"], 0, "{rules}");
    assert_eq!(rules["unbounded_expiries"], 0, "{rules}");
}

#[test]
fn a_million_distinct_expiries_are_enforced_and_expire_on_time() {
    const ENTRIES: u32 = 1_000_000;
    const SHORT_TTL_SECS: u64 = 8;
    // The million start expiring, one a second, after the samples are done with.
    const FIRST_TIMEOUT_SECS: u64 = 26;
    // How long the million are watched expiring.
    const WINDOW: Duration = Duration::from_secs(6);
    let env = start(&format!(
        "{KERNEL_QUIET}[capacity]\nv6_entries = 1100000\n[metrics]\nlisten = \"127.0.0.1:9390\"\n"
    ));
    // The million, and a long-lived IPv4 sample in a set of its own (a set holds one family).
    let mut text = ipset_file(ENTRIES, FIRST_TIMEOUT_SECS);
    text.push_str("create small hash:net family inet timeout 0\n");
    writeln!(text, "add small {LONG_V4} timeout 86399").unwrap();
    let sent_at = Instant::now();
    let (body, took) = env.import("big.ipset", &text, "big");
    eprintln!("imported {} entries in {took:?}", ENTRIES + 1);
    assert!(took < BIG_IMPORT_LIMIT, "{took:?}");
    assert_eq!(count(&body["entries"]), u64::from(ENTRIES) + 1, "{body}");
    let rules = env.rules();
    eprintln!("rule table: {rules}");
    assert!(count(&rules["used"]) < 10_000, "{rules}");
    assert_eq!(rules["unbounded_expiries"], 0, "{rules}");

    // Samples that expire during the test, imported on top of the million (so their
    // deadlines do not depend on how long the big import took).
    let short = format!(
        "create short hash:net family inet6 timeout 0\nadd short {BAD_V6} timeout {SHORT_TTL_SECS}\n\
         create short4 hash:net family inet timeout 0\nadd short4 {BAD_V4} timeout {}\n",
        SHORT_TTL_SECS + 1
    );
    let short_sent_at = Instant::now();
    let (_, short_took) = env.import("short.ipset", &short, "short");
    eprintln!("imported 2 entries on top of the million in {short_took:?}");

    // Enforced, in both families.
    let bad = env.lab.bad.clone();
    assert_eq!(env.probe(&bad, true), 0, "the IPv6 sample is blocked");
    assert_eq!(env.probe(&bad, false), 0, "the IPv4 sample is blocked");
    assert_eq!(env.probe(&env.bad_as(LONG_V4), false), 0);
    assert_eq!(env.probe(&env.lab.good, true), N, "others pass");

    // The short ones leave the kernel within a sweep (and a second) of their deadline, which
    // the daemon set between sending the import and its answer.
    for (v6, ttl) in [(true, SHORT_TTL_SECS), (false, SHORT_TTL_SECS + 1)] {
        let due = short_sent_at + short_took + Duration::from_secs(ttl);
        let earliest = short_sent_at + Duration::from_secs(ttl);
        let passed = env
            .passes_by(&bad, v6, due + SWEEP_INTERVAL + EXPIRY_SLACK)
            .unwrap_or_else(|| panic!("the sample (v6 {v6}) still blocked after its expiry"));
        assert!(
            passed >= earliest,
            "the sample (v6 {v6}) passed {:?} before its deadline",
            earliest - passed
        );
        eprintln!(
            "sample (v6 {v6}, ttl {ttl} s) passed {:?} after its import was sent",
            passed - short_sent_at
        );
    }
    assert_eq!(env.probe(&env.bad_as(LONG_V4), false), 0, "long ones stay");

    // Changes still work on top of the million.
    let later = LATER_V4.to_string();
    let sent = Instant::now();
    env.daemon.ok(&["block", &later, "--ttl", "2s"]);
    let blocked_at = Instant::now();
    eprintln!("a block on top of the million took {:?}", blocked_at - sent);
    assert_eq!(env.probe(&env.bad_as(LATER_V4), false), 0);
    env.daemon
        .ok(&["unblock", &LONG_V4.to_string(), "--list", "big"]);
    assert_eq!(env.probe(&env.bad_as(LONG_V4), false), N, "unblocked");
    let gone = env.passes_by(
        &env.bad_as(LATER_V4),
        false,
        blocked_at + Duration::from_secs(2) + SWEEP_INTERVAL + EXPIRY_SLACK,
    );
    assert!(gone.is_some(), "a later block did not expire on time");

    // The million expire one a second: each leaves the daemon's state on time, and the
    // kernel by itself (its rule's expiry is close enough by now), so the sweeps need no
    // rebuild of the million; the daemon's CPU time over the window shows it.
    let first_due = sent_at + took + Duration::from_secs(FIRST_TIMEOUT_SECS);
    thread::sleep(first_due.saturating_duration_since(Instant::now()) + SWEEP_INTERVAL);
    let pid = env.daemon.pid().expect("running");
    let (cpu_before, watch_start) = (cpu_ticks(pid), Instant::now());
    thread::sleep(WINDOW);
    let cpu = cpu_ticks(pid) - cpu_before;
    let watched = watch_start.elapsed();
    let now = Instant::now();
    let status = env.daemon.status();
    let left = u64::from(ENTRIES) - count(&status["decisions"]);
    // Entry i is due between `first` + i seconds from the import's send and its answer.
    let secs_since = |t: Instant| (now - t).as_secs_f64() - FIRST_TIMEOUT_SECS as f64;
    let (fewest, most) = (secs_since(sent_at + took) - 2.0, secs_since(sent_at) + 1.0);
    assert!(
        (fewest..=most).contains(&(left as f64)),
        "{left} of the million expired, expected {fewest:.1} to {most:.1}"
    );
    let cpu_secs = cpu as f64 / USER_HZ;
    eprintln!("{left} expired, one a second; daemon CPU over {watched:?}: {cpu_secs:.2} s");
    // A rebuild of the million at every sweep would take most of a core (0.5 to 4 s each).
    assert!(
        cpu_secs < watched.as_secs_f64() / 2.0,
        "the daemon used {cpu_secs:.2} s of CPU in {watched:?} for one expiry a second"
    );
    let rss = std::fs::read_to_string(format!(
        "/proc/{}/status",
        env.daemon.pid().expect("running")
    ))
    .unwrap_or_default()
    .lines()
    .find(|l| l.starts_with("VmRSS"))
    .map(str::to_owned)
    .unwrap_or_default();
    eprintln!(
        "daemon after a million distinct expiries: {rss}; rules {}",
        env.rules()
    );
    // What each sweep that removed something cost (the daemon logs it).
    for line in env
        .daemon
        .log()
        .lines()
        .filter(|l| l.contains("decisions expired"))
    {
        eprintln!("{line}");
    }
    let metrics = scrape(&env.daemon.netns, "127.0.0.1:9390");
    assert!(
        metrics
            .text
            .lines()
            .any(|l| l == "api_shield_rules_unbounded_expiries 0"),
        "{}",
        metrics.text
    );
}

/// A rule table far too small for the lists' expiries: still nothing is refused, everything is
/// enforced, and what could not get a kernel expiry is reported in `status`, the metrics and
/// the audit log. `unblock`, `flush` and a restart work.
#[test]
fn a_full_rule_table_refuses_nothing_and_says_so() {
    let env = start(&format!(
        "{KERNEL_QUIET}[capacity]\nrules = 3\n[metrics]\nlisten = \"127.0.0.1:9391\"\n"
    ));
    // Three lists, each with expiring entries: at the coarsest grid each needs a rule, and
    // only two fit.
    for (list, host) in [("one", BAD_V4), ("two", LONG_V4), ("three", LATER_V4)] {
        env.daemon
            .ok(&["block", &host.to_string(), "--ttl", "600s", "--list", list]);
    }
    let (_, _) = env.import("v4.ipset", &ipset_file_v4(1_000, 60), "four");
    for host in [BAD_V4, LONG_V4, LATER_V4] {
        assert_eq!(env.probe(&env.bad_as(host), false), 0, "{host} is enforced");
    }
    let status = env.daemon.status();
    let rules = &status["maps"]["rules"];
    assert!(count(&rules["unbounded_expiries"]) > 0, "{status}");
    assert!(count(&rules["used"]) <= 2, "{status}");
    let warnings = status["warnings"].to_string();
    assert!(warnings.contains("raise rules"), "{status}");
    let metrics = scrape(&env.daemon.netns, "127.0.0.1:9391");
    assert!(
        metrics
            .text
            .lines()
            .any(|l| l.starts_with("api_shield_rules_unbounded_expiries ") && !l.ends_with(" 0")),
        "{}",
        metrics.text
    );
    let audited = env
        .daemon
        .audit_records()
        .into_iter()
        .filter(|r| r["op"] == "rule_table")
        .collect::<Vec<_>>();
    assert_eq!(
        audited.len(),
        1,
        "reported once, not at every change: {audited:?}"
    );
    assert_eq!(audited[0]["result"], "error", "{audited:?}");

    env.daemon.ok(&["unblock", &BAD_V4.to_string()]);
    assert_eq!(env.probe(&env.lab.bad, false), N, "the unblock is enforced");
    env.daemon.ok(&["flush", "--list", "two"]);
    assert_eq!(
        env.probe(&env.bad_as(LONG_V4), false),
        N,
        "the flush is enforced"
    );

    // A restart with the same snapshot starts, and enforces what it holds.
    let mut daemon_env = env;
    assert!(daemon_env.daemon.stop(), "the daemon stopped cleanly");
    daemon_env.daemon.spawn();
    assert_eq!(daemon_env.probe(&daemon_env.bad_as(LATER_V4), false), 0);
    assert!(count(&daemon_env.rules()["unbounded_expiries"]) > 0);
}
