//! Events encoded once, and the frames built from them.
//!
//! A server encodes each event once, when it is appended, and sends the same text to
//! every subscriber and every replay (spec §9, §10). [`RawEvent`] is that text with
//! its type: an [`Event`] envelope as [`crate::codec::encode`] writes it (or with the
//! producer's `data` kept verbatim, `RW-TYPE-25`). [`event_frame`] and
//! [`batch_frame`] build the `event` and `batch` frames around such texts, byte for
//! byte what `encode(&ServerMessage::Event(..))` and `encode(&ServerMessage::Batch(..))`
//! write for the same events, without decoding or encoding them again.
//! [`SeqTemplate`] is an envelope whose `seq` is filled in later, for a store that
//! assigns it where the text is written (a Redis script).

use std::{fmt, sync::Arc};

use crate::{
    Event,
    codec::{DecodeError, decode_event, encode, encode_event_with_data},
};

/// The `event` frame's text before the event.
const EVENT_FRAME_HEAD: &str = r#"{"type":"event","event":"#;
/// The `batch` frame's text before the first event.
const BATCH_FRAME_HEAD: &str = r#"{"type":"batch","events":["#;

/// An [`Event`] envelope encoded as its wire JSON, shared cheaply (cloning shares the
/// text).
///
/// Every constructor but [`RawEvent::from_encoded`] produces the text itself or
/// checks it; `from_encoded` takes the word of a store that kept text one of them
/// produced.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RawEvent {
    json: Arc<str>,
}

impl RawEvent {
    /// Encodes an event.
    pub fn encode(event: &Event) -> Self {
        Self::encode_with_data(event, None)
    }

    /// Encodes an event whose `data` is the producer's, kept verbatim when given
    /// (`RW-TYPE-25`); see [`encode_event_with_data`].
    pub fn encode_with_data(event: &Event, data: Option<&serde_json::Value>) -> Self {
        Self {
            json: Arc::from(encode_event_with_data(event, data)),
        }
    }

    /// Checks that `json` is an event envelope (at most `max_bytes`) and keeps the
    /// text as it is.
    pub fn parse(json: &str, max_bytes: usize) -> Result<Self, DecodeError> {
        decode_event(json.as_bytes(), max_bytes)?;
        Ok(Self {
            json: Arc::from(json),
        })
    }

    /// Wraps text that one of the other constructors produced and a store kept (a
    /// database column, a stream entry), without checking it again: a replay reads
    /// many events, and the store wrote them itself.
    pub fn from_encoded(json: impl Into<Arc<str>>) -> Self {
        Self { json: json.into() }
    }

    /// The wire JSON.
    pub fn as_str(&self) -> &str {
        &self.json
    }

    /// The length of the wire JSON in bytes.
    pub fn len(&self) -> usize {
        self.json.len()
    }

    /// Whether the text is empty (never, for an encoded event).
    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }

    /// Decodes the event.
    pub fn decode(&self) -> Result<Event, DecodeError> {
        decode_event(self.json.as_bytes(), usize::MAX)
    }
}

impl fmt::Debug for RawEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawEvent").field(&&*self.json).finish()
    }
}

impl fmt::Display for RawEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.json)
    }
}

/// The `event` frame carrying `event`: `encode(&ServerMessage::Event(..))` of it.
pub fn event_frame(event: &RawEvent) -> String {
    let mut s = String::with_capacity(EVENT_FRAME_HEAD.len() + event.len() + 1);
    s.push_str(EVENT_FRAME_HEAD);
    s.push_str(event.as_str());
    s.push('}');
    s
}

/// The `batch` frame carrying `events` in order: `encode(&ServerMessage::Batch(..))`
/// of them. A batch holds at least one event (spec §10); the caller sends a lone
/// event as it likes (an `event` frame or a batch of one).
pub fn batch_frame<'a, I>(events: I) -> String
where
    I: IntoIterator<Item = &'a RawEvent>,
    I::IntoIter: Clone,
{
    let events = events.into_iter();
    let len: usize = events.clone().map(|e| e.len() + 1).sum();
    let mut s = String::with_capacity(BATCH_FRAME_HEAD.len() + len + 2);
    s.push_str(BATCH_FRAME_HEAD);
    for (i, e) in events.enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(e.as_str());
    }
    s.push_str("]}");
    s
}

/// An event envelope without its `seq`: the text before the seq and the text after
/// it, for a store that assigns the seq where it writes the text.
/// `prefix + seq + suffix` is the [`RawEvent`] of the event with that seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqTemplate {
    prefix: String,
    suffix: String,
}

impl SeqTemplate {
    /// The template of `event` (whose own `seq` is ignored), with the producer's
    /// `data` kept verbatim when given.
    pub fn new(event: &Event, data: Option<&serde_json::Value>) -> Self {
        // The envelope's members come in a fixed order, `seq` third (see `Event`'s
        // `Serialize`): the text before it depends on the ids alone.
        let prefix = format!(
            r#"{{"event_id":{},"run_id":{},"seq":"#,
            encode(&event.event_id),
            encode(&event.run_id)
        );
        let json = encode_event_with_data(event, data);
        let seq = event.seq.to_string();
        let suffix = json
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_prefix(&seq))
            .expect("an envelope starts with event_id, run_id and seq");
        Self {
            suffix: suffix.to_owned(),
            prefix,
        }
    }

    /// The text before the seq.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The text after the seq.
    pub fn suffix(&self) -> &str {
        &self.suffix
    }

    /// The text before the seq and the text after it.
    pub fn into_parts(self) -> (String, String) {
        (self.prefix, self.suffix)
    }

    /// The encoded event with `seq`.
    pub fn with_seq(&self, seq: u64) -> RawEvent {
        RawEvent::from_encoded(format!("{}{seq}{}", self.prefix, self.suffix))
    }
}
