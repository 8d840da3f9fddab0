//! The producer HTTP API, health and metrics (spec §4).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use runwire_protocol::{
    ErrorCode, RunId,
    codec::{DecodeError, decode, encode},
    http::{
        APPEND_MAX_EVENTS, AppendRequest, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT, HttpError,
        RUNS_DEFAULT_LIMIT, RUNS_MAX_LIMIT, RunList, RunListEntry,
    },
};

use crate::{
    auth::{AuthError, Authenticator, Principal},
    config::Role,
    metrics::Metrics,
    state::AppState,
    store::StoreError,
};

/// An HTTP error answer: status plus the spec's error body.
pub(crate) struct ApiError(StatusCode, HttpError);

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, msg: impl Into<String>) -> Self {
        Self(status, HttpError::new(code, msg))
    }

    fn at(mut self, pointer: impl Into<String>) -> Self {
        self.1 = self.1.at(pointer);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.0,
            [(header::CONTENT_TYPE, "application/json")],
            encode(&self.1),
        )
            .into_response();
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            // `RW-INGEST-21`: tell producers when to retry.
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        r
    }
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn store_error(state: &AppState, e: StoreError) -> ApiError {
    match e {
        StoreError::RunTerminal { run_id, index } => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::RunTerminal,
            format!("run {run_id} has a terminal status and accepts no more events"),
        )
        .at(format!("/events/{index}")),
        StoreError::IdempotencyConflict {
            run_id,
            key,
            index,
            seq,
        } => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::IdempotencyConflict,
            format!(
                "idempotency key {key:?} of run {run_id} was used for a different event (seq {seq})"
            ),
        )
        .at(format!("/events/{index}/idempotency_key")),
        StoreError::SeqExhausted(run_id) => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            format!("run {run_id} reached the largest sequence number"),
        ),
        StoreError::NotRetained { run_id, after_seq } => ApiError::new(
            StatusCode::GONE,
            ErrorCode::CursorTooOld,
            format!(
                "events of run {run_id} after seq {after_seq} are no longer retained; read the snapshot (GET /v1/runs/{run_id}) and continue from its as_of_seq"
            ),
        ),
        StoreError::Closed => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServerShutdown,
            "the server is shutting down",
        ),
        other => {
            Metrics::inc(&state.metrics.store_errors);
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StoreUnavailable,
                other.to_string(),
            )
        }
    }
}

/// The `{run_id}` path segment; a segment the framework cannot decode (not UTF-8)
/// is answered like any invalid run id, with the spec's error body (`RW-INGEST-20`).
pub(crate) type RunPath = Result<Path<String>, axum::extract::rejection::PathRejection>;

fn parse_run_id(raw: RunPath) -> Result<RunId, ApiError> {
    let Path(raw) = raw.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            format!("the run id in the path is not valid: {e}"),
        )
        .at("/run_id")
    })?;
    RunId::new(&raw).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            e.to_string(),
        )
        .at("/run_id")
    })
}

/// Authenticates the request's bearer token (`RW-AUTH-11`, `RW-AUTH-15`).
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let token = Authenticator::bearer(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    state.auth.authenticate(token).map_err(|e| {
        Metrics::inc(&state.metrics.auth_failures);
        let code = if e == AuthError::Expired {
            ErrorCode::TokenExpired
        } else {
            ErrorCode::Unauthorized
        };
        ApiError::new(StatusCode::UNAUTHORIZED, code, e.to_string())
    })
}

/// Authenticates the request's bearer token and checks role and run (`RW-AUTH-*`).
fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    roles: &[Role],
    run_id: &RunId,
) -> Result<Principal, ApiError> {
    let p = authenticate(state, headers)?;
    if !roles.iter().any(|r| p.has_role(*r)) {
        Metrics::inc(&state.metrics.auth_failures);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!("the token lacks the role for this request ({roles:?})"),
        ));
    }
    if !p.allows_run(run_id) {
        Metrics::inc(&state.metrics.auth_failures);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!("the token does not allow run {run_id}"),
        ));
    }
    Ok(p)
}

