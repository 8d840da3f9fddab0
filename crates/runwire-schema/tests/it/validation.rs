//! Validation against the real `schema/v1`: the example payloads validate and are
//! recognised by shape; failures carry the line, kind and JSON pointer.

use std::path::Path;

use runwire_schema::{
    compat::Contract,
    tree::SchemaTree,
    validate::{Failure, Validators},
};
use serde_json::json;

use super::real_v1::v1_dir;

fn validators(contract: Contract) -> Validators {
    Validators::new(&SchemaTree::from_dir(&v1_dir()).expect("v1"), contract).expect("compile")
}

fn kind_of_file(prefix: &str) -> String {
    match prefix {
        "append-request" | "append-response" | "history-response" | "run-list" | "new-event"
        | "health" => {
            format!("http/{prefix}")
        }
        "http-error" => "http/error".into(),
        other => other.into(),
    }
}

#[test]
fn rw_compat_5_example_payloads_validate_and_are_recognised_by_shape() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/payloads/valid");
    let mut n = 0;
    for contract in [Contract::Writer, Contract::Reader] {
        let v = validators(contract);
        for e in std::fs::read_dir(&dir).expect("payloads").flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let prefix = name.split("--").next().expect("prefix");
            let value: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(e.path()).expect("read"))
                    .expect("json");
            let mut want = kind_of_file(prefix);
            // ping and pong have the same shape in both directions.
            if matches!(value["type"].as_str(), Some("ping" | "pong")) {
                want = "server-message".into();
            }
            assert_eq!(v.detect(&value), Some(want.as_str()), "{name}");
            let (kind, errs) = v.validate_value(&value, None);
            assert_eq!(kind, Some(want.as_str()));
            assert!(errs.is_empty(), "{name} ({contract:?}): {errs:?}");
            n += 1;
        }
    }
    assert!(n >= 40, "only {n} payloads");
}

fn failures(v: &Validators, text: &str, kind: Option<&str>) -> Vec<Failure> {
    let mut out = Vec::new();
    v.validate_text(text, kind, |f| out.push(f));
    out
}

#[test]
fn json_lines_failures_carry_line_kind_and_pointer() {
    let v = validators(Contract::Writer);
    let good = json!({"event_id": "e1", "run_id": "r1", "seq": 1, "type": "run.status",
        "time": "2026-11-22T10:00:00Z", "data": {"status": "running"}});
    let mut bad_seq = good.clone();
    bad_seq["seq"] = json!(0);
    let mut bad_status = good.clone();
    bad_status["data"]["status"] = json!("paused");
    let text = format!(
        "{good}\n\n{bad_seq}\n{{\"type\":\"hello\",\"versions\":[]}}\nnot json\n{bad_status}\n"
    );
    let f = failures(&v, &text, None);
    let lines: Vec<(usize, Option<&str>, &str)> = f
        .iter()
        .map(|f| (f.line, f.kind.as_deref(), f.pointer.as_str()))
        .collect();
    assert!(lines.contains(&(3, Some("event"), "/seq")), "{f:#?}");
    assert!(
        lines.contains(&(4, Some("client-message"), "/versions"))
            || lines
                .iter()
                .any(|l| l.0 == 4 && l.1 == Some("client-message")),
        "{f:#?}"
    );
    assert!(
        f.iter()
            .any(|f| f.line == 5 && f.reason.starts_with("invalid JSON")),
        "{f:#?}"
    );
    assert!(
        f.iter()
            .any(|f| f.line == 6 && f.kind.as_deref() == Some("event")),
        "{f:#?}"
    );
    assert!(f.iter().all(|f| f.line != 1), "{f:#?}");
    let stats = v.validate_text(&text, None, |_| {});
    assert_eq!((stats.values, stats.invalid), (5, 4));
}

#[test]
fn a_json_array_document_reports_the_line_of_each_element() {
    let v = validators(Contract::Writer);
    let text = "[\n  {\"type\": \"ping\", \"id\": \"a\"},\n  {\"type\": \"ping\"}\n]\n";
    let f = failures(&v, text, None);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].line, 3);
    assert_eq!(f[0].kind.as_deref(), Some("server-message"));
}

#[test]
fn unknown_shapes_ask_for_a_kind_and_explicit_kinds_are_checked() {
    let v = validators(Contract::Writer);
    let f = failures(&v, "{\"hello\": 1}\n", None);
    assert_eq!(f.len(), 1);
    assert!(f[0].reason.contains("--kind"), "{f:?}");
    assert!(v.check_kind("event").is_ok());
    assert!(v.check_kind("nope").is_err());
    // Forced kind: a ping validated as an event fails at the root.
    let f = failures(&v, "{\"type\": \"ping\", \"id\": \"a\"}\n", Some("event"));
    assert!(!f.is_empty());
    assert!(f.iter().all(|f| f.kind.as_deref() == Some("event")));
}

#[test]
fn rw_version_5_unknown_server_message_types_pass_the_reader_and_fail_the_writer() {
    let text = "{\"type\": \"notice\", \"text\": \"hi\"}\n";
    assert!(failures(&validators(Contract::Reader), text, None).is_empty());
    assert!(!failures(&validators(Contract::Writer), text, None).is_empty());
}

#[test]
fn per_tag_fast_path_agrees_with_the_whole_union() {
    // Known type with bad data, unknown type with any object data, known type with
    // data of another type: the per-tag validator and the union give the same verdict.
    let w = validators(Contract::Writer);
    let env = |t: &str, data: serde_json::Value| json!({"event_id": "e1", "run_id": "r1", "seq": 1, "type": t, "time": "2026-11-22T10:00:00Z", "data": data});
    let cases = [
        (env("run.status", json!({"status": "running"})), true),
        (env("run.status", json!({"status": "paused"})), false),
        (
            env("run.status", json!({"level": "info", "message": "x"})),
            false,
        ),
        (
            env("log.line", json!({"level": "info", "message": "x"})),
            true,
        ),
        (env("x.custom", json!({"anything": [1, 2]})), true),
        (env("x.custom", json!("not an object")), false),
    ];
    let whole = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(
            &serde_json::from_str(
                &std::fs::read_to_string(v1_dir().join("event.writer.schema.json")).expect("read"),
            )
            .expect("json"),
        )
        .expect("compile");
    for (v, ok) in cases {
        let (kind, errs) = w.validate_value(&v, None);
        assert_eq!(kind, Some("event"));
        assert_eq!(errs.is_empty(), ok, "{v}: {errs:?}");
        assert_eq!(whole.is_valid(&v), ok, "{v}");
    }
}

#[test]
fn a_broken_first_line_does_not_hide_the_other_lines_and_bom_crlf_are_accepted() {
    let v = validators(Contract::Writer);
    let text = "\u{feff}{\"type\": \"ping\",\r\n{\"type\": \"ping\", \"id\": \"a\"}\r\n{\"type\": \"ping\"}\r\n";
    let f = failures(&v, text, None);
    let lines: Vec<usize> = f.iter().map(|f| f.line).collect();
    assert!(
        lines.contains(&1) && lines.contains(&3) && !lines.contains(&2),
        "{f:#?}"
    );
    assert!(
        f.iter()
            .any(|f| f.line == 1 && f.reason.starts_with("invalid JSON"))
    );
    // A pretty-printed single document is read whole.
    let doc = "{\n  \"type\": \"ping\",\n  \"id\": \"a\"\n}\n";
    assert!(failures(&v, doc, None).is_empty());
}
