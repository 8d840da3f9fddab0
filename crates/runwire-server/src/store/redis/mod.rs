//! A distributed [`EventStore`] on Redis Streams, so that several `runwire serve`
//! nodes share one log and a client may resume on any node (`RW-EVENT-1`,
//! `RW-INGEST-2`, `RW-RESUME-1`, spec §2, §4, §8).
//!
//! # Data layout
//!
//! Every key of a run carries the run id as a Redis Cluster hash tag, so that one
//! Lua script can touch all of them (`PREFIX` defaults to `rw`):
//!
//! | key | type | what |
//! |---|---|---|
//! | `PREFIX:{RUN}:m` | hash | `epoch`, `head` (last seq), `term` (terminal status seen), `snap` (seq of the stored snapshot) |
//! | `PREFIX:{RUN}:s` | stream | one entry per event, id `<seq>-0`, fields `j` (the envelope JSON), `f` (flushes a batch), `k` (idempotency key) |
//! | `PREFIX:{RUN}:i` | hash | idempotency key → `"<seq> <event_id> <fingerprint>"` |
//! | `PREFIX:{RUN}:n` | string | the stored snapshot (`RunSnapshot` JSON) at `snap` |
//! | `PREFIX:{RUN}:c` | sharded channel | with a cluster: the run's doorbell, its head after each append |
//! | `PREFIX:epoch-seed` | string | the epoch seed every node shares (set once) |
//! | `PREFIX:{#runs}` | sorted set | the ids of the runs with a log, for listings (`index`, spec §4.7) |
//!
//! No command or script names keys of two runs, so everything works on a Redis
//! Cluster (`redis-cluster://HOST:PORT,…`): a run's keys are in one slot, the seed
//! and the run index are keys of their own.
//!
//! # Epochs of runs without a log
//!
//! A run's keys exist from its first append. A subscription to a run without a log
//! writes nothing (`RW-SEC-15`): a read-only script answers head 0 and the epoch the
//! first append will give the log, `SHA-1(seed ":" period "\n" RUN)` cut to 16 hex
//! digits, where `period` is Redis's clock (`TIME`) divided by the key expiry
//! (`ttl_secs`; 0 without expiry). Every node computes it in Redis from the one seed,
//! so all nodes agree on it. A run's keys expire `ttl_secs` after its last append,
//! so never in the period the log was created in: a log that expired and is created
//! again gets another epoch (`RW-EVENT-10`). A log found damaged (a head without its
//! stream, a stream without its head) is re-created with a random epoch.
//!
//! # Appends
//!
//! One Lua script per append request checks every idempotency key
//! (`RW-INGEST-5`, `RW-INGEST-6`), then the terminal flag (`RW-INGEST-10`,
//! `RW-INGEST-11`) and the largest seq (`RW-EVENT-4`), and only when the whole
//! request is accepted writes it: `XADD` with the explicit id `<seq>-0` per event,
//! the idempotency records and the new head (`RW-INGEST-8`). Redis runs a script
//! atomically, so producers on any number of nodes get one gapless sequence per run
//! (`RW-EVENT-3`, `RW-INGEST-2`). The node builds each envelope's JSON around the
//! seq (`prefix ‖ seq ‖ suffix`, a [`SeqTemplate`]), so the script never parses JSON.
//!
//! # Durability
//!
//! An append is acknowledged only after the script returned successfully
//! (`RW-INGEST-3`), so an acknowledged event is in Redis; what survives a Redis
//! crash is Redis's persistence: with `appendonly yes` and `appendfsync always`
//! Redis fsyncs the AOF before it replies to any client, so an acknowledged event
//! survives a crash of Redis, of the machine and a power loss, and no reader (on any
//! node) sees an event before it is on disk (`RW-INGEST-4`). With `appendfsync
//! everysec` the last second of acknowledged events can be lost when Redis (not the
//! node) crashes. With `wait_replicas=N` the node also runs `WAIT N` and answers
//! `store_unavailable` unless N replicas confirmed the write (the producer retries
//! with the same idempotency keys and gets the original assignment). A failed or
//! timed-out script answers `store_unavailable`: never a false acknowledgement.
//!
//! # Live fan-out across nodes
//!
//! Each node runs one reader task with its own connection: `XREAD BLOCK` over the
//! streams of the runs it has local subscribers for, from the last seq it published
//! per run. Whatever any node appends reaches every node from the stream itself; a
//! connection that drops is re-established and the reader continues from its
//! cursors, so nothing is missed. A newly watched run interrupts the blocking read
//! with `CLIENT UNBLOCK`. When Redis cannot be reached, the reader rings every local
//! subscription with a seq jump, which makes the subscription read from the store,
//! fail and close with `store_unavailable` (4105); clients back off and resume.
//! A run that had no log when it was first watched gets its first events through
//! the feed once the log's epoch is checked against the one its subscribers were
//! told, so a node's subscribers never each read them from Redis.
//!
//! A cluster refuses one `XREAD` over streams of several slots: there the append
//! script rings the run's doorbell (`SPUBLISH` of the new head on its sharded
//! channel) and the reader, subscribed to the channels of its watched runs, reads
//! the stream from its cursor (`shards`); after a lost connection, and every
//! `block_ms` while idle, it reads every watched stream, so a lost doorbell loses
//! nothing.
//!
//! # Snapshots and retention
//!
//! Any node folds a snapshot from the stored snapshot plus the stream entries after
//! it, read with the head in one script (a consistent position, `RW-RESUME-2`), and
//! stores it back every `snapshot_every` events. Retention: a stream keeps at least
//! `retain_events` events (default: the replay window plus 10 %) and never trims past
//! the stored snapshot, so every cursor inside the replay window replays and a reset
//! always has its snapshot; idempotency records are deleted with their events. A run
//! that the server's `[retention]` names keeps that many events instead (also fewer
//! than the window), with a snapshot stored every tenth of it. A
//! run's keys expire `ttl_secs` after its last append (default 7 days) unless a node
//! is watching it.
//!
//! # Files
//!
//! This file holds the store and its appends, reads and live feed; `options` the URL
//! options, `pool` the command connection (one Redis or a cluster), `scripts` the
//! Lua scripts (one `.lua` file each) and a run's keys, `index` the run index of
//! listings, `reader` the reader task
//! (`XREAD` on one Redis), `shards` its cluster variant (doorbells), `snapshot`
//! snapshots and retention, `reply` the parsing of Redis replies.

