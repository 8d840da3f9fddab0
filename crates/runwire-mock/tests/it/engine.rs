//! The engine's built-in behaviors, driven by raw WebSocket clients: accept modes,
//! unexpected connections, one connection at a time, tokens in the URL, invalid client
//! frames.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use runwire_mock::{Fixture, Mock, MockOptions, Report, What};
use tokio_tungstenite::{connect_async, tungstenite::Message};

const HELLO: &str = r#"{"type":"hello","versions":["1.0"],"subscriptions":[{"run_id":"run-1"}]}"#;

fn fixture(connections: &str, expect: &str) -> Fixture {
    let text = format!(
        r#"{{"id": "engine", "title": "engine", "requirements": ["RW-RECONNECT-1"], "level": "must",
        "deadline_ms": 3000,
        "runs": [{{"run_id": "run-1", "length": 2, "end": "completed"}}],
        "client": {{"runs": [{{"run_id": "run-1"}}]}},
        "connections": {connections}, "expect": {expect}}}"#
    );
    Fixture::parse(&text, "engine.json").unwrap_or_else(|e| panic!("{e}"))
}

async fn start(f: Fixture) -> Mock {
    Mock::start(
        f,
        MockOptions {
            seed: Some(1),
            ..MockOptions::default()
        },
    )
    .await
    .expect("start")
}

fn faults(r: &Report) -> Vec<String> {
    r.transcript
        .entries
        .iter()
        .filter_map(|e| match &e.what {
            What::Fault { fault } => Some(fault.clone()),
            What::Connect { accept, .. } => Some(format!("connect {accept}")),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn accept_modes_refuse_as_documented() {
    let mock = start(fixture(
        r#"[{"accept": "silent"}, {"accept": {"http_error": {"status": 503}}}, {"accept": "reset"},
            {"steps": [{"welcome": {}}, {"await_close": {"code": 1000}}]}]"#,
        "{}",
    ))
    .await;
    let url = mock.url();
    // 1: silent: the upgrade never completes.
    let r = tokio::time::timeout(Duration::from_millis(150), connect_async(url.clone())).await;
    assert!(r.is_err(), "the silent accept answered");
    // 2: HTTP 503.
    match connect_async(url.clone()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 503);
        }
        other => panic!("expected HTTP 503, got {:?}", other.map(|_| ())),
    }
    // 3: reset.
    assert!(
        connect_async(url.clone()).await.is_err(),
        "the reset accept upgraded"
    );
    // 4: a normal session.
    let (mut ws, _) = connect_async(url).await.expect("connect");
    ws.send(Message::text(HELLO)).await.expect("hello");
    let welcome = ws.next().await.expect("frame").expect("ok");
    assert!(welcome.to_text().expect("text").contains("\"welcome\""));
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: 1000.into(),
        reason: "".into(),
    }))
    .await
    .expect("close");
    while ws.next().await.is_some() {}
    let report = mock.finish().await;
    assert!(report.verdict.passed(), "{}", report.verdict.render());
    let f = faults(&report);
    for want in [
        "connect silent",
        "refuse: HTTP 503",
        "refuse: TCP reset",
        "connect websocket",
    ] {
        assert!(f.iter().any(|x| x == want), "{want} missing from {f:?}");
    }
}

#[tokio::test]
async fn an_unscripted_connection_is_a_violation_of_the_named_requirement() {
    let mock = start(fixture(
        r#"[{"steps": [{"welcome": {}}, {"close": {"code": 4003}}]}]"#,
        r#"{"extra_connection_requirement": "RW-RECONNECT-5"}"#,
    ))
    .await;
    let url = mock.url();
    let (mut ws, _) = connect_async(url.clone()).await.expect("connect");
    ws.send(Message::text(HELLO)).await.expect("hello");
    while let Some(Ok(_)) = ws.next().await {}
    // The client reconnects after a terminal close; the mock holds that connection
    // until the fixture ends.
    let (mut extra, _) = connect_async(url).await.expect("connect");
    extra.send(Message::text(HELLO)).await.expect("hello");
    let report = mock.finish().await;
    assert!(
        report.verdict.violates("RW-RECONNECT-5"),
        "{}",
        report.verdict.render()
    );
    assert_eq!(
        report.verdict.violations.len(),
        1,
        "{}",
        report.verdict.render()
    );
}

#[tokio::test]
async fn two_connections_at_once_violate_rw_reconnect_9() {
    let mock = start(fixture(
        r#"[{"steps": [{"welcome": {}}]}, {"steps": [{"welcome": {}}]}]"#,
        "{}",
    ))
    .await;
    let url = mock.url();
    let (mut a, _) = connect_async(url.clone()).await.expect("connect");
    a.send(Message::text(HELLO)).await.expect("hello");
    let _ = a.next().await;
    let (mut b, _) = connect_async(url).await.expect("connect");
    b.send(Message::text(HELLO)).await.expect("hello");
    let _ = b.next().await;
    drop(a);
    drop(b);
    let report = mock.finish().await;
    assert!(
        report.verdict.violates("RW-RECONNECT-9"),
        "{}",
        report.verdict.render()
    );
}

