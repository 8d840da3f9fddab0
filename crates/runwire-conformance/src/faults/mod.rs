//! Fault injection for the kit's own tests ("the kit must be right").
//!
//! A correct kit fails broken implementations. These faults turn the reference
//! implementations into broken ones without touching their code:
//!
//! - [`ServerFault`]: a WebSocket (and HTTP) proxy in front of a correct server that
//!   breaks one rule of the spec (skips a seq, repeats events, swallows pings, …).
//!   [`FaultyServer::start`] returns a [`ServerTarget`] for the server suite.
//! - [`ClientFault`]: the same proxy between the mock server and a correct client
//!   adapter, plus a filter on the adapter's output, so that the client appears to
//!   break one rule (delivers duplicates, resumes from a wrong cursor, …). Set
//!   [`ClientTarget::faults`](crate::ClientTarget) to use it.
//!
//! Each fault names the requirement whose violation the suites must report.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        protocol::{CloseFrame, Role, frame::coding::CloseCode as WsCloseCode},
    },
};

use crate::{Error, server::ServerTarget};

mod client;
mod proxy;
mod transform;

pub(crate) use client::FaultyClient;
pub use proxy::Proxy;
use proxy::*;
use transform::*;

/// A way to break a correct server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ServerFault {
    /// Drops the event with seq 3 of every run (`RW-ORDER-1`).
    SkipSeq,
    /// Sends every event frame twice (`RW-ORDER-2`).
    DuplicateEvents,
    /// Never forwards a ping to the client (`RW-HEART-1`).
    NeverPing,
    /// Answers the server's pings itself, so a silent client is never closed
    /// (`RW-HEART-3`).
    IgnorePongTimeout,
    /// Resumes one event late: `after_seq` + 1. The first thing a client sees is a
    /// `subscribed` that does not echo its cursor (`RW-SUB-2`); the event after the
    /// cursor never comes (`RW-RESUME-1`).
    WrongResumeCursor,
    /// Accepts any version: rewrites `hello.versions` to `["1.0"]` (`RW-VERSION-3`).
    NoUnsupportedVersion,
    /// Leaks unauthorized runs: replaces the hello token by the full-access token
    /// (`RW-AUTH-6`).
    LeakUnauthorizedRuns,
    /// Accepts messages before hello: injects a hello in front of them (`RW-INPUT-7`).
    AcceptBeforeHello,
    /// Does not de-duplicate producer retries: strips idempotency keys at ingest
    /// (`RW-INGEST-5`).
    NoIngestDedup,
    /// Closes with 1000 whatever the error said (`RW-ERROR-3`).
    WrongCloseCode,
    /// Closes without the error frame first (`RW-CLOSE-1`).
    NoErrorBeforeClose,
    /// Announces no limits in welcome (`RW-CONN-7`).
    WelcomeWithoutLimits,
    /// Answers a history read from a trimmed cursor with 200 and the events it still
    /// has (a silent gap) instead of 410 `cursor_too_old` (`RW-INGEST-17`).
    TrimmedHistoryAsGap,
    /// Folds a recent-log window one line short: a snapshot read over HTTP that holds
    /// the full 50 lines loses its oldest one (`RW-SNAP-2`).
    SnapshotLogWindowShort,
    /// Numbers the new events of a retry that mixes stored idempotency keys with new
    /// events by their index in the request (`head + index`), so the log shows a gap
    /// (`RW-EVENT-3`). The proxy rewrites the answer as such a server would give it.
    RetrySeqByIndex,
    /// Batches a terminal status or a todo update like any event: it waits out the
    /// announced batching window (`RW-BATCH-3`).
    UrgentNotFlushed,
    /// Holds event frames for 200 ms like a pending batch and drops what it holds when
    /// the server shuts down, instead of flushing it first (`RW-SHUTDOWN-4`).
    ShutdownDropsPending,
    /// Does not de-duplicate the live feed against the replay: an event appended while
    /// a subscription opened (its server-assigned `time` is not before the `subscribe`
    /// passed the proxy) and at or below the subscription's `head_seq` is sent twice, as
    /// a server that attaches its feed and reads its head at two moments would
    /// (`RW-ORDER-2`, §8.2).
    DuplicateAtHandoff,
    /// Lets every page in: removes the `Origin` header from upgrades and HTTP requests
    /// before the server sees them (`RW-SEC-2`).
    AnyOrigin,
    /// Takes any body as JSON: declares every request body `application/json` before
    /// the server sees it (`RW-INGEST-24`).
    AnyContentType,
    /// Checks the message rate before the frame's kind: a binary frame that arrives
    /// with the client's token bucket empty is answered `rate_limited` (4101) instead
    /// of `binary_frame` (4000). The proxy keeps the bucket, with the capacity a
    /// previous connection's `welcome` announced (`RW-INPUT-6`).
    RateBeforeKind,
    /// Forgets the epoch it told about a run without events: every `subscribed` with
    /// `head_seq` 0 carries an epoch the server will not honour later, so a client that
    /// subscribed before the first event cannot resume with a replay (`RW-SEC-15`).
    EmptyRunEpochForgotten,
    /// Does not serve the run listing: answers `GET /v1/runs` with 404, as a server
    /// without the optional endpoint does (`RW-INGEST-25`, a SHOULD: the suite warns,
    /// and grades the scenarios of what a listing holds not implemented).
    NoRunListing,
    /// Lists runs the token may not read: sends listings upstream with the
    /// full-access token instead of the request's (`RW-INGEST-28`).
    ListingLeaksRuns,
}

