//! The event envelope and the v1 event payloads (spec §2 and §3).

use std::{borrow::Cow, collections::BTreeMap, fmt};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor},
    ser::SerializeStruct,
};
use serde_json::Value;

use crate::{EventId, RunId, Timestamp, ids::is_valid_event_type, num};

/// A payload type with a fixed event type name (spec §3).
pub trait EventData:
    Serialize + for<'de> Deserialize<'de> + JsonSchema + Into<EventPayload>
{
    /// The event type name, e.g. `run.progress`.
    const TYPE: &'static str;
}

/// Run status values (spec §3.1). `completed`, `failed` and `cancelled` are terminal.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// Accepted, not yet started.
    Queued,
    /// Started.
    Running,
    /// Finished successfully (terminal).
    Completed,
    /// Finished unsuccessfully (terminal).
    Failed,
    /// Stopped before finishing (terminal).
    Cancelled,
}

impl RunStatus {
    /// Whether this status ends the run (`RW-TYPE-2`).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `run.status`: the run's lifecycle status changed (spec §3.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunStatusData {
    /// The new status.
    pub status: RunStatus,
    /// A human-readable reason, typically for `failed` or `cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `run.progress`: how far the run has come (spec §3.2). Every field is optional; a
/// receiver keeps the last value of each field it has seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProgressData {
    /// Completion in percent, 0 to 100.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "num::opt_percent"
    )]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub percent: Option<f64>,
    /// The current step, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Units of work done so far.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "num::opt_safe_u64"
    )]
    #[schemars(range(max = 9_007_199_254_740_991u64))]
    pub current: Option<u64>,
    /// Units of work in total, when known.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "num::opt_safe_u64"
    )]
    #[schemars(range(max = 9_007_199_254_740_991u64))]
    pub total: Option<u64>,
    /// The tool currently running, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// A short status message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `run.metadata`: descriptive facts about the run (spec §3.3). Later metadata events
/// update the fields they carry; `labels` are merged key by key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunMetadataData {
    /// The agent or job runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The model, for AI agent runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The project or repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// A human-readable title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `run.phase`: the run entered a phase (spec §3.4). Well-known phases are `plan`,
/// `build`, `test`, `review` and `document`; producers may use their own names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunPhaseData {
    /// The phase name: 1–64 characters of lowercase letters, digits, `_`, `-`, `.`.
    #[schemars(length(min = 1, max = 64), regex(pattern = "^[a-z][a-z0-9_.-]{0,63}$"))]
    #[serde(deserialize_with = "phase_name")]
    pub phase: String,
    /// A short description of what happens in this phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn phase_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        });
    if !ok {
        return Err(de::Error::custom(format!(
            "phase {s:?} must be 1-64 characters: a lowercase letter, then lowercase letters, digits, '_', '.', '-'"
        )));
    }
    Ok(s)
}

/// Log severity (spec §3.5).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal information.
    Info,
    /// Something unexpected that did not stop the run.
    Warn,
    /// An error.
    Error,
}

/// `log.line`: one log line (spec §3.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogLineData {
    /// Severity.
    pub level: LogLevel,
    /// The line, without a trailing newline.
    pub message: String,
    /// Where it came from (a component, a file, a tool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// `tool.started`: a tool call began (spec §3.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolStartedData {
    /// Identifies the call; the matching `tool.finished` carries the same id.
    #[serde(deserialize_with = "num::bounded_string::<_, 128>")]
    #[schemars(length(min = 1, max = 128))]
    pub call_id: String,
    /// The tool's name.
    pub tool: String,
    /// The tool's input, any JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
}

/// `tool.finished`: a tool call ended (spec §3.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolFinishedData {
    /// The id from `tool.started`.
    #[serde(deserialize_with = "num::bounded_string::<_, 128>")]
    #[schemars(length(min = 1, max = 128))]
    pub call_id: String,
    /// The tool's name.
    pub tool: String,
    /// Whether the call succeeded.
    pub ok: bool,
    /// The tool's output, any JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The error, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the call took, in milliseconds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "num::opt_safe_u64"
    )]
    #[schemars(range(max = 9_007_199_254_740_991u64))]
    pub duration_ms: Option<u64>,
}

