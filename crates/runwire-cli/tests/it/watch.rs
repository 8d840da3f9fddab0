//! `runwire watch` and `runwire publish` against a real `runwire serve`: every event
//! type of spec §3 rendered, several runs with the worst outcome as exit code, the
//! cause of a failed connection, a live producer piped into `publish --file -`, and
//! `publish --tail`.

use std::{io::Write as _, process::Stdio, time::Duration};

use runwire_client::{Client, ClientConfig, ClientEvent};
use runwire_protocol::{Event, EventPayload, RunId, SubscriptionRequest};
use tokio::io::AsyncWriteExt;

use crate::serve::{Served, serve};

const WAIT: Duration = Duration::from_secs(30);

fn runwire() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_runwire"));
    c.stdin(Stdio::null()).kill_on_drop(true);
    c
}

async fn output(mut cmd: tokio::process::Command) -> std::process::Output {
    tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("finished in time")
        .expect("spawned")
}

/// Appends JSON lines to `run` with `runwire publish --file`.
async fn publish(s: &Served, run: &str, lines: &[serde_json::Value]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    let mut cmd = runwire();
    cmd.args([
        "publish",
        "--url",
        &format!("http://{}", s.addr),
        run,
        "--file",
    ])
    .arg(&path);
    let out = output(cmd).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ev(t: &str, data: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "type": t, "data": data })
}

/// A run with every event type of spec §3 (and a custom one), ending completed.
fn every_type() -> Vec<serde_json::Value> {
    use serde_json::json;
    vec![
        ev(
            "run.metadata",
            json!({"title": "Fix login", "agent": "claude", "labels": {"team": "auth"}}),
        ),
        ev("run.status", json!({"status": "running"})),
        ev(
            "run.phase",
            json!({"phase": "build", "message": "compiling"}),
        ),
        ev("run.progress", json!({"percent": 40, "step": "compile"})),
        ev(
            "log.line",
            json!({"level": "warn", "message": "slow test", "source": "cargo"}),
        ),
        ev("tool.started", json!({"call_id": "c1", "tool": "bash"})),
        ev(
            "tool.finished",
            json!({"call_id": "c1", "tool": "bash", "ok": false, "error": "exit 1", "duration_ms": 12}),
        ),
        ev(
            "agent.thinking",
            json!({"message_id": "t1", "delta": "Considering the retry loop"}),
        ),
        ev(
            "agent.thinking",
            json!({"message_id": "t1", "delta": ".", "done": true}),
        ),
        ev(
            "agent.message",
            json!({"message_id": "m1", "delta": "I will replace "}),
        ),
        ev(
            "agent.message",
            json!({"message_id": "m1", "delta": "the sleep.\nThen run"}),
        ),
        ev(
            "agent.message",
            json!({"message_id": "m1", "delta": " the suite.", "done": true}),
        ),
        ev(
            "todo.updated",
            json!({"items": [
            {"id": "1", "text": "Reproduce", "status": "completed"},
            {"id": "2", "text": "Fake clock", "status": "in_progress"},
            {"id": "3", "text": "Run 50 times", "status": "pending"}]}),
        ),
        ev(
            "file.changed",
            json!({"path": "src/clock.rs", "change": "renamed", "previous_path": "src/time.rs"}),
        ),
        ev(
            "artifact.created",
            json!({"artifact_id": "p1", "kind": "patch", "uri": "https://a.example/p1.diff", "media_type": "text/x-diff", "size_bytes": 10, "name": "Fix"}),
        ),
        ev(
            "output.chunk",
            json!({"output_id": "report", "index": 0, "encoding": "utf8", "data": "line one\nline ", "media_type": "text/plain"}),
        ),
        ev(
            "output.chunk",
            json!({"output_id": "report", "index": 1, "last": true, "encoding": "utf8", "data": "two"}),
        ),
        ev("acme.deploy.started", json!({"target": "staging"})),
        ev("run.status", json!({"status": "completed"})),
    ]
}

