//! Schema generation from the Rust wire types (spec §18).
//!
//! Two contracts per type:
//! - the **writer** schema: what a sender may emit. Built from the serialize contract,
//!   with every object closed (`additionalProperties: false`).
//! - the **reader** schema: what a receiver must accept. Built from the deserialize
//!   contract, with objects open (unknown members are ignored, `RW-VERSION-3`),
//!   extensible enums open, and unknown server message types accepted.
//!
//! Output is deterministic: keys sorted, two-space indentation, trailing newline. Every
//! file has `$schema` (draft 2020-12) and an `$id`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    path::{Path, PathBuf},
};

use runwire_protocol as p;
use schemars::{JsonSchema, generate::SchemaSettings};
use serde_json::{Map, Value, json};

pub use crate::tree::Direction;

/// Base URL of every schema `$id`.
pub const SCHEMA_BASE_URL: &str = "https://runwire.dev/schema/";

/// The JSON Schema dialect of every file.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Which side of a type's contract a schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Contract {
    /// What a sender may emit (objects closed).
    Writer,
    /// What a receiver must accept (objects open).
    Reader,
}

impl Contract {
    /// `writer` or `reader`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Writer => "writer",
            Self::Reader => "reader",
        }
    }
}

/// One named schema with both contracts.
#[derive(Debug, Clone)]
pub struct SchemaPair {
    /// Relative name without suffix, e.g. `client/hello` or `events/run.status`.
    pub name: String,
    /// Who writes and who reads.
    pub direction: Direction,
    /// The writer schema.
    pub writer: Value,
    /// The reader schema.
    pub reader: Value,
}

fn settings(contract: Contract) -> SchemaSettings {
    let s = SchemaSettings::draft2020_12();
    match contract {
        Contract::Writer => s.for_serialize(),
        Contract::Reader => s.for_deserialize(),
    }
}

/// The root schema of `T` for a contract, after Runwire's transforms.
pub fn root_schema<T: JsonSchema>(contract: Contract) -> Value {
    let schema = settings(contract)
        .into_generator()
        .into_root_schema_for::<T>();
    let mut v = schema.to_value();
    normalize(&mut v, contract);
    v
}

/// Applies the transforms that make schemars output precise for both contracts.
fn normalize(root: &mut Value, contract: Contract) {
    inline_tagged_refs(root);
    walk(root, &mut |node| {
        const_union_to_enum(node);
        integer_bounds(node);
        match contract {
            Contract::Writer => close_object(node),
            Contract::Reader => open_extensible_enum(node),
        }
    });
    prune_defs(root);
}

fn walk(v: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match v {
        Value::Object(m) => {
            f(m);
            for (_, child) in m.iter_mut() {
                walk(child, f);
            }
        }
        Value::Array(a) => {
            for child in a {
                walk(child, f);
            }
        }
        _ => {}
    }
}

fn def_name(reference: &str) -> Option<&str> {
    reference.strip_prefix("#/$defs/")
}

