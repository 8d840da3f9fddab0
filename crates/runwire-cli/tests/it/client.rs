//! `runwire client-adapter`, `runwire watch` and the Python example adapter, end to
//! end: the real binaries against a small scripted WebSocket server (built here on
//! `runwire-protocol`) and against the mock server's fixture library.

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use runwire_protocol::{
    ClientMessage, Epoch, ErrorCode, ErrorFrame, Event, EventFrame, EventId, EventPayload, Hello,
    Limits, LogLevel, LogLineData, ProgressData, RunId, RunStatus, RunStatusData, ServerMessage,
    Subscribed, Timestamp, ToolFinishedData, ToolStartedData, Welcome, codec,
};
use tokio::net::TcpListener;
use tokio_tungstenite::{
    WebSocketStream, accept_async,
    tungstenite::{
        Message,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};

fn runwire() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_runwire"));
    c.stdin(Stdio::null()).kill_on_drop(true);
    c
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What the scripted server saw.
#[derive(Default)]
struct Seen {
    hellos: Vec<Hello>,
    client_close: Vec<Option<u16>>,
}

struct Conn {
    ws: WebSocketStream<tokio::net::TcpStream>,
    index: usize,
    seen: Arc<Mutex<Seen>>,
}

impl Conn {
    async fn recv(&mut self) -> Option<ClientMessage> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(t)) => {
                    return Some(
                        codec::decode_client_message(t.as_bytes(), 1 << 20).expect("valid frame"),
                    );
                }
                Ok(Message::Close(cf)) => {
                    let code = cf.map(|c| u16::from(c.code));
                    self.seen.lock().unwrap().client_close.push(code);
                    return None;
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    async fn hello(&mut self) -> Hello {
        let Some(ClientMessage::Hello(h)) = self.recv().await else {
            panic!("expected hello");
        };
        self.seen.lock().unwrap().hellos.push(h.clone());
        h
    }

    async fn send(&mut self, m: &ServerMessage) {
        let _ = self.ws.send(Message::text(codec::encode(m))).await;
    }

    async fn welcome(&mut self) {
        self.send(&ServerMessage::Welcome(Welcome {
            version: "1.0".into(),
            session_id: format!("s{}", self.index),
            heartbeat_interval_ms: 10_000,
            pong_timeout_ms: 1_000,
            batch_window_ms: 0,
            replay_window_events: 1_000,
            limits: Limits {
                max_frame_bytes: 65_536,
                max_event_bytes: 65_536,
                max_subscriptions: 10,
                max_messages_per_second: 100,
                slow_consumer_max_bytes: None,
                slow_consumer_max_age_ms: None,
            },
            server: None,
        }))
        .await;
    }

    async fn subscribed(&mut self, run: &RunId, after: u64, head: u64) {
        self.send(&ServerMessage::Subscribed(Subscribed {
            run_id: run.clone(),
            epoch: Epoch::new("e1").unwrap(),
            after_seq: after,
            head_seq: head,
        }))
        .await;
    }

    async fn events(&mut self, log: &[Event], from: u64, to: u64) {
        for e in &log[(from - 1) as usize..to as usize] {
            self.send(&ServerMessage::Event(EventFrame { event: e.clone() }))
                .await;
        }
    }

    async fn close(&mut self, code: u16) {
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "".into(),
            }))
            .await;
        while let Some(Ok(_)) = self.ws.next().await {}
    }

    async fn drain(&mut self) {
        while self.recv().await.is_some() {}
    }
}

/// Serves every connection with `script`; returns the stream URL and what it saw.
async fn serve<F, Fut>(script: F) -> (String, Arc<Mutex<Seen>>)
where
    F: Fn(Conn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/v1/stream", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        let mut index = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            let (script, seen) = (script.clone(), seen2.clone());
            let i = index;
            index += 1;
            tokio::spawn(async move {
                if let Ok(ws) = accept_async(tcp).await {
                    script(Conn { ws, index: i, seen }).await;
                }
            });
        }
    });
    (url, seen)
}

