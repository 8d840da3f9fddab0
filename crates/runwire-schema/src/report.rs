//! The report of `runwire schema diff` / `check`: findings of one or more comparisons,
//! with the configuration applied, rendered as text, JSON or JUnit XML.
//!
//! The JSON output's own schema is [`report_schema`] (published as
//! `docs/schema-compat-report.schema.json`).

use std::fmt::Write as _;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    compat::{Dir, Finding},
    config::{Config, IgnoreEntry},
    rules::Severity,
};

/// Version of the JSON report format.
pub const REPORT_FORMAT_VERSION: u32 = 1;

/// Version of the rule set (bumped whenever a verdict changes).
pub const RULES_VERSION: u32 = 1;

/// A finding the configuration acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IgnoredFinding {
    /// The finding.
    #[serde(flatten)]
    pub finding: Finding,
    /// The reason from the ignore entry.
    pub reason: String,
}

/// One old/new comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Comparison {
    /// The old tree (a path or `git:REF:path`).
    pub old: String,
    /// The new tree.
    pub new: String,
    /// Findings not acknowledged by the configuration.
    pub findings: Vec<Finding>,
    /// Findings acknowledged by an ignore entry.
    pub ignored: Vec<IgnoredFinding>,
}

/// Counts of the findings that are not ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    /// Findings with severity error.
    pub error: usize,
    /// Findings with severity warning.
    pub warning: usize,
    /// Findings with severity info.
    pub info: usize,
    /// Findings acknowledged by the ignore file.
    pub ignored: usize,
    /// Ignore entries that matched nothing.
    pub stale_ignores: usize,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// [`REPORT_FORMAT_VERSION`].
    pub format_version: u32,
    /// [`RULES_VERSION`].
    pub rules_version: u32,
    /// The lowest severity that fails.
    pub fail_on: Severity,
    /// False when a finding at or above `fail_on` remains (exit code 1).
    pub compatible: bool,
    /// Counts.
    pub summary: Summary,
    /// The comparisons, in the order they were run.
    pub comparisons: Vec<Comparison>,
    /// Ignore entries that matched no finding (remove them).
    pub stale_ignores: Vec<IgnoreEntry>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// The JSON report.
    Json,
    /// JUnit XML: one test case per schema and direction.
    Junit,
    /// GitHub Actions workflow commands (`::error title=…::…`), one per finding at
    /// warning or above, then the text summary line.
    Github,
}

impl Report {
    /// Applies the configuration to raw findings: severity overrides (for findings
    /// above info), ignore entries, stale-entry detection and the verdict.
    pub fn build(
        comparisons: Vec<(String, String, Vec<Finding>)>,
        cfg: &Config,
        fail_on: Option<Severity>,
    ) -> Self {
        let fail_on = fail_on.or(cfg.fail_on).unwrap_or(Severity::Error);
        let mut used = vec![false; cfg.ignore.len()];
        let mut summary = Summary::default();
        let mut out = Vec::new();
        for (old, new, findings) in comparisons {
            let mut kept = Vec::new();
            let mut ignored = Vec::new();
            for mut f in findings {
                if f.severity > Severity::Info
                    && let Some(s) = cfg.severity.get(&f.rule)
                {
                    f.severity = *s;
                }
                match cfg.ignore.iter().position(|e| e.matches(&f)) {
                    Some(i) => {
                        used[i] = true;
                        summary.ignored += 1;
                        ignored.push(IgnoredFinding {
                            finding: f,
                            reason: cfg.ignore[i].reason.clone(),
                        });
                    }
                    None => {
                        match f.severity {
                            Severity::Error => summary.error += 1,
                            Severity::Warning => summary.warning += 1,
                            Severity::Info => summary.info += 1,
                        }
                        kept.push(f);
                    }
                }
            }
            out.push(Comparison {
                old,
                new,
                findings: kept,
                ignored,
            });
        }
        let stale_ignores: Vec<IgnoreEntry> = cfg
            .ignore
            .iter()
            .zip(&used)
            .filter(|(_, u)| !**u)
            .map(|(e, _)| e.clone())
            .collect();
        summary.stale_ignores = stale_ignores.len();
        let failing = out
            .iter()
            .flat_map(|c| &c.findings)
            .any(|f| f.severity >= fail_on);
        Report {
            format_version: REPORT_FORMAT_VERSION,
            rules_version: RULES_VERSION,
            fail_on,
            compatible: !failing,
            summary,
            comparisons: out,
            stale_ignores,
        }
    }

