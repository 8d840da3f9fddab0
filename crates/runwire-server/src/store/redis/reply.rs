//! Reading Redis replies: arrays, strings, numbers and stream entries.

use redis::Value;
use runwire_protocol::{Epoch, raw::RawEvent};

use super::{StoreError, StoredEvent};

pub(super) fn value_str(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

/// A reply's string, taken without a copy (the event JSON of a stream entry is
/// moved into its `RawEvent` as Redis sent it).
fn into_string(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

pub(super) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("unexpected data in redis: {what}"))
}

pub(super) fn arr(v: Value) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Nil => Ok(Vec::new()),
        other => Err(corrupt(format_args!("expected an array, got {other:?}"))),
    }
}

pub(super) fn s_at(a: &[Value], i: usize) -> Result<String, StoreError> {
    a.get(i)
        .and_then(value_str)
        .ok_or_else(|| corrupt(format_args!("no string at {i}")))
}

pub(super) fn u_at(a: &[Value], i: usize) -> Result<u64, StoreError> {
    s_at(a, i)?
        .parse()
        .map_err(|_| corrupt(format_args!("no integer at {i}")))
}

pub(super) fn epoch_of(s: String) -> Result<Epoch, StoreError> {
    Epoch::new(s).map_err(|e| corrupt(format_args!("epoch: {e}")))
}

/// Parses stream entries `[[id, [field, value, …]], …]`.
pub(super) fn parse_entries(v: Value) -> Result<Vec<StoredEvent>, StoreError> {
    let mut out = Vec::new();
    for entry in arr(v)? {
        let e = arr(entry)?;
        let id = s_at(&e, 0)?;
        let seq = id
            .split_once('-')
            .and_then(|(s, _)| s.parse::<u64>().ok())
            .ok_or_else(|| corrupt(format_args!("stream id {id}")))?;
        let fields = arr(e.into_iter().nth(1).unwrap_or(Value::Nil))?;
        let mut json = None;
        let mut flush = false;
        let mut it = fields.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            match &k {
                Value::BulkString(b) if b == b"j" => json = into_string(v),
                Value::BulkString(b) if b == b"f" => {
                    flush = matches!(&v, Value::BulkString(b) if b == b"1");
                }
                _ => {}
            }
        }
        let json = json.ok_or_else(|| corrupt(format_args!("entry {id} has no event")))?;
        out.push(StoredEvent {
            seq,
            json: RawEvent::from_encoded(json),
            flush,
        });
    }
    Ok(out)
}
