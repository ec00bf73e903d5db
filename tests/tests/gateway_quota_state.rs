//! Quota counters survive daemon restarts: the real daemon with its TLS gateway in a namespace
//! lab, a daily quota partly used, then a graceful stop (SIGTERM: the shutdown save) and a
//! SIGKILL after a periodic save; each time the restarted daemon continues the count instead
//! of refilling it. The daemon runs as `nobody`, and a symlink planted at the temporary file's
//! name does not redirect its write.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::daemon::{Daemon, KERNEL_QUIET};
use tests::https::{self, Answer, Req, Tls};
use tests::netns::{Lab, in_netns};
use tests::pki::pki_for;
use tests::proc::Proc;

const TLS_PORT: u16 = 8443;
const UPSTREAM_PORT: u16 = 8081;
const SERVER_NAME: &str = "api.test";
const KEY: &str = "ak_quota_state_client_0123456789";
const DAILY: u64 = 6;
const RUN_AS: &str = "nobody";
const NOBODY_UID: u32 = 65534;
/// Long enough that no periodic save happens during the graceful phase.
const NEVER: &str = "1h";
const OFTEN: &str = "1s";
/// How long a periodic save may take to show on disk.
const SAVE_WAIT: Duration = Duration::from_secs(10);

fn policy() -> String {
    format!(
        r#"
unmatched = "deny"
[[api_keys]]
hash = "{hash}"
identity = "metered-client"
plan = "metered"
[plans.metered]
quota = [{{ name = "daily", limit = {DAILY}, window = "day" }}]
rate = [{{ name = "burst", rate = 100, per = "1s", burst = 100 }}]
[[routes]]
name = "api"
path_prefix = "/"
auth = ["api_key"]
"#,
        hash = api_shield::policy::apikey::hash_api_key(KEY)
    )
}

fn gateway_config(dir: &Path, server: IpAddr, save_interval: &str) -> String {
    format!(
        "run_as = \"{RUN_AS}\"\n{KERNEL_QUIET}[gateway]\ncheck_listen = \"127.0.0.1:9382\"\n\
         policy_file = \"{policy}\"\ndefault_upstream = \"http://127.0.0.1:{UPSTREAM_PORT}\"\n\
         [gateway.quota_state]\nsave_interval = \"{save_interval}\"\n\
         [[gateway.listeners]]\nlisten = \"{server}:{TLS_PORT}\"\n\
         tls_cert = \"{cert}\"\ntls_key = \"{key}\"\n",
        policy = dir.join("policy.toml").display(),
        cert = dir.join("server.pem").display(),
        key = dir.join("server.key").display(),
    )
}

