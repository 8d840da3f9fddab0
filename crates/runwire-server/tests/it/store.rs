//! The durable SQLite store: restart keeps everything acknowledged (spec §4.2,
//! `RW-INGEST-3`, `RW-EVENT-10`).

use std::sync::Arc;

use runwire_protocol::{LogLevel, LogLineData, RunId, ServerMessage, http::NewEvent};
use runwire_server::{EventStore, SqliteConfig, SqliteStore};
use serde_json::json;

use crate::common::*;

fn line(i: usize) -> NewEvent {
    NewEvent::new(LogLineData {
        level: LogLevel::Info,
        message: format!("line {i}"),
        source: None,
    })
}

#[tokio::test]
async fn rw_ingest_3_sqlite_restart_keeps_events_epoch_and_idempotency() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("runwire.db");
    let run = RunId::new("persist").expect("id");
    let (epoch, ids, empty_epoch) = {
        let store = SqliteStore::open(&path, &SqliteConfig::default()).expect("open");
        let empty = store
            .open_run(&RunId::new("empty").expect("id"))
            .await
            .expect("open run");
        assert_eq!(empty.head_seq, 0);
        let r = store
            .append(
                &run,
                (0..10).map(|i| line(i).with_key(format!("k{i}"))).collect(),
            )
            .await
            .expect("append");
        store.close().await.expect("close");
        (r.response.epoch, r.response.events, empty.epoch)
    };
    let store = SqliteStore::open(&path, &SqliteConfig::default()).expect("reopen");
    let info = store.run_info(&run).await.expect("info").expect("exists");
    assert_eq!((info.epoch.clone(), info.head_seq), (epoch.clone(), 10));
    // A subscribed-only run stores nothing (RW-SEC-15) and keeps its epoch.
    let empty = RunId::new("empty").expect("id");
    assert!(store.run_info(&empty).await.expect("info").is_none());
    assert_eq!(
        store.open_run(&empty).await.expect("open run").epoch,
        empty_epoch
    );
    let evs = store.read(&run, 0, 10, 100).await.expect("read");
    assert_eq!(
        evs.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    // Idempotency survives the restart.
    let r = store
        .append(&run, vec![line(3).with_key("k3")])
        .await
        .expect("append");
    assert!(r.response.events[0].duplicate);
    assert_eq!(r.response.events[0].event_id, ids[3].event_id);
    let snap = store.snapshot(&run).await.expect("snap").expect("some");
    assert_eq!(snap.as_of_seq, 10);
    assert_eq!(snap.recent_logs.len(), 10);
    let r = store.append(&run, vec![line(11)]).await.expect("append");
    assert_eq!(r.response.first_seq, 11);
    let snap = store.snapshot(&run).await.expect("snap").expect("some");
    assert_eq!(snap.as_of_seq, 11, "cached snapshot follows appends");
    store.close().await.expect("close");
}

#[tokio::test]
async fn rw_ingest_2_sqlite_group_commit_under_concurrency_is_gapless() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(
        SqliteStore::open(
            dir.path().join("g.db"),
            &SqliteConfig {
                synchronous: "normal".into(),
                ..SqliteConfig::default()
            },
        )
        .expect("open"),
    );
    let run = RunId::new("g").expect("id");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = Arc::clone(&store);
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                store
                    .append(&run, vec![line(w * 1000 + i), line(1)])
                    .await
                    .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let evs = store.read(&run, 0, u64::MAX, 10_000).await.expect("read");
    assert_eq!(
        evs.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=800).collect::<Vec<_>>()
    );
    store.close().await.expect("close");
}

#[tokio::test]
async fn sqlite_server_end_to_end_with_live_and_replay() {
    let dir = tempfile::tempdir().expect("tmp");
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteStore::open(dir.path().join("s.db"), &SqliteConfig::default()).expect("open"),
    );
    let s = start_with(config(), store).await;
    let p = Producer::new(&s);
    p.progress("sq", 5).await;
    let mut c = Client::connect(&s).await;
    c.hello(json!([{"run_id": "sq"}])).await;
    assert!(matches!(c.msg().await, ServerMessage::Subscribed(x) if x.head_seq == 5));
    c.events_until(&run("sq"), 0, 5).await;
    p.progress("sq", 5).await;
    c.events_until(&run("sq"), 5, 10).await;
    s.shutdown().await;
}
