//! Heartbeats (`features/server/heartbeat.feature`): pings both ways, pongs, and a
//! connection that stays open.

use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};

use super::{ANSWER_WAIT_MS, Registry, ServerWorld, due_verdict};
use crate::runner::{StepFail, StepResultT};

pub(super) fn register(r: &mut Registry) {
    r.step("client {s} stops answering pings", stops_answering_pings);
    r.step("client {s} sends ping {s}", sends_ping);
    r.step("client {s} receives pong {s}", receives_pong);
    r.step("client {s} stays connected", stays_connected);
    r.step(
        "client {s} receives {n} pings, each within the announced heartbeat interval",
        receives_pings,
    );
}

/// `client {s} stops answering pings`
async fn stops_answering_pings(w: &mut ServerWorld, client: String) -> StepResultT {
    w.client(&client)?.set_auto_pong(false);
    Ok(())
}

/// `client {s} sends ping {s}`
async fn sends_ping(w: &mut ServerWorld, client: String, id: String) -> StepResultT {
    let m = json!({"type": "ping", "id": id});
    w.client(&client)?.send(&m).await.map_err(StepFail::msg)
}

/// `client {s} receives pong {s}`
async fn receives_pong(w: &mut ServerWorld, client: String, id: String) -> StepResultT {
    let v = w
        .expect_control(&client, "pong", ANSWER_WAIT_MS)
        .await
        .map_err(|e| StepFail::req("RW-HEART-7", e.message))?;
    if v.get("id").and_then(Value::as_str) != Some(id.as_str()) {
        return Err(StepFail::req(
            "RW-HEART-7",
            format!("expected pong with id {id:?}, got {v}"),
        ));
    }
    Ok(())
}

/// `client {s} stays connected`
async fn stays_connected(w: &mut ServerWorld, client: String) -> StepResultT {
    let pid = format!("alive-{}", w.rng.random::<u32>());
    let m = json!({"type": "ping", "id": pid});
    w.client(&client)?.send(&m).await.map_err(StepFail::msg)?;
    let dl = w.dl(ANSWER_WAIT_MS);
    let c = w.client(&client)?;
    loop {
        match c.next_control(dl).await {
            Ok(v)
                if v.get("type").and_then(Value::as_str) == Some("pong")
                    && v.get("id").and_then(Value::as_str) == Some(pid.as_str()) =>
            {
                break;
            }
            Ok(v) if v.get("type").and_then(Value::as_str) == Some("error") => {
                return Err(StepFail::msg(format!(
                    "expected the connection to stay open, got {v}"
                )));
            }
            Ok(_) => {}
            Err(e) => {
                return Err(StepFail::msg(format!(
                    "expected the connection to stay open; {e}"
                )));
            }
        }
    }
    Ok(())
}

/// `client {s} receives {n} pings, each within the announced heartbeat interval`
async fn receives_pings(w: &mut ServerWorld, client: String, n: u64) -> StepResultT {
    let n = n as usize;
    let hb = w
        .welcome_u64(&client, "/heartbeat_interval_ms")
        .ok_or_else(|| StepFail::msg("step error: no welcome"))?;
    // The server's own timer granularity: a tenth of the interval plus
    // 150 ms. A later ping is a miss, judged against the kit's lateness.
    let slack = w.ms(hb / 10 + 150);
    let extension = w.ms(hb.max(1000));
    let c = w.client(&client)?;
    let Some((_, w_at)) = c.welcome.clone() else {
        return Err(StepFail::msg("step error: no welcome"));
    };
    let interval = Duration::from_millis(hb);
    while c.pings.len() < n {
        let k = c.pings.len();
        let prev = c.pings.last().copied().unwrap_or(w_at);
        let due = prev + interval + slack;
        let what = format!(
            "ping {} (due within heartbeat_interval_ms {hb} + {} ms of the previous ping or welcome)",
            k + 1,
            slack.as_millis()
        );
        let got = c
            .wait_due(due, extension, |c| c.pings.get(k).copied())
            .await;
        if let Some(f) = due_verdict(got, "RW-HEART-1", &what, prev, || c.nothing_msg()) {
            return Err(f);
        }
    }
    Ok(())
}
