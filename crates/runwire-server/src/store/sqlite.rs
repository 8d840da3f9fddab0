//! The default durable store: one SQLite file in WAL mode, with group commit.
//!
//! # Durability
//!
//! All writes go through one writer thread. It takes every append request waiting in
//! its queue (up to `sqlite.group_commit_max`), applies them in one transaction and
//! commits once; only then does it publish the events to subscribers and answer the
//! producers. A committed transaction is in the WAL file: it survives a crash of the
//! server process (SIGKILL), which is what the spec calls durable (`RW-INGEST-3`,
//! `RW-INGEST-4`). With `sqlite.synchronous = "full"` (the default) the producers
//! hear back only after the WAL is also fsynced, so an acknowledged event survives
//! an OS crash and power loss too; a syncer thread does that fsync, once for every
//! group committed meanwhile, so subscribers never wait for the disk. (With
//! `sqlite.deliver_after_sync = true` the writer fsyncs inside the commit and
//! subscribers wait as well: an event a subscriber saw is then never lost to power
//! loss either.) With `"normal"` nothing is fsynced at commit: acknowledged events
//! survive a process crash but the last commits may be lost on power loss. A failed
//! transaction is rolled back entirely and every request in the group gets
//! `store_unavailable`; producers retry with their idempotency keys.
//!
//! # Maintenance: checkpoints, snapshots, retention
//!
//! A second thread with its own connection keeps the writer's path short:
//!
//! - It checkpoints the WAL into the database file every
//!   `sqlite.checkpoint_interval_ms` when something was committed (the writer's
//!   automatic checkpoint is off, so no append waits for one).
//! - Every `sqlite.snapshot_every` events of a run it stores the run's folded
//!   snapshot, so a snapshot read folds only the events after it.
//! - With a [`RetentionConfig`] limit, it then deletes the run's events (and their
//!   idempotency records) older than the limit, never past the stored snapshot: a
//!   reset still carries every event's effect (`RW-SNAP-2`), and a read from a
//!   trimmed cursor is [`StoreError::NotRetained`] (`RW-INGEST-17`, `RW-RESUME-5`).
//!
//! This file runs past 1,000 lines because the threads above share one schema, one
//! cache of run heads and one error state: the writer, the syncer and maintenance
//! each read what the others write, and the durability argument (what is committed,
//! fsynced and acknowledged, in which order) can only be checked with all of them in
//! view.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use runwire_protocol::{Epoch, RunId, RunSnapshot, http::NewEvent, raw::RawEvent};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::{
    AppendOutcome, BoxFuture, EventStore, IdemRecord, ListedRun, LiveHub, LiveReceiver, RunInfo,
    StoreError, StoredEvent, derive_epoch, new_epoch_seed, plan_append,
};
use crate::config::{RetentionConfig, SqliteConfig};

/// The schema version this code writes (`PRAGMA user_version`): 0 is the first
/// layout (events in a `WITHOUT ROWID` table, empty runs stored), migrated at open.
const SCHEMA_VERSION: i64 = 1;

/// The schema. `events` is an ordinary (rowid) table: a `WITHOUT ROWID` table keeps
/// its rows in an index b-tree, where a row of more than about a quarter of a page
/// (1,002 bytes of 4 KiB) spills into an overflow page of its own, so an event of
/// 1 KiB took 4 KiB and more. A rowid table keeps rows up to almost a page inline
/// and fills overflow pages whole. The envelope JSON is stored once: no column
/// repeats what it carries except the key (`run_id`, `seq`).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    head_seq INTEGER NOT NULL,
    terminal INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    flush INTEGER NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS idempotency (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_by_seq ON idempotency (run_id, seq);
CREATE TABLE IF NOT EXISTS snapshots (
    run_id TEXT PRIMARY KEY,
    as_of_seq INTEGER NOT NULL,
    json TEXT NOT NULL,
    trimmed INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
";

/// Brings the database to [`SCHEMA_VERSION`] in one transaction and returns its
/// epoch seed (drawn once, when the database is created; `derive_epoch`).
///
/// Version 0 to 1: the events move to the rowid table (a copy of every event: the
/// migration needs the events' size in free disk space and time, and the file keeps
/// its size afterwards; `VACUUM` shrinks it offline), and the runs without events
/// that version 0 stored for every subscription are forgotten (`RW-SEC-10`: no run
/// is subscribed while the store opens).
fn migrate(conn: &mut Connection) -> Result<String, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < 1 {
        let old_events: Option<String> = tx
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'events'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if old_events.is_some() {
            let n: i64 = tx.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
            tracing::info!(events = n, "migrating the sqlite store to schema version 1");
            tx.execute_batch(
                "CREATE TABLE events_v1 (
                    run_id TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    flush INTEGER NOT NULL,
                    json TEXT NOT NULL,
                    PRIMARY KEY (run_id, seq)
                );
                INSERT INTO events_v1 (run_id, seq, flush, json)
                    SELECT run_id, seq, flush, json FROM events ORDER BY run_id, seq;
                DROP TABLE events;
                ALTER TABLE events_v1 RENAME TO events;
                DELETE FROM runs WHERE head_seq = 0;",
            )?;
        }
    }
    tx.execute_batch(SCHEMA)?;
    tx.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch_seed', ?1)",
        params![new_epoch_seed()],
    )?;
    let seed: String =
        tx.query_row("SELECT value FROM meta WHERE key = 'epoch_seed'", [], |r| {
            r.get(0)
        })?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(seed)
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

#[derive(Debug, Clone)]
struct CachedRun {
    epoch: Epoch,
    head: u64,
    terminal: bool,
    snapshot: Option<RunSnapshot>,
    /// The head when maintenance was last asked to look at the run.
    maint_at: u64,
}

