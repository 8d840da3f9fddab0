//! An in-memory store for tests and ephemeral servers. Nothing survives a restart.
//!
//! With a [`RetentionConfig`], a run keeps at least its last `events` events: once it
//! holds a tenth more, the oldest are dropped together with their idempotency
//! records. The folded snapshot is kept whole, so resets still carry every event's
//! effect (`RW-SNAP-2`); reads below the trimmed point are
//! [`StoreError::NotRetained`].

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use runwire_protocol::{Epoch, RunId, RunSnapshot, http::NewEvent};

use crate::config::RetentionConfig;

use super::{
    AppendOutcome, BoxFuture, EventStore, IdemRecord, LiveHub, LiveReceiver, RunInfo, StoreError,
    StoredEvent, new_epoch, plan_append,
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
    fn new(run_id: &RunId) -> Self {
        let epoch = new_epoch();
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
#[derive(Debug, Default)]
pub struct MemoryStore {
    runs: Mutex<BTreeMap<RunId, MemRun>>,
    hub: LiveHub,
    closed: AtomicBool,
    retention: RetentionConfig,
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
}

impl EventStore for MemoryStore {
    fn open_run<'a>(&'a self, run_id: &'a RunId) -> BoxFuture<'a, Result<RunInfo, StoreError>> {
        Box::pin(async move {
            let mut runs = self.lock();
            Ok(runs
                .entry(run_id.clone())
                .or_insert_with(|| MemRun::new(run_id))
                .info())
        })
    }

    fn run_info<'a>(
        &'a self,
        run_id: &'a RunId,
    ) -> BoxFuture<'a, Result<Option<RunInfo>, StoreError>> {
        Box::pin(async move { Ok(self.lock().get(run_id).map(MemRun::info)) })
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
                .or_insert_with(|| MemRun::new(run_id));
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
        Box::pin(async move { Ok(self.lock().get(run_id).map(|r| r.snapshot.clone())) })
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
