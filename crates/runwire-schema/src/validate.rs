//! Validation of messages, events and HTTP bodies against a schema tree
//! (`runwire schema validate`): every message a peer sends must be valid under the
//! writer schema, and a peer must accept everything valid under the reader schema
//! (`RW-COMPAT-5`).
//!
//! Validators are compiled once per schema (with the `jsonschema` crate); each input
//! value is routed to one of them, either by an explicit kind or by its shape:
//! a `type` naming a server or client message, the envelope members of an event, or
//! the required members of an HTTP body or snapshot.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::{compat::Contract, tree::SchemaTree};

/// Errors building validators.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// A schema does not compile.
    #[error("schema {name} ({file}) does not compile: {message}")]
    Compile {
        /// The schema name.
        name: String,
        /// The file.
        file: String,
        /// Why.
        message: String,
    },
    /// `--kind` names no schema of the tree.
    #[error("unknown kind {0:?}; kinds are the schema names of index.json")]
    UnknownKind(String),
}

/// One validation failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// 1-based line of the value in its file (for arrays, the line where the element starts).
    pub line: usize,
    /// The kind the value was validated as, if one was determined.
    pub kind: Option<String>,
    /// JSON pointer inside the value.
    pub pointer: String,
    /// Why it failed.
    pub reason: String,
}

/// Counts of one validation run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Values checked.
    pub values: usize,
    /// Values with at least one failure.
    pub invalid: usize,
}

struct Kind {
    name: String,
    validator: jsonschema::Validator,
    /// For a root tagged union on `type`: one validator per tag, with the union
    /// replaced by that tag's branch. Equivalent for a known tag (the other branches
    /// fail on their `const`, the catch-all on its `not enum`), faster, and with errors
    /// that point into the branch instead of "not valid under any of the schemas".
    by_tag: BTreeMap<String, jsonschema::Validator>,
    /// Required top-level members (for shape detection), empty for unions.
    required: BTreeSet<String>,
}

/// Compiled validators for every schema of a tree.
pub struct Validators {
    kinds: Vec<Kind>,
    by_name: BTreeMap<String, usize>,
    client_types: BTreeSet<String>,
    server_types: BTreeSet<String>,
    /// Indexes of kinds used by shape detection (not per-message or per-payload files).
    shape_kinds: Vec<usize>,
}

impl std::fmt::Debug for Validators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validators")
            .field("kinds", &self.by_name.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn required_of(schema: &Value) -> BTreeSet<String> {
    let mut node = schema;
    for _ in 0..8 {
        match node
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        {
            Some(p) => match schema.pointer(p) {
                Some(t) => node = t,
                None => break,
            },
            None => break,
        }
    }
    node.get("required")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| e.to_string())
}

/// Per-tag validators for a schema whose root `oneOf` branches carry
/// `properties.type.const`.
fn tag_validators(schema: &Value) -> Result<BTreeMap<String, jsonschema::Validator>, String> {
    let mut out = BTreeMap::new();
    let Some(branches) = schema.get("oneOf").and_then(Value::as_array) else {
        return Ok(out);
    };
    for b in branches {
        let Some(tag) = b.pointer("/properties/type/const").and_then(Value::as_str) else {
            continue;
        };
        let mut s = schema.clone();
        if let Some(o) = s.as_object_mut() {
            o.remove("oneOf");
            let mut all = match o.remove("allOf") {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            };
            all.push(b.clone());
            o.insert("allOf".into(), Value::Array(all));
        }
        out.insert(tag.to_string(), compile(&s)?);
    }
    Ok(out)
}

