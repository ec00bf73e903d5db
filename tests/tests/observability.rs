//! Observability and installation: the daemon's Prometheus endpoint scraped over real HTTP in
//! a namespace lab while traffic flows and the gateway answers checks, the Grafana dashboard
//! against a real scrape, `api-shield top --plain` (and the terminal view in tmux) showing a
//! flood's offender, the audit log reopened on SIGHUP, the systemd unit (verified, and its
//! capability set proven sufficient by running the daemon with exactly those), and the
//! example config.
//!
//! The lab tests need root and the release binary, like `e2e.rs`; they use only 198.18.0.0/15
//! and 2001:db8::/32 inside namespaces they create. The metrics listener is on 127.0.0.1 of
//! the server's namespace, so scrapes never cross the shield.

use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use tests::daemon::{Daemon, binary, packets};
use tests::metrics::{Metrics, number};
use tests::netns::{
    BAD_V4, COMMAND_TIMEOUT, GOOD_V4, Lab, Pace, Receiver, in_netns, run, send_udp, spawn_udp,
    unique_id,
};

/// UDP port of the counting receiver on the server.
const PORT: u16 = 9000;
/// Where each test daemon serves metrics, inside its own server namespace.
const METRICS: &str = "127.0.0.1:9381";
/// Where a test daemon with a gateway answers checks, inside its own server namespace.
const CHECK: &str = "127.0.0.1:9382";
/// Bytes of one test datagram as the XDP program sees it: Ethernet 14, IPv4 20, UDP 8 and the
/// 32-byte payload of `tests::netns`.
const FRAME_BYTES: u64 = 14 + 20 + 8 + 32;
/// Datagrams per client per exchange.
const N: u64 = 300;
/// Packets the namespaces may send on their own meanwhile (IPv6 neighbour and multicast
/// chatter), all of them passed.
const NOISE: u64 = 30;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn repo_file(path: &str) -> PathBuf {
    Path::new(REPO).join(path)
}

/// Rate limits and auto-blocking off: only the lists decide; metrics on. `top` holds
/// top-level keys, `tail` more tables.
fn lists_only(top: &str, tail: &str) -> String {
    format!(
        "{top}[limits]\npackets_per_second = 0\nsyn_per_second = 0\n[autoblock]\nstrikes = 0\n\
         [metrics]\nlisten = \"{METRICS}\"\n{tail}"
    )
}

/// 100 packets per second with a burst of 100; 50 over-limit packets in 10 s get a source
/// auto-blocked for 2 minutes.
fn flood_limits() -> String {
    format!(
        "[limits]\npackets_per_second = 100\nburst = 100\nsyn_per_second = 0\n\
         [autoblock]\nstrikes = 50\nwindow = \"10s\"\nttl = \"2m\"\n\
         [metrics]\nlisten = \"{METRICS}\"\n"
    )
}

// ---- scraping --------------------------------------------------------------------------------

fn http_get(netns: &str, path: &'static str) -> (u16, String, String) {
    tests::metrics::http_get(netns, METRICS, path)
}

fn scrape(daemon: &Daemon) -> Metrics {
    tests::metrics::scrape(&daemon.netns, METRICS)
}

// ---- the metrics endpoint --------------------------------------------------------------------

/// A list file for a feed, in a temp directory removed on drop.
struct FeedFile {
    dir: PathBuf,
    path: PathBuf,
}

impl FeedFile {
    fn new(lines: &str) -> FeedFile {
        let dir = std::env::temp_dir().join(format!("api-shield-obs-feed-{}", unique_id()));
        fs::create_dir_all(&dir).expect("create the feed dir");
        let path = dir.join("list.netset");
        fs::write(&path, lines).expect("write the feed file");
        FeedFile { dir, path }
    }
}

impl Drop for FeedFile {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn metrics_count_the_traffic_sent() {
    let feed = FeedFile::new("# test feed\n198.18.200.0/24\n2001:db8:c8::/48\n");
    let policy = feed.dir.join("policy.toml");
    fs::write(&policy, GATEWAY_POLICY).expect("write the policy");
    let lab = Lab::new();
    let daemon = Daemon::start(
        &lab,
        &lists_only(
            "",
            &format!(
                "[[feeds]]\nname = \"obsfeed\"\npath = \"{}\"\ninterval = \"1s\"\n\
                 [gateway]\ncheck_listen = \"{CHECK}\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
                 policy_file = \"{}\"\n",
                feed.path.display(),
                policy.display()
            ),
        ),
    );
    let rx = Receiver::start(&lab.server, PORT);
    let target = rx.target(&lab.server, false);
    let (good, bad) = (IpAddr::V4(GOOD_V4), IpAddr::V4(BAD_V4));
    // With an expiry, so that it takes a rule (permanent entries need none).
    let bad_v4 = BAD_V4.to_string();
    daemon.ok(&[
        "block",
        &bad_v4,
        "--ttl",
        "10m",
        "--reason",
        "observability",
    ]);

