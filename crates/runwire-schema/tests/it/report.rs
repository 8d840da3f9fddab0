//! The JSON report's published schema (`docs/schema-compat-report.schema.json`) is
//! current, and real reports validate against it; configuration errors are clear.

use std::path::Path;

use runwire_schema::{
    compat::compare_trees,
    config::Config,
    generate,
    report::{Format, Report, report_schema},
    tree::SchemaTree,
};

use super::corpus::corpus_dir;

fn published() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/schema-compat-report.schema.json")
}

#[test]
fn published_report_schema_is_current() {
    let want = generate::render(&report_schema());
    if std::env::var_os("RUNWIRE_UPDATE_FIXTURES").is_some() {
        std::fs::write(published(), &want).expect("write");
    }
    let got = std::fs::read_to_string(published()).unwrap_or_default();
    assert_eq!(
        got, want,
        "docs/schema-compat-report.schema.json is stale; rerun with RUNWIRE_UPDATE_FIXTURES=1"
    );
}

#[test]
fn reports_validate_against_the_published_schema() {
    let schema = report_schema();
    let v = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
        .expect("compile");
    let cfg = Config::parse(
        "fail_on = \"warning\"\n[severity]\nDEFAULT_CHANGED = \"info\"\n[[ignore]]\nrule = \"ENUM_VALUE_ADDED\"\ndirection = \"D1\"\nreason = \"acknowledged\"\n[[ignore]]\nrule = \"TYPE_CHANGED\"\nreason = \"stale\"\n",
        "inline",
    )
    .expect("config");
    let mut comparisons = Vec::new();
    for case in [
        "enum_value_added",
        "default_changed",
        "schema_removed",
        "identical",
    ] {
        let d = corpus_dir().join(case);
        let o = SchemaTree::from_dir(&d.join("old")).expect("old");
        let n = SchemaTree::from_dir(&d.join("new")).expect("new");
        comparisons.push((case.to_string(), case.to_string(), compare_trees(&o, &n)));
    }
    let report = Report::build(comparisons, &cfg, None);
    assert_eq!(report.summary.ignored, 1);
    assert_eq!(report.summary.stale_ignores, 1);
    // DEFAULT_CHANGED lowered to info; SCHEMA_REMOVED still fails at warning.
    assert!(!report.compatible);
    let json: serde_json::Value = serde_json::from_str(&report.render(Format::Json)).expect("json");
    let errors: Vec<String> = v
        .iter_errors(&json)
        .map(|e| format!("{} {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let junit = report.render(Format::Junit);
    assert!(
        junit.contains("<skipped message=\"acknowledged\"/>"),
        "{junit}"
    );
    assert_eq!(junit.matches("<testsuite ").count(), 4);
}

#[test]
fn config_errors_name_the_problem() {
    for (text, needle) in [
        (
            "[[ignore]]\nrule = \"NOPE\"\nreason = \"x\"\n",
            "unknown rule",
        ),
        (
            "[[ignore]]\nrule = \"TYPE_CHANGED\"\nreason = \"  \"\n",
            "reason",
        ),
        ("[[ignore]]\nrule = \"TYPE_CHANGED\"\n", "reason"),
        ("[severity]\nNOPE = \"info\"\n", "unknown rule"),
        ("fail_on = \"fatal\"\n", "fail_on"),
        ("colour = 1\n", "colour"),
    ] {
        let err = Config::parse(text, "c.toml").expect_err(text).to_string();
        assert!(
            err.contains(needle) && err.starts_with("c.toml"),
            "{text}: {err}"
        );
    }
}

#[test]
fn docs_explain_every_rule_with_an_example() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/schema-compat.md"),
    )
    .expect("docs/schema-compat.md");
    for r in runwire_schema::rules::RULES {
        let head = format!("#### {}\n", r.id);
        let at = doc
            .find(&head)
            .unwrap_or_else(|| panic!("docs/schema-compat.md has no section {}", r.id));
        let section = &doc[at..];
        let end = section[head.len()..]
            .find("\n#")
            .map_or(section.len(), |e| e + head.len());
        let section = &section[..end];
        assert!(
            section.contains("Example:") && section.contains(r.example),
            "{}: example",
            r.id
        );
        assert!(
            section.contains(&format!(
                "fixtures/schema-compat/{}/",
                r.id.to_ascii_lowercase()
            )),
            "{}",
            r.id
        );
    }
}

#[test]
fn github_format_writes_workflow_commands() {
    let d = corpus_dir().join("enum_value_added");
    let o = SchemaTree::from_dir(&d.join("old")).expect("old");
    let n = SchemaTree::from_dir(&d.join("new")).expect("new");
    let report = Report::build(
        vec![("old".into(), "new".into(), compare_trees(&o, &n))],
        &Config::default(),
        None,
    );
    let out = report.render(Format::Github);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("::error title=ENUM_VALUE_ADDED (thing%2C D1 new server → old client)::thing.writer.schema.json#/$defs/Status at /status: enum value \"paused\" added"), "{out}");
    assert!(lines[1].starts_with("BREAKING"));
}
