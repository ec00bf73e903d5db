//! Fault tests: the real daemon in a namespace lab, killed, "rebooted", fed damaged state and
//! configs, and run with full maps, while real traffic flows. Outcomes are read from the
//! receiving socket (what actually got through), the shield's counters and its lists.
//!
//! - `kill -9` of the daemon during a flood from a blocked source: not one datagram from it
//!   reaches the receiver across the kill and the restart, the lists are the same after the
//!   restart, and the counters go on from where they were.
//! - A simulated reboot (daemon killed, program detached and its pins removed): the new daemon
//!   restores every unexpired decision from its snapshot, and one that expired while it was
//!   down stays gone.
//! - A damaged snapshot file or config: the daemon refuses to start and names the file, while
//!   the pinned program keeps enforcing; a damaged config on SIGHUP is refused, logged, and
//!   the running config stays.
//! - Full maps: with room for two auto-blocks, more flooding sources are reported
//!   (`auto_block_full`), the auto-blocks held stay enforced, an allowlisted source that floods
//!   loses nothing, and a list too large for its map is refused while the old lists enforce.
//!
//! Each test builds its own lab and daemon and removes them when it ends, also on panic; each
//! takes a few seconds. Needs root and the release binary (`API_SHIELD_BIN`).

use serde_json::Value;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};
use tests::daemon::{KERNEL_QUIET, packets};
use tests::lab_env::{DEFAULT_PROBES, Env};
use tests::netns::{BAD_V4, BAD_V6, GOOD_V4, Host, Outcome, Pace, SERVER_V4, spawn_udp};

/// Datagrams per probe.
const N: u64 = DEFAULT_PROBES;
/// Longest a daemon that should refuse to start may take to do so.
/// Longest to wait for something the daemon does on its own (a sweep, a reload).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Room for two auto-blocks and a small IPv4 table; 100 packets per second per source, 20
/// over-limit packets within 10 s get a source blocked for two minutes.
const FULL_MAPS: &str = "\
[limits]
packets_per_second = 100
burst = 100
syn_per_second = 0
[autoblock]
strikes = 20
window = \"10s\"
ttl = \"2m\"
[capacity]
auto_blocks = 2
v4_nodes = 16
";

/// More addresses of the bad client, all in its 198.18.1.32/28.
fn bad_extra(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 36 + n)
}

/// What only these tests ask of the shared lab.
trait FaultsEnv {
    /// `state_dir/<iface>`: the snapshot.
    fn snapshot_dir(&self) -> PathBuf;
}

impl FaultsEnv for Env {
    fn snapshot_dir(&self) -> PathBuf {
        self.daemon.dir.join("state").join(&self.daemon.iface)
    }
}

/// `list --json`, in a stable order: the daemon does not promise one (after a restart the
/// same entries come in another order).
fn all_entries(env: &Env) -> Vec<String> {
    let mut entries: Vec<String> = env.daemon.list(None).iter().map(Value::to_string).collect();
    entries.sort();
    entries
}

fn blocklisted(stats: &Value) -> u64 {
    packets(stats, "verdicts", "blocklisted")
}

fn origin_drops(stats: &Value, origin: &str) -> u64 {
    stats["origins"][origin]["packets"].as_u64().unwrap_or(0)
}

fn import(env: &Env, path: &Path, list: &str) -> Outcome {
    let path = path.to_str().expect("utf-8 path");
    env.daemon.cli(&["import", path, "--list", list, "--json"])
}

/// The kernel's own auto-blocks, as `list blocked --json` shows them.
fn kernel_blocks(env: &Env) -> Vec<String> {
    let mut nets: Vec<String> = env
        .daemon
        .list(Some("blocked"))
        .iter()
        .filter(|e| e["origin"] == "kernel")
        .map(|e| e["net"].as_str().unwrap_or("?").to_owned())
        .collect();
    nets.sort();
    nets
}