mod index;
mod options;
mod pool;
mod reader;
mod reply;
mod scripts;
mod shards;
mod snapshot;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{AsyncConnectionConfig, RedisError, Value};
use runwire_protocol::{
    Epoch, Event, EventId, RunId, RunSnapshot, http::NewEvent, raw::SeqTemplate,
};
use tokio::sync::{Notify, broadcast};

use crate::config::RetentionConfig;

pub use options::RedisOptions;
use options::{cluster_nodes, parse_url, redact};
use pool::{Pool, Target};
use reader::{reader_loop, recreated};
use reply::{arr, corrupt, epoch_of, parse_entries, s_at, u_at, value_str};
use scripts::{Keys, Scripts};

use super::{
    AppendOutcome, BoxFuture, EventStore, ListedRun, LiveEvent, LiveReceiver, RunInfo, StoreError,
    StoredEvent, fingerprint, new_epoch, new_event_id,
};

/// A run a node has local subscribers for.
struct Watch {
    tx: broadcast::Sender<LiveEvent>,
    /// `None` until the reader fixed its position.
    pos: Option<WatchPos>,
    /// The epoch this node's subscribers were told (by `open_run`/`run_info`), so
    /// that a log that vanished before the reader first looked is still noticed.
    seen_epoch: Option<String>,
    /// Whether `seen_epoch` came from a stored log (not derived for a run without
    /// one): finding no log later means Redis lost it.
    seen_stored: bool,
}

#[derive(Debug, Clone)]
struct WatchPos {
    /// The last seq published.
    cursor: u64,
    /// The run's epoch when the position was fixed (`None`: the run did not exist).
    epoch: Option<String>,
}

const LIVE_CAPACITY: usize = 4096;

/// Where a node's live feed comes from (module docs, "Live fan-out across nodes").
enum Feed {
    /// One Redis: `XREAD BLOCK` over every watched run's stream.
    Xread(redis::Client),
    /// A Redis Cluster (these seed nodes): a doorbell per append on the run's sharded
    /// pub/sub channel, then `XRANGE` of its stream.
    Shards(Vec<String>),
}

