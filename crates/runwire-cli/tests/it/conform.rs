//! `runwire conform` end to end: the default mode against the bundled reference
//! implementations, the client suite against the reference adapter, and every broken
//! client variant caught with the requirement it violates.

use std::process::Stdio;

use runwire_conformance::{
    ClientTarget, ConformOptions, Grade, Plan, conform, faults::ClientFault, features::TagFilter,
};

fn adapter(fault: Option<ClientFault>) -> ClientTarget {
    ClientTarget {
        program: env!("CARGO_BIN_EXE_runwire").into(),
        args: vec!["client-adapter".into()],
        env: Vec::new(),
        fault,
        description: "runwire client-adapter".into(),
    }
}

fn opts(seed: u64, tags: Option<&str>) -> ConformOptions {
    println!("seed {seed}");
    ConformOptions {
        seed,
        // The adapter is a separate process: its scheduling delays count against the
        // fixtures' backoff envelopes, so the client suite runs at twice the scale.
        client_time_scale: Some(2.0),
        jobs: 4,
        tags: tags.map(|t| TagFilter::parse(t).unwrap()),
        ..ConformOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_adapter_passes_every_client_scenario() {
    let report = conform(
        Plan {
            server: None,
            client: Some(adapter(None)),
        },
        &opts(11, None),
        &|_| {},
    )
    .await
    .unwrap();
    // Known reference-client bugs are listed, each with a reason, in the committed
    // expected-failures file; every other scenario must pass.
    let expected =
        runwire_conformance::expect::ExpectedFailures::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../conformance/expected-failures.json"
        )))
        .unwrap();
    let mut results = report.results.clone();
    expected.apply(&mut results);
    let bad: Vec<String> = results
        .iter()
        .filter(|r| r.grade != Grade::Pass && r.grade != Grade::ExpectedFailure)
        .map(|r| {
            format!(
                "{}: {:?} {}",
                r.id,
                r.grade,
                r.message.as_deref().unwrap_or("")
            )
        })
        .collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert!(report.counts.total >= 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broken_client_is_caught_with_its_requirement() {
    assert!(ClientFault::ALL.len() >= 10);
    let mut missed = Vec::new();
    for fault in ClientFault::ALL {
        let req = fault.requirement();
        let report = conform(
            Plan {
                server: None,
                client: Some(adapter(Some(*fault))),
            },
            &opts(12, Some(&format!("@{req}"))),
            &|_| {},
        )
        .await
        .unwrap();
        let caught = report.results.iter().any(|r| {
            r.grade == Grade::Fail && r.message.as_deref().is_some_and(|m| m.contains(req))
        });
        // Every failure names a requirement its scenario is tagged with, or one the
        // mock checks on every connection (`runwire_mock::reqs::ALL`, the adapter
        // contract).
        for r in report.results.iter().filter(|r| r.grade == Grade::Fail) {
            for named in r.violated.as_deref().unwrap_or("").split(", ") {
                if !(r.requirements.iter().any(|t| t == named)
                    || runwire_mock::reqs::ALL.contains(&named)
                    || named == runwire_mock::reqs::ADAPTER)
                {
                    missed.push(format!(
                        "{fault:?}: {} names {named}, which it is not tagged with: {}",
                        r.id,
                        r.message.as_deref().unwrap_or("")
                    ));
                }
            }
        }
        if !caught {
            missed.push(format!(
                "{fault:?} ({req}) was not caught: {:?}",
                report
                    .results
                    .iter()
                    .map(|r| (&r.id, r.grade, r.message.clone()))
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(missed.is_empty(), "{}", missed.join("\n"));
}

#[test]
fn default_mode_passes_and_writes_every_report() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let junit = dir.path().join("junit.xml");
    let html = dir.path().join("html");
    let base = dir.path().join("baseline.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runwire"))
        .args(["conform", "--seed", "99", "--quiet"])
        .arg("--expected-failures")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../conformance/expected-failures.json"
        ))
        .arg("--baseline")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../conformance/expected-results.json"
        ))
        .arg("--json")
        .arg(&json)
        .arg("--junit")
        .arg(&junit)
        .arg("--html")
        .arg(&html)
        .arg("--write-baseline")
        .arg(&base)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "runwire conform failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("RESULT: PASS"));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(report["counts"]["total"].as_u64().unwrap() >= 100);
    assert_eq!(report["passed"], true);
    assert_eq!(report["seed"], 99);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml"));
    assert!(xml.contains("<testsuites"));
    let page = std::fs::read_to_string(html.join("index.html")).unwrap();
    assert!(page.contains("Runwire conformance report"));
    // The baseline just written matches a second, server-only run's server entries.
    let out2 = std::process::Command::new(env!("CARGO_BIN_EXE_runwire"))
        .args([
            "conform",
            "--suite",
            "server",
            "--tags",
            "@version",
            "--quiet",
            "--baseline",
        ])
        .arg(&base)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let s2 = String::from_utf8_lossy(&out2.stdout);
    assert_eq!(
        out2.status.code(),
        Some(1),
        "a baseline diff fails the run:\n{s2}"
    );
    assert!(s2.contains("no longer run"), "{s2}");
}

