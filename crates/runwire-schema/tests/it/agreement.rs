//! serde and the generated schemas agree (spec §18.3): every valid example payload and
//! every example in the spec validates against the writer and reader schemas and decodes
//! with serde; every invalid payload is rejected by serde and by the reader schema;
//! everything serde emits passes the writer schema (proptest).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use proptest::prelude::*;
use runwire_protocol::{
    RunSnapshot, arbitrary as arb,
    codec::{self, DecodeError},
    http::{AppendRequest, AppendResponse, Health, HistoryResponse, HttpError, NewEvent, RunList},
};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Payload kind (as used in fixture file names and spec example blocks) → schema name.
const KINDS: &[(&str, &str)] = &[
    ("client-message", "client-message"),
    ("server-message", "server-message"),
    ("event", "event"),
    ("snapshot", "snapshot"),
    ("new-event", "http/new-event"),
    ("append-request", "http/append-request"),
    ("append-response", "http/append-response"),
    ("history-response", "http/history-response"),
    ("run-list", "http/run-list"),
    ("http-error", "http/error"),
    ("health", "http/health"),
];

struct Validators {
    by_kind: BTreeMap<String, (jsonschema::Validator, jsonschema::Validator)>,
}

fn validators() -> &'static Validators {
    static V: OnceLock<Validators> = OnceLock::new();
    V.get_or_init(|| {
        let dir = root().join("schema/v1");
        let load = |name: &str| -> jsonschema::Validator {
            let path = dir.join(name);
            let schema: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let by_kind = KINDS
            .iter()
            .map(|(kind, name)| {
                (
                    (*kind).to_owned(),
                    (
                        load(&format!("{name}.writer.schema.json")),
                        load(&format!("{name}.reader.schema.json")),
                    ),
                )
            })
            .collect();
        Validators { by_kind }
    })
}

