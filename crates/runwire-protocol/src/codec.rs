//! Decoding frames with size limits and precise errors (spec §14).
//!
//! Decoding never panics: every input yields a message or a [`DecodeError`] that says
//! what is wrong and where (a JSON pointer into the frame).

use std::borrow::Cow;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{ClientMessage, ErrorCode, Event, ServerMessage, messages::UnknownServerMessage};

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is larger than allowed.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The frame's size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The frame is not valid JSON (or not UTF-8).
    #[error("invalid JSON at line {line} column {column}: {reason}")]
    InvalidJson {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        reason: String,
    },
    /// The frame is JSON but has no string `type` member.
    #[error("invalid message at {pointer:?}: {reason}")]
    MissingType {
        /// Where (`""` is the whole frame, `/type` the type member).
        pointer: String,
        /// What is wrong.
        reason: String,
    },
    /// The `type` names no message this version knows.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// The message does not match its type's schema.
    #[error("invalid {message_type} message at {pointer:?}: {reason}")]
    Invalid {
        /// The message type, or `event` for a bare event.
        message_type: String,
        /// JSON pointer of the offending value.
        pointer: String,
        /// What is wrong.
        reason: String,
    },
}

impl DecodeError {
    /// The `error` frame code the spec assigns to this failure (spec §14.2: `RW-INPUT-1`,
    /// `RW-INPUT-2`, `RW-INPUT-3`, `RW-INPUT-4`, and `RW-LIMIT-1` for oversize frames).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::InvalidJson { .. } => ErrorCode::InvalidJson,
            Self::UnknownType(_) => ErrorCode::UnknownMessageType,
            Self::MissingType { .. } | Self::Invalid { .. } => ErrorCode::InvalidMessage,
        }
    }

    /// The JSON pointer of the failure, when there is one.
    pub fn pointer(&self) -> Option<&str> {
        match self {
            Self::MissingType { pointer, .. } | Self::Invalid { pointer, .. } => Some(pointer),
            _ => None,
        }
    }
}

/// Serializes a message to its wire text. Serializing these types cannot fail.
pub fn encode<T: Serialize + ?Sized>(msg: &T) -> String {
    serde_json::to_string(msg).unwrap_or_else(|e| {
        // Unreachable for the types of this crate: they hold no maps with non-string
        // keys and no failing Serialize impls. Keep a valid frame anyway.
        format!(
            r#"{{"type":"error","code":"internal_error","message":{:?},"retryable":true}}"#,
            e.to_string()
        )
    })
}

/// Encodes an event envelope whose `data` is `data` when given (the producer's data
/// kept verbatim, `RW-TYPE-25`), else the typed payload's. Member order and values are
/// those of [`encode`], with `data` last.
pub fn encode_event_with_data(event: &crate::Event, data: Option<&serde_json::Value>) -> String {
    let Some(data) = data else {
        return encode(event);
    };
    let mut s = String::with_capacity(256);
    s.push_str("{\"event_id\":");
    s.push_str(&encode(&event.event_id));
    s.push_str(",\"run_id\":");
    s.push_str(&encode(&event.run_id));
    s.push_str(",\"seq\":");
    s.push_str(&event.seq.to_string());
    s.push_str(",\"type\":");
    s.push_str(&encode(event.payload.event_type()));
    s.push_str(",\"time\":");
    s.push_str(&encode(&event.time));
    s.push_str(",\"data\":");
    s.push_str(&encode(data));
    s.push('}');
    s
}

fn strip_position(msg: String) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg,
    }
}

/// Whether [`json_pointer`] writes the variant of an externally tagged enum as a
/// segment of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnumSegments {
    /// Leave variants out: the pointer addresses the JSON document only.
    Omit,
    /// Write each variant name as a segment (`/steps/0/send`).
    Name,
}

/// The JSON pointer (RFC 6901) of the value a `serde_path_to_error` path leads to.
pub fn json_pointer(path: &serde_path_to_error::Path, enums: EnumSegments) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path {
        match seg {
            Segment::Seq { index } => {
                out.push('/');
                out.push_str(&index.to_string());
            }
            Segment::Map { key } => {
                out.push('/');
                out.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Enum { variant } if enums == EnumSegments::Name => {
                out.push('/');
                out.push_str(variant);
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

fn json_error(e: &serde_json::Error) -> DecodeError {
    DecodeError::InvalidJson {
        line: e.line(),
        column: e.column(),
        reason: strip_position(e.to_string()),
    }
}

#[derive(Deserialize)]
struct TypeProbe<'a> {
    #[serde(rename = "type", borrow, default)]
    ty: Option<Cow<'a, str>>,
}

/// Checks size and syntax, and returns the `type` member.
fn probe(frame: &[u8], max_bytes: usize) -> Result<Cow<'_, str>, DecodeError> {
    if frame.len() > max_bytes {
        return Err(DecodeError::TooLarge {
            size: frame.len(),
            max: max_bytes,
        });
    }
    // Syntax first, over the whole frame: a syntax error anywhere is `invalid_json`,
    // whatever else is wrong.
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(frame) {
        return Err(json_error(&e));
    }
    let probe: TypeProbe<'_> = match serde_json::from_slice(frame) {
        Ok(p) => p,
        Err(e) => {
            let reason = strip_position(e.to_string());
            let pointer = if reason.contains("expected struct") {
                ""
            } else {
                "/type"
            };
            return Err(DecodeError::MissingType {
                pointer: pointer.into(),
                reason: if pointer.is_empty() {
                    "a message must be a JSON object".into()
                } else {
                    reason
                },
            });
        }
    };
    probe.ty.ok_or_else(|| DecodeError::MissingType {
        pointer: "/type".into(),
        reason: "missing field `type`".into(),
    })
}

/// Checks a frame's size and JSON syntax and returns its `type` member without decoding
/// the rest, so a server can apply the order of checks of spec §14.2 (size, syntax,
/// `hello` first, then the message type and its schema).
pub fn peek_type(frame: &[u8], max_bytes: usize) -> Result<Cow<'_, str>, DecodeError> {
    probe(frame, max_bytes)
}

