//! Real schemars output of changed Rust types, classified by the engine. The trees are
//! generated with the same transforms as `schema/v1` and committed under
//! `fixtures/schema-compat/schemars_*` (so the corpus snapshots cover them too);
//! `RUNWIRE_UPDATE_FIXTURES=1` rewrites them.

use std::collections::BTreeMap;

use runwire_schema::{
    compat::{Dir, compare_trees},
    generate::{self, Contract},
    rules::Severity,
    tree::{MemSource, SchemaTree},
};
use schemars::JsonSchema;
use serde_json::{Value, json};

use super::corpus::corpus_dir;

#[allow(dead_code)]
mod v1 {
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    /// A job message.
    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub(super) enum Msg {
        /// Starts a job.
        Start(Start),
        /// Stops a job.
        Stop(Stop),
    }
    /// Start body.
    #[derive(Serialize, Deserialize, JsonSchema)]
    pub(super) struct Start {
        /// The job.
        pub(super) job: String,
        /// How often to retry.
        pub(super) retries: u32,
    }
    /// Stop body.
    #[derive(Serialize, Deserialize, JsonSchema)]
    pub(super) struct Stop {
        /// The job.
        pub(super) job: String,
    }
}

#[allow(dead_code)]
mod add_variant {
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    pub(super) use super::v1::{Start, Stop};
    /// A job message.
    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub(super) enum Msg {
        /// Starts a job.
        Start(Start),
        /// Stops a job.
        Stop(Stop),
        /// Pauses a job.
        Pause(Pause),
    }
    /// Pause body.
    #[derive(Serialize, Deserialize, JsonSchema)]
    pub(super) struct Pause {
        /// The job.
        pub(super) job: String,
    }
}

#[allow(dead_code)]
mod add_required_field {
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    pub(super) use super::v1::Stop;
    /// A job message.
    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub(super) enum Msg {
        /// Starts a job.
        Start(Start),
        /// Stops a job.
        Stop(Stop),
    }
    /// Start body.
    #[derive(Serialize, Deserialize, JsonSchema)]
    pub(super) struct Start {
        /// The job.
        pub(super) job: String,
        /// How often to retry.
        pub(super) retries: u32,
        /// Who owns the job.
        pub(super) owner: String,
    }
}

#[allow(dead_code)]
mod widen_u32_u64 {
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    pub(super) use super::v1::Stop;
    /// A job message.
    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub(super) enum Msg {
        /// Starts a job.
        Start(Start),
        /// Stops a job.
        Stop(Stop),
    }
    /// Start body.
    #[derive(Serialize, Deserialize, JsonSchema)]
    pub(super) struct Start {
        /// The job.
        pub(super) job: String,
        /// How often to retry.
        pub(super) retries: u64,
    }
}

/// The files of a one-schema tree (`msg`, server-to-client) generated from `T`.
fn tree_files<T: JsonSchema>() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for (contract, kind) in [(Contract::Writer, "writer"), (Contract::Reader, "reader")] {
        let path = format!("msg.{kind}.schema.json");
        let mut v = generate::root_schema::<T>(contract);
        let o = v.as_object_mut().expect("object schema");
        o.insert("$schema".into(), json!(generate::DIALECT));
        o.insert(
            "$id".into(),
            json!(format!("https://runwire.dev/schema/v1/{path}")),
        );
        files.insert(path, generate::render(&sorted(&v)));
    }
    let index = json!({"version": "v1", "schemas": [{
        "name": "msg", "direction": "server-to-client",
        "writer": "msg.writer.schema.json", "reader": "msg.reader.schema.json"
    }]});
    files.insert("index.json".into(), generate::render(&index));
    files
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<_> = m.keys().cloned().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[&k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        o => o.clone(),
    }
}

fn tree(files: &BTreeMap<String, String>, label: &str) -> SchemaTree {
    let mut src = MemSource {
        name: label.into(),
        files: files
            .iter()
            .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
            .collect(),
    };
    SchemaTree::load(&mut src, label).expect("tree")
}

/// Compares the committed fixture with freshly generated files (or rewrites it).
fn sync_fixture(
    case: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    toml: &str,
) {
    let dir = corpus_dir().join(case);
    let update = std::env::var_os("RUNWIRE_UPDATE_FIXTURES").is_some();
    let mut want: BTreeMap<std::path::PathBuf, String> = BTreeMap::new();
    for (side, files) in [("old", old), ("new", new)] {
        for (k, v) in files {
            want.insert(dir.join(side).join(k), v.clone());
        }
    }
    want.insert(dir.join("case.toml"), toml.to_string());
    for (path, text) in &want {
        if update {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        } else {
            let got = std::fs::read_to_string(path).unwrap_or_default();
            assert_eq!(
                &got,
                text,
                "{} is stale; rerun with RUNWIRE_UPDATE_FIXTURES=1",
                path.display()
            );
        }
    }
}

fn severities(old: &SchemaTree, new: &SchemaTree, rule: &str) -> Vec<(Dir, Severity)> {
    compare_trees(old, new)
        .into_iter()
        .filter(|f| f.rule == rule)
        .map(|f| (f.direction, f.severity))
        .collect()
}

#[test]
fn schemars_added_variant_breaks_old_readers() {
    let (o, n) = (tree_files::<v1::Msg>(), tree_files::<add_variant::Msg>());
    sync_fixture(
        "schemars_add_variant",
        &o,
        &n,
        "description = \"schemars output: a variant (Pause) added to an internally tagged enum whose reader has no catch-all.\"\nrules = [\"UNION_VARIANT_ADDED\"]\nexit = 1\n",
    );
    let (o, n) = (tree(&o, "old"), tree(&n, "new"));
    assert_eq!(
        severities(&o, &n, "UNION_VARIANT_ADDED"),
        vec![
            (Dir::NewWriterOldReader, Severity::Error),
            (Dir::OldWriterNewReader, Severity::Info)
        ]
    );
}

#[test]
fn schemars_added_required_field_breaks_new_readers() {
    let (o, n) = (
        tree_files::<v1::Msg>(),
        tree_files::<add_required_field::Msg>(),
    );
    sync_fixture(
        "schemars_add_required_field",
        &o,
        &n,
        "description = \"schemars output: a required field (owner) added to a variant body.\"\nrules = [\"PROPERTY_REQUIRED_ADDED\"]\nexit = 1\n",
    );
    let (o, n) = (tree(&o, "old"), tree(&n, "new"));
    let f: Vec<_> = compare_trees(&o, &n);
    assert!(
        f.iter().any(|f| f.rule == "PROPERTY_REQUIRED_ADDED"
            && f.direction == Dir::OldWriterNewReader
            && f.severity == Severity::Error
            && f.path == "[type=start]/owner"),
        "{f:#?}"
    );
}

#[test]
fn schemars_widened_u32_to_u64_breaks_old_readers() {
    let (o, n) = (tree_files::<v1::Msg>(), tree_files::<widen_u32_u64::Msg>());
    sync_fixture(
        "schemars_widen_u32_u64",
        &o,
        &n,
        "description = \"schemars output: a u32 field widened to u64.\"\nrules = [\"INT_WIDTH_WIDENED\"]\nexit = 1\n",
    );
    let (o, n) = (tree(&o, "old"), tree(&n, "new"));
    assert_eq!(
        severities(&o, &n, "INT_WIDTH_WIDENED"),
        vec![
            (Dir::NewWriterOldReader, Severity::Error),
            (Dir::OldWriterNewReader, Severity::Info)
        ]
    );
}
