//! End-to-end tests: the real `api-shield` daemon attached to a veth in a network namespace,
//! real UDP traffic from two client namespaces through a bridge, outcomes read from the
//! receiving socket and from the shield's own counters, lists and status.
//!
//! Each test builds its own lab (unique namespace names, its own `pin_root` and temp dir) and
//! removes it when it ends, also on panic. Only 198.18.0.0/15 and 2001:db8::/32 are used.
//! Needs root and the release binary (`API_SHIELD_BIN`, else `target/release/api-shield`).

use serde_json::Value;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use tests::daemon::{Daemon, KERNEL_QUIET, packets};
use tests::lab_env::Env;
use tests::metrics::scrape;
use tests::netns::{BAD_V4, BAD_V6, GOOD_V4, Pace, SERVER_V4, SERVER_V6, send_udp, spawn_udp};

/// Datagrams each client sends per exchange.
const N: u64 = 200;
/// `nobody` / `nogroup` on Debian.
const NOBODY: u32 = 65_534;

/// 100 packets per second with a burst of 100 per source; 50 over-limit packets within 10 s
/// get a source blocked in the kernel for 2 minutes.
const FLOOD_LIMITS: &str = "\
[limits]
packets_per_second = 100
burst = 100
syn_per_second = 0
[autoblock]
strikes = 50
window = \"10s\"
ttl = \"2m\"
";

/// What only these tests ask of the shared lab.
trait E2eEnv {
    /// `verdicts.blocklisted.packets`.
    fn blocklisted(&self) -> u64;
}

impl E2eEnv for Env {
    fn blocklisted(&self) -> u64 {
        packets(&self.daemon.stats(), "verdicts", "blocklisted")
    }
}

fn has_entry(list: &[Value], net: &str, origin: &str) -> bool {
    list.iter()
        .any(|e| e["net"] == net && e["origin"] == origin && e["action"] == "block")
}

