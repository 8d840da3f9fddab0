//! Limits (`features/server/limits.feature`): frames, events, subscriptions and
//! messages over what the server announced.

use serde_json::{Value, json};

use super::{ANSWER_WAIT_MS, Registry, ServerWorld, progress_event};
use crate::runner::{StepFail, StepResultT};

pub(super) fn register(r: &mut Registry) {
    r.step(
        "client {s} sends more pings at once than the announced max_messages_per_second",
        pings_over_rate,
    );
    r.step("the producer posts an event larger than the max_event_bytes announced to client {s} to run {s}", posts_too_large);
    r.step(
        "client {s} sends a frame larger than the announced max_frame_bytes",
        sends_over_max_frame,
    );
    r.step(
        "client {s} sends a ping frame of exactly the announced max_frame_bytes",
        sends_max_frame,
    );
    r.step("client {s} sends {n} pings at once", sends_pings);
    r.step(
        "client {s} subscribes to one run more than the announced max_subscriptions",
        subscribes_over_limit,
    );
}

/// `client {s} sends more pings at once than the announced max_messages_per_second`
async fn pings_over_rate(w: &mut ServerWorld, client: String) -> StepResultT {
    let max = w
        .welcome_u64(&client, "/limits/max_messages_per_second")
        .ok_or_else(|| StepFail::msg("step error: no welcome"))?;
    if max > 10_000 {
        return Err(StepFail::not_implemented(format!(
            "the announced max_messages_per_second {max} is too large to exceed in a test"
        )));
    }
    send_pings(w, &client, max + max / 2 + 5).await
}

/// `the producer posts an event larger than the max_event_bytes announced to client {s} to run {s}`
async fn posts_too_large(w: &mut ServerWorld, client: String, run: String) -> StepResultT {
    let max = w
        .welcome_u64(&client, "/limits/max_event_bytes")
        .ok_or_else(|| StepFail::msg("step error: no welcome"))?;
    let id = w.run_id(&run);
    let evs = vec![progress_event(1, 0), progress_event(2, max as usize + 10)];
    let body = serde_json::to_vec(&json!({ "events": evs })).unwrap_or_default();
    w.http(
        "POST",
        &format!("/v1/runs/{id}/events"),
        w.token(),
        Some(body),
    )
    .await?;
    Ok(())
}

/// `client {s} sends a frame larger than the announced max_frame_bytes`
async fn sends_over_max_frame(w: &mut ServerWorld, client: String) -> StepResultT {
    send_ping_of_max_frame(w, &client, 1).await
}

/// `client {s} sends a ping frame of exactly the announced max_frame_bytes`
async fn sends_max_frame(w: &mut ServerWorld, client: String) -> StepResultT {
    send_ping_of_max_frame(w, &client, 0).await
}

/// Client `name` sends a ping frame `over` bytes longer than the announced
/// `max_frame_bytes`.
async fn send_ping_of_max_frame(w: &mut ServerWorld, name: &str, over: usize) -> StepResultT {
    let max = w
        .welcome_u64(name, "/limits/max_frame_bytes")
        .unwrap_or(u64::from(runwire_protocol::defaults::MAX_FRAME_BYTES)) as usize;
    let head = r#"{"type":"ping","id":"big","pad":""#;
    let tail = r#""}"#;
    let target = max + over;
    let pad = target.saturating_sub(head.len() + tail.len());
    let text = format!("{head}{}{tail}", "p".repeat(pad));
    w.client(name)?.send_text(text).await.map_err(StepFail::msg)
}

/// Client `name` sends `n` pings at once (until the server closes the connection).
async fn send_pings(w: &mut ServerWorld, name: &str, n: u64) -> StepResultT {
    for i in 0..n {
        let m = json!({"type": "ping", "id": format!("flood-{i}")});
        let c = w.client(name)?;
        // "At once": faster than the announced rate when the step asks for more.
        if c.send_unpaced(&m).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// `client {s} sends {n} pings at once`
async fn sends_pings(w: &mut ServerWorld, client: String, n: u64) -> StepResultT {
    send_pings(w, &client, n).await
}

/// `client {s} subscribes to one run more than the announced max_subscriptions`
async fn subscribes_over_limit(w: &mut ServerWorld, client: String) -> StepResultT {
    let max = w
        .welcome_u64(&client, "/limits/max_subscriptions")
        .ok_or_else(|| StepFail::msg("step error: no welcome yet"))?;
    if max > 1000 {
        return Err(StepFail::not_implemented(format!(
            "the announced max_subscriptions {max} is too large to exceed in a test"
        )));
    }
    let entries: Vec<Value> = (0..=max)
        .map(|i| w.sub_entry(&format!("lim{i}"), None, None))
        .collect();
    w.subscribe(&client, entries).await?;
    for i in 0..max {
        let id = w.run_id(&format!("lim{i}"));
        let v = w
            .expect_control(&client, "subscribed", ANSWER_WAIT_MS)
            .await
            .map_err(|e| {
                StepFail::req(
                    "RW-LIMIT-3",
                    format!("entry {i} within the limit: {}", e.message),
                )
            })?;
        if v.get("run_id").and_then(Value::as_str) != Some(id.as_str()) {
            return Err(StepFail::req(
                "RW-SUB-1",
                format!("expected subscribed for {id}, got {v}"),
            ));
        }
    }
    let over = w.run_id(&format!("lim{max}"));
    let v = w
        .expect_control(&client, "error", ANSWER_WAIT_MS)
        .await
        .map_err(|e| {
            StepFail::req(
                "RW-LIMIT-3",
                format!("the entry over the limit: {}", e.message),
            )
        })?;
    if v.get("code").and_then(Value::as_str) != Some("too_many_subscriptions")
        || v.get("run_id").and_then(Value::as_str) != Some(over.as_str())
    {
        return Err(StepFail::req(
            "RW-LIMIT-3",
            format!("expected error too_many_subscriptions for {over}, got {v}"),
        ));
    }
    Ok(())
}