impl ServerFault {
    /// Every server fault.
    pub const ALL: &'static [Self] = &[
        Self::SkipSeq,
        Self::DuplicateEvents,
        Self::NeverPing,
        Self::IgnorePongTimeout,
        Self::WrongResumeCursor,
        Self::NoUnsupportedVersion,
        Self::LeakUnauthorizedRuns,
        Self::AcceptBeforeHello,
        Self::NoIngestDedup,
        Self::WrongCloseCode,
        Self::NoErrorBeforeClose,
        Self::WelcomeWithoutLimits,
        Self::TrimmedHistoryAsGap,
        Self::SnapshotLogWindowShort,
        Self::RetrySeqByIndex,
        Self::UrgentNotFlushed,
        Self::ShutdownDropsPending,
        Self::DuplicateAtHandoff,
        Self::AnyOrigin,
        Self::AnyContentType,
        Self::RateBeforeKind,
        Self::EmptyRunEpochForgotten,
        Self::NoRunListing,
        Self::ListingLeaksRuns,
    ];

    /// The requirement the suites must name when they catch it.
    pub fn requirement(self) -> &'static str {
        match self {
            Self::SkipSeq => "RW-ORDER-1",
            Self::DuplicateEvents => "RW-ORDER-2",
            Self::NeverPing => "RW-HEART-1",
            Self::IgnorePongTimeout => "RW-HEART-3",
            Self::WrongResumeCursor => "RW-SUB-2",
            Self::NoUnsupportedVersion => "RW-VERSION-3",
            Self::LeakUnauthorizedRuns => "RW-AUTH-6",
            Self::AcceptBeforeHello => "RW-INPUT-7",
            Self::NoIngestDedup => "RW-INGEST-5",
            Self::WrongCloseCode => "RW-ERROR-3",
            Self::NoErrorBeforeClose => "RW-CLOSE-1",
            Self::WelcomeWithoutLimits => "RW-CONN-7",
            Self::TrimmedHistoryAsGap => "RW-INGEST-17",
            Self::SnapshotLogWindowShort => "RW-SNAP-2",
            Self::RetrySeqByIndex => "RW-EVENT-3",
            Self::UrgentNotFlushed => "RW-BATCH-3",
            Self::ShutdownDropsPending => "RW-SHUTDOWN-4",
            Self::DuplicateAtHandoff => "RW-ORDER-2",
            Self::AnyOrigin => "RW-SEC-2",
            Self::AnyContentType => "RW-INGEST-24",
            Self::RateBeforeKind => "RW-INPUT-6",
            Self::EmptyRunEpochForgotten => "RW-SEC-15",
            Self::NoRunListing => "RW-INGEST-25",
            Self::ListingLeaksRuns => "RW-INGEST-28",
        }
    }
}

