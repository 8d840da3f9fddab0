//! Batching (spec §10).

use runwire_protocol::ServerMessage;
use serde_json::{Value, json};

use crate::common::*;

async fn subscribe(s: &runwire_server::RunningServer, run_id: &str) -> Client {
    let mut c = Client::connect(s).await;
    c.hello(json!([{"run_id": run_id}])).await;
    assert!(matches!(c.msg().await, ServerMessage::Subscribed(_)));
    c
}

#[tokio::test]
async fn rw_batch_2_batches_keep_log_order_and_bounds() {
    let mut cfg = config();
    cfg.batch_window_ms = 30;
    cfg.batch_max_events = 7;
    let s = start(cfg).await;
    let p = Producer::new(&s);
    let mut c = subscribe(&s, "b").await;
    p.progress("b", 40).await;
    let mut next = 1;
    let mut batches = 0;
    while next <= 40 {
        match c.msg().await {
            ServerMessage::Batch(b) => {
                batches += 1;
                assert!(
                    !b.events.is_empty() && b.events.len() <= 7,
                    "{}",
                    b.events.len()
                );
                for e in b.events {
                    assert_eq!(e.seq, next);
                    next += 1;
                }
            }
            ServerMessage::Event(e) => {
                assert_eq!(e.event.seq, next);
                next += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        batches >= 1,
        "a 40-event append within one window is batched"
    );
}

#[tokio::test]
async fn rw_batch_1_window_zero_sends_only_event_frames() {
    let mut cfg = config();
    cfg.batch_window_ms = 0;
    let s = start(cfg).await;
    let p = Producer::new(&s);
    let mut c = subscribe(&s, "nb").await;
    p.progress("nb", 20).await;
    for seq in 1..=20 {
        match c.msg().await {
            ServerMessage::Event(e) => assert_eq!(e.event.seq, seq),
            other => panic!("expected an event frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn rw_batch_3_terminal_status_and_todos_flush_at_once() {
    let mut cfg = config();
    // A window far longer than the wait bound: only the immediate flush delivers.
    cfg.batch_window_ms = 600_000;
    let s = start(cfg).await;
    let p = Producer::new(&s);
    let mut c = subscribe(&s, "f").await;
    p.progress("f", 3).await;
    p.ok("f", json!([{"type": "todo.updated", "data": {"items": [{"id": "1", "text": "t", "status": "pending"}]}}]))
        .await;
    let evs = c.events_until(&run("f"), 0, 4).await;
    assert_eq!(evs[3].event_type(), "todo.updated");
    p.progress("f", 2).await;
    p.ok(
        "f",
        json!([{"type": "run.status", "data": {"status": "completed"}}]),
    )
    .await;
    let evs = c.events_until(&run("f"), 4, 7).await;
    assert_eq!(evs[2].event_type(), "run.status");
}

#[tokio::test]
async fn rw_batch_replay_is_batched_in_order() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    let events: Vec<Value> = (0..1200)
        .map(|i| json!({"type": "log.line", "data": {"level": "info", "message": format!("{i}")}}))
        .collect();
    p.ok("rb", Value::Array(events[..1000].to_vec())).await;
    p.ok("rb", Value::Array(events[1000..].to_vec())).await;
    let mut c = subscribe(&s, "rb").await;
    let got = c.events_until(&run("rb"), 0, 1200).await;
    assert_eq!(got.len(), 1200);
    assert!(
        s.metrics()
            .batches_out
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3,
        "replay uses batch frames of at most 500"
    );
}
