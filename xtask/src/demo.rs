//! `cargo xtask demo`: the shield in front of an HTTP server, a legitimate client and an
//! attacker, each in its own network namespace; live counters, then a summary.

use crate::{
    build_cmd,
    lab::{DEMO_HOSTS, Lab, LabChild},
    setup,
    util::{self, output},
};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

const VERDICTS: [&str; 6] = [
    "pass",
    "allowlisted",
    "blocklisted",
    "rate_limited",
    "malformed",
    "monitored",
];
const HTTP_PORT: u16 = 8080;
const FLOOD_PPS: u64 = 3000;
const MANUAL_BLOCK: &str = "198.18.0.77";

/// The binary and how to reach the daemon.
struct Shield {
    bin: PathBuf,
    socket: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

impl Shield {
    /// `api-shield --socket <sock> ARGS`, run from the host (the socket is a file).
    fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = util::command(&self.bin);
        cmd.arg("--socket").arg(&self.socket).args(args);
        cmd
    }

    /// Runs a CLI verb; on failure the error carries the hint and the daemon's output.
    fn call(&self, args: &[&str], what: &str) -> Result<String> {
        output(&mut self.cli(args), what)
            .map_err(|e| anyhow!("{e:#}\n{DAEMON_HINT}{}", log_tail(&self.log)))
    }

    fn json(&self, args: &[&str]) -> Result<Value> {
        let what = format!("api-shield {}", args.join(" "));
        let out = self.call(args, &what)?;
        serde_json::from_str(&out).with_context(|| format!("`{what}` printed no valid JSON: {out}"))
    }
}

const DAEMON_HINT: &str = "the api-shield daemon did not answer as the CLI contract says \
    (is `api-shield run` implemented yet?)";

pub fn demo(seconds: u64, bin: Option<PathBuf>) -> Result<()> {
    let seconds = seconds.max(5);
    let bin = match bin {
        Some(bin) => {
            setup::setup()?;
            std::path::absolute(&bin).with_context(|| format!("path {}", bin.display()))?
        }
        None => build_cmd::build(false)?,
    };
    let pid = std::process::id();
    let lab = Lab::star(&DEMO_HOSTS)?;
    println!("demo: lab up: {}", lab.namespaces().join(" "));

    let tmp = tempfile::Builder::new()
        .prefix("api-shield-demo-")
        .tempdir()
        .context("create a temporary directory")?;
    lab.remove_on_teardown(tmp.path());
    let pin_root = PathBuf::from(format!("/sys/fs/bpf/api-shield-demo-{pid}"));
    lab.remove_on_teardown(&pin_root);
    let shield = Shield {
        bin,
        socket: tmp.path().join("ctl.sock"),
        config: write_config(tmp.path(), &pin_root)?,
        log: tmp.path().join("daemon.log"),
    };
    let config = shield.config.to_string_lossy().into_owned();
    let mut daemon = start_daemon(&lab, &shield, &config)?;

    let http = start_http(&lab)?;
    manual_block(&shield)?;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flood_seconds = seconds.saturating_sub(4).max(1);
    let mut flood = start_flood(&lab, flood_seconds)?;
    let client = {
        let (ns, stop, ok, failed) = (lab.ns("cli"), stop.clone(), ok.clone(), failed.clone());
        thread::spawn(move || legit_client(&ns, &stop, &ok, &failed))
    };
    println!(
        "demo: legit client ~5 req/s from 198.18.0.2; attacker floods UDP at {FLOOD_PPS} pps \
         for {flood_seconds} s from 198.18.0.66"
    );

    let live = show_live(&shield, seconds, &ok, &failed);
    stop.store(true, Ordering::Relaxed);
    client.join().ok();
    if flood.wait_timeout(Duration::from_secs(5))?.is_none() {
        flood.stop()?;
    }
    live?;

    summary(&shield, &ok, &failed)?;
    // The daemon first: a daemon that still manages the interface refuses `detach`.
    let status = daemon.stop()?;
    println!("demo: daemon stopped ({status})");
    output(
        lab.nsenter("srv", &shield.bin)
            .arg("--socket")
            .arg(&shield.socket)
            .args(["detach", "--iface", "srv0", "--config", &config]),
        "api-shield detach",
    )?;
    println!("demo: detached from srv0");
    drop(http);
    drop(tmp);
    drop(lab);
    println!("demo: lab removed");
    Ok(())
}

