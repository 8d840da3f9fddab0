//! The Runwire reference client.
//!
//! [`Client::connect`] starts a background task that connects to a Runwire server
//! over WebSocket, keeps the connection alive and hands the application a typed
//! stream of [`ClientEvent`]s: each event of each subscribed run exactly once and in
//! seq order, resets with the snapshot to rebuild from, subscription replies,
//! connection state changes and errors. It implements the client side of the spec
//! (`spec/protocol.md`):
//!
//! - `hello` with the supported versions, a token from a [`TokenProvider`] called on
//!   every attempt, and the resume cursors of every run (`RW-CONN-*`, `RW-AUTH-*`,
//!   `RW-RESUME-1`); `unsupported_version` is a terminal error (`RW-VERSION-3`).
//! - every `ping` is answered with a `pong` carrying the same id; the connection is
//!   declared dead after the announced heartbeat interval plus a grace period
//!   without any frame (`RW-HEART-*`).
//! - reconnects with full-jitter exponential backoff, a maximum number of attempts,
//!   a reset after a stable session, `retry_after_ms` honoured, and close codes
//!   handled by class, unknown codes by range ([`Backoff`], `RW-RECONNECT-*`,
//!   `RW-CLOSE-*`).
//! - de-duplication, gap buffering and resubscribe from the cursor, batches, and
//!   resets ([`Tracker`], `RW-ORDER-*`, `RW-RESUME-*`); events of a run are delivered
//!   only while it is open on the connection (`RW-SUB-6`).
//! - undecodable frames are reported and answered with close 4000 and a reconnect
//!   (`RW-INPUT-12`); the announced limits are respected (`RW-LIMIT-5`); the
//!   application closing (or dropping) the client closes with 1000 (`RW-CONN-11`).
//! - [`ChunkAssembler`] reassembles `output.chunk` events (`RW-TYPE-20`).
//!
//! The receive path decodes `event` and `batch` frames in one pass
//! ([`decode_text_frame`]); see `docs/performance.md` for its speed.
//!
//! ```no_run
//! # async fn demo() {
//! use runwire_client::{Client, ClientConfig, ClientEvent};
//! use runwire_protocol::{RunId, SubscriptionRequest};
//!
//! let run = RunId::new("run-1").unwrap();
//! let config = ClientConfig::new("ws://127.0.0.1:7300/v1/stream")
//!     .subscribe(SubscriptionRequest::new(run));
//! let mut client = Client::connect(config);
//! while let Some(ev) = client.next().await {
//!     match ev {
//!         ClientEvent::Event(e) => println!("{} #{} {}", e.run_id, e.seq, e.event_type()),
//!         ClientEvent::Error(e) if e.terminal => break,
//!         _ => {}
//!     }
//! }
//! # }
//! ```

mod backoff;
mod cause;
mod chunks;
mod config;
mod decode;
mod driver;
mod error;
pub mod tls;
mod tracker;

use std::{
    collections::BTreeMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use runwire_protocol::{Event, Reset, RunId, Subscribed, SubscriptionRequest};
use tokio::sync::mpsc;

pub use backoff::{Backoff, BackoffConfig, Planned};
pub use chunks::{ChunkAssembler, ChunkError, Output};
pub use config::{ClientConfig, TokenFuture, TokenProvider};
pub use decode::{Decoded, decode_frame, decode_text_frame};
pub use error::{ClientError, ClientErrorCode};
pub use tracker::{Cursor, OrderingConfig, Tracker, TrackerStats};

/// The connection's state (spec §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ConnectionState {
    /// A connection attempt is under way.
    Connecting,
    /// `welcome` arrived; the session is up.
    Connected,
    /// The connection ended; the client waits before the next attempt.
    Reconnecting,
    /// The client stopped for good after a terminal error.
    Failed,
    /// The application closed the client.
    Closed,
}

impl ConnectionState {
    /// The lowercase name used by the client adapter contract.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Reconnecting => "reconnecting",
            Self::Failed => "failed",
            Self::Closed => "closed",
        }
    }
}

