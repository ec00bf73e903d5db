//! The gateway under load it must not let one client impose on the others, end to end with the
//! real daemon in a namespace lab:
//!
//! - bad Basic passwords: hashed on a bounded pool off the serving thread (a public request
//!   is answered while a slow hash runs), 503 with `Retry-After` when the pool is full, a
//!   source that spent its failure budget refused with 429 before any hash, on the gateway
//!   and on the check endpoint; a good client served from the success cache;
//! - connections: one source holds at most its share of a listener's slots (the next is
//!   closed at accept and counted) while another source is still served, and idle keep-alive
//!   connections are closed at the header timeout once slots are scarce.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tests::daemon::{Daemon, KERNEL_QUIET};
use tests::http::{Reply, get_from};
use tests::metrics::scrape;
use tests::netns::{Lab, in_netns};
use tests::proc::Proc;

const GATEWAY_PORT: u16 = 8080;
const UPSTREAM_PORT: u16 = 8081;
const CHECK: &str = "127.0.0.1:9382";
const METRICS: &str = "127.0.0.1:9381";
const RUN_AS: &str = "nobody";
/// bcrypt cost of the test user: about a second of CPU per check on these machines, so
/// anything that waits for a hash shows.
const SLOW_BCRYPT_COST: u32 = 14;
/// A hash must take at least this long for the timing assertions to mean anything.
const MIN_HASH: Duration = Duration::from_millis(500);
const PASSWORD: &str = "correct horse battery staple";
/// Failed checks a source may make (per ten minutes) before it is refused unhashed.
const BUDGET: usize = 3;
const WAIT: Duration = Duration::from_secs(60);

/// Answers 200 "ok" to everything.
const UPSTREAM_PY: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

fn basic(user: &str, pass: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {token}")
}

