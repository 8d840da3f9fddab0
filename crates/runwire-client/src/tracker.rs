//! Per-run cursors, de-duplication and ordering (spec §9, `RW-ORDER-*`).
//!
//! The tracker is the client's receive policy without any I/O: feed it events in
//! the order frames arrive and it hands the application each event of a run exactly
//! once, in seq order. It is public so that applications with their own transport
//! (or tests and benchmarks) can use the same policy.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use runwire_protocol::{Epoch, Event, Reset, RunId, Subscribed, SubscriptionRequest};

/// Where an application stands in one run: the epoch of the log and the last seq it
/// was given. Persist it and pass it back in a subscription to resume after a
/// restart (`RW-RESUME-1`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    /// The epoch of the run's log, once known.
    pub epoch: Option<Epoch>,
    /// The last seq delivered (0 = none yet).
    pub seq: u64,
}

impl Cursor {
    /// The subscription request that resumes from this cursor.
    pub fn to_request(&self, run_id: RunId) -> SubscriptionRequest {
        if self.seq == 0 && self.epoch.is_none() {
            SubscriptionRequest::new(run_id)
        } else {
            SubscriptionRequest::resume(run_id, self.epoch.clone(), self.seq)
        }
    }
}

/// Tracker limits (`RW-ORDER-5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderingConfig {
    /// How long a gap may stay open before the run is resubscribed from its cursor.
    pub gap_timeout: Duration,
    /// How many out-of-order events a run may buffer; one more and the run is
    /// resubscribed at once.
    pub gap_buffer_events: usize,
}

impl Default for OrderingConfig {
    fn default() -> Self {
        Self {
            gap_timeout: Duration::from_millis(runwire_protocol::defaults::GAP_TIMEOUT_MS),
            gap_buffer_events: runwire_protocol::defaults::GAP_BUFFER_EVENTS,
        }
    }
}

#[derive(Debug)]
struct RunTrack {
    cursor: Cursor,
    /// Out-of-order events waiting for the gap before them to fill, by seq.
    pending: BTreeMap<u64, Event>,
    /// When the oldest open gap times out.
    gap_deadline: Option<Instant>,
    /// A `subscribed` or `reset` opened the run on the current connection, and no
    /// resubscribe is under way (`RW-SUB-5`, `RW-SUB-6`, `RW-ORDER-7`).
    open: bool,
    /// A resubscribe was sent and its `subscribed`/`reset` has not arrived yet.
    resyncing: bool,
}

impl RunTrack {
    fn new(cursor: Cursor) -> Self {
        Self {
            cursor,
            pending: BTreeMap::new(),
            gap_deadline: None,
            open: false,
            resyncing: false,
        }
    }

    /// Delivers buffered events that have become contiguous.
    fn drain(&mut self, sink: &mut impl FnMut(Event)) {
        while let Some(entry) = self.pending.first_entry() {
            let seq = *entry.key();
            if seq <= self.cursor.seq {
                entry.remove();
            } else if seq == self.cursor.seq + 1 {
                self.cursor.seq = seq;
                sink(entry.remove());
            } else {
                break;
            }
        }
        if self.pending.is_empty() {
            self.gap_deadline = None;
        }
    }
}

/// Counters of what the tracker did, for diagnostics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Events handed to the application.
    pub delivered: u64,
    /// Events dropped because their seq was not above the cursor, or already buffered.
    pub duplicates: u64,
    /// Events buffered because an earlier seq was missing.
    pub buffered: u64,
    /// Events dropped because their run is not subscribed, or not open on this
    /// connection (before its `subscribed`/`reset`, or during a resubscribe).
    pub unsubscribed: u64,
    /// Resubscribes requested because a gap timed out or overflowed the buffer.
    pub resyncs: u64,
}

/// The receive policy for every subscribed run.
#[derive(Debug)]
pub struct Tracker {
    config: OrderingConfig,
    runs: BTreeMap<RunId, RunTrack>,
    /// Runs whose gap overflowed the buffer: resubscribe without waiting.
    overflowed: Vec<RunId>,
    stats: TrackerStats,
}

impl Tracker {
    /// An empty tracker.
    pub fn new(config: OrderingConfig) -> Self {
        Self {
            config,
            runs: BTreeMap::new(),
            overflowed: Vec::new(),
            stats: TrackerStats::default(),
        }
    }

    /// Starts tracking a run from a cursor (a fresh subscription has the default
    /// cursor). Tracking an already tracked run keeps its current cursor.
    pub fn track(&mut self, run_id: RunId, cursor: Cursor) {
        self.runs
            .entry(run_id)
            .or_insert_with(|| RunTrack::new(cursor));
    }

    /// Stops tracking a run; its later events are dropped.
    pub fn untrack(&mut self, run_id: &RunId) -> Option<Cursor> {
        self.runs.remove(run_id).map(|t| t.cursor)
    }

    /// Whether the run is tracked.
    pub fn is_tracked(&self, run_id: &RunId) -> bool {
        self.runs.contains_key(run_id)
    }

    /// The cursor of one run.
    pub fn cursor(&self, run_id: &RunId) -> Option<&Cursor> {
        self.runs.get(run_id).map(|t| &t.cursor)
    }

    /// Every run's cursor.
    pub fn cursors(&self) -> impl Iterator<Item = (&RunId, &Cursor)> {
        self.runs.iter().map(|(r, t)| (r, &t.cursor))
    }

