//! Batching (`features/server/batching.feature`): when live events reach a client, and
//! in which frames.

use std::time::Duration;

use super::{Registry, ServerWorld, due_verdict};
use crate::{
    runner::{StepFail, StepResultT},
    server::conn::Conn,
};

pub(super) fn register(r: &mut Registry) {
    r.step(
        "event {n} of run {s} reached client {s} at once",
        reached_at_once,
    );
    r.step(
        "every event of run {s} reached client {s} within the announced batch window",
        within_batch_window,
    );
    r.step(
        "client {s} received run {s} in batch frames",
        received_in_batches,
    );
}

/// `event {n} of run {s} reached client {s} at once`
async fn reached_at_once(
    w: &mut ServerWorld,
    seq: u64,
    run: String,
    client: String,
) -> StepResultT {
    let id = w.run_id(&run);
    let acked = w
        .run(&run)
        .acked
        .iter()
        .find(|(q, _)| *q == seq)
        .map(|x| x.1);
    let Some(at) = acked else {
        return Err(StepFail::msg(format!(
            "step error: seq {seq} was not appended by this scenario"
        )));
    };
    let slack = w.ms(100);
    let extension = w.ms(1000);
    let c = w.client(&client)?;
    let arrival = |c: &Conn| {
        c.arrivals
            .iter()
            .find(|(r, q, _)| r == &id && *q == seq)
            .map(|x| x.2)
    };
    let what = format!(
        "event seq {seq} of {id} must be flushed at once (within {} ms of its append's acknowledgement)",
        slack.as_millis()
    );
    let got = c.wait_due(at + slack, extension, arrival).await;
    if let Some(f) = due_verdict(got, "RW-BATCH-3", &what, at, || c.nothing_msg()) {
        return Err(f);
    }
    Ok(())
}

/// `every event of run {s} reached client {s} within the announced batch window`
async fn within_batch_window(w: &mut ServerWorld, run: String, client: String) -> StepResultT {
    let id = w.run_id(&run);
    let window = w.welcome_u64(&client, "/batch_window_ms").unwrap_or(200);
    // The server's scheduling slack beyond the window; a later event is a
    // miss judged against the kit's lateness.
    let slack = w.ms(250);
    let extension = w.ms(1000);
    let acked = w.run(&run).acked.clone();
    let c = w.client(&client)?;
    for (seq, at) in acked {
        let due = at + Duration::from_millis(window) + slack;
        let arrival = |c: &Conn| {
            c.arrivals
                .iter()
                .find(|(r, q, _)| r == &id && *q == seq)
                .map(|x| x.2)
        };
        let what = format!(
            "event seq {seq} of {id} (due {window} ms, the announced window, + {} ms after its append was acknowledged)",
            slack.as_millis()
        );
        let got = c.wait_due(due, extension, arrival).await;
        if let Some(f) = due_verdict(got, "RW-BATCH-1", &what, at, || c.nothing_msg()) {
            return Err(f);
        }
    }
    Ok(())
}

/// `client {s} received run {s} in batch frames`
async fn received_in_batches(w: &mut ServerWorld, client: String, _run: String) -> StepResultT {
    let c = w.client(&client)?;
    if c.batches.is_empty() {
        return Err(StepFail::req(
            "RW-BATCH-5",
            format!(
                "no batch frame was received ({} single event frames)",
                c.singles
            ),
        ));
    }
    Ok(())
}