fn upstream(netns: &str, dir: &Path) -> Proc {
    let script = dir.join("upstream.py");
    std::fs::write(&script, UPSTREAM_PY).unwrap();
    let child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .arg("/usr/bin/python3")
        .arg(&script)
        .arg(UPSTREAM_PORT.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the upstream");
    Proc {
        name: "upstream",
        child,
    }
}

/// A readable temp directory for the policy (the daemon re-reads it as `run_as`).
fn policy_dir(lab: &Lab, what: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("api-shield-{what}-{}", lab.id));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Removes the directory at the end, also on panic.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn get(netns: &str, addr: SocketAddr, path: &str, auth: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
    get_from(netns, addr, path, &headers, WAIT)
        .join()
        .expect("client thread")
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn wait_ready(netns: &str, addr: SocketAddr, daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = get_from(netns, addr, "/public/ready", &[], Duration::from_secs(2))
            .join()
            .expect("client thread");
        if matches!(&r, Ok(r) if r.status == 200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gateway not ready: {r:?}\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn password_hashing_is_bounded_and_off_the_serving_thread() {
    let lab = Lab::new();
    let dir = policy_dir(&lab, "gwload-pw");
    let _cleanup = RemoveDir(dir.clone());
    let hash = bcrypt::hash(PASSWORD, SLOW_BCRYPT_COST).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"
realm = "load"
unmatched = "deny"

[[basic_users]]
username = "ann"
password_hash = "{hash}"

[[routes]]
name = "public"
path_prefix = "/public"

[[routes]]
name = "private"
path_prefix = "/private"
auth = ["basic"]

[password_budget]
failures = {BUDGET}
per = "10m"

[detector]
auth_failures = {{ count = 1000, within = "1m", ttl = "1m" }}
too_many_requests = {{ count = 1000, within = "1m", ttl = "1m" }}
"#
        ),
    )
    .unwrap();
    let _upstream = upstream(&lab.server.netns, &dir);
    let server = lab.server.v4;
    // One serving thread: a hash on it would stall every other request it carries.
    let daemon = Daemon::start(
        &lab,
        &format!(
            "run_as = \"{RUN_AS}\"\n{KERNEL_QUIET}[metrics]\nlisten = \"{METRICS}\"\n\
             [gateway]\ncheck_listen = \"{CHECK}\"\npolicy_file = \"{policy}\"\n\
             default_upstream = \"http://127.0.0.1:{UPSTREAM_PORT}\"\nthreads = 1\n\
             [gateway.limits]\npassword_workers = 1\npassword_queue = 1\n\
             [[gateway.listeners]]\nlisten = \"{server}:{GATEWAY_PORT}\"\n",
            policy = policy.display(),
        ),
    );
    let gateway = SocketAddr::new(IpAddr::V4(server), GATEWAY_PORT);
    wait_ready(&lab.good.netns, gateway, &daemon);

    // How long one hash takes here: the yardstick of every timing below.
    let first = get(
        &lab.good.netns,
        gateway,
        "/private/x",
        Some(&basic("ann", PASSWORD)),
    );
    assert_eq!(first.status, 200, "{first:?}");
    let hash_time = first.took;
    assert!(
        hash_time >= MIN_HASH,
        "a bcrypt cost {SLOW_BCRYPT_COST} check took only {hash_time:?}"
    );
    // The good client is remembered: no hash, no wait.
    let again = get(
        &lab.good.netns,
        gateway,
        "/private/x",
        Some(&basic("ann", PASSWORD)),
    );
    assert_eq!(again.status, 200);
    assert!(again.took < hash_time / 4, "cached: {:?}", again.took);

    // Three bad passwords at once from one source: one hashing, one waiting, the third finds
    // the pool full (503 at once). Meanwhile public requests keep being answered promptly.
    let bad_auth = basic("ann", "wrong");
    let mut guesses = Vec::new();
    for _ in 0..3 {
        let headers = [("Authorization", bad_auth.as_str())];
        guesses.push(get_from(
            &lab.bad.netns,
            gateway,
            "/private/x",
            &headers,
            WAIT,
        ));
        thread::sleep(Duration::from_millis(50));
    }
    let mut public = Vec::new();
    let until = Instant::now() + hash_time;
    while Instant::now() < until {
        public.push(get(&lab.good.netns, gateway, "/public/x", None));
        thread::sleep(Duration::from_millis(50));
    }
    let guesses: Vec<Reply> = guesses
        .into_iter()
        .map(|g| g.join().unwrap().unwrap())
        .collect();
    let slowest_public = public.iter().map(|r| r.took).max().unwrap();
    assert!(public.iter().all(|r| r.status == 200), "{public:?}");
    assert!(
        slowest_public < hash_time / 4,
        "a public request waited {slowest_public:?} while passwords were hashed ({hash_time:?} each)"
    );
    let full: Vec<&Reply> = guesses.iter().filter(|r| r.status == 503).collect();
    let refused: Vec<&Reply> = guesses.iter().filter(|r| r.status == 401).collect();
    assert!(
        !full.is_empty() && !refused.is_empty() && full.len() + refused.len() == 3,
        "{guesses:?}"
    );
    for r in &full {
        assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
        assert!(r.took < hash_time / 2, "a full pool answers at once: {r:?}");
    }

    // The source goes on guessing until its budget is spent; then it is refused unhashed.
    let mut failures = refused.len();
    while failures < BUDGET {
        let r = get(&lab.bad.netns, gateway, "/private/x", Some(&bad_auth));
        assert_eq!(r.status, 401, "{r:?}");
        failures += 1;
    }
    let spent = get(&lab.bad.netns, gateway, "/private/x", Some(&bad_auth));
    assert_eq!(spent.status, 429, "{spent:?}\n{}", daemon.log());
    assert!(spent.header("retry-after").is_some(), "{spent:?}");
    assert!(
        spent.took < hash_time / 4,
        "refused without hashing: {:?}",
        spent.took
    );
    // The right password still passes from that source, unhashed: the success cache is per
    // credential and is consulted before the budget.
    let right = get(
        &lab.bad.netns,
        gateway,
        "/private/x",
        Some(&basic("ann", PASSWORD)),
    );
    assert_eq!(right.status, 200, "a remembered success still serves");
    // A wrong password for another user: the same refusal.
    let other = get(
        &lab.bad.netns,
        gateway,
        "/private/x",
        Some(&basic("mallory", "x")),
    );
    assert_eq!(other.status, 429, "{other:?}");

    // The check endpoint shares the budget (the client named by the trusted proxy's
    // X-Real-IP): nginx gets 403 with X-Shield-Status 429, at once.
    let bad_ip = lab.bad.v4.to_string();
    let check: SocketAddr = CHECK.parse().unwrap();
    let headers = [
        ("X-Original-URI", "/private/x"),
        ("X-Original-Method", "GET"),
        ("X-Real-IP", bad_ip.as_str()),
        ("Authorization", bad_auth.as_str()),
    ];
    let checked = get_from(&lab.server.netns, check, "/", &headers, WAIT)
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(checked.status, 403, "{checked:?}");
    assert_eq!(
        checked.header("x-shield-status"),
        Some("429"),
        "{checked:?}"
    );
    assert!(checked.took < hash_time / 4, "{checked:?}");

    let m = scrape(&lab.server.netns, METRICS);
    let outcome = |o: &str| {
        m.count(
            "api_shield_gateway_password_checks_total",
            &[("outcome", o)],
        )
    };
    assert_eq!(outcome("verified"), 1, "{}", m.text);
    assert_eq!(outcome("cached"), 2, "{}", m.text);
    assert_eq!(outcome("rejected"), BUDGET as u64, "{}", m.text);
    assert_eq!(outcome("unavailable"), full.len() as u64, "{}", m.text);
    assert_eq!(outcome("budget_spent"), 3, "{}", m.text);
    assert_eq!(
        m.sum(
            "api_shield_gateway_requests_total",
            &[("auth", "unverified")]
        ),
        full.len() as u64 + 3,
        "{}",
        m.text
    );
}

/// Connects from `netns` (the socket stays in that namespace).
fn connect_from(netns: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    in_netns(netns, move || {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(s)
    })
    .join()
    .expect("connect thread")
}

/// One keep-alive `GET /public/x` on `s`; the status, or an error when the gateway closed it.
fn keep_alive_get(s: &mut TcpStream) -> std::io::Result<u16> {
    s.write_all(b"GET /public/x HTTP/1.1\r\nHost: api.test\r\n\r\n")?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed by the gateway",
            ));
        }
        got.extend_from_slice(&buf[..n]);
        // The upstream's answer is "ok" with a Content-Length.
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n")
            && got.len() >= end + 4 + 2
        {
            let head = String::from_utf8_lossy(&got[..end]);
            return Ok(head
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0));
        }
    }
}

