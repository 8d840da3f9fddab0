//! The server suite: the runner is the producer (HTTP ingest API) and one or many
//! WebSocket clients of the server under test.
//!
//! A server target is a WebSocket URL plus the ingest base URL, optional tokens, and
//! optional control (restart) for the `@serial` restart and shutdown scenarios. Run ids
//! are unique per scenario (`rwc-<nonce>-<alias>`), so scenarios run concurrently
//! against one server without sharing state.

mod conn;
mod steps;

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

pub use steps::step_patterns;

use crate::runner::{World, WorldFactory};

/// Restarts the server under test (for `@restart` and shutdown scenarios).
pub trait ServerControl: Send + Sync {
    /// Shuts the server down gracefully (`server_shutdown` to every client, store
    /// flushed) and starts it again on the same address with the same store; returns
    /// once it accepts connections again.
    fn restart(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// Mints tokens that expire (token-expiry scenarios, `RW-AUTH-5`, `RW-AUTH-8`).
pub trait TokenMinter: Send + Sync {
    /// A token with every permission that expires `ttl_ms` from now (0: already
    /// expired).
    fn mint(
        &self,
        ttl_ms: u64,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>>;
}

/// A server under test.
#[derive(Clone)]
pub struct ServerTarget {
    /// `ws://HOST:PORT/v1/stream`.
    pub ws_url: String,
    /// `http://HOST:PORT` (the producer API base).
    pub ingest_url: String,
    /// A token allowed to append to and read every run. `None`: the server requires
    /// no authentication; auth scenarios are graded not implemented.
    pub token: Option<String>,
    /// A token allowed to read only runs whose id starts with `rwc-allowed-`
    /// (per-run authorization scenarios); `None` grades them not implemented.
    pub limited_token: Option<String>,
    /// The hello deadline the server applies (it is not announced), in ms.
    pub hello_timeout_ms: u64,
    /// Restart control.
    pub control: Option<Arc<dyn ServerControl>>,
    /// Mints expiring tokens; `None` grades token-expiry scenarios not implemented.
    pub token_minter: Option<Arc<dyn TokenMinter>>,
    /// How the target is described in reports.
    pub description: String,
}

impl std::fmt::Debug for ServerTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTarget")
            .field("ws_url", &self.ws_url)
            .field("ingest_url", &self.ingest_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("hello_timeout_ms", &self.hello_timeout_ms)
            .field("restartable", &self.control.is_some())
            .field("mints_tokens", &self.token_minter.is_some())
            .finish()
    }
}

/// Makes server-suite worlds.
pub struct ServerFactory {
    target: Arc<ServerTarget>,
    time_scale: f64,
}

impl ServerFactory {
    /// A factory for `target`, every wait multiplied by `time_scale`.
    pub fn new(target: ServerTarget, time_scale: f64) -> Self {
        Self {
            target: Arc::new(target),
            time_scale,
        }
    }
}

impl WorldFactory for ServerFactory {
    fn make(&self, scenario: &crate::model::ScenarioDef, seed: u64) -> Box<dyn World> {
        Box::new(steps::ServerWorld::new(
            Arc::clone(&self.target),
            self.time_scale,
            seed,
            scenario,
        ))
    }

    fn is_defined(&self, text: &str) -> bool {
        steps::parse_step(text).is_some()
    }
}

/// Scales a duration in ms.
pub(crate) fn scaled(ms: u64, scale: f64) -> Duration {
    Duration::from_millis((ms as f64 * scale).ceil() as u64)
}
