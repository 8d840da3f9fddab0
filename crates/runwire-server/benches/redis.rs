//! Redis scale-out benchmarks: fan-out through Redis with two server
//! nodes versus one node on the embedded SQLite store (same workloads as the server
//! benchmarks), and ingest events/s into Redis.
//!
//! Run with `bench/redis/run.sh`, or
//! `cargo bench -p runwire-server --bench redis -- fanout|latency|ingest` (needs
//! `redis-server` on the PATH). Every server node runs in its own child process (this
//! binary re-executed with `child STORE`), each with its own private redis-server
//! (appendonly yes, appendfsync always unless noted) started here.
//!
//! `RUNWIRE_BENCH_KINDS=sqlite,redis2,cluster2` picks the fan-out configurations
//! (`cluster2`: two nodes on a private three-master Redis Cluster; not run unless
//! named), `RUNWIRE_BENCH_SUBS=1000` the subscriber counts, `RUNWIRE_BENCH_ROUNDS=3`
//! the runs of each (the best counts). `latency` takes the same `KINDS`,
//! `RUNWIRE_BENCH_LATENCY_SECONDS=10` and `RUNWIRE_BENCH_LATENCY_BATCH=10,100` (events
//! per request).
//! `RUNWIRE_BENCH_NODE_WORKERS=1` gives each Redis-backed node one tokio worker thread
//! (default 2; the SQLite node keeps 2), so two nodes share the two cores one each.

#![allow(missing_docs, clippy::print_stdout, clippy::disallowed_types)]

mod support;

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
use support::*;

fn main() {
    let args = bench_args();
    if args.first().map(String::as_str) == Some("child") {
        return child(&args[1..]);
    }
    let which = args.first().cloned().unwrap_or_else(|| "all".into());
    let rt = runtime();
    rt.block_on(async {
        if which == "all" || which == "fanout" {
            fanout().await;
        }
        if which == "all" || which == "latency" {
            latency().await;
        }
        if which == "all" || which == "watched" {
            watched().await;
        }
        if which == "all" || which == "ingest" {
            ingest().await;
        }
    });
}

/// A server node: `child STORE [KEY=VALUE…]`, prints its address, runs until stdin
/// closes.
fn child(args: &[String]) {
    // RUNWIRE_BENCH_NODE_WORKERS=1 gives each Redis node one worker thread, so that
    // two nodes on the two cores have one core each (the single node keeps two).
    let workers = std::env::var("RUNWIRE_BENCH_NODE_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .filter(|_| !args.first().is_some_and(|s| s.starts_with("sqlite:")))
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = args.first().cloned().expect("store");
        serve_child(&store, &args[1..]).await;
    });
}

