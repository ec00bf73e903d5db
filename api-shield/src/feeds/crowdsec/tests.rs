use super::decisions::tests::{decision, stream_json};
use super::*;
use crate::lists::ListEntry;
use ipnet::IpNet;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---- backoff -------------------------------------------------------------------------

#[test]
fn backoff_doubles_from_one_second_up_to_the_interval() {
    let interval = Duration::from_secs(10);
    let bases: Vec<u64> = (1..=7)
        .map(|f| backoff_base(f, interval).as_secs())
        .collect();
    assert_eq!(bases, vec![1, 2, 4, 8, 10, 10, 10]);
    assert_eq!(backoff_base(u32::MAX, interval), interval);
    assert_eq!(backoff_base(0, interval), INITIAL_BACKOFF);
    let short = Duration::from_millis(300);
    assert_eq!(
        backoff_base(1, short),
        short,
        "never longer than the interval"
    );
}

#[test]
fn jitter_stays_within_half_to_whole_base() {
    let base = Duration::from_secs(8);
    assert_eq!(jittered(base, 0.0), base);
    assert_eq!(jittered(base, 1.0), base / 2);
    assert_eq!(
        jittered(base, 7.0),
        base / 2,
        "out-of-range draws are clamped"
    );
    for failures in 1..64 {
        let d = backoff(failures, DEFAULT_INTERVAL);
        let b = backoff_base(failures, DEFAULT_INTERVAL);
        assert!(
            d <= b && d >= b / 2 && d <= DEFAULT_INTERVAL,
            "{failures}: {d:?}"
        );
    }
}

// ---- the loop against a scripted local API -------------------------------------------

/// Every sink call, in order.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
}

impl FeedSink for Recorder {
    fn replace(&self, origin: &str, _: &str, entries: Vec<ListEntry>) -> Result<(), SinkError> {
        let nets: Vec<String> = entries.iter().map(|e| e.net.to_string()).collect();
        self.calls
            .lock()
            .unwrap()
            .push(format!("replace {origin} [{}]", nets.join(" ")));
        Ok(())
    }

    fn update(
        &self,
        origin: &str,
        _: &str,
        add: Vec<ListEntry>,
        remove: Vec<IpNet>,
    ) -> Result<(), SinkError> {
        let add: Vec<String> = add.iter().map(|e| e.net.to_string()).collect();
        let remove: Vec<String> = remove.iter().map(ToString::to_string).collect();
        self.calls.lock().unwrap().push(format!(
            "update {origin} +[{}] -[{}]",
            add.join(" "),
            remove.join(" ")
        ));
        Ok(())
    }
}

/// One scripted answer: the status and body for a request whose `startup` is as given.
struct Scripted {
    startup: bool,
    status: u16,
    body: String,
    /// Sent with `Content-Length`; without, the body ends when the connection closes.
    announce_length: bool,
}

/// A feed run by `run_unchecked` on the test's runtime, with key `sekrit`, into a [`Recorder`].
struct Running {
    recorder: Arc<Recorder>,
    health: SharedHealth,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(cfg: CrowdsecConfig) -> Self {
        let recorder = Arc::new(Recorder::default());
        let health: SharedHealth = Arc::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_unchecked(
            cfg,
            "sekrit".into(),
            recorder.clone(),
            health.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            recorder,
            health,
            stop,
            task,
        }
    }

    fn calls(&self) -> Vec<String> {
        self.recorder.calls.lock().unwrap().clone()
    }

    fn health(&self) -> FeedHealth {
        self.health.lock().unwrap().clone()
    }

    /// Waits until `done` holds (five seconds at most), then stops the feed and returns its
    /// sink calls and health.
    async fn stop_once(self, done: impl Fn(&Self) -> bool) -> (Vec<String>, FeedHealth) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done(&self) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the feed stops")
            .unwrap();
        let calls = self.recorder.calls.lock().unwrap().clone();
        let health = self.health.lock().unwrap().clone();
        (calls, health)
    }
}

/// Serves `script` in order, one request per connection, and records the requests.
async fn fake_lapi(script: Vec<Scripted>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        for step in script {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed early");
                head.extend_from_slice(&buf[..n]);
            }
            let head = String::from_utf8(head).unwrap();
            assert!(head.contains("x-api-key: sekrit\r\n"), "{head}");
            let line = head.lines().next().unwrap().to_string();
            assert_eq!(
                line.contains("startup=true"),
                step.startup,
                "request {line} out of script"
            );
            seen.push(line);
            let length = if step.announce_length {
                format!("Content-Length: {}\r\n", step.body.len())
            } else {
                String::new()
            };
            let reply = format!(
                "HTTP/1.1 {} X\r\nContent-Type: application/json\r\n{length}\
                 Connection: close\r\n\r\n{}",
                step.status, step.body
            );
            // A client that stopped reading an answer over its cap may have closed.
            if conn.write_all(reply.as_bytes()).await.is_ok() {
                let _ = conn.shutdown().await;
            }
        }
        seen
    });
    (url, server)
}

