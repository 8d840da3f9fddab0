//! How `runwire watch` shows each event type of spec §3 as lines of text, and the
//! per-run state it needs for that: agent text streamed line by line as its deltas
//! arrive (§3.7), todo lists as checklists (§3.10), outputs reassembled from their
//! chunks (§3.11), custom types raw (§3.12).

use std::collections::BTreeMap;

use runwire_client::{ChunkAssembler, Output};
use runwire_protocol::{
    ChunkEncoding, Event, EventPayload, FileChange, LogLevel, RunMetadataData, TodoItem, TodoStatus,
};
use serde::Serialize;

/// One line of the human view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Line {
    /// The text, without a trailing newline.
    pub(crate) text: String,
    /// Secondary text (agent thinking): dimmed on a terminal.
    pub(crate) dim: bool,
}

impl Line {
    fn plain(text: String) -> Self {
        Self { text, dim: false }
    }
}

/// What the view needs besides the snapshot: text still being streamed and outputs
/// still being assembled.
#[derive(Debug, Default)]
pub(crate) struct Render {
    /// Show `agent.thinking` (dimmed) instead of hiding it.
    pub(crate) thinking: bool,
    /// The unfinished last line of each agent message and thinking block, by
    /// `message_id`.
    partial: BTreeMap<(bool, String), String>,
    chunks: ChunkAssembler,
}

/// The longest output printed in full; a longer one is summarized.
const MAX_OUTPUT_SHOWN: usize = 64 * 1024;

impl Render {
    /// A renderer; `thinking` shows `agent.thinking` text.
    pub(crate) fn new(thinking: bool) -> Self {
        Self {
            thinking,
            ..Self::default()
        }
    }

    /// Forgets text and chunks that started before a reset (`RW-TYPE-13`,
    /// `RW-TYPE-20`): what follows is shown as incomplete rather than as a whole.
    pub(crate) fn reset(&mut self) -> Vec<Line> {
        let mut out = Vec::new();
        for ((thinking, id), text) in std::mem::take(&mut self.partial) {
            if !text.is_empty() && (self.thinking || !thinking) {
                out.push(Line::plain(format!(
                    "  {} {id} (incomplete): {text}",
                    who(thinking)
                )));
            }
        }
        self.chunks.clear();
        out
    }

    /// The unfinished line of the most recent agent message, for a status line.
    pub(crate) fn streaming(&self) -> Option<&str> {
        self.partial
            .iter()
            .filter(|((thinking, _), t)| !thinking && !t.is_empty())
            .map(|(_, t)| t.as_str())
            .next_back()
    }

    /// The lines one event adds to the view. `run.progress` adds none: the status line
    /// shows it.
    pub(crate) fn event(&mut self, e: &Event) -> Vec<Line> {
        let one = |t: String| vec![Line::plain(t)];
        match &e.payload {
            EventPayload::LogLine(l) => one(match &l.source {
                Some(src) => format!("  {} [{src}] {}", level(l.level), l.message),
                None => format!("  {} {}", level(l.level), l.message),
            }),
            EventPayload::ToolStarted(t) => one(format!("  → {} ({})", t.tool, t.call_id)),
            EventPayload::ToolFinished(t) => {
                let took = t
                    .duration_ms
                    .map(|d| format!(" in {d} ms"))
                    .unwrap_or_default();
                one(if t.ok {
                    format!("  ✓ {} ({}){took}", t.tool, t.call_id)
                } else {
                    let why = t.error.as_deref().unwrap_or("failed");
                    format!("  ✗ {} ({}){took}: {why}", t.tool, t.call_id)
                })
            }
            EventPayload::RunPhase(p) => one(match &p.message {
                Some(m) => format!("phase {}: {m}", p.phase),
                None => format!("phase {}", p.phase),
            }),
            EventPayload::RunStatus(s) => one(match &s.reason {
                Some(r) => format!("status {} ({r})", s.status),
                None => format!("status {}", s.status),
            }),
            EventPayload::RunProgress(_) => Vec::new(),
            EventPayload::RunMetadata(m) => one(format!("  metadata {}", metadata(m))),
            EventPayload::AgentMessage(m) => self.text(false, &m.message_id, &m.delta, m.done),
            EventPayload::AgentThinking(m) => self.text(true, &m.message_id, &m.delta, m.done),
            EventPayload::FileChanged(f) => one(match (&f.change, &f.previous_path) {
                (FileChange::Renamed, Some(from)) => format!("  file renamed {from} → {}", f.path),
                (c, _) => format!("  file {} {}", file_change(*c), f.path),
            }),
            EventPayload::ArtifactCreated(a) => {
                let name = a
                    .name
                    .as_ref()
                    .map(|n| format!(" {n:?}"))
                    .unwrap_or_default();
                let size = a
                    .size_bytes
                    .map(|s| format!(", {s} bytes"))
                    .unwrap_or_default();
                one(format!(
                    "  artifact {}{name} ({}{size}) {}",
                    a.kind, a.media_type, a.uri
                ))
            }
            EventPayload::TodoUpdated(t) => todos(&t.items),
            EventPayload::OutputChunk(c) => match self.chunks.push(c) {
                Ok(Some(out)) => output(&out),
                Ok(None) => Vec::new(),
                Err(err) => {
                    self.chunks.discard(&c.output_id);
                    one(format!("  output {} (incomplete): {err}", c.output_id))
                }
            },
            other => one(format!("  {} {}", other.event_type(), other.data_value())),
        }
    }

