//! Traceability: the requirement × scenario matrix from `spec/requirements.json`.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Deserialize;

use crate::model::{ScenarioDef, Suite};

static REQUIREMENTS: &str = include_str!("../../../spec/requirements.json");
static UNOBSERVABLE: &str = include_str!("../../../conformance/unobservable.json");

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
    /// Why no scenario can observe it, when `conformance/unobservable.json` lists it
    /// (set by [`mark_unobservable`]).
    pub unobservable: Option<String>,
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
                unobservable: None,
            }
        })
        .collect()
}

/// The committed list of requirements that no scenario can observe through the
/// adapter or server contract (`conformance/unobservable.json`, embedded at build
/// time): requirement id -> reason. Keys starting with `$` are comments.
pub fn unobservable() -> Result<BTreeMap<String, String>, serde_json::Error> {
    parse_unobservable(UNOBSERVABLE)
}

/// Parses a list in the format of `conformance/unobservable.json`.
pub fn parse_unobservable(text: &str) -> Result<BTreeMap<String, String>, serde_json::Error> {
    let mut m: BTreeMap<String, String> = serde_json::from_str(text)?;
    m.retain(|k, _| !k.starts_with('$'));
    Ok(m)
}

/// Marks the rows the list names, and returns the list's problems: entries naming a
/// requirement the spec does not have, entries for a requirement that has a scenario
/// (stale: the scenario observes it after all), and entries without a reason.
/// Pass the full matrix (not one filtered by suite) so staleness is judged on all
/// scenarios.
pub fn mark_unobservable(rows: &mut [Row], list: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (id, reason) in list {
        let Some(row) = rows.iter_mut().find(|r| &r.requirement.id == id) else {
            problems.push(format!(
                "{id} is listed as unobservable but spec/requirements.json has no such requirement"
            ));
            continue;
        };
        if reason.trim().is_empty() {
            problems.push(format!("{id} is listed as unobservable without a reason"));
        }
        if row.covered() {
            let ids: Vec<&str> = row
                .scenarios
                .values()
                .flatten()
                .map(String::as_str)
                .collect();
            problems.push(format!(
                "{id} is listed as unobservable but has a scenario ({}): remove it from the list",
                ids.join(" ")
            ));
        }
        row.unobservable = Some(reason.clone());
    }
    problems
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
        let mark = if r.covered() {
            ""
        } else if r.unobservable.is_some() {
            "  <- not observable (see below)"
        } else {
            "  <- no scenario"
        };
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
    let unobs: Vec<&Row> = rows
        .iter()
        .filter(|r| !r.covered() && r.unobservable.is_some())
        .collect();
    if !unobs.is_empty() {
        let _ = writeln!(
            s,
            "\nNot observable through the adapter/server contract (conformance/unobservable.json):"
        );
        for r in &unobs {
            let _ = writeln!(
                s,
                "  {:<14} {:<6} {}",
                r.requirement.id,
                r.requirement.level,
                r.unobservable.as_deref().unwrap_or_default()
            );
        }
    }
    let must_unobs = must
        .iter()
        .filter(|r| !r.covered() && r.unobservable.is_some())
        .count();
    let _ = writeln!(
        s,
        "\n{covered}/{total} requirements have a scenario; MUST: {must_cov}/{} covered, \
         {must_unobs} not observable, {} missing",
        must.len(),
        must.len() - must_cov - must_unobs
    );
    s
}

/// The MUST requirements that have no scenario and are not listed as unobservable.
pub fn missing_musts(rows: &[Row], covered: impl Fn(&Row) -> bool) -> Vec<&str> {
    rows.iter()
        .filter(|r| r.requirement.level == "MUST" && r.unobservable.is_none() && !covered(r))
        .map(|r| r.requirement.id.as_str())
        .collect()
}
