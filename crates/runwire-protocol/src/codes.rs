//! Error codes and WebSocket close codes (spec §13).

use std::{borrow::Cow, fmt};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! error_codes {
    ($( $(#[$m:meta])* $variant:ident = $name:literal ),* $(,)?) => {
        /// A machine-readable error code carried by an `error` frame or an HTTP error
        /// body (spec §13.1). Unknown codes are kept as [`ErrorCode::Other`]; a client
        /// acts on an unknown code by the frame's `retryable` flag and the close code
        /// that follows (`RW-ERROR-4`).
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$m])* $variant, )*
            /// A code this version does not know. Readers keep it; a v1 sender never
            /// emits one (the writer schema lists only the codes above).
            Other(String),
        }

        impl ErrorCode {
            /// Every code v1 defines, in spec order.
            pub const KNOWN: &'static [&'static str] = &[$($name),*];

            /// The wire name.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $name,)*
                    Self::Other(s) => s,
                }
            }

            /// Parses a wire name; unknown names become [`ErrorCode::Other`].
            pub fn parse(s: &str) -> Self {
                match s {
                    $($name => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }
        }
    };
}

error_codes! {
    /// The frame is not valid JSON (close 4000).
    InvalidJson = "invalid_json",
    /// The message is JSON but not a valid message of its type (close 4000).
    InvalidMessage = "invalid_message",
    /// The message `type` is unknown; the connection stays open.
    UnknownMessageType = "unknown_message_type",
    /// A binary frame was received; Runwire uses text frames only (close 4000).
    BinaryFrame = "binary_frame",
    /// A message other than `hello` arrived before `hello` (close 4001).
    HelloRequired = "hello_required",
    /// A second `hello` arrived (close 4000).
    DuplicateHello = "duplicate_hello",
    /// No `hello` arrived within the hello deadline (close 4108).
    HelloTimeout = "hello_timeout",
    /// No protocol version in common (close 4002).
    UnsupportedVersion = "unsupported_version",
    /// The token is missing, malformed or not valid (close 4003).
    Unauthorized = "unauthorized",
    /// The token expired while the connection was open (close 4103).
    TokenExpired = "token_expired",
    /// The token does not allow this run; only the subscription fails.
    Forbidden = "forbidden",
    /// The run is already subscribed on this connection; the connection stays open.
    AlreadySubscribed = "already_subscribed",
    /// Unsubscribe for a run that is not subscribed; the connection stays open.
    NotSubscribed = "not_subscribed",
    /// The subscription limit is reached; only this subscription fails.
    TooManySubscriptions = "too_many_subscriptions",
    /// A frame exceeded the inbound frame size limit (close 4009).
    FrameTooLarge = "frame_too_large",
    /// The client sent messages faster than allowed (close 4101).
    RateLimited = "rate_limited",
    /// The client did not read fast enough (close 4100).
    SlowConsumer = "slow_consumer",
    /// The client did not answer a `ping` in time (close 4102).
    PongTimeout = "pong_timeout",
    /// The server is overloaded (close 4104).
    ServerOverloaded = "server_overloaded",
    /// The event store is unavailable (close 4105; HTTP 503).
    StoreUnavailable = "store_unavailable",
    /// The server is shutting down or restarting (close 4200).
    ServerShutdown = "server_shutdown",
    /// An unexpected server error (close 1011; HTTP 500).
    InternalError = "internal_error",
    /// HTTP: the run does not exist.
    RunNotFound = "run_not_found",
    /// HTTP: the run has a terminal status and accepts no more events.
    RunTerminal = "run_terminal",
    /// HTTP: an idempotency key was reused with a different event.
    IdempotencyConflict = "idempotency_conflict",
    /// HTTP: an event is larger than the event size limit.
    EventTooLarge = "event_too_large",
    /// HTTP: the request body is not valid.
    InvalidRequest = "invalid_request",
    /// HTTP: the history cursor is older than the retained log.
    CursorTooOld = "cursor_too_old",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(d)?;
        if s.is_empty() || s.len() > 64 {
            return Err(serde::de::Error::custom(
                "error code must be 1 to 64 characters",
            ));
        }
        Ok(Self::parse(&s))
    }
}

