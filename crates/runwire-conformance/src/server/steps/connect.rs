//! The handshake (`features/server/handshake.feature`, `features/server/version.feature`):
//! connecting, hello in its forms, what welcome announces, and how a connection ends.

use runwire_mock::TimingMiss;
use serde_json::Value;
use tokio::time::Instant;

use super::{ANSWER_WAIT_MS, Registry, ServerWorld};
use crate::{
    runner::{StepFail, StepResultT},
    server::{conn::ConnectOptions, frames::Raw},
};

pub(super) fn register(r: &mut Registry) {
    r.step("client {s} was closed with reason {s}", closed_with_reason);
    r.step("a raw connection that never answers the close handshake is dropped within the pong timeout announced to client {s}", raw_close_handshake_dropped);
    r.step("client {s} connects", connects);
    r.step(
        "client {s} sends hello with versions {s}",
        hello_with_versions,
    );
    r.step(
        "client {s} sends hello subscribing to run {s} after seq {n}",
        hello_subscribing_after,
    );
    r.step(
        "client {s} sends hello subscribing to run {s}",
        hello_subscribing,
    );
    r.step("client {s} sends hello", hello);
    r.step("client {s} is connected", connected);
    r.step("client {s} closes the connection", closes);
    r.step("client {s} receives welcome", receives_welcome);
    r.step(
        "the first frame client {s} receives is welcome",
        first_frame_is_welcome,
    );
    r.step(
        "the welcome of client {s} announces version {s}",
        welcome_version,
    );
    r.step(
        "the welcome of client {s} announces a session id, timers and limits",
        welcome_complete,
    );
    r.step(
        "the welcome of client {s} announces limits {s} and {s}",
        welcome_limits,
    );
    r.step(
        "clients {s} and {s} have different session ids",
        distinct_sessions,
    );
}

/// `client {s} was closed with reason {s}`
async fn closed_with_reason(w: &mut ServerWorld, client: String, reason: String) -> StepResultT {
    let c = w.client(&client)?;
    let got = c.closed.as_ref().map(|x| x.1.clone());
    if got.as_deref() != Some(reason.as_str()) {
        return Err(StepFail::req(
            "RW-CLOSE-6",
            format!("expected close reason {reason:?}, got {got:?}"),
        ));
    }
    Ok(())
}

