//! The folded state of a run (spec §8.3 and §4.3).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    ArtifactCreatedData, Epoch, Event, EventPayload, LogLineData, ProgressData, RunId,
    RunMetadataData, RunStatus, Timestamp, TodoItem, ToolStartedData, num,
};

/// How many recent log lines a snapshot keeps (spec §8.3).
pub const SNAPSHOT_RECENT_LOGS: usize = 50;

/// A run's state folded from its log up to `as_of_seq` (spec §8.3). Sent in `reset`
/// frames and returned by `GET /v1/runs/{run_id}`.
///
/// Folding rules (`RW-SNAP-2`): `run.status` sets `status` and `status_reason`;
/// `run.progress` updates the progress fields it carries; `run.metadata` updates the
/// fields it carries and merges labels; `run.phase` sets `phase`; `log.line` appends to
/// `recent_logs` (the last 50 are kept); `tool.started` adds to `open_tool_calls` and
/// `tool.finished` removes the call; `artifact.created` appends to `artifacts`;
/// `todo.updated` replaces `todos`; other types only advance `as_of_seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunSnapshot {
    /// The run.
    pub run_id: RunId,
    /// The run's epoch.
    pub epoch: Epoch,
    /// The last seq folded into this state (0 = no events).
    #[serde(deserialize_with = "num::safe_u64")]
    #[schemars(range(max = 9_007_199_254_740_991u64))]
    pub as_of_seq: u64,
    /// The last status, if any `run.status` was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    /// The reason given with the last status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Accumulated progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressData>,
    /// Accumulated metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<RunMetadataData>,
    /// The current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The last todo list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub todos: Vec<TodoItem>,
    /// Every artifact created so far, in seq order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactCreatedData>,
    /// Tool calls started and not yet finished, by call id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub open_tool_calls: BTreeMap<String, ToolStartedData>,
    /// The most recent log lines, oldest first (at most 50).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_logs: Vec<LogLineData>,
    /// Time of the first event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    /// Time of the last event folded in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
}

impl RunSnapshot {
    /// The state of a run with no events.
    pub fn empty(run_id: RunId, epoch: Epoch) -> Self {
        Self {
            run_id,
            epoch,
            as_of_seq: 0,
            status: None,
            status_reason: None,
            progress: None,
            metadata: None,
            phase: None,
            todos: Vec::new(),
            artifacts: Vec::new(),
            open_tool_calls: BTreeMap::new(),
            recent_logs: Vec::new(),
            created_at: None,
            updated_at: None,
        }
    }

    /// Whether the run has a terminal status.
    pub fn is_terminal(&self) -> bool {
        self.status.is_some_and(RunStatus::is_terminal)
    }

    /// Folds one event into the state. Events at or below `as_of_seq` are ignored, so
    /// folding is idempotent under duplicates; the caller is responsible for order.
    /// Returns whether the event was applied.
    pub fn apply(&mut self, event: &Event) -> bool {
        if event.seq <= self.as_of_seq {
            return false;
        }
        self.as_of_seq = event.seq;
        if self.created_at.is_none() {
            self.created_at = Some(event.time.clone());
        }
        self.updated_at = Some(event.time.clone());
        match &event.payload {
            EventPayload::RunStatus(d) => {
                self.status = Some(d.status);
                self.status_reason.clone_from(&d.reason);
            }
            EventPayload::RunProgress(d) => {
                let p = self.progress.get_or_insert_with(ProgressData::default);
                if d.percent.is_some() {
                    p.percent = d.percent;
                }
                if d.step.is_some() {
                    p.step.clone_from(&d.step);
                }
                if d.current.is_some() {
                    p.current = d.current;
                }
                if d.total.is_some() {
                    p.total = d.total;
                }
                if d.tool.is_some() {
                    p.tool.clone_from(&d.tool);
                }
                if d.message.is_some() {
                    p.message.clone_from(&d.message);
                }
            }
            EventPayload::RunMetadata(d) => {
                let m = self.metadata.get_or_insert_with(RunMetadataData::default);
                if d.agent.is_some() {
                    m.agent.clone_from(&d.agent);
                }
                if d.model.is_some() {
                    m.model.clone_from(&d.model);
                }
                if d.project.is_some() {
                    m.project.clone_from(&d.project);
                }
                if d.title.is_some() {
                    m.title.clone_from(&d.title);
                }
                for (k, v) in &d.labels {
                    m.labels.insert(k.clone(), v.clone());
                }
            }
            EventPayload::RunPhase(d) => self.phase = Some(d.phase.clone()),
            EventPayload::LogLine(d) => {
                self.recent_logs.push(d.clone());
                if self.recent_logs.len() > SNAPSHOT_RECENT_LOGS {
                    let excess = self.recent_logs.len() - SNAPSHOT_RECENT_LOGS;
                    self.recent_logs.drain(..excess);
                }
            }
            EventPayload::ToolStarted(d) => {
                self.open_tool_calls.insert(d.call_id.clone(), d.clone());
            }
            EventPayload::ToolFinished(d) => {
                self.open_tool_calls.remove(&d.call_id);
            }
            EventPayload::ArtifactCreated(d) => self.artifacts.push(d.clone()),
            EventPayload::TodoUpdated(d) => self.todos.clone_from(&d.items),
            _ => {}
        }
        true
    }
}
