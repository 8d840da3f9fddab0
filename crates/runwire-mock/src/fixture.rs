//! The fixture format: a data file that scripts what the mock server does on each
//! connection a client makes, and what it expects (see `docs/fixtures.md`).
//!
//! Every duration is in milliseconds and is multiplied by the run's time scale. Every
//! struct rejects unknown members, so a typo in a fixture is an error, not a silently
//! ignored expectation.
//!
//! This file runs past 1,000 lines because it is the format's one declaration: 44
//! types whose doc comments are also the descriptions of the generated
//! `schema/tools/fixture.schema.json`, kept together so the format reads top-down.

use std::{collections::BTreeMap, path::Path};

use runwire_protocol::codec::{EnumSegments, json_pointer};
pub use runwire_protocol::requirement::Level;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A client fixture: one scenario the mock server plays against a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// Stable identifier; equals the file name without `.json`. Lowercase letters,
    /// digits and `-`.
    #[schemars(regex(pattern = "^[a-z0-9][a-z0-9-]{0,127}$"))]
    pub id: String,
    /// One line saying what the fixture proves.
    pub title: String,
    /// Longer explanation: the situation, what a correct client does, what a broken
    /// one typically does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The spec requirements this fixture proves (`RW-AREA-N`), at least one.
    #[schemars(length(min = 1), inner(regex(pattern = "^RW-[A-Z]+-[0-9]+$")))]
    pub requirements: Vec<String>,
    /// How binding the requirements are; decides how a failure is graded.
    pub level: Level,
    /// Seed for the fixture's random choices (generated event content, reorder
    /// permutations, the client's jitter via `RUNWIRE_SEED`). Overridden by `--seed`;
    /// when neither is given a random seed is drawn and printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Upper bound for the whole fixture; whatever has not happened by then is judged
    /// as missing. Default 5000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// The protocol versions the mock "speaks"; `welcome` picks the highest one the
    /// client offers. Default: the versions of this build (`["1.0"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_versions: Option<Vec<String>>,
    /// The run logs the mock serves from. Event content is generated from the seed
    /// unless overridden.
    #[serde(default)]
    pub runs: Vec<RunLog>,
    /// How the runner configures the client (the adapter's environment).
    pub client: ClientConfig,
    /// One script per connection the client makes, in order. A connection beyond the
    /// last script is a violation.
    #[schemars(length(min = 1))]
    pub connections: Vec<Connection>,
    /// Expectations judged at the end of the fixture.
    #[serde(default)]
    pub expect: FinalExpect,
}

/// A run's log as the mock serves it: events `1..=length` of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunLog {
    /// The run id.
    pub run_id: String,
    /// The log's epoch. Declare the same run twice with different epochs to model a
    /// re-created log. Default `e1`.
    #[serde(default = "default_epoch")]
    pub epoch: String,
    /// How many events the log has (seq 1 to `length`).
    #[schemars(range(max = 100000))]
    pub length: u64,
    /// When set, the last event is a `run.status` with this terminal status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<EndStatus>,
    /// Event types to generate for events that are neither the first (`run.status
    /// running`) nor the terminal one. Default: progress, log lines, phases and agent
    /// messages. Supported: `run.progress`, `run.metadata`, `run.phase`, `log.line`,
    /// `tool.started`, `tool.finished`, `agent.message`, `agent.thinking`,
    /// `file.changed`, `artifact.created`, `todo.updated`, `output.chunk`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// Hand-written events replacing generated ones (unknown types, unknown fields,
    /// specific payloads).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<EventOverride>,
}

fn default_epoch() -> String {
    "e1".into()
}

/// A terminal run status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndStatus {
    /// `completed`.
    Completed,
    /// `failed`.
    Failed,
    /// `cancelled`.
    Cancelled,
}

