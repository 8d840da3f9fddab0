//! Bad input (spec §14, `RW-INPUT-*`): every rule has a defined error and outcome.

use futures_util::SinkExt;
use runwire_protocol::ServerMessage;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

async fn ready(s: &runwire_server::RunningServer) -> Client {
    let mut c = Client::connect(s).await;
    c.hello(json!([])).await;
    c
}

#[tokio::test]
async fn rw_input_malformed_json_closes_4000() {
    let s = start(config()).await;
    let mut c = ready(&s).await;
    c.send_text("{\"type\": \"subscribe\",".into()).await;
    let e = c.expect_error_close("invalid_json", 4000).await;
    assert!(!e.retryable);
}

#[tokio::test]
async fn rw_input_invalid_message_names_the_pointer_and_closes_4000() {
    let s = start(config()).await;
    let mut c = ready(&s).await;
    c.send(json!({"type": "subscribe", "subscriptions": [{"run_id": "ok"}, {"run_id": "no/pe"}]}))
        .await;
    let e = c.expect_error_close("invalid_message", 4000).await;
    assert!(
        e.message.contains("/subscriptions/1/run_id"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn rw_input_unknown_message_type_keeps_the_connection() {
    let s = start(config()).await;
    let mut c = ready(&s).await;
    c.send(json!({"type": "teleport", "to": "mars"})).await;
    let e = c.expect_error("unknown_message_type").await;
    assert!(!e.retryable);
    c.send(json!({"type": "subscribe", "subscriptions": [{"run_id": "r"}]}))
        .await;
    assert!(matches!(c.msg().await, ServerMessage::Subscribed(_)));
}

#[tokio::test]
async fn rw_input_binary_frame_closes_4000() {
    let s = start(config()).await;
    let mut c = ready(&s).await;
    c.ws.send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send");
    c.expect_error_close("binary_frame", 4000).await;
}

#[tokio::test]
async fn rw_input_oversize_frame_closes_4009() {
    let mut cfg = config();
    cfg.max_frame_bytes = 1024;
    let s = start(cfg).await;
    let mut c = ready(&s).await;
    let big = "x".repeat(2000);
    c.send(json!({"type": "ping", "id": "p", "pad": big})).await;
    c.expect_error_close("frame_too_large", 4009).await;
}

#[tokio::test]
async fn rw_input_7_message_before_hello_closes_4001() {
    let s = start(config()).await;
    let mut c = Client::connect(&s).await;
    c.send(json!({"type": "subscribe", "subscriptions": [{"run_id": "r"}]}))
        .await;
    c.expect_error_close("hello_required", 4001).await;
}

#[tokio::test]
async fn rw_input_8_second_hello_closes_4000() {
    let s = start(config()).await;
    let mut c = ready(&s).await;
    c.send(json!({"type": "hello", "versions": ["1.0"]})).await;
    c.expect_error_close("duplicate_hello", 4000).await;
}

#[tokio::test]
async fn rw_sub_7_duplicate_subscription_keeps_the_existing_one() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    let mut c = ready(&s).await;
    // Twice in one message: the second entry fails alone (RW-SUB-9).
    c.send(json!({"type": "subscribe", "subscriptions": [{"run_id": "r"}, {"run_id": "r"}, {"run_id": "q"}]}))
        .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(c.msg().await);
    }
    assert!(matches!(&got[0], ServerMessage::Subscribed(x) if x.run_id.as_str() == "r"));
    assert!(
        got.iter().any(|m| matches!(m, ServerMessage::Error(e) if e.code.as_str() == "already_subscribed" && e.run_id.as_ref().map(|r| r.as_str()) == Some("r") && e.close_code.is_none()))
    );
    assert!(
        got.iter()
            .any(|m| matches!(m, ServerMessage::Subscribed(x) if x.run_id.as_str() == "q"))
    );
    p.progress("r", 2).await;
    c.events_until(&run("r"), 0, 2).await;
}

#[tokio::test]
async fn rw_sub_8_unsubscribe_of_unsubscribed_run_errors_and_stays() {
    let s = start(config()).await;
    let mut c = ready(&s).await;
    c.send(json!({"type": "unsubscribe", "run_ids": ["nope"]}))
        .await;
    let e = c.expect_error("not_subscribed").await;
    assert_eq!(e.run_id.map(|r| r.into_string()).as_deref(), Some("nope"));
    assert!(c.sync("alive").await.is_empty());
}

#[tokio::test]
async fn rw_limit_3_too_many_subscriptions_fails_only_that_entry() {
    let mut cfg = config();
    cfg.max_subscriptions = 2;
    let s = start(cfg).await;
    let mut c = ready(&s).await;
    c.send(json!({"type": "subscribe", "subscriptions": [{"run_id": "a"}, {"run_id": "b"}, {"run_id": "c"}]}))
        .await;
    assert!(matches!(c.msg().await, ServerMessage::Subscribed(_)));
    assert!(matches!(c.msg().await, ServerMessage::Subscribed(_)));
    let e = c.expect_error("too_many_subscriptions").await;
    assert_eq!(e.run_id.map(|r| r.into_string()).as_deref(), Some("c"));
}

#[tokio::test]
async fn rw_limit_4_rate_limit_closes_4101() {
    let mut cfg = config();
    cfg.max_messages_per_second = 5;
    let s = start(cfg).await;
    let mut c = Client::connect(&s).await;
    c.send(json!({"type": "hello", "versions": ["1.0"]})).await;
    for i in 0..20 {
        c.send(json!({"type": "ping", "id": format!("p{i}")})).await;
    }
    let e = loop {
        match c.recv().await {
            Frame::Msg(ServerMessage::Error(e)) => break e,
            Frame::Msg(_) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(e.code.as_str(), "rate_limited");
    assert_eq!(e.close_code, Some(4101));
    assert!(e.retryable);
    assert!(matches!(c.recv().await, Frame::Close(Some(4101), _)));
}

#[tokio::test]
async fn rw_input_garbage_never_crashes_and_other_clients_keep_their_events() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    let mut good = ready(&s).await;
    good.send(json!({"type": "subscribe", "subscriptions": [{"run_id": "g"}]}))
        .await;
    assert!(matches!(good.msg().await, ServerMessage::Subscribed(_)));
    let inputs = [
        "",
        "null",
        "[]",
        "42",
        "\"hello\"",
        "{}",
        "{\"type\":null}",
        "{\"type\":\"hello\"}",
        "{\"type\":\"hello\",\"versions\":[]}",
        "{\"type\":\"hello\",\"versions\":[\"x\"]}",
        "{\"type\":\"subscribe\",\"subscriptions\":[]}",
        "{\"type\":\"subscribe\",\"subscriptions\":[{\"run_id\":\"r\",\"after_seq\":-1}]}",
        "{\"type\":\"subscribe\",\"subscriptions\":[{\"run_id\":\"r\",\"after_seq\":9007199254740992}]}",
        "{\"type\":\"ping\",\"id\":\"\"}",
        "\u{0}\u{1}",
        "{\"type\":\"pong\"}",
    ];
    for (i, text) in inputs.iter().enumerate() {
        let mut c = Client::connect(&s).await;
        if i % 2 == 0 {
            c.hello(json!([])).await;
        }
        c.send_text((*text).to_owned()).await;
        match c.recv().await {
            Frame::Msg(ServerMessage::Error(e)) => assert!(!e.message.is_empty()),
            other => panic!("input {text:?}: {other:?}"),
        }
    }
    p.progress("g", 3).await;
    good.events_until(&run("g"), 0, 3).await;
}

#[tokio::test]
async fn rw_input_6_session_position_is_checked_before_type_and_schema() {
    let s = start(config()).await;
    // An unknown type before hello is hello_required, not unknown_message_type.
    let mut c = Client::connect(&s).await;
    c.send(json!({"type": "teleport"})).await;
    c.expect_error_close("hello_required", 4001).await;
    // A schema-invalid second hello is duplicate_hello.
    let mut c = ready(&s).await;
    c.send(json!({"type": "hello", "versions": "not-a-list"}))
        .await;
    c.expect_error_close("duplicate_hello", 4000).await;
    // Size comes before everything: an oversize binary frame is frame_too_large.
    let mut cfg = config();
    cfg.max_frame_bytes = 100;
    let s = start(cfg).await;
    let mut c = Client::connect(&s).await;
    c.ws.send(Message::binary(vec![0u8; 500]))
        .await
        .expect("send");
    c.expect_error_close("frame_too_large", 4009).await;
}

#[tokio::test]
async fn rw_input_10_unknown_members_are_ignored() {
    let s = start(config()).await;
    let mut c = Client::connect(&s).await;
    c.send(json!({"type": "hello", "versions": ["1.0"], "future": {"x": 1}}))
        .await;
    assert!(matches!(c.msg().await, ServerMessage::Welcome(_)));
    c.send(
        json!({"type": "subscribe", "subscriptions": [{"run_id": "r", "extra": true}], "more": 1}),
    )
    .await;
    assert!(matches!(c.msg().await, ServerMessage::Subscribed(_)));
}

#[tokio::test]
async fn rw_input_11_unsubscribe_then_subscribe_answers_in_order() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    p.progress("o", 2).await;
    let mut c = ready(&s).await;
    c.send(json!({"type": "subscribe", "subscriptions": [{"run_id": "o"}]}))
        .await;
    assert!(matches!(c.msg().await, ServerMessage::Subscribed(_)));
    c.events_until(&run("o"), 0, 2).await;
    c.send(json!({"type": "unsubscribe", "run_ids": ["o"]}))
        .await;
    c.send(json!({"type": "subscribe", "subscriptions": [{"run_id": "o", "after_seq": 1}]}))
        .await;
    assert!(matches!(c.msg().await, ServerMessage::Unsubscribed(_)));
    assert!(matches!(c.msg().await, ServerMessage::Subscribed(x) if x.after_seq == 1));
    c.events_until(&run("o"), 1, 2).await;
}