/// The most snapshots a node caches.
const SNAPSHOT_CACHE: usize = 10_000;

/// Stream entries read per step (replay chunks, snapshot folds, reader).
const READ_COUNT: usize = 1_000;

struct Inner {
    opts: RedisOptions,
    retention: RetentionConfig,
    url: String,
    pool: Pool,
    /// Where the live feed comes from.
    feed: Feed,
    scripts: Scripts,
    watches: Mutex<BTreeMap<RunId, Watch>>,
    /// Bumped whenever a run joins or leaves `watches` (under its lock), so that the
    /// cluster reader re-syncs its channel subscriptions only when the set changed
    /// instead of comparing every watched run on every doorbell.
    members: AtomicU64,
    wake: Notify,
    stop: Notify,
    closed: AtomicBool,
    snapshots: Mutex<BTreeMap<RunId, RunSnapshot>>,
    compacting: Mutex<BTreeSet<RunId>>,
    reader_started: AtomicBool,
    /// The epoch seed all nodes share (`PREFIX:epoch-seed`, module docs), as this
    /// node last read it.
    seed: Mutex<String>,
}

/// The Redis Streams [`EventStore`] (see the module docs): several server nodes
/// share one log per run.
pub struct RedisStore {
    inner: Arc<Inner>,
    reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.url)
            .field("options", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Opens the store at `url` (`redis://HOST:PORT[/DB][?options]`, see
    /// [`RedisOptions`]) for a server whose replay window is `replay_window_events`.
    /// Connects once to check that Redis answers, so that a server with an
    /// unreachable Redis fails at start with a clear error.
    pub fn open(url: &str, replay_window_events: u64) -> Result<Self, StoreError> {
        Self::open_with(url, replay_window_events, RetentionConfig::default())
    }

    /// As [`RedisStore::open`], with the server's `[retention]` settings: a run that
    /// a rule (or a nonzero `retention.events`) names keeps at least that many
    /// events, trimmed in steps of a tenth, below the replay window too; every other
    /// run keeps the URL's `retain_events`.
    pub fn open_with(
        url: &str,
        replay_window_events: u64,
        retention: RetentionConfig,
    ) -> Result<Self, StoreError> {
        let (base, opts) = parse_url(url, replay_window_events)?;
        let shown = redact(&base);
        let connect = Duration::from_millis(opts.connect_timeout_ms);
        let timeout = Duration::from_millis(opts.timeout_ms);
        let (target, feed, seed) = match cluster_nodes(&base)? {
            None => {
                let client = redis::Client::open(base.as_str()).map_err(|e| {
                    StoreError::Unavailable(format!("invalid redis URL {shown}: {e}"))
                })?;
                let mut sync = check_node(&client, &shown, &opts, (6, 2))?;
                let seed = read_seed(&mut sync, &shown, &opts.prefix)?;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(connect))
                    .set_response_timeout(Some(timeout));
                (
                    Target::Single(client.clone(), config),
                    Feed::Xread(client),
                    seed,
                )
            }
            Some(nodes) => {
                for n in &nodes {
                    let client = redis::Client::open(n.as_str()).map_err(|e| {
                        StoreError::Unavailable(format!("invalid redis URL {shown}: {e}"))
                    })?;
                    // Sharded pub/sub (the live feed's doorbells) needs Redis 7.
                    check_node(&client, &redact(n), &opts, (7, 0))?;
                }
                let client = cluster_client(&nodes, &opts, None)?;
                let mut sync = client.get_connection().map_err(|e| {
                    StoreError::Unavailable(format!("cannot connect to redis cluster {shown}: {e}"))
                })?;
                let seed = read_seed(&mut sync, &shown, &opts.prefix)?;
                (Target::Cluster(client), Feed::Shards(nodes), seed)
            }
        };
        let inner = Arc::new(Inner {
            pool: Pool::new(target, shown.clone()),
            feed,
            url: shown,
            opts,
            retention,
            scripts: Scripts::new(),
            watches: Mutex::new(BTreeMap::new()),
            members: AtomicU64::new(0),
            wake: Notify::new(),
            stop: Notify::new(),
            closed: AtomicBool::new(false),
            snapshots: Mutex::new(BTreeMap::new()),
            compacting: Mutex::new(BTreeSet::new()),
            reader_started: AtomicBool::new(false),
            seed: Mutex::new(seed),
        });
        let store = Self {
            inner,
            reader: Mutex::new(None),
        };
        store.ensure_reader();
        Ok(store)
    }

    /// The options in effect.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.opts
    }

    /// Starts the reader task once a tokio runtime is available.
    fn ensure_reader(&self) {
        if self.inner.reader_started.load(Ordering::Acquire) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self
            .inner
            .reader_started
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let task = handle.spawn(reader_loop(Arc::clone(&self.inner)));
            *self.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        }
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        if let Some(t) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }
}