/// `agent.message`: a streamed piece of the agent's visible output (spec §3.7).
/// Concatenating the `delta`s of one `message_id` in seq order gives the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentMessageData {
    /// Identifies the message the delta belongs to.
    #[serde(deserialize_with = "num::bounded_string::<_, 128>")]
    #[schemars(length(min = 1, max = 128))]
    pub message_id: String,
    /// The next piece of text.
    pub delta: String,
    /// True on the last delta of the message (omitted when false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub done: bool,
}

/// `agent.thinking`: a streamed piece of the agent's reasoning text (spec §3.7);
/// same shape and rules as [`AgentMessageData`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentThinkingData {
    /// Identifies the thinking block the delta belongs to.
    #[serde(deserialize_with = "num::bounded_string::<_, 128>")]
    #[schemars(length(min = 1, max = 128))]
    pub message_id: String,
    /// The next piece of text.
    pub delta: String,
    /// True on the last delta of the block (omitted when false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub done: bool,
}

/// What happened to a file (spec §3.8).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FileChange {
    /// The file was created.
    Created,
    /// The file's content changed.
    Modified,
    /// The file was deleted.
    Deleted,
    /// The file was moved from `previous_path`.
    Renamed,
}

/// `file.changed`: the run changed a file (spec §3.8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FileChangedData {
    /// The file's path, relative to the run's workspace.
    pub path: String,
    /// What happened.
    pub change: FileChange,
    /// The old path, for `renamed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_path: Option<String>,
}

/// `artifact.created`: the run produced an artifact (spec §3.9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactCreatedData {
    /// Identifies the artifact within the run.
    #[serde(deserialize_with = "num::bounded_string::<_, 128>")]
    #[schemars(length(min = 1, max = 128))]
    pub artifact_id: String,
    /// What it is; well-known kinds are `screenshot`, `spec`, `patch`, `report`, `log`
    /// and `other`; producers may use their own.
    pub kind: String,
    /// Where to fetch it.
    pub uri: String,
    /// Its media type, e.g. `image/png`.
    pub media_type: String,
    /// Its size in bytes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "num::opt_safe_u64"
    )]
    #[schemars(range(max = 9_007_199_254_740_991u64))]
    pub size_bytes: Option<u64>,
    /// A display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Status of one todo item (spec §3.10).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TodoStatus {
    /// Not started.
    Pending,
    /// Being worked on.
    InProgress,
    /// Done.
    Completed,
    /// Dropped.
    Cancelled,
}

/// One item of a todo list (spec §3.10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TodoItem {
    /// Identifies the item within the list.
    pub id: String,
    /// What to do.
    pub text: String,
    /// Where it stands.
    pub status: TodoStatus,
}

/// `todo.updated`: the run's whole todo list, replacing the previous one (spec §3.10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TodoUpdatedData {
    /// The items, in display order.
    pub items: Vec<TodoItem>,
}

/// How an output chunk's `data` is encoded (spec §3.11).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChunkEncoding {
    /// UTF-8 text.
    Utf8,
    /// Standard base64 (RFC 4648 §4) of arbitrary bytes.
    Base64,
}

/// `output.chunk`: one piece of a large output split into ordered chunks (spec §3.11).
/// Chunks of one `output_id` have indexes 0, 1, 2, … in seq order; the one with `last`
/// set ends the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutputChunkData {
    /// Identifies the output within the run.
    #[serde(deserialize_with = "num::bounded_string::<_, 128>")]
    #[schemars(length(min = 1, max = 128))]
    pub output_id: String,
    /// The chunk's position, from 0.
    #[schemars(range(max = 4_294_967_295u32))]
    pub index: u32,
    /// True on the final chunk (omitted when false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last: bool,
    /// How `data` is encoded.
    pub encoding: ChunkEncoding,
    /// The chunk's content.
    pub data: String,
    /// The media type of the whole output, e.g. `text/plain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

