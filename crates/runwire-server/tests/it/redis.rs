//! The Redis Streams store: several server nodes on one Redis share one log per run
//! (`RW-EVENT-3`, `RW-INGEST-2`, `RW-INGEST-3`, `RW-RESUME-1`, `RW-RESUME-2`,
//! `RW-SNAP-5`). Every test starts its own `redis-server` on a free port in a
//! temporary directory and kills it at the end; without `redis-server` the tests fail.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, mpsc},
};

use runwire_protocol::{Event, LogLevel, LogLineData, RunId, ServerMessage, http::NewEvent};
use runwire_server::{
    EventStore, RunningServer, ServerConfig, StoreError, open_store, store::RedisStore,
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::watch};

use crate::common::*;

/// A private `redis-server` on a free loopback port, in a temporary directory.
pub(crate) struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    durable: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .expect("addr")
        .port()
}

impl Redis {
    /// Starts Redis; `durable` turns on `appendonly yes` + `appendfsync always`.
    pub(crate) fn start(durable: bool) -> Self {
        for _ in 0..5 {
            let mut r = Self {
                child: None,
                port: free_port(),
                dir: tempfile::tempdir().expect("temp dir"),
                durable,
            };
            if r.spawn() {
                return r;
            }
        }
        panic!("redis-server did not start on a free port after 5 attempts");
    }

