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
