//! Route bypass by encoding, through both front doors: the gateway (a raw HTTP/1.1 request
//! line, so nothing between the test and the daemon rewrites the target) and the check
//! endpoint (`X-Original-URI`, as nginx's `auth_request` sends it). Every variant either lands
//! on the protected route it spells (401 without a key; with one, the upstream is sent exactly
//! the normalised path) or is refused (400; 403 with `x-shield-status: 400` to nginx). Plus
//! segment-aware matching, case-insensitive routes, and identity headers stripped on a request
//! no route matches.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::daemon::{Daemon, KERNEL_QUIET};
use tests::http::{Reply, get_from};
use tests::netns::Lab;
use tests::proc::{Proc, python_upstream};

const GATEWAY_PORT: u16 = 8080;
const UPSTREAM_PORT: u16 = 8081;
const CHECK: &str = "127.0.0.1:9382";
const KEY: &str = "ak_paths_client_0123456789abcdef";

/// What a raw path must come to.
enum Want {
    /// Routed to a protected route, forwarded as this normalised path.
    Protected(&'static str),
    /// Refused with 400.
    Refused,
}
use Want::{Protected, Refused};

/// Encodings that reached `/admin` and `/v1` without credentials, and their relatives.
const VARIANTS: &[(&str, Want)] = &[
    ("/%61dmin/x", Protected("/admin/x")),
    ("/adm%69n/users", Protected("/admin/users")),
    ("/%61%64%6d%69%6e", Protected("/admin")),
    ("/%61%64%6D%69%6E/x", Protected("/admin/x")),
    ("/a%64min", Protected("/admin")),
    ("/admi%6e/", Protected("/admin/")),
    ("/%761/items", Protected("/v1/items")),
    ("/v%31/items", Protected("/v1/items")),
    ("/x/../admin", Protected("/admin")),
    ("/x/%2e%2e/admin", Protected("/admin")),
    ("/x/%2E%2E/admin", Protected("/admin")),
    ("/x/.%2e/admin", Protected("/admin")),
    ("/x/%2e./admin", Protected("/admin")),
    ("/public/../admin/x", Protected("/admin/x")),
    ("/public/%2e%2e/v1/items", Protected("/v1/items")),
    ("/public/..//admin", Protected("/admin")),
    ("/public/.././admin", Protected("/admin")),
    ("//admin", Protected("/admin")),
    ("///admin///x", Protected("/admin/x")),
    ("/./admin", Protected("/admin")),
    ("/%2e/admin", Protected("/admin")),
    ("/admin/.", Protected("/admin/")),
    ("/admin/x/..", Protected("/admin/")),
    ("/../admin", Protected("/admin")),
    ("/../../../admin", Protected("/admin")),
    ("/%2e%2e/%2e%2e/v1", Protected("/v1")),
    ("/v1/./items", Protected("/v1/items")),
    ("/v1//items", Protected("/v1/items")),
    ("/admin%2fx", Refused),
    ("/admin%2Fx", Refused),
    ("/x/..%2fadmin", Refused),
    ("/x/..%2Fadmin", Refused),
    ("/x/..%5cadmin", Refused),
    ("/x/%2e%2e%2fadmin", Refused),
    ("/v1%2fitems", Refused),
    ("/public%2f..%2fadmin", Refused),
    ("/x\\..\\admin", Refused),
    ("/admin%00", Refused),
    ("/admin%0d%0aX-Injected:1", Refused),
    ("/admin;x=1", Refused),
    ("/admin/..;/x", Refused),
    ("/public/..;/admin", Refused),
    ("/public;/../admin", Refused),
    ("/%252e%252e/admin", Refused),
    ("/public/%252e%252e/admin", Refused),
    ("/%2561dmin", Refused),
    ("/a%G1dmin", Refused),
    ("/admin%", Refused),
    ("/adm%6", Refused),
];

fn policy() -> String {
    let hash = api_shield::policy::apikey::hash_api_key(KEY);
    format!(
        r#"
realm = "paths"
unmatched = "allow"

[[api_keys]]
hash = "{hash}"
identity = "path-client"

[[routes]]
name = "admin"
path_prefix = "/admin"
auth = ["api_key"]
plan_header = "x-auth-plan"

[[routes]]
name = "v1"
path_prefix = "/v1"
auth = ["api_key"]

[[routes]]
name = "reports"
path_prefix = "/reports"
case_insensitive = true
auth = ["api_key"]

[[routes]]
name = "public"
path_prefix = "/public"

[detector]
auth_failures = {{ count = 1000, within = "1m", ttl = "1m" }}
not_found_paths = {{ count = 1000, within = "1m", ttl = "1m" }}
"#
    )
}

/// Answers every request with the path and headers it was sent, as JSON.
const UPSTREAM_PY: &str = r#"
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        out = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

fn upstream_path(reply: &Reply) -> String {
    let v: Value = serde_json::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("upstream body {:?}: {e}", reply.body));
    v["path"].as_str().unwrap_or_default().to_owned()
}

