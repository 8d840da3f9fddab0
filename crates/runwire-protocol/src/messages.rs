//! Control messages in both directions (spec §5–§16).
//!
//! Every frame is one JSON object in one WebSocket text frame, with a `type` member
//! naming the message.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::{Epoch, ErrorCode, Event, RunId, RunSnapshot, num};

/// Identifies a client implementation (informational).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClientInfo {
    /// The implementation's name, e.g. `runwire-client`.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// Identifies a server implementation (informational).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServerInfo {
    /// The implementation's name, e.g. `runwire-server`.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// One subscription with its optional cursor (spec §8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SubscriptionRequest {
    /// The run to subscribe to.
    pub run_id: RunId,
    /// Deliver events after this seq; absent or 0 means from the start of the log.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "num::opt_safe_u64"
    )]
    #[schemars(range(max = 9_007_199_254_740_991u64))]
    pub after_seq: Option<u64>,
    /// The epoch the cursor belongs to; a mismatch yields a `reset` (`RW-RESUME-4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Epoch>,
}

impl SubscriptionRequest {
    /// A subscription from the start of the log.
    pub fn new(run_id: RunId) -> Self {
        Self {
            run_id,
            after_seq: None,
            epoch: None,
        }
    }

    /// A subscription resuming after `after_seq` of `epoch`.
    pub fn resume(run_id: RunId, epoch: Option<Epoch>, after_seq: u64) -> Self {
        Self {
            run_id,
            after_seq: Some(after_seq),
            epoch,
        }
    }
}

/// `hello`: the first message a client sends (spec §5, §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Hello {
    /// Protocol versions the client speaks (`MAJOR.MINOR`), in any order.
    #[schemars(
        length(min = 1, max = 16),
        inner(regex(pattern = "^[0-9]{1,4}\\.[0-9]{1,4}$"))
    )]
    #[serde(deserialize_with = "versions")]
    pub versions: Vec<String>,
    /// A bearer token (spec §7). Tokens never travel in the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The client implementation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientInfo>,
    /// Subscriptions to open right after `welcome`, as if sent in a `subscribe`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<SubscriptionRequest>,
}

fn is_version(v: &str) -> bool {
    let mut parts = v.split('.');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|c| c.is_ascii_digit()))
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

fn versions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    if v.is_empty() || v.len() > 16 {
        return Err(serde::de::Error::custom(
            "versions must list 1 to 16 versions",
        ));
    }
    if let Some(bad) = v.iter().find(|s| !is_version(s)) {
        return Err(serde::de::Error::custom(format!(
            "version {bad:?} is not MAJOR.MINOR"
        )));
    }
    Ok(v)
}

/// Parses a `MAJOR.MINOR` version into a comparable pair.
pub fn parse_version(v: &str) -> Option<(u16, u16)> {
    if !is_version(v) {
        return None;
    }
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `subscribe`: open one or more subscriptions (spec §8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Subscribe {
    /// The subscriptions, each with its optional cursor.
    #[schemars(length(min = 1))]
    #[serde(deserialize_with = "non_empty")]
    pub subscriptions: Vec<SubscriptionRequest>,
}

/// `unsubscribe`: close subscriptions (spec §8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Unsubscribe {
    /// The runs to stop receiving.
    #[schemars(length(min = 1))]
    #[serde(deserialize_with = "non_empty")]
    pub run_ids: Vec<RunId>,
}

fn non_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    let v = Vec::<T>::deserialize(d)?;
    if v.is_empty() {
        return Err(serde::de::Error::custom("the list must not be empty"));
    }
    Ok(v)
}

/// `ping`, in either direction (spec §11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Ping {
    /// Echoed in the `pong`: 1–64 characters.
    #[serde(deserialize_with = "num::bounded_string::<_, 64>")]
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
}

/// `pong`, in either direction (spec §11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Pong {
    /// The `id` of the `ping` being answered.
    #[serde(deserialize_with = "num::bounded_string::<_, 64>")]
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
}

