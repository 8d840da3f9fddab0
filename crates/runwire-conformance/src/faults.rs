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

/// [`ServerFault::RateBeforeKind`]: learns the announced rate from `welcome`, counts
/// the client's messages in a token bucket, and answers a binary frame that finds it
/// empty with `rate_limited` and close 4101 itself (the frames answered back).
fn rate_before_kind(
    from: From,
    st: &mut ConnState,
    shared: &Mutex<Shared>,
    msg: &Message,
) -> Option<Vec<Message>> {
    if from == From::Server {
        if let Message::Text(t) = msg
            && t.as_str().contains("\"welcome\"")
            && let Ok(v) = serde_json::from_str::<Value>(t.as_str())
            && let Some(r) = v
                .pointer("/limits/max_messages_per_second")
                .and_then(Value::as_u64)
            && let Ok(mut sh) = shared.lock()
        {
            sh.rate = Some(r);
        }
        return None;
    }
    if !matches!(msg, Message::Text(_) | Message::Binary(_)) {
        return None;
    }
    let rate = shared.lock().ok()?.rate? as f64;
    let now = std::time::Instant::now();
    let (tokens, at) = st.tokens.get_or_insert((rate, now));
    *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(rate);
    *at = now;
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        return None;
    }
    matches!(msg, Message::Binary(_)).then(|| {
        vec![
            text(&json!({
                "type": "error",
                "code": "rate_limited",
                "message": "more messages than the rate allows",
                "retryable": true,
                "retry_after_ms": 1000,
                "close_code": 4101
            })),
            Message::Close(Some(CloseFrame {
                code: WsCloseCode::from(4101),
                reason: "rate_limited".into(),
            })),
        ]
    })
}