/// A way to make a correct client look broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ClientFault {
    /// Delivers every event twice (`RW-ORDER-4`).
    NoDedup,
    /// Delivers consecutive events swapped (`RW-ORDER-6`).
    NoOrdering,
    /// Resumes from the cursor minus one (`RW-RESUME-10`).
    WrongCursor,
    /// Never answers pings (`RW-HEART-4`).
    NoPong,
    /// Reconnects after a terminal close code: the client sees 1012 instead
    /// (`RW-RECONNECT-5`).
    ReconnectAfterTerminal,
    /// Crashes on a server message of an unknown type (`RW-VERSION-5`).
    CrashOnUnknownType,
    /// Ignores `retry_after_ms` (`RW-RECONNECT-2`).
    IgnoreRetryAfter,
    /// Never declares a silent connection dead: the proxy feeds it pings
    /// (`RW-HEART-5`).
    NoLivenessTimeout,
    /// Does not resubscribe on a gap: its unsubscribe/subscribe never arrive
    /// (`RW-ORDER-5`).
    NoResubscribeOnGap,
    /// Accepts a welcome with a version it did not offer (`RW-VERSION-7`).
    AcceptsUnofferedVersion,
    /// Never closes with 1000 when its runs are done (`RW-CONN-11`).
    NoCloseWhenDone,
    /// Reconnects in a tight loop: the adapter gets `RUNWIRE_RECONNECT_BASE_MS=1` and
    /// `RUNWIRE_RECONNECT_FACTOR=1`, so every delay it announces lies inside the
    /// fixture's envelope but is 0 or 1 ms (`RW-RECONNECT-1`).
    NoBackoff,
    /// Keeps the old epoch in its cursor after a reset into a new epoch: the proxy puts
    /// the run's epoch from before the reset back into later `hello` and `subscribe`
    /// cursors (`RW-RESUME-9`).
    KeepsEpochAfterReset,
    /// Keeps its gap buffer across a reset into a new epoch: after the reset the proxy
    /// hands the client again the old epoch's events it was holding above the reset's
    /// `as_of_seq`, as a client that never cleared its buffer delivers them
    /// (`RW-RESUME-9`).
    KeepsBufferAcrossReset,
    /// Folds a reset's snapshot onto the state it held instead of replacing it: in the
    /// `folded` lines, members the snapshot lacks keep their old values (`RW-SNAP-2`).
    FoldsResetOntoOldState,
    /// Reports its terminal errors without their details: `unsupported_version`
    /// without the server's `supported_versions` (`RW-VERSION-6`), `reconnect_failed`
    /// without `last_error_code`.
    DropsErrorDetails,
    /// Presents the previous connection's token again instead of asking its token
    /// provider on every attempt (`RW-AUTH-9`).
    ReusesStaleToken,
    /// Does not validate one kind of input: the proxy swallows the server frames that
    /// carry it, so the client neither reports them nor closes with 4000 (see
    /// [`Invalid`] for the requirement of each kind).
    Swallows(Invalid),
    /// Compares message types without regard to case: the proxy lower-cases the `type`
    /// of every server message (`RW-CONV-5`).
    IgnoresCase,
    /// Closes with the reserved code 1006 where it closes with 4000 (`RW-CLOSE-4`).
    SendsReservedCloseCode,
    /// Sends a `hello` whose `client` object lacks the required `version`
    /// (`RW-COMPAT-5`).
    SendsInvalidHello,
    /// Writes the member `versions` of its `hello` twice (`RW-CONV-3`).
    SendsDuplicateMembers,
    /// Folds events of types the folding table does not name as if their `data` were
    /// state: a `status` or `phase` in such an event's data lands in the `folded`
    /// lines (`RW-SNAP-4`).
    FoldsUnknownTypes,
    /// Waits for `welcome` for a minute: the adapter gets
    /// `RUNWIRE_WELCOME_TIMEOUT_MS=60000` (`RW-RECONNECT-11`).
    NoWelcomeDeadline,
    /// Sends the `after_seq` of a cursor that has no epoch: the proxy adds
    /// `after_seq: 1` to every subscription entry without an epoch (`RW-RESUME-15`).
    SendsEpochlessCursor,
    /// Reports its own failures with codes of its own: `welcome_timeout` as `timeout`,
    /// `protocol_violation` as `bad_version` (`RW-ERROR-7`).
    OwnErrorCodes,
    /// Reports the error frame that announced a terminal close twice: once as a
    /// non-terminal error, then as the terminal one (`RW-ERROR-8`).
    ReportsTerminalErrorTwice,
    /// Declares the `browser` profile (its WebSocket layer fails a connection on a text
    /// frame that is not UTF-8) but reports nothing when that happens (`RW-CLOSE-10`).
    BrowserWithoutReport,
}

