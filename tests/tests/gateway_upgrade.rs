//! What the TLS gateway does with requests that are not plain request/response exchanges, in
//! the namespace lab with the real daemon: request bodies over `max_body_bytes` get 413 on
//! HTTP/2 as on HTTP/1.1, declared or streamed; WebSocket upgrades are decided like any request
//! (401 without a key, 429 over quota, and then the upstream never sees them) and, when
//! allowed, spliced through to a real WebSocket echo server, until the idle timeout.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tests::daemon::{Daemon, KERNEL_QUIET};
use tests::https::{self, Req, Tls};
use tests::netns::{Lab, in_netns};
use tests::pki::pki_for;
use tests::proc::Proc;
use tungstenite::client::IntoClientRequest;
use tungstenite::{HandshakeError, Message};

const TLS_PORT: u16 = 8443;
const HTTP_UPSTREAM_PORT: u16 = 8081;
const WS_UPSTREAM_PORT: u16 = 8082;
const SERVER_NAME: &str = "api.test";
const GOOD_KEY: &str = "ak_upgrade_good_client_0123456789";
const TIGHT_KEY: &str = "ak_upgrade_tight_client_012345678";
const RUN_AS: &str = "nobody";
const NOBODY_UID: u32 = 65534;
const MAX_BODY: usize = 1024;
const IDLE_SECS: u64 = 2;
/// Every socket operation of the test's clients and servers ends within this.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The test's WebSocket server serves at most this many connections.
const MAX_WS_CONNECTIONS: usize = 16;