/// Waits until `f` holds, for at most `SETTLE_TIMEOUT`.
fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {SETTLE_TIMEOUT:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Puts a file's text back when dropped (also on panic), so the daemon guard's `detach`
/// reads a valid config.
struct RestoreOnDrop {
    path: PathBuf,
    text: String,
}

impl RestoreOnDrop {
    fn new(path: &Path) -> RestoreOnDrop {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        RestoreOnDrop {
            path: path.to_owned(),
            text,
        }
    }
}

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, &self.text) {
            eprintln!("faults: cannot restore {}: {e}", self.path.display());
        }
    }
}

fn send_signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill has no memory effects; `pid` is the daemon this test started.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

// ---- (a) kill -9 during a flood -------------------------------------------------------------

/// How long the blocked source floods, and when the daemon dies and comes back inside it.
const FLOOD_TIME: Duration = Duration::from_secs(5);
const KILL_AFTER: Duration = Duration::from_millis(1_000);
const DOWN_FOR: Duration = Duration::from_millis(1_000);

#[test]
fn kill_9_during_a_flood_lets_no_blocked_datagram_through() {
    let mut env = Env::new(KERNEL_QUIET);
    let d = &env.daemon;
    d.ok(&["block", &BAD_V4.to_string(), "--reason", "faults"]);
    d.ok(&["block", "2001:db8:1:3::/64", "--ttl", "1h"]);
    d.ok(&["allow", &GOOD_V4.to_string()]);
    let feed = env.file(
        "feed.txt",
        "198.19.0.0/24\n2001:db8:ffff::/48\n198.19.7.7\n",
    );
    let out = import(&env, &feed, "feed");
    assert!(out.success(), "import: {}", out.stderr);
    // Traffic before the flood: the counters hold something the restart must not lose.
    assert_eq!(env.probe(&env.lab.bad, false), 0);
    assert_eq!(env.probe(&env.lab.good, false), N);
    let lists_before = all_entries(&env);
    let stats_before = env.daemon.stats();
    let (blocked_before, cli_before) = (
        blocklisted(&stats_before),
        origin_drops(&stats_before, "cli"),
    );
    assert!(blocked_before >= N, "{stats_before}");

    let target = env.rx.target(&env.lab.server, false);
    let flood = spawn_udp(
        &env.lab.bad,
        target,
        Pace {
            count: u64::MAX,
            gap: None,
            limit: FLOOD_TIME,
        },
    );
    // The good client keeps talking through it all, gently.
    let good = spawn_udp(
        &env.lab.good,
        target,
        Pace {
            count: 400,
            gap: Some(Duration::from_millis(10)),
            limit: FLOOD_TIME + Duration::from_secs(2),
        },
    );
    thread::sleep(KILL_AFTER);
    let killed_at = Instant::now();
    env.daemon.kill9();
    thread::sleep(DOWN_FOR);
    env.daemon.spawn();
    let restarted_in = killed_at.elapsed();
    let stats_restarted = env.daemon.stats();
    let flood_sent = flood.join().expect("flood sender");
    let good_sent = good.join().expect("good sender");
    env.rx.settle();

    let bad_got = env.rx.count(IpAddr::V4(BAD_V4));
    let good_got = env.rx.count(IpAddr::V4(GOOD_V4)) - N;
    eprintln!(
        "kill -9: flood of {flood_sent} datagrams, {bad_got} arrived; daemon back after \
         {restarted_in:?}; good {good_got} of {good_sent}"
    );
    assert!(
        flood_sent > 10_000,
        "the flood was not a flood: {flood_sent}"
    );
    assert_eq!(
        bad_got, 0,
        "datagrams from the blocked source arrived across the kill and the restart"
    );
    assert!(
        good_got * 10 >= good_sent * 9,
        "the allowed client lost more than 10%: {good_got} of {good_sent}"
    );

    let status = env.daemon.status();
    assert_eq!(status["adopted"], true, "{status}");
    assert_eq!(
        all_entries(&env),
        lists_before,
        "the lists changed across kill -9 and the restart"
    );
    // The counters continue: what the restarted daemon reports includes what was dropped
    // before the kill and while no daemon ran.
    let stats_after = env.daemon.stats();
    let blocked_restarted = blocklisted(&stats_restarted);
    let blocked_after = blocklisted(&stats_after);
    let dropped = blocked_after - blocked_before;
    assert!(
        blocked_restarted >= blocked_before && blocked_after >= blocked_restarted,
        "blocklisted went {blocked_before} -> {blocked_restarted} (restarted) -> {blocked_after}"
    );
    eprintln!(
        "kill -9: blocklisted {blocked_before} -> {blocked_restarted} (restarted) -> \
         {blocked_after}: {dropped} drops counted for {flood_sent} sent"
    );
    assert!(
        dropped <= flood_sent && dropped * 10 >= flood_sent * 9,
        "blocklisted grew by {dropped} for a flood of {flood_sent}: counts were lost or reset"
    );
    assert_eq!(
        origin_drops(&stats_after, "cli") - cli_before,
        dropped,
        "the cli origin's drops do not follow blocklisted: {stats_after}"
    );
    // Still enforcing, and still under control.
    assert_eq!(env.probe(&env.lab.bad, false), 0);
    assert_eq!(env.probe(&env.lab.bad, true), 0);
    env.daemon.ok(&["unblock", &BAD_V4.to_string()]);
    assert_eq!(env.probe(&env.lab.bad, false), N);
}

