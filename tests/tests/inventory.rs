//! The API inventory end to end: the real daemon with a plain gateway listener and its check
//! endpoint in a namespace lab, a real upstream that serves some paths and 404s the rest, and
//! mixed traffic (numeric ids, UUIDs, percent-encoded paths, query strings with secrets in
//! their values, scanner noise). Then `api-shield inventory --json` shows the templates with
//! their counts, status classes and identities, scanner 404s made no endpoint, query values
//! never show, `inventory export --openapi` is an OpenAPI 3.1 document with the templates, and
//! after a graceful restart the inventory is still there; a damaged file is set aside and the
//! daemon starts anyway.

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
const KEY: &str = "ak_inventory_client_0123456789ab";
/// A query value that must never reach the inventory.
const SECRET: &str = "s3cr3t-query-value";
const WAIT: Duration = Duration::from_secs(10);
const USERS: u32 = 30;
const ORDERS: [&str; 5] = [
    "0b6f4e8a-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
    "1c7a5f9b-2d3e-4f60-9bac-1d2e3f4a5b6c",
    "2d8b6a0c-3e4f-4071-acbd-2e3f4a5b6c7d",
    "3e9c7b1d-4f50-4182-bdce-3f4a5b6c7d8e",
    "4fad8c2e-5061-4293-cedf-4a5b6c7d8e9f",
];
/// Paths scanners probe; the upstream answers 404.
const NOISE: [&str; 6] = [
    "/wp-admin/setup-config.php",
    "/.env",
    "/phpmyadmin/index.php",
    "/.git/config",
    "/cgi-bin/test.cgi",
    "/admin/config.bak",
];

fn policy() -> String {
    let hash = api_shield::policy::apikey::hash_api_key(KEY);
    format!(
        r#"
realm = "inventory"
unmatched = "allow"

[[api_keys]]
hash = "{hash}"
identity = "order-client"

[[routes]]
name = "orders"
path_prefix = "/orders"
auth = ["api_key"]

[[routes]]
name = "public"
path_prefix = "/"

[detector]
auth_failures = {{ count = 1000, within = "1m", ttl = "1m" }}
not_found_paths = {{ count = 1000, within = "1m", ttl = "1m" }}
"#
    )
}

/// Serves `/users/<digits>`, `/orders/<uuid>` and `/docs/<anything>`; 404 for the rest.
const UPSTREAM_PY: &str = r#"
import http.server, re, sys
SERVED = re.compile(r"^/(users/[0-9]+|orders/[0-9a-f-]{36}|docs/.+)$")
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        path = self.path.split("?", 1)[0]
        status = 200 if SERVED.match(path) else 404
        out = b"{}"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

fn send(netns: &str, addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Reply {
    get_from(netns, addr, target, headers, WAIT)
        .join()
        .expect("client thread")
        .unwrap_or_else(|e| panic!("request {target:?}: {e}"))
}

/// The endpoint `(method, template)` of the `inventory --json` rows.
fn row<'a>(rows: &'a [Value], template: &str) -> Option<&'a Value> {
    rows.iter()
        .find(|r| r["method"] == "GET" && r["template"] == template)
}

fn rows(daemon: &Daemon) -> Vec<Value> {
    daemon
        .json(&["inventory", "--json"])
        .as_array()
        .cloned()
        .expect("an array of endpoints")
}