/// Reads each request's body, declared or chunked, and answers how long it was.
const HTTP_UPSTREAM_PY: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                n += len(self.rfile.read(size)) if size else 0
                self.rfile.readline()
                if size == 0:
                    break
        else:
            n = len(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        out = str(n).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

fn policy() -> String {
    let hash = api_shield::policy::apikey::hash_api_key;
    format!(
        r#"
unmatched = "deny"
[[api_keys]]
hash = "{good}"
identity = "good-client"
plan = "roomy"
[[api_keys]]
hash = "{tight}"
identity = "tight-client"
plan = "tiny"
[plans.roomy]
rate = [{{ name = "burst", rate = 1000, per = "1s", burst = 1000 }}]
[plans.tiny]
rate = [{{ name = "hourly", rate = 2, per = "1h", burst = 2 }}]
[[routes]]
name = "ws"
path_prefix = "/ws"
auth = ["api_key"]
[[routes]]
name = "api"
path_prefix = "/"
auth = ["api_key"]
[detector]
auth_failures = {{ count = 1000, within = "10s", ttl = "60s" }}
"#,
        good = hash(GOOD_KEY),
        tight = hash(TIGHT_KEY),
    )
}

/// A WebSocket echo server (tungstenite) on loopback in a lab namespace, counting the
/// connections it accepted; stopped and joined on drop.
struct EchoServer {
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    fn start(netns: &str) -> EchoServer {
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopping) = (Arc::clone(&accepted), Arc::clone(&stop));
        let listener = in_netns(netns, || {
            let l = TcpListener::bind(("127.0.0.1", WS_UPSTREAM_PORT)).expect("bind echo");
            l.set_nonblocking(true).unwrap();
            l
        })
        .join()
        .unwrap();
        let thread = std::thread::spawn(move || {
            let mut served = Vec::new();
            while !stopping.load(Ordering::Relaxed) && served.len() < MAX_WS_CONNECTIONS {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        served.push(std::thread::spawn(move || echo(stream)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            for t in served {
                let _ = t.join();
            }
        });
        EchoServer {
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// Echoes every text or binary message until the peer closes or goes quiet.
fn echo(stream: TcpStream) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    while let Ok(msg) = ws.read() {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).is_err() {
            break;
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The lab, its upstreams and the daemon, removed in this order on drop.
struct Setup {
    daemon: Daemon,
    echo: EchoServer,
    _http_upstream: Proc,
    dir: std::path::PathBuf,
    lab: Lab,
    pki_ca: String,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_port(netns: &str, port: u16) {
    let up = in_netns(netns, move || {
        let deadline = Instant::now() + IO_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    });
    assert!(up.join().unwrap(), "nothing listens on port {port}");
}

fn setup() -> Setup {
    let lab = Lab::new();
    let dir = std::env::temp_dir().join(format!("api-shield-gwupgrade-{}", lab.id));
    std::fs::create_dir_all(&dir).unwrap();
    let pki = pki_for(SERVER_NAME);
    let file = |name: &str| dir.join(name);
    std::fs::write(file("server.pem"), &pki.server_cert).unwrap();
    std::fs::write(file("server.key"), &pki.server_key).unwrap();
    std::os::unix::fs::chown(file("server.key"), Some(NOBODY_UID), None).unwrap();
    std::fs::write(file("policy.toml"), policy()).unwrap();
    std::fs::write(file("upstream.py"), HTTP_UPSTREAM_PY).unwrap();
    let http_upstream = Proc {
        name: "http upstream",
        child: Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.server.netns))
            .arg("python3")
            .arg(file("upstream.py"))
            .arg(HTTP_UPSTREAM_PORT.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the http upstream"),
    };
    let echo = EchoServer::start(&lab.server.netns);
    wait_port(&lab.server.netns, HTTP_UPSTREAM_PORT);
    let server = lab.server.v4;
    let daemon = Daemon::start(
        &lab,
        &format!(
            "run_as = \"{RUN_AS}\"\n{KERNEL_QUIET}[gateway]\ncheck_listen = \"127.0.0.1:9382\"\n\
             policy_file = \"{policy}\"\n\
             default_upstream = \"http://127.0.0.1:{HTTP_UPSTREAM_PORT}\"\n\
             upstreams = {{ ws = \"http://127.0.0.1:{WS_UPSTREAM_PORT}\" }}\n\
             [gateway.limits]\nmax_body_bytes = {MAX_BODY}\n\
             [gateway.timeouts]\nidle = \"{IDLE_SECS}s\"\n\
             [[gateway.listeners]]\nlisten = \"{server}:{TLS_PORT}\"\n\
             tls_cert = \"{cert}\"\ntls_key = \"{key}\"\n",
            policy = file("policy.toml").display(),
            cert = file("server.pem").display(),
            key = file("server.key").display(),
        ),
    );
    let setup = Setup {
        daemon,
        echo,
        _http_upstream: http_upstream,
        dir,
        lab,
        pki_ca: pki.ca_pem,
    };
    // Ready: an unauthenticated request is answered 401 (and spends nothing).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let tls = setup.tls(false);
        let addr = setup.addr();
        let a = in_netns(&setup.lab.good.netns, move || {
            https::once(addr, &tls, Req::get("/ready"))
        })
        .join()
        .unwrap();
        if matches!(&a, Ok(a) if a.status == 401) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway not ready: {a:?}\n{}",
            setup.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    setup
}

impl Setup {
    fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.lab.server.v4), TLS_PORT)
    }

    fn tls(&self, http2: bool) -> Tls {
        Tls {
            ca_pem: self.pki_ca.clone(),
            server_name: SERVER_NAME.into(),
            client: None,
            http2,
        }
    }
}

fn upload(len: usize, unsized_body: bool) -> Req {
    Req {
        method: "POST",
        body: vec![b'x'; len],
        unsized_body,
        ..Req::get("/upload").header("x-api-key", GOOD_KEY)
    }
}

/// `curl` posting `file` (declared with `--data-binary`, or streamed with `-T`): its exit code
/// and the status it reports (`000` when it got none).
fn curl_post(s: &Setup, http: &str, upload: &str, file: &Path) -> (Option<i32>, String) {
    let data = match upload {
        "--data-binary" => format!("@{}", file.display()),
        _ => file.display().to_string(),
    };
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", s.lab.good.netns))
        .args(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["--max-time", &IO_TIMEOUT.as_secs().to_string(), http])
        .arg("--cacert")
        .arg(s.dir.join("ca.pem"))
        .arg("--resolve")
        .arg(format!("{SERVER_NAME}:{TLS_PORT}:{}", s.lab.server.v4))
        .args([
            "-H",
            &format!("x-api-key: {GOOD_KEY}"),
            "-X",
            "POST",
            upload,
            &data,
        ])
        .arg(format!("https://{SERVER_NAME}:{TLS_PORT}/upload"))
        .output()
        .expect("run curl");
    (
        out.status.code(),
        format!(
            "{} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    )
}

#[test]
fn an_oversize_body_gets_413_on_http2_as_on_http1() {
    let s = setup();
    // curl reports a reset HTTP/2 stream as a framing error, not the 413 sent before it.
    std::fs::write(s.dir.join("ca.pem"), &s.pki_ca).unwrap();
    let big = s.dir.join("big");
    std::fs::write(&big, vec![b'x'; MAX_BODY * 256]).unwrap();
    for http in ["--http2", "--http1.1"] {
        for upload in ["--data-binary", "-T"] {
            let (code, out) = curl_post(&s, http, upload, &big);
            assert_eq!(
                (code, out.starts_with("413 ")),
                (Some(0), true),
                "curl {http} {upload}: {out}\n{}",
                s.daemon.log()
            );
        }
    }
    let over = MAX_BODY * 4;
    for (http2, unsized_body) in [(true, false), (true, true), (false, true), (false, false)] {
        let (addr, tls) = (s.addr(), s.tls(http2));
        let batch = vec![
            upload(over, unsized_body),
            upload(MAX_BODY / 2, unsized_body),
        ];
        let answers = in_netns(&s.lab.good.netns, move || {
            // Each on its own connection: a 413 may end an HTTP/1.1 connection.
            batch
                .into_iter()
                .map(|r| https::once(addr, &tls, r))
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap();
        let what = format!("http2={http2} unsized={unsized_body}");
        let too_big = answers[0].as_ref().unwrap_or_else(|e| {
            panic!("{what}: oversize body: no answer ({e})\n{}", s.daemon.log())
        });
        assert_eq!(too_big.status, 413, "{what}: {too_big:?}");
        let fits = answers[1]
            .as_ref()
            .unwrap_or_else(|e| panic!("{what}: small body: {e}"));
        assert_eq!(
            (fits.status, fits.body.as_str()),
            (200, (MAX_BODY / 2).to_string().as_str()),
            "{what}: {fits:?}"
        );
    }
}

/// A WebSocket client over the gateway's TLS, from the lab's good host: the handshake's
/// outcome, and with a socket, the echo of `message`, then how long the gateway kept an idle
/// tunnel open.
#[derive(Debug)]
enum WsOutcome {
    Refused(u16),
    Echoed {
        echo: String,
        idle_closed_after: Option<Duration>,
    },
}

fn websocket(s: &Setup, key: Option<&str>, message: &'static str, wait_idle: bool) -> WsOutcome {
    let (addr, tls) = (s.addr(), s.tls(false));
    let key = key.map(str::to_owned);
    in_netns(&s.lab.good.netns, move || {
        let config = Arc::new(https::client_config(&tls).unwrap());
        let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let stream = rustls::StreamOwned::new(conn, tcp);
        let mut req = format!("wss://{SERVER_NAME}/ws/echo")
            .into_client_request()
            .unwrap();
        if let Some(k) = key {
            req.headers_mut().insert("x-api-key", k.parse().unwrap());
        }
        let mut ws = match tungstenite::client::client(req, stream) {
            Ok((ws, resp)) => {
                assert_eq!(resp.status(), 101);
                ws
            }
            Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                return WsOutcome::Refused(resp.status().as_u16());
            }
            Err(e) => panic!("WebSocket handshake: {e}"),
        };
        ws.send(Message::text(message)).unwrap();
        let echo = ws.read().unwrap().into_text().unwrap().to_string();
        let idle_closed_after = wait_idle.then(|| {
            let quiet = Instant::now();
            // The gateway closes the silent tunnel: the read ends (closed or reset), well
            // before our own timeout.
            let _ = ws.read();
            quiet.elapsed()
        });
        WsOutcome::Echoed {
            echo,
            idle_closed_after,
        }
    })
    .join()
    .unwrap()
}

#[test]
fn websocket_upgrades_are_decided_then_proxied_to_the_upstream() {
    let s = setup();

    // No key: 401 at the upgrade, nothing reaches the upstream.
    let before = s.echo.accepted();
    let outcome = websocket(&s, None, "hello", false);
    assert!(matches!(outcome, WsOutcome::Refused(401)), "{outcome:?}");
    let outcome = websocket(&s, Some("ak_wrong_key_00000000000000000000"), "x", false);
    assert!(matches!(outcome, WsOutcome::Refused(401)), "{outcome:?}");
    assert_eq!(
        s.echo.accepted(),
        before,
        "a refused upgrade reached the upstream"
    );

    // A valid key: the real echo server answers through the gateway.
    let outcome = websocket(&s, Some(GOOD_KEY), "hello through the shield", true);
    let WsOutcome::Echoed {
        echo,
        idle_closed_after,
    } = outcome
    else {
        panic!("{outcome:?}\n{}", s.daemon.log());
    };
    assert_eq!(echo, "hello through the shield");
    assert_eq!(s.echo.accepted(), before + 1);
    // The idle timeout applies to the tunnel.
    let idle = idle_closed_after.unwrap();
    assert!(
        idle >= Duration::from_millis(IDLE_SECS * 1000 - 300)
            && idle < Duration::from_secs(IDLE_SECS * 3),
        "idle tunnel closed after {idle:?}"
    );

    // The quota is spent by upgrades too: two an hour, the third is 429.
    let outcomes: Vec<WsOutcome> = (0..3)
        .map(|_| websocket(&s, Some(TIGHT_KEY), "metered", false))
        .collect();
    assert!(
        matches!(
            outcomes.as_slice(),
            [
                WsOutcome::Echoed { .. },
                WsOutcome::Echoed { .. },
                WsOutcome::Refused(429)
            ]
        ),
        "{outcomes:?}"
    );
    assert_eq!(s.echo.accepted(), before + 3);

    // CONNECT is refused with a clear status rather than forwarded.
    let (addr, tls) = (s.addr(), s.tls(false));
    let text = in_netns(&s.lab.good.netns, move || {
        let config = Arc::new(https::client_config(&tls).unwrap());
        let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        write!(
            stream,
            "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\nX-Api-Key: {GOOD_KEY}\r\n\r\n"
        )
        .unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .join()
    .unwrap();
    assert!(text.starts_with("HTTP/1.1 501"), "{text}");
}
