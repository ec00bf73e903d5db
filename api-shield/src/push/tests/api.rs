use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::client::Extra;
use super::{Server, TOKEN};
use crate::push::{BatchError, PushBackend, PushConfig, PushError, Token, serve};

const OK: u16 = 200;
const BAD_REQUEST: u16 = 400;
const UNAUTHORIZED: u16 = 401;
const NOT_FOUND: u16 = 404;
const METHOD_NOT_ALLOWED: u16 = 405;
const CONFLICT: u16 = 409;
const PAYLOAD_TOO_LARGE: u16 = 413;
const INTERNAL: u16 = 500;
const INSUFFICIENT_STORAGE: u16 = 507;
const BATCH: &str = "/v1/lists/feed/batch";
const LIST: &str = "/v1/lists/feed";
/// One past the longest list name `valid_list_name` accepts.
const LONG_NAME: usize = 65;

fn nets(list: &Value) -> Vec<&str> {
    list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["net"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn health_needs_no_token() {
    let server = Server::plain().await;
    let reply = server.client().get("/healthz", None).await;
    assert_eq!(reply.status, OK);
    assert_eq!(reply.json(), json!({"status": "ok"}));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    server.stop().await;
}

#[tokio::test]
async fn requests_without_the_right_token_are_refused() {
    let server = Server::plain().await;
    let client = server.client();
    let batch = json!({"revision": 0, "add": [{"net": "198.18.0.1"}]});
    for token in [None, Some("wrong-token"), Some("")] {
        for reply in [
            client.post(BATCH, token, &batch).await,
            client.get(LIST, token).await,
            client.get("/v1/lists", token).await,
        ] {
            assert_eq!(reply.status, UNAUTHORIZED, "{token:?}: {reply:?}");
            assert!(
                reply
                    .header("www-authenticate")
                    .unwrap()
                    .starts_with("Bearer "),
                "{reply:?}"
            );
            let body = reply.json();
            assert_eq!(body["error"], "unauthorized");
            // The answer never echoes what was presented.
            assert!(!String::from_utf8_lossy(&reply.body).contains("wrong-token"));
        }
    }
    let wrong = client.get(LIST, Some("wrong-token")).await;
    assert!(
        wrong
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    // Another scheme is no token at all.
    let basic = client
        .send(
            "GET",
            LIST,
            Extra {
                headers: vec![format!("Authorization: Basic {TOKEN}")],
                ..Extra::default()
            },
        )
        .await;
    assert_eq!(basic.status, UNAUTHORIZED);
    assert_eq!(server.backend.applies(), 0);
    assert_eq!(client.get(LIST, Some(TOKEN)).await.status, OK);
    server.stop().await;
}

#[tokio::test]
async fn one_bad_entry_changes_nothing() {
    let server = Server::plain().await;
    let client = server.client();
    let reply = client
        .post(
            BATCH,
            Some(TOKEN),
            &json!({
                "revision": 0,
                "add": [
                    {"net": "198.18.0.1"},
                    {"net": "198.18.1.0/24", "ttl_secs": 600, "reason": "scanner"},
                    {"net": "2001:db8::/48"},
                    {"net": "198.18.0.7/24"},
                    {"net": "198.18.2.1"},
                ],
                "remove": ["198.18.9.9"],
            }),
        )
        .await;
    assert_eq!(reply.status, BAD_REQUEST);
    let body = reply.json();
    assert_eq!(body["error"], "invalid_entry");
    assert_eq!(body["field"], "add");
    assert_eq!(body["index"], 3);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("add[3]: `198.18.0.7/24` has host bits set")
            && message.contains("198.18.0.0/24"),
        "{message}"
    );

    for (bad, field, index) in [
        (
            json!({"revision": 0, "remove": ["198.18.0.1", "fe80::1%eth0"]}),
            "remove",
            1,
        ),
        (
            json!({"revision": 0, "add": [{"net": "198.18.0.1", "ttl_secs": 0}]}),
            "add",
            0,
        ),
        (
            json!({"revision": 0, "add": [{"net": "198.18.0.1"}, {"net": "198.18.0.2", "reason": "a\u{1b}[2J"}]}),
            "add",
            1,
        ),
    ] {
        let body = client.post(BATCH, Some(TOKEN), &bad).await.json();
        assert_eq!(
            (
                body["error"].as_str(),
                body["field"].as_str(),
                body["index"].as_u64()
            ),
            (Some("invalid_entry"), Some(field), Some(index)),
            "{body}"
        );
    }

    assert_eq!(server.backend.applies(), 0, "the backend was never asked");
    let list = client.get(LIST, Some(TOKEN)).await.json();
    assert_eq!(list, json!({"revision": 0, "entries": []}));
    server.stop().await;
}

#[tokio::test]
async fn concurrent_writers_of_one_revision_conflict() {
    let server = Server::plain().await;
    let client = server.client();
    let first = json!({"revision": 0, "add": [{"net": "198.18.0.1"}]});
    let second = json!({"revision": 0, "add": [{"net": "198.18.0.2"}]});
    let (a, b) = tokio::join!(
        client.post(BATCH, Some(TOKEN), &first),
        client.post(BATCH, Some(TOKEN), &second)
    );
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [OK, CONFLICT], "{a:?} {b:?}");
    let (won, lost) = if a.status == OK { (a, b) } else { (b, a) };
    assert_eq!(won.json()["revision"], 1);
    let conflict = lost.json();
    assert_eq!(conflict["error"], "revision_conflict");
    assert_eq!(conflict["current_revision"], 1);
    assert_eq!(server.backend.applies(), 2);

    // The loser re-reads and retries.
    let current = client.get(LIST, Some(TOKEN)).await.json()["revision"].clone();
    let retry = json!({"revision": current, "add": [{"net": "198.18.0.3"}]});
    assert_eq!(
        client.post(BATCH, Some(TOKEN), &retry).await.json()["revision"],
        2
    );
    server.stop().await;
}

#[tokio::test]
async fn adds_removes_and_lists() {
    let server = Server::plain().await;
    let client = server.client();
    let reply = client
        .post(
            BATCH,
            Some(TOKEN),
            &json!({
                "revision": 0,
                "add": [
                    {"net": "198.18.0.0/24", "ttl_secs": 600, "reason": "scanner"},
                    {"net": "198.18.9.9"},
                    {"net": "2001:db8::1"},
                ],
            }),
        )
        .await;
    assert_eq!(reply.status, OK, "{reply:?}");
    assert_eq!(
        reply.json(),
        json!({"revision": 1, "added": 3, "removed": 0})
    );

    let reply = client
        .post(
            BATCH,
            Some(TOKEN),
            &json!({"revision": 1, "add": [{"net": "198.18.5.5"}], "remove": ["198.18.9.9"]}),
        )
        .await;
    assert_eq!(
        reply.json(),
        json!({"revision": 2, "added": 1, "removed": 1})
    );

    let list = client.get(LIST, Some(TOKEN)).await.json();
    assert_eq!(list["revision"], 2);
    assert_eq!(
        nets(&list),
        ["198.18.0.0/24", "198.18.5.5/32", "2001:db8::1/128"]
    );
    assert_eq!(list["entries"][0]["ttl_secs"], 600);
    assert_eq!(list["entries"][0]["reason"], "scanner");

    let lists = client.get("/v1/lists", Some(TOKEN)).await.json();
    assert_eq!(lists, json!([{"name": "feed", "revision": 2, "size": 3}]));
    assert_eq!(
        server.backend.actors(),
        ["push:127.0.0.1", "push:127.0.0.1"]
    );
    server.stop().await;
}

#[tokio::test]
async fn oversize_batches_and_bodies_are_refused() {
    const MAX_BATCH: usize = 3;
    let cfg = PushConfig {
        max_batch: MAX_BATCH,
        ..PushConfig::default()
    };
    let limit = cfg.body_limit();
    let server = Server::start(cfg).await;
    let client = server.client();

    let too_many = json!({
        "revision": 0,
        "add": [{"net": "198.18.0.1"}, {"net": "198.18.0.2"}],
        "remove": ["198.18.0.3", "198.18.0.4"],
    });
    let reply = client.post(BATCH, Some(TOKEN), &too_many).await;
    assert_eq!(reply.status, PAYLOAD_TOO_LARGE);
    assert_eq!(reply.json()["error"], "batch_too_large");

    // Valid JSON, padded past the limit with whitespace.
    let mut padded = serde_json::to_vec(&json!({"revision": 0})).unwrap();
    padded.splice(1..1, std::iter::repeat_n(b' ', limit));
    for chunked in [false, true] {
        let reply = client
            .send(
                "POST",
                BATCH,
                Extra {
                    token: Some(TOKEN),
                    body: Some(padded.clone()),
                    chunked,
                    ..Extra::default()
                },
            )
            .await;
        assert_eq!(reply.status, PAYLOAD_TOO_LARGE, "chunked: {chunked}");
        assert_eq!(reply.json()["error"], "body_too_large");
    }
    assert_eq!(server.backend.applies(), 0);

    // Exactly max_batch entries pass.
    let full = json!({"revision": 0, "add": [{"net": "198.18.0.1"}, {"net": "198.18.0.2"}], "remove": ["198.18.0.3"]});
    assert_eq!(client.post(BATCH, Some(TOKEN), &full).await.status, OK);
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_wrong_methods_and_bad_bodies() {
    let server = Server::plain().await;
    let client = server.client();
    for path in ["/", "/v2/lists", "/v1/lists/feed/entries", "/healthz/"] {
        let reply = client.get(path, Some(TOKEN)).await;
        assert_eq!(reply.status, NOT_FOUND, "{path}");
        assert_eq!(reply.json()["error"], "not_found");
    }

    let reply = client.get(BATCH, Some(TOKEN)).await;
    assert_eq!(reply.status, METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("POST"));
    assert_eq!(reply.json()["error"], "method_not_allowed");
    let reply = client.post(LIST, Some(TOKEN), &json!({})).await;
    assert_eq!(reply.status, METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET"));
    let reply = client.send("DELETE", "/healthz", Extra::default()).await;
    assert_eq!(reply.status, METHOD_NOT_ALLOWED);

    for name in [".hidden", "a%2Fb", &"n".repeat(LONG_NAME)] {
        let reply = client
            .post(
                &format!("/v1/lists/{name}/batch"),
                Some(TOKEN),
                &json!({"revision": 0}),
            )
            .await;
        assert_eq!(reply.status, BAD_REQUEST, "{name}");
        assert_eq!(reply.json()["error"], "invalid_list_name");
    }

    for bad in [
        json!([]),
        json!({"add": []}),
        json!({"revision": -1}),
        json!({"revision": 0, "replace": true}),
    ] {
        let reply = client.post(BATCH, Some(TOKEN), &bad).await;
        assert_eq!(reply.status, BAD_REQUEST, "{bad}");
        assert_eq!(reply.json()["error"], "invalid_request", "{bad}");
    }
    let reply = client
        .send(
            "POST",
            BATCH,
            Extra {
                token: Some(TOKEN),
                body: Some(b"{\"revision\": 0,".to_vec()),
                ..Extra::default()
            },
        )
        .await;
    assert_eq!(reply.json()["error"], "invalid_request");
    assert_eq!(server.backend.applies(), 0);
    server.stop().await;
}

#[tokio::test]
async fn backend_refusals_become_statuses() {
    let server = Server::plain().await;
    let client = server.client();
    let batch = json!({"revision": 0, "add": [{"net": "198.18.0.1"}]});
    for (refusal, status, code) in [
        (
            BatchError::Invalid("covers a management prefix".into()),
            BAD_REQUEST,
            "invalid_batch",
        ),
        (
            BatchError::Capacity("the rule table is full".into()),
            INSUFFICIENT_STORAGE,
            "capacity_exceeded",
        ),
        (
            BatchError::Internal("map update failed".into()),
            INTERNAL,
            "internal",
        ),
    ] {
        let message = refusal.to_string();
        server.backend.refuse_next(refusal);
        let reply = client.post(BATCH, Some(TOKEN), &batch).await;
        assert_eq!(reply.status, status);
        assert_eq!(reply.json(), json!({"error": code, "message": message}));
    }
    // An entry the lockout guard refused is named like a malformed one.
    let refusal = BatchError::Lockout {
        index: 0,
        message: "0.0.0.0/0 covers 198.18.0.1, an address of this host".into(),
    };
    let message = refusal.to_string();
    assert!(message.starts_with("add[0]: 0.0.0.0/0"), "{message}");
    server.backend.refuse_next(refusal);
    let reply = client.post(BATCH, Some(TOKEN), &batch).await;
    assert_eq!(reply.status, BAD_REQUEST);
    assert_eq!(
        reply.json(),
        json!({"error": "invalid_entry", "message": message, "field": "add", "index": 0})
    );
    assert_eq!(client.post(BATCH, Some(TOKEN), &batch).await.status, OK);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    const APPLY_TIME: Duration = Duration::from_millis(300);
    const POLL: Duration = Duration::from_millis(5);
    let server = Server::plain().await;
    server.backend.slow_down(APPLY_TIME);
    let client = server.client();
    let batch = json!({"revision": 0, "add": [{"net": "198.18.0.1"}]});
    let in_flight = tokio::spawn(async move { client.post(BATCH, Some(TOKEN), &batch).await });
    while server.backend.applies() == 0 {
        tokio::time::sleep(POLL).await;
    }
    let backend = std::sync::Arc::clone(&server.backend);
    let started = Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() >= APPLY_TIME / 2,
        "serve returned before the request finished"
    );
    assert_eq!(in_flight.await.unwrap().status, OK);
    assert_eq!(backend.revision("feed"), (1, 1));
}

#[tokio::test]
async fn serve_refuses_bad_settings_before_binding() {
    let cfg = PushConfig {
        max_batch: 0,
        ..PushConfig::default()
    };
    let token = Token::new(TOKEN.to_owned()).unwrap();
    let backend = std::sync::Arc::new(super::fake::FakeBackend::default());
    let err = serve(&cfg, token, backend, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, PushError::Config(_)), "{err}");
}
