//! Loading the Gherkin suites: embedded in the binary, or from `--features-dir`.

use std::path::Path;

use gherkin::{GherkinEnv, tagexpr::TagOperation};

use crate::model::{Error, Level, ScenarioDef, StepDef, Suite};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// The embedded feature files: `(path relative to features/, text)`.
pub fn embedded_features() -> &'static [(&'static str, &'static str)] {
    embedded::FEATURES
}

/// The embedded client fixtures: `(file name, text)`.
pub fn embedded_fixtures() -> &'static [(&'static str, &'static str)] {
    embedded::FIXTURES
}

/// Tags that are neither areas nor requirements nor levels.
const MARKERS: &[&str] = &["serial", "must", "should", "may", "auth", "restart", "slow"];

/// Reads the feature files of a directory tree (`server/*.feature`,
/// `client/*.feature`).
pub fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    for sub in ["server", "client"] {
        let d = dir.join(sub);
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut paths: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.extension().is_some_and(|x| x == "feature") {
                let text = std::fs::read_to_string(&p).map_err(|e| Error::Features {
                    file: p.display().to_string(),
                    reason: e.to_string(),
                })?;
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                out.push((format!("{sub}/{}", name.unwrap_or_default()), text));
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Features {
            file: dir.display().to_string(),
            reason: "no server/*.feature or client/*.feature files".into(),
        });
    }
    Ok(out)
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// Whether a tag is a requirement id (`RW-AREA-N`).
pub fn is_requirement(tag: &str) -> bool {
    let mut parts = tag.split('-');
    parts.next() == Some("RW")
        && parts
            .next()
            .is_some_and(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_uppercase()))
        && parts
            .next()
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && parts.next().is_none()
}

/// Parses feature files into scenarios, in file order.
pub fn parse(files: &[(String, String)]) -> Result<Vec<ScenarioDef>, Error> {
    let mut out = Vec::new();
    for (file, text) in files {
        let suite = if file.starts_with("client/") {
            Suite::Client
        } else {
            Suite::Server
        };
        let feature =
            gherkin::Feature::parse(text, GherkinEnv::default()).map_err(|e| Error::Features {
                file: file.clone(),
                reason: e.to_string(),
            })?;
        let stem = file
            .rsplit('/')
            .next()
            .unwrap_or(file)
            .trim_end_matches(".feature")
            .to_owned();
        let background: Vec<StepDef> = feature
            .background
            .iter()
            .flat_map(|b| b.steps.iter())
            .map(step_def)
            .collect();
        let scenarios = feature
            .scenarios
            .iter()
            .chain(feature.rules.iter().flat_map(|r| r.scenarios.iter()));
        for sc in scenarios {
            let mut tags: Vec<String> = feature
                .tags
                .iter()
                .chain(sc.tags.iter())
                .map(|t| t.trim_start_matches('@').to_owned())
                .collect();
            tags.dedup();
            let requirements: Vec<String> =
                tags.iter().filter(|t| is_requirement(t)).cloned().collect();
            let tagged = |l: &Level| tags.iter().any(|t| *t == l.as_str().to_ascii_lowercase());
            let Some(level) = Level::ALL.into_iter().find(tagged) else {
                return Err(Error::Features {
                    file: file.clone(),
                    reason: format!(
                        "line {}: scenario {:?} has no level tag (@must, @should or @may)",
                        sc.position.line, sc.name
                    ),
                });
            };
            if requirements.is_empty() {
                return Err(Error::Features {
                    file: file.clone(),
                    reason: format!(
                        "line {}: scenario {:?} names no requirement (@RW-AREA-N)",
                        sc.position.line, sc.name
                    ),
                });
            }
            let area = tags
                .iter()
                .find(|t| !is_requirement(t) && !MARKERS.contains(&t.as_str()))
                .cloned()
                .unwrap_or_else(|| stem.clone());
            let mut steps = background.clone();
            steps.extend(sc.steps.iter().map(step_def));
            out.push(ScenarioDef {
                id: format!("{}/{}/{}", suite.as_str(), stem, slug(&sc.name)),
                suite,
                feature: feature.name.clone(),
                file: file.clone(),
                line: sc.position.line,
                name: sc.name.clone(),
                serial: tags.iter().any(|t| t == "serial"),
                tags,
                requirements,
                level,
                area,
                steps,
            });
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for s in &out {
        if !seen.insert(s.id.clone()) {
            return Err(Error::Features {
                file: s.file.clone(),
                reason: format!("two scenarios have the id {}", s.id),
            });
        }
    }
    Ok(out)
}

fn step_def(s: &gherkin::Step) -> StepDef {
    StepDef {
        keyword: s.keyword.trim().to_owned(),
        text: s.value.clone(),
        docstring: s.docstring.clone(),
        line: s.position.line,
    }
}

/// A parsed `--tags` expression (`@must and not @slow`, `@RW-SUB-3 or @heartbeat`).
#[derive(Debug, Clone)]
pub struct TagFilter(TagOperation);

impl TagFilter {
    /// Parses a tag expression.
    pub fn parse(expr: &str) -> Result<Self, Error> {
        expr.parse::<TagOperation>()
            .map(Self)
            .map_err(|e| Error::Tags(format!("{expr:?}: {e}")))
    }

    /// Whether a scenario with these tags (without `@`) is selected.
    pub fn matches(&self, tags: &[String]) -> bool {
        fn eval(op: &TagOperation, tags: &[String]) -> bool {
            match op {
                TagOperation::And(a, b) => eval(a, tags) && eval(b, tags),
                TagOperation::Or(a, b) => eval(a, tags) || eval(b, tags),
                TagOperation::Not(a) => !eval(a, tags),
                TagOperation::Tag(t) => {
                    let t = t.trim_start_matches('@');
                    tags.iter().any(|x| x == t)
                }
            }
        }
        eval(&self.0, tags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_expressions() {
        let tags = vec![
            "must".to_owned(),
            "RW-SUB-3".to_owned(),
            "subscribe".to_owned(),
        ];
        assert!(TagFilter::parse("@must").unwrap().matches(&tags));
        assert!(!TagFilter::parse("@should").unwrap().matches(&tags));
        assert!(
            TagFilter::parse("@RW-SUB-3 and not @serial")
                .unwrap()
                .matches(&tags)
        );
        assert!(TagFilter::parse("@x or @subscribe").unwrap().matches(&tags));
    }

    #[test]
    fn requirement_tags() {
        assert!(is_requirement("RW-SUB-3"));
        assert!(!is_requirement("RW-sub-3"));
        assert!(!is_requirement("RW-SUB"));
        assert!(!is_requirement("must"));
    }

    #[test]
    fn embedded_suites_parse() {
        let files: Vec<(String, String)> = embedded_features()
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        let scenarios = parse(&files).unwrap();
        assert!(!scenarios.is_empty());
    }
}