fn ev(run: &RunId, seq: u64, payload: EventPayload) -> Event {
    Event {
        event_id: EventId::new(format!("{run}-{seq}")).unwrap(),
        run_id: run.clone(),
        seq,
        time: Timestamp::new(format!("2026-11-22T10:00:{:02}Z", seq % 60)).unwrap(),
        payload,
    }
}

/// A run of 8 events ending with `end`.
fn run_log(run: &RunId, end: RunStatus) -> Vec<Event> {
    let progress = |p: f64, step: &str, tool: Option<&str>| -> EventPayload {
        ProgressData {
            percent: Some(p),
            step: Some(step.into()),
            tool: tool.map(Into::into),
            ..Default::default()
        }
        .into()
    };
    vec![
        ev(
            run,
            1,
            RunStatusData {
                status: RunStatus::Running,
                reason: None,
            }
            .into(),
        ),
        ev(run, 2, progress(10.0, "planning", None)),
        ev(
            run,
            3,
            LogLineData {
                level: LogLevel::Info,
                message: "hello from the run".into(),
                source: None,
            }
            .into(),
        ),
        ev(
            run,
            4,
            ToolStartedData {
                call_id: "c1".into(),
                tool: "bash".into(),
                input: None,
            }
            .into(),
        ),
        ev(run, 5, progress(60.0, "building", Some("bash"))),
        ev(
            run,
            6,
            ToolFinishedData {
                call_id: "c1".into(),
                tool: "bash".into(),
                ok: true,
                output: None,
                error: None,
                duration_ms: Some(12),
            }
            .into(),
        ),
        ev(run, 7, progress(100.0, "done", None)),
        ev(
            run,
            8,
            RunStatusData {
                status: end,
                reason: Some("the end".into()),
            }
            .into(),
        ),
    ]
}

/// A server that plays `log` for `run`, dropping the first connection after seq 3
/// (no close frame) so that the client must resume from its cursor.
async fn run_server(run: RunId, log: Vec<Event>) -> (String, Arc<Mutex<Seen>>) {
    let log = Arc::new(log);
    serve(move |mut c| {
        let (run, log) = (run.clone(), log.clone());
        async move {
            let h = c.hello().await;
            c.welcome().await;
            let after = h
                .subscriptions
                .iter()
                .find(|s| s.run_id == run)
                .and_then(|s| s.after_seq)
                .unwrap_or(0);
            let last = log.len() as u64;
            c.subscribed(&run, after, last).await;
            if c.index == 0 {
                c.events(&log, after + 1, 3).await;
                return; // dropped: no close frame
            }
            // A duplicate of the cursor's event first: must not be shown twice.
            if after > 0 {
                c.events(&log, after, after).await;
            }
            c.events(&log, after + 1, last).await;
            c.drain().await;
        }
    })
    .await
}

async fn output(mut cmd: tokio::process::Command) -> std::process::Output {
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("finished within 30 s")
        .expect("spawned")
}

fn lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