/// Tracks what a client holds per run, from the server's frames, for the faults that
/// need it: epochs for [`ClientFault::KeepsEpochAfterReset`], the gap buffer for
/// [`ClientFault::KeepsBufferAcrossReset`]. Returns the frames to send the client after
/// `v`: the old epoch's buffered events, when a broken client would deliver them.
fn track_server_frame(
    fault: ClientFault,
    shared: &Mutex<Shared>,
    ty: &str,
    v: &Value,
) -> Vec<Message> {
    let Ok(mut sh) = shared.lock() else {
        return Vec::new();
    };
    let run = v
        .get("run_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let epoch = v
        .get("epoch")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let mut extra = Vec::new();
    match ty {
        "subscribed" => {
            let after = v.get("after_seq").and_then(Value::as_u64).unwrap_or(0);
            sh.held.insert(run.clone(), (after, BTreeMap::new()));
            sh.epochs.insert(run, epoch);
        }
        "reset" => {
            let as_of = v
                .pointer("/snapshot/as_of_seq")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let old = sh.epochs.insert(run.clone(), epoch.clone());
            if let Some(old) = old.filter(|o| *o != epoch) {
                if fault == ClientFault::KeepsBufferAcrossReset
                    && let Some((_, buf)) = sh.held.get(&run)
                {
                    for e in buf.range(as_of + 1..).map(|(_, e)| e) {
                        extra.push(text(&json!({"type": "event", "event": e})));
                    }
                }
                sh.old_epochs.insert(run.clone(), old);
            }
            sh.held.insert(run, (as_of, BTreeMap::new()));
        }
        "event" | "batch" => {
            let events: Vec<Value> = match ty {
                "event" => v.get("event").cloned().into_iter().collect(),
                _ => v
                    .get("events")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            };
            for e in events {
                let (Some(r), Some(seq)) = (
                    e.get("run_id").and_then(Value::as_str),
                    e.get("seq").and_then(Value::as_u64),
                ) else {
                    continue;
                };
                let Some((last, buf)) = sh.held.get_mut(r) else {
                    continue;
                };
                if seq == *last + 1 {
                    *last = seq;
                    while buf.remove(&(*last + 1)).is_some() {
                        *last += 1;
                    }
                    buf.retain(|s, _| *s > *last);
                } else if seq > *last + 1 {
                    buf.insert(seq, e.clone());
                }
            }
        }
        _ => {}
    }
    extra
}

/// Writes the member `versions` of a `hello` twice ([`ClientFault::SendsDuplicateMembers`]).
fn duplicate_versions(v: &Value) -> Option<Message> {
    let versions = v.get("versions")?.to_string();
    let body = v.to_string();
    let rest = body.strip_prefix('{')?;
    Some(Message::text(format!("{{\"versions\":{versions},{rest}")))
}

/// [`ServerFault::UrgentNotFlushed`]: how long to hold a server frame that carries a
/// terminal status or a todo update (the announced window); records the window from
/// `welcome`.
fn urgent_hold(fault: Fault, st: &Mutex<ConnState>, m: &Message) -> Option<std::time::Duration> {
    if fault != Fault::Server(ServerFault::UrgentNotFlushed) {
        return None;
    }
    let Message::Text(t) = m else { return None };
    let v: Value = serde_json::from_str(t.as_str()).ok()?;
    let mut g = st.lock().ok()?;
    if v.get("type").and_then(Value::as_str) == Some("welcome") {
        g.batch_window_ms = v
            .get("batch_window_ms")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        return None;
    }
    let events: Vec<&Value> = match v.get("type").and_then(Value::as_str) {
        Some("event") => v.get("event").into_iter().collect(),
        Some("batch") => v
            .get("events")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        _ => return None,
    };
    let urgent = events.iter().any(|e| {
        let ty = e.get("type").and_then(Value::as_str).unwrap_or("");
        let status = e.pointer("/data/status").and_then(Value::as_str);
        ty == "todo.updated"
            || (ty == "run.status" && matches!(status, Some("completed" | "failed" | "cancelled")))
    });
    (urgent && g.batch_window_ms > 0).then(|| std::time::Duration::from_millis(g.batch_window_ms))
}

/// A UTC time as RFC 3339 with milliseconds (`2026-12-05T06:05:00.123Z`), the form
/// servers write `time` in, so that the two compare as strings.
fn rfc3339_ms(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn text(v: &Value) -> Message {
    Message::text(v.to_string())
}

fn transform(
    fault: Fault,
    from: From,
    st: &mut ConnState,
    shared: &Mutex<Shared>,
    msg: Message,
) -> (Vec<Message>, Vec<Message>) {
    // Returns (frames forwarded, frames answered back to the sender).
    if fault == Fault::Server(ServerFault::RateBeforeKind)
        && let Some(back) = rate_before_kind(from, st, shared, &msg)
    {
        return (vec![], back);
    }
    let Message::Text(t) = &msg else {
        if let (Message::Close(_), Fault::Client(ClientFault::NoCloseWhenDone)) = (&msg, fault)
            && from == From::Client
        {
            return (vec![Message::Close(None)], vec![]);
        }
        if let (Message::Close(Some(cf)), Fault::Client(ClientFault::SendsReservedCloseCode)) =
            (&msg, fault)
            && from == From::Client
            && u16::from(cf.code) == 4000
        {
            return (
                vec![Message::Close(Some(CloseFrame {
                    code: WsCloseCode::from(1006),
                    reason: "".into(),
                }))],
                vec![],
            );
        }
        if let (Message::Binary(_), Fault::Client(ClientFault::Swallows(Invalid::NotOneObject))) =
            (&msg, fault)
            && from == From::Server
        {
            return (vec![], vec![]);
        }
        if let (Message::Close(Some(cf)), Fault::Client(ClientFault::ReconnectAfterTerminal)) =
            (&msg, fault)
            && from == From::Server
        {
            let c = u16::from(cf.code);
            if (4000..4100).contains(&c) || c == 1008 {
                return (
                    vec![Message::Close(Some(CloseFrame {
                        code: WsCloseCode::from(1012),
                        reason: "".into(),
                    }))],
                    vec![],
                );
            }
        }
        if let (Message::Close(Some(cf)), Fault::Server(ServerFault::WrongCloseCode)) =
            (&msg, fault)
            && from == From::Server
            && u16::from(cf.code) != 1000
        {
            return (
                vec![Message::Close(Some(CloseFrame {
                    code: WsCloseCode::Normal,
                    reason: "".into(),
                }))],
                vec![],
            );
        }
        return (vec![msg], vec![]);
    };
    if let Fault::Client(ClientFault::Swallows(kind)) = fault
        && from == From::Server
        && kind.in_text(t)
    {
        return (vec![], vec![]);
    }
    let Ok(mut v) = serde_json::from_str::<Value>(t) else {
        return (vec![msg], vec![]);
    };
    let ty = v
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    match (fault, from) {
        (Fault::Server(f), From::Server) => match f {
            ServerFault::SkipSeq => {
                if ty == "event" && v.pointer("/event/seq").and_then(Value::as_u64) == Some(3) {
                    return (vec![], vec![]);
                }
                if ty == "batch"
                    && let Some(a) = v.get_mut("events").and_then(Value::as_array_mut)
                {
                    a.retain(|e| e.get("seq").and_then(Value::as_u64) != Some(3));
                    if a.is_empty() {
                        return (vec![], vec![]);
                    }
                }
                (vec![text(&v)], vec![])
            }
            ServerFault::DuplicateEvents if ty == "event" || ty == "batch" => {
                (vec![text(&v), text(&v)], vec![])
            }
            ServerFault::NeverPing if ty == "ping" => (vec![], vec![]),
            ServerFault::EmptyRunEpochForgotten
                if ty == "subscribed" && v.get("head_seq").and_then(Value::as_u64) == Some(0) =>
            {
                if let Some(e) = v.get("epoch").and_then(Value::as_str) {
                    v["epoch"] = json!(format!("{e}f"));
                }
                (vec![text(&v)], vec![])
            }
            ServerFault::IgnorePongTimeout if ty == "ping" => {
                let id = v.get("id").cloned().unwrap_or(Value::Null);
                (vec![], vec![text(&json!({"type": "pong", "id": id}))])
            }
            ServerFault::NoErrorBeforeClose if ty == "error" && v.get("close_code").is_some() => {
                (vec![], vec![])
            }
            ServerFault::WelcomeWithoutLimits if ty == "welcome" => {
                if let Some(o) = v.as_object_mut() {
                    o.remove("limits");
                }
                (vec![text(&v)], vec![])
            }
            ServerFault::DuplicateAtHandoff if ty == "subscribed" => {
                let run = v.get("run_id").and_then(Value::as_str).unwrap_or("");
                if let Some(o) = st.opening.get_mut(run) {
                    o.1 = v.get("head_seq").and_then(Value::as_u64);
                }
                (vec![msg], vec![])
            }
            ServerFault::DuplicateAtHandoff if ty == "event" || ty == "batch" => {
                let events: Vec<Value> = match ty.as_str() {
                    "event" => v.get("event").cloned().into_iter().collect(),
                    _ => v
                        .get("events")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                };
                let mut out = vec![msg];
                for e in events {
                    let run = e.get("run_id").and_then(Value::as_str).unwrap_or("");
                    let seq = e.get("seq").and_then(Value::as_u64).unwrap_or(0);
                    let time = e.get("time").and_then(Value::as_str).unwrap_or("");
                    if let Some((opened, Some(head))) = st.opening.get(run)
                        && seq <= *head
                        && time >= opened.as_str()
                    {
                        out.push(text(&json!({"type": "event", "event": e})));
                    }
                }
                (out, vec![])
            }
            _ => (vec![msg], vec![]),
        },
        (Fault::Server(f), From::Client) => {
            let first = !st.hello_seen;
            if ty == "hello" {
                st.hello_seen = true;
            }
            if f == ServerFault::DuplicateAtHandoff
                && let Some(a) = v.get("subscriptions").and_then(Value::as_array)
            {
                let now = rfc3339_ms(std::time::SystemTime::now());
                for e in a {
                    if let Some(run) = e.get("run_id").and_then(Value::as_str) {
                        st.opening.insert(run.to_owned(), (now.clone(), None));
                    }
                }
            }
            match f {
                ServerFault::WrongResumeCursor if ty == "subscribe" || ty == "hello" => {
                    if let Some(a) = v.get_mut("subscriptions").and_then(Value::as_array_mut) {
                        for e in a {
                            if let Some(n) = e.get("after_seq").and_then(Value::as_u64) {
                                e["after_seq"] = json!(n + 1);
                            }
                        }
                    }
                    (vec![text(&v)], vec![])
                }
                ServerFault::NoUnsupportedVersion if ty == "hello" => {
                    v["versions"] = json!(["1.0"]);
                    (vec![text(&v)], vec![])
                }
                ServerFault::LeakUnauthorizedRuns if ty == "hello" => {
                    if let Some(tok) = shared.lock().ok().and_then(|s| s.full_token.clone()) {
                        v["token"] = json!(tok);
                    }
                    (vec![text(&v)], vec![])
                }
                ServerFault::AcceptBeforeHello if first && ty != "hello" => {
                    st.hello_seen = true;
                    let tok = shared.lock().ok().and_then(|s| s.full_token.clone());
                    let mut h = json!({"type": "hello", "versions": ["1.0"]});
                    if let Some(t) = tok {
                        h["token"] = json!(t);
                    }
                    (vec![text(&h), msg], vec![])
                }
                _ => (vec![msg], vec![]),
            }
        }
        (Fault::Client(f), From::Server) => {
            let known = runwire_protocol::ServerMessage::TYPES.contains(&ty.as_str());
            if !known && let Ok(mut s) = shared.lock() {
                s.unknown_seen = true;
            }
            let extra = track_server_frame(f, shared, &ty, &v);
            if !extra.is_empty() {
                let mut out = vec![msg];
                out.extend(extra);
                return (out, vec![]);
            }
            match f {
                ClientFault::IgnoresCase if ty.chars().any(|c| c.is_ascii_uppercase()) => {
                    v["type"] = json!(ty.to_ascii_lowercase());
                    (vec![text(&v)], vec![])
                }
                ClientFault::IgnoreRetryAfter if ty == "error" => {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("retry_after_ms");
                    }
                    (vec![text(&v)], vec![])
                }
                ClientFault::ReconnectAfterTerminal if ty == "error" => {
                    let c = v.get("close_code").and_then(Value::as_u64).unwrap_or(0);
                    if (4000..4100).contains(&c) || c == 1008 {
                        v["close_code"] = json!(1012);
                        v["retryable"] = json!(true);
                        v["code"] = json!("server_shutdown");
                    }
                    (vec![text(&v)], vec![])
                }
                ClientFault::AcceptsUnofferedVersion if ty == "welcome" => {
                    let ver = v.get("version").and_then(Value::as_str).unwrap_or("");
                    if !st.offered.iter().any(|o| o == ver)
                        && let Some(first) = st.offered.first()
                    {
                        v["version"] = json!(first);
                    }
                    (vec![text(&v)], vec![])
                }
                _ => (vec![msg], vec![]),
            }
        }
        (Fault::Client(f), From::Client) => {
            if ty == "hello" {
                st.offered = v
                    .get("versions")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
            }
            match f {
                ClientFault::KeepsEpochAfterReset if ty == "hello" || ty == "subscribe" => {
                    let old = shared
                        .lock()
                        .map(|s| s.old_epochs.clone())
                        .unwrap_or_default();
                    if let Some(a) = v.get_mut("subscriptions").and_then(Value::as_array_mut) {
                        for e in a {
                            let run = e.get("run_id").and_then(Value::as_str).unwrap_or("");
                            if let Some(o) = old.get(run) {
                                e["epoch"] = json!(o);
                            }
                        }
                    }
                    if ty == "hello" {
                        st.hello_seen = true;
                    }
                    (vec![text(&v)], vec![])
                }
                ClientFault::ReusesStaleToken if ty == "hello" => {
                    st.hello_seen = true;
                    if let Ok(mut s) = shared.lock() {
                        match (&s.first_token, v.get("token").and_then(Value::as_str)) {
                            (Some(first), Some(_)) => v["token"] = json!(first),
                            (None, Some(t)) => s.first_token = Some(t.to_owned()),
                            _ => {}
                        }
                    }
                    (vec![text(&v)], vec![])
                }
                ClientFault::SendsInvalidHello if ty == "hello" => {
                    st.hello_seen = true;
                    v["client"] = json!({"name": "broken-client"});
                    (vec![text(&v)], vec![])
                }
                ClientFault::SendsDuplicateMembers if ty == "hello" => {
                    st.hello_seen = true;
                    (duplicate_versions(&v).into_iter().collect(), vec![])
                }
                ClientFault::SendsEpochlessCursor if ty == "hello" || ty == "subscribe" => {
                    if let Some(a) = v.get_mut("subscriptions").and_then(Value::as_array_mut) {
                        for e in a {
                            if e.get("epoch").is_none() {
                                e["after_seq"] = json!(1);
                            }
                        }
                    }
                    if ty == "hello" {
                        st.hello_seen = true;
                    }
                    (vec![text(&v)], vec![])
                }
                ClientFault::NoPong if ty == "pong" => (vec![], vec![]),
                ClientFault::NoLivenessTimeout
                    if ty == "pong"
                        && v.get("id")
                            .and_then(Value::as_str)
                            .is_some_and(|i| i.starts_with("keep-")) =>
                {
                    (vec![], vec![])
                }
                ClientFault::WrongCursor if ty == "hello" || ty == "subscribe" => {
                    if (st.conn > 1 || ty == "subscribe")
                        && let Some(a) = v.get_mut("subscriptions").and_then(Value::as_array_mut)
                    {
                        for e in a {
                            if let Some(n) = e.get("after_seq").and_then(Value::as_u64)
                                && n > 0
                            {
                                e["after_seq"] = json!(n - 1);
                            }
                        }
                    }
                    (vec![text(&v)], vec![])
                }
                ClientFault::NoResubscribeOnGap
                    if st.hello_seen && (ty == "unsubscribe" || ty == "subscribe") =>
                {
                    (vec![], vec![])
                }
                _ => {
                    if ty == "hello" {
                        st.hello_seen = true;
                    }
                    (vec![msg], vec![])
                }
            }
        }
    }
}

/// `head` without its `name` header lines.
fn without_header(head: &[u8], name: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    text.split_inclusive("\r\n")
        .filter(|l| {
            l.split_once(':')
                .is_none_or(|(n, _)| !n.trim().eq_ignore_ascii_case(name))
        })
        .collect::<String>()
        .into_bytes()
}

/// Reads an HTTP head byte by byte (so nothing after it is consumed).
async fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.ok()? == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.push(b[0]);
    }
    Some(buf)
}

