//! Subscriptions, replay, resume, reset and ordering (spec §8, §9).

use std::collections::BTreeSet;

use runwire_protocol::{ResetReason, ServerMessage, Subscribed};
use serde_json::{Value, json};

use crate::common::*;

async fn subscribed(c: &mut Client) -> Subscribed {
    match c.msg().await {
        ServerMessage::Subscribed(s) => s,
        other => panic!("expected subscribed, got {other:?}"),
    }
}

#[tokio::test]
async fn rw_event_11_rw_sub_2_subscribe_to_empty_run_carries_epoch_and_zero_cursor() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    let mut c = Client::connect(&s).await;
    c.hello(json!([{"run_id": "fresh"}])).await;
    let sub = subscribed(&mut c).await;
    assert_eq!((sub.after_seq, sub.head_seq), (0, 0));
    // The subscription created the run: the append lands in the same epoch.
    let r = p.progress("fresh", 2).await;
    assert_eq!(r["epoch"], json!(sub.epoch.as_str()));
    c.events_until(&run("fresh"), 0, 2).await;
    // And GET sees the run with that epoch.
    let (st, snap) = p.get("/v1/runs/fresh").await;
    assert_eq!(st, 200);
    assert_eq!(snap["epoch"], json!(sub.epoch.as_str()));
}

#[tokio::test]
async fn rw_resume_1_late_joiner_gets_replay_then_live() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    p.progress("late", 50).await;
    let mut c = Client::connect(&s).await;
    c.hello(json!([{"run_id": "late"}])).await;
    let sub = subscribed(&mut c).await;
    assert_eq!((sub.after_seq, sub.head_seq), (0, 50));
    c.events_until(&run("late"), 0, 50).await;
    p.progress("late", 10).await;
    c.events_until(&run("late"), 50, 60).await;
}

#[tokio::test]
async fn rw_resume_1_resume_at_every_point_including_mid_batch_and_zero() {
    let mut cfg = config();
    cfg.batch_window_ms = 20;
    let s = start(cfg).await;
    let p = Producer::new(&s);
    let mut c = Client::connect(&s).await;
    c.hello(json!([{"run_id": "every"}])).await;
    let epoch = subscribed(&mut c).await.epoch;
    p.progress("every", 30).await;
    let all = c.events_until(&run("every"), 0, 30).await;
    for k in 0..=30u64 {
        let mut r = Client::connect(&s).await;
        r.hello(json!([{"run_id": "every", "epoch": epoch.as_str(), "after_seq": k}]))
            .await;
        let sub = subscribed(&mut r).await;
        assert_eq!((sub.after_seq, sub.head_seq), (k, 30));
        let got = r.events_until(&run("every"), k, 30).await;
        assert_eq!(got, all[k as usize..], "resume after {k}");
        assert!(r.sync("end").await.is_empty(), "nothing after the head");
    }
}

#[tokio::test]
async fn rw_resume_2_concurrent_producers_and_joiners_see_identical_gapless_sequences() {
    let s = start(config()).await;
    let url = s.http_url();
    let producers = 4;
    let per = 60;
    let total = (producers * per) as u64;
    let mut early = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(&s).await;
        c.hello(json!([{"run_id": "busy"}])).await;
        subscribed(&mut c).await;
        early.push(c);
    }
    let mut tasks = Vec::new();
    for w in 0..producers {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let http = crate::common::http_client();
            for i in 0..per {
                let r = http
                    .post(format!("{url}/v1/runs/busy/events"))
                    .json(&json!({"events": [{"type": "log.line", "data": {"level": "info", "message": format!("w{w} #{i}")}}]}))
                    .send()
                    .await
                    .expect("post");
                assert_eq!(r.status().as_u16(), 200);
            }
        }));
    }
    // Joiners arrive while the producers append: the hand-off must not lose or repeat
    // (RW-RESUME-2).
    let mut joiners = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(&s).await;
        c.hello(json!([{"run_id": "busy"}])).await;
        subscribed(&mut c).await;
        joiners.push(c);
    }
    for t in tasks {
        t.await.expect("producer");
    }
    let mut seqs: Vec<Vec<String>> = Vec::new();
    for mut c in early.into_iter().chain(joiners) {
        let evs = c.events_until(&run("busy"), 0, total).await;
        seqs.push(evs.iter().map(|e| e.event_id.to_string()).collect());
    }
    for s in &seqs[1..] {
        assert_eq!(s, &seqs[0], "every client sees the identical sequence");
    }
    let unique: BTreeSet<&String> = seqs[0].iter().collect();
    assert_eq!(unique.len() as u64, total, "event ids are unique");
}

