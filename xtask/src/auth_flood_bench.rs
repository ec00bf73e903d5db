//! `cargo xtask bench gateway-auth`: what a flood of bad HTTP Basic passwords does to everyone
//! else. A public route of the gateway is loaded with wrk (`-c4`, `--latency`) three ways,
//! alternating, in every round: alone; while a second wrk sends bad passwords for a Basic
//! route from many sources (a random `X-Forwarded-For` per request from the loopback proxy,
//! so no per-source budget applies and only the hashing pool stands between the flood and
//! the serving threads); and while it sends them from one source (its failure budget is spent
//! after 20 and the rest are refused unhashed). The figure is the public route's p99 under each
//! flood over its p99 alone, per round and as medians; the target is at most 2x.
//!
//! The user's hash is argon2id with the argon2 crate's default parameters (m = 19 MiB, t = 2,
//! p = 1), made by the `argon2` command; the flood paces each of its connections
//! ([`FLOOD_CONNECTIONS`] of them, a pause of [`FLOOD_DELAY_MS`] between requests), far more
//! bad attempts a second than the pool can hash. The daemon's `/metrics` says what became of
//! them (hashed and rejected, refused for a spent budget, 503 for a full pool).
//!
//! Everything runs in one namespace of xtask's lab over loopback (plain HTTP, to measure
//! the hashing and not TLS), with an nginx upstream answering `200 ok`. `--bin` measures
//! another build (an older one, for a before/after: the config uses nothing newer than the
//! gateway itself). Writes `target/bench/gateway-auth.{json,md}` (`--smoke`: one round of
//! 2-second runs, `gateway-auth-smoke.*`).

use crate::bench_common::{loadavg, machine, median, now_rfc3339};
use crate::gateway_bench::{
    DIR_MODE, LOOPBACK, NS_ROLE, POLL, READY_TIMEOUT, RUN_AS, UPSTREAM_PORT, WRK_GRACE, Wrk,
    XDP_IF, XDP_PEER, log_tail, parse_wrk, start_nginx, upstream_nginx_conf, write_readable,
};
use crate::lab::{Lab, LabChild};
use crate::util::{self, command, output};
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

const GATEWAY_PORT: u16 = 8080;
const CHECK_PORT: u16 = 9382;
const METRICS_PORT: u16 = 9381;
const OPEN_PATH: &str = "/open/bench";
const LOGIN_PATH: &str = "/login/bench";
const USER: &str = "bench";
const PASSWORD: &str = "bench-password-0123456789";
const WRONG: &str = "wrong-password";
/// argon2id as the argon2 crate makes it by default (what `api-shield` users get from it).
const ARGON2_MEMORY_KIB: &str = "19456";
const ARGON2_TIME: &str = "2";
const ARGON2_LANES: &str = "1";
const ARGON2_SALT: &str = "gateway-auth-bench";

const PUBLIC_CONNECTIONS: u32 = 4;
const FLOOD_CONNECTIONS: u32 = 16;
/// Between two requests of one flood connection: 16 connections offer up to 320 bad
/// passwords a second, several times what one hashing thread checks (~30 a second here), so
/// the flood keeps hashing busy the whole run.
const FLOOD_DELAY_MS: u32 = 50;
/// The flood starts this long before the measured run and stops after it.
const FLOOD_LEAD: Duration = Duration::from_secs(1);

const DEFAULT_ROUNDS: u32 = 5;
const DEFAULT_SECONDS: u32 = 5;
const MAX_ROUNDS: u32 = 100;
const MAX_SECONDS: u32 = 600;
const SMOKE_SECONDS: u32 = 2;
const HTTP_OK: u16 = 200;
const HTTP_UNAUTHORIZED: u16 = 401;
/// Public p99 under a flood over p99 without: at most this.
const TARGET_RATIO: f64 = 2.0;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Rounds; in each, the three modes run once (the order rotates)
    #[arg(long, env = "BENCH_ROUNDS", default_value_t = DEFAULT_ROUNDS)]
    rounds: u32,
    /// Seconds of each measured run
    #[arg(long, env = "BENCH_SECONDS", default_value_t = DEFAULT_SECONDS)]
    seconds: u32,
    /// Check the harness quickly: one round of 2-second runs, written to
    /// target/bench/gateway-auth-smoke.{json,md}
    #[arg(long)]
    smoke: bool,
    /// Measure this api-shield binary instead of the one just built
    #[arg(long)]
    bin: Option<PathBuf>,
}

