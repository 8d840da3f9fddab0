//! Frame decoding with a single-pass fast path for `event` and `batch` frames.
//!
//! [`runwire_protocol::codec::decode_server_message`] checks syntax, probes the
//! `type` and then decodes the body with JSON-pointer error tracking: three passes
//! over the frame. That precision matters for errors, not for the hot path. This
//! module decodes `event` and `batch` frames whose `type` member comes first (what
//! every Runwire server writes, as [`runwire_protocol::raw::event_frame`] and
//! [`runwire_protocol::raw::batch_frame`] build them) in one pass, into a reused buffer, with the very same
//! [`Event`] deserializer. Any frame the fast path does not handle, or rejects, goes
//! through `decode_server_message`, so the accepted language and the error reports are
//! exactly the protocol crate's.

use std::fmt;

use std::borrow::Cow;

use runwire_protocol::{Event, EventPayload, ServerMessage, codec::DecodeError};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

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
        if fast(&mut de, events) {
            return Ok(Decoded::Events);
        }
    }
    slow(frame, max_bytes, events, start)
}

/// [`decode_frame`] for a frame already known to be UTF-8 (a WebSocket text frame):
/// the fast path then skips serde_json's per-string UTF-8 validation.
pub fn decode_text_frame(
    frame: &str,
    max_bytes: usize,
    events: &mut Vec<Event>,
) -> Result<Decoded, DecodeError> {
    let start = events.len();
    if frame.len() <= max_bytes {
        let mut de = serde_json::Deserializer::from_str(frame);
        if fast(&mut de, events) {
            return Ok(Decoded::Events);
        }
    }
    slow(frame.as_bytes(), max_bytes, events, start)
}

fn fast<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    events: &mut Vec<Event>,
) -> bool {
    let start = events.len();
    let ok = matches!(
        de::Deserializer::deserialize_map(
            &mut *de,
            FastFrame {
                events: &mut *events
            }
        ),
        Ok(true)
    ) && de.end().is_ok();
    if !ok {
        events.truncate(start);
    }
    ok
}

fn slow(
    frame: &[u8],
    max_bytes: usize,
    events: &mut Vec<Event>,
    start: usize,
) -> Result<Decoded, DecodeError> {
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
                    Kind::Event => self.events.push(map.next_value_seed(FastEvent)?),
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
        while let Some(ev) = seq.next_element_seed(FastEvent)? {
            self.events.push(ev);
            n += 1;
        }
        Ok(n)
    }
}

/// Decodes one event envelope exactly as `runwire_protocol::Event`'s `Deserialize`
/// does, with fewer allocations: the `type` stays borrowed while the payload is decoded
/// by its type's payload struct. Anything unusual (data before type, unknown types)
/// goes through [`EventPayload::from_type_and_data`], the protocol crate's own path;
/// any error sends the whole frame to the protocol codec, so this never accepts what
/// the codec rejects.
struct FastEvent;

impl<'de> DeserializeSeed<'de> for FastEvent {
    type Value = Event;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Event, D::Error> {
        d.deserialize_map(self)
    }
}

fn once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, v: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(v);
    Ok(())
}

