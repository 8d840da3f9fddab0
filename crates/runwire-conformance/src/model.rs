//! The data model: scenarios as loaded, results as graded, the run report (whose
//! JSON form is `--json`, described by `schema/tools/conformance-report.schema.json`),
//! and why the kit could not run ([`Error`]). The other modules build on these types
//! rather than on the crate root.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which suite a scenario belongs to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Suite {
    /// `features/server/`: the runner is producer and WebSocket clients.
    Server,
    /// `features/client/`: the mock server plays fixtures to a client adapter.
    Client,
}

impl Suite {
    /// `server` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
        }
    }
}

pub use runwire_protocol::requirement::Level;

/// Why the kit could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A feature file is malformed or breaks the suite's conventions.
    #[error("feature file {file}: {reason}")]
    Features {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A step has no definition.
    #[error("{file}:{line}: undefined step {text:?}")]
    UndefinedStep {
        /// The file.
        file: String,
        /// The line.
        line: usize,
        /// The step text.
        text: String,
    },
    /// A `--tags` expression does not parse.
    #[error("bad tag expression {0}")]
    Tags(String),
    /// A fixture does not load.
    #[error("fixture: {0}")]
    Fixture(String),
    /// The target could not be set up.
    #[error("target: {0}")]
    Target(String),
    /// An expected-failures or baseline file is malformed or unreadable.
    #[error("{file}: {reason}")]
    File {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
}

/// One step of a scenario, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StepDef {
    /// `Given`, `When`, `Then`, `And`, `But`.
    pub keyword: String,
    /// The step text after the keyword.
    pub text: String,
    /// A doc string argument, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docstring: Option<String>,
    /// The line in the feature file.
    pub line: usize,
}

/// One scenario, as loaded from a feature file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ScenarioDef {
    /// Stable id: `SUITE/FEATURE-FILE-STEM/scenario-slug`.
    pub id: String,
    /// The suite.
    pub suite: Suite,
    /// The feature's name.
    pub feature: String,
    /// The feature file (relative to the features root).
    pub file: String,
    /// The scenario's line.
    pub line: usize,
    /// The scenario's name.
    pub name: String,
    /// Every tag (feature tags and scenario tags), without `@`.
    pub tags: Vec<String>,
    /// The requirement ids (`RW-AREA-N`) among the tags.
    pub requirements: Vec<String>,
    /// The level tag.
    pub level: Level,
    /// The area: the first tag that is neither a requirement, a level nor a marker.
    pub area: String,
    /// Must run alone (restarts, shutdowns): tagged `@serial`.
    pub serial: bool,
    /// The steps (background first).
    pub steps: Vec<StepDef>,
}

/// The grade of a scenario.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Grade {
    /// Every step held.
    Pass,
    /// A step failed.
    Fail,
    /// The implementation said it does not implement a feature the scenario needs
    /// (adapter exit 89, or the target lacks the configuration, e.g. no token).
    NotImplemented,
    /// It failed, and the expected-failures file lists it with a reason.
    ExpectedFailure,
    /// It passed although the expected-failures file lists it (stale entry): graded
    /// like a pass, reported as stale.
    UnexpectedPass,
    /// Every attempt failed only timing judgments, each by less than the lateness the
    /// kit measured on this machine meanwhile: the machine, not the implementation,
    /// may have caused the misses. Rerun alone (and, for the client suite, at twice
    /// the time scale) up to `--retries` times; still undecided, it neither passes nor
    /// fails the run (`docs/ci-guide.md`, "Inconclusive").
    Inconclusive,
}

impl Grade {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::NotImplemented => "not_implemented",
            Self::ExpectedFailure => "expected_failure",
            Self::UnexpectedPass => "unexpected_pass",
            Self::Inconclusive => "inconclusive",
        }
    }
}

/// How one step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// It held.
    Passed,
    /// It failed (the message says why).
    Failed,
    /// Not run because an earlier step failed.
    Skipped,
    /// The implementation does not implement what the step needs.
    NotImplemented,
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepResult {
    /// The keyword.
    pub keyword: String,
    /// The text.
    pub text: String,
    /// The status.
    pub status: StepStatus,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// One line of a scenario's wire transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WireEntry {
    /// Milliseconds since the scenario started.
    pub t_ms: u64,
    /// Who: a client name (`a`), `producer`, `mock`, `app`, `runner`.
    pub actor: String,
    /// `out` (runner/mock to the implementation), `in` (implementation to runner/mock),
    /// `note`.
    pub dir: String,
    /// The frame, request, response or note.
    pub text: String,
}