/// schemars renders an internally tagged newtype variant as
/// `{"type":"object","properties":{"type":{"const":..}},"required":["type"],"$ref":"#/$defs/Body"}`.
/// Closing such a branch would reject the body's members and closing the body would
/// reject `type`, so the body is merged into the branch: every union branch becomes a
/// self-contained object schema (which also makes the compatibility engine's work
/// simpler: branches are compared by their tag, member by member).
fn inline_tagged_refs(root: &mut Value) {
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    walk(root, &mut |node| {
        let Some(Value::String(r)) = node.get("$ref") else {
            return;
        };
        if !(node.contains_key("properties") || node.contains_key("required")) {
            return;
        }
        let Some(body) = def_name(r)
            .and_then(|n| defs.get(n))
            .and_then(Value::as_object)
        else {
            return;
        };
        let body = body.clone();
        node.remove("$ref");
        if let Some(Value::Object(props)) = body.get("properties") {
            let target = node.entry("properties").or_insert_with(|| json!({}));
            if let Some(t) = target.as_object_mut() {
                for (k, v) in props {
                    t.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        if let Some(Value::Array(req)) = body.get("required") {
            let target = node.entry("required").or_insert_with(|| json!([]));
            if let Some(t) = target.as_array_mut() {
                for r in req {
                    if !t.contains(r) {
                        t.push(r.clone());
                    }
                }
                t.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                // Keep the tag first: it is what readers look at first.
                if let Some(pos) = t.iter().position(|x| x == "type") {
                    let tag = t.remove(pos);
                    t.insert(0, tag);
                }
            }
        }
        for (k, v) in &body {
            if !matches!(
                k.as_str(),
                "properties" | "required" | "description" | "title"
            ) {
                node.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        // A variant documented only by a link to its body ("See [`Hello`].") takes the
        // body's description, which says what the message is.
        let link_only = node
            .get("description")
            .and_then(Value::as_str)
            .is_some_and(|d| d.starts_with("See [`") && d.ends_with("`]."));
        if (link_only || !node.contains_key("description"))
            && let Some(d) = body.get("description")
        {
            node.insert("description".into(), d.clone());
        }
    });
}

/// schemars renders a documented unit-variant enum as `oneOf` of `const` branches.
/// It is an enum of strings: write it as one, so that value additions and removals
/// are compared as enum values. Variant docs move to `x-enum-descriptions`.
fn const_union_to_enum(node: &mut Map<String, Value>) {
    let Some(Value::Array(branches)) = node.get("oneOf") else {
        return;
    };
    let mut values = Vec::new();
    let mut docs = Map::new();
    for b in branches {
        let Some(obj) = b.as_object() else { return };
        let Some(Value::String(c)) = obj.get("const") else {
            return;
        };
        if obj
            .keys()
            .any(|k| !matches!(k.as_str(), "const" | "type" | "description"))
        {
            return;
        }
        if obj.get("type").is_some_and(|t| t != "string") {
            return;
        }
        if let Some(d) = obj.get("description") {
            docs.insert(c.clone(), d.clone());
        }
        values.push(Value::String(c.clone()));
    }
    if values.is_empty() {
        return;
    }
    node.remove("oneOf");
    node.insert("type".into(), json!("string"));
    node.insert("enum".into(), Value::Array(values));
    if !docs.is_empty() {
        node.insert("x-enum-descriptions".into(), Value::Object(docs));
    }
}

fn is_type(node: &Map<String, Value>, t: &str) -> bool {
    match node.get("type") {
        Some(Value::String(s)) => s == t,
        Some(Value::Array(a)) => a.iter().any(|x| x == t),
        _ => false,
    }
}

/// Writer contract: every object with declared members is closed.
fn close_object(node: &mut Map<String, Value>) {
    if is_type(node, "object")
        && node.contains_key("properties")
        && !node.contains_key("additionalProperties")
        && !node.contains_key("unevaluatedProperties")
    {
        node.insert("additionalProperties".into(), Value::Bool(false));
    }
}

/// Reader contract: enums marked `x-extensible-enum` accept any string.
fn open_extensible_enum(node: &mut Map<String, Value>) {
    if node.get("x-extensible-enum") == Some(&Value::Bool(true))
        && let Some(values) = node.remove("enum")
    {
        node.insert("x-known-values".into(), values);
    }
}

/// Every integer carries explicit bounds (spec §18.3: u64 beyond 2^53, u32 without a
/// maximum).
fn integer_bounds(node: &mut Map<String, Value>) {
    if !is_type(node, "integer") {
        return;
    }
    let safe = p::MAX_SAFE_INTEGER;
    let (min, max): (i64, u64) = match node.get("format").and_then(Value::as_str) {
        Some("uint8") => (0, u64::from(u8::MAX)),
        Some("uint16") => (0, u64::from(u16::MAX)),
        Some("uint32") => (0, u64::from(u32::MAX)),
        Some("int8") => (i64::from(i8::MIN), i8::MAX as u64),
        Some("int16") => (i64::from(i16::MIN), i16::MAX as u64),
        Some("int32") => (i64::from(i32::MIN), i32::MAX as u64),
        Some("int64" | "int") => (-(safe as i64), safe),
        _ => (0, safe),
    };
    node.entry("minimum").or_insert_with(|| json!(min));
    let clamp = |v: &Value| v.as_u64().is_some_and(|m| m > safe);
    match node.get("maximum") {
        Some(v) if !clamp(v) => {}
        _ => {
            node.insert("maximum".into(), json!(max.min(safe)));
        }
    }
}

fn collect_refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if k == "$ref" {
                    if let Some(n) = child.as_str().and_then(def_name) {
                        out.insert(n.to_owned());
                    }
                } else {
                    collect_refs(child, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs(c, out)),
        _ => {}
    }
}

/// Removes `$defs` entries no longer reachable from the root.
fn prune_defs(root: &mut Value) {
    let Some(obj) = root.as_object_mut() else {
        return;
    };
    let Some(Value::Object(defs)) = obj.remove("$defs") else {
        return;
    };
    let mut reachable = BTreeSet::new();
    let mut queue = BTreeSet::new();
    collect_refs(&Value::Object(obj.clone()), &mut queue);
    while let Some(n) = queue.pop_first() {
        if reachable.insert(n.clone())
            && let Some(d) = defs.get(&n)
        {
            let mut more = BTreeSet::new();
            collect_refs(d, &mut more);
            queue.extend(more.into_iter().filter(|m| !reachable.contains(m)));
        }
    }
    let kept: Map<String, Value> = defs
        .into_iter()
        .filter(|(k, _)| reachable.contains(k))
        .collect();
    if !kept.is_empty() {
        obj.insert("$defs".into(), Value::Object(kept));
    }
}

/// Extracts the union branch whose tag `const` is `tag`, with the definitions it uses.
fn branch(union: &Value, tag: &str) -> Value {
    let branches = union
        .get("oneOf")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut b = branches
        .into_iter()
        .find(|b| b.pointer("/properties/type/const").and_then(Value::as_str) == Some(tag))
        .unwrap_or_else(|| panic!("union has no branch tagged {tag}"));
    if let (Some(obj), Some(defs)) = (b.as_object_mut(), union.get("$defs")) {
        obj.insert("$defs".into(), defs.clone());
    }
    prune_defs(&mut b);
    b
}

/// Reader unions of messages also accept messages of unknown type: clients ignore
/// unknown server messages (`RW-VERSION-5`) and servers answer unknown client messages
/// with a non-fatal `unknown_message_type` error (spec §14.2), which is what makes a new
/// message type a minor change (spec §18.1).
fn add_unknown_message_branch(reader: &mut Value, known: &[&str]) {
    if let Some(Value::Array(branches)) = reader.get_mut("oneOf") {
        branches.push(json!({
            "description": "A message of a type this version does not know; the receiver ignores it (a server answers with a non-fatal unknown_message_type error).",
            "type": "object",
            "properties": { "type": { "type": "string", "not": { "enum": known } } },
            "required": ["type"],
        }));
    }
}

fn pair<T: JsonSchema>(name: &str, direction: Direction) -> SchemaPair {
    SchemaPair {
        name: name.to_owned(),
        direction,
        writer: root_schema::<T>(Contract::Writer),
        reader: root_schema::<T>(Contract::Reader),
    }
}

/// Collects one schema pair per event payload type (`events/<type>`), in spec order.
struct PayloadPairs<'a>(&'a mut Vec<SchemaPair>);

impl p::EventTypeVisitor for PayloadPairs<'_> {
    fn visit<T: p::EventData>(&mut self) {
        self.0.push(pair::<T>(
            &format!("events/{}", T::TYPE),
            Direction::ServerToClient,
        ));
    }
}

/// Every schema pair of the current protocol version, in a stable order.
pub fn schema_pairs() -> Vec<SchemaPair> {
    use Direction::{ClientToServer as C2S, ServerToClient as S2C};
    let mut out = Vec::new();

    let mut client = pair::<p::ClientMessage>("client-message", C2S);
    for t in p::ClientMessage::TYPES {
        out.push(SchemaPair {
            name: format!("client/{t}"),
            direction: C2S,
            writer: branch(&client.writer, t),
            reader: branch(&client.reader, t),
        });
    }
    add_unknown_message_branch(&mut client.reader, p::ClientMessage::TYPES);
    out.push(client);

    let mut server = pair::<p::ServerMessage>("server-message", S2C);
    for t in p::ServerMessage::TYPES {
        out.push(SchemaPair {
            name: format!("server/{t}"),
            direction: S2C,
            writer: branch(&server.writer, t),
            reader: branch(&server.reader, t),
        });
    }
    add_unknown_message_branch(&mut server.reader, p::ServerMessage::TYPES);
    out.push(server);

    out.push(pair::<p::Event>("event", S2C));
    out.push(pair::<p::RunSnapshot>("snapshot", S2C));
    p::visit_event_types(&mut PayloadPairs(&mut out));
    out.push(pair::<p::http::NewEvent>("http/new-event", C2S));
    out.push(pair::<p::http::AppendRequest>("http/append-request", C2S));
    out.push(pair::<p::http::AppendResponse>("http/append-response", S2C));
    out.push(pair::<p::http::HistoryResponse>(
        "http/history-response",
        S2C,
    ));
    out.push(pair::<p::http::RunList>("http/run-list", S2C));
    out.push(pair::<p::http::HttpError>("http/error", S2C));
    out.push(pair::<p::http::Health>("http/health", S2C));
    out
}

fn finish(mut schema: Value, version: &str, path: &str, title: &str) -> Value {
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("$schema".into(), json!(DIALECT));
        obj.insert(
            "$id".into(),
            json!(format!("{SCHEMA_BASE_URL}{version}/{path}")),
        );
        obj.insert("title".into(), json!(title));
    }
    schema
}

/// Every file of `schema/<version>/`, keyed by relative path, in a stable order:
/// `<name>.writer.schema.json` and `<name>.reader.schema.json` per pair, `index.json`
/// and `bundle.schema.json`.
pub fn generate_files(version: &str) -> BTreeMap<String, Value> {
    let mut files = BTreeMap::new();
    let mut index = Vec::new();
    for pair in schema_pairs() {
        let mut entry = Map::new();
        entry.insert("name".into(), json!(pair.name));
        entry.insert("direction".into(), json!(pair.direction.as_str()));
        for (contract, schema) in [
            (Contract::Writer, pair.writer),
            (Contract::Reader, pair.reader),
        ] {
            let path = format!("{}.{}.schema.json", pair.name, contract.as_str());
            let title = format!("{} ({})", pair.name, contract.as_str());
            files.insert(path.clone(), finish(schema, version, &path, &title));
            entry.insert(contract.as_str().into(), json!(path));
        }
        index.push(Value::Object(entry));
    }
    let bundle_defs: Map<String, Value> =
        files.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut bundle = json!({
        "description": "Every Runwire schema of this version, each embedded under $defs by its relative path with its own $id.",
        "$defs": bundle_defs,
    });
    bundle = finish(
        bundle,
        version,
        "bundle.schema.json",
        &format!("Runwire {version} bundle"),
    );
    files.insert("bundle.schema.json".into(), bundle);
    files.insert(
        "index.json".into(),
        json!({ "version": version, "protocol_versions": p::PROTOCOL_VERSIONS, "schemas": index }),
    );
    files
}

/// Renders a schema file: sorted keys, two-space indentation, trailing newline.
pub fn render(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// Every file `cargo xtask schema` writes to `schema/<version>/`, rendered, keyed by
/// relative path: the JSON Schemas of [`generate_files`], the TypeScript declarations
/// of [`crate::typescript`], and the AsyncAPI and OpenAPI documents of
/// [`crate::apidoc`].
///
/// # Errors
///
/// An [`io::Error`] wrapping the generator's error when the TypeScript declarations
/// cannot be generated.
pub fn generate_all(version: &str) -> io::Result<BTreeMap<String, String>> {
    let mut files: BTreeMap<String, String> = generate_files(version)
        .iter()
        .map(|(k, v)| (k.clone(), render(v)))
        .collect();
    files.extend(crate::typescript::generate_files().map_err(io::Error::other)?);
    files.insert(
        crate::apidoc::ASYNCAPI_FILE.into(),
        crate::apidoc::render(&crate::apidoc::asyncapi(version)),
    );
    files.insert(
        crate::apidoc::OPENAPI_FILE.into(),
        crate::apidoc::render(&crate::apidoc::openapi(version)),
    );
    Ok(files)
}

/// A difference between generated and committed schema files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// A generated file is missing on disk.
    Missing(PathBuf),
    /// A file on disk differs from the generated one.
    Changed(PathBuf),
    /// A file on disk is no longer generated.
    Stale(PathBuf),
}

fn list_files(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            list_files(&path, base, out)?;
        } else if let Ok(rel) = path.strip_prefix(base) {
            out.push(rel.to_path_buf());
        }
    }
    out.sort();
    Ok(())
}

