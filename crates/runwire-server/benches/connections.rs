//! Connections per node: many subscribed WebSocket connections held open on one
//! reference server, heartbeats flowing (every connection answers every `ping`).
//! Reports the server's RSS per connection, the CPU its heartbeats cost, and
//! publish→deliver p50/p99 for runs watched by 1, 100 and 10,000 of those connections.
//!
//! `cargo bench -p runwire-server --bench connections -- [CONNECTIONS] [HEARTBEAT_MS]`
//! (defaults: 100,000, or as many as the open-file limit allows, and 1,000 ms).
//!
//! Both this process (the clients) and the child server hold one descriptor per
//! connection, so both need `ulimit -n` above the count (docs/server.md, "Many
//! connections on one node"); where the limit is lower, the count is capped to fit and
//! the cap is printed. The clients connect from several loopback source addresses
//! (127.0.0.2, 127.0.0.3, …; one per 20,000 connections), so that the 28,000
//! ephemeral ports of one address toward the server's one port do not run out.

#![allow(missing_docs, clippy::print_stdout, clippy::disallowed_types)]

mod support;

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{net::TcpSocket, sync::watch};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

use support::*;

/// The fan-out widths measured: subscribers of one run.
const WIDTHS: [usize; 3] = [1, 100, 10_000];
/// Events published to each measured run.
const EVENTS: u64 = 50;
/// Connections per loopback source address.
const PER_SOURCE: usize = 20_000;
/// Descriptors kept free for everything else (listener, HTTP, runtime, stdio).
const SPARE_FDS: u64 = 500;

fn main() {
    let args = bench_args();
    if args.first().map(String::as_str) == Some("child") {
        let rt = runtime();
        let settings = args[1..].to_vec();
        return rt.block_on(serve_child("memory", &settings));
    }
    let wanted: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let heartbeat_ms: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    runtime().block_on(run(wanted, heartbeat_ms));
}

/// The soft open-file limit of this process (`/proc/self/limits`).
fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Resident set size of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    proc_field(pid, "status", "VmRSS:").unwrap_or(0)
}

fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time (user + system) `pid` has used, in clock ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

struct Shared {
    origin: Instant,
    /// Publish→deliver samples in µs, one list per measured width.
    samples: Vec<Mutex<Vec<u32>>>,
    pings: AtomicU64,
    connected: AtomicU64,
    lost: AtomicU64,
}

async fn run(wanted: usize, heartbeat_ms: u64) {
    let limit = open_file_limit().unwrap_or(1024);
    let fit = usize::try_from(limit.saturating_sub(SPARE_FDS)).unwrap_or(usize::MAX);
    let conns = wanted.min(fit);
    println!(
        "\n## {conns} subscribed connections on one server (memory store), heartbeat every {heartbeat_ms} ms"
    );
    if conns < wanted {
        println!(
            "   capped from {wanted}: the open-file limit here is {limit} (ulimit -n), and both \
             this process and the server hold one descriptor per connection"
        );
    }
    let widest = WIDTHS
        .iter()
        .copied()
        .filter(|w| *w <= conns.saturating_sub(101))
        .max()
        .unwrap_or(1);
    let widths: Vec<usize> = WIDTHS.iter().copied().filter(|w| *w <= widest).collect();
    let measured: usize = widths.iter().sum();

    let max = (conns + 100).to_string();
    let proc = spawn(
        &self_exe(),
        &[
            "child",
            &format!("heartbeat_interval_ms={heartbeat_ms}"),
            &format!("max_connections={max}"),
            "max_pre_hello_per_address=0",
        ],
    );
    let pid = proc.child.id();
    let server: SocketAddr = proc.addr.parse().expect("server address");
    let url = format!("ws://{}/v1/stream", proc.addr);
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        samples: widths.iter().map(|_| Mutex::new(Vec::new())).collect(),
        pings: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        lost: AtomicU64::new(0),
    });
    let (stop_tx, stop) = watch::channel(false);

    // Warm up, so that one-time allocations of the server are not counted.
    let mut tasks = Vec::with_capacity(conns);
    for i in 0..10 {
        tasks.push(tokio::spawn(hold(
            server,
            url.clone(),
            source(i),
            format!("idle-{i}"),
            None,
            Arc::clone(&shared),
            stop.clone(),
            None,
        )));
    }
    wait_connected(&shared, 10).await;
    let before = rss_kib(pid);
    let started = Instant::now();
    // The measured runs first (width index w), then idle runs of 100 subscribers each.
    let mut plan: Vec<(String, Option<usize>)> = Vec::with_capacity(conns);
    for (w, width) in widths.iter().enumerate() {
        for _ in 0..*width {
            plan.push((format!("width-{width}"), Some(w)));
        }
    }
    for i in measured..conns.saturating_sub(10) {
        plan.push((format!("idle-{}", i / 100), None));
    }
    let opening = Arc::new(tokio::sync::Semaphore::new(200));
    for (i, (run, w)) in plan.into_iter().enumerate() {
        // At most 200 handshakes at a time; a permit is released once subscribed.
        let permit = Arc::clone(&opening).acquire_owned().await.expect("semaphore");
        tasks.push(tokio::spawn(hold(
            server,
            url.clone(),
            source(i + 10),
            run,
            w,
            Arc::clone(&shared),
            stop.clone(),
            Some(permit),
        )));
    }
    wait_connected(&shared, conns as u64).await;
    let opened = started.elapsed();
    let after = rss_kib(pid);
    let held = conns - 10;
    let per = after.saturating_sub(before) as f64 / held as f64;
    println!(
        "  opened and subscribed {held} connections in {:.1} s ({:.0}/s)",
        opened.as_secs_f64(),
        held as f64 / opened.as_secs_f64()
    );
    println!(
        "  server RSS before {before} KiB, after {after} KiB: {per:.2} KiB per subscribed connection"
    );

    // Heartbeats: the server's CPU over an idle window of 10 intervals (at least 10 s).
    let window = Duration::from_millis((heartbeat_ms * 10).max(10_000));
    let (t0, p0) = (cpu_ticks(pid), shared.pings.load(Ordering::Relaxed));
    tokio::time::sleep(window).await;
    let (t1, p1) = (cpu_ticks(pid), shared.pings.load(Ordering::Relaxed));
    let cpu_s = (t1 - t0) as f64 / 100.0;
    let pings = p1 - p0;
    println!(
        "  heartbeats, idle: {pings} pings answered in {:.0} s ({:.0}/s); server CPU {:.1} % of one core, {:.1} µs per ping and pong",
        window.as_secs_f64(),
        pings as f64 / window.as_secs_f64(),
        100.0 * cpu_s / window.as_secs_f64(),
        if pings > 0 { cpu_s * 1e6 / pings as f64 } else { 0.0 },
    );

    // Publish→deliver per fan-out width, with every other connection held and pinged.
    let http = http_client();
    for (w, width) in widths.iter().enumerate() {
        let run = format!("width-{width}");
        for _ in 0..EVENTS {
            let now = shared.origin.elapsed().as_micros() as u64;
            let body = json!({"events": [{"type": "run.progress", "data": {"current": now, "message": "tick"}}]});
            post(&http, &proc.addr, &run, &body).await;
            // A bench's pacing, not a synchronization: one event every 20 ms.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let want = width * EVENTS as usize;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = shared.samples[w].lock().expect("samples").len();
            if got >= want || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut s = std::mem::take(&mut *shared.samples[w].lock().expect("samples"));
        s.sort_unstable();
        if s.is_empty() {
            println!("  width {width:>6}: nothing delivered");
            continue;
        }
        let q = |p: f64| s[((s.len() as f64 * p) as usize).min(s.len() - 1)] as f64 / 1000.0;
        println!(
            "  width {width:>6}: publish→deliver p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} of {want} deliveries)",
            q(0.50),
            q(0.99),
            q(1.0),
            s.len()
        );
    }
    println!(
        "  connections lost during the run: {}",
        shared.lost.load(Ordering::Relaxed)
    );
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    drop(proc);
}

