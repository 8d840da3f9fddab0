//! Identifier and timestamp newtypes with validation (spec §2).

use std::{borrow::Cow, fmt};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};

/// Why an identifier or timestamp was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The value is empty or longer than the maximum length.
    #[error("{what} must be 1 to {max} characters long, got {len}")]
    Length {
        /// Which kind of value.
        what: &'static str,
        /// The maximum length.
        max: usize,
        /// The actual length.
        len: usize,
    },
    /// The value contains a character that is not allowed.
    #[error("{what} {value:?} does not match {pattern}")]
    Pattern {
        /// Which kind of value.
        what: &'static str,
        /// The offending value (truncated to 64 characters).
        value: String,
        /// The pattern it must match.
        pattern: &'static str,
    },
    /// The timestamp is not an RFC 3339 UTC timestamp.
    #[error("time {value:?} is not an RFC 3339 UTC timestamp ending in 'Z': {reason}")]
    Timestamp {
        /// The offending value (truncated to 64 characters).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

macro_rules! string_id {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal, $max:expr, $pattern:literal, $valid:expr
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The regular expression every value matches.
            pub const PATTERN: &'static str = $pattern;
            /// The maximum length in characters.
            pub const MAX_LEN: usize = $max;

            /// Validates and wraps a value.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                let len = value.len();
                if len == 0 || len > $max {
                    return Err(IdError::Length { what: $what, max: $max, len });
                }
                let valid: fn(&str) -> bool = $valid;
                if !valid(&value) {
                    return Err(IdError::Pattern {
                        what: $what,
                        value: truncate(&value),
                        pattern: $pattern,
                    });
                }
                Ok(Self(value))
            }

            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Unwraps the string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = Cow::<'de, str>::deserialize(d)?;
                Self::new(s.into_owned()).map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": $max,
                    "pattern": $pattern,
                })
            }
        }
    };
}

fn run_id_ok(s: &str) -> bool {
    let b = s.as_bytes();
    b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

fn printable_ascii(s: &str) -> bool {
    s.bytes().all(|c| (0x21..=0x7e).contains(&c))
}

fn epoch_ok(s: &str) -> bool {
    s.bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
}

string_id!(
    /// A run identifier (spec §2, `RW-EVENT-2`): 1–128 characters, starting with a letter
    /// or digit, then letters, digits, `.`, `_`, `:` or `-`. Safe in a URL path segment.
    RunId, "run_id", 128, "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", run_id_ok
);

string_id!(
    /// A globally unique event identifier assigned by the server (spec §2, `RW-EVENT-1`):
    /// 1–128 printable ASCII characters, opaque to clients.
    EventId, "event_id", 128, "^[\\x21-\\x7e]{1,128}$", printable_ascii
);

string_id!(
    /// A run's epoch (spec §2.3, `RW-EVENT-10`): an opaque token that changes whenever
    /// a run's log is re-created, so that a cursor from an earlier log is detected. 1–64
    /// characters of letters, digits, `_` and `-`.
    Epoch, "epoch", 64, "^[A-Za-z0-9_-]{1,64}$", epoch_ok
);

/// The pattern every event type name matches (spec §2.2, `RW-EVENT-6`): at least two
/// dot-separated lowercase segments, e.g. `run.progress` or `acme.deploy.started`.
pub const EVENT_TYPE_PATTERN: &str = "^[a-z][a-z0-9_-]*(\\.[a-z0-9_-]+)+$";

/// Whether `s` is a well-formed event type name ([`EVENT_TYPE_PATTERN`], at most 128
/// characters).
pub fn is_valid_event_type(s: &str) -> bool {
    if s.is_empty() || s.len() > 128 {
        return false;
    }
    let mut parts = s.split('.');
    let first = parts.next().unwrap_or_default();
    let seg_ok = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
    };
    let mut rest = 0;
    for p in parts {
        if !seg_ok(p) {
            return false;
        }
        rest += 1;
    }
    rest >= 1 && seg_ok(first) && first.as_bytes()[0].is_ascii_lowercase()
}

/// An RFC 3339 timestamp in UTC, written with a `Z` suffix (spec §2, `RW-EVENT-5`),
/// e.g. `2026-11-22T01:39:05.123Z`. The original text is kept, so it round-trips
/// byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Timestamp(String);