impl Args {
    /// The binary to measure: `--bin`, else the one built.
    pub fn binary(&self, built: PathBuf) -> PathBuf {
        self.bin.clone().unwrap_or(built)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Alone,
    FloodManySources,
    FloodOneSource,
}

const MODES: [Mode; 3] = [Mode::Alone, Mode::FloodManySources, Mode::FloodOneSource];

impl Mode {
    fn key(self) -> &'static str {
        match self {
            Mode::Alone => "alone",
            Mode::FloodManySources => "flood_many_sources",
            Mode::FloodOneSource => "flood_one_source",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Mode::Alone => "public route alone",
            Mode::FloodManySources => "+ bad passwords, many sources",
            Mode::FloodOneSource => "+ bad passwords, one source",
        }
    }

    /// The flood's wrk script, if any.
    fn script(self) -> Option<&'static str> {
        match self {
            Mode::Alone => None,
            Mode::FloodManySources => Some("flood-many.lua"),
            Mode::FloodOneSource => Some("flood-one.lua"),
        }
    }
}

/// One measured run.
#[derive(Clone, Debug)]
struct Run {
    public: Wrk,
    /// Bad-password requests a second the flood got answered.
    flood_rps: f64,
    /// `api_shield_gateway_password_checks_total` increases over the run, by outcome.
    outcomes: BTreeMap<String, u64>,
}

