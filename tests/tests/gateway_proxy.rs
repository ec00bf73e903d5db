//! The TLS-terminating gateway end to end, in a namespace lab with the kernel shield attached:
//! real rustls clients over HTTP/1.1 and HTTP/2 (ALPN), mTLS accepted and refused, a real
//! upstream, a JWKS server that rotates keys, a PROXY protocol v2 hop, body limits, quotas,
//! a SIGHUP reload under an open HTTP/2 connection, the daemon running unprivileged, and an
//! abusive client escalated into the kernel so that its next TCP connection times out while
//! a good client keeps being served.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::KeyPair;
use serde_json::{Value, json};
use tests::daemon::{Daemon, KERNEL_QUIET};
use tests::https::{self, Answer, Req, Tls};
use tests::metrics::scrape;
use tests::netns::{Host, Lab, in_netns};
use tests::pki::pki_for;
use tests::proc::Proc;

const TLS_PORT: u16 = 8443;
const MTLS_PORT: u16 = 8444;
/// Plain HTTP behind a (trusted, loopback) load balancer that speaks PROXY v2.
const PROXY_PORT: u16 = 8080;
const UPSTREAM_PORT: u16 = 8081;
const JWKS_PORT: u16 = 8090;
const METRICS: &str = "127.0.0.1:9381";
const SERVER_NAME: &str = "api.test";
const GOOD_KEY: &str = "ak_gateway_good_client_0123456789";
const TIGHT_KEY: &str = "ak_gateway_tight_client_012345678";
const ADDED_KEY: &str = "ak_gateway_added_by_reload_012345";
const ISSUER: &str = "https://idp.test/";
/// The service user; exists on every Debian system.
const RUN_AS: &str = "nobody";
const NOBODY_UID: &str = "65534";
/// The client named in the PROXY v2 header (a documentation-range address, never routed).
const PROXIED_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 7);
/// The gateway's floor for request heads; the test sends a larger one.
const MIN_HEADER_BYTES: usize = 8192;
/// Idle timeout of client connections in this test (the default is a minute).
const IDLE_SECS: u64 = 2;

fn python_in(netns: &str, script: &Path, args: &[String]) -> Child {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .arg("/usr/bin/python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start python")
}

/// Answers every request with what the gateway forwarded: method, path, the headers that
/// matter and the body length, as JSON.
const UPSTREAM_PY: &str = r#"
import http.server, json, sys, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        if self.path.startswith("/slow"):
            time.sleep(3)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        seen = {k.lower(): v for k, v in self.headers.items()}
        out = json.dumps({"method": self.command, "path": self.path, "headers": seen, "body": len(body)}).encode()
        status = 404 if self.path.startswith("/missing") else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = answer
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// Serves one directory (the JWKS document), re-reading it on every request.
const JWKS_PY: &str = r#"
import functools, http.server, sys
H = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])
H.log_message = lambda *a: None
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// An ES256 signing key and its public JWK.
struct JwtKey {
    kid: &'static str,
    encoding: jsonwebtoken::EncodingKey,
    jwk: Value,
}

fn jwt_key(kid: &'static str) -> JwtKey {
    let kp = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    // Uncompressed point: 0x04 || X (32) || Y (32).
    let (x, y) = raw[1..].split_at(32);
    JwtKey {
        kid,
        encoding: jsonwebtoken::EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        jwk: json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(x),
                    "y": URL_SAFE_NO_PAD.encode(y), "kid": kid, "alg": "ES256", "use": "sig"}),
    }
}

fn token(key: &JwtKey, sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(key.kid.to_owned());
    let claims =
        json!({"iss": ISSUER, "aud": SERVER_NAME, "sub": sub, "exp": now + 600, "iat": now});
    jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
}

fn publish_jwks(dir: &Path, keys: &[&JwtKey]) {
    let doc = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    let tmp = dir.join("jwks.json.tmp");
    std::fs::write(&tmp, doc.to_string()).unwrap();
    std::fs::rename(&tmp, dir.join("jwks.json")).unwrap();
}