impl Timestamp {
    /// The pattern every timestamp matches.
    pub const PATTERN: &'static str =
        "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?Z$";

    /// Validates and wraps a timestamp string.
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        let bad = |reason: &str| IdError::Timestamp {
            value: truncate(&value),
            reason: reason.into(),
        };
        let b = value.as_bytes();
        // Shape check first: cheap, and it rejects lowercase 'z', offsets and spaces.
        let shape_ok = b.len() >= 20
            && b.len() <= 30
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[b.len() - 1] == b'Z'
            && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
                .iter()
                .all(|&i| b[i].is_ascii_digit())
            && (b.len() == 20
                || (b[19] == b'.'
                    && b.len() >= 22
                    && b[20..b.len() - 1].iter().all(u8::is_ascii_digit)));
        if !shape_ok {
            return Err(bad("expected YYYY-MM-DDTHH:MM:SS[.fraction]Z"));
        }
        // Field ranges, without a full parse (this runs for every event a client
        // decodes): month, day of month (leap years included), hour, minute, second.
        let digits = |r: std::ops::Range<usize>| -> u32 {
            b[r].iter()
                .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
        };
        let (year, month, day) = (digits(0..4), digits(5..7), digits(8..10));
        let (hour, minute, second) = (digits(11..13), digits(14..16), digits(17..19));
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let days_in_month = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return Err(bad("month must be 01 to 12")),
        };
        if day == 0 || day > days_in_month {
            return Err(bad("day is outside its month"));
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err(bad("time of day out of range"));
        }
        Ok(Self(value))
    }

    /// The current time, with millisecond precision.
    pub fn now() -> Self {
        Self::from_offset_date_time(time::OffsetDateTime::now_utc())
    }

    /// Formats a `time` value as a UTC timestamp with millisecond precision.
    pub fn from_offset_date_time(t: time::OffsetDateTime) -> Self {
        let t = t.to_offset(time::UtcOffset::UTC);
        let s = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        );
        Self(s)
    }

    /// Parses into a `time` value.
    pub fn to_offset_date_time(&self) -> time::OffsetDateTime {
        // Validated at construction.
        time::OffsetDateTime::parse(&self.0, &time::format_description::well_known::Rfc3339)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }

    /// The timestamp text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(d)?;
        Self::new(s.into_owned()).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Timestamp")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "date-time",
            "pattern": Timestamp::PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids() {
        assert!(RunId::new("run-1").is_ok());
        assert!(RunId::new("a:b.c_d-e").is_ok());
        assert!(RunId::new("").is_err());
        assert!(RunId::new("-x").is_err());
        assert!(RunId::new("a/b").is_err());
        assert!(RunId::new("x".repeat(129)).is_err());
        assert!(RunId::new("x".repeat(128)).is_ok());
    }

    #[test]
    fn timestamps() {
        assert!(Timestamp::new("2026-11-22T01:39:05Z").is_ok());
        assert!(Timestamp::new("2026-11-22T01:39:05.123456789Z").is_ok());
        assert!(Timestamp::new("2026-11-22T01:39:05.Z").is_err());
        assert!(Timestamp::new("2026-11-22T01:39:05z").is_err());
        assert!(Timestamp::new("2026-11-22T01:39:05+00:00").is_err());
        assert!(Timestamp::new("2026-13-22T01:39:05Z").is_err());
        assert!(Timestamp::new("2026-02-30T01:39:05Z").is_err());
        let now = Timestamp::now();
        assert!(Timestamp::new(now.as_str()).is_ok(), "{now}");
    }

    #[test]
    fn event_types() {
        assert!(is_valid_event_type("run.progress"));
        assert!(is_valid_event_type("acme.deploy.started"));
        assert!(is_valid_event_type("x-acme.thing_1"));
        assert!(!is_valid_event_type("progress"));
        assert!(!is_valid_event_type("Run.progress"));
        assert!(!is_valid_event_type("run..progress"));
        assert!(!is_valid_event_type("run.progress."));
        assert!(!is_valid_event_type(".run"));
    }
}
