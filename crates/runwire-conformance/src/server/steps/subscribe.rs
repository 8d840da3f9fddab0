//! Subscriptions (`features/server/subscribe.feature`, `features/server/replay.feature`):
//! subscribing from a cursor, unsubscribing, resuming on the same or a new connection,
//! and what the server answers.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use serde_json::{Value, json};
use tokio::{task::JoinHandle, time::Instant};

use super::{ANSWER_WAIT_MS, R, Registry, ServerWorld, progress_event};
use crate::{
    http::request,
    runner::{StepFail, StepResultT},
    server::conn::ConnectOptions,
};

pub(super) fn register(r: &mut Registry) {
    r.step(
        "client {s} subscribes to run {s} and unsubscribes {n} times while the producer appends to it without pause",
        subscribe_churn,
    );
    r.step(
        "client {s} subscribes to run {s} after seq {n} with epoch {s}",
        subscribes_with_epoch,
    );
    r.step(
        "client {s} subscribes to run {s} after seq {n}",
        subscribes_after,
    );
    r.step("client {s} subscribes to runs {s}", subscribes_many);
    r.step("client {s} subscribes to run {s}", subscribes);
    r.step("client {s} unsubscribes from run {s}", unsubscribes);
    r.step(
        "client {s} resubscribes to run {s} from its cursor",
        resubscribes,
    );
    r.step(
        "client {s} reconnects and resumes run {s} from its cursor",
        reconnects,
    );
    r.step(
        "client {s} receives subscribed for run {s} with after_seq {n} and head_seq {n}",
        receives_subscribed_with,
    );
    r.step(
        "client {s} receives subscribed for run {s}",
        receives_subscribed,
    );
    r.step(
        "client {s} receives unsubscribed for run {s}",
        receives_unsubscribed,
    );
}

impl ServerWorld {
    /// The head of run `id` over HTTP (0 when it does not exist yet).
    async fn run_head_over_http(&mut self, id: &str) -> R<u64> {
        let a = request(
            &self.target.ingest_url,
            "GET",
            &format!("/v1/runs/{id}/events?after_seq=0&limit=1"),
            self.token().as_deref(),
            None,
            self.ms(10_000),
        )
        .await
        .map_err(|e| StepFail::msg(format!("GET history of {id}: {e}")))?;
        Ok(a.json()
            .get("head_seq")
            .and_then(Value::as_u64)
            .unwrap_or(0))
    }
}

