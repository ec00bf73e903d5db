//! `cargo xtask bench gateway`: HTTPS requests through three front ends of one upstream, in
//! one run, alternating: the api-shield gateway with API-key authentication and a plan whose
//! rate limit and quota are evaluated but never hit, the same gateway as a plain TLS
//! pass-through (a public route without limits), and nginx with TLS, an API-key check
//! (`map` + `if`) and `limit_req` (far above the load), all proxying with keep-alive to the
//! same nginx `return 200 "ok"` upstream.
//!
//! Everything runs inside the lab's own network namespace (xtask's `Lab` with no hosts: one
//! namespace, deleted at the end and on Ctrl-C) and talks over its loopback. The daemon needs
//! an interface to attach XDP to: a veth pair created inside that namespace, which the
//! benchmark's traffic never crosses, so the figures are the gateway's alone.
//!
//! Fairness: the load is `wrk -t1 -c32 --latency`, the same request (the API-key header
//! included) for all three; the gateway runs on its 2-thread runtime and nginx gets 2 workers;
//! neither logs requests; both present the same ECDSA P-256 certificate, and the report
//! records the TLS version and cipher each one negotiated. Every front end runs once per round,
//! the order rotated every round, after one unrecorded warm-up run each; medians over rounds.
//! Before measuring, each front end must answer the keyed request with 200 and the upstream's
//! body, and the two authenticating ones must answer 401 without the key; any non-2xx answer
//! or socket error during a run fails the benchmark.
//!
//! Writes `target/bench/gateway.json` and `target/bench/gateway.md` (`--smoke`: one round of
//! 1-second runs, written to `gateway-smoke.*`).

use crate::{
    lab::{Lab, LabChild},
    util::{self, command, output},
};
use anyhow::{Context, Result};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

mod files;
mod load;
mod procs;
mod report;
#[cfg(test)]
mod tests;

pub(crate) use files::{upstream_nginx_conf, write_readable};
pub(crate) use load::{Wrk, parse_wrk};
pub(crate) use procs::{run_daemon, start_nginx};

use crate::bench_common::{check_plan, loadavg, machine, now_rfc3339};
use files::Files;
use load::{tcp_active_opens, ticks_to_us, tree_cpu_ticks, wrk};
use procs::{check_fronts, start_daemon, wait_http};
use report::{Report, versions};

/// `Lab::star` with no hosts creates only its switch namespace: loopback (up) and an idle
/// bridge. It is the benchmark's namespace.
pub(crate) const NS_ROLE: &str = "switch";
/// The veth pair the daemon attaches XDP to (it needs an interface; loopback carries the load).
pub(crate) const XDP_IF: &str = "gwb0";
pub(crate) const XDP_PEER: &str = "gwb1";

pub(crate) const LOOPBACK: &str = "127.0.0.1";
pub(crate) const UPSTREAM_PORT: u16 = 8081;
const GATEWAY_PORT: u16 = 8443;
const NGINX_PORT: u16 = 9443;
/// The check endpoint every gateway config has; unused here but it must not collide.
const CHECK_PORT: u16 = 9382;

const API_KEY: &str = "ak_gateway_bench_0123456789abcdef";
const IDENTITY: &str = "bench-client";
/// Routed to the authenticating route (api-shield) or location (nginx).
const AUTH_PATH: &str = "/auth/bench";
/// Routed to api-shield's public route without limits.
const OPEN_PATH: &str = "/open/bench";
const UPSTREAM_BODY: &str = "ok";