// ---- (b) a simulated reboot -----------------------------------------------------------------

/// Lifetime of the decision that must expire while no daemon runs.
const SHORT_TTL: Duration = Duration::from_secs(2);

#[test]
fn a_reboot_restores_unexpired_decisions_from_the_snapshot() {
    let mut env = Env::new(KERNEL_QUIET);
    let short = bad_extra(0);
    let listed = bad_extra(1);
    for a in [short, listed] {
        env.add_bad_address(a);
    }
    let d = &env.daemon;
    d.ok(&["block", &BAD_V4.to_string(), "--reason", "permanent"]);
    d.ok(&[
        "block",
        &BAD_V6.to_string(),
        "--ttl",
        "1h",
        "--reason",
        "long",
    ]);
    let feed = env.file("feed.txt", format!("{listed}\n198.19.0.0/16\n"));
    let out = import(&env, &feed, "feed");
    assert!(out.success(), "import: {}", out.stderr);
    let lasting = all_entries(&env);
    let status = env.daemon.status();
    let program_id = status["program_id"].clone();

    // The short block, then the "power cut" right away, before any sweep could remove it.
    let ttl = format!("{}s", SHORT_TTL.as_secs());
    let blocked_at = Instant::now();
    env.daemon.ok(&["block", &short.to_string(), "--ttl", &ttl]);
    env.daemon.kill9();
    let cli_file = env.snapshot_dir().join("origins/cli.json");
    let saved = std::fs::read_to_string(&cli_file)
        .unwrap_or_else(|e| panic!("{}: {e}", cli_file.display()));
    assert!(
        saved.contains(&short.to_string()),
        "the short block is not in the snapshot: {saved}"
    );

    // Reboot: the program and every pin gone.
    let out = env.daemon.detach().expect("detach");
    assert!(out.success(), "detach: {}", out.stderr);
    assert!(
        !env.daemon.pin_dir().exists(),
        "{} still exists after detach",
        env.daemon.pin_dir().display()
    );
    assert_eq!(
        env.probe(&env.lab.bad, false),
        N,
        "with no program attached everything passes"
    );
    let wait = (SHORT_TTL + Duration::from_millis(500)).saturating_sub(blocked_at.elapsed());
    thread::sleep(wait);

    env.daemon.spawn();
    let status = env.daemon.status();
    assert_eq!(
        status["adopted"], false,
        "nothing to adopt after a reboot: {status}"
    );
    assert_ne!(status["program_id"], program_id, "{status}");
    // The expired block is swept right after the start (the first sweep runs at once).
    wait_until("the expired block to be swept", || {
        all_entries(&env) == lasting
    });
    assert_eq!(
        env.probe(&env.lab.bad, false),
        0,
        "the permanent block is not enforced"
    );
    assert_eq!(
        env.probe(&env.lab.bad, true),
        0,
        "the block with an hour to live is not enforced"
    );
    assert_eq!(
        env.probe(&env.bad_as(listed), false),
        0,
        "the imported list is not enforced"
    );
    assert_eq!(
        env.probe(&env.bad_as(short), false),
        N,
        "the block that expired while the daemon was down is enforced again"
    );
    assert_eq!(env.probe(&env.lab.good, false), N);
}