impl EndStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Replaces the generated event at `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventOverride {
    /// The event's seq (1-based, at most the log's length).
    pub seq: u64,
    /// The event type; any well-formed name, including types v1 does not define.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The `data` object. Known types are validated against their payload schema.
    pub data: Map<String, Value>,
    /// Extra members added to the event envelope as sent (unknown fields a client
    /// must ignore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Map<String, Value>>,
    /// The event's `time` (RFC 3339 UTC); default: one second per seq from
    /// 2026-01-01T00:00:00Z. Times need not increase (`RW-EVENT-9`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// The client configuration the runner passes to the adapter (`docs/client-adapter.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Subscriptions (`RUNWIRE_RUNS`), each with an optional persisted cursor.
    #[schemars(length(min = 1))]
    pub runs: Vec<ClientRun>,
    /// Bearer token (`RUNWIRE_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Tokens for successive connection attempts (`RUNWIRE_TOKENS`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<String>,
    /// Versions to offer (`RUNWIRE_VERSIONS`); default: the adapter's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<String>>,
    /// Reconnect policy.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// `RUNWIRE_STABLE_SESSION_MS`. Default 2000.
    #[serde(default = "default_stable")]
    pub stable_session_ms: u64,
    /// `RUNWIRE_LIVENESS_GRACE_MS`. Default 500.
    #[serde(default = "default_grace")]
    pub liveness_grace_ms: u64,
    /// `RUNWIRE_GAP_TIMEOUT_MS`. Default 100.
    #[serde(default = "default_gap")]
    pub gap_timeout_ms: u64,
    /// `RUNWIRE_WELCOME_TIMEOUT_MS`: how long the client waits for `welcome` after
    /// `hello` (`RW-RECONNECT-11`). Default 1000.
    #[serde(default = "default_welcome_timeout")]
    pub welcome_timeout_ms: u64,
}

fn default_welcome_timeout() -> u64 {
    1000
}

fn default_stable() -> u64 {
    2000
}
fn default_grace() -> u64 {
    500
}
fn default_gap() -> u64 {
    100
}

/// One subscription of the client, with an optional cursor it persisted earlier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientRun {
    /// The run.
    pub run_id: String,
    /// The persisted cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<u64>,
    /// The persisted cursor's epoch (only with `after_seq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// Reconnect parameters (`RUNWIRE_RECONNECT_*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    /// Backoff base. Default 20.
    #[serde(default = "default_base")]
    pub base_ms: u64,
    /// Backoff factor. Default 2.
    #[serde(default = "default_factor")]
    pub factor: u32,
    /// Backoff cap. Default 200.
    #[serde(default = "default_cap")]
    pub cap_ms: u64,
    /// Consecutive failed attempts before a terminal error. Default 10.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_base() -> u64 {
    20
}
fn default_factor() -> u32 {
    2
}
fn default_cap() -> u64 {
    200
}
fn default_max_attempts() -> u32 {
    10
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            base_ms: default_base(),
            factor: default_factor(),
            cap_ms: default_cap(),
            max_attempts: default_max_attempts(),
        }
    }
}

/// The script for one connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// A label shown in the transcript and verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// How the mock answers the connection attempt. Default `websocket`.
    #[serde(default)]
    pub accept: Accept,
    /// Expectation on the delay between the end of the previous connection and this
    /// attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_delay: Option<DelayExpect>,
    /// What the client's `hello` (and its first subscriptions) must contain. The mock
    /// always waits for `hello` before the first step.
    #[serde(default)]
    pub hello: HelloExpect,
    /// What the mock does after `hello`, in order.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// How the mock answers a connection attempt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Accept {
    /// Complete the WebSocket upgrade and play the steps.
    #[default]
    Websocket,
    /// Refuse: accept the TCP connection and reset it at once (RST).
    Reset,
    /// Answer the upgrade request with an HTTP error status.
    HttpError {
        /// The status, e.g. 503.
        #[schemars(range(min = 400, max = 599))]
        status: u16,
    },
    /// Accept the TCP connection and never answer the upgrade request.
    Silent,
}