/// Writes the generated files of `version` into `dir`, removing files that are no
/// longer generated. Returns the paths written.
pub fn write_dir(dir: &Path, version: &str) -> io::Result<Vec<PathBuf>> {
    let files = generate_all(version)?;
    let mut existing = Vec::new();
    list_files(dir, dir, &mut existing)?;
    for rel in existing {
        if !files.contains_key(&rel.to_string_lossy().replace('\\', "/")) {
            fs::remove_file(dir.join(rel))?;
        }
    }
    let mut written = Vec::new();
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        if fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            fs::write(&path, text)?;
        }
        written.push(path);
    }
    Ok(written)
}

/// Compares `dir` with what generation would write.
pub fn check_dir(dir: &Path, version: &str) -> io::Result<Vec<Drift>> {
    let files = generate_all(version)?;
    let mut drift = Vec::new();
    let mut existing = Vec::new();
    list_files(dir, dir, &mut existing)?;
    for rel in &existing {
        if !files.contains_key(&rel.to_string_lossy().replace('\\', "/")) {
            drift.push(Drift::Stale(dir.join(rel)));
        }
    }
    for (rel, want) in &files {
        let path = dir.join(rel);
        match fs::read_to_string(&path) {
            Ok(text) if &text == want => {}
            Ok(_) => drift.push(Drift::Changed(path)),
            Err(_) => drift.push(Drift::Missing(path)),
        }
    }
    Ok(drift)
}
