//! Graceful shutdown (spec §16).

use runwire_protocol::ServerMessage;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn rw_shutdown_clients_get_server_shutdown_with_jittered_retry_then_4200() {
    let mut cfg = config();
    cfg.shutdown_reconnect_spread_ms = 3000;
    let s = start(cfg).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut c = Client::connect(&s).await;
        c.hello(json!([{"run_id": "sd"}])).await;
        assert!(matches!(c.msg().await, ServerMessage::Subscribed(_)));
        clients.push(c);
    }
    let addr = s.local_addr();
    let stopping = tokio::spawn(s.shutdown());
    for c in &mut clients {
        let e = c.expect_error_close("server_shutdown", 4200).await;
        assert!(e.retryable);
        let ms = e.retry_after_ms.expect("retry_after_ms");
        assert!(ms <= 3000, "{ms}");
    }
    stopping.await.expect("shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// `RW-SHUTDOWN-4`: events held in a pending batch (the client's socket is busy, the
/// batching window is long) are sent before `server_shutdown`, not dropped.
#[tokio::test]
async fn rw_shutdown_4_pending_batch_is_flushed_before_server_shutdown() {
    let mut cfg = config();
    cfg.batch_window_ms = 60_000;
    cfg.heartbeat_interval_ms = 600_000;
    cfg.slow_consumer_max_bytes = 32 * 1024 * 1024;
    cfg.slow_consumer_max_age_ms = 600_000;
    cfg.close_timeout_ms = 10_000;
    cfg.shutdown_reconnect_spread_ms = 0;
    let s = start(cfg).await;
    let p = Producer::new(&s);
    // A small receive buffer and no reading yet: the socket backs up, so live events
    // wait in a batch.
    let mut c = Client::connect_opts(&s, None, Some(4096)).await;
    c.hello(json!([{"run_id": "flush"}])).await;
    assert!(matches!(c.msg().await, ServerMessage::Subscribed(_)));
    let pad = "z".repeat(60_000);
    for _ in 0..4 {
        let big: Vec<serde_json::Value> = (0..20)
            .map(|i| json!({"type": "log.line", "data": {"level": "info", "message": format!("{i} {pad}")}}))
            .collect();
        p.ok("flush", serde_json::Value::Array(big)).await;
    }
    let last = p.progress("flush", 3).await["last_seq"]
        .as_u64()
        .expect("head_seq");
    let stopping = tokio::spawn(s.shutdown());
    let mut next = 1;
    let e = loop {
        match c.recv().await {
            Frame::Msg(ServerMessage::Event(ev)) => {
                assert_eq!(ev.event.seq, next);
                next += 1;
            }
            Frame::Msg(ServerMessage::Batch(b)) => {
                for ev in b.events {
                    assert_eq!(ev.seq, next);
                    next += 1;
                }
            }
            Frame::Msg(ServerMessage::Error(e)) => break e,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(e.code.as_str(), "server_shutdown");
    assert_eq!(next - 1, last, "events were dropped at shutdown");
    assert!(matches!(c.recv().await, Frame::Close(Some(4200), _)));
    drop(c);
    stopping.await.expect("shutdown");
}

/// A memory store whose live feed never brings anything: the feed of a busy server that
/// is behind the store (what a loaded machine showed: acknowledged events not yet on
/// the feed when shutdown began).
struct DeafFeed {
    inner: runwire_server::MemoryStore,
    hub: runwire_server::store::LiveHub,
}

impl runwire_server::EventStore for DeafFeed {
    fn open_run<'a>(
        &'a self,
        run_id: &'a runwire_protocol::RunId,
    ) -> runwire_server::store::BoxFuture<
        'a,
        Result<runwire_server::store::RunInfo, runwire_server::StoreError>,
    > {
        self.inner.open_run(run_id)
    }

    fn run_info<'a>(
        &'a self,
        run_id: &'a runwire_protocol::RunId,
    ) -> runwire_server::store::BoxFuture<
        'a,
        Result<Option<runwire_server::store::RunInfo>, runwire_server::StoreError>,
    > {
        self.inner.run_info(run_id)
    }

    fn append<'a>(
        &'a self,
        run_id: &'a runwire_protocol::RunId,
        events: Vec<runwire_protocol::http::NewEvent>,
    ) -> runwire_server::store::BoxFuture<
        'a,
        Result<runwire_server::store::AppendOutcome, runwire_server::StoreError>,
    > {
        self.inner.append(run_id, events)
    }

    fn read<'a>(
        &'a self,
        run_id: &'a runwire_protocol::RunId,
        after_seq: u64,
        up_to: u64,
        limit: usize,
    ) -> runwire_server::store::BoxFuture<
        'a,
        Result<Vec<runwire_server::store::StoredEvent>, runwire_server::StoreError>,
    > {
        self.inner.read(run_id, after_seq, up_to, limit)
    }

    fn snapshot<'a>(
        &'a self,
        run_id: &'a runwire_protocol::RunId,
    ) -> runwire_server::store::BoxFuture<
        'a,
        Result<Option<runwire_protocol::RunSnapshot>, runwire_server::StoreError>,
    > {
        self.inner.snapshot(run_id)
    }
    fn list_runs<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a runwire_protocol::RunId>,
        limit: usize,
    ) -> runwire_server::store::BoxFuture<
        'a,
        Result<Vec<runwire_server::store::ListedRun>, runwire_server::StoreError>,
    > {
        self.inner.list_runs(prefix, after, limit)
    }

    fn live(&self, run_id: &runwire_protocol::RunId) -> runwire_server::store::LiveReceiver {
        self.hub.subscribe(run_id)
    }

    fn health(
        &self,
    ) -> runwire_server::store::BoxFuture<'_, Result<(), runwire_server::StoreError>> {
        self.inner.health()
    }

    fn close(
        &self,
    ) -> runwire_server::store::BoxFuture<'_, Result<(), runwire_server::StoreError>> {
        self.inner.close()
    }
}

/// `RW-SHUTDOWN-4`: an acknowledged event reaches the subscriber before
/// `server_shutdown` even when the live feed has not brought it yet: the subscription
/// catches up from the store when shutdown begins.
#[tokio::test]
async fn rw_shutdown_4_acknowledged_events_the_feed_has_not_brought_are_sent_first() {
    let store = std::sync::Arc::new(DeafFeed {
        inner: runwire_server::MemoryStore::new(),
        hub: runwire_server::store::LiveHub::new(16),
    });
    let s = start_with(config(), store).await;
    let mut c = Client::connect(&s).await;
    c.hello(json!([{"run_id": "behind"}])).await;
    assert!(matches!(c.msg().await, ServerMessage::Subscribed(_)));
    Producer::new(&s).progress("behind", 3).await;
    let stopping = tokio::spawn(s.shutdown());
    let got = c.events_until(&run("behind"), 0, 3).await;
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    c.expect_error_close("server_shutdown", 4200).await;
    stopping.await.expect("shutdown");
}
