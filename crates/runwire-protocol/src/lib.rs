//! Runwire wire types.
//!
//! This crate is the Rust rendering of the normative Runwire v1 specification
//! ([`spec/protocol.md`](https://github.com/runwire/runwire/blob/main/spec/protocol.md)).
//! It holds the event envelope ([`Event`]), every v1 event payload ([`EventPayload`]),
//! the control messages in both directions ([`ClientMessage`], [`ServerMessage`]),
//! the producer HTTP API bodies ([`http`]), error and close codes ([`ErrorCode`],
//! [`CloseCode`]), the folded run state used by snapshots ([`RunSnapshot`]), and a
//! decoder with size limits whose errors carry a JSON pointer ([`codec`]), events
//! encoded once with the `event` and `batch` frames built from them ([`raw`]), and the
//! spec's requirement levels and entries ([`requirement`]).
//!
//! It does no I/O and has no async runtime dependency, so any transport can use it.
//!
//! Every public type derives [`schemars::JsonSchema`]; the JSON Schemas under
//! `schema/v1/` are generated from these types (`cargo xtask schema`).

#[cfg(feature = "arbitrary")]
pub mod arbitrary;
pub mod codec;
mod codes;
pub mod defaults;
mod events;
pub mod http;
mod ids;
mod messages;
mod num;
pub mod raw;
pub mod requirement;
mod snapshot;

pub use codes::{CloseAction, CloseCode, ErrorCode};
pub use events::{
    AgentMessageData, AgentThinkingData, ArtifactCreatedData, ChunkEncoding, Event, EventData,
    EventPayload, EventTypeVisitor, FileChange, FileChangedData, KNOWN_EVENT_TYPES, LogLevel,
    LogLineData, OutputChunkData, PayloadSeed, ProgressData, RunMetadataData, RunPhaseData,
    RunStatus, RunStatusData, TodoItem, TodoStatus, TodoUpdatedData, ToolFinishedData,
    ToolStartedData, visit_event_types,
};
pub use ids::{EVENT_TYPE_PATTERN, Epoch, EventId, IdError, RunId, Timestamp, is_valid_event_type};
pub use messages::{
    BatchFrame, ClientInfo, ClientMessage, ErrorFrame, EventFrame, Hello, Limits, Ping, Pong,
    Reset, ResetReason, ServerInfo, ServerMessage, Subscribe, Subscribed, SubscriptionRequest,
    UnknownServerMessage, Unsubscribe, Unsubscribed, Welcome, negotiate_version, parse_version,
};
pub use snapshot::{RunSnapshot, SNAPSHOT_RECENT_LOGS};

/// The largest sequence number a run may reach: 2^53 − 1, the largest integer a
/// JavaScript `number` represents exactly (spec §2, `RW-EVENT-4`).
pub const MAX_SEQ: u64 = 9_007_199_254_740_991;

/// The largest value of any integer field on the wire (2^53 − 1), for the same reason
/// as [`MAX_SEQ`].
pub const MAX_SAFE_INTEGER: u64 = MAX_SEQ;

/// The protocol versions this crate speaks, lowest first (spec §6).
pub const PROTOCOL_VERSIONS: &[&str] = &["1.0"];

/// The WebSocket endpoint path (spec §5).
pub const STREAM_PATH: &str = "/v1/stream";

/// The schema major version folder this crate generates (`schema/v1/`).
pub const SCHEMA_MAJOR: &str = "v1";
