//! `cargo xtask mutants`: the kit checks itself against mutants, as a habit.
//!
//! The broken variants of the kit's self-test (`faults.rs`) prove that scenarios catch
//! what they were written for. This is the systematic version: `cargo-mutants` plants
//! one small bug at a time (a changed operator, a function body replaced by a default)
//! in the protocol-deciding code of the reference implementations, and runs the
//! conformance suite against each mutant. A mutant the suite does not catch
//! ("survives") is either a hole in the kit, to be closed with a scenario, or a change
//! no conformance scenario can observe (performance, logging, an equivalent rewrite),
//! listed with its reason in `conformance/surviving-mutants.json`.
//!
//! The list is checked like `conformance/unobservable.json`: a surviving mutant that is
//! not listed is an error, and so is a listed one that was caught or not generated any
//! more (stale). Keys are `FILE: DESCRIPTION` as cargo-mutants names the mutant, without
//! its line and column (so that editing unrelated lines does not make entries stale); a
//! description that occurs more than once in a file gets ` #2`, ` #3`, ….
//!
//! Groups (each mutates some files and runs the suite that can observe them):
//!
//! | group | mutated | suite run against each mutant |
//! |---|---|---|
//! | `server` | `runwire-server`: `src/ws.rs`, `src/store/mod.rs`, `src/outbound.rs` | the server suite against the reference server (`runwire-conformance`, test `server_suite`) |
//! | `fold` | `runwire-protocol`: `src/snapshot.rs` | the server suite (snapshots over HTTP and in resets) and the client suite (the reference adapter folds, and ends on a reset's terminal status) |
//! | `client` | `runwire-client`: `src/tracker.rs`, `src/backoff.rs` | the client suite against the reference adapter (`runwire-cli`, test `reference_adapter_passes_every_client_scenario`) |
//!
//! A run takes hours on two cores (each mutant is a rebuild and a suite run), so it is
//! not part of the default CI job; run it with `--shard K/N` in parallel jobs, or one
//! group at a time. The kill rate of the last full run is in `docs/ci-guide.md`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

/// One group of mutants.
struct Group {
    name: &'static str,
    package: &'static str,
    files: &'static [&'static str],
    test_package: &'static str,
    test_args: &'static [&'static str],
}

const GROUPS: &[Group] = &[
    Group {
        name: "server",
        package: "runwire-server",
        files: &["src/ws.rs", "src/store/mod.rs", "src/outbound.rs"],
        test_package: "runwire-conformance",
        test_args: &["--test", "it", "server_suite"],
    },
    Group {
        name: "fold",
        package: "runwire-protocol",
        files: &["src/snapshot.rs"],
        // Servers fold for snapshots; clients (the reference adapter) fold and read
        // a reset snapshot's terminal status.
        test_package: "runwire-conformance,runwire-cli",
        test_args: &[
            "--test",
            "it",
            "--",
            "server_suite",
            "reference_adapter_passes_every_client_scenario",
        ],
    },
    Group {
        name: "client",
        package: "runwire-client",
        files: &["src/tracker.rs", "src/backoff.rs"],
        test_package: "runwire-cli",
        test_args: &[
            "--test",
            "it",
            "conform::reference_adapter_passes_every_client_scenario",
        ],
    },
];

/// `cargo xtask mutants [GROUP...] [--shard K/N] [--check-only]`.
pub(crate) fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let mut groups: Vec<&Group> = Vec::new();
    let mut shard = None;
    let mut check_only = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--shard" => shard = Some(it.next().context("--shard needs K/N")?.clone()),
            "--check-only" => check_only = true,
            name => groups.push(
                GROUPS
                    .iter()
                    .find(|g| g.name == name)
                    .with_context(|| format!("no mutant group {name:?} (server, fold, client)"))?,
            ),
        }
    }
    if groups.is_empty() {
        groups = GROUPS.iter().collect();
    }
    let out_root = root.join("target/mutants");
    if !check_only {
        ensure_cargo_mutants()?;
        for g in &groups {
            let out = out_root.join(g.name);
            std::fs::create_dir_all(&out)?;
            let timeout = baseline(root, g)?;
            let mut cmd = Command::new(cargo());
            cmd.current_dir(root)
                .args(["mutants", "--package", g.package, "--test-package"])
                .arg(g.test_package)
                .arg("--output")
                .arg(&out)
                .args(["--baseline", "skip", "--timeout"])
                .arg(timeout.to_string());
            for f in g.files {
                cmd.arg("--file").arg(format!("crates/{}/{f}", g.package));
            }
            if let Some(s) = &shard {
                cmd.args(["--shard", s]);
            }
            cmd.arg("--").args(g.test_args);
            println!("xtask mutants: group {} ({:?})", g.name, cmd);
            // cargo-mutants exits non-zero when mutants survive; the list decides.
            let status = cmd.status().context("cannot run cargo mutants")?;
            if !matches!(status.code(), Some(0 | 2 | 3)) {
                bail!("cargo mutants failed for group {}: {status}", g.name);
            }
        }
    }
    let list = read_list(&root.join("conformance/surviving-mutants.json"))?;
    let mut problems = Vec::new();
    let mut caught_all = 0usize;
    let mut missed_all = 0usize;
    for g in &groups {
        let out = out_root.join(g.name).join("mutants.out");
        let caught = keys(&out.join("caught.txt"))?;
        let missed = keys(&out.join("missed.txt"))?;
        let timeout = keys(&out.join("timeout.txt"))?;
        let unviable = keys(&out.join("unviable.txt"))?;
        caught_all += caught.len() + timeout.len();
        missed_all += missed.len();
        let viable = caught.len() + missed.len() + timeout.len();
        println!(
            "group {}: {} caught, {} timed out (counted as caught), {} survived, {} unviable; kill rate {:.1}% of {viable}",
            g.name,
            caught.len(),
            timeout.len(),
            missed.len(),
            unviable.len(),
            100.0 * (caught.len() + timeout.len()) as f64 / viable.max(1) as f64
        );
        for m in &missed {
            if !list.contains_key(m) {
                problems.push(format!(
                    "surviving mutant not listed (add a scenario that catches it, or list it with the reason no scenario can): {m}"
                ));
            }
        }
        // Stale entries: listed for this group's files but caught, or not generated.
        let generated: Vec<&String> = caught
            .iter()
            .chain(&missed)
            .chain(&timeout)
            .chain(&unviable)
            .collect();
        for (key, reason) in &list {
            if !g
                .files
                .iter()
                .any(|f| key.starts_with(&format!("crates/{}/{f}:", g.package)))
            {
                continue;
            }
            if reason.trim().is_empty() {
                problems.push(format!("listed without a reason: {key}"));
            }
            if !missed.contains(key) {
                problems.push(if generated.contains(&key) {
                    format!("stale entry (the mutant is caught now; remove it): {key}")
                } else {
                    format!("stale entry (no such mutant any more; remove it): {key}")
                });
            }
        }
    }
    let total = caught_all + missed_all;
    println!(
        "all groups: kill rate {:.1}% ({caught_all} of {total} viable mutants caught)",
        100.0 * caught_all as f64 / total.max(1) as f64
    );
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: {p}");
        }
        bail!("conformance/surviving-mutants.json does not match the run");
    }
    Ok(())
}