#[test]
fn a_reboot_does_not_restore_blocks_that_would_cut_the_host_off() {
    let mut env = Env::new(KERNEL_QUIET);
    env.daemon.ok(&["block", &BAD_V4.to_string()]);
    // A person forced a block of the server's own address: that one is kept.
    let own = format!("{SERVER_V4}/32");
    env.daemon.ok(&["block", &own, "--force"]);
    env.daemon.kill9();
    // A snapshot from before the guard (or from before this host's addresses changed) holding
    // blocks of everything, which nobody forced.
    let cli_file = env.snapshot_dir().join("origins/cli.json");
    let text = std::fs::read_to_string(&cli_file)
        .unwrap_or_else(|e| panic!("{}: {e}", cli_file.display()));
    let mut saved: Value = serde_json::from_str(&text).expect("cli.json");
    let entries = saved["entries"].as_array_mut().expect("entries");
    assert!(
        entries
            .iter()
            .any(|e| e["net"] == own.as_str() && e["forced"] == true),
        "the forced block must be saved as forced: {text}"
    );
    for net in ["0.0.0.0/0", "::/0"] {
        entries.push(serde_json::json!({"net": net, "action": "block", "created_at_ms": 1}));
    }
    std::fs::write(&cli_file, saved.to_string()).expect("write cli.json");

    let out = env.daemon.detach().expect("detach");
    assert!(out.success(), "detach: {}", out.stderr);
    env.daemon.spawn();
    let blocked: Vec<String> = env
        .daemon
        .list(Some("blocked"))
        .iter()
        .map(|e| e["net"].as_str().unwrap_or("?").to_owned())
        .collect();
    let mut sorted = blocked.clone();
    sorted.sort();
    assert_eq!(sorted, [own.clone(), format!("{BAD_V4}/32")], "{blocked:?}");
    assert_eq!(env.probe(&env.lab.good, false), N, "0.0.0.0/0 was restored");
    assert_eq!(env.probe(&env.lab.good, true), N, "::/0 was restored");
    assert_eq!(
        env.probe(&env.lab.bad, false),
        0,
        "the bad client's block was lost"
    );
    let audit = std::fs::read_to_string(env.daemon.dir.join("audit.jsonl")).expect("the audit log");
    for net in ["0.0.0.0/0", "::/0"] {
        assert!(
            audit
                .lines()
                .any(|l| l.contains("restore_lockout_skipped") && l.contains(net)),
            "{net} left out without an audit record: {audit}"
        );
    }
    // Gone from the snapshot too: the next restore does not meet them again.
    let text = std::fs::read_to_string(&cli_file).expect("cli.json");
    assert!(
        !text.contains("0.0.0.0/0") && !text.contains("::/0"),
        "{text}"
    );
}

// ---- (c) damaged snapshot and config ---------------------------------------------------------

/// How a file gets damaged.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Cut in the middle.
    Truncate,
    /// Emptied.
    Empty,
    /// Valid JSON of the wrong shape.
    WrongShape,
    /// Bytes that are not text.
    Garbage,
}

fn damaged(original: &[u8], damage: Damage) -> Vec<u8> {
    match damage {
        Damage::Truncate => original[..original.len() / 2].to_vec(),
        Damage::Empty => Vec::new(),
        Damage::WrongShape => br#"{"version": 2, "entries": "none"}"#.to_vec(),
        Damage::Garbage => vec![0xFF, 0xFE, 0x00, b'{', 0x80],
    }
}

