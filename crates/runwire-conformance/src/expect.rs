//! Expected failures (a file of `glob → reason`, stale entries reported) and the
//! results baseline for CI (a file of `scenario id → grade`, durations ignored).

use std::{collections::BTreeMap, path::Path};

use crate::model::{Error, Grade, ScenarioResult, StaleEntry};

/// `*` in a pattern matches any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(t) = text.strip_prefix(head) else {
                return false;
            };
            (0..=t.len()).any(|i| t.is_char_boundary(i) && glob(rest, &t[i..]))
        }
    }
}

/// The expected-failures file: a JSON object mapping scenario-id globs (or requirement
/// ids, e.g. `RW-HEART-3`) to the reason they are expected to fail. Keys starting with
/// `$` are comments.
#[derive(Debug, Clone, Default)]
pub struct ExpectedFailures {
    /// Pattern → reason.
    pub entries: BTreeMap<String, String>,
}

impl ExpectedFailures {
    /// Parses the file's text.
    pub fn parse(text: &str, file: &str) -> Result<Self, Error> {
        let v: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| Error::File {
                file: file.to_owned(),
                reason: format!("not a JSON object of pattern to reason: {e}"),
            })?;
        let mut entries = BTreeMap::new();
        for (k, v) in v {
            if k.starts_with('$') {
                continue;
            }
            let reason = v.as_str().unwrap_or("").trim().to_owned();
            if reason.is_empty() {
                return Err(Error::File {
                    file: file.to_owned(),
                    reason: format!("entry {k:?} has no reason (every expected failure needs one)"),
                });
            }
            entries.insert(k, reason);
        }
        Ok(Self { entries })
    }

    /// Reads the file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::File {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn matching<'a>(&'a self, r: &ScenarioResult) -> Option<(&'a String, &'a String)> {
        self.entries
            .iter()
            .find(|(p, _)| glob(p, &r.id) || r.requirements.iter().any(|q| q == *p))
    }

    /// Re-grades results: listed failures become expected failures, listed passes
    /// unexpected passes. Returns the stale entries (matching nothing, or passing).
    pub fn apply(&self, results: &mut [ScenarioResult]) -> Vec<StaleEntry> {
        let mut used: BTreeMap<&String, bool> = BTreeMap::new();
        for r in results.iter_mut() {
            if let Some((p, reason)) = self.matching(r) {
                match r.grade {
                    Grade::Fail => {
                        r.grade = Grade::ExpectedFailure;
                        r.expected_failure_reason = Some(reason.clone());
                        used.insert(p, true);
                    }
                    Grade::Pass => {
                        r.grade = Grade::UnexpectedPass;
                        r.expected_failure_reason = Some(reason.clone());
                        used.entry(p).or_insert(false);
                    }
                    _ => {
                        used.entry(p).or_insert(true);
                    }
                }
            }
        }
        let mut stale = Vec::new();
        for (p, reason) in &self.entries {
            match used.get(p) {
                None => stale.push(StaleEntry {
                    pattern: p.clone(),
                    reason: reason.clone(),
                    why: "matches_nothing".into(),
                }),
                Some(false) => stale.push(StaleEntry {
                    pattern: p.clone(),
                    reason: reason.clone(),
                    why: "passed".into(),
                }),
                Some(true) => {}
            }
        }
        stale
    }
}

/// A results baseline: scenario id → grade.
pub type Baseline = BTreeMap<String, String>;

/// The baseline of a run: every scenario's grade as it ran. A scenario listed in the
/// expected-failures file that passed is recorded as `pass` (what it did), and the
/// entry is reported as stale. An inconclusive scenario is recorded as
/// `inconclusive`, which [`diff_baseline`] never counts as a difference.
pub fn baseline_of(results: &[ScenarioResult]) -> Baseline {
    results
        .iter()
        .map(|r| {
            let g = match r.grade {
                Grade::UnexpectedPass => Grade::Pass,
                g => g,
            };
            (r.id.clone(), g.as_str().to_owned())
        })
        .collect()
}

/// Reads a baseline file.
pub fn load_baseline(path: &Path) -> Result<Baseline, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::File {
        file: path.display().to_string(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| Error::File {
        file: path.display().to_string(),
        reason: format!("not a JSON object of scenario id to grade: {e}"),
    })
}

/// The differences between a committed baseline and this run: one line each. A
/// grade of `inconclusive` on either side is not a difference: the machine could not
/// judge the scenario, so it neither confirms nor breaks the baseline (the summary
/// lists it apart).
pub fn diff_baseline(old: &Baseline, new: &Baseline) -> Vec<String> {
    let inconclusive = Grade::Inconclusive.as_str();
    let mut out = Vec::new();
    for (id, g) in old {
        match new.get(id) {
            None => out.push(format!("- {id}: {g} (no longer run)")),
            Some(n) if n != g && n != inconclusive && g != inconclusive => {
                out.push(format!("~ {id}: {g} -> {n}"));
            }
            _ => {}
        }
    }
    for (id, g) in new {
        if !old.contains_key(id) {
            out.push(format!("+ {id}: {g} (new)"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("server/*", "server/a/b"));
        assert!(glob("*/heartbeat/*", "server/heartbeat/x"));
        assert!(!glob("client/*", "server/a"));
        assert!(glob("exact", "exact"));
    }

    #[test]
    fn reasons_are_required() {
        assert!(ExpectedFailures::parse(r#"{"server/x": ""}"#, "f").is_err());
        let x = ExpectedFailures::parse(r#"{"$comment": "c", "server/x": "bug 1"}"#, "f").unwrap();
        assert_eq!(x.entries.len(), 1);
    }

    #[test]
    fn inconclusive_is_no_baseline_difference() {
        let old: Baseline = [
            ("a".into(), "pass".into()),
            ("b".into(), "inconclusive".into()),
        ]
        .into();
        let new: Baseline = [
            ("a".into(), "inconclusive".into()),
            ("b".into(), "fail".into()),
        ]
        .into();
        assert!(diff_baseline(&old, &new).is_empty());
    }

    #[test]
    fn baseline_diff() {
        let old: Baseline = [("a".into(), "pass".into()), ("b".into(), "pass".into())].into();
        let new: Baseline = [("a".into(), "fail".into()), ("c".into(), "pass".into())].into();
        let d = diff_baseline(&old, &new);
        assert_eq!(d.len(), 3);
        assert!(d[0].contains("a: pass -> fail"));
    }
}
