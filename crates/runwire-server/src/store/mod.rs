//! The event store: a run's append-only log, with seq assignment, idempotency,
//! snapshots and a live feed (spec §2, §4, §8).
//!
//! [`EventStore`] is object safe (`Arc<dyn EventStore>`) so that backends plug in:
//! [`MemoryStore`] for tests, [`SqliteStore`] (the default, durable) and
//! [`RedisStore`], a distributed backend on Redis Streams shared by several server
//! nodes.
//!
//! # Contract every backend keeps
//!
//! - `append` assigns `seq` (gapless from 1, `RW-EVENT-3`) and `event_id` atomically
//!   per run, and resolves only once the events are durable (`RW-INGEST-3`).
//! - Events become visible to `read` and are published on the live feed only after
//!   they are durable, and in seq order per run.
//! - The live feed is a doorbell with data: a subscriber that falls behind
//!   ([`LiveRecv::Lagged`]) or sees a seq jump reads the missing range from `read`.
//!   A multi-node backend publishes what other nodes append (e.g. with `XREAD BLOCK`)
//!   into the same feed.
//! - [`RunInfo::head_seq`] read after subscribing to the live feed never misses an
//!   event: every event above it is published to that subscription.
//!
//! - `list_runs` lists the runs with a log by prefix, in byte order of run id, and
//!   pages strictly after a run id (spec §4.7).
//!
//! The integration test `store_contract` runs this contract (appends, idempotency,
//! the terminal rule, read bounds, retention, the live feed, listings) against all
//! three stores.

use std::{future::Future, pin::Pin, sync::Arc};

use runwire_protocol::{
    Epoch, Event, RunId, RunSnapshot,
    http::{AppendResponse, NewEvent},
    raw::RawEvent,
};
use tokio::sync::broadcast;

mod live;
mod memory;
mod redis;
mod sqlite;

pub use live::LiveHub;
pub use memory::MemoryStore;
pub use redis::{RedisOptions, RedisStore};
pub use sqlite::SqliteStore;

/// A boxed future, so that [`EventStore`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An event as stored: the envelope plus its wire JSON, encoded once and shared by
/// every subscriber and every replay.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The event's seq.
    pub seq: u64,
    /// The event encoded as its JSON envelope.
    pub json: RawEvent,
    /// Whether a batching server must flush it at once (`RW-BATCH-3`).
    pub flush: bool,
}

impl StoredEvent {
    /// Encodes an event.
    pub fn from_event(event: &Event) -> Self {
        Self::from_event_with_data(event, None)
    }

    /// Encodes an event whose `data` is the producer's, kept verbatim when given
    /// (`RW-TYPE-25`).
    pub fn from_event_with_data(event: &Event, data: Option<&serde_json::Value>) -> Self {
        Self {
            seq: event.seq,
            json: RawEvent::encode_with_data(event, data),
            flush: event.payload.flushes_batch(),
        }
    }
}

/// What the live feed delivers.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// Events just made durable, in seq order.
    Events(Arc<[StoredEvent]>),
    /// The run's log was re-created (a new epoch) while it was watched: every open
    /// subscription sends a `reset` with the new log's snapshot (`RW-RESUME-13`).
    Recreated,
    /// The store cannot serve the run's feed any more (its backend is unreachable):
    /// open subscriptions end with `store_unavailable` (close 4105) and the clients
    /// resume elsewhere or later.
    Unavailable(Arc<str>),
}

/// A subscription to a run's live feed.
#[derive(Debug)]
pub struct LiveReceiver {
    rx: broadcast::Receiver<LiveEvent>,
}

/// What [`LiveReceiver::recv`] yields.
#[derive(Debug)]
pub enum LiveRecv {
    /// New events.
    Events(Arc<[StoredEvent]>),
    /// The receiver fell behind and missed some events: read them from the store.
    Lagged,
    /// The run's log was re-created (see [`LiveEvent::Recreated`]).
    Recreated,
    /// The store cannot serve the feed (see [`LiveEvent::Unavailable`]).
    Unavailable(Arc<str>),
    /// The store is closing.
    Closed,
}

impl LiveReceiver {
    /// Wraps a broadcast receiver.
    pub fn new(rx: broadcast::Receiver<LiveEvent>) -> Self {
        Self { rx }
    }

