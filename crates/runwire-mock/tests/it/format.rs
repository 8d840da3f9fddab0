//! The fixture format itself: malformed fixtures are rejected with a pointer and a
//! reason, the committed JSON Schema matches the Rust types and accepts every fixture,
//! and every requirement a fixture names exists in the spec.

use std::path::Path;

use runwire_mock::{Fixture, fixture_schema, load_dir};
use serde_json::Value;

use crate::harness;

const GOOD: &str = r#"{
  "id": "t", "title": "t", "requirements": ["RW-ORDER-4"], "level": "must",
  "runs": [{"run_id": "run-1", "length": 3, "end": "completed"}],
  "client": {"runs": [{"run_id": "run-1"}]},
  "connections": [{"steps": [{"welcome": {}}, {"subscribed": {"run": "run-1"}}, {"events": {"run": "run-1", "from_seq": 1, "to_seq": 3}}]}]
}"#;

fn with(pointer: &str, value: Value) -> String {
    let mut v: Value = serde_json::from_str(GOOD).expect("valid");
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    match v.pointer_mut(parent).unwrap_or_else(|| panic!("{pointer}")) {
        Value::Object(o) => {
            o.insert(key.to_owned(), value);
        }
        Value::Array(a) => a[key.parse::<usize>().expect("index")] = value,
        _ => panic!("{pointer}"),
    }
    v.to_string()
}

#[test]
fn the_base_fixture_is_valid() {
    Fixture::parse(GOOD, "t.json").expect("valid");
}

#[test]
fn malformed_fixtures_name_file_pointer_and_reason() {
    use serde_json::json;
    let mut bad_steps: Value = serde_json::from_str(GOOD).expect("valid");
    bad_steps["connections"][0]["steps"]
        .as_array_mut()
        .expect("array")
        .insert(0, json!({"drop": {}}));
    let cases: Vec<(String, &str, &str)> = vec![
        ("{".into(), "", "invalid JSON"),
        (
            with("/level", json!("sometimes")),
            "/level",
            "unknown variant",
        ),
        (
            with("/connections/0/steps/0", json!({"welcom": {}})),
            "/connections/0/steps/0",
            "unknown variant `welcom`",
        ),
        (
            with("/connections/0/steps/2/events/to_seq", json!(9)),
            "/connections/0/steps/2/events",
            "outside the log",
        ),
        (
            with("/connections/0/steps/2/events/run", json!("run-9")),
            "/connections/0/steps/2/events/run",
            "not declared",
        ),
        (
            with("/requirements/0", json!("ORDER-4")),
            "/requirements/0",
            "RW-AREA-N",
        ),
        (
            with("/runs/0/length", json!(-1)),
            "/runs/0/length",
            "invalid value",
        ),
        (
            with("/client/runs/0/run_id", json!("nope")),
            "/client/runs/0/run_id",
            "not declared",
        ),
        (
            with(
                "/runs/0/overrides",
                json!([{"seq": 2, "type": "run.progress", "data": {"percent": 400}}]),
            ),
            "/runs/0/overrides/0/data",
            "percent",
        ),
        (
            with("/expect", json!({"jitter": {"connections": [1, 2, 3]}})),
            "/expect/jitter/connections/0",
            "must exist",
        ),
        (
            with("/connections/0/steps/0", json!({"close": {"code": 1006}})),
            "/connections/0/steps/0/close/code",
            "cannot be sent",
        ),
        (
            with(
                "/expect",
                json!({"delivered": [{"run": "run-1", "timeline": ["3-1"]}]}),
            ),
            "/expect/delivered/0/timeline/0",
            "seq range",
        ),
        (
            bad_steps.to_string(),
            "/connections/0/steps/1",
            "no step may follow",
        ),
        (
            with("/runs/0/surprise", json!(1)),
            "/runs/0/surprise",
            "unknown field `surprise`",
        ),
    ];
    for (text, pointer, reason) in cases {
        let e = Fixture::parse(&text, "bad.json").expect_err(&text);
        assert_eq!(e.file, "bad.json");
        assert_eq!(e.pointer, pointer, "{e}");
        assert!(e.reason.contains(reason), "{e} should contain {reason:?}");
    }
}

#[test]
fn the_file_name_must_match_the_id() {
    let dir = std::env::temp_dir().join(format!("runwire-mock-id-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("other-name.json");
    std::fs::write(&path, GOOD.replace("\"id\": \"t\"", "\"id\": \"t-1\"")).expect("write");
    let e = Fixture::from_path(&path).expect_err("mismatch");
    assert_eq!(e.pointer, "/id");
    std::fs::remove_dir_all(&dir).ok();
}

fn schema_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/tools/fixture.schema.json")
}

/// The committed schema equals the generated one. Regenerate with
/// `RUNWIRE_WRITE_SCHEMA=1 cargo nextest run -p runwire-mock format::`.
#[test]
fn the_committed_fixture_schema_is_current() {
    let generated = serde_json::to_string_pretty(&fixture_schema()).expect("json") + "\n";
    let path = schema_path();
    if std::env::var_os("RUNWIRE_WRITE_SCHEMA").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(&path, &generated).expect("write");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "schema/tools/fixture.schema.json is stale; regenerate with RUNWIRE_WRITE_SCHEMA=1"
    );
}

#[test]
fn every_fixture_is_valid_under_the_schema() {
    let validator = jsonschema::validator_for(&fixture_schema()).expect("schema compiles");
    let fixtures = load_dir(&harness::fixture_dir()).unwrap_or_else(|e| panic!("{e}"));
    for (path, _) in &fixtures {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
        let errors: Vec<String> = validator
            .iter_errors(&v)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{}: {}",
            path.display(),
            errors.join("; ")
        );
    }
    // And the schema rejects what serde rejects, for a typical typo.
    let bad: Value = serde_json::from_str(&with(
        "/connections/0/steps/0",
        serde_json::json!({"welcom": {}}),
    ))
    .expect("json");
    assert!(!validator.is_valid(&bad));
}

#[test]
fn every_requirement_a_fixture_names_is_in_the_spec() {
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spec/requirements.json"),
        )
        .expect("spec/requirements.json"),
    )
    .expect("json");
    let known: std::collections::BTreeSet<String> = spec["requirements"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    let mut named = std::collections::BTreeSet::new();
    for (path, f) in load_dir(&harness::fixture_dir()).unwrap_or_else(|e| panic!("{e}")) {
        let text = std::fs::read_to_string(&path).expect("read");
        for r in &f.requirements {
            named.insert(r.clone());
        }
        // Requirement overrides inside steps and expectations too.
        for (i, _) in text.match_indices("\"RW-") {
            let id: String = text[i + 1..].chars().take_while(|c| *c != '"').collect();
            assert!(
                known.contains(&id),
                "{}: {id} is not in spec/requirements.json",
                path.display()
            );
        }
    }
    for r in runwire_mock::reqs::ALL {
        assert!(
            known.contains(*r),
            "built-in check names {r}, which the spec does not define"
        );
    }
    assert!(
        named.len() >= 30,
        "the library proves only {} requirements",
        named.len()
    );
}
