//! One store contract, three stores: every test here runs against [`MemoryStore`],
//! [`SqliteStore`] and [`RedisStore`] (each Redis test on its own `redis-server`, and
//! once more on its own three-master Redis Cluster),
//! so that no backend keeps the contract of `EventStore` differently (spec §2, §4,
//! §8): appends with gapless seqs (`RW-EVENT-3`) and the epoch a run without a log is
//! told (`RW-SEC-15`), idempotency (`RW-INGEST-5`, `RW-INGEST-6`, all or none
//! `RW-INGEST-8`), the terminal rule (`RW-INGEST-10`, `RW-INGEST-11`), the bounds of
//! a read, retention (`RW-INGEST-17`, `RW-SNAP-2`), the live feed and listings
//! (`RW-INGEST-26`).

use std::{sync::Arc, time::Duration};

use runwire_protocol::{LogLevel, LogLineData, RunId, http::NewEvent};
use runwire_server::{
    EventStore, MemoryStore, RetentionConfig, RetentionRule, ServerConfig, SqliteConfig,
    SqliteStore, StoreError,
    store::{LiveRecv, RedisStore},
};
use serde_json::json;

use crate::{common::run, redis::Redis, redis_cluster::Cluster};

/// The backends.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Memory,
    Sqlite,
    Redis,
    /// A three-master Redis Cluster.
    RedisCluster,
    /// A Redis Cluster of one master holding every slot: one Redis process, with the
    /// cluster's live feed (doorbells), which docs/scale-out.md recommends over one
    /// plain Redis when nodes watch thousands of runs each.
    RedisOneMaster,
}

/// A store under test and what it needs to live.
struct Backend {
    store: Arc<dyn EventStore>,
    sqlite: Option<Arc<SqliteStore>>,
    _dir: tempfile::TempDir,
    _redis: Option<Redis>,
    _cluster: Option<Cluster>,
}

impl Backend {
    /// A store of `kind` with `retention`.
    fn open(kind: Kind, retention: RetentionConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cluster = None;
        let (store, sqlite, redis): (Arc<dyn EventStore>, _, _) = match kind {
            Kind::Memory => (Arc::new(MemoryStore::with_retention(retention)), None, None),
            Kind::Sqlite => {
                let s = Arc::new(
                    SqliteStore::open_with(
                        dir.path().join("contract.db"),
                        &SqliteConfig::default(),
                        retention,
                    )
                    .expect("sqlite store opens"),
                );
                (s.clone(), Some(s), None)
            }
            Kind::Redis => {
                let redis = Redis::start(false);
                let s = RedisStore::open_with(
                    &redis.url(),
                    ServerConfig::default().replay_window_events,
                    retention,
                )
                .expect("redis store opens");
                (Arc::new(s), None, Some(redis))
            }
            Kind::RedisCluster | Kind::RedisOneMaster => {
                let c = Cluster::start(if matches!(kind, Kind::RedisOneMaster) {
                    1
                } else {
                    3
                });
                let s = RedisStore::open_with(
                    &c.url(),
                    ServerConfig::default().replay_window_events,
                    retention,
                )
                .expect("redis store opens on a cluster");
                cluster = Some(c);
                (Arc::new(s), None, None)
            }
        };
        Self {
            store,
            sqlite,
            _dir: dir,
            _redis: redis,
            _cluster: cluster,
        }
    }

    /// Runs the store's pending maintenance where it has a way to wait for it.
    async fn settle(&self) {
        if let Some(s) = &self.sqlite {
            s.sync_maintenance().await.expect("maintenance");
        }
    }
}

fn line(i: usize) -> NewEvent {
    NewEvent::new(LogLineData {
        level: LogLevel::Info,
        message: format!("line {i}"),
        source: None,
    })
}

fn status(status: &str) -> NewEvent {
    serde_json::from_value(json!({"type": "run.status", "data": {"status": status}}))
        .expect("status event")
}

async fn seqs(
    store: &dyn EventStore,
    run: &RunId,
    after: u64,
    up_to: u64,
    limit: usize,
) -> Vec<u64> {
    store
        .read(run, after, up_to, limit)
        .await
        .expect("read")
        .iter()
        .map(|e| e.seq)
        .collect()
}

/// Appends `n` log lines to `run` in requests of 7.
async fn append_lines(store: &dyn EventStore, run: &RunId, n: usize) {
    for from in (0..n).step_by(7) {
        store
            .append(run, (from..n.min(from + 7)).map(line).collect())
            .await
            .expect("append");
    }
}