pub fn gateway_auth(bin: &Path, args: &Args) -> Result<()> {
    let (rounds, seconds) = if args.smoke {
        (1, SMOKE_SECONDS)
    } else {
        (args.rounds, args.seconds)
    };
    ensure!(
        (1..=MAX_ROUNDS).contains(&rounds),
        "--rounds must be 1..={MAX_ROUNDS}"
    );
    ensure!(
        (1..=MAX_SECONDS).contains(&seconds),
        "--seconds must be 1..={MAX_SECONDS}"
    );
    let load_start = loadavg();
    let started = Instant::now();
    let date = now_rfc3339();

    let mut lab = Lab::star(&[])?;
    let ns = lab.ns(NS_ROLE);
    println!("gateway-auth bench: namespace {ns}");
    for args in [
        vec![
            "link", "add", XDP_IF, "type", "veth", "peer", "name", XDP_PEER,
        ],
        vec!["link", "set", XDP_IF, "up"],
        vec!["link", "set", XDP_PEER, "up"],
    ] {
        output(command("ip").args(["-n", &ns]).args(&args), "ip link")?;
    }
    let tmp = tempfile::Builder::new()
        .prefix("api-shield-authbench-")
        .tempdir()
        .context("create a temporary directory")?;
    lab.remove_on_teardown(tmp.path());
    let dir = tmp.path().to_owned();
    fs::set_permissions(&dir, fs::Permissions::from_mode(DIR_MODE))
        .with_context(|| format!("chmod {}", dir.display()))?;
    let pin_root = PathBuf::from(format!(
        "/sys/fs/bpf/api-shield-authbench-{}",
        std::process::id()
    ));
    lab.remove_on_teardown(&pin_root);
    let config = write_files(&dir, &pin_root)?;
    output(
        command(bin).arg("check-config").arg(&config),
        "api-shield check-config",
    )?;

    let upstream_prefix = dir.join("upstream");
    fs::create_dir(&upstream_prefix).context("create nginx's prefix")?;
    let upstream_conf = dir.join("upstream.conf");
    write_readable(&upstream_conf, &upstream_nginx_conf(&upstream_prefix))?;
    let upstream = start_nginx(&lab, &upstream_conf, &upstream_prefix)?;
    let socket = dir.join("ctl.sock");
    let daemon = start_daemon(&lab, bin, &config, &socket, &dir.join("daemon.log"))?;
    wait_ready(&lab)?;
    check_routes(&lab)?;
    println!(
        "gateway-auth bench: the public route answers 200; Basic 200 with the password, 401 without"
    );

    // Warm-up, unrecorded: the flood's first hashes, the upstream pool.
    for mode in MODES {
        measure(&lab, &dir, mode, 1).with_context(|| format!("warm-up, {}", mode.describe()))?;
    }
    println!(
        "{:<6} {:<32} {:>9} {:>9} {:>9} {:>10}  outcomes",
        "round", "mode", "req/s", "p50 ms", "p99 ms", "flood/s"
    );
    let mut runs: Vec<(Mode, Vec<Run>)> = MODES.iter().map(|m| (*m, Vec::new())).collect();
    for round in 0..rounds {
        let mut order = MODES;
        order.rotate_left(round as usize % MODES.len());
        for mode in order {
            let run = measure(&lab, &dir, mode, seconds)
                .with_context(|| format!("round {round}, {}", mode.describe()))?;
            println!(
                "{:<6} {:<32} {:>9.0} {:>9.2} {:>9.2} {:>10.0}  {:?}",
                round,
                mode.describe(),
                run.public.rps,
                run.public.p50_ms,
                run.public.p99_ms,
                run.flood_rps,
                run.outcomes
            );
            if let Some((_, v)) = runs.iter_mut().find(|(m, _)| *m == mode) {
                v.push(run);
            }
        }
    }

    // The daemon first: a daemon that still manages the interface refuses `detach`.
    drop(daemon);
    output(
        lab.nsenter(NS_ROLE, bin)
            .arg("--socket")
            .arg(&socket)
            .args(["detach", "--iface", XDP_IF, "--config"])
            .arg(&config),
        "api-shield detach",
    )?;
    drop(upstream);
    lab.teardown()?;
    drop(tmp);
    println!("gateway-auth bench: lab removed");

    let report = Report {
        date,
        machine: machine(load_start, loadavg()),
        rounds,
        seconds,
        smoke: args.smoke,
        bin: bin.to_owned(),
        runs,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    report.write()
}

// ---- the files ---------------------------------------------------------------------------------

/// The policy, the daemon's config and the flood's wrk scripts; returns the config's path.
fn write_files(dir: &Path, pin_root: &Path) -> Result<PathBuf> {
    let hash = argon2id(PASSWORD)?;
    let policy = dir.join("policy.toml");
    // The detector is off: the flood must keep flooding (a kernel block would end it).
    write_readable(
        &policy,
        &format!(
            "realm = \"bench\"\nunmatched = \"deny\"\n\n\
             [[basic_users]]\nusername = \"{USER}\"\npassword_hash = \"{hash}\"\n\n\
             [[routes]]\nname = \"open\"\npath_prefix = \"/open\"\n\n\
             [[routes]]\nname = \"login\"\npath_prefix = \"/login\"\nauth = [\"basic\"]\n\n\
             [detector]\nenabled = false\n"
        ),
    )?;
    let config = dir.join("api-shield.toml");
    write_readable(
        &config,
        &format!(
            "pin_root = \"{pin_root}\"\nstate_dir = \"{state}\"\naudit_log = \"{audit}\"\n\
             run_as = \"{RUN_AS}\"\n\n[limits]\npackets_per_second = 0\nsyn_per_second = 0\n\n\
             [metrics]\nlisten = \"{LOOPBACK}:{METRICS_PORT}\"\n\n\
             [gateway]\ncheck_listen = \"{LOOPBACK}:{CHECK_PORT}\"\npolicy_file = \"{policy}\"\n\
             default_upstream = \"http://{LOOPBACK}:{UPSTREAM_PORT}\"\n\n\
             [[gateway.listeners]]\nlisten = \"{LOOPBACK}:{GATEWAY_PORT}\"\n",
            pin_root = pin_root.display(),
            state = dir.join("state").display(),
            audit = dir.join("audit.jsonl").display(),
            policy = policy.display(),
        ),
    )?;
    let auth = format!("Basic {}", base64(&format!("{USER}:{WRONG}"))?);
    // Sources from 198.19.0.0/16 (benchmarking range), named by the trusted loopback proxy.
    let many = format!(
        "local n = 0\n\
         request = function()\n\
         \x20 n = n + 1\n\
         \x20 local xff = \"198.19.\" .. (n % 250 + 1) .. \".\" .. math.random(1, 250)\n\
         \x20 return wrk.format(\"GET\", \"{LOGIN_PATH}\", {{[\"Authorization\"] = \"{auth}\", [\"X-Forwarded-For\"] = xff}})\n\
         end\n\
         delay = function() return {FLOOD_DELAY_MS} end\n"
    );
    let one = format!(
        "request = function()\n\
         \x20 return wrk.format(\"GET\", \"{LOGIN_PATH}\", {{[\"Authorization\"] = \"{auth}\"}})\n\
         end\n\
         delay = function() return {FLOOD_DELAY_MS} end\n"
    );
    write_readable(&dir.join("flood-many.lua"), &many)?;
    write_readable(&dir.join("flood-one.lua"), &one)?;
    Ok(config)
}

/// An argon2id PHC string of `password` by the `argon2` command (xtask has no hashing crate).
fn argon2id(password: &str) -> Result<String> {
    let input = tempfile::NamedTempFile::new().context("temporary file for argon2")?;
    fs::write(input.path(), password).context("write the password for argon2")?;
    // `output` gives commands no stdin, and argon2 reads the password only from there.
    let out = output(
        command("sh")
            .arg("-c")
            .arg("exec argon2 \"$1\" -id -t \"$2\" -k \"$3\" -p \"$4\" -e < \"$5\"")
            .arg("argon2")
            .args([ARGON2_SALT, ARGON2_TIME, ARGON2_MEMORY_KIB, ARGON2_LANES])
            .arg(input.path()),
        "argon2",
    )?;
    let phc = out.trim().to_owned();
    ensure!(phc.starts_with("$argon2id$"), "argon2 printed {out:?}");
    Ok(phc)
}

/// Standard base64 of `text`, by coreutils' `base64`.
fn base64(text: &str) -> Result<String> {
    let input = tempfile::NamedTempFile::new().context("temporary file for base64")?;
    fs::write(input.path(), text).context("write the text for base64")?;
    Ok(
        output(command("base64").arg("-w0").arg(input.path()), "base64")?
            .trim()
            .to_owned(),
    )
}

// ---- the processes -----------------------------------------------------------------------------

fn start_daemon(
    lab: &Lab,
    bin: &Path,
    config: &Path,
    socket: &Path,
    log: &Path,
) -> Result<LabChild> {
    let file = File::create(log).context("create the daemon log")?;
    let mut daemon = lab.spawn(
        lab.nsenter(NS_ROLE, bin)
            .arg("--socket")
            .arg(socket)
            .args(["run", "--iface", XDP_IF, "--config"])
            .arg(config)
            .stdout(file.try_clone()?)
            .stderr(file),
        "api-shield run",
    )?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = daemon.try_wait()? {
            bail!(
                "`api-shield run` exited ({status}) during start-up:\n{}",
                log_tail(log)
            );
        }
        let status = command(bin)
            .arg("--socket")
            .arg(socket)
            .args(["status", "--json"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        if status.is_ok_and(|o| o.status.success()) {
            return Ok(daemon);
        }
        if Instant::now() > deadline {
            bail!(
                "the daemon did not answer `status` within {READY_TIMEOUT:?}:\n{}",
                log_tail(log)
            );
        }
        thread::sleep(POLL);
    }
}

/// The status of one request by curl, with `user:password` when given.
fn curl_status(lab: &Lab, path: &str, credentials: Option<&str>) -> Result<u16> {
    let mut cmd = lab.nsenter(NS_ROLE, "curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
    ]);
    if let Some(c) = credentials {
        cmd.args(["-u", c]);
    }
    let url = format!("http://{LOOPBACK}:{GATEWAY_PORT}{path}");
    let out = output(cmd.arg(&url), &format!("curl {url}"))?;
    out.trim()
        .parse()
        .with_context(|| format!("curl {url} printed {out:?}"))
}

fn wait_ready(lab: &Lab) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if matches!(curl_status(lab, OPEN_PATH, None), Ok(HTTP_OK)) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the gateway did not answer {OPEN_PATH} within {READY_TIMEOUT:?}"
        );
        thread::sleep(POLL);
    }
}

