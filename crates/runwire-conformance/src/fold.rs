//! The kit's own fold of a run's events into a `RunSnapshot`, written from the table of
//! spec §8.3 ("Snapshot folding") and nothing else.
//!
//! The reference server and client fold with `runwire_protocol::RunSnapshot::apply`.
//! If the kit judged servers with that same code, a bug in it would pass both the
//! reference server and the kit. So this module folds plain JSON, rule by rule, as an
//! outside implementer reading the table would, and the server suite compares a
//! server's snapshots (`GET /v1/runs/{id}` and `reset`) with it member by member
//! (`RW-SNAP-1`, `RW-SNAP-2`, `RW-SNAP-4`, `RW-SNAP-5`).

use rand::{Rng, seq::IndexedRandom};
use serde_json::{Map, Value, json};

/// `SNAPSHOT_RECENT_LOGS`: how many log lines a snapshot keeps (spec Appendix B).
pub const RECENT_LOGS: usize = 50;

/// The members of `run.progress` a snapshot keeps (§3, the `progress` row of §8.3).
const PROGRESS_MEMBERS: &[&str] = &["percent", "step", "current", "total", "tool", "message"];
/// The members of `run.metadata` that replace the stored ones (`labels` merge).
const METADATA_MEMBERS: &[&str] = &["agent", "model", "project", "title"];
/// Every member the table defines, in the table's order.
pub const SNAPSHOT_MEMBERS: &[&str] = &[
    "run_id",
    "epoch",
    "as_of_seq",
    "status",
    "status_reason",
    "progress",
    "metadata",
    "phase",
    "todos",
    "artifacts",
    "open_tool_calls",
    "recent_logs",
    "created_at",
    "updated_at",
];

/// Folds `events` (envelopes with `seq`, `type`, `time`, `data`, in any order; each
/// `seq` at most once is expected) into the snapshot of `run_id` in `epoch`.
pub fn fold(run_id: &str, epoch: &str, events: &[Value]) -> Value {
    let mut snap = Map::new();
    snap.insert("run_id".into(), json!(run_id));
    snap.insert("epoch".into(), json!(epoch));
    snap.insert("as_of_seq".into(), json!(0));
    let mut sorted: Vec<&Value> = events.iter().collect();
    sorted.sort_by_key(|e| e.get("seq").and_then(Value::as_u64).unwrap_or(0));
    for e in sorted {
        fold_one(&mut snap, e);
    }
    Value::Object(snap)
}

