//! What the stores keep on disk and in memory: subscribing to runs that do not exist
//! costs nothing durable (`RW-SEC-15`, `RW-SEC-10`) while the epoch it was told still
//! resumes correctly (spec §2.3, §8, `RW-EVENT-10`); the SQLite WAL stays bounded;
//! an event takes about its encoded size on disk (docs/server.md, "Disk").

use std::{path::Path, sync::Arc, time::Duration};

use runwire_protocol::{LogLevel, LogLineData, RunId, ServerMessage, http::NewEvent};
use runwire_server::{EventStore, MemoryStore, SqliteConfig, SqliteStore};
use serde_json::json;

use crate::common::*;

/// Row counts of every table, and the size of the database file and its WAL.
fn footprint(path: &Path) -> (Vec<(String, i64)>, u64, u64) {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open for inspection");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("tables")
        .collect::<Result<_, _>>()
        .expect("names");
    let rows = tables
        .into_iter()
        .map(|t| {
            let n: i64 = conn
                .query_row(&format!("SELECT count(*) FROM \"{t}\""), [], |r| r.get(0))
                .expect("count");
            (t, n)
        })
        .collect();
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let wal = Path::new(&format!("{}-wal", path.display())).to_path_buf();
    (rows, size(path), size(&wal))
}

fn wal_size(path: &Path) -> u64 {
    std::fs::metadata(format!("{}-wal", path.display())).map_or(0, |m| m.len())
}

/// An event of about 1 KiB encoded.
fn kib_event(i: usize) -> NewEvent {
    NewEvent::new(LogLineData {
        level: LogLevel::Info,
        message: format!("{i:06} {}", "x".repeat(860)),
        source: None,
    })
}

/// Subscribes to `n` runs nobody appended to, 50 per message, and unsubscribes
/// them, over one connection; returns the epoch each was told.
async fn flood(server: &runwire_server::RunningServer, prefix: &str, n: usize) -> Vec<String> {
    let mut c = Client::connect(server).await;
    c.hello(json!([])).await;
    let mut epochs = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let subs: Vec<_> = chunk
            .iter()
            .map(|i| json!({"run_id": format!("{prefix}-{i}")}))
            .collect();
        c.send(json!({"type": "subscribe", "subscriptions": subs}))
            .await;
        for _ in chunk {
            match c.msg().await {
                ServerMessage::Subscribed(s) => {
                    assert_eq!(s.head_seq, 0);
                    epochs.push(s.epoch.as_str().to_owned());
                }
                other => panic!("expected subscribed, got {other:?}"),
            }
        }
        let ids: Vec<_> = chunk.iter().map(|i| format!("{prefix}-{i}")).collect();
        c.send(json!({"type": "unsubscribe", "run_ids": ids})).await;
        for _ in chunk {
            assert!(matches!(c.msg().await, ServerMessage::Unsubscribed(_)));
        }
    }
    epochs
}

#[tokio::test]
async fn rw_sec_15_sqlite_subscribing_to_unknown_runs_writes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("flood.db");
    let cfg = SqliteConfig {
        // No timed checkpoint moves the WAL while the files are compared.
        checkpoint_interval_ms: 3_600_000,
        ..SqliteConfig::default()
    };
    let store = Arc::new(SqliteStore::open(&path, &cfg).expect("open"));
    store.sync_maintenance().await.expect("settled");
    let before = footprint(&path);
    let server = start_with(config(), store.clone()).await;
    flood(&server, "ghost", 500).await;
    // Through the store API as well (what every subscription calls).
    for i in 0..2_000 {
        let info = store
            .open_run(&run(&format!("api-{i}")))
            .await
            .expect("open run");
        assert_eq!(info.head_seq, 0);
    }
    store.sync_maintenance().await.expect("settled");
    let after = footprint(&path);
    assert_eq!(before, after, "rows and file sizes (db, WAL) unchanged");
    server.shutdown().await;
}