/// A kind of invalid server input a broken client does not notice
/// ([`ClientFault::Swallows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Invalid {
    /// An integer above 2^53 − 1 or below 0 (`RW-CONV-2`).
    UnsafeInteger,
    /// An event whose `run_id` breaks the run id pattern (`RW-EVENT-2`).
    BadRunId,
    /// An event whose `time` is not RFC 3339 UTC with `Z` (`RW-EVENT-5`).
    BadTime,
    /// An event whose `type` breaks the type pattern (`RW-EVENT-6`).
    BadEventType,
    /// An event whose `data` is not an object (`RW-EVENT-7`).
    NonObjectData,
    /// A `ping` whose `id` is empty or longer than 64 characters (`RW-HEART-2`).
    BadPingId,
    /// A frame that is not one JSON object: a binary frame, an array, two objects
    /// (`RW-CONV-1`).
    NotOneObject,
    /// An integer member written with a fraction, `2.0` (`RW-CONV-6`).
    FractionInteger,
}

impl Invalid {
    /// Every kind.
    pub const ALL: &'static [Self] = &[
        Self::UnsafeInteger,
        Self::BadRunId,
        Self::BadTime,
        Self::BadEventType,
        Self::NonObjectData,
        Self::BadPingId,
        Self::NotOneObject,
        Self::FractionInteger,
    ];

    /// The requirement a client that accepts this input breaks.
    pub fn requirement(self) -> &'static str {
        match self {
            Self::UnsafeInteger => "RW-CONV-2",
            Self::BadRunId => "RW-EVENT-2",
            Self::BadTime => "RW-EVENT-5",
            Self::BadEventType => "RW-EVENT-6",
            Self::NonObjectData => "RW-EVENT-7",
            Self::BadPingId => "RW-HEART-2",
            Self::NotOneObject => "RW-CONV-1",
            Self::FractionInteger => "RW-CONV-6",
        }
    }

    /// Whether a server text frame carries this kind of invalid input.
    fn in_text(self, text: &str) -> bool {
        let parsed = serde_json::from_str::<Value>(text);
        if self == Self::NotOneObject {
            return !matches!(parsed, Ok(Value::Object(_)));
        }
        let Ok(v) = parsed else {
            return false;
        };
        let events: Vec<&Value> = match v.get("type").and_then(Value::as_str) {
            Some("event") => v.get("event").into_iter().collect(),
            Some("batch") => v
                .get("events")
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let str_of = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
        match self {
            Self::UnsafeInteger => unsafe_integer(&v),
            Self::BadRunId => events.iter().any(|e| {
                str_of(e, "run_id").is_none_or(|r| runwire_protocol::RunId::new(r).is_err())
            }),
            Self::BadTime => events.iter().any(|e| {
                str_of(e, "time").is_none_or(|t| runwire_protocol::Timestamp::new(t).is_err())
            }),
            Self::BadEventType => events.iter().any(|e| {
                str_of(e, "type").is_none_or(|t| !runwire_protocol::is_valid_event_type(&t))
            }),
            Self::NonObjectData => events
                .iter()
                .any(|e| !e.get("data").is_some_and(Value::is_object)),
            Self::BadPingId => {
                v.get("type").and_then(Value::as_str) == Some("ping")
                    && v.get("id")
                        .and_then(Value::as_str)
                        .is_none_or(|i| i.is_empty() || i.chars().count() > 64)
            }
            Self::NotOneObject => false,
            Self::FractionInteger => {
                let fraction = |x: Option<&Value>| x.is_some_and(Value::is_f64);
                ["after_seq", "head_seq"]
                    .iter()
                    .any(|m| fraction(v.get(*m)))
                    || fraction(v.pointer("/snapshot/as_of_seq"))
                    || events.iter().any(|e| fraction(e.get("seq")))
            }
        }
    }
}

/// Whether a JSON value holds an integer above 2^53 − 1 or below 0 anywhere.
fn unsafe_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.as_u64()
                .is_some_and(|u| u > runwire_protocol::MAX_SAFE_INTEGER)
                || n.as_i64().is_some_and(|i| i < 0)
                || n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() > 9_007_199_254_740_991.0)
        }
        Value::Array(a) => a.iter().any(unsafe_integer),
        Value::Object(o) => o.values().any(unsafe_integer),
        _ => false,
    }
}