    /// Spawns redis-server on `self.port` and waits for "Ready to accept
    /// connections"; false when it exited first (the port was taken).
    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", if self.durable { "yes" } else { "no" }])
            .args(["--appendfsync", "always", "--protected-mode", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed, and the Redis store tests need it: \
                 install it (Debian: apt-get install -y redis-server; CI's .ci/run does)"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        // Drains Redis's log for its whole life (a full pipe would block Redis).
        std::thread::spawn(move || {
            let mut ready = Some(tx);
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line.contains("Ready to accept connections")
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(WAIT) {
            Ok(()) => true,
            Err(_) => {
                self.kill();
                false
            }
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: Redis gets no chance to save anything beyond its AOF.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts Redis again on the same port and directory (its AOF is replayed).
    pub(crate) fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server restarts on port {}", self.port);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn store(redis: &Redis) -> Arc<RedisStore> {
    store_url(&redis.url())
}

fn store_url(url: &str) -> Arc<RedisStore> {
    Arc::new(
        RedisStore::open(url, ServerConfig::default().replay_window_events)
            .expect("redis store opens"),
    )
}

async fn node(redis: &Redis) -> RunningServer {
    start_with(config(), store(redis)).await
}

fn line(i: usize) -> NewEvent {
    NewEvent::new(LogLineData {
        level: LogLevel::Info,
        message: format!("line {i}"),
        source: None,
    })
}

fn lines(from: usize, n: usize, key: &str) -> Value {
    Value::Array(
        (from..from + n)
            .map(|i| {
                json!({"type": "log.line", "data": {"level": "info", "message": format!("line {i}")},
                       "idempotency_key": format!("{key}-{i}")})
            })
            .collect(),
    )
}

/// Connects, says hello with one subscription and expects `subscribed`.
async fn subscribe(server: &RunningServer, sub: Value) -> (Client, String, u64) {
    let mut c = Client::connect(server).await;
    c.hello(json!([sub])).await;
    match c.msg().await {
        ServerMessage::Subscribed(s) => (c, s.epoch.as_str().to_owned(), s.head_seq),
        other => panic!("expected subscribed, got {other:?}"),
    }
}

/// Events until the connection ends (a close or an abrupt end), an error or a reset.
async fn events_until_close(c: &mut Client, run: &RunId, out: &mut Vec<Event>) -> Frame {
    loop {
        match c.recv().await {
            Frame::Msg(ServerMessage::Event(f)) if &f.event.run_id == run => out.push(f.event),
            Frame::Msg(ServerMessage::Batch(b)) => {
                out.extend(b.events.into_iter().filter(|e| &e.run_id == run));
            }
            Frame::Msg(ServerMessage::Ping(p)) => {
                let _ = futures_util::SinkExt::send(
                    &mut c.ws,
                    tokio_tungstenite::tungstenite::Message::text(
                        json!({"type": "pong", "id": p.id}).to_string(),
                    ),
                )
                .await;
            }
            Frame::Msg(m @ (ServerMessage::Error(_) | ServerMessage::Reset(_))) => {
                return Frame::Msg(m);
            }
            Frame::Msg(_) => {}
            f @ Frame::Close(..) => return f,
        }
    }
}

fn assert_gapless(events: &[Event], from: u64, to: u64) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (from..=to).collect::<Vec<_>>(),
        "gapless, in order, no duplicate"
    );
}

#[tokio::test]
async fn rw_ingest_5_redis_store_contract_idempotency_terminal_snapshot() {
    let redis = Redis::start(false);
    let a = store(&redis);
    let b = store(&redis);
    let run = run("contract");
    assert!(a.run_info(&run).await.expect("info").is_none());
    let r = a
        .append(
            &run,
            (0..5).map(|i| line(i).with_key(format!("k{i}"))).collect(),
        )
        .await
        .expect("append");
    assert_eq!(
        (r.response.first_seq, r.response.last_seq, r.appended),
        (1, 5, 5)
    );
    // The other node sees the same log and epoch.
    let info = b.run_info(&run).await.expect("info").expect("exists");
    assert_eq!(
        (info.epoch.clone(), info.head_seq, info.terminal),
        (r.response.epoch.clone(), 5, false)
    );
    assert_eq!(
        b.open_run(&run).await.expect("open"),
        info,
        "open_run keeps the epoch"
    );
    // Idempotent retry through the other node: original assignments (RW-INGEST-5),
    // mixed with a new event.
    let d = b
        .append(&run, vec![line(3).with_key("k3"), line(9).with_key("k9")])
        .await
        .expect("retry");
    assert!(d.response.events[0].duplicate);
    assert_eq!(d.response.events[0].event_id, r.response.events[3].event_id);
    assert_eq!((d.response.events[1].seq, d.appended), (6, 1));
    // Conflict: nothing of the request is appended (RW-INGEST-6, RW-INGEST-8).
    let e = b
        .append(&run, vec![line(100), line(4).with_key("k0")])
        .await
        .expect_err("conflict");
    assert!(
        matches!(
            e,
            StoreError::IdempotencyConflict {
                index: 1,
                seq: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        a.run_info(&run).await.expect("info").expect("run").head_seq,
        6
    );
    // Terminal (RW-INGEST-10) after idempotency (RW-INGEST-11).
    let done: NewEvent = serde_json::from_value(
        json!({"type": "run.status", "data": {"status": "completed"}, "idempotency_key": "end"}),
    )
    .expect("event");
    let t = a
        .append(&run, vec![done.clone(), line(7)])
        .await
        .expect_err("after terminal");
    assert!(
        matches!(t, StoreError::RunTerminal { index: 1, .. }),
        "{t:?}"
    );
    assert_eq!(
        a.run_info(&run).await.expect("info").expect("run").head_seq,
        6,
        "all or none"
    );
    let t = a.append(&run, vec![done.clone()]).await.expect("terminal");
    assert_eq!(t.response.first_seq, 7);
    let again = b
        .append(&run, vec![done])
        .await
        .expect("retry of the terminal");
    assert!(again.response.events[0].duplicate);
    assert!(matches!(
        b.append(&run, vec![line(8)]).await,
        Err(StoreError::RunTerminal { index: 0, .. })
    ));
    // Reads and snapshots agree on both nodes (RW-SNAP-5).
    let evs = b.read(&run, 2, 7, 100).await.expect("read");
    assert_eq!(
        evs.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3, 4, 5, 6, 7]
    );
    let sa = a.snapshot(&run).await.expect("snap").expect("some");
    let sb = b.snapshot(&run).await.expect("snap").expect("some");
    assert_eq!(sa, sb);
    assert_eq!((sa.as_of_seq, sa.recent_logs.len()), (7, 6));
    assert!(sa.is_terminal());
    // Subscribing to an unknown run creates it with head 0 (RW-EVENT-11).
    let fresh = b
        .open_run(&crate::common::run("fresh"))
        .await
        .expect("open");
    assert_eq!(fresh.head_seq, 0);
    assert_eq!(
        a.open_run(&crate::common::run("fresh"))
            .await
            .expect("open")
            .epoch,
        fresh.epoch
    );
}

#[tokio::test]
async fn rw_resume_1_ingest_on_node_a_client_on_node_b_sees_every_event_in_order() {
    let redis = Redis::start(false);
    let (a, b) = (node(&redis).await, node(&redis).await);
    let run = run("fanout");
    let producer = Producer::new(&a);
    producer.ok("fanout", lines(0, 3, "p")).await;
    // A client on B subscribes from the start while A keeps appending.
    let (mut client, _, head) = subscribe(&b, json!({"run_id": "fanout"})).await;
    assert_eq!(head, 3);
    let feed = tokio::spawn(async move {
        for i in 0..20 {
            producer.ok("fanout", lines(3 + i * 10, 10, "p")).await;
        }
        producer
    });
    let got = client.events_until(&run, 0, 203).await;
    assert_gapless(&got, 1, 203);
    feed.await.expect("producer");
    assert!(
        client.sync("done").await.is_empty(),
        "nothing after the last event"
    );
    // A second client on B joins late and gets the same log.
    let (mut late, _, _) = subscribe(&b, json!({"run_id": "fanout", "after_seq": 100})).await;
    let again = late.events_until(&run, 100, 203).await;
    assert_eq!(
        again.last().map(|e| e.event_id.clone()),
        got.last().map(|e| e.event_id.clone())
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// A TCP proxy that can be cut, so that a node "dies" for its clients: their
/// connections end without a close frame.
async fn proxy(target: SocketAddr) -> (SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (cut, cut_rx) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let mut cut_rx = cut_rx.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut_rx.wait_for(|c| *c) => {
                                                // Dropping both sockets ends the connection without a close frame.
                    }
                }
            });
        }
    });
    (addr, cut)
}

#[tokio::test]
async fn rw_resume_1_client_resumes_on_node_b_after_node_a_dies_mid_stream() {
    let redis = Redis::start(false);
    let (a, b) = (node(&redis).await, node(&redis).await);
    let run = run("failover");
    let (via, cut) = proxy(a.local_addr()).await;
    // The client reaches A through the proxy.
    let mut client = {
        let stream = tokio::net::TcpStream::connect(via).await.expect("connect");
        let url = format!("ws://{via}{}", runwire_protocol::STREAM_PATH);
        let (ws, _) =
            tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
                .await
                .expect("upgrade");
        Client { ws }
    };
    client.hello(json!([{"run_id": "failover"}])).await;
    let epoch = match client.msg().await {
        ServerMessage::Subscribed(s) => s.epoch,
        other => panic!("expected subscribed, got {other:?}"),
    };
    // The producer appends through B, 400 events in 40 requests.
    let producer = Producer::new(&b);
    let feed = tokio::spawn(async move {
        for i in 0..40 {
            producer.ok("failover", lines(i * 10, 10, "f")).await;
        }
    });
    let mut got = client.events_until(&run, 0, 50).await;
    // Node A dies mid-stream.
    cut.send(true).expect("cut");
    let mut tail = Vec::new();
    let end = events_until_close(&mut client, &run, &mut tail).await;
    assert!(
        matches!(end, Frame::Close(None, _)),
        "abrupt end, got {end:?}"
    );
    got.extend(tail);
    a.shutdown().await;
    let cursor = got.last().map_or(0, |e| e.seq);
    assert_gapless(&got, 1, cursor);
    // Resume on B from the cursor: the rest, with no loss and no duplicate.
    let (mut client, e2, _) = subscribe(
        &b,
        json!({"run_id": "failover", "after_seq": cursor, "epoch": epoch.as_str()}),
    )
    .await;
    assert_eq!(e2, epoch.as_str());
    let rest = client.events_until(&run, cursor, 400).await;
    feed.await.expect("producer");
    got.extend(rest);
    assert_gapless(&got, 1, 400);
    let ids: BTreeSet<_> = got.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids.len(), 400, "400 distinct events");
    b.shutdown().await;
}