/// A running fault-injecting WebSocket proxy.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    shared: Arc<Mutex<Shared>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    async fn start(upstream: SocketAddr, fault: Fault) -> Result<Self, Error> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| Error::Target(format!("proxy bind: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Target(format!("proxy addr: {e}")))?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let sh = Arc::clone(&shared);
        let count = Arc::new(AtomicU32::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let conn = count.fetch_add(1, Ordering::SeqCst) + 1;
                let sh = Arc::clone(&sh);
                tokio::spawn(async move {
                    let _ = relay(client, upstream, fault, conn, sh).await;
                });
            }
        });
        Ok(Self { addr, task, shared })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: Fault,
    conn: u32,
    shared: Arc<Mutex<Shared>>,
) -> Option<()> {
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        return None;
    };
    let mut req = read_head(&mut client).await?;
    if fault == Fault::Server(ServerFault::AnyOrigin) {
        req = without_header(&req, "origin");
    }
    up.write_all(&req).await.ok()?;
    let resp = read_head(&mut up).await?;
    client.write_all(&resp).await.ok()?;
    if !resp.starts_with(b"HTTP/1.1 101") {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
        return None;
    }
    let cws = WebSocketStream::from_raw_socket(client, Role::Server, None).await;
    let uws = WebSocketStream::from_raw_socket(up, Role::Client, None).await;
    let (mut c_tx, mut c_rx) = cws.split();
    let (mut u_tx, mut u_rx) = uws.split();
    let st = Arc::new(Mutex::new(ConnState {
        conn,
        ..ConnState::default()
    }));
    let (to_client, mut to_client_rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let (to_server, mut to_server_rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let keep_tx = to_client.clone();
    let a = {
        let st = Arc::clone(&st);
        let sh = Arc::clone(&shared);
        let to_client = to_client.clone();
        let to_server = to_server.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = c_rx.next().await {
                if matches!(m, Message::Ping(_) | Message::Pong(_)) {
                    continue;
                }
                let (fwd, back) = {
                    let Ok(mut g) = st.lock() else { return };
                    transform(fault, From::Client, &mut g, &sh, m)
                };
                for f in fwd {
                    let _ = to_server.send(f);
                }
                for b in back {
                    let _ = to_client.send(b);
                }
            }
            let _ = to_server.send(Message::Close(None));
        })
    };
    let b = {
        let st = Arc::clone(&st);
        let sh = Arc::clone(&shared);
        tokio::spawn(async move {
            // ShutdownDropsPending: event frames wait here like a pending batch, and a
            // server_shutdown error discards what is waiting.
            let pending_batch = fault == Fault::Server(ServerFault::ShutdownDropsPending);
            let mut held: Vec<Message> = Vec::new();
            let far = tokio::time::Instant::now() + std::time::Duration::from_secs(86_400);
            let release = tokio::time::sleep_until(far);
            tokio::pin!(release);
            loop {
                let m = tokio::select! {
                    m = u_rx.next() => match m {
                        Some(Ok(m)) => m,
                        _ => break,
                    },
                    () = &mut release, if !held.is_empty() => {
                        for h in held.drain(..) {
                            let _ = to_client.send(h);
                        }
                        release.as_mut().reset(far);
                        continue;
                    }
                };
                if matches!(m, Message::Ping(_) | Message::Pong(_)) {
                    continue;
                }
                if let Some(hold) = urgent_hold(fault, &st, &m) {
                    tokio::time::sleep(hold).await;
                }
                if pending_batch && let Message::Text(t) = &m {
                    let t = t.as_str();
                    if t.contains("\"type\":\"event\"") || t.contains("\"type\":\"batch\"") {
                        if held.is_empty() {
                            release.as_mut().reset(
                                tokio::time::Instant::now() + std::time::Duration::from_millis(200),
                            );
                        }
                        held.push(m);
                        continue;
                    }
                    if t.contains("\"server_shutdown\"") {
                        held.clear();
                    }
                }
                let (fwd, back) = {
                    let Ok(mut g) = st.lock() else { return };
                    transform(fault, From::Server, &mut g, &sh, m)
                };
                for f in fwd {
                    let _ = to_client.send(f);
                }
                for b in back {
                    let _ = to_server.send(b);
                }
            }
            for h in held.drain(..) {
                let _ = to_client.send(h);
            }
            let _ = to_client.send(Message::Close(None));
        })
    };
    let keep = if matches!(fault, Fault::Client(ClientFault::NoLivenessTimeout)) {
        // The broken client "never notices silence": the proxy keeps it fed.
        let tc = keep_tx;
        Some(tokio::spawn(async move {
            let mut n = 0u64;
            let mut iv = tokio::time::interval(std::time::Duration::from_millis(50));
            loop {
                iv.tick().await;
                n += 1;
                if tc
                    .send(text(&json!({"type": "ping", "id": format!("keep-{n}")})))
                    .is_err()
                {
                    return;
                }
            }
        }))
    } else {
        drop(keep_tx);
        None
    };
    let w1 = tokio::spawn(async move {
        while let Some(m) = to_client_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if c_tx.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = c_tx.close().await;
    });
    let w2 = tokio::spawn(async move {
        while let Some(m) = to_server_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if u_tx.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = u_tx.close().await;
    });
    let _ = tokio::join!(a, b, w1, w2);
    if let Some(k) = keep {
        k.abort();
    }
    Some(())
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
        ) {
            let upstream = target.ingest_url.clone();
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
                    tokio::spawn(async move {
                        let _ = forward_http(s, &upstream, fault, &keys).await;
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
    let token = head_s.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case("authorization")
            .then(|| v.trim().trim_start_matches("Bearer ").to_owned())
    });
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

/// Runs an adapter through a client fault: the proxy between the mock and the
/// adapter, the output filter between the adapter and the mock's application sink.
pub(crate) struct FaultyClient {
    proxy: Proxy,
    fault: ClientFault,
}

impl FaultyClient {
    pub(crate) async fn start(mock_addr: SocketAddr, fault: ClientFault) -> Result<Self, Error> {
        let proxy = Proxy::start(mock_addr, Fault::Client(fault)).await?;
        Ok(Self { proxy, fault })
    }

    pub(crate) fn url(&self) -> String {
        format!(
            "ws://{}{}",
            self.proxy.addr(),
            runwire_protocol::STREAM_PATH
        )
    }

    /// Spawns the adapter with `env` (its URL replaced) and feeds its filtered output
    /// to `sink`.
    pub(crate) fn spawn(
        &mut self,
        program: &std::ffi::OsStr,
        args: &[std::ffi::OsString],
        env: Vec<(String, String)>,
        sink: runwire_mock::AppSink,
    ) -> Result<tokio::task::JoinHandle<()>, Error> {
        let url = self.url();
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| {
                if k == "RUNWIRE_URL" {
                    (k, url.clone())
                } else {
                    (k, v)
                }
            })
            .collect();
        env.extend(self.fault.env());
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Target(format!("cannot spawn the adapter: {e}")))?;
        // The adapter's waits for a CPU count as lateness in the mock's judgments.
        if let Some(pid) = child.id() {
            sink.watch_process(pid);
        }
        let fault = self.fault;
        let shared = Arc::clone(&self.proxy.shared);
        let out = child.stdout.take();
        Ok(tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut held: Option<String> = None;
            let mut lines_filter = LineFilter::default();
            if let Some(out) = out {
                let mut lines = tokio::io::BufReader::new(out).lines();
                loop {
                    let crash = fault == ClientFault::CrashOnUnknownType
                        && shared.lock().map(|s| s.unknown_seen).unwrap_or(false);
                    if crash {
                        let _ = child.start_kill();
                        break;
                    }
                    let next = tokio::time::timeout(
                        std::time::Duration::from_millis(20),
                        lines.next_line(),
                    )
                    .await;
                    let line = match next {
                        Err(_) => continue,
                        Ok(Ok(Some(l))) => l,
                        Ok(_) => break,
                    };
                    let is_event = line.contains("\"kind\":\"event\"");
                    match fault {
                        ClientFault::NoDedup if is_event => {
                            sink.raw_line(&line);
                            sink.raw_line(&line);
                        }
                        ClientFault::NoOrdering if is_event => match held.take() {
                            None => held = Some(line),
                            Some(prev) => {
                                sink.raw_line(&line);
                                sink.raw_line(&prev);
                            }
                        },
                        // A `folded` line follows every event of a folding adapter; it
                        // must not release the held event, or nothing is ever swapped.
                        ClientFault::NoOrdering if line.contains("\"kind\":\"folded\"") => {
                            sink.raw_line(&line);
                        }
                        _ => {
                            if let Some(p) = held.take() {
                                sink.raw_line(&p);
                            }
                            for l in lines_filter.apply(fault, line) {
                                sink.raw_line(&l);
                            }
                        }
                    }
                }
            }
            if let Some(p) = held.take() {
                sink.raw_line(&p);
            }
            let status = child.wait().await.ok();
            sink.exit(status.and_then(|s| s.code()));
        }))
    }
}