/// `watch` (lines, no terminal) and `watch --json` through a run with every event type.
#[tokio::test]
async fn watch_renders_every_event_type() {
    let s = serve("memory", &[]).await;
    let log = every_type();
    for t in runwire_protocol::KNOWN_EVENT_TYPES {
        assert!(log.iter().any(|e| e["type"] == *t), "the run lacks {t}");
    }
    publish(&s, "run-e", &log).await;
    let url = format!("http://{}", s.addr);

    let mut cmd = runwire();
    cmd.args(["watch", "--thinking", "--url", &url, "run-e"]);
    let out = output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for needle in [
        "watching run-e: 19 events so far",
        "metadata title \"Fix login\" · agent \"claude\" · team=auth",
        "status running",
        "phase build: compiling",
        " 40% running · phase build · compile",
        "warn  [cargo] slow test",
        "→ bash (c1)",
        "✗ bash (c1) in 12 ms: exit 1",
        "thinking · Considering the retry loop.",
        "agent › I will replace the sleep.\n",
        "agent › Then run the suite.\n",
        "todo (1/3 done)\n    [x] Reproduce\n    [~] Fake clock\n    [ ] Run 50 times\n",
        "file renamed src/time.rs → src/clock.rs",
        "artifact patch \"Fix\" (text/x-diff, 10 bytes) https://a.example/p1.diff",
        "output report (text/plain, 17 bytes):\n    line one\n    line two\n",
        "acme.deploy.started {\"target\":\"staging\"}",
        "status completed",
        "run run-e completed: 19 events",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }

    let mut cmd = runwire();
    cmd.args(["watch", "--url", &url, "run-e"]);
    let out = output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("Considering"),
        "thinking is hidden by default:\n{stdout}"
    );

    let mut cmd = runwire();
    cmd.args(["watch", "--json", "--url", &url, "run-e"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0));
    let types: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["type"].as_str().unwrap().to_owned()
        })
        .collect();
    let want: Vec<String> = log
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, want);
}

/// Several runs: one block of lines each (prefixed), the worst outcome as exit code;
/// `--compact` shows status lines only.
#[tokio::test]
async fn watch_several_runs_exits_with_the_worst_outcome() {
    let s = serve("memory", &[]).await;
    let url = format!("http://{}", s.addr);
    for (run, status) in [
        ("ci:a", "completed"),
        ("ci:b", "cancelled"),
        ("ci:c", "failed"),
    ] {
        let log = [
            ev("run.progress", serde_json::json!({"percent": 50})),
            ev("run.status", serde_json::json!({"status": status})),
        ];
        publish(&s, run, &log).await;
    }
    let mut cmd = runwire();
    cmd.args(["watch", "--url", &url, "ci:a", "ci:b"]);
    let out = output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    for needle in [
        "[ci:a] status completed",
        "[ci:b] status cancelled",
        "run ci:a completed: 2 events",
        "run ci:b cancelled: 2 events",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    let mut cmd = runwire();
    cmd.args(["watch", "--compact", "--url", &url, "ci:a", "ci:b", "ci:c"]);
    let out = output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("[ci:c]  50% failed"), "{stdout}");
    assert!(!stdout.contains("status failed"), "{stdout}");
}

/// A port nothing listens on: bound to port 0, then released.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A wrong URL: the first reconnect line names the cause and the next attempt, and
/// giving up repeats it (exit 2).
#[tokio::test]
async fn watch_says_why_it_cannot_connect() {
    let port = closed_port();
    let mut cmd = runwire();
    cmd.args([
        "watch",
        "--json",
        "--max-attempts",
        "2",
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "r",
    ]);
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!(
            "connection refused by 127.0.0.1:{port} — reconnecting, attempt 2/2 in "
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: reconnect_failed: ") && stderr.contains("connection refused by"),
        "{stderr}"
    );
}