#[tokio::test]
async fn rw_ingest_2_concurrent_producers_on_both_nodes_make_one_gapless_sequence() {
    let redis = Redis::start(false);
    let (a, b) = (node(&redis).await, node(&redis).await);
    let run = run("contend");
    let (mut on_a, _, _) = subscribe(&a, json!({"run_id": "contend"})).await;
    let (mut on_b, _, _) = subscribe(&b, json!({"run_id": "contend"})).await;
    let mut tasks = Vec::new();
    for (n, server) in [&a, &b, &a, &b, &a, &b].into_iter().enumerate() {
        let producer = Producer::new(server);
        tasks.push(tokio::spawn(async move {
            let mut ranges = Vec::new();
            for i in 0..25 {
                let v = producer
                    .ok("contend", lines(i * 4, 4, &format!("w{n}")))
                    .await;
                let first = v["first_seq"].as_u64().expect("first");
                let last = v["last_seq"].as_u64().expect("last");
                assert_eq!(last - first, 3, "one request's events are consecutive");
                ranges.push((first, last));
            }
            ranges
        }));
    }
    let mut ranges = Vec::new();
    for t in tasks {
        ranges.extend(t.await.expect("producer"));
    }
    ranges.sort_unstable();
    let total = 6 * 25 * 4;
    let mut next = 1;
    for (first, last) in ranges {
        assert_eq!(first, next, "no gap and no repeat between requests");
        next = last + 1;
    }
    assert_eq!(next, total + 1);
    let ea = on_a.events_until(&run, 0, total).await;
    let eb = on_b.events_until(&run, 0, total).await;
    assert_gapless(&ea, 1, total);
    assert_eq!(
        ea.iter().map(|e| &e.event_id).collect::<Vec<_>>(),
        eb.iter().map(|e| &e.event_id).collect::<Vec<_>>(),
        "both nodes deliver the same log"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Appends one request with keys, retrying on 503 until it is acknowledged.
async fn append_until_ok(p: &Producer, run: &str, events: Value) -> Value {
    for _ in 0..2_000 {
        let (s, v) = p.append(run, events.clone()).await;
        match s {
            200 => return v,
            503 => {
                assert_eq!(v["error"]["code"], "store_unavailable", "{v}");
                assert_eq!(v["error"]["retryable"], true);
                tokio::task::yield_now().await;
            }
            other => panic!("append answered {other}: {v}"),
        }
    }
    panic!("the append was never acknowledged");
}

#[tokio::test]
async fn rw_ingest_3_redis_restart_mid_run_loses_no_acknowledged_event_and_clients_recover() {
    let mut redis = Redis::start(true);
    let (a, b) = (node(&redis).await, node(&redis).await);
    let run = run("restart");
    let producer = Producer::new(&a);
    let mut acked: Vec<(u64, String)> = Vec::new();
    let record = |v: &Value, acked: &mut Vec<(u64, String)>| {
        for e in v["events"].as_array().expect("events") {
            acked.push((
                e["seq"].as_u64().expect("seq"),
                e["event_id"].as_str().expect("id").to_owned(),
            ));
        }
    };
    let v = producer.ok("restart", lines(0, 20, "r")).await;
    record(&v, &mut acked);
    let (mut client, epoch, _) = subscribe(&b, json!({"run_id": "restart"})).await;
    let mut got = client.events_until(&run, 0, 20).await;

    redis.kill();
    // Ingest never acknowledges while Redis is gone (RW-INGEST-3).
    let (s, v) = producer.append("restart", lines(20, 5, "r")).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "store_unavailable");
    // The stream is told to reconnect: store_unavailable, close 4105.
    let mut tail = Vec::new();
    match events_until_close(&mut client, &run, &mut tail).await {
        Frame::Msg(ServerMessage::Error(e)) => {
            assert_eq!(e.code.as_str(), "store_unavailable", "{e:?}");
            assert_eq!(e.close_code, Some(4105));
            assert!(e.retryable);
        }
        other => panic!("expected a store_unavailable error, got {other:?}"),
    }
    assert!(tail.is_empty());
    // New subscriptions fail the same way while Redis is down.
    let mut c2 = Client::connect(&a).await;
    c2.hello(json!([{"run_id": "restart"}])).await;
    c2.expect_error_close("store_unavailable", 4105).await;

    redis.restart();
    // The producer retries the failed request with the same keys, then goes on.
    let v = append_until_ok(&producer, "restart", lines(20, 5, "r")).await;
    record(&v, &mut acked);
    let v = append_until_ok(&Producer::new(&b), "restart", lines(25, 5, "r")).await;
    record(&v, &mut acked);
    // The client resumes (on A this time) with its cursor: nothing lost, no duplicate.
    let cursor = got.last().map_or(0, |e| e.seq);
    let (mut client, e2, head) = subscribe(
        &a,
        json!({"run_id": "restart", "after_seq": cursor, "epoch": epoch}),
    )
    .await;
    assert_eq!(e2, epoch, "the log survived the restart (same epoch)");
    assert_eq!(head, 30);
    got.extend(client.events_until(&run, cursor, 30).await);
    assert_gapless(&got, 1, 30);
    // Every acknowledged event is in the log with its acknowledged id.
    for (seq, id) in &acked {
        assert_eq!(
            got[(*seq - 1) as usize].event_id.as_str(),
            id,
            "acked event {seq}"
        );
    }
    assert_eq!(acked.len(), 30);
    // Live delivery works again on both nodes.
    let (mut on_b, _, _) = subscribe(
        &b,
        json!({"run_id": "restart", "after_seq": 30, "epoch": epoch}),
    )
    .await;
    producer.ok("restart", lines(30, 2, "r")).await;
    client.events_until(&run, 30, 32).await;
    on_b.events_until(&run, 30, 32).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn rw_resume_5_trimmed_stream_resets_with_the_stored_snapshot() {
    let redis = Redis::start(false);
    // A small replay window: the stream keeps the window + 1000 events.
    let mut cfg = config();
    cfg.replay_window_events = 10;
    let url = format!("{}?snapshot_every=100", redis.url());
    let s = Arc::new(RedisStore::open(&url, 10).expect("store"));
    assert_eq!(s.options().retain_events, 1_010);
    let a = start_with(cfg.clone(), s).await;
    let b = start_with(cfg, Arc::new(RedisStore::open(&url, 10).expect("store"))).await;
    let producer = Producer::new(&a);
    for i in 0..3 {
        producer.ok("trim", lines(i * 1000, 1000, "t")).await;
    }
    // Folding the snapshot on B stores it and trims the stream to the retention
    // (never past the stored snapshot).
    let (s, v) = Producer::new(&b).get("/v1/runs/trim").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["as_of_seq"], 3000);
    let (s, h) = Producer::new(&a)
        .get("/v1/runs/trim/events?after_seq=1990&limit=5")
        .await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(
        h["events"][0]["seq"], 1991,
        "retained: the last 1010 events"
    );
    let (s, h) = Producer::new(&a)
        .get("/v1/runs/trim/events?after_seq=0&limit=5")
        .await;
    assert_ne!(
        s, 200,
        "trimmed events are an error, never a silent gap: {h}"
    );
    // A cursor outside the window gets a reset whose snapshot equals GET (RW-SNAP-5).
    let mut c = Client::connect(&b).await;
    c.hello(json!([{"run_id": "trim", "after_seq": 5}])).await;
    match c.msg().await {
        ServerMessage::Reset(r) => {
            assert_eq!(r.snapshot.as_of_seq, 3000);
            assert_eq!(serde_json::to_value(&r.snapshot).expect("json"), v);
        }
        other => panic!("expected reset, got {other:?}"),
    }
    // Events inside the window still replay.
    let (mut c, _, _) = subscribe(&a, json!({"run_id": "trim", "after_seq": 2995})).await;
    c.events_until(&run("trim"), 2995, 3000).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn redis_store_unreachable_at_start_is_a_clear_error() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let Err(e) = open_store(&url, &config()) else {
        panic!("nothing listens on {url}");
    };
    let text = e.to_string();
    assert!(text.contains(&url), "the message names the URL: {text}");
    assert!(text.contains("cannot connect"), "{text}");
    let Err(e) = open_store("redis://127.0.0.1:1?ttl_secs=soon", &config()) else {
        panic!("a bad option is an error");
    };
    assert!(e.to_string().contains("ttl_secs"), "{e}");
}

#[tokio::test]
async fn rw_resume_1_live_feed_survives_dropped_redis_connections_without_loss() {
    let redis = Redis::start(false);
    let (a, b) = (node(&redis).await, node(&redis).await);
    let run = run("reconnect");
    let (mut client, _, _) = subscribe(&b, json!({"run_id": "reconnect"})).await;
    let producer = Producer::new(&a);
    for i in 0..10 {
        append_until_ok(&producer, "reconnect", lines(i * 10, 10, "c")).await;
    }
    let mut got = client.events_until(&run, 0, 100).await;
    // Redis drops every connection of both nodes (their reader and command
    // connections); Redis itself stays up.
    let mut admin = redis::Client::open(redis.url())
        .expect("client")
        .get_connection()
        .expect("admin connection");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut admin)
        .expect("client kill");
    assert!(
        killed >= 3,
        "both command connections and the reader of B were dropped ({killed})"
    );
    // Appends on either node go on (a producer retries a 503 with its keys) and the
    // subscription on B gets every event, with no close and no duplicate.
    for i in 10..30 {
        let p = if i % 2 == 0 {
            &producer
        } else {
            &Producer::new(&b)
        };
        append_until_ok(p, "reconnect", lines(i * 10, 10, "c")).await;
    }
    got.extend(client.events_until(&run, 100, 300).await);
    assert_gapless(&got, 1, 300);
    assert!(client.sync("after").await.is_empty());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn rw_event_10_redis_restarted_without_its_data_gives_a_new_epoch_and_a_reset() {
    let mut redis = Redis::start(false); // no AOF: a restart loses everything
    let b = node(&redis).await;
    let run = run("amnesia");
    Producer::new(&b).ok("amnesia", lines(0, 5, "x")).await;
    let (mut client, epoch, _) = subscribe(&b, json!({"run_id": "amnesia"})).await;
    client.events_until(&run, 0, 5).await;
    redis.restart();
    // The node notices the log is gone. Either its reader reaches the new Redis at
    // once and finds the run's epoch gone: the open subscription gets a reset with
    // the new log's (empty) snapshot (RW-RESUME-13); or it fails to reach Redis
    // first: the subscription ends with store_unavailable and the resuming client is
    // reset (RW-EVENT-10, RW-RESUME-4). Never a silent gap.
    let mut tail = Vec::new();
    let new_epoch = match events_until_close(&mut client, &run, &mut tail).await {
        Frame::Msg(ServerMessage::Reset(r)) => {
            assert_eq!(r.reason, runwire_protocol::ResetReason::EpochMismatch);
            assert_ne!(r.epoch.as_str(), epoch);
            assert_eq!(r.snapshot.as_of_seq, 0);
            r.epoch.as_str().to_owned()
        }
        Frame::Msg(ServerMessage::Error(e)) => {
            assert_eq!(e.code.as_str(), "store_unavailable", "{e:?}");
            assert_eq!(e.close_code, Some(4105));
            let mut c = Client::connect(&b).await;
            c.hello(json!([{"run_id": "amnesia", "after_seq": 5, "epoch": epoch}]))
                .await;
            match c.msg().await {
                ServerMessage::Reset(r) => {
                    assert_eq!(r.reason, runwire_protocol::ResetReason::EpochMismatch);
                    assert_ne!(r.epoch.as_str(), epoch);
                    assert_eq!(r.snapshot.as_of_seq, 0);
                    client = c;
                    r.epoch.as_str().to_owned()
                }
                other => panic!("expected reset, got {other:?}"),
            }
        }
        other => panic!("expected a reset or a store_unavailable error, got {other:?}"),
    };
    assert!(tail.is_empty());
    // Either way the subscription continues on the new log.
    append_until_ok(&Producer::new(&b), "amnesia", lines(100, 3, "new")).await;
    let got = client.events_until(&run, 0, 3).await;
    assert_gapless(&got, 1, 3);
    assert!(got.iter().all(|e| e.seq <= 3));
    let (_, info) = Producer::new(&b).get("/v1/runs/amnesia").await;
    assert_eq!(info["epoch"], json!(new_epoch));
    b.shutdown().await;
}

/// The run's log is re-created while a client watches it (here: Redis loses every
/// key while it stays up, and another client opens the run again): the open
/// subscription gets a `reset` with the new epoch before any event of the new log,
/// then continues (RW-RESUME-13).
#[tokio::test]
async fn rw_resume_13_log_recreated_while_subscribed_resets_the_open_subscription() {
    let redis = Redis::start(false);
    let b = node(&redis).await;
    let run = run("phoenix");
    Producer::new(&b).ok("phoenix", lines(0, 4, "old")).await;
    let (mut client, epoch, _) = subscribe(&b, json!({"run_id": "phoenix"})).await;
    client.events_until(&run, 0, 4).await;
    let mut admin = redis::Client::open(redis.url())
        .expect("client")
        .get_connection()
        .expect("admin connection");
    let _: () = redis::cmd("FLUSHALL").query(&mut admin).expect("flushall");
    // A second client opens the run: a new log with a new epoch.
    let (_other, new_epoch, head) = subscribe(&b, json!({"run_id": "phoenix"})).await;
    assert_ne!(new_epoch, epoch);
    assert_eq!(head, 0);
    match client.msg().await {
        ServerMessage::Reset(r) => {
            assert_eq!(r.reason, runwire_protocol::ResetReason::EpochMismatch);
            assert_eq!(r.epoch.as_str(), new_epoch);
            assert_eq!(r.snapshot.as_of_seq, 0);
        }
        other => panic!("expected a reset on the open subscription, got {other:?}"),
    }
    Producer::new(&b).ok("phoenix", lines(10, 2, "new")).await;
    let got = client.events_until(&run, 0, 2).await;
    assert_gapless(&got, 1, 2);
    assert!(got.iter().all(|e| e.seq <= 2));
    b.shutdown().await;
}

/// `/healthz` follows the store: 503 `unavailable` while Redis is down, 200 again
/// once it is back (RW-INGEST-22).
#[tokio::test]
async fn rw_ingest_22_healthz_is_unavailable_while_redis_is_down() {
    let mut redis = Redis::start(true);
    let b = node(&redis).await;
    let p = Producer::new(&b);
    let (st, body) = p.get("/healthz").await;
    assert_eq!((st, body), (200, json!({"status": "ok"})));
    redis.kill();
    let (st, body) = p.get("/healthz").await;
    assert_eq!(st, 503, "{body}");
    assert_eq!(body["status"], json!("unavailable"));
    assert!(
        body["reason"].as_str().is_some_and(|r| r.contains("redis")),
        "{body}"
    );
    redis.restart();
    // The pool reconnects on the next command after its short hold-off.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (st, body) = p.get("/healthz").await;
        if st == 200 {
            assert_eq!(body, json!({"status": "ok"}));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "healthz stayed {st}: {body}"
        );
        tokio::task::yield_now().await;
    }
    b.shutdown().await;
}