fn check_routes(lab: &Lab) -> Result<()> {
    let good = curl_status(lab, LOGIN_PATH, Some(&format!("{USER}:{PASSWORD}")))?;
    let bad = curl_status(lab, LOGIN_PATH, Some(&format!("{USER}:{WRONG}")))?;
    ensure!(
        good == HTTP_OK && bad == HTTP_UNAUTHORIZED,
        "{LOGIN_PATH}: the password got {good}, a wrong one {bad} (want 200 and 401)"
    );
    Ok(())
}

/// The password check counters of the daemon's `/metrics` (absent before this build).
fn password_outcomes(lab: &Lab) -> Result<BTreeMap<String, u64>> {
    const FAMILY: &str = "api_shield_gateway_password_checks_total{outcome=\"";
    let url = format!("http://{LOOPBACK}:{METRICS_PORT}/metrics");
    let text = output(
        lab.nsenter(NS_ROLE, "curl")
            .args(["-s", "--max-time", "5", &url]),
        "curl /metrics",
    )?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(FAMILY)?;
            let (outcome, value) = rest.split_once("\"} ")?;
            Some((outcome.to_owned(), value.trim().parse::<f64>().ok()? as u64))
        })
        .collect())
}

/// A wrk run in the lab: its output, or an error if it failed or hung.
fn wrk(lab: &Lab, out_path: &Path, args: &[String], seconds: u32) -> Result<LabChild> {
    let out = File::create(out_path).context("create wrk's output file")?;
    let child = lab.spawn(
        lab.nsenter(NS_ROLE, "wrk")
            .args(args)
            .arg(format!("-d{seconds}s"))
            .stdout(out.try_clone()?)
            .stderr(out),
        "wrk",
    )?;
    Ok(child)
}