/// RW-CONN-11 and docs/client-adapter.md: every event once, state lines, close 1000,
/// exit 0 when the run is terminal.
#[tokio::test]
async fn client_adapter_delivers_resumes_and_exits_0() {
    let run = RunId::new("run-1").unwrap();
    let (url, seen) = run_server(run.clone(), run_log(&run, RunStatus::Completed)).await;
    let mut cmd = runwire();
    cmd.arg("client-adapter")
        .env("RUNWIRE_URL", &url)
        .env("RUNWIRE_RUNS", "run-1")
        .env("RUNWIRE_TOKENS", "t1,t2")
        .env("RUNWIRE_RECONNECT_BASE_MS", "5")
        .env("RUNWIRE_SEED", "9");
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("RUNWIRE_SEED=9"), "{stderr}");
    let ls = lines(&out.stdout);
    let seqs: Vec<u64> = ls
        .iter()
        .filter(|l| l["kind"] == "event")
        .map(|l| l["event"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
    let states: Vec<&str> = ls
        .iter()
        .filter(|l| l["kind"] == "state")
        .map(|l| l["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "connecting",
            "connected",
            "reconnecting",
            "connecting",
            "connected",
            "closed"
        ]
    );
    assert_eq!(ls.last().unwrap()["state"], "closed");
    let reconnecting = ls.iter().find(|l| l["state"] == "reconnecting").unwrap();
    assert!(
        reconnecting["delay_ms"].as_u64().unwrap() <= 10,
        "{reconnecting}"
    );
    // The event line carries the envelope exactly.
    let first = ls.iter().find(|l| l["kind"] == "event").unwrap();
    assert_eq!(
        first["event"],
        serde_json::to_value(run_log(&run, RunStatus::Completed)[0].clone()).unwrap()
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.hellos[0].token.as_deref(), Some("t1"));
    assert_eq!(seen.hellos[1].token.as_deref(), Some("t2"));
    assert_eq!(seen.hellos[1].subscriptions[0].after_seq, Some(3));
    assert_eq!(seen.client_close.last(), Some(&Some(1000)));
}

/// Exit 1 with the terminal error as the last line (docs/client-adapter.md), and no
/// reconnect (RW-VERSION-6).
#[tokio::test]
async fn client_adapter_exits_1_on_a_terminal_error() {
    let (url, seen) = serve(|mut c| async move {
        c.hello().await;
        let mut e = ErrorFrame::new(ErrorCode::UnsupportedVersion, "no common version");
        e.supported_versions = Some(vec!["1.0".into()]);
        c.send(&ServerMessage::Error(e)).await;
        c.close(4002).await;
    })
    .await;
    let mut cmd = runwire();
    cmd.arg("client-adapter")
        .env("RUNWIRE_URL", &url)
        .env("RUNWIRE_RUNS", "run-1@e0:5")
        .env("RUNWIRE_VERSIONS", "2.0");
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    let ls = lines(&out.stdout);
    let last = ls.last().unwrap();
    assert_eq!(last["kind"], "error");
    assert_eq!(last["terminal"], true);
    assert_eq!(last["code"], "unsupported_version");
    assert_eq!(last["supported_versions"], serde_json::json!(["1.0"]));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.hellos.len(), 1);
    assert_eq!(seen.hellos[0].versions, vec!["2.0".to_owned()]);
    let s = &seen.hellos[0].subscriptions[0];
    assert_eq!(
        (s.after_seq, s.epoch.as_ref().map(Epoch::as_str)),
        (Some(5), Some("e0"))
    );
}

/// Bad configuration: a clear message and exit 2.
#[tokio::test]
async fn client_adapter_rejects_bad_configuration() {
    for (vars, needle) in [
        (vec![("RUNWIRE_RUNS", "r")], "RUNWIRE_URL is required"),
        (
            vec![("RUNWIRE_URL", "ws://127.0.0.1:1/v1/stream")],
            "RUNWIRE_RUNS is required",
        ),
        (
            vec![
                ("RUNWIRE_URL", "ws://x/v1/stream"),
                ("RUNWIRE_RUNS", "bad/id"),
            ],
            "RUNWIRE_RUNS entry",
        ),
        (
            vec![
                ("RUNWIRE_URL", "ws://x/v1/stream"),
                ("RUNWIRE_RUNS", "r"),
                ("RUNWIRE_RECONNECT_BASE_MS", "soon"),
            ],
            "RUNWIRE_RECONNECT_BASE_MS",
        ),
    ] {
        let mut cmd = runwire();
        cmd.arg("client-adapter")
            .env_remove("RUNWIRE_URL")
            .env_remove("RUNWIRE_RUNS");
        for (k, v) in &vars {
            cmd.env(k, v);
        }
        let out = output(cmd).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{vars:?}: {stderr}");
        assert!(stderr.contains(needle), "{vars:?}: {stderr}");
    }
}

