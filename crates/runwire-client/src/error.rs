//! The errors the client reports to the application: a server's error frame or one
//! of the client's own failures, with one code type for both.

use std::fmt;

use runwire_protocol::{ErrorCode, RunId};
use serde::{Serialize, Serializer};

/// The code of a [`ClientError`]: the server's error code from an `error` frame
/// (spec §13.1), or a failure the client detected itself. Written as the wire name
/// (`unauthorized`, `reconnect_failed`, …) by `Display` and `Serialize`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ClientErrorCode {
    /// An error frame's code, or a server-side condition the client recognised
    /// itself (`too_many_subscriptions` from the advertised limit).
    Server(ErrorCode),
    /// `reconnect_failed`: the maximum number of attempts was reached
    /// (`RW-RECONNECT-3`).
    ReconnectFailed,
    /// `connect_failed`: a connection attempt failed before `welcome`.
    ConnectFailed,
    /// `invalid_frame`: the server sent a frame the client cannot decode.
    InvalidFrame,
    /// `protocol_violation`: the server broke the protocol and the client closed.
    ProtocolViolation,
    /// `closed`: a terminal close code without an error frame.
    Closed,
    /// `token_provider`: the application's token provider failed.
    TokenProvider,
    /// `liveness_timeout`: no frame from the server within the liveness budget.
    LivenessTimeout,
    /// `welcome_timeout`: no `welcome` within the hello budget.
    WelcomeTimeout,
}

impl ClientErrorCode {
    /// The wire name, e.g. `unauthorized` or `reconnect_failed`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Server(code) => code.as_str(),
            Self::ReconnectFailed => "reconnect_failed",
            Self::ConnectFailed => "connect_failed",
            Self::InvalidFrame => "invalid_frame",
            Self::ProtocolViolation => "protocol_violation",
            Self::Closed => "closed",
            Self::TokenProvider => "token_provider",
            Self::LivenessTimeout => "liveness_timeout",
            Self::WelcomeTimeout => "welcome_timeout",
        }
    }
}

impl From<ErrorCode> for ClientErrorCode {
    fn from(code: ErrorCode) -> Self {
        Self::Server(code)
    }
}

impl fmt::Display for ClientErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for ClientErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<str> for ClientErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ClientErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// An error reported to the application.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ClientError {
    /// The server's error code (spec §13.1), or one of the client's own.
    pub code: ClientErrorCode,
    /// A human-readable explanation.
    pub message: String,
    /// The error frame's `retryable` flag; for the client's own errors, whether the
    /// client keeps trying.
    pub retryable: bool,
    /// True when the client stopped for good: it follows `State(Failed)` and is the
    /// last item of the stream.
    pub terminal: bool,
    /// The run, when the error concerns one subscription only.
    pub run_id: Option<RunId>,
    /// The server's `retry_after_ms`, if any.
    pub retry_after_ms: Option<u64>,
    /// The close code that ended the connection, for terminal errors.
    pub close_code: Option<u16>,
    /// For `unsupported_version`: the versions the server speaks (`RW-VERSION-6`).
    pub supported_versions: Option<Vec<String>>,
    /// For `reconnect_failed`: the code of the last `error` frame the client saw
    /// before it gave up (`RW-RECONNECT-3`), if any.
    pub last_error_code: Option<ErrorCode>,
}

impl ClientError {
    /// Whether this per-run error ended the run's subscription for good: the client
    /// does not retry it and leaves it out of later `hello`s (`RW-SUB-10`,
    /// `RW-RECONNECT-8`). `already_subscribed` and `not_subscribed` leave the
    /// subscription as it was.
    pub fn ends_subscription(&self) -> bool {
        self.run_id.is_some()
            && !self.retryable
            && !matches!(
                self.code,
                ClientErrorCode::Server(ErrorCode::AlreadySubscribed | ErrorCode::NotSubscribed)
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_written_by_their_wire_names() {
        let own = ClientErrorCode::ReconnectFailed;
        assert_eq!(own.to_string(), "reconnect_failed");
        let server = ClientErrorCode::from(ErrorCode::Unauthorized);
        assert_eq!(serde_json::to_value(&server).unwrap(), "unauthorized");
        assert_eq!(server, "unauthorized");
        assert_ne!(own, "unauthorized");
    }
}
