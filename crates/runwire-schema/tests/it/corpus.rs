//! The corpus under `fixtures/schema-compat/<case>/{old,new}/`: every case's report
//! (insta snapshot), its expected rule set and exit verdict (`case.toml`), and one case
//! per rule in which that rule, and only it, fires.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use runwire_schema::{
    compat::compare_trees,
    config::Config,
    report::{Format, Report},
    rules::RULES,
    tree::SchemaTree,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct CaseSpec {
    description: String,
    rules: Vec<String>,
    exit: u8,
}

pub(crate) fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/schema-compat")
}

fn cases() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(corpus_dir())
        .expect("corpus dir")
        .flatten()
        .filter(|e| e.path().join("case.toml").exists())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    out.sort();
    out
}

/// Runs one case: the report with labels `old` and `new`.
pub(crate) fn run_case(dir: &Path) -> Report {
    let mut old = SchemaTree::from_dir(&dir.join("old")).expect("old tree");
    let mut new = SchemaTree::from_dir(&dir.join("new")).expect("new tree");
    old.label = "old".into();
    new.label = "new".into();
    let findings = compare_trees(&old, &new);
    Report::build(
        vec![(old.label.clone(), new.label.clone(), findings)],
        &Config::default(),
        None,
    )
}

fn rules_of(r: &Report) -> BTreeSet<String> {
    r.comparisons
        .iter()
        .flat_map(|c| &c.findings)
        .map(|f| f.rule.clone())
        .collect()
}

#[test]
fn corpus_has_at_least_40_cases() {
    assert!(cases().len() >= 40, "only {} cases", cases().len());
}

#[test]
fn every_case_reports_exactly_its_expected_rules_and_verdict() {
    let mut failures = Vec::new();
    for (name, dir) in cases() {
        let spec: CaseSpec =
            toml::from_str(&std::fs::read_to_string(dir.join("case.toml")).expect("case.toml"))
                .unwrap_or_else(|e| panic!("{name}/case.toml: {e}"));
        assert!(!spec.description.is_empty(), "{name}: description");
        let report = run_case(&dir);
        let got = rules_of(&report);
        let want: BTreeSet<String> = spec.rules.iter().cloned().collect();
        let exit = u8::from(!report.compatible);
        if got != want || exit != spec.exit {
            failures.push(format!(
                "{name}: rules {got:?} exit {exit}, expected {want:?} exit {}",
                spec.exit
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_rule_fires_alone_on_its_own_case() {
    let names: BTreeSet<String> = cases().into_iter().map(|(n, _)| n).collect();
    for r in RULES {
        let case = r.id.to_ascii_lowercase();
        assert!(names.contains(&case), "rule {} has no case {case}", r.id);
        let report = run_case(&corpus_dir().join(&case));
        assert_eq!(
            rules_of(&report),
            BTreeSet::from([r.id.to_string()]),
            "case {case}"
        );
    }
}

#[test]
fn corpus_reports_match_snapshots() {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_snapshot_path("snapshots/corpus");
    settings.bind(|| {
        for (name, dir) in cases() {
            let report = run_case(&dir);
            insta::assert_snapshot!(name.as_str(), report.render(Format::Text));
        }
    });
}
