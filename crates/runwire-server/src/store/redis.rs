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
//! | `PREFIX:epoch-seed` | string | the epoch seed every node shares (set once) |
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

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use redis::{AsyncConnectionConfig, RedisError, Script, Value, aio::MultiplexedConnection};
use runwire_protocol::{
    Epoch, Event, EventId, RunId, RunSnapshot,
    http::NewEvent,
    raw::{RawEvent, SeqTemplate},
};
use tokio::sync::{Notify, broadcast};

use crate::config::RetentionConfig;

use super::{
    AppendOutcome, BoxFuture, EventStore, LiveEvent, LiveReceiver, RunInfo, StoreError,
    StoredEvent, fingerprint, new_epoch, new_event_id,
};

/// Options of a [`RedisStore`], given as query parameters of the store URL
/// (`redis://HOST:PORT/DB?retain_events=200000&ttl_secs=86400`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Key prefix (`prefix=`), default `rw`.
    pub prefix: String,
    /// Events a run's stream keeps at least (`retain_events=`); 0 keeps every event.
    /// Never below the replay window (plus a margin), so that a cursor the server
    /// replays is always retained.
    pub retain_events: u64,
    /// Seconds a run's keys live after its last append (`ttl_secs=`); 0 = forever.
    pub ttl_secs: u64,
    /// Upper bound for one Redis command, in ms (`timeout_ms=`).
    pub timeout_ms: u64,
    /// Upper bound for connecting, in ms (`connect_timeout_ms=`).
    pub connect_timeout_ms: u64,
    /// Replicas that must confirm an append before it is acknowledged
    /// (`wait_replicas=`), 0 = none.
    pub wait_replicas: u32,
    /// How long `WAIT` waits for them, in ms (`wait_timeout_ms=`).
    pub wait_timeout_ms: u64,
    /// Store the folded snapshot back every this many events (`snapshot_every=`).
    pub snapshot_every: u64,
    /// How long one `XREAD BLOCK` waits, in ms (`block_ms=`).
    pub block_ms: u64,
}

impl RedisOptions {
    /// The defaults for a server whose replay window is `replay_window_events`.
    pub fn for_replay_window(replay_window_events: u64) -> Self {
        Self {
            prefix: "rw".into(),
            retain_events: min_retain(replay_window_events),
            ttl_secs: 7 * 24 * 3600,
            timeout_ms: 5_000,
            connect_timeout_ms: 2_000,
            wait_replicas: 0,
            wait_timeout_ms: 1_000,
            snapshot_every: 1_000,
            block_ms: 5_000,
        }
    }
}

/// The least retention that keeps every replayable cursor replayable: the window
/// plus 10 % (at least 1000 events) for events appended while a replay runs.
fn min_retain(window: u64) -> u64 {
    window.saturating_add((window / 10).max(1_000))
}

