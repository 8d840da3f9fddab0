//! The latency histograms of `GET /metrics`: live delivery (publication on the live
//! feed → frame written) and ingest (append request duration).

use runwire_protocol::ServerMessage;
use serde_json::json;

use crate::common::*;

async fn ready(s: &runwire_server::RunningServer) -> Client {
    let mut c = Client::connect(s).await;
    c.hello(json!([])).await;
    c
}

/// The value of the sample line `name` in a Prometheus text exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn latency_histograms_count_live_deliveries_and_appends() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut c = ready(&s).await;
        c.send(json!({"type": "subscribe", "subscriptions": [{"run_id": "h"}]}))
            .await;
        assert!(matches!(c.msg().await, ServerMessage::Subscribed(_)));
        clients.push(c);
    }
    // Two requests of 3 and 2 events: 5 live events to each of 2 subscribers.
    p.progress("h", 3).await;
    p.progress("h", 2).await;
    for c in &mut clients {
        c.events_until(&run("h"), 0, 5).await;
    }
    // The writer records a frame once its flush returned, which may be just after the
    // client read it: read /metrics until the count is complete.
    let deadline = tokio::time::Instant::now() + WAIT;
    let text = loop {
        let text = p.get_text("/metrics").await;
        if sample(&text, "runwire_deliver_latency_seconds_count") == Some(10.0) {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries not counted:\n{text}"
        );
        tokio::task::yield_now().await;
    };
    assert!(text.contains("# TYPE runwire_deliver_latency_seconds histogram"));
    assert!(text.contains("# TYPE runwire_append_duration_seconds histogram"));
    for le in ["0.0005", "0.001", "0.005", "0.1", "1", "10", "+Inf"] {
        let name = format!("runwire_deliver_latency_seconds_bucket{{le=\"{le}\"}}");
        assert!(sample(&text, &name).is_some(), "{name} missing:\n{text}");
    }
    assert_eq!(
        sample(&text, "runwire_deliver_latency_seconds_bucket{le=\"+Inf\"}"),
        Some(10.0)
    );
    assert!(sample(&text, "runwire_deliver_latency_seconds_sum").is_some_and(|v| v > 0.0));
    // Replayed events are not live deliveries: a late subscriber adds nothing.
    let mut late = ready(&s).await;
    late.send(json!({"type": "subscribe", "subscriptions": [{"run_id": "h"}]}))
        .await;
    assert!(matches!(late.msg().await, ServerMessage::Subscribed(_)));
    late.events_until(&run("h"), 0, 5).await;
    let text = p.get_text("/metrics").await;
    assert_eq!(
        sample(&text, "runwire_deliver_latency_seconds_count"),
        Some(10.0)
    );
    assert_eq!(
        sample(&text, "runwire_append_duration_seconds_count"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "runwire_append_duration_seconds_bucket{le=\"+Inf\"}"),
        Some(2.0)
    );
}