/// A `[retention]` rule trims a Redis run below the URL's retention: its history
/// before the trim point is 410 `cursor_too_old`, a trimmed cursor on the other node
/// is reset with the whole folded state, and runs without a rule keep everything
/// (RW-INGEST-17, RW-RESUME-5, RW-SNAP-2).
#[tokio::test]
async fn rw_ingest_17_redis_retention_rule_trims_across_nodes() {
    let redis = Redis::start(false);
    let retention = runwire_server::RetentionConfig {
        events: 0,
        runs: vec![runwire_server::RetentionRule {
            pattern: "short-*".into(),
            events: 20,
        }],
    };
    let open = || {
        Arc::new(
            RedisStore::open_with(
                &redis.url(),
                ServerConfig::default().replay_window_events,
                retention.clone(),
            )
            .expect("redis store opens"),
        )
    };
    let (a, b) = (
        start_with(config(), open()).await,
        start_with(config(), open()).await,
    );
    let pa = Producer::new(&a);
    pa.ok(
        "short-r",
        json!([{"type": "run.status", "data": {"status": "running"}},
               {"type": "run.phase", "data": {"phase": "deploy"}}]),
    )
    .await;
    for _ in 0..20 {
        pa.progress("short-r", 5).await;
    }
    // Compaction (snapshot + trim) runs in the background after an append: wait for
    // the trim to show, bounded.
    let pb = Producer::new(&b);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (st, body) = pb.get("/v1/runs/short-r/events?after_seq=0").await;
        if st == 410 {
            assert_eq!(body["error"]["code"], json!("cursor_too_old"));
            break;
        }
        assert_eq!(st, 200, "{body}");
        assert!(
            std::time::Instant::now() < deadline,
            "never trimmed: {body}"
        );
        pa.progress("short-r", 1).await;
    }
    let (_, snap) = pb.get("/v1/runs/short-r").await;
    assert_eq!(snap["status"], json!("running"));
    assert_eq!(snap["phase"], json!("deploy"));
    let head = snap["as_of_seq"].as_u64().expect("head");
    let epoch = snap["epoch"].as_str().expect("epoch").to_owned();
    let mut c = Client::connect(&b).await;
    c.hello(json!([{"run_id": "short-r", "after_seq": 1, "epoch": epoch}]))
        .await;
    match c.msg().await {
        ServerMessage::Reset(r) => {
            assert_eq!(r.reason, runwire_protocol::ResetReason::CursorTooOld);
            assert!(r.snapshot.as_of_seq >= head);
            assert_eq!(r.snapshot.phase.as_deref(), Some("deploy"));
        }
        other => panic!("expected reset, got {other:?}"),
    }
    // A run without a rule keeps the URL's retention (here: everything so far).
    for _ in 0..20 {
        pa.progress("long-r", 5).await;
    }
    let (st, body) = pb.get("/v1/runs/long-r/events?after_seq=0&limit=1").await;
    assert_eq!((st, body["events"][0]["seq"].clone()), (200, json!(1)));
    a.shutdown().await;
    b.shutdown().await;
}