/// Splits `redis://…?opt=v&…` into the URL for the Redis client and the options.
fn parse_url(url: &str, replay_window_events: u64) -> Result<(String, RedisOptions), StoreError> {
    let mut opts = RedisOptions::for_replay_window(replay_window_events);
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut rest = Vec::new();
    let bad = |k: &str, v: &str| {
        StoreError::Unavailable(format!(
            "redis store option {k}={v:?} is not valid: expected a non-negative integer"
        ))
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let num = || v.parse::<u64>().map_err(|_| bad(k, v));
        match k {
            "prefix" => {
                if v.is_empty() || v.contains(['{', '}', ' ']) {
                    return Err(StoreError::Unavailable(format!(
                        "redis store option prefix={v:?} must be non-empty without braces or spaces"
                    )));
                }
                opts.prefix = v.to_owned();
            }
            "retain_events" => opts.retain_events = num()?,
            "ttl_secs" => opts.ttl_secs = num()?,
            "timeout_ms" => opts.timeout_ms = num()?.max(1),
            "connect_timeout_ms" => opts.connect_timeout_ms = num()?.max(1),
            "wait_replicas" => {
                opts.wait_replicas = u32::try_from(num()?).map_err(|_| bad(k, v))?;
            }
            "wait_timeout_ms" => opts.wait_timeout_ms = num()?,
            "snapshot_every" => opts.snapshot_every = num()?.max(1),
            "block_ms" => opts.block_ms = num()?.max(1),
            _ => rest.push(pair),
        }
    }
    if opts.retain_events != 0 && opts.retain_events < min_retain(replay_window_events) {
        let least = min_retain(replay_window_events);
        tracing::warn!(
            requested = opts.retain_events,
            using = least,
            "retain_events is below the replay window plus margin; raised so that every replayable cursor stays retained"
        );
        opts.retain_events = least;
    }
    let base = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((base, opts))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

/// The epoch a run without a log gets (module docs), as a Lua function for the
/// scripts: `derived(seed, ttl_ms, run_id)`.
macro_rules! derive_lua {
    () => {
        r#"
local function derived(seed, ttl, run)
  local period = 0
  if ttl > 0 then
    local t = redis.call('TIME')
    period = math.floor((tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) / ttl)
  end
  return string.sub(redis.sha1hex(seed .. ':' .. string.format('%d', period) .. '\n' .. run), 1, 16)
end
"#
    };
}

/// Appends a request's events: validation first, then writes, so that a refused
/// request writes nothing (`RW-INGEST-8`). A new log gets the derived epoch (module
/// docs); a damaged one the random epoch given.
///
/// A new log is created only with `create` = 1; without it the script answers
/// `new` and writes nothing, and the node checks its epoch seed first (a Redis that
/// lost its data lost the seed too, and the seed must change with it).
///
/// KEYS: meta, stream, idem, snapshot. ARGV: random epoch, ttl ms, n, epoch seed,
/// run id, create (0/1), then per event: idempotency key (or ""), fingerprint, event
/// id, JSON prefix, JSON suffix, flags (two characters: flushes a batch, terminal).
const APPEND_LUA: &str = concat!(
    derive_lua!(),
    r#"
local m, s, idem, snapk = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ttl = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local maxseq = 9007199254740991
local meta = redis.call('HMGET', m, 'epoch', 'head', 'term', 'snap')
local epoch = meta[1]
local head = tonumber(meta[2] or '0')
local term = meta[3] == '1'
local snap = tonumber(meta[4] or '0')
local created = false
if not epoch then
  if redis.call('EXISTS', s) == 1 then
    epoch = ARGV[1]
  elseif ARGV[6] ~= '1' then
    return {'new'}
  else
    epoch = derived(ARGV[4], ttl, ARGV[5])
  end
  head = 0; term = false; snap = 0; created = true
elseif head > 0 and redis.call('EXISTS', s) == 0 then
  epoch = ARGV[1]; head = 0; term = false; snap = 0; created = true
end
local res = {}
local seen = {}
local nxt = head
for i = 0, n - 1 do
  local b = 7 + i * 6
  local key, fp, eid = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local dup = nil
  if key ~= '' then
    dup = seen[key]
    if (not dup) and (not created) then
      local raw = redis.call('HGET', idem, key)
      if raw then
        local a = string.find(raw, ' ', 1, true)
        local c = string.find(raw, ' ', a + 1, true)
        dup = {string.sub(raw, 1, a - 1), string.sub(raw, a + 1, c - 1), string.sub(raw, c + 1)}
      end
    end
    if dup and dup[3] ~= fp then
      return {'conflict', tostring(i), key, dup[1]}
    end
  end
  if dup then
    res[i + 1] = {'1', dup[1], dup[2]}
  else
    if term then return {'terminal', tostring(i)} end
    if nxt >= maxseq then return {'exhausted', tostring(i)} end
    nxt = nxt + 1
    local sq = string.format('%d', nxt)
    if string.sub(ARGV[b + 5], 2, 2) == '1' then term = true end
    if key ~= '' then seen[key] = {sq, eid, fp} end
    res[i + 1] = {'0', sq, eid}
  end
end
if nxt > head then
  if created then redis.call('DEL', s, idem, snapk) end
  for i = 0, n - 1 do
    local r = res[i + 1]
    if r[1] == '0' then
      local b = 7 + i * 6
      local json = ARGV[b + 3] .. r[2] .. ARGV[b + 4]
      local flush = string.sub(ARGV[b + 5], 1, 1)
      if ARGV[b] ~= '' then
        redis.call('XADD', s, r[2] .. '-0', 'j', json, 'f', flush, 'k', ARGV[b])
        redis.call('HSET', idem, ARGV[b], r[2] .. ' ' .. r[3] .. ' ' .. ARGV[b + 1])
      else
        redis.call('XADD', s, r[2] .. '-0', 'j', json, 'f', flush)
      end
    end
  end
  redis.call('HSET', m, 'epoch', epoch, 'head', string.format('%d', nxt), 'term', term and '1' or '0', 'snap', string.format('%d', snap))
  if ttl > 0 then
    redis.call('PEXPIRE', m, ttl); redis.call('PEXPIRE', s, ttl)
    redis.call('PEXPIRE', idem, ttl); redis.call('PEXPIRE', snapk, ttl)
  end
end
local out = {'ok', epoch, string.format('%d', nxt), string.format('%d', snap)}
for i = 1, n do
  out[#out + 1] = res[i][1]; out[#out + 1] = res[i][2]; out[#out + 1] = res[i][3]
end
return out
"#
);

/// Returns the run's position (`RW-EVENT-10`, `RW-EVENT-11`). A run without a log
/// is answered with the derived epoch and nothing is written (`RW-SEC-15`); only a
/// damaged log is re-created, with the random epoch given. KEYS: meta, stream, idem,
/// snapshot. ARGV: random epoch, ttl ms, epoch seed, run id.
const OPEN_LUA: &str = concat!(
    derive_lua!(),
    r#"
local m, s = KEYS[1], KEYS[2]
local meta = redis.call('HMGET', m, 'epoch', 'head', 'term')
if meta[1] and not (tonumber(meta[2] or '0') > 0 and redis.call('EXISTS', s) == 0) then
  return {meta[1], meta[2] or '0', meta[3] or '0'}
end
if (not meta[1]) and redis.call('EXISTS', s) == 0 then
  return {derived(ARGV[3], tonumber(ARGV[2]), ARGV[4]), '0', '0', 'derived'}
end
redis.call('DEL', s, KEYS[3], KEYS[4])
redis.call('HSET', m, 'epoch', ARGV[1], 'head', '0', 'term', '0', 'snap', '0')
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', m, ttl) end
return {ARGV[1], '0', '0'}
"#
);

/// Reads a consistent snapshot position: the head, and the stored snapshot (or the
/// caller's cached one) with the stream entries after it up to the head, in one
/// atomic step (`RW-RESUME-2`, `RW-SNAP-1`). KEYS: meta, stream, snapshot. ARGV:
/// cached epoch, cached seq, max entries.
const SNAP_READ_LUA: &str = r#"
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'head', 'snap')
if not meta[1] then return {'none'} end
local head = tonumber(meta[2] or '0')
local snap = tonumber(meta[3] or '0')
local have = tonumber(ARGV[2])
local from, mode, json
if ARGV[1] == meta[1] and have >= snap and have <= head then
  from = have; mode = 'cached'; json = ''
else
  from = snap; mode = 'stored'; json = redis.call('GET', KEYS[3]) or ''
end
local evs = {}
if from < head then
  evs = redis.call('XRANGE', KEYS[2], string.format('%d', from + 1) .. '-0', string.format('%d', head) .. '-0', 'COUNT', ARGV[3])
end
return {mode, meta[1], string.format('%d', head), string.format('%d', from), json, evs}
"#;

/// Stores a folded snapshot if it is newer than the stored one, then trims the
/// stream to the retention, never past the stored snapshot, deleting the
/// idempotency records of the trimmed events. KEYS: meta, snapshot, stream, idem.
/// ARGV: epoch, as_of_seq, snapshot JSON, retain (0 = all), max entries to trim.
const SNAP_WRITE_LUA: &str = r#"
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'head', 'snap')
if meta[1] ~= ARGV[1] then return 0 end
local head = tonumber(meta[2] or '0')
local snap = tonumber(meta[3] or '0')
local asof = tonumber(ARGV[2])
if asof > snap and asof <= head then
  redis.call('SET', KEYS[2], ARGV[3])
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
  redis.call('HSET', KEYS[1], 'snap', ARGV[2])
  snap = asof
