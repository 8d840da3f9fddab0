//! Extracts requirement lines from the spec into `spec/requirements.json`.
//!
//! A requirement is one list item on one line:
//! `- **RW-SUB-3** (MUST, server) The server MUST …`

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, bail};
use runwire_protocol::requirement::{Level, Requirement};

const SUBJECTS: &[&str] = &["server", "client", "producer", "both"];

/// GitHub's heading anchor: lowercase, spaces to '-', punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn parse_line(line: &str) -> Option<Result<(String, Level, String, String), String>> {
    let t = line.trim_start();
    let rest = t
        .strip_prefix("- **RW-")
        .or_else(|| t.strip_prefix("* **RW-"))?;
    let Some((id_tail, after)) = rest.split_once("**") else {
        return Some(Err("unterminated requirement id".into()));
    };
    let id = format!("RW-{id_tail}");
    let mut parts = id.splitn(3, '-');
    let (_, area, num) = (
        parts.next(),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    if area.is_empty()
        || !area.bytes().all(|b| b.is_ascii_uppercase())
        || num.is_empty()
        || !num.bytes().all(|b| b.is_ascii_digit())
        || num.starts_with('0')
    {
        return Some(Err(format!(
            "malformed requirement id {id:?} (want RW-AREA-N)"
        )));
    }
    let after = after.trim_start();
    let Some(inner) = after.strip_prefix('(').and_then(|a| a.split_once(')')) else {
        return Some(Err(format!("{id}: missing (LEVEL, subject)")));
    };
    let (meta, text) = inner;
    let Some((level, subject)) = meta.split_once(',') else {
        return Some(Err(format!("{id}: want (LEVEL, subject), got ({meta})")));
    };
    let (level, subject) = (level.trim(), subject.trim());
    let level = match level.parse::<Level>() {
        Ok(l) => l,
        Err(e) => return Some(Err(format!("{id}: {e}"))),
    };
    if !SUBJECTS.contains(&subject) {
        return Some(Err(format!(
            "{id}: subject {subject:?} is not one of {SUBJECTS:?}"
        )));
    }
    let text = text.trim().to_owned();
    if !text.contains(level.as_str()) {
        return Some(Err(format!(
            "{id}: level {level} but the sentence does not say {level}"
        )));
    }
    Some(Ok((id, level, subject.to_owned(), text)))
}

pub(crate) fn extract_str(src: &str) -> anyhow::Result<Vec<Requirement>> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut section = String::new();
    let mut in_code = false;
    let mut errors = Vec::new();
    for (i, line) in src.lines().enumerate() {
        let n = i + 1;
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if let Some(h) = line.strip_prefix('#') {
            section = h.trim_start_matches('#').trim().to_owned();
            continue;
        }
        match parse_line(line) {
            None => {
                if line.contains("**RW-") && line.trim_start().starts_with(['-', '*']) {
                    errors.push(format!(
                        "line {n}: requirement-like line not in the required format"
                    ));
                }
            }
            Some(Err(e)) => errors.push(format!("line {n}: {e}")),
            Some(Ok((id, level, subject, text))) => {
                if let Some(prev) = seen.insert(id.clone(), n) {
                    errors.push(format!(
                        "line {n}: duplicate requirement id {id} (first at line {prev})"
                    ));
                }
                let area = id.split('-').nth(1).unwrap_or_default().to_owned();
                out.push(Requirement {
                    id,
                    area,
                    level,
                    subject,
                    anchor: anchor(&section),
                    section: section.clone(),
                    line: n,
                    text,
                });
            }
        }
    }
    if !errors.is_empty() {
        bail!("spec requirement errors:\n  {}", errors.join("\n  "));
    }
    Ok(out)
}

pub(crate) fn extract(path: &Path) -> anyhow::Result<Vec<Requirement>> {
    let src =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    extract_str(&src).with_context(|| format!("in {}", path.display()))
}

pub(crate) fn render(reqs: &[Requirement]) -> String {
    let mut by_level: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reqs {
        *by_level.entry(r.level.as_str()).or_default() += 1;
    }
    let doc = serde_json::json!({
        "spec": "spec/protocol.md",
        "count": reqs.len(),
        "by_level": by_level,
        "requirements": reqs,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "# 8. Subscriptions, cursors\n\
        - **RW-SUB-1** (MUST, server) The server MUST reply.\n\
        ```text\n- **RW-SUB-9** (MUST, server) inside code: ignored\n```\n\
        ## 8.1 More\n\
        - **RW-SUB-2** (SHOULD, client) The client SHOULD wait.\n";

    #[test]
    fn extracts_in_order_with_sections() {
        let r = extract_str(SPEC).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].id, "RW-SUB-1");
        assert_eq!(r[0].anchor, "8-subscriptions-cursors");
        assert_eq!(r[1].level, Level::Should);
        assert_eq!(r[1].subject, "client");
        assert_eq!(r[1].section, "8.1 More");
    }

    #[test]
    fn rejects_duplicates() {
        let src = "- **RW-A-1** (MUST, server) MUST a\n- **RW-A-1** (MAY, server) MAY b\n";
        let e = extract_str(src).unwrap_err().to_string();
        assert!(e.contains("duplicate requirement id RW-A-1"), "{e}");
    }

    #[test]
    fn rejects_level_mismatch_and_bad_format() {
        assert!(extract_str("- **RW-A-1** (MUST, server) The server SHOULD x\n").is_err());
        assert!(extract_str("- **RW-A-1** (MUST) The server MUST x\n").is_err());
        assert!(extract_str("- **RW-a-1** (MUST, server) MUST\n").is_err());
        assert!(extract_str("- **RW-A-01** (MUST, server) MUST\n").is_err());
        assert!(extract_str("- **RW-A-1** (MUST, nobody) MUST\n").is_err());
    }

    #[test]
    fn committed_spec_is_consistent() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let reqs = extract(&root.join("spec/protocol.md")).unwrap();
        assert!(reqs.len() >= 80, "only {} requirements", reqs.len());
        let committed = std::fs::read_to_string(root.join("spec/requirements.json")).unwrap();
        assert_eq!(committed, render(&reqs), "run `cargo xtask spec`");
    }
}
