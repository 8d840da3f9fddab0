//! Traceability: the requirement × scenario matrix from `spec/requirements.json`.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Deserialize;

use crate::model::{ScenarioDef, Suite};

static REQUIREMENTS: &str = include_str!("../../../spec/requirements.json");

/// One requirement of the spec.
#[derive(Debug, Clone, Deserialize)]
pub struct Requirement {
    /// `RW-AREA-N`.
    pub id: String,
    /// `MUST`, `SHOULD`, `MAY`.
    pub level: String,
    /// `server`, `client`, `both`, `producer`.
    pub subject: String,
    /// The section.
    #[serde(default)]
    pub section: String,
    /// The text.
    #[serde(default)]
    pub text: String,
}

#[derive(Deserialize)]
struct File {
    requirements: Vec<Requirement>,
}

/// The spec's requirements (embedded at build time).
pub fn requirements() -> Vec<Requirement> {
    serde_json::from_str::<File>(REQUIREMENTS)
        .map(|f| f.requirements)
        .unwrap_or_default()
}

/// The suites that can test a subject.
pub fn suites_for(subject: &str) -> &'static [Suite] {
    match subject {
        "server" | "producer" => &[Suite::Server],
        "client" => &[Suite::Client],
        _ => &[Suite::Server, Suite::Client],
    }
}

/// One row of the matrix.
#[derive(Debug, Clone)]
pub struct Row {
    /// The requirement.
    pub requirement: Requirement,
    /// Scenario ids per suite.
    pub scenarios: BTreeMap<Suite, Vec<String>>,
}

impl Row {
    /// Whether some suite that can test the subject has a scenario.
    pub fn covered(&self) -> bool {
        suites_for(&self.requirement.subject)
            .iter()
            .any(|s| self.scenarios.get(s).is_some_and(|v| !v.is_empty()))
    }

    /// Whether `suite` can test this requirement.
    pub fn testable_by(&self, suite: Suite) -> bool {
        suites_for(&self.requirement.subject).contains(&suite)
    }

    /// Whether `suite` has a scenario for it.
    pub fn covered_by(&self, suite: Suite) -> bool {
        self.scenarios.get(&suite).is_some_and(|v| !v.is_empty())
    }
}

/// The matrix.
pub fn matrix(scenarios: &[ScenarioDef]) -> Vec<Row> {
    requirements()
        .into_iter()
        .map(|r| {
            let mut m: BTreeMap<Suite, Vec<String>> = BTreeMap::new();
            for s in scenarios {
                if s.requirements.iter().any(|q| q == &r.id) {
                    m.entry(s.suite).or_default().push(s.id.clone());
                }
            }
            Row {
                requirement: r,
                scenarios: m,
            }
        })
        .collect()
}

/// Tags naming requirements the spec does not have.
pub fn unknown_tags(scenarios: &[ScenarioDef]) -> Vec<(String, String)> {
    let known: std::collections::BTreeSet<String> =
        requirements().into_iter().map(|r| r.id).collect();
    let mut out = Vec::new();
    for s in scenarios {
        for r in &s.requirements {
            if !known.contains(r) {
                out.push((s.id.clone(), r.clone()));
            }
        }
    }
    out
}

/// The text form: one line per requirement, then the uncovered MUSTs.
pub fn render(rows: &[Row], verbose: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<14} {:<6} {:<8} {:>6} {:>6}  scenarios",
        "requirement", "level", "subject", "server", "client"
    );
    for r in rows {
        let n = |x: Suite| r.scenarios.get(&x).map_or(0, Vec::len);
        let ids: Vec<&str> = r.scenarios.values().flatten().map(String::as_str).collect();
        let shown = if verbose || ids.len() <= 2 {
            ids.join(" ")
        } else {
            format!("{} {} (+{})", ids[0], ids[1], ids.len() - 2)
        };
        let mark = if r.covered() { "" } else { "  <- no scenario" };
        let _ = writeln!(
            s,
            "{:<14} {:<6} {:<8} {:>6} {:>6}  {shown}{mark}",
            r.requirement.id,
            r.requirement.level,
            r.requirement.subject,
            n(Suite::Server),
            n(Suite::Client)
        );
    }
    let total = rows.len();
    let covered = rows.iter().filter(|r| r.covered()).count();
    let must: Vec<&Row> = rows
        .iter()
        .filter(|r| r.requirement.level == "MUST")
        .collect();
    let must_cov = must.iter().filter(|r| r.covered()).count();
    let _ = writeln!(
        s,
        "\n{covered}/{total} requirements have a scenario; MUST: {must_cov}/{}",
        must.len()
    );
    s
}
