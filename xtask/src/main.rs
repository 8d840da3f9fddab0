//! `cargo xtask` — repository automation.
//!
//! - `cargo xtask schema` — regenerate `schema/` from the Rust types.
//! - `cargo xtask spec` — extract `spec/requirements.json` from `spec/protocol.md`.
//! - `cargo xtask check` — fail if either generated artifact differs from the committed one.
//! - `cargo xtask mutants [GROUP…] [--shard K/N] [--check-only]` — mutation testing of
//!   the reference implementations against the conformance suites; surviving mutants
//!   must be listed with a reason in `conformance/surviving-mutants.json` (see
//!   `mutants.rs`).
//! - `cargo xtask test [ARGS…]` — the README's test command: make sure what the tests
//!   need beyond the Rust toolchain is there (the `websockets` Python package for the
//!   example adapter's tests, `redis-server` for the Redis store's tests, installed with
//!   pip and apt-get when missing), then run `cargo test --workspace --locked [ARGS…]`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, bail};

mod mutants;
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
        Some("test") => test(&args[1..]),
        Some("mutants") => mutants::run(&root(), &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <schema|spec|check|test [cargo test args…]|mutants [server|fold|client] [--shard K/N] [--check-only]>"
            );
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

/// Runs a command, inheriting stdout and stderr; whether it succeeded.
fn run(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `program` is on the PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// The version of `websockets` the Python adapter is tested with.
const WEBSOCKETS: &str = "websockets==17.4";

/// Brings what the tests need beyond the Rust toolchain, then runs the workspace
/// tests.
fn test(extra: &[String]) -> anyhow::Result<()> {
    // The example Python adapter (examples/adapters/python) needs `websockets`.
    if !run("python3", &["-c", "import websockets"]) {
        println!("xtask test: installing the Python package {WEBSOCKETS} (example adapter tests)");
        if !run(
            "python3",
            &[
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                WEBSOCKETS,
            ],
        ) {
            bail!(
                "cannot install {WEBSOCKETS} with `python3 -m pip`; install it by hand (the example adapter's tests need it)"
            );
        }
    }
    // The Redis store tests start their own `redis-server` on a free port.
    if !on_path("redis-server") {
        println!("xtask test: installing redis-server (Redis store tests)");
        let apt = on_path("apt-get")
            && run("apt-get", &["update", "-qq"])
            && run("apt-get", &["install", "-y", "-qq", "redis-server"]);
        if !apt || !on_path("redis-server") {
            bail!(
                "the Redis store tests need `redis-server` on the PATH and it could not be installed with apt-get (not root, or no apt-get); install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) and run again"
            );
        }
    }
    let mut args = vec!["test", "--workspace", "--locked"];
    args.extend(extra.iter().map(String::as_str));
    println!("xtask test: cargo {}", args.join(" "));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if !run(&cargo, &args) {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
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