    /// Waits for the next delivery.
    pub async fn recv(&mut self) -> LiveRecv {
        match self.rx.recv().await {
            Ok(LiveEvent::Events(e)) => LiveRecv::Events(e),
            Ok(LiveEvent::Recreated) => LiveRecv::Recreated,
            Ok(LiveEvent::Unavailable(why)) => LiveRecv::Unavailable(why),
            Err(broadcast::error::RecvError::Lagged(_)) => LiveRecv::Lagged,
            Err(broadcast::error::RecvError::Closed) => LiveRecv::Closed,
        }
    }
}

/// A run's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    /// The run's epoch.
    pub epoch: Epoch,
    /// The last seq (0 = no events).
    pub head_seq: u64,
    /// Whether the run has a terminal status.
    pub terminal: bool,
}

/// One run of a listing (spec §4.7, [`EventStore::list_runs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRun {
    /// The run.
    pub run_id: RunId,
    /// Its position at the time of the read.
    pub info: RunInfo,
}

/// Whether `id` sorts after every run id that starts with `prefix`: in byte order the
/// ids with a prefix are one contiguous range starting at the prefix itself, so a
/// listing stops at the first id past it.
pub(crate) fn past_prefix(id: &str, prefix: &str) -> bool {
    id > prefix && !id.starts_with(prefix)
}

/// The result of an append.
#[derive(Debug, Clone)]
pub struct AppendOutcome {
    /// The answer for the producer.
    pub response: AppendResponse,
    /// How many events were newly appended (not idempotent duplicates).
    pub appended: usize,
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The run has a terminal status; `index` is the first refused event.
    #[error("run {run_id} has a terminal status and accepts no more events")]
    RunTerminal {
        /// The run.
        run_id: RunId,
        /// The index of the first refused event in the request.
        index: usize,
    },
    /// An idempotency key was reused with a different event.
    #[error(
        "idempotency key {key:?} was already used for a different event (seq {seq}) of run {run_id}"
    )]
    IdempotencyConflict {
        /// The run.
        run_id: RunId,
        /// The key.
        key: String,
        /// The index of the conflicting event in the request.
        index: usize,
        /// The seq the key was first used for.
        seq: u64,
    },
    /// The run would exceed the largest seq.
    #[error("run {0} reached the largest sequence number")]
    SeqExhausted(RunId),
    /// Events the read asked for were trimmed by the store's retention
    /// (`RW-INGEST-17`, `RW-RESUME-5`): the reader needs a snapshot instead.
    #[error("events of run {run_id} after seq {after_seq} are no longer retained")]
    NotRetained {
        /// The run.
        run_id: RunId,
        /// The cursor the read started from.
        after_seq: u64,
    },
    /// The backend failed; the operation did not happen (or, for appends, may be
    /// retried with the same idempotency keys).
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// The store is closed.
    #[error("event store is closed")]
    Closed,
}