#[test]
fn a_damaged_snapshot_or_config_is_refused_and_the_kernel_keeps_enforcing() {
    let mut env = Env::new(KERNEL_QUIET);
    let d = &env.daemon;
    d.ok(&["block", &BAD_V4.to_string(), "--reason", "kept"]);
    let feed = env.file("feed.txt", "198.19.0.0/24\n");
    let out = import(&env, &feed, "feed");
    assert!(out.success(), "import: {}", out.stderr);
    assert_eq!(env.probe(&env.lab.bad, false), 0);
    let lists_before = all_entries(&env);
    env.daemon.kill9();

    let snap = env.snapshot_dir();
    let index = snap.join("index.json");
    let cases = [
        (index.clone(), Damage::Truncate),
        (index.clone(), Damage::Empty),
        (index.clone(), Damage::WrongShape),
        (snap.join("origins/cli.json"), Damage::Truncate),
        (snap.join("origins/feed.json"), Damage::Garbage),
        (snap.join("origins/feed.json"), Damage::WrongShape),
    ];
    for (path, damage) in cases {
        let original = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let bad = damaged(&original, damage);
        std::fs::write(&path, &bad).expect("damage the snapshot");
        let out = env.daemon.run_expecting_refusal(&env.daemon.socket);
        let shown = path.display().to_string();
        assert!(
            out.stderr.contains(&shown),
            "{damage:?} {shown}: the error does not name the file: {}",
            out.stderr
        );
        assert!(
            std::fs::read(&path).expect("read back") == bad,
            "{damage:?} {shown}: the refused start rewrote the damaged file"
        );
        // No daemon runs, the pins do: the kernel keeps enforcing what it had.
        assert_eq!(
            env.probe(&env.lab.bad, false),
            0,
            "{damage:?} {shown}: the block is not enforced after the refused start"
        );
        assert_eq!(env.probe(&env.lab.good, false), N);
        std::fs::write(&path, &original).expect("repair the snapshot");
    }

    // A damaged config refuses the start the same way, naming the file and the line.
    let config = RestoreOnDrop::new(&env.daemon.config);
    std::fs::write(
        &config.path,
        config
            .text
            .replace("packets_per_second = 0", "packets_per_second = \"many\""),
    )
    .expect("damage the config");
    let out = env.daemon.run_expecting_refusal(&env.daemon.socket);
    let line = config
        .text
        .lines()
        .position(|l| l.starts_with("packets_per_second"))
        .expect("the config sets packets_per_second")
        + 1;
    let at = format!("{}:{line}:", config.path.display());
    assert!(
        out.stderr.contains(&at) && out.stderr.contains("packets_per_second"),
        "the config error must name file, line ({at}) and key: {}",
        out.stderr
    );
    assert_eq!(env.probe(&env.lab.bad, false), 0);
    drop(config);

    // Repaired, the daemon starts, adopts the pins and has every decision.
    env.daemon.spawn();
    assert_eq!(env.daemon.status()["adopted"], true);
    assert_eq!(all_entries(&env), lists_before);
    assert_eq!(env.probe(&env.lab.bad, false), 0);
}

