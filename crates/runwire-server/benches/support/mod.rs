//! What the server and Redis benchmarks share: child server processes and the load
//! generator (WebSocket subscribers counting events, HTTP producers).

// Each bench binary uses only part of this module.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Instant,
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;

/// The bench's arguments, without the `--bench` cargo adds.
pub(crate) fn bench_args() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect()
}

/// An HTTP client (reqwest is built with rustls and no provider of its own, so ring is
/// made the process default first).
pub(crate) fn http_client() -> reqwest::Client {
    let _ = runwire_server::tls_provider().install_default();
    reqwest::Client::new()
}

/// The runtime of the load generator and of every child server: 2 worker threads,
/// one per core of the benchmark machine.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

// ---------------------------------------------------------------- child servers

/// A child process serving on `addr` (the first line it printed); killed on drop.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` (program and arguments, split on whitespace) with `args` and reads
/// the address it prints on its first line.
pub(crate) fn spawn(cmd: &str, args: &[&str]) -> Proc {
    let mut parts = cmd.split_whitespace();
    let prog = parts.next().expect("program");
    let mut child = Command::new(prog)
        .args(parts)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address line");
    Proc {
        child,
        addr: line.trim().to_owned(),
    }
}

/// This bench binary, to re-execute as a child server.
pub(crate) fn self_exe() -> String {
    std::env::current_exe().expect("exe").display().to_string()
}

/// Runs the reference server on `store` with `KEY=VALUE` settings in this (child)
/// process: prints its address, serves until stdin closes, then shuts down.
pub(crate) async fn serve_child(store: &str, settings: &[String]) {
    let mut config = runwire_server::ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..Default::default()
    };
    for kv in settings {
        let (k, v) = kv.split_once('=').expect("KEY=VALUE");
        config.set(k, v).expect("setting");
    }
    let store = runwire_server::open_store(store, &config).expect("store");
    let server = runwire_server::Server::bind(config, store)
        .await
        .expect("bind");
    println!("{}", server.local_addr());
    wait_stdin_closed().await;
    server.shutdown().await;
}

/// Resolves when the parent closes this process's stdin (or dies).
pub(crate) async fn wait_stdin_closed() {
    tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        while std::io::stdin()
            .read_line(&mut s)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            s.clear();
        }
    })
    .await
    .expect("stdin");
}

/// A temporary SQLite path (removed first).
pub(crate) fn temp_db(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("runwire-bench-{tag}-{}.db", std::process::id()));
    remove_db(&p);
    p
}

/// Removes a SQLite database with its WAL and shared-memory files.
pub(crate) fn remove_db(p: &std::path::Path) {
    let _ = std::fs::remove_file(p);
    let _ = std::fs::remove_file(p.with_extension("db-wal"));
    let _ = std::fs::remove_file(p.with_extension("db-shm"));
}

// ---------------------------------------------------------------- load generator

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects, retrying while the server is still starting.
pub(crate) async fn ws_connect(url: &str) -> Ws {
    let mut last = None;
    for _ in 0..50 {
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => return ws,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("cannot connect to {url}: {last:?}");
}

/// Counts events in a frame without parsing it: every event carries one `"seq":`.
pub(crate) fn count_events(t: &str) -> u64 {
    memchr::memmem::find_iter(t.as_bytes(), b"\"seq\":").count() as u64
}

/// Says `hello` with one subscription and waits for `subscribed`.
pub(crate) async fn runwire_subscribe(ws: &mut Ws, run: &str, after: Option<u64>) {
    let mut sub = json!({"run_id": run});
    if let Some(a) = after {
        sub["after_seq"] = json!(a);
    }
    ws.send(Message::text(
        json!({"type": "hello", "versions": ["1.0"], "subscriptions": [sub]}).to_string(),
    ))
    .await
    .expect("hello");
    loop {
        let m = ws.next().await.expect("frame").expect("ok");
        if m.to_text().expect("text").contains("\"subscribed\"") {
            break;
        }
    }
}

/// Connects `subs` subscribers, round-robin over `urls`; each counts events until
/// `n`, answering pings, then reports its finish time. A runwire subscriber
/// subscribes to `runwire_run`; without it, the comparison servers' protocol (send
/// `sub`, read one frame). Returns once all are subscribed, with a handle to await
/// the finish times.
pub(crate) async fn subscribers(
    urls: &[String],
    subs: usize,
    n: u64,
    runwire_run: Option<&str>,
) -> tokio::task::JoinHandle<Vec<Instant>> {
    let ready = Arc::new(Barrier::new(subs + 1));
    let mut tasks = Vec::with_capacity(subs);
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..subs {
        let url = urls[i % urls.len()].clone();
        let ready = Arc::clone(&ready);
        let run = runwire_run.map(str::to_owned);
        let sem = Arc::clone(&sem);
        tasks.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.expect("sem");
            let mut ws = ws_connect(&url).await;
            match &run {
                Some(run) => runwire_subscribe(&mut ws, run, None).await,
                None => {
                    ws.send(Message::text("sub")).await.expect("sub");
                    let _ = ws.next().await;
                }
            }
            drop(permit);
            ready.wait().await;
            let mut got = 0;
            while got < n {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        if t.as_str().starts_with("{\"type\":\"ping\"") {
                            let v: Value = serde_json::from_str(&t).expect("ping");
                            let pong = json!({"type": "pong", "id": v["id"]});
                            let _ = ws.send(Message::text(pong.to_string())).await;
                            continue;
                        }
                        got += count_events(&t);
                    }
                    Some(Ok(_)) => {}
                    other => panic!("subscriber lost its connection at {got}/{n}: {other:?}"),
                }
            }
            Instant::now()
        }));
    }
    ready.wait().await;
    tokio::spawn(async move {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("subscriber"));
        }
        out
    })
}

