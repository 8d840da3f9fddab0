//! `runwire serve` and `runwire publish` end to end, including the crash test: the
//! server on SQLite is SIGKILLed while producers append and a client streams; after a
//! restart every acknowledged event is there, seq is gapless, retries are
//! exactly-once, and the client resumes without loss or duplicate (`RW-INGEST-3`,
//! `RW-SHUTDOWN-3`, `RW-RESUME-1`).

use std::{
    collections::BTreeMap,
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::watch,
};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(30);

pub(crate) struct Served {
    pub(crate) child: Child,
    pub(crate) addr: String,
}

/// Starts `runwire serve` and reads the bound address from its first stdout line.
pub(crate) async fn serve(store: &str, extra: &[&str]) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--store", store])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn runwire serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("serve starts in time")
        .expect("read")
        .expect("a first line");
    let addr = first
        .strip_prefix("runwire serve listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Served { child, addr }
}

async fn history(http: &reqwest::Client, addr: &str, run: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let v: Value = http
            .get(format!(
                "http://{addr}/v1/runs/{run}/events?after_seq={after}&limit=10000"
            ))
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("json");
        let evs = v["events"].as_array().expect("events").clone();
        if let Some(last) = evs.last() {
            after = last["seq"].as_u64().expect("seq");
        }
        out.extend(evs);
        if v["has_more"] != json!(true) {
            return out;
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: &str, run: &str, cursor: Option<(&str, u64)>) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/stream"))
        .await
        .expect("ws connect");
    let sub = match cursor {
        Some((epoch, after)) => json!({"run_id": run, "epoch": epoch, "after_seq": after}),
        None => json!({"run_id": run}),
    };
    ws.send(Message::text(
        json!({"type": "hello", "versions": ["1.0"], "subscriptions": [sub]}).to_string(),
    ))
    .await
    .expect("hello");
    let mut welcome = false;
    loop {
        let v = next_json(&mut ws).await.expect("frame");
        match v["type"].as_str() {
            Some("welcome") => welcome = true,
            Some("subscribed") => {
                assert!(welcome);
                return (ws, v);
            }
            other => panic!("unexpected {other:?}: {v}"),
        }
    }
}

/// The next JSON frame, answering pings; `None` when the connection ends.
async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("json frame");
                if v["type"] == "ping" {
                    let _ = ws
                        .send(Message::text(
                            json!({"type": "pong", "id": v["id"]}).to_string(),
                        ))
                        .await;
                    continue;
                }
                return Some(v);
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
            Some(Ok(_)) => {}
        }
    }
}

fn frame_events(v: &Value) -> Vec<Value> {
    match v["type"].as_str() {
        Some("event") => vec![v["event"].clone()],
        Some("batch") => v["events"].as_array().expect("events").clone(),
        _ => Vec::new(),
    }
}

/// Key → (seq, event_id) of every acknowledged event.
type Acks = Arc<Mutex<BTreeMap<String, (u64, String)>>>;

/// One producer: appends requests of `per_request` keyed events until stopped or the
/// server dies; records every acknowledged event.
async fn producer(
    http: reqwest::Client,
    addr: String,
    run: String,
    worker: usize,
    per_request: usize,
    acks: Acks,
    progress: watch::Sender<usize>,
) -> Vec<Vec<Value>> {
    let mut unacked = Vec::new();
    for req in 0.. {
        let events: Vec<Value> = (0..per_request)
            .map(|i| json!({"type": "log.line", "data": {"level": "info", "message": format!("w{worker} r{req} e{i}")}, "idempotency_key": format!("w{worker}-r{req}-e{i}")}))
            .collect();
        let body = json!({ "events": events });
        let resp = http
            .post(format!("http://{addr}/v1/runs/{run}/events"))
            .json(&body)
            .send()
            .await;
        let ok = match resp {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
            _ => None,
        };
        match ok {
            Some(v) => {
                let mut a = acks.lock().expect("lock");
                for (e, got) in events.iter().zip(v["events"].as_array().expect("events")) {
                    a.insert(
                        e["idempotency_key"].as_str().expect("key").to_owned(),
                        (
                            got["seq"].as_u64().expect("seq"),
                            got["event_id"].as_str().expect("id").to_owned(),
                        ),
                    );
                }
                let n = a.len();
                drop(a);
                progress.send_modify(|v| *v = (*v).max(n));
            }
            None => {
                // The server died with this request in flight: it may or may not have
                // been committed. The producer retries it after the restart.
                unacked.push(events);
                return unacked;
            }
        }
    }
    unacked
}

