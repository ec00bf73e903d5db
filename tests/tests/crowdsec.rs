//! The CrowdSec feed against a real local API, down to the kernel: decisions added with
//! `cscli` reach the real XDP program's maps (frames run through BPF_PROG_TEST_RUN), deletions
//! lift them, and an outage of the local API leaves enforcement exactly as it was. Through the
//! real daemon, a decision that would cut the host off is skipped and counted, never enforced.
//!
//! Needs root (the XDP program is loaded) and Debian's `crowdsec` package, which the `Lapi`
//! helper installs when it is missing.

use api_shield::feeds::crowdsec::{self, CrowdsecConfig};
use api_shield::feeds::{FeedHealth, FeedSink, SharedHealth, SinkError};
use api_shield::kernel::clock;
use api_shield::lists::ListEntry;
use api_shield::model::{Action, Decision};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};
use tests::crowdsec::Lapi;
use tests::daemon::{Daemon, KERNEL_QUIET};
use tests::frames::Frame;
use tests::kernel::{Harness, XDP_DROP, XDP_PASS, action_name};
use tests::lapi_standin::StandIn;
use tests::netns::{BAD_V4, Lab, Pace, Receiver, send_udp};
use tests::relay::TcpRelay;

/// The poll period: short, so each step takes a few seconds.
const INTERVAL: Duration = Duration::from_secs(1);
/// Longest any one expected change may take to show (a few intervals, plus backoff).
const WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);
const ORIGIN: &str = "crowdsec";
const DNS: u16 = 53;

const BANNED: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 5);
const NEIGHBOUR: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 6);
const RANGE: &str = "198.18.10.0/24";
const IN_RANGE: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 77);
const BANNED_V6: &str = "2001:db8:9::5";
/// Lifetime of every test decision: long enough to outlive the test, short enough that a
/// decision a killed run could not delete goes away by itself.
const TTL: &str = "1h";

/// The list as the daemon would keep it, written to the kernel whole on every change.
struct KernelSink {
    list: Mutex<BTreeMap<IpNet, ListEntry>>,
    harness: Arc<Mutex<Harness>>,
    calls: Mutex<Vec<&'static str>>,
}

impl KernelSink {
    fn publish(&self, list: &BTreeMap<IpNet, ListEntry>) -> Result<(), SinkError> {
        let now = clock::now_unix_ms();
        let decisions: Vec<Decision> = list
            .values()
            .map(|e| Decision {
                net: e.net,
                action: Action::Block,
                origin: ORIGIN.to_string(),
                reason: e.reason.clone(),
                created_at_ms: now,
                expires_at_ms: e
                    .ttl
                    .map(|t| now + u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            })
            .collect();
        lock(&self.harness)
            .shield
            .apply(&decisions)
            .map(|_| ())
            .map_err(SinkError::new)
    }
}

impl FeedSink for KernelSink {
    fn replace(
        &self,
        origin: &str,
        _source: &str,
        entries: Vec<ListEntry>,
    ) -> Result<(), SinkError> {
        assert_eq!(origin, ORIGIN);
        let next: BTreeMap<IpNet, ListEntry> = entries.into_iter().map(|e| (e.net, e)).collect();
        // Held across the kernel write, so the test never sees a verdict the list lacks.
        let mut list = lock(&self.list);
        self.publish(&next)?;
        *list = next;
        lock(&self.calls).push("replace");
        Ok(())
    }

    fn update(
        &self,
        origin: &str,
        _source: &str,
        add: Vec<ListEntry>,
        remove: Vec<IpNet>,
    ) -> Result<(), SinkError> {
        assert_eq!(origin, ORIGIN);
        let mut list = lock(&self.list);
        let mut next = list.clone();
        for net in remove {
            next.remove(&net);
        }
        next.extend(add.into_iter().map(|e| (e.net, e)));
        self.publish(&next)?;
        *list = next;
        lock(&self.calls).push("update");
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn frame(src: Ipv4Addr) -> Vec<u8> {
    Frame::ipv4(src).udp(DNS).build()
}

fn frame_v6(src: &str) -> Vec<u8> {
    Frame::ipv6(src.parse().expect("an IPv6 address"))
        .udp(DNS)
        .build()
}

fn verdict(harness: &Mutex<Harness>, frame: &[u8]) -> u32 {
    lock(harness).run(frame)
}

/// Polls `done` until it holds or `WAIT` passes; panics with `what` and `state()` then.
#[track_caller]
fn wait_for(what: &str, mut done: impl FnMut() -> bool, state: impl Fn() -> String) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < WAIT,
            "{what}: not within {WAIT:?}; {}",
            state()
        );
        thread::sleep(POLL);
    }
    start.elapsed()
}