macro_rules! payloads {
    ($( $variant:ident($ty:ty) = $name:literal ),* $(,)?) => {
        /// A typed event payload: the `type` and `data` members of an event (spec §3).
        ///
        /// Unknown event types are kept losslessly as [`EventPayload::Unknown`], never
        /// rejected (`RW-VERSION-4`).
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum EventPayload {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant($ty),
            )*
            /// An event type this version does not know, kept as raw JSON.
            Unknown {
                /// The event type name.
                event_type: String,
                /// The `data` object, unchanged.
                data: Value,
            },
        }

        $(
            impl EventData for $ty {
                const TYPE: &'static str = $name;
            }
            impl From<$ty> for EventPayload {
                fn from(d: $ty) -> Self {
                    Self::$variant(d)
                }
            }
        )*

        /// Every event type name v1 defines, in spec order.
        pub const KNOWN_EVENT_TYPES: &[&str] = &[$($name),*];

        /// Calls `visitor` once per payload type v1 defines, in spec order: lists that
        /// must follow the event types (schemas, generators) are built with it, so a
        /// new type reaches them without a second list to edit.
        pub fn visit_event_types<V: EventTypeVisitor>(visitor: &mut V) {
            $(visitor.visit::<$ty>();)*
        }

        impl EventPayload {
            /// The event type name.
            pub fn event_type(&self) -> &str {
                match self {
                    $(Self::$variant(_) => $name,)*
                    Self::Unknown { event_type, .. } => event_type,
                }
            }

            /// Whether this is a type v1 defines.
            pub fn is_known(&self) -> bool {
                !matches!(self, Self::Unknown { .. })
            }

            fn serialize_data<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(Self::$variant(d) => d.serialize(s),)*
                    Self::Unknown { data, .. } => data.serialize(s),
                }
            }

            /// The `data` member as a JSON value.
            pub fn data_value(&self) -> Value {
                match self {
                    $(Self::$variant(d) => serde_json::to_value(d).unwrap_or(Value::Null),)*
                    Self::Unknown { data, .. } => data.clone(),
                }
            }

            /// Builds a payload from a type name and a `data` value, validating known
            /// types against their payload struct.
            pub fn from_type_and_data(event_type: &str, data: Value) -> Result<Self, serde_json::Error> {
                PayloadSeed(event_type).deserialize(data)
            }

            /// Subschemas of every known payload, by type name.
            fn data_schemas(generator: &mut SchemaGenerator) -> Vec<(&'static str, Schema)> {
                vec![$(($name, generator.subschema_for::<$ty>()),)*]
            }
        }

        impl<'de> DeserializeSeed<'de> for PayloadSeed<'_> {
            type Value = EventPayload;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<EventPayload, D::Error> {
                match self.0 {
                    $($name => <$ty>::deserialize(d).map(EventPayload::$variant),)*
                    other => {
                        if !is_valid_event_type(other) {
                            return Err(de::Error::custom(format!(
                                "event type {other:?} is not a valid event type name (two or more dot-separated lowercase segments)"
                            )));
                        }
                        let data = Value::deserialize(d)?;
                        if !data.is_object() {
                            return Err(de::Error::custom("event data must be a JSON object"));
                        }
                        Ok(EventPayload::Unknown { event_type: other.to_owned(), data })
                    }
                }
            }
        }
    };
}

/// Receives every payload type v1 defines, from [`visit_event_types`].
pub trait EventTypeVisitor {
    /// Called once for the payload type `T` (its type name is `T::TYPE`).
    fn visit<T: EventData>(&mut self);
}

/// Deserializes the `data` member of an event of the given type: known types into
/// their payload struct, other (well-formed) type names into
/// [`EventPayload::Unknown`] with an object `data`. Use it with
/// `MapAccess::next_value_seed` to decode `data` in place, without a `Value` in between.
#[derive(Debug, Clone, Copy)]
pub struct PayloadSeed<'a>(pub &'a str);