/// A message from client to server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientMessage {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Subscribe`].
    Subscribe(Subscribe),
    /// See [`Unsubscribe`].
    Unsubscribe(Unsubscribe),
    /// See [`Ping`].
    Ping(Ping),
    /// See [`Pong`].
    Pong(Pong),
}

impl ClientMessage {
    /// Every client message type name.
    pub const TYPES: &'static [&'static str] =
        &["hello", "subscribe", "unsubscribe", "ping", "pong"];

    /// The message type name.
    pub fn message_type(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::Subscribe(_) => "subscribe",
            Self::Unsubscribe(_) => "unsubscribe",
            Self::Ping(_) => "ping",
            Self::Pong(_) => "pong",
        }
    }
}

/// Limits the server enforces on this connection (spec §14), announced in `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Limits {
    /// Largest inbound (client → server) frame, in bytes.
    #[schemars(range(min = 1, max = 4_294_967_295u32))]
    pub max_frame_bytes: u32,
    /// Largest serialized event, in bytes.
    #[schemars(range(min = 1, max = 4_294_967_295u32))]
    pub max_event_bytes: u32,
    /// Most subscriptions open at once on one connection.
    #[schemars(range(min = 1, max = 4_294_967_295u32))]
    pub max_subscriptions: u32,
    /// Most client messages per second (sustained; bursts up to this many at once).
    #[schemars(range(min = 1, max = 4_294_967_295u32))]
    pub max_messages_per_second: u32,
    /// The byte bound of the connection's outbound queue (spec §15, `RW-SLOW-5`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "num::opt_safe_u64"
    )]
    #[schemars(range(min = 1, max = 9_007_199_254_740_991u64))]
    pub slow_consumer_max_bytes: Option<u64>,
    /// The age bound of the connection's outbound queue, in ms (spec §15,
    /// `RW-SLOW-5`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "num::opt_safe_u64"
    )]
    #[schemars(range(min = 1, max = 9_007_199_254_740_991u64))]
    pub slow_consumer_max_age_ms: Option<u64>,
}

/// `welcome`: the server's answer to a valid `hello` (spec §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Welcome {
    /// The chosen protocol version: the highest version both sides speak.
    pub version: String,
    /// Identifies this connection in logs (opaque).
    #[serde(deserialize_with = "num::bounded_string::<_, 128>")]
    #[schemars(length(min = 1, max = 128))]
    pub session_id: String,
    /// How often the server sends `ping`, in milliseconds.
    #[serde(deserialize_with = "num::safe_u64")]
    #[schemars(range(min = 1, max = 9_007_199_254_740_991u64))]
    pub heartbeat_interval_ms: u64,
    /// How long the server waits for a `pong`, in milliseconds.
    #[serde(deserialize_with = "num::safe_u64")]
    #[schemars(range(min = 1, max = 9_007_199_254_740_991u64))]
    pub pong_timeout_ms: u64,
    /// The batching window in milliseconds; 0 means the server does not batch.
    #[serde(deserialize_with = "num::safe_u64")]
    #[schemars(range(max = 9_007_199_254_740_991u64))]
    pub batch_window_ms: u64,
    /// How many events behind the head a cursor may be and still be replayed.
    #[serde(deserialize_with = "num::safe_u64")]
    #[schemars(range(max = 9_007_199_254_740_991u64))]
    pub replay_window_events: u64,
    /// Limits on this connection.
    pub limits: Limits,
    /// The server implementation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerInfo>,
}

/// `subscribed`: a subscription is open (spec §8). The events `after_seq + 1 ..=
/// head_seq` follow (the replay), then live events, without gap or duplicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Subscribed {
    /// The run.
    pub run_id: RunId,
    /// The run's current epoch.
    pub epoch: Epoch,
    /// The cursor the subscription starts after (0 = the start of the log).
    #[serde(deserialize_with = "num::safe_u64")]
    #[schemars(range(max = 9_007_199_254_740_991u64))]
    pub after_seq: u64,
    /// The run's last seq when the subscription opened (0 = no events yet).
    #[serde(deserialize_with = "num::safe_u64")]
    #[schemars(range(max = 9_007_199_254_740_991u64))]
    pub head_seq: u64,
}