impl JsonSchema for ErrorCode {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // The writer contract lists the known codes; readers accept any code (the
        // reader transform in runwire-schema opens `x-extensible-enum` enums).
        json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "enum": ErrorCode::KNOWN,
            "x-extensible-enum": true,
        })
    }
}

/// What a client must do when the connection closes with a given code (spec §13.2).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CloseAction {
    /// Do not reconnect; report a terminal error to the application.
    Terminal,
    /// Reconnect after the backoff delay (or `retry_after_ms`).
    ReconnectWithBackoff,
    /// Reconnect without backoff, after `retry_after_ms` if given (which the server
    /// jitters), else after a random delay in 0–`base` (`RW-RECONNECT-6`).
    ReconnectNow,
}

/// A WebSocket close code with Runwire's meaning (spec §13.2).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure (a client closing on purpose).
    pub const NORMAL: Self = Self(1000);
    /// 1001: going away.
    pub const GOING_AWAY: Self = Self(1001);
    /// 1011: internal server error.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: service restart.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later.
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 4000: protocol error: invalid JSON, invalid message, binary frame, duplicate hello.
    pub const PROTOCOL_ERROR: Self = Self(4000);
    /// 4001: a message before `hello`.
    pub const HELLO_REQUIRED: Self = Self(4001);
    /// 4002: no protocol version in common.
    pub const UNSUPPORTED_VERSION: Self = Self(4002);
    /// 4003: not authenticated.
    pub const UNAUTHORIZED: Self = Self(4003);
    /// 4009: inbound frame too large.
    pub const FRAME_TOO_LARGE: Self = Self(4009);
    /// 4100: slow consumer.
    pub const SLOW_CONSUMER: Self = Self(4100);
    /// 4101: rate limited.
    pub const RATE_LIMITED: Self = Self(4101);
    /// 4102: pong timeout.
    pub const PONG_TIMEOUT: Self = Self(4102);
    /// 4103: token expired.
    pub const TOKEN_EXPIRED: Self = Self(4103);
    /// 4104: server overloaded.
    pub const SERVER_OVERLOADED: Self = Self(4104);
    /// 4105: store unavailable.
    pub const STORE_UNAVAILABLE: Self = Self(4105);
    /// 4108: hello timeout.
    pub const HELLO_TIMEOUT: Self = Self(4108);
    /// 4200: server shutdown or restart; reconnect now (with the jitter the server gave).
    pub const SERVER_SHUTDOWN: Self = Self(4200);

    /// Every close code v1 defines with a name, in spec order.
    pub const DEFINED: &'static [(Self, &'static str)] = &[
        (Self::NORMAL, "normal"),
        (Self::GOING_AWAY, "going_away"),
        (Self::INTERNAL_ERROR, "internal_error"),
        (Self::SERVICE_RESTART, "service_restart"),
        (Self::TRY_AGAIN_LATER, "try_again_later"),
        (Self::PROTOCOL_ERROR, "protocol_error"),
        (Self::HELLO_REQUIRED, "hello_required"),
        (Self::UNSUPPORTED_VERSION, "unsupported_version"),
        (Self::UNAUTHORIZED, "unauthorized"),
        (Self::FRAME_TOO_LARGE, "frame_too_large"),
        (Self::SLOW_CONSUMER, "slow_consumer"),
        (Self::RATE_LIMITED, "rate_limited"),
        (Self::PONG_TIMEOUT, "pong_timeout"),
        (Self::TOKEN_EXPIRED, "token_expired"),
        (Self::SERVER_OVERLOADED, "server_overloaded"),
        (Self::STORE_UNAVAILABLE, "store_unavailable"),
        (Self::HELLO_TIMEOUT, "hello_timeout"),
        (Self::SERVER_SHUTDOWN, "server_shutdown"),
    ];

    /// What a client must do when the server closes with this code (`RW-CLOSE-2`).
    ///
    /// - 4000–4099: terminal.
    /// - 4100–4199: reconnect with backoff.
    /// - 4200–4299: reconnect now.
    /// - 1002, 1003, 1007, 1008, 1009, 1010: terminal (the client sent something the
    ///   server cannot accept; retrying repeats it).
    /// - 1001, 1012: reconnect now.
    /// - everything else (1000, 1011, 1013, 1014, 1006 observed locally, 3000–3999,
    ///   4300–4999, unknown): reconnect with backoff.
    pub fn action(self) -> CloseAction {
        match self.0 {
            4000..=4099 => CloseAction::Terminal,
            4100..=4199 => CloseAction::ReconnectWithBackoff,
            4200..=4299 => CloseAction::ReconnectNow,
            1002 | 1003 | 1007 | 1008 | 1009 | 1010 => CloseAction::Terminal,
            1001 | 1012 => CloseAction::ReconnectNow,
            _ => CloseAction::ReconnectWithBackoff,
        }
    }

    /// Whether this code may be sent on the wire. 1004, 1005, 1006 and 1015 are
    /// reserved for local use and never sent (`RW-CLOSE-4`); codes below 1000 and
    /// 1016–2999 are not valid close codes.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// The name of a defined code.
    pub fn name(self) -> Option<&'static str> {
        Self::DEFINED
            .iter()
            .find(|(c, _)| *c == self)
            .map(|(_, n)| *n)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{} ({n})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl ErrorCode {
    /// The close code that follows an `error` frame with this code, or `None` when
    /// the connection stays open (spec §13.1 table).
    pub fn close_code(&self) -> Option<CloseCode> {
        Some(match self {
            Self::InvalidJson | Self::InvalidMessage | Self::BinaryFrame | Self::DuplicateHello => {
                CloseCode::PROTOCOL_ERROR
            }
            Self::HelloRequired => CloseCode::HELLO_REQUIRED,
            Self::HelloTimeout => CloseCode::HELLO_TIMEOUT,
            Self::UnsupportedVersion => CloseCode::UNSUPPORTED_VERSION,
            Self::Unauthorized => CloseCode::UNAUTHORIZED,
            Self::TokenExpired => CloseCode::TOKEN_EXPIRED,
            Self::FrameTooLarge => CloseCode::FRAME_TOO_LARGE,
            Self::RateLimited => CloseCode::RATE_LIMITED,
            Self::SlowConsumer => CloseCode::SLOW_CONSUMER,
            Self::PongTimeout => CloseCode::PONG_TIMEOUT,
            Self::ServerOverloaded => CloseCode::SERVER_OVERLOADED,
            Self::StoreUnavailable => CloseCode::STORE_UNAVAILABLE,
            Self::ServerShutdown => CloseCode::SERVER_SHUTDOWN,
            Self::InternalError => CloseCode::INTERNAL_ERROR,
            _ => return None,
        })
    }

    /// Whether a client may retry after this error (the `retryable` flag the spec
    /// requires for each code).
    pub fn retryable(&self) -> bool {
        // Errors that leave the connection open (per-subscription errors, unknown
        // message type) are not retryable as such: repeating the same request fails the
        // same way.
        self.close_code()
            .is_some_and(|c| c.action() != CloseAction::Terminal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        for c in 4000..=4099 {
            assert_eq!(CloseCode(c).action(), CloseAction::Terminal);
        }
        for c in 4100..=4199 {
            assert_eq!(CloseCode(c).action(), CloseAction::ReconnectWithBackoff);
        }
        for c in 4200..=4299 {
            assert_eq!(CloseCode(c).action(), CloseAction::ReconnectNow);
        }
        assert_eq!(CloseCode(4300).action(), CloseAction::ReconnectWithBackoff);
        assert_eq!(CloseCode(3000).action(), CloseAction::ReconnectWithBackoff);
        assert_eq!(CloseCode(1006).action(), CloseAction::ReconnectWithBackoff);
        assert_eq!(CloseCode(1008).action(), CloseAction::Terminal);
        assert!(!CloseCode(1005).is_sendable());
        assert!(!CloseCode(1006).is_sendable());
        assert!(!CloseCode(1015).is_sendable());
        assert!(CloseCode(4200).is_sendable());
    }

    #[test]
    fn every_closing_error_matches_its_class() {
        for name in ErrorCode::KNOWN {
            let code = ErrorCode::parse(name);
            assert!(!matches!(code, ErrorCode::Other(_)), "{name}");
            if let Some(c) = code.close_code() {
                assert!(c.is_sendable(), "{name}");
                assert!(c.name().is_some(), "{name} closes with an unnamed code");
            }
        }
        assert_eq!(ErrorCode::parse("x_new"), ErrorCode::Other("x_new".into()));
    }
}