fn nets(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|e| e["net"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// Blocks `token`, checks that bad's traffic over `v6` is dropped and counted while good's
/// arrives, unblocks, and checks that bad's traffic arrives again.
fn check_block(env: &Env, token: &str, listed_as: &str, v6: bool) {
    env.daemon.ok(&["block", token, "--reason", "e2e"]);
    let blocked = env.daemon.list(Some("blocked"));
    assert!(
        has_entry(&blocked, listed_as, "cli"),
        "{listed_as} not listed: {blocked:?}"
    );
    let before = env.blocklisted();
    let (good, bad) = env.exchange(v6, N);
    assert_eq!(good, N, "good lost datagrams while {token} was blocked");
    assert_eq!(
        bad, 0,
        "datagrams from bad arrived while {token} was blocked"
    );
    let dropped = N - bad;
    let counted = env.blocklisted() - before;
    assert!(
        counted >= dropped,
        "blocklisted grew by {counted}, but {dropped} datagrams were dropped"
    );

    env.daemon.ok(&["unblock", token]);
    assert!(
        env.daemon.list(Some("blocked")).is_empty(),
        "still listed after unblock"
    );
    assert_eq!(
        env.exchange(v6, N),
        (N, N),
        "delivery not restored after unblocking {token}"
    );
}

#[test]
fn blocked_source_is_dropped_and_unblock_restores_it() {
    let env = Env::new(KERNEL_QUIET);
    assert_eq!(env.exchange(false, N), (N, N), "the lab lost datagrams");
    check_block(&env, &BAD_V4.to_string(), "198.18.1.35/32", false);
    let blocked = env.daemon.list(Some("blocked"));
    assert!(blocked.is_empty(), "{blocked:?}");
}

#[test]
fn cidr_and_ipv6_blocks() {
    let env = Env::new(KERNEL_QUIET);
    assert_eq!(env.exchange(true, N), (N, N), "the lab lost IPv6 datagrams");
    check_block(&env, "198.18.1.32/28", "198.18.1.32/28", false);
    check_block(&env, &BAD_V6.to_string(), "2001:db8:1:3::3/128", true);
    check_block(&env, "2001:db8:1:3::/64", "2001:db8:1:3::/64", true);

    // A v6 block leaves the same client's IPv4 traffic alone.
    env.daemon.ok(&["block", "2001:db8:1:3::/64"]);
    assert_eq!(env.exchange(false, N), (N, N), "an IPv6 block dropped IPv4");
    assert_eq!(env.exchange(true, N), (N, 0));
    env.daemon.ok(&["unblock", "2001:db8:1:3::/64"]);
}

#[test]
fn flood_is_cut_and_the_source_auto_blocked() {
    let env = Env::new(FLOOD_LIMITS);
    let target = env.rx.target(&env.lab.server, false);
    let (good, bad) = (IpAddr::V4(GOOD_V4), IpAddr::V4(BAD_V4));

    let slow = Pace {
        count: 20,
        gap: Some(Duration::from_millis(50)),
        limit: Duration::from_secs(10),
    };
    let g = spawn_udp(&env.lab.good, target, slow);
    let b = spawn_udp(&env.lab.bad, target, Pace::flood(5_000));
    let bad_sent = b.join().expect("flood sender");
    let good_sent = g.join().expect("good sender");
    env.rx.settle();
    let (good_got, bad_got) = (env.rx.count(good), env.rx.count(bad));
    eprintln!("flood: bad sent {bad_sent}, received {bad_got}; good {good_got} of {good_sent}");
    assert_eq!(good_sent, 20);
    assert_eq!(
        good_got, 20,
        "the good client lost datagrams during the flood"
    );
    assert!(
        bad_sent >= 4_000,
        "the flood was not a flood: {bad_sent} sent"
    );
    assert!(
        bad_got * 5 < bad_sent,
        "{bad_got} of {bad_sent} flood datagrams got through"
    );

    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let blocked = env.daemon.list(Some("blocked"));
        if has_entry(&blocked, "198.18.1.35/32", "kernel") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no kernel auto-block for 198.18.1.35/32 within 2 s: {blocked:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Auto-blocked now: even a trickle is dropped.
    assert_eq!(send_udp(&env.lab.bad, target, Pace::steady(10)), 10);
    env.rx.settle();
    assert_eq!(
        env.rx.count(bad),
        bad_got,
        "traffic from an auto-blocked source arrived"
    );
    assert_eq!(
        env.exchange(false, 20).0,
        20,
        "good traffic after the auto-block"
    );

    let stats = env.daemon.stats();
    assert!(packets(&stats, "verdicts", "rate_limited") > 0, "{stats}");
    assert!(packets(&stats, "details", "block_auto") > 0, "{stats}");
}

#[test]
fn blocks_survive_kill_9_and_a_restart_adopts_the_pins() {
    let mut env = Env::new(KERNEL_QUIET);
    env.daemon.ok(&["block", &BAD_V4.to_string()]);
    assert_eq!(env.exchange(false, 50), (50, 0));
    let status = env.daemon.status();
    assert_eq!(status["adopted"], false, "{status}");
    let program_id = status["program_id"].clone();
    assert!(program_id.is_u64(), "{status}");
    let before = env.blocklisted();

    env.daemon.kill9();
    assert_eq!(
        env.exchange(false, 50),
        (50, 0),
        "the block is not enforced after kill -9 of the daemon"
    );

    env.daemon.spawn();
    let status = env.daemon.status();
    assert_eq!(status["adopted"], true, "{status}");
    assert_eq!(status["program_id"], program_id, "{status}");
    let blocked = env.daemon.list(Some("blocked"));
    assert!(has_entry(&blocked, "198.18.1.35/32", "cli"), "{blocked:?}");
    let after = env.blocklisted();
    assert!(
        after >= before + 50,
        "blocklisted went from {before} to {after} across the restart, with 50 drops meanwhile"
    );
    assert_eq!(env.exchange(false, 50), (50, 0), "after the restart");
}

#[test]
fn bad_cli_input_changes_nothing() {
    let env = Env::new(KERNEL_QUIET);
    let d = &env.daemon;
    d.ok(&["block", "198.18.5.8", "--ttl", "10m", "--reason", "seed"]);
    let listed = d.list(None);
    assert_eq!(nets(&listed), ["198.18.5.8/32"]);

    for (args, token) in [
        (&["block", "198.18.0.300"][..], "198.18.0.300"),
        (&["block", "198.18.5.7/24"], "198.18.5.7/24"),
        (&["block", "--ttl", "10x", "198.18.5.7"], "10x"),
        (&["block", "198.18.5.7", "nonsense"], "nonsense"),
        // Past year 9999 no formatter can print it; `list` once panicked on such an entry.
        (&["block", "--ttl", "20000y", "198.18.5.7"], "max_ttl"),
        (&["block", "--ttl", "11y", "198.18.5.7"], "max_ttl"),
    ] {
        let out = d.cli(args);
        assert_eq!(out.code, Some(2), "`{}`: {out:?}", args.join(" "));
        assert!(
            out.stderr.contains(token),
            "`{}` does not name `{token}`: {}",
            args.join(" "),
            out.stderr
        );
        assert_eq!(
            d.list(None),
            listed,
            "`{}` changed the lists",
            args.join(" ")
        );
    }

    // The daemon checks too: a raw request mixing a good and a bad token applies nothing.
    let answer = d.raw_request(b"{\"op\":\"block\",\"nets\":[\"198.18.5.7\",\"nonsense\"]}\n");
    assert_eq!(answer["result"], "error", "{answer}");
    assert_eq!(answer["code"], "invalid_input", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or("")
            .contains("nonsense"),
        "{answer}"
    );
    assert_eq!(
        d.list(None),
        listed,
        "a refused raw request changed the lists"
    );
    // A field the daemon does not know is refused by name, not ignored: `ttl` for `ttl_secs`
    // once made a permanent block.
    let answer = d.raw_request(b"{\"op\":\"block\",\"nets\":[\"198.18.5.7\"],\"ttl\":60}\n");
    assert_eq!(answer["code"], "invalid_input", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or("")
            .contains("unknown field `ttl`"),
        "{answer}"
    );
    assert_eq!(d.list(None), listed, "an unknown field changed the lists");
    let out = d.ok(&["list"]);
    assert!(out.stdout.contains("198.18.5.8/32"), "{out:?}");

    let cfg = d.dir.join("unknown-key.toml");
    std::fs::write(&cfg, "mode = \"enforce\"\n\nno_such_key = 1\n").expect("write the config");
    let out = d.cli(&["check-config", cfg.to_str().expect("utf-8 path")]);
    assert_eq!(out.code, Some(2), "{out:?}");
    let at = format!("{}:3", cfg.display());
    assert!(out.stderr.contains(&at), "no `{at}` in: {}", out.stderr);
    assert!(out.stderr.contains("no_such_key"), "{}", out.stderr);
}

#[test]
fn non_root_peer_is_refused() {
    let env = Env::new(KERNEL_QUIET);
    let d = &env.daemon;
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let bad = BAD_V4.to_string();

    // As the daemon made it: the socket is root's, mode 0660.
    let out = d.cli_as(NOBODY, NOBODY, &["block", &bad]);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(d.list(Some("blocked")).is_empty());

    // Even with the socket opened to everyone, the daemon itself refuses the peer.
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666))
        .expect("chmod socket");
    for args in [
        &["block", bad.as_str()][..],
        &["status", "--json"],
        &["list"],
        &["reload"],
    ] {
        let out = d.cli_as(NOBODY, NOBODY, args);
        assert_eq!(out.code, Some(3), "`{}` as nobody: {out:?}", args.join(" "));
        assert!(out.stderr.contains("permission denied"), "{}", out.stderr);
    }
    assert!(
        d.list(Some("blocked")).is_empty(),
        "a refused peer's block was applied"
    );
    assert!(
        audited(d, "reload").is_empty(),
        "a refused peer's reload ran"
    );
    assert_eq!(d.status()["adopted"], false);
    assert_eq!(env.exchange(false, 20), (20, 20));
}

#[test]
fn lockout_is_refused_unless_forced() {
    let env = Env::new(KERNEL_QUIET);
    let d = &env.daemon;
    let own_v4 = SERVER_V4.to_string();
    let own_v6 = SERVER_V6.to_string();
    let bad = BAD_V4.to_string();
    for (args, named) in [
        (vec!["block", own_v4.as_str()], own_v4.as_str()),
        (vec!["block", "198.18.1.0/24"], own_v4.as_str()),
        (vec!["block", own_v6.as_str()], own_v6.as_str()),
        (vec!["block", "2001:db8:1::/48"], own_v6.as_str()),
        (
            vec!["block", bad.as_str(), "198.18.0.0/15"],
            own_v4.as_str(),
        ),
    ] {
        let out = d.cli(&args);
        assert_eq!(out.code, Some(2), "`{}`: {out:?}", args.join(" "));
        assert!(
            out.stderr.contains(named) && out.stderr.contains("--force"),
            "`{}`: {}",
            args.join(" "),
            out.stderr
        );
        let blocked = d.list(Some("blocked"));
        assert!(
            blocked.is_empty(),
            "`{}` applied {blocked:?}",
            args.join(" ")
        );
    }
    assert_eq!(
        env.exchange(false, 20),
        (20, 20),
        "a refused block is enforced"
    );

    d.ok(&["block", &own_v4, "--force"]);
    let blocked = d.list(Some("blocked"));
    assert!(has_entry(&blocked, "198.18.1.1/32", "cli"), "{blocked:?}");
}

// ---- reload over the control socket ---------------------------------------------------------

/// The audit records of `op` in the daemon's audit log.
fn audited(d: &Daemon, op: &str) -> Vec<Value> {
    std::fs::read_to_string(d.dir.join("audit.jsonl"))
        .expect("read the audit log")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|r| r["op"] == op)
        .collect()
}

