//! Validation throughput of `runwire schema validate` (target: at least 500,000 small
//! events per second on one core).
//!
//! Run: `cargo bench -p runwire-schema --bench validate`. The input is JSON lines of
//! ~250-byte `run.progress` events (and a mix of event types), validated with shape
//! detection against `schema/v1`'s writer contract, parsing included.

use std::{hint::black_box, path::Path};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use runwire_schema::{compat::Contract, tree::SchemaTree, validate::Validators};
use serde_json::json;

const N: usize = 10_000;

fn progress_lines() -> String {
    let mut s = String::new();
    for i in 1..=N {
        let v = json!({
            "event_id": format!("evt-run-42-{i}"),
            "run_id": "run-42",
            "seq": i,
            "type": "run.progress",
            "time": "2026-11-22T10:00:00.000Z",
            "data": {"percent": (i % 100) as f64 + 0.5, "step": "compile", "current": i % 40, "total": 40,
                     "tool": "cargo", "message": "building crates for the release"}
        });
        s.push_str(&v.to_string());
        s.push('\n');
    }
    s
}

fn mixed_lines() -> String {
    let payloads = [
        ("run.status", json!({"status": "running"})),
        (
            "log.line",
            json!({"level": "info", "message": "compiling runwire-schema v0.1.0", "source": "cargo"}),
        ),
        (
            "tool.started",
            json!({"call_id": "call-7", "tool": "bash", "input": {"cmd": "cargo test"}}),
        ),
        (
            "agent.message",
            json!({"message_id": "m-1", "delta": "The build passed; next I will run", "done": false}),
        ),
        ("run.progress", json!({"percent": 42.5, "step": "test"})),
    ];
    let mut s = String::new();
    for i in 1..=N {
        let (t, d) = &payloads[i % payloads.len()];
        let v = json!({"event_id": format!("evt-{i}"), "run_id": "run-42", "seq": i, "type": t,
                       "time": "2026-11-22T10:00:00Z", "data": d});
        s.push_str(&v.to_string());
        s.push('\n');
    }
    s
}

fn bench(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/v1");
    let tree = SchemaTree::from_dir(&dir).expect("schema/v1");
    let v = Validators::new(&tree, Contract::Writer).expect("compile");
    let progress = progress_lines();
    let mixed = mixed_lines();
    let avg = progress.len() / N;
    let mut g = c.benchmark_group("validate");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function(format!("progress_events_jsonl_{avg}B"), |b| {
        b.iter(|| {
            let stats = v.validate_text(black_box(&progress), None, |f| panic!("{f:?}"));
            assert_eq!(stats.invalid, 0);
        });
    });
    g.bench_function("mixed_events_jsonl", |b| {
        b.iter(|| {
            let stats = v.validate_text(black_box(&mixed), None, |f| panic!("{f:?}"));
            assert_eq!(stats.invalid, 0);
        });
    });
    let values: Vec<serde_json::Value> = progress
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    g.bench_function("progress_events_preparsed", |b| {
        b.iter(|| {
            for x in &values {
                let (_, errs) = v.validate_value(black_box(x), None);
                assert!(errs.is_empty());
            }
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
