//! In-process live feed shared by the store backends.

use std::{collections::BTreeMap, sync::Arc, sync::Mutex};

use runwire_protocol::RunId;
use tokio::sync::broadcast;

use super::{LiveEvent, LiveReceiver, StoredEvent};

/// Per-run broadcast channels: the local half of every backend's live feed. A
/// channel exists while the run has subscribers.
#[derive(Debug)]
pub struct LiveHub {
    channels: Mutex<BTreeMap<RunId, broadcast::Sender<LiveEvent>>>,
    capacity: usize,
}

impl Default for LiveHub {
    fn default() -> Self {
        Self::new(4096)
    }
}

impl LiveHub {
    /// A hub whose channels hold up to `capacity` deliveries per subscriber before it
    /// lags (a lagging subscriber catches up from the store).
    pub fn new(capacity: usize) -> Self {
        Self {
            channels: Mutex::new(BTreeMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Subscribes to a run.
    pub fn subscribe(&self, run_id: &RunId) -> LiveReceiver {
        let mut ch = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let tx = ch
            .entry(run_id.clone())
            .or_insert_with(|| broadcast::channel(self.capacity).0);
        LiveReceiver::new(tx.subscribe())
    }

    /// Publishes events of a run (already durable, in seq order).
    pub fn publish(&self, run_id: &RunId, events: Arc<[StoredEvent]>) {
        let mut ch = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = ch.get(run_id) {
            if tx.receiver_count() == 0 {
                ch.remove(run_id);
            } else {
                let _ = tx.send(LiveEvent::Events(events));
            }
        }
    }

    /// Drops every channel, so receivers see the feed close.
    pub fn close(&self) {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