/// Appends assign gapless seqs from 1 in one epoch; a run without events is told
/// head 0 and the epoch its first append gives it, and nothing is stored for it.
async fn appends_are_gapless_in_the_epoch_told_before_the_first(kind: Kind) {
    let b = Backend::open(kind, RetentionConfig::default());
    let s = &*b.store;
    let r = run("contract-append");
    assert!(s.run_info(&r).await.expect("info").is_none(), "{kind:?}");
    let told = s.open_run(&r).await.expect("open");
    assert_eq!(told.head_seq, 0, "{kind:?}");
    assert!(
        s.run_info(&r).await.expect("info").is_none(),
        "{kind:?}: RW-SEC-15"
    );
    assert_eq!(s.open_run(&r).await.expect("open"), told, "{kind:?}");
    let a = s
        .append(&r, (0..3).map(line).collect())
        .await
        .expect("append");
    assert_eq!(
        (a.response.first_seq, a.response.last_seq, a.appended),
        (1, 3, 3),
        "{kind:?}"
    );
    assert_eq!(
        a.response.epoch, told.epoch,
        "{kind:?}: the epoch told before"
    );
    let a = s
        .append(&r, (3..5).map(line).collect())
        .await
        .expect("append");
    assert_eq!(
        (a.response.first_seq, a.response.last_seq),
        (4, 5),
        "{kind:?}"
    );
    let info = s.run_info(&r).await.expect("info").expect("exists");
    assert_eq!((info.head_seq, info.terminal), (5, false), "{kind:?}");
    assert_eq!(info.epoch, told.epoch, "{kind:?}");
    assert_eq!(
        seqs(s, &r, 0, 5, 100).await,
        vec![1, 2, 3, 4, 5],
        "{kind:?}"
    );
    let snap = s.snapshot(&r).await.expect("snapshot").expect("exists");
    assert_eq!((snap.as_of_seq, snap.recent_logs.len()), (5, 5), "{kind:?}");
    assert!(
        s.snapshot(&run("contract-none"))
            .await
            .expect("snapshot")
            .is_none(),
        "{kind:?}"
    );
}

/// A key seen with the same event answers the original assignment; with another
/// event the whole request is refused and nothing of it is appended.
async fn idempotent_retries_get_the_original_and_conflicts_append_nothing(kind: Kind) {
    let b = Backend::open(kind, RetentionConfig::default());
    let s = &*b.store;
    let r = run("contract-idem");
    let first = s
        .append(
            &r,
            (0..3).map(|i| line(i).with_key(format!("k{i}"))).collect(),
        )
        .await
        .expect("append");
    let again = s
        .append(&r, vec![line(1).with_key("k1"), line(7).with_key("k7")])
        .await
        .expect("retry");
    let e = &again.response.events;
    assert!(e[0].duplicate && !e[1].duplicate, "{kind:?}");
    assert_eq!(
        (e[0].seq, &e[0].event_id),
        (2, &first.response.events[1].event_id),
        "{kind:?}"
    );
    assert_eq!((e[1].seq, again.appended), (4, 1), "{kind:?}");
    // The same key twice in one request: the second is the first's duplicate.
    let twice = s
        .append(&r, vec![line(8).with_key("k8"), line(8).with_key("k8")])
        .await
        .expect("twice");
    let e = &twice.response.events;
    assert_eq!(
        (e[0].seq, e[1].seq, e[1].duplicate),
        (5, 5, true),
        "{kind:?}"
    );
    let err = s
        .append(&r, vec![line(100), line(99).with_key("k0")])
        .await
        .expect_err("conflict");
    assert!(
        matches!(
            err,
            StoreError::IdempotencyConflict {
                index: 1,
                seq: 1,
                ..
            }
        ),
        "{kind:?}: {err:?}"
    );
    let info = s.run_info(&r).await.expect("info").expect("exists");
    assert_eq!(info.head_seq, 5, "{kind:?}: all or none");
}

