//! Replay benchmark: one client consumes a 1,000,000-event replay of one run over a
//! real WebSocket on loopback, and memory stays bounded. Run:
//! `cargo bench -p runwire-client --bench replay` (or `-- 200000` for fewer events).
//!
//! An in-process server (tokio-tungstenite, batches of 100 events of ~250 bytes, as a
//! replaying server sends them) writes as fast as the socket takes it; the client
//! delivers every event to the application, which checks the order and drops it.
//! Prints events/s and the process's resident memory sampled along the way and at its
//! peak (`VmHWM`): a client that buffered the replay would grow with it.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use runwire_client::{Client, ClientConfig, ClientEvent};
use runwire_protocol::{
    ClientMessage, Epoch, Limits, RunId, ServerMessage, Subscribed, SubscriptionRequest, Welcome,
    codec,
};
use tokio::net::TcpListener;
use tokio_tungstenite::{accept_async, tungstenite::Message};

fn event_json(run: &str, seq: u64) -> String {
    format!(
        r#"{{"event_id":"01J9Z8Q4V7M2K3N5P6R8S9T0{seq:08}","run_id":"{run}","seq":{seq},"type":"run.progress","time":"2026-11-22T10:00:00.123Z","data":{{"percent":{p}.5,"step":"compiling crate runwire-client","current":{seq},"total":2000000,"tool":"cargo"}}}}"#,
        p = seq % 100
    )
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn serve(listener: TcpListener, total: u64) {
    let (tcp, _) = listener.accept().await.expect("accept");
    tcp.set_nodelay(true).ok();
    let mut ws = accept_async(tcp).await.expect("upgrade");
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!("no hello");
    };
    let Ok(ClientMessage::Hello(_)) = codec::decode_client_message(t.as_bytes(), 1 << 20) else {
        panic!("not a hello");
    };
    let welcome = ServerMessage::Welcome(Welcome {
        version: "1.0".into(),
        session_id: "bench".into(),
        heartbeat_interval_ms: 60_000,
        pong_timeout_ms: 10_000,
        batch_window_ms: 200,
        replay_window_events: total,
        limits: Limits {
            max_frame_bytes: 65_536,
            max_event_bytes: 65_536,
            max_subscriptions: 100,
            max_messages_per_second: 50,
            slow_consumer_max_bytes: None,
            slow_consumer_max_age_ms: None,
        },
        server: None,
    });
    ws.send(Message::text(codec::encode(&welcome)))
        .await
        .expect("send");
    let sub = ServerMessage::Subscribed(Subscribed {
        run_id: RunId::new("run-replay").expect("run"),
        epoch: Epoch::new("e1").expect("epoch"),
        after_seq: 0,
        head_seq: total,
    });
    ws.send(Message::text(codec::encode(&sub)))
        .await
        .expect("send");
    let mut seq = 1;
    let mut frames = 0u32;
    while seq <= total {
        let n = 100.min(total - seq + 1);
        let mut f = String::with_capacity(26 * 1024);
        f.push_str(r#"{"type":"batch","events":["#);
        for s in seq..seq + n {
            if s > seq {
                f.push(',');
            }
            f.push_str(&event_json("run-replay", s));
        }
        f.push_str("]}");
        seq += n;
        frames += 1;
        if ws.feed(Message::text(f)).await.is_err() {
            return;
        }
        if frames.is_multiple_of(8) && ws.flush().await.is_err() {
            return;
        }
    }
    let _ = ws.flush().await;
    while let Some(Ok(_)) = ws.next().await {}
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/v1/stream", listener.local_addr().expect("addr"));
    let server = tokio::spawn(serve(listener, total));
    let run = RunId::new("run-replay").expect("run");
    let mut config = ClientConfig::new(url);
    config.seed = Some(1);
    config.subscriptions.push(SubscriptionRequest::new(run));
    let rss_before = status_kib("VmRSS:");
    let mut client = Client::connect(config);
    let mut last = 0u64;
    let mut start = None;
    let mut samples = Vec::new();
    while let Some(ev) = client.next().await {
        match ev {
            ClientEvent::Event(e) => {
                assert_eq!(e.seq, last + 1, "in order, exactly once");
                last = e.seq;
                if last == 1 {
                    start = Some(Instant::now());
                }
                if last.is_multiple_of((total / 10).max(1)) {
                    samples.push((last, status_kib("VmRSS:")));
                }
                if last == total {
                    client.handle().close();
                }
            }
            ClientEvent::Error(e) if e.terminal => panic!("{e}"),
            _ => {}
        }
    }
    let secs = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert_eq!(last, total, "every event delivered");
    println!(
        "runwire-client replay: {total} events of ~250 B over loopback WebSocket, batches of 100"
    );
    println!(
        "  {:.0} events/s ({secs:.2} s), client and server in one process (2 worker threads)",
        total as f64 / secs
    );
    println!("  RSS before connecting: {rss_before} KiB");
    for (n, kib) in &samples {
        println!("  RSS after {n:>9} events: {kib} KiB");
    }
    let peak = samples
        .iter()
        .map(|(_, k)| *k)
        .chain([status_kib("VmHWM:")])
        .max()
        .unwrap_or(0);
    println!("  peak RSS: {peak} KiB");
}
