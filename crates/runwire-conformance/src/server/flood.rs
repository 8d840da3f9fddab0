//! Flood steps of the server suite (`features/server/flood.feature`, spec §2.3, §17,
//! `RW-SEC-10`, `RW-SEC-15`): a client that subscribes to and unsubscribes from many
//! runs nobody appends to, on a connection of its own, so that a server that forgets
//! (or bounds) runs without events has to do so while a scenario watches whether the
//! runs it keeps resuming still resume.
//!
//! The flood step opens a connection of its own (registered in `super::steps::flood`);
//! [`blame_epoch_mismatch`] reads the failures of the scenario's other steps.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::{
    ServerTarget,
    conn::{Conn, ConnectOptions},
    scaled,
};
use crate::runner::{Recorder, StepFail, StepResultT};

/// The flood step: `{n}` runs, in subscribe messages of at most the announced
/// `max_subscriptions` entries, each message answered before the next is sent.
pub(crate) const FLOOD: &str =
    "another client subscribes to and unsubscribes from {n} runs nobody appends to";

/// Runs the flood step on a connection of its own, recording into `rec`.
pub(crate) async fn flood(
    target: &Arc<ServerTarget>,
    scale: f64,
    seed: u64,
    rec: Recorder,
    n: u64,
) -> StepResultT {
    let limit = scaled(10_000, scale);
    let deadline = Instant::now() + limit + scaled(20_000, scale);
    let mut c = Conn::open(
        "flood",
        &target.ws_url,
        ConnectOptions::default(),
        rec.clone(),
        limit,
    )
    .await
    .map_err(StepFail::msg)?;
    let target = Arc::clone(target);
    let r = flood_on(&target, seed, &mut c, &rec, n, deadline).await;
    c.close().await;
    if let Some(v) = c.violations.first() {
        return Err(StepFail::req(v.requirement, v.message.clone()));
    }
    r
}

/// How the failure of a step after the flood step is read (only in a scenario that
/// flooded; elsewhere an `epoch_mismatch` reset is judged by its own step, e.g. as
/// `RW-RESUME-4`): a resume from a cursor taken before the run's first event that is
/// answered with an epoch_mismatch reset means the server did not honour the epoch it
/// told (RW-SEC-15); the reset itself is what RW-RESUME-7 asks for once the epochs
/// differ, so the generic step would blame the wrong requirement.
pub(crate) fn blame_epoch_mismatch(f: StepFail) -> StepFail {
    if f.message.contains("epoch_mismatch") {
        StepFail::req(
            "RW-SEC-15",
            format!(
                "the server did not honour the epoch it told when the run had \
                 no events: the resume from that cursor was reset ({})",
                f.message
            ),
        )
    } else {
        f
    }
}

/// Subscribes to and unsubscribes from `n` runs nobody appends to on `c`.
async fn flood_on(
    target: &ServerTarget,
    seed: u64,
    c: &mut Conn,
    rec: &Recorder,
    n: u64,
    deadline: Instant,
) -> StepResultT {
    let hello = Conn::hello(&["1.0".into()], target.token.as_deref(), Vec::new());
    c.send(&hello).await.map_err(StepFail::msg)?;
    let welcome = c.next_control(deadline).await.map_err(StepFail::msg)?;
    if welcome["type"] != "welcome" {
        return Err(StepFail::msg(format!("expected welcome, got {welcome}")));
    }
    let limit = |key: &str, default: u64| {
        welcome
            .pointer(&format!("/limits/{key}"))
            .and_then(Value::as_u64)
            .unwrap_or(default)
            .max(1)
    };
    // The connection keeps to the announced message rate by itself (`Conn::send`).
    let chunk = limit("max_subscriptions", 100).min(100);
    let prefix = format!("rwc-flood-{:016x}", seed ^ rand::random::<u64>());
    rec.note("flood", format!("{n} runs {prefix}-*, {chunk} per message"));
    let mut done = 0;
    while done < n {
        let ids: Vec<String> = (done..n.min(done + chunk))
            .map(|i| format!("{prefix}-{i}"))
            .collect();
        let subs: Vec<Value> = ids.iter().map(|id| json!({"run_id": id})).collect();
        for msg in [
            json!({"type": "subscribe", "subscriptions": subs}),
            json!({"type": "unsubscribe", "run_ids": ids}),
        ] {
            let want = if msg["type"] == "subscribe" {
                "subscribed"
            } else {
                "unsubscribed"
            };
            c.send(&msg).await.map_err(StepFail::msg)?;
            for id in &ids {
                let got = c.next_control(deadline).await.map_err(StepFail::msg)?;
                if got["type"] != want || got["run_id"] != json!(id) {
                    return Err(StepFail::req(
                        if want == "subscribed" {
                            "RW-EVENT-11"
                        } else {
                            "RW-SUB-4"
                        },
                        format!(
                            "expected {want} for {id} (a run nobody appended to), got {}",
                            super::conn::clip(&got.to_string())
                        ),
                    ));
                }
                if want == "subscribed" && got["head_seq"] != json!(0) {
                    return Err(StepFail::req(
                        "RW-EVENT-11",
                        format!("a run nobody appended to has head_seq 0, got {got}"),
                    ));
                }
            }
        }
        done += ids.len() as u64;
    }
    Ok(())
}
