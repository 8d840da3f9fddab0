//! The in-process live feed of the single-node stores ([`super::MemoryStore`],
//! [`super::SqliteStore`]). [`super::RedisStore`] keeps its own per-run channels,
//! fed by its reader task with what any node appended.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use runwire_protocol::RunId;
use tokio::sync::broadcast;

use super::{LiveEvent, LiveReceiver, StoredEvent};

/// Per-run broadcast channels: the live feed of a single-node store, published to
/// after each durable append. A channel exists while the run has subscribers.
#[derive(Debug)]
pub struct LiveHub {
    channels: Mutex<BTreeMap<RunId, broadcast::Sender<LiveEvent>>>,
    capacity: usize,
    subscribes: AtomicU64,
}

/// Deliveries (one per append request) a subscriber may fall behind before it lags and
/// catches up from the store. Small on purpose: a channel's buffer is allocated up
/// front, per run with subscribers.
const DEFAULT_CAPACITY: usize = 128;

impl Default for LiveHub {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl LiveHub {
    /// A hub whose channels hold up to `capacity` deliveries per subscriber before it
    /// lags (a lagging subscriber catches up from the store).
    pub fn new(capacity: usize) -> Self {
        Self {
            channels: Mutex::new(BTreeMap::new()),
            capacity: capacity.max(1),
            subscribes: AtomicU64::new(0),
        }
    }

    /// Subscribes to a run.
    pub fn subscribe(&self, run_id: &RunId) -> LiveReceiver {
        let mut ch = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        // Now and then, drop the channels of runs nobody watches any more (runs that
        // get no appends are not cleaned up by `publish`).
        if self.subscribes.fetch_add(1, Ordering::Relaxed) % 256 == 255 {
            ch.retain(|_, tx| tx.receiver_count() > 0);
        }
        let tx = ch
            .entry(run_id.clone())
            .or_insert_with(|| broadcast::channel(self.capacity).0);
        LiveReceiver::new(tx.subscribe())
    }

    /// Whether the run has a local subscriber now.
    pub fn watched(&self, run_id: &RunId) -> bool {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(run_id)
            .is_some_and(|tx| tx.receiver_count() > 0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LiveRecv;

    fn ev(seq: u64) -> Arc<[StoredEvent]> {
        Arc::from(vec![StoredEvent {
            seq,
            json: runwire_protocol::raw::RawEvent::from_encoded("{}"),
            flush: false,
        }])
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_it_lagged() {
        let hub = LiveHub::new(4);
        let run = RunId::new("r").expect("id");
        let mut rx = hub.subscribe(&run);
        for s in 1..=10 {
            hub.publish(&run, ev(s));
        }
        assert!(matches!(rx.recv().await, LiveRecv::Lagged));
        // After the lag it continues with what the channel still holds.
        assert!(matches!(rx.recv().await, LiveRecv::Events(e) if e[0].seq == 7));
    }

    #[test]
    fn channels_without_subscribers_are_dropped() {
        let hub = LiveHub::new(4);
        for i in 0..300 {
            drop(hub.subscribe(&RunId::new(format!("r{i}")).expect("id")));
        }
        let n = hub.channels.lock().expect("lock").len();
        assert!(n < 300, "{n} channels kept");
    }
}
