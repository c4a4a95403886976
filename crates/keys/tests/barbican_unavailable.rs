//! Barbican down, silent, failing or refusing: typed errors within the
//! configured timeout and retries, no panic, nothing half-done. These tests
//! use local stand-ins on 127.0.0.1, not a real Barbican.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rekey_keys::{BarbicanConfig, ErrorKind, KeyBytes, KeyId, KeyManager, KeyManagerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_millis(300);
const RETRIES: u32 = 2;
const BACKOFF: Duration = Duration::from_millis(20);

async fn client(port: u16) -> Arc<dyn KeyManager> {
    let config = KeyManagerConfig::Barbican(
        BarbicanConfig::new(format!("http://127.0.0.1:{port}"))
            .with_timeout(TIMEOUT)
            .with_retries(RETRIES, BACKOFF),
    );
    rekey_keys::open_key_manager(&config).await.unwrap()
}

/// The longest any call may take: every attempt times out, plus backoffs,
/// plus generous slack for a loaded machine. Without a working timeout the
/// calls below would hang forever.
fn bound() -> Duration {
    TIMEOUT * (RETRIES + 1) + BACKOFF * 8 + Duration::from_secs(10)
}

fn some_id() -> KeyId {
    KeyId::parse(&uuid::Uuid::new_v4().to_string()).unwrap()
}

/// A listener that accepts connections, counts them, and never answers.
async fn silent_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(sock);
        }
    });
    (port, accepted)
}

/// A tiny HTTP server answering every request with `status` and `body`,
/// counting requests.
async fn fixed_answer(status: &'static str, body: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then whatever body Content-Length announces.
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(answer.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (port, requests)
}

#[tokio::test]
async fn closed_port_is_unavailable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let km = client(port).await;
    let p = common::project("down");
    let start = Instant::now();
    let err = km.get_key(&p, &some_id()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.to_string().to_lowercase().contains("refused"),
        "the cause says why: {err}"
    );
    assert!(err.to_string().contains("3 attempts"), "it retried: {err}");
    let err = km
        .store_key(&p, &KeyBytes::random(32).unwrap(), "aes", 256)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let err = km.create_key(&p, "aes", 256).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(
        km.list(&p).await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    assert_eq!(
        km.exists(&p, &some_id()).await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    assert_eq!(
        km.delete_key(&p, &some_id()).await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    assert!(
        start.elapsed() < bound() * 6,
        "six calls took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn silent_server_times_out_and_reads_are_retried() {
    let (port, accepted) = silent_listener().await;
    let km = client(port).await;
    let p = common::project("slow");
    let start = Instant::now();
    let err = km.get_key(&p, &some_id()).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.to_string().contains("timed out"),
        "the cause says why: {err}"
    );
    assert!(
        took >= TIMEOUT * (RETRIES + 1),
        "each attempt waited for the timeout: {took:?}"
    );
    assert!(
        took < bound(),
        "gave up within timeout and retries: {took:?}"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        RETRIES as usize + 1,
        "one connection per attempt"
    );
}

#[tokio::test]
async fn silent_server_store_is_not_resent() {
    // A POST that timed out may have created a secret; resending would leave
    // a second one behind, so it is tried once.
    let (port, accepted) = silent_listener().await;
    let km = client(port).await;
    let p = common::project("slowpost");
    let start = Instant::now();
    let err = km
        .store_key(&p, &KeyBytes::random(32).unwrap(), "aes", 256)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(start.elapsed() < bound());
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "the POST was sent once");
}

#[tokio::test]
async fn service_unavailable_is_retried_then_typed() {
    let (port, requests) = fixed_answer(
        "503 Service Unavailable",
        r#"{"code": 503, "title": "Service Unavailable", "description": "db down"}"#,
    )
    .await;
    let km = client(port).await;
    let p = common::project("503");
    let err = km.get_key(&p, &some_id()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.to_string().contains("503") && err.to_string().contains("db down"),
        "{err}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), RETRIES as usize + 1);
    // 503 means the request was not served, so even a POST is retried.
    requests.store(0, Ordering::SeqCst);
    let err = km
        .store_key(&p, &KeyBytes::random(32).unwrap(), "aes", 256)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(requests.load(Ordering::SeqCst), RETRIES as usize + 1);
}

#[tokio::test]
async fn internal_error_on_store_is_not_resent() {
    let (port, requests) = fixed_answer("500 Internal Server Error", "{}").await;
    let km = client(port).await;
    let p = common::project("500");
    let err = km
        .store_key(&p, &KeyBytes::random(32).unwrap(), "aes", 256)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn client_errors_map_to_kinds_without_retry() {
    let cases = [
        ("404 Not Found", ErrorKind::NotFound),
        ("403 Forbidden", ErrorKind::Forbidden),
        ("401 Unauthorized", ErrorKind::Forbidden),
        ("400 Bad Request", ErrorKind::Invalid),
    ];
    for (status, kind) in cases {
        let (port, requests) = fixed_answer(
            status,
            r#"{"code": 4, "title": "t", "description": "nope"}"#,
        )
        .await;
        let km = client(port).await;
        let err = km
            .get_key(&common::project("4xx"), &some_id())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), kind, "{status}: {err}");
        assert_eq!(
            requests.load(Ordering::SeqCst),
            1,
            "{status} is not retried"
        );
    }
}

#[tokio::test]
async fn garbage_answers_are_protocol_errors() {
    let (port, _) = fixed_answer("201 Created", "this is not json").await;
    let km = client(port).await;
    let err = km
        .store_key(
            &common::project("garbage"),
            &KeyBytes::random(32).unwrap(),
            "aes",
            256,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other, "{err}");
    let (port, _) = fixed_answer(
        "201 Created",
        r#"{"secret_ref": "http://x/v1/secrets/not-a-uuid"}"#,
    )
    .await;
    let km = client(port).await;
    let err = km
        .store_key(
            &common::project("garbage"),
            &KeyBytes::random(32).unwrap(),
            "aes",
            256,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other, "{err}");
}

#[tokio::test]
async fn bad_configuration_is_invalid() {
    for url in ["", "not a url", "ftp://127.0.0.1:9311", "http://"] {
        let config = KeyManagerConfig::Barbican(BarbicanConfig::new(url));
        let err = rekey_keys::open_key_manager(&config).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{url:?}: {err}");
    }
}
