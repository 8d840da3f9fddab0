//! The compatibility rule engine (spec §18.3; the rules are listed in `docs/schema-compat.md`).
//!
//! Two schema trees (old and new) are compared schema by schema, matched by name from
//! `index.json`. For every schema in both trees:
//!
//! - **D1** diffs the old and new *writer* contracts, with the old *reader* as
//!   counterpart: what the new writer may send that the old reader did not expect.
//! - **D2** diffs the old and new *reader* contracts, with the old *writer* as
//!   counterpart: what the new reader no longer accepts that the old writer may send.
//!
//! The walk resolves `$ref` (with cycle protection), folds `["T","null"]` and
//! `anyOf [T, {"type":"null"}]` into one nullable node, and matches union branches by
//! their tag `const`, never by position. Each change is reported with a rule id from
//! [`crate::rules`], a severity, and the JSON pointer of where it happened.
//!
//! The verdicts follow the spec's versioning policy (§18): readers ignore unknown
//! members (`RW-COMPAT-1`), unknown event types (`RW-VERSION-4`) and unknown server
//! messages (`RW-VERSION-5`), and accept unknown values of open enumerations
//! (`RW-COMPAT-4`, `x-extensible-enum`), so those additions are not breaking; closed
//! enumerations, required members, type and range changes are (§18.1).

mod walk;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    rules::{Severity, id, rule},
    tree::{Direction, SchemaTree},
};

/// Which contract a change was seen on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Contract {
    /// What a sender may emit (objects closed).
    Writer,
    /// What a receiver must accept (objects open).
    Reader,
}

/// The two compatibility directions.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum Dir {
    // `D1` and `D2` in reports and ignore files; the doc lines are the report
    // schema's descriptions (`docs/schema-compat-report.schema.json`).
    /// New writer, old reader.
    #[serde(rename = "D1")]
    NewWriterOldReader,
    /// Old writer, new reader.
    #[serde(rename = "D2")]
    OldWriterNewReader,
}

impl Dir {
    /// Human description for a schema direction: e.g. "new server → old client".
    pub fn parties(self, d: Direction) -> String {
        let (w, r) = d.parties();
        match self {
            Dir::NewWriterOldReader => format!("new {w} → old {r}"),
            Dir::OldWriterNewReader => format!("old {w} → new {r}"),
        }
    }

    /// `D1` or `D2`, as reports and ignore files spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::NewWriterOldReader => "D1",
            Dir::OldWriterNewReader => "D2",
        }
    }
}

/// A change found in one pair of documents, before it is attached to a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The rule id.
    pub rule: &'static str,
    /// The severity, after refinement by the counterpart.
    pub severity: Severity,
    /// JSON pointer in the new document (the old one for removals).
    pub pointer: String,
    /// Instance path.
    pub path: String,
    /// What changed.
    pub message: String,
    /// The union tag a variant change is about, when there is one.
    pub subject: Option<String>,
}

/// One reported change.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Finding {
    /// The schema name (from `index.json`).
    pub schema: String,
    /// D1 or D2.
    pub direction: Dir,
    /// Which parties the direction puts together, e.g. "new server → old client".
    pub parties: String,
    /// The rule id.
    pub rule: String,
    /// error / warning / info.
    pub severity: Severity,
    /// The contract the change was seen on (absent for file-level changes).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub contract: Option<Contract>,
    /// The schema file, relative to the version folder.
    pub file: String,
    /// JSON pointer of the change inside `file` (in the new file, or the old one for removals).
    pub pointer: String,
    /// Where in an instance the change applies, e.g. `/data/status`.
    pub path: String,
    /// What changed.
    pub message: String,
    /// Other schemas where the same change (same shared definition) was found.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub also_in: Vec<String>,
}

/// Compares one pair of schema documents on one contract.
///
/// `counterpart` is the other party's schema of the old version (the old reader when
/// `contract` is [`Contract::Writer`], the old writer otherwise), used to refine
/// severities; pass `None` to get every rule's default severity.
pub fn compare_documents(
    contract: Contract,
    old: &Value,
    new: &Value,
    counterpart: Option<&Value>,
) -> Vec<Change> {
    let mut w = walk::Walker::new(
        contract,
        walk::Doc { root: old },
        walk::Doc { root: new },
        counterpart.map(|root| walk::Doc { root }),
    );
    w.run();
    w.out
}

