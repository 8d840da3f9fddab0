//! An in-memory store for tests and ephemeral servers. Nothing survives a restart.
//!
//! A run exists in memory from its first append: a subscription to a run without
//! events is answered with the epoch derived from the store's seed (drawn per
//! process, so a restarted server gives every run new epochs, `RW-EVENT-10`) and
//! holds nothing once it ends (`RW-SEC-15`).
//!
//! With a [`RetentionConfig`], a run keeps at least its last `events` events: once it
//! holds a tenth more, the oldest are dropped together with their idempotency
//! records. The folded snapshot is kept whole, so resets still carry every event's
//! effect (`RW-SNAP-2`); reads below the trimmed point are
//! [`StoreError::NotRetained`].

use std::{
    collections::BTreeMap,
    ops::Bound,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use runwire_protocol::{Epoch, RunId, RunSnapshot, http::NewEvent};

use crate::config::RetentionConfig;

use super::{
    AppendOutcome, BoxFuture, EventStore, IdemRecord, ListedRun, LiveHub, LiveReceiver, RunInfo,
    StoreError, StoredEvent, derive_epoch, new_epoch_seed, past_prefix, plan_append,
};

#[derive(Debug)]
struct MemRun {
    epoch: Epoch,
    /// Events `trimmed + 1 ..= head`.
    events: Vec<StoredEvent>,
    /// The highest seq no longer held (0: every event is).
    trimmed: u64,
    idem: BTreeMap<String, IdemRecord>,
    snapshot: RunSnapshot,
}

impl MemRun {
    fn new(run_id: &RunId, epoch: Epoch) -> Self {
        Self {
            snapshot: RunSnapshot::empty(run_id.clone(), epoch.clone()),
            epoch,
            events: Vec::new(),
            trimmed: 0,
            idem: BTreeMap::new(),
        }
    }

    fn head(&self) -> u64 {
        self.trimmed + self.events.len() as u64
    }

    /// Drops the oldest events once the run holds a step more than `retain`.
    fn trim(&mut self, retain: u64) {
        let held = self.events.len() as u64;
        if retain == 0 || held < retain + RetentionConfig::step(retain) {
            return;
        }
        let drop = usize::try_from(held - retain).unwrap_or(usize::MAX);
        self.events.drain(..drop);
        self.trimmed += drop as u64;
        let trimmed = self.trimmed;
        self.idem.retain(|_, r| r.seq > trimmed);
    }

    fn info(&self) -> RunInfo {
        RunInfo {
            epoch: self.epoch.clone(),
            head_seq: self.head(),
            terminal: self.snapshot.is_terminal(),
        }
    }
}

/// An in-memory [`EventStore`]: appends are "durable" as soon as they are in memory.
#[derive(Debug)]
pub struct MemoryStore {
    /// Runs with a log (at least one append).
    runs: Mutex<BTreeMap<RunId, MemRun>>,
    hub: LiveHub,
    closed: AtomicBool,
    retention: RetentionConfig,
    /// The epoch seed of this process (see [`derive_epoch`]).
    seed: String,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            runs: Mutex::default(),
            hub: LiveHub::default(),
            closed: AtomicBool::new(false),
            retention: RetentionConfig::default(),
            seed: new_epoch_seed(),
        }
    }
}

impl MemoryStore {
    /// An empty store that keeps every event.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that trims runs to `retention`.
    pub fn with_retention(retention: RetentionConfig) -> Self {
        Self {
            retention,
            ..Self::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<RunId, MemRun>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The position of a run without a log.
    fn empty_info(&self, run_id: &RunId) -> RunInfo {
        RunInfo {
            epoch: derive_epoch(&self.seed, run_id),
            head_seq: 0,
            terminal: false,
        }
    }

    /// How many runs the store holds (runs with a log).
    pub fn run_count(&self) -> usize {
        self.lock().len()
    }
}

impl EventStore for MemoryStore {
    fn open_run<'a>(&'a self, run_id: &'a RunId) -> BoxFuture<'a, Result<RunInfo, StoreError>> {
        Box::pin(async move {
            // Nothing is kept for a run without a log (`RW-SEC-15`).
            Ok(self
                .lock()
                .get(run_id)
                .map_or_else(|| self.empty_info(run_id), MemRun::info))
        })
    }

    fn run_info<'a>(
        &'a self,
        run_id: &'a RunId,
    ) -> BoxFuture<'a, Result<Option<RunInfo>, StoreError>> {
        Box::pin(async move {
            match self.lock().get(run_id) {
                Some(run) => Ok(Some(run.info())),
                None if self.hub.watched(run_id) => Ok(Some(self.empty_info(run_id))),
                None => Ok(None),
            }
        })
    }