/// Bounds on the reconnect delay before this connection. The delay the client
/// announced (`delay_ms` of its `reconnecting` line, `docs/client-adapter.md`) must lie
/// within them exactly, and the client must have waited what it announced; a client
/// that announces nothing is judged on the time from the end of the previous
/// connection to this attempt (see `docs/fixtures.md`, "Reconnect delays").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DelayExpect {
    /// The delay must lie inside the full-jitter envelope of this (0-based) backoff
    /// attempt: `0 ..= min(cap, base * factor^attempt)`, computed from the scaled
    /// reconnect parameters the adapter received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_attempt: Option<u32>,
    /// The delay must be at least this (e.g. the `retry_after_ms` just sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ms: Option<u64>,
    /// The delay must be at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u64>,
    /// The requirement a violation names. Default: `RW-RECONNECT-1`, or
    /// `RW-RECONNECT-2` for `min_ms` (and for a mismatch between the announced and the
    /// observed wait when `min_ms` is the only bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement: Option<String>,
}

/// What the client's `hello` must contain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HelloExpect {
    /// How long after the upgrade `hello` may take. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_ms: Option<u64>,
    /// Versions `hello.versions` must include.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions_include: Vec<String>,
    /// The token the client must present, in `hello.token` or an `Authorization:
    /// Bearer` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The cursor the client must send for each listed run, in `hello.subscriptions` or
    /// in its first `subscribe` on this connection. `after_seq` 0 and an absent cursor
    /// are the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cursors: Vec<CursorExpect>,
    /// Runs the client must not ask for on this connection (in `hello` or `subscribe`),
    /// e.g. a run whose subscription failed with `retryable: false` (`RW-RECONNECT-8`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_subscribed: Vec<String>,
}

/// An expected subscription cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CursorExpect {
    /// The run.
    pub run: String,
    /// The `after_seq` the client must send (0 = from the start or absent).
    pub after_seq: u64,
    /// The epoch the client must send with it, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// The requirement a violation names. Default `RW-RESUME-2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement: Option<String>,
}

/// One step of a connection script. Each step is an object with exactly one member
/// naming the step, e.g. `{"events": {"run": "run-1", "from_seq": 1, "to_seq": 5}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Send `welcome`.
    Welcome(WelcomeStep),
    /// Wait for the client to ask for the run (in `hello` or `subscribe`), then send
    /// `subscribed`.
    Subscribed(SubscribedStep),
    /// Wait for the client to ask for the run, then send `reset` with a snapshot folded
    /// from the log up to `as_of_seq`.
    Reset(ResetStep),
    /// Send events of a run's log, one `event` frame each.
    Events(EventsStep),
    /// Send events of a run's log in one `batch` frame.
    Batch(EventsStep),
    /// Send a batch as a non-final WebSocket fragment (about half of it), then drop the
    /// TCP connection: the batch never completes.
    DropMidBatch(EventsStep),
    /// Send events as single frames in a seeded random order (never the log order).
    Reorder(EventsStep),
    /// Send a `ping`.
    Ping(PingStep),
    /// Send an `error` frame.
    Error(ErrorStep),
    /// Send an arbitrary JSON object as a text frame (unknown message types, unknown
    /// fields in control messages).
    Frame(FrameStep),
    /// Send raw bytes: a text frame that need not be JSON, or a binary frame.
    Raw(RawStep),
    /// Send again a frame this connection already sent (a duplicate).
    Repeat(RepeatStep),
    /// Drop the TCP connection without a close frame.
    Drop(DropStep),
    /// Close the WebSocket with a code.
    Close(CloseStep),
    /// Wait, reading and recording client frames and answering client pings.
    Wait(WaitStep),
    /// Wait without answering anything (client pings go unanswered).
    Stall(WaitStep),
    /// Never answer again; hold the connection until the client gives up or the
    /// fixture ends.
    Hang(Empty),
    /// Wait for the `pong` answering a ping.
    AwaitPong(AwaitPongStep),
    /// Wait for a `subscribe` for a run (e.g. the resubscribe after a gap).
    AwaitSubscribe(AwaitSubscribeStep),
    /// Wait for a client message of a given type.
    AwaitMessage(AwaitMessageStep),
    /// Wait for the client to end the connection (close frame or TCP close).
    AwaitClose(AwaitCloseStep),
    /// Expect the client to send nothing (of the given types) for a while.
    ExpectSilence(SilenceStep),
}

