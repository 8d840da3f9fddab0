//! Bodies of the producer HTTP API (spec §4).
//!
//! - `POST /v1/runs/{run_id}/events` — [`AppendRequest`] → [`AppendResponse`]
//! - `GET /v1/runs/{run_id}` — [`crate::RunSnapshot`]
//! - `GET /v1/runs/{run_id}/events?after_seq=N&limit=M` — [`HistoryResponse`]
//! - `GET /v1/runs?prefix=P&after=RUN_ID&limit=N` — [`RunList`]
//! - any error — [`HttpError`]

use std::{borrow::Cow, fmt};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, IgnoredAny, MapAccess, Visitor},
    ser::SerializeStruct,
};

use crate::{
    Epoch, ErrorCode, Event, EventId, EventPayload, RunId, Timestamp, events::inline, num,
};

/// Path of the append and history endpoints for a run.
pub fn events_path(run_id: &RunId) -> String {
    format!("/v1/runs/{run_id}/events")
}

/// Path of the snapshot endpoint for a run.
pub fn run_path(run_id: &RunId) -> String {
    format!("/v1/runs/{run_id}")
}

/// Default `limit` of a history read (spec §4.4, `RW-INGEST-16`).
pub const HISTORY_DEFAULT_LIMIT: u64 = 1000;
/// The largest `limit` a history read may ask for.
pub const HISTORY_MAX_LIMIT: u64 = 10_000;
/// Path of the run listing (spec §4.7).
pub const RUNS_PATH: &str = "/v1/runs";
/// Default `limit` of a run listing (spec §4.7, `RW-INGEST-26`).
pub const RUNS_DEFAULT_LIMIT: u64 = 100;
/// The largest `limit` a run listing may ask for (`RW-INGEST-27`).
pub const RUNS_MAX_LIMIT: u64 = 1000;
/// Most events in one append request (spec §4.2).
pub const APPEND_MAX_EVENTS: usize = 1000;

/// One event a producer appends: `{"type", "data", "idempotency_key"?, "time"?}`
/// (spec §4.2). The server assigns `seq`, `event_id` and, if absent, `time`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The event type and data.
    pub payload: EventPayload,
    /// Makes producer retries exactly-once: an append whose key the run has seen
    /// returns the original assignment instead of appending again (`RW-INGEST-5`).
    pub idempotency_key: Option<String>,
    /// When the event happened, if the producer knows better than the server.
    pub time: Option<Timestamp>,
    /// The event's `data` exactly as the producer sent it, which a server stores and
    /// delivers instead of re-encoding `payload` (spec §3.12, `RW-TYPE-25`: members the
    /// typed payload does not know are kept, numbers are not re-encoded). Set by the
    /// server from the request body; `None` encodes `payload`. Never serialized.
    pub raw_data: Option<serde_json::Value>,
}

impl NewEvent {
    /// A new event with no key and no time.
    pub fn new(payload: impl Into<EventPayload>) -> Self {
        Self {
            payload: payload.into(),
            idempotency_key: None,
            time: None,
            raw_data: None,
        }
    }

    /// Sets the idempotency key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

impl Serialize for NewEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = 2 + usize::from(self.idempotency_key.is_some()) + usize::from(self.time.is_some());
        let mut st = s.serialize_struct("NewEvent", n)?;
        inline::serialize_fields(&mut st, &self.payload)?;
        if let Some(k) = &self.idempotency_key {
            st.serialize_field("idempotency_key", k)?;
        }
        if let Some(t) = &self.time {
            st.serialize_field("time", t)?;
        }
        st.end()
    }
}