/// An append body of `n` ~250-byte progress events.
pub(crate) fn progress_events(from: u64, n: u64) -> Value {
    let evs: Vec<Value> = (from..from + n)
        .map(|i| json!({"type": "run.progress", "data": {"percent": 42.5, "step": "Compiling crate 17 of 40", "current": i, "total": 40, "message": "building"}}))
        .collect();
    json!({ "events": evs })
}

/// Appends `body` to `run`; panics unless the answer is a success.
pub(crate) async fn post(http: &reqwest::Client, addr: &str, run: &str, body: &Value) {
    let r = http
        .post(format!("http://{addr}/v1/runs/{run}/events"))
        .json(body)
        .send()
        .await
        .expect("post");
    assert!(r.status().is_success(), "append failed: {}", r.status());
}

/// The samples of one latency run, each sorted, in µs.
pub(crate) struct Latency {
    /// From just before an event's append request was sent to a subscriber reading
    /// the frame that carries it.
    pub(crate) deliver: Vec<u32>,
    /// Append requests, sent to acknowledged.
    pub(crate) acked: Vec<u32>,
    /// From the producer reading an append's acknowledgement to a subscriber reading
    /// one of its events (0 when the event came first): what delivery adds once the
    /// append is durable.
    pub(crate) after_ack: Vec<u32>,
}

/// Publish-to-deliver latency: `subs` subscribers (round-robin over `urls`) watch
/// `run` while one producer appends `rate` events/s to it on `producer` for
/// `seconds`, `batch` events per request (one request every `batch * 1000 / rate`
/// ms, up to 16 in flight). Each event's `data.current` carries the time, in µs, just
/// before its request was sent, which also names the request.
pub(crate) async fn latency_samples(
    urls: &[String],
    producer: &str,
    run: &str,
    subs: usize,
    (rate, batch, seconds): (u64, u64, u64),
) -> Latency {
    let n = rate * seconds;
    let origin = Instant::now();
    // (request sent, delivered after), per event and subscriber.
    let samples = Arc::new(std::sync::Mutex::new(Vec::<(u64, u32)>::with_capacity(
        (n as usize) * subs,
    )));
    let ready = Arc::new(Barrier::new(subs + 1));
    let mut tasks = Vec::new();
    for i in 0..subs {
        let url = urls[i % urls.len()].clone();
        let (ready, samples, run) = (Arc::clone(&ready), Arc::clone(&samples), run.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut ws = ws_connect(&url).await;
            runwire_subscribe(&mut ws, &run, None).await;
            ready.wait().await;
            let mut local = Vec::with_capacity(n as usize);
            let mut got = 0;
            while got < n {
                let Some(Ok(Message::Text(t))) = ws.next().await else {
                    panic!("subscriber lost its connection at {got}/{n}")
                };
                let now = origin.elapsed().as_micros() as u64;
                for part in t.as_str().split("\"current\":").skip(1) {
                    let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
                    if let Ok(sent) = digits.parse::<u64>() {
                        local.push((sent, now.saturating_sub(sent) as u32));
                        got += 1;
                    }
                }
            }
            samples.lock().expect("lock").extend(local);
        }));
    }
    ready.wait().await;
    let http = http_client();
    let inflight = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tick =
        tokio::time::interval(std::time::Duration::from_micros(batch * 1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0;
    let mut posts = Vec::new();
    while sent < n {
        tick.tick().await;
        let permit = Arc::clone(&inflight).acquire_owned().await.expect("sem");
        let now = origin.elapsed().as_micros() as u64;
        let k = batch.min(n - sent);
        let evs: Vec<Value> = (0..k)
            .map(|_| json!({"type": "run.progress", "data": {"current": now, "message": "tick"}}))
            .collect();
        let body = json!({ "events": evs });
        let (http, addr, run) = (http.clone(), producer.to_owned(), run.to_owned());
        posts.push(tokio::spawn(async move {
            post(&http, &addr, &run, &body).await;
            drop(permit);
            (
                now,
                (origin.elapsed().as_micros() as u64).saturating_sub(now),
            )
        }));
        sent += k;
    }
    let mut acks = std::collections::HashMap::with_capacity(posts.len());
    for p in posts {
        let (sent, took) = p.await.expect("post");
        acks.insert(sent, took);
    }
    for t in tasks {
        t.await.expect("subscriber");
    }
    let samples = std::mem::take(&mut *samples.lock().expect("lock"));
    let sorted = |mut v: Vec<u32>| {
        v.sort_unstable();
        v
    };
    let after_ack = samples
        .iter()
        .map(|(sent, d)| {
            (u64::from(*d)).saturating_sub(acks.get(sent).copied().unwrap_or(0)) as u32
        })
        .collect();
    Latency {
        deliver: sorted(samples.into_iter().map(|(_, d)| d).collect()),
        acked: sorted(acks.into_values().map(|t| t as u32).collect()),
        after_ack: sorted(after_ack),
    }
}

/// `p50 … p99 … p99.9 … max …` of sorted µs samples, in ms.
pub(crate) fn fmt_latency(s: &[u32]) -> String {
    let q = |p: f64| s[((s.len() as f64 * p) as usize).min(s.len() - 1)] as f64 / 1000.0;
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
        q(0.50),
        q(0.99),
        q(0.999),
        q(1.0),
        s.len()
    )
}

/// `1.23 M/s` or `456 k/s`.
pub(crate) fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else {
        format!("{:.0} k/s", r / 1e3)
    }
}