/// The loopback source address of connection `i`.
fn source(i: usize) -> Ipv4Addr {
    let k = u8::try_from(2 + i / PER_SOURCE).unwrap_or(u8::MAX);
    Ipv4Addr::new(127, 0, 0, k)
}

async fn wait_connected(shared: &Shared, n: u64) {
    while shared.connected.load(Ordering::Relaxed) + shared.lost.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens one connection from `src`, subscribes to `run`, then answers every ping and,
/// for a measured run (`width` = its index), records each event's publish→deliver
/// time, until `stop`.
#[allow(clippy::too_many_arguments)]
async fn hold(
    server: SocketAddr,
    url: String,
    src: Ipv4Addr,
    run: String,
    width: Option<usize>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let opened = open(server, &url, src, &run).await;
    drop(permit);
    let mut ws = match opened {
        Ok(ws) => ws,
        Err(e) => {
            if shared.lost.fetch_add(1, Ordering::Relaxed) == 0 {
                println!("  a connection failed: {e}");
            }
            return;
        }
    };
    shared.connected.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let t = t.as_str();
                    if t.starts_with("{\"type\":\"ping\"") {
                        let v: Value = serde_json::from_str(t).expect("ping");
                        let pong = json!({"type": "pong", "id": v["id"]}).to_string();
                        if ws.send(Message::text(pong)).await.is_err() {
                            break;
                        }
                        shared.pings.fetch_add(1, Ordering::Relaxed);
                    } else if let Some(w) = width {
                        let now = shared.origin.elapsed().as_micros() as u64;
                        let mut local = Vec::new();
                        for part in t.split("\"current\":").skip(1) {
                            let digits: String =
                                part.chars().take_while(char::is_ascii_digit).collect();
                            if let Ok(sent) = digits.parse::<u64>() {
                                local.push(u32::try_from(now.saturating_sub(sent)).unwrap_or(u32::MAX));
                            }
                        }
                        shared.samples[w].lock().expect("samples").extend(local);
                    }
                }
                Some(Ok(_)) => {}
                _ => {
                    shared.lost.fetch_add(1, Ordering::Relaxed);
                    shared.connected.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
            },
            _ = stop.changed() => break,
        }
    }
    let _ = ws.close(None).await;
}

async fn open(
    server: SocketAddr,
    url: &str,
    src: Ipv4Addr,
    run: &str,
) -> Result<WebSocketStream<tokio::net::TcpStream>, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::new(src.into(), 0))
        .map_err(|e| format!("bind {src}: {e}"))?;
    let tcp = socket
        .connect(server)
        .await
        .map_err(|e| format!("connect from {src}: {e}"))?;
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let hello = json!({"type": "hello", "versions": ["1.0"], "subscriptions": [{"run_id": run}]});
    ws.send(Message::text(hello.to_string()))
        .await
        .map_err(|e| format!("hello: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str().contains("\"subscribed\"") => return Ok(ws),
            Some(Ok(_)) => {}
            other => return Err(format!("before subscribed: {other:?}")),
        }
    }
}
