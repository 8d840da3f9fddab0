//! Every `reconnecting` state change says why the attempt or session ended and which
//! attempt comes next, out of how many (`RW-RECONNECT-1`, `RW-RECONNECT-3`); the
//! `reconnect_failed` report repeats the last cause.

use runwire_client::{Client, ClientConfig, ClientErrorCode, ClientEvent, ConnectionState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::*;

const SEED: u64 = 11;

fn fast(url: String, max_attempts: u32) -> ClientConfig {
    let mut c = ClientConfig::new(url);
    c.seed = Some(SEED);
    c.backoff.base_ms = 1;
    c.backoff.cap_ms = 4;
    c.backoff.max_attempts = max_attempts;
    c
}

/// A port nothing listens on: bound to port 0, then released.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_refused_connection_is_named_with_its_address_and_the_next_attempt() {
    let port = closed_port().await;
    let mut client = Client::connect(fast(format!("ws://127.0.0.1:{port}/v1/stream"), 3));
    let evs = collect_until(&mut client, is_terminal_error).await;
    let reconnects: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            ClientEvent::State(s) if s.state == ConnectionState::Reconnecting => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(reconnects.len(), 2, "{evs:#?}");
    for (i, s) in reconnects.iter().enumerate() {
        assert_eq!(
            s.cause.as_deref(),
            Some(format!("connection refused by 127.0.0.1:{port}").as_str())
        );
        assert_eq!(s.attempt, Some(u32::try_from(i).unwrap() + 1));
        assert_eq!(s.max_attempts, Some(3));
        assert!(s.delay.is_some());
    }
    let Some(ClientEvent::Error(e)) = evs.last() else {
        panic!("{evs:#?}")
    };
    assert_eq!(e.code, ClientErrorCode::ReconnectFailed);
    assert!(
        e.message.contains("connection refused by 127.0.0.1"),
        "{}",
        e.message
    );
}

/// Something that is not a Runwire server answers the upgrade with HTTP 404.
#[tokio::test]
async fn an_http_answer_to_the_upgrade_is_named() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let mut client = Client::connect(fast(format!("ws://{addr}/wrong"), 2));
    let evs = collect_until(&mut client, |e| is_state(e, ConnectionState::Reconnecting)).await;
    let Some(ClientEvent::State(s)) = evs.last() else {
        panic!("{evs:#?}")
    };
    let cause = s.cause.as_deref().unwrap_or_default();
    assert!(cause.contains(&format!("{addr} answered")), "{cause}");
    assert!(cause.contains("HTTP 404"), "{cause}");
}

/// A server that closes with 1012 after an error frame: both are in the cause.
#[tokio::test]
async fn a_close_code_and_error_frame_are_the_cause() {
    let server = TestServer::start(|mut c| async move {
        c.hello().await;
        c.welcome(10_000).await;
        if c.index > 0 {
            c.drain().await;
            return;
        }
        let mut e = runwire_protocol::ErrorFrame::new(
            runwire_protocol::ErrorCode::Other("x_restarting".into()),
            "going down",
        );
        e.close_code = Some(1012);
        e.retryable = true;
        c.error(e).await;
        c.close(1012).await;
    })
    .await;
    let mut client = Client::connect(server.config(SEED));
    let evs = collect_until(&mut client, |e| is_state(e, ConnectionState::Reconnecting)).await;
    let Some(ClientEvent::State(s)) = evs.last() else {
        panic!("{evs:#?}")
    };
    let cause = s.cause.as_deref().unwrap_or_default();
    assert!(cause.contains("x_restarting: going down"), "{cause}");
    assert!(cause.contains("1012"), "{cause}");
    client.handle().close();
}