fn policy(extra_key: bool) -> String {
    let hash = api_shield::policy::apikey::hash_api_key;
    let added = if extra_key {
        format!(
            "[[api_keys]]\nhash = \"{}\"\nidentity = \"added-client\"\nplan = \"roomy\"\n",
            hash(ADDED_KEY)
        )
    } else {
        String::new()
    };
    format!(
        r#"
realm = "gw"
unmatched = "deny"

[[api_keys]]
hash = "{good}"
identity = "good-client"
plan = "roomy"

[[api_keys]]
hash = "{tight}"
identity = "tight-client"
plan = "tiny"
{added}
[[jwt_issuers]]
issuer = "{ISSUER}"
audiences = ["{SERVER_NAME}"]
algorithms = ["ES256"]
plan = "roomy"
jwks = {{ url = "http://127.0.0.1:{JWKS_PORT}/jwks.json", cache_duration = "10m", min_refresh_interval = "1s" }}

[plans.roomy]
rate = [{{ name = "burst", rate = 1000, per = "1s", burst = 1000, key = ["identity"] }}]

[plans.tiny]
rate = [{{ name = "hourly", rate = 2, per = "1h", burst = 2, key = ["identity"] }}]

[[routes]]
name = "api"
path_prefix = "/"
auth = ["api_key", "jwt"]
api_key_header = "x-api-key"
identity_header = "x-auth-identity"
strip_credentials = true

[detector]
auth_failures = {{ count = 5, within = "10s", ttl = "60s" }}
too_many_requests = {{ count = 1000, within = "1m", ttl = "1m" }}
not_found_paths = {{ count = 1000, within = "1m", ttl = "1m" }}
"#,
        good = hash(GOOD_KEY),
        tight = hash(TIGHT_KEY),
    )
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::{PermissionsExt, chown};
    std::fs::write(path, text).unwrap();
    // Readable by the service user (to reload certificates on SIGHUP), by nobody else.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    chown(path, Some(NOBODY_UID.parse().unwrap()), None).unwrap();
}

fn upstream_saw(a: &Answer) -> Value {
    serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("upstream body {:?}: {e}", a.body))
}

/// Runs `f` from `host`'s namespace and waits for it.
fn from<T: Send + 'static>(host: &Host, f: impl FnOnce() -> T + Send + 'static) -> T {
    in_netns(&host.netns, f).join().expect("client thread")
}

