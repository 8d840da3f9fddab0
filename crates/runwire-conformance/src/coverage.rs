//! Traceability: the requirement × scenario matrix from `spec/requirements.json`.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Deserialize;

use crate::model::{Error, Level, ScenarioDef, Suite};

static REQUIREMENTS: &str = include_str!("../data/requirements.json");
static UNOBSERVABLE: &str = include_str!("../data/unobservable.json");

pub use runwire_protocol::requirement::Requirement;

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

/// Which suites a coverage question is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Both suites: a requirement is covered by a scenario of any suite that can test
    /// its subject.
    All,
    /// One suite: a requirement it can test is covered only by a scenario of this
    /// suite (a `both` requirement needs one here too, or an entry saying why this
    /// suite cannot observe it).
    Only(Suite),
}

/// One row of the matrix.
#[derive(Debug, Clone)]
pub struct Row {
    /// The requirement.
    pub requirement: Requirement,
    /// Scenario ids per suite.
    pub scenarios: BTreeMap<Suite, Vec<String>>,
    /// Why no scenario of any suite can observe it, when `conformance/unobservable.json`
    /// lists it (set by [`mark_unobservable`]).
    pub unobservable: Option<String>,
    /// Why one suite cannot observe it (entries `client:RW-…` or `server:RW-…`).
    pub unobservable_in: BTreeMap<Suite, String>,
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

    /// Whether it is covered in `scope`.
    pub fn is_covered(&self, scope: Scope) -> bool {
        match scope {
            Scope::All => self.covered(),
            Scope::Only(s) => self.covered_by(s),
        }
    }