impl Step {
    /// The step's name as written in fixtures.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Welcome(_) => "welcome",
            Self::Subscribed(_) => "subscribed",
            Self::Reset(_) => "reset",
            Self::Events(_) => "events",
            Self::Batch(_) => "batch",
            Self::DropMidBatch(_) => "drop_mid_batch",
            Self::Reorder(_) => "reorder",
            Self::Ping(_) => "ping",
            Self::Error(_) => "error",
            Self::Frame(_) => "frame",
            Self::Raw(_) => "raw",
            Self::Repeat(_) => "repeat",
            Self::Drop(_) => "drop",
            Self::Close(_) => "close",
            Self::Wait(_) => "wait",
            Self::Stall(_) => "stall",
            Self::Hang(_) => "hang",
            Self::AwaitPong(_) => "await_pong",
            Self::AwaitSubscribe(_) => "await_subscribe",
            Self::AwaitMessage(_) => "await_message",
            Self::AwaitClose(_) => "await_close",
            Self::ExpectSilence(_) => "expect_silence",
        }
    }

    /// Whether the connection is over after this step (no step may follow).
    pub fn ends_connection(&self) -> bool {
        matches!(
            self,
            Self::Drop(_) | Self::DropMidBatch(_) | Self::Close(_) | Self::Hang(_)
        )
    }
}

/// An empty object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `welcome` contents; every member has a default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WelcomeStep {
    /// The version to announce. Default: the highest version in both the client's
    /// `hello.versions` and `server_versions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Default `mock-session-N` (N = connection number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Default 2000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pong_timeout_ms: Option<u64>,
    /// Default 0 (no batching).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_window_ms: Option<u64>,
    /// Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_window_events: Option<u64>,
    /// Announced limits that differ from the spec's defaults (§14). The mock holds the
    /// client to the announced `max_frame_bytes` and `max_messages_per_second` for the
    /// rest of the connection (`RW-CONN-8`, `RW-LIMIT-5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<WelcomeLimits>,
    /// Extra members added to the frame (unknown fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Map<String, Value>>,
}

/// Limits announced in `welcome`; absent members take the spec's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WelcomeLimits {
    /// Default 65,536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame_bytes: Option<u64>,
    /// Default 65,536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_event_bytes: Option<u64>,
    /// Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_subscriptions: Option<u64>,
    /// Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages_per_second: Option<u64>,
}

/// `subscribed` contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribedStep {
    /// The run.
    pub run: String,
    /// Default: the run's current epoch (the first log declared for it, or the epoch
    /// of the last `subscribed`/`reset` sent for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// Default: the cursor the client asked for (0 when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<u64>,
    /// The run's head. Default: `after_seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_seq: Option<u64>,
    /// How long to wait for the client to ask for the run. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_ms: Option<u64>,
}

/// Why a reset happens (the `reset.reason` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResetReasonName {
    /// `epoch_mismatch`.
    EpochMismatch,
    /// `cursor_too_old`.
    CursorTooOld,
    /// `cursor_ahead`.
    CursorAhead,
}

impl ResetReasonName {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EpochMismatch => "epoch_mismatch",
            Self::CursorTooOld => "cursor_too_old",
            Self::CursorAhead => "cursor_ahead",
        }
    }
}

/// `reset` contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetStep {
    /// The run.
    pub run: String,
    /// The epoch of the snapshot; becomes the run's current epoch. Default: current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// Why.
    pub reason: ResetReasonName,
    /// The snapshot is the log folded up to this seq.
    pub as_of_seq: u64,
    /// How long to wait for the client to ask for the run. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_ms: Option<u64>,
}