/// Decodes `frame` as `T`, reporting schema errors with a JSON pointer. The frame must
/// already be known to be valid JSON.
fn body<T: DeserializeOwned>(frame: &[u8], message_type: &str) -> Result<T, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(frame);
    serde_path_to_error::deserialize(&mut de).map_err(|e| DecodeError::Invalid {
        message_type: message_type.to_owned(),
        pointer: json_pointer(e.path(), EnumSegments::Omit),
        reason: strip_position(e.inner().to_string()),
    })
}

/// Decodes any JSON document as `T` with a size limit, reporting errors with a JSON
/// pointer. `what` names the document in errors.
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    max_bytes: usize,
    what: &str,
) -> Result<T, DecodeError> {
    if bytes.len() > max_bytes {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            max: max_bytes,
        });
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        return Err(json_error(&e));
    }
    body(bytes, what)
}

/// Decodes a client → server frame (spec §14.2, `RW-INPUT-1` to `RW-INPUT-4`).
pub fn decode_client_message(frame: &[u8], max_bytes: usize) -> Result<ClientMessage, DecodeError> {
    let ty = probe(frame, max_bytes)?;
    Ok(match &*ty {
        "hello" => ClientMessage::Hello(body(frame, "hello")?),
        "subscribe" => ClientMessage::Subscribe(body(frame, "subscribe")?),
        "unsubscribe" => ClientMessage::Unsubscribe(body(frame, "unsubscribe")?),
        "ping" => ClientMessage::Ping(body(frame, "ping")?),
        "pong" => ClientMessage::Pong(body(frame, "pong")?),
        other => return Err(DecodeError::UnknownType(other.chars().take(64).collect())),
    })
}

/// Decodes a server → client frame. Unknown message types decode to
/// [`ServerMessage::Unknown`], never to an error (`RW-VERSION-5`).
pub fn decode_server_message(frame: &[u8], max_bytes: usize) -> Result<ServerMessage, DecodeError> {
    let ty = probe(frame, max_bytes)?;
    Ok(match &*ty {
        "welcome" => ServerMessage::Welcome(body(frame, "welcome")?),
        "subscribed" => ServerMessage::Subscribed(body(frame, "subscribed")?),
        "reset" => ServerMessage::Reset(body(frame, "reset")?),
        "unsubscribed" => ServerMessage::Unsubscribed(body(frame, "unsubscribed")?),
        "event" => ServerMessage::Event(body(frame, "event")?),
        "batch" => ServerMessage::Batch(body(frame, "batch")?),
        "ping" => ServerMessage::Ping(body(frame, "ping")?),
        "pong" => ServerMessage::Pong(body(frame, "pong")?),
        "error" => ServerMessage::Error(body(frame, "error")?),
        other => {
            let raw = serde_json::from_slice(frame).map_err(|e| json_error(&e))?;
            ServerMessage::Unknown(UnknownServerMessage {
                message_type: other.to_owned(),
                raw,
            })
        }
    })
}

/// Decodes a bare event envelope.
pub fn decode_event(bytes: &[u8], max_bytes: usize) -> Result<Event, DecodeError> {
    decode(bytes, max_bytes, "event")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers() {
        let e = decode_client_message(
            br#"{"type":"subscribe","subscriptions":[{"run_id":"ok"},{"run_id":"no/pe"}]}"#,
            1000,
        )
        .unwrap_err();
        assert_eq!(e.pointer(), Some("/subscriptions/1/run_id"), "{e}");
        assert_eq!(e.error_code(), ErrorCode::InvalidMessage);

        let e = decode_server_message(
            br#"{"type":"event","event":{"event_id":"e","run_id":"r","seq":1,"type":"run.progress","time":"2026-01-01T00:00:00Z","data":{"percent":101}}}"#,
            1000,
        )
        .unwrap_err();
        assert_eq!(e.pointer(), Some("/event/data/percent"), "{e}");
    }

    #[test]
    fn kinds() {
        assert!(matches!(
            decode_client_message(b"{", 10),
            Err(DecodeError::InvalidJson { .. })
        ));
        assert!(matches!(
            decode_client_message(b"[]", 10),
            Err(DecodeError::MissingType { .. })
        ));
        assert!(matches!(
            decode_client_message(b"{}", 10),
            Err(DecodeError::MissingType { .. })
        ));
        assert!(matches!(
            decode_client_message(br#"{"type":1}"#, 100),
            Err(DecodeError::MissingType { .. })
        ));
        assert!(matches!(
            decode_client_message(br#"{"type":"nope"}"#, 100),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            decode_client_message(&[b' '; 11], 10),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_server_message(br#"{"type":"future_thing","x":1}"#, 100),
            Ok(ServerMessage::Unknown(_))
        ));
    }
}
