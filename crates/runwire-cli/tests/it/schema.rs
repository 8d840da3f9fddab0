//! End-to-end tests of `runwire schema diff/check/rules/validate`, on copies
//! of the real `schema/v1` in temporary folders and temporary git repositories.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn runwire(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runwire"))
        .args(["schema"])
        .args(args)
        .current_dir(cwd)
        .env_remove("RUNWIRE_SCHEMA_CONFIG")
        .output()
        .expect("run runwire")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

/// `schema/v1` copied to `<tmp>/<name>`.
fn copy_v1(tmp: &Path, name: &str) -> PathBuf {
    let dir = tmp.join(name);
    copy_dir(&root().join("schema/v1"), &dir);
    dir
}

fn edit(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
    f(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).expect("json")).expect("write");
}

/// Adds `paused` to every `RunStatus` definition of a version folder.
fn add_run_status_value(dir: &Path) {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Object(rs)) = m.get_mut("RunStatus")
                    && let Some(Value::Array(e)) = rs.get_mut("enum")
                {
                    e.push(json!("paused"));
                }
                m.values_mut().for_each(walk);
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                files(&p, out);
            } else if p.to_string_lossy().ends_with(".schema.json") {
                out.push(p);
            }
        }
    }
    let mut all = Vec::new();
    files(dir, &mut all);
    for p in all {
        edit(&p, walk);
    }
}

fn rules_in(json_out: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(json_out).expect("json report");
    v["comparisons"]
        .as_array()
        .expect("comparisons")
        .iter()
        .flat_map(|c| c["findings"].as_array().expect("findings").clone())
        .map(|f| f["rule"].as_str().expect("rule").to_string())
        .collect()
}

#[test]
fn diff_run_status_value_added_exits_1_naming_enum_value_added() {
    let tmp = tempfile::tempdir().expect("tmp");
    let new = copy_v1(tmp.path(), "new");
    add_run_status_value(&new);
    let old = root().join("schema/v1");
    let o = runwire(
        &[
            "diff",
            old.to_str().expect("utf8"),
            new.to_str().expect("utf8"),
            "--format",
            "json",
        ],
        tmp.path(),
    );
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let rules = rules_in(&stdout(&o));
    assert!(rules.contains(&"ENUM_VALUE_ADDED".to_string()), "{rules:?}");
    let report: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(report["compatible"], json!(false));
    // The text format names it too, and JUnit reports a failure.
    let t = runwire(
        &[
            "diff",
            old.to_str().expect("utf8"),
            new.to_str().expect("utf8"),
        ],
        tmp.path(),
    );
    assert_eq!(code(&t), 1);
    assert!(
        stdout(&t).contains("ENUM_VALUE_ADDED") && stdout(&t).contains("\"paused\""),
        "{}",
        stdout(&t)
    );
    let j = runwire(
        &[
            "diff",
            old.to_str().expect("utf8"),
            new.to_str().expect("utf8"),
            "--format",
            "junit",
        ],
        tmp.path(),
    );
    assert_eq!(code(&j), 1);
    assert!(
        stdout(&j).starts_with("<?xml")
            && stdout(&j).contains("<failure")
            && stdout(&j).contains("ENUM_VALUE_ADDED")
    );
}

#[test]
fn diff_optional_property_added_to_a_reader_exits_0() {
    let tmp = tempfile::tempdir().expect("tmp");
    let new = copy_v1(tmp.path(), "new");
    edit(&new.join("events/log.line.reader.schema.json"), |v| {
        v["properties"]["thread"] = json!({"type": "string"});
    });
    let old = root().join("schema/v1");
    let o = runwire(
        &[
            "diff",
            old.to_str().expect("utf8"),
            new.to_str().expect("utf8"),
            "--format",
            "json",
        ],
        tmp.path(),
    );
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        rules_in(&stdout(&o)),
        vec!["PROPERTY_OPTIONAL_ADDED".to_string()]
    );
}

