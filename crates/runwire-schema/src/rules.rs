//! The rule catalog of the compatibility checker (`runwire schema rules`).
//!
//! Every change the engine reports carries one of these rule ids. A rule has one
//! default severity per direction:
//!
//! - **D1** — the new writer against the old reader ("new server, old client" for
//!   server-to-client schemas, "new client, old server" for client-to-server ones).
//!   Changes seen on the *writer* contract are judged in D1.
//! - **D2** — the old writer against the new reader ("old server, new client", or
//!   "old client, new server"). Changes seen on the *reader* contract are judged in D2.
//!
//! Some rules are refined by looking at the other party's contract (for example
//! `ENUM_VALUE_ADDED` is only `info` when the old reader does not restrict the enum);
//! the refinement is spelled out in [`Rule::refinement`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// How much a finding matters.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    Default,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Compatible; reported for the record.
    #[default]
    Info,
    /// Compatible on the wire, but risky (data silently ignored, a name freed for reuse).
    #[serde(alias = "warn")]
    Warning,
    /// Breaking: a deployed peer may reject or misread what the other side sends.
    Error,
}

impl Severity {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    /// Parses `info`, `warning` (or `warn`), `error`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(Self::Info),
            "warning" | "warn" => Some(Self::Warning),
            "error" | "err" => Some(Self::Error),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// The rule id, SCREAMING_SNAKE_CASE.
    pub id: &'static str,
    /// Default severity in D1 (new writer, old reader).
    pub d1: Severity,
    /// Default severity in D2 (old writer, new reader).
    pub d2: Severity,
    /// One line: what the rule detects and why it matters.
    pub purpose: &'static str,
    /// When the engine lowers or raises the default severity, and why; empty if never.
    pub refinement: &'static str,
    /// A minimal example: old schema fragment → new schema fragment.
    pub example: &'static str,
}

use Severity::{Error as E, Info as I, Warning as W};

macro_rules! rules {
    ($( $konst:ident = $id:literal, $d1:expr, $d2:expr, $purpose:literal, $refine:literal, $example:literal; )*) => {
        /// Rule ids as constants, so the engine cannot misspell them.
        pub mod id {
            $(
                #[doc = $purpose]
                pub const $konst: &str = $id;
            )*
        }
        /// Every rule, in catalog order.
        pub const RULES: &[Rule] = &[
            $( Rule { id: $id, d1: $d1, d2: $d2, purpose: $purpose, refinement: $refine, example: $example }, )*
        ];
    };
}

