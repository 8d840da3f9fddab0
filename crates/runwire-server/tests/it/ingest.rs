//! The producer HTTP API (spec §4).

use runwire_server::ServerConfig;
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn rw_ingest_2_consecutive_seqs_and_response_shape() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    let r = p.progress("a", 3).await;
    assert_eq!(
        (r["first_seq"].as_u64(), r["last_seq"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(r["run_id"], "a");
    let evs = r["events"].as_array().expect("events");
    assert_eq!(evs.len(), 3);
    assert!(evs.iter().all(|e| e.get("duplicate").is_none()));
    let r = p.progress("a", 2).await;
    assert_eq!(
        (r["first_seq"].as_u64(), r["last_seq"].as_u64()),
        (Some(4), Some(5))
    );
}

#[tokio::test]
async fn rw_ingest_2_concurrent_producers_on_one_run_are_gapless() {
    let s = start(config()).await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let url = s.http_url();
        tasks.push(tokio::spawn(async move {
            let http = crate::common::http_client();
            let mut seqs = Vec::new();
            for i in 0..25 {
                let r: Value = http
                    .post(format!("{url}/v1/runs/c/events"))
                    .json(&json!({"events": [{"type": "log.line", "data": {"level": "info", "message": format!("{w}/{i}")}}, {"type": "log.line", "data": {"level": "info", "message": "second"}}]}))
                    .send()
                    .await
                    .expect("post")
                    .json()
                    .await
                    .expect("json");
                let first = r["first_seq"].as_u64().expect("first");
                assert_eq!(r["last_seq"].as_u64(), Some(first + 1), "one request, consecutive");
                seqs.push(first);
                seqs.push(first + 1);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort_unstable();
    assert_eq!(all, (1..=400).collect::<Vec<u64>>());
    let (_, h) = Producer::new(&s).get("/v1/runs/c/events?limit=10000").await;
    let seqs: Vec<u64> = h["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=400).collect::<Vec<u64>>());
}

#[tokio::test]
async fn rw_ingest_5_rw_ingest_6_idempotent_retries_and_conflicts() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    let ev = json!([{"type": "log.line", "data": {"level": "info", "message": "hi"}, "idempotency_key": "k1"},
                    {"type": "log.line", "data": {"level": "info", "message": "there"}, "idempotency_key": "k2"}]);
    let first = p.ok("i", ev.clone()).await;
    let again = p.ok("i", ev).await;
    for (a, b) in first["events"]
        .as_array()
        .expect("a")
        .iter()
        .zip(again["events"].as_array().expect("b"))
    {
        assert_eq!(a["seq"], b["seq"]);
        assert_eq!(a["event_id"], b["event_id"]);
        assert_eq!(b["duplicate"], json!(true));
    }
    // A producer-supplied time does not change identity (type and data only).
    let r = p.ok("i", json!([{"type": "log.line", "data": {"level": "info", "message": "hi"}, "idempotency_key": "k1", "time": "2026-01-01T00:00:00Z"}])).await;
    assert_eq!(r["events"][0]["duplicate"], json!(true));
    // Same key, different data: 409 and nothing appended.
    let (st, body) = p
        .append("i", json!([{"type": "log.line", "data": {"level": "info", "message": "new"}}, {"type": "log.line", "data": {"level": "warn", "message": "hi"}, "idempotency_key": "k1"}]))
        .await;
    assert_eq!(st, 409);
    assert_eq!(body["error"]["code"], "idempotency_conflict");
    assert_eq!(body["error"]["pointer"], "/events/1/idempotency_key");
    assert_eq!(body["error"]["retryable"], json!(false));
    let (_, h) = p.get("/v1/runs/i/events").await;
    assert_eq!(
        h["head_seq"], 2,
        "nothing of the conflicting request was appended (RW-INGEST-8)"
    );
}

#[tokio::test]
async fn rw_ingest_7_one_key_twice_in_one_request_is_invalid() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    let (st, body) = p
        .append("d", json!([{"type": "log.line", "data": {"level": "info", "message": "a"}, "idempotency_key": "k"},
                            {"type": "log.line", "data": {"level": "info", "message": "a"}, "idempotency_key": "k"}]))
        .await;
    assert_eq!(st, 400);
    assert_eq!(body["error"]["code"], "invalid_request");
    assert_eq!(body["error"]["pointer"], "/events/1/idempotency_key");
}

#[tokio::test]
async fn rw_ingest_10_rw_ingest_11_terminal_status_closes_the_run() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    let done =
        json!([{"type": "run.status", "data": {"status": "completed"}, "idempotency_key": "end"}]);
    p.progress("t", 1).await;
    let first = p.ok("t", done.clone()).await;
    let (st, body) = p
        .append(
            "t",
            json!([{"type": "run.progress", "data": {"percent": 5}}]),
        )
        .await;
    assert_eq!(st, 409);
    assert_eq!(body["error"]["code"], "run_terminal");
    // The retry of the terminal event answers with its original assignment.
    let retry = p.ok("t", done).await;
    assert_eq!(retry["events"][0]["seq"], first["events"][0]["seq"]);
    assert_eq!(retry["events"][0]["duplicate"], json!(true));
    // Terminal followed by more events in one request: refused, nothing appended.
    let (st, body) = p
        .append("t2", json!([{"type": "run.status", "data": {"status": "failed"}}, {"type": "log.line", "data": {"level": "info", "message": "late"}}]))
        .await;
    assert_eq!(st, 409);
    assert_eq!(body["error"]["pointer"], "/events/1");
    assert_eq!(
        p.get("/v1/runs/t2").await.0,
        404,
        "nothing appended, run not created"
    );
}

#[tokio::test]
async fn rw_ingest_9_invalid_bodies_carry_a_pointer() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    let (st, body) = p
        .append(
            "v",
            json!([{"type": "run.progress", "data": {"percent": 140}}]),
        )
        .await;
    assert_eq!(st, 400);
    assert_eq!(body["error"]["code"], "invalid_request");
    assert_eq!(body["error"]["pointer"], "/events/0/data/percent");
    let (st, body) = p.append("v", json!([])).await;
    assert_eq!(
        (st, body["error"]["pointer"].as_str()),
        (400, Some("/events"))
    );
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"type": "run.progress", "data": {}}))
        .collect();
    let (st, body) = p.append("v", Value::Array(many)).await;
    assert_eq!(
        (st, body["error"]["pointer"].as_str()),
        (400, Some("/events"))
    );
    let (st, body) = p.post_raw("v", "{not json".into()).await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (st, _) = p
        .append("bad%2Frun", json!([{"type": "run.progress", "data": {}}]))
        .await;
    assert_eq!(st, 400, "invalid run id (RW-INGEST-1)");
    let (st, body) = p.append("v", json!([{"type": "Bad", "data": {}}])).await;
    assert_eq!(
        (st, body["error"]["pointer"].as_str()),
        (400, Some("/events/0/type")),
        "{body}"
    );
}