/// Every thread of `pid`: its uid line, capability sets, no_new_privs and seccomp mode.
fn thread_credentials(pid: u32) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let lines = status
            .lines()
            .filter(|l| {
                [
                    "Uid:",
                    "Gid:",
                    "CapPrm:",
                    "CapEff:",
                    "CapAmb:",
                    "NoNewPrivs:",
                    "Seccomp:",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        out.push((status.lines().next().unwrap_or("").to_owned(), lines));
    }
    out
}

fn raw_proxy_v2_request(client: Ipv4Addr, server: Ipv4Addr, request: &str) -> Vec<u8> {
    // Signature, v2 PROXY, TCP over IPv4, 12 address bytes.
    let mut b = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    b.extend_from_slice(&[0x21, 0x11, 0, 12]);
    b.extend_from_slice(&client.octets());
    b.extend_from_slice(&server.octets());
    b.extend_from_slice(&40000u16.to_be_bytes());
    b.extend_from_slice(&PROXY_PORT.to_be_bytes());
    b.extend_from_slice(request.as_bytes());
    b
}

#[test]
fn tls_gateway_serves_limits_and_escalates_into_the_kernel() {
    let lab = Lab::new();
    let dir = std::env::temp_dir().join(format!("api-shield-gwproxy-{}", lab.id));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks_dir = dir.join("jwks");
    std::fs::create_dir_all(&jwks_dir).unwrap();
    let pki = pki_for(SERVER_NAME);
    let file = |name: &str| -> PathBuf { dir.join(name) };
    write_private(&file("server.pem"), &pki.server_cert);
    write_private(&file("server.key"), &pki.server_key);
    write_private(&file("client-ca.pem"), &pki.client_ca_pem);
    let policy_file = file("policy.toml");
    std::fs::write(&policy_file, policy(false)).unwrap();
    let (k1, k2) = (jwt_key("k1"), jwt_key("k2"));
    publish_jwks(&jwks_dir, &[&k1]);

    let server_ip = lab.server.v4;
    let server_ns = lab.server.netns.clone();
    std::fs::write(file("upstream.py"), UPSTREAM_PY).unwrap();
    std::fs::write(file("jwks.py"), JWKS_PY).unwrap();
    let _upstream = Proc {
        name: "upstream",
        child: python_in(
            &server_ns,
            &file("upstream.py"),
            &[UPSTREAM_PORT.to_string()],
        ),
    };
    let _jwks = Proc {
        name: "jwks",
        child: python_in(
            &server_ns,
            &file("jwks.py"),
            &[JWKS_PORT.to_string(), jwks_dir.display().to_string()],
        ),
    };
    let daemon = Daemon::start(
        &lab,
        &format!(
            "run_as = \"{RUN_AS}\"\n{KERNEL_QUIET}[metrics]\nlisten = \"{METRICS}\"\n\
             [gateway]\ncheck_listen = \"127.0.0.1:9382\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
             policy_file = \"{policy}\"\ndefault_upstream = \"http://127.0.0.1:{UPSTREAM_PORT}\"\n\
             [gateway.limits]\nmax_body_bytes = 1024\nmax_header_bytes = {MIN_HEADER_BYTES}\n\
             [gateway.timeouts]\nupstream_response = \"1s\"\nidle = \"{IDLE_SECS}s\"\n\
             [[gateway.listeners]]\nlisten = \"{server_ip}:{TLS_PORT}\"\n\
             tls_cert = \"{cert}\"\ntls_key = \"{key}\"\n\
             [[gateway.listeners]]\nlisten = \"{server_ip}:{MTLS_PORT}\"\n\
             tls_cert = \"{cert}\"\ntls_key = \"{key}\"\nclient_ca = \"{ca}\"\n\
             [[gateway.listeners]]\nlisten = \"127.0.0.1:{PROXY_PORT}\"\nproxy_protocol = true\n",
            policy = policy_file.display(),
            cert = file("server.pem").display(),
            key = file("server.key").display(),
            ca = file("client-ca.pem").display(),
        ),
    );
    let pid = daemon.pid().expect("daemon pid");
    let tls_addr = SocketAddr::new(IpAddr::V4(server_ip), TLS_PORT);
    let mtls_addr = SocketAddr::new(IpAddr::V4(server_ip), MTLS_PORT);
    let h1 = Tls {
        ca_pem: pki.ca_pem.clone(),
        server_name: SERVER_NAME.into(),
        client: None,
        http2: false,
    };
    let h2 = Tls {
        http2: true,
        ..h1.clone()
    };
    let keyed = |path: &str, key: &str| Req::get(path).header("x-api-key", key);

    // Ready, and served over HTTP/1.1: identity upstream, key stripped, client as seen.
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = loop {
        let t = h1.clone();
        match from(&lab.good, move || {
            https::once(tls_addr, &t, keyed("/v1/items?x=1", GOOD_KEY))
        }) {
            Ok(a) if a.status == 200 => break a,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "gateway not ready: {other:?}\n{}",
                    daemon.log()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    let saw = upstream_saw(&first);
    assert_eq!(saw["path"], "/v1/items?x=1");
    assert_eq!(saw["headers"]["x-auth-identity"], "good-client");
    assert!(
        saw["headers"].get("x-api-key").is_none(),
        "credential stripped: {saw}"
    );
    assert_eq!(saw["headers"]["x-real-ip"], lab.good.v4.to_string());
    assert_eq!(saw["headers"]["x-forwarded-proto"], "https");
    assert_eq!(first.version, hyper::Version::HTTP_11);
    assert!(first.header("ratelimit").is_some(), "{:?}", first.headers);

    // The whole process is unprivileged: every thread (request handlers included).
    let threads = thread_credentials(pid);
    assert!(threads.len() > 1, "{threads:?}");
    for (name, lines) in &threads {
        let has = |want: &str| lines.iter().any(|l| l == want);
        assert!(
            has(&format!(
                "Uid: {NOBODY_UID} {NOBODY_UID} {NOBODY_UID} {NOBODY_UID}"
            )),
            "{name}: {lines:?}"
        );
        for cap in ["CapPrm:", "CapEff:", "CapAmb:"] {
            assert!(has(&format!("{cap} 0000000000000000")), "{name}: {lines:?}");
        }
        assert!(
            has("NoNewPrivs: 1") && has("Seccomp: 2"),
            "{name}: {lines:?}"
        );
    }
    // …and still drives the kernel through its open maps.
    daemon.ok(&["block", "198.18.200.1", "--reason", "after the switch"]);
    assert!(
        daemon
            .list(Some("blocked"))
            .iter()
            .any(|e| e["net"] == "198.18.200.1/32"),
        "{:?}",
        daemon.list(None)
    );

    // A forged X-Forwarded-For from an untrusted client changes nothing.
    let t = h1.clone();
    let forged = from(&lab.good, move || {
        https::once(
            tls_addr,
            &t,
            keyed("/", GOOD_KEY).header("x-forwarded-for", "198.18.9.9"),
        )
    })
    .unwrap();
    assert_eq!(
        upstream_saw(&forged)["headers"]["x-real-ip"],
        lab.good.v4.to_string()
    );
    assert_eq!(
        upstream_saw(&forged)["headers"]["x-forwarded-for"],
        lab.good.v4.to_string()
    );

    // HTTP/2 by ALPN.
    let t = h2.clone();
    let a = from(&lab.good, move || {
        https::once(tls_addr, &t, keyed("/v2", GOOD_KEY))
    })
    .unwrap();
    assert_eq!(
        (a.status, a.version),
        (200, hyper::Version::HTTP_2),
        "{a:?}"
    );
    assert_eq!(upstream_saw(&a)["headers"]["host"], SERVER_NAME);

    // mTLS: refused without a client certificate, served with one.
    let t = h1.clone();
    let refused = from(&lab.good, move || {
        https::once(mtls_addr, &t, keyed("/", GOOD_KEY))
    });
    assert!(refused.is_err(), "no client certificate, yet: {refused:?}");
    let t = Tls {
        client: Some((pki.client_cert.clone(), pki.client_key.clone())),
        ..h1.clone()
    };
    let a = from(&lab.good, move || {
        https::once(mtls_addr, &t, keyed("/", GOOD_KEY))
    })
    .unwrap();
    assert_eq!(a.status, 200, "{a:?}");

    // PROXY protocol v2 from the trusted load balancer names the client.
    let request = format!(
        "GET /lb HTTP/1.1\r\nHost: {SERVER_NAME}\r\nX-Api-Key: {GOOD_KEY}\r\nConnection: close\r\n\r\n"
    );
    let raw = raw_proxy_v2_request(PROXIED_CLIENT, Ipv4Addr::LOCALHOST, &request);
    let text = from(&lab.server, move || {
        let mut s = TcpStream::connect(("127.0.0.1", PROXY_PORT)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&raw).unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    });
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains(&format!("\"x-real-ip\": \"{PROXIED_CLIENT}\"")),
        "{text}"
    );

    // Body limit: 413 before anything reaches the upstream.
    let t = h1.clone();
    let big = Req {
        method: "POST",
        body: vec![b'x'; 2048],
        ..keyed("/upload", GOOD_KEY)
    };
    let a = from(&lab.good, move || https::once(tls_addr, &t, big)).unwrap();
    assert_eq!(a.status, 413, "{a:?}");

    // Header limit: 431. A slow upstream: 504 after upstream_response.
    let t = h1.clone();
    let huge = keyed("/big-head", GOOD_KEY).header("x-padding", &"p".repeat(MIN_HEADER_BYTES * 2));
    let a = from(&lab.good, move || https::once(tls_addr, &t, huge)).unwrap();
    assert_eq!(a.status, 431, "{a:?}");
    let t = h1.clone();
    let asked = Instant::now();
    let a = from(&lab.good, move || {
        https::once(tls_addr, &t, keyed("/slow", GOOD_KEY))
    })
    .unwrap();
    assert_eq!(a.status, 504, "{a:?}");
    assert!(
        asked.elapsed() < Duration::from_millis(2900),
        "{:?}",
        asked.elapsed()
    );

    // A connection that sends nothing is closed after the idle timeout.
    let header_only = raw_proxy_v2_request(PROXIED_CLIENT, Ipv4Addr::LOCALHOST, "");
    let silent = from(&lab.server, move || {
        let mut s = TcpStream::connect(("127.0.0.1", PROXY_PORT)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(IDLE_SECS * 5)))
            .unwrap();
        s.write_all(&header_only).unwrap();
        let opened = Instant::now();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(usize::MAX);
        (n, opened.elapsed())
    });
    assert_eq!(silent.0, 0, "the server closed the idle connection");
    assert!(
        silent.1 >= Duration::from_millis(IDLE_SECS * 1000 - 200)
            && silent.1 < Duration::from_secs(IDLE_SECS * 3),
        "closed after {:?}",
        silent.1
    );

    // Quota: two requests an hour, the third is 429 with Retry-After and RateLimit headers.
    let t = h2.clone();
    let answers = from(&lab.good, move || {
        https::session(tls_addr, &t, &vec![keyed("/q", TIGHT_KEY); 3], |_| {})
    })
    .unwrap();
    assert_eq!(
        answers.iter().map(|a| a.status).collect::<Vec<_>>(),
        [200, 200, 429]
    );
    let throttled = &answers[2];
    assert!(throttled.header("retry-after").is_some(), "{throttled:?}");
    assert!(
        throttled.header("ratelimit-policy").is_some(),
        "{throttled:?}"
    );

    // JWT with keys from the JWKS URL; `alg: none` refused; rotation picked up by kid.
    let bearer = |t: &str| Req::get("/jwt").header("authorization", &format!("Bearer {t}"));
    let t = h1.clone();
    let (tok1, tok2) = (token(&k1, "jwt-user"), token(&k2, "jwt-user-2"));
    let none_tok = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(format!(
            r#"{{"iss":"{ISSUER}","aud":"{SERVER_NAME}","sub":"x","exp":9999999999}}"#
        ))
    );
    let batch = vec![bearer(&tok1), bearer(&none_tok)];
    let a = from(&lab.good, move || {
        https::session(tls_addr, &t, &batch, |_| {})
    })
    .unwrap();
    assert_eq!(a[0].status, 200, "{:?}\n{}", a[0], daemon.log());
    assert_eq!(
        upstream_saw(&a[0])["headers"]["x-auth-identity"],
        "jwt-user"
    );
    assert_eq!(a[1].status, 401, "{:?}", a[1]);
    assert!(a[1].header("www-authenticate").is_some());
    publish_jwks(&jwks_dir, &[&k2]);
    std::thread::sleep(Duration::from_millis(1200));
    let t = h1.clone();
    let batch = vec![bearer(&tok2), bearer(&tok1)];
    let a = from(&lab.good, move || {
        https::session(tls_addr, &t, &batch, |_| {})
    })
    .unwrap();
    assert_eq!(
        a[0].status,
        200,
        "rotated key: {:?}\n{}",
        a[0],
        daemon.log()
    );
    assert_eq!(
        upstream_saw(&a[0])["headers"]["x-auth-identity"],
        "jwt-user-2"
    );
    assert_eq!(a[1].status, 401, "the retired key: {:?}", a[1]);

    // SIGHUP with an HTTP/2 connection open: the new key works on that same connection.
    let t = h2.clone();
    let batch = vec![keyed("/before", GOOD_KEY), keyed("/after", ADDED_KEY)];
    let policy_path = policy_file.clone();
    let a = from(&lab.good, move || {
        https::session(tls_addr, &t, &batch, |i| {
            if i == 1 {
                std::fs::write(&policy_path, policy(true)).unwrap();
                // SAFETY: kill(2) with the daemon's own pid, which this test started.
                let rc = unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGHUP) };
                assert_eq!(rc, 0);
                std::thread::sleep(Duration::from_millis(800));
            }
        })
    })
    .unwrap();
    assert_eq!(a[0].status, 200);
    assert_eq!(
        a[1].status,
        200,
        "after reload on the same connection: {:?}\n{}",
        a[1],
        daemon.log()
    );
    assert_eq!(
        upstream_saw(&a[1])["headers"]["x-auth-identity"],
        "added-client"
    );

    // The abuser: five wrong keys → 401s → blocked in the kernel, origin `gateway`.
    let bad_ip = lab.bad.v4.to_string();
    let t = h1.clone();
    let offended = Instant::now();
    let a = from(&lab.bad, move || {
        https::session(
            tls_addr,
            &t,
            &vec![keyed("/", "ak_wrong_guess_000000000000000"); 5],
            |_| {},
        )
    })
    .unwrap();
    assert!(a.iter().all(|a| a.status == 401), "{a:?}");
    let listed = loop {
        let entry = daemon
            .list(Some("blocked"))
            .into_iter()
            .find(|e| e["net"] == format!("{bad_ip}/32"));
        if let Some(e) = entry {
            break e;
        }
        assert!(
            offended.elapsed() < Duration::from_secs(5),
            "never blocked:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(listed["origin"], "gateway", "{listed}");
    let t = h1.clone();
    let next = from(&lab.bad, move || {
        https::once(tls_addr, &t, keyed("/", GOOD_KEY))
    });
    assert!(next.is_err(), "the blocked client still connects: {next:?}");
    let t = h1.clone();
    let good = from(&lab.good, move || {
        https::once(tls_addr, &t, keyed("/still", GOOD_KEY))
    })
    .unwrap();
    assert_eq!(good.status, 200);

    // The escalation, as the metrics saw it.
    let m = scrape(&daemon.netns, METRICS);
    const LATENCY: &str = "api_shield_gateway_escalation_latency_seconds";
    let rule = [("rule", "auth_failures")];
    let count = m.histogram_count(LATENCY, &rule);
    assert_eq!(count, 1, "escalations");
    let seconds = m.get(&format!("{LATENCY}_sum"), &rule);
    eprintln!(
        "gateway escalation: offending request to kernel entry {:.1} ms (mean of {count})",
        seconds * 1000.0 / f64::from(u32::try_from(count).unwrap())
    );
    let proxied = m.sum(
        "api_shield_gateway_requests_total",
        &[("listener", "proxy")],
    );
    assert!(proxied >= 15, "proxy requests counted: {proxied}");
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `check-config` reads what the gateway would: the policy and its routes' upstreams, the
/// certificates; each problem named, exit 2.
#[test]
fn check_config_reads_the_policy_and_certificates() {
    let dir = std::env::temp_dir().join(format!("api-shield-gwcheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[[routes]]\nname = \"orders\"\npath_prefix = \"/orders\"\n",
    )
    .unwrap();
    let cfg = dir.join("cfg.toml");
    let write_cfg = |extra: &str| {
        std::fs::write(
            &cfg,
            format!(
                "run_as = \"{RUN_AS}\"\n[gateway]\npolicy_file = \"{}\"\n{extra}\
                 [[gateway.listeners]]\nlisten = \"127.0.0.1:8443\"\n\
                 tls_cert = \"{d}/missing.pem\"\ntls_key = \"{d}/missing.key\"\n",
                policy.display(),
                d = dir.display()
            ),
        )
        .unwrap();
    };
    let check = || {
        let out = Command::new(tests::daemon::binary())
            .arg("check-config")
            .arg(&cfg)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    write_cfg("");
    let (code, err) = check();
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("policy route `orders` has no upstream"),
        "{err}"
    );
    write_cfg("default_upstream = \"http://127.0.0.1:8081\"\n");
    let (code, err) = check();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("missing.pem"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