payloads! {
    RunStatus(RunStatusData) = "run.status",
    RunProgress(ProgressData) = "run.progress",
    RunMetadata(RunMetadataData) = "run.metadata",
    RunPhase(RunPhaseData) = "run.phase",
    LogLine(LogLineData) = "log.line",
    ToolStarted(ToolStartedData) = "tool.started",
    ToolFinished(ToolFinishedData) = "tool.finished",
    AgentMessage(AgentMessageData) = "agent.message",
    AgentThinking(AgentThinkingData) = "agent.thinking",
    FileChanged(FileChangedData) = "file.changed",
    ArtifactCreated(ArtifactCreatedData) = "artifact.created",
    TodoUpdated(TodoUpdatedData) = "todo.updated",
    OutputChunk(OutputChunkData) = "output.chunk",
}

impl EventPayload {
    /// The status, if this is a `run.status` event.
    pub fn status(&self) -> Option<RunStatus> {
        match self {
            Self::RunStatus(d) => Some(d.status),
            _ => None,
        }
    }

    /// Whether this payload ends its run (a terminal `run.status`, `RW-TYPE-2`).
    pub fn is_terminal(&self) -> bool {
        self.status().is_some_and(RunStatus::is_terminal)
    }

    /// Whether a server that batches must flush this event at once (`RW-BATCH-3`):
    /// terminal status and todo list updates.
    pub fn flushes_batch(&self) -> bool {
        self.is_terminal() || matches!(self, Self::TodoUpdated(_))
    }
}

/// An event type name, validated while it is read (so errors point at `/type`), and
/// borrowed from the input when it has no escapes.
struct TypeName<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for TypeName<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event type name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        let t = d.deserialize_str(V)?;
        if !is_valid_event_type(&t) {
            return Err(de::Error::custom(format!(
                "event type {:?} is not a valid event type name (two or more dot-separated lowercase segments, at most 128 characters)",
                t.chars().take(64).collect::<String>()
            )));
        }
        Ok(Self(t))
    }
}

/// Collects the `type` and `data` members of an object whose other members vary.
#[derive(Default)]
pub(crate) struct TypeAndData<'de> {
    event_type: Option<Cow<'de, str>>,
    payload: Option<EventPayload>,
    /// `data` seen before `type`: kept as a value until the type is known.
    early_data: Option<Value>,
}

impl<'de> TypeAndData<'de> {
    /// Handles `type` or `data`; returns false for other keys.
    pub(crate) fn visit<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        match key {
            "type" => {
                if self.event_type.is_some() {
                    return Err(de::Error::duplicate_field("type"));
                }
                let t: TypeName<'_> = map.next_value()?;
                self.event_type = Some(t.0);
                Ok(true)
            }
            "data" => {
                if self.payload.is_some() || self.early_data.is_some() {
                    return Err(de::Error::duplicate_field("data"));
                }
                match &self.event_type {
                    Some(t) => self.payload = Some(map.next_value_seed(PayloadSeed(t))?),
                    None => self.early_data = Some(map.next_value()?),
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub(crate) fn finish<E: de::Error>(self) -> Result<EventPayload, E> {
        let event_type = self.event_type.ok_or_else(|| E::missing_field("type"))?;
        if let Some(p) = self.payload {
            return Ok(p);
        }
        let data = self.early_data.ok_or_else(|| E::missing_field("data"))?;
        EventPayload::from_type_and_data(&event_type, data)
            .map_err(|e| E::custom(format_args!("invalid data: {e}")))
    }
}

/// An event: one entry of a run's append-only log (spec §2).
///
/// On the wire: `{"event_id", "run_id", "seq", "type", "time", "data"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Globally unique, assigned by the server (`RW-EVENT-1`).
    pub event_id: EventId,
    /// The run this event belongs to.
    pub run_id: RunId,
    /// Position in the run's log: 1, 2, 3, … without gaps (`RW-EVENT-3`).
    pub seq: u64,
    /// When the event happened: the time the server appended it, or the time the
    /// producer supplied (RFC 3339, UTC with `Z`; `RW-EVENT-5`, `RW-INGEST-12`).
    pub time: Timestamp,
    /// The event type and its data.
    pub payload: EventPayload,
}

impl Event {
    /// The event type name.
    pub fn event_type(&self) -> &str {
        self.payload.event_type()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Event", 6)?;
        st.serialize_field("event_id", &self.event_id)?;
        st.serialize_field("run_id", &self.run_id)?;
        st.serialize_field("seq", &self.seq)?;
        st.serialize_field("type", self.payload.event_type())?;
        st.serialize_field("time", &self.time)?;
        st.serialize_field("data", &DataRef(&self.payload))?;
        st.end()
    }
}

struct DataRef<'a>(&'a EventPayload);

impl Serialize for DataRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_data(s)
    }
}