/// Starts the daemon on the server's `srv0` and waits for its control socket.
fn start_daemon(lab: &Lab, shield: &Shield, config: &str) -> Result<LabChild> {
    let log = File::create(&shield.log).context("create the daemon log")?;
    let mut daemon = lab.spawn(
        lab.nsenter("srv", &shield.bin)
            .arg("--socket")
            .arg(&shield.socket)
            .args(["run", "--iface", "srv0", "--config", config])
            .stdout(log.try_clone()?)
            .stderr(log),
        "api-shield run",
    )?;
    wait_for_socket(&mut daemon, &shield.socket, &shield.log)?;
    println!(
        "demo: daemon up on srv0 (pid {}, control socket {})",
        daemon.pid(),
        shield.socket.display()
    );
    Ok(daemon)
}

/// The attacker's bounded UDP flood at the server (`xtask flood` in its namespace).
fn start_flood(lab: &Lab, seconds: u64) -> Result<LabChild> {
    lab.spawn(
        lab.exec("atk", std::env::current_exe().context("path of xtask")?)
            .args([
                "flood",
                "--target",
                &format!("{}:9", DEMO_HOSTS[0].v4_addr()),
            ])
            .args(["--pps", &FLOOD_PPS.to_string()])
            .args(["--seconds", &seconds.to_string()])
            .args(["--max-packets", &(FLOOD_PPS * seconds).to_string()]),
        "xtask flood",
    )
}

/// One line a second for `seconds`: the shield's verdicts and the legit client's counts.
fn show_live(shield: &Shield, seconds: u64, ok: &AtomicU64, failed: &AtomicU64) -> Result<()> {
    let start = Instant::now();
    for tick in 1..=seconds {
        thread::sleep(
            (start + Duration::from_secs(tick)).saturating_duration_since(Instant::now()),
        );
        let stats = shield.json(&["stats", "--json"])?;
        println!(
            "[{tick:>3}s] {} | legit ok {} failed {}",
            verdict_line(&stats),
            ok.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed)
        );
    }
    Ok(())
}