    /// Why it cannot be observed in `scope`, when it is not covered there and the
    /// list says so: for one suite, the entry for all suites or for that suite; for
    /// both, the entry for all suites, or entries for every suite that can test it.
    pub fn unobservable_in_scope(&self, scope: Scope) -> Option<String> {
        if self.is_covered(scope) {
            return None;
        }
        if let Some(r) = &self.unobservable {
            return Some(r.clone());
        }
        match scope {
            Scope::Only(s) => self.unobservable_in.get(&s).cloned(),
            Scope::All => {
                let suites = suites_for(&self.requirement.subject);
                let reasons: Vec<String> = suites
                    .iter()
                    .filter_map(|s| {
                        self.unobservable_in
                            .get(s)
                            .map(|r| format!("{}: {r}", s.as_str()))
                    })
                    .collect();
                (reasons.len() == suites.len()).then(|| reasons.join("; "))
            }
        }
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
                unobservable_in: BTreeMap::new(),
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
///
/// A key `RW-AREA-N` says no suite can observe the requirement; `client:RW-AREA-N` or
/// `server:RW-AREA-N` says that one suite cannot (for a `both` requirement the other
/// suite covers), and is stale once that suite has a scenario for it.
/// Pass the full matrix (not one filtered by suite) so staleness is judged on all
/// scenarios.
pub fn mark_unobservable(rows: &mut [Row], list: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, reason) in list {
        let (suite, id) = match key.split_once(':') {
            Some(("client", id)) => (Some(Suite::Client), id),
            Some(("server", id)) => (Some(Suite::Server), id),
            Some((other, _)) => {
                problems.push(format!(
                    "{key}: the suite before ':' must be client or server, not {other:?}"
                ));
                continue;
            }
            None => (None, key.as_str()),
        };
        let Some(row) = rows.iter_mut().find(|r| r.requirement.id == id) else {
            problems.push(format!(
                "{key} is listed as unobservable but spec/requirements.json has no such requirement"
            ));
            continue;
        };
        if reason.trim().is_empty() {
            problems.push(format!("{key} is listed as unobservable without a reason"));
        }
        match suite {
            None => {
                if row.covered() {
                    let ids: Vec<&str> = row
                        .scenarios
                        .values()
                        .flatten()
                        .map(String::as_str)
                        .collect();
                    problems.push(format!(
                        "{key} is listed as unobservable but has a scenario ({}): remove it from the list",
                        ids.join(" ")
                    ));
                }
                row.unobservable = Some(reason.clone());
            }
            Some(s) => {
                if !row.testable_by(s) {
                    problems.push(format!(
                        "{key}: the {} suite cannot test a requirement whose subject is {}",
                        s.as_str(),
                        row.requirement.subject
                    ));
                }
                if row.covered_by(s) {
                    problems.push(format!(
                        "{key} is listed as unobservable by the {} suite but it has a scenario ({}): remove it from the list",
                        s.as_str(),
                        row.scenarios.get(&s).map(|v| v.join(" ")).unwrap_or_default()
                    ));
                }
                row.unobservable_in.insert(s, reason.clone());
            }
        }
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

/// The text form: one line per requirement, then the unobservable ones with their
/// reasons, then a summary line, all judged in `scope` (the same definition
/// [`missing_musts`] uses, so the summary's "missing" and the exit status agree).
pub fn render(rows: &[Row], verbose: bool, scope: Scope) -> String {
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
        let mark = if r.is_covered(scope) {
            ""
        } else if r.unobservable_in_scope(scope).is_some() {
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
    let covered = rows.iter().filter(|r| r.is_covered(scope)).count();
    let must: Vec<&Row> = rows
        .iter()
        .filter(|r| r.requirement.level == Level::Must)
        .collect();
    let must_cov = must.iter().filter(|r| r.is_covered(scope)).count();
    let unobs: Vec<(&Row, String)> = rows
        .iter()
        .filter_map(|r| r.unobservable_in_scope(scope).map(|why| (r, why)))
        .collect();
    if !unobs.is_empty() {
        let _ = writeln!(
            s,
            "\nNot observable through the adapter/server contract (conformance/unobservable.json):"
        );
        for (r, why) in &unobs {
            let _ = writeln!(
                s,
                "  {:<14} {:<6} {why}",
                r.requirement.id, r.requirement.level
            );
        }
    }
    let must_unobs = must
        .iter()
        .filter(|r| r.unobservable_in_scope(scope).is_some())
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

/// The MUST requirements that have no scenario in `scope` and are not listed as
/// unobservable there.
pub fn missing_musts(rows: &[Row], scope: Scope) -> Vec<&str> {
    rows.iter()
        .filter(|r| {
            r.requirement.level == Level::Must
                && !r.is_covered(scope)
                && r.unobservable_in_scope(scope).is_none()
        })
        .map(|r| r.requirement.id.as_str())
        .collect()
}

/// The result of the coverage check (`runwire conform coverage`).
#[derive(Debug, Clone)]
pub struct CoverageCheck {
    /// The requirement × scenario matrix, rendered.
    pub table: String,
    /// What fails the check, one line each: scenarios naming a requirement the spec
    /// does not have, stale or unknown entries of `conformance/unobservable.json`, and
    /// MUST requirements without a scenario.
    pub errors: Vec<String>,
}

impl CoverageCheck {
    /// Whether nothing fails the check.
    pub fn passed(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks that every MUST requirement of the spec has a scenario in `scenarios` (of
/// `only` that suite, when given) or an entry of `conformance/unobservable.json`
/// saying why no scenario can observe it, and that the scenarios and that list name
/// only requirements the spec has.
pub fn check(
    scenarios: &[ScenarioDef],
    only: Option<Suite>,
    verbose: bool,
) -> Result<CoverageCheck, Error> {
    let mut rows = matrix(scenarios);
    // MUSTs no scenario can observe are listed apart with a reason; a stale or unknown
    // entry of that list is an error.
    let unobservable = unobservable().map_err(|e| Error::File {
        file: "conformance/unobservable.json (embedded)".into(),
        reason: format!("not a JSON object: {e}"),
    })?;
    let list_problems = mark_unobservable(&mut rows, &unobservable);
    let scope = match only {
        Some(suite) => {
            // Only the requirements this suite can test; a "both" requirement needs a
            // scenario of this suite (or an entry saying why it cannot observe it).
            rows.retain(|r| r.testable_by(suite));
            Scope::Only(suite)
        }
        None => Scope::All,
    };
    let table = render(&rows, verbose, scope);
    let mut errors: Vec<String> = unknown_tags(scenarios)
        .into_iter()
        .map(|(s, r)| format!("scenario {s} names {r}, which spec/requirements.json does not have"))
        .collect();
    errors.extend(
        list_problems
            .into_iter()
            .map(|p| format!("conformance/unobservable.json: {p}")),
    );
    let missing = missing_musts(&rows, scope);
    if !missing.is_empty() {
        errors.push(format!(
            "{} MUST requirement(s) have no scenario: {}",
            missing.len(),
            missing.join(" ")
        ));
    }
    Ok(CoverageCheck { table, errors })
}