async fn crash_round(dir: &Path, kill_after: usize, per_request: usize, batch_window_ms: u64) {
    let db = dir.join(format!("crash-{kill_after}-{per_request}.db"));
    let store = format!("sqlite:{}", db.display());
    let run = "crashy";
    // reqwest is built with rustls and no provider of its own.
    runwire_client::tls::install_default_provider();
    let http = reqwest::Client::new();
    let window = format!("batch_window_ms={batch_window_ms}");
    let mut server = serve(&store, &["--set", &window]).await;

    // A client streams the run while producers append.
    let (mut ws, sub) = connect(&server.addr, run, None).await;
    let epoch = sub["epoch"].as_str().expect("epoch").to_owned();
    let streamed: Arc<Mutex<Vec<Value>>> = Arc::default();
    let s2 = Arc::clone(&streamed);
    let reader = tokio::spawn(async move {
        while let Some(v) = next_json(&mut ws).await {
            s2.lock().expect("lock").extend(frame_events(&v));
        }
    });

    let acks: Acks = Arc::default();
    let (tx, mut rx) = watch::channel(0usize);
    let mut producers = Vec::new();
    for w in 0..4 {
        producers.push(tokio::spawn(producer(
            http.clone(),
            server.addr.clone(),
            run.to_owned(),
            w,
            per_request,
            Arc::clone(&acks),
            tx.clone(),
        )));
    }
    // Crash point: SIGKILL once `kill_after` events are acknowledged, mid-stream.
    tokio::time::timeout(WAIT, rx.wait_for(|n| *n >= kill_after))
        .await
        .expect("producers make progress")
        .expect("watch");
    server.child.start_kill().expect("SIGKILL");
    let status = server.child.wait().await.expect("wait");
    assert!(!status.success(), "killed, not exited: {status:?}");
    let mut retries = Vec::new();
    for p in producers {
        retries.extend(p.await.expect("producer"));
    }
    reader.await.expect("reader");
    let acked = acks.lock().expect("lock").clone();
    assert!(acked.len() >= kill_after);

    // Restart on the same file.
    let server = serve(&store, &[]).await;
    let log = history(&http, &server.addr, run).await;
    let seqs: Vec<u64> = log
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "gapless after restart"
    );
    let by_seq: BTreeMap<u64, &Value> = log
        .iter()
        .map(|e| (e["seq"].as_u64().expect("seq"), e))
        .collect();
    for (key, (seq, id)) in &acked {
        let e = by_seq
            .get(seq)
            .unwrap_or_else(|| panic!("acknowledged {key} at seq {seq} is lost"));
        assert_eq!(e["event_id"].as_str(), Some(id.as_str()), "{key}");
    }

    // The client resumes from its cursor: no loss, no duplicate.
    let seen = streamed.lock().expect("lock").clone();
    for (i, e) in seen.iter().enumerate() {
        assert_eq!(
            e["seq"].as_u64(),
            Some(i as u64 + 1),
            "streamed in order before the crash"
        );
        assert_eq!(&log[i], e, "what was streamed is what is stored");
    }
    let cursor = seen.len() as u64;
    eprintln!(
        "  acknowledged {}, stored {}, streamed before the crash {}, requests in flight {}",
        acked.len(),
        log.len(),
        cursor,
        retries.len()
    );
    let (mut ws, sub) = connect(&server.addr, run, Some((&epoch, cursor))).await;
    assert_eq!(
        sub["epoch"].as_str(),
        Some(epoch.as_str()),
        "the epoch survives the restart"
    );
    assert_eq!(sub["after_seq"].as_u64(), Some(cursor));

    // Producers retry what was in flight, with the same keys: exactly once.
    for events in retries {
        let r = http
            .post(format!("http://{}/v1/runs/{run}/events", server.addr))
            .json(&json!({ "events": events }))
            .send()
            .await
            .expect("retry");
        assert_eq!(r.status().as_u16(), 200);
    }
    let log = history(&http, &server.addr, run).await;
    let mut keys = BTreeMap::new();
    for e in &log {
        let msg = e["data"]["message"].as_str().expect("message").to_owned();
        assert!(
            keys.insert(msg.clone(), ()).is_none(),
            "{msg} appended twice"
        );
    }
    let head = log.len() as u64;
    let mut next = cursor + 1;
    while next <= head {
        let v = next_json(&mut ws).await.expect("resumed stream");
        for e in frame_events(&v) {
            assert_eq!(
                e["seq"].as_u64(),
                Some(next),
                "no gap, no duplicate after resume"
            );
            assert_eq!(e, log[(next - 1) as usize]);
            next += 1;
        }
    }
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_sigkill_at_several_points_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tmp");
    for (kill_after, per_request, window) in
        [(1, 1, 0), (40, 1, 0), (300, 10, 20), (2000, 100, 200)]
    {
        eprintln!(
            "crash point: after {kill_after} acknowledged events, {per_request} per request, batch window {window} ms"
        );
        crash_round(dir.path(), kill_after, per_request, window).await;
    }
}