impl CachedRun {
    fn info(&self) -> RunInfo {
        RunInfo {
            epoch: self.epoch.clone(),
            head_seq: self.head,
            terminal: self.terminal,
        }
    }
}

type Cache = Mutex<BTreeMap<RunId, CachedRun>>;

enum Cmd {
    Append {
        run_id: RunId,
        events: Vec<NewEvent>,
        reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

struct Shared {
    cache: Cache,
    hub: LiveHub,
    readers: Vec<Mutex<Connection>>,
    retention: RetentionConfig,
    snapshot_every: u64,
    /// Commits so far (the maintenance thread checkpoints when it moved).
    commits: AtomicU64,
    /// Why the last group transaction failed, until one succeeds (`/healthz`).
    failing: Mutex<Option<String>>,
    /// Why a WAL fsync failed: from then on the store refuses writes until it is
    /// reopened (fail-stop, as PostgreSQL does: after a failed fsync the kernel may
    /// have dropped the dirty pages, so no later fsync can vouch for them).
    sync_failed: Mutex<Option<String>>,
    /// The database's epoch seed (`derive_epoch`).
    seed: String,
}

impl Shared {
    /// Events between maintenance passes of a run: the snapshot interval, or the
    /// retention step when that is shorter.
    fn maint_every(&self, run_id: &RunId) -> u64 {
        match self.retention.for_run(run_id) {
            0 => self.snapshot_every,
            r => self.snapshot_every.min(RetentionConfig::step(r)),
        }
    }
}

enum Maint {
    Run(RunId),
    /// Answered once everything asked before it is done, including a checkpoint.
    Barrier(oneshot::Sender<()>),
    Stop,
}

/// A durable [`EventStore`] on one SQLite file (see the module docs for durability).
pub struct SqliteStore {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Cmd>>>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
    maint: mpsc::Sender<Maint>,
    maintainer: Mutex<Option<thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn read_run(conn: &Connection, run_id: &RunId) -> Result<Option<CachedRun>, StoreError> {
    conn.prepare_cached("SELECT epoch, head_seq, terminal FROM runs WHERE run_id = ?1")
        .map_err(db_err)?
        .query_row(params![run_id.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .optional()
        .map_err(db_err)?
        .map(|(epoch, head, terminal)| {
            Ok(CachedRun {
                epoch: Epoch::new(epoch)
                    .map_err(|e| StoreError::Unavailable(format!("corrupt epoch: {e}")))?,
                head: u64::try_from(head).unwrap_or(0),
                terminal: terminal != 0,
                snapshot: None,
                maint_at: u64::try_from(head).unwrap_or(0),
            })
        })
        .transpose()
}

/// The runs with a log whose id starts with `prefix` and is greater than `after`
/// (spec §4.7). The bounds keep the read on the primary key's range: every id that
/// starts with `prefix` lies in `[prefix, prefix ‖ 0x7F)`, since run ids are ASCII
/// and `0x7F` sorts after each character a run id may hold (`RW-EVENT-2`). `runs`
/// is compared with SQLite's default `BINARY` collation, byte order.
fn list_runs(
    conn: &Connection,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<ListedRun>, StoreError> {
    let upper = format!("{prefix}\u{7f}");
    let mut stmt = conn
        .prepare_cached(
            "SELECT run_id, epoch, head_seq, terminal FROM runs \
             WHERE run_id >= ?1 AND run_id < ?2 AND run_id > ?3 AND head_seq > 0 \
             ORDER BY run_id LIMIT ?4",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map(
            params![
                prefix,
                upper,
                after.unwrap_or(""),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
        )
        .map_err(db_err)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, epoch, head, terminal) = row.map_err(db_err)?;
        let corrupt = |e: runwire_protocol::IdError| {
            StoreError::Unavailable(format!("corrupt runs row {id:?}: {e}"))
        };
        out.push(ListedRun {
            run_id: RunId::new(id.as_str()).map_err(corrupt)?,
            info: RunInfo {
                epoch: Epoch::new(epoch).map_err(corrupt)?,
                head_seq: u64::try_from(head).unwrap_or(0),
                terminal: terminal != 0,
            },
        });
    }
    Ok(out)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, keeping every event.
    pub fn open(path: impl AsRef<Path>, config: &SqliteConfig) -> Result<Self, StoreError> {
        Self::open_with(path, config, RetentionConfig::default())
    }

    /// Opens (creating if needed) the database at `path`, trimming runs to
    /// `retention` (see the module docs).
    pub fn open_with(
        path: impl AsRef<Path>,
        config: &SqliteConfig,
        retention: RetentionConfig,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let open_err = |e: rusqlite::Error| {
            StoreError::Unavailable(format!("cannot open {}: {e}", path.display()))
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        // With `full` (and not `deliver_after_sync`) the writer commits without an
        // fsync and a syncer thread fsyncs the WAL before the producers hear back:
        // subscribers get events once they survive a server crash, acknowledgements
        // once they survive power loss (module docs).
        let split_sync = config.synchronous == "full" && !config.deliver_after_sync;
        let writer_sync = if split_sync {
            "normal"
        } else {
            config.synchronous.as_str()
        };
        conn.pragma_update(None, "synchronous", writer_sync)
            .map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        // Checkpoints run on the maintenance thread, not inside an append.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(open_err)?;
        // A WAL that a checkpoint reset is cut back to this size by the next commit.
        let wal_max = i64::try_from(config.wal_max_bytes).unwrap_or(i64::MAX);
        conn.pragma_update(None, "journal_size_limit", wal_max)
            .map_err(open_err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(open_err)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Unavailable(format!(
                "{} has schema version {version}, written by a newer runwire; this one reads \
                 version {SCHEMA_VERSION} and older: run the newer runwire, or start with a new file",
                path.display()
            )));
        }
        let seed = migrate(&mut conn).map_err(open_err)?;
        let maint_conn = Connection::open(path).map_err(open_err)?;
        maint_conn
            .busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        maint_conn
            .pragma_update(None, "synchronous", config.synchronous.as_str())
            .map_err(open_err)?;
        maint_conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(open_err)?;
        maint_conn
            .pragma_update(None, "journal_size_limit", wal_max)
            .map_err(open_err)?;
        let mut readers = Vec::new();
        for _ in 0..config.readers.max(1) {
            let r = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(open_err)?;
            r.busy_timeout(Duration::from_secs(5)).map_err(open_err)?;
            readers.push(Mutex::new(r));
        }
        let shared = Arc::new(Shared {
            cache: Mutex::new(BTreeMap::new()),
            hub: LiveHub::default(),
            readers,
            retention,
            snapshot_every: config.snapshot_every.max(1),
            commits: AtomicU64::new(0),
            failing: Mutex::new(None),
            sync_failed: Mutex::new(None),
            seed,
        });
        let (maint, maint_rx) = mpsc::channel();
        let s2 = Arc::clone(&shared);
        let wal = WalLimits {
            path: std::path::PathBuf::from(format!("{}-wal", path.display())),
            max_bytes: config.wal_max_bytes,
            interval: Duration::from_millis(config.checkpoint_interval_ms.max(1)),
        };
        let maintainer = thread::Builder::new()
            .name("runwire-sqlite-maint".into())
            .spawn(move || maintenance_loop(maint_conn, maint_rx, s2, &wal))
            .map_err(|e| StoreError::Unavailable(format!("cannot start maintenance: {e}")))?;
        let syncer = if split_sync {
            let (sync_tx, sync_rx) = mpsc::channel();
            let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
            let s2 = Arc::clone(&shared);
            let handle = thread::Builder::new()
                .name("runwire-sqlite-sync".into())
                .spawn(move || syncer_loop(&wal, sync_rx, &s2))
                .map_err(|e| StoreError::Unavailable(format!("cannot start syncer: {e}")))?;
            Some((sync_tx, handle))
        } else {
            None
        };
        let (tx, rx) = mpsc::channel();
        let s2 = Arc::clone(&shared);
        let max = config.group_commit_max.max(1);
        let to_maint = maint.clone();
        let writer = thread::Builder::new()
            .name("runwire-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, s2, max, to_maint, syncer))
            .map_err(|e| StoreError::Unavailable(format!("cannot start writer: {e}")))?;
        Ok(Self {
            shared,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            maint,
            maintainer: Mutex::new(Some(maintainer)),
        })
    }

    /// Waits until the maintenance thread has done everything asked of it so far:
    /// stored snapshots, retention and a WAL checkpoint (see the module docs). For
    /// tests and tools; the server never waits for maintenance.
    pub async fn sync_maintenance(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.maint
            .send(Maint::Barrier(tx))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    fn send(&self, cmd: Cmd) -> Result<(), StoreError> {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        match &*tx {
            Some(tx) => tx.send(cmd).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let n = shared.readers.len();
            let start = rand::random_range(0..n);
            for i in 0..n {
                if let Ok(conn) = shared.readers[(start + i) % n].try_lock() {
                    return f(&conn);
                }
            }
            let conn = shared.readers[start]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("reader task failed: {e}")))?
    }

    fn cached(&self, run_id: &RunId) -> Option<CachedRun> {
        self.shared
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(run_id)
            .cloned()
    }

    /// The position of a run without a log.
    fn empty_info(&self, run_id: &RunId) -> RunInfo {
        RunInfo {
            epoch: derive_epoch(&self.shared.seed, run_id),
            head_seq: 0,
            terminal: false,
        }
    }

    /// Caches a run state read from the database, unless the writer got there first
    /// (its state is never older).
    fn remember(&self, run_id: &RunId, run: CachedRun) -> CachedRun {
        let mut cache = self.shared.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.entry(run_id.clone()).or_insert(run).clone()
    }
}

fn read_events(
    conn: &Connection,
    run_id: &RunId,
    after: u64,
    up_to: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, flush, json FROM events WHERE run_id = ?1 AND seq > ?2 AND seq <= ?3 \
             ORDER BY seq LIMIT ?4",
        )
        .map_err(db_err)?;
    let to_i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(
            params![
                run_id.as_str(),
                to_i(after),
                to_i(up_to),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| {
                Ok(StoredEvent {
                    seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    flush: r.get::<_, i64>(1)? != 0,
                    json: RawEvent::from_encoded(r.get::<_, String>(2)?),
                })
            },
        )
        .map_err(db_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
}

/// The run's stored snapshot and the highest seq trimmed below it (0: none).
fn read_stored_snapshot(
    conn: &Connection,
    run_id: &RunId,
) -> Result<Option<(RunSnapshot, u64)>, StoreError> {
    conn.prepare_cached("SELECT json, trimmed FROM snapshots WHERE run_id = ?1")
        .map_err(db_err)?
        .query_row(params![run_id.as_str()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .optional()
        .map_err(db_err)?
        .map(|(json, trimmed)| {
            let snap: RunSnapshot = serde_json::from_str(&json).map_err(|e| {
                StoreError::Unavailable(format!("corrupt snapshot of {run_id}: {e}"))
            })?;
            Ok((snap, u64::try_from(trimmed).unwrap_or(0)))
        })
        .transpose()
}

/// The highest seq of the run that retention deleted (0: none).
fn read_trimmed(conn: &Connection, run_id: &RunId) -> Result<u64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT trimmed FROM snapshots WHERE run_id = ?1")
        .map_err(db_err)?
        .query_row(params![run_id.as_str()], |r| r.get::<_, i64>(0))
        .optional()
        .map_err(db_err)?
        .map_or(0, |t| u64::try_from(t).unwrap_or(0)))
}

/// Folds the run's snapshot at `head`: from the stored snapshot (or `base`, when it
/// is newer) plus the events after it, in the caller's transaction.
fn fold_snapshot(
    conn: &Connection,
    run_id: &RunId,
    run: &CachedRun,
    base: Option<RunSnapshot>,
) -> Result<RunSnapshot, StoreError> {
    let stored = read_stored_snapshot(conn, run_id)?
        .map(|(s, _)| s)
        .filter(|s| s.epoch == run.epoch && s.as_of_seq <= run.head);
    let mut snap = match (stored, base) {
        (Some(s), Some(b)) if b.as_of_seq > s.as_of_seq => b,
        (Some(s), _) => s,
        (None, Some(b)) => b,
        (None, None) => RunSnapshot::empty(run_id.clone(), run.epoch.clone()),
    };
    while snap.as_of_seq < run.head {
        let chunk = read_events(conn, run_id, snap.as_of_seq, run.head, 10_000)?;
        match chunk.first() {
            Some(first) if first.seq == snap.as_of_seq + 1 => {}
            _ => {
                return Err(StoreError::Unavailable(format!(
                    "the log of run {run_id} misses events after seq {} below its snapshot",
                    snap.as_of_seq
                )));
            }
        }
        for e in &chunk {
            let ev = e
                .json
                .decode()
                .map_err(|e| StoreError::Unavailable(format!("corrupt event: {e}")))?;
            snap.apply(&ev);
        }
    }
    Ok(snap)
}

impl EventStore for SqliteStore {
    fn open_run<'a>(&'a self, run_id: &'a RunId) -> BoxFuture<'a, Result<RunInfo, StoreError>> {
        Box::pin(async move {
            if let Some(c) = self.cached(run_id) {
                return Ok(c.info());
            }
            let id = run_id.clone();
            match self.with_reader(move |c| read_run(c, &id)).await? {
                Some(r) => Ok(self.remember(run_id, r).info()),
                // Nothing is written for a run without a log (`RW-SEC-15`): its first
                // append gives the log this epoch (`derive_epoch`).
                None => Ok(self.empty_info(run_id)),
            }
        })
    }

    fn run_info<'a>(
        &'a self,
        run_id: &'a RunId,
    ) -> BoxFuture<'a, Result<Option<RunInfo>, StoreError>> {
        Box::pin(async move {
            if let Some(c) = self.cached(run_id) {
                return Ok(Some(c.info()));
            }
            let id = run_id.clone();
            let found = self.with_reader(move |c| read_run(c, &id)).await?;
            Ok(match found {
                Some(r) => Some(self.remember(run_id, r).info()),
                // A subscribed run without a log exists for as long as it is watched.
                None if self.shared.hub.watched(run_id) => Some(self.empty_info(run_id)),
                None => None,
            })
        })
    }

    fn append<'a>(
        &'a self,
        run_id: &'a RunId,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<AppendOutcome, StoreError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.send(Cmd::Append {
                run_id: run_id.clone(),
                events,
                reply,
            })?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn read<'a>(
        &'a self,
        run_id: &'a RunId,
        after_seq: u64,
        up_to: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>, StoreError>> {
        Box::pin(async move {
            if after_seq >= up_to || limit == 0 {
                return Ok(Vec::new());
            }
            let id = run_id.clone();
            self.with_reader(move |c| {
                // One read transaction: the trim point and the events agree.
                let tx = c.unchecked_transaction().map_err(db_err)?;
                if read_trimmed(&tx, &id)? > after_seq {
                    return Err(StoreError::NotRetained {
                        run_id: id,
                        after_seq,
                    });
                }
                let events = read_events(&tx, &id, after_seq, up_to, limit)?;
                tx.finish().map_err(db_err)?;
                Ok(events)
            })
            .await
        })
    }

    fn snapshot<'a>(
        &'a self,
        run_id: &'a RunId,
    ) -> BoxFuture<'a, Result<Option<RunSnapshot>, StoreError>> {
        Box::pin(async move {
            if let Some(c) = self.cached(run_id)
                && let Some(s) = c.snapshot
            {
                return Ok(Some(s));
            }
            let id = run_id.clone();
            let folded = self
                .with_reader(move |conn| {
                    let tx = conn.unchecked_transaction().map_err(db_err)?;
                    let Some(run) = read_run(&tx, &id)? else {
                        return Ok(None);
                    };
                    let snap = fold_snapshot(&tx, &id, &run, None)?;
                    tx.finish().map_err(db_err)?;
                    Ok(Some((run, snap)))
                })
                .await?;
            let Some((run, snap)) = folded else {
                return Ok(self.shared.hub.watched(run_id).then(|| {
                    RunSnapshot::empty(run_id.clone(), derive_epoch(&self.shared.seed, run_id))
                }));
            };
            let mut cache = self.shared.cache.lock().unwrap_or_else(|e| e.into_inner());
            let entry = cache.entry(run_id.clone()).or_insert(CachedRun {
                snapshot: None,
                ..run
            });
            if entry.head == snap.as_of_seq && entry.snapshot.is_none() {
                entry.snapshot = Some(snap.clone());
            }
            Ok(Some(snap))
        })
    }

    fn list_runs<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a RunId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ListedRun>, StoreError>> {
        let prefix = prefix.to_owned();
        let after = after.map(|a| a.as_str().to_owned());
        Box::pin(async move {
            self.with_reader(move |c| list_runs(c, &prefix, after.as_deref(), limit))
                .await
        })
    }

    fn live(&self, run_id: &RunId) -> LiveReceiver {
        self.shared.hub.subscribe(run_id)
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let writer_alive = self
                .writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|h| !h.is_finished());
            if !writer_alive {
                return Err(StoreError::Closed);
            }
            for flag in [&self.shared.sync_failed, &self.shared.failing] {
                if let Some(why) = flag.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                    return Err(StoreError::Unavailable(why));
                }
            }
            self.with_reader(|c| {
                c.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
                    .map_err(db_err)
            })
            .await
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            if self.send(Cmd::Close { reply }).is_ok() {
                let _ = rx.await;
            }
            self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
            let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(h) = handle {
                let _ = tokio::task::spawn_blocking(move || h.join()).await;
            }
            let _ = self.maint.send(Maint::Stop);
            let handle = self
                .maintainer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(h) = handle {
                let _ = tokio::task::spawn_blocking(move || h.join()).await;
            }
            Ok(())
        })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Dropping the sender ends the writer loop after the queued commands; the
        // maintenance thread ends at its next wake-up.
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let _ = self.maint.send(Maint::Stop);
    }
}