impl ClientFault {
    /// Every client fault.
    pub const ALL: &'static [Self] = &[
        Self::NoDedup,
        Self::NoOrdering,
        Self::WrongCursor,
        Self::NoPong,
        Self::ReconnectAfterTerminal,
        Self::CrashOnUnknownType,
        Self::IgnoreRetryAfter,
        Self::NoLivenessTimeout,
        Self::NoResubscribeOnGap,
        Self::AcceptsUnofferedVersion,
        Self::NoCloseWhenDone,
        Self::NoBackoff,
        Self::KeepsEpochAfterReset,
        Self::KeepsBufferAcrossReset,
        Self::FoldsResetOntoOldState,
        Self::DropsErrorDetails,
        Self::ReusesStaleToken,
        Self::Swallows(Invalid::UnsafeInteger),
        Self::Swallows(Invalid::BadRunId),
        Self::Swallows(Invalid::BadTime),
        Self::Swallows(Invalid::BadEventType),
        Self::Swallows(Invalid::NonObjectData),
        Self::Swallows(Invalid::BadPingId),
        Self::Swallows(Invalid::NotOneObject),
        Self::Swallows(Invalid::FractionInteger),
        Self::IgnoresCase,
        Self::SendsReservedCloseCode,
        Self::SendsInvalidHello,
        Self::SendsDuplicateMembers,
        Self::FoldsUnknownTypes,
        Self::NoWelcomeDeadline,
        Self::SendsEpochlessCursor,
        Self::OwnErrorCodes,
        Self::ReportsTerminalErrorTwice,
        Self::BrowserWithoutReport,
    ];

    /// The requirement the client suite must name when it catches it.
    pub fn requirement(self) -> &'static str {
        match self {
            Self::NoDedup => "RW-ORDER-4",
            Self::NoOrdering => "RW-ORDER-6",
            Self::WrongCursor => "RW-RESUME-10",
            Self::NoPong => "RW-HEART-4",
            Self::ReconnectAfterTerminal => "RW-RECONNECT-5",
            Self::CrashOnUnknownType => "RW-VERSION-5",
            Self::IgnoreRetryAfter => "RW-RECONNECT-2",
            Self::NoLivenessTimeout => "RW-HEART-5",
            Self::NoResubscribeOnGap => "RW-ORDER-5",
            Self::AcceptsUnofferedVersion => "RW-VERSION-7",
            Self::NoCloseWhenDone => "RW-CONN-11",
            Self::NoBackoff => "RW-RECONNECT-1",
            Self::KeepsEpochAfterReset | Self::KeepsBufferAcrossReset => "RW-RESUME-9",
            Self::FoldsResetOntoOldState => "RW-SNAP-2",
            Self::DropsErrorDetails => "RW-VERSION-6",
            Self::ReusesStaleToken => "RW-AUTH-9",
            Self::Swallows(i) => i.requirement(),
            Self::IgnoresCase => "RW-CONV-5",
            Self::SendsReservedCloseCode => "RW-CLOSE-4",
            Self::SendsInvalidHello => "RW-COMPAT-5",
            Self::SendsDuplicateMembers => "RW-CONV-3",
            Self::FoldsUnknownTypes => "RW-SNAP-4",
            Self::NoWelcomeDeadline => "RW-RECONNECT-11",
            Self::SendsEpochlessCursor => "RW-RESUME-15",
            Self::OwnErrorCodes => "RW-ERROR-7",
            Self::ReportsTerminalErrorTwice => "RW-ERROR-8",
            Self::BrowserWithoutReport => "RW-CLOSE-10",
        }
    }

    /// Extra environment the broken client's adapter gets (after the mock's, so it
    /// overrides it).
    pub fn env(self) -> Vec<(String, String)> {
        match self {
            Self::NoBackoff => vec![
                ("RUNWIRE_RECONNECT_BASE_MS".into(), "1".into()),
                ("RUNWIRE_RECONNECT_FACTOR".into(), "1".into()),
            ],
            Self::NoWelcomeDeadline => {
                vec![("RUNWIRE_WELCOME_TIMEOUT_MS".into(), "60000".into())]
            }
            _ => Vec::new(),
        }
    }
}

/// Which side of the proxy a frame comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum From {
    Client,
    Server,
}