/// The graded result of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScenarioResult {
    /// The scenario's id.
    pub id: String,
    /// The suite.
    pub suite: Suite,
    /// The feature name.
    pub feature: String,
    /// The scenario name.
    pub name: String,
    /// The area.
    pub area: String,
    /// The level.
    pub level: Level,
    /// The requirement ids it proves.
    pub requirements: Vec<String>,
    /// Every tag.
    pub tags: Vec<String>,
    /// The grade.
    pub grade: Grade,
    /// For a failure: the requirement, what was expected and what was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The reason from the expected-failures file, when an entry matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_failure_reason: Option<String>,
    /// The seed the scenario's random choices used.
    pub seed: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// The steps.
    pub steps: Vec<StepResult>,
    /// The wire transcript.
    pub transcript: Vec<WireEntry>,
    /// The requirement the failure names (a failed or inconclusive result), when the
    /// step or the mock named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violated: Option<String>,
    /// The level of `violated` in the spec. A MUST violated inside a SHOULD or MAY
    /// scenario fails the run like a MUST scenario does ([`ScenarioResult::effective_level`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violated_level: Option<Level>,
    /// The time scale this result was judged at.
    pub time_scale: f64,
    /// The lateness of the kit's own timers while this attempt ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lateness: Option<Lateness>,
    /// Earlier attempts, when the first was inconclusive and the scenario was rerun
    /// (oldest first); the result above is the last attempt's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
}

impl ScenarioResult {
    /// The level a failure counts at: the scenario's, raised to MUST when the
    /// requirement the failure names is a MUST (a MUST violated inside a SHOULD
    /// scenario is a MUST violation). Never lowered.
    pub fn effective_level(&self) -> Level {
        match self.violated_level {
            Some(Level::Must) => Level::Must,
            _ => self.level,
        }
    }
}

/// How late the kit's own timers ran over an interval (a lateness probe sleeping
/// 5 ms at a time; see `docs/ci-guide.md`, "Inconclusive").
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Lateness {
    /// Samples taken.
    pub samples: u64,
    /// Median lateness, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Worst, ms.
    pub max_ms: f64,
}

impl From<runwire_mock::lateness::LatenessSummary> for Lateness {
    fn from(s: runwire_mock::lateness::LatenessSummary) -> Self {
        Self {
            samples: s.samples as u64,
            p50_ms: s.p50_ms,
            p99_ms: s.p99_ms,
            max_ms: s.max_ms,
        }
    }
}

/// An earlier attempt of a rerun scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Attempt {
    /// Its grade (before expected failures were applied).
    pub grade: Grade,
    /// Its message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Wall time, ms.
    pub duration_ms: u64,
    /// The time scale it ran at.
    pub time_scale: f64,
    /// Whether it ran alone (reruns do) or beside other scenarios.
    pub alone: bool,
    /// The lateness measured while it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lateness: Option<Lateness>,
}

/// Counts per grade.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Counts {
    /// Scenarios run.
    pub total: u32,
    /// Passed.
    pub pass: u32,
    /// Failed (any level).
    pub fail: u32,
    /// MUST failures.
    pub fail_must: u32,
    /// SHOULD failures.
    pub fail_should: u32,
    /// MAY failures.
    pub fail_may: u32,
    /// Not implemented.
    pub not_implemented: u32,
    /// Expected failures.
    pub expected_failure: u32,
    /// Listed as expected failures but passed.
    pub unexpected_pass: u32,
    /// Still inconclusive after every retry.
    pub inconclusive: u32,
    /// Results whose first attempt was inconclusive (rerun), whatever they ended as.
    pub rerun: u32,
}

impl Counts {
    /// Adds one result.
    pub fn add(&mut self, r: &ScenarioResult) {
        self.total += 1;
        if !r.attempts.is_empty() {
            self.rerun += 1;
        }
        match r.grade {
            Grade::Pass => self.pass += 1,
            Grade::Inconclusive => self.inconclusive += 1,
            Grade::Fail => {
                self.fail += 1;
                match r.effective_level() {
                    Level::Must => self.fail_must += 1,
                    Level::Should => self.fail_should += 1,
                    Level::May => self.fail_may += 1,
                }
            }
            Grade::NotImplemented => self.not_implemented += 1,
            Grade::ExpectedFailure => self.expected_failure += 1,
            Grade::UnexpectedPass => self.unexpected_pass += 1,
        }
    }
}

/// A stale entry of the expected-failures file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StaleEntry {
    /// The entry's pattern.
    pub pattern: String,
    /// Its reason.
    pub reason: String,
    /// `matches_nothing` or `passed`.
    pub why: String,
}