impl<'de> Visitor<'de> for FastEvent {
    type Value = Event;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        use runwire_protocol::{EventId, MAX_SEQ, RunId, Timestamp};
        let mut event_id = None;
        let mut run_id = None;
        let mut seq = None;
        let mut time = None;
        let mut ty: Option<Cow<'de, str>> = None;
        let mut payload: Option<EventPayload> = None;
        let mut early: Option<Value> = None;
        while let Some(key) = map.next_key::<KeyRef<'de>>()? {
            match &*key.0 {
                "event_id" => {
                    let v: KeyRef<'de> = map.next_value()?;
                    let v = EventId::new(v.0.into_owned()).map_err(de::Error::custom)?;
                    once(&mut event_id, "event_id", v)?;
                }
                "run_id" => {
                    let v: KeyRef<'de> = map.next_value()?;
                    let v = RunId::new(v.0.into_owned()).map_err(de::Error::custom)?;
                    once(&mut run_id, "run_id", v)?;
                }
                "seq" => {
                    let v: u64 = map.next_value()?;
                    if v == 0 || v > MAX_SEQ {
                        return Err(de::Error::custom("seq out of range"));
                    }
                    once(&mut seq, "seq", v)?;
                }
                "time" => {
                    let v: KeyRef<'de> = map.next_value()?;
                    let v = Timestamp::new(v.0.into_owned()).map_err(de::Error::custom)?;
                    once(&mut time, "time", v)?;
                }
                "type" => {
                    let v: KeyRef<'de> = map.next_value()?;
                    once(&mut ty, "type", v.0)?;
                }
                "data" => {
                    if payload.is_some() || early.is_some() {
                        return Err(de::Error::duplicate_field("data"));
                    }
                    // With the type known, decode `data` in place; otherwise keep it
                    // as a value until the type arrives.
                    match ty.as_deref() {
                        Some(t) => {
                            payload = Some(map.next_value_seed(runwire_protocol::PayloadSeed(t))?);
                        }
                        None => early = Some(map.next_value()?),
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let ty = ty.ok_or_else(|| de::Error::missing_field("type"))?;
        let payload = match (payload, early) {
            (Some(p), _) => p,
            (None, Some(data)) => {
                EventPayload::from_type_and_data(&ty, data).map_err(de::Error::custom)?
            }
            (None, None) => return Err(de::Error::missing_field("data")),
        };
        Ok(Event {
            event_id: event_id.ok_or_else(|| de::Error::missing_field("event_id"))?,
            run_id: run_id.ok_or_else(|| de::Error::missing_field("run_id"))?,
            seq: seq.ok_or_else(|| de::Error::missing_field("seq"))?,
            time: time.ok_or_else(|| de::Error::missing_field("time"))?,
            payload,
        })
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
            assert_eq!(fast.err(), slow.clone().err(), "{bad}");
            assert_eq!(buf.len(), 4, "{bad}");
            let text = decode_text_frame(&bad, 1 << 16, &mut buf);
            assert_eq!(text.err(), slow.err(), "{bad}");
            assert_eq!(buf.len(), 4, "{bad}");
        }
        // Every known type, custom types, data before type, unknown members: the fast
        // path yields exactly what the protocol codec yields.
        let mut samples: Vec<String> = vec![r#"{"status":"failed","reason":"x"}"#.into()];
        let datas = [
            (
                "run.status",
                r#"{"status":"failed","reason":"x","extra":1}"#,
            ),
            (
                "run.progress",
                r#"{"percent":5,"step":"s","current":1,"total":2,"tool":"t","message":"m"}"#,
            ),
            (
                "run.metadata",
                r#"{"agent":"a","model":"m","labels":{"k":"v"}}"#,
            ),
            ("run.phase", r#"{"phase":"build","message":"m"}"#),
            ("log.line", r#"{"level":"warn","message":"m","source":"s"}"#),
            (
                "tool.started",
                r#"{"call_id":"c","tool":"t","input":{"a":[1]}}"#,
            ),
            (
                "tool.finished",
                r#"{"call_id":"c","tool":"t","ok":false,"error":"e","duration_ms":3}"#,
            ),
            (
                "agent.message",
                r#"{"message_id":"m","delta":"d","done":true}"#,
            ),
            ("agent.thinking", r#"{"message_id":"m","delta":"d"}"#),
            (
                "file.changed",
                r#"{"path":"p","change":"renamed","previous_path":"q"}"#,
            ),
            (
                "artifact.created",
                r#"{"artifact_id":"a","kind":"patch","uri":"u","media_type":"text/x-diff","size_bytes":9}"#,
            ),
            (
                "todo.updated",
                r#"{"items":[{"id":"1","text":"t","status":"in_progress"}]}"#,
            ),
            (
                "output.chunk",
                r#"{"output_id":"o","index":0,"last":true,"encoding":"utf8","data":"x"}"#,
            ),
            ("acme.custom.thing", r#"{"anything":[1,2,{"x":null}]}"#),
        ];
        samples.clear();
        for (ty, data) in datas {
            samples.push(format!(r#"{{"event_id":"e","run_id":"r","seq":3,"type":"{ty}","time":"2026-01-01T00:00:00.5Z","data":{data},"future":true}}"#));
            samples.push(format!(r#"{{"data":{data},"seq":3,"time":"2026-01-01T00:00:00Z","type":"{ty}","run_id":"r","event_id":"e"}}"#));
            samples.push(format!(r#"{{"event_id":"e","run_id":"r","seq":3,"type":"{ty}","time":"2026-01-01T00:00:00Z","data":{{"bad":"\u0000","status":7}}}}"#));
        }
        for b in [
            r#"{"event_id":"e","run_id":"r","seq":1,"type":"Bad","time":"2026-01-01T00:00:00Z","data":{}}"#,
            r#"{"event_id":"e","run_id":"r","seq":1,"type":"x.y","time":"2026-01-01T00:00:00Z","data":[]}"#,
            r#"{"event_id":"e","run_id":"r","seq":9007199254740992,"type":"x.y","time":"2026-01-01T00:00:00Z","data":{}}"#,
            r#"{"event_id":"e","run_id":"r","seq":1,"seq":2,"type":"x.y","time":"2026-01-01T00:00:00Z","data":{}}"#,
            r#"{"event_id":"e","run_id":"r","seq":1,"type":"x.y","time":"2026-01-01T00:00:00+00:00","data":{}}"#,
            r#"{"event_id":"e","run_id":"r/x","seq":1,"type":"x.y","time":"2026-01-01T00:00:00Z","data":{}}"#,
            r#"{"event_id":"e","run_id":"r","seq":1,"type":"x.y","time":"2026-01-01T00:00:00Z"}"#,
        ] {
            samples.push(b.into());
        }
        for ev in &samples {
            for frame in [
                format!(r#"{{"type":"event","event":{ev}}}"#),
                format!(r#"{{"type":"batch","events":[{ev},{ev}]}}"#),
            ] {
                let mut fast = Vec::new();
                let got = decode_text_frame(&frame, 1 << 16, &mut fast).map(|_| fast);
                let want =
                    runwire_protocol::codec::decode_server_message(frame.as_bytes(), 1 << 16).map(
                        |m| match m {
                            ServerMessage::Event(f) => vec![f.event],
                            ServerMessage::Batch(b) => b.events,
                            other => panic!("{other:?}"),
                        },
                    );
                assert_eq!(got, want, "{frame}");
            }
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

    proptest::proptest! {
        /// The frames a server builds from its pre-encoded events take the fast path
        /// and decode to the very events.
        #[test]
        fn the_fast_path_takes_every_frame_the_builders_write(
            events in proptest::collection::vec(runwire_protocol::arbitrary::event(), 1..4)
        ) {
            use runwire_protocol::raw::{RawEvent, batch_frame, event_frame};
            let raws: Vec<RawEvent> = events.iter().map(RawEvent::encode).collect();
            for (frame, want) in [
                (event_frame(&raws[0]), events[..1].to_vec()),
                (batch_frame(&raws), events.clone()),
            ] {
                let mut got = Vec::new();
                let mut de = serde_json::Deserializer::from_str(&frame);
                proptest::prop_assert!(fast(&mut de, &mut got), "{}", frame);
                proptest::prop_assert_eq!(got, want);
            }
        }
    }
}
