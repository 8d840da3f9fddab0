//! Properties of the engine on generated schemas: a schema compared with itself
//! reports nothing; a change and its inverse are seen in both comparisons, and what
//! breaks D1 one way breaks D2 the other way (new writer ⊄ old reader is the same
//! question as "old writer ⊄ new reader" with old and new swapped).
//!
//! Seeded with a fixed seed (printed below) so failures replay.

use std::collections::BTreeSet;

use proptest::{prelude::*, test_runner::RngSeed};
use runwire_schema::{
    compat::{Dir, Finding, compare_trees},
    rules::Severity,
    tree::{MemSource, SchemaTree},
};
use serde_json::{Map, Value, json};

const SEED: u64 = 0x5eed_2026_1122;

#[derive(Debug, Clone, PartialEq)]
enum Ty {
    Str {
        max: Option<u32>,
        pattern: bool,
        format: bool,
    },
    Int {
        max: Option<i64>,
        wide: bool,
    },
    Num,
    Bool,
    Enum(BTreeSet<u8>),
    Arr(Box<Ty>),
}

#[derive(Debug, Clone, PartialEq)]
struct Prop {
    name: String,
    ty: Ty,
    nullable: bool,
    required: bool,
}

fn ty() -> impl Strategy<Value = Ty> {
    let leaf = prop_oneof![
        (
            proptest::option::of(1u32..200),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(max, pattern, format)| Ty::Str {
                max,
                pattern,
                format
            }),
        (proptest::option::of(0i64..10_000), any::<bool>())
            .prop_map(|(max, wide)| Ty::Int { max, wide }),
        Just(Ty::Num),
        Just(Ty::Bool),
        proptest::collection::btree_set(0u8..6, 1..4).prop_map(Ty::Enum),
    ];
    leaf.prop_recursive(2, 4, 1, |inner| inner.prop_map(|t| Ty::Arr(Box::new(t))))
}

fn props() -> impl Strategy<Value = Vec<Prop>> {
    proptest::collection::btree_map("[a-e]", (ty(), any::<bool>(), any::<bool>()), 1..5).prop_map(
        |m| {
            m.into_iter()
                .map(|(name, (ty, nullable, required))| Prop {
                    name,
                    ty,
                    nullable,
                    required,
                })
                .collect()
        },
    )
}

#[derive(Debug, Clone)]
enum Mutation {
    AddEnumValue(usize),
    RemoveEnumValue(usize),
    ChangeMax(usize, u32),
    ToggleNullable(usize),
    ToggleRequired(usize),
    RemoveProp(usize),
    AddProp(Prop),
    ChangeType(usize),
    TogglePattern(usize),
    ToggleWidth(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::AddEnumValue),
        any::<usize>().prop_map(Mutation::RemoveEnumValue),
        (any::<usize>(), 1u32..300).prop_map(|(i, m)| Mutation::ChangeMax(i, m)),
        any::<usize>().prop_map(Mutation::ToggleNullable),
        any::<usize>().prop_map(Mutation::ToggleRequired),
        any::<usize>().prop_map(Mutation::RemoveProp),
        (ty(), any::<bool>(), any::<bool>()).prop_map(
            |(ty, nullable, required)| Mutation::AddProp(Prop {
                name: "zz".into(),
                ty,
                nullable,
                required
            })
        ),
        any::<usize>().prop_map(Mutation::ChangeType),
        any::<usize>().prop_map(Mutation::TogglePattern),
        any::<usize>().prop_map(Mutation::ToggleWidth),
    ]
}

fn leaf_mut(t: &mut Ty) -> &mut Ty {
    match t {
        Ty::Arr(inner) => leaf_mut(inner),
        t => t,
    }
}