#[test]
fn fail_on_warning_and_the_ignore_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let new = copy_v1(tmp.path(), "new");
    // Remove an optional property from the writer: a warning in D1 (name freed for reuse).
    edit(&new.join("events/log.line.writer.schema.json"), |v| {
        v["properties"]
            .as_object_mut()
            .expect("props")
            .remove("source");
    });
    let (old, newp) = (
        root().join("schema/v1"),
        new.to_str().expect("utf8").to_string(),
    );
    let old = old.to_str().expect("utf8");
    assert_eq!(code(&runwire(&["diff", old, &newp], tmp.path())), 0);
    let o = runwire(&["diff", old, &newp, "--fail-on", "warning"], tmp.path());
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(stdout(&o).contains("PROPERTY_OPTIONAL_REMOVED"));

    let cfg = tmp.path().join("compat.toml");
    std::fs::write(
        &cfg,
        "fail_on = \"warning\"\n\n[[ignore]]\nrule = \"PROPERTY_OPTIONAL_REMOVED\"\nschema = \"events/log.line\"\nreason = \"source was never filled in\"\n\n[[ignore]]\nrule = \"ENUM_VALUE_ADDED\"\nreason = \"stale on purpose\"\n",
    )
    .expect("write");
    let o = runwire(
        &[
            "diff",
            old,
            &newp,
            "--config",
            cfg.to_str().expect("utf8"),
            "--format",
            "json",
        ],
        tmp.path(),
    );
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let r: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(r["summary"]["ignored"], json!(1));
    assert_eq!(
        r["comparisons"][0]["ignored"][0]["reason"],
        json!("source was never filled in")
    );
    assert_eq!(r["stale_ignores"][0]["rule"], json!("ENUM_VALUE_ADDED"));
    let t = runwire(
        &["diff", old, &newp, "--config", cfg.to_str().expect("utf8")],
        tmp.path(),
    );
    assert!(stdout(&t).contains("stale ignore entry"), "{}", stdout(&t));

    std::fs::write(
        &cfg,
        "[[ignore]]\nrule = \"ENUM_VALUE_ADDED\"\nreason = \"\"\n",
    )
    .expect("write");
    let o = runwire(
        &["diff", old, &newp, "--config", cfg.to_str().expect("utf8")],
        tmp.path(),
    );
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("reason"), "{}", stderr(&o));
}

#[test]
fn missing_or_malformed_schema_files_exit_2_with_the_path() {
    let tmp = tempfile::tempdir().expect("tmp");
    let new = copy_v1(tmp.path(), "new");
    std::fs::remove_file(new.join("events/run.phase.writer.schema.json")).expect("rm");
    let old = root().join("schema/v1");
    let o = runwire(
        &[
            "diff",
            old.to_str().expect("utf8"),
            new.to_str().expect("utf8"),
        ],
        tmp.path(),
    );
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("run.phase.writer.schema.json"),
        "{}",
        stderr(&o)
    );
    std::fs::write(new.join("index.json"), "{\"version\": ").expect("write");
    let o = runwire(
        &[
            "diff",
            old.to_str().expect("utf8"),
            new.to_str().expect("utf8"),
        ],
        tmp.path(),
    );
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("index.json"), "{}", stderr(&o));
}

fn git(dir: &Path, args: &[&str]) {
    let s = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        s.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&s.stderr)
    );
}

#[test]
fn check_against_a_git_ref_reads_the_tree_with_git_and_rejects_unknown_refs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(repo.join("schema")).expect("mkdir");
    copy_dir(&root().join("schema/v1"), &repo.join("schema/v1"));
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "schema"]);
    git(&repo, &["commit", "-q", "-m", "release v1"]);
    git(&repo, &["tag", "v1.0"]);
    // The working copy changes after the release.
    let cur = copy_v1(tmp.path(), "current");
    add_run_status_value(&cur);
    let cur = cur.to_str().expect("utf8");
    let o = runwire(
        &[
            "check",
            "--against",
            "git:v1.0",
            "--current",
            cur,
            "--format",
            "json",
        ],
        &repo,
    );
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let r: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert!(
        r["comparisons"][0]["old"]
            .as_str()
            .expect("old")
            .starts_with("git:v1.0:schema/v1")
    );
    assert!(rules_in(&stdout(&o)).contains(&"ENUM_VALUE_ADDED".to_string()));
    // Unchanged: compatible.
    let same = root().join("schema/v1");
    let o = runwire(
        &[
            "check",
            "--against",
            "git:HEAD",
            "--current",
            same.to_str().expect("utf8"),
        ],
        &repo,
    );
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // A ref that does not exist: exit 2 and a clear message.
    let o = runwire(
        &["check", "--against", "git:no-such-branch", "--current", cur],
        &repo,
    );
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("no-such-branch") && stderr(&o).contains("does not exist"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_default_compares_with_every_other_released_version() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A repository layout with a released v0 (a copy of v1 without one status value)
    // and the current v1: the current types must stay compatible with v0.
    let schema = tmp.path().join("schema");
    let v0 = copy_v1(&schema, "v0");
    copy_v1(&schema, "v1");
    std::fs::create_dir_all(schema.join("tools")).expect("not a version folder");
    edit(&v0.join("events/run.status.writer.schema.json"), |v| {
        v["$defs"]["RunStatus"]["enum"]
            .as_array_mut()
            .expect("enum")
            .retain(|x| x != "cancelled");
    });
    let o = runwire(
        &["check", "--current", "schema/v1", "--format", "json"],
        tmp.path(),
    );
    let r: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let comps = r["comparisons"].as_array().expect("comparisons");
    assert_eq!(comps.len(), 1, "{r:#}");
    assert!(comps[0]["old"].as_str().expect("old").ends_with("v0"));
    // `cancelled` exists in the current writer but not in v0's writer: D1 sees it added,
    // refined to info because v0's reader already accepts it.
    assert_eq!(code(&o), 0, "{r:#}");
    assert!(
        rules_in(&stdout(&o))
            .iter()
            .all(|x| x == "ENUM_VALUE_ADDED")
    );
}