#[test]
fn a_damaged_config_on_sighup_keeps_the_running_one() {
    let env = Env::new(KERNEL_QUIET);
    let d = &env.daemon;
    d.ok(&["block", &BAD_V4.to_string()]);
    assert_eq!(env.probe(&env.lab.bad, false), 0);
    let status = d.status();
    let limits = status["limits"].clone();
    assert_eq!(limits["packets_per_second"], 0, "{status}");
    let lists = all_entries(&env);
    let pid = d.pid().expect("the daemon runs");
    let config = RestoreOnDrop::new(&d.config);
    let good_config = config.text.clone();

    let reloads = |what: &str| d.log().matches(what).count();
    let (refused_before, done_before) =
        (reloads("config reload refused"), reloads("config reloaded"));
    // A truncated copy: an unterminated string in the middle of the file.
    let cut = good_config
        .find("state_dir")
        .map(|at| at + "state_dir = \"/t".len())
        .expect("the config names state_dir");
    let damaged_configs = [
        good_config[..cut].to_owned(),
        good_config.replace("packets_per_second = 0", "packets_per_second = -5"),
        "\u{0}\u{1}binary".to_owned(),
    ];
    for (i, text) in damaged_configs.iter().enumerate() {
        std::fs::write(&d.config, text).expect("damage the config");
        send_signal(pid, libc::SIGHUP);
        wait_until("the reload to be refused", || {
            reloads("config reload refused") > refused_before + i
        });
        let log = d.log();
        let shown = d.config.display().to_string();
        assert!(
            log.lines()
                .filter(|l| l.contains("config reload refused"))
                .nth(refused_before + i)
                .is_some_and(|l| l.contains(&shown)),
            "the refusal does not name {shown}:\n{log}"
        );
        assert_eq!(d.pid(), Some(pid), "the daemon must survive a bad reload");
        assert_eq!(d.status()["limits"], limits, "the running config changed");
        assert_eq!(all_entries(&env), lists);
        assert_eq!(env.probe(&env.lab.bad, false), 0, "enforcement changed");
        assert_eq!(env.probe(&env.lab.good, false), N);
    }
    assert_eq!(reloads("config reloaded"), done_before);

    // A good config is taken on the next SIGHUP (the refusals above were not vacuous).
    std::fs::write(
        &d.config,
        good_config.replace("packets_per_second = 0", "packets_per_second = 5000"),
    )
    .expect("write the new config");
    send_signal(pid, libc::SIGHUP);
    wait_until("the good config to be loaded", || {
        d.status()["limits"]["packets_per_second"] == 5000
    });
    assert_eq!(env.probe(&env.lab.bad, false), 0);
}

// ---- (d) full maps --------------------------------------------------------------------------

/// Datagrams each flooding source sends, as fast as it can: far over its limit.
const FLOOD_EACH: u64 = 2_000;
/// Flooding sources besides the bad client's main address: more than the map holds.
const EXTRA_FLOODERS: u8 = 3;
/// Datagrams of the allowlisted flood, and the pause between them (about ten times the limit).
const ALLOWED_FLOOD: u64 = 3_000;
const ALLOWED_GAP: Duration = Duration::from_micros(100);
/// Entries of the list too large for `v4_nodes = 16`: each /32 alone in its /24 needs 2 nodes.
const BIG_LIST: u32 = 64;

