//! The structural walk: compares an old and a new schema of one contract (writer or
//! reader), with the other party's schema as "counterpart" to refine severities.
//!
//! This file runs past 1,000 lines because the walk is one recursive visitor: every
//! JSON Schema keyword it compares (types, enums, bounds, objects, arrays, unions,
//! `$ref`) is a method of the one `Walker`, which carries the three documents, the
//! contract side and the changes found; split by keyword, each part would need all of
//! that state anyway. What each rule means is in `crate::rules`, not here.

use std::collections::BTreeSet;

use serde_json::{Map, Number, Value};

use super::{Change, Contract};
use crate::rules::{Severity, id, rule};

/// A schema document, for `$ref` resolution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Doc<'a> {
    pub(crate) root: &'a Value,
}

/// Keywords that only annotate.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
];

/// Keywords that neither constrain nor annotate what is compared.
const IGNORED: &[&str] = &[
    "$id",
    "$schema",
    "$defs",
    "definitions",
    "$anchor",
    "$dynamicAnchor",
    "$vocabulary",
];

/// Keywords the walk handles itself.
const HANDLED: &[&str] = &[
    "$ref",
    "type",
    "enum",
    "const",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "properties",
    "required",
    "additionalProperties",
    "unevaluatedProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "oneOf",
    "anyOf",
    "allOf",
    "default",
    "x-reserved",
];

const MAX_REF_DEPTH: usize = 64;

/// A normalised schema node: `$ref` resolved and merged with its siblings, nullability
/// folded out of `type` arrays and `anyOf`/`oneOf` null branches.
#[derive(Debug, Clone)]
pub(crate) struct Node<'a> {
    pub(crate) doc: Doc<'a>,
    /// JSON pointer of the node in its document (the `$ref` target when resolved).
    pub(crate) ptr: String,
    pub(crate) map: Map<String, Value>,
    /// Allowed JSON types without "null"; `None` = unconstrained.
    pub(crate) types: Option<BTreeSet<String>>,
    pub(crate) nullable: bool,
    /// The union branches (`oneOf`/`anyOf` minus a folded null branch), with pointers.
    pub(crate) union: Option<Vec<(Value, String)>>,
    /// Ref targets followed to build this node (for cycle protection).
    pub(crate) refs: Vec<String>,
    /// When `$ref` was followed: the pointer of the referencing schema and its own
    /// keywords (siblings of `$ref`), so changes to those are reported where they are.
    pub(crate) site: Option<(String, BTreeSet<String>)>,
}

fn escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn unescape(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(hex) = std::str::from_utf8(&b[i + 1..i + 3])
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl<'a> Doc<'a> {
    /// Resolves a local reference (`#`, `#/json/pointer`, or `<this $id>#/…`).
    pub(crate) fn resolve(&self, reference: &str) -> Option<(&'a Value, String)> {
        let frag = match reference.split_once('#') {
            Some((base, frag)) => {
                if !base.is_empty() {
                    let own = self.root.get("$id").and_then(Value::as_str).unwrap_or("");
                    if base != own.split('#').next().unwrap_or("") {
                        return None;
                    }
                }
                frag
            }
            None => return None,
        };
        let frag = percent_decode(frag);
        if frag.is_empty() {
            return Some((self.root, String::new()));
        }
        let mut cur = self.root;
        for part in frag.strip_prefix('/')?.split('/') {
            let part = unescape(part);
            cur = match cur {
                Value::Object(m) => m.get(&part)?,
                Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some((cur, frag))
    }

    /// Builds the normalised node for `value` found at `ptr`.
    pub(crate) fn node(&self, value: &Value, ptr: &str) -> Node<'a> {
        let mut refs = Vec::new();
        let mut ptr = ptr.to_string();
        let mut map = match value {
            Value::Object(m) => m.clone(),
            Value::Bool(false) => {
                let mut m = Map::new();
                m.insert("not".into(), Value::Object(Map::new()));
                m
            }
            _ => Map::new(),
        };
        let site_ptr = ptr.clone();
        let site_keys: BTreeSet<String> = map.keys().filter(|k| *k != "$ref").cloned().collect();
        // Resolve `$ref` chains, merging siblings over the target.
        let mut depth = 0;
        while let Some(Value::String(r)) = map.get("$ref").cloned() {
            depth += 1;
            if depth > MAX_REF_DEPTH {
                break;
            }
            let Some((target, tptr)) = self.resolve(&r) else {
                break; // unresolvable: compared as an opaque keyword
            };
            if refs.contains(&tptr) {
                map.remove("$ref");
                break;
            }
            refs.push(tptr.clone());
            ptr = tptr;
            map.remove("$ref");
            let mut merged = match target {
                Value::Object(t) => t.clone(),
                Value::Bool(false) => {
                    let mut m = Map::new();
                    m.insert("not".into(), Value::Object(Map::new()));
                    m
                }
                _ => Map::new(),
            };
            for (k, v) in map {
                merged.insert(k, v);
            }
            map = merged;
        }
        // A single-element `allOf` (the draft-07 way to put siblings next to a `$ref`)
        // is the same as its element with the siblings merged, when they do not overlap.
        if let Some(Value::Array(all)) = map.get("allOf")
            && all.len() == 1
            && let Some(Value::Object(inner)) = all.first()
            && inner
                .keys()
                .all(|k| !map.contains_key(k) || ANNOTATIONS.contains(&k.as_str()))
        {
            let inner = Value::Object(inner.clone());
            let iptr = format!("{ptr}/allOf/0");
            let mut n = self.node(&inner, &iptr);
            for (k, v) in &map {
                if k != "allOf" {
                    n.map.insert(k.clone(), v.clone());
                }
            }
            n.refs.extend(refs);
            // Re-derive type and nullability from the merged keywords.
            let merged = Value::Object(n.map.clone());
            let mut m = self.node(&merged, &n.ptr);
            m.refs = n.refs;
            m.nullable |= n.nullable;
            return m;
        }
        let mut nullable = false;
        let mut types = match map.get("type") {
            Some(Value::String(t)) => Some(BTreeSet::from([t.clone()])),
            Some(Value::Array(a)) => Some(
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect::<BTreeSet<_>>(),
            ),
            _ => None,
        };
        if let Some(t) = &mut types
            && t.remove("null")
        {
            nullable = true;
        }
        let mut union = None;
        for kw in ["oneOf", "anyOf"] {
            let Some(Value::Array(branches)) = map.get(kw) else {
                continue;
            };
            let mut rest = Vec::new();
            let mut null_branch = false;
            for (i, b) in branches.iter().enumerate() {
                let bptr = format!("{ptr}/{kw}/{i}");
                if self.is_null_schema(b) {
                    null_branch = true;
                } else {
                    rest.push((b.clone(), bptr));
                }
            }
            if null_branch && !rest.is_empty() {
                nullable = true;
                if rest.len() == 1 {
                    // Fold `anyOf [T, null]` into T + nullable.
                    let (inner, iptr) = rest.pop().expect("one branch");
                    let inner_node = self.node(&inner, &iptr);
                    let mut merged = inner_node.map.clone();
                    for (k, v) in &map {
                        if k != kw && k != "type" {
                            merged.insert(k.clone(), v.clone());
                        }
                    }
                    let mut n = inner_node;
                    n.map = merged;
                    n.nullable = true;
                    n.refs.extend(refs);
                    return n;
                }
                union = Some(rest);
            } else {
                union = Some(rest);
            }
            break;
        }
        let site = (!refs.is_empty()).then_some((site_ptr, site_keys));
        Node {
            doc: *self,
            ptr,
            map,
            types,
            nullable,
            union,
            refs,
            site,
        }
    }

    /// Same as [`Doc::node`] (kept as a separate name at call sites that pass values
    /// cloned out of the document).
    fn node_owned(&self, value: &Value, ptr: &str) -> Node<'a> {
        self.node(value, ptr)
    }

    fn is_null_schema(&self, v: &Value) -> bool {
        let v = match v.get("$ref").and_then(Value::as_str) {
            Some(r) => match self.resolve(r) {
                Some((t, _)) => t,
                None => return false,
            },
            None => v,
        };
        let Some(m) = v.as_object() else {
            return false;
        };
        matches!(m.get("type"), Some(Value::String(t)) if t == "null")
            || matches!(m.get("const"), Some(Value::Null))
    }
}

/// Bounds of a number or a length: lower and upper, each with an exclusive flag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bounds {
    lo: Option<(f64, bool)>,
    hi: Option<(f64, bool)>,
}