    /// Agent text (§3.7): each complete line as soon as its newline arrives, the rest
    /// when the message is done.
    fn text(&mut self, thinking: bool, id: &str, delta: &str, done: bool) -> Vec<Line> {
        let key = (thinking, id.to_owned());
        let buf = self.partial.entry(key.clone()).or_default();
        buf.push_str(delta);
        let mut lines = Vec::new();
        while let Some(nl) = buf.find('\n') {
            lines.push(buf[..nl].to_owned());
            buf.drain(..=nl);
        }
        if done {
            let rest = self.partial.remove(&key).unwrap_or_default();
            if !rest.is_empty() {
                lines.push(rest);
            }
        }
        if thinking && !self.thinking {
            return Vec::new();
        }
        lines
            .into_iter()
            .map(|l| Line {
                text: format!("  {} {l}", who(thinking)),
                dim: thinking,
            })
            .collect()
    }
}

fn who(thinking: bool) -> &'static str {
    if thinking { "thinking ·" } else { "agent ›" }
}

fn level(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info ",
        LogLevel::Warn => "warn ",
        LogLevel::Error => "error",
        _ => "log  ",
    }
}

fn file_change(c: FileChange) -> &'static str {
    match c {
        FileChange::Created => "created",
        FileChange::Modified => "modified",
        FileChange::Deleted => "deleted",
        FileChange::Renamed => "renamed",
        _ => "changed",
    }
}

fn metadata(m: &RunMetadataData) -> String {
    let mut parts = Vec::new();
    for (name, v) in [
        ("title", &m.title),
        ("agent", &m.agent),
        ("model", &m.model),
        ("project", &m.project),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name} {v:?}"));
        }
    }
    for (k, v) in &m.labels {
        parts.push(format!("{k}={v}"));
    }
    if parts.is_empty() {
        "(no fields)".to_owned()
    } else {
        parts.join(" · ")
    }
}

/// A todo list as a checklist: `[x]` completed, `[~]` in progress, `[ ]` pending,
/// `[-]` cancelled.
fn todos(items: &[TodoItem]) -> Vec<Line> {
    let done = items
        .iter()
        .filter(|i| i.status == TodoStatus::Completed)
        .count();
    let mut out = vec![Line::plain(format!("  todo ({done}/{} done)", items.len()))];
    for i in items {
        let mark = match i.status {
            TodoStatus::Completed => "[x]",
            TodoStatus::InProgress => "[~]",
            TodoStatus::Cancelled => "[-]",
            _ => "[ ]",
        };
        out.push(Line::plain(format!("    {mark} {}", i.text)));
    }
    out
}

/// A whole output: its text, or its size when it is binary or large.
fn output(o: &Output) -> Vec<Line> {
    let media = o.media_type.as_deref().unwrap_or("no media type");
    match o.encoding {
        ChunkEncoding::Utf8 if o.data.len() <= MAX_OUTPUT_SHOWN => {
            let mut out = vec![Line::plain(format!(
                "  output {} ({media}, {} bytes):",
                o.output_id,
                o.data.len()
            ))];
            out.extend(o.data.lines().map(|l| Line::plain(format!("    {l}"))));
            out
        }
        ChunkEncoding::Utf8 => vec![Line::plain(format!(
            "  output {} ({media}, {} bytes, not shown)",
            o.output_id,
            o.data.len()
        ))],
        _ => {
            let bytes: usize = o.base64_parts().map(decoded_len).sum();
            vec![Line::plain(format!(
                "  output {} ({media}, {bytes} bytes, base64, not shown)",
                o.output_id
            ))]
        }
    }
}

/// The number of bytes a padded base64 string decodes to.
fn decoded_len(b64: &str) -> usize {
    let pad = b64.bytes().rev().take_while(|b| *b == b'=').count();
    (b64.len() / 4 * 3).saturating_sub(pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A type added to the protocol reaches `arbitrary::event`; every known type must
    /// have an arm of its own (the last arm prints unknown types raw, with their
    /// type name first).
    #[test]
    fn every_known_event_type_is_rendered_by_its_own_arm() {
        use proptest::{
            strategy::{Strategy, ValueTree},
            test_runner::TestRunner,
        };
        let mut runner = TestRunner::deterministic();
        let events = runwire_protocol::arbitrary::event();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let e = events.new_tree(&mut runner).expect("an event").current();
            let mut r = Render::new(true);
            let raw = format!("  {} {}", e.event_type(), e.payload.data_value());
            let lines = r.event(&e);
            let fell_through = lines.first().is_some_and(|l| l.text == raw);
            assert_eq!(fell_through, !e.payload.is_known(), "{}", e.event_type());
            seen.insert(e.event_type().to_owned());
        }
        for t in runwire_protocol::KNOWN_EVENT_TYPES {
            assert!(seen.contains(*t), "{t} was never generated");
        }
    }

    #[test]
    fn agent_text_streams_by_line_and_thinking_is_hidden_unless_asked() {
        let mut r = Render::new(false);
        assert!(r.text(false, "m", "Hello, ", false).is_empty());
        assert_eq!(r.streaming(), Some("Hello, "));
        let l = r.text(false, "m", "world\nsecond", false);
        assert_eq!(l[0].text, "  agent › Hello, world");
        let l = r.text(false, "m", " line", true);
        assert_eq!(l[0].text, "  agent › second line");
        assert!(r.text(true, "t", "hidden\n", true).is_empty());
        let mut r = Render::new(true);
        let l = r.text(true, "t", "shown\n", false);
        assert!(l[0].dim && l[0].text.ends_with("shown"));
    }

    #[test]
    fn base64_sizes() {
        assert_eq!(decoded_len("PC90ZXN0c3VpdGU+"), 12);
        assert_eq!(decoded_len("YQ=="), 1);
    }
}