/// What the proxy does to frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Server(ServerFault),
    Client(ClientFault),
}

/// Per-connection state of the proxy.
#[derive(Debug, Default)]
struct ConnState {
    conn: u32,
    hello_seen: bool,
    offered: Vec<String>,
    /// The batching window the server announced in `welcome`.
    batch_window_ms: u64,
    /// Per run: when its last `subscribe` passed the proxy (RFC 3339, ms) and the
    /// `head_seq` the server answered it with ([`ServerFault::DuplicateAtHandoff`]).
    opening: BTreeMap<String, (String, Option<u64>)>,
    /// The client's token bucket and when it was last refilled
    /// ([`ServerFault::RateBeforeKind`]).
    tokens: Option<(f64, std::time::Instant)>,
}

/// Shared state of one proxy.
#[derive(Debug, Default)]
struct Shared {
    /// The client saw a frame of an unknown type (for [`ClientFault::CrashOnUnknownType`]).
    unknown_seen: bool,
    full_token: Option<String>,
    /// Per run, the epoch of the latest `subscribed` or `reset` the server sent.
    epochs: BTreeMap<String, String>,
    /// Per run, the epoch it had before a reset into a new epoch
    /// ([`ClientFault::KeepsEpochAfterReset`]).
    old_epochs: BTreeMap<String, String>,
    /// Per run, the highest seq the client has in order, and the events it holds
    /// above a gap ([`ClientFault::KeepsBufferAcrossReset`]).
    held: BTreeMap<String, (u64, BTreeMap<u64, Value>)>,
    /// The token of the first `hello` ([`ClientFault::ReusesStaleToken`]).
    first_token: Option<String>,
    /// The `max_messages_per_second` the server last announced
    /// ([`ServerFault::RateBeforeKind`]).
    rate: Option<u64>,
}

/// A correct server behind a fault-injecting proxy.
#[derive(Debug)]
pub struct FaultyServer {
    proxy: Proxy,
    http: Option<tokio::task::JoinHandle<()>>,
    ingest: String,
}

impl Drop for FaultyServer {
    fn drop(&mut self) {
        if let Some(h) = &self.http {
            h.abort();
        }
    }
}

impl FaultyServer {
    /// Puts `fault` in front of `target` (whose URLs must be `ws://` and `http://`).
    pub async fn start(target: &ServerTarget, fault: ServerFault) -> Result<Self, Error> {
        let up = host_port(&target.ws_url)?;
        let proxy = Proxy::start(up, Fault::Server(fault)).await?;
        if let Ok(mut s) = proxy.shared.lock() {
            s.full_token = target.token.clone();
        }
        let (http, ingest) = if matches!(
            fault,
            ServerFault::NoIngestDedup
                | ServerFault::TrimmedHistoryAsGap
                | ServerFault::SnapshotLogWindowShort
                | ServerFault::RetrySeqByIndex
                | ServerFault::AnyOrigin
                | ServerFault::AnyContentType
                | ServerFault::NoRunListing
                | ServerFault::ListingLeaksRuns
        ) {
            let upstream = target.ingest_url.clone();
            let full = target.token.clone();
            let l = TcpListener::bind(("127.0.0.1", 0))
                .await
                .map_err(|e| Error::Target(format!("proxy bind: {e}")))?;
            let a = l
                .local_addr()
                .map_err(|e| Error::Target(format!("proxy addr: {e}")))?;
            let keys: Keys = Arc::default();
            let h = tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    let upstream = upstream.clone();
                    let keys = Arc::clone(&keys);
                    let full = full.clone();
                    tokio::spawn(async move {
                        let _ = forward_http(s, &upstream, fault, &keys, full).await;
                    });
                }
            });
            (Some(h), format!("http://{a}"))
        } else {
            (None, target.ingest_url.clone())
        };
        Ok(Self {
            proxy,
            http,
            ingest,
        })
    }

    /// The target for the server suite: the proxy's URLs, the original tokens and
    /// control.
    pub fn target(&self, original: &ServerTarget) -> ServerTarget {
        ServerTarget {
            ws_url: format!(
                "ws://{}{}",
                self.proxy.addr(),
                runwire_protocol::STREAM_PATH
            ),
            ingest_url: self.ingest.clone(),
            description: format!("{} behind a fault-injecting proxy", original.description),
            admission: crate::server::AdmissionDecl {
                behind_proxy: self.http.is_some(),
                ..original.admission.clone()
            },
            ..original.clone()
        }
    }
}