/// After a terminal status a run takes no more events (idempotent retries still
/// answer), and a refused request appends nothing.
async fn a_terminal_run_takes_no_more_events(kind: Kind) {
    let b = Backend::open(kind, RetentionConfig::default());
    let s = &*b.store;
    let r = run("contract-terminal");
    s.append(&r, vec![status("running"), line(1)])
        .await
        .expect("append");
    let err = s
        .append(&r, vec![status("completed").with_key("end"), line(2)])
        .await
        .expect_err("an event after the terminal one");
    assert!(
        matches!(err, StoreError::RunTerminal { index: 1, .. }),
        "{kind:?}: {err:?}"
    );
    assert_eq!(
        s.run_info(&r).await.expect("info").expect("run").head_seq,
        2,
        "{kind:?}: all or none"
    );
    let done = s
        .append(&r, vec![status("completed").with_key("end")])
        .await
        .expect("terminal");
    assert_eq!(done.response.first_seq, 3, "{kind:?}");
    let retry = s
        .append(&r, vec![status("completed").with_key("end")])
        .await
        .expect("the terminal event's retry");
    assert!(retry.response.events[0].duplicate, "{kind:?}");
    assert!(
        matches!(
            s.append(&r, vec![line(3)]).await,
            Err(StoreError::RunTerminal { index: 0, .. })
        ),
        "{kind:?}"
    );
    let info = s.run_info(&r).await.expect("info").expect("run");
    assert_eq!((info.head_seq, info.terminal), (3, true), "{kind:?}");
    assert!(
        s.snapshot(&r)
            .await
            .expect("snapshot")
            .expect("run")
            .is_terminal(),
        "{kind:?}"
    );
}

/// A read answers `after_seq < seq <= up_to`, at most `limit`, from `after_seq + 1`.
async fn reads_keep_their_seq_bounds(kind: Kind) {
    let b = Backend::open(kind, RetentionConfig::default());
    let s = &*b.store;
    let r = run("contract-read");
    s.append(&r, (0..10).map(line).collect())
        .await
        .expect("append");
    assert_eq!(seqs(s, &r, 3, 6, 100).await, vec![4, 5, 6], "{kind:?}");
    assert_eq!(seqs(s, &r, 3, 10, 2).await, vec![4, 5], "{kind:?}");
    assert_eq!(
        seqs(s, &r, 7, u64::MAX, 100).await,
        vec![8, 9, 10],
        "{kind:?}"
    );
    assert_eq!(
        seqs(s, &r, 0, runwire_protocol::MAX_SEQ, 3).await,
        vec![1, 2, 3],
        "{kind:?}"
    );
    assert!(
        seqs(s, &r, 10, 20, 100).await.is_empty(),
        "{kind:?}: at the head"
    );
    assert!(
        seqs(s, &r, 5, 5, 100).await.is_empty(),
        "{kind:?}: empty range"
    );
    assert!(
        seqs(s, &run("contract-nothing"), 0, 10, 100)
            .await
            .is_empty(),
        "{kind:?}: a run without a log"
    );
}

/// A run under a retention rule keeps at least its last events; a read from before
/// them is `NotRetained`, and the snapshot still folds every event.
async fn retention_trims_the_log_but_not_the_snapshot(kind: Kind) {
    let retention = RetentionConfig {
        events: 0,
        runs: vec![RetentionRule {
            pattern: "short-*".into(),
            events: 20,
        }],
    };
    let b = Backend::open(kind, retention);
    let s = &*b.store;
    let r = run("short-contract");
    let phase: NewEvent =
        serde_json::from_value(json!({"type": "run.phase", "data": {"phase": "build"}}))
            .expect("phase");
    s.append(&r, vec![status("running"), phase])
        .await
        .expect("append");
    append_lines(s, &r, 98).await;
    b.settle().await;
    // Redis trims in the background after an append: more appends until it shows,
    // bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let head = loop {
        let head = s.run_info(&r).await.expect("info").expect("run").head_seq;
        match s.read(&r, 0, head, 10).await {
            Err(StoreError::NotRetained { after_seq: 0, .. }) => break head,
            other => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{kind:?}: never trimmed: {other:?}"
                );
                s.append(&r, vec![line(1000)]).await.expect("append");
                b.settle().await;
            }
        }
    };
    assert_eq!(
        seqs(s, &r, head - 20, head, 100).await,
        (head - 19..=head).collect::<Vec<_>>(),
        "{kind:?}: at least the last 20 events stay"
    );
    let snap = s.snapshot(&r).await.expect("snapshot").expect("run");
    assert_eq!(snap.as_of_seq, head, "{kind:?}");
    assert_eq!(snap.phase.as_deref(), Some("build"), "{kind:?}");
    // A run without a rule keeps everything.
    let long = run("long-contract");
    append_lines(s, &long, 98).await;
    b.settle().await;
    assert_eq!(seqs(s, &long, 0, 98, 1).await, vec![1], "{kind:?}");
}