/// The whole report of one `runwire conform` invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunReport {
    /// The format version of this report (`2`: grade `inconclusive`, attempts,
    /// lateness and calibration were added).
    pub format: u32,
    /// The `runwire` version that produced it.
    pub tool_version: String,
    /// The seed of the run (replay with `--seed`).
    pub seed: u64,
    /// The time scale.
    pub time_scale: f64,
    /// `--strict`: SHOULD failures fail the run.
    pub strict: bool,
    /// What was tested, per suite (`reference server (in process)`, a URL, a command).
    pub targets: Vec<Target>,
    /// Wall time of the whole run, in milliseconds.
    pub duration_ms: u64,
    /// Counts over every scenario.
    pub counts: Counts,
    /// Whether the run passed (the exit status is 0).
    pub passed: bool,
    /// Every result, in scenario order.
    pub results: Vec<ScenarioResult>,
    /// Stale expected-failure entries.
    pub stale_expected_failures: Vec<StaleEntry>,
    /// How many times an inconclusive scenario was rerun at most (`--retries`).
    pub retries: u32,
    /// What the kit measured of the machine before the first scenario, and the time
    /// scale it chose from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

/// The preflight measurement of the machine (`docs/ci-guide.md`, "Calibration").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Calibration {
    /// The lateness of the kit's timers while it measured (about 300 ms of 5 ms
    /// sleeps).
    pub timer_lateness: Lateness,
    /// How long the client adapter took from spawn to its first connection, ms (the
    /// client suite only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_startup_ms: Option<f64>,
    /// `--time-scale auto`: the scale was chosen from these numbers.
    pub auto: bool,
    /// The time scale of the server suite.
    pub time_scale: f64,
    /// The time scale of the client suite.
    pub client_time_scale: f64,
    /// Why this scale (one sentence).
    pub reason: String,
}

/// What a suite ran against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Target {
    /// The suite.
    pub suite: Suite,
    /// A description.
    pub description: String,
}

impl RunReport {
    /// Whether a result fails the run: MUST failures always (also a MUST requirement
    /// violated inside a SHOULD scenario), SHOULD failures with `strict`. Inconclusive
    /// results never do.
    pub fn is_failing(r: &ScenarioResult, strict: bool) -> bool {
        let level = r.effective_level();
        r.grade == Grade::Fail && (level == Level::Must || (strict && level == Level::Should))
    }

    /// Recomputes `counts` and `passed` from `results`.
    pub fn finalize(&mut self) {
        let mut c = Counts::default();
        for r in &self.results {
            c.add(r);
        }
        self.passed = !self
            .results
            .iter()
            .any(|r| Self::is_failing(r, self.strict));
        self.counts = c;
    }
}

/// The JSON Schema of [`RunReport`] (`schema/tools/conformance-report.schema.json`).
pub fn report_schema() -> serde_json::Value {
    let mut schema =
        serde_json::to_value(schemars::schema_for!(RunReport)).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(obj) = &mut schema {
        obj.insert(
            "$id".into(),
            "https://runwire.dev/schema/tools/conformance-report.schema.json".into(),
        );
        obj.insert("title".into(), "Runwire conformance report".into());
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(level: Level, grade: Grade, violated_level: Option<Level>) -> ScenarioResult {
        ScenarioResult {
            id: "server/x/y".into(),
            suite: Suite::Server,
            feature: "f".into(),
            name: "n".into(),
            area: "x".into(),
            level,
            requirements: vec!["RW-X-1".into()],
            tags: vec![],
            grade,
            message: Some("m".into()),
            expected_failure_reason: None,
            seed: 1,
            duration_ms: 1,
            steps: vec![],
            transcript: vec![],
            violated: Some("RW-X-2".into()),
            violated_level,
            time_scale: 1.0,
            lateness: None,
            attempts: vec![],
        }
    }

    #[test]
    fn a_must_violated_in_a_should_scenario_fails_the_run() {
        let r = result(Level::Should, Grade::Fail, Some(Level::Must));
        assert_eq!(r.effective_level(), Level::Must);
        assert!(RunReport::is_failing(&r, false));
        let mut c = Counts::default();
        c.add(&r);
        assert_eq!((c.fail_must, c.fail_should), (1, 0));
        // Never lowered: a SHOULD requirement named in a MUST scenario still fails.
        let r = result(Level::Must, Grade::Fail, Some(Level::Should));
        assert!(RunReport::is_failing(&r, false));
        // A plain SHOULD failure only warns; inconclusive never fails.
        assert!(!RunReport::is_failing(
            &result(Level::Should, Grade::Fail, None),
            false
        ));
        assert!(!RunReport::is_failing(
            &result(Level::Must, Grade::Inconclusive, Some(Level::Must)),
            true
        ));
    }
}