fn host_port(url: &str) -> Result<SocketAddr, Error> {
    let rest = url
        .split_once("://")
        .map(|x| x.1)
        .ok_or_else(|| Error::Target(format!("bad URL {url}")))?;
    let hp = rest.split('/').next().unwrap_or("");
    hp.parse()
        .map_err(|_| Error::Target(format!("{url}: the proxy needs an IP:PORT address")))
}

/// Forwards one HTTP request through a producer-API fault: with
/// [`ServerFault::NoIngestDedup`] every `idempotency_key` is removed from the body; with
/// [`ServerFault::TrimmedHistoryAsGap`] a 410 history answer is replaced by the
/// retained events.
/// Idempotency keys seen in answers, per (path, key): their seqs.
type Keys = Arc<Mutex<BTreeMap<(String, String), u64>>>;

async fn forward_http(
    mut s: TcpStream,
    upstream: &str,
    fault: ServerFault,
    keys: &Keys,
    full_token: Option<String>,
) -> Option<()> {
    let head = read_head(&mut s).await?;
    let head_s = String::from_utf8_lossy(&head).into_owned();
    let len: usize = head_s
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    if len > 256 * 1024 * 1024 {
        // Far over any request the suite sends: refuse rather than allocate it.
        return None;
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    let mut first = head_s.lines().next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("GET").to_owned();
    let path = first.next().unwrap_or("/").to_owned();
    let mut token = head_s.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case("authorization")
            .then(|| v.trim().trim_start_matches("Bearer ").to_owned())
    });
    let listing = method == "GET" && (path == "/v1/runs" || path.starts_with("/v1/runs?"));
    if listing && fault == ServerFault::NoRunListing {
        let body = br#"{"error":{"code":"invalid_request","message":"no such endpoint","retryable":false}}"#;
        let out = format!(
            "HTTP/1.1 404 X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(out.as_bytes()).await.ok()?;
        s.write_all(body).await.ok()?;
        return Some(());
    }
    if listing && fault == ServerFault::ListingLeaksRuns {
        token = full_token;
    }
    if fault == ServerFault::NoIngestDedup
        && let Ok(mut v) = serde_json::from_slice::<Value>(&body)
    {
        if let Some(a) = v.get_mut("events").and_then(Value::as_array_mut) {
            for e in a {
                if let Some(o) = e.as_object_mut() {
                    o.remove("idempotency_key");
                }
            }
        }
        body = serde_json::to_vec(&v).unwrap_or(body);
    }
    // Origin and Content-Type pass through as sent (an absent Content-Type stays
    // absent), unless the fault is to ignore them.
    let header = |name: &str| {
        head_s.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let mut pass: Vec<(String, String)> = Vec::new();
    if fault != ServerFault::AnyOrigin
        && let Some(o) = header("origin")
    {
        pass.push(("Origin".into(), o));
    }
    if fault != ServerFault::AnyContentType && len > 0 {
        pass.push((
            "Content-Type".into(),
            header("content-type").unwrap_or_default(),
        ));
    }
    let a = crate::http::request_with(
        upstream,
        &method,
        &path,
        token.as_deref(),
        (len > 0).then_some(body.as_slice()),
        &pass,
        std::time::Duration::from_secs(10),
    )
    .await
    .ok()?;
    let mut a = if fault == ServerFault::TrimmedHistoryAsGap && method == "GET" && a.status == 410 {
        retained_instead(upstream, &path, token.as_deref())
            .await
            .unwrap_or(a)
    } else {
        a
    };
    if fault == ServerFault::RetrySeqByIndex && method == "POST" && a.status == 200 {
        renumber_retry(&path, &body, &mut a, keys);
    }
    if fault == ServerFault::SnapshotLogWindowShort
        && method == "GET"
        && a.status == 200
        && path.starts_with("/v1/runs/")
        && !path.contains("/events")
    {
        let mut v = a.json();
        if let Some(logs) = v.get_mut("recent_logs").and_then(Value::as_array_mut)
            && logs.len() >= crate::fold::RECENT_LOGS
        {
            logs.remove(0);
            a.body = serde_json::to_vec(&v).unwrap_or(a.body);
        }
    }
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        a.status,
        a.body.len()
    );
    for (n, v) in &a.headers {
        if n != "content-length" && n != "connection" && n != "transfer-encoding" {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    out.push_str("\r\n");
    s.write_all(out.as_bytes()).await.ok()?;
    s.write_all(&a.body).await.ok()?;
    Some(())
}

/// [`ServerFault::RetrySeqByIndex`]: in an append answer whose request retried some
/// stored keys, each new event's seq moves up by the number of retried events (as if
/// numbered `head + index in request`).
fn renumber_retry(path: &str, body: &[u8], a: &mut crate::http::HttpAnswer, keys: &Keys) {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let req_keys: Vec<Option<String>> = req
        .get("events")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    e.get("idempotency_key")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    let Ok(mut seen) = keys.lock() else { return };
    let retried = req_keys
        .iter()
        .flatten()
        .filter(|k| seen.contains_key(&(path.to_owned(), (*k).clone())))
        .count() as u64;
    let mut v = a.json();
    let mut last = None;
    if let Some(evs) = v.get_mut("events").and_then(Value::as_array_mut) {
        for (i, e) in evs.iter_mut().enumerate() {
            let key = req_keys.get(i).cloned().flatten();
            let stored = key
                .as_ref()
                .is_some_and(|k| seen.contains_key(&(path.to_owned(), k.clone())));
            if let Some(q) = e.get("seq").and_then(Value::as_u64) {
                let q = if retried > 0 && !stored {
                    q + retried
                } else {
                    q
                };
                e["seq"] = json!(q);
                last = Some(last.map_or(q, |l: u64| l.max(q)));
                if let Some(k) = key {
                    seen.entry((path.to_owned(), k)).or_insert(q);
                }
            }
        }
    }
    if retried > 0
        && let Some(l) = last
    {
        v["last_seq"] = json!(l);
        a.body = serde_json::to_vec(&v).unwrap_or_default();
    }
}

/// For a history read `path` (`/v1/runs/{id}/events?after_seq=S…`) that was answered
/// 410: the answer of the read from the oldest retained cursor instead (found by
/// bisection between S and the head), as a server that skips what it trimmed would give.
async fn retained_instead(
    upstream: &str,
    path: &str,
    token: Option<&str>,
) -> Option<crate::http::HttpAnswer> {
    let limit = std::time::Duration::from_secs(10);
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let run = route
        .strip_prefix("/v1/runs/")?
        .strip_suffix("/events")?
        .to_owned();
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
    };
    let after: u64 = param("after_seq").and_then(|v| v.parse().ok()).unwrap_or(0);
    let read = |from: u64, n: String| {
        let path = format!("/v1/runs/{run}/events?after_seq={from}&limit={n}");
        async move { crate::http::request(upstream, "GET", &path, token, None, limit).await }
    };
    let n = param("limit").unwrap_or_else(|| "1000".to_owned());
    // A read after `lo` is 410. Trimming may move on while this searches, so the
    // search starts again (bounded) when the final read is 410 after all.
    let mut lo = after;
    for _ in 0..10 {
        let snap = crate::http::request(
            upstream,
            "GET",
            &format!("/v1/runs/{run}"),
            token,
            None,
            limit,
        )
        .await
        .ok()?;
        // A read after the head is 200 (empty).
        let mut hi = snap.json().get("as_of_seq").and_then(Value::as_u64)?;
        while hi > lo + 1 {
            let mid = lo + (hi - lo) / 2;
            if read(mid, "1".to_owned()).await.ok()?.status == 200 {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let a = read(hi, n.clone()).await.ok()?;
        if a.status == 200 {
            return Some(a);
        }
        lo = hi;
    }
    None
}

/// The requirement → fault table, for docs and reports.
pub fn catalog() -> BTreeMap<String, &'static str> {
    let mut m = BTreeMap::new();
    for f in ServerFault::ALL {
        m.insert(format!("server:{f:?}"), f.requirement());
    }
    for f in ClientFault::ALL {
        m.insert(format!("client:{f:?}"), f.requirement());
    }
    m
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_ms_writes_utc_with_millis() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_910_800_123);
        assert_eq!(super::transform::rfc3339_ms(t), "2025-12-05T05:00:00.123Z");
        assert_eq!(
            super::transform::rfc3339_ms(std::time::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
    }
}