end
local retain = tonumber(ARGV[4])
if retain > 0 then
  local cut = math.min(snap, head - retain)
  if cut > 0 then
    local old = redis.call('XRANGE', KEYS[3], '-', string.format('%d', cut) .. '-0', 'COUNT', ARGV[5])
    local last = nil
    for _, e in ipairs(old) do
      local f = e[2]
      for j = 1, #f, 2 do
        if f[j] == 'k' then redis.call('HDEL', KEYS[4], f[j + 1]) end
      end
      last = e[1]
    end
    if last then
      local dash = string.find(last, '-', 1, true)
      local seq = tonumber(string.sub(last, 1, dash - 1))
      redis.call('XTRIM', KEYS[3], 'MINID', string.format('%d', seq + 1) .. '-0')
    end
  end
end
return 1
"#;

/// Keeps a watched run's keys alive (its ttl restarts). KEYS: meta, stream, idem,
/// snapshot. ARGV: ttl ms.
const TOUCH_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
end
return 1
"#;

/// The Lua scripts, hashed once.
struct Scripts {
    append: Script,
    open: Script,
    snap_read: Script,
    snap_write: Script,
    touch: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            append: Script::new(APPEND_LUA),
            open: Script::new(OPEN_LUA),
            snap_read: Script::new(SNAP_READ_LUA),
            snap_write: Script::new(SNAP_WRITE_LUA),
            touch: Script::new(TOUCH_LUA),
        }
    }
}

/// A run's four keys.
struct Keys {
    meta: String,
    stream: String,
    idem: String,
    snap: String,
}

impl Keys {
    fn new(prefix: &str, run_id: &RunId) -> Self {
        let base = format!("{prefix}:{{{}}}", run_id.as_str());
        Self {
            meta: format!("{base}:m"),
            stream: format!("{base}:s"),
            idem: format!("{base}:i"),
            snap: format!("{base}:n"),
        }
    }
}

/// A multiplexed connection that is re-established after it broke: every command
/// either runs on a live connection or fails fast with `Unavailable`.
struct Pool {
    client: redis::Client,
    config: AsyncConnectionConfig,
    url: String,
    current: tokio::sync::Mutex<PoolState>,
}

struct PoolState {
    generation: u64,
    conn: Option<MultiplexedConnection>,
    /// The last failed connect: callers within [`RECONNECT_HOLDOFF`] of it fail at
    /// once instead of queueing up behind one connect timeout each.
    failed: Option<(std::time::Instant, StoreError)>,
}

/// How long a failed connect answers for every caller.
const RECONNECT_HOLDOFF: Duration = Duration::from_millis(100);

impl Pool {
    fn new(client: redis::Client, config: AsyncConnectionConfig, url: String) -> Self {
        Self {
            client,
            config,
            url,
            current: tokio::sync::Mutex::new(PoolState {
                generation: 0,
                conn: None,
                failed: None,
            }),
        }
    }

    fn error(&self, e: &RedisError) -> StoreError {
        StoreError::Unavailable(format!("redis at {}: {e}", self.url))
    }

    /// The current connection and its generation, connecting if there is none.
    async fn get(&self) -> Result<(u64, MultiplexedConnection), StoreError> {
        let mut cur = self.current.lock().await;
        if let Some(c) = &cur.conn {
            return Ok((cur.generation, c.clone()));
        }
        if let Some((at, e)) = &cur.failed
            && at.elapsed() < RECONNECT_HOLDOFF
        {
            return Err(e.clone());
        }
        match self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
        {
            Ok(conn) => {
                cur.generation += 1;
                cur.conn = Some(conn.clone());
                cur.failed = None;
                Ok((cur.generation, conn))
            }
            Err(e) => {
                let e = self.error(&e);
                cur.failed = Some((std::time::Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Drops connection `generation` after an error that may have broken it.
    async fn broken(&self, generation: u64, e: &RedisError) {
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_unrecoverable_error()
            || e.is_connection_refusal()
        {
            let mut cur = self.current.lock().await;
            if cur.generation == generation {
                cur.conn = None;
            }
        }
    }

    /// Runs an operation that is safe to repeat (a read, or a write that checks its
    /// own precondition); when the connection turns out to be broken (a dropped
    /// connection, an I/O error) it runs once more on a fresh one, so that a
    /// re-established connection costs a subscription nothing.
    async fn retry<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let (generation, conn) = self.get().await?;
        match f(conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                self.broken(generation, &e).await;
                if e.is_timeout() || !(e.is_connection_dropped() || e.is_io_error()) {
                    return Err(self.error(&e));
                }
                let (generation, conn) = self.get().await?;
                match f(conn).await {
                    Ok(v) => Ok(v),
                    Err(e) => {
                        self.broken(generation, &e).await;
                        Err(self.error(&e))
                    }
                }
            }
        }
    }

    /// A command that is safe to repeat (see [`Pool::retry`]).
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.retry(|mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    /// A script that is safe to repeat (see [`Pool::retry`]).
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.retry(|mut c| async move { inv.invoke_async(&mut c).await })
            .await
    }

    /// Runs one operation on the connection (appends: never repeated, a producer
    /// retries with its idempotency keys).
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let (generation, conn) = self.get().await?;
        match f(conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                self.broken(generation, &e).await;
                Err(self.error(&e))
            }
        }
    }
}

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

/// The most snapshots a node caches.
const SNAPSHOT_CACHE: usize = 10_000;

/// Stream entries read per step (replay chunks, snapshot folds, reader).
const READ_COUNT: usize = 1_000;

struct Inner {
    opts: RedisOptions,
    retention: RetentionConfig,
    url: String,
    client: redis::Client,
    pool: Pool,
    scripts: Scripts,
    watches: Mutex<BTreeMap<RunId, Watch>>,
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

fn value_str(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("unexpected data in redis: {what}"))
}

fn arr(v: Value) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Nil => Ok(Vec::new()),
        other => Err(corrupt(format_args!("expected an array, got {other:?}"))),
    }
}