fn apply(props: &[Prop], m: &Mutation) -> Vec<Prop> {
    let mut p = props.to_vec();
    let n = p.len();
    match m {
        Mutation::AddEnumValue(i) => {
            if let Ty::Enum(s) = leaf_mut(&mut p[i % n].ty) {
                s.insert(9);
            }
        }
        Mutation::RemoveEnumValue(i) => {
            if let Ty::Enum(s) = leaf_mut(&mut p[i % n].ty)
                && s.len() > 1
            {
                let first = *s.iter().next().expect("non-empty");
                s.remove(&first);
            }
        }
        Mutation::ChangeMax(i, v) => match leaf_mut(&mut p[i % n].ty) {
            Ty::Str { max, .. } => *max = Some(*v),
            Ty::Int { max, .. } => *max = Some(i64::from(*v)),
            _ => {}
        },
        Mutation::ToggleNullable(i) => p[i % n].nullable = !p[i % n].nullable,
        Mutation::ToggleRequired(i) => p[i % n].required = !p[i % n].required,
        Mutation::RemoveProp(i) => {
            p.remove(i % n);
        }
        Mutation::AddProp(prop) => p.push(prop.clone()),
        Mutation::ChangeType(i) => {
            let t = leaf_mut(&mut p[i % n].ty);
            *t = match t {
                Ty::Str { .. } => Ty::Bool,
                Ty::Bool => Ty::Str {
                    max: None,
                    pattern: false,
                    format: false,
                },
                Ty::Int { .. } => Ty::Num,
                Ty::Num => Ty::Int {
                    max: None,
                    wide: false,
                },
                Ty::Enum(_) => Ty::Bool,
                Ty::Arr(_) => Ty::Bool,
            };
        }
        Mutation::TogglePattern(i) => {
            if let Ty::Str { pattern, .. } = leaf_mut(&mut p[i % n].ty) {
                *pattern = !*pattern;
            }
        }
        Mutation::ToggleWidth(i) => {
            if let Ty::Int { wide, .. } = leaf_mut(&mut p[i % n].ty) {
                *wide = !*wide;
            }
        }
    }
    p
}

fn render_ty(t: &Ty) -> Map<String, Value> {
    let v = match t {
        Ty::Str {
            max,
            pattern,
            format,
        } => {
            let mut m = json!({"type": "string"});
            if let Some(x) = max {
                m["maxLength"] = json!(x);
            }
            if *pattern {
                m["pattern"] = json!("^[a-z]+$");
            }
            if *format {
                m["format"] = json!("uri");
            }
            m
        }
        Ty::Int { max, wide } => {
            let (fmt, cap) = if *wide {
                ("uint64", 9_007_199_254_740_991i64)
            } else {
                ("uint32", 4_294_967_295)
            };
            json!({"type": "integer", "format": fmt, "minimum": 0, "maximum": max.map_or(cap, |m| m.min(cap))})
        }
        Ty::Num => json!({"type": "number"}),
        Ty::Bool => json!({"type": "boolean"}),
        Ty::Enum(s) => {
            json!({"type": "string", "enum": s.iter().map(|v| format!("v{v}")).collect::<Vec<_>>()})
        }
        Ty::Arr(inner) => json!({"type": "array", "items": Value::Object(render_ty(inner))}),
    };
    v.as_object().cloned().expect("object")
}

fn render(props: &[Prop], closed: bool) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for p in props {
        let mut s = render_ty(&p.ty);
        if p.nullable {
            s = json!({"anyOf": [Value::Object(s), {"type": "null"}]})
                .as_object()
                .cloned()
                .expect("object");
        }
        properties.insert(p.name.clone(), Value::Object(s));
        if p.required {
            required.push(json!(p.name));
        }
    }
    let mut v = json!({"type": "object", "properties": properties, "required": required});
    if closed {
        v["additionalProperties"] = json!(false);
    }
    v
}

