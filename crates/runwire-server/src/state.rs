//! The state every handler shares: configuration, store, auth, metrics, the shutdown
//! signal and the counts that graceful shutdown waits for. `http`, `ws`,
//! `subscription` and `origin` read it; it depends on none of them.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tokio::sync::{Notify, watch};

use crate::{Authenticator, EventStore, Metrics, ServerConfig, origin::OriginPolicy};

/// A count of things in flight (open connections, appends in progress) that graceful
/// shutdown waits for: each holds an [`InFlightGuard`] while it lasts, and
/// [`InFlight::wait_idle`] resolves once none is left.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    open: AtomicUsize,
    idle: Notify,
}

/// One thing in flight; dropping it ends it.
pub(crate) struct InFlightGuard<'a>(&'a InFlight);

impl InFlight {
    /// Counts one more thing in flight until the guard drops.
    pub(crate) fn enter(&self) -> InFlightGuard<'_> {
        self.open.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self)
    }

    /// Waits until nothing is in flight.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let n = self.idle.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            n.await;
        }
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Shared state of every handler.
pub(crate) struct AppState {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) auth: Authenticator,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Open WebSocket connections, so that shutdown can wait for their goodbyes.
    pub(crate) connections: InFlight,
    /// Appends past the shutdown check and not yet answered, so that shutdown
    /// delivers every acknowledged event first (`RW-SHUTDOWN-4`).
    pub(crate) appends: InFlight,
    pub(crate) origins: OriginPolicy,
    /// Connections per authenticated identity (`RW-SEC-18`).
    pub(crate) identities: Arc<crate::identity::Identities>,
}
