//! Resets (`features/server/reset.feature`, spec §8.3): cursors the server cannot
//! replay from, the reset it sends instead, and snapshots as the fold of the log.

use serde_json::Value;

use super::{ANSWER_WAIT_MS, R, Registry, ServerWorld, progress_event};
use crate::{
    runner::{StepFail, StepResultT},
    server::conn::clip,
};

pub(super) fn register(r: &mut Registry) {
    r.step(
        "the reset snapshot of client {s} has phase {s}",
        reset_phase,
    );
    r.step("the producer appends more events than the replay window announced to client {s} to run {s}", appends_past_replay_window);
    r.step(
        "client {s} receives reset for run {s} with reason {s} as of its head",
        receives_reset_at_head,
    );
    r.step(
        "the snapshot of run {s} over HTTP is the fold of its history by the spec's table",
        snapshot_is_fold,
    );
    r.step("the reset snapshot of client {s} is the fold of the history of run {s} by the spec's table", reset_is_fold);
    r.step(
        "client {s} receives reset for run {s} with reason {s} as of seq {n}",
        receives_reset,
    );
    r.step(
        "the reset snapshot of client {s} equals the snapshot of run {s} read over HTTP",
        reset_matches_http,
    );
    r.step(
        "the reset snapshot of client {s} has status {s}",
        reset_status,
    );
}

impl ServerWorld {
    /// Every event of run `id` with `seq` 1 through `through`, read over HTTP in pages
    /// (`RW-INGEST-16`).
    async fn history_through(&mut self, id: &str, through: u64) -> R<Vec<Value>> {
        let mut out = Vec::new();
        let mut after = 0u64;
        while after < through {
            let a = self
                .http(
                    "GET",
                    &format!("/v1/runs/{id}/events?after_seq={after}&limit=1000"),
                    self.token(),
                    None,
                )
                .await?;
            if a.status != 200 {
                return Err(StepFail::req(
                    "RW-INGEST-16",
                    format!(
                        "a history read after seq {after} of {id} answered {}",
                        a.status
                    ),
                ));
            }
            let page = a
                .json()
                .get("events")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let Some(last) = page
                .last()
                .and_then(|e| e.get("seq"))
                .and_then(Value::as_u64)
            else {
                return Err(StepFail::req(
                    "RW-INGEST-16",
                    format!(
                        "a history read after seq {after} of {id} returned no events, but the snapshot is as of seq {through}"
                    ),
                ));
            };
            out.extend(page.into_iter().filter(|e| {
                e.get("seq")
                    .and_then(Value::as_u64)
                    .is_some_and(|q| q <= through)
            }));
            if last <= after {
                break;
            }
            after = last;
        }
        Ok(out)
    }
}

/// `the reset snapshot of client {s} has phase {s}`
async fn reset_phase(w: &mut ServerWorld, client: String, phase: String) -> StepResultT {
    let Some(r) = w.resets.get(&client) else {
        return Err(StepFail::msg("step error: no reset received"));
    };
    let ph = r.pointer("/snapshot/phase").and_then(Value::as_str);
    if ph != Some(phase.as_str()) {
        return Err(StepFail::req(
            "RW-SNAP-2",
            format!("expected snapshot.phase {phase:?}, got {ph:?}"),
        ));
    }
    Ok(())
}

/// `the producer appends more events than the replay window announced to client {s} to run {s}`
async fn appends_past_replay_window(
    w: &mut ServerWorld,
    client: String,
    run: String,
) -> StepResultT {
    let window = w
        .welcome_u64(&client, "/replay_window_events")
        .ok_or_else(|| StepFail::msg("step error: no welcome"))?;
    if window > 5000 {
        return Err(StepFail::not_implemented(format!(
            "the announced replay_window_events {window} is too large to exceed in a test"
        )));
    }
    let base = w.run(&run).head;
    let n = window + 5;
    for chunk in (1..=n).collect::<Vec<_>>().chunks(500) {
        let evs = chunk.iter().map(|i| progress_event(base + i, 0)).collect();
        w.append(&run, evs, w.token()).await?;
    }
    Ok(())
}

/// `client {s} receives reset for run {s} with reason {s} as of its head`
async fn receives_reset_at_head(
    w: &mut ServerWorld,
    client: String,
    run: String,
    reason: String,
) -> StepResultT {
    let head = w.run(&run).head;
    receives_reset(w, client, run, reason, head).await
}

/// `the snapshot of run {s} over HTTP is the fold of its history by the spec's table`
async fn snapshot_is_fold(w: &mut ServerWorld, run: String) -> StepResultT {
    is_fold(w, None, run).await
}

/// `the reset snapshot of client {s} is the fold of the history of run {s} by the spec's table`
async fn reset_is_fold(w: &mut ServerWorld, client: String, run: String) -> StepResultT {
    is_fold(w, Some(client), run).await
}

