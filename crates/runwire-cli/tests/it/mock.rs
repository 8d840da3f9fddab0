//! `runwire mock` end to end: exit codes, malformed fixtures, transcripts, and every
//! fixture of the library against the reference client's adapter
//! (`runwire client-adapter`).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Arc, Mutex},
};

fn runwire() -> Command {
    Command::new(env!("CARGO_BIN_EXE_runwire"))
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/client")
}

fn fixture(id: &str) -> PathBuf {
    fixtures_dir().join(format!("{id}.json"))
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("runwire-cli-mock-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn a_malformed_fixture_exits_2_with_file_pointer_and_reason() {
    let dir = temp_dir("malformed");
    let bad = dir.join("bad-fixture.json");
    let good = std::fs::read_to_string(fixture("happy-path")).expect("read");
    std::fs::write(
        &bad,
        good.replace("\"id\": \"happy-path\"", "\"id\": \"bad-fixture\"")
            .replace("\"to_seq\": 5", "\"to_seq\": 50"),
    )
    .expect("write");
    let o = runwire()
        .arg("mock")
        .arg("--fixture")
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad-fixture.json"), "{}", text(&o));
    assert!(
        err.contains("/connections/0/steps/2/events"),
        "{}",
        text(&o)
    );
    assert!(err.contains("outside the log"), "{}", text(&o));

    std::fs::write(&bad, "{\"id\": \"bad-fixture\", \"title\": 3}").expect("write");
    let o = runwire()
        .arg("mock")
        .arg("--fixture")
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/title"),
        "{}",
        text(&o)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn usage_errors_exit_2() {
    let o = runwire()
        .args(["mock", "--fixture"])
        .arg(fixture("happy-path"))
        .args(["--time-scale", "0"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = runwire()
        .args(["mock", "--fixture", "/nonexistent/x.json"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// An adapter that exits without connecting fails the fixture (exit 1), and the
/// verdict names a requirement.
#[test]
fn a_failing_adapter_exits_1_with_the_requirement() {
    let o = runwire()
        .args(["mock", "--fixture"])
        .arg(fixture("happy-path"))
        .args(["--", "sh", "-c", "exit 0"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("FAIL happy-path"), "{}", text(&o));
    assert!(out.contains("RW-CONN-4"), "{}", text(&o));
}

#[test]
fn an_unimplemented_feature_exits_89() {
    let o = runwire()
        .args(["mock", "--fixture"])
        .arg(fixture("output-chunks"))
        .args([
            "--",
            "sh",
            "-c",
            "echo '{\"kind\":\"unimplemented\",\"feature\":\"output chunks\"}'; exit 89",
        ])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(89), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("NOT IMPLEMENTED"),
        "{}",
        text(&o)
    );
}

fn play_with_reference_adapter(id: &str, extra: &[&str]) -> Output {
    runwire()
        .args(["mock", "--quiet", "--fixture"])
        .arg(fixture(id))
        .args(extra)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_runwire"))
        .arg("client-adapter")
        .output()
        .expect("run")
}

/// The transcript is written in both forms, and the frames are printed live.
#[test]
fn transcripts_are_written() {
    let dir = temp_dir("transcript");
    let jsonl = dir.join("t.jsonl");
    let o = play_with_reference_adapter(
        "happy-path",
        &["--transcript", jsonl.to_str().expect("utf8"), "--seed", "7"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines = std::fs::read_to_string(&jsonl).expect("transcript");
    let first: serde_json::Value =
        serde_json::from_str(lines.lines().next().expect("a line")).expect("json");
    assert!(
        first.get("t_ms").is_some() && first.get("kind").is_some(),
        "{lines}"
    );
    assert!(
        lines.contains("\"dir\":\"in\"") && lines.contains("\"kind\":\"close\""),
        "{lines}"
    );
    let txt = dir.join("t.txt");
    let o = runwire()
        .args(["mock", "--fixture"])
        .arg(fixture("happy-path"))
        .args(["--seed", "7", "--transcript"])
        .arg(&txt)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_runwire"))
        .arg("client-adapter")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let printed = String::from_utf8_lossy(&o.stdout);
    assert!(
        printed.contains("#1  <- {") && printed.contains("PASS happy-path"),
        "{printed}"
    );
    let t = std::fs::read_to_string(&txt).expect("transcript");
    assert!(t.starts_with("# fixture happy-path seed 7"), "{t}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Every fixture of the library passes against the reference client's adapter.
#[test]
fn every_fixture_passes_against_the_reference_adapter() {
    let mut ids: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures")
        .filter_map(Result::ok)
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "json").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    ids.sort();
    assert!(ids.len() >= 40, "{} fixtures", ids.len());
    let queue = Arc::new(Mutex::new(ids));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let queue = queue.clone();
            let failures = failures.clone();
            std::thread::spawn(move || {
                loop {
                    let Some(id) = queue.lock().expect("lock").pop() else {
                        break;
                    };
                    let o = play_with_reference_adapter(
                        &id,
                        &["--seed", "20261122", "--time-scale", "2"],
                    );
                    if o.status.code() != Some(0) {
                        failures
                            .lock()
                            .expect("lock")
                            .push(format!("{id}: {}", text(&o)));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    // A fixture whose scenario is a known reference-client bug, listed with its reason
    // in conformance/expected-failures.json (pattern `client/<area>/<fixture id>-*`),
    // may fail; every other fixture must pass.
    let listed: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../conformance/expected-failures.json"
        ))
        .expect("expected-failures.json"),
    )
    .expect("expected-failures.json is an object");
    let mut failures = failures.lock().expect("lock");
    failures.retain(|f| {
        let id = f.split(':').next().unwrap_or_default();
        !listed
            .keys()
            .any(|k| k.starts_with("client/") && k.contains(&format!("/{id}-")))
    });
    assert!(
        failures.is_empty(),
        "{} fixture(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Manual mode: without `--`, the mock prints its URL and the adapter environment and
/// waits; a client started by hand with that environment is judged on the wire.
#[test]
fn a_client_started_by_hand_is_judged() {
    use std::io::{BufRead, BufReader};
    let mut mock = runwire()
        .args(["mock", "--fixture"])
        .arg(fixture("ping-pong"))
        .args(["--wait-ms", "20000", "--seed", "3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mock");
    let stdout = mock.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout);
    let mut env = Vec::new();
    let mut line = String::new();
    while reader.read_line(&mut line).expect("read") > 0 {
        let l = line.trim().to_owned();
        line.clear();
        if let Some((k, v)) = l.split_once('=')
            && k.starts_with("RUNWIRE_")
        {
            env.push((k.to_owned(), v.to_owned()));
        }
        if l.starts_with("RUNWIRE_TIME_SCALE") {
            break;
        }
    }
    assert!(env.iter().any(|(k, _)| k == "RUNWIRE_URL"), "{env:?}");
    let adapter = runwire()
        .arg("client-adapter")
        .envs(env)
        .output()
        .expect("adapter");
    assert_eq!(adapter.status.code(), Some(0), "{}", text(&adapter));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).expect("read");
    let status = mock.wait().expect("mock exits");
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(rest.contains("PASS ping-pong"), "{rest}");
    assert!(rest.contains("not judged: no adapter attached"), "{rest}");
}

/// `--quiet` prints the verdict and nothing else: no frames, no header.
#[test]
fn quiet_prints_only_the_verdict() {
    let o = play_with_reference_adapter("happy-path", &["--seed", "7"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let printed = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = printed.lines().collect();
    assert!(
        lines.first().is_some_and(|l| l.contains("PASS happy-path")),
        "{printed}"
    );
    assert!(
        !printed.contains("runwire mock:") && !printed.contains("  url "),
        "{printed}"
    );
}
