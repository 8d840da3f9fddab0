//! Frame decoding with a single-pass fast path for `event` and `batch` frames.
//!
//! [`runwire_protocol::codec::decode_server_message`] checks syntax, probes the
//! `type` and then decodes the body with JSON-pointer error tracking: three passes
//! over the frame. That precision matters for errors, not for the hot path. This
//! module decodes `event` and `batch` frames whose `type` member comes first (what
//! every Runwire server writes) in one pass, into a reused buffer, with the very same
//! [`Event`] deserializer. Any frame the fast path does not handle, or rejects, goes
//! through `decode_server_message`, so the accepted language and the error reports are
//! exactly the protocol crate's.

use std::fmt;

use runwire_protocol::{Event, ServerMessage, codec::DecodeError};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// What a frame decoded to.
#[derive(Debug)]
pub enum Decoded {
    /// An `event` or `batch` frame; its events (at least one) were appended to the
    /// buffer passed to [`decode_frame`], in frame order.
    Events,
    /// Any other message (including [`ServerMessage::Unknown`]).
    Message(Box<ServerMessage>),
}

/// Decodes one server frame. Events of `event` and `batch` frames are appended to
/// `events` (which the caller drains), everything else is returned as a message.
/// Unknown message types decode to [`ServerMessage::Unknown`], never to an error
/// (`RW-VERSION-5`).
pub fn decode_frame(
    frame: &[u8],
    max_bytes: usize,
    events: &mut Vec<Event>,
) -> Result<Decoded, DecodeError> {
    let start = events.len();
    if frame.len() <= max_bytes {
        let mut de = serde_json::Deserializer::from_slice(frame);
        let fast = FastFrame { events };
        if let Ok(true) = de::Deserializer::deserialize_map(&mut de, fast)
            && de.end().is_ok()
        {
            return Ok(Decoded::Events);
        }
    }
    events.truncate(start);
    match runwire_protocol::codec::decode_server_message(frame, max_bytes)? {
        ServerMessage::Event(f) => {
            events.push(f.event);
            Ok(Decoded::Events)
        }
        ServerMessage::Batch(b) => {
            events.extend(b.events);
            Ok(Decoded::Events)
        }
        other => Ok(Decoded::Message(Box::new(other))),
    }
}

/// Visits a frame object; yields `true` when it was an `event` or `batch` frame
/// decoded completely, `false` (or an error) when the slow path must decide.
struct FastFrame<'a> {
    events: &'a mut Vec<Event>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Event,
    Batch,
}

impl<'de> Visitor<'de> for FastFrame<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a frame object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let Some(key) = map.next_key::<KeyRef<'de>>()? else {
            return Ok(false);
        };
        if key.0 != "type" {
            return Ok(false);
        }
        let ty: KeyRef<'de> = map.next_value()?;
        let kind = match &*ty.0 {
            "event" => Kind::Event,
            "batch" => Kind::Batch,
            _ => return Ok(false),
        };
        let body_key = if kind == Kind::Event {
            "event"
        } else {
            "events"
        };
        let mut seen = false;
        while let Some(key) = map.next_key::<KeyRef<'de>>()? {
            if key.0 == "type" {
                return Ok(false);
            }
            if key.0 == body_key {
                if seen {
                    return Ok(false);
                }
                seen = true;
                match kind {
                    Kind::Event => self.events.push(map.next_value::<Event>()?),
                    Kind::Batch => {
                        let n = map.next_value_seed(AppendSeq {
                            events: &mut *self.events,
                        })?;
                        if n == 0 {
                            return Ok(false);
                        }
                    }
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(seen)
    }
}

/// A map key or short string, borrowed when the input allows it.
struct KeyRef<'de>(std::borrow::Cow<'de, str>);

impl<'de> de::Deserialize<'de> for KeyRef<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <std::borrow::Cow<'de, str> as de::Deserialize>::deserialize(d).map(KeyRef)
    }
}

/// Appends the elements of a JSON array of events to a buffer; yields their count.
struct AppendSeq<'a> {
    events: &'a mut Vec<Event>,
}

impl<'de> DeserializeSeed<'de> for AppendSeq<'_> {
    type Value = usize;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for AppendSeq<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while let Some(ev) = seq.next_element::<Event>()? {
            self.events.push(ev);
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EV: &str = r#"{"event_id":"e1","run_id":"r","seq":1,"type":"run.progress","time":"2026-01-01T00:00:00Z","data":{"percent":5}}"#;

    #[test]
    fn fast_and_slow_agree() {
        let mut buf = Vec::new();
        let frame = format!(r#"{{"type":"event","event":{EV}}}"#);
        assert!(matches!(
            decode_frame(frame.as_bytes(), 1 << 16, &mut buf),
            Ok(Decoded::Events)
        ));
        assert_eq!(buf.len(), 1);
        // `type` last: the slow path handles it.
        let frame = format!(r#"{{"event":{EV},"type":"event"}}"#);
        assert!(matches!(
            decode_frame(frame.as_bytes(), 1 << 16, &mut buf),
            Ok(Decoded::Events)
        ));
        assert_eq!(buf.len(), 2);
        let frame = format!(r#"{{"type":"batch","events":[{EV},{EV}],"extra":1}}"#);
        assert!(matches!(
            decode_frame(frame.as_bytes(), 1 << 16, &mut buf),
            Ok(Decoded::Events)
        ));
        assert_eq!(buf.len(), 4);
        // Invalid frames fail exactly as in the protocol codec, and leave no events.
        for bad in [
            r#"{"type":"batch","events":[]}"#.to_owned(),
            format!(r#"{{"type":"batch","events":[{EV},{{"seq":0}}]}}"#),
            format!(r#"{{"type":"event","event":{EV},"event":{EV}}}"#),
            format!(r#"{{"type":"event","event":{EV}}} trailing"#),
            r#"{"type":"event"}"#.to_owned(),
        ] {
            let slow = runwire_protocol::codec::decode_server_message(bad.as_bytes(), 1 << 16);
            let fast = decode_frame(bad.as_bytes(), 1 << 16, &mut buf);
            assert!(slow.is_err(), "{bad}");
            assert_eq!(fast.err(), slow.err(), "{bad}");
            assert_eq!(buf.len(), 4, "{bad}");
        }
        // Too large: rejected before decoding.
        let frame = format!(r#"{{"type":"event","event":{EV}}}"#);
        assert!(matches!(
            decode_frame(frame.as_bytes(), 10, &mut buf),
            Err(DecodeError::TooLarge { .. })
        ));
        // Unknown types are messages, not errors.
        let Ok(Decoded::Message(m)) = decode_frame(br#"{"type":"future","x":1}"#, 100, &mut buf)
        else {
            panic!("unknown types decode to a message");
        };
        assert!(matches!(*m, ServerMessage::Unknown(_)));
    }
}
