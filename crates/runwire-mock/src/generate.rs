//! Generating the run logs a fixture declares: deterministic event content from the
//! fixture's seed, with hand-written overrides.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng, seq::IndexedRandom};
use rand_chacha::ChaCha8Rng;
use runwire_protocol::{
    Epoch, Event, EventId, EventPayload, KNOWN_EVENT_TYPES, RunId, RunSnapshot, Timestamp,
    codec::encode,
};
use serde_json::{Value, json};

use crate::fixture::{Fixture, RunLog};

/// The event types the generator can produce: every type v1 defines
/// ([`KNOWN_EVENT_TYPES`], spec order) but the first, `run.status`, which the generator
/// writes itself as a log's first and terminal events.
pub const SUPPORTED_TYPES: &[&str] = match KNOWN_EVENT_TYPES.split_first() {
    Some((_, rest)) => rest,
    None => &[],
};

const DEFAULT_TYPES: &[&str] = &["run.progress", "log.line", "run.phase", "agent.message"];

const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima",
];

/// One generated log.
#[derive(Debug, Clone)]
pub struct LogData {
    /// The typed events, seq 1 first.
    pub events: Vec<Event>,
    /// The events as sent on the wire (with any extra envelope members).
    pub wire: Vec<Value>,
}

/// Every log of a fixture, by (run id, epoch).
#[derive(Debug, Clone, Default)]
pub struct Logs {
    logs: BTreeMap<(String, String), LogData>,
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn timestamp(seq: u64) -> Timestamp {
    let s = seq;
    let text = format!(
        "2026-01-{:02}T{:02}:{:02}:{:02}Z",
        1 + s / 86_400,
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60
    );
    Timestamp::new(text).unwrap_or_else(|_| Timestamp::now())
}

fn words(rng: &mut ChaCha8Rng, n: usize) -> String {
    (0..n)
        .map(|_| *WORDS.choose(rng).unwrap_or(&"word"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn payload(
    ty: &str,
    seq: u64,
    len: u64,
    rng: &mut ChaCha8Rng,
    chunk: &mut u32,
    last_chunk: bool,
) -> Value {
    match ty {
        "run.progress" => json!({
            "percent": ((seq * 100) / len.max(1)).min(100),
            "step": format!("step {seq}"),
            "current": seq,
            "total": len,
        }),
        "run.metadata" => json!({
            "agent": "mock-agent",
            "model": "mock-model",
            "labels": { "word": words(rng, 1) },
        }),
        "run.phase" => json!({
            "phase": *["plan", "build", "test", "review", "document"].choose(rng).unwrap_or(&"plan"),
        }),
        "log.line" => json!({
            "level": *["debug", "info", "warn"].choose(rng).unwrap_or(&"info"),
            "message": format!("line {seq}: {}", words(rng, 3)),
            "source": "mock",
        }),
        "tool.started" => json!({
            "call_id": format!("call-{seq}"),
            "tool": *["shell", "read_file", "search"].choose(rng).unwrap_or(&"shell"),
            "input": { "n": rng.random_range(0..1000) },
        }),
        "tool.finished" => json!({
            "call_id": format!("call-{seq}"),
            "tool": "shell",
            "ok": true,
            "output": words(rng, 2),
            "duration_ms": rng.random_range(1..500),
        }),
        "agent.message" | "agent.thinking" => json!({
            "message_id": "m-1",
            "delta": format!("{} ", words(rng, 2)),
        }),
        "file.changed" => json!({
            "path": format!("src/file{}.rs", rng.random_range(0..20)),
            "change": "modified",
        }),
        "artifact.created" => json!({
            "artifact_id": format!("a-{seq}"),
            "kind": "report",
            "uri": format!("https://example.invalid/artifacts/{seq}"),
            "media_type": "text/plain",
            "size_bytes": rng.random_range(1..100_000),
        }),
        "todo.updated" => json!({
            "items": [
                { "id": "t1", "text": words(rng, 2), "status": "completed" },
                { "id": "t2", "text": words(rng, 2), "status": "in_progress" },
            ],
        }),
        "output.chunk" => {
            let index = *chunk;
            *chunk += 1;
            json!({
                "output_id": "out-1",
                "index": index,
                "last": last_chunk,
                "encoding": "utf8",
                "data": format!("chunk {index}: {}\n", words(rng, 4)),
                "media_type": "text/plain",
            })
        }
        _ => json!({}),
    }
}

fn generate_log(r: &RunLog, seed: u64) -> LogData {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv(&r.run_id) ^ fnv(&r.epoch).rotate_left(17));
    let types: Vec<&str> = if r.types.is_empty() {
        DEFAULT_TYPES.to_vec()
    } else {
        r.types.iter().map(String::as_str).collect()
    };
    // Choose every type first, so the last output chunk is known.
    let mut chosen: Vec<String> = Vec::new();
    for seq in 1..=r.length {
        let ty = if let Some(o) = r.overrides.iter().find(|o| o.seq == seq) {
            o.event_type.clone()
        } else if (seq == r.length && r.end.is_some())
            || (seq == 1 && (r.length > 1 || r.end.is_none()))
        {
            "run.status".into()
        } else {
            (*types.choose(&mut rng).unwrap_or(&"run.progress")).to_owned()
        };
        chosen.push(ty);
    }
    let last_chunk_seq = chosen
        .iter()
        .enumerate()
        .rev()
        .find(|(i, t)| {
            t.as_str() == "output.chunk" && !r.overrides.iter().any(|o| o.seq == *i as u64 + 1)
        })
        .map(|(i, _)| i as u64 + 1);
    let run_id = RunId::new(r.run_id.clone()).unwrap_or_else(|_| RunId::new("run").expect("ok"));
    let mut events = Vec::new();
    let mut wire = Vec::new();
    let mut chunk = 0;
    for seq in 1..=r.length {
        let ty = &chosen[(seq - 1) as usize];
        let over = r.overrides.iter().find(|o| o.seq == seq);
        let data = match over {
            Some(o) => Value::Object(o.data.clone()),
            None if ty == "run.status" && seq == r.length && r.end.is_some() => {
                json!({ "status": r.end.map_or("completed", |e| e.as_str()) })
            }
            None if ty == "run.status" => json!({ "status": "running" }),
            None => payload(
                ty,
                seq,
                r.length,
                &mut rng,
                &mut chunk,
                Some(seq) == last_chunk_seq,
            ),
        };
        let payload =
            EventPayload::from_type_and_data(ty, data.clone()).unwrap_or(EventPayload::Unknown {
                event_type: ty.clone(),
                data,
            });
        let event = Event {
            event_id: EventId::new(format!("{}.{}.{seq}", r.run_id, r.epoch))
                .unwrap_or_else(|_| EventId::new(format!("ev-{seq}")).expect("valid")),
            run_id: run_id.clone(),
            seq,
            time: over
                .and_then(|o| o.time.clone())
                .and_then(|t| Timestamp::new(t).ok())
                .unwrap_or_else(|| timestamp(seq)),
            payload,
        };
        let mut value: Value = serde_json::from_str(&encode(&event)).unwrap_or(Value::Null);
        if let (Some(o), Value::Object(obj)) = (over.and_then(|o| o.extra.as_ref()), &mut value) {
            for (k, v) in o {
                obj.insert(k.clone(), v.clone());
            }
        }
        events.push(event);
        wire.push(value);
    }
    LogData { events, wire }
}

impl Logs {
    /// Generates every log of `fixture` from `seed`.
    pub fn generate(fixture: &Fixture, seed: u64) -> Self {
        let logs = fixture
            .runs
            .iter()
            .map(|r| ((r.run_id.clone(), r.epoch.clone()), generate_log(r, seed)))
            .collect();
        Self { logs }
    }

    /// One log.
    pub fn get(&self, run: &str, epoch: &str) -> Option<&LogData> {
        self.logs.get(&(run.to_owned(), epoch.to_owned()))
    }

    /// The wire form of one event.
    pub fn wire(&self, run: &str, epoch: &str, seq: u64) -> Option<&Value> {
        let log = self.get(run, epoch)?;
        log.wire.get(usize::try_from(seq.checked_sub(1)?).ok()?)
    }

    /// The typed event.
    pub fn event(&self, run: &str, epoch: &str, seq: u64) -> Option<&Event> {
        let log = self.get(run, epoch)?;
        log.events.get(usize::try_from(seq.checked_sub(1)?).ok()?)
    }

    /// The log folded up to `as_of_seq`.
    pub fn snapshot(&self, run: &str, epoch: &str, as_of_seq: u64) -> Option<RunSnapshot> {
        let log = self.get(run, epoch)?;
        let mut snap = RunSnapshot::empty(
            RunId::new(run.to_owned()).ok()?,
            Epoch::new(epoch.to_owned()).ok()?,
        );
        for e in log.events.iter().take_while(|e| e.seq <= as_of_seq) {
            snap.apply(e);
        }
        Some(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_types_are_every_known_type_but_run_status() {
        assert_eq!(KNOWN_EVENT_TYPES[0], "run.status");
        assert_eq!(SUPPORTED_TYPES.len() + 1, KNOWN_EVENT_TYPES.len());
        assert!(!SUPPORTED_TYPES.contains(&"run.status"));
    }

    /// A type added to the protocol reaches `SUPPORTED_TYPES` by itself; this fails
    /// until `payload` generates valid content for it.
    #[test]
    fn every_supported_type_generates_a_valid_payload() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for ty in SUPPORTED_TYPES {
            let data = payload(ty, 3, 10, &mut rng, &mut 0, false);
            assert!(
                data.as_object().is_some_and(|o| !o.is_empty()),
                "{ty}: no generated content"
            );
            let p = EventPayload::from_type_and_data(ty, data)
                .unwrap_or_else(|e| panic!("{ty}: generated data does not decode: {e}"));
            assert!(p.is_known(), "{ty}");
        }
    }
}