#[test]
fn full_maps_are_reported_and_enforcement_holds() {
    let env = Env::new(FULL_MAPS);
    let kept = bad_extra(EXTRA_FLOODERS);
    for i in 0..=EXTRA_FLOODERS {
        env.add_bad_address(bad_extra(i));
    }
    let d = &env.daemon;
    d.ok(&["allow", &GOOD_V4.to_string()]);
    d.ok(&["block", &kept.to_string(), "--list", "keep"]);
    let target = env.rx.target(&env.lab.server, false);

    // Two sources flood, one after the other: both get auto-blocked, filling the map.
    let flooders: Vec<Host> = std::iter::once(env.lab.bad.clone())
        .chain((0..EXTRA_FLOODERS).map(|i| env.bad_as(bad_extra(i))))
        .collect();
    let flood = |h: &Host| {
        let sent = spawn_udp(h, target, Pace::flood(FLOOD_EACH))
            .join()
            .expect("flood sender");
        assert!(sent > FLOOD_EACH / 2, "{} sent only {sent}", h.v4);
    };
    for h in &flooders[..2] {
        flood(h);
    }
    wait_until("two auto-blocks", || kernel_blocks(&env).len() == 2);
    let held = kernel_blocks(&env);
    let status = d.status();
    assert_eq!(status["maps"]["auto_blocks"]["used"], 2, "{status}");
    assert_eq!(status["maps"]["auto_blocks"]["capacity"], 2, "{status}");
    let full_before = packets(&env.daemon.stats(), "details", "auto_block_full");

    // More flooders than room: reported, and the blocks in place are not evicted.
    for h in &flooders[2..] {
        flood(h);
    }
    let stats = env.daemon.stats();
    let full = packets(&stats, "details", "auto_block_full");
    assert!(full > full_before, "auto_block_full did not move: {stats}");
    assert!(packets(&stats, "verdicts", "rate_limited") > 0, "{stats}");
    assert_eq!(kernel_blocks(&env), held, "an auto-block was evicted");
    env.rx.settle();
    for h in &flooders {
        let got = env.rx.count(IpAddr::V4(h.v4));
        assert!(
            got * 4 < FLOOD_EACH,
            "{got} of {FLOOD_EACH} flood datagrams from {} got through",
            h.v4
        );
    }
    // The auto-blocks held are enforced: a trickle from their sources is dropped whole.
    for h in flooders
        .iter()
        .filter(|h| held.contains(&format!("{}/32", h.v4)))
    {
        assert_eq!(env.probe_n(h, false, 20), 0, "{} is auto-blocked", h.v4);
    }

    // An allowlisted source far over the limit loses nothing: allow beats rate limits.
    let allowed_before = packets(&env.daemon.stats(), "verdicts", "allowlisted");
    let good_before = env.rx.count(IpAddr::V4(GOOD_V4));
    let sent = spawn_udp(
        &env.lab.good,
        target,
        Pace {
            count: ALLOWED_FLOOD,
            gap: Some(ALLOWED_GAP),
            limit: Duration::from_secs(10),
        },
    )
    .join()
    .expect("allowed flood");
    env.rx.settle();
    let got = env.rx.count(IpAddr::V4(GOOD_V4)) - good_before;
    let allowed = packets(&env.daemon.stats(), "verdicts", "allowlisted") - allowed_before;
    eprintln!("allowlisted flood: {got} of {sent} arrived, {allowed} counted allowlisted");
    assert_eq!(sent, ALLOWED_FLOOD);
    assert_eq!(got, sent, "the allowlisted source lost datagrams");
    assert!(allowed >= sent, "allowlisted counted {allowed} of {sent}");
    assert!(
        !kernel_blocks(&env).contains(&format!("{GOOD_V4}/32")),
        "the allowlisted source was auto-blocked"
    );

    // A list larger than its map is refused whole; the old lists keep enforcing.
    let lists_before = d.json(&["lists", "--json"]);
    let mut text = String::new();
    for i in 0..BIG_LIST {
        writeln!(text, "198.19.{i}.1").expect("write to a string");
    }
    let big = env.file("big.txt", &text);
    let out = import(&env, &big, "big");
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("v4_nodes"),
        "the refusal must name the setting: {}",
        out.stderr
    );
    assert_eq!(
        d.json(&["lists", "--json"]),
        lists_before,
        "a refused import changed the lists"
    );
    assert_eq!(
        env.probe(&env.bad_as(kept), false),
        0,
        "the old list stopped enforcing"
    );
    assert_eq!(env.probe(&env.lab.good, false), N);
}

/// Entries of a `management_allow` too large for `v4_nodes = 16` (each /32 alone in its /24
/// needs 2 nodes); the map sizes are fixed at load, so a reload cannot make room.
const BIG_MANAGEMENT_ALLOW: u32 = 20;

/// `config` in monitor mode, with higher limits and a `management_allow` too large for its
/// maps: valid TOML, valid keys and values (`check-config` takes it), but it cannot be applied.
fn unappliable(config: &str) -> String {
    let allow: Vec<String> = (0..BIG_MANAGEMENT_ALLOW)
        .map(|i| format!("\"198.19.{i}.1\""))
        .collect();
    let first_table = config.find("\n[").expect("the config has tables") + 1;
    format!(
        "mode = \"monitor\"\n{}management_allow = [{}]\n{}",
        &config[..first_table],
        allow.join(", "),
        config[first_table..].replace("packets_per_second = 0", "packets_per_second = 5000"),
    )
}