/// Whether the request declares a JSON body: `application/json`, with parameters
/// (`; charset=utf-8`) or not, in any case.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// `POST /v1/runs/{run_id}/events` (spec §4.2).
pub(crate) async fn append(
    State(state): State<Arc<AppState>>,
    run_id: RunPath,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    // The ingest latency histogram: from the handler's start to the answer.
    let started = std::time::Instant::now();
    let run_id = parse_run_id(run_id)?;
    authorize(&state, &headers, &[Role::Producer], &run_id)?;
    // The body is read only now, after authentication (`RW-INGEST-23`): a declared
    // size over the limit is refused before any of it is read (`RW-SEC-14`), and the
    // whole body must arrive within the body deadline (`RW-SEC-13`).
    let max = state.config.max_request_bytes;
    let timeout = Duration::from_millis(state.config.body_timeout_ms);
    let body = crate::admission::read_body(body, &headers, max, timeout)
        .await
        .map_err(|e| body_error(&state, e))?;
    require_json(&headers)?;
    // Counted before the shutdown check: once shutdown begins, the subscriptions wait
    // for the appends that passed it, so every acknowledged event reaches them before
    // `server_shutdown` (`RW-SHUTDOWN-1`, `RW-SHUTDOWN-4`).
    let _in_flight = state.appends.enter();
    if *state.shutdown.borrow() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServerShutdown,
            "the server is shutting down; retry on another node or after the restart",
        ));
    }
    let req = decode_append(&body, max)?;
    let req = check_append(req, &body, &run_id, state.config.max_event_bytes as usize)?;
    let outcome = state
        .store
        .append(&run_id, req.events)
        .await
        .map_err(|e| store_error(&state, e))?;
    Metrics::add(&state.metrics.events_in, outcome.appended as u64);
    Metrics::inc(&state.metrics.append_requests);
    state.metrics.append_duration.observe(started.elapsed());
    Ok(json(StatusCode::OK, encode(&outcome.response)))
}

/// The answer to an append body that could not be read whole.
fn body_error(state: &AppState, e: crate::admission::BodyError) -> ApiError {
    match e {
        crate::admission::BodyError::TooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InvalidRequest,
            format!(
                "the request body exceeds max_request_bytes ({}); send fewer events per request",
                state.config.max_request_bytes
            ),
        ),
        crate::admission::BodyError::Timeout => {
            Metrics::inc(&state.metrics.body_timeouts);
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::InvalidRequest,
                format!(
                    "the request body did not arrive within {} ms (body_timeout_ms)",
                    state.config.body_timeout_ms
                ),
            )
        }
        crate::admission::BodyError::Read(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            format!("the request body could not be read: {e}"),
        ),
    }
}

/// `RW-INGEST-24`: only a body declared JSON. A browser page can send `text/plain`
/// (or a form) to any origin without asking first; `application/json` needs a CORS
/// preflight, which only allowed origins pass (§17).
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    if is_json(headers) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::InvalidRequest,
        format!(
            "an append body must be declared Content-Type: application/json, not {:?}",
            headers
                .get(header::CONTENT_TYPE)
                .map_or("(none)", |v| v.to_str().unwrap_or("(not text)"))
        ),
    ))
}

/// Decodes an append body, with the JSON pointer of what is wrong in it.
fn decode_append(body: &[u8], max: usize) -> Result<AppendRequest, ApiError> {
    decode(body, max, "append request").map_err(|e| match &e {
        DecodeError::TooLarge { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InvalidRequest,
            e.to_string(),
        ),
        DecodeError::InvalidJson { .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            e.to_string(),
        )
        .at(""),
        other => {
            let (pointer, msg) = refine_pointer(body, other)
                .unwrap_or_else(|| (other.pointer().unwrap_or("").to_owned(), e.to_string()));
            ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, msg).at(pointer)
        }
    })
}