/// Why the server answered a subscription with a `reset` (spec §8.3).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResetReason {
    /// The cursor's epoch is not the run's epoch: the log was re-created.
    EpochMismatch,
    /// The cursor is older than the replay window or the retained log.
    CursorTooOld,
    /// The cursor is ahead of the run's head.
    CursorAhead,
}

/// `reset`: the subscription cannot continue from the cursor; here is the folded
/// state instead (spec §8.3). Events after `snapshot.as_of_seq` follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Reset {
    /// The run.
    pub run_id: RunId,
    /// The run's current epoch.
    pub epoch: Epoch,
    /// Why.
    pub reason: ResetReason,
    /// The run's state as of `snapshot.as_of_seq`.
    pub snapshot: RunSnapshot,
}

/// `unsubscribed`: a subscription is closed; no more events of the run follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Unsubscribed {
    /// The run.
    pub run_id: RunId,
}

/// `event`: one event (spec §2, §9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventFrame {
    /// The event.
    pub event: Event,
}

/// `batch`: several events in log order (spec §10). Boundaries carry no meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BatchFrame {
    /// The events, at least one.
    #[schemars(length(min = 1))]
    #[serde(deserialize_with = "non_empty")]
    pub events: Vec<Event>,
}

/// `error`: something went wrong (spec §13). When `close_code` is present the server
/// closes the connection with that code right after this frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorFrame {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
    /// Whether retrying (reconnecting, resubscribing) may succeed.
    pub retryable: bool,
    /// How long to wait before retrying, in milliseconds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "num::opt_safe_u64"
    )]
    #[schemars(range(max = 9_007_199_254_740_991u64))]
    pub retry_after_ms: Option<u64>,
    /// The run, when the error concerns one subscription only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
    /// The close code that follows, when the server is about to close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1000, max = 4999))]
    pub close_code: Option<u16>,
    /// For `unsupported_version`: the versions the server speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_versions: Option<Vec<String>>,
}

impl ErrorFrame {
    /// An error frame with the spec's `retryable` and `close_code` for `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            retryable: code.retryable(),
            close_code: code.close_code().map(|c| c.0),
            code,
            message: message.into(),
            retry_after_ms: None,
            run_id: None,
            supported_versions: None,
        }
    }

    /// Sets `run_id`.
    pub fn for_run(mut self, run_id: RunId) -> Self {
        self.run_id = Some(run_id);
        self
    }

    /// Sets `retry_after_ms`.
    pub fn retry_after(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }
}

/// A server message of a type this version does not know; clients ignore it
/// (`RW-VERSION-5`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownServerMessage {
    /// The message type.
    pub message_type: String,
    /// The whole frame.
    pub raw: Value,
}

/// A message from server to client.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // `reset` is rare; boxing it would cost every user a Box pattern.
pub enum ServerMessage {
    /// See [`Welcome`].
    Welcome(Welcome),
    /// See [`Subscribed`].
    Subscribed(Subscribed),
    /// See [`Reset`].
    Reset(Reset),
    /// See [`Unsubscribed`].
    Unsubscribed(Unsubscribed),
    /// See [`EventFrame`].
    Event(EventFrame),
    /// See [`BatchFrame`].
    Batch(BatchFrame),
    /// See [`Ping`].
    Ping(Ping),
    /// See [`Pong`].
    Pong(Pong),
    /// See [`ErrorFrame`].
    Error(ErrorFrame),
    /// A type this version does not know (reader side only; never sent).
    Unknown(UnknownServerMessage),
}

