//! The spec's normative requirements as data: how binding one is ([`Level`], RFC 2119)
//! and one entry of `spec/requirements.json` ([`Requirement`]), which `cargo xtask
//! spec` extracts from `spec/protocol.md` and the conformance kit reads back.

use std::{fmt, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

// Serialized in lower case (`must`), as in feature tags, fixtures and reports;
// `as_str`, `Display` and `FromStr` use the spec's upper case (`MUST`). The doc line
// below is the schemas' description of the type (`schema/tools/`).
/// How binding the requirements a scenario proves are (RFC 2119).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// MUST: a failure fails the run.
    Must,
    /// SHOULD: a failure warns (fails with `--strict`).
    Should,
    /// MAY: a failure is a notice.
    May,
}

impl Level {
    /// Every level, most binding first.
    pub const ALL: [Level; 3] = [Level::Must, Level::Should, Level::May];

    /// `MUST`, `SHOULD` or `MAY`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Must => "MUST",
            Self::Should => "SHOULD",
            Self::May => "MAY",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A level name other than `MUST`, `SHOULD` or `MAY`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("level {0:?} is not MUST, SHOULD or MAY")]
pub struct UnknownLevel(pub String);

impl FromStr for Level {
    type Err = UnknownLevel;

    /// Parses the spec's spelling: `MUST`, `SHOULD` or `MAY`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| UnknownLevel(s.to_owned()))
    }
}

/// One normative requirement of the spec: one entry of `spec/requirements.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    /// `RW-AREA-N`.
    pub id: String,
    /// The `AREA` part of the id.
    pub area: String,
    /// How binding it is (written `MUST`, `SHOULD` or `MAY` in the file).
    #[serde(serialize_with = "upper", deserialize_with = "from_upper")]
    pub level: Level,
    /// `server`, `client`, `both` or `producer`.
    pub subject: String,
    /// The heading of the section it is in.
    pub section: String,
    /// The section's heading anchor (GitHub's spelling).
    pub anchor: String,
    /// Its line in `spec/protocol.md`.
    pub line: usize,
    /// The sentence.
    pub text: String,
}

fn upper<S: Serializer>(level: &Level, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(level.as_str())
}

fn from_upper<'de, D: Deserializer<'de>>(d: D) -> Result<Level, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_spellings() {
        for l in Level::ALL {
            assert_eq!(l.as_str().parse::<Level>(), Ok(l));
            let lower = serde_json::to_value(l).unwrap();
            assert_eq!(lower, l.as_str().to_ascii_lowercase());
        }
        assert!("must".parse::<Level>().is_err());
    }

    #[test]
    fn requirement_level_is_upper_case_in_the_file() {
        let r = Requirement {
            id: "RW-A-1".into(),
            area: "A".into(),
            level: Level::Should,
            subject: "server".into(),
            section: "1 A".into(),
            anchor: "1-a".into(),
            line: 3,
            text: "The server SHOULD a.".into(),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["level"], "SHOULD");
        assert_eq!(serde_json::from_value::<Requirement>(v).unwrap(), r);
    }
}