#[tokio::test]
async fn rw_limit_2_oversize_event_is_413() {
    let mut cfg = config();
    cfg.max_event_bytes = 2048;
    let s = start(cfg).await;
    let p = Producer::new(&s);
    let (st, body) = p
        .append("big", json!([{"type": "log.line", "data": {"level": "info", "message": "ok"}}, {"type": "log.line", "data": {"level": "info", "message": "x".repeat(4000)}}]))
        .await;
    assert_eq!(st, 413);
    assert_eq!(body["error"]["code"], "event_too_large");
    assert_eq!(body["error"]["pointer"], "/events/1");
}

#[tokio::test]
async fn rw_ingest_12_producer_time_is_kept() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    p.ok("tm", json!([{"type": "run.progress", "data": {}, "time": "2020-01-02T03:04:05.678Z"}, {"type": "run.progress", "data": {}}])).await;
    let (_, h) = p.get("/v1/runs/tm/events").await;
    assert_eq!(h["events"][0]["time"], "2020-01-02T03:04:05.678Z");
    assert!(
        h["events"][1]["time"]
            .as_str()
            .expect("time")
            .ends_with('Z')
    );
}

#[tokio::test]
async fn rw_ingest_15_to_18_snapshot_and_history_reads() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    let (st, body) = p.get("/v1/runs/nothing").await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (404, Some("run_not_found"))
    );
    let (st, _) = p.get("/v1/runs/nothing/events").await;
    assert_eq!(st, 404);
    p.ok("h", json!([{"type": "run.status", "data": {"status": "running"}}, {"type": "log.line", "data": {"level": "info", "message": "l"}}])).await;
    p.progress("h", 3).await;
    let (st, snap) = p.get("/v1/runs/h").await;
    assert_eq!(st, 200);
    assert_eq!(snap["as_of_seq"], 5);
    assert_eq!(snap["status"], "running");
    assert_eq!(snap["recent_logs"][0]["message"], "l");
    let (_, h) = p.get("/v1/runs/h/events?after_seq=1&limit=2").await;
    let seqs: Vec<u64> = h["events"]
        .as_array()
        .expect("e")
        .iter()
        .map(|e| e["seq"].as_u64().expect("s"))
        .collect();
    assert_eq!(seqs, vec![2, 3]);
    assert_eq!(
        (h["head_seq"].as_u64(), h["has_more"].as_bool()),
        (Some(5), Some(true))
    );
    let (_, h) = p.get("/v1/runs/h/events?after_seq=3").await;
    assert_eq!(h["has_more"], json!(false));
    let (_, h) = p.get("/v1/runs/h/events?after_seq=99").await;
    assert_eq!(
        (
            h["events"].as_array().map(Vec::len),
            h["has_more"].as_bool(),
            h["head_seq"].as_u64()
        ),
        (Some(0), Some(false), Some(5))
    );
    for bad in [
        "limit=0",
        "limit=10001",
        "after_seq=-1",
        "after_seq=x",
        "after_seq=9007199254740992",
    ] {
        let (st, body) = p.get(&format!("/v1/runs/h/events?{bad}")).await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{bad}"
        );
    }
    // The history answer decodes as the protocol type.
    let (_, h) = p.get("/v1/runs/h/events").await;
    let typed: runwire_protocol::http::HistoryResponse =
        serde_json::from_value(h).expect("HistoryResponse");
    assert_eq!(typed.events.len(), 5);
}