/// The event types the folding table of spec §8.3 names.
const FOLDED_TYPES: &[&str] = &[
    "run.status",
    "run.progress",
    "run.metadata",
    "run.phase",
    "log.line",
    "tool.started",
    "tool.finished",
    "artifact.created",
    "todo.updated",
];

/// Rewrites the adapter's lines for the faults that break what the client reports
/// rather than what it sends.
#[derive(Debug, Default)]
struct LineFilter {
    /// Per run, the last `folded` snapshot printed.
    last: BTreeMap<String, serde_json::Map<String, Value>>,
    /// Per run, members a broken fold keeps (or adds) in every later `folded` line.
    kept: BTreeMap<String, serde_json::Map<String, Value>>,
    /// The `platform` line was printed ([`ClientFault::BrowserWithoutReport`]).
    platform_sent: bool,
}

impl LineFilter {
    fn apply(&mut self, fault: ClientFault, line: String) -> Vec<String> {
        if fault == ClientFault::BrowserWithoutReport {
            let mut out = Vec::new();
            if !self.platform_sent {
                self.platform_sent = true;
                out.push(json!({"kind": "platform", "profile": "browser"}).to_string());
            }
            let silent = serde_json::from_str::<Value>(&line).is_ok_and(|v| {
                v.get("kind").and_then(Value::as_str) == Some("error")
                    && v.get("code").and_then(Value::as_str) == Some("invalid_frame")
            });
            if !silent {
                out.push(line);
            }
            return out;
        }
        if fault == ClientFault::ReportsTerminalErrorTwice
            && let Ok(mut v) = serde_json::from_str::<Value>(&line)
            && v.get("kind").and_then(Value::as_str) == Some("error")
            && v.get("terminal").and_then(Value::as_bool) == Some(true)
        {
            // The same error once more, first, as if reported when the frame came.
            v["terminal"] = json!(false);
            return vec![v.to_string(), line];
        }
        vec![self.apply_one(fault, line)]
    }