/// `runwire watch --json`: every event once across a dropped connection, exit by
/// outcome (0 completed, 1 failed, 3 cancelled).
#[tokio::test]
async fn watch_json_resumes_without_loss_or_repeat_and_exits_by_outcome() {
    for (end, code) in [
        (RunStatus::Completed, 0),
        (RunStatus::Failed, 1),
        (RunStatus::Cancelled, 3),
    ] {
        let run = RunId::new("run-w").unwrap();
        let (url, _seen) = run_server(run.clone(), run_log(&run, end)).await;
        let mut cmd = runwire();
        cmd.args(["watch", "--json", "--url", &url, "run-w"]);
        let out = output(cmd).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{end}: {stderr}");
        let seqs: Vec<u64> = lines(&out.stdout)
            .iter()
            .map(|l| l["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
        // The cause of the dropped connection and the next attempt.
        assert!(
            stderr.contains("without closing handshake — reconnecting, attempt 2/10 in "),
            "{stderr}"
        );
        assert!(stderr.contains(&format!("run run-w {end}")), "{stderr}");
    }
}

/// `runwire watch` without a terminal: progress, phase/status, logs and tool calls as
/// lines, the cause and the next attempt when it reconnects, and a one-line summary.
#[tokio::test]
async fn watch_shows_progress_logs_tools_reconnecting_and_summary() {
    let run = RunId::new("run-v").unwrap();
    let (url, _seen) = run_server(run.clone(), run_log(&run, RunStatus::Completed)).await;
    let base = url
        .trim_end_matches("/v1/stream")
        .replace("ws://", "http://");
    let mut cmd = runwire();
    cmd.args(["watch", "--url", &base, "run-v"]);
    let out = output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for needle in [
        "status running",
        " 10% running · planning",
        "info  hello from the run",
        "→ bash (c1)",
        " 60% running · building · tool bash",
        "✓ bash (c1) in 12 ms",
        "without closing handshake — reconnecting, attempt 2/10 in ",
        "status completed (the end)",
        "run run-v completed (the end): 8 events",
        "1 reconnects",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    assert_eq!(stdout.matches("hello from the run").count(), 1, "{stdout}");
}

/// The watch command refuses a token in the URL (RW-AUTH-1) and bad run ids.
#[tokio::test]
async fn watch_rejects_bad_arguments() {
    for args in [
        vec!["watch", "--url", "ws://h/v1/stream?token=x", "r"],
        vec!["watch", "--url", "ws://h/v1/stream", "bad/run"],
        vec!["watch", "--url", "h:1", "r"],
    ] {
        let mut cmd = runwire();
        cmd.args(&args);
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

fn python_with_websockets() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import websockets.asyncio.client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The Python example adapter passes every client fixture, like the Rust one.
/// Requires `python3` with `pip install websockets==17.4`.
#[tokio::test]
async fn python_adapter_passes_every_client_fixture() {
    assert!(
        python_with_websockets(),
        "python3 with the websockets package is required: pip install websockets==17.4"
    );
    let adapter = repo().join("examples/adapters/python/adapter.py");
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(repo().join("fixtures/client"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 10, "the fixture library is missing");
    let mut failed = Vec::new();
    for f in &fixtures {
        let mut cmd = runwire();
        cmd.arg("mock")
            .arg("-q")
            .arg("--fixture")
            .arg(f)
            .arg("--")
            .arg("python3")
            .arg(&adapter);
        let out = output(cmd).await;
        if out.status.code() != Some(0) {
            failed.push(format!(
                "{}: exit {:?}\n{}",
                f.display(),
                out.status.code(),
                String::from_utf8_lossy(&out.stdout)
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} fixtures failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