#[track_caller]
fn wait_verdict(
    harness: &Mutex<Harness>,
    frame: &[u8],
    want: u32,
    what: &str,
    health: &SharedHealth,
) {
    let took = wait_for(
        what,
        || verdict(harness, frame) == want,
        || {
            format!(
                "verdict {}, health {:?}",
                action_name(verdict(harness, frame)),
                lock(health)
            )
        },
    );
    eprintln!("{what}: {took:?}");
}

/// Writes a bouncer key as the daemon's reader insists on it: a new file of mode 0600.
fn write_key(path: &Path, key: &[u8]) {
    OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(key))
        .expect("write the bouncer key");
}

/// The daemon's `[crowdsec]` section for a local API at `addr`, polled every second into
/// list [`ORIGIN`].
fn crowdsec_section(addr: &str, key_file: &Path) -> String {
    format!(
        "[crowdsec]\nurl = \"http://{addr}\"\napi_key_file = \"{}\"\ninterval = \"1s\"\n\
         list = \"{ORIGIN}\"\n",
        key_file.display()
    )
}

fn health_now(health: &SharedHealth) -> FeedHealth {
    lock(health).clone()
}

/// The feed of the daemon, run against the real local API into a [`KernelSink`] over the real
/// XDP program.
struct KernelFeed {
    harness: Arc<Mutex<Harness>>,
    sink: Arc<KernelSink>,
    health: SharedHealth,
    feed: crowdsec::FeedThread,
}

/// The test frames: a banned address, its neighbour, one inside the banned range, a banned
/// IPv6 address.
struct Frames {
    ban: Vec<u8>,
    neighbour: Vec<u8>,
    in_range: Vec<u8>,
    v6: Vec<u8>,
}

impl KernelFeed {
    /// Starts the feed with the bouncer key of `lapi`, read through the daemon's own reader
    /// (which insists on a private file), and waits for its first full sync.
    fn start(lapi: &Lapi) -> Self {
        let key_file = lapi.dir.join("bouncer.key");
        write_key(&key_file, lapi.api_key.as_bytes());
        let cfg = CrowdsecConfig {
            url: lapi.url(),
            interval: INTERVAL,
            ..CrowdsecConfig::new(key_file)
        };
        cfg.validate().expect("a valid feed configuration");
        let key = cfg.read_api_key().expect("read the bouncer key");
        let harness = Arc::new(Mutex::new(Harness::configured(|_| {})));
        let sink = Arc::new(KernelSink {
            list: Mutex::default(),
            harness: harness.clone(),
            calls: Mutex::default(),
        });
        let health: SharedHealth = Arc::default();
        let feed = crowdsec::spawn(cfg, key, sink.clone(), health.clone()).expect("start the feed");
        let this = Self {
            harness,
            sink,
            health,
            feed,
        };
        wait_for(
            "the first full sync",
            || this.health().syncs_total >= 1,
            || format!("{:?}", this.health()),
        );
        assert_eq!(lock(&this.sink.calls).first(), Some(&"replace"));
        this
    }

    fn health(&self) -> FeedHealth {
        health_now(&self.health)
    }

    fn verdict(&self, frame: &[u8]) -> u32 {
        verdict(&self.harness, frame)
    }

    #[track_caller]
    fn wait_verdict(&self, frame: &[u8], want: u32, what: &str) {
        wait_verdict(&self.harness, frame, want, what, &self.health);
    }

    fn replaces(&self) -> usize {
        lock(&self.sink.calls)
            .iter()
            .filter(|c| **c == "replace")
            .count()
    }
}

#[test]
fn crowdsec_decisions_reach_the_kernel_maps() {
    let mut lapi = Lapi::start();
    // Decisions a killed earlier run could not delete would make the first checks lie.
    lapi.delete_ip(&BANNED.to_string());
    lapi.delete_range(RANGE);
    lapi.delete_ip(BANNED_V6);
    let feed = KernelFeed::start(&lapi);
    let frames = Frames {
        ban: frame(BANNED),
        neighbour: frame(NEIGHBOUR),
        in_range: frame(IN_RANGE),
        v6: frame_v6(BANNED_V6),
    };
    bans_and_deletions_reach_the_kernel(&mut lapi, &feed, &frames);
    let down = an_outage_changes_nothing(&mut lapi, &feed, &frames);
    recovery_resyncs_in_full(&mut lapi, &feed, &frames, &down);

    let KernelFeed { feed, health, .. } = feed;
    feed.stop();
    let last = health_now(&health);
    assert!(!last.degraded && last.last_success_ms.is_some(), "{last:?}");
}