/// Connects to one Redis and checks it: it answers, its version is at least `least`
/// (when `INFO` is allowed; some managed services restrict it), and it is durable
/// (a warning otherwise).
fn check_node(
    client: &redis::Client,
    shown: &str,
    opts: &RedisOptions,
    least: (u32, u32),
) -> Result<redis::Connection, StoreError> {
    let connect = Duration::from_millis(opts.connect_timeout_ms);
    let mut sync = client
        .get_connection_with_timeout(connect)
        .map_err(|e| StoreError::Unavailable(format!("cannot connect to redis at {shown}: {e}")))?;
    let _ = sync.set_read_timeout(Some(Duration::from_millis(opts.timeout_ms)));
    let _ = sync.set_write_timeout(Some(Duration::from_millis(opts.timeout_ms)));
    let _: String = redis::cmd("PING")
        .query(&mut sync)
        .map_err(|e| StoreError::Unavailable(format!("redis at {shown} did not answer: {e}")))?;
    let info: Result<String, _> = redis::cmd("INFO").arg("server").query(&mut sync);
    if let Some(version) = info.ok().and_then(|i| {
        i.lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_owned())
    }) {
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) < least {
            return Err(StoreError::Unavailable(format!(
                "redis at {shown} is version {version}; the redis store needs {}.{} or later (XTRIM MINID, CLIENT UNBLOCK; SPUBLISH with a cluster)",
                least.0, least.1
            )));
        }
    }
    let aof: Result<Vec<String>, _> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("append*")
        .query(&mut sync);
    if let Ok(kv) = aof {
        let get = |k: &str| {
            kv.chunks(2)
                .find(|c| c.first().map(String::as_str) == Some(k))
                .and_then(|c| c.get(1).cloned())
        };
        let (on, fsync) = (get("appendonly"), get("appendfsync"));
        if on.as_deref() != Some("yes") || fsync.as_deref() != Some("always") {
            tracing::warn!(
                redis = shown,
                appendonly = on.as_deref().unwrap_or("?"),
                appendfsync = fsync.as_deref().unwrap_or("?"),
                "redis is not configured with appendonly yes + appendfsync always: acknowledged events may be lost if redis crashes (see docs/scale-out.md)"
            );
        }
    }
    Ok(sync)
}

/// The epoch seed: the first node to start sets it, every node reads it.
fn read_seed(
    sync: &mut dyn redis::ConnectionLike,
    shown: &str,
    prefix: &str,
) -> Result<String, StoreError> {
    let seed_key = format!("{prefix}:epoch-seed");
    let seed_err = |e: RedisError| StoreError::Unavailable(format!("redis at {shown}: {e}"));
    let _: Option<String> = redis::cmd("SET")
        .arg(&seed_key)
        .arg(super::new_epoch_seed())
        .arg("NX")
        .query(sync)
        .map_err(seed_err)?;
    redis::cmd("GET")
        .arg(&seed_key)
        .query::<Option<String>>(sync)
        .map_err(seed_err)?
        .ok_or_else(|| StoreError::Unavailable(format!("redis at {shown} lost {seed_key}")))
}