#[test]
fn list_and_report_schema() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runwire"))
        .args(["conform", "list", "--tags", "@must and @heartbeat"])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        s.lines().count() >= 3 && s.contains("server/heartbeat/"),
        "{s}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runwire"))
        .args(["conform", "report-schema"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["$id"],
        "https://runwire.dev/schema/tools/conformance-report.schema.json"
    );
    let committed: serde_json::Value = serde_json::from_str(include_str!(
        "../../../../schema/tools/conformance-report.schema.json"
    ))
    .unwrap();
    assert_eq!(
        v, committed,
        "regenerate with: runwire conform report-schema > schema/tools/conformance-report.schema.json"
    );
}

/// A `runwire serve` child process, killed when dropped.
struct ServeChild(std::process::Child);

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `conform server --short-retention PREFIX=N` runs the retention scenarios against an
/// external server whose store trims those runs (here `runwire serve` on the memory
/// store, which trims in the append): they pass (`RW-INGEST-17`, `RW-RESUME-5`,
/// `RW-RESUME-7`); without the flag they are graded not implemented and the run still
/// passes; a malformed value is a usage error (exit 2).
#[test]
fn rw_ingest_17_short_retention_flag_drives_the_retention_scenarios() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("retention.toml");
    std::fs::write(
        &config,
        "[[retention.runs]]\npattern = \"conform-short-*\"\nevents = 20\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_runwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "memory"])
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _server = ServeChild(child);
    let mut first = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .trim()
        .strip_prefix("runwire serve listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    let run = |extra: &[&str]| {
        let json = dir.path().join("report.json");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_runwire"))
            .args(["conform", "server", "--seed", "17", "--quiet"])
            .arg("--url")
            .arg(format!("ws://{addr}/v1/stream"))
            .arg("--ingest")
            .arg(format!("http://{addr}"))
            .args(["--tags", "@retention", "--json"])
            .arg(&json)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let report: Option<serde_json::Value> = std::fs::read(&json)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let _ = std::fs::remove_file(&json);
        (out, report)
    };
    let grades = |r: &serde_json::Value| -> Vec<String> {
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["grade"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let (out, report) = run(&["--short-retention", "conform-short-=20"]);
    let report = report.unwrap_or_else(|| {
        panic!(
            "no JSON report (exit {:?}):\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        grades(&report),
        vec!["pass"; 6],
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (out, report) = run(&[]);
    let report = report.expect("a JSON report");
    assert!(out.status.success());
    assert_eq!(grades(&report), vec!["not_implemented"; 6]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no --short-retention PREFIX=N given"));
    let (out, _) = run(&["--short-retention", "conform-short-*=20"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--short-retention"));
}

/// `runwire conform list | head`: a reader that closes the pipe early ends the
/// program quietly (status 141, like SIGPIPE), never with a panic.
#[test]
fn a_closed_pipe_is_not_a_panic() {
    for args in [
        &["conform", "list"][..],
        &["conform", "steps"],
        &["conform", "coverage"],
    ] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_runwire"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the read end before the program writes anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
    }
}

/// An unreachable target: exit 2 at once, with one line naming the refused address.
#[test]
fn an_unreachable_server_is_one_line_and_exit_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runwire"))
        .args([
            "conform",
            "server",
            "--url",
            "ws://127.0.0.1:1/v1/stream",
            "--ingest",
            "http://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "error: cannot open ws://127.0.0.1:1/v1/stream: connection refused by 127.0.0.1:1"
        ),
        "{err}"
    );
    assert!(!err.contains("violated"), "{err}");
}

/// The help of `conform steps` names the number placeholder instead of losing it to
/// clap, which turns the brace-enclosed n into a line break.
#[test]
fn the_steps_help_is_whole() {
    for args in [&["conform", "--help"][..], &["conform", "steps", "--help"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_runwire"))
            .args(args)
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{help}");
        let steps = help
            .lines()
            .find(|l| l.contains("step pattern"))
            .unwrap_or_else(|| panic!("{args:?}: no steps line in\n{help}"));
        assert!(
            steps.trim_end().trim_end_matches('.').ends_with("may use"),
            "{args:?}: {steps:?}"
        );
        assert!(
            !help
                .lines()
                .any(|l| l.trim_start().starts_with("} a number")),
            "{args:?}: {help}"
        );
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runwire"))
        .args(["conform", "steps", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("n a number"));
}
