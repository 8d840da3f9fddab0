//! `runwire serve`'s logs: `--log-format json` writes one JSON object per line, text
//! logs carry no ANSI escapes when stderr is not a terminal, and every closed
//! connection is one info line with its reason, close code, duration, traffic,
//! session id and peer, never the token (`RW-SEC-1`).

use std::{process::Stdio, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "log-test-token-7f3e9a";

struct Served {
    _child: Child,
    _dir: tempfile::TempDir,
    addr: String,
    stderr: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
}

/// Starts `runwire serve` with a static token, stderr piped (not a terminal).
async fn serve(log_format: &str) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("runwire.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[auth.tokens]]\ntoken = \"{TOKEN}\"\nroles = [\"consumer\", \"producer\"]\nname = \"log-test\"\n"
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_runwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "memory"])
        .arg("--config")
        .arg(&cfg)
        .args(["--log-format", log_format])
        .env("RUNWIRE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn runwire serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("serve starts in time")
        .expect("read")
        .expect("a first line");
    let addr = first
        .strip_prefix("runwire serve listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    Served {
        _child: child,
        _dir: dir,
        addr,
        stderr,
    }
}

/// Connects, says hello with the token, then sends a frame that is not JSON: the
/// server closes with `invalid_json` (4000).
async fn bad_client(addr: &str) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/stream"))
        .await
        .expect("ws connect");
    ws.send(Message::text(
        json!({"type": "hello", "versions": ["1.0"], "token": TOKEN}).to_string(),
    ))
    .await
    .expect("hello");
    ws.send(Message::text("{not json")).await.expect("send");
    // Read to the end: welcome, the error, the close.
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
}

/// Reads stderr lines until one contains `needle`; returns every line read.
async fn lines_until(s: &mut Served, needle: &str) -> Vec<String> {
    let mut all = Vec::new();
    loop {
        let line = tokio::time::timeout(WAIT, s.stderr.next_line())
            .await
            .unwrap_or_else(|_| panic!("no log line with {needle:?} in time; got {all:#?}"))
            .expect("read stderr")
            .unwrap_or_else(|| panic!("stderr ended; got {all:#?}"));
        let done = line.contains(needle);
        all.push(line);
        if done {
            return all;
        }
    }
}

#[tokio::test]
async fn json_logs_one_object_per_line_with_the_closed_connection() {
    let mut s = serve("json").await;
    let addr = s.addr.clone();
    bad_client(&addr).await;
    let lines = lines_until(&mut s, "connection closed").await;
    let mut closed = None;
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line:?}"));
        assert!(v["level"].is_string(), "{v}");
        assert!(!line.contains(TOKEN), "the token is logged: {line}");
        if v["message"] == "connection closed" {
            closed = Some(v);
        }
    }
    let v = closed.expect("closed-connection line");
    assert_eq!(v["level"], "INFO", "{v}");
    assert_eq!(v["target"], "runwire::conn", "{v}");
    assert_eq!(v["reason"], "invalid_json", "{v}");
    assert_eq!(v["close_code"], 4000, "{v}");
    assert_eq!(v["frames_in"], 2, "{v}");
    // welcome and the error frame.
    assert_eq!(v["frames_out"], 2, "{v}");
    assert_eq!(v["events_out"], 0, "{v}");
    assert!(v["duration_ms"].is_u64(), "{v}");
    let session = v["session_id"].as_str().expect("session_id");
    assert_eq!(session.len(), 32, "{v}");
    // The client's address, not a placeholder.
    assert!(
        v["peer"]
            .as_str()
            .is_some_and(|p| p.parse::<std::net::SocketAddr>().is_ok()),
        "{v}"
    );
    assert_eq!(v["principal"], "log-test", "{v}");
}

#[tokio::test]
async fn text_logs_have_no_ansi_escapes_off_a_terminal() {
    let mut s = serve("text").await;
    let addr = s.addr.clone();
    bad_client(&addr).await;
    let lines = lines_until(&mut s, "connection closed").await;
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "ANSI escape in {line:?}");
        assert!(!line.contains(TOKEN), "the token is logged: {line}");
    }
    let last = lines.last().expect("a line");
    for field in [
        "reason=invalid_json",
        "close_code=4000",
        "frames_in=2",
        "frames_out=2",
        "events_out=0",
        "session_id=",
        "duration_ms=",
        "peer=127.0.0.1:",
    ] {
        assert!(last.contains(field), "{field} missing in {last:?}");
    }
}