/// Puts the daemon's config file back when dropped (also on panic), so the guard's `detach`
/// reads the config the daemon was started with.
struct ConfigRestore {
    path: std::path::PathBuf,
    text: String,
}

impl ConfigRestore {
    fn new(d: &Daemon) -> Self {
        let text = std::fs::read_to_string(&d.config).expect("read the config");
        Self {
            path: d.config.clone(),
            text,
        }
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.path, text).expect("write the config");
    }
}

impl Drop for ConfigRestore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, &self.text) {
            eprintln!("e2e: cannot restore {}: {e}", self.path.display());
        }
    }
}

/// `api-shield reload` waits for the daemon and reports: a good config takes effect before
/// the command returns (exit 0, audited with the caller); SIGHUP still reloads too.
#[test]
fn reload_over_the_socket_applies_a_good_config() {
    let env = Env::new(KERNEL_QUIET);
    let d = &env.daemon;
    let config = ConfigRestore::new(d);
    d.ok(&["block", &BAD_V4.to_string()]);
    assert_eq!(env.exchange(false, 20), (20, 0), "the block is enforced");

    // Monitor mode: the blocked source's traffic passes (counted), as soon as reload returns.
    config.write(
        &config
            .text
            .replacen("[limits]", "mode = \"monitor\"\n[limits]", 1),
    );
    let out = d.cli(&["reload"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("reloaded {}", d.config.display())),
        "{out:?}"
    );
    assert_eq!(d.status()["mode"], "monitor");
    assert_eq!(
        env.exchange(false, 20),
        (20, 20),
        "monitor mode is not in force once `reload` returned"
    );
    let records = audited(d, "reload");
    let last = records.last().expect("the reload is audited");
    assert_eq!(last["result"], "ok", "{last}");
    assert_eq!(last["uid"], 0, "{last}");
    assert_eq!(last["args"]["trigger"], "control_socket", "{last}");

    // Something bound at start comes back as a warning, and the rest still applies.
    config.write(
        &config
            .text
            .replacen("[limits]", "[capacity]\nrules = 4096\n[limits]", 1),
    );
    let out = d.cli(&["reload", "--json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let body: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert!(
        body["warnings"].as_array().is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().unwrap_or("").contains("capacity"))),
        "{body}"
    );
    assert_eq!(d.status()["mode"], "enforce");
    assert_eq!(env.exchange(false, 20), (20, 0), "back to enforcing");

    // SIGHUP keeps working, audited as the daemon's own act.
    config.write(
        &config
            .text
            .replacen("[limits]", "mode = \"monitor\"\n[limits]", 1),
    );
    let pid = d.pid().expect("the daemon runs");
    let out = tests::netns::run(
        std::process::Command::new("kill").args(["-HUP", &pid.to_string()]),
        tests::netns::COMMAND_TIMEOUT,
    );
    assert!(out.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.status()["mode"] != "monitor" {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    let records = audited(d, "reload");
    assert_eq!(
        records.last().expect("audited")["args"]["trigger"],
        "sighup"
    );
}

/// A broken config: `reload` exits 1 and prints every problem with its line; the daemon keeps
/// running with the config it had, in userspace and in the kernel.
#[test]
fn reload_of_a_broken_config_names_every_error_and_changes_nothing() {
    let env = Env::new(KERNEL_QUIET);
    let d = &env.daemon;
    let config = ConfigRestore::new(d);
    d.ok(&["block", &BAD_V4.to_string()]);
    let status = d.status();
    let listed = d.list(None);
    let pid = d.pid().expect("the daemon runs");

    // Four problems on four lines; the first table holds line 5 onwards.
    let broken = config.text.replacen(
        "[limits]",
        "mode = \"enforced\"\nno_such_key = 1\n[limits]\nbrust = 3",
        1,
    );
    let broken = broken.replace("packets_per_second = 0", "packets_per_second = -5");
    config.write(&broken);
    let line_of = |needle: &str| {
        broken
            .lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("no `{needle}` in the broken config"))
    };
    let out = d.cli(&["reload"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    for needle in [
        "enforced",
        "no_such_key",
        "brust",
        "packets_per_second = -5",
    ] {
        let at = format!("{}:{}", d.config.display(), line_of(needle));
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains(&at) && l.contains(needle.split(' ').next().unwrap_or(""))),
            "`{needle}` is not reported at {at}:\n{}",
            out.stderr
        );
    }
    assert!(out.stderr.contains("changed nothing"), "{}", out.stderr);

    assert_eq!(d.pid(), Some(pid));
    let after = d.status();
    assert_eq!(after["mode"], status["mode"]);
    assert_eq!(after["limits"], status["limits"]);
    assert_eq!(d.list(None), listed);
    assert_eq!(
        env.exchange(false, 20),
        (20, 0),
        "the block is still enforced"
    );
    let records = audited(d, "reload");
    let last = records.last().expect("the failed reload is audited");
    assert_eq!(last["result"], "error", "{last}");
    assert_eq!(
        last["detail"].as_array().map(Vec::len),
        Some(4),
        "every problem in the audit record: {last}"
    );

    // Fixed: the next reload takes it.
    config.write(&config.text);
    assert_eq!(d.cli(&["reload"]).code, Some(0));
    assert_eq!(d.pid(), Some(pid));
}