/// `publish` against a wrong URL names the refused address on every retry.
#[tokio::test]
async fn publish_says_why_it_cannot_connect() {
    let port = closed_port();
    let mut cmd = runwire();
    cmd.args([
        "publish",
        "--attempts",
        "2",
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "r",
        "--type",
        "run.status",
        "--data",
        r#"{"status":"running"}"#,
    ]);
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let refused = format!("connection refused by 127.0.0.1:{port}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].starts_with(&refused) && lines[0].contains(" — retry 2/2 in "),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("error: {refused}")),
        "{stderr}"
    );
}

/// Subscribes to `run` with the reference client.
fn subscribe(s: &Served, run: &str) -> Client {
    let config = ClientConfig::new(format!("ws://{}/v1/stream", s.addr))
        .subscribe(SubscriptionRequest::new(RunId::new(run).unwrap()));
    Client::connect(config)
}

/// The next event the client delivers.
async fn next_event(c: &mut Client) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            match c.next().await.expect("the client runs") {
                ClientEvent::Event(e) => return e,
                ClientEvent::Error(e) if e.terminal => panic!("{e}"),
                _ => {}
            }
        }
    })
    .await
    .expect("an event in time")
}

fn message(e: &Event) -> String {
    match &e.payload {
        EventPayload::LogLine(l) => l.message.clone(),
        other => panic!("not a log line: {other:?}"),
    }
}