#[test]
fn rules_json_lists_at_least_20_rules_with_severities_and_examples() {
    let o = runwire(&["rules", "--format", "json"], &root());
    assert_eq!(code(&o), 0);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let rules = v["rules"].as_array().expect("rules");
    assert!(rules.len() >= 20, "{}", rules.len());
    for r in rules {
        for k in ["id", "d1", "d2", "purpose", "example"] {
            assert!(r.get(k).is_some(), "{r}");
        }
    }
    assert!(
        rules
            .iter()
            .any(|r| r["id"] == "ENUM_VALUE_ADDED" && r["d1"] == "error")
    );
}

#[test]
fn validate_reports_file_line_pointer_and_exit_code() {
    let tmp = tempfile::tempdir().expect("tmp");
    let good = tmp.path().join("good.jsonl");
    let bad = tmp.path().join("bad.jsonl");
    let ev = |seq: u64| {
        json!({"event_id": format!("e{seq}"), "run_id": "r", "seq": seq, "type": "log.line",
               "time": "2026-11-22T10:00:00Z", "data": {"level": "info", "message": "hi"}})
        .to_string()
    };
    std::fs::write(
        &good,
        format!(
            "{}\n{}\n{{\"type\":\"hello\",\"versions\":[\"1.0\"]}}\n",
            ev(1),
            ev(2)
        ),
    )
    .expect("write");
    std::fs::write(&bad, format!("{}\n{}\n", ev(1), ev(0))).expect("write");
    let schema_dir = root().join("schema");
    let sd = schema_dir.to_str().expect("utf8");
    let o = runwire(
        &["validate", "--schema-dir", sd, good.to_str().expect("utf8")],
        tmp.path(),
    );
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let o = runwire(
        &[
            "validate",
            "--schema-dir",
            sd,
            good.to_str().expect("utf8"),
            bad.to_str().expect("utf8"),
        ],
        tmp.path(),
    );
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    assert!(
        out.contains(&format!("{}:2: event /seq:", bad.display())),
        "{out}"
    );
    // Standard input.
    let mut child = Command::new(env!("CARGO_BIN_EXE_runwire"))
        .args(["schema", "validate", "--schema-dir", sd, "-"])
        .current_dir(tmp.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{}\n{}", ev(1), ev(0)).expect("write");
    }
    let o = child.wait_with_output().expect("wait");
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("-:2: event /seq:"), "{}", stdout(&o));
    let o = runwire(
        &[
            "validate",
            "--schema-dir",
            sd,
            "--kind",
            "nope",
            good.to_str().expect("utf8"),
        ],
        tmp.path(),
    );
    assert_eq!(code(&o), 2);
}

/// `schema check --format junit` with no released version to compare against: one
/// skipped test case that says so, not an empty `<testsuites>`.
#[test]
fn check_with_nothing_to_compare_writes_a_skipped_junit_case() {
    let tmp = tempfile::tempdir().expect("tmp");
    copy_v1(tmp.path(), "v1");
    let o = runwire(
        &["check", "--schema-dir", ".", "--format", "junit"],
        tmp.path(),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let x = stdout(&o);
    assert!(
        x.contains("<testsuite ") && x.contains("<skipped message=\"nothing to compare"),
        "{x}"
    );
    assert!(stderr(&o).contains("nothing to compare"), "{}", stderr(&o));
}

/// An event without `type` (or with a `type` that is not a string): one failure that
/// says so, never the `oneOf` noise of every event type.
#[test]
fn validate_names_a_missing_type() {
    let tmp = tempfile::tempdir().expect("tmp");
    let f = tmp.path().join("e.jsonl");
    let no_type = json!({"event_id": "e1", "run_id": "r", "seq": 1,
        "time": "2026-11-22T10:00:00Z", "data": {"level": "info", "message": "hi"}});
    let mut bad_type = no_type.clone();
    bad_type["type"] = json!(7);
    std::fs::write(&f, format!("{no_type}\n{bad_type}\n")).expect("write");
    let sd = root().join("schema");
    let o = runwire(
        &[
            "validate",
            "--schema-dir",
            sd.to_str().expect("utf8"),
            "--kind",
            "event",
            f.to_str().expect("utf8"),
        ],
        tmp.path(),
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.contains("oneOf"), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].ends_with(":1: event (root): \"type\" is a required property"),
        "{out}"
    );
    assert!(
        lines[1].ends_with(":2: event /type: 7 is not of type \"string\""),
        "{out}"
    );
}
