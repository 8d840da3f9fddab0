//! The Lua scripts of the Redis store (each in its own `.lua` file next to this one)
//! and the keys of a run they work on. Redis runs a script atomically, so each is
//! one step of the store's contract that no other node interleaves with.

use redis::Script;
use runwire_protocol::RunId;

/// The epoch a run without a log gets (the store's module docs), as a Lua function that
/// [`APPEND`] and [`OPEN`] start with: `derived(seed, ttl_ms, run_id)`.
const DERIVE: &str = include_str!("derive.lua");

/// Appends a request's events: validation first, then writes, so that a refused
/// request writes nothing (`RW-INGEST-8`). A new log gets the derived epoch (module
/// docs); a damaged one the random epoch given.
///
/// A new log is created only with `create` = 1; without it the script answers
/// `new` and writes nothing, and the node checks its epoch seed first (a Redis that
/// lost its data lost the seed too, and the seed must change with it).
///
/// With a cluster, the script rings the run's doorbell: the new head on the run's
/// sharded pub/sub channel (`SPUBLISH`, same slot as its keys), which other nodes'
/// live feeds listen to.
///
/// KEYS: meta, stream, idem, snapshot. ARGV: random epoch, ttl ms, n, epoch seed,
/// run id, create (0/1), doorbell channel (or "" for none), then per event: idempotency key (or ""), fingerprint, event
/// id, JSON prefix, JSON suffix, flags (two characters: flushes a batch, terminal).
const APPEND: &str = include_str!("append.lua");

/// Returns the run's position (`RW-EVENT-10`, `RW-EVENT-11`). A run without a log
/// is answered with the derived epoch and nothing is written (`RW-SEC-15`); only a
/// damaged log is re-created, with the random epoch given. KEYS: meta, stream, idem,
/// snapshot. ARGV: random epoch, ttl ms, epoch seed, run id.
const OPEN: &str = include_str!("open.lua");

/// Reads a consistent snapshot position: the head, and the stored snapshot (or the
/// caller's cached one) with the stream entries after it up to the head, in one
/// atomic step (`RW-RESUME-2`, `RW-SNAP-1`). KEYS: meta, stream, snapshot. ARGV:
/// cached epoch, cached seq, max entries.
const SNAP_READ: &str = include_str!("snap_read.lua");

/// Stores a folded snapshot if it is newer than the stored one, then trims the
/// stream to the retention, never past the stored snapshot, deleting the
/// idempotency records of the trimmed events. KEYS: meta, snapshot, stream, idem.
/// ARGV: epoch, as_of_seq, snapshot JSON, retain (0 = all), max entries to trim.
const SNAP_WRITE: &str = include_str!("snap_write.lua");

/// Keeps a watched run's keys alive (its ttl restarts). KEYS: meta, stream, idem,
/// snapshot. ARGV: ttl ms.
const TOUCH: &str = include_str!("touch.lua");

/// The Lua scripts, hashed once.
pub(super) struct Scripts {
    pub(super) append: Script,
    pub(super) open: Script,
    pub(super) snap_read: Script,
    pub(super) snap_write: Script,
    pub(super) touch: Script,
}

impl Scripts {
    /// Every script, hashed.
    pub(super) fn new() -> Self {
        Self {
            append: Script::new(&format!("{DERIVE}{APPEND}")),
            open: Script::new(&format!("{DERIVE}{OPEN}")),
            snap_read: Script::new(SNAP_READ),
            snap_write: Script::new(SNAP_WRITE),
            touch: Script::new(TOUCH),
        }
    }
}

/// A run's four keys, and its doorbell channel (a cluster's live feed): all in the
/// slot of the run id's hash tag.
pub(super) struct Keys {
    pub(super) meta: String,
    pub(super) stream: String,
    pub(super) idem: String,
    pub(super) snap: String,
    pub(super) chan: String,
}

impl Keys {
    /// The keys of `run_id` under `prefix`.
    pub(super) fn new(prefix: &str, run_id: &RunId) -> Self {
        let base = format!("{prefix}:{{{}}}", run_id.as_str());
        Self {
            meta: format!("{base}:m"),
            stream: format!("{base}:s"),
            idem: format!("{base}:i"),
            snap: format!("{base}:n"),
            chan: format!("{base}:c"),
        }
    }
}