/// Rewrites the daemon's config, keeping the paths `Daemon::start` put first.
fn set_save_interval(daemon: &Daemon, dir: &Path, server: IpAddr, save_interval: &str) {
    let text = std::fs::read_to_string(&daemon.config).unwrap();
    let head: String = text
        .lines()
        .take_while(|l| !l.starts_with("run_as"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        &daemon.config,
        head + &gateway_config(dir, server, save_interval),
    )
    .unwrap();
}

/// `r` of the `daily` item of `RateLimit`.
fn daily_remaining(a: &Answer) -> Option<u64> {
    a.header("ratelimit")?
        .split(',')
        .find(|item| item.trim_start().starts_with("\"daily\""))?
        .split(';')
        .find_map(|p| p.trim().strip_prefix("r="))?
        .parse()
        .ok()
}

struct Client {
    lab_ns: String,
    addr: SocketAddr,
    tls: Tls,
}

impl Client {
    /// `n` requests on one connection; their statuses and the last answer.
    fn send(&self, n: usize) -> Vec<Answer> {
        let (addr, tls) = (self.addr, self.tls.clone());
        let batch = vec![Req::get("/metered").header("x-api-key", KEY); n];
        in_netns(&self.lab_ns, move || {
            https::session(addr, &tls, &batch, |_| {})
        })
        .join()
        .expect("client thread")
        .expect("gateway answered")
    }

    /// Waits until the gateway answers, without spending quota (no credential: 401).
    fn wait_ready(&self, daemon: &Daemon) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (addr, tls) = (self.addr, self.tls.clone());
            let answer = in_netns(&self.lab_ns, move || {
                https::once(addr, &tls, Req::get("/ready"))
            })
            .join()
            .expect("client thread");
            if matches!(&answer, Ok(a) if a.status == 401) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready: {answer:?}\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn saved_count(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let saved: serde_json::Value = serde_json::from_str(&text).ok()?;
    saved["slots"]
        .as_array()?
        .iter()
        .find(|s| s["limit"] == "plan/metered/daily")?["count"]
        .as_u64()
}

/// The test's own files, removed also when it panics.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_daily_quota_continues_across_graceful_and_crash_restarts() {
    let lab = Lab::new();
    let temp = TempDir(std::env::temp_dir().join(format!("api-shield-gwquota-{}", lab.id)));
    let dir = temp.0.clone();
    std::fs::create_dir_all(&dir).unwrap();
    let pki = pki_for(SERVER_NAME);
    for (name, text) in [
        ("server.pem", &pki.server_cert),
        ("server.key", &pki.server_key),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    std::os::unix::fs::chown(dir.join("server.key"), Some(NOBODY_UID), None).unwrap();
    std::fs::write(dir.join("policy.toml"), policy()).unwrap();
    // What the upstream (a static file server) answers `/metered` with.
    std::fs::write(dir.join("metered"), "ok").unwrap();
    let _upstream = Proc {
        name: "upstream",
        child: Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.server.netns))
            .args(["python3", "-m", "http.server", "--protocol", "HTTP/1.1"])
            .args(["--bind", "127.0.0.1"])
            .arg(UPSTREAM_PORT.to_string())
            .arg("--directory")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the upstream"),
    };
    let upstream_up = in_netns(&lab.server.netns, || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", UPSTREAM_PORT)).is_err() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    });
    assert!(upstream_up.join().unwrap(), "the upstream did not start");
    let server = IpAddr::V4(lab.server.v4);
    let mut daemon = Daemon::start(&lab, &gateway_config(&dir, server, NEVER));
    let saved = daemon
        .dir
        .join("state")
        .join(&daemon.iface)
        .join("quotas.json");
    let client = Client {
        lab_ns: lab.good.netns.clone(),
        addr: SocketAddr::new(server, TLS_PORT),
        tls: Tls {
            ca_pem: pki.ca_pem.clone(),
            server_name: SERVER_NAME.into(),
            client: None,
            http2: false,
        },
    };
    client.wait_ready(&daemon);

    // Two of six used; nothing saved yet (the interval is an hour).
    let answers = client.send(2);
    assert_eq!(daily_remaining(&answers[1]), Some(DAILY - 2), "{answers:?}");
    assert!(!saved.exists(), "saved before the shutdown");

    // The service user plants a link at the temporary file's name, aiming at a root file.
    let canary = dir.join("canary");
    std::fs::write(&canary, "root's file").unwrap();
    let state_dir = saved.parent().unwrap();
    std::os::unix::fs::symlink(&canary, state_dir.join("quotas.json.tmp")).unwrap();

    // Graceful stop: the shutdown save keeps the count.
    assert!(daemon.stop(), "SIGTERM: {}", daemon.log());
    assert_eq!(saved_count(&saved), Some(2), "{}", daemon.log());
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "root's file");
    assert!(!state_dir.join("quotas.json.tmp").exists());
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&saved).unwrap());
    assert_eq!(owner, NOBODY_UID, "written by the unprivileged daemon");

    set_save_interval(&daemon, &dir, server, OFTEN);
    daemon.spawn();
    client.wait_ready(&daemon);
    let answers = client.send(1);
    assert_eq!(
        daily_remaining(&answers[0]),
        Some(DAILY - 3),
        "refilled by a graceful restart: {answers:?}\n{}",
        daemon.log()
    );

    // A crash after the periodic save: the count on disk is the count served.
    let deadline = Instant::now() + SAVE_WAIT;
    while saved_count(&saved) != Some(3) {
        assert!(
            Instant::now() < deadline,
            "no periodic save: {:?}\n{}",
            saved_count(&saved),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.kill9();
    daemon.spawn();
    client.wait_ready(&daemon);
    let answers = client.send(4);
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "refilled by a crash: {answers:?}\n{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("quota counters restored"),
        "{}",
        daemon.log()
    );
    drop(daemon);
}
