//! How fast the mock plays events to a client, with every frame recorded in the
//! transcript: single `event` frames and one large `batch`. Run with
//! `cargo bench -p runwire-mock --bench mock`.

use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use runwire_mock::{Fixture, Mock, MockOptions};
use tokio_tungstenite::tungstenite::Message;

const N: u64 = 20_000;

fn fixture(step: &str) -> Fixture {
    let text = format!(
        r#"{{"id": "bench", "title": "bench", "requirements": ["RW-ORDER-6"], "level": "must",
        "deadline_ms": 120000,
        "runs": [{{"run_id": "run-1", "length": {N}, "types": ["run.progress", "log.line"]}}],
        "client": {{"runs": [{{"run_id": "run-1"}}]}},
        "connections": [{{"steps": [{{"welcome": {{}}}}, {{"subscribed": {{"run": "run-1"}}}},
            {{"{step}": {{"run": "run-1", "from_seq": 1, "to_seq": {N}}}}},
            {{"await_close": {{"within_ms": 60000}}}}]}}]}}"#
    );
    Fixture::parse(&text, "bench.json").expect("valid bench fixture")
}

/// Plays one fixture to a raw client that counts events; returns (seconds from the
/// first received frame to the last event, transcript entries).
async fn play(step: &str) -> (f64, usize) {
    let mock = Mock::start(
        fixture(step),
        MockOptions {
            seed: Some(1),
            ..MockOptions::default()
        },
    )
    .await
    .expect("start");
    let url = mock.url();
    let client = tokio::spawn(async move {
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        ws.send(Message::text(
            r#"{"type":"hello","versions":["1.0"],"subscriptions":[{"run_id":"run-1"}]}"#,
        ))
        .await
        .expect("hello");
        let mut seen = 0u64;
        let mut start = None;
        while let Some(Ok(m)) = ws.next().await {
            let Message::Text(t) = m else { continue };
            start.get_or_insert_with(Instant::now);
            if t.starts_with(r#"{"event":"#) || t.contains(r#""type":"event""#) {
                seen += 1;
            } else if t.contains(r#""type":"batch""#) {
                seen += t.matches(r#""event_id""#).count() as u64;
            }
            if seen >= N {
                break;
            }
        }
        let secs = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let _ = ws.close(None).await;
        secs
    });
    let secs = client.await.expect("client");
    let report = mock.finish().await;
    (secs, report.transcript.entries.len())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for step in ["events", "batch"] {
            let mut best = f64::MAX;
            let mut entries = 0;
            for _ in 0..3 {
                let (s, e) = play(step).await;
                best = best.min(s);
                entries = e;
            }
            println!(
                "mock {step:>6}: {N} events in {:.1} ms = {:.0} events/s (best of 3; {entries} transcript entries)",
                best * 1000.0,
                N as f64 / best
            );
        }
    });
}
