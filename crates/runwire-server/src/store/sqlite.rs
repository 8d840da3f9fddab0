//! The default durable store: one SQLite file in WAL mode, with group commit.
//!
//! # Durability
//!
//! All writes go through one writer thread. It takes every append request waiting in
//! its queue (up to `sqlite.group_commit_max`), applies them in one transaction and
//! commits once; only then does it answer the producers and publish the events to
//! subscribers. With `sqlite.synchronous = "full"` (the default) the commit fsyncs
//! the WAL, so an acknowledged event survives a process crash, an OS crash and power
//! loss. With `"normal"` the WAL is not fsynced at commit: acknowledged events survive
//! a process crash (SIGKILL) but the last commits may be lost on power loss. A failed
//! transaction is rolled back entirely and every request in the group gets
//! `store_unavailable`; producers retry with their idempotency keys.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex, mpsc},
    thread,
};

use runwire_protocol::{Epoch, RunId, RunSnapshot, http::NewEvent};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{
    AppendOutcome, BoxFuture, EventStore, IdemRecord, LiveHub, LiveReceiver, RunInfo, StoreError,
    StoredEvent, new_epoch, plan_append,
};
use crate::config::SqliteConfig;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    head_seq INTEGER NOT NULL,
    terminal INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    flush INTEGER NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
";

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

#[derive(Debug, Clone)]
struct CachedRun {
    epoch: Epoch,
    head: u64,
    terminal: bool,
    snapshot: Option<RunSnapshot>,
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
    Open {
        run_id: RunId,
        reply: oneshot::Sender<Result<RunInfo, StoreError>>,
    },
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
}

/// A durable [`EventStore`] on one SQLite file (see the module docs for durability).
pub struct SqliteStore {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Cmd>>>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
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
            })
        })
        .transpose()
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>, config: &SqliteConfig) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let open_err = |e: rusqlite::Error| {
            StoreError::Unavailable(format!("cannot open {}: {e}", path.display()))
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", config.synchronous.as_str())
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        let mut readers = Vec::new();
        for _ in 0..config.readers.max(1) {
            let r = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(open_err)?;
            r.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(open_err)?;
            readers.push(Mutex::new(r));
        }
        let shared = Arc::new(Shared {
            cache: Mutex::new(BTreeMap::new()),
            hub: LiveHub::default(),
            readers,
        });
        let (tx, rx) = mpsc::channel();
        let s2 = Arc::clone(&shared);
        let max = config.group_commit_max.max(1);
        let writer = thread::Builder::new()
            .name("runwire-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, s2, max))
            .map_err(|e| StoreError::Unavailable(format!("cannot start writer: {e}")))?;
        Ok(Self {
            shared,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
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
                    json: Arc::from(r.get::<_, String>(2)?),
                })
            },
        )
        .map_err(db_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
}

