//! Restarts and graceful shutdown (`features/server/restart.feature`): what a client
//! and the producer see while the server shuts down and comes back.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Registry, ServerWorld, progress_event};
use crate::{
    runner::{StepFail, StepResultT},
    server::conn::{Conn, ConnectOptions, clip},
};

pub(super) fn register(r: &mut Registry) {
    r.step("the server begins restarting", begins_restarting);
    r.step("the server is back", is_back);
    r.step(
        "a new connection gets no welcome while the server shuts down",
        no_welcome_during_shutdown,
    );
    r.step(
        "an append to run {s} while the server shuts down is refused",
        append_refused_during_shutdown,
    );
    r.step("the server can be restarted", can_be_restarted);
    r.step("the producer appends {n} events to run {s} one at a time while the server begins restarting", appends_while_restarting);
    r.step(
        "client {s} received every acknowledged event of run {s} before its server_shutdown error",
        acked_before_shutdown,
    );
    r.step("the server restarts", restarts);
}

/// `the server begins restarting`
async fn begins_restarting(w: &mut ServerWorld) -> StepResultT {
    let Some(ctl) = w.target.control.clone() else {
        return Err(StepFail::not_implemented("no --restart-cmd given"));
    };
    w.rec
        .note("runner", "restarting the server (in the background)");
    w.restarting = Some(tokio::spawn(async move { ctl.restart().await }));
    Ok(())
}

/// `the server is back`
async fn is_back(w: &mut ServerWorld) -> StepResultT {
    let Some(h) = w.restarting.take() else {
        return Err(StepFail::msg("step error: no restart under way"));
    };
    h.await
        .map_err(|e| StepFail::msg(format!("restart task: {e}")))?
        .map_err(|e| StepFail::msg(format!("restart failed: {e}")))?;
    w.rec.note("runner", "the server is back");
    Ok(())
}

/// `a new connection gets no welcome while the server shuts down`
async fn no_welcome_during_shutdown(w: &mut ServerWorld) -> StepResultT {
    let url = w.target.ws_url.clone();
    let Ok(mut c) = Conn::open(
        "late",
        &url,
        ConnectOptions::default(),
        w.rec.clone(),
        w.ms(2000),
    )
    .await
    else {
        w.rec
            .note("late", "connection refused: acceptable during shutdown");
        return Ok(());
    };
    let h = Conn::hello(&["1.0".to_owned()], w.target.token.as_deref(), vec![]);
    let _ = c.send(&h).await;
    let dl = w.dl(2000);
    match c.next_control(dl).await {
        Ok(v) if v.get("type").and_then(Value::as_str) == Some("welcome") => {
            return Err(StepFail::req(
                "RW-SHUTDOWN-1",
                "a connection opened after shutdown began was sent welcome",
            ));
        }
        _ => {}
    }
    if let Some(v) = c.violations.first() {
        return Err(StepFail::req(
            v.requirement,
            format!("late connection: {}", v.message),
        ));
    }
    Ok(())
}

