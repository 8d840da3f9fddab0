//! The engine on the real `schema/v1` tree: a copy is mutated in a temporary folder
//! (the "Done when": an enum value added to the run status enum breaks; an
//! optional property added to a reader schema does not).

use std::path::{Path, PathBuf};

use runwire_schema::{
    compat::{Dir, Finding, compare_trees},
    config::Config,
    generate,
    report::Report,
    rules::Severity,
    tree::{MemSource, SchemaTree},
};
use serde_json::{Value, json};

pub(crate) fn v1_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/v1")
}

/// Copies `schema/v1` into a temporary folder.
pub(crate) fn copy_v1() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_dir(&v1_dir(), tmp.path());
    tmp
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

/// Applies `f` to one schema file of the copy.
pub(crate) fn edit(dir: &Path, rel: &str, f: impl FnOnce(&mut Value)) {
    let p = dir.join(rel);
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
    f(&mut v);
    std::fs::write(&p, generate::render(&v)).expect("write");
}

/// Applies `f` to every node of every schema file of the copy.
pub(crate) fn edit_all(dir: &Path, f: &mut dyn FnMut(&str, &mut serde_json::Map<String, Value>)) {
    fn walk(v: &mut Value, f: &mut dyn FnMut(&str, &mut serde_json::Map<String, Value>)) {
        match v {
            Value::Object(m) => {
                let keys: Vec<String> = m.keys().cloned().collect();
                for k in keys {
                    if let Some(Value::Object(child)) = m.get_mut(&k) {
                        f(&k, child);
                    }
                    if let Some(child) = m.get_mut(&k) {
                        walk(child, f);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|c| walk(c, f)),
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
        let mut v: Value =
            serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
        walk(&mut v, f);
        std::fs::write(&p, generate::render(&v)).expect("write");
    }
}

/// Adds `paused` to the RunStatus enum wherever it is defined.
pub(crate) fn add_run_status_value(dir: &Path) {
    edit_all(dir, &mut |key, m| {
        if key == "RunStatus"
            && let Some(Value::Array(values)) = m.get_mut("enum")
        {
            values.push(json!("paused"));
        }
    });
}

fn diff(old: &Path, new: &Path) -> (Vec<Finding>, Report) {
    let o = SchemaTree::from_dir(old).expect("old");
    let n = SchemaTree::from_dir(new).expect("new");
    let f = compare_trees(&o, &n);
    let r = Report::build(
        vec![("old".into(), "new".into(), f.clone())],
        &Config::default(),
        None,
    );
    (f, r)
}

#[test]
fn v1_compared_with_itself_and_with_the_current_types_reports_nothing() {
    let (f, r) = diff(&v1_dir(), &v1_dir());
    assert!(f.is_empty(), "{f:#?}");
    assert!(r.compatible);
    let files = generate::generate_files(runwire_protocol::SCHEMA_MAJOR)
        .into_iter()
        .map(|(k, v)| (k, generate::render(&v).into_bytes()))
        .collect();
    let cur = SchemaTree::load(
        &mut MemSource {
            name: "current".into(),
            files,
        },
        "current",
    )
    .expect("current");
    let old = SchemaTree::from_dir(&v1_dir()).expect("v1");
    let f = compare_trees(&old, &cur);
    assert!(f.is_empty(), "schema/v1 drifted from the types: {f:#?}");
}

#[test]
fn run_status_value_added_is_breaking_for_old_clients() {
    let tmp = copy_v1();
    add_run_status_value(tmp.path());
    let (f, r) = diff(&v1_dir(), tmp.path());
    assert!(!r.compatible);
    let hit = f
        .iter()
        .find(|f| {
            f.rule == "ENUM_VALUE_ADDED"
                && f.direction == Dir::NewWriterOldReader
                && f.severity == Severity::Error
        })
        .unwrap_or_else(|| panic!("{f:#?}"));
    assert!(hit.message.contains("paused"), "{hit:?}");
    assert_eq!(hit.pointer, "/$defs/RunStatus");
    assert!(hit.parties == "new server → old client" || hit.parties == "new client → old server");
    // Old server, new client: new readers accept the old values.
    assert!(
        f.iter()
            .filter(|f| f.rule == "ENUM_VALUE_ADDED" && f.direction == Dir::OldWriterNewReader)
            .all(|f| f.severity == Severity::Info)
    );
    // Only that rule fires.
    assert!(f.iter().all(|f| f.rule == "ENUM_VALUE_ADDED"), "{f:#?}");
}

#[test]
fn rw_compat_1_optional_property_added_to_a_reader_is_compatible() {
    let tmp = copy_v1();
    edit(tmp.path(), "events/run.status.reader.schema.json", |v| {
        v["properties"]["eta_ms"] =
            json!({"type": "integer", "minimum": 0, "maximum": 9007199254740991u64});
    });
    let (f, r) = diff(&v1_dir(), tmp.path());
    assert!(r.compatible, "{f:#?}");
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].rule, "PROPERTY_OPTIONAL_ADDED");
    assert_eq!(
        (f[0].direction, f[0].severity),
        (Dir::OldWriterNewReader, Severity::Info)
    );
    assert_eq!(f[0].pointer, "/properties/eta_ms");
}

#[test]
fn rw_version_4_new_event_type_is_ignored_by_old_clients() {
    let tmp = copy_v1();
    for file in ["event.writer.schema.json", "event.reader.schema.json"] {
        edit(tmp.path(), file, |v| {
            let branches = v["oneOf"].as_array_mut().expect("oneOf");
            branches.insert(
                0,
                json!({"properties": {"type": {"const": "run.cost"}, "data": {"type": "object", "properties": {"usd": {"type": "number"}}}}}),
            );
        });
    }
    let (f, r) = diff(&v1_dir(), tmp.path());
    assert!(r.compatible, "{f:#?}");
    assert!(!f.is_empty());
    assert!(
        f.iter()
            .all(|f| f.rule == "EVENT_TYPE_ADDED" && f.severity == Severity::Info),
        "{f:#?}"
    );
    assert!(f.iter().all(|f| f.path == "/"), "{f:#?}");
}

#[test]
fn rw_version_5_new_message_types_are_minor_changes_in_both_directions() {
    let tmp = copy_v1();
    for file in [
        "server-message.writer.schema.json",
        "server-message.reader.schema.json",
    ] {
        edit(tmp.path(), file, |v| {
            v["oneOf"].as_array_mut().expect("oneOf").insert(
                0,
                json!({"type": "object", "properties": {"type": {"type": "string", "const": "notice"}, "text": {"type": "string"}}, "required": ["type", "text"]}),
            );
        });
    }
    for file in [
        "client-message.writer.schema.json",
        "client-message.reader.schema.json",
    ] {
        edit(tmp.path(), file, |v| {
            v["oneOf"].as_array_mut().expect("oneOf").push(
                json!({"type": "object", "properties": {"type": {"type": "string", "const": "cancel"}, "run_id": {"type": "string"}}, "required": ["type", "run_id"]}),
            );
        });
    }
    let (f, _) = diff(&v1_dir(), tmp.path());
    let server: Vec<_> = f.iter().filter(|f| f.schema == "server-message").collect();
    assert!(
        server
            .iter()
            .all(|f| f.rule == "EVENT_TYPE_ADDED" && f.severity == Severity::Info),
        "{server:#?}"
    );
    let client_d1: Vec<_> = f
        .iter()
        .filter(|f| f.schema == "client-message" && f.direction == Dir::NewWriterOldReader)
        .collect();
    // Old servers answer an unknown client message with a non-fatal
    // `unknown_message_type` error (spec §14.2, §18.1): the client-message reader union
    // is open, so a new client message type is a minor change.
    assert_eq!(client_d1.len(), 1, "{client_d1:#?}");
    assert_eq!(client_d1[0].rule, "EVENT_TYPE_ADDED");
    assert_eq!(client_d1[0].severity, Severity::Info);
    assert_eq!(client_d1[0].parties, "new client → old server");
}

#[test]
fn removing_a_client_message_from_the_server_reader_warns() {
    let tmp = copy_v1();
    edit(tmp.path(), "client-message.reader.schema.json", |v| {
        v["oneOf"]
            .as_array_mut()
            .expect("oneOf")
            .retain(|b| b.pointer("/properties/type/const") != Some(&json!("unsubscribe")));
    });
    // The new server still answers `unsubscribe` (with a non-fatal error), so the
    // connection survives: a warning that `--fail-on warning` turns into a failure.
    let (f, r) = diff(&v1_dir(), tmp.path());
    assert!(r.compatible, "{f:#?}");
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(
        (
            f[0].rule.as_str(),
            f[0].direction,
            f[0].severity,
            f[0].parties.as_str()
        ),
        (
            "EVENT_TYPE_REMOVED",
            Dir::OldWriterNewReader,
            Severity::Warning,
            "old client → new server"
        )
    );
}

#[test]
fn a_missing_schema_file_is_an_error_naming_the_path() {
    let tmp = copy_v1();
    std::fs::remove_file(tmp.path().join("snapshot.reader.schema.json")).expect("rm");
    let err = SchemaTree::from_dir(tmp.path()).expect_err("missing file");
    assert!(
        err.to_string().contains("snapshot.reader.schema.json"),
        "{err}"
    );
    std::fs::write(tmp.path().join("snapshot.reader.schema.json"), "{ not json").expect("write");
    let err = SchemaTree::from_dir(tmp.path()).expect_err("malformed file");
    assert!(
        err.to_string().contains("snapshot.reader.schema.json"),
        "{err}"
    );
}

#[test]
fn rw_compat_4_new_error_code_is_a_minor_change_because_the_enum_is_extensible() {
    // RW-COMPAT-4: clients accept error codes they do not know (spec §18.1: minor).
    let tmp = copy_v1();
    edit_all(tmp.path(), &mut |key, m| {
        if key == "ErrorCode" {
            for k in ["enum", "x-known-values"] {
                if let Some(Value::Array(values)) = m.get_mut(k) {
                    values.push(json!("quota_exceeded"));
                }
            }
        }
    });
    let (f, r) = diff(&v1_dir(), tmp.path());
    assert!(r.compatible, "{f:#?}");
    assert!(
        f.iter()
            .any(|f| f.rule == "ENUM_VALUE_ADDED" && f.direction == Dir::NewWriterOldReader),
        "{f:#?}"
    );
    assert!(f.iter().all(|f| f.severity == Severity::Info), "{f:#?}");
}

#[test]
fn closed_enum_value_added_in_a_client_to_server_body_breaks_old_servers() {
    // The same RunStatus change seen from the producer side: a new producer sending
    // `paused` in an append request to an old server (spec §18.1: closed enum, major).
    let tmp = copy_v1();
    add_run_status_value(tmp.path());
    let (f, _) = diff(&v1_dir(), tmp.path());
    assert!(
        f.iter().any(|f| f.rule == "ENUM_VALUE_ADDED"
            && f.direction == Dir::NewWriterOldReader
            && f.severity == Severity::Error
            && f.parties == "new client → old server"),
        "{f:#?}"
    );
}

#[test]
fn rw_version_4_removing_an_event_type_warns_but_does_not_break() {
    // `todo.updated` disappears: from every event union and from index.json. Old
    // servers may still send it; new clients deliver it as an unknown type.
    let tmp = copy_v1();
    edit_all(tmp.path(), &mut |_, m| {
        if let Some(Value::Array(branches)) = m.get_mut("oneOf") {
            branches
                .retain(|b| b.pointer("/properties/type/const") != Some(&json!("todo.updated")));
        }
    });
    edit(tmp.path(), "index.json", |v| {
        v["schemas"]
            .as_array_mut()
            .expect("schemas")
            .retain(|e| e["name"] != json!("events/todo.updated"));
    });
    let (f, r) = diff(&v1_dir(), tmp.path());
    assert!(r.compatible, "{f:#?}");
    let rules: std::collections::BTreeSet<&str> = f.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(
        rules,
        ["EVENT_TYPE_REMOVED", "SCHEMA_REMOVED"]
            .into_iter()
            .collect(),
        "{f:#?}"
    );
    let removed: Vec<_> = f.iter().filter(|f| f.rule == "SCHEMA_REMOVED").collect();
    assert_eq!(removed.len(), 2, "{removed:#?}");
    assert!(
        removed.iter().all(|f| f.severity == Severity::Warning),
        "{removed:#?}"
    );
    assert!(f.iter().any(|f| f.rule == "EVENT_TYPE_REMOVED"
        && f.direction == Dir::OldWriterNewReader
        && f.severity == Severity::Warning));
}