fn tree(props: &[Prop]) -> SchemaTree {
    let index = json!({"version": "v1", "schemas": [{"name": "t", "direction": "server-to-client",
        "writer": "t.writer.schema.json", "reader": "t.reader.schema.json"}]});
    let mut src = MemSource::default();
    src.files
        .insert("index.json".into(), index.to_string().into_bytes());
    src.files.insert(
        "t.writer.schema.json".into(),
        render(props, true).to_string().into_bytes(),
    );
    src.files.insert(
        "t.reader.schema.json".into(),
        render(props, false).to_string().into_bytes(),
    );
    SchemaTree::load(&mut src, "t").expect("tree")
}

fn breaks(f: &[Finding], d: Dir) -> bool {
    f.iter()
        .any(|f| f.direction == d && f.severity == Severity::Error)
}

fn config() -> ProptestConfig {
    eprintln!("proptest seed: {SEED:#x}");
    ProptestConfig {
        cases: 256,
        rng_seed: RngSeed::Fixed(SEED),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_schema_compared_with_itself_reports_nothing(p in props()) {
        let t = tree(&p);
        let f = compare_trees(&t, &t);
        prop_assert!(f.is_empty(), "{:#?}", f);
    }

    #[test]
    fn a_change_and_its_inverse_agree_across_directions(p in props(), m in mutation()) {
        let q = apply(&p, &m);
        let (old, new) = (tree(&p), tree(&q));
        let forward = compare_trees(&old, &new);
        let inverse = compare_trees(&new, &old);
        prop_assert_eq!(forward.is_empty(), inverse.is_empty(), "forward {:#?}\ninverse {:#?}", forward, inverse);
        prop_assert_eq!(breaks(&forward, Dir::NewWriterOldReader), breaks(&inverse, Dir::OldWriterNewReader), "forward {:#?}\ninverse {:#?}", forward, inverse);
        prop_assert_eq!(breaks(&forward, Dir::OldWriterNewReader), breaks(&inverse, Dir::NewWriterOldReader), "forward {:#?}\ninverse {:#?}", forward, inverse);
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-5i64..5).prop_map(|n| json!(n)),
        prop_oneof![
            Just("string"),
            Just("integer"),
            Just("null"),
            Just("object"),
            Just("#/$defs/a"),
            Just("#"),
            Just("#/properties/x"),
            Just("uint32"),
            Just("type"),
            Just("x")
        ]
        .prop_map(|s| json!(s)),
    ];
    let keys = prop_oneof![
        Just("type"),
        Just("properties"),
        Just("required"),
        Just("$ref"),
        Just("$defs"),
        Just("a"),
        Just("x"),
        Just("oneOf"),
        Just("anyOf"),
        Just("allOf"),
        Just("enum"),
        Just("const"),
        Just("items"),
        Just("prefixItems"),
        Just("additionalProperties"),
        Just("format"),
        Just("minimum"),
        Just("maxLength"),
        Just("not"),
        Just("default"),
        Just("x-reserved"),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(keys.clone(), inner, 0..6).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

fn tree_of(w: &Value, r: &Value) -> Option<SchemaTree> {
    let index = json!({"version": "v1", "schemas": [{"name": "t", "direction": "client-to-server",
        "writer": "t.writer.schema.json", "reader": "t.reader.schema.json"}]});
    let mut src = MemSource::default();
    src.files
        .insert("index.json".into(), index.to_string().into_bytes());
    src.files
        .insert("t.writer.schema.json".into(), w.to_string().into_bytes());
    src.files
        .insert("t.reader.schema.json".into(), r.to_string().into_bytes());
    SchemaTree::load(&mut src, "t").ok()
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary (mostly nonsensical) schemas, with dangling and recursive `$ref`s,
    /// never make the engine panic or loop, and self-comparison stays empty.
    #[test]
    fn arbitrary_schemas_never_panic(a in arb_json(), b in arb_json(), c in arb_json(), d in arb_json()) {
        if let (Some(old), Some(new)) = (tree_of(&a, &b), tree_of(&c, &d)) {
            let _ = compare_trees(&old, &new);
            let _ = compare_trees(&new, &old);
            prop_assert!(compare_trees(&old, &old).is_empty());
        }
    }
}
