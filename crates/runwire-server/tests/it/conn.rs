//! Connection lifecycle, version negotiation and heartbeat (spec §5, §6, §11).

use runwire_protocol::ServerMessage;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn rw_conn_3_hello_timeout_closes_4108() {
    let mut c = config();
    c.hello_timeout_ms = 100;
    let s = start(c).await;
    let mut cl = Client::connect(&s).await;
    let e = cl.expect_error_close("hello_timeout", 4108).await;
    assert!(e.retryable);
}

#[tokio::test]
async fn rw_conn_6_rw_conn_7_welcome_first_and_announces_the_config() {
    let mut c = config();
    c.heartbeat_interval_ms = 1234;
    c.pong_timeout_ms = 567;
    c.batch_window_ms = 0;
    c.replay_window_events = 42;
    c.max_subscriptions = 7;
    let s = start(c).await;
    let mut cl = Client::connect(&s).await;
    let w = cl.hello(json!([{"run_id": "r1"}])).await;
    assert_eq!(w.version, "1.0");
    assert_eq!(w.heartbeat_interval_ms, 1234);
    assert_eq!(w.pong_timeout_ms, 567);
    assert_eq!(w.batch_window_ms, 0);
    assert_eq!(w.replay_window_events, 42);
    assert_eq!(w.limits.max_subscriptions, 7);
    assert_eq!(w.limits.max_frame_bytes, 65536);
    assert!(!w.session_id.is_empty());
    // hello.subscriptions open right after welcome (RW-CONN-5).
    match cl.msg().await {
        ServerMessage::Subscribed(sub) => assert_eq!(sub.run_id.as_str(), "r1"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn rw_conn_9_session_ids_are_unique() {
    let s = start(config()).await;
    let mut a = Client::connect(&s).await;
    let mut b = Client::connect(&s).await;
    assert_ne!(
        a.hello(json!([])).await.session_id,
        b.hello(json!([])).await.session_id
    );
}

#[tokio::test]
async fn rw_version_2_picks_the_highest_common_version() {
    let s = start(config()).await;
    let mut cl = Client::connect(&s).await;
    cl.send(json!({"type": "hello", "versions": ["0.9", "1.0", "7.3"]}))
        .await;
    match cl.msg().await {
        ServerMessage::Welcome(w) => assert_eq!(w.version, "1.0"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn rw_version_3_unsupported_version_error_lists_supported_then_4002() {
    let s = start(config()).await;
    let mut cl = Client::connect(&s).await;
    cl.send(json!({"type": "hello", "versions": ["2.0"], "subscriptions": [{"run_id": "r"}]}))
        .await;
    let e = cl.expect_error_close("unsupported_version", 4002).await;
    assert!(!e.retryable);
    assert_eq!(e.supported_versions, Some(vec!["1.0".to_owned()]));
}

#[tokio::test]
async fn rw_heart_1_server_pings_and_answered_pongs_keep_the_connection() {
    let mut c = config();
    c.heartbeat_interval_ms = 30;
    c.pong_timeout_ms = 500;
    let s = start(c).await;
    let mut cl = Client::connect(&s).await;
    cl.hello(json!([])).await;
    let mut ids = Vec::new();
    while ids.len() < 4 {
        match cl.recv().await {
            Frame::Msg(ServerMessage::Ping(p)) => {
                cl.send(json!({"type": "pong", "id": p.id})).await;
                ids.push(p.id);
            }
            other => panic!("{other:?}"),
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 4, "each ping has its own id");
    // Still open: a client ping is answered.
    assert!(cl.sync("still-here").await.is_empty());
}

#[tokio::test]
async fn rw_heart_3_missing_pong_closes_4102() {
    let mut c = config();
    c.heartbeat_interval_ms = 30;
    c.pong_timeout_ms = 60;
    let s = start(c).await;
    let mut cl = Client::connect(&s).await;
    cl.hello(json!([])).await;
    let e = loop {
        match cl.recv().await {
            Frame::Msg(ServerMessage::Ping(_)) => {}
            Frame::Msg(ServerMessage::Error(e)) => break e,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(e.code.as_str(), "pong_timeout");
    assert_eq!(e.close_code, Some(4102));
    assert!(e.retryable);
    assert!(matches!(cl.recv().await, Frame::Close(Some(4102), _)));
    assert_eq!(
        s.metrics()
            .pong_timeouts
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn rw_heart_client_ping_gets_pong_with_same_id() {
    let s = start(config()).await;
    let mut cl = Client::connect(&s).await;
    cl.hello(json!([])).await;
    cl.send(json!({"type": "ping", "id": "abc-1"})).await;
    match cl.msg().await {
        ServerMessage::Pong(p) => assert_eq!(p.id, "abc-1"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn rw_conn_10_new_connection_starts_without_subscriptions() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    let mut a = Client::connect(&s).await;
    a.hello(json!([{"run_id": "r"}])).await;
    assert!(matches!(a.msg().await, ServerMessage::Subscribed(_)));
    drop(a);
    let mut b = Client::connect(&s).await;
    b.hello(json!([])).await;
    p.progress("r", 3).await;
    assert!(
        b.sync("x").await.is_empty(),
        "no events without a subscription"
    );
}

#[tokio::test]
async fn rw_heart_1_pings_continue_while_earlier_pings_are_unanswered() {
    let mut c = config();
    c.heartbeat_interval_ms = 40;
    c.pong_timeout_ms = 400;
    let s = start(c).await;
    let mut cl = Client::connect(&s).await;
    cl.hello(json!([])).await;
    let mut pings = Vec::new();
    let e = loop {
        match cl.recv().await {
            Frame::Msg(ServerMessage::Ping(p)) => pings.push(p.id),
            Frame::Msg(ServerMessage::Error(e)) => break e,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(e.code.as_str(), "pong_timeout");
    assert!(pings.len() >= 3, "pings every interval, got {pings:?}");
    // Answering the latest ping would have answered all earlier ones.
    let mut c = config();
    c.heartbeat_interval_ms = 40;
    c.pong_timeout_ms = 400;
    let s = start(c).await;
    let mut cl = Client::connect(&s).await;
    cl.hello(json!([])).await;
    let mut seen = 0;
    while seen < 15 {
        if let Frame::Msg(ServerMessage::Ping(p)) = cl.recv().await {
            seen += 1;
            if seen % 3 == 0 {
                cl.send(json!({"type": "pong", "id": p.id})).await;
            }
        } else {
            panic!("only pings expected");
        }
    }
}

#[tokio::test]
async fn rw_close_1_client_close_is_answered_without_error_and_frees_the_connection() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
    let mut c = config();
    c.close_timeout_ms = 60_000;
    let s = start(c).await;
    let mut cl = Client::connect(&s).await;
    cl.hello(json!([{"run_id": "bye"}])).await;
    assert!(matches!(cl.msg().await, ServerMessage::Subscribed(_)));
    cl.ws
        .send(tokio_tungstenite::tungstenite::Message::Close(Some(
            CloseFrame {
                code: CloseCode::Normal,
                reason: "done".into(),
            },
        )))
        .await
        .expect("close");
    match cl.recv().await {
        Frame::Close(Some(1000), _) => {}
        other => panic!("expected the close reply, got {other:?}"),
    }
    // The server frees the connection at once, not after close_timeout_ms.
    let deadline = tokio::time::Instant::now() + WAIT;
    while s
        .metrics()
        .connections
        .load(std::sync::atomic::Ordering::Relaxed)
        != 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection not freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        s.metrics()
            .subscriptions
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// `RW-CLOSE-9`: after its close frame, the server drops the TCP connection when the
/// client does not complete the close handshake within `pong_timeout_ms` (here 200 ms),
/// not after `close_timeout_ms` (here 60 s, beyond the test's bound).
#[tokio::test]
async fn rw_close_9_unanswered_close_is_dropped_after_pong_timeout() {
    use tokio::io::AsyncReadExt;
    let mut c = config();
    c.hello_timeout_ms = 100;
    c.pong_timeout_ms = 200;
    c.close_timeout_ms = 60_000;
    let s = start(c).await;
    // A raw client that upgrades, then only reads: it never answers the close frame.
    let mut tcp = raw_upgrade(&s).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let eof = tokio::time::timeout(WAIT, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        eof.is_ok(),
        "the server kept the connection open after its unanswered close"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("hello_timeout"), "no error frame: {text}");
    // The close frame (opcode 0x8, FIN set) was sent before the drop.
    assert!(got.contains(&0x88), "no close frame before the drop");
}