/// `cscli` bans of an address, a range and an IPv6 address are dropped; a deleted ban passes.
fn bans_and_deletions_reach_the_kernel(lapi: &mut Lapi, feed: &KernelFeed, frames: &Frames) {
    for (f, name) in [
        (&frames.ban, "banned"),
        (&frames.in_range, "in range"),
        (&frames.v6, "v6"),
    ] {
        assert_eq!(feed.verdict(f), XDP_PASS, "{name} before any decision");
    }

    lapi.add_ip(&BANNED.to_string(), TTL);
    feed.wait_verdict(&frames.ban, XDP_DROP, "cscli ban of 198.18.9.5 dropped");
    assert_eq!(
        feed.verdict(&frames.neighbour),
        XDP_PASS,
        "198.18.9.6 passes"
    );
    let entry = lock(&feed.sink.list)[&"198.18.9.5/32".parse::<IpNet>().unwrap()].clone();
    let ttl = entry.ttl.expect("CrowdSec decisions expire");
    assert!(
        ttl > Duration::from_secs(3_500) && ttl <= Duration::from_secs(3_600),
        "{ttl:?}"
    );
    assert!(
        entry
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("manual")),
        "{entry:?}"
    );

    lapi.add_range(RANGE, TTL);
    feed.wait_verdict(
        &frames.in_range,
        XDP_DROP,
        "cscli ban of 198.18.10.0/24 dropped",
    );
    lapi.add_ip(BANNED_V6, TTL);
    feed.wait_verdict(&frames.v6, XDP_DROP, "cscli ban of 2001:db8:9::5 dropped");

    lapi.delete_ip(&BANNED.to_string());
    feed.wait_verdict(&frames.ban, XDP_PASS, "deleted ban of 198.18.9.5 passes");
    assert_eq!(feed.verdict(&frames.in_range), XDP_DROP, "the range stays");
    assert!(
        lock(&feed.sink.calls)
            .iter()
            .skip(1)
            .all(|c| *c == "update")
    );
}

/// The local API stops: enforcement must not change, health must say so. Returns the health
/// while down.
fn an_outage_changes_nothing(lapi: &mut Lapi, feed: &KernelFeed, frames: &Frames) -> FeedHealth {
    let before = feed.health();
    let nets_before: Vec<IpNet> = lock(&feed.sink.list).keys().copied().collect();
    lapi.stop();
    wait_for(
        "health degraded while the local API is down",
        || {
            let h = feed.health();
            h.degraded && h.errors_total > before.errors_total
        },
        || format!("{:?}", feed.health()),
    );
    // Rounds still in flight while crowdsec shut down may have succeeded; from the first
    // failure on, none may.
    let first_failure = feed.health();
    let list_down = lock(&feed.sink.list).clone();
    assert_eq!(
        list_down.keys().copied().collect::<Vec<_>>(),
        nets_before,
        "the outage cleared nothing"
    );
    // Several failed rounds (backoff 1 s, 2 s, ... capped at the interval).
    thread::sleep(3 * INTERVAL);
    let down = feed.health();
    assert!(
        down.degraded && down.errors_total >= first_failure.errors_total + 2,
        "{down:?}"
    );
    let error = down.last_error.clone().expect("the error is reported");
    assert!(
        error.contains(&lapi.port.to_string()) && !error.contains(&lapi.api_key),
        "{error}"
    );
    assert_eq!(
        down.syncs_total, first_failure.syncs_total,
        "no sync while down"
    );
    assert_eq!(
        feed.verdict(&frames.in_range),
        XDP_DROP,
        "198.18.10.77 still dropped"
    );
    assert_eq!(
        feed.verdict(&frames.v6),
        XDP_DROP,
        "2001:db8:9::5 still dropped"
    );
    assert_eq!(feed.verdict(&frames.ban), XDP_PASS);
    assert_eq!(
        *lock(&feed.sink.list),
        list_down,
        "the list is kept as it was"
    );
    down
}