/// The checks of a decoded append request beyond its schema: the event count, unique
/// idempotency keys (`RW-INGEST-7`), safe integers (`RW-TYPE-24`) and the event size
/// limit; keeps each event's data as the producer sent it (`RW-TYPE-25`).
fn check_append(
    mut req: AppendRequest,
    body: &[u8],
    run_id: &RunId,
    max_event: usize,
) -> Result<AppendRequest, ApiError> {
    if req.events.is_empty() || req.events.len() > APPEND_MAX_EVENTS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            format!(
                "events must hold 1 to {APPEND_MAX_EVENTS} events, got {}",
                req.events.len()
            ),
        )
        .at("/events"));
    }
    // `RW-INGEST-7`: one key twice in one request is invalid.
    let mut keys = std::collections::BTreeSet::new();
    for (i, e) in req.events.iter().enumerate() {
        if let Some(k) = &e.idempotency_key
            && !keys.insert(k.as_str())
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                format!("idempotency key {k:?} appears twice in one request"),
            )
            .at(format!("/events/{i}/idempotency_key")));
        }
    }
    keep_raw_data(&mut req, body)?;
    for (i, e) in req.events.iter().enumerate() {
        // The envelope adds event_id, run_id, seq and time to what the producer sent.
        let body_len = match &e.raw_data {
            // The data stored is the producer's (RW-TYPE-25).
            Some(d) => encode(d).len() + e.payload.event_type().len() + 24,
            None => encode(e).len(),
        };
        let size = body_len + run_id.as_str().len() + 128;
        if size > max_event {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::EventTooLarge,
                format!(
                    "event {i} is about {size} bytes as an envelope, over the limit of {max_event}; split large outputs into output.chunk events"
                ),
            )
            .at(format!("/events/{i}")));
        }
    }
    Ok(req)
}

/// `RW-TYPE-24`: no integer a JavaScript reader would round, in any event's data (the
/// typed members are checked by the decoder; this covers custom types and the
/// free-form members of known ones). `RW-TYPE-25`: each event's data is then kept as
/// the producer sent it (members the typed payload does not know, numbers as written).
fn keep_raw_data(req: &mut AppendRequest, body: &[u8]) -> Result<(), ApiError> {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(());
    };
    let Some(evs) = v
        .get_mut("events")
        .and_then(serde_json::Value::as_array_mut)
    else {
        return Ok(());
    };
    for (i, e) in evs.iter_mut().enumerate() {
        if let Some(data) = e.get("data")
            && let Some((pointer, n)) = unsafe_integer(data, format!("/events/{i}/data"))
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                format!(
                    "{n} is an integer beyond ±(2^53 - 1), which JavaScript readers would round (RW-TYPE-24); send it as a string"
                ),
            )
            .at(pointer));
        }
        if let (Some(ne), Some(data)) = (req.events.get_mut(i), e.get_mut("data")) {
            ne.raw_data = Some(data.take());
        }
    }
    Ok(())
}

/// The first number in `v` (depth first, pointer `at`) whose value is an integer of
/// magnitude above 2^53 − 1, with its pointer and its text.
fn unsafe_integer(v: &serde_json::Value, at: String) -> Option<(String, String)> {
    const MAX: f64 = 9_007_199_254_740_991.0;
    match v {
        serde_json::Value::Number(n) => {
            let bad = match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => u > 9_007_199_254_740_991,
                (None, Some(i), _) => i < -9_007_199_254_740_991,
                (None, None, Some(f)) => f.fract() == 0.0 && f.abs() > MAX,
                _ => false,
            };
            bad.then(|| (at, n.to_string()))
        }
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| unsafe_integer(x, format!("{at}/{i}"))),
        serde_json::Value::Object(o) => o.iter().find_map(|(k, x)| {
            let k = k.replace('~', "~0").replace('/', "~1");
            unsafe_integer(x, format!("{at}/{k}"))
        }),
        _ => None,
    }
}