    /// Renders the report.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Text => self.text(),
            Format::Json => {
                let mut s = serde_json::to_string_pretty(self).expect("serializable");
                s.push('\n');
                s
            }
            Format::Junit => self.junit(),
            Format::Github => self.github(),
        }
    }

    fn github(&self) -> String {
        let prop = |v: &str| {
            v.replace('%', "%25")
                .replace('\r', "%0D")
                .replace('\n', "%0A")
                .replace(':', "%3A")
                .replace(',', "%2C")
        };
        let data = |v: &str| {
            v.replace('%', "%25")
                .replace('\r', "%0D")
                .replace('\n', "%0A")
        };
        let mut s = String::new();
        for c in &self.comparisons {
            for f in &c.findings {
                let level = match f.severity {
                    Severity::Error if f.severity >= self.fail_on => "error",
                    Severity::Error | Severity::Warning => "warning",
                    Severity::Info => continue,
                };
                let title = format!(
                    "{} ({}, {} {})",
                    f.rule,
                    f.schema,
                    f.direction.as_str(),
                    f.parties
                );
                let msg = format!(
                    "{}#{} at {}: {} [{} → {}]",
                    f.file, f.pointer, f.path, f.message, c.old, c.new
                );
                let _ = writeln!(s, "::{level} title={}::{}", prop(&title), data(&msg));
            }
        }
        for e in &self.stale_ignores {
            let _ = writeln!(
                s,
                "::warning title=stale ignore entry::{}",
                data(&format!(
                    "rule {} matches nothing (reason: {})",
                    e.rule, e.reason
                ))
            );
        }
        let text = self.text();
        if let Some(last) = text.lines().last() {
            let _ = writeln!(s, "{last}");
        }
        s
    }

    fn text(&self) -> String {
        let mut s = String::new();
        for c in &self.comparisons {
            let _ = writeln!(s, "compare {} → {}", c.old, c.new);
            if c.findings.is_empty() && c.ignored.is_empty() {
                let _ = writeln!(s, "  no changes");
            }
            for f in &c.findings {
                let _ = writeln!(s, "  {}", line(f));
            }
            for i in &c.ignored {
                let _ = writeln!(s, "  ignored {} (reason: {})", line(&i.finding), i.reason);
            }
        }
        for e in &self.stale_ignores {
            let _ = writeln!(
                s,
                "warning: stale ignore entry matches nothing: rule {}{}{} (reason: {})",
                e.rule,
                e.schema
                    .as_ref()
                    .map_or(String::new(), |x| format!(", schema {x}")),
                e.pointer
                    .as_ref()
                    .map_or(String::new(), |x| format!(", pointer {x}")),
                e.reason
            );
        }
        let m = &self.summary;
        let _ = writeln!(
            s,
            "{}: {} error(s), {} warning(s), {} info, {} ignored, {} stale ignore(s) (fail on {})",
            if self.compatible {
                "compatible"
            } else {
                "BREAKING"
            },
            m.error,
            m.warning,
            m.info,
            m.ignored,
            m.stale_ignores,
            self.fail_on
        );
        s
    }

    fn junit(&self) -> String {
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let total_fail = self
            .comparisons
            .iter()
            .flat_map(|c| &c.findings)
            .filter(|f| f.severity >= self.fail_on)
            .count();
        let _ = writeln!(
            s,
            "<testsuites name=\"runwire schema compatibility\" failures=\"{total_fail}\">"
        );
        if self.comparisons.is_empty() {
            // CI tools show an empty <testsuites> as "no tests ran" (or as an error):
            // say that there was nothing to compare, as a skipped case.
            let _ = writeln!(
                s,
                "  <testsuite name=\"compatibility\" tests=\"1\" failures=\"0\" skipped=\"1\">\n    \
                 <testcase classname=\"compatibility\" name=\"released versions\">\
                 <skipped message=\"nothing to compare: no released schema version other than the current one\"/>\
                 </testcase>\n  </testsuite>"
            );
        }
        for c in &self.comparisons {
            // One test case per schema and direction that has findings, plus one that
            // stands for "everything else compatible".
            let mut cases: std::collections::BTreeMap<(String, Dir, String), Vec<&Finding>> =
                std::collections::BTreeMap::new();
            for f in &c.findings {
                cases
                    .entry((f.schema.clone(), f.direction, f.parties.clone()))
                    .or_default()
                    .push(f);
            }
            let failures = cases
                .values()
                .filter(|fs| fs.iter().any(|f| f.severity >= self.fail_on))
                .count();
            let _ = writeln!(
                s,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{}\">",
                xml(&format!("{} → {}", c.old, c.new)),
                cases.len() + 1,
                c.ignored.len()
            );
            for ((schema, dir, parties), fs) in &cases {
                let _ = writeln!(
                    s,
                    "    <testcase classname=\"{}\" name=\"{} {}\">",
                    xml(schema),
                    dir.as_str(),
                    xml(parties)
                );
                let bad: Vec<_> = fs.iter().filter(|f| f.severity >= self.fail_on).collect();
                if !bad.is_empty() {
                    let _ = writeln!(
                        s,
                        "      <failure message=\"{}\" type=\"{}\">{}</failure>",
                        xml(&bad[0].message),
                        xml(&bad[0].rule),
                        xml(&bad.iter().map(|f| line(f)).collect::<Vec<_>>().join("\n"))
                    );
                }
                let rest: Vec<_> = fs.iter().filter(|f| f.severity < self.fail_on).collect();
                if !rest.is_empty() {
                    let _ = writeln!(
                        s,
                        "      <system-out>{}</system-out>",
                        xml(&rest.iter().map(|f| line(f)).collect::<Vec<_>>().join("\n"))
                    );
                }
                let _ = writeln!(s, "    </testcase>");
            }
            let _ = writeln!(
                s,
                "    <testcase classname=\"compatibility\" name=\"all other schemas and directions\"/>"
            );
            for i in &c.ignored {
                let _ = writeln!(
                    s,
                    "    <testcase classname=\"{}\" name=\"{} {} (acknowledged)\"><skipped message=\"{}\"/></testcase>",
                    xml(&i.finding.schema),
                    i.finding.direction.as_str(),
                    xml(&i.finding.rule),
                    xml(&i.reason)
                );
            }
            let _ = writeln!(s, "  </testsuite>");
        }
        let _ = writeln!(s, "</testsuites>");
        s
    }
}

/// One finding as a text line.
pub fn line(f: &Finding) -> String {
    let mut s = format!(
        "{:<7} {} {} [{} {}] {}#{} at {}: {}",
        f.severity.as_str(),
        f.rule,
        f.schema,
        f.direction.as_str(),
        f.parties,
        f.file,
        f.pointer,
        f.path,
        f.message
    );
    if !f.also_in.is_empty() {
        let _ = write!(s, " (also in {})", f.also_in.join(", "));
    }
    s
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// The JSON Schema of the JSON report (draft 2020-12, sorted keys).
pub fn report_schema() -> Value {
    let mut v = schemars::generate::SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<Report>()
        .to_value();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "$id".into(),
            Value::String(
                "https://runwire.dev/schema/tools/schema-compat-report.schema.json".into(),
            ),
        );
    }
    sort_keys(&v)
}

fn sort_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for k in keys {
                out.insert(k.clone(), sort_keys(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(sort_keys).collect()),
        o => o.clone(),
    }
}
