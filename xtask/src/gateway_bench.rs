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
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use std::{
    fmt::Write as _,
    fs::{self, File},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

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
const MAX_ROUNDS: u32 = 100;
const MAX_SECONDS: u32 = 600;
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

/// What one wrk run reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Wrk {
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p75_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) requests: u64,
    pub(crate) non_2xx: u64,
    pub(crate) socket_errors: u64,
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

pub fn gateway(bin: &Path, args: Args) -> Result<()> {
    let (rounds, seconds, warmup) = if args.smoke {
        (1, SMOKE_SECONDS, false)
    } else {
        (args.rounds, args.seconds, true)
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
    let date = utc_rfc3339(unix_now());

    let mut lab = Lab::star(&[])?;
    let ns = lab.ns(NS_ROLE);
    println!("gateway bench: namespace {ns}");
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
        .prefix("api-shield-gwbench-")
        .tempdir()
        .context("create a temporary directory")?;
    lab.remove_on_teardown(tmp.path());
    let pin_root = PathBuf::from(format!(
        "/sys/fs/bpf/api-shield-gwbench-{}",
        std::process::id()
    ));
    lab.remove_on_teardown(&pin_root);
    let files = Files::write(tmp.path(), &pin_root)?;
    output(
        util::command(bin).arg("check-config").arg(&files.config),
        "api-shield check-config",
    )?;

    let upstream = start_nginx(&lab, &files.upstream_conf, &files.dir.join("upstream"))?;
    wait_http(
        &lab,
        &format!("http://{LOOPBACK}:{UPSTREAM_PORT}/"),
        "upstream",
    )?;
    let daemon = start_daemon(&lab, bin, &files)?;
    let front = start_nginx(&lab, &files.front_conf, &files.dir.join("front"))?;
    for f in FRONTS {
        wait_http(&lab, &f.url(), f.describe())?;
    }
    let tls = check_fronts(&lab)?;
    println!(
        "gateway bench: every front end answers 200 with the key; without it 401 where a key \
         is required, 200 on the pass-through"
    );

    let cpu_pid = |f: Front| match f {
        Front::Auth | Front::Open => daemon.pid(),
        Front::Nginx => front.pid(),
    };
    if warmup {
        for f in FRONTS {
            wrk(&lab, &files.dir, f, WARMUP_SECONDS)
                .with_context(|| format!("warm-up of {}", f.describe()))?;
        }
    }
    println!(
        "{:<6} {:<46} {:>10} {:>9} {:>9} {:>9} {:>6}",
        "round", "front end", "req/s", "p50 ms", "p99 ms", "CPU us/r", "conns"
    );
    let mut runs: Vec<(Front, Vec<Run>)> = FRONTS.iter().map(|f| (*f, Vec::new())).collect();
    let mut orders = Vec::new();
    for round in 0..rounds {
        let mut order = FRONTS;
        order.rotate_left(round as usize % FRONTS.len());
        orders.push(order.map(Front::key));
        for f in order {
            let (cpu0, opens0) = (tree_cpu_ticks(cpu_pid(f)), tcp_active_opens(&lab)?);
            let w = wrk(&lab, &files.dir, f, seconds)
                .with_context(|| format!("round {round}, {}", f.describe()))?;
            let cpu = tree_cpu_ticks(cpu_pid(f)).saturating_sub(cpu0);
            let run = Run {
                cpu_us_per_request: ticks_to_us(cpu) / w.requests.max(1) as f64,
                tcp_opens: tcp_active_opens(&lab)?.saturating_sub(opens0),
                wrk: w,
            };
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

    drop(front);
    output(
        lab.nsenter(NS_ROLE, bin)
            .arg("--socket")
            .arg(&files.socket)
            .args(["detach", "--iface", XDP_IF, "--config"])
            .arg(&files.config),
        "api-shield detach",
    )?;
    drop(daemon);
    drop(upstream);
    let versions = versions(bin);
    lab.teardown()?;
    drop(tmp);
    println!("gateway bench: lab removed");

    let report = Report {
        date,
        machine: machine(load_start, loadavg()),
        rounds,
        seconds,
        smoke: args.smoke,
        runs,
        orders,
        tls,
        versions,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    report.write()
}

// ---- the files -------------------------------------------------------------------------------

struct Files {
    dir: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    upstream_conf: PathBuf,
    front_conf: PathBuf,
}

impl Files {
    /// Certificate, policy, daemon config and the two nginx configs, in `dir` (made readable
    /// by the service user the gateway and nginx's workers run as).
    fn write(dir: &Path, pin_root: &Path) -> Result<Files> {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
            .with_context(|| format!("chmod {}", dir.display()))?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        output(
            command("openssl")
                .args(["req", "-x509", "-newkey", "ec"])
                .args([
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-days",
                    "1",
                ])
                .args(["-subj", "/CN=bench.test", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert),
            "openssl req (self-signed certificate)",
        )?;
        for path in [&cert, &key] {
            // The gateway re-reads them as the service user on reload; nobody else needs them.
            std::os::unix::fs::chown(path, Some(NOBODY_UID), None)
                .with_context(|| format!("chown {}", path.display()))?;
            fs::set_permissions(path, fs::Permissions::from_mode(PRIVATE_MODE))
                .with_context(|| format!("chmod {}", path.display()))?;
        }
        let policy = dir.join("policy.toml");
        write_readable(&policy, &policy_toml(&sha256_hex(API_KEY)?))?;
        let config = dir.join("api-shield.toml");
        write_readable(&config, &daemon_toml(dir, pin_root, &policy, &cert, &key))?;
        let upstream_conf = dir.join("upstream.conf");
        write_readable(&upstream_conf, &upstream_nginx_conf(&dir.join("upstream")))?;
        let front_conf = dir.join("front.conf");
        write_readable(
            &front_conf,
            &front_nginx_conf(&dir.join("front"), &cert, &key),
        )?;
        for sub in ["upstream", "front"] {
            fs::create_dir(dir.join(sub)).context("create nginx's prefix")?;
        }
        Ok(Files {
            dir: dir.to_owned(),
            config,
            socket: dir.join("ctl.sock"),
            log: dir.join("daemon.log"),
            upstream_conf,
            front_conf,
        })
    }
}

pub(crate) fn write_readable(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(READABLE_MODE))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Lowercase hex SHA-256 of `text`, by coreutils' `sha256sum` (xtask has no hashing crate).
fn sha256_hex(text: &str) -> Result<String> {
    const HEX_DIGITS: usize = 64;
    let file = tempfile::NamedTempFile::new().context("temporary file for sha256sum")?;
    fs::write(file.path(), text).context("write the key for sha256sum")?;
    let out = output(command("sha256sum").arg(file.path()), "sha256sum")?;
    let hex = out.split_whitespace().next().unwrap_or_default().to_owned();
    ensure!(
        hex.len() == HEX_DIGITS && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "sha256sum printed {out:?}"
    );
    Ok(hex)
}

/// (a) `/auth`: the key, a plan with a rate limit and a quota that are never reached; (b)
/// `/open`: public, no limits. The detector is off: nothing here is abuse.
fn policy_toml(key_sha256: &str) -> String {
    format!(
        r#"realm = "bench"
unmatched = "deny"

[[api_keys]]
hash = "sha256:{key_sha256}"
identity = "{IDENTITY}"
plan = "bench"

[plans.bench]
rate = [{{ name = "burst", rate = {RATE_PER_SECOND}, per = "1s", burst = {RATE_PER_SECOND}, key = ["identity"] }}]
quota = [{{ name = "daily", limit = {DAILY_QUOTA}, window = "day" }}]

[[routes]]
name = "auth"
path_prefix = "/auth"
auth = ["api_key"]
api_key_header = "x-api-key"

[[routes]]
name = "open"
path_prefix = "/open"
auth = []

[detector]
enabled = false
"#
    )
}

/// Kernel limits off: the XDP program sits on an interface the load never crosses anyway.
fn daemon_toml(dir: &Path, pin_root: &Path, policy: &Path, cert: &Path, key: &Path) -> String {
    format!(
        r#"pin_root = "{pin_root}"
state_dir = "{state}"
audit_log = "{audit}"
run_as = "{RUN_AS}"

[limits]
packets_per_second = 0
syn_per_second = 0

[gateway]
check_listen = "{LOOPBACK}:{CHECK_PORT}"
policy_file = "{policy}"
default_upstream = "http://{LOOPBACK}:{UPSTREAM_PORT}"

[[gateway.listeners]]
listen = "{LOOPBACK}:{GATEWAY_PORT}"
tls_cert = "{cert}"
tls_key = "{key}"
"#,
        pin_root = pin_root.display(),
        state = dir.join("state").display(),
        audit = dir.join("audit.jsonl").display(),
        policy = policy.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

/// What both nginx instances share: foreground master (so its pid is the one spawned), no
/// access log, every path under `prefix`, unprivileged workers.
pub(crate) fn nginx_common(prefix: &Path, workers: u32) -> String {
    let p = prefix.display();
    format!(
        "daemon off;\nmaster_process on;\nworker_processes {workers};\nuser {RUN_AS} {NOBODY_GROUP};\n\
         pid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{ worker_connections {NGINX_WORKER_CONNECTIONS}; }}\n"
    )
}

pub(crate) fn nginx_http_common(prefix: &Path) -> String {
    let p = prefix.display();
    format!(
        "    access_log off;\n\
         \x20   client_body_temp_path {p}/body;\n\
         \x20   proxy_temp_path {p}/proxy;\n\
         \x20   fastcgi_temp_path {p}/fastcgi;\n\
         \x20   uwsgi_temp_path {p}/uwsgi;\n\
         \x20   scgi_temp_path {p}/scgi;\n\
         \x20   keepalive_requests {KEEPALIVE_REQUESTS};\n"
    )
}

pub(crate) fn upstream_nginx_conf(prefix: &Path) -> String {
    format!(
        "{}http {{\n{}\
         \x20   server {{\n\
         \x20       listen {LOOPBACK}:{UPSTREAM_PORT};\n\
         \x20       location / {{\n\
         \x20           default_type text/plain;\n\
         \x20           return 200 \"{UPSTREAM_BODY}\";\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n",
        nginx_common(prefix, UPSTREAM_WORKERS),
        nginx_http_common(prefix),
    )
}

/// Both nginx locations: keep-alive to the upstream, the headers the gateway also sets (client
/// address, scheme), and the key removed, as the gateway's `strip_credentials` does.
const PROXY_DIRECTIVES: &str = "            proxy_pass http://backend;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20           proxy_set_header Host $host;\n\
         \x20           proxy_set_header X-Real-IP $remote_addr;\n\
         \x20           proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         \x20           proxy_set_header X-Forwarded-Proto $scheme;\n\
         \x20           proxy_set_header X-Api-Key \"\";\n";

/// (c): the key checked by `map` + `if` (rewrite phase: a refused request never reaches the
/// limiter), then `limit_req` per key.
fn front_nginx_conf(prefix: &Path, cert: &Path, key: &Path) -> String {
    let proxy = PROXY_DIRECTIVES;
    format!(
        "{}http {{\n{}\
         \x20   map $http_x_api_key $key_ok {{ default 0; \"{API_KEY}\" 1; }}\n\
         \x20   limit_req_zone $http_x_api_key zone=bench:1m rate={RATE_PER_SECOND}r/s;\n\
         \x20   upstream backend {{\n\
         \x20       server {LOOPBACK}:{UPSTREAM_PORT};\n\
         \x20       keepalive {UPSTREAM_KEEPALIVE};\n\
         \x20       keepalive_requests {KEEPALIVE_REQUESTS};\n\
         \x20   }}\n\
         \x20   server {{\n\
         \x20       listen {LOOPBACK}:{NGINX_PORT} ssl;\n\
         \x20       ssl_certificate {cert};\n\
         \x20       ssl_certificate_key {key};\n\
         \x20       ssl_protocols TLSv1.2 TLSv1.3;\n\
         \x20       location /auth/ {{\n\
         \x20           if ($key_ok = 0) {{ return 401; }}\n\
         \x20           limit_req zone=bench burst={RATE_PER_SECOND} nodelay;\n\
         {proxy}\
         \x20       }}\n\
         \x20       location /open/ {{\n\
         {proxy}\
         \x20       }}\n\
         \x20   }}\n\
         }}\n",
        nginx_common(prefix, FRONT_WORKERS),
        nginx_http_common(prefix),
        cert = cert.display(),
        key = key.display(),
    )
}

// ---- the processes ---------------------------------------------------------------------------

pub(crate) fn start_nginx(lab: &Lab, conf: &Path, prefix: &Path) -> Result<LabChild> {
    output(
        lab.nsenter(NS_ROLE, "nginx")
            .arg("-t")
            .arg("-q")
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(conf),
        &format!("nginx -t -c {}", conf.display()),
    )?;
    lab.spawn(
        lab.nsenter(NS_ROLE, "nginx")
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "nginx",
    )
}

fn start_daemon(lab: &Lab, bin: &Path, files: &Files) -> Result<LabChild> {
    let log = File::create(&files.log).context("create the daemon log")?;
    let mut daemon = lab.spawn(
        lab.nsenter(NS_ROLE, bin)
            .arg("--socket")
            .arg(&files.socket)
            .args(["run", "--iface", XDP_IF, "--config"])
            .arg(&files.config)
            .stdout(log.try_clone()?)
            .stderr(log),
        "api-shield run",
    )?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = daemon.try_wait()? {
            bail!(
                "`api-shield run` exited ({status}) during start-up:\n{}",
                log_tail(&files.log)
            );
        }
        let status = command(bin)
            .arg("--socket")
            .arg(&files.socket)
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
                log_tail(&files.log)
            );
        }
        thread::sleep(POLL);
    }
}

pub(crate) fn log_tail(log: &Path) -> String {
    const LINES: usize = 30;
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LINES)..].join("\n")
}

/// An HTTP/1.1 answer as curl printed it with `-i`.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

fn curl(lab: &Lab, url: &str, key: Option<&str>) -> Result<Answer> {
    let mut cmd = lab.nsenter(NS_ROLE, "curl");
    // HTTP/1.1 as wrk speaks it (the gateway would otherwise negotiate h2); -k: self-signed.
    cmd.args(["-sk", "--http1.1", "-i", "--max-time", CURL_MAX_SECONDS]);
    if let Some(key) = key {
        cmd.args(["-H", &format!("x-api-key: {key}")]);
    }
    let text = output(cmd.arg(url), &format!("curl {url}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("curl {url}: no status line in {text:?}"))?;
    Ok(Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// Waits until `url` answers 200 to the keyed request.
fn wait_http(lab: &Lab, url: &str, what: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match curl(lab, url, Some(API_KEY)) {
            Ok(a) if a.status == HTTP_OK => return Ok(()),
            other => {
                if Instant::now() > deadline {
                    let seen = match other {
                        Ok(a) => format!("status {}", a.status),
                        Err(e) => format!("{e:#}"),
                    };
                    bail!("{what} at {url} not ready within {READY_TIMEOUT:?}: {seen}");
                }
            }
        }
        thread::sleep(POLL);
    }
}

/// The answers that prove what each front end does: the keyed request gets the upstream's
/// body (from api-shield's authenticating route with its rate-limit headers), a request
/// without the key 401 where a key is required and 200 on the pass-through. Returns the TLS
/// parameters each front end negotiated.
fn check_fronts(lab: &Lab) -> Result<Value> {
    let mut tls = serde_json::Map::new();
    for f in FRONTS {
        let url = f.url();
        let keyed = curl(lab, &url, Some(API_KEY))?;
        ensure!(
            keyed.status == HTTP_OK && keyed.body == UPSTREAM_BODY,
            "{}: the keyed request got {} {:?}, not 200 {UPSTREAM_BODY:?}",
            f.describe(),
            keyed.status,
            keyed.body
        );
        if f == Front::Auth {
            ensure!(
                keyed
                    .head
                    .lines()
                    .any(|l| l.to_ascii_lowercase().starts_with("ratelimit")),
                "{}: no RateLimit header, so the plan's limits were not evaluated:\n{}",
                f.describe(),
                keyed.head
            );
        }
        let bare = curl(lab, &url, None)?;
        let want = if f.authenticates() {
            HTTP_UNAUTHORIZED
        } else {
            HTTP_OK
        };
        ensure!(
            bare.status == want,
            "{}: a request without the key got {}, not {want}",
            f.describe(),
            bare.status
        );
        tls.insert(f.key().to_owned(), tls_params(lab, f.port())?);
    }
    Ok(Value::Object(tls))
}

/// Protocol, cipher suite and key exchange group as `openssl s_client -brief` reports them.
fn tls_params(lab: &Lab, port: u16) -> Result<Value> {
    let out = lab
        .nsenter(NS_ROLE, "openssl")
        .args([
            "s_client",
            "-brief",
            "-connect",
            &format!("{LOOPBACK}:{port}"),
        ])
        .stdin(Stdio::null())
        .output()
        .context("cannot start openssl s_client")?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim_start_matches(':').trim().to_owned())
    };
    let protocol = field("Protocol version");
    ensure!(
        protocol.is_some(),
        "openssl s_client to port {port}:\n{text}"
    );
    Ok(json!({
        "protocol": protocol,
        "cipher": field("Ciphersuite"),
        "group": field("Negotiated TLS1.3 group").or_else(|| field("Server Temp Key")),
    }))
}

/// One wrk run against `front`; fails on any non-2xx answer or socket error.
fn wrk(lab: &Lab, dir: &Path, front: Front, seconds: u32) -> Result<Wrk> {
    let out_path = dir.join("wrk.out");
    let out = File::create(&out_path).context("create wrk's output file")?;
    let mut child = lab.spawn(
        lab.nsenter(NS_ROLE, "wrk")
            .arg(format!("-t{WRK_THREADS}"))
            .arg(format!("-c{WRK_CONNECTIONS}"))
            .arg(format!("-d{seconds}s"))
            .arg("--latency")
            .args(["-H", &format!("x-api-key: {API_KEY}")])
            .arg(front.url())
            .stdout(out.try_clone()?)
            .stderr(out),
        "wrk",
    )?;
    let limit = Duration::from_secs(seconds.into()) + WRK_GRACE;
    let Some(status) = child.wait_timeout(limit)? else {
        child.stop()?;
        bail!("wrk did not finish within {limit:?}");
    };
    let text = fs::read_to_string(&out_path).context("read wrk's output")?;
    ensure!(status.success(), "wrk failed ({status}):\n{text}");
    let w = parse_wrk(&text).with_context(|| format!("wrk's output:\n{text}"))?;
    ensure!(
        w.non_2xx == 0 && w.socket_errors == 0,
        "{}: {} non-2xx answers and {} socket errors:\n{text}",
        front.describe(),
        w.non_2xx,
        w.socket_errors
    );
    ensure!(w.requests > 0, "{}: no request completed", front.describe());
    Ok(w)
}

pub(crate) fn parse_wrk(text: &str) -> Result<Wrk> {
    let mut w = Wrk::default();
    let (mut rps, mut p99, mut requests) = (None, None, None);
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => rps = v.parse().ok(),
            [n, "requests", "in", ..] => requests = n.parse().ok(),
            ["Non-2xx", "or", "3xx", "responses:", n] => w.non_2xx = n.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                w.socket_errors = rest
                    .iter()
                    .filter_map(|t| t.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            [pct, v] if pct.ends_with('%') => {
                let ms = duration_ms(v);
                match *pct {
                    "50%" => w.p50_ms = ms.unwrap_or(f64::NAN),
                    "75%" => w.p75_ms = ms.unwrap_or(f64::NAN),
                    "90%" => w.p90_ms = ms.unwrap_or(f64::NAN),
                    "99%" => p99 = ms,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    w.rps = rps.context("no Requests/sec line")?;
    w.p99_ms = p99.context("no 99% latency line (was --latency given?)")?;
    w.requests = requests.context("no `N requests in` line")?;
    Ok(w)
}

/// wrk's durations: `812.00us`, `1.23ms`, `1.02s`, `2.00m`, `1.00h`.
fn duration_ms(text: &str) -> Option<f64> {
    const UNITS: [(&str, f64); 5] = [
        ("us", 1e-3),
        ("ms", 1.0),
        ("s", 1e3),
        ("m", 60e3),
        ("h", 3_600e3),
    ];
    UNITS.iter().find_map(|(unit, scale)| {
        text.strip_suffix(unit)
            .and_then(|n| n.parse::<f64>().ok())
            .map(|n| n * scale)
    })
}

/// `Tcp: ActiveOpens` of the namespace (/proc/net/snmp is per network namespace).
fn tcp_active_opens(lab: &Lab) -> Result<u64> {
    let snmp = output(
        lab.nsenter(NS_ROLE, "cat").arg("/proc/net/snmp"),
        "read /proc/net/snmp",
    )?;
    active_opens(&snmp).context("no Tcp: ActiveOpens in /proc/net/snmp")
}

fn active_opens(snmp: &str) -> Option<u64> {
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let at = names.split_whitespace().position(|n| n == "ActiveOpens")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

// ---- CPU time ----------------------------------------------------------------------------------

/// utime + stime (clock ticks) of `pid` and every descendant (nginx's workers), all threads.
fn tree_cpu_ticks(pid: i32) -> u64 {
    let mut stats: Vec<(i32, i32, u64)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some((ppid, ticks)) = proc_stat(p) {
                stats.push((p, ppid, ticks));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(stats.iter().filter(|s| s.1 == parent).map(|s| s.0));
        i += 1;
    }
    stats
        .iter()
        .filter(|s| tree.contains(&s.0))
        .map(|s| s.2)
        .sum()
}

/// `(ppid, utime + stime)` from /proc/<pid>/stat.
fn proc_stat(pid: i32) -> Option<(i32, u64)> {
    /// Fields after the command name: state, ppid, ..., utime (index 11), stime (12).
    const PPID: usize = 1;
    const UTIME: usize = 11;
    const STIME: usize = 12;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let num = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((fields.get(PPID)?.parse().ok()?, num(UTIME)? + num(STIME)?))
}

fn ticks_to_us(ticks: u64) -> f64 {
    // SAFETY: sysconf takes no pointers and has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 * 1e6 / hz as f64
}

// ---- the report --------------------------------------------------------------------------------

struct Report {
    date: String,
    machine: Value,
    rounds: u32,
    seconds: u32,
    smoke: bool,
    runs: Vec<(Front, Vec<Run>)>,
    orders: Vec<[&'static str; 3]>,
    tls: Value,
    versions: Value,
    total_seconds: f64,
}

/// Medians of one front end's runs.
struct Summary {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
}

impl Summary {
    fn of(runs: &[Run]) -> Summary {
        let m = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        Summary {
            rps: m(|r| r.wrk.rps),
            p50_ms: m(|r| r.wrk.p50_ms),
            p99_ms: m(|r| r.wrk.p99_ms),
            cpu_us: m(|r| r.cpu_us_per_request),
        }
    }
}

/// A target and whether the measurement met it.
struct Target {
    name: &'static str,
    measured: f64,
    per_round: Vec<f64>,
    bound: f64,
    at_least: bool,
}

impl Target {
    fn met(&self) -> bool {
        if self.at_least {
            self.measured >= self.bound
        } else {
            self.measured <= self.bound
        }
    }

    fn json(&self) -> Value {
        json!({
            "measured": self.measured,
            "per_round": self.per_round,
            "target": format!("{} {:.2}", if self.at_least { ">=" } else { "<=" }, self.bound),
            "met": self.met(),
        })
    }
}

impl Report {
    fn runs(&self, f: Front) -> &[Run] {
        self.runs
            .iter()
            .find(|(g, _)| *g == f)
            .map_or(&[], |(_, r)| r)
    }

    fn targets(&self) -> Vec<Target> {
        let (a, b, c) = (
            self.runs(Front::Auth),
            self.runs(Front::Open),
            self.runs(Front::Nginx),
        );
        let (sa, sb, sc) = (Summary::of(a), Summary::of(b), Summary::of(c));
        let per_round = |x: &[Run], y: &[Run], f: fn(&Run) -> f64| -> Vec<f64> {
            x.iter().zip(y).map(|(x, y)| f(x) / f(y)).collect()
        };
        vec![
            Target {
                name: "auth_quota_over_passthrough_rps",
                measured: sa.rps / sb.rps,
                per_round: per_round(a, b, |r| r.wrk.rps),
                bound: TARGET_AUTH_OVER_OPEN,
                at_least: true,
            },
            Target {
                name: "auth_quota_over_nginx_rps",
                measured: sa.rps / sc.rps,
                per_round: per_round(a, c, |r| r.wrk.rps),
                bound: TARGET_OURS_OVER_NGINX,
                at_least: true,
            },
            Target {
                name: "auth_quota_over_nginx_p99",
                measured: sa.p99_ms / sc.p99_ms,
                per_round: per_round(a, c, |r| r.wrk.p99_ms),
                bound: TARGET_P99_RATIO,
                at_least: false,
            },
        ]
    }

    fn json(&self) -> Value {
        let mut fronts = serde_json::Map::new();
        for (f, runs) in &self.runs {
            let s = Summary::of(runs);
            let each = |g: fn(&Run) -> f64| runs.iter().map(g).collect::<Vec<_>>();
            fronts.insert(
                f.key().to_owned(),
                json!({
                    "what": f.describe(),
                    "url": f.url(),
                    "rps": s.rps,
                    "p50_ms": s.p50_ms,
                    "p99_ms": s.p99_ms,
                    "cpu_us_per_request": s.cpu_us,
                    "rps_runs": each(|r| r.wrk.rps),
                    "p50_ms_runs": each(|r| r.wrk.p50_ms),
                    "p75_ms_runs": each(|r| r.wrk.p75_ms),
                    "p90_ms_runs": each(|r| r.wrk.p90_ms),
                    "p99_ms_runs": each(|r| r.wrk.p99_ms),
                    "cpu_us_per_request_runs": each(|r| r.cpu_us_per_request),
                    "tcp_connections_opened_runs": runs.iter().map(|r| r.tcp_opens).collect::<Vec<_>>(),
                    "requests": runs.iter().map(|r| r.wrk.requests).sum::<u64>(),
                    "non_2xx": runs.iter().map(|r| r.wrk.non_2xx).sum::<u64>(),
                    "socket_errors": runs.iter().map(|r| r.wrk.socket_errors).sum::<u64>(),
                    "tls": self.tls[f.key()],
                }),
            );
        }
        let targets: serde_json::Map<String, Value> = self
            .targets()
            .iter()
            .map(|t| (t.name.to_owned(), t.json()))
            .collect();
        json!({
            "date": self.date,
            "command": self.command(),
            "smoke": self.smoke,
            "machine": self.machine,
            "versions": self.versions,
            "rounds": self.rounds,
            "seconds_per_run": self.seconds,
            "total_seconds": self.total_seconds,
            "order_per_round": self.orders,
            "load": {
                "wrk": format!("wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{}s --latency -H 'x-api-key: <key>'", self.seconds),
                "front_end_workers": FRONT_WORKERS,
                "upstream": format!("nginx return 200 \"{UPSTREAM_BODY}\", {UPSTREAM_WORKERS} worker, keep-alive"),
                "limits_per_second": RATE_PER_SECOND,
                "api_shield_daily_quota": DAILY_QUOTA,
            },
            "front_ends": fronts,
            "targets": targets,
            "cpu_note": "front-end process CPU (utime+stime of the daemon, or of nginx's master \
                         and workers) over the run, per request; tick-sampled",
        })
    }

    fn command(&self) -> String {
        if self.smoke {
            "cargo xtask bench gateway --smoke".to_owned()
        } else {
            format!(
                "cargo xtask bench gateway --rounds {} --seconds {}",
                self.rounds, self.seconds
            )
        }
    }

    fn markdown(&self) -> String {
        let m = &self.machine;
        let mut md = String::new();
        let _ = writeln!(md, "# Gateway benchmark\n");
        let _ = writeln!(
            md,
            "{}; {} CPUs ({}), kernel {}; load average {:.2} at the start, {:.2} at the end. \
             `{}`: {} round(s) of `wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{}s --latency`, \
             front ends alternating (order rotated every round), medians. One upstream (nginx \
             `return 200 \"{UPSTREAM_BODY}\"`, {UPSTREAM_WORKERS} worker) shared by all, \
             keep-alive on every hop; {FRONT_WORKERS} worker threads/processes per front end; \
             everything on the loopback of one namespace.\n",
            self.date,
            m["nproc"],
            m["cpu_model"].as_str().unwrap_or("?"),
            m["kernel"].as_str().unwrap_or("?"),
            m["loadavg_1m_start"].as_f64().unwrap_or(f64::NAN),
            m["loadavg_1m_end"].as_f64().unwrap_or(f64::NAN),
            self.command(),
            self.rounds,
            self.seconds,
        );
        let _ = writeln!(
            md,
            "| front end | req/s (runs) | p50 ms | p99 ms (runs) | front-end CPU us/req | TCP \
             connections opened per run | TLS |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---|");
        for (f, runs) in &self.runs {
            let s = Summary::of(runs);
            let list = |g: fn(&Run) -> f64, digits: usize| {
                runs.iter()
                    .map(|r| format!("{:.*}", digits, g(r)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let tls = &self.tls[f.key()];
            let _ = writeln!(
                md,
                "| {} | {:.0} ({}) | {:.2} | {:.2} ({}) | {:.1} | {} | {} {} |",
                f.describe(),
                s.rps,
                list(|r| r.wrk.rps, 0),
                s.p50_ms,
                s.p99_ms,
                list(|r| r.wrk.p99_ms, 2),
                s.cpu_us,
                list(|r| r.tcp_opens as f64, 0),
                tls["protocol"].as_str().unwrap_or("?"),
                tls["cipher"].as_str().unwrap_or("?"),
            );
        }
        let _ = writeln!(md);
        for t in self.targets() {
            let (what, op) = match t.name {
                "auth_quota_over_passthrough_rps" => {
                    ("auth + quota / pass-through, throughput", ">=")
                }
                "auth_quota_over_nginx_rps" => ("auth + quota / nginx, throughput", ">="),
                _ => ("auth + quota / nginx, p99 latency", "<="),
            };
            let _ = writeln!(
                md,
                "- {what}: **{:.2}** (per round {}; target {op} {:.2}: {})",
                t.measured,
                t.per_round
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                t.bound,
                if t.met() { "met" } else { "MISSED" }
            );
        }
        let _ = writeln!(
            md,
            "- front-end CPU: utime + stime of the daemon (all threads), or of nginx's master and \
             workers, over the run, per request (tick-sampled; the upstream and wrk excluded). \
             TCP connections opened: `ActiveOpens` of the namespace over the run, wrk's {WRK_CONNECTIONS} \
             plus the front end's to the upstream (keep-alive holds when it stays near {WRK_CONNECTIONS})"
        );
        let _ = writeln!(
            md,
            "- every run: 0 non-2xx answers, 0 socket errors ({} requests in all); before the \
             runs each front end answered the keyed request with 200, and a request without the \
             key with 401 (pass-through: 200)",
            self.runs
                .iter()
                .flat_map(|(_, r)| r)
                .map(|r| r.wrk.requests)
                .sum::<u64>()
        );
        md
    }

    fn write(&self) -> Result<()> {
        let dir = util::target_dir().join("bench");
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let stem = if self.smoke {
            "gateway-smoke"
        } else {
            "gateway"
        };
        let json_path = dir.join(format!("{stem}.json"));
        fs::write(
            &json_path,
            serde_json::to_string_pretty(&self.json())? + "\n",
        )
        .with_context(|| format!("write {}", json_path.display()))?;
        let md = self.markdown();
        let md_path = dir.join(format!("{stem}.md"));
        fs::write(&md_path, &md).with_context(|| format!("write {}", md_path.display()))?;
        println!("\n{md}");
        println!("wrote {} and {}", json_path.display(), md_path.display());
        Ok(())
    }
}

fn versions(bin: &Path) -> Value {
    let first_line = |cmd: &mut Command| {
        cmd.stdin(Stdio::null())
            .output()
            .ok()
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr);
                text.lines().next().unwrap_or_default().trim().to_owned()
            })
            .unwrap_or_default()
    };
    json!({
        "api_shield": bin.display().to_string(),
        "git": first_line(command("git").args(["describe", "--always", "--dirty"])),
        "nginx": first_line(command("nginx").arg("-v")),
        "wrk": first_line(command("wrk").arg("-v")),
        "openssl": first_line(command("openssl").arg("version")),
    })
}

pub(crate) fn machine(load_start: f64, load_end: f64) -> Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_kib: u64 = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    json!({
        "nproc": thread::available_parallelism().map_or(1, |n| n.get()),
        "kernel": kernel.trim(),
        "cpu_model": cpu,
        "mem_total_kib": mem_kib,
        "loadavg_1m_start": load_start,
        "loadavg_1m_end": load_end,
    })
}

pub(crate) fn loadavg() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `YYYY-MM-DDTHH:MM:SSZ` (days to civil date: Howard Hinnant's algorithm).
pub(crate) fn utc_rfc3339(secs: u64) -> String {
    const DAY: u64 = 86_400;
    const EPOCH_SHIFT: i64 = 719_468;
    const ERA_DAYS: i64 = 146_097;
    let days = (secs / DAY) as i64;
    let rem = secs % DAY;
    let z = days + EPOCH_SHIFT;
    let era = z.div_euclid(ERA_DAYS);
    let doe = z - era * ERA_DAYS;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUTPUT: &str = "\
Running 5s test @ https://127.0.0.1:8443/auth/bench
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.43ms    1.02ms  20.11ms   85.00%
    Req/Sec    13.25k     1.01k   14.50k    72.00%
  Latency Distribution
     50%  812.00us
     75%    2.80ms
     90%    3.41ms
     99%    1.02s
  65891 requests in 5.00s, 11.06MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:  13173.15
Transfer/sec:      2.21MB
";

    #[test]
    fn parses_wrk_output() {
        let w = parse_wrk(WRK_OUTPUT).unwrap();
        assert_eq!(w.rps, 13173.15);
        assert_eq!(w.requests, 65891);
        assert_eq!(w.non_2xx, 12);
        assert_eq!(w.socket_errors, 4);
        assert!((w.p50_ms - 0.812).abs() < 1e-9);
        assert_eq!(w.p75_ms, 2.8);
        assert_eq!(w.p90_ms, 3.41);
        assert_eq!(w.p99_ms, 1020.0);
    }

    #[test]
    fn a_clean_run_has_no_errors_and_missing_lines_are_errors() {
        let clean: String = WRK_OUTPUT
            .lines()
            .filter(|l| !l.contains("errors") && !l.contains("Non-2xx"))
            .map(|l| format!("{l}\n"))
            .collect();
        let w = parse_wrk(&clean).unwrap();
        assert_eq!((w.non_2xx, w.socket_errors), (0, 0));
        let no_latency: String = WRK_OUTPUT
            .lines()
            .filter(|l| !l.contains("99%"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(parse_wrk(&no_latency).is_err());
        assert!(parse_wrk("").is_err());
    }

    #[test]
    fn reads_wrk_durations() {
        assert_eq!(duration_ms("250.00us"), Some(0.25));
        assert_eq!(duration_ms("3.50ms"), Some(3.5));
        assert_eq!(duration_ms("2.00s"), Some(2000.0));
        assert_eq!(duration_ms("1.00m"), Some(60_000.0));
        assert_eq!(duration_ms("fast"), None);
    }

    #[test]
    fn medians_and_dates() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(utc_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_rfc3339(1_795_869_000), "2026-11-28T12:30:00Z");
    }

    #[test]
    fn configs_name_the_same_key_paths_and_limits() {
        let dir = Path::new("/tmp/gw");
        let policy = policy_toml("ab12");
        assert!(policy.contains("hash = \"sha256:ab12\""));
        assert!(policy.contains(&format!("rate = {RATE_PER_SECOND}")));
        let nginx = front_nginx_conf(dir, &dir.join("c.pem"), &dir.join("k.pem"));
        assert!(nginx.contains(&format!("\"{API_KEY}\" 1;")));
        assert!(nginx.contains(&format!("rate={RATE_PER_SECOND}r/s")));
        assert!(nginx.contains("if ($key_ok = 0) { return 401; }"));
        assert!(nginx.contains(&format!("worker_processes {FRONT_WORKERS};")));
        for f in FRONTS {
            let prefix = f.path().rsplit_once('/').map_or("", |(p, _)| p);
            assert!(policy.contains(&format!("path_prefix = \"{prefix}\"")));
            assert!(nginx.contains(&format!("location {prefix}/ {{")));
        }
        let daemon = daemon_toml(
            dir,
            Path::new("/sys/fs/bpf/x"),
            &dir.join("policy.toml"),
            &dir.join("c.pem"),
            &dir.join("k.pem"),
        );
        assert!(daemon.contains(&format!("listen = \"{LOOPBACK}:{GATEWAY_PORT}\"")));
        assert!(daemon.contains(&format!("run_as = \"{RUN_AS}\"")));
    }

    #[test]
    fn reads_active_opens() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens\n\
                    Tcp: 1 200 120000 -1 77 70\n";
        assert_eq!(active_opens(snmp), Some(77));
        assert_eq!(active_opens("Ip: 1\n"), None);
    }

    #[test]
    fn reads_its_own_cpu_time() {
        let me = std::process::id() as i32;
        let (ppid, _) = proc_stat(me).unwrap();
        assert!(ppid > 0);
        // Spin a little so the process has at least one tick.
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(start.elapsed());
        }
        assert!(tree_cpu_ticks(me) > 0);
    }
}