#[tokio::test]
async fn the_loop_resyncs_after_errors_without_clearing() {
    let ok = |startup, body: String| Scripted {
        startup,
        status: 200,
        body,
        announce_length: true,
    };
    let script = vec![
        ok(
            true,
            stream_json(&[decision(1, "Ip", "198.18.9.5", "ban", "1h")], &[]),
        ),
        ok(
            false,
            stream_json(&[decision(2, "Range", "198.18.10.0/24", "ban", "1h")], &[]),
        ),
        ok(false, stream_json(&[], &[])),
        Scripted {
            startup: false,
            status: 500,
            body: r#"{"message":"database is locked"}"#.into(),
            announce_length: true,
        },
        Scripted {
            startup: true,
            status: 403,
            body: r#"{"message":"access forbidden"}"#.into(),
            announce_length: true,
        },
        ok(
            true,
            stream_json(&[decision(2, "Range", "198.18.10.0/24", "ban", "1h")], &[]),
        ),
    ];
    let steps = script.len();
    let (url, server) = fake_lapi(script).await;
    let cfg = CrowdsecConfig {
        url,
        interval: Duration::from_millis(50),
        ..CrowdsecConfig::new("/unused".into())
    };
    let feed = Running::start(cfg);
    let seen = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the feed went through the script")
        .unwrap();
    assert_eq!(seen.len(), steps);
    // Let the last answer reach the sink, then stop.
    let (calls, h) = feed.stop_once(|f| f.calls().len() >= 3).await;
    assert_eq!(
        calls,
        vec![
            "replace crowdsec [198.18.9.5/32]",
            "update crowdsec +[198.18.10.0/24] -[]",
            "replace crowdsec [198.18.10.0/24]",
        ]
    );
    assert_eq!(h.errors_total, 2);
    assert_eq!(h.syncs_total, 4);
    assert!(!h.degraded);
    let last = h.last_error.expect("the last error is kept");
    assert!(last.contains("403") && !last.contains("sekrit"), "{last}");
}

#[tokio::test]
async fn an_answer_over_the_cap_changes_nothing_and_malformed_decisions_are_counted() {
    let cap = config::MIN_ANSWER_BYTES;
    let valid = decision(1, "Ip", "198.18.9.5", "ban", "1h");
    let padding = ",{}".repeat(usize::try_from(cap).unwrap());
    let script = vec![
        Scripted {
            startup: true,
            status: 200,
            body: format!(r#"{{"new":[{valid}{padding}]}}"#),
            announce_length: true,
        },
        Scripted {
            startup: true,
            status: 200,
            body: format!(r#"{{"new":[{valid}{padding}]}}"#),
            announce_length: false,
        },
        Scripted {
            startup: true,
            status: 200,
            body: format!(r#"{{"new":[{valid},{{}},7,{{"value":[]}}],"deleted":null}}"#),
            announce_length: true,
        },
    ];
    let (url, server) = fake_lapi(script).await;
    let cfg = CrowdsecConfig {
        url,
        interval: Duration::from_millis(50),
        max_answer_bytes: cap,
        ..CrowdsecConfig::new("/unused".into())
    };
    let feed = Running::start(cfg);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the feed went through the script")
        .unwrap();
    let (calls, h) = feed.stop_once(|f| !f.calls().is_empty()).await;
    assert_eq!(
        calls,
        vec!["replace crowdsec [198.18.9.5/32]"],
        "the oversized answer was not applied"
    );
    // Refused once by its announced length, once while it was read.
    assert_eq!(h.errors_total, 2, "{h:?}");
    assert!(
        h.last_error
            .as_deref()
            .is_some_and(|e| e.contains("max_answer_bytes")),
        "{h:?}"
    );
    // `{}` (no fields), 7 (no object) and a value of the wrong type.
    assert_eq!(h.malformed_skipped_total, 3, "{h:?}");
}

#[tokio::test]
async fn an_unreachable_lapi_degrades_health_and_touches_nothing() {
    // A port nothing listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = CrowdsecConfig {
        url: format!("http://127.0.0.1:{port}"),
        interval: Duration::from_millis(50),
        ..CrowdsecConfig::new("/unused".into())
    };
    let feed = Running::start(cfg);
    let (calls, h) = feed.stop_once(|f| f.health().errors_total >= 2).await;
    assert!(
        h.degraded && h.errors_total >= 2 && h.syncs_total == 0,
        "{h:?}"
    );
    assert!(h.last_error.unwrap().contains(&port.to_string()));
    assert!(calls.is_empty());
}

#[tokio::test]
async fn an_invalid_config_is_reported_not_run() {
    let health: SharedHealth = Arc::default();
    let cfg = CrowdsecConfig {
        url: "https://127.0.0.1:8080".into(),
        ..CrowdsecConfig::new("/k".into())
    };
    run(
        cfg,
        "k".into(),
        Arc::new(Recorder::default()),
        health.clone(),
        std::future::pending(),
    )
    .await;
    let h = health.lock().unwrap().clone();
    assert!(h.degraded && h.last_error.unwrap().contains("https"));
}