const WRK_THREADS: u32 = 1;
const WRK_CONNECTIONS: u32 = 32;
/// The daemon's tokio runtime has 2 worker threads; nginx gets as many workers.
const FRONT_WORKERS: u32 = 2;
const UPSTREAM_WORKERS: u32 = 1;
/// Requests per second of the limits (api-shield's plan, nginx's `limit_req`): orders of
/// magnitude above what 32 connections on 2 cores can send, so they are evaluated, never hit.
const RATE_PER_SECOND: u32 = 1_000_000;
/// api-shield's daily quota: likewise never reached.
const DAILY_QUOTA: u64 = 1_000_000_000_000;
/// Idle upstream connections kept by nginx: the gateway's `upstream_pool_idle_per_host`.
const UPSTREAM_KEEPALIVE: u32 = 64;
/// nginx closes a keep-alive connection after 1,000 requests by default, which would add
/// reconnections (and TLS handshakes) that the gateway never makes.
const KEEPALIVE_REQUESTS: u64 = 1_000_000_000;
const NGINX_WORKER_CONNECTIONS: u32 = 4_096;

const DEFAULT_ROUNDS: u32 = 5;
const DEFAULT_SECONDS: u32 = 5;
const WARMUP_SECONDS: u32 = 1;
const SMOKE_SECONDS: u32 = 1;
/// wrk runs its `-d` and then closes; anything beyond this is a hang.
pub(crate) const WRK_GRACE: Duration = Duration::from_secs(30);
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(20);
pub(crate) const POLL: Duration = Duration::from_millis(100);
const CURL_MAX_SECONDS: &str = "2";
const HTTP_OK: u16 = 200;
const HTTP_UNAUTHORIZED: u16 = 401;
/// The service user the gateway drops to (`run_as`), and nginx's workers too.
pub(crate) const RUN_AS: &str = "nobody";
const NOBODY_UID: u32 = 65534;
const NOBODY_GROUP: &str = "nogroup";
const PRIVATE_MODE: u32 = 0o600;
const READABLE_MODE: u32 = 0o644;
pub(crate) const DIR_MODE: u32 = 0o755;

/// Targets from the issue.
const TARGET_AUTH_OVER_OPEN: f64 = 0.90;
const TARGET_OURS_OVER_NGINX: f64 = 1.0;
/// p99 of ours over nginx's: at most this (no worse).
const TARGET_P99_RATIO: f64 = 1.0;

#[derive(clap::Args, Clone, Copy)]
pub struct Args {
    /// Rounds; in each, every front end runs once (the order rotates)
    #[arg(long, env = "BENCH_ROUNDS", default_value_t = DEFAULT_ROUNDS)]
    rounds: u32,
    /// Seconds of each wrk run
    #[arg(long, env = "BENCH_SECONDS", default_value_t = DEFAULT_SECONDS)]
    seconds: u32,
    /// Check the harness quickly: one round of 1-second runs, no warm-up, written to
    /// target/bench/gateway-smoke.{json,md}
    #[arg(long)]
    smoke: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Front {
    /// (a) api-shield: TLS, API key, plan with rate limit and quota.
    Auth,
    /// (b) api-shield: TLS pass-through, public route, no limits.
    Open,
    /// (c) nginx: TLS, `map` + `if` key check, `limit_req`.
    Nginx,
}

const FRONTS: [Front; 3] = [Front::Auth, Front::Open, Front::Nginx];

impl Front {
    fn key(self) -> &'static str {
        match self {
            Front::Auth => "api_shield_auth_quota",
            Front::Open => "api_shield_passthrough",
            Front::Nginx => "nginx_auth_limit_req",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Front::Auth => "api-shield: TLS + API key + rate limit + quota",
            Front::Open => "api-shield: TLS pass-through",
            Front::Nginx => "nginx: TLS + API key (map/if) + limit_req",
        }
    }

    fn port(self) -> u16 {
        match self {
            Front::Auth | Front::Open => GATEWAY_PORT,
            Front::Nginx => NGINX_PORT,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Front::Open => OPEN_PATH,
            Front::Auth | Front::Nginx => AUTH_PATH,
        }
    }

    fn url(self) -> String {
        format!("https://{LOOPBACK}:{}{}", self.port(), self.path())
    }

    /// Whether a request without the key must be refused.
    fn authenticates(self) -> bool {
        self != Front::Open
    }
}