    // Anything other than /metrics is refused; / points there.
    let (status, _, body) = http_get(&daemon.netns, "/nothing");
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = http_get(&daemon.netns, "/");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("/metrics"), "{body}");

    // The feed has loaded once the daemon is up; wait for its sync to be sure.
    let deadline = Instant::now() + Duration::from_secs(5);
    let before = loop {
        let m = scrape(&daemon);
        if m.find("api_shield_feed_syncs_total", &[("feed", "obsfeed")])
            .is_some_and(|s| number(s) >= 1.0)
        {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the feed never synced:\n{}",
            m.text
        );
        thread::sleep(Duration::from_millis(100));
    };

    // Scrape while both clients send: good is passed, bad is dropped by the cli block.
    let g = spawn_udp(&lab.good, target, Pace::steady(N));
    let b = spawn_udp(&lab.bad, target, Pace::steady(N));
    let during = scrape(&daemon);
    let sent = (
        g.join().expect("good sender"),
        b.join().expect("bad sender"),
    );
    assert_eq!(
        sent,
        (N, N),
        "the client sockets did not take every datagram"
    );
    rx.settle();
    assert_eq!(
        (rx.count(good), rx.count(bad)),
        (N, 0),
        "the lab lost datagrams"
    );
    let after = scrape(&daemon);

    let delta = |name: &str, labels: &[(&str, &str)]| {
        let (b, d, a) = (
            before.count(name, labels),
            during.count(name, labels),
            after.count(name, labels),
        );
        assert!(b <= d && d <= a, "{name}{labels:?} went {b} -> {d} -> {a}");
        a - b
    };
    let blocklisted = [("verdict", "blocklisted")];
    assert_eq!(delta("api_shield_verdict_packets_total", &blocklisted), N);
    assert_eq!(
        delta("api_shield_verdict_bytes_total", &blocklisted),
        N * FRAME_BYTES
    );
    let origin = [("origin", "cli")];
    assert_eq!(delta("api_shield_origin_dropped_packets_total", &origin), N);
    assert_eq!(
        delta("api_shield_origin_dropped_bytes_total", &origin),
        N * FRAME_BYTES
    );
    let passed = delta("api_shield_verdict_packets_total", &[("verdict", "pass")]);
    assert!(
        (N..=N + NOISE).contains(&passed),
        "pass grew by {passed} while {N} datagrams were passed"
    );
    for verdict in ["rate_limited", "malformed", "monitored", "allowlisted"] {
        assert_eq!(
            delta("api_shield_verdict_packets_total", &[("verdict", verdict)]),
            0,
            "{verdict}"
        );
    }
    assert_eq!(
        delta(
            "api_shield_origin_dropped_packets_total",
            &[("origin", "obsfeed")]
        ),
        0
    );

    // The scrape and `stats` read the same counters.
    let stats = daemon.stats();
    assert_eq!(
        packets(&stats, "verdicts", "blocklisted"),
        after.count("api_shield_verdict_packets_total", &blocklisted)
    );

