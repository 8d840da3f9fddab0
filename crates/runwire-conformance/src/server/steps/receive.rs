//! What clients received (steps of most features): the events of a run in order and
//! complete, nothing more, and the same events every client and the history see.

use serde_json::Value;

use super::{ANSWER_WAIT_MS, R, Registry, ServerWorld};
use crate::{
    runner::{StepFail, StepResultT},
    server::conn::clip,
};

pub(super) fn register(r: &mut Registry) {
    r.step(
        "the events of run {s} delivered to client {s} have distinct event ids",
        distinct_event_ids,
    );
    r.step(
        "client {s} receives events {n} to {n} of run {s}",
        receives_events,
    );
    r.step(
        "client {s} receives every event of run {s}",
        receives_every_event,
    );
    r.step("client {s} receives no event of run {s}", receives_no_event);
    r.step(
        "clients {s} and {s} received identical events of run {s}",
        identical_events,
    );
    r.step(
        "the events of run {s} delivered to client {s} equal the history read over HTTP",
        events_match_history,
    );
    r.step(
        "event {n} of run {s} delivered to client {s} has type {s} and data {rest}",
        event_data,
    );
    r.step("client {s} receives nothing else", receives_nothing_else);
}

impl ServerWorld {
    /// Takes events `from` to `to` of run `id` from what client `name` received,
    /// each checked for its seq and required members.
    async fn take_events(&mut self, name: &str, id: &str, from: u64, to: u64) -> R<()> {
        let n = usize::try_from(to + 1 - from).unwrap_or(0);
        let wait = ANSWER_WAIT_MS + n as u64 * 5;
        let dl = self.dl(wait);
        let c = self.client(name)?;
        c.wait_events(id, n, dl).await.map_err(|e| {
            StepFail::req(
                "RW-RESUME-1",
                format!("expected events {from} to {to} of run {id}: {e}"),
            )
        })?;
        let q = c.events.entry(id.to_owned()).or_default();
        for want in from..=to {
            let ev = q.pop_front().unwrap_or(Value::Null);
            let seq = ev.get("seq").and_then(Value::as_u64);
            if seq != Some(want) {
                return Err(StepFail::req(
                    "RW-ORDER-1",
                    format!(
                        "expected event seq {want} of run {id}, got {}",
                        clip(&ev.to_string())
                    ),
                ));
            }
            for f in ["event_id", "time", "type"] {
                if ev.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                    return Err(StepFail::req(
                        "RW-EVENT-1",
                        format!("event seq {want} lacks {f}: {}", clip(&ev.to_string())),
                    ));
                }
            }
            if !ev
                .get("time")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with('Z'))
            {
                return Err(StepFail::req(
                    "RW-EVENT-5",
                    format!("event time is not UTC with Z: {}", clip(&ev.to_string())),
                ));
            }
            if !ev.get("data").is_some_and(Value::is_object) {
                return Err(StepFail::req(
                    "RW-EVENT-7",
                    format!("event data is not an object: {}", clip(&ev.to_string())),
                ));
            }
        }
        Ok(())
    }
}

/// `the events of run {s} delivered to client {s} have distinct event ids`
async fn distinct_event_ids(w: &mut ServerWorld, run: String, client: String) -> StepResultT {
    let id = w.run_id(&run);
    let got = w
        .clients
        .get(&client)
        .and_then(|c| c.delivered.get(&id).cloned())
        .unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    for e in &got {
        let eid = e
            .get("event_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if eid.is_empty() || eid.len() > 128 || !eid.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(StepFail::req(
                "RW-EVENT-1",
                format!("event_id {eid:?} is not 1-128 printable ASCII characters"),
            ));
        }
        if !seen.insert(eid.clone()) {
            return Err(StepFail::req(
                "RW-EVENT-1",
                format!("event_id {eid:?} is carried by two events of {id}"),
            ));
        }
    }
    Ok(())
}

/// `client {s} receives events {n} to {n} of run {s}`
async fn receives_events(
    w: &mut ServerWorld,
    client: String,
    from: u64,
    to: u64,
    run: String,
) -> StepResultT {
    let id = w.run_id(&run);
    w.take_events(&client, &id, from, to).await?;
    Ok(())
}

/// `client {s} receives every event of run {s}`
async fn receives_every_event(w: &mut ServerWorld, client: String, run: String) -> StepResultT {
    let id = w.run_id(&run);
    let head = w.run(&run).head;
    let from = {
        let c = w.client(&client)?;
        c.events
            .get(&id)
            .and_then(|q| q.front())
            .and_then(|e| e.get("seq"))
            .and_then(Value::as_u64)
            .or_else(|| c.cursors.get(&id).map(|x| x.1 + 1))
            .unwrap_or(1)
    };
    if from <= head {
        w.take_events(&client, &id, from, head).await?;
    }
    Ok(())
}