/// An append-only, per-run event log (see the module docs for the contract).
pub trait EventStore: Send + Sync + 'static {
    /// Returns the run's position for a subscription (`RW-SUB-2`, `RW-EVENT-11`). A
    /// run without events is answered with head 0 and the epoch its first append will
    /// give its log (derived from the store's epoch seed), and nothing is written: subscribing to runs
    /// that do not exist costs no storage (`RW-SEC-10`, `RW-SEC-15`).
    fn open_run<'a>(&'a self, run_id: &'a RunId) -> BoxFuture<'a, Result<RunInfo, StoreError>>;

    /// Returns the run's position, or `None` if the run does not exist: it has no
    /// log and no local subscription (a subscribed run without events is answered
    /// as [`EventStore::open_run`] answers it).
    fn run_info<'a>(
        &'a self,
        run_id: &'a RunId,
    ) -> BoxFuture<'a, Result<Option<RunInfo>, StoreError>>;

    /// Appends events atomically (all or none), assigning seq, event id and (if absent)
    /// time; resolves once durable. Events whose idempotency key the run has seen with
    /// the same content are not appended again; their original assignment is returned.
    fn append<'a>(
        &'a self,
        run_id: &'a RunId,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<AppendOutcome, StoreError>>;

    /// Reads events with `after_seq < seq <= up_to`, at most `limit`, in seq order.
    /// The answer starts at `after_seq + 1` or is empty (then `after_seq >= up_to` or
    /// the run's head is at most `after_seq`); when the event after `after_seq` was
    /// trimmed by retention it is [`StoreError::NotRetained`].
    fn read<'a>(
        &'a self,
        run_id: &'a RunId,
        after_seq: u64,
        up_to: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>, StoreError>>;

    /// The run's folded state, or `None` if the run does not exist. `as_of_seq` is a
    /// consistent position: it includes exactly the events up to it.
    fn snapshot<'a>(
        &'a self,
        run_id: &'a RunId,
    ) -> BoxFuture<'a, Result<Option<RunSnapshot>, StoreError>>;

    /// Lists the runs that have a log (at least one event) whose id starts with
    /// `prefix` and is greater than `after`, in byte order of run id, at most `limit`
    /// of them, each with its position at the time of the read (spec §4.7,
    /// `RW-INGEST-26`). A run subscribed to without a log is not listed
    /// (`RW-SEC-15`). Authorization is the caller's.
    fn list_runs<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a RunId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ListedRun>, StoreError>>;

    /// Subscribes to the run's live feed. Call before reading the head so that no
    /// event falls between the two.
    fn live(&self, run_id: &RunId) -> LiveReceiver;

    /// Checks that the backend answers, for `GET /healthz` (`RW-INGEST-22`): `Err`
    /// when appends or reads would fail now.
    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Makes everything acknowledged durable and stops accepting writes.
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// Stable 64-bit FNV-1a of the event's type and data, used for idempotency checks.
pub(crate) fn fingerprint(e: &NewEvent) -> String {
    let mut text = String::new();
    text.push_str(e.payload.event_type());
    text.push('\n');
    // Type and data only, compared as JSON values (`RW-INGEST-5`): serde_json's map
    // is ordered, so equal values print equally.
    text.push_str(&e.payload.data_value().to_string());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A fresh random epoch seed: 128 random bits as 32 hexadecimal digits.
pub(crate) fn new_epoch_seed() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The epoch a run without a log gets from a store whose epoch seed is `seed`: the
/// first 16 hexadecimal digits (64 bits) of SHA-1(`seed` ‖ `"\n"` ‖ run id).
///
/// Why this is safe (spec §2.3, `RW-EVENT-10`, `RW-SEC-10`, `RW-SEC-15`): a
/// subscription to a run without events is told this epoch without anything being
/// written, and the run's first append creates its log with the same epoch, so a
/// client that resumes with the cursor (epoch, 0) gets a replay from seq 1, never a
/// skipped event (`after_seq` 0 is the start of every log). An epoch only has to
/// tell logs *with events* apart, and each store makes sure that a derived epoch
/// never names a second log with events: the seed is drawn once per store (the
/// SQLite file keeps it, a memory store draws one per process, Redis keeps one for
/// every node and mixes in the key expiry period, see [`RedisStore`]), so a store
/// that lost its data derives different epochs; a run whose log existed before gets
/// a random epoch, never the derived one again.
pub(crate) fn derive_epoch(seed: &str, run_id: &RunId) -> Epoch {
    let mut h = sha1_smol::Sha1::new();
    h.update(seed.as_bytes());
    h.update(b"\n");
    h.update(run_id.as_str().as_bytes());
    let hex = h.digest().to_string();
    Epoch::new(&hex[..16]).expect("16 hex digits are a valid epoch")
}

/// A fresh random epoch.
pub(crate) fn new_epoch() -> Epoch {
    let s = uuid::Uuid::new_v4().simple().to_string();
    Epoch::new(&s[..16]).expect("16 hex digits are a valid epoch")
}

/// A fresh globally unique event id (UUIDv7: time ordered).
pub(crate) fn new_event_id() -> runwire_protocol::EventId {
    runwire_protocol::EventId::new(uuid::Uuid::now_v7().to_string())
        .expect("a UUID is printable ASCII")
}

/// Opens the store named by `spec`: `memory`, `sqlite:PATH`,
/// `redis://HOST:PORT[/DB][?options]` or, for a Redis Cluster,
/// `redis-cluster://HOST:PORT[,HOST:PORT…][?options]` (see [`RedisStore`]; a Redis
/// that does not answer is an error here, so a server fails at start).
pub fn open_store(
    spec: &str,
    config: &crate::ServerConfig,
) -> Result<Arc<dyn EventStore>, StoreError> {
    if spec == "memory" {
        return Ok(Arc::new(MemoryStore::with_retention(
            config.retention.clone(),
        )));
    }
    if let Some(path) = spec.strip_prefix("sqlite:") {
        if path.is_empty() {
            return Err(StoreError::Unavailable(
                "sqlite store needs a path: sqlite:PATH".into(),
            ));
        }
        return Ok(Arc::new(SqliteStore::open_with(
            path,
            &config.sqlite,
            config.retention.clone(),
        )?));
    }
    if [
        "redis://",
        "rediss://",
        "redis+unix://",
        "unix://",
        "redis-cluster://",
    ]
    .iter()
    .any(|p| spec.starts_with(p))
    {
        return Ok(Arc::new(RedisStore::open_with(
            spec,
            config.replay_window_events,
            config.retention.clone(),
        )?));
    }
    Err(StoreError::Unavailable(format!(
        "unknown store {spec:?}: expected memory, sqlite:PATH, redis://HOST:PORT[/DB] or redis-cluster://HOST:PORT[,HOST:PORT…]"
    )))
}

/// An idempotency record: the key's original assignment and event fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdemRecord {
    pub(crate) seq: u64,
    pub(crate) event_id: runwire_protocol::EventId,
    pub(crate) fingerprint: String,
}