#[tokio::test]
async fn client_protocol_faults_are_judged() {
    let mock = start(fixture(
        r#"[{"hello": {"token": "secret"}, "steps": [{"welcome": {}}, {"wait": {"ms": 100}}, {"close": {"code": 1000}}]}]"#,
        "{}",
    ))
    .await;
    let url = format!("{}?access_token=secret", mock.url());
    let (mut ws, _) = connect_async(url).await.expect("connect");
    // Not hello first, then a hello without the token, a binary frame, garbage, and a
    // resumed cursor without its epoch.
    ws.send(Message::text(r#"{"type":"ping","id":"x"}"#))
        .await
        .expect("send");
    ws.send(Message::text(
        r#"{"type":"hello","versions":["1.0"],"subscriptions":[{"run_id":"run-1","after_seq":3}]}"#,
    ))
    .await
    .expect("send");
    ws.send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send");
    ws.send(Message::text("{nope")).await.expect("send");
    while let Some(Ok(_)) = ws.next().await {}
    let report = mock.finish().await;
    let v = &report.verdict;
    for req in [
        "RW-CONN-4",
        "RW-AUTH-1",
        "RW-CONV-1",
        "RW-COMPAT-5",
        "RW-RESUME-11",
    ] {
        assert!(v.violates(req), "{req} missing:\n{}", v.render());
    }
    // The client's ping was answered even before hello.
    assert!(
        report
            .transcript
            .entries
            .iter()
            .any(|e| matches!(&e.what, What::Text { text } if text.contains("\"pong\"")))
    );
}

/// Dropping a mock without finishing it stops listening.
#[tokio::test]
async fn dropping_a_mock_stops_it() {
    let mock = start(fixture(r#"[{"steps": [{"welcome": {}}]}]"#, "{}")).await;
    let addr = mock.addr();
    drop(mock);
    // The accept loop is gone: connecting fails (the listener is closed once the task
    // is aborted and dropped; poll until then, bounded).
    let refused = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        refused.is_ok(),
        "the mock still accepts connections after drop"
    );
}

/// Plays a one-connection fixture with `expect.folded` against a hand-driven client
/// whose application prints `lines`, and returns the report.
async fn play_folded(lines: Vec<serde_json::Value>) -> Report {
    let mock = start(fixture(
        r#"[{"steps": [{"welcome": {}}, {"close": {"code": 1000}}]}]"#,
        r#"{"folded": [{"run": "run-1", "requirement": "RW-SNAP-2"}]}"#,
    ))
    .await;
    let app = mock.attach_app().expect("attach");
    let (mut ws, _) = connect_async(mock.url()).await.expect("connect");
    ws.send(Message::text(HELLO)).await.expect("hello");
    while let Some(Ok(_)) = ws.next().await {}
    for l in lines {
        app.line(l);
    }
    app.exit(Some(0));
    mock.finish().await
}

fn folded_violations(r: &Report) -> Vec<String> {
    r.verdict
        .violations
        .iter()
        .filter(|v| v.expectation == "folded")
        .map(|v| format!("{} {}", v.requirement, v.message))
        .collect()
}

/// `expect.folded` (RW-SNAP-2): a folded state that differs from the mock's own fold
/// names each differing member; one that is not a `RunSnapshot` and a run without any
/// `folded` line are violations too (a client with no `folded` line at all is *not
/// implemented*, see broken.rs).
#[tokio::test]
async fn folded_state_is_compared_with_the_mock_fold() {
    use serde_json::json;
    // The log is seq 1 running, seq 2 completed: a state folded through seq 1 is stale.
    let stale = play_folded(vec![json!({"kind": "folded", "run_id": "run-1",
        "snapshot": {"run_id": "run-1", "epoch": "e1", "as_of_seq": 1, "status": "running"}})])
    .await;
    let v = folded_violations(&stale);
    assert_eq!(v.len(), 1, "{}", stale.verdict.render());
    assert!(v[0].starts_with("RW-SNAP-2 "), "{v:?}");
    assert!(v[0].contains("as_of_seq: 1 (expected 2)"), "{v:?}");
    assert!(
        v[0].contains(r#"status: "running" (expected "completed")"#),
        "{v:?}"
    );

    let garbage = play_folded(vec![
        json!({"kind": "folded", "run_id": "run-1", "snapshot": {"as_of_seq": "two"}}),
    ])
    .await;
    let v = folded_violations(&garbage);
    assert_eq!(v.len(), 1, "{}", garbage.verdict.render());
    assert!(v[0].contains("is not a RunSnapshot"), "{v:?}");

    let other_run = play_folded(vec![json!({"kind": "folded", "run_id": "run-9",
        "snapshot": {"run_id": "run-9", "epoch": "e1", "as_of_seq": 0}})])
    .await;
    let v = folded_violations(&other_run);
    assert_eq!(v.len(), 1, "{}", other_run.verdict.render());
    assert!(v[0].contains("no folded state of this run"), "{v:?}");
}