/// Folds one event onto a snapshot (an event at or below `as_of_seq` changes nothing,
/// `RW-SNAP-3`).
pub fn fold_one(snap: &mut Map<String, Value>, e: &Value) {
    let seq = e.get("seq").and_then(Value::as_u64).unwrap_or(0);
    let as_of = snap.get("as_of_seq").and_then(Value::as_u64).unwrap_or(0);
    if seq <= as_of {
        return;
    }
    let data = e.get("data").cloned().unwrap_or(Value::Null);
    let time = e.get("time").cloned().unwrap_or(Value::Null);
    match e.get("type").and_then(Value::as_str).unwrap_or("") {
        "run.status" => {
            if let Some(s) = data.get("status") {
                snap.insert("status".into(), s.clone());
            }
            match data.get("reason") {
                Some(r) if !r.is_null() => {
                    snap.insert("status_reason".into(), r.clone());
                }
                _ => {
                    snap.remove("status_reason");
                }
            }
        }
        "run.progress" => {
            let p = object_member(snap, "progress");
            for m in PROGRESS_MEMBERS {
                if let Some(v) = data.get(*m).filter(|v| !v.is_null()) {
                    p.insert((*m).to_owned(), v.clone());
                }
            }
        }
        "run.metadata" => {
            let md = object_member(snap, "metadata");
            for m in METADATA_MEMBERS {
                if let Some(v) = data.get(*m).filter(|v| !v.is_null()) {
                    md.insert((*m).to_owned(), v.clone());
                }
            }
            if let Some(labels) = data.get("labels").and_then(Value::as_object)
                && !labels.is_empty()
            {
                let l = md
                    .entry("labels")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(l) = l.as_object_mut() {
                    for (k, v) in labels {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        "run.phase" => {
            if let Some(p) = data.get("phase") {
                snap.insert("phase".into(), p.clone());
            }
        }
        "todo.updated" => {
            let items = data.get("items").cloned().unwrap_or(json!([]));
            if items.as_array().is_some_and(|a| !a.is_empty()) {
                snap.insert("todos".into(), items);
            } else {
                snap.remove("todos");
            }
        }
        "artifact.created" => array_member(snap, "artifacts").push(data),
        "tool.started" => {
            if let Some(id) = data.get("call_id").and_then(Value::as_str) {
                let id = id.to_owned();
                object_member(snap, "open_tool_calls").insert(id, data);
            }
        }
        "tool.finished" => {
            if let Some(id) = data.get("call_id").and_then(Value::as_str) {
                let empty = {
                    let calls = object_member(snap, "open_tool_calls");
                    calls.remove(id);
                    calls.is_empty()
                };
                if empty {
                    snap.remove("open_tool_calls");
                }
            }
        }
        "log.line" => {
            let logs = array_member(snap, "recent_logs");
            logs.push(data);
            if logs.len() > RECENT_LOGS {
                let extra = logs.len() - RECENT_LOGS;
                logs.drain(..extra);
            }
        }
        // agent.message, agent.thinking, file.changed, output.chunk and every other
        // type change nothing but as_of_seq and updated_at (RW-SNAP-4).
        _ => {}
    }
    snap.insert("as_of_seq".into(), json!(seq));
    if !snap.contains_key("created_at") {
        snap.insert("created_at".into(), time.clone());
    }
    snap.insert("updated_at".into(), time);
}

fn object_member<'a>(snap: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let v = snap.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

fn array_member<'a>(snap: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let v = snap.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if !v.is_array() {
        *v = Value::Array(Vec::new());
    }
    match v {
        Value::Array(a) => a,
        _ => unreachable!("just made an array"),
    }
}

/// Equal as JSON values, numbers compared by value (`1` equals `1.0`).
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_u64(), y.as_u64()) {
            (Some(p), Some(q)) => p == q,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// The members of the table where `got` differs from `want`, one line each (members a
/// server adds beyond the table are ignored, as readers ignore unknown members; an
/// empty collection counts as absent, since the table omits it).
pub fn diff(want: &Value, got: &Value) -> Vec<String> {
    let norm = |v: Option<&Value>| -> Option<Value> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) if a.is_empty() => None,
            Some(Value::Object(o)) if o.is_empty() => None,
            Some(v) => Some(v.clone()),
        }
    };
    let mut out = Vec::new();
    for m in SNAPSHOT_MEMBERS {
        // The timestamps are the server's own (it assigns `time`); they are compared
        // like the rest, from the events it returned.
        let (w, g) = (norm(want.get(*m)), norm(got.get(*m)));
        let equal = match (&w, &g) {
            (None, None) => true,
            (Some(a), Some(b)) => same(a, b),
            _ => false,
        };
        if !equal {
            out.push(format!(
                "{m}: the fold of the events gives {}, the server's snapshot has {}",
                short(w.as_ref()),
                short(g.as_ref())
            ));
        }
    }
    out
}

fn short(v: Option<&Value>) -> String {
    let s = v.map_or_else(|| "nothing".to_owned(), Value::to_string);
    if s.len() > 240 {
        let mut end = 240;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &s[..end], s.len())
    } else {
        s
    }
}