#[tokio::test]
async fn metrics_count_events_and_connections() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    p.progress("m", 3).await;
    let text = p.get_text("/metrics").await;
    assert!(text.contains("runwire_events_in_total 3"), "{text}");
    assert!(text.contains("# TYPE runwire_connections gauge"));
}

/// A request body far over `max_request_bytes` is refused with 413 and the spec's
/// error body, not the HTTP framework's plain text (RW-INGEST-20).
#[tokio::test]
async fn rw_ingest_20_oversize_request_body_gets_the_error_body() {
    let s = start(ServerConfig {
        max_request_bytes: 64 * 1024,
        ..config()
    })
    .await;
    let p = Producer::new(&s);
    for size in [64 * 1024 + 10, 4 * 1024 * 1024] {
        let line =
            json!({"type": "log.line", "data": {"level": "info", "message": "x".repeat(1000)}});
        let n = size / 1000;
        let body = json!({ "events": vec![line; n.min(1000)] }).to_string();
        let body = if body.len() < size {
            format!("{}{}", body, " ".repeat(size - body.len()))
        } else {
            body
        };
        let (st, v) = p.post_raw("big", body).await;
        assert_eq!(st, 413, "{size} bytes: {v}");
        assert_eq!(v["error"]["code"], json!("invalid_request"), "{size} bytes");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("max_request_bytes")),
            "{v}"
        );
    }
}