/// `an append to run {s} while the server shuts down is refused`
async fn append_refused_during_shutdown(w: &mut ServerWorld, run: String) -> StepResultT {
    let id = w.run_id(&run);
    let body = serde_json::to_vec(&json!({"events": [progress_event(1, 0)]})).unwrap_or_default();
    match w
        .http(
            "POST",
            &format!("/v1/runs/{id}/events"),
            w.token(),
            Some(body),
        )
        .await
    {
        Err(_) => w
            .rec
            .note("producer", "connection refused: acceptable during shutdown"),
        Ok(a) => {
            let code = a
                .json()
                .pointer("/error/code")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if a.status != 503 || code.as_deref() != Some("server_shutdown") {
                return Err(StepFail::req(
                    "RW-SHUTDOWN-1",
                    format!(
                        "an append during shutdown was answered {} {:?}, expected 503 server_shutdown (or a refused connection)",
                        a.status, code
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `the server can be restarted`
async fn can_be_restarted(w: &mut ServerWorld) -> StepResultT {
    if w.target.control.is_none() {
        return Err(StepFail::not_implemented(
            "no --restart-cmd given: restart scenarios need a way to restart the server",
        ));
    }
    Ok(())
}

/// `the producer appends {n} events to run {s} one at a time while the server begins restarting`
async fn appends_while_restarting(w: &mut ServerWorld, n: u64, run: String) -> StepResultT {
    let Some(ctl) = w.target.control.clone() else {
        return Err(StepFail::not_implemented("no --restart-cmd given"));
    };
    let id = w.run_id(&run);
    let path = format!("/v1/runs/{id}/events");
    let mut restart = None;
    let mut acked = 0;
    for i in 1..=n {
        if i == n / 2 + 1 {
            w.rec
                .note("runner", "restarting the server (in the background)");
            let ctl = Arc::clone(&ctl);
            restart = Some(tokio::spawn(async move { ctl.restart().await }));
        }
        let body =
            serde_json::to_vec(&json!({"events": [progress_event(i, 0)]})).unwrap_or_default();
        // The server went away mid-request: not acknowledged.
        let Ok(a) = w.http("POST", &path, w.token(), Some(body)).await else {
            break;
        };
        match a.status {
            200 => {
                acked += 1;
                let v = a.json();
                w.note_append(&run, &v);
            }
            // Refused once shutdown began (RW-SHUTDOWN-1): stop appending.
            503 => break,
            other => {
                return Err(StepFail::req(
                    "RW-SHUTDOWN-1",
                    format!(
                        "an append during shutdown was answered {other}; expected 200 (acknowledged) or 503 server_shutdown"
                    ),
                ));
            }
        }
    }
    w.rec.note(
        "runner",
        format!("{acked} appends acknowledged before shutdown"),
    );
    w.restarting = restart;
    Ok(())
}

/// `client {s} received every acknowledged event of run {s} before its server_shutdown error`
async fn acked_before_shutdown(w: &mut ServerWorld, client: String, run: String) -> StepResultT {
    let id = w.run_id(&run);
    let acked: Vec<u64> = w.run(&run).acked.iter().map(|x| x.0).collect();
    let wait = w.timer_wait(&client);
    let dl = w.dl(wait);
    let c = w.client(&client)?;
    if !c.wait_end(dl).await {
        return Err(StepFail::req(
            "RW-SHUTDOWN-2",
            format!(
                "the connection did not end after the shutdown began; {}",
                c.nothing_msg()
            ),
        ));
    }
    let Some(shutdown_at) = c
        .errors_at
        .iter()
        .find(|(code, _)| code == "server_shutdown")
        .map(|x| x.1)
    else {
        return Err(StepFail::req(
            "RW-SHUTDOWN-2",
            format!(
                "no server_shutdown error before the connection ended; {}",
                c.nothing_msg()
            ),
        ));
    };
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|q| {
            !c.arrivals
                .iter()
                .any(|(r, s, at)| r == &id && s == q && *at <= shutdown_at)
        })
        .collect();
    if !missing.is_empty() {
        return Err(StepFail::req(
            "RW-SHUTDOWN-4",
            format!(
                "{} of the {} acknowledged events of {id} had not reached the client before server_shutdown (seqs {}): pending events must be flushed before it",
                missing.len(),
                acked.len(),
                clip(&format!("{missing:?}"))
            ),
        ));
    }
    Ok(())
}

/// `the server restarts`
async fn restarts(w: &mut ServerWorld) -> StepResultT {
    let Some(ctl) = w.target.control.clone() else {
        return Err(StepFail::not_implemented("no --restart-cmd given"));
    };
    w.rec.note("runner", "restarting the server");
    ctl.restart()
        .await
        .map_err(|e| StepFail::msg(format!("restart failed: {e}")))?;
    w.rec.note("runner", "the server is back");
    Ok(())
}