/// `n` events for the producer API (`{"type", "data"}`), of every type of §3 the
/// folding table names or passes over, with the choices that exercise the table's
/// edges: progress and metadata with only some members, labels merged over several
/// events, repeated tool call ids, finishes of calls never started, more than 50 log
/// lines, empty todo lists, and custom types. Statuses stay non-terminal so that the
/// run accepts every append.
pub fn random_events(rng: &mut impl Rng, n: usize) -> Vec<Value> {
    const TYPES: &[&str] = &[
        "run.status",
        "run.progress",
        "run.metadata",
        "run.phase",
        "log.line",
        "log.line",
        "log.line",
        "tool.started",
        "tool.finished",
        "agent.message",
        "agent.thinking",
        "file.changed",
        "artifact.created",
        "todo.updated",
        "output.chunk",
        "rwc.custom-event",
    ];
    let word = |rng: &mut dyn rand::RngCore| {
        *["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
            .choose(rng)
            .unwrap_or(&"alpha")
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let ty = *TYPES.choose(rng).unwrap_or(&"log.line");
        let data = match ty {
            "run.status" => {
                let status = *["queued", "running"].choose(rng).unwrap_or(&"running");
                if rng.random_bool(0.5) {
                    json!({"status": status, "reason": format!("reason {i}")})
                } else {
                    json!({"status": status})
                }
            }
            "run.progress" => {
                let mut d = Map::new();
                if rng.random_bool(0.6) {
                    d.insert("percent".into(), json!(rng.random_range(0..=100)));
                }
                if rng.random_bool(0.5) {
                    d.insert("step".into(), json!(format!("step {i}")));
                }
                if rng.random_bool(0.3) {
                    d.insert("current".into(), json!(i));
                    d.insert("total".into(), json!(n));
                }
                if rng.random_bool(0.3) {
                    d.insert("tool".into(), json!(word(rng)));
                }
                if rng.random_bool(0.4) || d.is_empty() {
                    d.insert("message".into(), json!(format!("working {i}")));
                }
                Value::Object(d)
            }
            "run.metadata" => {
                let mut d = Map::new();
                for m in METADATA_MEMBERS {
                    if rng.random_bool(0.35) {
                        d.insert((*m).to_owned(), json!(format!("{m}-{}", word(rng))));
                    }
                }
                if rng.random_bool(0.6) {
                    let mut l = Map::new();
                    l.insert(word(rng).to_owned(), json!(format!("v{i}")));
                    if rng.random_bool(0.5) {
                        l.insert(word(rng).to_owned(), json!(format!("w{i}")));
                    }
                    d.insert("labels".into(), Value::Object(l));
                }
                Value::Object(d)
            }
            "run.phase" => {
                json!({"phase": *["plan", "build", "test", "review", "document", "rwc-custom"].choose(rng).unwrap_or(&"plan")})
            }
            "log.line" => {
                let mut d = json!({
                    "level": *["trace", "debug", "info", "warn", "error"].choose(rng).unwrap_or(&"info"),
                    "message": format!("log line {i} {}", word(rng)),
                });
                if rng.random_bool(0.5) {
                    d["source"] = json!(word(rng));
                }
                d
            }
            "tool.started" => json!({
                "call_id": format!("call-{}", rng.random_range(0..8)),
                "tool": word(rng),
                "input": {"n": i},
            }),
            "tool.finished" => json!({
                "call_id": format!("call-{}", rng.random_range(0..10)),
                "tool": word(rng),
                "ok": rng.random_bool(0.7),
                "duration_ms": rng.random_range(1..1000),
            }),
            "agent.message" | "agent.thinking" => json!({
                "message_id": format!("m{}", i / 5),
                "delta": format!("{} ", word(rng)),
                "done": rng.random_bool(0.2),
            }),
            "file.changed" => json!({
                "path": format!("src/{}.rs", word(rng)),
                "change": *["created", "modified", "deleted"].choose(rng).unwrap_or(&"modified"),
            }),
            "artifact.created" => json!({
                "artifact_id": format!("art-{i}"),
                "kind": *["screenshot", "patch", "spec"].choose(rng).unwrap_or(&"patch"),
                "uri": format!("https://example.com/artifacts/{i}"),
                "media_type": "text/plain",
                "size_bytes": rng.random_range(1..100_000),
            }),
            "todo.updated" => {
                let k = rng.random_range(0..4);
                let items: Vec<Value> = (0..k)
                    .map(|j| {
                        json!({
                            "id": format!("t{j}"),
                            "text": format!("todo {j} {}", word(rng)),
                            "status": *["pending", "in_progress", "completed", "cancelled"].choose(rng).unwrap_or(&"pending"),
                        })
                    })
                    .collect();
                json!({"items": items})
            }
            "output.chunk" => json!({
                "output_id": format!("out-{}", i / 7),
                "index": i % 7,
                "encoding": "utf8",
                "data": format!("chunk {i}\n"),
            }),
            _ => json!({"anything": {"nested": [i, word(rng)]}}),
        };
        out.push(json!({"type": ty, "data": data}));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ev(seq: u64, ty: &str, data: Value) -> Value {
        json!({"seq": seq, "type": ty, "time": format!("2026-01-01T00:00:{seq:02}.000Z"), "data": data})
    }

    #[test]
    fn the_table_row_by_row() {
        let mut evs = vec![
            ev(
                1,
                "run.status",
                json!({"status": "running", "reason": "go"}),
            ),
            ev(2, "run.progress", json!({"percent": 10, "step": "a"})),
            ev(3, "run.progress", json!({"message": "m"})),
            ev(
                4,
                "run.metadata",
                json!({"agent": "x", "labels": {"a": "1"}}),
            ),
            ev(
                5,
                "run.metadata",
                json!({"model": "y", "labels": {"b": "2"}}),
            ),
            ev(6, "tool.started", json!({"call_id": "c1", "tool": "t"})),
            ev(7, "tool.started", json!({"call_id": "c2", "tool": "t"})),
            ev(
                8,
                "tool.finished",
                json!({"call_id": "c1", "tool": "t", "ok": true}),
            ),
            ev(
                9,
                "todo.updated",
                json!({"items": [{"id": "1", "text": "x", "status": "pending"}]}),
            ),
            ev(10, "todo.updated", json!({"items": []})),
            ev(11, "run.status", json!({"status": "running"})),
            ev(
                12,
                "agent.message",
                json!({"message_id": "m", "delta": "hi"}),
            ),
        ];
        for i in 0..55 {
            evs.push(ev(
                13 + i,
                "log.line",
                json!({"level": "info", "message": format!("l{i}")}),
            ));
        }
        let s = fold("r", "e", &evs);
        assert_eq!(s["as_of_seq"], 67);
        assert_eq!(s["status"], "running");
        assert!(
            s.get("status_reason").is_none(),
            "the last status had no reason"
        );
        assert_eq!(
            s["progress"],
            json!({"percent": 10, "step": "a", "message": "m"})
        );
        assert_eq!(
            s["metadata"],
            json!({"agent": "x", "model": "y", "labels": {"a": "1", "b": "2"}})
        );
        assert_eq!(s["open_tool_calls"].as_object().unwrap().len(), 1);
        assert!(s.get("todos").is_none(), "an empty todo list is omitted");
        let logs = s["recent_logs"].as_array().unwrap();
        assert_eq!(logs.len(), RECENT_LOGS);
        assert_eq!(logs[0]["message"], "l5");
        assert_eq!(s["created_at"], "2026-01-01T00:00:01.000Z");
        // Folding an event again changes nothing (RW-SNAP-3).
        let mut m = s.as_object().unwrap().clone();
        fold_one(&mut m, &evs[0]);
        assert_eq!(Value::Object(m), s);
    }

    #[test]
    fn planted_fold_bugs_are_differences() {
        let evs = vec![
            ev(1, "tool.started", json!({"call_id": "c1", "tool": "t"})),
            ev(
                2,
                "tool.finished",
                json!({"call_id": "c1", "tool": "t", "ok": true}),
            ),
        ];
        let want = fold("r", "e", &evs);
        // A server whose tool.finished does not remove the call.
        let mut bad = want.clone();
        bad["open_tool_calls"] = json!({"c1": {"call_id": "c1", "tool": "t"}});
        assert_eq!(diff(&want, &bad).len(), 1);
        // A server whose log window is one line short.
        let logs: Vec<Value> = (1..=60)
            .map(|i| {
                ev(
                    i,
                    "log.line",
                    json!({"level": "info", "message": format!("l{i}")}),
                )
            })
            .collect();
        let want = fold("r", "e", &logs);
        let mut bad = want.clone();
        bad["recent_logs"].as_array_mut().unwrap().remove(0);
        assert!(diff(&want, &bad)[0].starts_with("recent_logs"));
        // Numbers by value; members beyond the table ignored.
        let mut fine = want.clone();
        fine["extension"] = json!(1);
        assert!(diff(&want, &fine).is_empty());
        assert!(same(&json!({"p": 1}), &json!({"p": 1.0})));
    }

    #[test]
    fn random_events_cover_every_type_and_stay_open() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let evs = random_events(&mut rng, 400);
        let types: std::collections::BTreeSet<&str> =
            evs.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(types.len(), 14, "{types:?}");
        assert!(evs.iter().all(|e| e["type"] != "run.status"
            || matches!(e["data"]["status"].as_str(), Some("queued" | "running"))));
    }
}