#[tokio::test]
async fn rw_sec_15_memory_store_keeps_nothing_for_unknown_runs() {
    let store = Arc::new(MemoryStore::new());
    let server = start_with(config(), store.clone()).await;
    flood(&server, "ghost", 300).await;
    assert_eq!(store.run_count(), 0);
    server.shutdown().await;
}

/// The epoch a subscription to an empty run was told is the one its log gets, also
/// after a restart in between: resuming with (epoch, 0) replays from seq 1
/// (`RW-RESUME-1`, `RW-RESUME-7`), and a run nobody appended to answers the same
/// epoch again (`RW-SEC-10`: forgetting an empty run keeps its epoch).
#[tokio::test]
async fn rw_event_10_sqlite_empty_run_epoch_resumes_across_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("resume.db");
    let open = || Arc::new(SqliteStore::open(&path, &SqliteConfig::default()).expect("open"));
    let first = {
        let server = start_with(config(), open()).await;
        let epochs = flood(&server, "early", 2).await;
        server.shutdown().await;
        epochs
    };
    let server = start_with(config(), open()).await;
    // Nothing appended: the same epoch again.
    let again = flood(&server, "early", 2).await;
    assert_eq!(first, again);
    // The producer's first append reaches the restarted server.
    let p = Producer::new(&server);
    let r = p.progress("early-0", 3).await;
    assert_eq!(
        r["epoch"],
        json!(first[0]),
        "the log gets the epoch subscribers were told"
    );
    let mut c = Client::connect(&server).await;
    c.hello(json!([{"run_id": "early-0", "epoch": first[0], "after_seq": 0}]))
        .await;
    match c.msg().await {
        ServerMessage::Subscribed(s) => {
            assert_eq!((s.epoch.as_str(), s.head_seq), (first[0].as_str(), 3));
        }
        other => panic!("expected subscribed (no reset), got {other:?}"),
    }
    let got = c.events_until(&run("early-0"), 0, 3).await;
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    server.shutdown().await;
    // A new database (the old one lost) gives the run another epoch: a client with
    // the old cursor is reset, never replayed into a different log.
    let other = dir.path().join("other.db");
    let server = start_with(
        config(),
        Arc::new(SqliteStore::open(&other, &SqliteConfig::default()).expect("open")),
    )
    .await;
    Producer::new(&server).progress("early-0", 5).await;
    let mut c = Client::connect(&server).await;
    c.hello(json!([{"run_id": "early-0", "epoch": first[0], "after_seq": 3}]))
        .await;
    match c.msg().await {
        ServerMessage::Reset(r) => assert_ne!(r.epoch.as_str(), first[0]),
        other => panic!("expected reset, got {other:?}"),
    }
    server.shutdown().await;
}

/// Two memory stores (a restarted in-memory server) derive different epochs.
#[tokio::test]
async fn rw_event_10_memory_store_epochs_differ_per_process() {
    let (a, b) = (MemoryStore::new(), MemoryStore::new());
    let r = run("same");
    let ea = a.open_run(&r).await.expect("open").epoch;
    assert_eq!(ea, a.open_run(&r).await.expect("open").epoch);
    assert_ne!(ea, b.open_run(&r).await.expect("open").epoch);
    let out = a.append(&r, vec![kib_event(1)]).await.expect("append");
    assert_eq!(out.response.epoch, ea);
}

#[tokio::test]
async fn sqlite_wal_is_truncated_when_the_writer_is_idle() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("idle.db");
    let cfg = SqliteConfig {
        checkpoint_interval_ms: 20,
        ..SqliteConfig::default()
    };
    let store = SqliteStore::open(&path, &cfg).expect("open");
    for i in 0..40 {
        let evs = (0..50).map(|j| kib_event(i * 50 + j)).collect();
        store
            .append(&run(&format!("burst-{}", i % 4)), evs)
            .await
            .expect("append");
    }
    assert!(wal_size(&path) > 0, "the burst is in the WAL");
    // Idle now: the maintenance thread truncates the WAL within a few intervals.
    let deadline = tokio::time::Instant::now() + WAIT;
    while wal_size(&path) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the WAL is still {} bytes after {WAIT:?} idle",
            wal_size(&path)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Everything is still there.
    let evs = store
        .read(&run("burst-0"), 0, 500, 1000)
        .await
        .expect("read");
    assert_eq!(evs.len(), 500);
    store.close().await.expect("close");
}

