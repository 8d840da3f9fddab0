//! The wire transcript of one fixture run and the verdict.
//!
//! The transcript is a list of entries in the order they happened. Its JSON form (one
//! object per entry) and its text form ([`Entry::render`]) are documented in
//! `docs/fixtures.md` and are stable: tools may parse them.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::fixture::Level;

/// Who an entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client → mock.
    In,
    /// Mock → client.
    Out,
    /// Something the mock did or decided (faults, connection events, violations).
    Mock,
    /// A line the client printed to its application (adapter stdout or stderr).
    App,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum What {
    /// A connection attempt was accepted (`accept` says how it was answered).
    Connect {
        /// `websocket`, `reset`, `http_error`, `silent`.
        accept: String,
        /// The request path and query, when the upgrade request was read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// A text frame.
    Text {
        /// Its content.
        text: String,
    },
    /// A binary frame.
    Binary {
        /// Its content in hex.
        hex: String,
    },
    /// A close frame.
    Close {
        /// The code (absent: a close frame without a code).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u16>,
        /// The reason.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reason: String,
    },
    /// A fault the mock injected, or a step without a frame (wait, stall).
    Fault {
        /// What, e.g. `drop`, `reset`, `stall 100ms`.
        fault: String,
    },
    /// The connection ended.
    Disconnect {
        /// `client` (close frame or TCP close seen) or `mock`.
        by: String,
    },
    /// A violated expectation, at the moment it was detected.
    Violation {
        /// The requirement.
        requirement: String,
        /// What was expected and what was seen.
        message: String,
    },
    /// A line of the adapter's stdout.
    Line {
        /// The line.
        line: String,
    },
    /// A line of the adapter's stderr.
    Stderr {
        /// The line.
        line: String,
    },
    /// The adapter exited.
    Exit {
        /// Its exit code; absent when killed by a signal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
    },
    /// Anything else worth knowing.
    Note {
        /// The note.
        text: String,
    },
}

/// One transcript entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Milliseconds since the mock started.
    pub t_ms: u64,
    /// The connection number (1-based); 0 for entries not tied to a connection.
    pub conn: u32,
    /// Direction.
    pub dir: Direction,
    /// What happened.
    #[serde(flatten)]
    pub what: What,
}

impl Entry {
    /// The one-line text form: `[   12 ms] #1 <- {"type":"hello",…}`.
    ///
    /// Arrows: `<-` client to mock, `->` mock to client, `!!` fault or violation,
    /// `--` connection events and notes, `app` adapter output.
    pub fn render(&self) -> String {
        let mut s = format!("[{:>6} ms] ", self.t_ms);
        if self.conn == 0 {
            s.push_str("   ");
        } else {
            let _ = write!(s, "#{:<2}", self.conn);
        }
        let arrow = match self.dir {
            Direction::In => "<-",
            Direction::Out => "->",
            Direction::App => "app",
            Direction::Mock => match self.what {
                What::Fault { .. } | What::Violation { .. } => "!!",
                _ => "--",
            },
        };
        let _ = write!(s, " {arrow} ");
        match &self.what {
            What::Connect { accept, path } => {
                let _ = write!(s, "connect ({accept})");
                if let Some(p) = path {
                    let _ = write!(s, " {p}");
                }
            }
            What::Text { text } => s.push_str(text),
            What::Binary { hex } => {
                let _ = write!(s, "binary {hex}");
            }
            What::Close { code, reason } => {
                match code {
                    Some(c) => {
                        let _ = write!(s, "close {c}");
                    }
                    None => s.push_str("close (no code)"),
                }
                if !reason.is_empty() {
                    let _ = write!(s, " {reason:?}");
                }
            }
            What::Fault { fault } => s.push_str(fault),
            What::Disconnect { by } => {
                let _ = write!(s, "disconnected by {by}");
            }
            What::Violation {
                requirement,
                message,
            } => {
                let _ = write!(s, "VIOLATION {requirement}: {message}");
            }
            What::Line { line } => s.push_str(line),
            What::Stderr { line } => {
                let _ = write!(s, "stderr: {line}");
            }
            What::Exit { code } => match code {
                Some(c) => {
                    let _ = write!(s, "exit {c}");
                }
                None => s.push_str("killed"),
            },
            What::Note { text } => s.push_str(text),
        }
        s
    }
}

/// The whole transcript.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// The fixture id.
    pub fixture: String,
    /// The seed of this run.
    pub seed: u64,
    /// The time scale of this run.
    pub time_scale: f64,
    /// The entries, in order.
    pub entries: Vec<Entry>,
}