/// The live feed, subscribed before the head is read, brings every event above that
/// head once it is durable: a subscriber that skips what it has and reads a jump
/// from the store sees every event once, in order.
async fn the_live_feed_brings_every_event_above_the_head_read_after_subscribing(kind: Kind) {
    let b = Backend::open(kind, RetentionConfig::default());
    let s = &*b.store;
    let r = run("contract-live");
    s.append(&r, (0..2).map(line).collect())
        .await
        .expect("append");
    let mut live = s.live(&r);
    let mut delivered = s.open_run(&r).await.expect("open").head_seq;
    assert_eq!(delivered, 2, "{kind:?}");
    for n in [3, 1, 4] {
        s.append(&r, (0..n).map(line).collect())
            .await
            .expect("append");
    }
    let mut got = Vec::new();
    while delivered < 10 {
        let recv = tokio::time::timeout(Duration::from_secs(10), live.recv())
            .await
            .unwrap_or_else(|_| panic!("{kind:?}: the live feed stopped at {delivered}"));
        let LiveRecv::Events(evs) = recv else {
            panic!("{kind:?}: unexpected {recv:?}");
        };
        for e in evs.iter() {
            if e.seq <= delivered {
                continue;
            }
            if e.seq != delivered + 1 {
                // A jump: the range comes from the store.
                let missing = s.read(&r, delivered, e.seq - 1, 100).await.expect("read");
                got.extend(missing.iter().map(|m| m.seq));
            }
            // Published only once durable: the store has it.
            let stored = s.read(&r, e.seq - 1, e.seq, 1).await.expect("read");
            assert_eq!(stored.first().map(|x| x.seq), Some(e.seq), "{kind:?}");
            assert_eq!(stored[0].json, e.json, "{kind:?}: the same encoding");
            got.push(e.seq);
            delivered = e.seq;
        }
    }
    assert_eq!(got, (3..=10).collect::<Vec<_>>(), "{kind:?}");
}

/// A subscriber of a run that has no log yet gets the log's first events from the
/// live feed itself, from seq 1, with no jump to read from the store: a multi-node
/// store delivers a new log's events through its feed like every later event, so
/// that a node's subscribers do not each read them.
async fn a_new_logs_first_events_come_through_the_feed_from_seq_1(kind: Kind) {
    let b = Backend::open(kind, RetentionConfig::default());
    let s = &*b.store;
    let r = run("contract-born");
    let mut live = s.live(&r);
    assert_eq!(s.open_run(&r).await.expect("open").head_seq, 0, "{kind:?}");
    s.append(&r, (0..5).map(line).collect())
        .await
        .expect("append");
    let recv = tokio::time::timeout(Duration::from_secs(10), live.recv())
        .await
        .unwrap_or_else(|_| panic!("{kind:?}: nothing on the live feed"));
    let LiveRecv::Events(evs) = recv else {
        panic!("{kind:?}: unexpected {recv:?}");
    };
    let seqs: Vec<u64> = evs.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5], "{kind:?}: the first delivery");
}