fn s_at(a: &[Value], i: usize) -> Result<String, StoreError> {
    a.get(i)
        .and_then(value_str)
        .ok_or_else(|| corrupt(format_args!("no string at {i}")))
}

fn u_at(a: &[Value], i: usize) -> Result<u64, StoreError> {
    s_at(a, i)?
        .parse()
        .map_err(|_| corrupt(format_args!("no integer at {i}")))
}

fn epoch_of(s: String) -> Result<Epoch, StoreError> {
    Epoch::new(s).map_err(|e| corrupt(format_args!("epoch: {e}")))
}

/// Parses stream entries `[[id, [field, value, …]], …]`.
fn parse_entries(v: Value) -> Result<Vec<StoredEvent>, StoreError> {
    let mut out = Vec::new();
    for entry in arr(v)? {
        let e = arr(entry)?;
        let id = s_at(&e, 0)?;
        let seq = id
            .split_once('-')
            .and_then(|(s, _)| s.parse::<u64>().ok())
            .ok_or_else(|| corrupt(format_args!("stream id {id}")))?;
        let fields = arr(e.into_iter().nth(1).unwrap_or(Value::Nil))?;
        let mut json = None;
        let mut flush = false;
        let mut it = fields.iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            match value_str(k).as_deref() {
                Some("j") => json = value_str(v),
                Some("f") => flush = value_str(v).as_deref() == Some("1"),
                _ => {}
            }
        }
        let json = json.ok_or_else(|| corrupt(format_args!("entry {id} has no event")))?;
        out.push(StoredEvent {
            seq,
            json: RawEvent::from_encoded(json),
            flush,
        });
    }
    Ok(out)
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
        let client = redis::Client::open(base.as_str())
            .map_err(|e| StoreError::Unavailable(format!("invalid redis URL {shown}: {e}")))?;
        let connect = Duration::from_millis(opts.connect_timeout_ms);
        let mut sync = client.get_connection_with_timeout(connect).map_err(|e| {
            StoreError::Unavailable(format!("cannot connect to redis at {shown}: {e}"))
        })?;
        let _ = sync.set_read_timeout(Some(Duration::from_millis(opts.timeout_ms)));
        let _ = sync.set_write_timeout(Some(Duration::from_millis(opts.timeout_ms)));
        let _: String = redis::cmd("PING").query(&mut sync).map_err(|e| {
            StoreError::Unavailable(format!("redis at {shown} did not answer: {e}"))
        })?;
        // The version, when INFO is allowed (some managed services restrict it).
        let info: Result<String, _> = redis::cmd("INFO").arg("server").query(&mut sync);
        if let Some(version) = info.ok().and_then(|i| {
            i.lines()
                .find_map(|l| l.strip_prefix("redis_version:"))
                .map(|v| v.trim().to_owned())
        }) {
            let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
            if (major, minor) < (6, 2) {
                return Err(StoreError::Unavailable(format!(
                    "redis at {shown} is version {version}; the redis store needs 6.2 or later (XTRIM MINID, CLIENT UNBLOCK)"
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
                    appendonly = on.as_deref().unwrap_or("?"),
                    appendfsync = fsync.as_deref().unwrap_or("?"),
                    "redis is not configured with appendonly yes + appendfsync always: acknowledged events may be lost if redis crashes (see docs/scale-out.md)"
                );
            }
        }
        // The epoch seed: the first node to start sets it, every node reads it.
        let seed_key = format!("{}:epoch-seed", opts.prefix);
        let seed_err = |e: RedisError| StoreError::Unavailable(format!("redis at {shown}: {e}"));
        let _: Option<String> = redis::cmd("SET")
            .arg(&seed_key)
            .arg(super::new_epoch_seed())
            .arg("NX")
            .query(&mut sync)
            .map_err(seed_err)?;
        let seed: String = redis::cmd("GET")
            .arg(&seed_key)
            .query::<Option<String>>(&mut sync)
            .map_err(seed_err)?
            .ok_or_else(|| StoreError::Unavailable(format!("redis at {shown} lost {seed_key}")))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(Duration::from_millis(opts.timeout_ms)));
        let inner = Arc::new(Inner {
            pool: Pool::new(client.clone(), config, shown.clone()),
            client,
            url: shown,
            opts,
            retention,
            scripts: Scripts::new(),
            watches: Mutex::new(BTreeMap::new()),
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
        use runwire_protocol::{
            Timestamp,
            http::{AppendResponse, AppendedEvent},
        };
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let k = self.keys(run_id);
        let now = Timestamp::now();
        let new = new_epoch();
        let mut args: Vec<[String; 6]> = Vec::with_capacity(events.len());
        let mut keys = Vec::with_capacity(events.len());
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
            let key = e.idempotency_key.unwrap_or_default();
            args.push([
                key.clone(),
                fp,
                event.event_id.as_str().to_owned(),
                prefix,
                suffix,
                flags,
            ]);
            keys.push(key);
            built.push(event);
        }
        let mut create = false;
        let a = loop {
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
                .arg(u8::from(create));
            for a in &args {
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
                create = true;
                continue;
            }
            break a;
        };
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
        let mut out = Vec::with_capacity(keys.len());
        let mut appended = 0;
        for i in 0..keys.len() {
            let b = 4 + i * 3;
            let duplicate = s_at(&a, b)? == "1";
            appended += usize::from(!duplicate);
            out.push(AppendedEvent {
                seq: u_at(&a, b + 1)?,
                event_id: EventId::new(s_at(&a, b + 2)?)
                    .map_err(|e| corrupt(format_args!("event id: {e}")))?,
                duplicate,
            });
        }
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
        }
        if appended > 0 && self.opts.wait_replicas > 0 {
            let (n, t) = (self.opts.wait_replicas, self.opts.wait_timeout_ms);
            let acked: u64 =
                self.pool
                    .run(|mut c| async move {
                        redis::cmd("WAIT").arg(n).arg(t).query_async(&mut c).await
                    })
                    .await?;
            if acked < u64::from(n) {
                return Err(StoreError::Unavailable(format!(
                    "the append reached {acked} of {n} redis replicas within {t} ms; retry with the same idempotency keys"
                )));
            }
        }
        if appended > 0 && head.saturating_sub(snap) >= self.snapshot_every(run_id) {
            self.spawn_compaction(run_id);
        }
        Ok(AppendOutcome {
            response: AppendResponse {
                run_id: run_id.clone(),
                epoch,
                first_seq: out.first().map_or(head, |e| e.seq),
                last_seq: out.last().map_or(head, |e| e.seq),
                events: out,
            },
            appended,
        })
    }

    /// Folds events this node just appended into its cached snapshot of the run when
    /// they directly follow it (or start the log), so that neither snapshot reads nor
    /// compaction need to read and decode them again.
    fn fold_appended(&self, run_id: &RunId, epoch: &Epoch, events: &[Event]) {
        let Some(first) = events.first().map(|e| e.seq) else {
            return;
        };
        let mut cache = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        let follows = cache
            .get(run_id)
            .is_some_and(|s| s.epoch == *epoch && s.as_of_seq + 1 == first);
        if !follows {
            if first != 1 {
                return;
            }
            if cache.len() >= SNAPSHOT_CACHE && !cache.contains_key(run_id) {
                cache.clear();
            }
            cache.insert(
                run_id.clone(),
                RunSnapshot::empty(run_id.clone(), epoch.clone()),
            );
        }
        if let Some(s) = cache.get_mut(run_id) {
            for e in events {
                s.apply(e);
            }
        }
    }

    /// Folds and stores the snapshot of a run in the background (one at a time per
    /// run and node), which also trims its stream to the retention.
    fn spawn_compaction(self: &Arc<Self>, run_id: &RunId) {
        if !self
            .compacting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run_id.clone())
        {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.compacting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(run_id);
            return;
        };
        let me = Arc::clone(self);
        let run_id = run_id.clone();
        handle.spawn(async move {
            if let Err(e) = me.snapshot(&run_id, true).await {
                tracing::warn!(run_id = %run_id, error = %e, "storing the snapshot failed; retried on a later append");
            }
            me.compacting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&run_id);
        });
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

    /// Folds the run's snapshot at its current head (`RW-SNAP-1`); with `store`, or
    /// when it is `snapshot_every` events past the stored one, stores it back.
    async fn snapshot(
        &self,
        run_id: &RunId,
        store: bool,
    ) -> Result<Option<RunSnapshot>, StoreError> {
        let k = self.keys(run_id);
        for _attempt in 0..5 {
            let cached = self
                .snapshots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(run_id)
                .cloned();
            let (have_epoch, have_seq) = cached.as_ref().map_or((String::new(), 0), |s| {
                (s.epoch.as_str().to_owned(), s.as_of_seq)
            });
            let mut inv = self.scripts.snap_read.prepare_invoke();
            inv.key(&k.meta)
                .key(&k.stream)
                .key(&k.snap)
                .arg(have_epoch)
                .arg(have_seq)
                .arg(READ_COUNT);
            let v: Value = self.pool.invoke(&inv).await?;
            let a = arr(v)?;
            let mode = s_at(&a, 0)?;
            if mode == "none" {
                if self.is_watched(run_id) {
                    let info = self.open_run(run_id).await?;
                    return Ok(Some(RunSnapshot::empty(run_id.clone(), info.epoch)));
                }
                return Ok(None);
            }
            let epoch = epoch_of(s_at(&a, 1)?)?;
            let head = u_at(&a, 2)?;
            let from = u_at(&a, 3)?;
            let mut snap = if mode == "cached" {
                match cached {
                    Some(s) if s.epoch == epoch && s.as_of_seq == from => s,
                    _ => continue,
                }
            } else {
                let json = s_at(&a, 4)?;
                if json.is_empty() {
                    if from != 0 {
                        return Err(corrupt(format_args!(
                            "run {run_id} has no stored snapshot at seq {from}"
                        )));
                    }
                    RunSnapshot::empty(run_id.clone(), epoch.clone())
                } else {
                    let s: RunSnapshot = serde_json::from_str(&json)
                        .map_err(|e| corrupt(format_args!("snapshot of {run_id}: {e}")))?;
                    if s.as_of_seq != from || s.epoch != epoch {
                        continue;
                    }
                    s
                }
            };
            let stored_at = if mode == "stored" { from } else { 0 };
            let mut chunk = parse_entries(a.into_iter().nth(5).unwrap_or(Value::Nil))?;
            let mut complete = true;
            loop {
                for e in &chunk {
                    if e.seq != snap.as_of_seq + 1 {
                        complete = false;
                        break;
                    }
                    let ev = e.json.decode().map_err(|err| {
                        corrupt(format_args!("event {} of {run_id}: {err}", e.seq))
                    })?;
                    snap.apply(&ev);
                }
                if !complete || snap.as_of_seq >= head {
                    break;
                }
                chunk = self
                    .read(run_id, snap.as_of_seq, head, READ_COUNT)
                    .await
                    .unwrap_or_default();
                if chunk.is_empty() {
                    complete = false;
                    break;
                }
            }
            if !complete {
                // Trimmed or re-created meanwhile: start over from the stored snapshot.
                self.snapshots
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(run_id);
                continue;
            }
            {
                let mut cache = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= SNAPSHOT_CACHE && !cache.contains_key(run_id) {
                    cache.clear();
                }
                let keep = cache
                    .get(run_id)
                    .is_some_and(|c| c.epoch == snap.epoch && c.as_of_seq > snap.as_of_seq);
                if !keep {
                    cache.insert(run_id.clone(), snap.clone());
                }
            }
            let behind = if mode == "stored" {
                snap.as_of_seq - stored_at
            } else {
                // Unknown: the cached path does not read the stored position.
                0
            };
            if store || behind >= self.snapshot_every(run_id) {
                self.store_snapshot(&k, &snap).await?;
            }
            return Ok(Some(snap));
        }
        Err(StoreError::Unavailable(format!(
            "the log of run {run_id} kept changing while its snapshot was read"
        )))
    }

    /// Events the run's stream keeps at least (0: all): its `[retention]` rule, else
    /// the URL's `retain_events`.
    fn retain(&self, run_id: &RunId) -> u64 {
        self.retention
            .explicit_for(run_id)
            .unwrap_or(self.opts.retain_events)
    }

    /// Events between stored snapshots (each also trims): `snapshot_every`, or the
    /// retention step of an explicit retention when that is shorter.
    fn snapshot_every(&self, run_id: &RunId) -> u64 {
        match self.retention.explicit_for(run_id) {
            Some(r) if r > 0 => self.opts.snapshot_every.min(RetentionConfig::step(r)),
            _ => self.opts.snapshot_every,
        }
    }

    async fn store_snapshot(&self, k: &Keys, snap: &RunSnapshot) -> Result<(), StoreError> {
        let json = serde_json::to_string(snap).map_err(corrupt)?;
        let mut inv = self.scripts.snap_write.prepare_invoke();
        inv.key(&k.meta)
            .key(&k.snap)
            .key(&k.stream)
            .key(&k.idem)
            .arg(snap.epoch.as_str())
            .arg(snap.as_of_seq)
            .arg(json)
            .arg(self.retain(&snap.run_id))
            .arg(10 * READ_COUNT);
        let _: Value = self.pool.invoke(&inv).await?;
        Ok(())
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

/// Tells a watch's subscriptions that the run's log was re-created (Redis lost it,
/// or it expired and was opened again): each sends a `reset` with the new log's
/// snapshot (`RW-RESUME-13`).
fn recreated(watch: &mut Watch) {
    let _ = watch.tx.send(LiveEvent::Recreated);
    watch.pos = None;
}

/// The node's reader: `XREAD BLOCK` over the watched runs' streams, publishing
/// what any node appended to the local subscribers, in seq order.
async fn reader_loop(inner: Arc<Inner>) {
    let mut conn: Option<(MultiplexedConnection, i64)> = None;
    let mut failures: u32 = 0;
    let mut read_errors: u32 = 0;
    let mut last_touch = tokio::time::Instant::now();
    loop {
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        // Forget runs without local subscribers.
        let (pending, active) = {
            let mut w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
            w.retain(|_, watch| watch.tx.receiver_count() > 0);
            let pending: Vec<RunId> = w
                .iter()
                .filter(|(_, x)| x.pos.is_none())
                .map(|(r, _)| r.clone())
                .collect();
            let active: Vec<(RunId, u64)> = w
                .iter()
                .filter_map(|(r, x)| x.pos.as_ref().map(|p| (r.clone(), p.cursor)))
                .collect();
            (pending, active)
        };
        if pending.is_empty() && active.is_empty() {
            conn = None;
            tokio::select! {
                () = inner.wake.notified() => {}
                () = inner.stop.notified() => return,
            }
            continue;
        }
        let (mut c, id) = match conn.take() {
            Some(c) => c,
            None => match connect_reader(&inner).await {
                Ok(c) => {
                    if failures > 0 {
                        tracing::info!(url = %inner.url, "redis reachable again; live feed resumes from each run's cursor");
                    }
                    failures = 0;
                    // Redis may have restarted without its data (and its seed).
                    if let Err(e) = inner.refresh_seed().await {
                        tracing::warn!(error = %e, "reading the epoch seed after reconnect failed");
                    }
                    // After a reconnect, check every run's log is still the one we
                    // were reading (redis may have restarted without its data).
                    if let Err(e) = revalidate(&inner, &c.0).await {
                        tracing::warn!(error = %e, "checking watched runs after reconnect failed");
                    }
                    c
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(url = %inner.url, error = %e, "redis unreachable: live subscriptions are told to reconnect");
                    }
                    inner.ring_unavailable();
                    let backoff = Duration::from_millis((50u64 << failures.min(5)).min(1_000));
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = inner.stop.notified() => return,
                    }
                    continue;
                }
            },
        };
        if !pending.is_empty() {
            match init_positions(&inner, &mut c, &pending).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "redis reader lost its connection");
                    failures += 1;
                    continue;
                }
            }
        }
        if inner.opts.ttl_secs > 0
            && last_touch.elapsed() >= Duration::from_secs((inner.opts.ttl_secs / 4).max(1))
        {
            last_touch = tokio::time::Instant::now();
            touch_watched(&inner, &mut c).await;
        }
        let active: Vec<(RunId, u64)> = {
            let w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
            w.iter()
                .filter_map(|(r, x)| x.pos.as_ref().map(|p| (r.clone(), p.cursor)))
                .collect()
        };
        if active.is_empty() {
            conn = Some((c, id));
            continue;
        }
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(inner.opts.block_ms)
            .arg("STREAMS");
        for (r, _) in &active {
            cmd.arg(inner.keys(r).stream);
        }
        for (_, cursor) in &active {
            cmd.arg(format!("{cursor}-0"));
        }
        let result = {
            let read = cmd.query_async::<Value>(&mut c);
            tokio::pin!(read);
            let mut unblocking = false;
            let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
            let retry = tokio::time::sleep_until(far);
            tokio::pin!(retry);
            loop {
                tokio::select! {
                    r = &mut read => break Some(r),
                    () = inner.wake.notified(), if !unblocking => {
                        unblocking = true;
                        retry.as_mut().reset(tokio::time::Instant::now());
                    }
                    () = &mut retry, if unblocking => {
                        // The read may not have reached Redis yet: retry the unblock
                        // until it interrupted the read (or the read returned).
                        let done = inner
                            .pool
                            .run(|mut p| async move {
                                redis::cmd("CLIENT").arg("UNBLOCK").arg(id).query_async::<i64>(&mut p).await
                            })
                            .await;
                        if matches!(done, Ok(1) | Err(_)) {
                            retry.as_mut().reset(far);
                        } else {
                            retry.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(2));
                        }
                    }
                    () = inner.stop.notified() => break None,
                }
            }
        };
        let Some(result) = result else { return };
        match result {
            Ok(v) => {
                read_errors = 0;
                if let Err(e) = deliver(&inner, v) {
                    tracing::error!(error = %e, "unreadable stream entries");
                }
                conn = Some((c, id));
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis reader lost its connection; reconnecting");
                failures += 1;
                read_errors += 1;
                if read_errors > 1 {
                    // Not a one-off drop: back off (an error that reconnecting does
                    // not cure must not spin).
                    let backoff = Duration::from_millis((25u64 << read_errors.min(6)).min(1_000));
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = inner.stop.notified() => return,
                    }
                }
                // Try again at once; ring the subscriptions only if that fails.
                if failures > 1 {
                    inner.ring_unavailable();
                }
            }
        }
    }
}