    // Lists, maps, feeds, build and attachment.
    let entries = |origin: &str, action: &str| {
        after.count(
            "api_shield_origin_entries",
            &[("origin", origin), ("action", action)],
        )
    };
    assert_eq!(entries("cli", "block"), 1);
    assert_eq!(entries("obsfeed", "block"), 2);
    assert_eq!(entries("kernel", "block"), 0);
    assert_eq!(
        after.count("api_shield_map_capacity", &[("map", "rules")]),
        65_536
    );
    assert_eq!(after.count("api_shield_map_used", &[("map", "rules")]), 1);
    assert!(after.count("api_shield_map_used", &[("map", "v4_nodes")]) >= 1);
    assert!(after.count("api_shield_map_used", &[("map", "v6_entries")]) >= 1);
    // Map fill and capacity are exactly what `status` reports.
    let status = daemon.status();
    let maps = status["maps"].as_object().expect("status.maps");
    assert_eq!(maps.len(), 6, "{status}");
    for (map, fill) in maps {
        let labels = [("map", map.as_str())];
        assert_eq!(
            Some(after.count("api_shield_map_capacity", &labels)),
            fill["capacity"].as_u64(),
            "{map}"
        );
        assert_eq!(
            after
                .find("api_shield_map_used", &labels)
                .map(|s| number(s) as u64),
            fill["used"].as_u64(),
            "{map}"
        );
    }
    assert!(
        after
            .find("api_shield_map_used", &[("map", "offenders")])
            .is_none()
    );
    assert_eq!(
        after.count("api_shield_feed_errors_total", &[("feed", "obsfeed")]),
        0
    );
    assert_eq!(
        after.count("api_shield_feed_degraded", &[("feed", "obsfeed")]),
        0
    );
    let synced = after.get(
        "api_shield_feed_last_success_timestamp_seconds",
        &[("feed", "obsfeed")],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        (now - 60.0..=now + 1.0).contains(&synced),
        "last sync {synced}, now {now}"
    );
    let started = after.get("api_shield_start_time_seconds", &[]);
    assert!(
        (now - 120.0..=now).contains(&started),
        "started {started}, now {now}"
    );
    assert_eq!(
        after.count(
            "api_shield_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1
    );
    let mode = status["xdp_mode"].as_str().expect("xdp_mode in status");
    assert_eq!(
        after.count(
            "api_shield_xdp_info",
            &[("iface", daemon.iface.as_str()), ("mode", mode)]
        ),
        1
    );
    assert_eq!(after.count("api_shield_monitor_mode", &[]), 0);

    // The gateway: two requests pass, the third is over the per-IP limit; on the dry-run
    // route the second is over it and passes.
    let client = GOOD_V4.to_string();
    let statuses: Vec<u16> = ["/v1/items", "/v1/items", "/v1/items", "/trial", "/trial"]
        .into_iter()
        .map(|path| check(&daemon, &client, path))
        .collect();
    assert_eq!(statuses, [200, 200, 429, 200, 200]);
    let full = scrape(&daemon);
    let requests = |route: &str, class: &str| {
        full.count(
            "api_shield_gateway_requests_total",
            &[
                ("listener", "check"),
                ("route", route),
                ("status_class", class),
                ("auth", "anonymous"),
            ],
        )
    };
    assert_eq!(
        [
            requests("public", "2xx"),
            requests("public", "4xx"),
            requests("trial", "2xx")
        ],
        [2, 1, 2],
        "{}",
        full.text
    );
    assert_eq!(full.sum("api_shield_gateway_requests_total", &[]), 5);
    let per_ip = |route| [("route", route), ("limit", "per-ip")];
    assert_eq!(
        full.count(
            "api_shield_gateway_quota_rejections_total",
            &per_ip("public")
        ),
        1
    );
    assert_eq!(
        full.count(
            "api_shield_gateway_quota_dry_run_rejections_total",
            &per_ip("trial")
        ),
        1
    );
    assert_eq!(
        full.sum("api_shield_gateway_quota_rejections_total", &[]),
        1
    );
    assert_eq!(full.sum("api_shield_gateway_escalations_total", &[]), 0);
    assert_eq!(
        full.histogram_count(
            "api_shield_gateway_escalation_latency_seconds",
            &[("rule", "auth_failures")]
        ),
        0
    );

    // Conventions: counters end in _total, gauges do not; every sample is api_shield_*.
    for name in full.names() {
        assert!(name.starts_with("api_shield_"), "{name}");
        let kind = full
            .kind(&name)
            .unwrap_or_else(|| panic!("{name} has no TYPE"));
        assert_eq!(
            name.ends_with("_total"),
            kind == "counter",
            "{name} is a {kind}"
        );
    }

    // Every metric the dashboard queries is one this scrape (kernel, lists, feeds and
    // gateway) has.
    let dashboard = dashboard();
    let exported = full.names();
    let queried = queried_metrics(&dashboard);
    assert!(queried.len() >= 20, "{queried:?}");
    for name in &queried {
        assert!(
            exported.contains(name),
            "the dashboard queries {name}, which the daemon does not export:\n{}",
            full.text
        );
    }
}

/// Public routes, one of them in dry-run, limited per client address and hour.
const GATEWAY_POLICY: &str = r#"
unmatched = "deny"

[[routes]]
name = "public"
path_prefix = "/"
rate = [{ name = "per-ip", rate = 1, per = "1h", burst = 2, key = ["ip"] }]

[[routes]]
name = "trial"
path_prefix = "/trial"
dry_run = true
rate = [{ name = "per-ip", rate = 1, per = "1h", burst = 1, key = ["ip"] }]
"#;

/// A Traefik `ForwardAuth` check of `GET path` from `client`, asked from the daemon's
/// namespace (a trusted proxy); the status answered.
fn check(daemon: &Daemon, client: &str, path: &str) -> u16 {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Method: GET\r\n\
         X-Forwarded-Uri: {path}\r\nX-Forwarded-Host: api.test\r\nX-Real-IP: {client}\r\n\
         Connection: close\r\n\r\n"
    );
    in_netns(&daemon.netns, move || {
        let mut stream = TcpStream::connect(CHECK).expect("connect to the check endpoint");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(request.as_bytes()).expect("send");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("read the answer");
        text.split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in: {text}"))
    })
    .join()
    .expect("check thread")
}