impl Bounds {
    /// Numeric bounds of a node; for integer-only nodes, exclusive and fractional
    /// bounds become the equivalent inclusive integers (`exclusiveMinimum: 0` is
    /// `minimum: 1`).
    fn numeric(node: &Node<'_>) -> Self {
        let m = &node.map;
        let num = |k: &str| m.get(k).and_then(Value::as_f64);
        let mut lo = num("minimum").map(|v| (v, false));
        if let Some(x) = num("exclusiveMinimum")
            && lo.is_none_or(|(v, _)| x >= v)
        {
            lo = Some((x, true));
        }
        let mut hi = num("maximum").map(|v| (v, false));
        if let Some(x) = num("exclusiveMaximum")
            && hi.is_none_or(|(v, _)| x <= v)
        {
            hi = Some((x, true));
        }
        let integer = node
            .types
            .as_ref()
            .is_some_and(|t| t.len() == 1 && t.contains("integer"));
        if integer {
            lo = lo.map(|(v, x)| (if x { v.floor() + 1.0 } else { v.ceil() }, false));
            hi = hi.map(|(v, x)| (if x { v.ceil() - 1.0 } else { v.floor() }, false));
        }
        Self { lo, hi }
    }

    fn from_keys(m: &Map<String, Value>, min: &str, max: &str) -> Self {
        Self {
            lo: m.get(min).and_then(Value::as_f64).map(|v| (v, false)),
            hi: m.get(max).and_then(Value::as_f64).map(|v| (v, false)),
        }
    }

    /// Whether every value within `inner` is within `self`.
    fn contains(&self, inner: &Bounds) -> bool {
        let lo_ok = match (self.lo, inner.lo) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some((a, ax)), Some((b, bx))) => a < b || (a == b && (!ax || bx)),
        };
        let hi_ok = match (self.hi, inner.hi) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some((a, ax)), Some((b, bx))) => a > b || (a == b && (!ax || bx)),
        };
        lo_ok && hi_ok
    }
}

fn int_format_range(f: &str) -> Option<(i128, i128)> {
    Some(match f {
        "int8" => (i8::MIN as i128, i8::MAX as i128),
        "int16" => (i16::MIN as i128, i16::MAX as i128),
        "int32" => (i32::MIN as i128, i32::MAX as i128),
        "int64" | "int" => (i64::MIN as i128, i64::MAX as i128),
        "uint8" => (0, u8::MAX as i128),
        "uint16" => (0, u16::MAX as i128),
        "uint32" => (0, u32::MAX as i128),
        "uint64" | "uint" => (0, u64::MAX as i128),
        "int128" => (i128::MIN, i128::MAX),
        "uint128" => (0, i128::MAX),
        _ => return None,
    })
}

const NUMBER_FORMATS: &[&str] = &["float", "double"];

fn canon(v: &Value) -> String {
    // serde_json maps may keep insertion order; sort for a canonical string.
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<_> = m.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sort(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            Value::Number(n) => Value::Number(n.clone()),
            other => other.clone(),
        }
    }
    // Numbers: 1 and 1.0 compare equal.
    fn norm_num(v: Value) -> Value {
        match v {
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    Value::Number(Number::from(f as i64))
                }
                _ => Value::Number(n),
            },
            Value::Array(a) => Value::Array(a.into_iter().map(norm_num).collect()),
            Value::Object(m) => {
                Value::Object(m.into_iter().map(|(k, v)| (k, norm_num(v))).collect())
            }
            o => o,
        }
    }
    serde_json::to_string(&norm_num(sort(v))).unwrap_or_default()
}

/// Strips annotations recursively, for "same shape" comparisons (renames).
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !ANNOTATIONS.contains(&k.as_str()) && !k.starts_with("x-"))
                .map(|(k, v)| {
                    // Property names are data, not annotations: keep map keys as-is.
                    (k.clone(), shape(v))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        o => o.clone(),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!(
            "{}…",
            &s[..s
                .char_indices()
                .take(57)
                .last()
                .map_or(0, |(i, c)| i + c.len_utf8())]
        )
    } else {
        s
    }
}

/// The walk's state.
pub(crate) struct Walker<'o, 'n, 'c> {
    pub(crate) contract: Contract,
    pub(crate) old: Doc<'o>,
    pub(crate) new: Doc<'n>,
    pub(crate) cp: Option<Doc<'c>>,
    pub(crate) out: Vec<Change>,
    visited: BTreeSet<(String, String, u64)>,
    budget: usize,
}

/// What a union looks like after classification.
struct UnionShape {
    /// The tag property (`""` when branches are bare consts).
    tag: Option<String>,
    /// Tag value → branch.
    tagged: Vec<(String, Value, String)>,
    /// Branches without a tag const (catch-all for unknown tags).
    catch_all: Vec<(Value, String)>,
    /// Whether every branch is a bare const (an enum written as oneOf).
    const_enum: Option<BTreeSet<String>>,
}

impl<'o, 'n, 'c> Walker<'o, 'n, 'c> {
    pub(crate) fn new(contract: Contract, old: Doc<'o>, new: Doc<'n>, cp: Option<Doc<'c>>) -> Self {
        Self {
            contract,
            old,
            new,
            cp,
            out: Vec::new(),
            visited: BTreeSet::new(),
            budget: 200_000,
        }
    }

    /// Compares the two roots.
    pub(crate) fn run(&mut self) {
        let o = self.old.node(self.old.root, "");
        let n = self.new.node(self.new.root, "");
        let c = self.cp.map(|d| d.node(d.root, ""));
        // A `$ref: "#"` back to the root stops here rather than walking it twice.
        // (A root that is itself a `$ref` is registered by the walk.)
        if o.refs.is_empty() && n.refs.is_empty() {
            self.visited
                .insert((o.ptr.clone(), n.ptr.clone(), fingerprint(&o.map, &n.map)));
        }
        self.walk(&o, &n, c.as_ref(), "", None);
    }

    fn emit(
        &mut self,
        rid: &'static str,
        sev: Option<Severity>,
        ptr: &str,
        path: &str,
        msg: String,
    ) {
        let r = rule(rid).expect("rule ids come from the catalog");
        let default = match self.contract {
            Contract::Writer => r.d1,
            Contract::Reader => r.d2,
        };
        self.out.push(Change {
            rule: rid,
            severity: sev.unwrap_or(default),
            pointer: ptr.to_string(),
            subject: None,
            path: if path.is_empty() {
                "/".into()
            } else {
                path.to_string()
            },
            message: msg,
        });
    }

    fn is_writer(&self) -> bool {
        self.contract == Contract::Writer
    }