/// The outcome of planning an append against a run's current state.
#[derive(Debug)]
pub(crate) struct AppendPlan {
    pub(crate) response: AppendResponse,
    /// The new events, their idempotency record (key, fingerprint) and the producer's
    /// `data` to store verbatim (`RW-TYPE-25`).
    pub(crate) new_events: Vec<PlannedEvent>,
    pub(crate) terminal: bool,
}

/// One event a planned append adds: the event, its idempotency record (key,
/// fingerprint) if it has a key, and the producer's `data` to store verbatim.
pub(crate) type PlannedEvent = (Event, Option<(String, String)>, Option<serde_json::Value>);

/// Assigns seq, event id and time to `events` against a run at `head`, applying
/// idempotency (`RW-INGEST-5`) and the terminal rule (`RW-INGEST-6`). Pure: the caller
/// commits the result.
pub(crate) fn plan_append(
    run_id: &RunId,
    epoch: &Epoch,
    head: u64,
    terminal: bool,
    events: Vec<NewEvent>,
    mut lookup: impl FnMut(&str) -> Result<Option<IdemRecord>, StoreError>,
) -> Result<AppendPlan, StoreError> {
    use runwire_protocol::{Timestamp, http::AppendedEvent};
    let mut next = head;
    let mut terminal = terminal;
    let mut local: std::collections::BTreeMap<String, IdemRecord> = Default::default();
    let mut out = Vec::with_capacity(events.len());
    let mut new_events = Vec::with_capacity(events.len());
    let now = Timestamp::now();
    for (index, e) in events.into_iter().enumerate() {
        let fp = e.idempotency_key.as_ref().map(|_| fingerprint(&e));
        if let (Some(key), Some(fp)) = (&e.idempotency_key, &fp) {
            let seen = match local.get(key) {
                Some(r) => Some(r.clone()),
                None => lookup(key)?,
            };
            if let Some(r) = seen {
                if &r.fingerprint != fp {
                    return Err(StoreError::IdempotencyConflict {
                        run_id: run_id.clone(),
                        key: key.clone(),
                        index,
                        seq: r.seq,
                    });
                }
                out.push(AppendedEvent {
                    seq: r.seq,
                    event_id: r.event_id,
                    duplicate: true,
                });
                continue;
            }
        }
        if terminal {
            return Err(StoreError::RunTerminal {
                run_id: run_id.clone(),
                index,
            });
        }
        if next >= runwire_protocol::MAX_SEQ {
            return Err(StoreError::SeqExhausted(run_id.clone()));
        }
        next += 1;
        let raw = e.raw_data;
        let event = Event {
            event_id: new_event_id(),
            run_id: run_id.clone(),
            seq: next,
            time: e.time.unwrap_or_else(|| now.clone()),
            payload: e.payload,
        };
        if event.payload.is_terminal() {
            terminal = true;
        }
        out.push(AppendedEvent {
            seq: next,
            event_id: event.event_id.clone(),
            duplicate: false,
        });
        let idem = match (e.idempotency_key, fp) {
            (Some(k), Some(fp)) => {
                local.insert(
                    k.clone(),
                    IdemRecord {
                        seq: next,
                        event_id: event.event_id.clone(),
                        fingerprint: fp.clone(),
                    },
                );
                Some((k, fp))
            }
            _ => None,
        };
        new_events.push((event, idem, raw));
    }
    let first_seq = out.first().map_or(head, |a| a.seq);
    let last_seq = out.last().map_or(head, |a| a.seq);
    Ok(AppendPlan {
        response: AppendResponse {
            run_id: run_id.clone(),
            epoch: epoch.clone(),
            first_seq,
            last_seq,
            events: out,
        },
        new_events,
        terminal,
    })
}