rules! {
    SCHEMA_ADDED = "SCHEMA_ADDED", I, I,
        "A schema (message, event payload, HTTP body) exists only in the new version.",
        "",
        "index.json gains {\"name\":\"http/cancel-request\",…}";
    SCHEMA_REMOVED = "SCHEMA_REMOVED", W, E,
        "A schema exists only in the old version: the new writer stops sending it (D1), and the new reader no longer understands what old writers send (D2).",
        "D2 is warning for a per-type schema (events/<type>, server/<type>) whose type the new reader still accepts as unknown (EVENT_TYPE_REMOVED).",
        "index.json loses {\"name\":\"server/reset\",…}";
    SCHEMA_DIRECTION_CHANGED = "SCHEMA_DIRECTION_CHANGED", E, E,
        "A schema changed direction (server-to-client ↔ client-to-server): writer and reader swap parties.",
        "",
        "\"direction\":\"server-to-client\" → \"direction\":\"client-to-server\"";
    EVENT_TYPE_ADDED = "EVENT_TYPE_ADDED", I, I,
        "A tagged union whose reader accepts unknown tags (event types, server messages) gained a variant; old readers ignore it.",
        "",
        "oneOf [{type:{const:\"run.status\"}}, {type:{not:{enum:[…]}}}] → adds {type:{const:\"run.cost\"}}";
    EVENT_TYPE_REMOVED = "EVENT_TYPE_REMOVED", W, W,
        "A tagged union whose reader accepts unknown tags lost a variant; what old writers still send is silently ignored by new readers.",
        "",
        "oneOf loses {type:{const:\"todo.updated\"}} while a catch-all branch remains";
    UNION_VARIANT_ADDED = "UNION_VARIANT_ADDED", E, I,
        "A closed union (tagged or not) gained a variant the old reader rejects.",
        "D1 is info when the old reader already accepts the variant (its own union has the tag, or a catch-all branch).",
        "oneOf [{kind:{const:\"a\"}}] → oneOf [{kind:{const:\"a\"}}, {kind:{const:\"b\"}}]";
    UNION_VARIANT_REMOVED = "UNION_VARIANT_REMOVED", I, E,
        "A closed union lost a variant: old writers may still send it and the new reader rejects it.",
        "D2 is info when the old writer never sent that variant.",
        "oneOf [{kind:{const:\"a\"}}, {kind:{const:\"b\"}}] → oneOf [{kind:{const:\"a\"}}]";
    UNION_TAG_CHANGED = "UNION_TAG_CHANGED", E, E,
        "A union variant kept its shape but changed its tag value (a renamed message or event type).",
        "",
        "{type:{const:\"log\"}, …} → {type:{const:\"log.line\"}, …}";
    UNION_DISCRIMINATOR_CHANGED = "UNION_DISCRIMINATOR_CHANGED", E, E,
        "A tagged union changed the property that carries its tag.",
        "",
        "oneOf of {type:{const:…}} → oneOf of {kind:{const:…}}";
    PROPERTY_OPTIONAL_ADDED = "PROPERTY_OPTIONAL_ADDED", I, I,
        "An optional property was added; readers ignore unknown members.",
        "D1 is error when the old reader's object is closed (additionalProperties: false).",
        "properties {a} → properties {a, b}; required [a]";
    PROPERTY_REQUIRED_ADDED = "PROPERTY_REQUIRED_ADDED", I, E,
        "A required property was added: the new reader rejects what old writers send without it.",
        "D2 is info when the old writer already always sent it; D1 is error when the old reader's object is closed.",
        "properties {a}, required [a] → properties {a, b}, required [a, b]";
    PROPERTY_OPTIONAL_REMOVED = "PROPERTY_OPTIONAL_REMOVED", W, I,
        "An optional property was removed; its name is free for reuse with another type, so reserve it (x-reserved).",
        "",
        "properties {a, b} → properties {a}";
    PROPERTY_REQUIRED_REMOVED = "PROPERTY_REQUIRED_REMOVED", E, I,
        "A required property was removed: the new writer stops sending what the old reader requires.",
        "D1 is warning when the old reader does not require it.",
        "properties {a, b}, required [a, b] → properties {a}, required [a]";
    PROPERTY_REQUIRED_TO_OPTIONAL = "PROPERTY_REQUIRED_TO_OPTIONAL", E, I,
        "A property became optional: the new writer may omit what the old reader requires.",
        "D1 is info when the old reader does not require it.",
        "required [a, b] → required [a]";
    PROPERTY_OPTIONAL_TO_REQUIRED = "PROPERTY_OPTIONAL_TO_REQUIRED", I, E,
        "A property became required: the new reader rejects messages of old writers that omit it.",
        "D2 is info when the old writer always sent it.",
        "required [a] → required [a, b]";
    PROPERTY_RENAMED = "PROPERTY_RENAMED", E, E,
        "A property was removed and another with the same schema added in the same object: a rename, which both sides see as data lost.",
        "",
        "properties {call_id: string} → properties {id: string}";
    PROPERTY_NAME_REUSED = "PROPERTY_NAME_REUSED", E, E,
        "A property name listed in the old schema's x-reserved (a removed property) is used again; old peers may read it with the old meaning.",
        "",
        "x-reserved [\"size\"] → properties {size: string}";
    ADDITIONAL_PROPERTIES_CLOSED = "ADDITIONAL_PROPERTIES_CLOSED", I, E,
        "An object stopped accepting unknown members (additionalProperties/unevaluatedProperties false): on a reader this breaks the ignore-unknown model.",
        "",
        "{type: object} → {type: object, additionalProperties: false}";
    ADDITIONAL_PROPERTIES_OPENED = "ADDITIONAL_PROPERTIES_OPENED", W, I,
        "An object started accepting unknown members: on a writer, the contract no longer says what may be sent.",
        "D1 is error when the old reader's object is closed.",
        "{additionalProperties: false} → {}";
    TYPE_CHANGED = "TYPE_CHANGED", E, E,
        "A value's JSON type changed to an unrelated one.",
        "",
        "{type: string} → {type: integer}";
    TYPE_WIDENED = "TYPE_WIDENED", E, I,
        "A value accepts more JSON types (integer → number, string → string|integer): old readers may reject the new ones.",
        "D1 is info when the old reader already accepts the added types.",
        "{type: integer} → {type: number}";
    TYPE_NARROWED = "TYPE_NARROWED", I, E,
        "A value accepts fewer JSON types: the new reader rejects some of what old writers send.",
        "D2 is info when the old writer never sent the removed types.",
        "{type: [string, integer]} → {type: string}";
    NULLABLE_ADDED = "NULLABLE_ADDED", E, I,
        "A value may now be null ([T, null] or anyOf [T, {type: null}]): old readers may reject null.",
        "D1 is info when the old reader already accepts null.",
        "{type: string} → {type: [string, null]}";
    NULLABLE_REMOVED = "NULLABLE_REMOVED", I, E,
        "A value may no longer be null: the new reader rejects the nulls old writers send.",
        "D2 is info when the old writer never sent null.",
        "anyOf [{$ref: X}, {type: null}] → {$ref: X}";
    INT_WIDTH_WIDENED = "INT_WIDTH_WIDENED", E, I,
        "An integer's declared width grew (format uint32 → uint64): old readers with the narrow type overflow.",
        "",
        "{type: integer, format: uint32} → {type: integer, format: uint64}";
    INT_WIDTH_NARROWED = "INT_WIDTH_NARROWED", I, E,
        "An integer's declared width shrank (format uint64 → uint32): the new reader rejects large values old writers send.",
        "",
        "{type: integer, format: uint64} → {type: integer, format: uint32}";
    NUMBER_RANGE_WIDENED = "NUMBER_RANGE_WIDENED", E, I,
        "A numeric bound was relaxed or removed (minimum, maximum, exclusive bounds, multipleOf).",
        "D1 is info when the old reader's bound still contains the new range.",
        "{maximum: 100} → {maximum: 1000}";
    NUMBER_RANGE_NARROWED = "NUMBER_RANGE_NARROWED", I, E,
        "A numeric bound was added or tightened.",
        "D2 is info when the old writer's range fits in the new bound.",
        "{minimum: 0} → {minimum: 1}";
    STRING_LENGTH_RELAXED = "STRING_LENGTH_RELAXED", E, I,
        "minLength lowered or maxLength raised/removed: old readers may reject the new lengths.",
        "D1 is info when the old reader's limits still contain the new ones.",
        "{maxLength: 64} → {maxLength: 128}";
    STRING_LENGTH_TIGHTENED = "STRING_LENGTH_TIGHTENED", I, E,
        "minLength raised or maxLength lowered/added: the new reader rejects lengths old writers send.",
        "D2 is info when the old writer's limits already fit.",
        "{maxLength: 128} → {maxLength: 64}";
    PATTERN_ADDED = "PATTERN_ADDED", I, E,
        "A string gained a pattern: the new reader rejects strings old writers may send.",
        "D2 is info when the old writer had the same pattern.",
        "{type: string} → {type: string, pattern: \"^[a-z]+$\"}";
    PATTERN_REMOVED = "PATTERN_REMOVED", E, I,
        "A string lost its pattern: old readers may reject what the new writer sends.",
        "D1 is info when the old reader has no pattern.",
        "{pattern: \"^[a-z]+$\"} → {}";
    PATTERN_CHANGED = "PATTERN_CHANGED", E, E,
        "A string's pattern changed; patterns are not compared for inclusion, so both directions are assumed broken.",
        "",
        "{pattern: \"^[a-z]+$\"} → {pattern: \"^[a-z0-9]+$\"}";
    FORMAT_ADDED = "FORMAT_ADDED", I, E,
        "A string gained a format (date-time, uri, …) that readers may enforce.",
        "",
        "{type: string} → {type: string, format: date-time}";
    FORMAT_REMOVED = "FORMAT_REMOVED", E, I,
        "A string lost its format: old readers that parse it may fail.",
        "",
        "{format: uri} → {}";
    FORMAT_CHANGED = "FORMAT_CHANGED", E, E,
        "A string's format changed to another one.",
        "",
        "{format: uri} → {format: uri-reference}";
    ENUM_VALUE_ADDED = "ENUM_VALUE_ADDED", E, I,
        "An enum gained a value: old readers with a closed enum reject it.",
        "D1 is info when the enum is marked x-extensible-enum or the old reader does not restrict it.",
        "{enum: [queued, running]} → {enum: [queued, running, paused]}";
    ENUM_VALUE_REMOVED = "ENUM_VALUE_REMOVED", I, E,
        "An enum lost a value: the new reader rejects it when old writers send it.",
        "D2 is info when the old writer never sent that value.",
        "{enum: [queued, running, paused]} → {enum: [queued, running]}";
    ENUM_CONSTRAINT_ADDED = "ENUM_CONSTRAINT_ADDED", I, E,
        "A free value became an enum (or const): the new reader rejects values outside it.",
        "D2 is info when the old writer was already restricted to values inside it.",
        "{type: string} → {type: string, enum: [a, b]}";
    ENUM_CONSTRAINT_REMOVED = "ENUM_CONSTRAINT_REMOVED", E, I,
        "An enum (or const) became a free value: old readers with the enum reject new values.",
        "D1 is info when the old reader does not restrict the value.",
        "{enum: [a, b]} → {type: string}";
    CONSTRAINT_RELAXED = "CONSTRAINT_RELAXED", E, I,
        "An array or object size limit was relaxed (minItems, maxItems, uniqueItems, minProperties, maxProperties).",
        "",
        "{maxItems: 16} → {maxItems: 32}";
    CONSTRAINT_TIGHTENED = "CONSTRAINT_TIGHTENED", I, E,
        "An array or object size limit was added or tightened.",
        "",
        "{type: array} → {type: array, minItems: 1}";
    DEFAULT_CHANGED = "DEFAULT_CHANGED", W, W,
        "A default value was added, removed or changed: peers that omit the member now mean something else.",
        "",
        "{default: 25000} → {default: 30000}";
    ANNOTATION_CHANGED = "ANNOTATION_CHANGED", I, I,
        "Only an annotation changed (title, description, examples, deprecated, $comment).",
        "",
        "{description: \"a\"} → {description: \"b\"}";
    KEYWORD_CHANGED = "KEYWORD_CHANGED", E, E,
        "A keyword the engine does not classify (not, if/then/else, allOf shape, …) changed; review it by hand and acknowledge it.",
        "",
        "{not: {const: 0}} → {not: {const: 1}}";
}

/// Looks a rule up by id.
pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_screaming_snake() {
        let mut seen = std::collections::BTreeSet::new();
        for r in RULES {
            assert!(seen.insert(r.id), "duplicate {}", r.id);
            assert!(
                r.id.bytes().all(|c| c.is_ascii_uppercase() || c == b'_'),
                "{}",
                r.id
            );
            assert!(!r.purpose.is_empty() && !r.example.is_empty());
        }
        assert!(RULES.len() >= 20);
    }
}