/// `a raw connection that never answers the close handshake is dropped within the pong timeout announced to client {s}`
async fn raw_close_handshake_dropped(w: &mut ServerWorld, client: String) -> StepResultT {
    use tokio::io::AsyncReadExt;
    let pong = w
        .welcome_u64(&client, "/pong_timeout_ms")
        .ok_or_else(|| StepFail::msg("step error: no welcome"))?;
    w.rec.out(
        "raw",
        "GET (upgrade), then silence: no hello, no close reply",
    );
    let dl = w.dl(ANSWER_WAIT_MS);
    let Raw {
        mut tcp,
        got: early,
    } = Raw::open(&w.target, dl).await?;
    let upgraded = Instant::now();
    // The hello deadline, then the close handshake's pong_timeout_ms, then
    // 500 ms for the server's timers; a later drop is a miss judged against
    // the kit's lateness (the kit keeps reading to measure it).
    let due = upgraded + w.ms(w.target.hello_timeout_ms + pong + 500);
    let end = due + w.ms(pong.max(1000));
    let mut buf = vec![0u8; 65536];
    let mut got = early;
    loop {
        match tokio::time::timeout_at(end, tcp.read(&mut buf)).await {
            Err(_) => {
                return Err(StepFail::timing(
                    "RW-CLOSE-9",
                    format!(
                        "the server still held the TCP connection {} ms after the upgrade (hello deadline {} ms + pong_timeout_ms {pong} + 500 ms) although the client never completed the close handshake",
                        upgraded.elapsed().as_millis(),
                        w.target.hello_timeout_ms
                    ),
                    TimingMiss::new(end - due, upgraded, Instant::now()),
                ));
            }
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    let dropped = Instant::now();
    if dropped > due {
        return Err(StepFail::timing(
            "RW-CLOSE-9",
            format!(
                "the server dropped the TCP connection {} ms after the upgrade, {} ms after the hello deadline {} ms + pong_timeout_ms {pong} + 500 ms",
                dropped.saturating_duration_since(upgraded).as_millis(),
                dropped.saturating_duration_since(due).as_millis(),
                w.target.hello_timeout_ms
            ),
            TimingMiss::new(dropped - due, upgraded, dropped),
        ));
    }
    w.rec.inn(
        "raw",
        &format!(
            "{} bytes, then the server dropped the connection after {} ms",
            got.len(),
            upgraded.elapsed().as_millis()
        ),
    );
    if !String::from_utf8_lossy(&got).contains("hello_timeout") {
        return Err(StepFail::req(
            "RW-CONN-3",
            "the raw connection was dropped without a hello_timeout error frame",
        ));
    }
    Ok(())
}

/// `client {s} connects`
async fn connects(w: &mut ServerWorld, client: String) -> StepResultT {
    w.connect(&client, ConnectOptions::default(), None).await
}

/// `client {s} sends hello with versions {s}`
async fn hello_with_versions(
    w: &mut ServerWorld,
    client: String,
    versions: Vec<String>,
) -> StepResultT {
    w.hello(&client, versions, w.token(), vec![]).await
}

/// `client {s} sends hello subscribing to run {s} after seq {n}`
async fn hello_subscribing_after(
    w: &mut ServerWorld,
    client: String,
    run: String,
    after: u64,
) -> StepResultT {
    let e = w.sub_entry(&run, Some(after), None);
    w.hello(&client, vec!["1.0".into()], w.token(), vec![e])
        .await
}

/// `client {s} sends hello subscribing to run {s}`
async fn hello_subscribing(w: &mut ServerWorld, client: String, run: String) -> StepResultT {
    let e = w.sub_entry(&run, None, None);
    w.hello(&client, vec!["1.0".into()], w.token(), vec![e])
        .await
}

/// `client {s} sends hello`
async fn hello(w: &mut ServerWorld, client: String) -> StepResultT {
    w.hello(&client, vec!["1.0".into()], w.token(), vec![])
        .await
}

/// `client {s} is connected`
async fn connected(w: &mut ServerWorld, client: String) -> StepResultT {
    let t = w.token();
    w.connected(&client, t).await
}

/// `client {s} closes the connection`
async fn closes(w: &mut ServerWorld, client: String) -> StepResultT {
    w.client(&client)?.close().await;
    Ok(())
}

/// `client {s} receives welcome`
async fn receives_welcome(w: &mut ServerWorld, client: String) -> StepResultT {
    w.expect_welcome(&client).await?;
    Ok(())
}

/// `the first frame client {s} receives is welcome`
async fn first_frame_is_welcome(w: &mut ServerWorld, client: String) -> StepResultT {
    let dl = w.dl(ANSWER_WAIT_MS);
    let c = w.client(&client)?;
    while c.frame_types.is_empty() {
        if !c.pump(dl).await {
            return Err(StepFail::req(
                "RW-CONN-6",
                format!("expected welcome; {}", c.nothing_msg()),
            ));
        }
    }
    if c.frame_types[0] != "welcome" {
        return Err(StepFail::req(
            "RW-CONN-6",
            format!("the first frame was {:?}, not welcome", c.frame_types[0]),
        ));
    }
    Ok(())
}

/// `the welcome of client {s} announces version {s}`
async fn welcome_version(w: &mut ServerWorld, client: String, version: String) -> StepResultT {
    let welcome = w.welcome_of(&client)?;
    if welcome.get("version").and_then(Value::as_str) != Some(version.as_str()) {
        return Err(StepFail::req(
            "RW-VERSION-2",
            format!(
                "expected welcome.version {version:?}, got {}",
                welcome.get("version").cloned().unwrap_or(Value::Null)
            ),
        ));
    }
    Ok(())
}

/// `the welcome of client {s} announces a session id, timers and limits`
async fn welcome_complete(w: &mut ServerWorld, client: String) -> StepResultT {
    let welcome = w.welcome_of(&client)?;
    let sid = welcome
        .get("session_id")
        .and_then(Value::as_str)
        .unwrap_or("");
    if sid.is_empty() || sid.len() > 128 {
        return Err(StepFail::req(
            "RW-CONN-9",
            format!("welcome.session_id must be 1-128 chars, got {sid:?}"),
        ));
    }
    for p in [
        "/heartbeat_interval_ms",
        "/pong_timeout_ms",
        "/limits/max_frame_bytes",
        "/limits/max_event_bytes",
        "/limits/max_subscriptions",
        "/limits/max_messages_per_second",
    ] {
        if welcome
            .pointer(p)
            .and_then(Value::as_u64)
            .is_none_or(|x| x == 0)
        {
            return Err(StepFail::req(
                "RW-CONN-7",
                format!("welcome lacks a positive {p}: {welcome}"),
            ));
        }
    }
    for p in ["/batch_window_ms", "/replay_window_events"] {
        if welcome.pointer(p).and_then(Value::as_u64).is_none() {
            return Err(StepFail::req(
                "RW-CONN-7",
                format!("welcome lacks {p}: {welcome}"),
            ));
        }
    }
    Ok(())
}

/// `the welcome of client {s} announces limits {s} and {s}`
async fn welcome_limits(
    w: &mut ServerWorld,
    client: String,
    first: String,
    second: String,
) -> StepResultT {
    let welcome = w.welcome_of(&client)?;
    for m in [first, second] {
        let ptr = format!("/limits/{m}");
        if welcome
            .pointer(&ptr)
            .and_then(Value::as_u64)
            .is_none_or(|x| x == 0)
        {
            return Err(StepFail::msg(format!(
                "welcome.limits lacks a positive {m}: {welcome}"
            )));
        }
    }
    Ok(())
}

/// `clients {s} and {s} have different session ids`
async fn distinct_sessions(w: &mut ServerWorld, a: String, b: String) -> StepResultT {
    let a1 = w.welcome_of(&a)?.get("session_id").cloned();
    let a2 = w.welcome_of(&b)?.get("session_id").cloned();
    if a1 == a2 {
        return Err(StepFail::req(
            "RW-CONN-9",
            format!("two connections share session_id {a1:?}"),
        ));
    }
    Ok(())
}
