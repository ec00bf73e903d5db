//! OpenAPI contracts in the gateway (`[[gateway.apis]]`), end to end in the namespace lab: the
//! daemon's gateway in front of a real upstream that writes down every request it gets.
//! Requests that keep to the contract reach the upstream, bodies intact; requests that break
//! it in enforce mode get 400 `application/problem+json` naming the place and never reach it;
//! an operation in monitor mode lets them through and counts them; the check endpoint answers
//! the same (403 with `X-Shield-Status: 400` to nginx); a broken document refuses the reload
//! and `check-config`, and the contract in force keeps enforcing.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::daemon::{Daemon, KERNEL_QUIET};
use tests::metrics::scrape;
use tests::netns::{Lab, in_netns};
use tests::proc::Proc;

const GATEWAY_PORT: u16 = 8080;
const UPSTREAM_PORT: u16 = 8081;
const CHECK: &str = "127.0.0.1:9382";
const METRICS: &str = "127.0.0.1:9381";
/// The `api` label: the document's file name.
const API: &str = "shop.yaml";
const FAMILY: &str = "api_shield_gateway_contract_validations_total";
const WAIT: Duration = Duration::from_secs(10);
/// The API's body limit in the test config.
const MAX_BODY: usize = 1024;

const SPEC: &str = r"openapi: 3.0.3
info: {title: shop, version: '1'}
servers: [{url: 'http://shop.test/v1'}]
paths:
  /items/{id}:
    get:
      operationId: getItem
      parameters:
        - {name: id, in: path, required: true, schema: {type: integer, minimum: 1}}
        - {name: fields, in: query, schema: {type: string, enum: [short, full]}}
      responses: {'200': {description: ok}}
  /search:
    get:
      operationId: search
      parameters:
        - {name: q, in: query, required: true, schema: {type: string, maxLength: 64}}
        - {name: sort, in: query, schema: {type: string, enum: [asc, desc]}}
      responses: {'200': {description: ok}}
  /items:
    post:
      operationId: addItem
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [name]
              additionalProperties: false
              properties:
                name: {type: string, maxLength: 32}
                price: {type: number, minimum: 0}
      responses: {'201': {description: ok}}
  /files/{name}:
    put:
      operationId: putFile
      parameters:
        - {name: name, in: path, required: true, schema: {type: string, pattern: '^[a-z]+$'}}
      requestBody:
        content:
          application/octet-stream: {schema: {type: string, format: binary}}
      responses: {'204': {description: ok}}
  /legacy/{id}:
    get:
      operationId: legacy
      parameters:
        - {name: id, in: path, required: true, schema: {type: integer}}
      responses: {'200': {description: ok}}
";

const POLICY: &str = r#"
realm = "contract"
unmatched = "allow"

[[routes]]
name = "shop"
path_prefix = "/"

[detector]
auth_failures = { count = 1000, within = "1m", ttl = "1m" }
not_found_paths = { count = 1000, within = "1m", ttl = "1m" }
"#;