    fn walk(
        &mut self,
        o: &Node<'o>,
        n: &Node<'n>,
        c: Option<&Node<'c>>,
        path: &str,
        skip: Option<&str>,
    ) {
        if self.budget == 0 {
            return;
        }
        self.budget -= 1;
        // Cycle protection and de-duplication of shared definitions.
        // The key includes the merged keywords, so one definition referenced with
        // different sibling keywords (a `description`, a `default`) is compared at
        // each such site, while a recursive reference stops at its second visit.
        if !o.refs.is_empty() || !n.refs.is_empty() {
            let key = (o.ptr.clone(), n.ptr.clone(), fingerprint(&o.map, &n.map));
            if !self.visited.insert(key) {
                return;
            }
        }
        let ptr = n.ptr.clone();
        self.annotations(o, n, &ptr, path);
        self.types(o, n, c, &ptr, path);
        self.enums(o, n, c, &ptr, path);
        self.numbers(o, n, c, &ptr, path);
        self.strings(o, n, c, &ptr, path);
        self.sizes(o, n, &ptr, path);
        self.objects(o, n, c, &ptr, path, skip);
        self.arrays(o, n, c, path);
        self.all_of(o, n, path);
        self.unions(o, n, c, &ptr, path);
        self.other_keywords(o, n, &ptr, path);
    }

    fn annotations(&mut self, o: &Node<'o>, n: &Node<'n>, ptr: &str, path: &str) {
        let mut changed = BTreeSet::new();
        let keys: BTreeSet<&String> = o.map.keys().chain(n.map.keys()).collect();
        for k in keys {
            let is_ann =
                ANNOTATIONS.contains(&k.as_str()) || (k.starts_with("x-") && k != "x-reserved");
            if is_ann && o.map.get(k) != n.map.get(k) {
                changed.insert(k.clone());
            }
        }
        // Keywords written next to a `$ref` are reported at the referencing site.
        let at = |keys: &BTreeSet<String>| -> String {
            match &n.site {
                Some((site, own)) if keys.iter().any(|k| own.contains(k)) => site.clone(),
                _ => ptr.to_string(),
            }
        };
        if !changed.is_empty() {
            let aptr = at(&changed);
            let list: Vec<_> = changed.into_iter().collect();
            self.emit(
                id::ANNOTATION_CHANGED,
                None,
                &aptr,
                path,
                format!("annotation changed: {}", list.join(", ")),
            );
        }
        match (o.map.get("default"), n.map.get("default")) {
            (None, None) => {}
            (a, b) if a.map(canon) == b.map(canon) => {}
            (a, b) => {
                let f = |v: Option<&Value>| v.map_or("(none)".to_string(), short);
                let dptr = at(&BTreeSet::from(["default".to_string()]));
                self.emit(
                    id::DEFAULT_CHANGED,
                    None,
                    &dptr,
                    path,
                    format!("default {} → {}", f(a), f(b)),
                );
            }
        }
    }

    fn types(&mut self, o: &Node<'o>, n: &Node<'n>, c: Option<&Node<'c>>, ptr: &str, path: &str) {
        let covers = |set: &BTreeSet<String>, t: &str| {
            set.contains(t) || (t == "integer" && set.contains("number"))
        };
        match (&o.types, &n.types) {
            (Some(ot), Some(nt)) => {
                let added: Vec<&String> = nt.iter().filter(|t| !covers(ot, t)).collect();
                let removed: Vec<&String> = ot.iter().filter(|t| !covers(nt, t)).collect();
                let fmt = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join("|");
                let desc = format!("type {} → {}", fmt(ot), fmt(nt));
                if !added.is_empty() && !removed.is_empty() {
                    self.emit(id::TYPE_CHANGED, None, ptr, path, desc);
                } else if !added.is_empty() {
                    let sev = if self.is_writer() {
                        c.filter(|c| match &c.types {
                            None => true,
                            Some(ct) => added.iter().all(|t| covers(ct, t)),
                        })
                        .map(|_| Severity::Info)
                    } else {
                        None
                    };
                    self.emit(id::TYPE_WIDENED, sev, ptr, path, desc);
                } else if !removed.is_empty() {
                    let sev = if !self.is_writer() {
                        c.filter(|c| match &c.types {
                            None => false,
                            Some(ct) => ct.iter().all(|t| covers(nt, t)),
                        })
                        .map(|_| Severity::Info)
                    } else {
                        None
                    };
                    self.emit(id::TYPE_NARROWED, sev, ptr, path, desc);
                }
            }
            (None, Some(nt)) if !nt.is_empty() => {
                let sev = (!self.is_writer()
                    && c.is_some_and(|c| {
                        c.types
                            .as_ref()
                            .is_some_and(|ct| ct.iter().all(|t| covers(nt, t)))
                    }))
                .then_some(Severity::Info);
                let desc = format!(
                    "type any → {}",
                    nt.iter().cloned().collect::<Vec<_>>().join("|")
                );
                self.emit(id::TYPE_NARROWED, sev, ptr, path, desc);
            }
            (Some(ot), None)
                if !ot.is_empty()
                    && !n.map.contains_key("oneOf")
                    && !n.map.contains_key("anyOf") =>
            {
                let sev = (self.is_writer() && c.is_some_and(|c| c.types.is_none()))
                    .then_some(Severity::Info);
                let desc = format!(
                    "type {} → any",
                    ot.iter().cloned().collect::<Vec<_>>().join("|")
                );
                self.emit(id::TYPE_WIDENED, sev, ptr, path, desc);
            }
            _ => {}
        }
        // Nullability only means something when the type is constrained on both sides.
        let constrained = |x: &Option<BTreeSet<String>>, has_union: bool| x.is_some() || has_union;
        if constrained(&o.types, o.union.is_some()) && constrained(&n.types, n.union.is_some()) {
            if !o.nullable && n.nullable {
                let sev = (self.is_writer()
                    && c.is_some_and(|c| c.nullable || (c.types.is_none() && c.union.is_none())))
                .then_some(Severity::Info);
                self.emit(
                    id::NULLABLE_ADDED,
                    sev,
                    ptr,
                    path,
                    "value may now be null".into(),
                );
            } else if o.nullable && !n.nullable {
                let sev =
                    (!self.is_writer() && c.is_some_and(|c| !c.nullable)).then_some(Severity::Info);
                self.emit(
                    id::NULLABLE_REMOVED,
                    sev,
                    ptr,
                    path,
                    "value may no longer be null".into(),
                );
            }
        }
    }

    fn enum_set(node: &Node<'_>) -> Option<BTreeSet<String>> {
        if let Some(c) = node.map.get("const") {
            return Some(BTreeSet::from([canon(c)]));
        }
        match node.map.get("enum") {
            // `null` in the enum of a node whose type already says nullable is compared
            // by the nullability rules, not as an enum value.
            Some(Value::Array(a)) => Some(
                a.iter()
                    .filter(|v| !(node.nullable && v.is_null()))
                    .map(canon)
                    .collect(),
            ),
            _ => None,
        }
    }

    fn enums(&mut self, o: &Node<'o>, n: &Node<'n>, c: Option<&Node<'c>>, ptr: &str, path: &str) {
        let oe = Self::enum_set(o);
        let ne = Self::enum_set(n);
        let ce = c.map(|c| {
            (
                Self::enum_set(c).or_else(|| self_const_union(c)),
                c.union.is_some(),
            )
        });
        self.compare_enum_sets(oe, ne, ce, n, ptr, path);
    }