// ---- detach while a daemon runs -------------------------------------------------------------

/// `detach` of the interface a running daemon manages is refused (nothing changes); with
/// `--force` it goes ahead, and the daemon notices within a second or two: an error in its
/// log, an audit record, and `attached: false` in `status`, read from the kernel.
#[test]
fn detach_of_a_running_daemons_interface_needs_force_and_is_noticed() {
    const METRICS: &str = "127.0.0.1:9381";
    let env = Env::new(&format!(
        "{KERNEL_QUIET}[metrics]\nlisten = \"{METRICS}\"\n"
    ));
    let d = &env.daemon;
    d.ok(&["block", &BAD_V4.to_string()]);
    let status = d.status();
    assert_eq!(status["attached"], true, "{status}");
    assert_eq!(status["attached_detail"], Value::Null, "{status}");
    let attached_metric = || scrape(&d.netns, METRICS).get("api_shield_attached", &[]);
    assert_eq!(attached_metric(), 1.0);
    let pid = d.pid().expect("the daemon runs");

    let out = d.detach().expect("detach");
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains(&format!("pid {pid}")) && out.stderr.contains("--force"),
        "{}",
        out.stderr
    );
    assert!(
        d.pin_dir().join("link").exists(),
        "a refused detach removed the pins"
    );
    assert_eq!(d.status()["attached"], true);
    assert_eq!(
        env.exchange(false, 20),
        (20, 0),
        "a refused detach stopped enforcement"
    );

    // A second daemon on the same interface is refused too (another socket, same config).
    let second = tests::netns::run(
        std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", d.netns))
            .arg(&d.bin)
            .arg("--socket")
            .arg(d.dir.join("second.sock"))
            .args(["run", "--iface", &d.iface, "--config"])
            .arg(&d.config),
        tests::netns::COMMAND_TIMEOUT,
    );
    assert_eq!(second.code, Some(1), "{second:?}");
    assert!(
        second
            .stderr
            .contains(&format!("held by another api-shield daemon (pid {pid})")),
        "{}",
        second.stderr
    );
    assert_eq!(
        d.status()["attached"],
        true,
        "the refused second daemon changed something"
    );

    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", d.netns))
        .arg(&d.bin)
        .args(["detach", "--iface", &d.iface, "--force", "--config"])
        .arg(&d.config);
    let out = tests::netns::run(&mut cmd, tests::netns::COMMAND_TIMEOUT);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("warning"), "{}", out.stderr);
    // At once, the kernel's view: nothing attached.
    let status = d.status();
    assert_eq!(status["attached"], false, "{status}");
    assert!(
        status["attached_detail"]
            .as_str()
            .is_some_and(|t| t.contains(&d.iface)),
        "{status}"
    );
    assert_eq!(env.exchange(false, 20), (20, 20), "the program still runs");
    // Within the watch's period (one second) and some slack: said loudly, and audited.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.log().contains("THE SHIELD IS NOT ENFORCING") {
        assert!(
            Instant::now() < deadline,
            "the daemon did not report the lost attachment:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let lost = audited(d, "link_lost");
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0]["result"], "error");
    assert_eq!(lost[0]["args"]["iface"], d.iface.as_str());
    // Still up, still answering, and reported once, not every second.
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(d.pid(), Some(pid));
    assert_eq!(d.status()["attached"], false);
    assert_eq!(audited(d, "link_lost").len(), 1);
    assert_eq!(d.log().matches("THE SHIELD IS NOT ENFORCING").count(), 1);
    assert_eq!(attached_metric(), 0.0);
}