fn schema_errors(kind: &str, writer: bool, v: &Value) -> Vec<String> {
    let (w, r) = &validators().by_kind[kind];
    let val = if writer { w } else { r };
    val.iter_errors(v)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn serde_decode(kind: &str, bytes: &[u8]) -> Result<(), DecodeError> {
    let max = runwire_protocol::defaults::MAX_FRAME_BYTES as usize;
    match kind {
        "client-message" => codec::decode_client_message(bytes, max).map(drop),
        "server-message" => codec::decode_server_message(bytes, max).map(drop),
        "event" => codec::decode_event(bytes, max).map(drop),
        "snapshot" => codec::decode::<RunSnapshot>(bytes, max, kind).map(drop),
        "new-event" => codec::decode::<NewEvent>(bytes, max, kind).map(drop),
        "append-request" => codec::decode::<AppendRequest>(bytes, max, kind).map(drop),
        "append-response" => codec::decode::<AppendResponse>(bytes, max, kind).map(drop),
        "history-response" => codec::decode::<HistoryResponse>(bytes, max, kind).map(drop),
        "run-list" => codec::decode::<RunList>(bytes, max, kind).map(drop),
        "http-error" => codec::decode::<HttpError>(bytes, max, kind).map(drop),
        "health" => codec::decode::<Health>(bytes, max, kind).map(drop),
        other => panic!("unknown kind {other}"),
    }
}

fn payload_files(which: &str) -> Vec<(String, PathBuf)> {
    let dir = root().join("fixtures/payloads").join(which);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            (stem.split_once("--").unwrap().0.to_owned(), p)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn valid_payloads_pass_both_contracts() {
    for (kind, path) in payload_files("valid") {
        let bytes = std::fs::read(&path).unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        for writer in [true, false] {
            let errs = schema_errors(&kind, writer, &v);
            assert!(
                errs.is_empty(),
                "{} ({}): {errs:?}",
                path.display(),
                if writer { "writer" } else { "reader" }
            );
        }
        serde_decode(&kind, &bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn invalid_payloads_are_rejected_by_serde_and_the_reader_schema() {
    for (kind, path) in payload_files("invalid") {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            serde_decode(&kind, &bytes).is_err(),
            "serde accepted {}",
            path.display()
        );
        let name = path.file_name().unwrap().to_string_lossy();
        // Syntax errors and size limits are not a schema's business.
        if name.contains("--syntax-") || name.contains("--oversize-") {
            continue;
        }
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        if name.contains("--unknown-type") {
            // Readers accept messages of unknown type (the server answers with a
            // non-fatal error, spec §14.2): only the writer contract rejects them.
            assert!(
                schema_errors(&kind, false, &v).is_empty(),
                "reader schema rejected {}",
                path.display()
            );
            assert!(
                !schema_errors(&kind, true, &v).is_empty(),
                "writer schema accepted {}",
                path.display()
            );
            continue;
        }
        assert!(
            !schema_errors(&kind, false, &v).is_empty(),
            "reader schema accepted {}",
            path.display()
        );
        assert!(
            !schema_errors(&kind, true, &v).is_empty(),
            "writer schema accepted {}",
            path.display()
        );
    }
}

/// Examples in the spec: fenced blocks with the info string `json rw:KIND`.
fn spec_examples() -> Vec<(usize, String, String)> {
    let src = std::fs::read_to_string(root().join("spec/protocol.md")).unwrap();
    let mut out = Vec::new();
    let mut current: Option<(usize, String, String)> = None;
    for (i, line) in src.lines().enumerate() {
        let t = line.trim_start();
        if let Some((start, kind, mut body)) = current.take() {
            if t.starts_with("```") {
                out.push((start, kind, body));
            } else {
                body.push_str(line);
                body.push('\n');
                current = Some((start, kind, body));
            }
        } else if let Some(info) = t.strip_prefix("```json rw:") {
            current = Some((i + 1, info.trim().to_owned(), String::new()));
        }
    }
    assert!(
        current.is_none(),
        "unterminated example block in spec/protocol.md"
    );
    out
}

#[test]
fn spec_examples_validate_and_decode() {
    let examples = spec_examples();
    let kinds: BTreeMap<&str, usize> = examples.iter().fold(BTreeMap::new(), |mut m, (_, k, _)| {
        *m.entry(k.as_str()).or_default() += 1;
        m
    });
    for (line, kind, body) in &examples {
        assert!(
            KINDS.iter().any(|(k, _)| k == kind),
            "spec line {line}: unknown example kind rw:{kind}"
        );
        let v: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("spec line {line}: not JSON: {e}"));
        let errs = schema_errors(kind, true, &v);
        assert!(
            errs.is_empty(),
            "spec line {line} (rw:{kind}) fails the writer schema: {errs:?}"
        );
        let errs = schema_errors(kind, false, &v);
        assert!(
            errs.is_empty(),
            "spec line {line} (rw:{kind}) fails the reader schema: {errs:?}"
        );
        serde_decode(kind, body.as_bytes())
            .unwrap_or_else(|e| panic!("spec line {line} (rw:{kind}): {e}"));
    }
    // Every client and server message type and every event type has an example.
    let types_of =
        |kind: &str| -> Vec<String> {
            examples
                .iter()
                .filter(|(_, k, _)| k == kind)
                .filter_map(|(_, _, b)| serde_json::from_str::<Value>(b).ok())
                .flat_map(|v| {
                    let mut t = vec![
                        v.get("type")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    ];
                    if let Some(e) = v
                        .get("event")
                        .and_then(|e| e.get("type"))
                        .and_then(Value::as_str)
                    {
                        t.push(e.to_owned());
                    }
                    if let Some(es) = v.get("events").and_then(Value::as_array) {
                        t.extend(es.iter().filter_map(|e| {
                            e.get("type").and_then(Value::as_str).map(str::to_owned)
                        }));
                    }
                    t
                })
                .collect()
        };
    let client = types_of("client-message");
    for t in runwire_protocol::ClientMessage::TYPES {
        assert!(
            client.iter().any(|c| c == t),
            "spec has no example of client message {t}"
        );
    }
    let server = types_of("server-message");
    for t in runwire_protocol::ServerMessage::TYPES {
        assert!(
            server.iter().any(|c| c == t),
            "spec has no example of server message {t}"
        );
    }
    let mut events = types_of("event");
    events.extend(server);
    events.extend(types_of("new-event"));
    events.extend(types_of("append-request"));
    for t in runwire_protocol::KNOWN_EVENT_TYPES {
        assert!(
            events.iter().any(|c| c == t),
            "spec has no example of event type {t}"
        );
    }
    assert!(kinds.len() >= 8, "spec examples cover only {kinds:?}");
}

fn writer_ok<T: serde::Serialize>(kind: &str, value: &T) -> Result<(), TestCaseError> {
    let v = serde_json::to_value(value).unwrap();
    let errs = schema_errors(kind, true, &v);
    prop_assert!(
        errs.is_empty(),
        "writer schema rejects what serde emits: {errs:?}\n{v}"
    );
    let errs = schema_errors(kind, false, &v);
    prop_assert!(
        errs.is_empty(),
        "reader schema rejects what serde emits: {errs:?}\n{v}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("RUNWIRE_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn serde_output_passes_the_writer_schema(
        c in arb::client_message(),
        s in arb::server_message(),
        e in arb::event(),
        n in arb::append_request(),
        r in arb::append_response(),
        h in arb::history_response(),
        x in arb::http_error(),
    ) {
        writer_ok("client-message", &c)?;
        // `ErrorCode::Other` exists for readers (unknown codes from newer peers); a v1
        // writer emits only the codes v1 defines, so only the reader contract applies.
        if matches!(&s, runwire_protocol::ServerMessage::Error(e) if matches!(e.code, runwire_protocol::ErrorCode::Other(_))) {
            let v = serde_json::to_value(&s).unwrap();
            prop_assert!(schema_errors("server-message", false, &v).is_empty());
        } else {
            writer_ok("server-message", &s)?;
        }
        writer_ok("event", &e)?;
        writer_ok("append-request", &n)?;
        writer_ok("append-response", &r)?;
        writer_ok("history-response", &h)?;
        writer_ok("http-error", &x)?;
    }
}

#[test]
fn every_integer_is_bounded() {
    fn walk(v: &Value, path: &str, bad: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                let is_int = match m.get("type") {
                    Some(Value::String(t)) => t == "integer",
                    Some(Value::Array(a)) => a.iter().any(|t| t == "integer"),
                    _ => false,
                };
                if is_int && (!m.contains_key("minimum") || !m.contains_key("maximum")) {
                    bad.push(path.to_owned());
                }
                if let Some(max) = m.get("maximum").and_then(Value::as_u64)
                    && max > runwire_protocol::MAX_SAFE_INTEGER
                {
                    bad.push(format!("{path} (maximum beyond 2^53-1)"));
                }
                for (k, c) in m {
                    walk(c, &format!("{path}/{k}"), bad);
                }
            }
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, c)| walk(c, &format!("{path}/{i}"), bad)),
            _ => {}
        }
    }
    let bundle: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schema/v1/bundle.schema.json")).unwrap(),
    )
    .unwrap();
    let mut bad = Vec::new();
    walk(&bundle, "", &mut bad);
    assert!(bad.is_empty(), "integers without explicit bounds: {bad:#?}");
}

#[test]
fn committed_schemas_match_the_types() {
    let drift = runwire_schema::generate::check_dir(&root().join("schema/v1"), "v1").unwrap();
    assert!(
        drift.is_empty(),
        "schema/v1 differs from the types; run `cargo xtask schema`: {drift:?}"
    );
}
