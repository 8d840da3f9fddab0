//! Redis scale-out benchmarks of issue 8: fan-out through Redis with two server
//! nodes versus one node on the embedded SQLite store (same workloads as the server
//! benchmarks), and ingest events/s into Redis.
//!
//! Run with `bench/redis/run.sh`, or
//! `cargo bench -p runwire-server --bench redis -- fanout|ingest` (needs
//! `redis-server` on the PATH). Every server node runs in its own child process (this
//! binary re-executed with `child STORE`), each with its own private redis-server
//! (appendonly yes, appendfsync always unless noted) started here.

#![allow(missing_docs, clippy::print_stdout, clippy::disallowed_types)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("child") {
        return child(&args[1..]);
    }
    let which = args.first().cloned().unwrap_or_else(|| "all".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if which == "all" || which == "fanout" {
            fanout().await;
        }
        if which == "all" || which == "ingest" {
            ingest().await;
        }
    });
}

/// A server node: `child STORE [KEY=VALUE…]`, prints its address, runs until stdin
/// closes.
fn child(args: &[String]) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = args.first().cloned().expect("store");
        let mut config = runwire_server::ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..Default::default()
        };
        for kv in &args[1..] {
            let (k, v) = kv.split_once('=').expect("KEY=VALUE");
            config.set(k, v).expect("setting");
        }
        let store = runwire_server::open_store(&store, &config).expect("store");
        let server = runwire_server::Server::bind(config, store)
            .await
            .expect("bind");
        println!("{}", server.local_addr());
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
        server.shutdown().await;
    });
}

struct Proc {
    child: Child,
    addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(store: &str) -> Proc {
    let exe = std::env::current_exe().expect("exe");
    let mut child = Command::new(exe)
        .args(["child", store])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn node");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address");
    Proc {
        child,
        addr: line.trim().to_owned(),
    }
}

/// A private redis-server on a free port in a temporary directory.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis(fsync: &str) -> Redis {
    let dir = tempfile::tempdir().expect("tmp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", fsync])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is needed: apt-get install -y redis-server");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if l.contains("Ready to accept connections")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("redis-server ready");
    Redis {
        child,
        port,
        _dir: dir,
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(url: &str) -> Ws {
    let mut last = None;
    for _ in 0..50 {
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => return ws,
            Err(e) => last = Some(e),
        }
        tokio::task::yield_now().await;
    }
    panic!("cannot connect to {url}: {last:?}");
}

/// Events in an `event` or `batch` frame.
fn count_events(t: &str) -> u64 {
    if t.starts_with("{\"type\":\"event\"") {
        1
    } else if t.starts_with("{\"type\":\"batch\"") {
        t.matches("\"event_id\":").count() as u64
    } else {
        0
    }
}

