//! The gateway's check endpoint behind a real nginx (`auth_request`), end to end: the daemon
//! attached in a namespace lab, nginx and a tiny upstream in the server's namespace. A client
//! presenting bad API keys gets 401s, trips the auth-failure rule and is blocked in the kernel
//! (origin `gateway`), so its next TCP connection attempt times out, while a client with a
//! valid key keeps being served and gets 429 with `Retry-After` when over its quota. The
//! daemon's `/metrics` counts exactly those answers, the quota rejection and the escalation
//! with its latency.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tests::daemon::{Daemon, KERNEL_QUIET};
use tests::metrics::{Metrics, scrape};
use tests::netns::{Host, Lab, in_netns};
use tests::proc::Proc;

const NGINX_PORT: u16 = 8080;
const UPSTREAM_PORT: u16 = 8081;
const CHECK_PORT: u16 = 9382;
/// The daemon's metrics listener, in the server's namespace.
const METRICS: &str = "127.0.0.1:9381";
const GOOD_KEY: &str = "ak_e2e_good_client_0123456789abcdef";

fn in_server_ns(netns: &str, program: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{netns}")).arg(program);
    cmd
}

fn nginx_binary() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "nginx-light"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", "nginx"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
    }
    let p = PathBuf::from("/usr/sbin/nginx");
    assert!(p.is_file(), "nginx is missing and could not be installed");
    p
}

const UPSTREAM_PY: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("identity=%s key=%s\n" % (self.headers.get("X-Auth-Identity"), self.headers.get("X-Api-Key"))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// The nginx configuration the README documents, with test paths and ports.
fn nginx_conf(dir: &Path, server: IpAddr) -> String {
    let d = dir.display();
    format!(
        r#"
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {d}/nginx-access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    upstream app {{ server 127.0.0.1:{UPSTREAM_PORT}; keepalive 8; }}
    upstream api_shield_check {{ server 127.0.0.1:{CHECK_PORT}; keepalive 8; }}

    server {{
        listen {server}:{NGINX_PORT};

        location = /_api_shield_check {{
            internal;
            proxy_pass http://api_shield_check;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header Host $host;
        }}

        location / {{
            auth_request /_api_shield_check;
            auth_request_set $shield_status $upstream_http_x_shield_status;
            auth_request_set $shield_retry_after $upstream_http_retry_after;
            auth_request_set $shield_identity $upstream_http_x_auth_identity;
            auth_request_set $shield_ratelimit $upstream_http_ratelimit;
            auth_request_set $shield_ratelimit_policy $upstream_http_ratelimit_policy;
            error_page 403 = @api_shield_denied;

            proxy_set_header X-Auth-Identity $shield_identity;
            proxy_set_header X-Api-Key "";
            add_header RateLimit $shield_ratelimit always;
            add_header RateLimit-Policy $shield_ratelimit_policy always;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://app;
        }}

        location @api_shield_denied {{
            if ($shield_status = 429) {{
                add_header Retry-After $shield_retry_after always;
                add_header RateLimit $shield_ratelimit always;
                add_header RateLimit-Policy $shield_ratelimit_policy always;
                return 429;
            }}
            return 403;
        }}
    }}
}}
"#
    )
}