    fn compare_enum_sets(
        &mut self,
        oe: Option<BTreeSet<String>>,
        ne: Option<BTreeSet<String>>,
        ce: Option<(Option<BTreeSet<String>>, bool)>,
        n: &Node<'n>,
        ptr: &str,
        path: &str,
    ) {
        let extensible = n.map.get("x-extensible-enum") == Some(&Value::Bool(true));
        match (oe, ne) {
            (Some(oe), Some(ne)) => {
                for v in ne.difference(&oe) {
                    let sev = if self.is_writer() {
                        let reader_ok = match &ce {
                            Some((None, false)) => true,
                            Some((Some(cs), _)) => cs.contains(v),
                            _ => false,
                        };
                        (extensible || reader_ok).then_some(Severity::Info)
                    } else {
                        None
                    };
                    let why = if extensible {
                        " (x-extensible-enum)"
                    } else {
                        ""
                    };
                    self.emit(
                        id::ENUM_VALUE_ADDED,
                        sev,
                        ptr,
                        path,
                        format!("enum value {v} added{why}"),
                    );
                }
                for v in oe.difference(&ne) {
                    let sev = if !self.is_writer() {
                        matches!(&ce, Some((Some(cs), _)) if !cs.contains(v))
                            .then_some(Severity::Info)
                    } else {
                        None
                    };
                    self.emit(
                        id::ENUM_VALUE_REMOVED,
                        sev,
                        ptr,
                        path,
                        format!("enum value {v} removed"),
                    );
                }
            }
            (None, Some(ne)) => {
                let sev = if !self.is_writer() {
                    matches!(&ce, Some((Some(cs), _)) if cs.is_subset(&ne))
                        .then_some(Severity::Info)
                } else {
                    None
                };
                let list: Vec<_> = ne.iter().cloned().collect();
                self.emit(
                    id::ENUM_CONSTRAINT_ADDED,
                    sev,
                    ptr,
                    path,
                    format!("value restricted to [{}]", list.join(", ")),
                );
            }
            (Some(oe), None) => {
                let sev = if self.is_writer() {
                    matches!(&ce, Some((None, false))).then_some(Severity::Info)
                } else {
                    None
                };
                let list: Vec<_> = oe.iter().cloned().collect();
                self.emit(
                    id::ENUM_CONSTRAINT_REMOVED,
                    sev,
                    ptr,
                    path,
                    format!("value no longer restricted to [{}]", list.join(", ")),
                );
            }
            (None, None) => {}
        }
    }

    fn numbers(&mut self, o: &Node<'o>, n: &Node<'n>, c: Option<&Node<'c>>, ptr: &str, path: &str) {
        let of = o.map.get("format").and_then(Value::as_str);
        let nf = n.map.get("format").and_then(Value::as_str);
        let (or, nr) = (of.and_then(int_format_range), nf.and_then(int_format_range));
        let mut width = 0i8; // +1 widened, -1 narrowed
        if of != nf && (or.is_some() || nr.is_some()) {
            let desc = format!(
                "integer format {} → {}",
                of.unwrap_or("(none)"),
                nf.unwrap_or("(none)")
            );
            match (or, nr) {
                (Some((ol, oh)), Some((nl, nh))) => {
                    let wider = nl <= ol && nh >= oh;
                    let narrower = nl >= ol && nh <= oh;
                    if wider && !narrower {
                        width = 1;
                        self.emit(id::INT_WIDTH_WIDENED, None, ptr, path, desc);
                    } else if narrower && !wider {
                        width = -1;
                        self.emit(id::INT_WIDTH_NARROWED, None, ptr, path, desc.clone());
                    } else {
                        self.emit(id::INT_WIDTH_WIDENED, None, ptr, path, desc.clone());
                        self.emit(id::INT_WIDTH_NARROWED, None, ptr, path, desc);
                    }
                }
                (Some(_), None) => {
                    width = 1;
                    self.emit(id::INT_WIDTH_WIDENED, None, ptr, path, desc);
                }
                (None, Some(_)) => {
                    width = -1;
                    self.emit(id::INT_WIDTH_NARROWED, None, ptr, path, desc);
                }
                (None, None) => {}
            }
        }
        let ob = Bounds::numeric(o);
        let nb = Bounds::numeric(n);
        if ob != nb {
            let widened = !ob.contains(&nb);
            let narrowed = !nb.contains(&ob);
            let f = |b: &Bounds| {
                let lo = b.lo.map_or("-∞".to_string(), |(v, x)| {
                    format!("{}{v}", if x { "(" } else { "[" })
                });
                let hi = b.hi.map_or("+∞".to_string(), |(v, x)| {
                    format!("{v}{}", if x { ")" } else { "]" })
                });
                format!("{lo}, {hi}")
            };
            let desc = format!("range {} → {}", f(&ob), f(&nb));
            if widened && width != 1 {
                let sev = if self.is_writer() {
                    c.filter(|c| Bounds::numeric(c).contains(&nb))
                        .map(|_| Severity::Info)
                } else {
                    None
                };
                self.emit(id::NUMBER_RANGE_WIDENED, sev, ptr, path, desc.clone());
            }
            if narrowed && width != -1 {
                let sev = if !self.is_writer() {
                    c.filter(|c| nb.contains(&Bounds::numeric(c)))
                        .map(|_| Severity::Info)
                } else {
                    None
                };
                self.emit(id::NUMBER_RANGE_NARROWED, sev, ptr, path, desc);
            }
        }
        match (
            o.map.get("multipleOf").and_then(Value::as_f64),
            n.map.get("multipleOf").and_then(Value::as_f64),
        ) {
            (a, b) if a == b => {}
            (Some(a), Some(b)) if b != 0.0 && (a / b).fract() == 0.0 => {
                self.emit(
                    id::NUMBER_RANGE_WIDENED,
                    None,
                    ptr,
                    path,
                    format!("multipleOf {a} → {b}"),
                );
            }
            (Some(a), None) => {
                self.emit(
                    id::NUMBER_RANGE_WIDENED,
                    None,
                    ptr,
                    path,
                    format!("multipleOf {a} removed"),
                );
            }
            (a, b) => {
                let f = |x: Option<f64>| x.map_or("(none)".to_string(), |v| v.to_string());
                self.emit(
                    id::NUMBER_RANGE_NARROWED,
                    None,
                    ptr,
                    path,
                    format!("multipleOf {} → {}", f(a), f(b)),
                );
            }
        }
    }

    fn strings(&mut self, o: &Node<'o>, n: &Node<'n>, c: Option<&Node<'c>>, ptr: &str, path: &str) {
        let ob = Bounds::from_keys(&o.map, "minLength", "maxLength");
        let nb = Bounds::from_keys(&n.map, "minLength", "maxLength");
        if ob != nb {
            let f = |b: &Bounds| {
                format!(
                    "{}..{}",
                    b.lo.map_or("0".to_string(), |v| v.0.to_string()),
                    b.hi.map_or("∞".to_string(), |v| v.0.to_string())
                )
            };
            let desc = format!("string length {} → {}", f(&ob), f(&nb));
            if !ob.contains(&nb) {
                let sev = if self.is_writer() {
                    c.filter(|c| Bounds::from_keys(&c.map, "minLength", "maxLength").contains(&nb))
                        .map(|_| Severity::Info)
                } else {
                    None
                };
                self.emit(id::STRING_LENGTH_RELAXED, sev, ptr, path, desc.clone());
            }
            if !nb.contains(&ob) {
                let sev = if !self.is_writer() {
                    c.filter(|c| nb.contains(&Bounds::from_keys(&c.map, "minLength", "maxLength")))
                        .map(|_| Severity::Info)
                } else {
                    None
                };
                self.emit(id::STRING_LENGTH_TIGHTENED, sev, ptr, path, desc);
            }
        }
        let op = o.map.get("pattern").and_then(Value::as_str);
        let np = n.map.get("pattern").and_then(Value::as_str);
        let cp = c.map(|c| c.map.get("pattern").and_then(Value::as_str));
        match (op, np) {
            (None, Some(p)) => {
                let sev = (!self.is_writer() && cp == Some(Some(p))).then_some(Severity::Info);
                self.emit(
                    id::PATTERN_ADDED,
                    sev,
                    ptr,
                    path,
                    format!("pattern {p:?} added"),
                );
            }
            (Some(p), None) => {
                let sev = (self.is_writer() && cp == Some(None)).then_some(Severity::Info);
                self.emit(
                    id::PATTERN_REMOVED,
                    sev,
                    ptr,
                    path,
                    format!("pattern {p:?} removed"),
                );
            }
            (Some(a), Some(b)) if a != b => {
                self.emit(
                    id::PATTERN_CHANGED,
                    None,
                    ptr,
                    path,
                    format!("pattern {a:?} → {b:?}"),
                );
            }
            _ => {}
        }
        let of = o.map.get("format").and_then(Value::as_str);
        let nf = n.map.get("format").and_then(Value::as_str);
        let is_str_fmt = |f: Option<&str>| {
            f.is_some_and(|f| int_format_range(f).is_none() && !NUMBER_FORMATS.contains(&f))
        };
        if of != nf {
            match (of, nf) {
                (None, Some(f)) if is_str_fmt(nf) => {
                    self.emit(
                        id::FORMAT_ADDED,
                        None,
                        ptr,
                        path,
                        format!("format {f:?} added"),
                    );
                }
                (Some(f), None) if is_str_fmt(of) => {
                    self.emit(
                        id::FORMAT_REMOVED,
                        None,
                        ptr,
                        path,
                        format!("format {f:?} removed"),
                    );
                }
                (Some(a), Some(b)) if is_str_fmt(of) && is_str_fmt(nf) => {
                    self.emit(
                        id::FORMAT_CHANGED,
                        None,
                        ptr,
                        path,
                        format!("format {a:?} → {b:?}"),
                    );
                }
                (a, b)
                    if !is_str_fmt(a)
                        && !is_str_fmt(b)
                        && a.and_then(int_format_range).is_none()
                        && b.and_then(int_format_range).is_none() =>
                {
                    // float ↔ double: an annotation of precision.
                    self.emit(
                        id::ANNOTATION_CHANGED,
                        None,
                        ptr,
                        path,
                        format!("format {a:?} → {b:?}"),
                    );
                }
                _ => {}
            }
        }
    }