/// Requests the HTTP framework would refuse on its own (no WebSocket upgrade, a path
/// segment that is not UTF-8, a method the path does not take, an unknown path) get
/// the spec's error body too (RW-INGEST-20).
#[tokio::test]
async fn rw_ingest_20_framework_refusals_get_the_error_body() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    let base = s.http_url();
    let cases = [
        (reqwest::Method::GET, "/v1/stream", 400u16),
        (reqwest::Method::GET, "/v1/runs/%FF/events", 400),
        (reqwest::Method::PUT, "/v1/runs/r/events", 405),
        (reqwest::Method::DELETE, "/v1/runs/r", 405),
        (reqwest::Method::GET, "/v2/anything", 404),
    ];
    for (method, path, status) in cases {
        let r = p
            .http
            .request(method.clone(), format!("{base}{path}"))
            .send()
            .await
            .expect("http");
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        let allow = r.headers().get("allow").cloned();
        let v: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(
            v["error"]["code"],
            json!("invalid_request"),
            "{method} {path}: {v}"
        );
        assert_eq!(v["error"]["retryable"], json!(false));
        if status == 405 {
            assert!(
                allow.is_some(),
                "{method} {path}: 405 names the allowed methods"
            );
        }
    }
}

/// The ids and heads of a listing answer.
fn listed(v: &Value) -> Vec<(String, u64)> {
    v["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            (
                r["run_id"].as_str().expect("run_id").to_owned(),
                r["head_seq"].as_u64().expect("head_seq"),
            )
        })
        .collect()
}

#[tokio::test]
async fn rw_ingest_26_listing_pages_by_prefix() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    p.progress("ci:web:2", 2).await;
    p.progress("ci:web:1", 1).await;
    p.progress("ci:api:1", 3).await;
    p.progress("other", 1).await;
    let (st, v) = p.get("/v1/runs?prefix=ci:").await;
    assert_eq!(st, 200, "{v}");
    let typed: runwire_protocol::http::RunList =
        serde_json::from_value(v.clone()).expect("RunList");
    assert!(!typed.has_more);
    assert_eq!(
        listed(&v),
        [
            ("ci:api:1".to_owned(), 3),
            ("ci:web:1".to_owned(), 1),
            ("ci:web:2".to_owned(), 2)
        ]
    );
    let (_, v) = p.get("/v1/runs?prefix=ci:&limit=2").await;
    assert_eq!(v["has_more"], json!(true), "{v}");
    assert_eq!(listed(&v).len(), 2);
    let (_, v) = p.get("/v1/runs?prefix=ci:&limit=2&after=ci:web:1").await;
    assert_eq!(v["has_more"], json!(false), "{v}");
    assert_eq!(listed(&v), [("ci:web:2".to_owned(), 2)]);
    // No prefix: every run; a limit of exactly the count has no more.
    let (_, v) = p.get("/v1/runs?limit=4").await;
    assert_eq!(listed(&v).len(), 4, "{v}");
    assert_eq!(v["has_more"], json!(false), "{v}");
    s.shutdown().await;
}

#[tokio::test]
async fn rw_ingest_27_bad_listing_parameters_are_invalid_request() {
    let s = start(config()).await;
    let p = Producer::new(&s);
    for (q, pointer) in [
        ("limit=0", "/limit"),
        ("limit=1001", "/limit"),
        ("limit=ten", "/limit"),
        ("prefix=a/b", "/prefix"),
        ("prefix=a%20b", "/prefix"),
        ("after=-x", "/after"),
        ("after=", "/after"),
    ] {
        let (st, v) = p.get(&format!("/v1/runs?{q}")).await;
        assert_eq!(st, 400, "{q}: {v}");
        assert_eq!(v["error"]["code"], json!("invalid_request"), "{q}");
        assert_eq!(v["error"]["pointer"], json!(pointer), "{q}");
    }
    let long = "a".repeat(129);
    let (st, _) = p.get(&format!("/v1/runs?prefix={long}")).await;
    assert_eq!(st, 400);
    let (st, v) = p.get("/v1/runs?limit=1000&prefix=").await;
    assert_eq!(st, 200, "{v}");
    s.shutdown().await;
}