impl Transcript {
    /// The text form: a header line, then one line per entry.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "# fixture {} seed {} time-scale {}\n",
            self.fixture, self.seed, self.time_scale
        );
        for e in &self.entries {
            s.push_str(&e.render());
            s.push('\n');
        }
        s
    }

    /// The JSON lines form: one entry per line.
    pub fn to_json_lines(&self) -> String {
        let mut s = String::new();
        for e in &self.entries {
            s.push_str(&serde_json::to_string(e).unwrap_or_default());
            s.push('\n');
        }
        s
    }
}

/// One violated expectation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// The requirement it proves violated.
    pub requirement: String,
    /// The expectation's kind, e.g. `pong`, `reconnect_delay`, `delivered`.
    pub expectation: String,
    /// What was expected and what was seen.
    pub message: String,
    /// The connection, when it concerns one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<u32>,
    /// For a timing judgment: how far outside its bound the measured time fell, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin_ms: Option<f64>,
    /// For a timing judgment: the worst lateness of the kit's own timers measured
    /// over the judged interval, in ms ([`crate::lateness`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lateness_ms: Option<f64>,
    /// The miss lies within the measured lateness: the machine, not the client, may
    /// have caused it. Such a violation makes the outcome inconclusive, not a failure.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inconclusive: bool,
}

impl Violation {
    /// A violation of a non-timing expectation.
    pub fn new(
        requirement: impl Into<String>,
        expectation: impl Into<String>,
        message: impl Into<String>,
        conn: Option<u32>,
    ) -> Self {
        Self {
            requirement: requirement.into(),
            expectation: expectation.into(),
            message: message.into(),
            conn,
            margin_ms: None,
            lateness_ms: None,
            inconclusive: false,
        }
    }
}

/// How a fixture run is graded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every expectation held.
    Pass,
    /// At least one expectation was violated.
    Fail,
    /// The adapter said it does not implement a feature the fixture needs (exit 89).
    NotImplemented,
    /// Every violation was a timing judgment that missed its bound by no more than
    /// the lateness measured on this machine meanwhile: the run cannot tell whether
    /// the client or the machine was late (rerun it, alone or at a larger time scale).
    Inconclusive,
}

/// The judgement of one fixture run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The fixture id.
    pub fixture: String,
    /// The fixture's level.
    pub level: Level,
    /// The fixture's requirements.
    pub requirements: Vec<String>,
    /// The seed of this run.
    pub seed: u64,
    /// The outcome.
    pub outcome: Outcome,
    /// Every violated expectation, in the order detected.
    pub violations: Vec<Violation>,
    /// Expectations that could not be judged (e.g. application output without an
    /// adapter) and other remarks.
    pub notes: Vec<String>,
    /// The `unimplemented` feature, for [`Outcome::NotImplemented`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unimplemented: Option<String>,
}

impl Verdict {
    /// Whether the outcome is a pass.
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Pass
    }

    /// Whether some violation names `requirement`.
    pub fn violates(&self, requirement: &str) -> bool {
        self.violations.iter().any(|v| v.requirement == requirement)
    }

    /// A human-readable report: outcome, then one line per violation.
    pub fn render(&self) -> String {
        let mut s = match self.outcome {
            Outcome::Pass => format!("PASS {} ({})", self.fixture, self.level.as_str()),
            Outcome::Fail => format!(
                "FAIL {} ({}): {} violation(s)",
                self.fixture,
                self.level.as_str(),
                self.violations.len()
            ),
            Outcome::NotImplemented => format!(
                "NOT IMPLEMENTED {} ({}): {}",
                self.fixture,
                self.level.as_str(),
                self.unimplemented.as_deref().unwrap_or("?")
            ),
            Outcome::Inconclusive => format!(
                "INCONCLUSIVE {} ({}): {} timing judgment(s) missed by less than the machine's measured lateness",
                self.fixture,
                self.level.as_str(),
                self.violations.len()
            ),
        };
        let _ = write!(s, " [seed {}]", self.seed);
        for v in &self.violations {
            s.push_str("\n  ");
            let _ = write!(s, "{} [{}]", v.requirement, v.expectation);
            if let Some(c) = v.conn {
                let _ = write!(s, " (connection {c})");
            }
            let _ = write!(s, ": {}", v.message);
            if let (Some(m), Some(l)) = (v.margin_ms, v.lateness_ms) {
                let _ = write!(
                    s,
                    " (missed by {m:.1} ms; lateness measured meanwhile {l:.1} ms{})",
                    if v.inconclusive { ": inconclusive" } else { "" }
                );
            }
        }
        for n in &self.notes {
            let _ = write!(s, "\n  note: {n}");
        }
        s
    }
}