    fn sizes(&mut self, o: &Node<'o>, n: &Node<'n>, ptr: &str, path: &str) {
        for (min, max) in [("minItems", "maxItems"), ("minProperties", "maxProperties")] {
            let ob = Bounds::from_keys(&o.map, min, max);
            let nb = Bounds::from_keys(&n.map, min, max);
            if ob == nb {
                continue;
            }
            let desc = format!("{min}/{max} changed");
            if !ob.contains(&nb) {
                self.emit(id::CONSTRAINT_RELAXED, None, ptr, path, desc.clone());
            }
            if !nb.contains(&ob) {
                self.emit(id::CONSTRAINT_TIGHTENED, None, ptr, path, desc);
            }
        }
        let ou = o.map.get("uniqueItems") == Some(&Value::Bool(true));
        let nu = n.map.get("uniqueItems") == Some(&Value::Bool(true));
        if ou && !nu {
            self.emit(
                id::CONSTRAINT_RELAXED,
                None,
                ptr,
                path,
                "uniqueItems removed".into(),
            );
        } else if !ou && nu {
            self.emit(
                id::CONSTRAINT_TIGHTENED,
                None,
                ptr,
                path,
                "uniqueItems added".into(),
            );
        }
    }

    fn objects(
        &mut self,
        o: &Node<'o>,
        n: &Node<'n>,
        c: Option<&Node<'c>>,
        ptr: &str,
        path: &str,
        skip: Option<&str>,
    ) {
        let empty = Map::new();
        let p = Props::of(o, n, c, &empty);
        let names: BTreeSet<&String> = p.old.keys().chain(p.new.keys()).collect();
        let mut only_old = Vec::new();
        let mut only_new = Vec::new();
        for name in names {
            if skip == Some(name.as_str()) {
                continue;
            }
            let ppath = format!("{path}/{}", escape(name));
            match (p.old.get(name), p.new.get(name)) {
                (Some(ov), Some(nv)) => {
                    let on = self
                        .old
                        .node(ov, &format!("{}/properties/{}", o.ptr, escape(name)));
                    let nn = self
                        .new
                        .node(nv, &format!("{}/properties/{}", n.ptr, escape(name)));
                    let cn = match (self.cp, p.counterpart.and_then(|cp| cp.get(name)), c) {
                        (Some(d), Some(cv), Some(cnode)) => {
                            Some(d.node(cv, &format!("{}/properties/{}", cnode.ptr, escape(name))))
                        }
                        _ => None,
                    };
                    let pptr = format!("{ptr}/properties/{}", escape(name));
                    self.required_changed(&p, name, &pptr, &ppath);
                    self.walk(&on, &nn, cn.as_ref(), &ppath, None);
                }
                (Some(_), None) => only_old.push(name.clone()),
                (None, Some(_)) => only_new.push(name.clone()),
                (None, None) => {}
            }
        }
        // Names required without a schema in `properties` (on both sides).
        for name in p.old_req.symmetric_difference(&p.new_req) {
            if p.old.contains_key(name) || p.new.contains_key(name) || skip == Some(name) {
                continue;
            }
            let ppath = format!("{path}/{}", escape(name));
            self.required_changed(&p, name, &format!("{ptr}/required"), &ppath);
        }
        // A rename: one property out, one in, same shape and same required-ness.
        if only_old.len() == 1 && only_new.len() == 1 {
            let (a, b) = (&only_old[0], &only_new[0]);
            if p.old_req.contains(a) == p.new_req.contains(b)
                && !p.old_reserved.contains(b)
                && canon(&shape(&p.old[a])) == canon(&shape(&p.new[b]))
            {
                let pptr = format!("{ptr}/properties/{}", escape(b));
                self.emit(
                    id::PROPERTY_RENAMED,
                    None,
                    &pptr,
                    &format!("{path}/{}", escape(b)),
                    format!("property {a:?} renamed to {b:?}"),
                );
                return self.openness(o, n, c, ptr, path);
            }
        }
        for name in &only_new {
            let pptr = format!("{ptr}/properties/{}", escape(name));
            self.property_added(&p, name, &pptr, &format!("{path}/{}", escape(name)));
        }
        for name in &only_old {
            let pptr = format!("{}/properties/{}", o.ptr, escape(name));
            self.property_removed(&p, name, &pptr, &format!("{path}/{}", escape(name)));
        }
        self.openness(o, n, c, ptr, path);
    }

    /// A property that is in both versions, or named in `required` of both without a
    /// schema: reports a change of its required-ness.
    fn required_changed(&mut self, p: &Props<'_>, name: &str, pptr: &str, ppath: &str) {
        match (p.old_req.contains(name), p.new_req.contains(name)) {
            (true, false) => {
                let sev =
                    (self.is_writer() && p.counterpart_optional(name)).then_some(Severity::Info);
                self.emit(
                    id::PROPERTY_REQUIRED_TO_OPTIONAL,
                    sev,
                    pptr,
                    ppath,
                    format!("property {name:?} is no longer required"),
                );
            }
            (false, true) => {
                let sev =
                    (!self.is_writer() && p.counterpart_required(name)).then_some(Severity::Info);
                self.emit(
                    id::PROPERTY_OPTIONAL_TO_REQUIRED,
                    sev,
                    pptr,
                    ppath,
                    format!("property {name:?} is now required"),
                );
            }
            _ => {}
        }
    }

    /// A property only the new version has.
    fn property_added(&mut self, p: &Props<'_>, name: &str, pptr: &str, ppath: &str) {
        if p.old_reserved.contains(name) {
            self.emit(
                id::PROPERTY_NAME_REUSED,
                None,
                pptr,
                ppath,
                format!("property {name:?} was reserved (x-reserved) and is used again"),
            );
            return;
        }
        let closed_reader = self.is_writer()
            && p.counterpart_closed
            && !p.counterpart.is_some_and(|cp| cp.contains_key(name));
        let why = if closed_reader {
            "; the old reader's object is closed"
        } else {
            ""
        };
        if p.new_req.contains(name) {
            let sev = if closed_reader {
                Some(Severity::Error)
            } else if !self.is_writer() && p.counterpart_required(name) {
                Some(Severity::Info)
            } else {
                None
            };
            self.emit(
                id::PROPERTY_REQUIRED_ADDED,
                sev,
                pptr,
                ppath,
                format!("required property {name:?} added{why}"),
            );
        } else {
            self.emit(
                id::PROPERTY_OPTIONAL_ADDED,
                closed_reader.then_some(Severity::Error),
                pptr,
                ppath,
                format!("optional property {name:?} added{why}"),
            );
        }
    }