/// A slow producer piped into `publish --file -`: each line is appended (and seen by
/// a subscriber) while the producer is still running, before its input ends.
#[tokio::test]
async fn publish_file_stdin_streams_each_line_as_it_arrives() {
    let s = serve("memory", &[]).await;
    let mut sub = subscribe(&s, "run-p");
    let mut cmd = runwire();
    cmd.args([
        "publish",
        "--url",
        &format!("http://{}", s.addr),
        "run-p",
        "--file",
        "-",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 1..=3u64 {
        let line = format!(
            "{}\n",
            ev(
                "log.line",
                serde_json::json!({"level": "info", "message": format!("step {i}")})
            )
        );
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
        // The producer waits for the delivery before it writes the next line: the
        // command must send without waiting for the end of its input.
        let e = next_event(&mut sub).await;
        assert_eq!((e.seq, message(&e)), (i, format!("step {i}")));
    }
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("published 3 events in 3 requests"),
        "{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
}

/// A bad line stops the stream after the lines before it were sent: exit 2 with the
/// line number.
#[tokio::test]
async fn publish_file_stops_at_a_bad_line_after_sending_what_came_before() {
    let s = serve("memory", &[]).await;
    let mut cmd = runwire();
    cmd.args([
        "publish",
        "--url",
        &format!("http://{}", s.addr),
        "run-x",
        "--file",
        "-",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let good = ev(
        "log.line",
        serde_json::json!({"level": "info", "message": "ok"}),
    );
    let bad = ev("run.status", serde_json::json!({"status": "sleeping"}));
    stdin
        .write_all(format!("{good}\n\n{bad}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("error: -:3: invalid event") && stderr.contains("`sleeping`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("published 1 events in 1 requests"),
        "{stderr}"
    );
}

/// `publish --tail`: the lines of a growing file, each as a `log.line`, a line written
/// in two pieces as one event; Ctrl-C ends it with a summary.
#[tokio::test]
async fn publish_tail_follows_a_growing_file() {
    let s = serve("memory", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.log");
    std::fs::write(&path, "one\n").unwrap();
    let mut sub = subscribe(&s, "run-t");
    let mut cmd = runwire();
    cmd.args([
        "publish",
        "--url",
        &format!("http://{}", s.addr),
        "run-t",
        "--tail",
    ])
    .arg(&path)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let e = next_event(&mut sub).await;
    assert_eq!(message(&e), "one");
    let EventPayload::LogLine(l) = &e.payload else {
        unreachable!()
    };
    assert_eq!(l.source.as_deref(), Some("agent.log"));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"two\nthr").unwrap();
    f.flush().unwrap();
    assert_eq!(message(&next_event(&mut sub).await), "two");
    f.write_all(b"ee\r\n").unwrap();
    f.flush().unwrap();
    assert_eq!(message(&next_event(&mut sub).await), "three");
    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("published 3 events in"), "{stderr}");
}

/// Reads `--json` lines until one is an event of `run` with `seq`; every line read
/// is kept in `seen` (run id, seq).
async fn json_until(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    seen: &mut Vec<(String, u64)>,
    run: &str,
    seq: u64,
) {
    let want = (run.to_owned(), seq);
    while !seen.contains(&want) {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no event {want:?} in time; saw {seen:?}"))
            .expect("read")
            .unwrap_or_else(|| panic!("watch ended before {want:?}; saw {seen:?}"));
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        seen.push((
            v["run_id"].as_str().expect("run_id").to_owned(),
            v["seq"].as_u64().unwrap_or(0),
        ));
    }
}

/// `watch --prefix ci: --json`: follows the runs the server lists with the prefix
/// (not the others), picks up a run created later at the next listing, and with
/// `--exit-when-done` ends once all have ended, with the worst outcome.
#[tokio::test]
async fn watch_prefix_follows_listed_runs_and_picks_up_new_ones() {
    use tokio::io::AsyncBufReadExt;
    let s = serve("memory", &[]).await;
    let url = format!("http://{}", s.addr);
    let progress = || [ev("run.progress", serde_json::json!({"percent": 10}))];
    publish(&s, "ci:a", &progress()).await;
    publish(&s, "ci:b", &progress()).await;
    publish(&s, "other", &progress()).await;
    let mut cmd = runwire();
    cmd.args([
        "watch",
        "--url",
        &url,
        "--prefix",
        "ci:",
        "--json",
        "--poll-ms",
        "50",
        "--exit-when-done",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn watch");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    json_until(&mut lines, &mut seen, "ci:a", 1).await;
    json_until(&mut lines, &mut seen, "ci:b", 1).await;
    // Created after the watch started: found at a later listing.
    publish(&s, "ci:c", &progress()).await;
    json_until(&mut lines, &mut seen, "ci:c", 1).await;
    publish(&s, "other", &progress()).await;
    for (run, status) in [
        ("ci:a", "completed"),
        ("ci:b", "failed"),
        ("ci:c", "completed"),
    ] {
        publish(
            &s,
            run,
            &[ev("run.status", serde_json::json!({"status": status}))],
        )
        .await;
    }
    for run in ["ci:a", "ci:b", "ci:c"] {
        json_until(&mut lines, &mut seen, run, 2).await;
    }
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("watch --exit-when-done ends")
        .expect("wait");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the worst outcome (ci:b failed); stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        seen.iter().all(|(run, _)| run.starts_with("ci:")),
        "a run without the prefix was watched: {seen:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("run ci:c completed"), "{stderr}");
}

/// A server without the listing (or a bad prefix) is said plainly, exit 2.
#[tokio::test]
async fn watch_prefix_refuses_a_bad_prefix() {
    let mut cmd = runwire();
    cmd.args(["watch", "--url", "http://127.0.0.1:9", "--prefix", "ci/x"]);
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--prefix \"ci/x\""), "{stderr}");
}

/// `watch --prefix` without `--exit-when-done` follows its runs until interrupted:
/// SIGINT ends it with a line per run and exit 130, also while a run has ended.
#[tokio::test]
async fn watch_prefix_follows_until_interrupted() {
    use tokio::io::AsyncBufReadExt;
    let s = serve("memory", &[]).await;
    let url = format!("http://{}", s.addr);
    publish(
        &s,
        "job:1",
        &[ev("run.status", serde_json::json!({"status": "completed"}))],
    )
    .await;
    publish(
        &s,
        "job:2",
        &[ev("run.progress", serde_json::json!({"percent": 5}))],
    )
    .await;
    let mut cmd = runwire();
    cmd.args(["watch", "--url", &url, "--prefix", "job:", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn watch");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    json_until(&mut lines, &mut seen, "job:1", 1).await;
    json_until(&mut lines, &mut seen, "job:2", 1).await;
    let pid = child.id().expect("pid").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("watch ends after SIGINT")
        .expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("run job:1 completed"), "{stderr}");
    assert!(stderr.contains("run job:2 has not ended"), "{stderr}");
}