/// Compares two trees and returns every finding, sorted, with findings in shared
/// definitions merged across schemas (see [`Finding::also_in`]).
pub fn compare_trees(old: &SchemaTree, new: &SchemaTree) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    // Tags removed from unions whose new reader still accepts unknown tags.
    let mut removed_open_tags = std::collections::BTreeSet::new();
    let file_level = |schema: &str, d: Direction, rid: &'static str, file: &str, msg: String| {
        let r = rule(rid).expect("catalog");
        [
            (Dir::NewWriterOldReader, r.d1),
            (Dir::OldWriterNewReader, r.d2),
        ]
        .map(|(dir, sev)| Finding {
            schema: schema.to_string(),
            direction: dir,
            parties: dir.parties(d),
            rule: rid.to_string(),
            severity: sev,
            contract: None,
            file: file.to_string(),
            pointer: String::new(),
            path: "/".into(),
            message: msg.clone(),
            also_in: Vec::new(),
        })
    };
    for oe in &old.index.schemas {
        match new.entry(&oe.name) {
            None => out.extend(file_level(
                &oe.name,
                oe.direction,
                id::SCHEMA_REMOVED,
                &oe.writer,
                format!("schema {:?} removed", oe.name),
            )),
            Some(ne) if ne.direction != oe.direction => out.extend(file_level(
                &oe.name,
                ne.direction,
                id::SCHEMA_DIRECTION_CHANGED,
                &ne.writer,
                format!(
                    "direction {} → {}",
                    oe.direction.as_str(),
                    ne.direction.as_str()
                ),
            )),
            Some(ne) => {
                let (ow, orr) = (&old.files[&oe.writer], &old.files[&oe.reader]);
                let (nw, nr) = (&new.files[&ne.writer], &new.files[&ne.reader]);
                let runs = [
                    (
                        Dir::NewWriterOldReader,
                        Contract::Writer,
                        ow,
                        nw,
                        orr,
                        &ne.writer,
                        &oe.writer,
                    ),
                    (
                        Dir::OldWriterNewReader,
                        Contract::Reader,
                        orr,
                        nr,
                        ow,
                        &ne.reader,
                        &oe.reader,
                    ),
                ];
                for (dir, contract, o, n, cp, nfile, ofile) in runs {
                    let mut w = walk::Walker::new(
                        contract,
                        walk::Doc { root: o },
                        walk::Doc { root: n },
                        Some(walk::Doc { root: cp }),
                    );
                    w.run();
                    for f in w.out {
                        if dir == Dir::OldWriterNewReader
                            && f.rule == id::EVENT_TYPE_REMOVED
                            && let Some(t) = &f.subject
                        {
                            removed_open_tags.insert(t.clone());
                        }
                        let removal = f.rule.ends_with("_REMOVED") && !f.rule.starts_with("ENUM");
                        out.push(Finding {
                            schema: ne.name.clone(),
                            direction: dir,
                            parties: dir.parties(ne.direction),
                            rule: f.rule.to_string(),
                            severity: f.severity,
                            contract: Some(contract),
                            file: if removal {
                                ofile.clone()
                            } else {
                                nfile.clone()
                            },
                            pointer: f.pointer,
                            path: f.path,
                            message: f.message,
                            also_in: Vec::new(),
                        });
                    }
                }
            }
        }
    }
    for ne in &new.index.schemas {
        if old.entry(&ne.name).is_none() {
            out.extend(file_level(
                &ne.name,
                ne.direction,
                id::SCHEMA_ADDED,
                &ne.writer,
                format!("schema {:?} added", ne.name),
            ));
        }
    }
    // A removed per-type schema (`events/<type>`, `server/<type>`) whose type new readers
    // still accept as unknown is not an error for them.
    for f in &mut out {
        if f.rule == id::SCHEMA_REMOVED
            && f.direction == Dir::OldWriterNewReader
            && let Some((_, tag)) = f.schema.rsplit_once('/')
            && removed_open_tags.contains(tag)
        {
            f.severity = Severity::Warning;
            f.message
                .push_str("; new readers still accept it as an unknown type");
        }
    }
    out.sort();
    out.dedup();
    merge_shared(out)
}