impl Validators {
    /// Compiles a validator for every schema of `tree`, from its `contract` files
    /// (writer: what a sender may emit; reader: what a receiver must accept).
    pub fn new(tree: &SchemaTree, contract: Contract) -> Result<Self, ValidateError> {
        let mut kinds = Vec::new();
        let mut by_name = BTreeMap::new();
        let mut client_types = BTreeSet::new();
        let mut server_types = BTreeSet::new();
        let mut shape_kinds = Vec::new();
        for e in &tree.index.schemas {
            let file = match contract {
                Contract::Writer => &e.writer,
                Contract::Reader => &e.reader,
            };
            let schema = &tree.files[file];
            let validator = compile(schema).map_err(|message| ValidateError::Compile {
                name: e.name.clone(),
                file: file.clone(),
                message,
            })?;
            let by_tag = tag_validators(schema).map_err(|message| ValidateError::Compile {
                name: e.name.clone(),
                file: file.clone(),
                message,
            })?;
            if let Some(t) = e.name.strip_prefix("client/") {
                client_types.insert(t.to_string());
            } else if let Some(t) = e.name.strip_prefix("server/") {
                server_types.insert(t.to_string());
            } else if !e.name.starts_with("events/")
                && e.name != "client-message"
                && e.name != "server-message"
            {
                shape_kinds.push(kinds.len());
            }
            by_name.insert(e.name.clone(), kinds.len());
            kinds.push(Kind {
                name: e.name.clone(),
                validator,
                by_tag,
                required: required_of(schema),
            });
        }
        Ok(Self {
            kinds,
            by_name,
            client_types,
            server_types,
            shape_kinds,
        })
    }

    /// The schema names that can be passed as a kind.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Checks that `kind` exists.
    pub fn check_kind(&self, kind: &str) -> Result<(), ValidateError> {
        if self.by_name.contains_key(kind) {
            Ok(())
        } else {
            Err(ValidateError::UnknownKind(kind.to_string()))
        }
    }

    /// Determines what a value is from its shape.
    pub fn detect(&self, v: &Value) -> Option<&str> {
        let obj = v.as_object()?;
        let ty = obj.get("type").and_then(Value::as_str);
        if let Some(t) = ty {
            if self.server_types.contains(t) && self.by_name.contains_key("server-message") {
                return Some("server-message");
            }
            if self.client_types.contains(t) && self.by_name.contains_key("client-message") {
                return Some("client-message");
            }
        }
        // The shape kind whose required members are all present, the most specific first.
        let mut best: Option<(usize, usize)> = None;
        for &i in &self.shape_kinds {
            let k = &self.kinds[i];
            if k.required.is_empty() || !k.required.iter().all(|r| obj.contains_key(r)) {
                continue;
            }
            if best.is_none_or(|(n, _)| k.required.len() > n) {
                best = Some((k.required.len(), i));
            }
        }
        if let Some((_, i)) = best {
            return Some(&self.kinds[i].name);
        }
        // A message of a type this version does not know.
        if ty.is_some() && !obj.contains_key("data") && self.by_name.contains_key("server-message")
        {
            return Some("server-message");
        }
        None
    }