    /// The subscription requests that resume every tracked run from its cursor
    /// (`RW-RESUME-1`): what goes into `hello.subscriptions` on a reconnect.
    pub fn resume_requests(&self) -> Vec<SubscriptionRequest> {
        self.runs
            .iter()
            .map(|(r, t)| t.cursor.to_request(r.clone()))
            .collect()
    }

    /// Counters.
    pub fn stats(&self) -> TrackerStats {
        self.stats
    }

    /// Feeds one received event. Delivers it (and any buffered events it makes
    /// contiguous) through `sink` (`RW-ORDER-6`), drops it as a duplicate
    /// (`RW-ORDER-4`), or buffers it behind a gap (`RW-ORDER-5`). Events of a run that
    /// is not open on the connection are dropped (`RW-SUB-6`, `RW-ORDER-7`).
    pub fn push(&mut self, event: Event, sink: &mut impl FnMut(Event)) {
        let Some(track) = self.runs.get_mut(&event.run_id) else {
            self.stats.unsubscribed += 1;
            return;
        };
        if !track.open {
            self.stats.unsubscribed += 1;
            return;
        }
        let next = track.cursor.seq + 1;
        if event.seq == next {
            track.cursor.seq = event.seq;
            self.stats.delivered += 1;
            sink(event);
            if !track.pending.is_empty() {
                let before = track.cursor.seq;
                track.drain(sink);
                self.stats.delivered += track.cursor.seq - before;
            }
        } else if event.seq < next {
            self.stats.duplicates += 1;
        } else {
            if track.pending.contains_key(&event.seq) {
                self.stats.duplicates += 1;
                return;
            }
            if track.pending.len() >= self.config.gap_buffer_events {
                // Over the buffer: drop what is buffered (the replay after the
                // resubscribe brings it back) and resubscribe without waiting.
                track.pending.clear();
                if !track.resyncing && !self.overflowed.contains(&event.run_id) {
                    self.overflowed.push(event.run_id);
                }
                return;
            }
            track.pending.insert(event.seq, event);
            self.stats.buffered += 1;
            if track.gap_deadline.is_none() {
                track.gap_deadline = Some(Instant::now() + self.config.gap_timeout);
            }
        }
    }

    /// Applies a `subscribed` reply (`RW-SUB-3`): the run opens, its epoch becomes
    /// known and a pending resubscribe is complete.
    pub fn on_subscribed(&mut self, s: &Subscribed) {
        let Some(track) = self.runs.get_mut(&s.run_id) else {
            return;
        };
        if track.cursor.epoch.as_ref() != Some(&s.epoch) {
            if track.cursor.epoch.is_some() {
                // A new log without a reset: nothing buffered belongs to it.
                track.pending.clear();
            }
            track.cursor.epoch = Some(s.epoch.clone());
        }
        track.resyncing = false;
        track.open = true;
        track.gap_deadline =
            (!track.pending.is_empty()).then(|| Instant::now() + self.config.gap_timeout);
    }

    /// Applies a `reset` (`RW-RESUME-9`): the run opens, the cursor jumps to `snapshot.as_of_seq` of
    /// the new epoch and everything buffered is dropped (events after the snapshot
    /// follow). The application rebuilds the run's state from the snapshot.
    pub fn on_reset(&mut self, r: &Reset) {
        let Some(track) = self.runs.get_mut(&r.run_id) else {
            return;
        };
        track.cursor = Cursor {
            epoch: Some(r.epoch.clone()),
            seq: r.snapshot.as_of_seq,
        };
        track.pending.clear();
        track.gap_deadline = None;
        track.resyncing = false;
        track.open = true;
    }

    /// Forgets every buffered event and pending resubscribe, keeping cursors: called
    /// when the connection ends (the replay after reconnecting brings them back).
    pub fn on_disconnect(&mut self) {
        for t in self.runs.values_mut() {
            t.pending.clear();
            t.gap_deadline = None;
            t.resyncing = false;
            t.open = false;
        }
        self.overflowed.clear();
    }

    /// The earliest gap deadline, if a gap is open.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.runs
            .values()
            .filter(|t| !t.resyncing)
            .filter_map(|t| t.gap_deadline)
            .min()
    }

    /// The runs that must be resubscribed from their cursor now, because a gap timed
    /// out or overflowed the buffer (`RW-ORDER-5`). Each is marked as resyncing (no
    /// second resubscribe until its `subscribed` or `reset` arrives) and its buffer is
    /// dropped. The caller sends `unsubscribe` then `subscribe` with the cursor.
    pub fn take_resyncs(&mut self, now: Instant) -> Vec<(RunId, Cursor)> {
        let mut out = Vec::new();
        let overflowed = std::mem::take(&mut self.overflowed);
        for (run_id, t) in &mut self.runs {
            if t.resyncing {
                continue;
            }
            let due = t.gap_deadline.is_some_and(|d| d <= now) || overflowed.contains(run_id);
            if due {
                t.resyncing = true;
                t.open = false;
                t.pending.clear();
                t.gap_deadline = None;
                out.push((run_id.clone(), t.cursor.clone()));
            }
        }
        self.stats.resyncs += out.len() as u64;
        out
    }

    /// Whether some run overflowed its buffer since the last [`Tracker::take_resyncs`].
    pub fn has_overflow(&self) -> bool {
        !self.overflowed.is_empty()
    }
}