/// A selection of events from a run's log: `from_seq..=to_seq`, or explicit `seqs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsStep {
    /// The run.
    pub run: String,
    /// Which epoch's log. Default: the run's current epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// First seq of the range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_seq: Option<u64>,
    /// Last seq of the range (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_seq: Option<u64>,
    /// Explicit seqs, in sending order (instead of a range).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seqs: Vec<u64>,
}

impl EventsStep {
    /// The selected seqs in order.
    pub fn selected(&self) -> Vec<u64> {
        if !self.seqs.is_empty() {
            return self.seqs.clone();
        }
        match (self.from_seq, self.to_seq) {
            (Some(a), Some(b)) if a <= b => (a..=b).collect(),
            _ => Vec::new(),
        }
    }
}

/// `ping` contents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PingStep {
    /// The ping id. Default `p-<connection>-<n>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `error` contents. `retryable` and `close_code` default to what the spec assigns to
/// `code`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorStep {
    /// The error code (any 1–64 character name; unknown codes test `RW-ERROR-4`).
    pub code: String,
    /// Default: a message naming the fixture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Default: the spec's value for `code` (true for unknown codes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// Scaled like every duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// The run the error concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Default: the spec's close code for `code`; 0 means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_code: Option<u16>,
    /// For `unsupported_version`. Default: `server_versions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_versions: Option<Vec<String>>,
}

/// An arbitrary JSON frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrameStep {
    /// The object to send.
    pub json: Map<String, Value>,
}

/// Raw frame contents: exactly one of `text`, `text_hex` and `binary_hex`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// Sent as a text frame as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Sent as a text frame whose payload is these bytes (hex digits), which need not
    /// be valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_hex: Option<String>,
    /// Sent as a binary frame (hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_hex: Option<String>,
}

/// Which earlier frame to send again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepeatStep {
    /// 1 = the last frame sent on this connection, 2 = the one before, … Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back: Option<usize>,
}

/// How to drop the connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DropStep {
    /// Reset (RST) instead of a normal TCP close (FIN).
    #[serde(default)]
    pub reset: bool,
}

/// A close frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseStep {
    /// The close code (1000–4999, never 1004–1006 or 1015).
    pub code: u16,
    /// The close reason (at most 123 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A pause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitStep {
    /// How long.
    pub ms: u64,
}

/// Wait for a `pong`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwaitPongStep {
    /// The id the pong must echo. Default: the last ping sent on this connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Deadline, counted from when the ping was sent. Default 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_ms: Option<u64>,
    /// Default `RW-HEART-2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement: Option<String>,
}

/// Wait for a `subscribe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwaitSubscribeStep {
    /// The run the subscribe must include.
    pub run: String,
    /// The cursor it must carry, when set (0 = none or 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<u64>,
    /// The epoch it must carry, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// Deadline from the start of the step. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_ms: Option<u64>,
    /// Default `RW-ORDER-5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement: Option<String>,
}

/// Wait for a message type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwaitMessageStep {
    /// The message `type`.
    #[serde(rename = "type")]
    pub message_type: String,
    /// Deadline from the start of the step. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_ms: Option<u64>,
    /// The requirement a violation names. Default: the fixture's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement: Option<String>,
}

/// Wait for the client to end the connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwaitCloseStep {
    /// The close code the client must send; absent = a close frame with any code or a
    /// TCP close both count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The client must not end the connection before this (from the start of the step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ms: Option<u64>,
    /// Deadline from the start of the step. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_ms: Option<u64>,
    /// The frame before this step is a text frame that is not valid UTF-8: a client
    /// whose adapter declared the `browser` profile (a `platform` line,
    /// `docs/client-adapter.md`) has a WebSocket layer that fails the connection by
    /// itself, so for it any end of the connection counts and `code` is not judged
    /// (`RW-CLOSE-10`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unless_browser: bool,
    /// The requirement a violation names. Default: the fixture's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement: Option<String>,
}

