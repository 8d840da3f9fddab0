//! Speed of the compatibility engine on the real tree: `compare_trees` of `schema/v1`
//! against a copy with one run-status value added (both directions, every schema).
//!
//! Run: `cargo bench -p runwire-schema --bench diff`.

use std::{hint::black_box, path::Path};

use criterion::{Criterion, criterion_group, criterion_main};
use runwire_schema::{compat::compare_trees, tree::SchemaTree};
use serde_json::{Value, json};

fn add_status(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(rs)) = m.get_mut("RunStatus")
                && let Some(Value::Array(e)) = rs.get_mut("enum")
            {
                e.push(json!("paused"));
            }
            m.values_mut().for_each(add_status);
        }
        Value::Array(a) => a.iter_mut().for_each(add_status),
        _ => {}
    }
}

fn bench(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/v1");
    let old = SchemaTree::from_dir(&dir).expect("schema/v1");
    let mut new = old.clone();
    new.files.values_mut().for_each(add_status);
    assert!(!compare_trees(&old, &new).is_empty());
    let mut g = c.benchmark_group("diff");
    g.bench_function("schema_v1_vs_itself", |b| {
        b.iter(|| compare_trees(black_box(&old), black_box(&old)));
    });
    g.bench_function("schema_v1_vs_status_added", |b| {
        b.iter(|| compare_trees(black_box(&old), black_box(&new)));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
