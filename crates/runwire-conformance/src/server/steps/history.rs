//! History and answers over HTTP (`features/server/history.feature`, and the answers
//! of every HTTP step): GET requests and what the last answer says.

use serde_json::Value;

use super::{Registry, ServerWorld};
use crate::{
    runner::{StepFail, StepResultT},
    server::conn::clip,
};

pub(super) fn register(r: &mut Registry) {
    r.step("the producer sends GET {rest}", get);
    r.step(
        "the answer is {n} with code {s} and pointer {s}",
        answer_with_code_and_pointer,
    );
    r.step("the answer is {n} with code {s}", answer_with_code);
    r.step(
        "the answer carries a Retry-After header",
        answer_has_retry_after,
    );
    r.step("the answer has {s} equal to {rest}", answer_field);
    r.step("the answer is {n}", answer);
    r.step("run {s} has {n} events over HTTP", history_head);
}

/// `the producer sends GET {rest}`
async fn get(w: &mut ServerWorld, path: String) -> StepResultT {
    let tok = w.token();
    w.get(&path, tok).await
}

/// `the answer is {n} with code {s} and pointer {s}`
async fn answer_with_code_and_pointer(
    w: &mut ServerWorld,
    status: u64,
    code: String,
    pointer: String,
) -> StepResultT {
    check_answer(w, status, Some(&code), Some(&pointer))
}

/// `the answer is {n} with code {s}`
async fn answer_with_code(w: &mut ServerWorld, status: u64, code: String) -> StepResultT {
    check_answer(w, status, Some(&code), None)
}

/// `the answer is {n}`
async fn answer(w: &mut ServerWorld, status: u64) -> StepResultT {
    check_answer(w, status, None, None)
}

/// Whether the last HTTP answer has status `status`, and an error body with `code`
/// and a pointer starting with `pointer` when they are given.
fn check_answer(
    w: &ServerWorld,
    status: u64,
    code: Option<&str>,
    pointer: Option<&str>,
) -> StepResultT {
    let Some(a) = w.last.clone() else {
        return Err(StepFail::msg("step error: no HTTP answer yet"));
    };
    let want = status as u16;
    let whole = a.json();
    let body = whole.get("error").cloned().unwrap_or(Value::Null);
    if a.status != want {
        return Err(StepFail::msg(format!(
            "expected HTTP {want}, got {} {}",
            a.status,
            clip(&String::from_utf8_lossy(&a.body))
        )));
    }
    if let Some(want_code) = code {
        let code = body.get("code").and_then(Value::as_str);
        if code != Some(want_code) {
            return Err(StepFail::req(
                "RW-INGEST-20",
                format!(
                    "expected an error body {{\"error\": {{\"code\": {want_code:?}, ...}}}}, got {whole}"
                ),
            ));
        }
        if body.get("retryable").and_then(Value::as_bool).is_none() {
            return Err(StepFail::req(
                "RW-INGEST-20",
                format!("the error body lacks retryable: {whole}"),
            ));
        }
    }
    if let Some(pointer) = pointer {
        let p = body.get("pointer").and_then(Value::as_str).unwrap_or("");
        if !p.starts_with(pointer) {
            return Err(StepFail::msg(format!(
                "expected pointer {pointer:?}, got body {whole}"
            )));
        }
    }
    Ok(())
}

/// `the answer carries a Retry-After header`
async fn answer_has_retry_after(w: &mut ServerWorld) -> StepResultT {
    let a = w
        .last
        .clone()
        .ok_or_else(|| StepFail::msg("step error: no answer"))?;
    if a.header("retry-after").is_none() {
        return Err(StepFail::req(
            "RW-INGEST-21",
            "the 503 answer has no Retry-After header",
        ));
    }
    Ok(())
}

/// `the answer has {s} equal to {rest}`
async fn answer_field(w: &mut ServerWorld, field: String, json: String) -> StepResultT {
    let a = w
        .last
        .clone()
        .ok_or_else(|| StepFail::msg("step error: no answer"))?;
    let want: Value = serde_json::from_str(&w.subst(&json))
        .map_err(|e| StepFail::msg(format!("step error: bad JSON {e}")))?;
    let ptr = format!("/{}", field.replace('.', "/"));
    let got = a.json().pointer(&ptr).cloned();
    let same = match (&got, &want) {
        (Some(Value::Number(g)), Value::Number(w)) => g.as_f64() == w.as_f64(),
        (g, w) => g.as_ref() == Some(w),
    };
    if !same {
        return Err(StepFail::msg(format!(
            "expected {field} = {want}, got {got:?}"
        )));
    }
    Ok(())
}

/// `run {s} has {n} events over HTTP`
async fn history_head(w: &mut ServerWorld, run: String, want: u64) -> StepResultT {
    let id = w.run_id(&run);
    let a = w
        .http(
            "GET",
            &format!("/v1/runs/{id}/events?after_seq=0&limit=10000"),
            w.token(),
            None,
        )
        .await?;
    let v = a.json();
    let head = v.get("head_seq").and_then(Value::as_u64);
    let evs = v
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let seqs: Vec<u64> = evs
        .iter()
        .filter_map(|e| e.get("seq").and_then(Value::as_u64))
        .collect();
    if head != Some(want) || seqs != (1..=want).collect::<Vec<_>>() {
        return Err(StepFail::msg(format!(
            "expected {want} events (seqs 1..={want}) over HTTP, got head_seq {head:?} and seqs {}",
            clip(&format!("{seqs:?}"))
        )));
    }
    Ok(())
}