// ---- the dashboard ---------------------------------------------------------------------------

fn dashboard() -> Value {
    let path = repo_file("dist/grafana/api-shield.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every PromQL expression of the dashboard: panel targets and variable queries.
fn expressions(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().expect("a target expr").to_owned());
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(q) = var["query"]["query"].as_str() {
            out.push(q.to_owned());
        }
    }
    out
}

fn queried_metrics(dashboard: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for expr in expressions(dashboard) {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("api_shield_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}

#[test]
fn dashboard_is_valid_grafana_json() {
    let d = dashboard();
    assert_eq!(d["uid"], "api-shield");
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 30),
        "{}",
        d["schemaVersion"]
    );
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut with_queries = 0;
    for p in panels {
        let id = p["id"].as_u64().expect("a panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        for key in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][key].is_u64(), "panel {id} gridPos.{key}");
        }
        assert!(p["gridPos"]["x"].as_u64().unwrap() + p["gridPos"]["w"].as_u64().unwrap() <= 24);
        if p["type"] != "row" {
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "panel {id} queries nothing");
            with_queries += 1;
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {id}");
                assert!(t["refId"].is_string(), "panel {id}");
                let expr = t["expr"].as_str().expect("expr");
                assert!(
                    expr.matches('(').count() == expr.matches(')').count()
                        && expr.matches('{').count() == expr.matches('}').count(),
                    "unbalanced: {expr}"
                );
            }
        }
    }
    assert!(with_queries >= 12, "{with_queries} panels with queries");
    // Counters are only ever read through rate() or increase().
    for expr in expressions(&d) {
        for name in queried_metrics(
            &serde_json::json!({"panels": [{"targets": [{"expr": expr}]}], "templating": {"list": []}}),
        ) {
            if name.ends_with("_total") {
                let at = expr.find(&name).expect("name in expr");
                let before = &expr[..at];
                assert!(
                    before.ends_with("rate(") || before.ends_with("increase("),
                    "{name} read raw in: {expr}"
                );
            }
        }
    }
}

// ---- flood, auto-block, top ------------------------------------------------------------------