/// Borrowing mirror of the known variants, so serde writes the `type` tag.
#[derive(Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[schemars(rename = "ServerMessage")]
enum ServerMessageRepr<'a> {
    Welcome(&'a Welcome),
    Subscribed(&'a Subscribed),
    Reset(&'a Reset),
    Unsubscribed(&'a Unsubscribed),
    Event(&'a EventFrame),
    Batch(&'a BatchFrame),
    Ping(&'a Ping),
    Pong(&'a Pong),
    Error(&'a ErrorFrame),
}

impl ServerMessage {
    /// Every server message type name v1 defines.
    pub const TYPES: &'static [&'static str] = &[
        "welcome",
        "subscribed",
        "reset",
        "unsubscribed",
        "event",
        "batch",
        "ping",
        "pong",
        "error",
    ];

    /// The message type name.
    pub fn message_type(&self) -> &str {
        match self {
            Self::Welcome(_) => "welcome",
            Self::Subscribed(_) => "subscribed",
            Self::Reset(_) => "reset",
            Self::Unsubscribed(_) => "unsubscribed",
            Self::Event(_) => "event",
            Self::Batch(_) => "batch",
            Self::Ping(_) => "ping",
            Self::Pong(_) => "pong",
            Self::Error(_) => "error",
            Self::Unknown(u) => &u.message_type,
        }
    }

    /// Decodes a known variant's body from a value; `None` for unknown types.
    pub(crate) fn from_type_and_value(
        ty: &str,
        v: Value,
    ) -> Option<Result<Self, serde_json::Error>> {
        use serde_json::from_value as fv;
        Some(match ty {
            "welcome" => fv(v).map(Self::Welcome),
            "subscribed" => fv(v).map(Self::Subscribed),
            "reset" => fv(v).map(Self::Reset),
            "unsubscribed" => fv(v).map(Self::Unsubscribed),
            "event" => fv(v).map(Self::Event),
            "batch" => fv(v).map(Self::Batch),
            "ping" => fv(v).map(Self::Ping),
            "pong" => fv(v).map(Self::Pong),
            "error" => fv(v).map(Self::Error),
            _ => return None,
        })
    }
}

impl From<ErrorFrame> for ServerMessage {
    fn from(e: ErrorFrame) -> Self {
        Self::Error(e)
    }
}

impl Serialize for ServerMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let repr = match self {
            Self::Welcome(m) => ServerMessageRepr::Welcome(m),
            Self::Subscribed(m) => ServerMessageRepr::Subscribed(m),
            Self::Reset(m) => ServerMessageRepr::Reset(m),
            Self::Unsubscribed(m) => ServerMessageRepr::Unsubscribed(m),
            Self::Event(m) => ServerMessageRepr::Event(m),
            Self::Batch(m) => ServerMessageRepr::Batch(m),
            Self::Ping(m) => ServerMessageRepr::Ping(m),
            Self::Pong(m) => ServerMessageRepr::Pong(m),
            Self::Error(m) => ServerMessageRepr::Error(m),
            Self::Unknown(u) => return u.raw.serialize(s),
        };
        repr.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ServerMessage {
    /// General-purpose decoding through a JSON value. The fast path with precise error
    /// pointers is [`crate::codec::decode_server_message`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let ty = match v.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(_) => return Err(serde::de::Error::custom("`type` must be a string")),
            None => return Err(serde::de::Error::missing_field("type")),
        };
        match Self::from_type_and_value(&ty, v.clone()) {
            Some(r) => r.map_err(serde::de::Error::custom),
            None => Ok(Self::Unknown(UnknownServerMessage {
                message_type: ty,
                raw: v,
            })),
        }
    }
}

impl JsonSchema for ServerMessage {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("ServerMessage")
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = ServerMessageRepr::json_schema(generator);
        if let Some(obj) = schema.as_object_mut() {
            obj.insert(
                "description".into(),
                Value::String(
                    "A message from server to client (spec sections 5-16). Clients ignore \
                     messages of unknown type (RW-VERSION-5)."
                        .into(),
                ),
            );
        }
        schema
    }
}

/// Picks the highest version both sides speak (`RW-VERSION-2`): the highest entry of
/// `client` that `server` lists exactly. Malformed entries are ignored.
pub fn negotiate_version<'a>(client: &[String], server: &[&'a str]) -> Option<&'a str> {
    server
        .iter()
        .filter(|s| client.iter().any(|c| c == *s))
        .filter_map(|s| parse_version(s).map(|v| (v, *s)))
        .max()
        .map(|(_, s)| s)
}