    /// Validates one value as `kind` (or its detected kind). Returns the kind used
    /// and the failures (pointer, reason).
    pub fn validate_value<'s>(
        &'s self,
        v: &Value,
        kind: Option<&'s str>,
    ) -> (Option<&'s str>, Vec<(String, String)>) {
        let Some(name) = kind.or_else(|| self.detect(v)) else {
            return (
                None,
                vec![(
                    String::new(),
                    "cannot tell whether this is a client message, server message, event or HTTP body; pass --kind".into(),
                )],
            );
        };
        let Some(&i) = self.by_name.get(name) else {
            return (
                None,
                vec![(String::new(), format!("unknown kind {name:?}"))],
            );
        };
        let k = &self.kinds[i];
        if !k.by_tag.is_empty()
            && let Some(obj) = v.as_object()
        {
            // Without a usable `type`, the `oneOf` of the kind's types can only say
            // that no branch (or more than one) matched; say what is wrong instead.
            match obj.get("type") {
                None => {
                    return (
                        Some(&k.name),
                        vec![(String::new(), "\"type\" is a required property".into())],
                    );
                }
                Some(t) if !t.is_string() => {
                    return (
                        Some(&k.name),
                        vec![("/type".into(), format!("{t} is not of type \"string\""))],
                    );
                }
                Some(_) => {}
            }
        }
        let validator = v
            .get("type")
            .and_then(Value::as_str)
            .and_then(|t| k.by_tag.get(t))
            .unwrap_or(&k.validator);
        if validator.is_valid(v) {
            return (Some(&k.name), Vec::new());
        }
        let errs = validator
            .iter_errors(v)
            .map(|e| (e.instance_path().to_string(), e.to_string()))
            .collect();
        (Some(&k.name), errs)
    }

    fn check_one(
        &self,
        v: &Value,
        line: usize,
        kind: Option<&str>,
        stats: &mut Stats,
        on_failure: &mut impl FnMut(Failure),
    ) {
        stats.values += 1;
        let (k, errs) = self.validate_value(v, kind);
        if !errs.is_empty() {
            stats.invalid += 1;
        }
        for (pointer, reason) in errs {
            on_failure(Failure {
                line,
                kind: k.map(str::to_string),
                pointer,
                reason,
            });
        }
    }

    /// Validates a file's text: JSON lines, a single JSON document, or a JSON array
    /// of values. Calls `on_failure` for every failure.
    pub fn validate_text(
        &self,
        text: &str,
        kind: Option<&str>,
        mut on_failure: impl FnMut(Failure),
    ) -> Stats {
        let mut stats = Stats::default();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let trimmed = text.trim_start();
        let lead = text.len() - trimmed.len();
        let first_line = 1 + text[..lead].matches('\n').count();
        // A JSON array, or one document spread over several lines, is parsed whole;
        // anything else (or a whole-document parse that fails on an object) is read as
        // JSON lines, so one broken line does not hide the others.
        let first_alone =
            serde_json::from_str::<Value>(trimmed.lines().next().unwrap_or("")).is_ok();
        if trimmed.starts_with('[') || (trimmed.starts_with('{') && !first_alone) {
            match serde_json::from_str::<Value>(text) {
                Ok(Value::Array(items)) => {
                    // Element lines: locate each element start by a streaming pass.
                    let lines = element_lines(text, items.len());
                    for (i, item) in items.iter().enumerate() {
                        self.check_one(
                            item,
                            lines.get(i).copied().unwrap_or(first_line),
                            kind,
                            &mut stats,
                            &mut on_failure,
                        );
                    }
                    return stats;
                }
                Ok(v) => {
                    self.check_one(&v, first_line, kind, &mut stats, &mut on_failure);
                    return stats;
                }
                Err(e) if trimmed.starts_with('[') => {
                    stats.values += 1;
                    stats.invalid += 1;
                    on_failure(Failure {
                        line: e.line(),
                        kind: None,
                        pointer: String::new(),
                        reason: format!("invalid JSON: {e}"),
                    });
                    return stats;
                }
                Err(_) => {}
            }
        }
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(l) {
                Ok(v) => self.check_one(&v, i + 1, kind, &mut stats, &mut on_failure),
                Err(e) => {
                    stats.values += 1;
                    stats.invalid += 1;
                    on_failure(Failure {
                        line: i + 1,
                        kind: None,
                        pointer: String::new(),
                        reason: format!("invalid JSON: {e}"),
                    });
                }
            }
        }
        stats
    }
}

/// The 1-based line where each top-level element of a JSON array starts.
fn element_lines(text: &str, n: usize) -> Vec<usize> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(n);
    let (mut depth, mut line, mut in_str, mut esc) = (0usize, 1usize, false, false);
    let mut expect = false;
    for &c in b {
        if c == b'\n' {
            line += 1;
        }
        if in_str {
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
            continue;
        }
        if expect && !c.is_ascii_whitespace() && c != b']' {
            out.push(line);
            expect = false;
        }
        match c {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth == 1 && c == b'[' {
                    expect = true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expect = true,
            _ => {}
        }
    }
    out
}
