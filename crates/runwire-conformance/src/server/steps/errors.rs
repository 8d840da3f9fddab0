//! Error frames and closes (steps of most features, spec §11): the error a client
//! receives, the close that follows a closing one, and what the last error carries.

use std::time::Duration;

use runwire_mock::TimingMiss;
use serde_json::Value;
use tokio::time::Instant;

use super::{ANSWER_WAIT_MS, R, Registry, ServerWorld};
use crate::runner::{StepFail, StepResultT};

pub(super) fn register(r: &mut Registry) {
    r.step(
        "client {s} receives error {s} and is closed with code {n}",
        receives_error_and_close,
    );
    r.step(
        "client {s} receives error {s} for run {s}",
        receives_error_for_run,
    );
    r.step("client {s} receives error {s}", receives_error);
    r.step("client {s} is closed with code {n}", closed_with_code);
    r.step(
        "the last error of client {s} carries retry_after_ms",
        error_has_retry_after,
    );
    r.step(
        "the last error of client {s} lists supported_versions {s}",
        error_lists_versions,
    );
    r.step(
        "the last error of client {s} has retryable {w}",
        error_retryable,
    );
    r.step(
        "the last error of client {s} has a message containing {s}",
        error_message_contains,
    );
}

/// The next error frame of client `name`, which must have code `want`.
async fn next_error(w: &mut ServerWorld, name: &str, want: &str) -> R<Value> {
    // The hello deadline is declared (--hello-timeout-ms), not announced: a server
    // without one is named for it (RW-CONN-3) once the deadline plus 2 s has passed,
    // rather than by the scenario's timeout.
    let hello_deadline = (want == "hello_timeout")
        .then_some(w.target.hello_timeout_ms)
        .filter(|_| w.clients.get(name).is_some_and(|c| c.hello_sent.is_none()));
    let wait = match hello_deadline {
        Some(h) => h + 2000 + 2000,
        None => w.timer_wait(name),
    };
    // A client that stopped reading: what it failed to see is judged against when the
    // server was obliged to close it (§15).
    let slow = (want == "slow_consumer")
        .then(|| w.slow.get(name).cloned())
        .flatten();
    let got = w.expect_control(name, "error", wait).await;
    let v = match got {
        Ok(v) => v,
        Err(e) if hello_deadline.is_some() => {
            let h = hello_deadline.unwrap_or_default();
            let opened = w.client(name)?.opened_at;
            return Err(StepFail::timing(
                "RW-CONN-3",
                format!(
                    "no hello_timeout error within the hello deadline of {h} ms (--hello-timeout-ms) plus 2000 ms: the server has no hello deadline, or a longer one than declared; {}",
                    e.message
                ),
                TimingMiss::new(Duration::from_millis(2000), opened, Instant::now()),
            ));
        }
        Err(e) => {
            let f = StepFail::msg(format!("expected error {want}: {}", e.message));
            return Err(match slow {
                Some(plan) => {
                    let dropped = w.client(name).is_ok_and(|c| c.ended && c.closed.is_none());
                    plan.judge_failure(f, dropped)
                }
                None => f,
            });
        }
    };
    let code = v.get("code").and_then(Value::as_str).unwrap_or("");
    if code != want {
        let f = StepFail::msg(format!("expected error code {want}, got {v}"));
        return Err(match slow {
            Some(plan) => plan.judge_failure(f, false),
            None => f,
        });
    }
    Ok(v)
}

/// `client {s} receives error {s} and is closed with code {n}`
async fn receives_error_and_close(
    w: &mut ServerWorld,
    client: String,
    code: String,
    want: u64,
) -> StepResultT {
    let v = next_error(w, &client, &code).await?;
    let cc = v.get("close_code").and_then(Value::as_u64);
    if cc != Some(want) {
        return Err(StepFail::req(
            "RW-ERROR-2",
            format!("expected close_code {want} in {v}"),
        ));
    }
    let dl = w.dl(ANSWER_WAIT_MS);
    let c = w.client(&client)?;
    if !c.wait_end(dl).await {
        return Err(StepFail::req(
            "RW-ERROR-3",
            format!("the connection was not closed after {v}"),
        ));
    }
    let got = c.closed.as_ref().and_then(|x| x.0);
    if got.map(u64::from) != Some(want) {
        return Err(StepFail::req(
            "RW-ERROR-3",
            format!("expected close code {want}, saw {}", c.nothing_msg()),
        ));
    }
    Ok(())
}