async fn connect_reader(inner: &Inner) -> Result<(MultiplexedConnection, i64), StoreError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(inner.opts.connect_timeout_ms)))
        .set_response_timeout(Some(Duration::from_millis(
            inner.opts.block_ms + inner.opts.timeout_ms,
        )));
    let err = |e: RedisError| StoreError::Unavailable(format!("redis at {}: {e}", inner.url));
    let mut c = inner
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(err)?;
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut c)
        .await
        .map_err(err)?;
    Ok((c, id))
}

/// Fixes the reader's position for newly watched runs at their head, and publishes
/// the head event, so that a subscription that read an older head sees a seq jump
/// and catches up from the store.
async fn init_positions(
    inner: &Inner,
    c: &mut MultiplexedConnection,
    runs: &[RunId],
) -> Result<(), StoreError> {
    let err = |e: RedisError| StoreError::Unavailable(format!("redis at {}: {e}", inner.url));
    // What subscribers were told before this read: a log that no longer matches it
    // vanished (or was re-created) in between.
    let seen_before: Vec<(Option<String>, bool)> = {
        let w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
        runs.iter()
            .map(|r| {
                w.get(r)
                    .map_or((None, false), |x| (x.seen_epoch.clone(), x.seen_stored))
            })
            .collect()
    };
    let mut pipe = redis::pipe();
    for r in runs {
        let k = inner.keys(r);
        pipe.cmd("HMGET").arg(&k.meta).arg("epoch").arg("head");
        pipe.cmd("XREVRANGE")
            .arg(&k.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
    }
    let out: Vec<Value> = pipe.query_async(c).await.map_err(err)?;
    let lost = seen_before
        .iter()
        .zip(out.chunks(2))
        .any(|((_, stored), o)| *stored && matches!(o.first(), Some(Value::Array(m)) if m.first().is_none_or(|e| *e == Value::Nil)));
    if lost {
        // A log subscribers saw is gone: Redis lost data, maybe its seed too.
        inner.refresh_seed().await?;
    }
    let mut it = out.into_iter();
    for (r, (seen, stored)) in runs.iter().zip(seen_before) {
        let meta = arr(it.next().unwrap_or(Value::Nil))?;
        let last = parse_entries(it.next().unwrap_or(Value::Nil))?;
        let epoch = meta.first().and_then(value_str);
        let head: u64 = meta
            .get(1)
            .and_then(value_str)
            .and_then(|h| h.parse().ok())
            .unwrap_or(0);
        let cursor = if epoch.is_some() { head } else { 0 };
        let mut w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(watch) = w.get_mut(r)
            && watch.pos.is_none()
        {
            // No log yet is not a re-creation: subscribers of a run without a log
            // were told the epoch its first append gives it; whether it did is
            // checked when its first events arrive (`deliver`).
            if seen.is_some() && (epoch.is_some() || stored) && epoch != seen {
                recreated(watch);
                watch.seen_epoch.clone_from(&epoch);
                watch.seen_stored = epoch.is_some();
            }
            watch.pos = Some(WatchPos { cursor, epoch });
            let last: Vec<StoredEvent> = last.into_iter().filter(|e| e.seq == cursor).collect();
            if !last.is_empty() {
                let _ = watch.tx.send(LiveEvent::Events(Arc::from(last)));
            }
        }
    }
    Ok(())
}

/// After a reconnect: a watched run whose epoch changed or whose head went back
/// (Redis restarted without its data, or the run expired) is rung, so that its
/// subscriptions end and the clients resubscribe (and get a reset).
async fn revalidate(inner: &Inner, c: &MultiplexedConnection) -> Result<(), StoreError> {
    let watched: Vec<(RunId, WatchPos)> = {
        let w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
        w.iter()
            .filter_map(|(r, x)| x.pos.clone().map(|p| (r.clone(), p)))
            .collect()
    };
    if watched.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (r, _) in &watched {
        pipe.cmd("HMGET")
            .arg(inner.keys(r).meta)
            .arg("epoch")
            .arg("head");
    }
    let mut c = c.clone();
    let out: Vec<Vec<Option<String>>> = pipe
        .query_async(&mut c)
        .await
        .map_err(|e| StoreError::Unavailable(format!("redis at {}: {e}", inner.url)))?;
    let mut changed = BTreeSet::new();
    for ((r, pos), meta) in watched.iter().zip(out) {
        let epoch = meta.first().cloned().flatten();
        let head: u64 = meta
            .get(1)
            .cloned()
            .flatten()
            .and_then(|h| h.parse().ok())
            .unwrap_or(0);
        let same = match (&pos.epoch, &epoch) {
            (Some(a), Some(b)) => a == b && head >= pos.cursor,
            (None, _) => true,
            (Some(_), None) => false,
        };
        if !same {
            changed.insert(r.clone());
        }
    }
    if !changed.is_empty() {
        // Redis lost data: maybe its epoch seed too.
        inner.refresh_seed().await?;
        tracing::warn!(
            runs = changed.len(),
            "watched runs lost or re-created in redis; their subscriptions are reset"
        );
        let mut w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
        for r in &changed {
            if let Some(watch) = w.get_mut(r) {
                recreated(watch);
                // The resets open the run again (a new epoch if it is gone): that
                // epoch is the one they were told, not another re-creation.
                watch.seen_epoch = None;
                watch.seen_stored = false;
            }
        }
    }
    Ok(())
}

async fn touch_watched(inner: &Inner, c: &mut MultiplexedConnection) {
    let runs: Vec<RunId> = inner
        .watches
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .cloned()
        .collect();
    for r in runs {
        let k = inner.keys(&r);
        let _ = inner
            .scripts
            .touch
            .key(&k.meta)
            .key(&k.stream)
            .key(&k.idem)
            .key(&k.snap)
            .arg(inner.ttl_ms())
            .invoke_async::<Value>(c)
            .await;
    }
}

/// Publishes an `XREAD` answer `[[stream, [entries]], …]`.
fn deliver(inner: &Inner, v: Value) -> Result<(), StoreError> {
    let suffix = ":s";
    for per_stream in arr(v)? {
        let mut p = arr(per_stream)?.into_iter();
        let key = p.next().as_ref().and_then(value_str).unwrap_or_default();
        let events = parse_entries(p.next().unwrap_or(Value::Nil))?;
        // `PREFIX:{RUN}:s` → RUN.
        let Some(run) = key
            .strip_suffix(suffix)
            .and_then(|k| k.rsplit_once('{'))
            .and_then(|(_, r)| r.strip_suffix('}'))
            .and_then(|r| RunId::new(r).ok())
        else {
            continue;
        };
        let mut w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
        let Some(watch) = w.get_mut(&run) else {
            continue;
        };
        let Some(pos) = watch.pos.as_mut() else {
            continue;
        };
        if pos.epoch.is_none() && !events.is_empty() {
            // The log came into existence while watched: fix the position again,
            // which checks its epoch against the one subscribers were told (and
            // resets them if it differs) before anything of it is delivered.
            watch.pos = None;
            continue;
        }
        let fresh: Vec<StoredEvent> = events.into_iter().filter(|e| e.seq > pos.cursor).collect();
        if let Some(last) = fresh.last() {
            pos.cursor = last.seq;
            let _ = watch.tx.send(LiveEvent::Events(Arc::from(fresh)));
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_options_are_parsed_and_stripped() {
        let (base, o) = parse_url(
            "redis://127.0.0.1:6379/2?retain_events=500000&ttl_secs=60&prefix=t1&protocol=resp2",
            100_000,
        )
        .expect("valid");
        assert_eq!(base, "redis://127.0.0.1:6379/2?protocol=resp2");
        assert_eq!(
            (o.retain_events, o.ttl_secs, o.prefix.as_str()),
            (500_000, 60, "t1")
        );
        let (_, o) = parse_url("redis://h?retain_events=10", 100_000).expect("valid");
        assert_eq!(
            o.retain_events, 110_000,
            "raised to the replay window + margin"
        );
        let (_, o) = parse_url("redis://h?retain_events=0", 100_000).expect("valid");
        assert_eq!(o.retain_events, 0, "0 keeps everything");
        assert!(parse_url("redis://h?ttl_secs=soon", 10).is_err());
        assert!(parse_url("redis://h?prefix={x}", 10).is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://:secret@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
