//! Slow consumers (spec §15): bounded outbound queue, error + 4100, fast clients
//! unaffected.

use std::sync::atomic::Ordering;

use runwire_protocol::ServerMessage;
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn rw_slow_1_slow_consumer_is_closed_4100_while_fast_ones_get_everything() {
    let mut cfg = config();
    cfg.slow_consumer_max_bytes = 256 * 1024;
    cfg.slow_consumer_max_age_ms = 1000;
    cfg.batch_window_ms = 0;
    cfg.heartbeat_interval_ms = 600_000;
    cfg.close_timeout_ms = 30_000;
    let s = start(cfg).await;
    let p = Producer::new(&s);
    let mut slow = Client::connect_opts(&s, None, Some(4096)).await;
    slow.hello(json!([{"run_id": "firehose"}])).await;
    assert!(matches!(slow.msg().await, ServerMessage::Subscribed(_)));
    let mut fast = Client::connect(&s).await;
    fast.hello(json!([{"run_id": "firehose"}])).await;
    assert!(matches!(fast.msg().await, ServerMessage::Subscribed(_)));
    let pad = "x".repeat(900);
    let total = 20_000u64;
    let reader = tokio::spawn(async move {
        let evs = fast.events_until(&run("firehose"), 0, total).await;
        evs.len() as u64
    });
    // The slow client reads nothing until the server has given up on it.
    let mut sent = 0;
    while sent < total {
        let events: Vec<Value> = (0..200)
            .map(|i| json!({"type": "log.line", "data": {"level": "info", "message": format!("{i} {pad}")}}))
            .collect();
        p.ok("firehose", Value::Array(events)).await;
        sent += 200;
    }
    // Appends were never held up by the slow client (RW-SLOW-3); now wait (bounded)
    // for the age limit to fire.
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.metrics().slow_consumer_closes.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow consumer was never closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // What the slow client had in flight arrives in order, then error and 4100.
    let mut next = 1;
    let e = loop {
        match slow.recv().await {
            Frame::Msg(ServerMessage::Event(ev)) => {
                assert_eq!(ev.event.seq, next);
                next += 1;
            }
            Frame::Msg(ServerMessage::Error(e)) => break e,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(e.code.as_str(), "slow_consumer");
    assert_eq!(e.close_code, Some(4100));
    assert!(e.retryable);
    assert!(matches!(slow.recv().await, Frame::Close(Some(4100), _)));
    assert!(next < total, "the slow client did not get everything");
    assert_eq!(reader.await.expect("fast reader"), total);
    // It resumes from its cursor without loss.
    let mut again = Client::connect(&s).await;
    let epoch = match p.get("/v1/runs/firehose").await.1["epoch"].as_str() {
        Some(e) => e.to_owned(),
        None => panic!("epoch"),
    };
    again
        .hello(json!([{"run_id": "firehose", "epoch": epoch, "after_seq": next - 1}]))
        .await;
    assert!(matches!(again.msg().await, ServerMessage::Subscribed(_)));
    again.events_until(&run("firehose"), next - 1, total).await;
}

/// `RW-SLOW-1` when the whole backlog would fit in the kernel's autotuned socket
/// buffers (8 MB): the server bounds its socket's send buffer, so the frames a stalled
/// client does not read wait in the server's own queue and trip its bounds.
#[tokio::test]
async fn rw_slow_1_backlog_that_fits_kernel_buffers_still_closes_slow_consumer() {
    let mut cfg = config();
    cfg.slow_consumer_max_bytes = 256 * 1024;
    cfg.slow_consumer_max_age_ms = 200;
    cfg.batch_window_ms = 20;
    cfg.heartbeat_interval_ms = 600_000;
    // The goodbye is kept for pong_timeout_ms (RW-SLOW-6) while this client drains
    // megabytes of backlog first; on a loaded machine that takes more than the
    // default 10 s.
    cfg.pong_timeout_ms = 120_000;
    let s = start(cfg).await;
    let p = Producer::new(&s);
    let mut slow = Client::connect_opts(&s, None, Some(32 * 1024)).await;
    slow.hello(json!([{"run_id": "big"}])).await;
    assert!(matches!(slow.msg().await, ServerMessage::Subscribed(_)));
    let pad = "y".repeat(49_000);
    let total = 160u64;
    for _ in 0..total / 20 {
        let events: Vec<Value> = (0..20)
            .map(|i| json!({"type": "log.line", "data": {"level": "info", "message": format!("{i} {pad}")}}))
            .collect();
        p.ok("big", Value::Array(events)).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.metrics().slow_consumer_closes.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow consumer was never closed: the kernel swallowed its backlog"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut next = 1;
    let e = loop {
        match slow.recv().await {
            Frame::Msg(ServerMessage::Event(ev)) => {
                assert_eq!(ev.event.seq, next);
                next += 1;
            }
            Frame::Msg(ServerMessage::Batch(b)) => {
                for ev in b.events {
                    assert_eq!(ev.seq, next);
                    next += 1;
                }
            }
            Frame::Msg(ServerMessage::Error(e)) => break e,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(e.code.as_str(), "slow_consumer");
    assert!(matches!(slow.recv().await, Frame::Close(Some(4100), _)));
    assert!(
        next <= total,
        "the slow client got everything yet was closed"
    );
}

/// `RW-SLOW-1` is about clients that do not read: one append larger than the byte
/// bound, to a client that reads at full speed, is handed to its socket before the
/// bound is judged, and the client stays.
#[tokio::test]
async fn rw_slow_1_a_burst_over_the_byte_bound_does_not_cut_off_a_reader() {
    let mut cfg = config();
    cfg.slow_consumer_max_bytes = 64 * 1024;
    // The bounds are judged every max_age / 4, at most every second: the reader has
    // that long to take the burst, which a debug build on a loaded machine needs.
    cfg.slow_consumer_max_age_ms = 60_000;
    cfg.batch_window_ms = 0;
    let s = start(cfg).await;
    let p = Producer::new(&s);
    let mut fast = Client::connect(&s).await;
    fast.hello(json!([{"run_id": "burst"}])).await;
    assert!(matches!(fast.msg().await, ServerMessage::Subscribed(_)));
    let pad = "y".repeat(20_000);
    // 20 events of 20 KB in one append: 400 KB, six times the bound.
    let events: Vec<Value> = (0..20)
        .map(|i| json!({"type": "log.line", "data": {"level": "info", "message": format!("{i} {pad}")}}))
        .collect();
    p.ok("burst", Value::Array(events)).await;
    let got = fast.events_until(&run("burst"), 0, 20).await;
    assert_eq!(got.len(), 20);
    // One more event after the burst: the connection is still open.
    p.ok(
        "burst",
        json!([{"type": "log.line", "data": {"level": "info", "message": "after"}}]),
    )
    .await;
    assert_eq!(fast.events_until(&run("burst"), 20, 21).await.len(), 1);
    assert_eq!(s.metrics().slow_consumer_closes.load(Ordering::Relaxed), 0);
}

/// `RW-SLOW-6`: a slow consumer's final frames wait behind what its socket still
/// holds for the pong timeout, not only `close_timeout_ms`: a client that pauses for
/// longer than `close_timeout_ms` after the server decided to close it still gets the
/// `slow_consumer` error and the close 4100 once it reads again.
#[tokio::test]
async fn rw_slow_6_the_goodbye_outlasts_close_timeout_behind_a_full_socket() {
    let mut cfg = config();
    cfg.slow_consumer_max_bytes = 64 * 1024;
    cfg.slow_consumer_max_age_ms = 200;
    cfg.batch_window_ms = 0;
    cfg.heartbeat_interval_ms = 600_000;
    cfg.close_timeout_ms = 100;
    cfg.pong_timeout_ms = 60_000;
    let s = start(cfg).await;
    let p = Producer::new(&s);
    let mut slow = Client::connect_opts(&s, None, Some(16 * 1024)).await;
    slow.hello(json!([{"run_id": "full"}])).await;
    assert!(matches!(slow.msg().await, ServerMessage::Subscribed(_)));
    let pad = "z".repeat(30_000);
    let events: Vec<Value> = (0..40)
        .map(|i| json!({"type": "log.line", "data": {"level": "info", "message": format!("{i} {pad}")}}))
        .collect();
    p.ok("full", Value::Array(events)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.metrics().slow_consumer_closes.load(Ordering::Relaxed) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never closed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The client stays stalled for five close timeouts (the scenario, not a wait for
    // something to happen), then reads everything.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let e = loop {
        match slow.recv().await {
            Frame::Msg(ServerMessage::Event(_) | ServerMessage::Batch(_)) => {}
            Frame::Msg(ServerMessage::Error(e)) => break e,
            other => panic!("expected the slow_consumer error, got {other:?}"),
        }
    };
    assert_eq!(e.code.as_str(), "slow_consumer");
    assert!(matches!(slow.recv().await, Frame::Close(Some(4100), _)));
}
