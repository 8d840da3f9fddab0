//! Connection admission: deadlines and limits before `hello` (spec §17, `RW-SEC-11`
//! to `RW-SEC-14`). Each deadline is proven with the others set far beyond the test's
//! wait, so only the one under test can close the connection.

use std::{net::SocketAddr, sync::atomic::Ordering, time::Instant};

use runwire_server::{RunningServer, ServerConfig};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::common::{Client, WAIT, config, start};

/// Far beyond `WAIT`: a deadline set to this cannot close a connection in a test.
const NEVER_MS: u64 = 600_000;

/// Every admission deadline far away; tests shorten the one they prove.
fn far() -> ServerConfig {
    ServerConfig {
        header_timeout_ms: NEVER_MS,
        handshake_timeout_ms: NEVER_MS,
        body_timeout_ms: NEVER_MS,
        keep_alive_timeout_ms: NEVER_MS,
        ..config()
    }
}

/// A raw TCP connection to the server, from `from` (a loopback address).
async fn raw_from(server: &RunningServer, from: [u8; 4]) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    s.bind(SocketAddr::from((from, 0))).expect("bind");
    s.connect(server.local_addr()).await.expect("connect")
}

async fn raw(server: &RunningServer) -> TcpStream {
    raw_from(server, [127, 0, 0, 1]).await
}

/// Reads until the server closes the connection (EOF or reset); fails after `WAIT`.
/// Returns what was read and when the close came.
async fn until_closed(s: &mut TcpStream) -> (String, Instant) {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the server closes the connection");
    (String::from_utf8_lossy(&got).into_owned(), Instant::now())
}

/// Reads one HTTP response head and body (`Content-Length` framed); fails after `WAIT`.
async fn response(s: &mut TcpStream) -> String {
    let read = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "closed before a response: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().expect("length"))
                    })
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    return text;
                }
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("a response")
}

#[tokio::test]
async fn rw_sec_11_a_silent_socket_is_closed_after_the_header_deadline() {
    let server = start(ServerConfig {
        header_timeout_ms: 300,
        ..far()
    })
    .await;
    let mut s = raw(&server).await;
    let opened = Instant::now();
    let (_, closed) = until_closed(&mut s).await;
    assert!(closed - opened >= std::time::Duration::from_millis(250));
    server.shutdown().await;
}

#[tokio::test]
async fn rw_sec_11_half_a_request_head_is_closed_after_the_header_deadline() {
    let server = start(ServerConfig {
        header_timeout_ms: 300,
        ..far()
    })
    .await;
    let mut s = raw(&server).await;
    s.write_all(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: web")
        .await
        .expect("write");
    let (got, _) = until_closed(&mut s).await;
    assert!(!got.contains(" 101 "), "no upgrade on half a head: {got}");
    server.shutdown().await;
}

#[tokio::test]
async fn rw_sec_11_a_silent_socket_is_closed_after_the_handshake_deadline() {
    let server = start(ServerConfig {
        handshake_timeout_ms: 300,
        ..far()
    })
    .await;
    let mut s = raw(&server).await;
    until_closed(&mut s).await;
    assert_eq!(
        server.metrics().handshake_timeouts.load(Ordering::Relaxed),
        1,
        "counted in runwire_handshake_timeouts_total"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_deadline() {
    let server = start(ServerConfig {
        keep_alive_timeout_ms: 300,
        ..far()
    })
    .await;
    let mut s = raw(&server).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let r = response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // A second request on the same connection is served: it is kept alive.
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let r = response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let (rest, _) = until_closed(&mut s).await;
    assert!(rest.is_empty(), "closed without another answer: {rest}");
    server.shutdown().await;
}

#[tokio::test]
async fn rw_sec_14_an_oversize_content_length_is_refused_before_the_body() {
    let server = start(ServerConfig {
        max_request_bytes: 1000,
        ..far()
    })
    .await;
    let mut s = raw(&server).await;
    // Only the head: the server must answer without waiting for the 1001 bytes.
    s.write_all(
        b"POST /v1/runs/r1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1001\r\n\r\n",
    )
    .await
    .expect("write");
    let r = response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert!(r.contains("\"code\":\"invalid_request\""), "{r}");
    server.shutdown().await;
}

#[tokio::test]
async fn rw_sec_13_a_body_that_does_not_arrive_in_time_is_answered_408() {
    let server = start(ServerConfig {
        body_timeout_ms: 300,
        ..far()
    })
    .await;
    let mut s = raw(&server).await;
    s.write_all(
        b"POST /v1/runs/r1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"events\":",
    )
    .await
    .expect("write");
    let r = response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    assert!(r.contains("\"code\":\"invalid_request\""), "{r}");
    assert_eq!(server.metrics().body_timeouts.load(Ordering::Relaxed), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn rw_sec_12_over_the_pre_hello_limit_a_connection_gets_503_with_retry_after() {
    let server = start(ServerConfig {
        max_pre_hello_per_address: 2,
        ..far()
    })
    .await;
    let _held = [raw(&server).await, raw(&server).await];
    let mut third = raw(&server).await;
    let (got, _) = until_closed(&mut third).await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(
        got.to_ascii_lowercase().contains("\r\nretry-after: "),
        "{got}"
    );
    assert!(got.contains("\"code\":\"server_overloaded\""), "{got}");
    let m = server.metrics();
    assert_eq!(m.refused_pre_hello_limit.load(Ordering::Relaxed), 1);
    assert_eq!(m.refused_connection_limit.load(Ordering::Relaxed), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn rw_sec_12_over_the_connection_limit_a_connection_gets_503_with_retry_after() {
    let server = start(ServerConfig {
        max_connections: 2,
        ..far()
    })
    .await;
    let mut a = Client::connect(&server).await;
    a.hello(json!([])).await;
    let _held = raw_from(&server, [127, 0, 0, 2]).await;
    let mut third = raw_from(&server, [127, 0, 0, 3]).await;
    let (got, _) = until_closed(&mut third).await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(
        got.to_ascii_lowercase().contains("\r\nretry-after: "),
        "{got}"
    );
    assert_eq!(
        server
            .metrics()
            .refused_connection_limit
            .load(Ordering::Relaxed),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn rw_sec_12_a_fresh_client_gets_welcome_while_an_address_holds_its_limit() {
    let server = start(ServerConfig {
        max_pre_hello_per_address: 4,
        ..far()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(raw_from(&server, [127, 0, 0, 2]).await);
    }
    // The address's next connection is refused at once, not held.
    let mut over = raw_from(&server, [127, 0, 0, 2]).await;
    let (got, _) = until_closed(&mut over).await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    // Another client is served as usual.
    let mut c = Client::connect(&server).await;
    c.hello(json!([])).await;
    server.shutdown().await;
}

#[tokio::test]
async fn rw_sec_12_a_connection_that_sent_hello_no_longer_counts_as_pre_hello() {
    let server = start(ServerConfig {
        max_pre_hello_per_address: 2,
        ..far()
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut c = Client::connect(&server).await;
        c.hello(json!([])).await;
        clients.push(c);
    }
    // And plain HTTP clients stop counting at their first request head.
    let mut a = raw(&server).await;
    let mut b = raw(&server).await;
    for s in [&mut a, &mut b] {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        assert!(response(s).await.starts_with("HTTP/1.1 200"));
    }
    let mut c = Client::connect(&server).await;
    c.hello(json!([])).await;
    server.shutdown().await;
}