/// When an event's `data` precedes its `type` in the body, the decoder can only point
/// at the event (`/events/N`); decoding that event again with `type` first yields the
/// precise pointer into `data`.
fn refine_pointer(body: &[u8], e: &DecodeError) -> Option<(String, String)> {
    let p = e.pointer()?;
    let index: usize = p.strip_prefix("/events/")?.parse().ok()?;
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let ev = v.get("events")?.get(index)?;
    let reordered = format!(
        r#"{{"type":{},"data":{}}}"#,
        ev.get("type")?,
        ev.get("data")?
    );
    match decode::<runwire_protocol::http::NewEvent>(reordered.as_bytes(), usize::MAX, "event") {
        Err(inner) => {
            let sub = inner.pointer().filter(|s| !s.is_empty())?;
            let pointer = format!("/events/{index}{sub}");
            let reason = match &inner {
                DecodeError::Invalid { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            Some((
                pointer.clone(),
                format!("invalid append request at {pointer:?}: {reason}"),
            ))
        }
        Ok(_) => None,
    }
}

/// `GET /v1/runs/{run_id}` (spec §4.3).
pub(crate) async fn snapshot(
    State(state): State<Arc<AppState>>,
    run_id: RunPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let run_id = parse_run_id(run_id)?;
    authorize(&state, &headers, &[Role::Producer, Role::Consumer], &run_id)?;
    match state.store.snapshot(&run_id).await {
        Ok(Some(s)) => Ok(json(StatusCode::OK, encode(&s))),
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::RunNotFound,
            format!("run {run_id} does not exist"),
        )),
        Err(e) => Err(store_error(&state, e)),
    }
}

fn query_u64(q: &BTreeMap<String, String>, key: &str) -> Result<Option<u64>, ApiError> {
    q.get(key)
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n <= runwire_protocol::MAX_SAFE_INTEGER)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::InvalidRequest,
                        format!("query parameter {key}={v:?} is not a non-negative integer"),
                    )
                    .at(format!("/{key}"))
                })
        })
        .transpose()
}

/// The query parameters, or 400 `invalid_request` for a query string that cannot be
/// read.
fn query_map(
    q: Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let Query(q) = q.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            format!("the query string is not valid: {e}"),
        )
    })?;
    Ok(q)
}

/// The `limit` query parameter: `default` when absent, 400 `invalid_request` unless
/// it is 1 to `max` (spec §4.4, §4.7).
fn query_limit(q: &BTreeMap<String, String>, default: u64, max: u64) -> Result<u64, ApiError> {
    let limit = query_u64(q, "limit")?.unwrap_or(default);
    if limit == 0 || limit > max {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            format!("limit must be 1 to {max}, got {limit}"),
        )
        .at("/limit"));
    }
    Ok(limit)
}

/// `GET /v1/runs/{run_id}/events?after_seq=&limit=` (spec §4.4).
pub(crate) async fn history(
    State(state): State<Arc<AppState>>,
    run_id: RunPath,
    q: Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let run_id = parse_run_id(run_id)?;
    let q = query_map(q)?;
    authorize(&state, &headers, &[Role::Producer, Role::Consumer], &run_id)?;
    let after = query_u64(&q, "after_seq")?.unwrap_or(0);
    let limit = query_limit(&q, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT)?;
    let info = match state.store.run_info(&run_id).await {
        Ok(Some(i)) => i,
        Ok(None) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::RunNotFound,
                format!("run {run_id} does not exist"),
            ));
        }
        Err(e) => return Err(store_error(&state, e)),
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let events = state
        .store
        .read(&run_id, after, info.head_seq, limit)
        .await
        .map_err(|e| store_error(&state, e))?;
    let last = events.last().map_or(after, |e| e.seq);
    let mut body =
        String::with_capacity(events.iter().map(|e| e.json.len() + 1).sum::<usize>() + 256);
    body.push_str(r#"{"run_id":"#);
    body.push_str(&encode(&run_id));
    body.push_str(r#","epoch":"#);
    body.push_str(&encode(&info.epoch));
    body.push_str(r#","events":["#);
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(e.json.as_str());
    }
    body.push_str(r#"],"head_seq":"#);
    body.push_str(&info.head_seq.to_string());
    body.push_str(r#","has_more":"#);
    body.push_str(if last < info.head_seq {
        "true"
    } else {
        "false"
    });
    body.push('}');
    Ok(json(StatusCode::OK, body))
}

/// The `prefix` of a listing: at most 128 characters a run id may hold, possibly
/// none (`RW-INGEST-27`).
fn list_prefix(q: &BTreeMap<String, String>) -> Result<String, ApiError> {
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let ok = prefix.len() <= 128
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(prefix)
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            format!(
                "query parameter prefix={prefix:?} is not a run id prefix (at most 128 of the characters A-Z, a-z, 0-9, '.', '_', ':', '-')"
            ),
        )
        .at("/prefix"))
    }
}

