//! Slow consumers (`features/server/slow.feature`, spec §15): a client that stops
//! reading while the producer appends large events.

use tokio::time::Instant;

use super::{Registry, ServerWorld, progress_event};
use crate::{
    runner::{StepFail, StepResultT},
    server::slow::SlowPlan,
};

pub(super) fn register(r: &mut Registry) {
    r.step("the producer appends events of {n} bytes to run {s} until client {s} must be closed as a slow consumer", appends_until_slow);
    r.step(
        "the producer appends {n} events of {n} bytes to run {s}",
        appends_big,
    );
    r.step("client {s} stops reading", stops_reading);
    r.step("client {s} resumes reading", resumes_reading);
}

/// `the producer appends events of {n} bytes to run {s} until client {s} must be closed as a slow consumer`
async fn appends_until_slow(
    w: &mut ServerWorld,
    size: u64,
    run: String,
    name: String,
) -> StepResultT {
    let Some(mut plan) = w.slow.remove(&name) else {
        return Err(StepFail::msg(format!(
            "step error: client {name:?} has not stopped reading"
        )));
    };
    w.rec.note(
        "runner",
        format!(
            "appending until the server must close client {name}: buffers {} B ({}), slow_consumer_max_bytes {}, slow_consumer_max_age_ms {}, batch_window_ms {}, read again by {} ms",
            plan.buffers,
            plan.buffers_source,
            plan.max_bytes,
            plan.max_age_ms,
            plan.batch_ms,
            plan.budget_end().saturating_duration_since(plan.paused_at).as_millis()
        ),
    );
    let mut res = Ok(());
    while plan.keep_appending(Instant::now()) {
        let base = w.run(&run).head;
        let evs = (1..=10)
            .map(|i| progress_event(base + i, size as usize))
            .collect();
        match w.append(&run, evs, w.token()).await {
            Ok(_) => plan.appended(10, size, Instant::now()),
            Err(e) => {
                res = Err(e);
                break;
            }
        }
    }
    w.slow.insert(name, plan);
    res
}

/// `the producer appends {n} events of {n} bytes to run {s}`
async fn appends_big(w: &mut ServerWorld, n: u64, size: u64, run: String) -> StepResultT {
    let size = size as usize;
    let base = w.run(&run).head;
    for chunk in (1..=n).collect::<Vec<_>>().chunks(10) {
        let evs = chunk
            .iter()
            .map(|i| progress_event(base + i, size))
            .collect();
        w.append(&run, evs, w.token()).await?;
    }
    Ok(())
}

/// `client {s} stops reading`
async fn stops_reading(w: &mut ServerWorld, client: String) -> StepResultT {
    let c = w.client(&client)?;
    c.set_paused(true);
    let welcome = c.welcome.as_ref().map(|w| w.0.clone()).unwrap_or_default();
    let plan = SlowPlan::new(
        c.paused_at.unwrap_or_else(Instant::now),
        &welcome,
        c.recv_buffer,
        w.target.send_buffer,
    );
    w.slow.insert(client, plan);
    Ok(())
}

/// `client {s} resumes reading`
async fn resumes_reading(w: &mut ServerWorld, client: String) -> StepResultT {
    if let Some(plan) = w.slow.get(&client) {
        let at = plan.resume_at();
        w.rec.note(
            "runner",
            format!(
                "client {client} reads again {} ms after it stopped ({})",
                at.saturating_duration_since(plan.paused_at).as_millis(),
                plan.obliged.as_ref().map_or(
                    "the server was not obliged to close it yet: the budget of 0.8 x pong_timeout_ms is spent".to_owned(),
                    |(t, why)| format!(
                        "obliged to close it at {} ms: {why}",
                        t.saturating_duration_since(plan.paused_at).as_millis()
                    )
                )
            ),
        );
        tokio::time::sleep_until(at).await;
    }
    w.client(&client)?.set_paused(false);
    if let Some(plan) = w.slow.get_mut(&client) {
        plan.resumed_at = Some(Instant::now());
    }
    Ok(())
}
