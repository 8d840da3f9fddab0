//! The producer's appends (`features/server/ingest.feature`, and the appends every
//! other feature starts from): events appended over the ingest API, retried with their
//! idempotency keys, posted raw, and what the answers assigned.

use serde_json::{Value, json};

use super::{Doc, Registry, ServerWorld, progress_event};
use crate::{
    http::request,
    runner::{StepFail, StepResultT},
    server::conn::clip,
};

pub(super) fn register(r: &mut Registry) {
    r.step("the producer appends {n} events to run {s}", appends);
    r.step(
        "the producer appends {n} random events of every type to run {s}",
        appends_random,
    );
    r.step("the producer appends status {s} to run {s}", appends_status);
    r.step(
        "the producer appends {n} events with idempotency keys {s} to run {s}",
        appends_keyed,
    );
    r.step(
        "the producer appends a {s} event with data {rest} and idempotency key {s} to run {s}",
        appends_one_keyed,
    );
    r.step(
        "the producer appends a {s} event with data {rest} to run {s}",
        appends_typed,
    );
    r.step(
        "the producer retries the last append with one more event",
        retries_with_one_more,
    );
    r.step("the producer retries the last append", retries);
    r.step(
        "{n} producers append {n} events each to run {s} concurrently",
        appends_concurrently,
    );
    r.step("the producer posts to run {s}:", posts);
    r.step(
        "the last append was assigned seqs {n} to {n}",
        assigned_seqs,
    );
    r.step(
        "the retry was answered with the original assignments",
        retry_answered_alike,
    );
}

/// `the producer appends {n} events to run {s}`
async fn appends(w: &mut ServerWorld, n: u64, run: String) -> StepResultT {
    let base = w.run(&run).head;
    for chunk in (1..=n).collect::<Vec<_>>().chunks(500) {
        let evs = chunk.iter().map(|i| progress_event(base + i, 0)).collect();
        w.append(&run, evs, w.token()).await?;
    }
    Ok(())
}

/// `the producer appends {n} random events of every type to run {s}`
async fn appends_random(w: &mut ServerWorld, n: u64, run: String) -> StepResultT {
    let events = crate::fold::random_events(&mut w.rng, n as usize);
    for chunk in events.chunks(25) {
        w.append(&run, chunk.to_vec(), w.token()).await?;
    }
    Ok(())
}

/// `the producer appends status {s} to run {s}`
async fn appends_status(w: &mut ServerWorld, status: String, run: String) -> StepResultT {
    let ev = json!({"type": "run.status", "data": {"status": status}});
    w.append(&run, vec![ev], w.token()).await?;
    Ok(())
}

/// `the producer appends {n} events with idempotency keys {s} to run {s}`
async fn appends_keyed(w: &mut ServerWorld, n: u64, key: String, run: String) -> StepResultT {
    let base = w.run(&run).head;
    let evs = (1..=n)
        .map(|i| {
            let mut e = progress_event(i, 0);
            e["idempotency_key"] = json!(format!("{key}-{}", base + i));
            e
        })
        .collect();
    w.append(&run, evs, w.token()).await?;
    Ok(())
}

/// `the producer appends a {s} event with data {rest} and idempotency key {s} to run {s}`
async fn appends_one_keyed(
    w: &mut ServerWorld,
    ty: String,
    data: String,
    key: String,
    run: String,
) -> StepResultT {
    let data: Value = serde_json::from_str(&data)
        .map_err(|e| StepFail::msg(format!("step error: bad JSON data: {e}")))?;
    let ev = json!({"type": ty, "data": data, "idempotency_key": key});
    let id = w.run_id(&run);
    let body = serde_json::to_vec(&json!({ "events": [ev] })).unwrap_or_default();
    let a = w
        .http(
            "POST",
            &format!("/v1/runs/{id}/events"),
            w.token(),
            Some(body),
        )
        .await?;
    if a.status == 200 {
        let v = a.json();
        w.note_append(&run, &v);
    }
    Ok(())
}

/// `the producer appends a {s} event with data {rest} to run {s}`
async fn appends_typed(w: &mut ServerWorld, ty: String, data: String, run: String) -> StepResultT {
    let data: Value = serde_json::from_str(&w.subst(&data))
        .map_err(|e| StepFail::msg(format!("step error: bad JSON data: {e}")))?;
    let ev = json!({"type": ty, "data": data});
    w.append(&run, vec![ev], w.token()).await?;
    Ok(())
}

