//! An in-memory store for tests and ephemeral servers. Nothing survives a restart.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use runwire_protocol::{Epoch, RunId, RunSnapshot, http::NewEvent};

use super::{
    AppendOutcome, BoxFuture, EventStore, IdemRecord, LiveHub, LiveReceiver, RunInfo, StoreError,
    StoredEvent, new_epoch, plan_append,
};

#[derive(Debug)]
struct MemRun {
    epoch: Epoch,
    events: Vec<StoredEvent>,
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
            idem: BTreeMap::new(),
        }
    }

    fn info(&self) -> RunInfo {
        RunInfo {
            epoch: self.epoch.clone(),
            head_seq: self.events.len() as u64,
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
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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
            let head = run.events.len() as u64;
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
            for (event, idem) in planned.new_events {
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
                let s = StoredEvent::from_event(&event);
                run.events.push(s.clone());
                stored.push(s);
            }
            if !stored.is_empty() {
                // Published under the lock, so the feed is in seq order.
                self.hub.publish(run_id, Arc::from(stored));
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

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.closed.store(true, Ordering::Release);
            Ok(())
        })
    }
}