/// State of a run inside one group transaction.
struct Working {
    run: CachedRun,
    created: bool,
    dirty: bool,
    new_events: Vec<runwire_protocol::Event>,
    stored: Vec<StoredEvent>,
}

enum Reply {
    Append(
        oneshot::Sender<Result<AppendOutcome, StoreError>>,
        Result<AppendOutcome, StoreError>,
    ),
}

impl Reply {
    /// The answer of a command of a committed group.
    fn ready(self) -> Ready {
        match self {
            Reply::Append(reply, r) => Ready::Append(reply, r),
        }
    }
}

fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Cmd>,
    shared: Arc<Shared>,
    max: usize,
    maint: mpsc::Sender<Maint>,
    syncer: Option<(mpsc::Sender<Vec<Ready>>, thread::JoinHandle<()>)>,
) {
    let mut closing: Vec<oneshot::Sender<()>> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut cmds = vec![first];
        while cmds.len() < max {
            match rx.try_recv() {
                Ok(c) => cmds.push(c),
                Err(_) => break,
            }
        }
        let mut work: BTreeMap<RunId, Working> = BTreeMap::new();
        let mut replies = Vec::with_capacity(cmds.len());
        let sync_failed = shared
            .sync_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let applied = apply_group(
            &mut conn,
            &shared,
            cmds,
            sync_failed,
            &mut closing,
            &mut work,
            &mut replies,
        );
        match applied {
            Ok(()) => committed(&shared, &maint, syncer.as_ref(), work, replies),
            Err(e) => rolled_back(&shared, &work, replies, &e),
        }
        if !closing.is_empty() {
            break;
        }
    }
    if let Some((to_sync, handle)) = syncer {
        // Every acknowledgement is out before the store reports itself closed.
        drop(to_sync);
        let _ = handle.join();
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
        tracing::warn!(error = %e, "wal checkpoint at close failed");
    }
    for c in closing {
        let _ = c.send(());
    }
}