impl EventStore for SqliteStore {
    fn open_run<'a>(&'a self, run_id: &'a RunId) -> BoxFuture<'a, Result<RunInfo, StoreError>> {
        Box::pin(async move {
            if let Some(c) = self.cached(run_id) {
                return Ok(c.info());
            }
            if let Some(info) = self.run_info(run_id).await? {
                return Ok(info);
            }
            let (reply, rx) = oneshot::channel();
            self.send(Cmd::Open {
                run_id: run_id.clone(),
                reply,
            })?;
            rx.await.map_err(|_| StoreError::Closed)?
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
            Ok(found.map(|r| self.remember(run_id, r).info()))
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
            self.with_reader(move |c| read_events(c, &id, after_seq, up_to, limit))
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
                    let mut snap = RunSnapshot::empty(id.clone(), run.epoch.clone());
                    let mut after = 0;
                    while after < run.head {
                        let chunk = read_events(&tx, &id, after, run.head, 10_000)?;
                        let Some(last) = chunk.last() else { break };
                        after = last.seq;
                        for e in &chunk {
                            let ev = runwire_protocol::codec::decode_event(
                                e.json.as_bytes(),
                                usize::MAX,
                            )
                            .map_err(|e| StoreError::Unavailable(format!("corrupt event: {e}")))?;
                            snap.apply(&ev);
                        }
                    }
                    tx.finish().map_err(db_err)?;
                    Ok(Some((run, snap)))
                })
                .await?;
            let Some((run, snap)) = folded else {
                return Ok(None);
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

    fn live(&self, run_id: &RunId) -> LiveReceiver {
        self.shared.hub.subscribe(run_id)
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
            Ok(())
        })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Dropping the sender ends the writer loop after the queued commands.
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// State of a run inside one group transaction.
struct Working {
    run: CachedRun,
    created: bool,
    /// An `Open` command of this group needs the run to exist.
    opened: bool,
    dirty: bool,
    new_events: Vec<runwire_protocol::Event>,
    stored: Vec<StoredEvent>,
}

enum Reply {
    Open(oneshot::Sender<Result<RunInfo, StoreError>>, RunId),
    Append(
        oneshot::Sender<Result<AppendOutcome, StoreError>>,
        Result<AppendOutcome, StoreError>,
    ),
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Cmd>, shared: Arc<Shared>, max: usize) {
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
        let result = (|| -> Result<(), StoreError> {
            let tx = conn.transaction().map_err(db_err)?;
            for cmd in cmds {
                match cmd {
                    Cmd::Close { reply } => closing.push(reply),
                    Cmd::Open { run_id, reply } => {
                        load(&tx, &shared, &mut work, &run_id)?.opened = true;
                        replies.push(Reply::Open(reply, run_id));
                    }
                    Cmd::Append {
                        run_id,
                        events,
                        reply,
                    } => {
                        let r = append_one(&tx, &shared, &mut work, &run_id, events);
                        match r {
                            Err(StoreError::Unavailable(m)) => {
                                return Err(StoreError::Unavailable(m));
                            }
                            r => replies.push(Reply::Append(reply, r)),
                        }
                    }
                }
            }
            for (run_id, w) in &work {
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
        })();
        match result {
            Ok(()) => {
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
                for r in replies {
                    match r {
                        Reply::Open(reply, run_id) => {
                            let info = work.get(&run_id).map(|w| w.run.info());
                            let _ = reply.send(info.ok_or(StoreError::Closed));
                        }
                        Reply::Append(reply, r) => {
                            let _ = reply.send(r);
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "sqlite transaction failed; rolled back");
                {
                    let mut cache = shared.cache.lock().unwrap_or_else(|e| e.into_inner());
                    for run_id in work.keys() {
                        cache.remove(run_id);
                    }
                }
                for r in replies {
                    match r {
                        Reply::Open(reply, _) => {
                            let _ = reply.send(Err(e.clone()));
                        }
                        Reply::Append(reply, _) => {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
        if !closing.is_empty() {
            break;
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
        tracing::warn!(error = %e, "wal checkpoint at close failed");
    }
    for c in closing {
        let _ = c.send(());
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
                        epoch: new_epoch(),
                        head: 0,
                        terminal: false,
                        snapshot: None,
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
                opened: false,
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
            if w.created && !w.opened && !w.dirty {
                work.remove(run_id);
            }
            return Err(e);
        }
    };
    let appended = planned.new_events.len();
    {
        let mut ins = tx
            .prepare_cached(
                "INSERT INTO events (run_id, seq, event_id, flush, json) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(db_err)?;
        let mut idem = tx
            .prepare_cached(
                "INSERT INTO idempotency (run_id, key, seq, event_id, fingerprint) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(db_err)?;
        for (event, key) in &planned.new_events {
            let s = StoredEvent::from_event(event);
            let seq = i64::try_from(event.seq).unwrap_or(i64::MAX);
            ins.execute(params![
                run_id.as_str(),
                seq,
                event.event_id.as_str(),
                i64::from(s.flush),
                &*s.json
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
        if let Some((last, _)) = planned.new_events.last() {
            w.run.head = last.seq;
        }
        w.run.terminal = planned.terminal;
        w.new_events
            .extend(planned.new_events.into_iter().map(|(e, _)| e));
    }
    Ok(AppendOutcome {
        response: planned.response,
        appended,
    })
}