/// How long one answer may take.
const WAIT: Duration = Duration::from_secs(10);

fn send(netns: &str, addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Reply {
    get_from(netns, addr, target, headers, WAIT)
        .join()
        .expect("client thread")
        .unwrap_or_else(|e| panic!("request {target:?}: {e}"))
}

#[test]
fn encoded_paths_cannot_bypass_a_route_through_the_gateway_or_the_check_endpoint() {
    assert!(VARIANTS.len() >= 40, "the issue asks for at least 40");
    let lab = Lab::new();
    let dir = std::env::temp_dir().join(format!("api-shield-paths-{}", lab.id));
    std::fs::create_dir_all(&dir).unwrap();
    let policy_file = dir.join("policy.toml");
    std::fs::write(&policy_file, policy()).unwrap();
    let script = dir.join("upstream.py");
    std::fs::write(&script, UPSTREAM_PY).unwrap();
    let _upstream = Proc {
        name: "upstream",
        child: python_upstream(&lab.server.netns, &script, UPSTREAM_PORT),
    };
    let server_ip = lab.server.v4;
    let daemon = Daemon::start(
        &lab,
        &format!(
            "run_as = \"nobody\"\n{KERNEL_QUIET}[gateway]\ncheck_listen = \"{CHECK}\"\n\
             trusted_proxies = [\"127.0.0.1/32\"]\npolicy_file = \"{policy}\"\n\
             default_upstream = \"http://127.0.0.1:{UPSTREAM_PORT}\"\n\
             [[gateway.listeners]]\nlisten = \"{server_ip}:{GATEWAY_PORT}\"\n",
            policy = policy_file.display(),
        ),
    );
    let gateway = SocketAddr::new(IpAddr::V4(server_ip), GATEWAY_PORT);
    let check: SocketAddr = CHECK.parse().unwrap();
    let client = lab.good.netns.clone();
    let server = lab.server.netns.clone();
    let keyed = [("X-Api-Key", KEY)];

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let up = get_from(&client, gateway, "/public/x", &[], WAIT)
            .join()
            .unwrap();
        match up {
            Ok(r) if r.status == 200 => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "gateway not ready: {other:?}\n{}",
                    daemon.log()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    let mut failures = Vec::new();
    for (raw, want) in VARIANTS {
        let bare = send(&client, gateway, raw, &[]);
        let with_key = send(&client, gateway, raw, &keyed);
        let checked = send(
            &server,
            check,
            "/auth",
            &[("X-Original-URI", raw), ("X-Original-Method", "GET")],
        );
        let checked_key = send(
            &server,
            check,
            "/auth",
            &[
                ("X-Original-URI", raw),
                ("X-Original-Method", "GET"),
                ("X-Api-Key", KEY),
            ],
        );
        let got = (
            bare.status,
            with_key.status,
            checked.status,
            checked.header("x-shield-status").map(str::to_owned),
            checked_key.status,
        );
        match want {
            Protected(path) => {
                let ok = got == (401, 200, 401, Some("401".into()), 200)
                    && upstream_path(&with_key) == *path;
                if !ok {
                    failures.push(format!(
                        "{raw}: want 401/200 forwarded as {path}, got {got:?} forwarded as {:?}",
                        with_key.body
                    ));
                }
            }
            Refused => {
                let ok = bare.status == 400
                    && with_key.status == 400
                    && checked.status == 403
                    && checked.header("x-shield-status") == Some("400")
                    && checked_key.status == 403;
                if !ok {
                    failures.push(format!("{raw}: want 400 / nginx 403+400, got {got:?}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} variants wrong:\n{}\n{}",
        failures.len(),
        VARIANTS.len(),
        failures.join("\n"),
        daemon.log()
    );

    // Segment-aware: `/administrator` and `/v10` are not under `/admin` and `/v1`.
    for raw in ["/administrator", "/v10/items", "/admin-panel"] {
        let r = send(&client, gateway, raw, &[]);
        assert_eq!(
            (r.status, upstream_path(&r)),
            (200, raw.to_owned()),
            "{raw}"
        );
    }
    // A case-insensitive route covers every spelling; a case-sensitive one only its own.
    for raw in ["/REPORTS/q1", "/Reports", "/rEpOrTs/x", "/%52eports"] {
        let r = send(&client, gateway, raw, &[]);
        assert_eq!(r.status, 401, "{raw}");
        let r = send(&server, check, "/auth", &[("X-Original-URI", raw)]);
        assert_eq!(r.status, 401, "{raw} via the check endpoint");
    }
    // Identity and plan headers sent by a client never reach the upstream, routed or not.
    for raw in ["/unrouted", "/public/x"] {
        let r = send(
            &client,
            gateway,
            raw,
            &[("X-Auth-Identity", "admin"), ("X-Auth-Plan", "gold")],
        );
        assert_eq!(r.status, 200, "{raw}");
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert!(
            v["headers"].get("x-auth-identity").is_none()
                && v["headers"].get("x-auth-plan").is_none(),
            "{raw}: {v}"
        );
    }
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
