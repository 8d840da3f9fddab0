//! The check's configuration file (TOML): the failure threshold, severity overrides,
//! and acknowledged breaks, each with a reason.
//!
//! ```toml
//! fail_on = "error"            # or "warning"
//!
//! [severity]                   # per-rule overrides, both directions
//! PROPERTY_OPTIONAL_REMOVED = "info"
//!
//! [[ignore]]
//! rule = "ENUM_VALUE_ADDED"
//! schema = "events/run.status" # optional; a trailing `*` matches a prefix
//! pointer = "/$defs/RunStatus" # optional; matches this pointer and below
//! direction = "D1"             # optional
//! reason = "clients 1.4+ treat unknown statuses as running; all clients upgraded"
//! ```
//!
//! An ignore entry that matches nothing is reported as stale, so the file does not
//! rot.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::{
    compat::{Dir, Finding},
    rules::{Severity, rule},
};

/// Errors loading a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

/// One acknowledged break.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IgnoreEntry {
    /// The rule id.
    pub rule: String,
    /// Schema name; a trailing `*` matches a prefix. Absent: every schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// JSON pointer; matches this pointer and everything below it. Absent: anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// `D1` or `D2`. Absent: both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Dir>,
    /// Why the break is acceptable. Required, non-empty.
    pub reason: String,
}

impl IgnoreEntry {
    /// Whether the entry covers `f`.
    pub fn matches(&self, f: &Finding) -> bool {
        if self.rule != f.rule {
            return false;
        }
        if let Some(d) = self.direction
            && d != f.direction
        {
            return false;
        }
        if let Some(s) = &self.schema {
            let hit = |name: &str| match s.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == s,
            };
            if !hit(&f.schema) && !f.also_in.iter().any(|n| hit(n)) {
                return false;
            }
        }
        if let Some(p) = &self.pointer {
            let p = p.trim_end_matches('/');
            if !(f.pointer == p || f.pointer.starts_with(&format!("{p}/"))) {
                return false;
            }
        }
        true
    }
}

/// The configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The lowest severity that fails the check (default: error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_on: Option<Severity>,
    /// Per-rule severity overrides.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub severity: BTreeMap<String, Severity>,
    /// Acknowledged breaks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<IgnoreEntry>,
}

impl Config {
    /// Parses and validates a configuration (`path` is only used in messages).
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_string(),
            message,
        };
        let cfg: Config = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        for id in cfg.severity.keys() {
            if rule(id).is_none() {
                return Err(invalid(format!("[severity]: unknown rule {id:?}")));
            }
        }
        for (i, e) in cfg.ignore.iter().enumerate() {
            if rule(&e.rule).is_none() {
                return Err(invalid(format!("ignore[{i}]: unknown rule {:?}", e.rule)));
            }
            if e.reason.trim().is_empty() {
                return Err(invalid(format!(
                    "ignore[{i}] ({}): every acknowledged break needs a non-empty reason",
                    e.rule
                )));
            }
        }
        Ok(cfg)
    }

    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }
}