    /// A property only the old version has.
    fn property_removed(&mut self, p: &Props<'_>, name: &str, pptr: &str, ppath: &str) {
        if p.old_req.contains(name) {
            let sev =
                (self.is_writer() && p.counterpart_optional(name)).then_some(Severity::Warning);
            self.emit(
                id::PROPERTY_REQUIRED_REMOVED,
                sev,
                pptr,
                ppath,
                format!("required property {name:?} removed"),
            );
        } else {
            let reserved_now = p.new_reserved.contains(name);
            let sev = (self.is_writer() && reserved_now).then_some(Severity::Info);
            let why = if reserved_now {
                " (reserved in x-reserved)"
            } else {
                ""
            };
            self.emit(
                id::PROPERTY_OPTIONAL_REMOVED,
                sev,
                pptr,
                ppath,
                format!("optional property {name:?} removed{why}"),
            );
        }
    }

    fn openness(
        &mut self,
        o: &Node<'o>,
        n: &Node<'n>,
        c: Option<&Node<'c>>,
        ptr: &str,
        path: &str,
    ) {
        let is_obj = |x: &Node<'_>| {
            x.types.as_ref().is_some_and(|t| t.contains("object"))
                || x.map.contains_key("properties")
        };
        if !is_obj(o) && !is_obj(n) {
            return;
        }
        let (oo, no) = (closedness(&o.map), closedness(&n.map));
        let c_closed = c.is_some_and(|c| closedness(&c.map) == Openness::Closed);
        match (&oo, &no) {
            (a, b) if a == b => {}
            (Openness::Map(ov), Openness::Map(nv)) => {
                let (ov, nv) = (ov.clone(), nv.clone());
                let on = self
                    .old
                    .node_owned(&ov, &format!("{}/additionalProperties", o.ptr));
                let nn = self
                    .new
                    .node_owned(&nv, &format!("{}/additionalProperties", n.ptr));
                let cn = match (self.cp, c.map(|c| closedness(&c.map))) {
                    (Some(d), Some(Openness::Map(cv))) => Some(d.node_owned(
                        &cv,
                        &format!("{}/additionalProperties", c.map_or("", |c| &c.ptr)),
                    )),
                    _ => None,
                };
                self.walk(&on, &nn, cn.as_ref(), &format!("{path}/*"), None);
            }
            (_, Openness::Closed) => {
                self.emit(
                    id::ADDITIONAL_PROPERTIES_CLOSED,
                    None,
                    ptr,
                    path,
                    "object no longer accepts unknown members".into(),
                );
            }
            (Openness::Closed, _) => {
                let sev = (self.is_writer() && c_closed).then_some(Severity::Error);
                self.emit(
                    id::ADDITIONAL_PROPERTIES_OPENED,
                    sev,
                    ptr,
                    path,
                    "object now accepts unknown members".into(),
                );
            }
            (Openness::Open, Openness::Map(_)) => {
                self.emit(
                    id::CONSTRAINT_TIGHTENED,
                    None,
                    ptr,
                    path,
                    "additionalProperties restricted to a schema".into(),
                );
            }
            (Openness::Map(_), Openness::Open) => {
                self.emit(
                    id::CONSTRAINT_RELAXED,
                    None,
                    ptr,
                    path,
                    "additionalProperties no longer restricted".into(),
                );
            }
            _ => {}
        }
    }

    fn arrays(&mut self, o: &Node<'o>, n: &Node<'n>, c: Option<&Node<'c>>, path: &str) {
        if let (Some(oi), Some(ni)) = (o.map.get("items"), n.map.get("items"))
            && oi.is_object() | oi.is_boolean()
            && ni.is_object() | ni.is_boolean()
        {
            let on = self.old.node_owned(oi, &format!("{}/items", o.ptr));
            let nn = self.new.node_owned(ni, &format!("{}/items", n.ptr));
            let cn = match (self.cp, c, c.and_then(|c| c.map.get("items"))) {
                (Some(d), Some(cnode), Some(ci)) => {
                    Some(d.node_owned(ci, &format!("{}/items", cnode.ptr)))
                }
                _ => None,
            };
            self.walk(&on, &nn, cn.as_ref(), &format!("{path}/*"), None);
        } else if o.map.get("items").map(canon) != n.map.get("items").map(canon) {
            let ptr = format!("{}/items", n.ptr);
            self.emit(
                id::KEYWORD_CHANGED,
                None,
                &ptr,
                path,
                "items changed".into(),
            );
        }
        match (o.map.get("prefixItems"), n.map.get("prefixItems")) {
            (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
                for i in 0..a.len() {
                    let on = self
                        .old
                        .node_owned(&a[i], &format!("{}/prefixItems/{i}", o.ptr));
                    let nn = self
                        .new
                        .node_owned(&b[i], &format!("{}/prefixItems/{i}", n.ptr));
                    self.walk(&on, &nn, None, &format!("{path}/{i}"), None);
                }
            }
            (None, None) => {}
            (a, b) if a.map(canon) == b.map(canon) => {}
            _ => {
                let ptr = format!("{}/prefixItems", n.ptr);
                self.emit(
                    id::KEYWORD_CHANGED,
                    None,
                    &ptr,
                    path,
                    "prefixItems (tuple) length changed".into(),
                );
            }
        }
    }

    fn all_of(&mut self, o: &Node<'o>, n: &Node<'n>, path: &str) {
        match (o.map.get("allOf"), n.map.get("allOf")) {
            (None, None) => {}
            (a, b) if a.map(canon) == b.map(canon) && !a.is_some_and(Value::is_array) => {}
            (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
                for i in 0..a.len() {
                    let on = self.old.node_owned(&a[i], &format!("{}/allOf/{i}", o.ptr));
                    let nn = self.new.node_owned(&b[i], &format!("{}/allOf/{i}", n.ptr));
                    self.walk(&on, &nn, None, path, None);
                }
            }
            _ => {
                let ptr = format!("{}/allOf", n.ptr);
                self.emit(
                    id::KEYWORD_CHANGED,
                    None,
                    &ptr,
                    path,
                    "allOf changed shape".into(),
                );
            }
        }
    }

    fn classify(doc: &Doc<'_>, branches: &[(Value, String)]) -> UnionShape {
        let resolved: Vec<Node<'_>> = branches.iter().map(|(b, p)| doc.node_owned(b, p)).collect();
        // Bare consts: an enum written as oneOf (schemars does this for documented unit variants).
        let bare: Option<BTreeSet<String>> = resolved
            .iter()
            .map(|n| {
                let keys_ok = n.map.keys().all(|k| {
                    k == "const"
                        || k == "type"
                        || k == "enum"
                        || ANNOTATIONS.contains(&k.as_str())
                        || k.starts_with("x-")
                });
                if keys_ok { Self::enum_set(n) } else { None }
            })
            .try_fold(BTreeSet::new(), |mut acc, s| {
                acc.extend(s?);
                Some(acc)
            });
        if let Some(set) = bare
            && !resolved.is_empty()
        {
            return UnionShape {
                tag: None,
                tagged: Vec::new(),
                catch_all: Vec::new(),
                const_enum: Some(set),
            };
        }
        let tag_of = |n: &Node<'_>, p: &str| -> Option<String> {
            let pv = n.map.get("properties")?.get(p)?;
            let pn = doc.node_owned(pv, "");
            match pn.map.get("const") {
                Some(Value::String(s)) => Some(s.clone()),
                _ => match pn.map.get("enum") {
                    Some(Value::Array(a)) if a.len() == 1 => a[0].as_str().map(str::to_string),
                    _ => None,
                },
            }
        };
        let mut candidates: BTreeSet<String> = BTreeSet::new();
        for n in &resolved {
            if let Some(Value::Object(p)) = n.map.get("properties") {
                candidates.extend(p.keys().cloned());
            }
        }
        let mut best: Option<(usize, String)> = None;
        for cand in &candidates {
            let count = resolved
                .iter()
                .filter(|n| tag_of(n, cand).is_some())
                .count();
            if count == 0 {
                continue;
            }
            let better = match &best {
                None => true,
                Some((bc, bn)) => count > *bc || (count == *bc && cand == "type" && bn != "type"),
            };
            if better {
                best = Some((count, cand.clone()));
            }
        }
        let Some((_, tag)) = best else {
            return UnionShape {
                tag: None,
                tagged: Vec::new(),
                catch_all: branches.to_vec(),
                const_enum: None,
            };
        };
        let mut tagged = Vec::new();
        let mut catch_all = Vec::new();
        for (i, n) in resolved.iter().enumerate() {
            match tag_of(n, &tag) {
                Some(t) => tagged.push((t, branches[i].0.clone(), branches[i].1.clone())),
                None => catch_all.push(branches[i].clone()),
            }
        }
        UnionShape {
            tag: Some(tag),
            tagged,
            catch_all,
            const_enum: None,
        }
    }

    fn unions(&mut self, o: &Node<'o>, n: &Node<'n>, c: Option<&Node<'c>>, ptr: &str, path: &str) {
        let single = |x: &Node<'_>| -> Vec<(Value, String)> {
            // A non-union value compared with a union: one branch (without annotations).
            let m: Map<String, Value> = x
                .map
                .iter()
                .filter(|(k, _)| {
                    !ANNOTATIONS.contains(&k.as_str()) && !IGNORED.contains(&k.as_str())
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            vec![(Value::Object(m), x.ptr.clone())]
        };
        let (ob, nb) = match (&o.union, &n.union) {
            (None, None) => return,
            (Some(a), Some(b)) => (a.clone(), b.clone()),
            (Some(a), None) => {
                if n.map.contains_key("properties") {
                    self.emit(
                        id::KEYWORD_CHANGED,
                        None,
                        ptr,
                        path,
                        "union replaced by a plain schema".into(),
                    );
                    return;
                }
                (a.clone(), single(n))
            }
            (None, Some(b)) => {
                if o.map.contains_key("properties") {
                    self.emit(
                        id::KEYWORD_CHANGED,
                        None,
                        ptr,
                        path,
                        "plain schema replaced by a union".into(),
                    );
                    return;
                }
                (single(o), b.clone())
            }
        };
        let os = Self::classify(&self.old, &ob);
        let ns = Self::classify(&self.new, &nb);
        let cs = match (self.cp, c.and_then(|c| c.union.clone())) {
            (Some(d), Some(cb)) => Some(Self::classify(&d, &cb)),
            _ => None,
        };
        // Enums written as unions of consts.
        if os.const_enum.is_some() || ns.const_enum.is_some() {
            if os.const_enum.is_some() && ns.const_enum.is_some() {
                let ce = c.map(|c| {
                    (
                        cs.as_ref()
                            .and_then(|s| s.const_enum.clone())
                            .or_else(|| Self::enum_set(c)),
                        c.union.is_some() && cs.as_ref().is_some_and(|s| s.const_enum.is_none()),
                    )
                });
                self.compare_enum_sets(os.const_enum, ns.const_enum, ce, n, ptr, path);
            } else {
                self.emit(
                    id::KEYWORD_CHANGED,
                    None,
                    ptr,
                    path,
                    "enum of consts replaced by another union".into(),
                );
            }
            return;
        }
        match (&os.tag, &ns.tag) {
            (Some(a), Some(b)) if a != b => {
                self.emit(
                    id::UNION_DISCRIMINATOR_CHANGED,
                    None,
                    ptr,
                    path,
                    format!("union tag property {a:?} → {b:?}"),
                );
            }
            (Some(_), Some(_)) => self.tagged_union(c, &os, &ns, cs.as_ref(), ptr, path),
            (None, None) => self.untagged_union(&ob, &nb, path),
            _ => {
                self.emit(
                    id::KEYWORD_CHANGED,
                    None,
                    ptr,
                    path,
                    "union changed between tagged and untagged".into(),
                );
            }
        }
    }

    fn tagged_union(
        &mut self,
        c: Option<&Node<'c>>,
        os: &UnionShape,
        ns: &UnionShape,
        cs: Option<&UnionShape>,
        ptr: &str,
        path: &str,
    ) {
        let tag = ns.tag.clone().unwrap_or_default();
        let otags: BTreeSet<&String> = os.tagged.iter().map(|t| &t.0).collect();
        let ntags: BTreeSet<&String> = ns.tagged.iter().map(|t| &t.0).collect();
        let added: Vec<String> = ntags.difference(&otags).map(|s| (*s).clone()).collect();
        let removed: Vec<String> = otags.difference(&ntags).map(|s| (*s).clone()).collect();
        let find = |s: &UnionShape, t: &str| s.tagged.iter().find(|x| x.0 == t).cloned();
        // Matched by tag const, never by position.
        for t in ntags.intersection(&otags) {
            let (_, ov, op) = find(os, t).expect("present");
            let (_, nv, np) = find(ns, t).expect("present");
            let on = self.old.node_owned(&ov, &op);
            let nn = self.new.node_owned(&nv, &np);
            let cn = match (self.cp, cs.and_then(|s| find(s, t))) {
                (Some(d), Some((_, cv, cp))) => Some(d.node_owned(&cv, &cp)),
                _ => None,
            };
            self.walk(
                &on,
                &nn,
                cn.as_ref(),
                &format!("{path}[{tag}={t}]"),
                Some(&tag),
            );
        }
        // Catch-all branches: compared pairwise (excluding the tag, whose `not enum`
        // follows the known tags).
        if os.catch_all.len() == ns.catch_all.len() {
            for (i, ((ov, op), (nv, np))) in os.catch_all.iter().zip(&ns.catch_all).enumerate() {
                let on = self.old.node_owned(ov, op);
                let nn = self.new.node_owned(nv, np);
                let cn = match (self.cp, cs.and_then(|s| s.catch_all.get(i))) {
                    (Some(d), Some((cv, cp))) => Some(d.node_owned(cv, cp)),
                    _ => None,
                };
                self.walk(
                    &on,
                    &nn,
                    cn.as_ref(),
                    &format!("{path}[{tag}=*]"),
                    Some(&tag),
                );
            }
        } else {
            self.emit(
                id::KEYWORD_CHANGED,
                None,
                ptr,
                path,
                "catch-all branches for unknown tags changed".into(),
            );
        }
        // Renamed tag: one out, one in, same body.
        if added.len() == 1 && removed.len() == 1 {
            let (_, ov, _) = find(os, &removed[0]).expect("present");
            let (_, nv, np) = find(ns, &added[0]).expect("present");
            let strip = |v: &Value, doc: &Doc<'_>, p: &str| {
                let node = doc.node_owned(v, p);
                let mut m = node.map.clone();
                if let Some(Value::Object(props)) = m.get_mut("properties") {
                    props.remove(&tag);
                }
                canon(&shape(&Value::Object(m)))
            };
            if strip(&ov, &self.old, &find(os, &removed[0]).expect("present").2)
                == strip(&nv, &self.new, &np)
            {
                self.emit(
                    id::UNION_TAG_CHANGED,
                    None,
                    &np,
                    path,
                    format!("variant {:?} renamed to {:?}", removed[0], added[0]),
                );
                return;
            }
        }
        let c_open = cs.map(|s| !s.catch_all.is_empty());
        for t in &added {
            let (_, _, np) = find(ns, t).expect("present");
            let open = match c_open {
                Some(x) if self.is_writer() => x,
                _ => !ns.catch_all.is_empty() || !os.catch_all.is_empty(),
            };
            if open {
                self.emit(
                    id::EVENT_TYPE_ADDED,
                    None,
                    &np,
                    path,
                    format!("variant {t:?} added; readers ignore unknown tags"),
                );
            } else {
                let sev = (self.is_writer()
                    && cs.is_some_and(|s| s.tagged.iter().any(|x| &x.0 == t)))
                .then_some(Severity::Info);
                self.emit(
                    id::UNION_VARIANT_ADDED,
                    sev,
                    &np,
                    path,
                    format!("variant {t:?} added"),
                );
            }
        }
        for t in &removed {
            let (_, _, op) = find(os, t).expect("present");
            let open = !ns.catch_all.is_empty() || (self.is_writer() && c_open == Some(true));
            if open {
                self.emit(
                    id::EVENT_TYPE_REMOVED,
                    None,
                    &op,
                    path,
                    format!("variant {t:?} removed; readers will ignore it"),
                );
                if let Some(last) = self.out.last_mut() {
                    last.subject = Some(t.clone());
                }
            } else {
                let sev = (!self.is_writer()
                    && cs.is_some_and(|s| !s.tagged.iter().any(|x| &x.0 == t))
                    && c.is_some())
                .then_some(Severity::Info);
                self.emit(
                    id::UNION_VARIANT_REMOVED,
                    sev,
                    &op,
                    path,
                    format!("variant {t:?} removed"),
                );
            }
        }
    }

    fn untagged_union(&mut self, ob: &[(Value, String)], nb: &[(Value, String)], path: &str) {
        // Identical branches match wherever they are; what is left is added/removed,
        // except a single leftover pair, compared as a changed branch.
        let key = |doc: &Doc<'_>, v: &Value, p: &str| {
            let n = doc.node_owned(v, p);
            canon(&shape(&Value::Object(n.map.clone()))) + if n.nullable { "|null" } else { "" }
        };
        let okeys: Vec<String> = ob.iter().map(|(v, p)| key(&self.old, v, p)).collect();
        let nkeys: Vec<String> = nb.iter().map(|(v, p)| key(&self.new, v, p)).collect();
        let mut used = vec![false; nb.len()];
        let mut left_old = Vec::new();
        for (i, k) in okeys.iter().enumerate() {
            match nkeys
                .iter()
                .enumerate()
                .position(|(j, nk)| !used[j] && nk == k)
            {
                Some(j) => used[j] = true,
                None => left_old.push(i),
            }
        }
        let left_new: Vec<usize> = (0..nb.len()).filter(|j| !used[*j]).collect();
        if left_old.len() == 1 && left_new.len() == 1 {
            let (ov, op) = &ob[left_old[0]];
            let (nv, np) = &nb[left_new[0]];
            let on = self.old.node_owned(ov, op);
            let nn = self.new.node_owned(nv, np);
            self.walk(&on, &nn, None, path, None);
            return;
        }
        for j in left_new {
            let p = &nb[j].1;
            self.emit(
                id::UNION_VARIANT_ADDED,
                None,
                p,
                path,
                format!("union branch {} added", short(&nb[j].0)),
            );
        }
        for i in left_old {
            let p = &ob[i].1;
            self.emit(
                id::UNION_VARIANT_REMOVED,
                None,
                p,
                path,
                format!("union branch {} removed", short(&ob[i].0)),
            );
        }
    }

    fn other_keywords(&mut self, o: &Node<'o>, n: &Node<'n>, ptr: &str, path: &str) {
        // A `$ref` still present could not be resolved (external or dangling): compare
        // it as an opaque string.
        let (ore, nre) = (o.map.get("$ref"), n.map.get("$ref"));
        if (ore.is_some() || nre.is_some()) && ore != nre {
            self.emit(
                id::KEYWORD_CHANGED,
                None,
                ptr,
                path,
                format!(
                    "unresolved $ref changed: {} → {}",
                    ore.map_or("(none)".to_string(), short),
                    nre.map_or("(none)".to_string(), short)
                ),
            );
        }
        let keys: BTreeSet<&String> = o.map.keys().chain(n.map.keys()).collect();
        for k in keys {
            let k = k.as_str();
            if HANDLED.contains(&k)
                || ANNOTATIONS.contains(&k)
                || IGNORED.contains(&k)
                || k.starts_with("x-")
            {
                continue;
            }
            let (a, b) = (o.map.get(k), n.map.get(k));
            if a.map(canon) != b.map(canon) {
                self.emit(
                    id::KEYWORD_CHANGED,
                    None,
                    ptr,
                    path,
                    format!("keyword {k:?} changed"),
                );
            }
        }
    }
}