/// The ids of a listing.
async fn listed(
    store: &dyn EventStore,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Vec<String> {
    let after = after.map(run);
    store
        .list_runs(prefix, after.as_ref(), limit)
        .await
        .expect("list runs")
        .into_iter()
        .map(|r| r.run_id.as_str().to_owned())
        .collect()
}

/// Listings (spec §4.7, `RW-INGEST-26`): the runs with a log whose id starts with
/// the prefix, in byte order (upper case before lower case), strictly after the
/// paging cursor, at most the limit, each with its epoch and current head; a run
/// watched without a log is not listed (`RW-SEC-15`).
async fn listings_page_by_prefix_in_byte_order(kind: Kind) {
    let b = Backend::open(kind, RetentionConfig::default());
    let s = &*b.store;
    let mut epochs = std::collections::BTreeMap::new();
    for (id, n) in [
        ("ci:b", 3),
        ("ci:a", 2),
        ("cj", 1),
        ("ci:a:1", 1),
        ("ci:B", 1),
        ("ci", 1),
        ("bz", 1),
    ] {
        let r = run(id);
        let a = s
            .append(&r, (0..n).map(line).collect())
            .await
            .expect("append");
        epochs.insert(id, a.response.epoch);
    }
    // Watched and told an epoch, but without a log: not a run to list.
    let empty = run("ci:empty");
    let _feed = s.live(&empty);
    s.open_run(&empty).await.expect("open");
    let all = s.list_runs("ci:", None, 100).await.expect("list");
    let got: Vec<(&str, u64)> = all
        .iter()
        .map(|r| (r.run_id.as_str(), r.info.head_seq))
        .collect();
    assert_eq!(
        got,
        vec![("ci:B", 1), ("ci:a", 2), ("ci:a:1", 1), ("ci:b", 3)],
        "{kind:?}"
    );
    for r in &all {
        assert_eq!(
            r.info.epoch,
            epochs[r.run_id.as_str()],
            "{kind:?}: {}",
            r.run_id
        );
    }
    assert_eq!(
        listed(s, "", None, 100).await,
        ["bz", "ci", "ci:B", "ci:a", "ci:a:1", "ci:b", "cj"],
        "{kind:?}: no prefix lists every run"
    );
    // Paging: strictly after the cursor, at most the limit.
    assert_eq!(
        listed(s, "ci:", None, 2).await,
        ["ci:B", "ci:a"],
        "{kind:?}"
    );
    assert_eq!(
        listed(s, "ci:", Some("ci:a"), 2).await,
        ["ci:a:1", "ci:b"],
        "{kind:?}"
    );
    assert!(
        listed(s, "ci:", Some("ci:b"), 2).await.is_empty(),
        "{kind:?}"
    );
    assert_eq!(listed(s, "", Some("ci:b"), 1).await, ["cj"], "{kind:?}");
    // A cursor that is no run, before the prefix, and past its end.
    assert_eq!(
        listed(s, "ci:", Some("ci:a:0"), 10).await,
        ["ci:a:1", "ci:b"],
        "{kind:?}"
    );
    assert_eq!(
        listed(s, "ci:", Some("bz"), 3).await,
        ["ci:B", "ci:a", "ci:a:1"],
        "{kind:?}"
    );
    assert!(
        listed(s, "ci:", Some("zz"), 10).await.is_empty(),
        "{kind:?}"
    );
    // A prefix that is itself a run id lists that run and the longer ones.
    assert_eq!(
        listed(s, "ci:a", None, 10).await,
        ["ci:a", "ci:a:1"],
        "{kind:?}"
    );
    assert_eq!(listed(s, "ci:a:1", None, 10).await, ["ci:a:1"], "{kind:?}");
    assert!(listed(s, "ci:c", None, 10).await.is_empty(), "{kind:?}");
    assert!(listed(s, "a", None, 10).await.is_empty(), "{kind:?}");
    // The head is the one at the time of the read.
    s.append(&run("ci:B"), (0..2).map(line).collect())
        .await
        .expect("append");
    let again = s.list_runs("ci:B", None, 1).await.expect("list");
    assert_eq!(again.len(), 1, "{kind:?}");
    assert_eq!(again[0].info.head_seq, 3, "{kind:?}");
}

/// One test per contract clause and backend.
macro_rules! contract {
    ($($clause:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $clause() {
                super::$clause(super::Kind::Memory).await;
            })*
        }
        mod sqlite {
            $(#[tokio::test]
            async fn $clause() {
                super::$clause(super::Kind::Sqlite).await;
            })*
        }
        mod redis {
            $(#[tokio::test]
            async fn $clause() {
                super::$clause(super::Kind::Redis).await;
            })*
        }
        mod redis_cluster {
            $(#[tokio::test]
            async fn $clause() {
                super::$clause(super::Kind::RedisCluster).await;
            })*
        }
        mod redis_one_master {
            $(#[tokio::test]
            async fn $clause() {
                super::$clause(super::Kind::RedisOneMaster).await;
            })*
        }
    };
}

contract!(
    appends_are_gapless_in_the_epoch_told_before_the_first,
    idempotent_retries_get_the_original_and_conflicts_append_nothing,
    a_terminal_run_takes_no_more_events,
    reads_keep_their_seq_bounds,
    retention_trims_the_log_but_not_the_snapshot,
    the_live_feed_brings_every_event_above_the_head_read_after_subscribing,
    a_new_logs_first_events_come_through_the_feed_from_seq_1,
    listings_page_by_prefix_in_byte_order,
);