/// `the producer retries the last append with one more event`
async fn retries_with_one_more(w: &mut ServerWorld) -> StepResultT {
    let Some((path, body, _)) = w.last_append.clone() else {
        return Err(StepFail::msg("step error: no append to retry"));
    };
    let mut v: Value = serde_json::from_slice(&body)
        .map_err(|e| StepFail::msg(format!("step error: last body: {e}")))?;
    let n = v
        .get("events")
        .and_then(Value::as_array)
        .map_or(0, Vec::len) as u64;
    let mut extra = progress_event(n + 1, 0);
    extra["idempotency_key"] = json!(format!("rwc-extra-{}", w.ns));
    if let Some(a) = v.get_mut("events").and_then(Value::as_array_mut) {
        a.push(extra);
    }
    let body = serde_json::to_vec(&v).unwrap_or_default();
    let a = w.http("POST", &path, w.token(), Some(body.clone())).await?;
    if a.status != 200 {
        return Err(StepFail::req(
            "RW-INGEST-5",
            format!(
                "expected 200 for a retry of stored events plus one new event, got {} {}",
                a.status,
                clip(&String::from_utf8_lossy(&a.body))
            ),
        ));
    }
    let answer = a.json();
    let alias = w
        .runs
        .iter()
        .find(|(_, r)| path == format!("/v1/runs/{}/events", r.id))
        .map(|(k, _)| k.clone())
        .unwrap_or_default();
    w.note_append(&alias, &answer);
    w.last_append = Some((path, body, answer));
    Ok(())
}

/// `the producer retries the last append`
async fn retries(w: &mut ServerWorld) -> StepResultT {
    let Some((path, body, _)) = w.last_append.clone() else {
        return Err(StepFail::msg("step error: no append to retry"));
    };
    let a = w.http("POST", &path, w.token(), Some(body)).await?;
    if a.status != 200 {
        return Err(StepFail::req(
            "RW-INGEST-5",
            format!(
                "expected 200 for a retried append with the same idempotency keys, got {} {}",
                a.status,
                clip(&String::from_utf8_lossy(&a.body))
            ),
        ));
    }
    w.retry_answer = Some(a.json());
    Ok(())
}

/// `{n} producers append {n} events each to run {s} concurrently`
async fn appends_concurrently(w: &mut ServerWorld, p: u64, n: u64, run: String) -> StepResultT {
    let id = w.run_id(&run);
    let base = w.run(&run).head;
    let mut tasks = Vec::new();
    for prod in 0..p {
        let base = w.target.ingest_url.clone();
        let token = w.token();
        let path = format!("/v1/runs/{id}/events");
        let limit = w.ms(10_000);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..n {
                let body = serde_json::to_vec(&json!({"events": [
                    {"type": "log.line", "data": {"level": "info", "message": format!("producer {prod} line {i}")}}
                ]}))
                .unwrap_or_default();
                out.push(request(&base, "POST", &path, token.as_deref(), Some(&body), limit).await);
            }
            out
        }));
    }
    w.rec.note(
        "producer",
        format!("{p} producers append {n} events each to {id}"),
    );
    let mut seqs = Vec::new();
    for t in tasks {
        for r in t.await.unwrap_or_default() {
            let a = r.map_err(StepFail::msg)?;
            if a.status != 200 {
                return Err(StepFail::req(
                    "RW-INGEST-2",
                    format!("a concurrent append was answered {}", a.status),
                ));
            }
            let v = a.json();
            w.note_append(&run, &v);
            if let Some(q) = v.get("first_seq").and_then(Value::as_u64) {
                seqs.push(q);
            }
        }
    }
    seqs.sort_unstable();
    let want: Vec<u64> = (base + 1..=base + p * n).collect();
    if seqs != want {
        return Err(StepFail::req(
            "RW-INGEST-2",
            format!(
                "concurrent appends were assigned seqs {seqs:?}, expected exactly {}..={}",
                base + 1,
                base + p * n
            ),
        ));
    }
    Ok(())
}

/// `the producer posts to run {s}:`
async fn posts(w: &mut ServerWorld, run: String, doc: Doc) -> StepResultT {
    let token = w.token();
    w.post_doc(&run, &doc.0, token, &[]).await?;
    Ok(())
}

/// `the last append was assigned seqs {n} to {n}`
async fn assigned_seqs(w: &mut ServerWorld, first: u64, last: u64) -> StepResultT {
    let Some((_, _, v)) = &w.last_append else {
        return Err(StepFail::msg("step error: no append"));
    };
    let (f, l) = (
        v.get("first_seq").and_then(Value::as_u64),
        v.get("last_seq").and_then(Value::as_u64),
    );
    if (f, l) != (Some(first), Some(last)) {
        return Err(StepFail::req(
            "RW-EVENT-3",
            format!("expected seqs {first} to {last}, got first_seq {f:?} last_seq {l:?}"),
        ));
    }
    Ok(())
}

/// `the retry was answered with the original assignments`
async fn retry_answered_alike(w: &mut ServerWorld) -> StepResultT {
    let (Some((_, _, orig)), Some(re)) = (&w.last_append, &w.retry_answer) else {
        return Err(StepFail::msg("step error: no append and retry"));
    };
    let pick = |v: &Value| -> Vec<(Option<u64>, Option<String>)> {
        v.get("events")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e.get("seq").and_then(Value::as_u64),
                            e.get("event_id").and_then(Value::as_str).map(str::to_owned),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    if pick(orig) != pick(re) || pick(orig).is_empty() {
        return Err(StepFail::req(
            "RW-INGEST-5",
            format!("the retry was answered {re}, the original append {orig}"),
        ));
    }
    Ok(())
}