struct SeqField(u64);

impl<'de> Deserialize<'de> for SeqField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        num::seq(d).map(SeqField)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Event;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
                let mut event_id = None;
                let mut run_id = None;
                let mut seq = None;
                let mut time = None;
                let mut td = TypeAndData::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if td.visit(&key, &mut map)? {
                        continue;
                    }
                    match &*key {
                        "event_id" => set(&mut event_id, "event_id", map.next_value()?)?,
                        "run_id" => set(&mut run_id, "run_id", map.next_value()?)?,
                        "seq" => set(&mut seq, "seq", map.next_value::<SeqField>()?.0)?,
                        "time" => set(&mut time, "time", map.next_value()?)?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Event {
                    event_id: event_id.ok_or_else(|| de::Error::missing_field("event_id"))?,
                    run_id: run_id.ok_or_else(|| de::Error::missing_field("run_id"))?,
                    seq: seq.ok_or_else(|| de::Error::missing_field("seq"))?,
                    time: time.ok_or_else(|| de::Error::missing_field("time"))?,
                    payload: td.finish()?,
                })
            }
        }
        d.deserialize_map(V)
    }
}

fn set<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, v: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(v);
    Ok(())
}

/// Builds the `oneOf` that ties each known `type` to its `data` schema, plus one
/// branch for any other (unknown, custom) type name.
pub(crate) fn type_data_one_of(generator: &mut SchemaGenerator) -> Value {
    let mut branches = Vec::new();
    for (name, schema) in EventPayload::data_schemas(generator) {
        branches.push(serde_json::json!({
            "properties": {
                "type": { "const": name },
                "data": schema,
            }
        }));
    }
    branches.push(serde_json::json!({
        "properties": {
            "type": { "not": { "enum": KNOWN_EVENT_TYPES } },
            "data": { "type": "object" },
        }
    }));
    Value::Array(branches)
}

impl JsonSchema for Event {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Event")
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let event_id = generator.subschema_for::<EventId>();
        let run_id = generator.subschema_for::<RunId>();
        let time = generator.subschema_for::<Timestamp>();
        let one_of = type_data_one_of(generator);
        json_schema!({
            "description": "An event: one entry of a run's append-only log (spec section 2).",
            "type": "object",
            "required": ["event_id", "run_id", "seq", "type", "time", "data"],
            "properties": {
                "event_id": event_id,
                "run_id": run_id,
                "seq": { "type": "integer", "minimum": 1, "maximum": crate::MAX_SEQ },
                "type": { "type": "string", "pattern": crate::EVENT_TYPE_PATTERN, "maxLength": 128 },
                "time": time,
                "data": { "type": "object" },
            },
            "oneOf": one_of,
        })
    }
}

/// Serializes and deserializes an [`EventPayload`] as the `type` and `data` members of
/// an enclosing object; used by the HTTP ingest body ([`crate::http::NewEvent`]).
pub(crate) mod inline {
    use super::*;

    pub(crate) fn serialize_fields<S: SerializeStruct>(
        st: &mut S,
        payload: &EventPayload,
    ) -> Result<(), S::Error> {
        st.serialize_field("type", payload.event_type())?;
        st.serialize_field("data", &DataRef(payload))
    }

    pub(crate) use super::TypeAndData as Collector;
}
