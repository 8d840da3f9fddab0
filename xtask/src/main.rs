//! `cargo xtask` — repository automation.
//!
//! - `cargo xtask schema` — regenerate `schema/` from the Rust types.
//! - `cargo xtask spec` — extract `spec/requirements.json` from `spec/protocol.md`.
//! - `cargo xtask check` — fail if either generated artifact differs from the committed one.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, bail};

mod spec;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("schema") => schema(),
        Some("spec") => spec_cmd(),
        Some("check") => check(),
        _ => {
            eprintln!("usage: cargo xtask <schema|spec|check>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn schema_dir() -> PathBuf {
    root().join("schema").join(runwire_protocol::SCHEMA_MAJOR)
}

/// Schemas of the kit's own file formats (`schema/tools/`), by file name.
fn tool_schemas() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("fixture.schema.json", runwire_mock::fixture_schema()),
        (
            "conformance-report.schema.json",
            runwire_conformance::model::report_schema(),
        ),
    ]
}

fn render_tool(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

fn schema() -> anyhow::Result<()> {
    let dir = schema_dir();
    let written = runwire_schema::generate::write_dir(&dir, runwire_protocol::SCHEMA_MAJOR)
        .with_context(|| format!("writing {}", dir.display()))?;
    println!("schema: {} files in {}", written.len(), dir.display());
    let tools = root().join("schema/tools");
    std::fs::create_dir_all(&tools)?;
    for (name, v) in tool_schemas() {
        std::fs::write(tools.join(name), render_tool(&v))?;
    }
    println!(
        "schema: {} tool schemas in {}",
        tool_schemas().len(),
        tools.display()
    );
    Ok(())
}

fn spec_cmd() -> anyhow::Result<()> {
    let reqs = spec::extract(&root().join("spec/protocol.md"))?;
    let out = root().join("spec/requirements.json");
    std::fs::write(&out, spec::render(&reqs))?;
    println!("spec: {} requirements in {}", reqs.len(), out.display());
    Ok(())
}

fn check() -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for d in runwire_schema::generate::check_dir(&schema_dir(), runwire_protocol::SCHEMA_MAJOR)? {
        problems.push(format!("schema drift: {d:?}"));
    }
    for (name, v) in tool_schemas() {
        let path = root().join("schema/tools").join(name);
        if std::fs::read_to_string(&path).unwrap_or_default() != render_tool(&v) {
            problems.push(format!("schema drift: {}", path.display()));
        }
    }
    let reqs = spec::extract(&root().join("spec/protocol.md"))?;
    let want = spec::render(&reqs);
    let have = std::fs::read_to_string(root().join("spec/requirements.json")).unwrap_or_default();
    if want != have {
        problems.push("spec/requirements.json is out of date".into());
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        bail!(
            "generated files differ from the committed ones; run `cargo xtask schema` and `cargo xtask spec`"
        );
    }
    println!("check: schema/ and spec/requirements.json are up to date");
    Ok(())
}