/// `client {s} receives error {s} for run {s}`
async fn receives_error_for_run(
    w: &mut ServerWorld,
    client: String,
    code: String,
    run: String,
) -> StepResultT {
    let v = next_error(w, &client, &code).await?;
    let cc = v.get("close_code").and_then(Value::as_u64);
    let id = w.run_id(&run);
    if v.get("run_id").and_then(Value::as_str) != Some(id.as_str()) || cc.is_some() {
        return Err(StepFail::req(
            "RW-ERROR-1",
            format!("expected error {code} with run_id {id} and no close_code, got {v}"),
        ));
    }
    Ok(())
}

/// `client {s} receives error {s}`
async fn receives_error(w: &mut ServerWorld, client: String, code: String) -> StepResultT {
    let v = next_error(w, &client, &code).await?;
    if v.get("close_code").and_then(Value::as_u64).is_some() {
        return Err(StepFail::req(
            "RW-ERROR-1",
            format!("expected no close_code in {v}"),
        ));
    }
    Ok(())
}

/// `client {s} is closed with code {n}`
async fn closed_with_code(w: &mut ServerWorld, client: String, want: u64) -> StepResultT {
    let wait = w.timer_wait(&client);
    let dl = w.dl(wait);
    let c = w.client(&client)?;
    if !c.wait_end(dl).await {
        return Err(StepFail::msg(format!(
            "expected a close with code {want}; {}",
            c.nothing_msg()
        )));
    }
    let got = c.closed.as_ref().and_then(|x| x.0);
    if got.map(u64::from) != Some(want) {
        return Err(StepFail::msg(format!(
            "expected close code {want}; {}",
            c.nothing_msg()
        )));
    }
    Ok(())
}

/// The last error client `name` received.
fn last_error(w: &ServerWorld, name: &str) -> R<Value> {
    w.last_error
        .get(name)
        .cloned()
        .ok_or_else(|| StepFail::msg("step error: no error received"))
}

/// `the last error of client {s} carries retry_after_ms`
async fn error_has_retry_after(w: &mut ServerWorld, client: String) -> StepResultT {
    let v = last_error(w, &client)?;
    if v.get("retry_after_ms").and_then(Value::as_u64).is_none() {
        return Err(StepFail::msg(format!(
            "the error carries no retry_after_ms: {v}"
        )));
    }
    Ok(())
}

/// `the last error of client {s} lists supported_versions {s}` (a comma-separated
/// list)
async fn error_lists_versions(
    w: &mut ServerWorld,
    client: String,
    want: Vec<String>,
) -> StepResultT {
    let v = last_error(w, &client)?;
    let got: Vec<String> = v
        .get("supported_versions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if !want.iter().all(|w| got.contains(w)) {
        return Err(StepFail::req(
            "RW-VERSION-3",
            format!("expected supported_versions to list {want:?}, got {v}"),
        ));
    }
    Ok(())
}

/// `the last error of client {s} has retryable {w}` (`true` or `false`)
async fn error_retryable(w: &mut ServerWorld, client: String, want: bool) -> StepResultT {
    let v = last_error(w, &client)?;
    if v.get("retryable").and_then(Value::as_bool) != Some(want) {
        return Err(StepFail::req(
            "RW-ERROR-2",
            format!("expected retryable {want}: {v}"),
        ));
    }
    Ok(())
}

/// `the last error of client {s} has a message containing {s}`
async fn error_message_contains(w: &mut ServerWorld, client: String, text: String) -> StepResultT {
    let v = last_error(w, &client)?;
    let m = v.get("message").and_then(Value::as_str).unwrap_or("");
    if !m.contains(text.as_str()) || m.len() > 1024 {
        return Err(StepFail::req(
            "RW-ERROR-6",
            format!("expected the message to contain {text:?} (at most 1024 bytes): {v}"),
        ));
    }
    Ok(())
}