fn finish_wrk(mut child: LabChild, out_path: &Path, seconds: u32) -> Result<Wrk> {
    let limit = Duration::from_secs(seconds.into()) + WRK_GRACE;
    let Some(status) = child.wait_timeout(limit)? else {
        child.stop()?;
        bail!("wrk did not finish within {limit:?}");
    };
    let text = fs::read_to_string(out_path).context("read wrk's output")?;
    ensure!(status.success(), "wrk failed ({status}):\n{text}");
    parse_wrk(&text).with_context(|| format!("wrk's output:\n{text}"))
}

/// One run of `mode`: the public route's load for `seconds`, the flood around it.
fn measure(lab: &Lab, dir: &Path, mode: Mode, seconds: u32) -> Result<Run> {
    let flood_seconds = seconds + 2 * FLOOD_LEAD.as_secs() as u32;
    let flood = match mode.script() {
        Some(script) => {
            let args = vec![
                "-t1".to_owned(),
                format!("-c{FLOOD_CONNECTIONS}"),
                "--latency".to_owned(),
                "-s".to_owned(),
                dir.join(script).display().to_string(),
                format!("http://{LOOPBACK}:{GATEWAY_PORT}{LOGIN_PATH}"),
            ];
            let out = dir.join("flood.out");
            let child = wrk(lab, &out, &args, flood_seconds)?;
            thread::sleep(FLOOD_LEAD);
            Some((child, out))
        }
        None => None,
    };
    let before = password_outcomes(lab)?;
    let args = vec![
        "-t1".to_owned(),
        format!("-c{PUBLIC_CONNECTIONS}"),
        "--latency".to_owned(),
        format!("http://{LOOPBACK}:{GATEWAY_PORT}{OPEN_PATH}"),
    ];
    let public_out = dir.join("public.out");
    let public = finish_wrk(wrk(lab, &public_out, &args, seconds)?, &public_out, seconds)?;
    let after = password_outcomes(lab)?;
    ensure!(
        public.non_2xx == 0 && public.socket_errors == 0 && public.requests > 0,
        "the public route: {} non-2xx answers, {} socket errors, {} requests",
        public.non_2xx,
        public.socket_errors,
        public.requests
    );
    let flood_rps = match flood {
        Some((child, out)) => finish_wrk(child, &out, flood_seconds)?.rps,
        None => 0.0,
    };
    let outcomes = after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(*before.get(k).unwrap_or(&0))))
        .filter(|(_, v)| *v > 0)
        .collect();
    Ok(Run {
        public,
        flood_rps,
        outcomes,
    })
}

// ---- the report --------------------------------------------------------------------------------

struct Report {
    date: String,
    machine: Value,
    rounds: u32,
    seconds: u32,
    smoke: bool,
    bin: PathBuf,
    runs: Vec<(Mode, Vec<Run>)>,
    total_seconds: f64,
}