    fn append<'a>(
        &'a self,
        run_id: &'a RunId,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<AppendOutcome, StoreError>> {
        Box::pin(async move {
            if self.closed.load(Ordering::Acquire) {
                return Err(StoreError::Closed);
            }
            let mut runs = self.lock();
            let created = !runs.contains_key(run_id);
            let run = runs
                .entry(run_id.clone())
                .or_insert_with(|| MemRun::new(run_id, derive_epoch(&self.seed, run_id)));
            let head = run.head();
            let planned = match plan_append(
                run_id,
                &run.epoch,
                head,
                run.snapshot.is_terminal(),
                events,
                |k| Ok(run.idem.get(k).cloned()),
            ) {
                Ok(p) => p,
                Err(e) => {
                    // A refused append creates nothing (`RW-INGEST-8`).
                    if created {
                        runs.remove(run_id);
                    }
                    return Err(e);
                }
            };
            let appended = planned.new_events.len();
            let mut stored = Vec::with_capacity(appended);
            for (event, idem, raw) in planned.new_events {
                if let Some((key, fingerprint)) = idem {
                    run.idem.insert(
                        key,
                        IdemRecord {
                            seq: event.seq,
                            event_id: event.event_id.clone(),
                            fingerprint,
                        },
                    );
                }
                run.snapshot.apply(&event);
                let s = StoredEvent::from_event_with_data(&event, raw.as_ref());
                run.events.push(s.clone());
                stored.push(s);
            }
            if !stored.is_empty() {
                // Published under the lock, so the feed is in seq order.
                self.hub.publish(run_id, Arc::from(stored));
                run.trim(self.retention.for_run(run_id));
            }
            Ok(AppendOutcome {
                response: planned.response,
                appended,
            })
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
            let runs = self.lock();
            let Some(run) = runs.get(run_id) else {
                return Ok(Vec::new());
            };
            if after_seq >= up_to || limit == 0 || after_seq >= run.head() {
                return Ok(Vec::new());
            }
            if after_seq < run.trimmed {
                return Err(StoreError::NotRetained {
                    run_id: run_id.clone(),
                    after_seq,
                });
            }
            let (after_seq, up_to) = (after_seq - run.trimmed, up_to - run.trimmed);
            let start = usize::try_from(after_seq)
                .unwrap_or(usize::MAX)
                .min(run.events.len());
            let end = usize::try_from(up_to)
                .unwrap_or(usize::MAX)
                .min(run.events.len())
                .min(start.saturating_add(limit));
            Ok(run.events.get(start..end).unwrap_or_default().to_vec())
        })
    }

    fn snapshot<'a>(
        &'a self,
        run_id: &'a RunId,
    ) -> BoxFuture<'a, Result<Option<RunSnapshot>, StoreError>> {
        Box::pin(async move {
            match self.lock().get(run_id) {
                Some(run) => Ok(Some(run.snapshot.clone())),
                None if self.hub.watched(run_id) => Ok(Some(RunSnapshot::empty(
                    run_id.clone(),
                    derive_epoch(&self.seed, run_id),
                ))),
                None => Ok(None),
            }
        })
    }

    fn list_runs<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a RunId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ListedRun>, StoreError>> {
        Box::pin(async move {
            if self.closed.load(Ordering::Acquire) {
                return Err(StoreError::Closed);
            }
            let runs = self.lock();
            let from = after.map_or(Bound::Unbounded, Bound::Excluded);
            Ok(runs
                .range((from, Bound::Unbounded))
                .skip_while(|(id, _)| id.as_str() < prefix)
                .take_while(|(id, _)| !past_prefix(id.as_str(), prefix))
                .filter(|(id, r)| id.as_str().starts_with(prefix) && r.head() > 0)
                .take(limit)
                .map(|(id, r)| ListedRun {
                    run_id: id.clone(),
                    info: r.info(),
                })
                .collect())
        })
    }

    fn live(&self, run_id: &RunId) -> LiveReceiver {
        self.hub.subscribe(run_id)
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.closed.load(Ordering::Acquire) {
                Err(StoreError::Closed)
            } else {
                Ok(())
            }
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.closed.store(true, Ordering::Release);
            Ok(())
        })
    }
}