/// Applies one group of commands in one immediate transaction and commits it.
fn apply_group(
    conn: &mut Connection,
    shared: &Arc<Shared>,
    cmds: Vec<Cmd>,
    sync_failed: Option<String>,
    closing: &mut Vec<oneshot::Sender<()>>,
    work: &mut BTreeMap<RunId, Working>,
    replies: &mut Vec<Reply>,
) -> Result<(), StoreError> {
    if let Some(why) = sync_failed {
        for cmd in cmds {
            match cmd {
                Cmd::Close { reply } => closing.push(reply),
                // Answered with the group's error below.
                Cmd::Append { reply, .. } => {
                    replies.push(Reply::Append(reply, Err(StoreError::Closed)));
                }
            }
        }
        return Err(StoreError::Unavailable(why));
    }
    // Immediate: take the write lock up front (the maintenance thread writes
    // too), instead of failing to upgrade a read transaction.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    for cmd in cmds {
        match cmd {
            Cmd::Close { reply } => closing.push(reply),
            Cmd::Append {
                run_id,
                events,
                reply,
            } => {
                let r = append_one(&tx, shared, work, &run_id, events);
                let failed = match &r {
                    Err(StoreError::Unavailable(m)) => Some(m.clone()),
                    _ => None,
                };
                replies.push(Reply::Append(reply, r));
                if let Some(m) = failed {
                    return Err(StoreError::Unavailable(m));
                }
            }
        }
    }
    for (run_id, w) in work.iter() {
        if w.created || w.dirty {
            tx.prepare_cached(
                    "INSERT INTO runs (run_id, epoch, head_seq, terminal) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT(run_id) DO UPDATE SET head_seq = excluded.head_seq, terminal = excluded.terminal",
                )
                .map_err(db_err)?
                .execute(params![
                    run_id.as_str(),
                    w.run.epoch.as_str(),
                    i64::try_from(w.run.head).unwrap_or(i64::MAX),
                    i64::from(w.run.terminal)
                ])
                .map_err(db_err)?;
        }
    }
    tx.commit().map_err(db_err)
}

