//! Every file under `fixtures/payloads/` decodes (valid/) or fails with a precise error
//! (invalid/), and valid files round-trip losslessly. Results are insta snapshots.

use std::path::{Path, PathBuf};

use runwire_protocol::{
    MAX_SEQ, RunSnapshot,
    codec::{self, DecodeError},
    defaults::MAX_FRAME_BYTES,
    http::{AppendRequest, AppendResponse, Health, HistoryResponse, HttpError, NewEvent, RunList},
};
use serde_json::Value;

fn dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/payloads")
        .join(kind)
}

fn files(kind: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    v
}

/// Decodes `bytes` as the kind named by the file name prefix (`<kind>--<case>.json`),
/// returning the re-encoded value.
fn decode(kind: &str, bytes: &[u8]) -> Result<Value, DecodeError> {
    let max = MAX_FRAME_BYTES as usize;
    let re = |s: String| serde_json::from_str::<Value>(&s).unwrap();
    Ok(match kind {
        "client-message" => re(codec::encode(&codec::decode_client_message(bytes, max)?)),
        "server-message" => re(codec::encode(&codec::decode_server_message(bytes, max)?)),
        "event" => re(codec::encode(&codec::decode_event(bytes, max)?)),
        "snapshot" => re(codec::encode(&codec::decode::<RunSnapshot>(
            bytes, max, kind,
        )?)),
        "new-event" => re(codec::encode(&codec::decode::<NewEvent>(bytes, max, kind)?)),
        "append-request" => re(codec::encode(&codec::decode::<AppendRequest>(
            bytes, max, kind,
        )?)),
        "append-response" => re(codec::encode(&codec::decode::<AppendResponse>(
            bytes, max, kind,
        )?)),
        "history-response" => re(codec::encode(&codec::decode::<HistoryResponse>(
            bytes, max, kind,
        )?)),
        "run-list" => re(codec::encode(&codec::decode::<RunList>(bytes, max, kind)?)),
        "http-error" => re(codec::encode(&codec::decode::<HttpError>(
            bytes, max, kind,
        )?)),
        "health" => re(codec::encode(&codec::decode::<Health>(bytes, max, kind)?)),
        other => panic!("unknown payload kind {other}"),
    })
}

/// JSON equality where `10` and `10.0` are the same number (a float field re-encodes
/// integral values with a fraction).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn kind_and_case(p: &Path) -> (String, String) {
    let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
    let (k, c) = stem
        .split_once("--")
        .expect("file name is <kind>--<case>.json");
    (k.to_owned(), c.to_owned())
}

#[test]
fn valid_payloads_decode_and_round_trip_losslessly() {
    let files = files("valid");
    assert!(files.len() >= 35, "expected at least 35 valid payloads");
    for p in files {
        let (kind, _case) = kind_and_case(&p);
        let bytes = std::fs::read(&p).unwrap();
        let original: Value = serde_json::from_slice(&bytes).unwrap();
        match decode(&kind, &bytes) {
            Ok(v) => assert!(
                json_eq(&v, &original),
                "{} does not round-trip:\n{v}\n{original}",
                p.display()
            ),
            Err(e) => panic!("{} should decode: {e}", p.display()),
        }
    }
}

#[test]
fn invalid_payloads_fail_with_precise_errors() {
    let files = files("invalid");
    assert!(files.len() >= 35, "expected at least 35 invalid payloads");
    let mut report = String::new();
    for p in files {
        let (kind, case) = kind_and_case(&p);
        let bytes = std::fs::read(&p).unwrap();
        match decode(&kind, &bytes) {
            Ok(v) => panic!("{} should not decode, got {v}", p.display()),
            Err(e) => {
                report.push_str(&format!(
                    "{kind}--{case}\n  code: {}\n  pointer: {}\n  error: {e}\n",
                    e.error_code(),
                    e.pointer().unwrap_or("-"),
                ));
            }
        }
    }
    insta::assert_snapshot!("invalid_payloads", report);
}

#[test]
fn seq_limit_is_2_pow_53_minus_1() {
    assert_eq!(MAX_SEQ, (1u64 << 53) - 1);
}