fn wait_ready(daemon: &Daemon, client: &str, gateway: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let up = get_from(client, gateway, "/ready", &[], WAIT)
            .join()
            .unwrap();
        match up {
            Ok(r) if r.status == 404 => return,
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
}

/// Sends the mixed traffic; returns the statuses the client got, by kind.
fn traffic(client: &str, server: &str, gateway: SocketAddr) {
    let check: SocketAddr = CHECK.parse().unwrap();
    for id in 1..=USERS {
        let r = send(client, gateway, &format!("/users/{id}"), &[]);
        assert_eq!(r.status, 200, "/users/{id}");
    }
    // Percent-encoded digits are the same endpoint once normalised; the query keeps its
    // names, never its values.
    assert_eq!(send(client, gateway, "/users/%34%32", &[]).status, 200);
    let with_query = format!("/users/7?page=2&token={SECRET}&a%5Fb=1");
    assert_eq!(send(client, gateway, &with_query, &[]).status, 200);
    for uuid in ORDERS {
        let r = send(
            client,
            gateway,
            &format!("/orders/{uuid}"),
            &[("X-Api-Key", KEY)],
        );
        assert_eq!(r.status, 200, "/orders/{uuid}");
    }
    // Refused by the shield: counted on the endpoint that exists, as 4xx.
    for uuid in &ORDERS[..2] {
        assert_eq!(
            send(client, gateway, &format!("/orders/{uuid}"), &[]).status,
            401
        );
    }
    assert_eq!(
        send(client, gateway, "/docs/hello%20world", &[]).status,
        200
    );
    for noise in NOISE {
        assert_eq!(send(client, gateway, noise, &[]).status, 404, "{noise}");
    }
    for i in 0..20 {
        let r = send(client, gateway, &format!("/backup-{i}.zip"), &[]);
        assert_eq!(r.status, 404);
    }
    // The check endpoint: an allowed request counts on the endpoint that exists; one for a
    // path nobody served creates none (`learn_unanswered` is off).
    for uri in ["/users/99", "/brand/new/thing"] {
        let r = send(
            server,
            check,
            "/auth",
            &[("X-Original-URI", uri), ("X-Original-Method", "GET")],
        );
        assert_eq!(r.status, 200, "{uri} via the check endpoint");
    }
}

fn check_listing(daemon: &Daemon, rows: &[Value]) {
    let text = serde_json::to_string(rows).unwrap();
    assert!(
        !text.contains(SECRET),
        "a query value in the inventory: {text}"
    );
    let users = row(rows, "/users/{id}").unwrap_or_else(|| panic!("{text}"));
    // Every id, the encoded one, the one with a query, and the check endpoint's.
    assert_eq!(users["requests"], u64::from(USERS) + 3, "{users}");
    assert_eq!(users["status_classes"][1], u64::from(USERS) + 2, "{users}");
    assert_eq!(users["host"], "api.test");
    let names: Vec<&str> = users["query_names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(names, ["a_b", "page", "token"], "{users}");
    assert!(users["latency_p50_ms"].as_f64().is_some(), "{users}");
    let orders = row(rows, "/orders/{uuid}").unwrap_or_else(|| panic!("{text}"));
    assert_eq!(orders["requests"], 7, "{orders}");
    assert_eq!(orders["status_classes"][1], 5, "{orders}");
    assert_eq!(orders["status_classes"][3], 2, "{orders}");
    assert_eq!(orders["identities"], 1, "{orders}");
    assert_eq!(orders["auth_methods"][0], "api_key", "{orders}");
    let docs = api_shield::inventory::Templater::default().template("/docs/hello%20world");
    assert!(row(rows, &docs).is_some(), "{docs} missing: {text}");
    for noise in [
        "wp-admin",
        ".env",
        "phpmyadmin",
        ".git",
        "cgi-bin",
        "backup",
        "brand",
        "ready",
    ] {
        assert!(
            !text.contains(noise),
            "scanner noise `{noise}` made an endpoint: {text}"
        );
    }
    assert_eq!(rows.len(), 3, "{text}\n{}", daemon.log());
}

#[test]
fn the_gateway_learns_the_api_lists_and_exports_it_and_keeps_it_across_a_restart() {
    let lab = Lab::new();
    let dir = std::env::temp_dir().join(format!("api-shield-inventory-{}", lab.id));
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
    let mut daemon = Daemon::start(
        &lab,
        &format!(
            "run_as = \"nobody\"\n{KERNEL_QUIET}[inventory]\nsave_interval = \"1h\"\n\
             [gateway]\ncheck_listen = \"{CHECK}\"\n\
             trusted_proxies = [\"127.0.0.1/32\"]\npolicy_file = \"{policy}\"\n\
             default_upstream = \"http://127.0.0.1:{UPSTREAM_PORT}\"\n\
             [[gateway.listeners]]\nlisten = \"{server_ip}:{GATEWAY_PORT}\"\n",
            policy = policy_file.display(),
        ),
    );
    let gateway = SocketAddr::new(IpAddr::V4(server_ip), GATEWAY_PORT);
    let client = lab.good.netns.clone();
    let server = lab.server.netns.clone();
    wait_ready(&daemon, &client, gateway);
    traffic(&client, &server, gateway);

    let learned = rows(&daemon);
    check_listing(&daemon, &learned);
    let other = daemon.json(&["inventory", "--host", "other.test", "--json"]);
    assert_eq!(other, Value::Array(Vec::new()));
    let table = daemon.ok(&["inventory", "--host", "API.test"]).stdout;
    assert!(
        table.contains("/users/{id}") && table.contains("/orders/{uuid}"),
        "{table}"
    );

    let doc = daemon.json(&["inventory", "export", "--openapi"]);
    assert_eq!(doc["openapi"], "3.1.0", "{doc}");
    let users = &doc["paths"]["/users/{id}"]["get"];
    assert_eq!(users["parameters"][0]["in"], "path", "{doc}");
    assert_eq!(users["parameters"][0]["name"], "id", "{doc}");
    assert!(doc["paths"]["/orders/{uuid}"]["get"].is_object(), "{doc}");
    assert_eq!(doc["servers"][0]["url"], "https://api.test", "{doc}");
    assert_eq!(doc["paths"].as_object().unwrap().len(), 3, "{doc}");

    // A graceful restart: the shutdown save keeps every figure.
    assert!(daemon.stop(), "SIGTERM: {}", daemon.log());
    let saved = daemon
        .dir
        .join("state")
        .join(&daemon.iface)
        .join("inventory.json");
    assert!(saved.exists(), "{}", daemon.log());
    daemon.spawn();
    wait_ready(&daemon, &client, gateway);
    let again = rows(&daemon);
    let requests = |rows: &[Value], t: &str| row(rows, t).map(|r| r["requests"].clone());
    for t in ["/users/{id}", "/orders/{uuid}"] {
        assert_eq!(requests(&again, t), requests(&learned, t), "{t}: {again:?}");
    }

    // A damaged file: set aside, audited, and the daemon starts with an empty inventory.
    assert!(daemon.stop(), "SIGTERM: {}", daemon.log());
    std::fs::write(&saved, b"{\"version\": 1, \"hosts\": [{").unwrap();
    daemon.spawn();
    assert!(rows(&daemon).is_empty());
    let aside = saved.with_file_name("inventory.json.damaged");
    assert_eq!(
        std::fs::read(&aside).unwrap(),
        b"{\"version\": 1, \"hosts\": [{"
    );
    assert!(
        daemon
            .audit_records()
            .iter()
            .any(|r| r["op"] == "inventory_load" && r["result"] == "error"),
        "{:?}",
        daemon.audit_records()
    );
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