/// After a commit: updates the cache, hands runs to maintenance, publishes the new
/// events and answers the producers (after the fsync when a syncer runs).
fn committed(
    shared: &Shared,
    maint: &mpsc::Sender<Maint>,
    syncer: Option<&(mpsc::Sender<Vec<Ready>>, thread::JoinHandle<()>)>,
    mut work: BTreeMap<RunId, Working>,
    replies: Vec<Reply>,
) {
    shared.commits.fetch_add(1, Ordering::Relaxed);
    shared
        .failing
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    {
        let mut cache = shared.cache.lock().unwrap_or_else(|e| e.into_inner());
        for (run_id, w) in &mut work {
            let entry = cache.entry(run_id.clone()).or_insert_with(|| CachedRun {
                snapshot: None,
                ..w.run.clone()
            });
            entry.epoch = w.run.epoch.clone();
            entry.head = w.run.head;
            entry.terminal = w.run.terminal;
            if entry.head.saturating_sub(entry.maint_at) >= shared.maint_every(run_id) {
                entry.maint_at = entry.head;
                let _ = maint.send(Maint::Run(run_id.clone()));
            }
            if let Some(s) = &mut entry.snapshot {
                for e in &w.new_events {
                    s.apply(e);
                }
                if s.as_of_seq != entry.head {
                    entry.snapshot = None;
                }
            }
        }
    }
    for (run_id, w) in &mut work {
        if !w.stored.is_empty() {
            shared
                .hub
                .publish(run_id, Arc::from(std::mem::take(&mut w.stored)));
        }
    }
    let ready: Vec<Ready> = replies.into_iter().map(|r| r.ready()).collect();
    match syncer {
        // The producers hear back once the syncer fsynced this commit.
        Some((to_sync, _)) => {
            if let Err(mpsc::SendError(ready)) = to_sync.send(ready) {
                let e = StoreError::Unavailable("the WAL syncer stopped".into());
                ready.into_iter().for_each(|r| r.fail(&e));
            }
        }
        None => ready.into_iter().for_each(Ready::send),
    }
}

