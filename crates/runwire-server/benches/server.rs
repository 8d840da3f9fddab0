//! Server benchmarks (fanout, latency, durable ingest, resume, memory).
//!
//! Run everything with `bench/server/run.sh` (it installs the Node and Python
//! comparison servers' dependencies), or one scenario with
//! `cargo bench -p runwire-server --bench server -- fanout|latency|ingest|resume|memory`
//! (`RUNWIRE_BENCH_KINDS=runwire,bare` limits the fanout to some servers).
//!
//! Every server under test runs in its own child process (this binary re-executed
//! with `child ...`, or node/python); the load generator (WebSocket subscribers and
//! HTTP producers) runs here, identical for every server.

#![allow(missing_docs, clippy::print_stdout, clippy::disallowed_types)]

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use support::*;

fn main() {
    let args = bench_args();
    if args.first().map(String::as_str) == Some("child") {
        return child(&args[1..]);
    }
    let which = args.first().cloned().unwrap_or_else(|| "all".into());
    let rt = runtime();
    rt.block_on(async {
        let all = which == "all";
        if all || which == "fanout" {
            fanout().await;
        }
        if all || which == "latency" {
            latency().await;
        }
        if all || which == "ingest" {
            ingest().await;
        }
        if all || which == "resume" {
            resume().await;
        }
        if all || which == "memory" {
            memory().await;
        }
    });
}

// ---------------------------------------------------------------- child servers

fn child(args: &[String]) {
    let rt = runtime();
    rt.block_on(async {
        match args.first().map(String::as_str) {
            Some("runwire") => {
                let store = args.get(1).cloned().unwrap_or_else(|| "memory".into());
                serve_child(&store, &args[2.min(args.len())..]).await;
            }
            Some("bare") => bare_broadcast().await,
            other => panic!("unknown child {other:?}"),
        }
    });
}

fn bench_frame(seq: u64) -> String {
    json!({
        "type": "event",
        "event": {
            "event_id": format!("0193b8a0-7c1e-7d2a-9f00-{seq:012}"),
            "run_id": "bench-run",
            "seq": seq,
            "type": "run.progress",
            "time": "2026-11-22T02:30:00.000Z",
            "data": {"percent": 42.5, "step": "Compiling crate 17 of 40", "current": 17, "total": 40, "message": "building"},
        }
    })
    .to_string()
}

/// The ceiling: a bare tokio-tungstenite broadcast loop, no log, no per-client state
/// beyond a broadcast receiver.
async fn bare_broadcast() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!("{}", listener.local_addr().expect("addr"));
    let (tx, _) = tokio::sync::broadcast::channel::<Arc<str>>(1 << 16);
    let tx = Arc::new(tx);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = Arc::clone(&tx);
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let (mut sink, mut stream) = ws.split();
                while let Some(Ok(Message::Text(t))) = stream.next().await {
                    if t.as_str() == "sub" {
                        let mut rx = tx.subscribe();
                        let _ = sink.send(Message::text("ok")).await;
                        tokio::spawn(async move {
                            while let Ok(f) = rx.recv().await {
                                if sink.feed(Message::text(&*f)).await.is_err() {
                                    return;
                                }
                                while let Ok(f) = rx.try_recv() {
                                    if sink.feed(Message::text(&*f)).await.is_err() {
                                        return;
                                    }
                                }
                                if sink.flush().await.is_err() {
                                    return;
                                }
                            }
                        });
                        return;
                    } else if let Some(n) = t.as_str().strip_prefix("burst ") {
                        let n: u64 = n.parse().expect("n");
                        for i in 1..=n {
                            let f: Arc<str> = Arc::from(bench_frame(i));
                            while tx.len() > (1 << 15) {
                                tokio::task::yield_now().await;
                            }
                            let _ = tx.send(f);
                        }
                    }
                }
            });
        }
    });
    wait_stdin_closed().await;
}

