//! The server suite: the runner is the producer (HTTP ingest API) and one or many
//! WebSocket clients of the server under test.
//!
//! A server target is a WebSocket URL plus the ingest base URL, optional tokens, and
//! optional control (restart) for the `@serial` restart and shutdown scenarios. Run ids
//! are unique per scenario (`rwc-<nonce>-<alias>`), so scenarios run concurrently
//! against one server without sharing state.

mod admission;
mod conn;
mod flood;
mod frames;
mod pacer;
mod slow;
mod steps;

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

pub use admission::AdmissionDecl;

use crate::runner::{World, WorldFactory};

/// Every step pattern of the server suite.
pub fn step_patterns() -> impl Iterator<Item = &'static str> {
    steps::step_patterns()
}

/// The requirements every frame is checked against as it arrives, whatever the
/// scenario is about (`docs/server-guide.md`, "What is checked besides the steps"): a
/// failure may name one of these although the scenario is not tagged with it.
pub const WIRE_INVARIANTS: &[&str] = &[
    "RW-CONV-1",
    "RW-CONV-3",
    "RW-COMPAT-5",
    "RW-CONN-6",
    "RW-ORDER-1",
    "RW-ORDER-2",
    "RW-SEC-5",
    "RW-BATCH-2",
    "RW-CLOSE-1",
    "RW-CLOSE-4",
    "RW-ERROR-1",
    "RW-ERROR-3",
    "RW-HEART-2",
];

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

    /// A token with every permission that becomes valid only `valid_in_ms` from now
    /// (a JWT's `nbf`) and expires an hour after that (`RW-AUTH-14`). `Ok(None)`: this
    /// minter cannot make one, and the scenario is graded not implemented.
    fn mint_not_yet_valid(
        &self,
        valid_in_ms: u64,
    ) -> Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send + '_>> {
        let _ = valid_in_ms;
        Box::pin(async { Ok(None) })
    }
}

/// A short retention the server under test declares for some runs (`--short-retention
/// PREFIX=N`): every run whose id starts with `prefix` keeps at least its last `events`
/// events, and its older events are trimmed eventually once it holds more (spec §4.4
/// `RW-INGEST-17`, §8.3 `RW-RESUME-5`). `None` on the target grades the `@retention`
/// scenarios not implemented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortRetention {
    /// The literal run-id prefix (no pattern characters); the runner names the
    /// retained runs `<prefix><8 hex digits>[suffix]`.
    pub prefix: String,
    /// Events every such run keeps at least (N ≥ 1).
    pub events: u64,
}

/// Why a `--short-retention` value does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShortRetentionError {
    /// Not `PREFIX=N`.
    #[error("expected PREFIX=N (e.g. rwc-retained-=50), got {0:?}")]
    Syntax(String),
    /// The prefix cannot start a run id (`RW-EVENT-2`) or leaves no room for the
    /// runner's suffix.
    #[error(
        "the prefix {0:?} must be 1-100 characters of A-Z a-z 0-9 . _ : - starting with a letter or digit (a run id prefix, RW-EVENT-2)"
    )]
    Prefix(String),
    /// N is not a positive integer.
    #[error("the retention {0:?} must be a positive number of events")]
    Events(String),
}

impl std::str::FromStr for ShortRetention {
    type Err = ShortRetentionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (prefix, n) = s
            .rsplit_once('=')
            .ok_or_else(|| ShortRetentionError::Syntax(s.to_owned()))?;
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
        if prefix.is_empty()
            || prefix.len() > 100
            || !prefix.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !prefix.chars().all(ok_char)
        {
            return Err(ShortRetentionError::Prefix(prefix.to_owned()));
        }
        let events = n
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&e| e > 0)
            .ok_or_else(|| ShortRetentionError::Events(n.to_owned()))?;
        Ok(Self {
            prefix: prefix.to_owned(),
            events,
        })
    }
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
    /// The short retention the server declares for some runs; `None` grades the
    /// retention scenarios (trimmed history and cursors) not implemented.
    pub short_retention: Option<ShortRetention>,
    /// The largest kernel send buffer of the server's sockets, in bytes, when it is
    /// not this machine's `net.ipv4.tcp_wmem` maximum (a remote host, or a server
    /// that sets `SO_SNDBUF`): the slow-consumer scenarios count on it (§15).
    pub send_buffer: Option<u64>,
    /// The admission deadlines and limits the server declares (`RW-SEC-11` to
    /// `RW-SEC-14`); what is not declared grades its scenarios not implemented.
    pub admission: AdmissionDecl,
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
            .field("short_retention", &self.short_retention)
            .field("send_buffer", &self.send_buffer)
            .field("admission", &self.admission)
            .finish()
    }
}

/// Makes server-suite worlds.
pub struct ServerFactory {
    target: Arc<ServerTarget>,
    time_scale: f64,
}

impl std::fmt::Debug for ServerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerFactory").finish_non_exhaustive()
    }
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
    fn make(
        &self,
        scenario: &crate::model::ScenarioDef,
        seed: u64,
        _attempt: crate::runner::AttemptCtx,
    ) -> Box<dyn World> {
        Box::new(steps::ServerWorld::new(
            Arc::clone(&self.target),
            self.time_scale,
            seed,
            scenario,
        ))
    }

    fn is_defined(&self, text: &str) -> bool {
        steps::find(text).is_some()
    }

    fn time_scale(&self) -> f64 {
        self.time_scale
    }
}

/// Scales a duration in ms.
pub(crate) fn scaled(ms: u64, scale: f64) -> Duration {
    Duration::from_millis((ms as f64 * scale).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::{ShortRetention, ShortRetentionError};

    #[test]
    fn short_retention_parses_prefix_and_count() {
        assert_eq!(
            "rwc-retained-=50".parse::<ShortRetention>(),
            Ok(ShortRetention {
                prefix: "rwc-retained-".into(),
                events: 50
            })
        );
        assert!(matches!(
            "rwc-retained-".parse::<ShortRetention>(),
            Err(ShortRetentionError::Syntax(_))
        ));
        for bad in ["=5", "-x=5", "a*=5", "a/b=5"] {
            assert!(
                matches!(
                    bad.parse::<ShortRetention>(),
                    Err(ShortRetentionError::Prefix(_))
                ),
                "{bad}"
            );
        }
        for bad in ["a=0", "a=x", "a=-1", "a="] {
            assert!(
                matches!(
                    bad.parse::<ShortRetention>(),
                    Err(ShortRetentionError::Events(_))
                ),
                "{bad}"
            );
        }
    }
}