/// The local API comes back: one full resync restores the list as it was, and deltas flow
/// again.
fn recovery_resyncs_in_full(
    lapi: &mut Lapi,
    feed: &KernelFeed,
    frames: &Frames,
    down: &FeedHealth,
) {
    let replaces = feed.replaces();
    lapi.start_again();
    wait_for(
        "health recovered after the local API came back",
        || {
            let h = feed.health();
            !h.degraded && h.syncs_total > down.syncs_total
        },
        || format!("{:?}", feed.health()),
    );
    assert_eq!(feed.replaces(), replaces + 1, "recovery resyncs in full");
    assert_eq!(feed.verdict(&frames.in_range), XDP_DROP);
    assert_eq!(feed.verdict(&frames.v6), XDP_DROP);
    assert_eq!(feed.verdict(&frames.ban), XDP_PASS);
    // Other decisions may live in the same database; ours must be there as they were.
    let resynced = lock(&feed.sink.list).clone();
    for net in [RANGE, "2001:db8:9::5/128"] {
        let net: IpNet = net.parse().expect("a prefix");
        assert!(resynced.contains_key(&net), "{net}: {resynced:?}");
    }
    assert!(!resynced.contains_key(&IpNet::from(std::net::IpAddr::V4(BANNED))));

    lapi.delete_range(RANGE);
    feed.wait_verdict(
        &frames.in_range,
        XDP_PASS,
        "deleted range passes after recovery",
    );
}

/// Covers the lab server's own addresses (198.18.1.1, 2001:db8:1:1::1) and no address of the
/// other CrowdSec test, which may share the local API's database while this one runs.
const COVERS_SERVER_V4: &str = "198.18.1.0/24";
const COVERS_SERVER_V6: &str = "2001:db8:1::/48";
/// Where the daemon, in the lab's server namespace, reaches the local API (through a relay).
const LAPI_IN_LAB: &str = "127.0.0.1:18080";
const UDP_PORT: u16 = 9000;
const PROBES: u64 = 50;

#[test]
fn a_crowdsec_decision_covering_the_host_is_skipped_and_counted() {
    let mut lapi = Lapi::start();
    for range in [COVERS_SERVER_V4, COVERS_SERVER_V6] {
        lapi.delete_range(range);
    }
    lapi.delete_ip(&BAD_V4.to_string());
    let key_file = lapi.dir.join("daemon-bouncer.key");
    write_key(&key_file, lapi.api_key.as_bytes());
    lapi.add_range(COVERS_SERVER_V4, TTL);
    lapi.add_range(COVERS_SERVER_V6, TTL);
    lapi.add_ip(&BAD_V4.to_string(), TTL);

    let lab = Lab::new();
    let target = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, lapi.port));
    let listen = LAPI_IN_LAB.parse().expect("an address");
    let _relay = TcpRelay::start(&lab.server.netns, listen, target);
    let daemon = Daemon::start(
        &lab,
        &format!("{KERNEL_QUIET}{}", crowdsec_section(LAPI_IN_LAB, &key_file)),
    );
    let rx = Receiver::start(&lab.server, UDP_PORT);
    let info = || feed_info(&daemon);
    wait_for(
        "the daemon's first CrowdSec sync",
        || info().is_some_and(|i| i["feed"]["syncs_total"].as_u64() >= Some(1)),
        || format!("{:?}\n{}", info(), daemon.log()),
    );
    let info = info().expect("the crowdsec list");
    // Other decisions may live in the same database: ours are the ones checked.
    let listed = daemon
        .json(&["list", "--origin", ORIGIN, "--json"])
        .to_string();
    assert!(listed.contains(&format!("\"{BAD_V4}/32\"")), "{listed}");
    for range in [COVERS_SERVER_V4, COVERS_SERVER_V6] {
        assert!(!listed.contains(range), "{range} is enforced: {listed}");
    }
    assert!(
        info["feed"]["lockout_skipped_total"].as_u64() >= Some(2),
        "{info}"
    );
    let named = info["feed"]["lockout_skipped"].to_string();
    assert!(
        named.contains(&format!("{COVERS_SERVER_V4} covers 198.18.1.1")),
        "{info}"
    );
    assert_eq!(info["feed"]["degraded"], false, "{info}");

    // In the kernel: the bad client is dropped, the good one (inside the skipped /24) passes.
    let to = rx.target(&lab.server, false);
    for (host, expected) in [(&lab.bad, 0), (&lab.good, PROBES)] {
        let before = rx.count(host.addr(false));
        assert_eq!(send_udp(host, to, Pace::steady(PROBES)), PROBES);
        rx.settle();
        assert_eq!(
            rx.count(host.addr(false)) - before,
            expected,
            "{}",
            host.netns
        );
    }
    let audit = std::fs::read_to_string(daemon.dir.join("audit.jsonl")).unwrap_or_default();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("feed_replace") && l.contains(COVERS_SERVER_V4)),
        "the skip must be audited: {audit}"
    );
}