/// The run index of listings (spec §4.7, `RW-INGEST-26`): a run whose keys expired
/// leaves the listing, and the index, at the first listing that meets it; created
/// again, it is listed again.
#[tokio::test]
async fn rw_ingest_26_an_expired_run_leaves_the_listing_and_the_index() {
    let redis = Redis::start(false);
    let store = RedisStore::open(&redis.url(), 100).expect("store");
    let event = || {
        vec![NewEvent::new(LogLineData {
            level: LogLevel::Info,
            message: "x".into(),
            source: None,
        })]
    };
    for id in ["gone:1", "gone:2"] {
        store.append(&run(id), event()).await.expect("append");
    }
    let ids = |l: Vec<runwire_server::store::ListedRun>| -> Vec<String> {
        l.into_iter().map(|r| r.run_id.to_string()).collect()
    };
    let mut admin = redis::Client::open(redis.url())
        .expect("client")
        .get_connection()
        .expect("admin connection");
    let index = || {
        redis::cmd("ZRANGE")
            .arg("rw:{#runs}")
            .arg(0)
            .arg(-1)
            .clone()
    };
    let members: Vec<String> = index().query(&mut admin).expect("zrange");
    assert_eq!(members, ["gone:1", "gone:2"]);
    // What the expiry of the run's keys leaves.
    let _: i64 = redis::cmd("DEL")
        .arg("rw:{gone:1}:m")
        .arg("rw:{gone:1}:s")
        .arg("rw:{gone:1}:i")
        .arg("rw:{gone:1}:n")
        .query(&mut admin)
        .expect("del");
    let listed = store.list_runs("gone:", None, 10).await.expect("list");
    assert_eq!(ids(listed), ["gone:2"]);
    let members: Vec<String> = index().query(&mut admin).expect("zrange");
    assert_eq!(members, ["gone:2"], "the listing cleaned the index");
    store.append(&run("gone:1"), event()).await.expect("append");
    let listed = store.list_runs("gone:", None, 10).await.expect("list");
    assert_eq!(ids(listed), ["gone:1", "gone:2"]);
}