impl Report {
    fn runs(&self, mode: Mode) -> &[Run] {
        self.runs
            .iter()
            .find(|(m, _)| *m == mode)
            .map_or(&[], |(_, r)| r.as_slice())
    }

    fn p99s(&self, mode: Mode) -> Vec<f64> {
        self.runs(mode).iter().map(|r| r.public.p99_ms).collect()
    }

    /// Per round: p99 under `mode` over p99 alone in the same round.
    fn round_ratios(&self, mode: Mode) -> Vec<f64> {
        self.p99s(mode)
            .iter()
            .zip(self.p99s(Mode::Alone))
            .map(|(f, a)| f / a)
            .collect()
    }

    fn ratio(&self, mode: Mode) -> f64 {
        median(&self.p99s(mode)) / median(&self.p99s(Mode::Alone))
    }

    fn json(&self) -> Value {
        let modes: Vec<Value> = MODES
            .iter()
            .map(|&m| {
                let runs = self.runs(m);
                let med = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
                json!({
                    "mode": m.key(),
                    "median_p99_ms": med(|r| r.public.p99_ms),
                    "median_p50_ms": med(|r| r.public.p50_ms),
                    "median_rps": med(|r| r.public.rps),
                    "median_flood_rps": med(|r| r.flood_rps),
                    "p99_ms_per_round": self.p99s(m),
                    "p99_ratio_to_alone": self.ratio(m),
                    "p99_ratio_per_round": self.round_ratios(m),
                    "password_outcomes_per_round": runs.iter().map(|r| &r.outcomes).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "benchmark": "gateway-auth",
            "date": self.date,
            "machine": self.machine,
            "rounds": self.rounds,
            "seconds": self.seconds,
            "smoke": self.smoke,
            "binary": self.bin.display().to_string(),
            "public_connections": PUBLIC_CONNECTIONS,
            "flood_connections": FLOOD_CONNECTIONS,
            "flood_delay_ms": FLOOD_DELAY_MS,
            "argon2id": {"m_kib": ARGON2_MEMORY_KIB, "t": ARGON2_TIME, "p": ARGON2_LANES},
            "target_p99_ratio": TARGET_RATIO,
            "modes": modes,
            "total_seconds": self.total_seconds,
        })
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# gateway-auth benchmark\n\n{} ({} round(s) of {} s; binary {}; load {} → {})\n",
            self.date,
            self.rounds,
            self.seconds,
            self.bin.display(),
            self.machine["loadavg_1m_start"],
            self.machine["loadavg_1m_end"],
        );
        let _ = writeln!(
            md,
            "| mode | p99 ms (per round) | p50 ms | req/s | bad passwords/s answered | p99 / alone (per round) |\n\
             | --- | ---: | ---: | ---: | ---: | ---: |"
        );
        for m in MODES {
            let runs = self.runs(m);
            let med = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
            let list = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                md,
                "| {} | {:.2} ({}) | {:.2} | {:.0} | {:.0} | {:.2}x ({}) |",
                m.describe(),
                med(|r| r.public.p99_ms),
                list(&self.p99s(m)),
                med(|r| r.public.p50_ms),
                med(|r| r.public.rps),
                med(|r| r.flood_rps),
                self.ratio(m),
                list(&self.round_ratios(m)),
            );
        }
        for m in [Mode::FloodManySources, Mode::FloodOneSource] {
            let r = self.ratio(m);
            let _ = writeln!(
                md,
                "\n- {}: p99 {r:.2}x alone (target <= {TARGET_RATIO}x: **{}**)",
                m.describe(),
                if r <= TARGET_RATIO { "met" } else { "missed" }
            );
        }
        md
    }

    fn write(&self) -> Result<()> {
        let dir = util::target_dir().join("bench");
        fs::create_dir_all(&dir).context("create target/bench")?;
        let stem = if self.smoke {
            "gateway-auth-smoke"
        } else {
            "gateway-auth"
        };
        let json_path = dir.join(format!("{stem}.json"));
        fs::write(&json_path, serde_json::to_string_pretty(&self.json())?)
            .with_context(|| format!("write {}", json_path.display()))?;
        let md = self.markdown();
        fs::write(dir.join(format!("{stem}.md")), &md).context("write the summary")?;
        println!("\n{md}\nwritten: {}", json_path.display());
        Ok(())
    }
}