fn runwire(store: &str, settings: &[&str]) -> Proc {
    let exe = self_exe();
    let mut args = vec!["child", "runwire", store];
    args.extend_from_slice(settings);
    spawn(&exe, &args)
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

// ---------------------------------------------------------------- load generator

/// One fanout run: returns delivered events per second.
async fn fanout_once(kind: &str, subs: usize, n: u64) -> Option<f64> {
    let http = http_client();
    let db = temp_db("fanout");
    let proc = match kind {
        "runwire" => runwire("memory", &[]),
        "runwire-sqlite" => runwire(&format!("sqlite:{}", db.display()), &[]),
        "runwire-nobatch" => runwire("memory", &["batch_window_ms=0"]),
        "bare" => spawn(&self_exe(), &["child", "bare"]),
        "node" => spawn(&std::env::var("RUNWIRE_BENCH_NODE").ok()?, &[]),
        "python" => spawn(&std::env::var("RUNWIRE_BENCH_PYTHON").ok()?, &[]),
        _ => unreachable!(),
    };
    let is_runwire = kind.starts_with("runwire");
    let url = if is_runwire {
        format!("ws://{}/v1/stream", proc.addr)
    } else {
        format!("ws://{}/", proc.addr)
    };
    let done = subscribers(
        std::slice::from_ref(&url),
        subs,
        n,
        is_runwire.then_some("bench-run"),
    )
    .await;
    let t0 = Instant::now();
    let _ctl = if is_runwire {
        // The producer pipelines its requests (up to 4 in flight), as a real producer
        // with a steady stream of events does.
        let inflight = Arc::new(tokio::sync::Semaphore::new(4));
        let mut posts = Vec::new();
        let mut sent = 0;
        while sent < n {
            let k = (n - sent).min(1000);
            let permit = Arc::clone(&inflight).acquire_owned().await.expect("sem");
            let (http, addr, body) = (http.clone(), proc.addr.clone(), progress_events(sent, k));
            posts.push(tokio::spawn(async move {
                post(&http, &addr, "bench-run", &body).await;
                drop(permit);
            }));
            sent += k;
        }
        for p in posts {
            p.await.expect("post");
        }
        None
    } else {
        let mut ctl = ws_connect(&url).await;
        ctl.send(Message::text(format!("burst {n}")))
            .await
            .expect("burst");
        Some(ctl)
    };
    let ends = tokio::time::timeout(Duration::from_secs(600), done)
        .await
        .ok()?
        .ok()?;
    let end = ends.into_iter().max()?;
    let secs = end.duration_since(t0).as_secs_f64();
    drop(proc);
    remove_db(&db);
    Some((subs as u64 * n) as f64 / secs)
}

async fn fanout() {
    println!("## fanout: delivered events per second (best of 3 runs)");
    for (subs, n) in [(100usize, 10_000u64), (1000, 2_000)] {
        println!("\n{subs} subscribers x {n} events");
        let mut results = Vec::new();
        let only = std::env::var("RUNWIRE_BENCH_KINDS").unwrap_or_default();
        for kind in [
            "runwire",
            "runwire-sqlite",
            "runwire-nobatch",
            "bare",
            "node",
            "python",
        ] {
            if !only.is_empty() && !only.split(',').any(|k| k == kind) {
                continue;
            }
            let mut best: Option<f64> = None;
            for _ in 0..3 {
                if let Some(r) = fanout_once(kind, subs, n).await {
                    best = Some(best.map_or(r, |b: f64| b.max(r)));
                }
            }
            match best {
                Some(r) => {
                    println!("  {kind:16} {}", fmt_rate(r));
                    results.push((kind, r));
                }
                None => println!(
                    "  {kind:16} skipped (set RUNWIRE_BENCH_NODE / RUNWIRE_BENCH_PYTHON; use bench/server/run.sh)"
                ),
            }
        }
        let get = |k: &str| results.iter().find(|(n, _)| *n == k).map(|(_, r)| *r);
        for rw in ["runwire", "runwire-sqlite", "runwire-nobatch"] {
            let Some(r) = get(rw) else { continue };
            for other in ["bare", "node", "python"] {
                if let Some(o) = get(other) {
                    println!("  ratio {rw} / {other}: {:.2}x", r / o);
                }
            }
        }
    }
}

async fn latency() {
    println!(
        "\n## publish-to-deliver latency, 100 subscribers, 10,000 events/s (10 per request per ms), default batch window (200 ms, adaptive)"
    );
    // RUNWIRE_BENCH_LATENCY_SECONDS (default 10) sets the length of each run;
    // RUNWIRE_BENCH_LATENCY_EXTRA="name:key=value,key=value;..." adds SQLite variants.
    let seconds: u64 = std::env::var("RUNWIRE_BENCH_LATENCY_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut variants: Vec<(String, Vec<String>)> = vec![
        ("memory".into(), vec![]),
        ("sqlite".into(), vec![]),
        (
            "sqlite-normal".into(),
            vec!["sqlite.synchronous=normal".into()],
        ),
    ];
    if let Ok(extra) = std::env::var("RUNWIRE_BENCH_LATENCY_EXTRA") {
        for v in extra.split(';').filter(|v| !v.is_empty()) {
            let (name, sets) = v.split_once(':').unwrap_or((v, ""));
            let sets = sets.split(',').filter(|s| !s.is_empty()).map(str::to_owned);
            variants.push((name.to_owned(), sets.collect()));
        }
    }
    for (store, settings) in &variants {
        let path = temp_db("latency");
        let spec = if store == "memory" {
            "memory".to_owned()
        } else {
            format!("sqlite:{}", path.display())
        };
        let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
        let proc = runwire(&spec, &settings);
        let url = format!("ws://{}/v1/stream", proc.addr);
        let s = latency_samples(&[url], &proc.addr, "lat", 100, (10_000, 10, seconds)).await;
        println!("  store {store:13}: {}", fmt_latency(&s.deliver));
        drop(proc);
        remove_db(&path);
    }
}

async fn ingest() {
    println!(
        "\n## durable ingest into SQLite (synchronous=full, WAL, group commit), batched producers over HTTP"
    );
    println!(
        "   (WAL max: the largest WAL file seen, sampled every 5 ms; disk: pages in use after"
    );
    println!("   the run, per event and as a multiple of the encoded event)");
    // (producers, events per request, data padding: 0 = ~250-byte events, 800 = ~1 KiB)
    for (producers, batch, pad) in [
        (4usize, 100u64, 0usize),
        (4, 1000, 0),
        (16, 100, 0),
        (4, 100, 800),
    ] {
        let path = temp_db("ingest");
        let proc = runwire(&format!("sqlite:{}", path.display()), &[]);
        let http = http_client();
        let total = 200_000u64;
        let per = total / producers as u64;
        let counter = Arc::new(AtomicU64::new(0));
        let wal_path = std::path::PathBuf::from(format!("{}-wal", path.display()));
        let wal_max = Arc::new(AtomicU64::new(0));
        let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let (wal_max, sampling) = (Arc::clone(&wal_max), Arc::clone(&sampling));
            tokio::spawn(async move {
                while sampling.load(Ordering::Relaxed) {
                    let n = std::fs::metadata(&wal_path).map_or(0, |m| m.len());
                    wal_max.fetch_max(n, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..producers {
            let http = http.clone();
            let addr = proc.addr.clone();
            let counter = Arc::clone(&counter);
            tasks.push(tokio::spawn(async move {
                let run = format!("ingest-{}", w % 4);
                let mut sent = 0;
                while sent < per {
                    let k = (per - sent).min(batch);
                    let mut body = progress_events(sent, k);
                    if pad > 0 {
                        for e in body["events"].as_array_mut().expect("events") {
                            e["data"]["message"] = serde_json::json!("m".repeat(pad));
                        }
                    }
                    post(&http, &addr, &run, &body).await;
                    sent += k;
                    counter.fetch_add(k, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.expect("producer");
        }
        let secs = t0.elapsed().as_secs_f64();
        sampling.store(false, Ordering::Relaxed);
        let _ = sampler.await;
        let done = counter.load(Ordering::Relaxed);
        // The stored size: read one event back for its encoded length.
        let one: serde_json::Value = http
            .get(format!(
                "http://{}/v1/runs/ingest-0/events?limit=1",
                proc.addr
            ))
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("json");
        let encoded = one["events"][0].to_string().len() as f64;
        drop(proc);
        let conn = rusqlite::Connection::open(&path).expect("inspect");
        let q = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).expect(sql) as f64;
        let used = (q("PRAGMA page_count") - q("PRAGMA freelist_count")) * q("PRAGMA page_size");
        drop(conn);
        let per_event = used / done as f64;
        println!(
            "  {producers:2} producers x {batch:4} events/request, ~{encoded:.0}-byte events: {} acknowledged ({done} events in {secs:.2} s); WAL max {:.1} MiB; disk {per_event:.0} B/event = {:.2}x",
            fmt_rate(done as f64 / secs),
            wal_max.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0),
            per_event / encoded,
        );
        remove_db(&path);
    }
}

async fn resume() {
    println!("\n## resume: a client 100,000 events behind catches up (SQLite store)");
    let path = temp_db("resume");
    let proc = runwire(&format!("sqlite:{}", path.display()), &[]);
    let http = http_client();
    let n = 100_000u64;
    let mut sent = 0;
    while sent < n {
        post(&http, &proc.addr, "behind", &progress_events(sent, 1000)).await;
        sent += 1000;
    }
    for round in 0..3 {
        let url = format!("ws://{}/v1/stream", proc.addr);
        let mut ws = ws_connect(&url).await;
        let t0 = Instant::now();
        runwire_subscribe(&mut ws, "behind", Some(0)).await;
        let mut got = 0;
        while got < n {
            let Some(Ok(Message::Text(t))) = ws.next().await else {
                panic!("lost")
            };
            got += count_events(&t);
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "  round {round}: {n} events replayed in {secs:.3} s = {}",
            fmt_rate(n as f64 / secs)
        );
    }
    drop(proc);
    remove_db(&path);
}

async fn memory() {
    println!("\n## memory: 10,000 idle subscribed connections (server RSS delta)");
    // 10,000 connections plus the producer's: above the default max_connections
    // (RW-SEC-12), which is not what this measures.
    let proc = runwire(
        "memory",
        &["heartbeat_interval_ms=600000", "max_connections=20000"],
    );
    let url = format!("ws://{}/v1/stream", proc.addr);
    let pid = proc.child.id();
    // Warm up with a few connections, so one-time runtime allocations are not counted.
    let mut warm = Vec::new();
    for i in 0..10 {
        let mut ws = ws_connect(&url).await;
        runwire_subscribe(&mut ws, &format!("idle-{i}"), None).await;
        warm.push(ws);
    }
    let before = rss_kib(pid);
    let conns = 10_000usize;
    let sem = Arc::new(tokio::sync::Semaphore::new(100));
    let mut tasks = Vec::new();
    for i in 0..conns {
        let url = url.clone();
        let sem = Arc::clone(&sem);
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await.expect("sem");
            let mut ws = ws_connect(&url).await;
            runwire_subscribe(&mut ws, &format!("idle-{}", i % 100), None).await;
            ws
        }));
    }
    let mut held = Vec::with_capacity(conns);
    for t in tasks {
        held.push(t.await.expect("conn"));
    }
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 / conns as f64;
    println!(
        "  RSS before {before} KiB, after {after} KiB: {per:.1} KiB per idle subscribed connection"
    );
    drop(held);
    drop(warm);
    drop(proc);
}