/// Whether the reset snapshot of `client`, or without one the snapshot of run `alias`
/// read over HTTP, is the fold of the run's history by the table of spec §8.3.
async fn is_fold(w: &mut ServerWorld, client: Option<String>, alias: String) -> StepResultT {
    let id = w.run_id(&alias);
    let (snap, req, what) = match &client {
        Some(name) => {
            let r = w
                .resets
                .get(name)
                .cloned()
                .ok_or_else(|| StepFail::msg("step error: no reset received"))?;
            (
                r.get("snapshot").cloned().unwrap_or(Value::Null),
                "RW-RESUME-8",
                format!("the reset snapshot of client {name}"),
            )
        }
        None => {
            let a = w
                .http("GET", &format!("/v1/runs/{id}"), w.token(), None)
                .await?;
            if a.status != 200 {
                return Err(StepFail::req(
                    "RW-INGEST-15",
                    format!("GET /v1/runs/{id} answered {}", a.status),
                ));
            }
            (a.json(), "RW-SNAP-1", "GET /v1/runs/{id}".to_owned())
        }
    };
    let as_of = snap.get("as_of_seq").and_then(Value::as_u64).unwrap_or(0);
    let epoch = snap
        .get("epoch")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let history = w.history_through(&id, as_of).await?;
    let want = crate::fold::fold(&id, &epoch, &history);
    let diffs = crate::fold::diff(&want, &snap);
    if !diffs.is_empty() {
        // Name the row of the table that the first difference breaks.
        let first = &diffs[0];
        let req = if first.starts_with("run_id")
            || first.starts_with("epoch")
            || first.starts_with("as_of_seq")
        {
            req
        } else {
            "RW-SNAP-2"
        };
        return Err(StepFail::req(
            req,
            format!(
                "{what} (as_of_seq {as_of}) is not the fold of events 1 to {as_of} by the table of spec §8.3: {}{}",
                diffs.iter().take(4).cloned().collect::<Vec<_>>().join("; "),
                if diffs.len() > 4 {
                    format!("; and {} more", diffs.len() - 4)
                } else {
                    String::new()
                }
            ),
        ));
    }
    Ok(())
}

/// `client {s} receives reset for run {s} with reason {s} as of seq {n}`
async fn receives_reset(
    w: &mut ServerWorld,
    client: String,
    run: String,
    want_reason: String,
    want_as_of: u64,
) -> StepResultT {
    let id = w.run_id(&run);
    // The requirement that asks for this reason (spec §8.3).
    let want_req = match want_reason.as_str() {
        "epoch_mismatch" => "RW-RESUME-4",
        "cursor_ahead" => "RW-RESUME-6",
        _ => "RW-RESUME-5",
    };
    let v = w
        .expect_control(&client, "reset", ANSWER_WAIT_MS)
        .await
        .map_err(|e| StepFail::req(want_req, format!("for run {id}: {}", e.message)))?;
    let reason = v.get("reason").and_then(Value::as_str).unwrap_or("");
    let as_of = v.pointer("/snapshot/as_of_seq").and_then(Value::as_u64);
    if v.get("run_id").and_then(Value::as_str) != Some(id.as_str()) || reason != want_reason {
        return Err(StepFail::req(
            want_req,
            format!("expected reset of {id} with reason {want_reason}, got {v}"),
        ));
    }
    if as_of != Some(want_as_of) {
        return Err(StepFail::req(
            "RW-RESUME-8",
            format!("expected snapshot.as_of_seq {want_as_of}, got {as_of:?}"),
        ));
    }
    let ep = v.get("epoch");
    if v.pointer("/snapshot/epoch") != ep || v.pointer("/snapshot/run_id") != v.get("run_id") {
        return Err(StepFail::req(
            "RW-RESUME-8",
            format!("reset epoch/run_id differ from snapshot's: {v}"),
        ));
    }
    w.resets.insert(client, v);
    Ok(())
}

/// `the reset snapshot of client {s} equals the snapshot of run {s} read over HTTP`
async fn reset_matches_http(w: &mut ServerWorld, client: String, run: String) -> StepResultT {
    let Some(r) = w.resets.get(&client).cloned() else {
        return Err(StepFail::msg("step error: no reset received"));
    };
    let id = w.run_id(&run);
    let a = w
        .http("GET", &format!("/v1/runs/{id}"), w.token(), None)
        .await?;
    let snap = a.json();
    let mut want = r.get("snapshot").cloned().unwrap_or(Value::Null);
    let mut got = snap.clone();
    if got.get("as_of_seq") != want.get("as_of_seq") {
        return Err(StepFail::msg(format!(
            "step error: the run moved on (HTTP as_of_seq {:?}, reset {:?})",
            got.get("as_of_seq"),
            want.get("as_of_seq")
        )));
    }
    if let (Some(w), Some(g)) = (want.as_object_mut(), got.as_object_mut()) {
        w.remove("updated_at");
        g.remove("updated_at");
    }
    if want != got {
        return Err(StepFail::req(
            "RW-SNAP-5",
            format!(
                "reset snapshot {} differs from GET /v1/runs snapshot {}",
                clip(&want.to_string()),
                clip(&got.to_string())
            ),
        ));
    }
    Ok(())
}

/// `the reset snapshot of client {s} has status {s}`
async fn reset_status(w: &mut ServerWorld, client: String, status: String) -> StepResultT {
    let Some(r) = w.resets.get(&client) else {
        return Err(StepFail::msg("step error: no reset received"));
    };
    let st = r.pointer("/snapshot/status").and_then(Value::as_str);
    if st != Some(status.as_str()) {
        return Err(StepFail::req(
            "RW-SNAP-2",
            format!("expected snapshot.status {status:?}, got {st:?}"),
        ));
    }
    Ok(())
}