fn policy() -> String {
    let hash = api_shield::policy::apikey::hash_api_key(GOOD_KEY);
    format!(
        r#"
realm = "e2e"
unmatched = "deny"

[[api_keys]]
hash = "{hash}"
identity = "good-client"
plan = "small"

[plans.small]
rate = [{{ name = "burst", rate = 5, per = "1s", burst = 5, key = ["identity"] }}]

[[routes]]
name = "api"
path_prefix = "/"
auth = ["api_key"]
api_key_header = "x-api-key"
identity_header = "x-auth-identity"

[detector]
auth_failures = {{ count = 5, within = "10s", ttl = "60s" }}
too_many_requests = {{ count = 1000, within = "1m", ttl = "1m" }}
"#
    )
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// One GET through nginx from `host`'s namespace; `Err` when the connection cannot be made.
fn get(host: &Host, server: SocketAddr, key: Option<&str>) -> Result<Reply, std::io::Error> {
    let mut request =
        String::from("GET /v1/items HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n");
    if let Some(k) = key {
        request.push_str(&format!("X-Api-Key: {k}\r\n"));
    }
    request.push_str("\r\n");
    send(host, server, request)
}

/// Sends one HTTP/1.1 request (with `Connection: close`) from `host`'s namespace and reads the
/// whole answer; `Err` when the connection cannot be made.
fn send(host: &Host, server: SocketAddr, request: String) -> Result<Reply, std::io::Error> {
    in_netns(&host.netns, move || {
        let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(request.as_bytes())?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok(Reply {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        })
    })
    .join()
    .expect("client thread")
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn nginx_auth_request_blocks_abusers_in_the_kernel() {
    let started = Instant::now();
    let nginx = nginx_binary();
    let lab = Lab::new();
    let dir = std::env::temp_dir().join(format!("api-shield-gateway-{}", lab.id));
    std::fs::create_dir_all(&dir).unwrap();
    let policy_file = dir.join("policy.toml");
    std::fs::write(&policy_file, policy()).unwrap();
    let daemon = Daemon::start(
        &lab,
        &format!(
            "{KERNEL_QUIET}[metrics]\nlisten = \"{METRICS}\"\n\
             [gateway]\ncheck_listen = \"127.0.0.1:{CHECK_PORT}\"\n\
             trusted_proxies = [\"127.0.0.1/32\"]\npolicy_file = \"{}\"\n",
            policy_file.display()
        ),
    );
    let server_ns = lab.server.netns.clone();
    let script = dir.join("upstream.py");
    std::fs::write(&script, UPSTREAM_PY).unwrap();
    let _upstream = Proc {
        name: "upstream",
        child: in_server_ns(&server_ns, "/usr/bin/python3")
            .arg(&script)
            .arg(UPSTREAM_PORT.to_string())
            .stdin(Stdio::null())
            .spawn()
            .expect("start the upstream"),
    };
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&dir, IpAddr::V4(lab.server.v4))).unwrap();
    let _nginx = Proc {
        name: "nginx",
        child: in_server_ns(&server_ns, nginx.to_str().unwrap())
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .spawn()
            .expect("start nginx"),
    };
    let server = SocketAddr::new(IpAddr::V4(lab.server.v4), NGINX_PORT);

    // Ready: the good client is served, its identity passed upstream, its key stripped.
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = loop {
        match get(&lab.good, server, Some(GOOD_KEY)) {
            Ok(r) if r.status == 200 => break r,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "nginx + upstream not ready: {:?}\nnginx: {}\ndaemon: {}",
                    other.map(|r| (r.status, r.head)),
                    std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default(),
                    daemon.log()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    assert!(
        first.body.contains("identity=good-client key=None"),
        "upstream saw: {}",
        first.body
    );
    assert!(first.header("RateLimit").is_some(), "{}", first.head);
    let ready = started.elapsed();
    // Answers while nginx and the upstream came up are counted too: deltas from here.
    let before = scrape(&daemon.netns, METRICS);

    // The bad client: no key → 401 with a challenge (not counted: a first request without
    // credentials is normal), then wrong keys → 401s until the rule fires.
    let r = get(&lab.bad, server, None).expect("bad client connects");
    assert_eq!(r.status, 401, "{}", r.head);
    assert!(r.header("WWW-Authenticate").is_some(), "{}", r.head);
    let mut last_failure = Instant::now();
    for i in 0..5 {
        let r =
            get(&lab.bad, server, Some(&format!("wrong-key-{i}"))).expect("bad client connects");
        assert_eq!(r.status, 401, "attempt {i}: {}", r.head);
        last_failure = Instant::now();
    }
    let bad_net = format!("{}/32", lab.bad.v4);
    let deadline = Instant::now() + Duration::from_secs(5);
    let listed = loop {
        let blocked = daemon.list(Some("blocked"));
        if let Some(e) = blocked.iter().find(|e| e["net"] == bad_net.as_str()) {
            break e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "bad client not blocked: {blocked:?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let seen_listed = last_failure.elapsed();
    assert_eq!(listed["origin"], "gateway", "{listed}");
    assert!(
        listed["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("auth_failures"),
        "{listed}"
    );
    // Dropped in XDP: no SYN-ACK, the connection attempt times out.
    match get(&lab.bad, server, Some(GOOD_KEY)) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}"),
        Ok(r) => panic!("blocked client was served: {}", r.head),
    }

    // The good client keeps being served, and over its quota gets 429 with Retry-After.
    std::thread::sleep(Duration::from_millis(1200));
    let mut throttled = None;
    let mut served = 0;
    for _ in 0..12 {
        let r = get(&lab.good, server, Some(GOOD_KEY)).expect("good client connects");
        assert!(r.status == 200 || r.status == 429, "{}", r.head);
        if r.status == 429 {
            throttled = Some(r);
            break;
        }
        served += 1;
    }
    let throttled = throttled.expect("the good client was never throttled");
    let retry: u64 = throttled
        .header("Retry-After")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without Retry-After: {}", throttled.head));
    assert!(retry >= 1, "{}", throttled.head);
    assert!(
        throttled.header("RateLimit").is_some(),
        "{}",
        throttled.head
    );
    std::thread::sleep(Duration::from_secs(retry) + Duration::from_millis(200));
    let r = get(&lab.good, server, Some(GOOD_KEY)).expect("good client connects");
    assert_eq!(r.status, 200, "{}", r.head);
    served += 1;
    assert!(
        daemon
            .list(Some("blocked"))
            .iter()
            .all(|e| e["net"] != format!("{}/32", lab.good.v4).as_str()),
        "the good client must not be blocked"
    );

    // Audited, with the latency from the offending request to the kernel entry logged.
    let audit = std::fs::read_to_string(daemon.dir.join("audit.jsonl")).unwrap_or_default();
    assert!(audit.contains("gateway_escalate"), "{audit}");
    let log = strip_ansi(&daemon.log());
    let latency_us: u64 = log
        .split("latency_us=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no escalation latency logged:\n{log}"));
    let block_us = log
        .split("block_us=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap_or("?")
        .to_owned();
    // The metrics: every answer the check endpoint gave nginx since `before`, by outcome.
    let after = scrape(&daemon.netns, METRICS);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        let (b, a) = (before.sum(name, labels), after.sum(name, labels));
        assert!(b <= a, "{name}{labels:?} went {b} -> {a}");
        a - b
    };
    let requests = |class: &str, auth: &str| {
        delta(
            "api_shield_gateway_requests_total",
            &[
                ("listener", "check"),
                ("route", "api"),
                ("status_class", class),
                ("auth", auth),
            ],
        )
    };
    assert_eq!(
        [
            requests("2xx", "authenticated"),
            requests("4xx", "authenticated"),
            requests("4xx", "missing"),
            requests("4xx", "invalid"),
        ],
        [served, 1, 1, 5],
        "{}",
        after.text
    );
    // Nothing else: 1 + 5 from the bad client, `served` + 1 from the good one.
    assert_eq!(
        delta("api_shield_gateway_requests_total", &[]),
        served + 7,
        "{}",
        after.text
    );
    assert_eq!(
        delta(
            "api_shield_gateway_quota_rejections_total",
            &[("route", "api"), ("limit", "burst")]
        ),
        1
    );
    assert_eq!(
        delta("api_shield_gateway_quota_dry_run_rejections_total", &[]),
        0
    );
    let escalations = |outcome: &str| {
        after.count(
            "api_shield_gateway_escalations_total",
            &[("rule", "auth_failures"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        ["blocked", "dry_run", "refused", "failed"].map(escalations),
        [1, 0, 0, 0],
        "{}",
        after.text
    );
    assert_eq!(after.sum("api_shield_gateway_escalations_total", &[]), 1);
    let latency = "api_shield_gateway_escalation_latency_seconds";
    let rule = [("rule", "auth_failures")];
    assert_eq!(after.histogram_count(latency, &rule), 1);
    // The histogram observed the very latency the log reports (whole microseconds there).
    let observed = after.get(&format!("{latency}_sum"), &rule);
    assert!(
        (observed - latency_us as f64 / 1e6).abs() < 2e-6,
        "histogram sum {observed} s, logged {latency_us} µs"
    );
    assert_gateway_labels(&after);
    eprintln!(
        "gateway e2e: decision path (lock + snapshot + kernel) {block_us} µs; ready after {ready:?}; escalation latency (request → kernel entry) \
         {latency_us} µs; last 401 → seen in `list` {seen_listed:?}; total {:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The gateway's families are there, each series labelled as documented.
fn assert_gateway_labels(m: &Metrics) {
    let mut seen = std::collections::BTreeSet::new();
    for s in &m.scrape.samples {
        let Some(family) = s.metric.strip_prefix("api_shield_gateway_") else {
            continue;
        };
        let mut keys: Vec<&str> = s.labels.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let expected: &[&str] = match family {
            "requests_total" => &["auth", "listener", "route", "status_class"],
            "quota_rejections_total" | "quota_dry_run_rejections_total" => &["limit", "route"],
            "escalations_total" => &["outcome", "rule"],
            "escalation_latency_seconds"
            | "escalation_latency_seconds_sum"
            | "escalation_latency_seconds_count" => &["rule"],
            "password_checks_total" => &["outcome"],
            "connections_refused_total" => &["listener", "reason"],
            other => panic!("unexpected gateway family {other}"),
        };
        assert_eq!(keys, expected, "{}", s.metric);
        seen.insert(family);
    }
    // All but the dry-run rejections, which this policy (no dry-run route) never counts.
    assert_eq!(seen.len(), 8, "{seen:?}\n{}", m.text);
}

/// The check endpoint on a dual-stack listener (`[::]`) sees an IPv4 client as
/// `::ffff:a.b.c.d`. Its failures count as that IPv4 client's, and the escalation blocks the
/// IPv4 address (the control path refuses the mapped form), which the kernel then drops.
#[test]
fn dual_stack_check_endpoint_blocks_the_ipv4_client() {
    let lab = Lab::new();
    let dir = std::env::temp_dir().join(format!("api-shield-gateway-{}", lab.id));
    std::fs::create_dir_all(&dir).unwrap();
    let _dir = RemoveDir(dir.clone());
    let policy_file = dir.join("policy.toml");
    std::fs::write(&policy_file, policy()).unwrap();
    let daemon = Daemon::start(
        &lab,
        &format!(
            "{KERNEL_QUIET}[gateway]\ncheck_listen = \"[::]:{CHECK_PORT}\"\n\
             policy_file = \"{}\"\n",
            policy_file.display()
        ),
    );
    let check = SocketAddr::new(IpAddr::V4(lab.server.v4), CHECK_PORT);
    // nginx's dialect, sent straight from the client: the TCP peer is the client.
    let ask = |host: &Host, key: &str| {
        send(
            host,
            check,
            format!(
                "GET /_check HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\
                 X-Original-URI: /v1/items\r\nX-Original-Method: GET\r\n\
                 X-Api-Key: {key}\r\n\r\n"
            ),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ask(&lab.good, GOOD_KEY) {
            Ok(r) if r.status == 200 => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "check endpoint not ready: {:?}\n{}",
                    other.map(|r| r.head),
                    daemon.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    for i in 0..5 {
        let r = ask(&lab.bad, &format!("wrong-key-{i}")).expect("bad client connects");
        assert_eq!(r.status, 401, "attempt {i}: {}", r.head);
    }
    let bad_net = format!("{}/32", lab.bad.v4);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let blocked = daemon.list(Some("blocked"));
        if blocked
            .iter()
            .any(|e| e["net"] == bad_net.as_str() && e["origin"] == "gateway")
        {
            assert_eq!(blocked.len(), 1, "{blocked:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the IPv4 client was not blocked: {blocked:?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !daemon.log().contains("gateway block failed"),
        "{}",
        daemon.log()
    );
    // The kernel drops the client's next connection attempt; the good client is still served.
    assert!(
        ask(&lab.bad, GOOD_KEY).is_err(),
        "the blocked client still reaches the check endpoint"
    );
    assert_eq!(ask(&lab.good, GOOD_KEY).expect("good client").status, 200);
}

/// Removes a test's temp directory when dropped, also on panic.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