#[tokio::test]
async fn sqlite_wal_is_cut_back_to_its_bound_after_a_checkpoint() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bound.db");
    let cfg = SqliteConfig {
        // Only the explicit passes below checkpoint.
        checkpoint_interval_ms: 3_600_000,
        wal_max_bytes: 256 * 1024,
        ..SqliteConfig::default()
    };
    let store = SqliteStore::open(&path, &cfg).expect("open");
    for i in 0..40 {
        let evs = (0..50).map(|j| kib_event(i * 50 + j)).collect();
        store.append(&run("bound"), evs).await.expect("append");
    }
    let grown = wal_size(&path);
    assert!(grown > 1_000_000, "the burst is in the WAL ({grown} bytes)");
    // The checkpoint the maintenance thread runs after commits; the next commit
    // starts the WAL over and cuts the file back to its bound.
    store.sync_maintenance().await.expect("checkpoint");
    store
        .append(&run("bound"), vec![kib_event(9999)])
        .await
        .expect("append");
    let now = wal_size(&path);
    assert!(now <= 256 * 1024, "the WAL is {now} bytes, bound 262144");
    store.close().await.expect("close");
}

/// About 1 KiB events take less than 1.5 times their encoded size in the database.
#[tokio::test]
async fn sqlite_disk_per_event_is_close_to_the_encoded_event() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("size.db");
    let store = SqliteStore::open(&path, &SqliteConfig::default()).expect("open");
    let mut encoded = 0u64;
    for i in 0..60 {
        let r = run(&format!("size-{}", i % 3));
        let evs: Vec<NewEvent> = (0..50).map(|j| kib_event(i * 50 + j)).collect();
        let out = store.append(&r, evs).await.expect("append");
        let stored = store
            .read(&r, out.response.first_seq - 1, out.response.last_seq, 100)
            .await
            .expect("read");
        encoded += stored.iter().map(|e| e.json.len() as u64).sum::<u64>();
    }
    store.close().await.expect("close");
    let conn = rusqlite::Connection::open(&path).expect("inspect");
    let q = |sql: &str| -> u64 {
        let v: i64 = conn.query_row(sql, [], |r| r.get(0)).expect(sql);
        u64::try_from(v).expect("non-negative")
    };
    let used = (q("PRAGMA page_count") - q("PRAGMA freelist_count")) * q("PRAGMA page_size");
    let per = used as f64 / encoded as f64;
    assert!(
        per < 1.5,
        "{used} bytes in use for {encoded} bytes of events: {per:.2}x"
    );
}