/// One measured run: wrk's figures, the front end's CPU time and the TCP connections opened
/// in the namespace over it (wrk's, then the front end's to the upstream: a front end that
/// did not keep connections alive would show here).
#[derive(Clone, Debug)]
struct Run {
    wrk: Wrk,
    cpu_us_per_request: f64,
    tcp_opens: u64,
}

/// How many rounds of how many seconds, and whether a warm-up run precedes them.
#[derive(Clone, Copy)]
struct Plan {
    rounds: u32,
    seconds: u32,
    warmup: bool,
}

impl Plan {
    fn of(args: Args) -> Result<Plan> {
        let plan = if args.smoke {
            Plan {
                rounds: 1,
                seconds: SMOKE_SECONDS,
                warmup: false,
            }
        } else {
            Plan {
                rounds: args.rounds,
                seconds: args.seconds,
                warmup: true,
            }
        };
        check_plan(plan.rounds, plan.seconds)?;
        Ok(plan)
    }
}

/// The running front ends and their upstream, stopped in `stop` (or by the lab on error).
struct Fronts {
    upstream: LabChild,
    daemon: LabChild,
    nginx: LabChild,
}

impl Fronts {
    /// Starts the upstream, the daemon and nginx, and waits until each answers.
    fn start(lab: &Lab, bin: &Path, files: &Files) -> Result<Fronts> {
        let upstream = start_nginx(lab, &files.upstream_conf, &files.dir.join("upstream"))?;
        wait_http(
            lab,
            &format!("http://{LOOPBACK}:{UPSTREAM_PORT}/"),
            "upstream",
        )?;
        let daemon = start_daemon(lab, bin, files)?;
        let nginx = start_nginx(lab, &files.front_conf, &files.dir.join("front"))?;
        for f in FRONTS {
            wait_http(lab, &f.url(), f.describe())?;
        }
        Ok(Fronts {
            upstream,
            daemon,
            nginx,
        })
    }

    /// The process whose CPU time a front end costs.
    fn cpu_pid(&self, f: Front) -> i32 {
        match f {
            Front::Auth | Front::Open => self.daemon.pid(),
            Front::Nginx => self.nginx.pid(),
        }
    }

    /// Stops nginx and the daemon, detaches the shield, then stops the upstream. The daemon
    /// first: a daemon that still manages the interface refuses `detach`.
    fn stop(self, lab: &Lab, bin: &Path, files: &Files) -> Result<()> {
        drop(self.nginx);
        drop(self.daemon);
        output(
            lab.nsenter(NS_ROLE, bin)
                .arg("--socket")
                .arg(&files.socket)
                .args(["detach", "--iface", XDP_IF, "--config"])
                .arg(&files.config),
            "api-shield detach",
        )?;
        drop(self.upstream);
        Ok(())
    }
}