/// Writes one JSON line per request (method, path with query, body) and answers 200.
const UPSTREAM_PY: &str = r#"
import http.server, json, sys
LOG = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def handle_one(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode("utf-8", "replace") if n else ""
        with open(LOG, "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path, "body": body}) + "\n")
        out = b"upstream"
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_DELETE = handle_one
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn problem(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// One request (`Connection: close` added), from inside `netns`.
fn send(netns: &str, addr: SocketAddr, head: &str, body: &[u8]) -> Reply {
    let mut bytes = format!("{head}Connection: close\r\n").into_bytes();
    if !body.is_empty() && !head.contains("Transfer-Encoding") {
        bytes.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body);
    in_netns(netns, move || {
        let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        // The gateway may answer before the whole body is written (and close).
        let _ = s.write_all(&bytes);
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Reply {
            status: head
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
            head: head.to_owned(),
            body: body.to_owned(),
        }
    })
    .join()
    .expect("client thread")
}

fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: shop.test\r\n")
}

/// A chunked request (no `Content-Length`): the body's length is not known up front.
fn chunked(method: &str, target: &str, content_type: &str) -> String {
    format!(
        "{}Transfer-Encoding: chunked\r\n",
        with_type(method, target, content_type)
    )
}

fn in_chunks(body: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n0\r\n\r\n");
    out
}

fn with_type(method: &str, target: &str, content_type: &str) -> String {
    format!("{method} {target} HTTP/1.1\r\nHost: shop.test\r\nContent-Type: {content_type}\r\n")
}

/// (method, path) of every request the upstream got, in order.
fn upstream_got(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

struct Case {
    what: &'static str,
    head: String,
    body: Vec<u8>,
    /// `in` and `name` (or pointer) of the first violation.
    place: (&'static str, &'static str),
}

fn case(
    what: &'static str,
    head: String,
    body: &[u8],
    place: (&'static str, &'static str),
) -> Case {
    Case {
        what,
        head,
        body: body.to_vec(),
        place,
    }
}

/// Requests that break the contract of an enforced operation.
fn invalid_cases() -> Vec<Case> {
    let json = |t: &str| with_type("POST", t, "application/json");
    vec![
        case(
            "wrong type path param",
            get("/v1/items/abc"),
            b"",
            ("path", "id"),
        ),
        case("below minimum", get("/v1/items/0"), b"", ("path", "id")),
        case(
            "missing required query",
            get("/v1/search"),
            b"",
            ("query", "q"),
        ),
        case(
            "bad enum",
            get("/v1/search?q=x&sort=sideways"),
            b"",
            ("query", "sort"),
        ),
        case(
            "unknown query",
            get("/v1/items/7?evil=1"),
            b"",
            ("query", "evil"),
        ),
        case(
            "repeated query",
            get("/v1/search?q=a&q=b"),
            b"",
            ("query", "q"),
        ),
        case(
            "encoded NUL in enum",
            get("/v1/items/7?fields=short%00"),
            b"",
            ("query", "fields"),
        ),
        case(
            "encoded space in id",
            get("/v1/items/1%20OR%201=1"),
            b"",
            ("path", "id"),
        ),
        case(
            "unicode enum",
            get("/v1/search?q=x&sort=%C3%A1sc"),
            b"",
            ("query", "sort"),
        ),
        case(
            "malformed percent",
            get("/v1/search?q=%zz"),
            b"",
            ("query", ""),
        ),
        case(
            "bad JSON type",
            json("/v1/items"),
            br#"{"name": 5}"#,
            ("body", "/name"),
        ),
        case(
            "extra JSON key",
            json("/v1/items"),
            br#"{"name":"a","admin":true}"#,
            ("body", ""),
        ),
        case("not JSON", json("/v1/items"), b"{not json", ("body", "")),
        case("missing body", json("/v1/items"), b"", ("body", "")),
        case(
            "wrong content type",
            with_type("POST", "/v1/items", "text/plain"),
            br#"{"name":"a"}"#,
            ("header", "content-type"),
        ),
        case(
            "oversize body",
            json("/v1/items"),
            format!(r#"{{"name":"{}"}}"#, "a".repeat(MAX_BODY)).as_bytes(),
            ("body", ""),
        ),
        case(
            "pattern on a streamed body's operation",
            with_type("PUT", "/v1/files/ABC", "application/octet-stream"),
            b"0123456789",
            ("path", "name"),
        ),
        case(
            "chunked JSON body",
            chunked("POST", "/v1/items", "application/json"),
            &in_chunks(br#"{"name": 5}"#),
            ("body", "/name"),
        ),
        case(
            "chunked body of unknown length, wrong type",
            chunked("PUT", "/v1/files/abc", "application/json"),
            &in_chunks(b"{}"),
            ("header", "content-type"),
        ),
        case(
            "content type of a streamed body",
            with_type("PUT", "/v1/files/abc", "application/json"),
            b"{}",
            ("header", "content-type"),
        ),
    ]
}

/// Requests that keep to the contract, or are not judged by it: (request, upstream path).
fn valid_cases() -> Vec<(String, Vec<u8>, &'static str)> {
    let json = |t: &str| with_type("POST", t, "application/json");
    vec![
        (get("/v1/items/7"), vec![], "/v1/items/7"),
        (
            get("/v1/items/%37?fields=%73hort"),
            vec![],
            "/v1/items/7?fields=%73hort",
        ),
        (
            get("/v1/search?q=shoes&sort=asc"),
            vec![],
            "/v1/search?q=shoes&sort=asc",
        ),
        (
            json("/v1/items"),
            br#"{"name":"pen \u202e","price":1.5}"#.to_vec(),
            "/v1/items",
        ),
        // Chunked: read whole for the check, forwarded with its length.
        (
            chunked("POST", "/v1/items", "application/json"),
            in_chunks(br#"{"name":"cup"}"#),
            "/v1/items",
        ),
        (
            with_type("PUT", "/v1/files/abc", "application/octet-stream"),
            b"0123456789".to_vec(),
            "/v1/files/abc",
        ),
        // Monitor mode: broken, let through.
        (get("/v1/legacy/abc"), vec![], "/v1/legacy/abc"),
        // No such operation (not refused without refuse_unknown_operations).
        (get("/v1/unknown"), vec![], "/v1/unknown"),
        // Outside the API's base path: not judged.
        (get("/other/abc"), vec![], "/other/abc"),
    ]
}

fn config(spec: &Path, policy: &Path, server_ip: IpAddr) -> String {
    format!(
        "run_as = \"nobody\"\n{KERNEL_QUIET}[metrics]\nlisten = \"{METRICS}\"\n\
         [gateway]\ncheck_listen = \"{CHECK}\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
         policy_file = \"{policy}\"\ndefault_upstream = \"http://127.0.0.1:{UPSTREAM_PORT}\"\n\
         [[gateway.listeners]]\nlisten = \"{server_ip}:{GATEWAY_PORT}\"\n\
         [[gateway.apis]]\nspec = \"{spec}\"\nhost = \"shop.test\"\nmode = \"enforce\"\n\
         refuse_unknown_query = true\nmax_body_bytes = {MAX_BODY}\n\
         [gateway.apis.operations.legacy]\nmode = \"monitor\"\n",
        policy = policy.display(),
        spec = spec.display(),
    )
}

struct Setup {
    lab: Lab,
    daemon: Daemon,
    dir: PathBuf,
    spec: PathBuf,
    log: PathBuf,
    gateway: SocketAddr,
    _upstream: Proc,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn setup() -> Setup {
    let lab = Lab::new();
    let dir = std::env::temp_dir().join(format!("api-shield-contract-{}", lab.id));
    std::fs::create_dir_all(&dir).unwrap();
    let (spec, policy, script, log) = (
        dir.join(API),
        dir.join("policy.toml"),
        dir.join("upstream.py"),
        dir.join("upstream.jsonl"),
    );
    std::fs::write(&spec, SPEC).unwrap();
    std::fs::write(&policy, POLICY).unwrap();
    std::fs::write(&script, UPSTREAM_PY).unwrap();
    let upstream = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.server.netns))
        .arg("/usr/bin/python3")
        .arg(&script)
        .arg(UPSTREAM_PORT.to_string())
        .arg(&log)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the upstream");
    let upstream = Proc {
        name: "upstream",
        child: upstream,
    };
    let server_ip = IpAddr::V4(lab.server.v4);
    let daemon = Daemon::start(&lab, &config(&spec, &policy, server_ip));
    let gateway = SocketAddr::new(server_ip, GATEWAY_PORT);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = send(&lab.good.netns, gateway, &get("/other/ready"), b"");
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway not ready: {r:?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Setup {
        lab,
        daemon,
        dir,
        spec,
        log,
        gateway,
        _upstream: upstream,
    }
}

fn count(s: &Setup, operation: &str, outcome: &str) -> u64 {
    scrape(&s.daemon.netns, METRICS).sum(
        FAMILY,
        &[("api", API), ("operation", operation), ("outcome", outcome)],
    )
}

/// Asserts every invalid case is refused with its place named and never forwarded.
fn assert_refused(s: &Setup) {
    let client = &s.lab.good.netns;
    let before = upstream_got(&s.log).len();
    let mut failures = Vec::new();
    for c in invalid_cases() {
        let r = send(client, s.gateway, &c.head, &c.body);
        if r.status != 400 {
            failures.push(format!("{}: status {} {:?}", c.what, r.status, r.body));
            continue;
        }
        let p = r.problem();
        let first = &p["errors"][0];
        let named = first["in"] == c.place.0
            && (first["name"] == c.place.1 || first["pointer"] == c.place.1);
        if p["status"] != 400 || !named {
            failures.push(format!("{}: want {:?}, got {p}", c.what, c.place));
        }
        // Nothing of the request comes back raw (escaped, printable ASCII only).
        if !r.body.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            failures.push(format!("{}: raw bytes in {:?}", c.what, r.body));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        s.daemon.log()
    );
    let got = upstream_got(&s.log);
    assert_eq!(
        got.len(),
        before,
        "refused requests reached the upstream: {:?}",
        &got[before..]
    );
}

#[test]
fn the_gateway_enforces_the_openapi_contract_and_keeps_it_across_a_bad_reload() {
    let s = setup();
    let client = s.lab.good.netns.clone();

    // Valid requests (and those not judged) reach the upstream, bodies intact.
    let start = upstream_got(&s.log).len();
    for (head, body, path) in valid_cases() {
        let r = send(&client, s.gateway, &head, &body);
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "upstream"),
            "{head:?}: {r:?}"
        );
        let got = upstream_got(&s.log);
        let last = got.last().unwrap();
        assert_eq!(last["path"], path, "{head:?}");
        let sent = if head.contains("chunked") {
            r#"{"name":"cup"}"#.to_owned()
        } else {
            String::from_utf8_lossy(&body).into_owned()
        };
        assert_eq!(last["body"], sent, "{head:?}");
    }
    assert_eq!(upstream_got(&s.log).len() - start, valid_cases().len());

    // The document's templates win over learning in the inventory: `/v1/files/abc` and
    // `/v1/files/ABC` are one endpoint of the spec, not two learned names.
    let inventory = s.daemon.json(&["inventory", "--json"]);
    let put: Vec<&str> = inventory
        .as_array()
        .expect("inventory rows")
        .iter()
        .filter(|r| r["method"] == "PUT")
        .filter_map(|r| r["template"].as_str())
        .collect();
    assert!(put.contains(&"/v1/files/{name}"), "{inventory}");
    assert!(
        !put.iter()
            .any(|t| t.ends_with("/abc") || t.ends_with("/ABC")),
        "{inventory}"
    );

    let refused_before = count(&s, "getItem", "failed_enforced");
    assert_refused(&s);
    assert!(count(&s, "getItem", "failed_enforced") >= refused_before + 4);
    assert!(count(&s, "addItem", "failed_enforced") >= 7);
    assert!(count(&s, "getItem", "passed") >= 2);
    assert_eq!(count(&s, "legacy", "failed_monitored"), 1);
    assert_eq!(count(&s, "none", "unknown_operation"), 1);
    let log = s.daemon.log();
    assert!(
        log.contains("contract: request refused") && log.contains("path:id"),
        "no refusal line in the log:\n{log}"
    );

    // The check endpoint: nginx gets 403 with the status header, Traefik the problem.
    let server = s.lab.server.netns.clone();
    let check: SocketAddr = CHECK.parse().unwrap();
    let nginx = |uri: &str| {
        format!(
            "GET /auth HTTP/1.1\r\nHost: shop.test\r\nX-Original-URI: {uri}\r\nX-Original-Method: GET\r\n"
        )
    };
    let r = send(&server, check, &nginx("/v1/items/abc"), b"");
    assert_eq!(
        (r.status, r.header("x-shield-status")),
        (403, Some("400")),
        "{r:?}"
    );
    let r = send(&server, check, &nginx("/v1/items/7"), b"");
    assert_eq!(r.status, 200, "{r:?}");
    let traefik = "GET / HTTP/1.1\r\nHost: check\r\nX-Forwarded-Uri: /v1/search?sort=up\r\n\
                   X-Forwarded-Method: GET\r\nX-Forwarded-Host: shop.test\r\n";
    let r = send(&server, check, traefik, b"");
    assert_eq!(r.status, 400, "{r:?}");
    let problem = r.problem();
    let names: Vec<&Value> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["name"])
        .collect();
    assert!(
        names.contains(&&Value::from("q")) && names.contains(&&Value::from("sort")),
        "{names:?}"
    );

    // A broken document: `check-config` and the reload are refused naming file and line, and
    // the contract in force still enforces.
    std::fs::write(
        &s.spec,
        SPEC.replace("info: {title: shop, version: '1'}", "info: {title: shop"),
    )
    .unwrap();
    let checked = Command::new(&s.daemon.bin)
        .arg("check-config")
        .arg(&s.daemon.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&checked.stderr);
    assert!(
        !checked.status.success() && err.contains(API) && err.contains("line"),
        "{err}"
    );
    let reload = s.daemon.cli(&["reload"]);
    assert!(
        !reload.success() && reload.stderr.contains(API) && reload.stderr.contains("line"),
        "{reload:?}"
    );
    assert_refused(&s);

    // A good document reloads (SIGHUP): `minimum: 1` gone, `/v1/items/0` passes.
    std::fs::write(&s.spec, SPEC.replace(", minimum: 1", "")).unwrap();
    let pid = s.daemon.pid().unwrap();
    // SAFETY: kill(2) with the daemon's own pid, which this test started.
    let rc = unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGHUP) };
    assert_eq!(rc, 0);
    let deadline = Instant::now() + WAIT;
    loop {
        let r = send(&client, s.gateway, &get("/v1/items/0"), b"");
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload not applied: {r:?}\n{}",
            s.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = send(&client, s.gateway, &get("/v1/items/abc"), b"");
    assert_eq!(r.status, 400, "{r:?}");
}