/// A database of the first schema (events in a `WITHOUT ROWID` table, a row for
/// every subscribed run) is migrated when opened: events kept, empty runs forgotten.
#[tokio::test]
async fn sqlite_schema_0_is_migrated_and_newer_schemas_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("old.db");
    {
        let c = rusqlite::Connection::open(&path).expect("create");
        c.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE runs (run_id TEXT PRIMARY KEY, epoch TEXT NOT NULL,
                 head_seq INTEGER NOT NULL, terminal INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
             CREATE TABLE events (run_id TEXT NOT NULL, seq INTEGER NOT NULL,
                 event_id TEXT NOT NULL, flush INTEGER NOT NULL, json TEXT NOT NULL,
                 PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
             INSERT INTO runs VALUES ('kept', 'e0e0e0e0', 1, 0), ('empty', 'f1f1f1f1', 0, 0);
             INSERT INTO events VALUES ('kept', 1, 'id-1', 0,
                 '{\"event_id\":\"id-1\",\"run_id\":\"kept\",\"seq\":1,\"type\":\"log.line\",\"time\":\"2026-01-01T00:00:00.000Z\",\"data\":{\"level\":\"info\",\"message\":\"m\"}}');",
        )
        .expect("schema 0");
    }
    let store = SqliteStore::open(&path, &SqliteConfig::default()).expect("migrates");
    let kept = store
        .run_info(&run("kept"))
        .await
        .expect("info")
        .expect("kept");
    assert_eq!((kept.epoch.as_str(), kept.head_seq), ("e0e0e0e0", 1));
    assert_eq!(
        store
            .read(&run("kept"), 0, 1, 10)
            .await
            .expect("read")
            .len(),
        1
    );
    assert!(store.run_info(&run("empty")).await.expect("info").is_none());
    let out = store
        .append(&run("kept"), vec![kib_event(2)])
        .await
        .expect("append");
    assert_eq!(out.response.first_seq, 2);
    store.close().await.expect("close");
    drop(store);
    let c = rusqlite::Connection::open(&path).expect("inspect");
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(v, 1);
    c.pragma_update(None, "user_version", 99).expect("newer");
    drop(c);
    let err = SqliteStore::open(&path, &SqliteConfig::default()).expect_err("refused");
    assert!(err.to_string().contains("newer runwire"), "{err}");
}

/// Opening a run that does not exist answers the same epoch as often as asked,
/// and the run's first append uses it.
#[tokio::test]
async fn rw_sub_2_sqlite_unknown_run_epoch_is_stable_and_used_by_the_first_append() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = SqliteStore::open(dir.path().join("e.db"), &SqliteConfig::default()).expect("open");
    let r = RunId::new("later").expect("id");
    let e1 = store.open_run(&r).await.expect("open").epoch;
    let e2 = store.open_run(&r).await.expect("open").epoch;
    assert_eq!(e1, e2);
    assert!(store.run_info(&r).await.expect("info").is_none());
    let out = store.append(&r, vec![kib_event(0)]).await.expect("append");
    assert_eq!(out.response.epoch, e1);
    store.close().await.expect("close");
}

fn redis_keys(url: &str) -> Vec<String> {
    let mut admin = redis::Client::open(url)
        .expect("client")
        .get_connection()
        .expect("admin connection");
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut admin).expect("keys");
    keys.sort();
    keys
}

/// Subscribing to runs nobody appended to writes no key to Redis (`RW-SEC-15`), and
/// two nodes answer the same epoch for such a run, which its first append (on
/// either node) gives its log.
#[tokio::test]
async fn rw_sec_15_redis_subscribing_to_unknown_runs_writes_nothing_and_nodes_agree() {
    use runwire_server::store::RedisStore;
    let redis = crate::redis::Redis::start(false);
    let open = || {
        Arc::new(
            RedisStore::open(&redis.url(), config().replay_window_events)
                .expect("redis store opens"),
        )
    };
    let (a, b) = (open(), open());
    let before = redis_keys(&redis.url());
    let node = start_with(config(), a.clone()).await;
    let told = flood(&node, "ghost", 300).await;
    for i in 0..500 {
        a.open_run(&run(&format!("api-{i}")))
            .await
            .expect("open run");
    }
    assert_eq!(redis_keys(&redis.url()), before, "no key written");
    // Both nodes derive the same epoch; the first append (on the other node) uses it.
    let r = run("ghost-7");
    assert_eq!(b.open_run(&r).await.expect("open").epoch.as_str(), told[7]);
    let out = b.append(&r, vec![kib_event(1)]).await.expect("append");
    assert_eq!(out.response.epoch.as_str(), told[7]);
    assert_eq!(
        a.run_info(&r)
            .await
            .expect("info")
            .expect("exists")
            .head_seq,
        1
    );
    node.shutdown().await;
}
