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

use crate::bench_common::{check_plan, loadavg, machine, now_rfc3339};
use crate::gateway_bench::{
    DIR_MODE, NS_ROLE, Wrk, XDP_IF, add_xdp_veth, run_daemon, start_nginx, upstream_nginx_conf,
    write_readable,
};
use crate::lab::{Lab, LabChild};
use crate::util::{command, output};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fs::{self};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod files;
mod procs;
mod report;

use files::write_files;
use procs::{check_routes, measure, wait_ready};
use report::Report;

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
    check_plan(rounds, seconds)?;
    let load_start = loadavg();
    let started = Instant::now();
    let date = now_rfc3339();

    let mut lab = Lab::star(&[])?;
    let tmp = tempfile::Builder::new()
        .prefix("api-shield-authbench-")
        .tempdir()
        .context("create a temporary directory")?;
    let dir = tmp.path().to_owned();
    let config = prepare(&mut lab, bin, &dir)?;
    let upstream = start_upstream(&lab, &dir)?;
    let socket = dir.join("ctl.sock");
    let daemon = run_daemon(&lab, bin, &config, &socket, &dir.join("daemon.log"))?;
    wait_ready(&lab)?;
    check_routes(&lab)?;
    println!(
        "gateway-auth bench: the public route answers 200; Basic 200 with the password, 401 without"
    );
    let runs = measure_rounds(&lab, &dir, rounds, seconds)?;

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

/// The veth pair the daemon attaches to and the files in `dir` (removed with the lab, as is
/// the daemon's `pin_root`), checked by the daemon; returns the config's path.
fn prepare(lab: &mut Lab, bin: &Path, dir: &Path) -> Result<PathBuf> {
    println!("gateway-auth bench: namespace {}", lab.ns(NS_ROLE));
    add_xdp_veth(lab)?;
    lab.remove_on_teardown(dir);
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
        .with_context(|| format!("chmod {}", dir.display()))?;
    let pin_root = PathBuf::from(format!(
        "/sys/fs/bpf/api-shield-authbench-{}",
        std::process::id()
    ));
    lab.remove_on_teardown(&pin_root);
    let config = write_files(dir, &pin_root)?;
    output(
        command(bin).arg("check-config").arg(&config),
        "api-shield check-config",
    )?;
    Ok(config)
}

/// The nginx upstream answering `200 ok`, its config and prefix in `dir`.
fn start_upstream(lab: &Lab, dir: &Path) -> Result<LabChild> {
    let upstream_prefix = dir.join("upstream");
    fs::create_dir(&upstream_prefix).context("create nginx's prefix")?;
    let upstream_conf = dir.join("upstream.conf");
    write_readable(&upstream_conf, &upstream_nginx_conf(&upstream_prefix))?;
    start_nginx(lab, &upstream_conf, &upstream_prefix)
}

/// An unrecorded warm-up of every mode (the flood's first hashes, the upstream pool), then
/// every round, printing each run as it ends.
fn measure_rounds(
    lab: &Lab,
    dir: &Path,
    rounds: u32,
    seconds: u32,
) -> Result<Vec<(Mode, Vec<Run>)>> {
    for mode in MODES {
        measure(lab, dir, mode, 1).with_context(|| format!("warm-up, {}", mode.describe()))?;
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
            let run = measure(lab, dir, mode, seconds)
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
    Ok(runs)
}