/// `subs` subscribers of `run`, spread round-robin over `addrs`; resolves to the
/// instant each received the `n`-th event.
async fn subscribers(
    addrs: &[String],
    run: &str,
    subs: usize,
    n: u64,
) -> tokio::task::JoinHandle<Vec<Instant>> {
    let ready = Arc::new(Barrier::new(subs + 1));
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::with_capacity(subs);
    for i in 0..subs {
        let url = format!("ws://{}/v1/stream", addrs[i % addrs.len()]);
        let (ready, sem, run) = (Arc::clone(&ready), Arc::clone(&sem), run.to_owned());
        tasks.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.expect("sem");
            let mut ws = ws_connect(&url).await;
            let hello =
                json!({"type": "hello", "versions": ["1.0"], "subscriptions": [{"run_id": run}]});
            ws.send(Message::text(hello.to_string()))
                .await
                .expect("hello");
            let mut subscribed = false;
            while !subscribed {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => subscribed = t.contains("\"subscribed\""),
                    other => panic!("no subscribed: {other:?}"),
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

fn progress_events(from: u64, n: u64) -> Value {
    let evs: Vec<Value> = (from..from + n)
        .map(|i| json!({"type": "run.progress", "data": {"percent": 42.5, "step": "Compiling crate 17 of 40", "current": i, "total": 40, "message": "building"}}))
        .collect();
    json!({ "events": evs })
}

async fn post(http: &reqwest::Client, addr: &str, run: &str, body: &Value) {
    let r = http
        .post(format!("http://{addr}/v1/runs/{run}/events"))
        .json(body)
        .send()
        .await
        .expect("post");
    assert!(r.status().is_success(), "append failed: {}", r.status());
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else {
        format!("{:.0} k/s", r / 1e3)
    }
}

/// One fan-out run: delivered events per second. `redis2`: two nodes on one
/// Redis, subscribers split over both, producer on the first; `sqlite`: one node on
/// the embedded store.
async fn fanout_once(kind: &str, subs: usize, n: u64) -> f64 {
    let dir = tempfile::tempdir().expect("tmp");
    let (_redis, nodes) = match kind {
        "sqlite" => {
            let db = dir.path().join("fanout.db");
            (None, vec![node(&format!("sqlite:{}", db.display()))])
        }
        "redis2" => {
            let r = redis("always");
            let url = format!("redis://127.0.0.1:{}", r.port);
            let nodes = vec![node(&url), node(&url)];
            (Some(r), nodes)
        }
        _ => unreachable!(),
    };
    let addrs: Vec<String> = nodes.iter().map(|p| p.addr.clone()).collect();
    let http = reqwest::Client::new();
    let done = subscribers(&addrs, "bench-run", subs, n).await;
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < n {
        let k = (n - sent).min(1000);
        post(&http, &addrs[0], "bench-run", &progress_events(sent, k)).await;
        sent += k;
    }
    let ends = tokio::time::timeout(Duration::from_secs(600), done)
        .await
        .expect("fan-out finishes")
        .expect("subscribers");
    let end = ends.into_iter().max().expect("some");
    (subs as u64 * n) as f64 / end.duration_since(t0).as_secs_f64()
}

async fn fanout() {
    println!("## fanout: delivered events per second (best of 3 runs)");
    for (subs, n) in [(100usize, 10_000u64), (1000, 2_000)] {
        println!("\n{subs} subscribers x {n} events");
        let mut results = Vec::new();
        for kind in ["sqlite", "redis2"] {
            let mut best = 0.0f64;
            for _ in 0..3 {
                best = best.max(fanout_once(kind, subs, n).await);
            }
            let label = match kind {
                "sqlite" => "1 node, sqlite",
                _ => "2 nodes, redis",
            };
            println!("  {label:16} {}", fmt_rate(best));
            results.push(best);
        }
        println!(
            "  ratio 2 nodes redis / 1 node sqlite: {:.2}x",
            results[1] / results[0]
        );
    }
}

async fn ingest() {
    println!(
        "\n## ingest: acknowledged events per second, 100,000 events, batched producers over HTTP"
    );
    for (label, nodes_n, fsync) in [
        (
            "baseline: 1 node, embedded sqlite (synchronous=full)",
            1usize,
            "sqlite",
        ),
        ("1 node, redis appendfsync always", 1, "always"),
        ("2 nodes, redis appendfsync always", 2, "always"),
        ("2 nodes, redis appendfsync everysec", 2, "everysec"),
    ] {
        println!("\n{label}");
        for (producers, batch) in [(4usize, 100u64), (4, 1000), (16, 100)] {
            let dir = tempfile::tempdir().expect("tmp");
            let (_redis, url) = if fsync == "sqlite" {
                (
                    None,
                    format!("sqlite:{}", dir.path().join("ingest.db").display()),
                )
            } else {
                let r = redis(fsync);
                let url = format!("redis://127.0.0.1:{}", r.port);
                (Some(r), url)
            };
            let nodes: Vec<Proc> = (0..nodes_n).map(|_| node(&url)).collect();
            let http = reqwest::Client::new();
            let total = 100_000u64;
            let per = total / producers as u64;
            let counter = Arc::new(AtomicU64::new(0));
            let t0 = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..producers {
                let http = http.clone();
                let addr = nodes[w % nodes.len()].addr.clone();
                let counter = Arc::clone(&counter);
                tasks.push(tokio::spawn(async move {
                    let run = format!("ingest-{}", w % 4);
                    let mut sent = 0;
                    while sent < per {
                        let k = (per - sent).min(batch);
                        post(&http, &addr, &run, &progress_events(sent, k)).await;
                        sent += k;
                        counter.fetch_add(k, Ordering::Relaxed);
                    }
                }));
            }
            for t in tasks {
                t.await.expect("producer");
            }
            let secs = t0.elapsed().as_secs_f64();
            let done = counter.load(Ordering::Relaxed);
            println!(
                "  {producers:2} producers x {batch:4} events/request: {} acknowledged ({done} events in {secs:.2} s)",
                fmt_rate(done as f64 / secs)
            );
        }
    }
}
