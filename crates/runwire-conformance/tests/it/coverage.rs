//! The coverage matrix and the committed list of unobservable MUSTs
//! (`conformance/unobservable.json`).

use std::collections::BTreeMap;

use runwire_conformance::{Level, coverage, load_all};

fn list(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn committed_unobservable_list_is_not_stale() {
    let list = coverage::unobservable().expect("conformance/unobservable.json parses");
    assert!(!list.is_empty());
    let scenarios = load_all(None, None).unwrap();
    let mut rows = coverage::matrix(&scenarios);
    let problems = coverage::mark_unobservable(&mut rows, &list);
    assert!(problems.is_empty(), "{problems:#?}");
    for key in list.keys() {
        let id = key.rsplit(':').next().unwrap_or(key);
        let row = rows.iter().find(|r| r.requirement.id == id).unwrap();
        assert_eq!(row.requirement.level, Level::Must, "{id} is not a MUST");
        assert!(row.unobservable.is_some() || !row.unobservable_in.is_empty());
    }
}

#[test]
fn stale_unknown_and_reasonless_entries_are_problems() {
    let scenarios = load_all(None, None).unwrap();
    let mut rows = coverage::matrix(&scenarios);
    // RW-CLOSE-7 has a scenario (close-reason-ignored), RW-NOPE-1 does not exist.
    let bad = list(&[
        ("RW-CLOSE-7", "claimed unobservable"),
        ("RW-NOPE-1", "no such requirement"),
        ("RW-TYPE-13", "  "),
    ]);
    let problems = coverage::mark_unobservable(&mut rows, &bad);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("RW-CLOSE-7") && p.contains("has a scenario"))
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("RW-NOPE-1") && p.contains("no such requirement"))
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("RW-TYPE-13") && p.contains("without a reason"))
    );
}

#[test]
fn listed_musts_are_reported_apart_and_not_missing() {
    // No scenarios at all: every MUST is uncovered.
    let mut rows = coverage::matrix(&[]);
    let problems = coverage::mark_unobservable(
        &mut rows,
        &list(&[("RW-TYPE-5", "folded state is private")]),
    );
    assert!(problems.is_empty(), "{problems:#?}");
    let missing = coverage::missing_musts(&rows, coverage::Scope::All);
    assert!(!missing.contains(&"RW-TYPE-5"));
    assert!(missing.contains(&"RW-EVENT-9"));
    let text = coverage::render(&rows, false, coverage::Scope::All);
    assert!(text.contains("Not observable through the adapter/server contract"));
    assert!(
        text.contains("RW-TYPE-5      MUST   folded state is private"),
        "{text}"
    );
    assert!(text.contains("1 not observable"), "{text}");
}

#[test]
fn list_comments_are_skipped_and_bad_json_is_an_error() {
    let l = coverage::parse_unobservable(r#"{"$comment": "x", "RW-TYPE-5": "why"}"#).unwrap();
    assert_eq!(l.keys().collect::<Vec<_>>(), ["RW-TYPE-5"]);
    assert!(coverage::parse_unobservable("[1]").is_err());
}

#[test]
fn a_suite_entry_covers_only_that_suite_and_the_summary_agrees_with_the_exit() {
    let scenarios = load_all(None, None).unwrap();
    let mut rows = coverage::matrix(&scenarios);
    // RW-SNAP-3 (both) has client scenarios only.
    let problems = coverage::mark_unobservable(
        &mut rows,
        &list(&[("server:RW-SNAP-3", "the server folds its own log once")]),
    );
    assert!(problems.is_empty(), "{problems:#?}");
    let server = coverage::Scope::Only(runwire_conformance::Suite::Server);
    let client = coverage::Scope::Only(runwire_conformance::Suite::Client);
    let row = rows
        .iter()
        .find(|r| r.requirement.id == "RW-SNAP-3")
        .unwrap();
    assert!(row.unobservable_in_scope(server).is_some());
    assert!(row.unobservable_in_scope(client).is_none() && row.is_covered(client));
    assert!(!coverage::missing_musts(&rows, server).contains(&"RW-SNAP-3"));
    // Whatever is missing, the summary line says as many.
    for scope in [coverage::Scope::All, server, client] {
        let missing = coverage::missing_musts(&rows, scope).len();
        let text = coverage::render(&rows, false, scope);
        assert!(
            text.contains(&format!(", {missing} missing")),
            "{scope:?}: {missing} missing, but: {}",
            text.lines().last().unwrap_or_default()
        );
    }
    // A suite entry is stale once that suite has a scenario.
    let mut rows = coverage::matrix(&scenarios);
    let problems = coverage::mark_unobservable(
        &mut rows,
        &list(&[("client:RW-SNAP-3", "claimed"), ("nobody:RW-SNAP-3", "x")]),
    );
    assert_eq!(problems.len(), 2, "{problems:#?}");
}