// ---- a hostile local API -------------------------------------------------------------------

/// Where the daemon, in the lab's server namespace, finds the hostile stand-in.
const STANDIN_IN_LAB: &str = "127.0.0.1:18081";
/// Where the daemon serves metrics, inside the lab's server namespace.
const METRICS_IN_LAB: &str = "127.0.0.1:9381";
/// Size of the hostile answer: about 100 MB, mostly `{}` (which cost the old decoder a
/// hundred times their size: 30 MB took 3 GB).
const HOSTILE_BYTES: usize = 100_000_000;
/// The daemon's memory may grow by at most this many times the answer's size while taking it:
/// the answer is held once while it is decoded, and the decisions taken from it are few.
/// Measured: about 1.05 (the old decoder: some 100).
const HOSTILE_MEMORY_FACTOR: u64 = 2;
/// The valid decisions hidden in the junk: the lab's bad client, a range, an IPv6 address.
const HOSTILE_VALID: [(&str, &str); 3] = [
    ("Ip", "198.18.1.35"),
    ("Range", "198.18.77.0/24"),
    ("Ip", "2001:db8:77::5"),
];
const HOSTILE_LISTED: [&str; 3] = ["198.18.1.35/32", "198.18.77.0/24", "2001:db8:77::5/128"];
/// Elements of the wrong shape in `new`: no object, a field of the wrong type, a field twice.
const HOSTILE_MALFORMED_NEW: &str = r#"7,"x",null,[1,[2]],{"id":"x"},{"value":5},{"scope":"Ip","value":"198.18.1.36","type":"ban","duration":"1h","value":"198.18.1.37"}"#;
const HOSTILE_MALFORMED_NEW_COUNT: u64 = 7;
/// `deleted`: `{}` names nothing (ignored), `3` is no object (malformed).
const HOSTILE_DELETED: &str = r#"[{},3]"#;
const HOSTILE_MALFORMED_DELETED_COUNT: u64 = 1;
/// How long the whole answer may take to show in `lists` once released.
const HOSTILE_WAIT: Duration = Duration::from_secs(30);