/// A config that parses but cannot be applied (its allowlist does not fit the loaded maps) is
/// refused on SIGHUP like a damaged one: the running config, mode and limits stay, in the
/// daemon and in the kernel.
///
/// Fails today: `daemon::reload` writes the new settings (mode, limits) to the kernel before
/// `reapply` refuses the allowlist, then restores only its in-memory config. The daemon logs
/// "config reload failed ... nothing was applied" and reports `mode = enforce`, while the
/// kernel runs the new config: in monitor mode, passing the blocked source.
#[test]
fn a_reload_that_cannot_be_applied_keeps_the_running_config() {
    let env = Env::new(&format!("{KERNEL_QUIET}[capacity]\nv4_nodes = 16\n"));
    let d = &env.daemon;
    d.ok(&["block", &BAD_V4.to_string()]);
    assert_eq!(env.probe(&env.lab.bad, false), 0);
    let limits = d.status()["limits"].clone();
    assert_eq!(limits["packets_per_second"], 0, "{limits}");
    let lists = all_entries(&env);
    let pid = d.pid().expect("the daemon runs");
    let config = RestoreOnDrop::new(&d.config);
    let failed = |log: &str| log.matches("config reload failed").count();
    let failed_before = failed(&d.log());

    std::fs::write(&config.path, unappliable(&config.text)).expect("write the new config");
    let check = d.cli(&["check-config", config.path.to_str().expect("utf-8 path")]);
    assert!(check.success(), "the new config is valid: {check:?}");
    send_signal(pid, libc::SIGHUP);
    wait_until("the reload to fail", || failed(&d.log()) > failed_before);
    assert_eq!(
        d.pid(),
        Some(pid),
        "the daemon must survive a failed reload"
    );
    assert_eq!(
        all_entries(&env),
        lists,
        "a failed reload changed the lists"
    );
    let status = d.status();
    assert_eq!(status["mode"], "enforce", "{status}");
    assert_eq!(
        env.probe(&env.lab.bad, false),
        0,
        "after a failed reload the blocked source passes: the kernel took the new config's \
         monitor mode"
    );
    assert_eq!(
        status["limits"], limits,
        "a failed reload left its new limits in the kernel while the daemon went back to the \
         old config"
    );
}

/// The same config at a restart: the daemon refuses to start, naming the setting, and the
/// pinned program keeps enforcing what it had.
///
/// Fails today: `daemon::run` writes the new settings to the adopted program before
/// `reapply` fails, so the daemon exits and leaves the kernel in the new config's monitor
/// mode, passing the blocked source with no daemon running.
#[test]
fn a_start_that_cannot_apply_its_config_leaves_the_kernel_as_it_was() {
    let mut env = Env::new(&format!("{KERNEL_QUIET}[capacity]\nv4_nodes = 16\n"));
    env.daemon.ok(&["block", &BAD_V4.to_string()]);
    assert_eq!(env.probe(&env.lab.bad, false), 0);
    env.daemon.kill9();
    let config = RestoreOnDrop::new(&env.daemon.config);
    std::fs::write(&config.path, unappliable(&config.text)).expect("write the new config");
    let out = env.daemon.run_expecting_refusal(&env.daemon.socket);
    assert!(
        out.stderr.contains("v4_nodes"),
        "the refusal must name the setting: {}",
        out.stderr
    );
    assert_eq!(
        env.probe(&env.lab.bad, false),
        0,
        "after a refused start the blocked source passes: the kernel took the refused \
         config's monitor mode"
    );
    drop(config);
    env.daemon.spawn();
    assert_eq!(env.daemon.status()["adopted"], true);
    assert_eq!(env.probe(&env.lab.bad, false), 0);
}