/// Expect silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceStep {
    /// How long after this step begins the window closes. It opens where the
    /// connection's last step that waited on the client ended (the hello,
    /// `subscribed`, an `await_*` step, an earlier silence), so a reply to a frame
    /// sent in the steps before counts however fast the client answered.
    pub ms: u64,
    /// Only these message types count; default all but `pong` and `ping`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// The requirement a violation names. Default: the fixture's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement: Option<String>,
}

/// Expectations judged when the fixture ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FinalExpect {
    /// The adapter's exit status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitExpect>,
    /// What the client delivered to its application, per run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivered: Vec<DeliveredExpect>,
    /// `error` lines the adapter must have printed (in any order, among others).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorLineExpect>,
    /// Lines the adapter must have printed, in this order (other lines may come
    /// between them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<LineExpect>,
    /// The last line must be this `error` line with `terminal: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_error: Option<ErrorLineExpect>,
    /// The application's folded state of runs: the last `folded` line of each run
    /// (`docs/client-adapter.md`) must equal the fold of its log. An adapter that prints
    /// no `folded` line at all is graded *not implemented*.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folded: Vec<FoldedExpect>,
    /// The reconnects of these connections (1-based numbers, each with a
    /// `reconnect_delay.backoff_attempt`) must not all sit at the top of their
    /// envelope: a client without jitter fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<JitterExpect>,
    /// After the last scripted connection ends, how long a client that keeps running
    /// is watched for an unexpected reconnect. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_ms: Option<u64>,
    /// The requirement an unexpected extra connection violates. Default: the
    /// fixture's first requirement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_connection_requirement: Option<String>,
}

/// The adapter's expected exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExitExpect {
    /// Exit 0: every run reached a terminal status.
    Success,
    /// Exit 1: a terminal error.
    TerminalError,
    /// Exit 89: not implemented.
    Unimplemented,
    /// The client keeps running until the fixture ends it.
    Running,
}

impl ExitExpect {
    /// The exit code, for those that have one.
    pub fn code(self) -> Option<i32> {
        match self {
            Self::Success => Some(0),
            Self::TerminalError => Some(1),
            Self::Unimplemented => Some(89),
            Self::Running => None,
        }
    }
}

/// What one run's application must have seen, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveredExpect {
    /// The run.
    pub run: String,
    /// Items in order: seq ranges as strings (`"1-5"`, `"7"`) of the current epoch's
    /// log, and resets. Each event exactly once, in seq order.
    pub timeline: Vec<TimelineItem>,
    /// Seqs the client may deliver or skip (e.g. unknown event types).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional: Vec<u64>,
    /// The requirement every violation of this run's timeline names, instead of the
    /// built-in one per kind (e.g. `RW-SUB-6` for a run that must see no event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement: Option<String>,
}

/// An item of a delivered timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum TimelineItem {
    /// A seq range `"A-B"` or a single seq `"A"`.
    Range(String),
    /// A reset line.
    Reset(ResetItem),
}

/// A reset the application must see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetItem {
    /// The reset's details.
    pub reset: ResetLine,
}

/// The expected `reset` line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetLine {
    /// The reason.
    pub reason: ResetReasonName,
    /// The epoch; later ranges refer to this epoch's log. Default: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// The snapshot's `as_of_seq`.
    pub as_of_seq: u64,
}

/// The folded state a run's application must end with (spec §8.3, `RW-SNAP-2`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FoldedExpect {
    /// The run.
    pub run: String,
    /// The log folded: default the run's last declared epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// Fold through this seq; default the whole log of that epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of_seq: Option<u64>,
    /// Members the folded snapshot must also contain with equal values (objects
    /// compared member by member), to state the point of the fixture in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<Map<String, Value>>,
    /// The requirement a violation names. Default: the fixture's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement: Option<String>,
}