fn node(store: &str) -> Proc {
    spawn(&self_exe(), &["child", store])
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn redis(fsync: &str) -> Redis {
    redis_with(fsync, &[])
}

/// A private Redis Cluster of `masters` masters (slots assigned by hand, evenly), and
/// its store URL.
fn cluster(masters: u16) -> (Vec<Redis>, String) {
    let nodes: Vec<(Redis, String)> = (0..masters)
        .map(|_| {
            let bus = free_port().to_string();
            let r = redis_with(
                "always",
                &["--cluster-enabled", "yes", "--cluster-port", &bus],
            );
            (r, bus)
        })
        .collect();
    let cli = |port: u16, args: &[&str]| {
        let ok = Command::new("redis-cli")
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .stdout(Stdio::piped())
            .output()
            .expect("redis-cli is needed: apt-get install -y redis-tools");
        String::from_utf8_lossy(&ok.stdout).into_owned()
    };
    let per = 16_384 / masters;
    for ((n, _), i) in nodes.iter().zip(0..) {
        let first = i * per;
        let last = if i + 1 == masters {
            16_383
        } else {
            first + per - 1
        };
        cli(
            n.port,
            &[
                "cluster",
                "addslotsrange",
                &first.to_string(),
                &last.to_string(),
            ],
        );
    }
    for (n, bus) in &nodes[1..] {
        cli(
            nodes[0].0.port,
            &["cluster", "meet", "127.0.0.1", &n.port.to_string(), bus],
        );
    }
    let nodes: Vec<Redis> = nodes.into_iter().map(|(r, _)| r).collect();
    for n in &nodes {
        let t0 = Instant::now();
        loop {
            let info = cli(n.port, &["cluster", "info"]);
            if info.contains("cluster_state:ok")
                && info.contains(&format!("cluster_known_nodes:{masters}\r"))
            {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "cluster forms");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let hosts: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let url = format!("redis-cluster://{}", hosts.join(","));
    (nodes, url)
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn redis_with(fsync: &str, extra: &[&str]) -> Redis {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
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
        .args(extra)
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

/// The servers of one configuration: `sqlite`, one node on the embedded store (in
/// `dir`); `redis2`, two nodes on one private Redis; `cluster2`, two nodes on a
/// private three-master Redis Cluster. The Redis processes live as long as the first
/// value.
fn deployment(kind: &str, dir: &std::path::Path) -> (Vec<Redis>, Vec<Proc>) {
    match kind {
        "sqlite" => {
            let db = dir.join("bench.db");
            (Vec::new(), vec![node(&format!("sqlite:{}", db.display()))])
        }
        "redis2" => {
            let r = redis("always");
            let url = format!("redis://127.0.0.1:{}", r.port);
            let nodes = vec![node(&url), node(&url)];
            (vec![r], nodes)
        }
        "cluster2" => {
            let (rs, url) = cluster(3);
            let nodes = vec![node(&url), node(&url)];
            (rs, nodes)
        }
        // One Redis run as a one-master cluster: the cluster's live feed (doorbells).
        "onemaster2" => {
            let (rs, url) = cluster(1);
            let nodes = vec![node(&url), node(&url)];
            (rs, nodes)
        }
        other => panic!("unknown kind {other} (sqlite, redis2, cluster2, onemaster2)"),
    }
}

fn label(kind: &str) -> &'static str {
    match kind {
        "sqlite" => "1 node, sqlite",
        "redis2" => "2 nodes, redis",
        "onemaster2" => "2 nodes, 1-master cl.",
        _ => "2 nodes, cluster",
    }
}

/// CPU time (user + system) process `pid` has used so far, in ms (`/proc/PID/stat`
/// fields 14 and 15, in clock ticks of 10 ms: `USER_HZ` is 100 on Linux).
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) * 10
}

/// One fan-out round: its rate and where the CPU went, from the first append to
/// the last subscriber's last event.
#[derive(Clone, Copy, Default)]
struct Round {
    /// Delivered events per second.
    rate: f64,
    /// Deliveries made.
    deliveries: u64,
    /// CPU ms of the server nodes, of Redis, and of this process (the load
    /// generator).
    nodes_ms: u64,
    redis_ms: u64,
    load_ms: u64,
    /// Wall-clock ms.
    wall_ms: u64,
}

/// One fan-out run. `redis2`: two nodes on one Redis, subscribers split over both,
/// producer on the first; `sqlite`: one node on the embedded store.
async fn fanout_once(kind: &str, subs: usize, n: u64) -> Round {
    let dir = tempfile::tempdir().expect("tmp");
    let (redis, nodes) = deployment(kind, dir.path());
    let cpu = || {
        (
            nodes.iter().map(|p| cpu_ms(p.child.id())).sum::<u64>(),
            redis.iter().map(|r| cpu_ms(r.child.id())).sum::<u64>(),
            cpu_ms(std::process::id()),
        )
    };
    let addrs: Vec<String> = nodes.iter().map(|p| p.addr.clone()).collect();
    let http = http_client();
    let urls: Vec<String> = addrs
        .iter()
        .map(|a| format!("ws://{a}/v1/stream"))
        .collect();
    let done = subscribers(&urls, subs, n, Some("bench-run")).await;
    let before = cpu();
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
    let after = cpu();
    let end = ends.into_iter().max().expect("some");
    let deliveries = subs as u64 * n;
    Round {
        rate: deliveries as f64 / end.duration_since(t0).as_secs_f64(),
        deliveries,
        nodes_ms: after.0.saturating_sub(before.0),
        redis_ms: after.1.saturating_sub(before.1),
        load_ms: after.2.saturating_sub(before.2),
        wall_ms: end.duration_since(t0).as_millis() as u64,
    }
}

async fn fanout() {
    let kinds = env_list("RUNWIRE_BENCH_KINDS", "sqlite,redis2");
    let subs_wanted = env_list("RUNWIRE_BENCH_SUBS", "100,1000");
    let rounds: usize = std::env::var("RUNWIRE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    println!("## fanout: delivered events per second (best of {rounds} runs)");
    for (subs, n) in [(100usize, 10_000u64), (1000, 2_000)] {
        if !subs_wanted.contains(&subs.to_string()) {
            continue;
        }
        println!("\n{subs} subscribers x {n} events");
        let mut results = Vec::new();
        for kind in &kinds {
            let mut runs = Vec::new();
            for _ in 0..rounds {
                runs.push(fanout_once(kind, subs, n).await);
            }
            let best = runs.iter().map(|r| r.rate).fold(0.0f64, f64::max);
            let label = label(kind);
            let all: Vec<String> = runs.iter().map(|r| fmt_rate(r.rate)).collect();
            println!("  {label:16} {} (runs: {})", fmt_rate(best), all.join(", "));
            // Where the CPU went, over all rounds: ms per million deliveries.
            let sum = runs.iter().fold(Round::default(), |a, r| Round {
                deliveries: a.deliveries + r.deliveries,
                nodes_ms: a.nodes_ms + r.nodes_ms,
                redis_ms: a.redis_ms + r.redis_ms,
                load_ms: a.load_ms + r.load_ms,
                wall_ms: a.wall_ms + r.wall_ms,
                ..a
            });
            let per = |ms: u64| ms as f64 * 1e6 / sum.deliveries as f64;
            println!(
                "  {:16} CPU ms per million deliveries: server nodes {:.0}, redis {:.0}, load generator {:.0}; wall {:.0} (x2 cores = {:.0})",
                "",
                per(sum.nodes_ms),
                per(sum.redis_ms),
                per(sum.load_ms),
                per(sum.wall_ms),
                2.0 * per(sum.wall_ms)
            );
            results.push((kind.clone(), best));
        }
        if let Some((_, base)) = results.iter().find(|(k, _)| k == "sqlite") {
            for (k, r) in results.iter().filter(|(k, _)| k != "sqlite") {
                println!("  ratio {k} / 1 node sqlite: {:.2}x", r / base);
            }
        }
    }
}

/// Publish-to-deliver latency across nodes: 100 subscribers, all on the last node,
/// and a producer appending 10,000 events/s on the first, so with two nodes every
/// event reaches its subscribers through Redis. The one-node SQLite figure is the
/// baseline.
async fn latency() {
    let seconds: u64 = std::env::var("RUNWIRE_BENCH_LATENCY_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let kinds = env_list("RUNWIRE_BENCH_KINDS", "sqlite,redis2");
    let batches = env_list("RUNWIRE_BENCH_LATENCY_BATCH", "10,100");
    println!(
        "\n## publish-to-deliver latency, 100 subscribers on node B, producer on node A, 10,000 events/s for {seconds} s, default configuration"
    );
    for batch in &batches {
        let batch: u64 = batch.parse().expect("RUNWIRE_BENCH_LATENCY_BATCH: numbers");
        println!(
            "\n{batch} events per request, a request every {} ms",
            batch as f64 / 10.0
        );
        for kind in &kinds {
            let dir = tempfile::tempdir().expect("tmp");
            let (redis, nodes) = deployment(kind, dir.path());
            let last = nodes.last().expect("a node");
            let url = format!("ws://{}/v1/stream", last.addr);
            let redis_cpu = || redis.iter().map(|r| cpu_ms(r.child.id())).sum::<u64>();
            let before = redis_cpu();
            let s =
                latency_samples(&[url], &nodes[0].addr, "lat", 100, (10_000, batch, seconds)).await;
            let requests = s.acked.len() as f64;
            println!(
                "  {:16} sent to delivered:     {}",
                label(kind),
                fmt_latency(&s.deliver)
            );
            println!(
                "  {:16} sent to acknowledged:  {}",
                "",
                fmt_latency(&s.acked)
            );
            println!(
                "  {:16} acknowledged to delivered: {}",
                "",
                fmt_latency(&s.after_ack)
            );
            if !redis.is_empty() {
                // Everything Redis did for the run: the append scripts, fsyncs, and the
                // other node's reads of the events.
                println!(
                    "  {:16} Redis CPU: {:.0} µs per append request of {batch} events",
                    "",
                    (redis_cpu() - before) as f64 * 1e3 / requests
                );
            }
        }
    }
}

/// Many watched runs on one node: node B holds `RUNWIRE_BENCH_WATCHED` (13,000)
/// subscriptions, 100 per connection, one per run, and a producer appends
/// `RUNWIRE_BENCH_WATCHED_RATE` (1,000) single-event requests/s on node A, each to a
/// run drawn at random (seeded), for `RUNWIRE_BENCH_LATENCY_SECONDS` (10). On one plain
/// Redis node B's reader names every watched stream in each `XREAD BLOCK`; on a
/// cluster (also of one master) it follows doorbells. Reports sent→delivered and the
/// append's round trip, and the CPU share of Redis and of node B.
async fn watched() {
    let watched: usize = env_num("RUNWIRE_BENCH_WATCHED", 13_000);
    let rate: u64 = env_num("RUNWIRE_BENCH_WATCHED_RATE", 1_000);
    let seconds: u64 = env_num("RUNWIRE_BENCH_LATENCY_SECONDS", 10);
    let seed: u64 = env_num("RUNWIRE_BENCH_SEED", 7);
    let kinds = env_list("RUNWIRE_BENCH_KINDS", "redis2,onemaster2");
    println!(
        "\n## {watched} watched runs on node B, {rate} single-event appends/s on node A to runs drawn at random (seed {seed}), {seconds} s"
    );
    for kind in &kinds {
        let dir = tempfile::tempdir().expect("tmp");
        let (redis, nodes) = deployment(kind, dir.path());
        let url = format!("ws://{}/v1/stream", nodes[1].addr);
        let origin = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let mut readers = Vec::new();
        for c in 0..watched.div_ceil(100) {
            let runs: Vec<String> = (c * 100..((c + 1) * 100).min(watched))
                .map(|i| format!("w-{i}"))
                .collect();
            let mut ws = ws_connect(&url).await;
            let subs: Vec<serde_json::Value> = runs
                .iter()
                .map(|r| serde_json::json!({"run_id": r}))
                .collect();
            ws.send(tokio_tungstenite::tungstenite::Message::text(
                serde_json::json!({"type": "hello", "versions": ["1.0"], "subscriptions": subs})
                    .to_string(),
            ))
            .await
            .expect("hello");
            let mut confirmed = 0;
            while confirmed < runs.len() {
                let m = ws.next().await.expect("frame").expect("ok");
                let t = m.to_text().expect("text");
                confirmed += t.matches("\"subscribed\"").count() + t.matches("\"reset\"").count();
            }
            let tx = tx.clone();
            readers.push(tokio::spawn(async move {
                while let Some(Ok(m)) = ws.next().await {
                    let Ok(t) = m.to_text() else { continue };
                    if t.starts_with("{\"type\":\"ping\"") {
                        let v: serde_json::Value = serde_json::from_str(t).expect("ping");
                        let pong = serde_json::json!({"type": "pong", "id": v["id"]});
                        let _ = ws
                            .send(tokio_tungstenite::tungstenite::Message::text(
                                pong.to_string(),
                            ))
                            .await;
                        continue;
                    }
                    let now = origin.elapsed().as_micros() as u64;
                    for part in t.split("\"current\":").skip(1) {
                        let digits: String =
                            part.chars().take_while(char::is_ascii_digit).collect();
                        if let Ok(sent) = digits.parse::<u64>() {
                            let _ = tx.send(now.saturating_sub(sent) as u32);
                        }
                    }
                }
            }));
        }
        drop(tx);
        let redis_cpu = || redis.iter().map(|r| cpu_ms(r.child.id())).sum::<u64>();
        let (redis0, node0, t0) = (redis_cpu(), cpu_ms(nodes[1].child.id()), Instant::now());
        let http = http_client();
        let inflight = Arc::new(tokio::sync::Semaphore::new(16));
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        // A small deterministic generator (xorshift), so the runs drawn repeat.
        let mut x = seed.max(1);
        let n = rate * seconds;
        let mut posts = Vec::new();
        for _ in 0..n {
            tick.tick().await;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let run = format!("w-{}", x % watched as u64);
            let permit = Arc::clone(&inflight).acquire_owned().await.expect("sem");
            let now = origin.elapsed().as_micros() as u64;
            let body = serde_json::json!({"events": [{"type": "run.progress", "data": {"current": now, "message": "tick"}}]});
            let (http, addr) = (http.clone(), nodes[0].addr.clone());
            posts.push(tokio::spawn(async move {
                post(&http, &addr, &run, &body).await;
                drop(permit);
                (origin.elapsed().as_micros() as u64).saturating_sub(now) as u32
            }));
        }
        let mut acks = Vec::with_capacity(posts.len());
        for p in posts {
            acks.push(p.await.expect("post"));
        }
        let mut got = Vec::with_capacity(n as usize);
        while (got.len() as u64) < n {
            match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
                Ok(Some(d)) => got.push(d),
                _ => break,
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let share = |ms: u64| ms as f64 / 1e3 / secs * 100.0;
        got.sort_unstable();
        acks.sort_unstable();
        println!(
            "  {:22} sent to delivered:    {}",
            label(kind),
            fmt_latency(&got)
        );
        println!("  {:22} sent to acknowledged: {}", "", fmt_latency(&acks));
        println!(
            "  {:22} CPU: Redis {:.0} % of a core, node B {:.0} %; {} of {n} events delivered",
            "",
            share(redis_cpu() - redis0),
            share(cpu_ms(nodes[1].child.id()) - node0),
            got.len()
        );
        for r in readers {
            r.abort();
        }
    }
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
            let http = http_client();
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