fn write_config(dir: &Path, pin_root: &Path) -> Result<PathBuf> {
    let path = dir.join("api-shield.toml");
    let text = format!(
        "mode = \"enforce\"\n\
         pin_root = \"{}\"\n\
         state_dir = \"{}\"\n\
         audit_log = \"{}\"\n\
         \n[limits]\npackets_per_second = 200\nburst = 400\n\
         \n[autoblock]\nstrikes = 300\nwindow = \"10s\"\nttl = \"2m\"\n",
        pin_root.display(),
        dir.join("state").display(),
        dir.join("audit.jsonl").display(),
    );
    fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

fn wait_for_socket(daemon: &mut LabChild, socket: &Path, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !socket.exists() {
        if let Some(status) = daemon.try_wait()? {
            bail!(
                "`api-shield run` exited ({status}) before creating its control socket {}; \
                 {DAEMON_HINT}{}",
                socket.display(),
                log_tail(log)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "no control socket at {} after 15 s; {DAEMON_HINT}{}",
                socket.display(),
                log_tail(log)
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The last lines the daemon wrote, as a block to append to a message (empty if none).
fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = lines[lines.len().saturating_sub(30)..].join("\n");
    format!("\n--- daemon output ---\n{tail}")
}

fn curl(ns: &str) -> Command {
    let mut cmd = util::command("ip");
    cmd.args(["netns", "exec", ns, "curl", "-s", "-o", "/dev/null"])
        .args(["-w", "%{http_code}", "--max-time", "2"])
        .arg(format!("http://{}:{HTTP_PORT}/", DEMO_HOSTS[0].v4_addr()))
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn http_ok(ns: &str) -> bool {
    curl(ns)
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout == b"200")
}

fn start_http(lab: &Lab) -> Result<LabChild> {
    let mut http = lab.spawn(
        lab.exec("srv", "/usr/bin/python3")
            .args(["-m", "http.server", &HTTP_PORT.to_string()])
            .args(["--bind", DEMO_HOSTS[0].v4_addr()])
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "HTTP server",
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !http_ok(&lab.ns("cli")) {
        if let Some(status) = http.try_wait()? {
            bail!("the HTTP server exited ({status})");
        }
        if Instant::now() > deadline {
            bail!("the HTTP server did not answer the client within 10 s");
        }
        thread::sleep(Duration::from_millis(200));
    }
    println!(
        "demo: HTTP server up at {}:{HTTP_PORT}",
        DEMO_HOSTS[0].v4_addr()
    );
    Ok(http)
}

fn manual_block(shield: &Shield) -> Result<()> {
    let what = format!("api-shield block {MANUAL_BLOCK} --reason demo");
    shield.call(&["block", MANUAL_BLOCK, "--reason", "demo"], &what)?;
    println!("demo: $ {what}");
    let listed = shield.call(&["list"], "api-shield list")?;
    println!("demo: $ api-shield list\n{}", listed.trim_end());
    Ok(())
}

/// About five GETs a second until `stop`.
fn legit_client(ns: &str, stop: &AtomicBool, ok: &AtomicU64, failed: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        let next = Instant::now() + Duration::from_millis(200);
        let counter = if http_ok(ns) { ok } else { failed };
        counter.fetch_add(1, Ordering::Relaxed);
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

fn packets(stats: &Value, verdict: &str) -> (u64, u64) {
    let v = &stats["verdicts"][verdict];
    (
        v["packets"].as_u64().unwrap_or(0),
        v["bytes"].as_u64().unwrap_or(0),
    )
}

fn verdict_line(stats: &Value) -> String {
    VERDICTS
        .iter()
        .map(|name| format!("{name} {}", packets(stats, name).0))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn summary(shield: &Shield, ok: &AtomicU64, failed: &AtomicU64) -> Result<()> {
    let stats = shield.json(&["stats", "--json"])?;
    println!(
        "\nsummary\n  {:<14}{:>12}{:>14}",
        "verdict", "packets", "bytes"
    );
    for name in VERDICTS {
        let (p, b) = packets(&stats, name);
        println!("  {name:<14}{p:>12}{b:>14}");
    }
    let blocked = shield.json(&["list", "blocked", "--json"])?;
    let entries = blocked.as_array().map(Vec::as_slice).unwrap_or_default();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for (who, addr) in [
        ("attacker", DEMO_HOSTS[2].v4_addr()),
        ("manual block", MANUAL_BLOCK),
    ] {
        match find_entry(entries, addr) {
            Some(e) => println!(
                "  {who} {addr}: blocked (origin {}, reason {}, {})",
                e["origin"].as_str().unwrap_or("?"),
                e["reason"].as_str().unwrap_or("-"),
                match e["expires_at_ms"].as_u64() {
                    Some(t) => format!("expires in {} s", t.saturating_sub(now_ms) / 1000),
                    None => "no expiry".to_owned(),
                }
            ),
            None => println!("  {who} {addr}: NOT blocked"),
        }
    }
    println!(
        "  legit requests: {} ok, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    Ok(())
}

/// The `list blocked --json` entry for one host address (`net` with or without `/32`).
fn find_entry<'a>(entries: &'a [Value], addr: &str) -> Option<&'a Value> {
    entries.iter().find(|e| {
        let net = e["net"].as_str().unwrap_or_default();
        net == addr || net.strip_suffix("/32") == Some(addr)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_verdict_counters_and_defaults_missing_ones_to_zero() {
        let stats = json!({"verdicts": {
            "pass": {"packets": 7, "bytes": 700},
            "blocklisted": {"packets": 3, "bytes": 180},
        }});
        assert_eq!(packets(&stats, "pass"), (7, 700));
        assert_eq!(packets(&stats, "monitored"), (0, 0));
        assert_eq!(
            verdict_line(&stats),
            "pass 7 | allowlisted 0 | blocklisted 3 | rate_limited 0 | malformed 0 | monitored 0"
        );
    }

    #[test]
    fn finds_a_host_entry_with_or_without_its_prefix_length() {
        let entries = [
            json!({"net": "198.18.0.0/24", "origin": "cli"}),
            json!({"net": "198.18.0.66/32", "origin": "kernel"}),
            json!({"net": "198.18.0.77", "origin": "cli"}),
        ];
        assert_eq!(
            find_entry(&entries, "198.18.0.66").unwrap()["origin"],
            "kernel"
        );
        assert!(find_entry(&entries, "198.18.0.77").is_some());
        assert!(find_entry(&entries, "198.18.0.6").is_none());
    }

    #[test]
    fn writes_the_demo_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), Path::new("/sys/fs/bpf/api-shield-demo-1")).unwrap();
        let text = fs::read_to_string(path).unwrap();
        for line in [
            "pin_root = \"/sys/fs/bpf/api-shield-demo-1\"",
            "packets_per_second = 200",
            "burst = 400",
            "strikes = 300",
            "window = \"10s\"",
            "ttl = \"2m\"",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