/// After a failed transaction: nothing of the group is kept, its runs leave the
/// cache, and every producer of the group hears the error.
fn rolled_back(
    shared: &Shared,
    work: &BTreeMap<RunId, Working>,
    replies: Vec<Reply>,
    e: &StoreError,
) {
    tracing::error!(error = %e, "sqlite transaction failed; rolled back");
    *shared.failing.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
    {
        let mut cache = shared.cache.lock().unwrap_or_else(|e| e.into_inner());
        for run_id in work.keys() {
            cache.remove(run_id);
        }
    }
    replies.into_iter().for_each(|r| r.ready().fail(e));
}

/// An answer of a committed group, sent once the commit is as durable as configured.
enum Ready {
    Append(
        oneshot::Sender<Result<AppendOutcome, StoreError>>,
        Result<AppendOutcome, StoreError>,
    ),
}

impl Ready {
    fn send(self) {
        match self {
            Ready::Append(tx, r) => {
                let _ = tx.send(r);
            }
        }
    }

    fn fail(self, e: &StoreError) {
        match self {
            Ready::Append(tx, _) => {
                let _ = tx.send(Err(e.clone()));
            }
        }
    }
}

/// The syncer thread of `synchronous = "full"`: takes the answers of every group
/// committed since its last round, fsyncs the WAL once, then sends them. One fsync
/// covers every commit before it, so the syncer batches as the writer does while the
/// writer goes on committing (and delivering) the next groups.
fn syncer_loop(wal: &Path, rx: mpsc::Receiver<Vec<Ready>>, shared: &Shared) {
    let mut file: Option<(std::fs::File, u64)> = None;
    while let Ok(mut batch) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        if let Err(e) = sync_wal(wal, &mut file) {
            // These commits were delivered already (they survive a server crash, the
            // spec's "durable"), so their producers get their answers as usual; an
            // error now would contradict what subscribers saw (`RW-INGEST-4`). The
            // store stops taking writes instead.
            let why = format!(
                "the WAL {} could not be fsynced ({e}); writes are refused until the server restarts",
                wal.display()
            );
            tracing::error!("{why}");
            *shared.sync_failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            file = None;
        }
        batch.into_iter().for_each(Ready::send);
    }
}

/// fsyncs the WAL file, reopening it if it is not the file held (a new inode).
fn sync_wal(wal: &Path, file: &mut Option<(std::fs::File, u64)>) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(wal)?.ino();
    if file.as_ref().map(|(_, i)| *i) != Some(ino) {
        *file = Some((std::fs::File::open(wal)?, ino));
    }
    match file {
        Some((f, _)) => f.sync_data(),
        None => Ok(()),
    }
}

fn load<'w>(
    tx: &rusqlite::Transaction<'_>,
    shared: &Shared,
    work: &'w mut BTreeMap<RunId, Working>,
    run_id: &RunId,
) -> Result<&'w mut Working, StoreError> {
    if !work.contains_key(run_id) {
        let cached = shared
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(run_id)
            .map(|c| CachedRun {
                snapshot: None,
                ..c.clone()
            });
        let (run, created) = match cached {
            Some(c) => (c, false),
            None => match read_run(tx, run_id)? {
                Some(r) => (r, false),
                None => (
                    CachedRun {
                        // The epoch subscribers of the empty run were told.
                        epoch: derive_epoch(&shared.seed, run_id),
                        head: 0,
                        terminal: false,
                        snapshot: None,
                        maint_at: 0,
                    },
                    true,
                ),
            },
        };
        work.insert(
            run_id.clone(),
            Working {
                run,
                created,
                dirty: false,
                new_events: Vec::new(),
                stored: Vec::new(),
            },
        );
    }
    work.get_mut(run_id)
        .ok_or_else(|| StoreError::Unavailable("run state vanished".into()))
}