fn fingerprint(a: &Map<String, Value>, b: &Map<String, Value>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for m in [a, b] {
        let kept: Map<String, Value> = m
            .iter()
            .filter(|(k, _)| !IGNORED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        canon(&Value::Object(kept)).hash(&mut h);
    }
    h.finish()
}

fn self_const_union(c: &Node<'_>) -> Option<BTreeSet<String>> {
    let branches = c.union.as_ref()?;
    let shape = Walker::classify(&c.doc, branches);
    shape.const_enum
}

#[derive(Debug, Clone, PartialEq)]
enum Openness {
    Open,
    Closed,
    Map(Value),
}

fn closedness(m: &Map<String, Value>) -> Openness {
    if m.get("unevaluatedProperties") == Some(&Value::Bool(false)) {
        return Openness::Closed;
    }
    match m.get("additionalProperties") {
        None | Some(Value::Bool(true)) => Openness::Open,
        Some(Value::Bool(false)) => Openness::Closed,
        Some(v) if v.as_object().is_some_and(Map::is_empty) => Openness::Open,
        Some(v) => Openness::Map(v.clone()),
    }
}

/// The properties of an object schema in the old and new versions (and the
/// counterpart's), with what is required and reserved in each.
struct Props<'a> {
    old: &'a Map<String, Value>,
    new: &'a Map<String, Value>,
    counterpart: Option<&'a Map<String, Value>>,
    old_req: BTreeSet<String>,
    new_req: BTreeSet<String>,
    counterpart_req: Option<BTreeSet<String>>,
    /// The counterpart's object is closed to unknown members.
    counterpart_closed: bool,
    old_reserved: BTreeSet<String>,
    new_reserved: BTreeSet<String>,
}