/// A cluster client for the seed `nodes`, with the store's timeouts. `push` receives
/// the sharded pub/sub messages (RESP3) of the live feed (the reader's client, which
/// only reads, and follows redirections and reconnects on its own). Without `push`
/// the client is the command connection's, which never sends a request twice: the
/// library's retry after a dropped connection could append an event without an
/// idempotency key twice, so a failed command fails (`store_unavailable`, producers
/// retry with their keys), and the client rebuilds its slot map for the next one.
fn cluster_client(
    nodes: &[String],
    opts: &RedisOptions,
    push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> Result<redis::cluster::ClusterClient, StoreError> {
    let mut b = redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(Duration::from_millis(opts.connect_timeout_ms))
        .response_timeout(Duration::from_millis(opts.timeout_ms))
        .use_protocol(redis::ProtocolVersion::RESP3);
    b = match push {
        Some(tx) => b.push_sender(tx),
        None => b.retries(0),
    };
    b.build().map_err(|e| {
        StoreError::Unavailable(format!(
            "invalid redis cluster URL {}: {e}",
            redact(&nodes.join(","))
        ))
    })
}

impl Inner {
    fn keys(&self, run_id: &RunId) -> Keys {
        Keys::new(&self.opts.prefix, run_id)
    }

    fn ttl_ms(&self) -> u64 {
        self.opts.ttl_secs.saturating_mul(1000)
    }

    fn seed(&self) -> String {
        self.seed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the shared epoch seed again, setting a new one if Redis lost it (with
    /// all its data: runs created from now on must not get the epochs of the lost
    /// logs, `RW-EVENT-10`).
    async fn refresh_seed(&self) -> Result<(), StoreError> {
        let key = format!("{}:epoch-seed", self.opts.prefix);
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(super::new_epoch_seed()).arg("NX");
        let _: Option<String> = self.pool.query(&set).await?;
        let mut get = redis::cmd("GET");
        get.arg(&key);
        let seed: Option<String> = self.pool.query(&get).await?;
        let seed = seed.ok_or_else(|| corrupt(format_args!("{key} vanished")))?;
        let mut cur = self.seed.lock().unwrap_or_else(|e| e.into_inner());
        if *cur != seed {
            tracing::warn!(
                "redis has a new epoch seed (it lost its data?): runs created from now on get new epochs"
            );
            *cur = seed;
        }
        Ok(())
    }

    /// Whether this node watched the run's log with events (so a run without a log
    /// now means Redis lost it).
    fn had_log(&self, run_id: &RunId) -> bool {
        self.watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(run_id)
            .is_some_and(|w| w.seen_stored)
    }

    async fn open_run(&self, run_id: &RunId) -> Result<RunInfo, StoreError> {
        let k = self.keys(run_id);
        let epoch = new_epoch();
        let mut refreshed = false;
        loop {
            let mut inv = self.scripts.open.prepare_invoke();
            inv.key(&k.meta)
                .key(&k.stream)
                .key(&k.idem)
                .key(&k.snap)
                .arg(epoch.as_str())
                .arg(self.ttl_ms())
                .arg(self.seed())
                .arg(run_id.as_str());
            let v: Value = self.pool.invoke(&inv).await?;
            let a = arr(v)?;
            let derived = a.len() > 3;
            if !refreshed && derived && self.had_log(run_id) {
                // The log this node was reading is gone: Redis lost it (and the seed).
                self.refresh_seed().await?;
                refreshed = true;
                continue;
            }
            let info = RunInfo {
                epoch: epoch_of(s_at(&a, 0)?)?,
                head_seq: u_at(&a, 1)?,
                terminal: s_at(&a, 2)? == "1",
            };
            self.note_epoch(run_id, &info.epoch, !derived);
            return Ok(info);
        }
    }

    async fn run_info(&self, run_id: &RunId) -> Result<Option<RunInfo>, StoreError> {
        let k = self.keys(run_id);
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&k.meta).arg("epoch").arg("head").arg("term");
        let v: Vec<Option<String>> = self.pool.query(&cmd).await?;
        let mut it = v.into_iter();
        let (Some(Some(epoch)), head, term) = (it.next(), it.next(), it.next()) else {
            // A run without a log exists while this node has subscribers of it.
            if self.is_watched(run_id) {
                return self.open_run(run_id).await.map(Some);
            }
            return Ok(None);
        };
        let epoch = epoch_of(epoch)?;
        self.note_epoch(run_id, &epoch, true);
        Ok(Some(RunInfo {
            epoch,
            head_seq: head
                .flatten()
                .map(|h| h.parse().map_err(|_| corrupt("head")))
                .transpose()?
                .unwrap_or(0),
            terminal: term.flatten().as_deref() == Some("1"),
        }))
    }

    async fn append(
        self: &Arc<Self>,
        run_id: &RunId,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let (args, built) = prepare(run_id, events);
        let a = self.append_script(run_id, &args).await?;
        match s_at(&a, 0)?.as_str() {
            "ok" => {}
            "conflict" => {
                return Err(StoreError::IdempotencyConflict {
                    run_id: run_id.clone(),
                    index: u_at(&a, 1)? as usize,
                    key: s_at(&a, 2)?,
                    seq: u_at(&a, 3)?,
                });
            }
            "terminal" => {
                return Err(StoreError::RunTerminal {
                    run_id: run_id.clone(),
                    index: u_at(&a, 1)? as usize,
                });
            }
            "exhausted" => return Err(StoreError::SeqExhausted(run_id.clone())),
            other => return Err(corrupt(format_args!("append answered {other}"))),
        }
        let epoch = epoch_of(s_at(&a, 1)?)?;
        let head = u_at(&a, 2)?;
        let snap = u_at(&a, 3)?;
        // Local subscriptions told another epoch are reset (`RW-RESUME-13`).
        self.note_epoch(run_id, &epoch, true);
        let out = assigned(&a, args.len())?;
        let appended = out.iter().filter(|e| !e.duplicate).count();
        if appended > 0 {
            let new: Vec<Event> = built
                .into_iter()
                .zip(&out)
                .filter(|(_, a)| !a.duplicate)
                .map(|(mut e, a)| {
                    e.seq = a.seq;
                    e
                })
                .collect();
            self.fold_appended(run_id, &epoch, &new);
            self.wait_replicas(run_id).await?;
            if head.saturating_sub(snap) >= self.snapshot_every(run_id) {
                self.spawn_compaction(run_id);
            }
        }
        Ok(AppendOutcome {
            response: runwire_protocol::http::AppendResponse {
                run_id: run_id.clone(),
                epoch,
                first_seq: out.first().map_or(head, |e| e.seq),
                last_seq: out.last().map_or(head, |e| e.seq),
                events: out,
            },
            appended,
        })
    }

    /// Runs the append script (`scripts::APPEND`) with each event's arguments; a run
    /// without a log is created only once the epoch seed was read again (a Redis
    /// that lost its data lost the seed too). Never repeated on a broken connection:
    /// the producer retries with its idempotency keys.
    async fn append_script(
        &self,
        run_id: &RunId,
        args: &[[String; 6]],
    ) -> Result<Vec<Value>, StoreError> {
        let k = self.keys(run_id);
        let new = new_epoch();
        let mut create = false;
        loop {
            let mut inv = self.scripts.append.prepare_invoke();
            inv.key(&k.meta)
                .key(&k.stream)
                .key(&k.idem)
                .key(&k.snap)
                .arg(new.as_str())
                .arg(self.ttl_ms())
                .arg(args.len())
                .arg(self.seed())
                .arg(run_id.as_str())
                .arg(u8::from(create))
                .arg(match self.feed {
                    Feed::Xread(_) => "",
                    Feed::Shards(_) => k.chan.as_str(),
                });
            for a in args {
                for v in a {
                    inv.arg(v);
                }
            }
            let v: Value = self
                .pool
                .run(|mut c| async move { inv.invoke_async(&mut c).await })
                .await?;
            let a = arr(v)?;
            if !create && s_at(&a, 0)? == "new" {
                // The run's first append: check the seed before a log gets an epoch
                // derived from it (the seed is gone if Redis lost its data).
                self.refresh_seed().await?;
                // Indexed before the log exists, so that a node that dies after
                // creating it leaves no log out of the listing (`index`).
                self.index_run(run_id).await?;
                create = true;
                continue;
            }
            if create && s_at(&a, 0)? == "ok" {
                // And again once it exists: a listing may have dropped the member
                // meanwhile, finding no log yet (`index`). The events are durable
                // already, so a failure here must not fail the append (`RW-INGEST-4`).
                if let Err(e) = self.index_run(run_id).await {
                    tracing::warn!(run = %run_id, error = %e, "could not index a new run again after creating its log (it was indexed before; only a listing that ran in between can have dropped it)");
                }
            }
            return Ok(a);
        }
    }

    /// With `wait_replicas=N`: `WAIT N` after an append, `Unavailable` unless N
    /// replicas confirmed it. On a cluster it goes to the master of the run's slot,
    /// on the connection that carried the append.
    async fn wait_replicas(&self, run_id: &RunId) -> Result<(), StoreError> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        if self.opts.wait_replicas == 0 {
            return Ok(());
        }
        let (n, t) = (self.opts.wait_replicas, self.opts.wait_timeout_ms);
        let stream = self.keys(run_id).stream;
        let acked: u64 = self
            .pool
            .run(|c| async move {
                let mut cmd = redis::cmd("WAIT");
                cmd.arg(n).arg(t);
                match c {
                    pool::Conn::Single(mut c) => cmd.query_async(&mut c).await,
                    pool::Conn::Cluster(mut c) => {
                        let route = Route::with_key(stream.as_bytes(), SlotAddr::Master);
                        let to =
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                        let v = c.route_command(cmd, to).await?;
                        Ok(redis::from_redis_value(v)?)
                    }
                }
            })
            .await?;
        if acked < u64::from(n) {
            return Err(StoreError::Unavailable(format!(
                "the append reached {acked} of {n} redis replicas within {t} ms; retry with the same idempotency keys"
            )));
        }
        Ok(())
    }

    async fn read(
        &self,
        run_id: &RunId,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if after >= up_to || limit == 0 {
            return Ok(Vec::new());
        }
        let k = self.keys(run_id);
        let start = format!("{}-0", after + 1);
        let end = if up_to >= runwire_protocol::MAX_SEQ {
            "+".to_owned()
        } else {
            format!("{up_to}-0")
        };
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&k.stream)
            .arg(start)
            .arg(end)
            .arg("COUNT")
            .arg(limit);
        let v: Value = self.pool.query(&cmd).await?;
        let events = parse_entries(v)?;
        let missing = match events.first() {
            Some(first) => first.seq != after + 1,
            None => self
                .run_info(run_id)
                .await?
                .is_some_and(|i| i.head_seq > after && up_to > after),
        };
        if missing {
            return Err(StoreError::NotRetained {
                run_id: run_id.clone(),
                after_seq: after,
            });
        }
        Ok(events)
    }

    /// Whether this node has a subscriber of the run now.
    fn is_watched(&self, run_id: &RunId) -> bool {
        self.watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(run_id)
            .is_some_and(|w| w.tx.receiver_count() > 0)
    }

    fn live(&self, run_id: &RunId) -> LiveReceiver {
        let mut w = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(watch) = w.get(run_id) {
            return LiveReceiver::new(watch.tx.subscribe());
        }
        let (tx, rx) = broadcast::channel(LIVE_CAPACITY);
        self.members.fetch_add(1, Ordering::AcqRel);
        w.insert(
            run_id.clone(),
            Watch {
                tx,
                pos: None,
                seen_epoch: None,
                seen_stored: false,
            },
        );
        drop(w);
        self.wake.notify_one();
        LiveReceiver::new(rx)
    }

    /// Records the epoch a subscriber of this node was told. A different epoch than
    /// the one recorded means the log was re-created while watched: its current
    /// subscriptions are reset (`RW-RESUME-13`) and the reader, which was reading the
    /// old log's stream position, starts over on the new one.
    fn note_epoch(&self, run_id: &RunId, epoch: &Epoch, stored: bool) {
        let mut w = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let Some(watch) = w.get_mut(run_id) else {
            return;
        };
        watch.seen_stored = stored;
        match &watch.seen_epoch {
            Some(e) if e.as_str() == epoch.as_str() => {}
            Some(_) => {
                recreated(watch);
                watch.seen_epoch = Some(epoch.as_str().to_owned());
                drop(w);
                self.wake.notify_one();
            }
            None => watch.seen_epoch = Some(epoch.as_str().to_owned()),
        }
    }

    /// Tells every local subscription that Redis is unreachable: each ends with
    /// `store_unavailable` (close 4105) and its client resumes later or elsewhere.
    fn ring_unavailable(&self) {
        let why: Arc<str> = Arc::from(format!("redis at {} is unreachable", self.url));
        let mut w = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        for watch in w.values_mut() {
            let _ = watch.tx.send(LiveEvent::Unavailable(Arc::clone(&why)));
            watch.pos = None;
        }
    }
}