/// A producer that appends to run `id` one event at a time, without pause, until
/// `stop`; it yields how many appends were acknowledged.
fn producer_without_pause(
    w: &ServerWorld,
    id: &str,
    stop: &Arc<AtomicBool>,
) -> JoinHandle<Result<u64, String>> {
    let stop = Arc::clone(stop);
    let base = w.target.ingest_url.clone();
    let token = w.token();
    let path = format!("/v1/runs/{id}/events");
    let limit = w.ms(10_000);
    tokio::spawn(async move {
        let mut acked = 0u64;
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let body =
                serde_json::to_vec(&json!({"events": [progress_event(i, 0)]})).unwrap_or_default();
            match request(&base, "POST", &path, token.as_deref(), Some(&body), limit).await {
                Ok(a) if a.status == 200 => acked += 1,
                Ok(a) => {
                    return Err(format!("an append was answered {}", a.status));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(acked)
    })
}

/// `client {s} subscribes to run {s} and unsubscribes {n} times while the producer appends to it without pause`
///
/// The hand-off from replay to live events (§8.2, RW-RESUME-1): a server that attaches
/// its live feed and reads the head at two moments must drop live events at or below
/// the head, or an event appended in between arrives twice. The window is inside the
/// server; the kit makes hitting it likely by appending without pause while it opens
/// many subscriptions, each resuming a few events behind the head, so every opening
/// has a replay and a hand-off. Every frame is checked as it arrives (no duplicate, no
/// gap, nothing outside a subscription).
async fn subscribe_churn(w: &mut ServerWorld, name: String, alias: String, n: u64) -> StepResultT {
    let id = w.run_id(&alias);
    let stop = Arc::new(AtomicBool::new(false));
    let producer = producer_without_pause(w, &id, &stop);
    // Let the run exist before the first subscription.
    let first = w.dl(5000);
    while w.run_head_over_http(&id).await? == 0 {
        if Instant::now() > first {
            return Err(StepFail::req(
                "RW-INGEST-1",
                "no append was acknowledged within 5 s",
            ));
        }
        tokio::time::sleep(w.ms(10)).await;
    }
    let mut result = Ok(());
    for round in 0..n {
        let last = w
            .clients
            .get(&name)
            .and_then(|c| c.cursors.get(&id))
            .map_or(0, |c| c.1);
        let after = last.saturating_sub(3);
        let entry = json!({"run_id": id, "after_seq": after});
        if let Err(e) = w.subscribe(&name, vec![entry]).await {
            result = Err(e);
            break;
        }
        let v = match w.expect_control(&name, "subscribed", ANSWER_WAIT_MS).await {
            Ok(v) => v,
            Err(e) => {
                result = Err(StepFail::req(
                    "RW-SUB-1",
                    format!("round {round}: {}", e.message),
                ));
                break;
            }
        };
        // Wait for the replay and at least one live event after it.
        let head = v.get("head_seq").and_then(Value::as_u64).unwrap_or(0);
        let dl = w.dl(ANSWER_WAIT_MS);
        let c = w.client(&name)?;
        while c.cursors.get(&id).map_or(0, |x| x.1) <= head {
            if !c.pump(dl).await {
                result = Err(StepFail::req(
                    "RW-RESUME-1",
                    format!(
                        "round {round}: subscribed after seq {after} with head {head}, but the events up to and past the head did not all arrive; {}",
                        c.nothing_msg()
                    ),
                ));
                break;
            }
        }
        if result.is_err() {
            break;
        }
        let m = json!({"type": "unsubscribe", "run_ids": [id.clone()]});
        if let Err(e) = w.client(&name)?.send(&m).await {
            result = Err(StepFail::msg(e));
            break;
        }
        if let Err(e) = w
            .expect_control(&name, "unsubscribed", ANSWER_WAIT_MS)
            .await
        {
            result = Err(StepFail::req(
                "RW-SUB-4",
                format!("round {round}: {}", e.message),
            ));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let acked = producer
        .await
        .map_err(|e| StepFail::msg(format!("producer task: {e}")))?
        .map_err(|e| StepFail::req("RW-INGEST-1", e))?;
    w.rec.note(
        "producer",
        format!("{acked} appends acknowledged while the client opened {n} subscriptions"),
    );
    result
}

/// `client {s} subscribes to run {s} after seq {n} with epoch {s}` (`current`: the
/// run's epoch from the append answers).
pub(super) async fn subscribes_with_epoch(
    w: &mut ServerWorld,
    client: String,
    run: String,
    after: u64,
    epoch: String,
) -> StepResultT {
    let ep = match epoch.as_str() {
        "current" => w.run(&run).epoch.clone().unwrap_or_default(),
        other => other.to_owned(),
    };
    let e = w.sub_entry(&run, Some(after), Some(ep));
    w.subscribe(&client, vec![e]).await
}

/// `client {s} subscribes to run {s} after seq {n}`
async fn subscribes_after(
    w: &mut ServerWorld,
    client: String,
    run: String,
    after: u64,
) -> StepResultT {
    let e = w.sub_entry(&run, Some(after), None);
    w.subscribe(&client, vec![e]).await
}

/// `client {s} subscribes to runs {s}` (a comma-separated list of runs)
async fn subscribes_many(w: &mut ServerWorld, client: String, runs: Vec<String>) -> StepResultT {
    let entries = runs.iter().map(|al| w.sub_entry(al, None, None)).collect();
    w.subscribe(&client, entries).await
}

/// `client {s} subscribes to run {s}`
async fn subscribes(w: &mut ServerWorld, client: String, run: String) -> StepResultT {
    let e = w.sub_entry(&run, None, None);
    w.subscribe(&client, vec![e]).await
}

/// `client {s} unsubscribes from run {s}`
async fn unsubscribes(w: &mut ServerWorld, client: String, run: String) -> StepResultT {
    let id = w.run_id(&run);
    w.client(&client)?
        .send(&json!({"type": "unsubscribe", "run_ids": [id]}))
        .await
        .map_err(StepFail::msg)
}

/// `client {s} resubscribes to run {s} from its cursor`
async fn resubscribes(w: &mut ServerWorld, client: String, run: String) -> StepResultT {
    let id = w.run_id(&run);
    let (ep, after) = w
        .client(&client)?
        .cursors
        .get(&id)
        .cloned()
        .unwrap_or((None, 0));
    let e = w.sub_entry(&run, Some(after), ep);
    w.subscribe(&client, vec![e]).await
}

/// `client {s} reconnects and resumes run {s} from its cursor`
async fn reconnects(w: &mut ServerWorld, client: String, run: String) -> StepResultT {
    let id = w.run_id(&run);
    let (ep, after) = w
        .clients
        .get(&client)
        .and_then(|c| c.cursors.get(&id).cloned())
        .unwrap_or((None, 0));
    if let Some(c) = w.clients.get_mut(&client)
        && c.closed.is_none()
        && !c.ended
    {
        c.close().await;
    }
    w.rec.note(
        &client,
        format!("resuming {id} after seq {after} epoch {ep:?}"),
    );
    w.connect(&client, ConnectOptions::default(), None).await?;
    let e = w.sub_entry(&run, Some(after), ep);
    w.hello(&client, vec!["1.0".into()], w.token(), vec![e])
        .await?;
    w.expect_welcome(&client).await?;
    Ok(())
}

/// Receives `subscribed` for run `run` on client `client`, with `after_seq` and
/// `head_seq` as `expected` when given.
async fn expect_subscribed(
    w: &mut ServerWorld,
    client: &str,
    run: &str,
    expected: Option<(u64, u64)>,
) -> R<()> {
    let id = w.run_id(run);
    let v = w
        .expect_control(client, "subscribed", ANSWER_WAIT_MS)
        .await
        .map_err(|e| {
            // A reset where a replay was due breaks RW-RESUME-7; anything else (an
            // error, nothing) leaves the entry unanswered.
            let req = if e.message.contains("\"type\":\"reset\"") {
                "RW-RESUME-7"
            } else {
                "RW-SUB-1"
            };
            StepFail::req(req, format!("for run {id}: {}", e.message))
        })?;
    if v.get("run_id").and_then(Value::as_str) != Some(id.as_str()) {
        return Err(StepFail::req(
            "RW-SUB-1",
            format!("expected subscribed for {id}, got {v}"),
        ));
    }
    let epoch = v.get("epoch").and_then(Value::as_str).map(str::to_owned);
    let known = w.run(run).epoch.clone();
    if let (Some(k), Some(e)) = (&known, &epoch)
        && k != e
    {
        return Err(StepFail::req(
            "RW-SUB-2",
            format!("subscribed.epoch {e:?} is not the run's epoch {k:?} from the append answer"),
        ));
    }
    if known.is_none() {
        w.run(run).epoch = epoch;
    }
    if let Some((af, hd)) = expected {
        let gaf = v.get("after_seq").and_then(Value::as_u64);
        let ghd = v.get("head_seq").and_then(Value::as_u64);
        if gaf != Some(af) || ghd != Some(hd) {
            return Err(StepFail::req(
                "RW-SUB-2",
                format!(
                    "expected subscribed after_seq {af} head_seq {hd}, got after_seq {gaf:?} head_seq {ghd:?}"
                ),
            ));
        }
    }
    Ok(())
}

/// `client {s} receives subscribed for run {s} with after_seq {n} and head_seq {n}`
pub(super) async fn receives_subscribed_with(
    w: &mut ServerWorld,
    client: String,
    run: String,
    after: u64,
    head: u64,
) -> StepResultT {
    expect_subscribed(w, &client, &run, Some((after, head))).await
}

/// `client {s} receives subscribed for run {s}`
async fn receives_subscribed(w: &mut ServerWorld, client: String, run: String) -> StepResultT {
    expect_subscribed(w, &client, &run, None).await
}

/// `client {s} receives unsubscribed for run {s}`
async fn receives_unsubscribed(w: &mut ServerWorld, client: String, run: String) -> StepResultT {
    let id = w.run_id(&run);
    let v = w
        .expect_control(&client, "unsubscribed", ANSWER_WAIT_MS)
        .await
        .map_err(|e| StepFail::req("RW-SUB-4", e.message))?;
    if v.get("run_id").and_then(Value::as_str) != Some(id.as_str()) {
        return Err(StepFail::req(
            "RW-SUB-4",
            format!("expected unsubscribed for {id}, got {v}"),
        ));
    }
    Ok(())
}