fn wait_for_auto_block(daemon: &Daemon, net: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let blocked = daemon.list(Some("blocked"));
        if blocked
            .iter()
            .any(|e| e["net"] == net && e["origin"] == "kernel")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no kernel auto-block of {net}: {blocked:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_flood_shows_in_metrics_and_in_top() {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, &flood_limits());
    let rx = Receiver::start(&lab.server, PORT);
    let target = rx.target(&lab.server, false);
    let before = scrape(&daemon);

    let sent = send_udp(&lab.bad, target, Pace::flood(5_000));
    assert!(sent >= 4_000, "the flood was not a flood: {sent} sent");
    rx.settle();
    let offender = format!("{BAD_V4}/32");
    wait_for_auto_block(&daemon, &offender);
    // Auto-blocked now: a trickle is dropped by the kernel origin.
    assert_eq!(send_udp(&lab.bad, target, Pace::steady(20)), 20);
    rx.settle();

    let after = scrape(&daemon);
    let grew = |name: &str, labels: &[(&str, &str)]| {
        after.count(name, labels) - before.count(name, labels)
    };
    assert_eq!(grew("api_shield_auto_blocks_total", &[]), 1);
    assert_eq!(grew("api_shield_auto_blocks_refused_total", &[]), 0);
    assert_eq!(
        after.count(
            "api_shield_origin_entries",
            &[("origin", "kernel"), ("action", "block")]
        ),
        1
    );
    assert_eq!(
        after.count("api_shield_map_used", &[("map", "auto_blocks")]),
        1
    );
    let rate_limited = grew(
        "api_shield_verdict_packets_total",
        &[("verdict", "rate_limited")],
    );
    let by_kernel = grew(
        "api_shield_origin_dropped_packets_total",
        &[("origin", "kernel")],
    );
    let auto = grew(
        "api_shield_detail_packets_total",
        &[("detail", "block_auto")],
    );
    let blocklisted = grew(
        "api_shield_verdict_packets_total",
        &[("verdict", "blocklisted")],
    );
    let passed = grew("api_shield_verdict_packets_total", &[("verdict", "pass")]);
    assert!(rate_limited >= 50, "rate_limited grew by {rate_limited}");
    assert!(by_kernel >= 20, "kernel drops grew by {by_kernel}");
    assert_eq!(
        auto, by_kernel,
        "block_auto and the kernel origin count the same drops"
    );
    assert_eq!(blocklisted, by_kernel, "nothing else blocklisted");
    // Every datagram of bad's got exactly one verdict (good sent nothing; allow the noise).
    let got = rx.count(IpAddr::V4(BAD_V4));
    let total = sent + 20;
    assert!(
        passed >= got && rate_limited + blocklisted + passed <= total + NOISE,
        "verdicts: pass {passed} (received {got}), rate_limited {rate_limited}, \
         blocklisted {blocklisted}, for {total} sent"
    );
    assert_eq!(
        rate_limited + blocklisted + got,
        total,
        "dropped + received = sent"
    );

    // `top --plain` shows the offender the flood created.
    let socket = daemon.socket.to_str().expect("utf-8 socket path");
    let out = run(
        Command::new(binary()).args([
            "--socket",
            socket,
            "top",
            "--plain",
            "--interval",
            "300ms",
            "-n",
            "2",
        ]),
        COMMAND_TIMEOUT,
    );
    assert!(out.success(), "top failed: {out:?}");
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains(&offender) && l.contains("auto-blocked"))
        .unwrap_or_else(|| panic!("top does not show {offender}:\n{}", out.stdout));
    assert!(line.contains("origin=kernel"), "{line}");
    assert!(out.stdout.contains("rate_limited"), "{}", out.stdout);
    assert_eq!(
        out.stdout.matches("== api-shield top").count(),
        2,
        "two refreshes:\n{}",
        out.stdout
    );

    // The terminal view in a real terminal, where tmux is installed.
    if which("tmux") {
        top_in_tmux(&daemon, &offender);
    } else {
        eprintln!(
            "observability: tmux is not installed; the terminal view was checked with \
                   ratatui's TestBackend only (unit tests of api_shield::top)"
        );
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A private tmux server (its own socket name), killed on drop.
struct Tmux {
    server: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.server])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

fn top_in_tmux(daemon: &Daemon, offender: &str) {
    let tmux = Tmux {
        server: format!("api-shield-obs-{}", unique_id()),
    };
    let command = format!(
        "{} --socket {} top --interval 300ms",
        binary().display(),
        daemon.socket.display()
    );
    let out = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "80",
        "-y",
        "24",
        &command,
    ]);
    assert!(out.status.success(), "tmux new-session: {out:?}");
    let screen = || {
        let out = tmux.cmd(&["capture-pane", "-p", "-t", "top"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let text = screen();
        if text.contains(offender) && text.contains("auto-blocked") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "top in an 80x24 tmux pane does not show {offender}:\n{text}"
        );
        thread::sleep(Duration::from_millis(200));
    };
    assert!(shown.contains("q quit"), "{shown}");
    assert!(shown.lines().count() <= 24, "{shown}");
    // `p` pauses, `s` sorts, `q` quits.
    tmux.cmd(&["send-keys", "-t", "top", "p"]);
    tmux.cmd(&["send-keys", "-t", "top", "s"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = screen();
        if text.contains("PAUSED") && text.contains("sort (expiry)") {
            break;
        }
        assert!(Instant::now() < deadline, "keys had no effect:\n{text}");
        thread::sleep(Duration::from_millis(100));
    }
    tmux.cmd(&["send-keys", "-t", "top", "q"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tmux.cmd(&["has-session", "-t", "top"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "`q` did not quit top:\n{}",
            screen()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn top_without_a_daemon_fails_cleanly() {
    let socket = std::env::temp_dir().join(format!("api-shield-obs-none-{}.sock", unique_id()));
    let out = run(
        Command::new(binary())
            .arg("--socket")
            .arg(&socket)
            .args(["top", "--plain", "-n", "1"]),
        COMMAND_TIMEOUT,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);
    let out = run(
        Command::new(binary()).args(["top", "--interval", "10ms"]),
        COMMAND_TIMEOUT,
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--interval"), "{}", out.stderr);
}

// ---- audit log -------------------------------------------------------------------------------

#[test]
fn audit_log_is_reopened_on_sighup() {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, &lists_only("", ""));
    let log = daemon.dir.join("audit.jsonl");
    let rotated = daemon.dir.join("audit.jsonl.1");
    daemon.ok(&["block", "198.18.9.1"]);
    fs::rename(&log, &rotated).expect("rotate the audit log");

    let pid = daemon.pid().expect("the daemon runs");
    let out = run(
        Command::new("kill").args(["-HUP", &pid.to_string()]),
        COMMAND_TIMEOUT,
    );
    assert!(out.success(), "{out:?}");
    // The reload is itself audited, in the new file.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fs::read_to_string(&log).is_ok_and(|t| t.contains("\"op\":\"reload\"")) {
        assert!(Instant::now() < deadline, "no new audit log after SIGHUP");
        thread::sleep(Duration::from_millis(50));
    }
    daemon.ok(&["block", "198.18.9.2"]);

    let records = |path: &Path| -> Vec<Value> {
        fs::read_to_string(path)
            .expect("read an audit log")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let blocked = |records: &[Value]| -> Vec<String> {
        records
            .iter()
            .filter(|r| r["op"] == "block")
            .flat_map(|r| r["args"]["nets"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect()
    };
    let old = records(&rotated);
    let new = records(&log);
    assert_eq!(blocked(&old), ["198.18.9.1"], "{old:?}");
    assert_eq!(blocked(&new), ["198.18.9.2"], "{new:?}");
    let block = new
        .iter()
        .find(|r| r["op"] == "block")
        .expect("a block record");
    for key in ["ts", "uid", "pid", "user", "result"] {
        assert!(!block[key].is_null(), "{key} missing: {block}");
    }
    assert_eq!(block["uid"], 0);
    assert_eq!(block["result"], "ok");
    assert!(
        new.iter()
            .any(|r| r["op"] == "reload" && r["result"] == "ok"),
        "{new:?}"
    );
}

// ---- the systemd unit ------------------------------------------------------------------------

fn unit_text() -> String {
    fs::read_to_string(repo_file("dist/systemd/api-shield.service")).expect("read the unit")
}

/// `(section, key, value)` of every setting, comments and continuations aside.
fn unit_settings(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "no continuation lines expected: {line}"
        );
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a setting: {line}"));
        out.push((
            section.clone(),
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    out
}

fn unit_value(settings: &[(String, String, String)], key: &str) -> Vec<String> {
    settings
        .iter()
        .filter(|(s, k, _)| s == "Service" && k == key)
        .map(|(_, _, v)| v.clone())
        .collect()
}

/// The capabilities the unit keeps, as `setpriv` names them (`bpf`, `net_admin`).
fn unit_capabilities() -> Vec<String> {
    let settings = unit_settings(&unit_text());
    let bounding = unit_value(&settings, "CapabilityBoundingSet");
    assert_eq!(bounding.len(), 1, "{bounding:?}");
    bounding[0]
        .split_whitespace()
        .map(|c| {
            c.strip_prefix("CAP_")
                .unwrap_or_else(|| panic!("{c}"))
                .to_ascii_lowercase()
        })
        .collect()
}

#[test]
fn systemd_unit_is_accepted() {
    let text = unit_text();
    let settings = unit_settings(&text);
    let sections: BTreeSet<&str> = settings.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(sections, BTreeSet::from(["Install", "Service", "Unit"]));
    let one = |key: &str| {
        let v = unit_value(&settings, key);
        assert_eq!(v.len(), 1, "{key}: {v:?}");
        v[0].clone()
    };
    assert_eq!(one("Type"), "simple");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("RuntimeDirectory"), "api-shield");
    assert_eq!(one("StateDirectory"), "api-shield");
    assert_eq!(one("LogsDirectory"), "api-shield");
    let exec = one("ExecStart");
    // The reload goes over the same socket the daemon serves, so `systemctl reload` reports.
    let reload = one("ExecReload");
    assert_eq!(
        reload,
        "/usr/local/bin/api-shield --socket /run/api-shield/api-shield.sock reload"
    );
    assert!(exec.contains("--socket /run/api-shield/api-shield.sock"));
    assert!(exec.starts_with("/usr/local/bin/api-shield "), "{exec}");
    assert!(exec.contains(" run --iface "), "{exec}");
    assert!(
        exec.contains("--socket /run/api-shield/api-shield.sock"),
        "{exec}"
    );
    assert!(
        exec.contains("--config /etc/api-shield/config.toml"),
        "{exec}"
    );
    // The daemon's paths (the example config's defaults) are writable, nothing else.
    let writable = one("ReadWritePaths");
    for path in [
        "/sys/fs/bpf",
        "/var/lib/api-shield",
        "/var/log/api-shield",
        "/run/api-shield",
    ] {
        assert!(
            writable.split_whitespace().any(|p| p == path),
            "{path} not in {writable}"
        );
    }
    let config = api_shield::config::Config::default();
    assert!(config.pin_root.starts_with("/sys/fs/bpf"));
    assert!(config.state_dir.starts_with("/var/lib/api-shield"));
    assert!(config.audit_log.starts_with("/var/log/api-shield"));
    // Capabilities: a subset of what the daemon may need, and the same for ambient ones.
    let caps = unit_capabilities();
    for cap in &caps {
        assert!(
            [
                "bpf",
                "perfmon",
                "net_admin",
                "chown",
                "setuid",
                "setgid",
                "net_bind_service"
            ]
            .contains(&cap.as_str()),
            "unexpected capability {cap}"
        );
    }
    assert_eq!(one("AmbientCapabilities"), one("CapabilityBoundingSet"));
    // Every capability kept is explained in the comment above it.
    for cap in &caps {
        let name = format!("CAP_{}", cap.to_ascii_uppercase());
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with('#') && l.contains(&name)),
            "{name} is kept without a reason"
        );
    }

    if !which("systemd-analyze") {
        eprintln!(
            "observability: systemd-analyze is not installed; only the structural checks ran"
        );
        return;
    }
    // systemd-analyze checks that ExecStart's binary exists: point it at the one under test.
    let dir = std::env::temp_dir().join(format!("api-shield-obs-unit-{}", unique_id()));
    fs::create_dir_all(&dir).expect("create a temp dir");
    let unit = dir.join("api-shield.service");
    fs::write(
        &unit,
        text.replace("/usr/local/bin/api-shield", &binary().display().to_string()),
    )
    .expect("write the unit");
    let out = run(
        Command::new("systemd-analyze").arg("verify").arg(&unit),
        COMMAND_TIMEOUT,
    );
    let _ = fs::remove_dir_all(&dir);
    assert!(out.success(), "systemd-analyze verify failed: {out:?}");
    // Warnings (unknown keys, bad values) do not fail the command: there must be none.
    let complaints: Vec<&str> = out
        .stderr
        .lines()
        .chain(out.stdout.lines())
        .filter(|l| l.contains("api-shield.service"))
        .collect();
    assert!(complaints.is_empty(), "systemd-analyze: {complaints:?}");
}

/// The daemon started as the unit starts it, as far as a test can: root with no capability
/// but the unit's, no new privileges, JSON logs. It loads, attaches, enforces, gives its
/// socket to the control group, and logs JSON lines.
#[test]
fn daemon_runs_with_only_the_units_capabilities() {
    let caps = unit_capabilities();
    let lab = Lab::new();
    let mut daemon = Daemon::start(&lab, &lists_only("control_group = \"nogroup\"\n", ""));
    // A fresh load (not an adoption) is what needs the most: stop, detach, start restricted.
    daemon.kill9();
    let detached = daemon.detach().expect("detach");
    assert!(detached.success(), "{detached:?}");
    let restricted = Restricted::start(&daemon, &caps);

    let status = daemon.status();
    assert_eq!(status["adopted"], false, "{status}");
    let rx = Receiver::start(&lab.server, PORT);
    let target = rx.target(&lab.server, false);
    daemon.ok(&["block", &BAD_V4.to_string()]);
    assert_eq!(send_udp(&lab.good, target, Pace::steady(50)), 50);
    assert_eq!(send_udp(&lab.bad, target, Pace::steady(50)), 50);
    rx.settle();
    assert_eq!(rx.count(IpAddr::V4(GOOD_V4)), 50);
    assert_eq!(rx.count(IpAddr::V4(BAD_V4)), 0, "the block is not enforced");
    let m = scrape(&daemon);
    assert!(
        m.count(
            "api_shield_verdict_packets_total",
            &[("verdict", "blocklisted")]
        ) >= 50
    );

    use std::os::unix::fs::MetadataExt;
    let nogroup = 65_534;
    let socket = fs::metadata(&daemon.socket).expect("the socket");
    assert_eq!(
        socket.gid(),
        nogroup,
        "the socket was not given to control_group"
    );

    let log = restricted.stop();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the daemon logged nothing");
    for line in &lines {
        let record: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("--log-format json wrote a non-JSON line ({e}): {line}"));
        assert!(
            record["timestamp"].is_string() && record["level"].is_string(),
            "{line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("shield running")),
        "no start-up line in:\n{log}"
    );
}

/// The daemon under `setpriv`, with `daemon`'s config and socket; killed on drop (before
/// `daemon`, which detaches and removes everything).
struct Restricted {
    child: Option<Child>,
    log: PathBuf,
}

impl Restricted {
    fn start(daemon: &Daemon, caps: &[String]) -> Restricted {
        let keep: String = caps.iter().map(|c| format!(",+{c}")).collect();
        let log = daemon.dir.join("restricted.log");
        let out = fs::File::create(&log).expect("create the log");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", daemon.netns))
            .arg("setpriv")
            .arg(format!("--bounding-set=-all{keep}"))
            .arg("--inh-caps=-all")
            .arg("--no-new-privs")
            .arg("--")
            .arg(binary())
            .arg("--socket")
            .arg(&daemon.socket)
            .args([
                "run",
                "--iface",
                &daemon.iface,
                "--log-format",
                "json",
                "--config",
            ])
            .arg(&daemon.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the log"))
            .stderr(out);
        tests::proc::die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("start nsenter setpriv api-shield");
        let mut restricted = Restricted {
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = restricted
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                restricted.child = None;
                panic!(
                    "the daemon with capabilities {caps:?} exited ({status}):\n{}",
                    fs::read_to_string(&restricted.log).unwrap_or_default()
                );
            }
            if daemon.cli(&["status", "--json"]).success() {
                return restricted;
            }
            assert!(
                Instant::now() < deadline,
                "the restricted daemon did not answer:\n{}",
                fs::read_to_string(&restricted.log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, wait, and the log.
    fn stop(mut self) -> String {
        if let Some(child) = self.child.as_mut() {
            // SAFETY: kill sends a signal to our own child; no memory is involved.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill();
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Restricted {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---- the example config ----------------------------------------------------------------------

/// The example with its optional settings turned on: `#` directly before a key or a section.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest)
                if rest.starts_with('[') || rest.starts_with(|c: char| c.is_ascii_lowercase()) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Dotted paths of every key of a TOML table; arrays of tables as `name[]`.
fn key_paths(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let path = format!("{prefix}{key}");
        match value {
            toml::Value::Table(inner) => key_paths(inner, &format!("{path}."), out),
            toml::Value::Array(items)
                if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
            {
                for item in items {
                    key_paths(
                        item.as_table().expect("a table"),
                        &format!("{path}[]."),
                        out,
                    );
                }
            }
            _ => {
                out.insert(path);
            }
        }
    }
}

#[test]
fn example_config_parses_and_shows_every_key() {
    use api_shield::config::{Config, parse_config};
    let path = repo_file("dist/config/api-shield.toml");
    let text = fs::read_to_string(&path).expect("read the example config");

    // As shipped: the defaults, with metrics on.
    let shipped = parse_config(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    let expected = Config {
        metrics: Some(api_shield::metrics::MetricsConfig::default()),
        ..Config::default()
    };
    assert_eq!(shipped, expected);

    // Every optional setting turned on: still valid, and every key the daemon knows is there.
    let full_text = uncommented(&text);
    let full = parse_config(&full_text, &path).unwrap_or_else(|e| panic!("{e}\n{full_text}"));
    assert_eq!(full.feeds.len(), 1);
    assert!(
        full.push
            .as_ref()
            .is_some_and(|p| p.tls_cert.is_some() && p.tls_key.is_some())
    );
    assert!(full.crowdsec.is_some());
    let mut written = BTreeSet::new();
    key_paths(&toml::from_str(&full_text).expect("TOML"), "", &mut written);
    let mut known = BTreeSet::new();
    let serialized = toml::to_string(&full).expect("serialize the config");
    key_paths(&toml::from_str(&serialized).expect("TOML"), "", &mut known);
    assert_eq!(written, known, "keys of the example vs keys of the config");

    // Each key is explained by a comment line just above it.
    let lines: Vec<&str> = full_text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let is_key = line.contains(" = ") && !line.starts_with('#');
        if is_key {
            let above = lines[..i].iter().rev().find(|l| !l.trim().is_empty());
            assert!(
                above.is_some_and(|l| l.starts_with("# ")),
                "no comment above `{line}`"
            );
        }
    }
}