/// Each event's script arguments (idempotency key or "", fingerprint, event id, the
/// envelope's JSON around its seq, flags: flushes a batch, terminal) and the event
/// itself (its seq is set once assigned).
fn prepare(run_id: &RunId, events: Vec<NewEvent>) -> (Vec<[String; 6]>, Vec<Event>) {
    let now = runwire_protocol::Timestamp::now();
    let mut args = Vec::with_capacity(events.len());
    let mut built = Vec::with_capacity(events.len());
    for e in events {
        let fp = e
            .idempotency_key
            .as_ref()
            .map(|_| fingerprint(&e))
            .unwrap_or_default();
        let flags = format!(
            "{}{}",
            u8::from(e.payload.flushes_batch()),
            u8::from(e.payload.is_terminal())
        );
        let raw = e.raw_data;
        let event = Event {
            event_id: new_event_id(),
            run_id: run_id.clone(),
            seq: 1,
            time: e.time.unwrap_or_else(|| now.clone()),
            payload: e.payload,
        };
        let (prefix, suffix) = SeqTemplate::new(&event, raw.as_ref()).into_parts();
        args.push([
            e.idempotency_key.unwrap_or_default(),
            fp,
            event.event_id.as_str().to_owned(),
            prefix,
            suffix,
            flags,
        ]);
        built.push(event);
    }
    (args, built)
}