#[tokio::test]
async fn rw_resume_4_epoch_mismatch_resets_with_snapshot_then_events() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    p.ok("e", json!([{"type": "run.status", "data": {"status": "running"}}, {"type": "run.phase", "data": {"phase": "build"}}]))
        .await;
    let mut c = Client::connect(&s).await;
    c.hello(json!([{"run_id": "e", "epoch": "someotherepoch", "after_seq": 1}]))
        .await;
    let r = match c.msg().await {
        ServerMessage::Reset(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(r.reason, ResetReason::EpochMismatch);
    assert_eq!(r.snapshot.as_of_seq, 2);
    assert_eq!(r.snapshot.phase.as_deref(), Some("build"));
    assert_eq!(r.epoch, r.snapshot.epoch);
    // RW-SNAP-5: equal to the HTTP snapshot.
    let (_, http) = p.get("/v1/runs/e").await;
    assert_eq!(http, serde_json::to_value(&r.snapshot).expect("json"));
    p.progress("e", 2).await;
    c.events_until(&run("e"), 2, 4).await;
    // Even with after_seq 0 an epoch mismatch is a reset.
    let mut c2 = Client::connect(&s).await;
    c2.hello(json!([{"run_id": "e", "epoch": "someotherepoch"}]))
        .await;
    assert!(
        matches!(c2.msg().await, ServerMessage::Reset(r) if r.reason == ResetReason::EpochMismatch)
    );
}

#[tokio::test]
async fn rw_resume_6_cursor_ahead_resets() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    let epoch = p.progress("ahead", 3).await["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    let mut c = Client::connect(&s).await;
    c.hello(json!([{"run_id": "ahead", "epoch": epoch, "after_seq": 10}]))
        .await;
    match c.msg().await {
        ServerMessage::Reset(r) => {
            assert_eq!(r.reason, ResetReason::CursorAhead);
            assert_eq!(r.snapshot.as_of_seq, 3);
        }
        other => panic!("{other:?}"),
    }
    p.progress("ahead", 1).await;
    c.events_until(&run("ahead"), 3, 4).await;
}

#[tokio::test]
async fn rw_resume_5_cursor_older_than_window_resets_and_rw_resume_7_within_window_does_not() {
    let mut cfg = config();
    cfg.replay_window_events = 10;
    let s = start(cfg).await;
    let p = Producer::new(&s);
    let epoch = p.progress("old", 25).await["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    let mut c = Client::connect(&s).await;
    c.hello(json!([{"run_id": "old", "epoch": epoch, "after_seq": 14}]))
        .await;
    match c.msg().await {
        ServerMessage::Reset(r) => {
            assert_eq!(r.reason, ResetReason::CursorTooOld);
            assert_eq!(r.snapshot.as_of_seq, 25);
            assert_eq!(r.snapshot.progress.and_then(|p| p.current), Some(24));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        c.sync("nothing").await.is_empty(),
        "no replay after the snapshot"
    );
    let mut c2 = Client::connect(&s).await;
    c2.hello(json!([{"run_id": "old", "epoch": epoch, "after_seq": 15}]))
        .await;
    let sub = subscribed(&mut c2).await;
    assert_eq!(sub.after_seq, 15);
    c2.events_until(&run("old"), 15, 25).await;
}

#[tokio::test]
async fn rw_sub_4_unsubscribe_stops_events() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    let mut c = Client::connect(&s).await;
    c.hello(json!([{"run_id": "u"}, {"run_id": "v"}])).await;
    subscribed(&mut c).await;
    subscribed(&mut c).await;
    p.progress("u", 2).await;
    c.events_until(&run("u"), 0, 2).await;
    c.send(json!({"type": "unsubscribe", "run_ids": ["u"]}))
        .await;
    assert!(matches!(c.msg().await, ServerMessage::Unsubscribed(u) if u.run_id.as_str() == "u"));
    p.progress("u", 2).await;
    p.progress("v", 1).await;
    // v's event arrives; u's never do.
    let evs = c.events_until(&run("v"), 0, 1).await;
    assert_eq!(evs.len(), 1);
    for m in c.sync("after").await {
        if let ServerMessage::Event(e) = &m {
            assert_ne!(e.event.run_id.as_str(), "u", "no event after unsubscribed");
        }
    }
}

#[tokio::test]
async fn rw_order_1_many_runs_on_one_connection_each_in_order() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    let mut c = Client::connect(&s).await;
    let runs: Vec<Value> = (0..5).map(|i| json!({"run_id": format!("m{i}")})).collect();
    c.hello(Value::Array(runs)).await;
    for _ in 0..5 {
        subscribed(&mut c).await;
    }
    for round in 0..4 {
        for i in 0..5 {
            p.progress(&format!("m{i}"), round + 1).await;
        }
    }
    let mut next = [1u64; 5];
    let total: u64 = (1..=4).sum();
    while next.iter().any(|n| *n <= total) {
        let evs = match c.msg().await {
            ServerMessage::Event(e) => vec![e.event],
            ServerMessage::Batch(b) => b.events,
            other => panic!("{other:?}"),
        };
        for e in evs {
            let i: usize = e.run_id.as_str()[1..].parse().expect("index");
            assert_eq!(e.seq, next[i]);
            next[i] += 1;
        }
    }
}