/// Runs the group's suite on the unmutated tree and returns the test timeout for its
/// mutants, in seconds: five times the baseline's run, at least two minutes.
///
/// cargo-mutants (27.x) runs its own baseline with the mutated package's tests, not
/// with `--test-package`, and sizes the test timeout from that (a fraction of a
/// second, so the 20 s minimum); a suite run longer than that would be recorded as a
/// timeout, which counts as caught. So xtask runs the baseline itself, fails if the
/// suite does not pass unmutated, and passes `--baseline skip --timeout`.
fn baseline(root: &Path, g: &Group) -> anyhow::Result<u64> {
    let test = |build_only: bool| {
        let mut cmd = Command::new(cargo());
        cmd.current_dir(root).args(["test", "--locked"]);
        for p in g.test_package.split(',') {
            cmd.args(["--package", p]);
        }
        if build_only {
            cmd.arg("--no-run");
        }
        cmd.args(g.test_args);
        println!("xtask mutants: baseline of group {} ({:?})", g.name, cmd);
        cmd.status().context("cannot run cargo test")
    };
    if !test(true)?.success() {
        bail!("the {} group's tests do not build", g.name);
    }
    let started = std::time::Instant::now();
    let status = test(false)?;
    let secs = started.elapsed().as_secs();
    if !status.success() {
        bail!(
            "the {} group's suite fails on the unmutated tree ({status}); fix that first",
            g.name
        );
    }
    let timeout = (secs * 5).max(120);
    println!(
        "xtask mutants: baseline of group {} passed in {secs} s; test timeout {timeout} s",
        g.name
    );
    Ok(timeout)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn ensure_cargo_mutants() -> anyhow::Result<()> {
    let ok = Command::new(cargo())
        .args(["mutants", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Ok(());
    }
    println!("xtask mutants: installing cargo-mutants");
    let st = Command::new(cargo())
        .args(["install", "cargo-mutants", "--locked"])
        .status()
        .context("cannot run cargo install")?;
    if !st.success() {
        bail!("cargo install cargo-mutants failed");
    }
    Ok(())
}

/// The mutants of one outcome file, keyed without line and column.
fn keys(path: &PathBuf) -> anyhow::Result<Vec<String>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let key = mutant_key(line);
        let n = seen.entry(key.clone()).or_insert(0);
        *n += 1;
        out.push(if *n == 1 { key } else { format!("{key} #{n}") });
    }
    Ok(out)
}

/// `crates/x/src/a.rs:123:5: replace == with !=` → `crates/x/src/a.rs: replace == with !=`.
fn mutant_key(line: &str) -> String {
    let mut parts = line.splitn(4, ':');
    let file = parts.next().unwrap_or("");
    let a = parts.next().unwrap_or("");
    let b = parts.next().unwrap_or("");
    let rest = parts.next().unwrap_or("");
    let digits = |x: &str| !x.is_empty() && x.chars().all(|c| c.is_ascii_digit());
    if digits(a) && digits(b) {
        format!("{file}:{rest}")
    } else {
        line.to_owned()
    }
}

fn read_list(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut m: BTreeMap<String, String> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a JSON object of mutant to reason",
            path.display()
        )
    })?;
    m.retain(|k, _| !k.starts_with('$'));
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::mutant_key;

    #[test]
    fn keys_drop_line_and_column() {
        assert_eq!(
            mutant_key(
                "crates/runwire-server/src/ws.rs:123:5: replace == with != in Conn::subscribe"
            ),
            "crates/runwire-server/src/ws.rs: replace == with != in Conn::subscribe"
        );
        assert_eq!(mutant_key("odd line"), "odd line");
    }
}