/// A `{"new":[...],"deleted":[...]}` answer of about `HOSTILE_BYTES`: the valid decisions
/// spread among `{}`, the malformed ones near the end. Returns it and the number of `{}`.
fn hostile_answer() -> (Vec<u8>, u64) {
    const EMPTY: &[u8] = b"{},";
    let valid: Vec<String> = HOSTILE_VALID
        .iter()
        .enumerate()
        .map(|(i, (scope, value))| {
            format!(
                r#"{{"duration":"1h","id":{},"origin":"cscli","scenario":"hostile","scope":"{scope}","type":"ban","value":"{value}"}}"#,
                i + 1
            )
        })
        .collect();
    let fixed: usize = valid.iter().map(|v| v.len() + 1).sum::<usize>()
        + HOSTILE_MALFORMED_NEW.len()
        + HOSTILE_DELETED.len()
        + r#"{"new":[],"deleted":}"#.len();
    let empties = (HOSTILE_BYTES - fixed) / EMPTY.len();
    let per_gap = empties / valid.len();
    let mut body = Vec::with_capacity(HOSTILE_BYTES);
    body.extend_from_slice(br#"{"new":["#);
    for v in &valid {
        body.extend_from_slice(v.as_bytes());
        body.push(b',');
        for _ in 0..per_gap {
            body.extend_from_slice(EMPTY);
        }
    }
    body.extend_from_slice(HOSTILE_MALFORMED_NEW.as_bytes());
    body.extend_from_slice(br#"],"deleted":"#);
    body.extend_from_slice(HOSTILE_DELETED.as_bytes());
    body.push(b'}');
    let count = u64::try_from(per_gap * valid.len()).expect("fits");
    (body, count)
}

/// The peak resident memory of process `pid` so far (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"));
    kib * 1024
}

/// What `api-shield lists` says about the CrowdSec list, if it has it.
fn feed_info(daemon: &Daemon) -> Option<serde_json::Value> {
    match daemon.json(&["lists", "--json"]) {
        serde_json::Value::Array(items) => items.into_iter().find(|l| l["name"] == ORIGIN),
        other => panic!("`lists` did not print an array: {other}"),
    }
}

/// A daemon in the lab whose CrowdSec feed polls the stand-in, with metrics on.
fn daemon_of_standin(lab: &Lab) -> Daemon {
    let mut daemon = Daemon::prepare(
        lab,
        &format!("{KERNEL_QUIET}[metrics]\nlisten = \"{METRICS_IN_LAB}\"\n"),
    );
    // Any key: the stand-in does not check it, but the daemon insists on a private file.
    let key_file = daemon.dir.join("bouncer.key");
    write_key(&key_file, b"hostile-test-key");
    OpenOptions::new()
        .append(true)
        .open(&daemon.config)
        .and_then(|mut f| f.write_all(crowdsec_section(STANDIN_IN_LAB, &key_file).as_bytes()))
        .expect("add the crowdsec section");
    daemon.spawn();
    daemon
}

#[test]
fn a_hostile_crowdsec_answer_is_taken_within_bounded_memory() {
    let (body, empties) = hostile_answer();
    let answer_bytes = u64::try_from(body.len()).expect("fits");
    let lab = Lab::new();
    let listen = STANDIN_IN_LAB.parse().expect("an address");
    let standin = StandIn::start(&lab.server.netns, listen, Arc::new(body));
    let daemon = daemon_of_standin(&lab);
    let pid = daemon.pid().expect("the daemon runs");
    wait_for(
        "the daemon's first stream request",
        || !standin.requests().is_empty(),
        || daemon.log(),
    );
    let baseline = peak_rss(pid);
    let started = Instant::now();
    standin.release();

    let deadline = Instant::now() + HOSTILE_WAIT;
    let synced =
        || feed_info(&daemon).is_some_and(|i| i["feed"]["syncs_total"].as_u64() >= Some(1));
    while !synced() {
        assert!(
            daemon.pid().is_some() && Instant::now() < deadline,
            "no sync of the hostile answer within {HOSTILE_WAIT:?}: {:?}, peak {} MB\n{}",
            feed_info(&daemon),
            peak_rss(pid) >> 20,
            daemon.log()
        );
        thread::sleep(POLL);
    }
    let took = started.elapsed();
    let peak = peak_rss(pid);
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "hostile answer of {} MB taken in {took:?}: peak RSS {} MB, baseline {} MB, growth {} MB \
         ({:.2}x the answer)",
        answer_bytes / 1_000_000,
        peak / 1_000_000,
        baseline / 1_000_000,
        growth / 1_000_000,
        growth as f64 / answer_bytes as f64
    );
    assert!(
        growth < HOSTILE_MEMORY_FACTOR * answer_bytes,
        "the daemon grew by {growth} bytes taking a {answer_bytes}-byte answer"
    );
    the_hostile_answer_is_enforced(&lab, &daemon, empties);
}

/// The valid decisions of the hostile answer are listed and enforced, the malformed ones
/// counted (in `lists` and the metrics) and skipped.
fn the_hostile_answer_is_enforced(lab: &Lab, daemon: &Daemon, empties: u64) {
    let info = feed_info(daemon).expect("the crowdsec list");
    let malformed = empties + HOSTILE_MALFORMED_NEW_COUNT + HOSTILE_MALFORMED_DELETED_COUNT;
    assert_eq!(
        info["feed"]["malformed_skipped_total"].as_u64(),
        Some(malformed),
        "{info}"
    );
    assert_eq!(info["feed"]["degraded"], false, "{info}");
    let listed = daemon
        .json(&["list", "--origin", ORIGIN, "--json"])
        .to_string();
    for net in HOSTILE_LISTED {
        assert!(listed.contains(&format!("\"{net}\"")), "{net}: {listed}");
    }
    assert!(
        !listed.contains("198.18.1.36") && !listed.contains("198.18.1.37"),
        "{listed}"
    );
    let metrics = tests::metrics::scrape(&daemon.netns, METRICS_IN_LAB);
    assert_eq!(
        metrics.count(
            "api_shield_feed_malformed_skipped_total",
            &[("feed", ORIGIN)]
        ),
        malformed
    );

    // In the kernel: the bad client is dropped, the good one passes.
    let rx = Receiver::start(&lab.server, UDP_PORT);
    let to = rx.target(&lab.server, false);
    for (host, expected) in [(&lab.bad, 0), (&lab.good, PROBES)] {
        let before = rx.count(host.addr(false));
        assert_eq!(send_udp(host, to, Pace::steady(PROBES)), PROBES);
        rx.settle();
        assert_eq!(
            rx.count(host.addr(false)) - before,
            expected,
            "{}",
            host.netns
        );
    }
}
