//! Short retention (`features/server/retention.feature`, spec §4.4 `RW-INGEST-17`,
//! §8.3 `RW-RESUME-5`): runs the server declares it trims (`--short-retention`), their
//! history, and cursors into or before what it still keeps.

use serde_json::Value;
use tokio::time::Instant;

use super::{ANSWER_WAIT_MS, R, Registry, ServerWorld, progress_event, subscribe};
use crate::{
    runner::{StepFail, StepResultT},
    server::{ShortRetention, conn::clip},
};

pub(super) fn register(r: &mut Registry) {
    r.step(
        "the server declares a short retention for the runs named \"retained*\"",
        declares_short_retention,
    );
    r.step(
        "the producer appends events to run {s} until a history read after seq 1 answers 410",
        appends_until_trimmed,
    );
    r.step("the history of run {s} after its head minus the short retention is every retained event in order", retained_history);
    r.step(
        "the head of run {s} is within the replay window announced to client {s}",
        head_in_replay_window,
    );
    r.step(
        "client {s} subscribes to run {s} half the short retention before its head with epoch {s}",
        subscribes_half_retention_back,
    );
    r.step(
        "client {s} receives subscribed for run {s} from that cursor to its head",
        receives_subscribed_from_cursor,
    );
}

impl ServerWorld {
    /// The declared short retention, or not implemented.
    fn retention(&self) -> R<ShortRetention> {
        self.target.short_retention.clone().ok_or_else(|| {
            StepFail::not_implemented(
                "no --short-retention PREFIX=N given: retention scenarios need runs the server trims to a short retention",
            )
        })
    }

    /// Whether the first two events of run `alias` are trimmed:
    /// `GET …/events?after_seq=1` answers 410. A 200 that does not start at seq 2 is a
    /// silent gap (`RW-INGEST-17`: trimmed history is 410 `cursor_too_old`).
    async fn second_trimmed(&mut self, alias: &str) -> R<bool> {
        let id = self.run_id(alias);
        let head = self.run(alias).head;
        let a = self
            .http(
                "GET",
                &format!("/v1/runs/{id}/events?after_seq=1&limit=1"),
                self.token(),
                None,
            )
            .await?;
        match a.status {
            410 => Ok(true),
            200 => {
                let first = a.json().pointer("/events/0/seq").and_then(Value::as_u64);
                match first {
                    Some(2) => Ok(false),
                    Some(seq) if seq > 2 => Err(StepFail::req(
                        "RW-INGEST-17",
                        format!(
                            "GET /v1/runs/{id}/events?after_seq=1 answered 200 with events from seq {seq}: events 2 to {} are no longer retained, so the read must be answered 410 cursor_too_old, not with a gap",
                            seq.saturating_sub(1)
                        ),
                    )),
                    Some(seq) => Err(StepFail::req(
                        "RW-INGEST-16",
                        format!(
                            "GET /v1/runs/{id}/events?after_seq=1 answered 200 starting with seq {seq}, not after seq 1"
                        ),
                    )),
                    None => Err(StepFail::req(
                        "RW-INGEST-17",
                        format!(
                            "GET /v1/runs/{id}/events?after_seq=1 answered 200 without events although the head is {head}: events no longer retained must be answered 410 cursor_too_old"
                        ),
                    )),
                }
            }
            other => Err(StepFail::msg(format!(
                "GET /v1/runs/{id}/events?after_seq=1 answered {other} {}",
                clip(&String::from_utf8_lossy(&a.body))
            ))),
        }
    }
}

/// `the server declares a short retention for the runs named "retained*"`
async fn declares_short_retention(w: &mut ServerWorld) -> StepResultT {
    w.retention()?;
    Ok(())
}

/// `the producer appends events to run {s} until a history read after seq 1 answers 410`
async fn appends_until_trimmed(w: &mut ServerWorld, alias: String) -> StepResultT {
    let ret = w.retention()?;
    let id = w.run_id(&alias);
    if !id.starts_with(&ret.prefix) {
        return Err(StepFail::msg(format!(
            "step error: run {alias:?} ({id}) is not named with the short-retention prefix; use an alias starting with \"retained\""
        )));
    }
    let n = ret.events;
    // Bounded: the server keeps at least n events and trims "eventually";
    // 20 n + 1000 events is far past any reasonable trimming step.
    let cap = n.saturating_mul(20).saturating_add(1000);
    let batch = (n / 5).clamp(1, 500);
    // Past 2 n + 10 events any reasonable trimming step is due (the
    // reference trims once a run holds n + max(n / 10, 10)); from there on
    // trimming may run in the background, so the runner polls (bounded)
    // and appends only one more batch every 100 ms, for a server that trims
    // only when appended to.
    let enough = n.saturating_mul(2).saturating_add(10);
    // As long as any answer wait: trimming in the background may lag on a
    // busy disk; only a server that does not trim waits this long.
    let poll = ANSWER_WAIT_MS;
    let mut deadline = None;
    let mut appended = 0u64;
    let mut last_append = Instant::now();
    loop {
        let head = w.run(&alias).head;
        if head > n && w.second_trimmed(&alias).await? {
            return Ok(());
        }
        let now = Instant::now();
        if head >= enough {
            let dl = *deadline.get_or_insert_with(|| now + w.ms(poll));
            if now >= dl {
                return Err(StepFail::msg(format!(
                    "the server was declared (--short-retention {}={n}) to trim runs named {}* to their last {n} events, but after {appended} appended events (head {head}) and {poll} ms of polling, GET /v1/runs/{id}/events?after_seq=1 still answers 200 from seq 2: the declaration is wrong or the server does not trim within {poll} ms",
                    ret.prefix, ret.prefix
                )));
            }
        }
        if appended < cap && (head < enough || now >= last_append + w.ms(100)) {
            let k = batch.min(cap - appended);
            let evs = (1..=k).map(|i| progress_event(head + i, 0)).collect();
            w.append(&alias, evs, w.token()).await?;
            appended += k;
            last_append = Instant::now();
        } else {
            tokio::time::sleep(w.ms(20)).await;
        }
    }
}