/// `client {s} receives no event of run {s}`
async fn receives_no_event(w: &mut ServerWorld, client: String, run: String) -> StepResultT {
    let id = w.run_id(&run);
    let q = w.quiet_ms(&client);
    let dl = w.dl(q);
    let c = w.client(&client)?;
    c.drain_until(dl).await;
    if let Some(e) = c.events.get(&id).and_then(|q| q.front()) {
        return Err(StepFail::msg(format!(
            "expected no event of run {id}, got {}",
            clip(&e.to_string())
        )));
    }
    Ok(())
}

/// `clients {s} and {s} received identical events of run {s}`
async fn identical_events(w: &mut ServerWorld, a: String, b: String, run: String) -> StepResultT {
    let id = w.run_id(&run);
    let get = |w: &ServerWorld, n: &str| -> Vec<Value> {
        w.clients
            .get(n)
            .and_then(|c| c.delivered.get(&id).cloned())
            .unwrap_or_default()
    };
    let (x, y) = (get(w, &a), get(w, &b));
    if x != y {
        return Err(StepFail::req(
            "RW-EVENT-8",
            format!(
                "client {} got {} events of {id}, client {} got {}; first difference at index {}",
                a,
                x.len(),
                b,
                y.len(),
                x.iter()
                    .zip(&y)
                    .position(|(a, b)| a != b)
                    .unwrap_or(x.len().min(y.len()))
            ),
        ));
    }
    Ok(())
}

/// `the events of run {s} delivered to client {s} equal the history read over HTTP`
async fn events_match_history(w: &mut ServerWorld, run: String, client: String) -> StepResultT {
    let id = w.run_id(&run);
    let a = w
        .http(
            "GET",
            &format!("/v1/runs/{id}/events?after_seq=0&limit=10000"),
            w.token(),
            None,
        )
        .await?;
    let hist = a
        .json()
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let got = w
        .clients
        .get(&client)
        .and_then(|c| c.delivered.get(&id).cloned())
        .unwrap_or_default();
    for ev in &got {
        let seq = ev.get("seq").and_then(Value::as_u64).unwrap_or(0);
        let h = hist
            .iter()
            .find(|h| h.get("seq").and_then(Value::as_u64) == Some(seq));
        if h != Some(ev) {
            return Err(StepFail::req(
                "RW-EVENT-8",
                format!(
                    "event seq {seq} delivered as {} but the history read returns {}",
                    clip(&ev.to_string()),
                    clip(&h.map(Value::to_string).unwrap_or_default())
                ),
            ));
        }
    }
    if got.is_empty() {
        return Err(StepFail::msg("step error: nothing delivered to compare"));
    }
    Ok(())
}

/// `event {n} of run {s} delivered to client {s} has type {s} and data {rest}`
async fn event_data(
    w: &mut ServerWorld,
    seq: u64,
    run: String,
    client: String,
    ty: String,
    data: String,
) -> StepResultT {
    let id = w.run_id(&run);
    let want: Value = serde_json::from_str(&data)
        .map_err(|e| StepFail::msg(format!("step error: bad JSON {e}")))?;
    let got = w
        .clients
        .get(&client)
        .and_then(|c| c.delivered.get(&id))
        .and_then(|v| {
            v.iter()
                .find(|e| e.get("seq").and_then(Value::as_u64) == Some(seq))
                .cloned()
        })
        .ok_or_else(|| StepFail::msg(format!("event {seq} of {id} was not delivered")))?;
    if got.get("type").and_then(Value::as_str) != Some(ty.as_str())
        || got.get("data") != Some(&want)
    {
        // A type of this spec keeps its data verbatim by RW-TYPE-25, an
        // unknown one by RW-TYPE-23.
        let known = [
            "run.",
            "log.",
            "tool.",
            "agent.",
            "file.",
            "artifact.",
            "todo.",
            "output.",
        ]
        .iter()
        .any(|ns| ty.starts_with(ns));
        return Err(StepFail::req(
            if known { "RW-TYPE-25" } else { "RW-TYPE-23" },
            format!(
                "expected type {ty} data {want}, got {}",
                clip(&got.to_string())
            ),
        ));
    }
    Ok(())
}

/// `client {s} receives nothing else`
async fn receives_nothing_else(w: &mut ServerWorld, client: String) -> StepResultT {
    let q = w.quiet_ms(&client);
    let dl = w.dl(q);
    let c = w.client(&client)?;
    c.drain_until(dl).await;
    if let Some(v) = c.controls.front() {
        return Err(StepFail::msg(format!(
            "expected no further frame, got {}",
            clip(&v.to_string())
        )));
    }
    if let Some((r, q)) = c.events.iter().find(|(_, q)| !q.is_empty()) {
        return Err(StepFail::msg(format!(
            "expected no further frame, got {} more events of {r}",
            q.len()
        )));
    }
    Ok(())
}