/// Merges findings in shared `$defs` that several schemas embed (e.g. `RunStatus` in
/// the event envelope, the event frame and the snapshot): one finding, `also_in` the rest.
fn merge_shared(findings: Vec<Finding>) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    type Key = (Dir, String, String, String, String, Severity);
    let mut index: std::collections::BTreeMap<Key, usize> = std::collections::BTreeMap::new();
    for f in findings {
        if f.pointer.starts_with("/$defs/") || f.pointer.starts_with("/definitions/") {
            let key = (
                f.direction,
                f.parties.clone(),
                f.rule.clone(),
                f.pointer.clone(),
                f.message.clone(),
                f.severity,
            );
            if let Some(&i) = index.get(&key) {
                if out[i].schema != f.schema && !out[i].also_in.contains(&f.schema) {
                    out[i].also_in.push(f.schema);
                }
                continue;
            }
            index.insert(key, out.len());
        }
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules(old: &Value, new: &Value) -> Vec<(String, String)> {
        compare_documents(Contract::Writer, old, new, None)
            .into_iter()
            .map(|c| (c.rule.to_string(), c.pointer))
            .collect()
    }

    #[test]
    fn refs_with_escapes_absolute_ids_and_chains_resolve() {
        let doc = |extra: &str| {
            json!({
                "$id": "https://runwire.dev/schema/v1/x.schema.json",
                "type": "object",
                "properties": {
                    "a": {"$ref": "#/$defs/a~1b"},
                    "b": {"$ref": "#/$defs/with%20space"},
                    "c": {"$ref": "https://runwire.dev/schema/v1/x.schema.json#/$defs/Chain1"},
                },
                "$defs": {
                    "a/b": {"enum": ["x", extra]},
                    "with space": {"enum": ["y", extra]},
                    "Chain1": {"$ref": "#/$defs/Chain2"},
                    "Chain2": {"enum": ["z", extra]},
                }
            })
        };
        let got = rules(&doc("old"), &doc("new"));
        let want: Vec<(String, String)> = ["/$defs/a~1b", "/$defs/with space", "/$defs/Chain2"]
            .iter()
            .flat_map(|p| {
                [
                    ("ENUM_VALUE_ADDED".to_string(), p.to_string()),
                    ("ENUM_VALUE_REMOVED".to_string(), p.to_string()),
                ]
            })
            .collect();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        let mut want_sorted = want;
        want_sorted.sort();
        assert_eq!(got_sorted, want_sorted, "{got:#?}");
    }

    #[test]
    fn recursion_through_the_root_and_ref_loops_terminate() {
        let a = json!({"type": "object", "properties": {"child": {"$ref": "#"}, "n": {"type": "integer"}},
                       "$defs": {"L1": {"$ref": "#/$defs/L2"}, "L2": {"$ref": "#/$defs/L1"}},
                       "additionalProperties": {"$ref": "#/$defs/L1"}});
        let mut b = a.clone();
        b["properties"]["n"]["type"] = json!("string");
        assert!(rules(&a, &a).is_empty());
        assert_eq!(
            rules(&a, &b),
            vec![("TYPE_CHANGED".to_string(), "/properties/n".to_string())]
        );
    }

    #[test]
    fn null_in_an_enum_counts_unless_the_type_is_nullable() {
        let a = json!({"enum": ["a", null]});
        let b = json!({"enum": ["a"]});
        assert_eq!(
            rules(&a, &b),
            vec![("ENUM_VALUE_REMOVED".to_string(), String::new())]
        );
        let a = json!({"type": ["string", "null"], "enum": ["a", null]});
        let b = json!({"type": "string", "enum": ["a"]});
        assert_eq!(
            rules(&a, &b),
            vec![("NULLABLE_REMOVED".to_string(), String::new())]
        );
    }

    #[test]
    fn required_names_without_a_property_schema_are_compared() {
        let a = json!({"type": "object", "required": ["id"]});
        let b = json!({"type": "object", "required": ["id", "token"]});
        let got = compare_documents(Contract::Reader, &a, &b, None);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (got[0].rule, got[0].severity),
            ("PROPERTY_OPTIONAL_TO_REQUIRED", Severity::Error)
        );
        assert_eq!(got[0].pointer, "/required");
        assert_eq!(
            rules(&b, &a),
            vec![(
                "PROPERTY_REQUIRED_TO_OPTIONAL".to_string(),
                "/required".to_string()
            )]
        );
    }

    #[test]
    fn dangling_refs_are_compared_as_strings() {
        let a = json!({"properties": {"x": {"$ref": "other.json#/A"}}});
        let b = json!({"properties": {"x": {"$ref": "other.json#/B"}}});
        assert!(rules(&a, &a).is_empty());
        assert_eq!(
            rules(&a, &b),
            vec![("KEYWORD_CHANGED".to_string(), "/properties/x".to_string())]
        );
    }
}