/// A connection state change with its details.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateChange {
    /// The new state.
    pub state: ConnectionState,
    /// The spec's attempt number `n` (`RW-RECONNECT-1`): the consecutive failed
    /// attempts before this connection attempt, 0 for the first attempt and for the
    /// first after a healthy session. `Connecting`: the attempt under way.
    /// `Reconnecting`: the attempt that follows the delay, which was drawn from
    /// `0..=min(cap, base * factor^n)`.
    pub attempt: Option<u32>,
    /// `Reconnecting`: the delay before the next attempt.
    pub delay: Option<Duration>,
    /// `Reconnecting`: the most consecutive failed attempts before the client gives up
    /// (`RW-RECONNECT-3`, [`BackoffConfig::max_attempts`]).
    pub max_attempts: Option<u32>,
    /// `Reconnecting`, `Failed`: why the connection (or the attempt) ended, in words,
    /// e.g. `connection refused by 127.0.0.1:7999` or `the server closed the
    /// connection with code 1012 (service restart)`.
    pub cause: Option<String>,
    /// `Reconnecting`, `Failed`: the close code the server sent, if any.
    pub close_code: Option<u16>,
    /// `Connected`: the session id and negotiated version from `welcome`.
    pub session: Option<(String, String)>,
}

impl StateChange {
    fn new(state: ConnectionState) -> Self {
        Self {
            state,
            attempt: None,
            delay: None,
            max_attempts: None,
            cause: None,
            close_code: None,
            session: None,
        }
    }
}

/// What the client delivers to the application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The connection state changed.
    State(StateChange),
    /// A subscription opened (or reopened after a reconnect).
    Subscribed(Subscribed),
    /// An event: per run, exactly once and in seq order.
    Event(Event),
    /// The run's state must be rebuilt from `reset.snapshot`; events after
    /// `snapshot.as_of_seq` follow (`RW-RESUME-6`).
    Reset(Box<Reset>),
    /// A subscription the application closed is closed.
    Unsubscribed(RunId),
    /// An error; see [`ClientError::terminal`].
    Error(ClientError),
}

#[derive(Debug)]
pub(crate) enum Command {
    Subscribe(Vec<SubscriptionRequest>),
    Unsubscribe(Vec<RunId>),
    Close,
}

pub(crate) type SharedCursors = Arc<Mutex<BTreeMap<RunId, Cursor>>>;

/// Controls a running client: subscribe, unsubscribe, read cursors, close. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct ClientHandle {
    commands: mpsc::UnboundedSender<Command>,
    cursors: SharedCursors,
}

impl ClientHandle {
    /// Subscribes to a run, from the start or from a cursor (`RW-SUB-1`). Subscribing
    /// to a run already subscribed does nothing.
    pub fn subscribe(&self, request: SubscriptionRequest) {
        let _ = self.commands.send(Command::Subscribe(vec![request]));
    }

    /// Subscribes to several runs at once.
    pub fn subscribe_all(&self, requests: Vec<SubscriptionRequest>) {
        if !requests.is_empty() {
            let _ = self.commands.send(Command::Subscribe(requests));
        }
    }

    /// Stops receiving a run.
    pub fn unsubscribe(&self, run_id: RunId) {
        let _ = self.commands.send(Command::Unsubscribe(vec![run_id]));
    }

    /// Every subscribed run's cursor: the epoch and the last seq handed to the event
    /// stream. Persist these to resume after the application restarts.
    pub fn cursors(&self) -> BTreeMap<RunId, Cursor> {
        self.cursors.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// One run's cursor.
    pub fn cursor(&self, run_id: &RunId) -> Option<Cursor> {
        self.cursors.lock().ok()?.get(run_id).cloned()
    }

    /// Closes the connection with code 1000 and stops the client; the stream ends
    /// with `State(Closed)`.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

/// A running client: the [`ClientEvent`] stream plus its [`ClientHandle`].
#[derive(Debug)]
pub struct Client {
    handle: ClientHandle,
    events: mpsc::Receiver<ClientEvent>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Client {
    /// Starts the client on the current tokio runtime. The connection is made in the
    /// background; its progress arrives as [`ClientEvent::State`] events.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn connect(config: ClientConfig) -> Self {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::channel(config.channel_capacity.max(1));
        let cursors = SharedCursors::default();
        let task = tokio::spawn(driver::Driver::new(config, cmd_rx, ev_tx, cursors.clone()).run());
        Self {
            handle: ClientHandle {
                commands: cmd_tx,
                cursors,
            },
            events: ev_rx,
            task: Some(task),
        }
    }

    /// A handle to control the client.
    pub fn handle(&self) -> ClientHandle {
        self.handle.clone()
    }

    /// The next thing delivered, or `None` once the client stopped (after
    /// `State(Closed)`, or after `State(Failed)` and the terminal error).
    pub async fn next(&mut self) -> Option<ClientEvent> {
        self.events.recv().await
    }

    /// Waits until the background task has finished (after the stream ended).
    pub async fn join(mut self) {
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl futures_util::Stream for Client {
    type Item = ClientEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for Client {
    /// Dropping the client closes the connection cleanly (code 1000).
    fn drop(&mut self) {
        if self.task.is_some() {
            self.handle.close();
        }
    }
}