/// `the history of run {s} after its head minus the short retention is every retained event in order`
async fn retained_history(w: &mut ServerWorld, run: String) -> StepResultT {
    let ret = w.retention()?;
    let id = w.run_id(&run);
    let head = w.run(&run).head;
    let after = head.saturating_sub(ret.events);
    let limit = ret.events.clamp(1, 10_000);
    let a = w
        .http(
            "GET",
            &format!("/v1/runs/{id}/events?after_seq={after}&limit={limit}"),
            w.token(),
            None,
        )
        .await?;
    if a.status != 200 {
        return Err(StepFail::req(
            "RW-INGEST-17",
            format!(
                "the last {} events of {id} must still be retained (declared retention), but the read after seq {after} answered {} {}",
                ret.events,
                a.status,
                clip(&String::from_utf8_lossy(&a.body))
            ),
        ));
    }
    let v = a.json();
    let seqs: Vec<u64> = v
        .get("events")
        .and_then(Value::as_array)
        .map(|e| {
            e.iter()
                .filter_map(|e| e.get("seq").and_then(Value::as_u64))
                .collect()
        })
        .unwrap_or_default();
    let want: Vec<u64> = (after + 1..=(after + limit).min(head)).collect();
    let got_head = v.get("head_seq").and_then(Value::as_u64);
    if seqs != want || got_head != Some(head) {
        return Err(StepFail::req(
            "RW-INGEST-16",
            format!(
                "the read after seq {after} must return seqs {}..={} and head_seq {head}, got head_seq {got_head:?} and seqs {}",
                after + 1,
                (after + limit).min(head),
                clip(&format!("{seqs:?}"))
            ),
        ));
    }
    Ok(())
}

/// `the head of run {s} is within the replay window announced to client {s}`
async fn head_in_replay_window(w: &mut ServerWorld, run: String, client: String) -> StepResultT {
    let window = w
        .welcome_u64(&client, "/replay_window_events")
        .ok_or_else(|| StepFail::msg("step error: no welcome"))?;
    let head = w.run(&run).head;
    if head > window {
        return Err(StepFail::not_implemented(format!(
            "the head {head} of the trimmed run exceeds the announced replay_window_events {window}, so a reset would not tell trimming from the replay window; declare a shorter --short-retention"
        )));
    }
    Ok(())
}

/// `client {s} subscribes to run {s} half the short retention before its head with epoch {s}`
async fn subscribes_half_retention_back(
    w: &mut ServerWorld,
    client: String,
    run: String,
    epoch: String,
) -> StepResultT {
    let ret = w.retention()?;
    let window = w
        .welcome_u64(&client, "/replay_window_events")
        .ok_or_else(|| StepFail::msg("step error: no welcome"))?;
    if ret.events / 2 > window {
        return Err(StepFail::not_implemented(format!(
            "half the declared retention ({}) exceeds the announced replay_window_events {window}",
            ret.events / 2
        )));
    }
    let after = w.run(&run).head.saturating_sub(ret.events / 2);
    w.sub_cursors.insert((client.clone(), run.clone()), after);
    subscribe::subscribes_with_epoch(w, client, run, after, epoch).await
}

/// `client {s} receives subscribed for run {s} from that cursor to its head`
async fn receives_subscribed_from_cursor(
    w: &mut ServerWorld,
    client: String,
    run: String,
) -> StepResultT {
    let after = *w
        .sub_cursors
        .get(&(client.clone(), run.clone()))
        .ok_or_else(|| StepFail::msg("step error: no computed cursor"))?;
    let head = w.run(&run).head;
    subscribe::receives_subscribed_with(w, client, run, after, head)
        .await
        .map_err(|e| {
            if e.message.contains("\"reset\"") {
                StepFail::req(
                    "RW-RESUME-7",
                    format!(
                        "after seq {after} every event up to the head {head} is retained and within the replay window, so the cursor must be replayed, not reset: {}",
                        e.message
                    ),
                )
            } else {
                e
            }
        })
}
