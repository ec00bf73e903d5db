use std::fs;

use serde_json::json;

use super::client::Client;
use super::{Server, TOKEN};
use crate::push::PushConfig;

const OK: u16 = 200;

#[tokio::test]
async fn serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.path().join("push.crt");
    let key = dir.path().join("push.key");
    fs::write(&cert, generated.cert.pem()).unwrap();
    fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let server = Server::start(PushConfig {
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..PushConfig::default()
    })
    .await;

    let client = Client::tls(server.addr, generated.cert.der().clone());
    assert_eq!(client.get("/healthz", None).await.status, OK);
    let reply = client
        .post(
            "/v1/lists/feed/batch",
            Some(TOKEN),
            &json!({"revision": 0, "add": [{"net": "198.18.0.0/24"}]}),
        )
        .await;
    assert_eq!(reply.status, OK, "{reply:?}");
    assert_eq!(reply.json()["revision"], 1);

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        plain_attempt(server.addr),
    )
    .await
    .unwrap();
    assert!(!plain.starts_with(b"HTTP/"), "{plain:?}");
    server.stop().await;
}

async fn plain_attempt(addr: std::net::SocketAddr) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received).await;
    received
}