/// The seq and event id the append script assigned to each of `n` events (or found
/// for a duplicate), from its answer `ok, epoch, head, snap, (dup, seq, id)…`.
fn assigned(
    a: &[Value],
    n: usize,
) -> Result<Vec<runwire_protocol::http::AppendedEvent>, StoreError> {
    (0..n)
        .map(|i| {
            let b = 4 + i * 3;
            Ok(runwire_protocol::http::AppendedEvent {
                seq: u_at(a, b + 1)?,
                event_id: EventId::new(s_at(a, b + 2)?)
                    .map_err(|e| corrupt(format_args!("event id: {e}")))?,
                duplicate: s_at(a, b)? == "1",
            })
        })
        .collect()
}

impl EventStore for RedisStore {
    fn open_run<'a>(&'a self, run_id: &'a RunId) -> BoxFuture<'a, Result<RunInfo, StoreError>> {
        Box::pin(self.inner.open_run(run_id))
    }

    fn run_info<'a>(
        &'a self,
        run_id: &'a RunId,
    ) -> BoxFuture<'a, Result<Option<RunInfo>, StoreError>> {
        Box::pin(self.inner.run_info(run_id))
    }

    fn append<'a>(
        &'a self,
        run_id: &'a RunId,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<AppendOutcome, StoreError>> {
        Box::pin(self.inner.append(run_id, events))
    }

    fn read<'a>(
        &'a self,
        run_id: &'a RunId,
        after_seq: u64,
        up_to: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>, StoreError>> {
        Box::pin(self.inner.read(run_id, after_seq, up_to, limit))
    }

    fn snapshot<'a>(
        &'a self,
        run_id: &'a RunId,
    ) -> BoxFuture<'a, Result<Option<RunSnapshot>, StoreError>> {
        Box::pin(self.inner.snapshot(run_id, false))
    }

    fn list_runs<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a RunId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ListedRun>, StoreError>> {
        Box::pin(self.inner.list_runs(prefix, after, limit))
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let _: String = self.inner.pool.query(&redis::cmd("PING")).await?;
            Ok(())
        })
    }

    fn live(&self, run_id: &RunId) -> LiveReceiver {
        self.ensure_reader();
        self.inner.live(run_id)
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.inner.closed.store(true, Ordering::Release);
            self.inner.stop.notify_waiters();
            self.inner.stop.notify_one();
            let task = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(t) = task {
                t.abort();
                let _ = t.await;
            }
            self.inner
                .watches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            Ok(())
        })
    }
}