fn append_one(
    tx: &rusqlite::Transaction<'_>,
    shared: &Shared,
    work: &mut BTreeMap<RunId, Working>,
    run_id: &RunId,
    events: Vec<NewEvent>,
) -> Result<AppendOutcome, StoreError> {
    let w = load(tx, shared, work, run_id)?;
    let planned = match plan_append(
        run_id,
        &w.run.epoch,
        w.run.head,
        w.run.terminal,
        events,
        |key| {
            tx.prepare_cached(
                "SELECT seq, event_id, fingerprint FROM idempotency WHERE run_id = ?1 AND key = ?2",
            )
            .map_err(db_err)?
            .query_row(params![run_id.as_str(), key], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .optional()
            .map_err(db_err)?
            .map(|(seq, id, fp)| {
                Ok(IdemRecord {
                    seq: u64::try_from(seq).unwrap_or(0),
                    event_id: runwire_protocol::EventId::new(id)
                        .map_err(|e| StoreError::Unavailable(format!("corrupt event id: {e}")))?,
                    fingerprint: fp,
                })
            })
            .transpose()
        },
    ) {
        Ok(p) => p,
        Err(e) => {
            // A refused append creates nothing (`RW-INGEST-8`).
            if w.created && !w.dirty {
                work.remove(run_id);
            }
            return Err(e);
        }
    };
    let appended = planned.new_events.len();
    {
        let mut ins = tx
            .prepare_cached("INSERT INTO events (run_id, seq, flush, json) VALUES (?1, ?2, ?3, ?4)")
            .map_err(db_err)?;
        let mut idem = tx
            .prepare_cached(
                "INSERT INTO idempotency (run_id, key, seq, event_id, fingerprint) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(db_err)?;
        for (event, key, raw) in &planned.new_events {
            let s = StoredEvent::from_event_with_data(event, raw.as_ref());
            let seq = i64::try_from(event.seq).unwrap_or(i64::MAX);
            ins.execute(params![
                run_id.as_str(),
                seq,
                i64::from(s.flush),
                s.json.as_str()
            ])
            .map_err(db_err)?;
            if let Some((k, fp)) = key {
                idem.execute(params![
                    run_id.as_str(),
                    k,
                    seq,
                    event.event_id.as_str(),
                    fp
                ])
                .map_err(db_err)?;
            }
            w.stored.push(s);
        }
    }
    if appended > 0 {
        w.dirty = true;
        if let Some((last, _, _)) = planned.new_events.last() {
            w.run.head = last.seq;
        }
        w.run.terminal = planned.terminal;
        w.new_events
            .extend(planned.new_events.into_iter().map(|(e, _, _)| e));
    }
    Ok(AppendOutcome {
        response: planned.response,
        appended,
    })
}

/// Where the WAL is and how large it may grow (`sqlite.wal_max_bytes`).
struct WalLimits {
    path: std::path::PathBuf,
    max_bytes: u64,
    interval: Duration,
}

/// How long a truncating or restarting checkpoint waits for the writer or a reader
/// before it gives up (and is tried again at the next pass): short, because the
/// writer waits for it meanwhile.
const CHECKPOINT_BUSY: Duration = Duration::from_millis(50);

/// Runs `PRAGMA wal_checkpoint(mode)`: `Ok(true)` when it completed (not busy).
fn checkpoint(conn: &Connection, mode: &str) -> Result<bool, StoreError> {
    let blocking = mode != "PASSIVE";
    if blocking {
        conn.busy_timeout(CHECKPOINT_BUSY).map_err(db_err)?;
    }
    let r = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        r.get::<_, i64>(0)
    });
    if blocking {
        conn.busy_timeout(Duration::from_secs(5)).map_err(db_err)?;
    }
    Ok(r.map_err(db_err)? == 0)
}