#[tokio::test]
async fn serve_and_publish_end_to_end() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = format!("sqlite:{}", dir.path().join("e2e.db").display());
    let server = serve(&store, &["--set", "batch_window_ms=0"]).await;
    let (mut ws, sub) = connect(&server.addr, "demo", None).await;
    assert_eq!(sub["head_seq"], 0);
    let url = format!("http://{}", server.addr);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runwire"))
        .args([
            "publish",
            "--url",
            &url,
            "demo",
            "--type",
            "run.progress",
            "--data",
            r#"{"percent": 40, "step": "build"}"#,
        ])
        .output()
        .expect("publish");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("seq 1..=1"));
    let file = dir.path().join("events.jsonl");
    std::fs::write(
        &file,
        "{\"type\":\"log.line\",\"data\":{\"level\":\"info\",\"message\":\"hello\"}}\n\n{\"type\":\"run.status\",\"data\":{\"status\":\"completed\"},\"idempotency_key\":\"done\"}\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runwire"))
        .args(["publish", "--url", &url, "demo", "--file"])
        .arg(&file)
        .output()
        .expect("publish file");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut types = Vec::new();
    while types.len() < 3 {
        let v = next_json(&mut ws).await.expect("events");
        types.extend(
            frame_events(&v)
                .iter()
                .map(|e| e["type"].as_str().expect("type").to_owned()),
        );
    }
    assert_eq!(types, ["run.progress", "log.line", "run.status"]);

    // Errors name the file, the line and the pointer.
    std::fs::write(
        &file,
        "{\"type\":\"run.progress\",\"data\":{\"percent\":400}}\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runwire"))
        .args(["publish", "--url", &url, "demo", "--file"])
        .arg(&file)
        .output()
        .expect("publish bad");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("events.jsonl:1") && err.contains("/data/percent"),
        "{err}"
    );
    // The run is terminal: the server's error is shown.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runwire"))
        .args([
            "publish",
            "--url",
            &url,
            "demo",
            "--type",
            "log.line",
            "--data",
            r#"{"level":"info","message":"late"}"#,
        ])
        .output()
        .expect("publish late");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run_terminal"));
}

#[tokio::test]
async fn serve_sigterm_shuts_down_gracefully() {
    let mut server = serve(
        "memory",
        &[
            "--set",
            "shutdown_reconnect_spread_ms=100",
            "--set",
            "close_timeout_ms=500",
        ],
    )
    .await;
    let (mut ws, _) = connect(&server.addr, "r", None).await;
    let pid = server.child.id().expect("pid");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let v = next_json(&mut ws).await.expect("error frame");
    assert_eq!(v["code"], "server_shutdown");
    assert_eq!(v["close_code"], 4200);
    assert!(v["retry_after_ms"].as_u64().expect("retry_after_ms") <= 100);
    let exit = tokio::time::timeout(WAIT, server.child.wait())
        .await
        .expect("exits")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
}