/// An HTTP/2 (prior knowledge, plain) connection from a lab namespace that made one request
/// and then sits idle, as a client's pooled connection does. HTTP/2 matters here: hyper ends
/// an idle HTTP/1.1 keep-alive at the header timeout anyway, while an idle HTTP/2 connection
/// lives until the idle timeout unless slots are scarce.
struct H2Idle {
    status: u16,
    ended: mpsc::Receiver<()>,
}

impl H2Idle {
    fn open(netns: &str, addr: SocketAddr) -> H2Idle {
        let (status_tx, status_rx) = mpsc::channel();
        let (ended_tx, ended) = mpsc::channel();
        // The thread ends with the connection: at the latest when the daemon goes.
        drop(in_netns(netns, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let (mut sender, conn) = hyper::client::conn::http2::handshake(
                    hyper_util::rt::TokioExecutor::new(),
                    hyper_util::rt::TokioIo::new(tcp),
                )
                .await
                .unwrap();
                let conn = tokio::spawn(conn);
                let req = hyper::Request::get(format!("http://{addr}/public/x"))
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                let status = sender
                    .send_request(req)
                    .await
                    .map_or(0, |r| r.status().as_u16());
                let _ = status_tx.send(status);
                let _ = conn.await;
                drop(sender);
                let _ = ended_tx.send(());
            });
        }));
        let status = status_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("an HTTP/2 answer");
        H2Idle { status, ended }
    }

    /// Whether the gateway closed it within `within`.
    fn closed_within(&self, within: Duration) -> bool {
        self.ended.recv_timeout(within).is_ok()
    }
}