impl<'a> Props<'a> {
    /// The counterpart's schema is known and requires `name`.
    fn counterpart_required(&self, name: &str) -> bool {
        self.counterpart_req
            .as_ref()
            .is_some_and(|r| r.contains(name))
    }

    /// The counterpart's schema is known and does not require `name`.
    fn counterpart_optional(&self, name: &str) -> bool {
        self.counterpart_req
            .as_ref()
            .is_some_and(|r| !r.contains(name))
    }

    fn of(
        o: &'a Node<'_>,
        n: &'a Node<'_>,
        c: Option<&'a Node<'_>>,
        empty: &'a Map<String, Value>,
    ) -> Self {
        let props = |m: &'a Map<String, Value>| m.get("properties").and_then(Value::as_object);
        let req = |m: &Map<String, Value>| -> BTreeSet<String> {
            m.get("required")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            old: props(&o.map).unwrap_or(empty),
            new: props(&n.map).unwrap_or(empty),
            counterpart: c.and_then(|c| props(&c.map)),
            old_req: req(&o.map),
            new_req: req(&n.map),
            counterpart_req: c.map(|c| req(&c.map)),
            counterpart_closed: c.is_some_and(|c| closedness(&c.map) == Openness::Closed),
            old_reserved: reserved(&o.map),
            new_reserved: reserved(&n.map),
        }
    }
}

fn reserved(m: &Map<String, Value>) -> BTreeSet<String> {
    m.get("x-reserved")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}