pub fn gateway(bin: &Path, args: Args) -> Result<()> {
    let plan = Plan::of(args)?;
    let load_start = loadavg();
    let started = Instant::now();
    let date = now_rfc3339();

    let mut lab = Lab::star(&[])?;
    let tmp = tempfile::Builder::new()
        .prefix("api-shield-gwbench-")
        .tempdir()
        .context("create a temporary directory")?;
    let files = prepare(&mut lab, bin, tmp.path())?;
    let fronts = Fronts::start(&lab, bin, &files)?;
    let tls = check_fronts(&lab)?;
    println!(
        "gateway bench: every front end answers 200 with the key; without it 401 where a key \
         is required, 200 on the pass-through"
    );
    let (runs, orders) = measure(&lab, &files, &fronts, plan)?;
    fronts.stop(&lab, bin, &files)?;
    let versions = versions(bin);
    lab.teardown()?;
    drop(tmp);
    println!("gateway bench: lab removed");

    let report = Report {
        date,
        machine: machine(load_start, loadavg()),
        rounds: plan.rounds,
        seconds: plan.seconds,
        smoke: args.smoke,
        runs,
        orders,
        tls,
        versions,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    report.write()
}

/// The veth pair the daemon attaches XDP to, inside the benchmark's namespace.
pub(crate) fn add_xdp_veth(lab: &Lab) -> Result<()> {
    let ns = lab.ns(NS_ROLE);
    for args in [
        vec![
            "link", "add", XDP_IF, "type", "veth", "peer", "name", XDP_PEER,
        ],
        vec!["link", "set", XDP_IF, "up"],
        vec!["link", "set", XDP_PEER, "up"],
    ] {
        output(command("ip").args(["-n", &ns]).args(&args), "ip link")?;
    }
    Ok(())
}

/// The veth pair the daemon attaches to, the files in `dir` (removed with the lab, as is the
/// daemon's `pin_root`), and the daemon's own check of its config.
fn prepare(lab: &mut Lab, bin: &Path, dir: &Path) -> Result<Files> {
    println!("gateway bench: namespace {}", lab.ns(NS_ROLE));
    add_xdp_veth(lab)?;
    lab.remove_on_teardown(dir);
    let pin_root = PathBuf::from(format!(
        "/sys/fs/bpf/api-shield-gwbench-{}",
        std::process::id()
    ));
    lab.remove_on_teardown(&pin_root);
    let files = Files::write(dir, &pin_root)?;
    output(
        util::command(bin).arg("check-config").arg(&files.config),
        "api-shield check-config",
    )?;
    Ok(files)
}

/// Every front end's runs, and the order of each round (rotated every round).
type Measured = (Vec<(Front, Vec<Run>)>, Vec<[&'static str; 3]>);

/// The warm-up (if planned), then every round, printing each run as it ends.
fn measure(lab: &Lab, files: &Files, fronts: &Fronts, plan: Plan) -> Result<Measured> {
    if plan.warmup {
        for f in FRONTS {
            wrk(lab, &files.dir, f, WARMUP_SECONDS)
                .with_context(|| format!("warm-up of {}", f.describe()))?;
        }
    }
    println!(
        "{:<6} {:<46} {:>10} {:>9} {:>9} {:>9} {:>6}",
        "round", "front end", "req/s", "p50 ms", "p99 ms", "CPU us/r", "conns"
    );
    let mut runs: Vec<(Front, Vec<Run>)> = FRONTS.iter().map(|f| (*f, Vec::new())).collect();
    let mut orders = Vec::new();
    for round in 0..plan.rounds {
        let mut order = FRONTS;
        order.rotate_left(round as usize % FRONTS.len());
        orders.push(order.map(Front::key));
        for f in order {
            let run = measure_one(lab, files, fronts.cpu_pid(f), f, plan.seconds)
                .with_context(|| format!("round {round}, {}", f.describe()))?;
            println!(
                "{:<6} {:<46} {:>10.0} {:>9.2} {:>9.2} {:>9.1} {:>6}",
                round,
                f.describe(),
                run.wrk.rps,
                run.wrk.p50_ms,
                run.wrk.p99_ms,
                run.cpu_us_per_request,
                run.tcp_opens
            );
            if let Some((_, v)) = runs.iter_mut().find(|(g, _)| *g == f) {
                v.push(run);
            }
        }
    }
    Ok((runs, orders))
}

/// One wrk run against `f`, with the CPU time of `cpu_pid`'s process tree and the TCP
/// connections opened over it.
fn measure_one(lab: &Lab, files: &Files, cpu_pid: i32, f: Front, seconds: u32) -> Result<Run> {
    let (cpu0, opens0) = (tree_cpu_ticks(cpu_pid), tcp_active_opens(lab)?);
    let w = wrk(lab, &files.dir, f, seconds)?;
    let cpu = tree_cpu_ticks(cpu_pid).saturating_sub(cpu0);
    Ok(Run {
        cpu_us_per_request: ticks_to_us(cpu) / w.requests.max(1) as f64,
        tcp_opens: tcp_active_opens(lab)?.saturating_sub(opens0),
        wrk: w,
    })
}