#[test]
fn one_source_cannot_hold_every_connection_slot() {
    const PER_SOURCE: usize = 3;
    const MAX: usize = 5;
    let lab = Lab::new();
    let dir = policy_dir(&lab, "gwload-conn");
    let _cleanup = RemoveDir(dir.clone());
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "unmatched = \"deny\"\n[[routes]]\nname = \"public\"\npath_prefix = \"/public\"\n",
    )
    .unwrap();
    let _upstream = upstream(&lab.server.netns, &dir);
    let server = lab.server.v4;
    let daemon = Daemon::start(
        &lab,
        &format!(
            "run_as = \"{RUN_AS}\"\n{KERNEL_QUIET}[metrics]\nlisten = \"{METRICS}\"\n\
             [gateway]\ncheck_listen = \"{CHECK}\"\npolicy_file = \"{policy}\"\n\
             default_upstream = \"http://127.0.0.1:{UPSTREAM_PORT}\"\nthreads = 2\n\
             [gateway.limits]\nmax_connections = {MAX}\n\
             [gateway.timeouts]\nheader = \"1s\"\nidle = \"60s\"\n\
             [[gateway.listeners]]\nlisten = \"{server}:{GATEWAY_PORT}\"\n\
             max_connections_per_source = {PER_SOURCE}\n",
            policy = policy.display(),
        ),
    );
    let gateway = SocketAddr::new(IpAddr::V4(server), GATEWAY_PORT);
    wait_ready(&lab.good.netns, gateway, &daemon);

    // The bad source takes its share with idle HTTP/2 connections…
    let held: Vec<H2Idle> = (0..PER_SOURCE)
        .map(|_| H2Idle::open(&lab.bad.netns, gateway))
        .collect();
    assert!(held.iter().all(|c| c.status == 200));
    // …which stay open past the header timeout while slots are plentiful (3 of 5).
    for c in &held {
        assert!(
            !c.closed_within(Duration::from_millis(2500) / PER_SOURCE as u32),
            "an idle connection survives while slots are plentiful"
        );
    }
    // Its next connection is closed at accept.
    let mut extra = connect_from(&lab.bad.netns, gateway).unwrap();
    assert!(
        keep_alive_get(&mut extra).is_err(),
        "a connection beyond the source's share is refused"
    );
    // Another source is still served, and its connection makes slots scarce (4 of 5): idle
    // connections (silent longer than the header timeout) are closed until they are not
    // (here one of the bad source's, as 3 of 5 is below 80%); the new connection stays.
    let good = H2Idle::open(&lab.good.netns, gateway);
    assert_eq!(good.status, 200);
    thread::sleep(Duration::from_secs(2));
    let closed = held
        .iter()
        .filter(|c| c.closed_within(Duration::from_millis(10)))
        .count();
    // Two serving threads may each close one before either sees the slot come back.
    assert!(
        (1..PER_SOURCE).contains(&closed),
        "{closed} idle connections closed while slots were scarce\n{}",
        daemon.log()
    );
    assert!(!good.closed_within(Duration::from_millis(10)));
    // With the slots back, the bad source may connect again.
    let mut again = connect_from(&lab.bad.netns, gateway).unwrap();
    assert_eq!(keep_alive_get(&mut again).unwrap(), 200);

    let m = scrape(&lab.server.netns, METRICS);
    let listener = gateway.to_string();
    let refused = |reason: &str| {
        m.count(
            "api_shield_gateway_connections_refused_total",
            &[("listener", listener.as_str()), ("reason", reason)],
        )
    };
    assert_eq!(refused("per_source"), 1, "{}", m.text);
    assert_eq!(refused("full"), 0, "{}", m.text);
}