    fn apply_one(&mut self, fault: ClientFault, line: String) -> String {
        let Ok(mut v) = serde_json::from_str::<Value>(&line) else {
            return line;
        };
        let kind = v
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let run = v
            .get("run_id")
            .or_else(|| v.pointer("/event/run_id"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        match (fault, kind.as_str()) {
            (ClientFault::OwnErrorCodes, "error") => {
                let code = match v.get("code").and_then(Value::as_str) {
                    Some("welcome_timeout") => "timeout",
                    Some("protocol_violation") => "bad_version",
                    _ => return line,
                };
                v["code"] = json!(code);
            }
            (ClientFault::DropsErrorDetails, "error") => {
                if let Some(o) = v.as_object_mut() {
                    o.remove("supported_versions");
                    o.remove("last_error_code");
                }
            }
            (ClientFault::FoldsResetOntoOldState, "reset") => {
                // The old state's members the snapshot lacks survive the "fold".
                let snap = v.get("snapshot").and_then(Value::as_object);
                let mut kept = serde_json::Map::new();
                if let (Some(old), Some(snap)) = (self.last.get(&run), snap) {
                    for (k, val) in old {
                        if !snap.contains_key(k) {
                            kept.insert(k.clone(), val.clone());
                        }
                    }
                }
                self.kept.insert(run, kept);
                return line;
            }
            (ClientFault::FoldsUnknownTypes, "event") => {
                let ty = v
                    .pointer("/event/type")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let kept = self.kept.entry(run).or_default();
                if FOLDED_TYPES.contains(&ty) {
                    // A real status or phase event sets the member again.
                    let data = v.pointer("/event/data").and_then(Value::as_object);
                    for k in ["status", "phase"] {
                        if data.is_some_and(|d| d.contains_key(k)) {
                            kept.remove(k);
                        }
                    }
                } else if let Some(d) = v.pointer("/event/data").and_then(Value::as_object) {
                    for k in ["status", "phase"] {
                        if let Some(x) = d.get(k).filter(|x| x.is_string()) {
                            kept.insert(k.to_owned(), x.clone());
                        }
                    }
                }
                return line;
            }
            (ClientFault::FoldsResetOntoOldState | ClientFault::FoldsUnknownTypes, "folded") => {
                if let Some(snap) = v.get_mut("snapshot").and_then(Value::as_object_mut) {
                    if let Some(kept) = self.kept.get(&run) {
                        for (k, val) in kept {
                            if fault == ClientFault::FoldsUnknownTypes || !snap.contains_key(k) {
                                snap.insert(k.clone(), val.clone());
                            }
                        }
                    }
                    self.last.insert(run, snap.clone());
                }
            }
            _ => return line,
        }
        v.to_string()
    }
}

impl std::fmt::Debug for FaultyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyClient")
            .field("fault", &self.fault)
            .finish()
    }
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
        assert_eq!(super::rfc3339_ms(t), "2025-12-05T05:00:00.123Z");
        assert_eq!(
            super::rfc3339_ms(std::time::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
    }
}