/// The WAL's size on disk (0 when it does not exist).
fn wal_size(wal: &Path) -> u64 {
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

/// The maintenance thread (see the module docs): checkpoints, stored snapshots and
/// retention, on its own connection so that appends never wait for them.
///
/// The WAL stays bounded: every pass after commits checkpoints passively (never
/// blocks the writer); when the WAL has grown past `wal_max_bytes` (readers kept
/// passive checkpoints from completing, or appends outran them) it restarts the WAL
/// (`RESTART`: the writer waits for the copy, at most [`CHECKPOINT_BUSY`] for
/// readers), so that the next commit writes from the WAL's start and cuts the file
/// back to `wal_max_bytes` (`journal_size_limit`); and once the writer has been idle
/// for a whole interval it truncates the WAL to zero bytes (`TRUNCATE`).
fn maintenance_loop(
    conn: Connection,
    rx: mpsc::Receiver<Maint>,
    shared: Arc<Shared>,
    wal: &WalLimits,
) {
    let mut checkpointed = 0;
    // Whether the WAL was truncated since the last commit.
    let mut truncated = false;
    loop {
        let mut runs = BTreeSet::new();
        let mut barriers = Vec::new();
        let mut stop = false;
        let mut idle_tick = false;
        let mut take = |m: Maint| match m {
            Maint::Run(r) => {
                runs.insert(r);
            }
            Maint::Barrier(b) => barriers.push(b),
            Maint::Stop => stop = true,
        };
        match rx.recv_timeout(wal.interval) {
            Ok(m) => take(m),
            Err(mpsc::RecvTimeoutError::Disconnected) => take(Maint::Stop),
            Err(mpsc::RecvTimeoutError::Timeout) => idle_tick = true,
        }
        while let Ok(m) = rx.try_recv() {
            take(m);
        }
        if stop {
            break;
        }
        for run_id in runs {
            if let Err(e) = maintain(&conn, &shared, &run_id) {
                tracing::warn!(run_id = %run_id, error = %e, "snapshot or retention pass failed; retried later");
                if let Some(c) = shared
                    .cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(&run_id)
                {
                    // Ask again after the next append.
                    c.maint_at = 0;
                }
            }
        }
        let commits = shared.commits.load(Ordering::Relaxed);
        if commits != checkpointed {
            // Passive: copies what no reader still needs, never blocks the writer.
            match checkpoint(&conn, "PASSIVE") {
                Ok(_) => {
                    checkpointed = commits;
                    truncated = false;
                }
                Err(e) => tracing::warn!(error = %e, "wal checkpoint failed; retried later"),
            }
            if wal_size(&wal.path) > wal.max_bytes
                && let Err(e) = checkpoint(&conn, "RESTART")
            {
                tracing::warn!(error = %e, "wal restart failed; retried later");
            }
        } else if idle_tick && !truncated {
            // No commit for a whole interval: give the WAL's space back.
            match checkpoint(&conn, "TRUNCATE") {
                Ok(done) => truncated = done,
                Err(e) => tracing::warn!(error = %e, "wal truncation failed; retried later"),
            }
        }
        for b in barriers {
            let _ = b.send(());
        }
    }
}

/// Events deleted per retention transaction.
const TRIM_CHUNK: u64 = 5_000;

/// Stores the run's snapshot at its head and trims it to its retention, never past
/// the stored snapshot.
fn maintain(conn: &Connection, shared: &Shared, run_id: &RunId) -> Result<(), StoreError> {
    let cached = shared
        .cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(run_id)
        .and_then(|c| c.snapshot.clone());
    let tx = conn.unchecked_transaction().map_err(db_err)?;
    let Some(run) = read_run(&tx, run_id)? else {
        return Ok(());
    };
    let (stored_at, trimmed) =
        read_stored_snapshot(&tx, run_id)?.map_or((0, 0), |(s, t)| (s.as_of_seq, t));
    // The writer's cached snapshot is committed state, possibly ahead of this read.
    let base = cached.filter(|c| c.epoch == run.epoch);
    let head = run.head.max(base.as_ref().map_or(0, |b| b.as_of_seq));
    let snap = if base.as_ref().is_some_and(|b| b.as_of_seq == head) {
        base.unwrap_or_else(|| RunSnapshot::empty(run_id.clone(), run.epoch.clone()))
    } else {
        fold_snapshot(&tx, run_id, &run, base)?
    };
    tx.finish().map_err(db_err)?;
    // Hand the fold to the writer, which then keeps it current event by event, so
    // the next pass (and every snapshot read) needs no fold. Appends go on meanwhile:
    // catch up with what they committed (a few rounds at most).
    let mut snap = snap;
    for _ in 0..4 {
        let head = {
            let mut cache = shared.cache.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get_mut(run_id) {
                Some(c) if c.epoch == snap.epoch && c.head == snap.as_of_seq => {
                    if c.snapshot.is_none() {
                        c.snapshot = Some(snap.clone());
                    }
                    break;
                }
                Some(c) if c.epoch == snap.epoch && c.head > snap.as_of_seq => c.head,
                _ => break,
            }
        };
        let tx = conn.unchecked_transaction().map_err(db_err)?;
        let target = CachedRun {
            head,
            ..run.clone()
        };
        snap = fold_snapshot(&tx, run_id, &target, Some(snap))?;
        tx.finish().map_err(db_err)?;
    }
    let retain = shared.retention.for_run(run_id);
    let cut = if retain == 0 {
        0
    } else {
        snap.as_of_seq.saturating_sub(retain)
    };
    if snap.as_of_seq <= stored_at && cut <= trimmed {
        return Ok(());
    }
    let json = serde_json::to_string(&snap)
        .map_err(|e| StoreError::Unavailable(format!("cannot encode snapshot: {e}")))?;
    let to_i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    // Immediate: take the write lock up front (rolled back if dropped on an error).
    let conn_tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .map_err(db_err)?;
    conn_tx
        .prepare_cached(
            "INSERT INTO snapshots (run_id, as_of_seq, json, trimmed) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT(run_id) DO UPDATE SET as_of_seq = excluded.as_of_seq, json = excluded.json \
             WHERE excluded.as_of_seq >= snapshots.as_of_seq",
        )
        .map_err(db_err)?
        .execute(params![run_id.as_str(), to_i(snap.as_of_seq), json, to_i(trimmed)])
        .map_err(db_err)?;
    conn_tx.commit().map_err(db_err)?;
    // Trim in short transactions, so the writer never waits long for the lock (a
    // retention set on a large existing log deletes in many steps). Each step moves
    // the trim point and deletes up to it atomically: a reader sees either.
    let mut done = trimmed;
    while done < cut {
        let upto = cut.min(done.saturating_add(TRIM_CHUNK));
        let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
            .map_err(db_err)?;
        tx.prepare_cached("UPDATE snapshots SET trimmed = ?2 WHERE run_id = ?1 AND trimmed < ?2")
            .map_err(db_err)?
            .execute(params![run_id.as_str(), to_i(upto)])
            .map_err(db_err)?;
        tx.prepare_cached("DELETE FROM events WHERE run_id = ?1 AND seq > ?2 AND seq <= ?3")
            .map_err(db_err)?
            .execute(params![run_id.as_str(), to_i(done), to_i(upto)])
            .map_err(db_err)?;
        tx.prepare_cached("DELETE FROM idempotency WHERE run_id = ?1 AND seq > ?2 AND seq <= ?3")
            .map_err(db_err)?
            .execute(params![run_id.as_str(), to_i(done), to_i(upto)])
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        done = upto;
    }
    if cut > trimmed {
        tracing::debug!(run_id = %run_id, through = cut, "trimmed by retention");
    }
    Ok(())
}