impl<'de> Deserialize<'de> for NewEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NewEvent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with `type` and `data`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NewEvent, A::Error> {
                let mut td = inline::Collector::default();
                let mut key_ = None;
                let mut time = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if td.visit(&key, &mut map)? {
                        continue;
                    }
                    match &*key {
                        "idempotency_key" => {
                            let k: String = map.next_value()?;
                            if k.is_empty() || k.len() > 256 {
                                return Err(de::Error::custom(
                                    "idempotency_key must be 1 to 256 bytes long",
                                ));
                            }
                            key_ = Some(k);
                        }
                        "time" => time = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(NewEvent {
                    payload: td.finish()?,
                    idempotency_key: key_,
                    time,
                    raw_data: None,
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl JsonSchema for NewEvent {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("NewEvent")
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let time = generator.subschema_for::<Timestamp>();
        let one_of = crate::events::type_data_one_of(generator);
        json_schema!({
            "description": "An event a producer appends (spec section 4.2).",
            "type": "object",
            "required": ["type", "data"],
            "properties": {
                "type": { "type": "string", "pattern": crate::EVENT_TYPE_PATTERN, "maxLength": 128 },
                "data": { "type": "object" },
                "idempotency_key": { "type": "string", "minLength": 1, "maxLength": 256 },
                "time": time,
            },
            "oneOf": one_of,
        })
    }
}

/// `POST /v1/runs/{run_id}/events` body (spec §4.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AppendRequest {
    /// The events, appended atomically in this order: 1 to 1000.
    #[schemars(length(min = 1, max = 1000))]
    pub events: Vec<NewEvent>,
}

/// Where one appended event landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AppendedEvent {
    /// Its seq.
    #[serde(deserialize_with = "num::seq")]
    #[schemars(range(min = 1, max = 9_007_199_254_740_991u64))]
    pub seq: u64,
    /// Its event id.
    pub event_id: EventId,
    /// True when the idempotency key had been seen and nothing was appended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// `POST /v1/runs/{run_id}/events` answer, sent only once the events are durable
/// (spec §4.2, `RW-INGEST-3`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AppendResponse {
    /// The run.
    pub run_id: RunId,
    /// The run's epoch.
    pub epoch: Epoch,
    /// The seq of the first event of the request.
    #[serde(deserialize_with = "num::seq")]
    #[schemars(range(min = 1, max = 9_007_199_254_740_991u64))]
    pub first_seq: u64,
    /// The seq of the last event of the request.
    #[serde(deserialize_with = "num::seq")]
    #[schemars(range(min = 1, max = 9_007_199_254_740_991u64))]
    pub last_seq: u64,
    /// Each event's assignment, in request order.
    pub events: Vec<AppendedEvent>,
}

/// `GET /v1/runs/{run_id}/events` answer (spec §4.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryResponse {
    /// The run.
    pub run_id: RunId,
    /// The run's epoch.
    pub epoch: Epoch,
    /// Events with seq > `after_seq`, in seq order, at most `limit`.
    pub events: Vec<Event>,
    /// The run's last seq at the time of the read.
    #[serde(deserialize_with = "num::safe_u64")]
    #[schemars(range(max = 9_007_199_254_740_991u64))]
    pub head_seq: u64,
    /// Whether more events follow the last one returned.
    pub has_more: bool,
}

/// `GET /v1/runs` answer (spec §4.7, `RW-INGEST-26`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RunList {
    /// The runs, in byte order of `run_id`, at most `limit`.
    pub runs: Vec<RunListEntry>,
    /// Whether runs that match follow the last one returned.
    pub has_more: bool,
}

/// One run of a [`RunList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RunListEntry {
    /// The run.
    pub run_id: RunId,
    /// Its log's epoch.
    pub epoch: Epoch,
    /// Its last seq at the time of the read.
    #[serde(deserialize_with = "num::safe_u64")]
    #[schemars(range(max = 9_007_199_254_740_991u64))]
    pub head_seq: u64,
}

/// The body of every HTTP error answer (spec §4.5): `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HttpError {
    /// The error.
    pub error: HttpErrorDetail,
}

/// Details of an HTTP error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HttpErrorDetail {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
    /// For invalid requests: the JSON pointer of the offending value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// Whether retrying the same request may succeed.
    #[serde(default)]
    pub retryable: bool,
}

impl HttpError {
    /// Builds an error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let retryable = matches!(
            code,
            ErrorCode::StoreUnavailable
                | ErrorCode::InternalError
                | ErrorCode::ServerOverloaded
                | ErrorCode::ServerShutdown
                | ErrorCode::RateLimited
                // Retried with a fresh token (spec §4.5, `RW-AUTH-15`).
                | ErrorCode::TokenExpired
        );
        Self {
            error: HttpErrorDetail {
                code,
                message: message.into(),
                pointer: None,
                retryable,
            },
        }
    }

    /// Sets the pointer.
    pub fn at(mut self, pointer: impl Into<String>) -> Self {
        self.error.pointer = Some(pointer.into());
        self
    }
}

/// `GET /healthz` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    /// `ok` when the server accepts appends and connections.
    pub status: String,
    /// Why the server is not `ok`, for people (for example the event store's error);
    /// not meant to be parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