/// An expected `error` line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorLineExpect {
    /// The error code. A client may report a local failure (like exhausted
    /// reconnect attempts) with its own code; list acceptable codes with `|`.
    pub code: String,
    /// `terminal` must have this value, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<bool>,
    /// `run_id` must be this, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Any other members the line must have, with equal values (objects compared
    /// member by member, recursively, as in `lines`), e.g.
    /// `{"supported_versions": ["2.0"]}` or `{"close_code": 4002}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<Map<String, Value>>,
    /// The requirement a violation names. Default: the fixture's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement: Option<String>,
}

/// An adapter line that must appear: some line contains every member of `contains`
/// with an equal value (objects compared member by member, recursively).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LineExpect {
    /// The members the line must have, e.g. `{"kind": "state", "state": "reconnecting"}`.
    pub contains: Map<String, Value>,
    /// The requirement a violation names. Default: the fixture's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement: Option<String>,
}

/// Jitter check over several reconnects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JitterExpect {
    /// 1-based connection numbers (at least 3).
    #[schemars(length(min = 3))]
    pub connections: Vec<usize>,
    /// Default `RW-RECONNECT-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement: Option<String>,
}

/// A fixture that could not be loaded: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: at {pointer:?}: {reason}")]
pub struct FixtureError {
    /// The file (or the name given for an in-memory fixture).
    pub file: String,
    /// JSON pointer of the offending value (`""` = the whole document).
    pub pointer: String,
    /// What is wrong.
    pub reason: String,
}

fn strip_position(msg: String) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg,
    }
}

impl Fixture {
    /// Reads, parses and checks a fixture file.
    pub fn from_path(path: &Path) -> Result<Self, FixtureError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| FixtureError {
            file: file.clone(),
            pointer: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        let fixture = Self::parse(&text, &file)?;
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            && stem != fixture.id
        {
            return Err(FixtureError {
                file,
                pointer: "/id".into(),
                reason: format!("id {:?} must equal the file name {stem:?}", fixture.id),
            });
        }
        Ok(fixture)
    }

    /// Parses and checks a fixture from text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, FixtureError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let fixture: Fixture = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let pointer = json_pointer(e.path(), EnumSegments::Name);
            let inner = e.into_inner();
            let reason = if inner.is_syntax() || inner.is_eof() {
                format!("invalid JSON: {inner}")
            } else {
                strip_position(inner.to_string())
            };
            FixtureError {
                file: file.to_owned(),
                pointer,
                reason,
            }
        })?;
        de.end().map_err(|e| FixtureError {
            file: file.to_owned(),
            pointer: String::new(),
            reason: format!("invalid JSON: {e}"),
        })?;
        crate::validate::check(&fixture).map_err(|(pointer, reason)| FixtureError {
            file: file.to_owned(),
            pointer,
            reason,
        })?;
        Ok(fixture)
    }

    /// The deadline in (unscaled) milliseconds.
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms.unwrap_or(5000)
    }

    /// The versions the mock speaks.
    pub fn server_versions(&self) -> Vec<String> {
        self.server_versions.clone().unwrap_or_else(|| {
            runwire_protocol::PROTOCOL_VERSIONS
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        })
    }

    /// The first requirement, the default for expectations that name none.
    pub fn primary_requirement(&self) -> &str {
        self.requirements
            .first()
            .map_or("RW-UNKNOWN-0", String::as_str)
    }

    /// The run logs by (run id, epoch).
    pub fn log_index(&self) -> BTreeMap<(String, String), usize> {
        self.runs
            .iter()
            .enumerate()
            .map(|(i, r)| ((r.run_id.clone(), r.epoch.clone()), i))
            .collect()
    }
}

/// Parses a timeline range `"A-B"` or `"A"`.
pub fn parse_range(s: &str) -> Option<(u64, u64)> {
    let s = s.trim();
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            (a >= 1 && a <= b).then_some((a, b))
        }
        None => {
            let a = s.parse().ok()?;
            (a >= 1).then_some((a, a))
        }
    }
}