/// `GET /v1/runs?prefix=&after=&limit=` (spec §4.7): the runs with a log whose id
/// starts with `prefix`, after `after`, that the token may read (`RW-INGEST-26`,
/// `RW-INGEST-28`). Runs the token may not read are skipped, so a page may take
/// several reads of the store.
pub(crate) async fn list_runs(
    State(state): State<Arc<AppState>>,
    q: Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query_map(q)?;
    // Parameters before authentication (`RW-INGEST-23`).
    let prefix = list_prefix(&q)?;
    let mut cursor = q
        .get("after")
        .map(|a| {
            RunId::new(a.as_str()).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidRequest,
                    format!("query parameter after is not a run id: {e}"),
                )
                .at("/after")
            })
        })
        .transpose()?;
    let limit = query_limit(&q, RUNS_DEFAULT_LIMIT, RUNS_MAX_LIMIT)?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let p = authenticate(&state, &headers)?;
    let mut list = RunList {
        runs: Vec::new(),
        has_more: false,
    };
    // A token that may read no run sees an empty list (spec §4.7).
    if !(p.has_role(Role::Producer) || p.has_role(Role::Consumer)) {
        return Ok(json(StatusCode::OK, encode(&list)));
    }
    // One more than `limit` tells whether more follow.
    let want = limit + 1;
    'pages: loop {
        let page = state
            .store
            .list_runs(&prefix, cursor.as_ref(), want)
            .await
            .map_err(|e| store_error(&state, e))?;
        let exhausted = page.len() < want;
        for r in page {
            cursor = Some(r.run_id.clone());
            if !p.allows_run(&r.run_id) {
                continue;
            }
            if list.runs.len() == limit {
                list.has_more = true;
                break 'pages;
            }
            list.runs.push(RunListEntry {
                run_id: r.run_id,
                epoch: r.info.epoch,
                head_seq: r.info.head_seq,
            });
        }
        if exhausted {
            break;
        }
    }
    Ok(json(StatusCode::OK, encode(&list)))
}

/// `GET /healthz`.
pub(crate) async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    if *state.shutdown.borrow() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"shutting_down"}"#.into(),
        );
    }
    match store_health(&state).await {
        Ok(()) => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
        Err(why) => unavailable_health(&why),
    }
}

/// Asks the store whether appends and subscriptions can be served (`RW-INGEST-22`);
/// a check that hangs counts as a failure. Sets the `runwire_store_up` gauge.
async fn store_health(state: &AppState) -> Result<(), String> {
    let check = tokio::time::timeout(Duration::from_secs(2), state.store.health()).await;
    let result = match check {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the event store did not answer within 2 s".to_owned()),
    };
    state.metrics.store_up.store(
        i64::from(result.is_ok()),
        std::sync::atomic::Ordering::Relaxed,
    );
    result
}

fn unavailable_health(reason: &str) -> Response {
    let body = runwire_protocol::http::Health {
        status: "unavailable".into(),
        reason: Some(reason.to_owned()),
    };
    let mut r = json(
        StatusCode::SERVICE_UNAVAILABLE,
        runwire_protocol::codec::encode(&body),
    );
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    r
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let _ = store_health(&state).await;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// A method the path does not take: 405 with `Allow` and the spec's error body
/// (`RW-INGEST-20`).
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::InvalidRequest,
        "this method is not allowed on this path (GET or POST, see the Allow header)",
    )
}

/// Anything else.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::InvalidRequest,
        "no such endpoint",
    )
}
