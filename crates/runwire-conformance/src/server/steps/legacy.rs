//! The server steps not yet moved into a domain module: one kind enum, one pattern
//! table and one match over positional arguments, registered kind by kind.

use std::{sync::Arc, time::Duration};

use runwire_mock::TimingMiss;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{ANSWER_WAIT_MS, R, Registry, ServerWorld, progress_event};
use crate::{
    http::{HttpAnswer, request},
    runner::{StepFail, StepResultT},
    server::{
        conn::{ConnectOptions, clip},
        frames,
    },
};

/// The step whose expired token is minted before the scenario's first step
/// (`ServerWorld::needs_expired_token`).
pub(super) const HELLO_EXPIRED: &str = "client {s} sends hello with an expired token";

/// The step kinds not yet moved into a domain module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum K {
    RequireRetention,
    AppendUntilTrimmed,
    RetainedHistory,
    HeadInWindow,
    SubRetained,
    RecvSubscribedCursor,
    ResetPhase,
    ConnectExpiring,
    HelloExpired,
    ExpiredInTime,
    AppendPastWindow,
    RecvResetHead,
    DistinctIds,
    FloodOver,
    PostTooLarge,
    CloseReason,
    PostRawNoToken,
    RawCloseDrop,
    AppendExpired,
    GetNotYetValid,
    HelloNotYetValid,
    RequireAuth,
    RequireLimited,
    Append,
    SubscribeChurn,
    AppendRandom,
    SnapshotIsFold,
    ResetIsFold,
    AppendStatus,
    AppendKeyed,
    AppendKeyedOne,
    AppendTyped,
    RetryPlusOne,
    Retry,
    AppendConcurrent,
    AppendLimited,
    PostRawOrigin,
    PostRawContentType,
    PostRaw,
    UpgradeFromOrigin,
    HttpGetNoToken,
    HttpGetToken,
    HttpGet,
    ConnectAuthHeader,
    ConnectTokenInUrl,
    Connect,
    HelloVersions,
    HelloToken,
    HelloNoToken,
    HelloSubAfter,
    HelloSub,
    Hello,
    IsConnectedLimited,
    IsConnected,
    SendLarge,
    SendAtLimit,
    Flood,
    SubEpoch,
    SubAfter,
    SubMany,
    SubOverLimit,
    Sub,
    Unsub,
    Resub,
    Reconnect,
    Close,
    RecvWelcome,
    FirstWelcome,
    WelcomeVersion,
    WelcomeComplete,
    WelcomeLimits,
    DistinctSessions,
    RecvSubscribed,
    RecvSubscribedAny,
    RecvReset,
    ResetMatchesHttp,
    ResetStatus,
    RecvEvents,
    RecvAllEvents,
    RecvUnsub,
    NoEvent,
    Identical,
    MatchesHistory,
    EventData,
    AnswerPointer,
    AnswerCode,
    AnswerRetryAfter,
    AnswerJson,
    Answer,
    AppendedSeqs,
    SameAssignment,
    HistoryHead,
    ErrNoLeak,
    ReceivesNothingElse,
}

/// Their patterns. More specific patterns come first.
static STEPS: &[(K, &str)] = &[
    (
        K::RequireRetention,
        "the server declares a short retention for the runs named \"retained*\"",
    ),
    (
        K::AppendUntilTrimmed,
        "the producer appends events to run {s} until a history read after seq 1 answers 410",
    ),
    (
        K::RetainedHistory,
        "the history of run {s} after its head minus the short retention is every retained event in order",
    ),
    (
        K::HeadInWindow,
        "the head of run {s} is within the replay window announced to client {s}",
    ),
    (
        K::SubRetained,
        "client {s} subscribes to run {s} half the short retention before its head with epoch {s}",
    ),
    (
        K::RecvSubscribedCursor,
        "client {s} receives subscribed for run {s} from that cursor to its head",
    ),
    (
        K::ResetPhase,
        "the reset snapshot of client {s} has phase {s}",
    ),
    (
        K::ConnectExpiring,
        "client {s} is connected with a token that expires in {n} ms",
    ),
    (
        K::HelloExpired,
        "client {s} sends hello with an expired token",
    ),
    (
        K::ExpiredInTime,
        "client {s} receives token_expired no later than 1000 ms after its token expired",
    ),
    (
        K::AppendPastWindow,
        "the producer appends more events than the replay window announced to client {s} to run {s}",
    ),
    (
        K::RecvResetHead,
        "client {s} receives reset for run {s} with reason {s} as of its head",
    ),
    (
        K::DistinctIds,
        "the events of run {s} delivered to client {s} have distinct event ids",
    ),
    (
        K::FloodOver,
        "client {s} sends more pings at once than the announced max_messages_per_second",
    ),
    (
        K::PostTooLarge,
        "the producer posts an event larger than the max_event_bytes announced to client {s} to run {s}",
    ),
    (K::CloseReason, "client {s} was closed with reason {s}"),
    (
        K::PostRawNoToken,
        "the producer posts to run {s} without a token:",
    ),
    (
        K::RawCloseDrop,
        "a raw connection that never answers the close handshake is dropped within the pong timeout announced to client {s}",
    ),
    (
        K::AppendExpired,
        "the producer appends {n} events to run {s} with an expired token",
    ),
    (
        K::GetNotYetValid,
        "the producer sends GET {rest} with a token that is valid only from an hour ahead",
    ),
    (
        K::HelloNotYetValid,
        "client {s} connects and sends hello with a token that is valid only from an hour ahead",
    ),
    (K::RequireAuth, "the server requires authentication"),
    (
        K::RequireLimited,
        "the server gives the limited token only runs named \"rwc-allowed-*\"",
    ),
    (K::Append, "the producer appends {n} events to run {s}"),
    (
        K::SubscribeChurn,
        "client {s} subscribes to run {s} and unsubscribes {n} times while the producer appends to it without pause",
    ),
    (
        K::AppendRandom,
        "the producer appends {n} random events of every type to run {s}",
    ),
    (
        K::SnapshotIsFold,
        "the snapshot of run {s} over HTTP is the fold of its history by the spec's table",
    ),
    (
        K::ResetIsFold,
        "the reset snapshot of client {s} is the fold of the history of run {s} by the spec's table",
    ),
    (
        K::AppendStatus,
        "the producer appends status {s} to run {s}",
    ),
    (
        K::AppendKeyed,
        "the producer appends {n} events with idempotency keys {s} to run {s}",
    ),
    (
        K::AppendKeyedOne,
        "the producer appends a {s} event with data {rest} and idempotency key {s} to run {s}",
    ),
    (
        K::AppendTyped,
        "the producer appends a {s} event with data {rest} to run {s}",
    ),
    (
        K::RetryPlusOne,
        "the producer retries the last append with one more event",
    ),
    (K::Retry, "the producer retries the last append"),
    (
        K::AppendConcurrent,
        "{n} producers append {n} events each to run {s} concurrently",
    ),
    (
        K::AppendLimited,
        "the producer appends {n} events to run {s} with the limited token",
    ),
    (
        K::PostRawOrigin,
        "the producer posts to run {s} with Origin {s}:",
    ),
    (
        K::PostRawContentType,
        "the producer posts to run {s} with content type {s}:",
    ),
    (K::PostRaw, "the producer posts to run {s}:"),
    (
        K::UpgradeFromOrigin,
        "a connection upgrades with Origin {s}",
    ),
    (
        K::HttpGetNoToken,
        "the producer sends GET {rest} without a token",
    ),
    (
        K::HttpGetToken,
        "the producer sends GET {rest} with the limited token",
    ),
    (K::HttpGet, "the producer sends GET {rest}"),
    (
        K::ConnectAuthHeader,
        "client {s} connects with an Authorization header",
    ),
    (
        K::ConnectTokenInUrl,
        "client {s} connects with the token in the query string",
    ),
    (K::Connect, "client {s} connects"),
    (K::HelloVersions, "client {s} sends hello with versions {s}"),
    (K::HelloToken, "client {s} sends hello with token {s}"),
    (K::HelloNoToken, "client {s} sends hello without a token"),
    (
        K::HelloSubAfter,
        "client {s} sends hello subscribing to run {s} after seq {n}",
    ),
    (K::HelloSub, "client {s} sends hello subscribing to run {s}"),
    (K::Hello, "client {s} sends hello"),
    (
        K::IsConnectedLimited,
        "client {s} is connected with the limited token",
    ),
    (K::IsConnected, "client {s} is connected"),
    (
        K::SendLarge,
        "client {s} sends a frame larger than the announced max_frame_bytes",
    ),
    (
        K::SendAtLimit,
        "client {s} sends a ping frame of exactly the announced max_frame_bytes",
    ),
    (K::Flood, "client {s} sends {n} pings at once"),
    (
        K::SubEpoch,
        "client {s} subscribes to run {s} after seq {n} with epoch {s}",
    ),
    (
        K::SubAfter,
        "client {s} subscribes to run {s} after seq {n}",
    ),
    (K::SubMany, "client {s} subscribes to runs {s}"),
    (
        K::SubOverLimit,
        "client {s} subscribes to one run more than the announced max_subscriptions",
    ),
    (K::Sub, "client {s} subscribes to run {s}"),
    (K::Unsub, "client {s} unsubscribes from run {s}"),
    (
        K::Resub,
        "client {s} resubscribes to run {s} from its cursor",
    ),
    (
        K::Reconnect,
        "client {s} reconnects and resumes run {s} from its cursor",
    ),
    (K::Close, "client {s} closes the connection"),
    (K::RecvWelcome, "client {s} receives welcome"),
    (
        K::FirstWelcome,
        "the first frame client {s} receives is welcome",
    ),
    (
        K::WelcomeVersion,
        "the welcome of client {s} announces version {s}",
    ),
    (
        K::WelcomeComplete,
        "the welcome of client {s} announces a session id, timers and limits",
    ),
    (
        K::WelcomeLimits,
        "the welcome of client {s} announces limits {s} and {s}",
    ),
    (
        K::DistinctSessions,
        "clients {s} and {s} have different session ids",
    ),
    (
        K::RecvSubscribed,
        "client {s} receives subscribed for run {s} with after_seq {n} and head_seq {n}",
    ),
    (
        K::RecvSubscribedAny,
        "client {s} receives subscribed for run {s}",
    ),
    (
        K::RecvReset,
        "client {s} receives reset for run {s} with reason {s} as of seq {n}",
    ),
    (
        K::ResetMatchesHttp,
        "the reset snapshot of client {s} equals the snapshot of run {s} read over HTTP",
    ),
    (
        K::ResetStatus,
        "the reset snapshot of client {s} has status {s}",
    ),
    (
        K::RecvEvents,
        "client {s} receives events {n} to {n} of run {s}",
    ),
    (
        K::RecvAllEvents,
        "client {s} receives every event of run {s}",
    ),
    (K::RecvUnsub, "client {s} receives unsubscribed for run {s}"),
    (K::NoEvent, "client {s} receives no event of run {s}"),
    (
        K::Identical,
        "clients {s} and {s} received identical events of run {s}",
    ),
    (
        K::MatchesHistory,
        "the events of run {s} delivered to client {s} equal the history read over HTTP",
    ),
    (
        K::EventData,
        "event {n} of run {s} delivered to client {s} has type {s} and data {rest}",
    ),
    (
        K::AnswerPointer,
        "the answer is {n} with code {s} and pointer {s}",
    ),
    (K::AnswerCode, "the answer is {n} with code {s}"),
    (
        K::AnswerRetryAfter,
        "the answer carries a Retry-After header",
    ),
    (K::AnswerJson, "the answer has {s} equal to {rest}"),
    (K::Answer, "the answer is {n}"),
    (
        K::AppendedSeqs,
        "the last append was assigned seqs {n} to {n}",
    ),
    (
        K::SameAssignment,
        "the retry was answered with the original assignments",
    ),
    (K::HistoryHead, "run {s} has {n} events over HTTP"),
    (
        K::ErrNoLeak,
        "nothing client {s} received contains the token {s}",
    ),
    (K::ReceivesNothingElse, "client {s} receives nothing else"),
];

pub(super) fn register(r: &mut Registry) {
    for &(k, pattern) in STEPS {
        r.untyped(pattern, move |w, args, doc| Box::pin(w.exec(k, args, doc)));
    }
}

/// The `exp` claim of a JWT, without verifying it.
fn jwt_exp(token: &str) -> Option<std::time::SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = b64url(payload)?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = v.get("exp")?.as_u64()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(exp))
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn num(s: &str) -> u64 {
    s.parse().unwrap_or(0)
}

impl ServerWorld {
    /// A WebSocket upgrade of the stream endpoint with `Origin: origin`: the answer
    /// (status 101 with no body when the server upgraded; the socket is then closed).
    async fn upgrade_from(&mut self, origin: &str) -> R<HttpAnswer> {
        use tokio_tungstenite::tungstenite::{Error as WsError, client::IntoClientRequest};
        let mut req = self
            .target
            .ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| StepFail::msg(format!("step error: {e}")))?;
        let value = origin
            .parse()
            .map_err(|e| StepFail::msg(format!("step error: Origin {origin:?}: {e}")))?;
        req.headers_mut().insert("origin", value);
        self.rec.out(
            "producer",
            &format!("GET {} (upgrade) [Origin: {origin}]", self.target.ws_url),
        );
        let dl = self.dl(ANSWER_WAIT_MS);
        let upgrade = tokio_tungstenite::connect_async_tls_with_config(
            req,
            None,
            true,
            Some(crate::net::connector()),
        );
        let a = match tokio::time::timeout_at(dl, upgrade).await {
            Err(_) => {
                return Err(StepFail::msg(format!(
                    "no answer to the upgrade within {ANSWER_WAIT_MS} ms"
                )));
            }
            Ok(Ok((mut ws, resp))) => {
                let _ = ws.close(None).await;
                HttpAnswer {
                    status: resp.status().as_u16(),
                    headers: Vec::new(),
                    body: Vec::new(),
                }
            }
            Ok(Err(WsError::Http(resp))) => HttpAnswer {
                status: resp.status().as_u16(),
                headers: resp
                    .headers()
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_ascii_lowercase(),
                            v.to_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect(),
                body: resp.body().clone().unwrap_or_default(),
            },
            Ok(Err(e)) => return Err(StepFail::msg(format!("the upgrade failed: {e}"))),
        };
        self.rec.inn(
            "producer",
            &format!("{} {}", a.status, clip(&String::from_utf8_lossy(&a.body))),
        );
        Ok(a)
    }

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

    /// Every event of run `id` with `seq` 1 through `through`, read over HTTP in pages
    /// (`RW-INGEST-16`).
    async fn history_through(&mut self, id: &str, through: u64) -> R<Vec<Value>> {
        let mut out = Vec::new();
        let mut after = 0u64;
        while after < through {
            let a = self
                .http(
                    "GET",
                    &format!("/v1/runs/{id}/events?after_seq={after}&limit=1000"),
                    self.token(),
                    None,
                )
                .await?;
            if a.status != 200 {
                return Err(StepFail::req(
                    "RW-INGEST-16",
                    format!(
                        "a history read after seq {after} of {id} answered {}",
                        a.status
                    ),
                ));
            }
            let page = a
                .json()
                .get("events")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let Some(last) = page
                .last()
                .and_then(|e| e.get("seq"))
                .and_then(Value::as_u64)
            else {
                return Err(StepFail::req(
                    "RW-INGEST-16",
                    format!(
                        "a history read after seq {after} of {id} returned no events, but the snapshot is as of seq {through}"
                    ),
                ));
            };
            out.extend(page.into_iter().filter(|e| {
                e.get("seq")
                    .and_then(Value::as_u64)
                    .is_some_and(|q| q <= through)
            }));
            if last <= after {
                break;
            }
            after = last;
        }
        Ok(out)
    }

    /// The declared short retention, or not implemented.
    fn retention(&self) -> R<crate::server::ShortRetention> {
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

    async fn exec(&mut self, k: K, a: Vec<String>, doc: Option<String>) -> StepResultT {
        let s = |i: usize| a.get(i).cloned().unwrap_or_default();
        match k {
            K::RequireAuth => {
                if self.target.token.is_none() {
                    return Err(StepFail::not_implemented(
                        "no --token given: authentication scenarios need a token the server accepts",
                    ));
                }
            }
            K::RequireLimited => {
                if self.target.limited_token.is_none() {
                    return Err(StepFail::not_implemented(
                        "no --limited-token given: per-run authorization scenarios need a token limited to runs named rwc-allowed-*",
                    ));
                }
            }
            K::Append => {
                let n = num(&s(0));
                let base = self.run(&s(1)).head;
                for chunk in (1..=n).collect::<Vec<_>>().chunks(500) {
                    let evs = chunk.iter().map(|i| progress_event(base + i, 0)).collect();
                    self.append(&s(1), evs, self.token()).await?;
                }
            }
            K::AppendStatus => {
                let ev = json!({"type": "run.status", "data": {"status": s(0)}});
                self.append(&s(1), vec![ev], self.token()).await?;
            }
            K::AppendTyped => {
                let data: Value = serde_json::from_str(&self.subst(&s(1)))
                    .map_err(|e| StepFail::msg(format!("step error: bad JSON data: {e}")))?;
                let ev = json!({"type": s(0), "data": data});
                self.append(&s(2), vec![ev], self.token()).await?;
            }
            K::AppendKeyed => {
                let n = num(&s(0));
                let base = self.run(&s(2)).head;
                let evs = (1..=n)
                    .map(|i| {
                        let mut e = progress_event(i, 0);
                        e["idempotency_key"] = json!(format!("{}-{}", s(1), base + i));
                        e
                    })
                    .collect();
                self.append(&s(2), evs, self.token()).await?;
            }
            K::AppendKeyedOne => {
                let data: Value = serde_json::from_str(&s(1))
                    .map_err(|e| StepFail::msg(format!("step error: bad JSON data: {e}")))?;
                let ev = json!({"type": s(0), "data": data, "idempotency_key": s(2)});
                let id = self.run_id(&s(3));
                let body = serde_json::to_vec(&json!({ "events": [ev] })).unwrap_or_default();
                let a = self
                    .http(
                        "POST",
                        &format!("/v1/runs/{id}/events"),
                        self.token(),
                        Some(body),
                    )
                    .await?;
                if a.status == 200 {
                    let v = a.json();
                    self.note_append(&s(3), &v);
                }
            }
            K::Retry => {
                let Some((path, body, _)) = self.last_append.clone() else {
                    return Err(StepFail::msg("step error: no append to retry"));
                };
                let a = self.http("POST", &path, self.token(), Some(body)).await?;
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
                self.retry_answer = Some(a.json());
            }
            K::RetryPlusOne => {
                let Some((path, body, _)) = self.last_append.clone() else {
                    return Err(StepFail::msg("step error: no append to retry"));
                };
                let mut v: Value = serde_json::from_slice(&body)
                    .map_err(|e| StepFail::msg(format!("step error: last body: {e}")))?;
                let n = v
                    .get("events")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len) as u64;
                let mut extra = progress_event(n + 1, 0);
                extra["idempotency_key"] = json!(format!("rwc-extra-{}", self.ns));
                if let Some(a) = v.get_mut("events").and_then(Value::as_array_mut) {
                    a.push(extra);
                }
                let body = serde_json::to_vec(&v).unwrap_or_default();
                let a = self
                    .http("POST", &path, self.token(), Some(body.clone()))
                    .await?;
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
                let alias = self
                    .runs
                    .iter()
                    .find(|(_, r)| path == format!("/v1/runs/{}/events", r.id))
                    .map(|(k, _)| k.clone())
                    .unwrap_or_default();
                self.note_append(&alias, &answer);
                self.last_append = Some((path, body, answer));
            }
            K::AppendConcurrent => {
                let (p, n) = (num(&s(0)), num(&s(1)));
                let id = self.run_id(&s(2));
                let base = self.run(&s(2)).head;
                let mut tasks = Vec::new();
                for prod in 0..p {
                    let base = self.target.ingest_url.clone();
                    let token = self.token();
                    let path = format!("/v1/runs/{id}/events");
                    let limit = self.ms(10_000);
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
                self.rec.note(
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
                        self.note_append(&s(2), &v);
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
            }
            K::AppendLimited => {
                let n = num(&s(0));
                let evs = (1..=n).map(|i| progress_event(i, 0)).collect::<Vec<_>>();
                let id = self.run_id(&s(1));
                let body = serde_json::to_vec(&json!({ "events": evs })).unwrap_or_default();
                let t = self.target.limited_token.clone();
                self.http("POST", &format!("/v1/runs/{id}/events"), t, Some(body))
                    .await?;
            }
            K::PostRaw | K::PostRawNoToken => {
                let id = self.run_id(&s(0));
                let body = self.subst(doc.as_deref().unwrap_or(""));
                self.http(
                    "POST",
                    &format!("/v1/runs/{id}/events"),
                    if k == K::PostRaw { self.token() } else { None },
                    Some(body.into_bytes()),
                )
                .await?;
            }
            K::PostRawOrigin | K::PostRawContentType => {
                let id = self.run_id(&s(0));
                let body = self.subst(doc.as_deref().unwrap_or(""));
                let header = if k == K::PostRawOrigin {
                    ("Origin".to_owned(), s(1))
                } else {
                    ("Content-Type".to_owned(), s(1))
                };
                self.http_with(
                    "POST",
                    &format!("/v1/runs/{id}/events"),
                    self.token(),
                    Some(body.into_bytes()),
                    &[header],
                )
                .await?;
            }
            K::UpgradeFromOrigin => {
                let origin = s(0);
                let a = self.upgrade_from(&origin).await?;
                self.last = Some(a);
            }
            K::HttpGet | K::HttpGetNoToken | K::HttpGetToken => {
                let path = self.subst(s(0).trim());
                let tok = match k {
                    K::HttpGet => self.token(),
                    K::HttpGetToken => self.target.limited_token.clone(),
                    _ => None,
                };
                self.http("GET", &path, tok, None).await?;
            }
            K::Connect => self.connect(&s(0), ConnectOptions::default(), None).await?,
            K::ConnectAuthHeader => {
                let t = self.token().unwrap_or_default();
                self.connect(
                    &s(0),
                    ConnectOptions {
                        authorization: Some(format!("Bearer {t}")),
                    },
                    None,
                )
                .await?;
            }
            K::ConnectTokenInUrl => {
                let t = self.token().unwrap_or_default();
                let url = format!("{}?token={t}&access_token={t}", self.target.ws_url);
                self.connect(&s(0), ConnectOptions::default(), Some(url))
                    .await?;
            }
            K::Hello => {
                self.hello(&s(0), vec!["1.0".into()], self.token(), vec![])
                    .await?
            }
            K::HelloVersions => {
                let v = s(1).split(',').map(|x| x.trim().to_owned()).collect();
                self.hello(&s(0), v, self.token(), vec![]).await?;
            }
            K::HelloToken => {
                let t = self.subst(&s(1));
                self.hello(&s(0), vec!["1.0".into()], Some(t), vec![])
                    .await?;
            }
            K::HelloNoToken => self.hello(&s(0), vec!["1.0".into()], None, vec![]).await?,
            K::HelloSub | K::HelloSubAfter => {
                let after = (k == K::HelloSubAfter).then(|| num(&s(2)));
                let e = self.sub_entry(&s(1), after, None);
                self.hello(&s(0), vec!["1.0".into()], self.token(), vec![e])
                    .await?;
            }
            K::IsConnected | K::IsConnectedLimited => {
                self.connect(&s(0), ConnectOptions::default(), None).await?;
                let t = if k == K::IsConnected {
                    self.token()
                } else {
                    self.target.limited_token.clone()
                };
                self.hello(&s(0), vec!["1.0".into()], t, vec![]).await?;
                self.expect_welcome(&s(0)).await?;
            }
            K::SendLarge | K::SendAtLimit => {
                let max = self
                    .welcome_u64(&s(0), "/limits/max_frame_bytes")
                    .unwrap_or(u64::from(runwire_protocol::defaults::MAX_FRAME_BYTES))
                    as usize;
                let head = r#"{"type":"ping","id":"big","pad":""#;
                let tail = r#""}"#;
                let target = if k == K::SendLarge { max + 1 } else { max };
                let pad = target.saturating_sub(head.len() + tail.len());
                let text = format!("{head}{}{tail}", "p".repeat(pad));
                self.client(&s(0))?
                    .send_text(text)
                    .await
                    .map_err(StepFail::msg)?;
            }
            K::Flood => {
                let n = num(&s(1));
                for i in 0..n {
                    let m = json!({"type": "ping", "id": format!("flood-{i}")});
                    let c = self.client(&s(0))?;
                    if c.send(&m).await.is_err() {
                        break;
                    }
                }
            }
            K::Sub => {
                let e = self.sub_entry(&s(1), None, None);
                self.subscribe(&s(0), vec![e]).await?;
            }
            K::SubAfter => {
                let e = self.sub_entry(&s(1), Some(num(&s(2))), None);
                self.subscribe(&s(0), vec![e]).await?;
            }
            K::SubEpoch => {
                let ep = match s(3).as_str() {
                    "current" => self.run(&s(1)).epoch.clone().unwrap_or_default(),
                    other => other.to_owned(),
                };
                let e = self.sub_entry(&s(1), Some(num(&s(2))), Some(ep));
                self.subscribe(&s(0), vec![e]).await?;
            }
            K::SubMany => {
                let aliases: Vec<String> = s(1).split(',').map(|x| x.trim().to_owned()).collect();
                let entries = aliases
                    .iter()
                    .map(|al| self.sub_entry(al, None, None))
                    .collect();
                self.subscribe(&s(0), entries).await?;
            }
            K::SubOverLimit => {
                let max = self
                    .welcome_u64(&s(0), "/limits/max_subscriptions")
                    .ok_or_else(|| StepFail::msg("step error: no welcome yet"))?;
                if max > 1000 {
                    return Err(StepFail::not_implemented(format!(
                        "the announced max_subscriptions {max} is too large to exceed in a test"
                    )));
                }
                let entries: Vec<Value> = (0..=max)
                    .map(|i| self.sub_entry(&format!("lim{i}"), None, None))
                    .collect();
                self.subscribe(&s(0), entries).await?;
                for i in 0..max {
                    let id = self.run_id(&format!("lim{i}"));
                    let v = self
                        .expect_control(&s(0), "subscribed", ANSWER_WAIT_MS)
                        .await
                        .map_err(|e| {
                            StepFail::req(
                                "RW-LIMIT-3",
                                format!("entry {i} within the limit: {}", e.message),
                            )
                        })?;
                    if v.get("run_id").and_then(Value::as_str) != Some(id.as_str()) {
                        return Err(StepFail::req(
                            "RW-SUB-1",
                            format!("expected subscribed for {id}, got {v}"),
                        ));
                    }
                }
                let over = self.run_id(&format!("lim{max}"));
                let v = self
                    .expect_control(&s(0), "error", ANSWER_WAIT_MS)
                    .await
                    .map_err(|e| {
                        StepFail::req(
                            "RW-LIMIT-3",
                            format!("the entry over the limit: {}", e.message),
                        )
                    })?;
                if v.get("code").and_then(Value::as_str) != Some("too_many_subscriptions")
                    || v.get("run_id").and_then(Value::as_str) != Some(over.as_str())
                {
                    return Err(StepFail::req(
                        "RW-LIMIT-3",
                        format!("expected error too_many_subscriptions for {over}, got {v}"),
                    ));
                }
            }
            K::Unsub => {
                let id = self.run_id(&s(1));
                self.client(&s(0))?
                    .send(&json!({"type": "unsubscribe", "run_ids": [id]}))
                    .await
                    .map_err(StepFail::msg)?;
            }
            K::Resub => {
                let id = self.run_id(&s(1));
                let (ep, after) = self
                    .client(&s(0))?
                    .cursors
                    .get(&id)
                    .cloned()
                    .unwrap_or((None, 0));
                let e = self.sub_entry(&s(1), Some(after), ep);
                self.subscribe(&s(0), vec![e]).await?;
            }
            K::Reconnect => {
                let id = self.run_id(&s(1));
                let (ep, after) = self
                    .clients
                    .get(&s(0))
                    .and_then(|c| c.cursors.get(&id).cloned())
                    .unwrap_or((None, 0));
                if let Some(c) = self.clients.get_mut(&s(0))
                    && c.closed.is_none()
                    && !c.ended
                {
                    c.close().await;
                }
                self.rec.note(
                    &s(0),
                    format!("resuming {id} after seq {after} epoch {ep:?}"),
                );
                self.connect(&s(0), ConnectOptions::default(), None).await?;
                let e = self.sub_entry(&s(1), Some(after), ep);
                self.hello(&s(0), vec!["1.0".into()], self.token(), vec![e])
                    .await?;
                self.expect_welcome(&s(0)).await?;
            }
            K::SubscribeChurn => {
                // The hand-off from replay to live events (§8.2, RW-RESUME-1): a
                // server that attaches its live feed and reads the head at two moments
                // must drop live events at or below the head, or an event appended in
                // between arrives twice. The window is inside the server; the kit makes
                // hitting it likely by appending without pause while it opens many
                // subscriptions, each resuming a few events behind the head, so every
                // opening has a replay and a hand-off. Every frame is checked as it
                // arrives (no duplicate, no gap, nothing outside a subscription).
                let (name, alias, n) = (s(0), s(1), num(&s(2)));
                let id = self.run_id(&alias);
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let producer = {
                    let stop = Arc::clone(&stop);
                    let base = self.target.ingest_url.clone();
                    let token = self.token();
                    let path = format!("/v1/runs/{id}/events");
                    let limit = self.ms(10_000);
                    tokio::spawn(async move {
                        let mut acked = 0u64;
                        let mut i = 0u64;
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            i += 1;
                            let body =
                                serde_json::to_vec(&json!({"events": [progress_event(i, 0)]}))
                                    .unwrap_or_default();
                            match request(
                                &base,
                                "POST",
                                &path,
                                token.as_deref(),
                                Some(&body),
                                limit,
                            )
                            .await
                            {
                                Ok(a) if a.status == 200 => acked += 1,
                                Ok(a) => {
                                    return Err(format!("an append was answered {}", a.status));
                                }
                                Err(e) => return Err(e),
                            }
                        }
                        Ok(acked)
                    })
                };
                // Let the run exist before the first subscription.
                let first = self.dl(5000);
                while self.run_head_over_http(&id).await? == 0 {
                    if Instant::now() > first {
                        return Err(StepFail::req(
                            "RW-INGEST-1",
                            "no append was acknowledged within 5 s",
                        ));
                    }
                    tokio::time::sleep(self.ms(10)).await;
                }
                let mut result = Ok(());
                for round in 0..n {
                    let last = self
                        .clients
                        .get(&name)
                        .and_then(|c| c.cursors.get(&id))
                        .map_or(0, |c| c.1);
                    let after = last.saturating_sub(3);
                    let entry = json!({"run_id": id, "after_seq": after});
                    if let Err(e) = self.subscribe(&name, vec![entry]).await {
                        result = Err(e);
                        break;
                    }
                    let v = match self
                        .expect_control(&name, "subscribed", ANSWER_WAIT_MS)
                        .await
                    {
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
                    let dl = self.dl(ANSWER_WAIT_MS);
                    let c = self.client(&name)?;
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
                    if let Err(e) = self.client(&name)?.send(&m).await {
                        result = Err(StepFail::msg(e));
                        break;
                    }
                    if let Err(e) = self
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
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                let acked = producer
                    .await
                    .map_err(|e| StepFail::msg(format!("producer task: {e}")))?
                    .map_err(|e| StepFail::req("RW-INGEST-1", e))?;
                self.rec.note(
                    "producer",
                    format!(
                        "{acked} appends acknowledged while the client opened {n} subscriptions"
                    ),
                );
                result?;
            }
            K::AppendRandom => {
                let n = num(&s(0)) as usize;
                let events = crate::fold::random_events(&mut self.rng, n);
                for chunk in events.chunks(25) {
                    self.append(&s(1), chunk.to_vec(), self.token()).await?;
                }
            }
            K::SnapshotIsFold | K::ResetIsFold => {
                let (client, alias) = if k == K::ResetIsFold {
                    (Some(s(0)), s(1))
                } else {
                    (None, s(0))
                };
                let id = self.run_id(&alias);
                let (snap, req, what) = match &client {
                    Some(name) => {
                        let r = self
                            .resets
                            .get(name)
                            .cloned()
                            .ok_or_else(|| StepFail::msg("step error: no reset received"))?;
                        (
                            r.get("snapshot").cloned().unwrap_or(Value::Null),
                            "RW-RESUME-8",
                            format!("the reset snapshot of client {name}"),
                        )
                    }
                    None => {
                        let a = self
                            .http("GET", &format!("/v1/runs/{id}"), self.token(), None)
                            .await?;
                        if a.status != 200 {
                            return Err(StepFail::req(
                                "RW-INGEST-15",
                                format!("GET /v1/runs/{id} answered {}", a.status),
                            ));
                        }
                        (a.json(), "RW-SNAP-1", "GET /v1/runs/{id}".to_owned())
                    }
                };
                let as_of = snap.get("as_of_seq").and_then(Value::as_u64).unwrap_or(0);
                let epoch = snap
                    .get("epoch")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let history = self.history_through(&id, as_of).await?;
                let want = crate::fold::fold(&id, &epoch, &history);
                let diffs = crate::fold::diff(&want, &snap);
                if !diffs.is_empty() {
                    // Name the row of the table that the first difference breaks.
                    let first = &diffs[0];
                    let req = if first.starts_with("run_id")
                        || first.starts_with("epoch")
                        || first.starts_with("as_of_seq")
                    {
                        req
                    } else {
                        "RW-SNAP-2"
                    };
                    return Err(StepFail::req(
                        req,
                        format!(
                            "{what} (as_of_seq {as_of}) is not the fold of events 1 to {as_of} by the table of spec §8.3: {}{}",
                            diffs.iter().take(4).cloned().collect::<Vec<_>>().join("; "),
                            if diffs.len() > 4 {
                                format!("; and {} more", diffs.len() - 4)
                            } else {
                                String::new()
                            }
                        ),
                    ));
                }
            }
            K::Close => self.client(&s(0))?.close().await,
            K::RecvWelcome => {
                self.expect_welcome(&s(0)).await?;
            }
            K::FirstWelcome => {
                let dl = self.dl(ANSWER_WAIT_MS);
                let c = self.client(&s(0))?;
                while c.frame_types.is_empty() {
                    if !c.pump(dl).await {
                        return Err(StepFail::req(
                            "RW-CONN-6",
                            format!("expected welcome; {}", c.nothing_msg()),
                        ));
                    }
                }
                if c.frame_types[0] != "welcome" {
                    return Err(StepFail::req(
                        "RW-CONN-6",
                        format!("the first frame was {:?}, not welcome", c.frame_types[0]),
                    ));
                }
            }
            K::WelcomeVersion => {
                let w = self.welcome_of(&s(0))?;
                if w.get("version").and_then(Value::as_str) != Some(s(1).as_str()) {
                    return Err(StepFail::req(
                        "RW-VERSION-2",
                        format!(
                            "expected welcome.version {:?}, got {}",
                            s(1),
                            w.get("version").cloned().unwrap_or(Value::Null)
                        ),
                    ));
                }
            }
            K::WelcomeComplete => {
                let w = self.welcome_of(&s(0))?;
                let sid = w.get("session_id").and_then(Value::as_str).unwrap_or("");
                if sid.is_empty() || sid.len() > 128 {
                    return Err(StepFail::req(
                        "RW-CONN-9",
                        format!("welcome.session_id must be 1-128 chars, got {sid:?}"),
                    ));
                }
                for p in [
                    "/heartbeat_interval_ms",
                    "/pong_timeout_ms",
                    "/limits/max_frame_bytes",
                    "/limits/max_event_bytes",
                    "/limits/max_subscriptions",
                    "/limits/max_messages_per_second",
                ] {
                    if w.pointer(p).and_then(Value::as_u64).is_none_or(|x| x == 0) {
                        return Err(StepFail::req(
                            "RW-CONN-7",
                            format!("welcome lacks a positive {p}: {w}"),
                        ));
                    }
                }
                for p in ["/batch_window_ms", "/replay_window_events"] {
                    if w.pointer(p).and_then(Value::as_u64).is_none() {
                        return Err(StepFail::req(
                            "RW-CONN-7",
                            format!("welcome lacks {p}: {w}"),
                        ));
                    }
                }
            }
            K::WelcomeLimits => {
                let w = self.welcome_of(&s(0))?;
                for m in [s(1), s(2)] {
                    let ptr = format!("/limits/{m}");
                    if w.pointer(&ptr)
                        .and_then(Value::as_u64)
                        .is_none_or(|x| x == 0)
                    {
                        return Err(StepFail::msg(format!(
                            "welcome.limits lacks a positive {m}: {w}"
                        )));
                    }
                }
            }
            K::DistinctSessions => {
                let a1 = self.welcome_of(&s(0))?.get("session_id").cloned();
                let a2 = self.welcome_of(&s(1))?.get("session_id").cloned();
                if a1 == a2 {
                    return Err(StepFail::req(
                        "RW-CONN-9",
                        format!("two connections share session_id {a1:?}"),
                    ));
                }
            }
            K::RecvSubscribed | K::RecvSubscribedAny => {
                let id = self.run_id(&s(1));
                let v = self
                    .expect_control(&s(0), "subscribed", ANSWER_WAIT_MS)
                    .await
                    .map_err(|e| {
                        // A reset where a replay was due breaks RW-RESUME-7; anything
                        // else (an error, nothing) leaves the entry unanswered.
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
                let known = self.run(&s(1)).epoch.clone();
                if let (Some(k), Some(e)) = (&known, &epoch)
                    && k != e
                {
                    return Err(StepFail::req(
                        "RW-SUB-2",
                        format!(
                            "subscribed.epoch {e:?} is not the run's epoch {k:?} from the append answer"
                        ),
                    ));
                }
                if known.is_none() {
                    self.run(&s(1)).epoch = epoch;
                }
                if k == K::RecvSubscribed {
                    let (af, hd) = (num(&s(2)), num(&s(3)));
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
            }
            K::RecvReset => {
                let id = self.run_id(&s(1));
                // The requirement that asks for this reason (spec §8.3).
                let want_req = match s(2).as_str() {
                    "epoch_mismatch" => "RW-RESUME-4",
                    "cursor_ahead" => "RW-RESUME-6",
                    _ => "RW-RESUME-5",
                };
                let v = self
                    .expect_control(&s(0), "reset", ANSWER_WAIT_MS)
                    .await
                    .map_err(|e| StepFail::req(want_req, format!("for run {id}: {}", e.message)))?;
                let reason = v.get("reason").and_then(Value::as_str).unwrap_or("");
                let as_of = v.pointer("/snapshot/as_of_seq").and_then(Value::as_u64);
                if v.get("run_id").and_then(Value::as_str) != Some(id.as_str()) || reason != s(2) {
                    return Err(StepFail::req(
                        want_req,
                        format!("expected reset of {id} with reason {}, got {v}", s(2)),
                    ));
                }
                if as_of != Some(num(&s(3))) {
                    return Err(StepFail::req(
                        "RW-RESUME-8",
                        format!("expected snapshot.as_of_seq {}, got {as_of:?}", s(3)),
                    ));
                }
                let ep = v.get("epoch");
                if v.pointer("/snapshot/epoch") != ep
                    || v.pointer("/snapshot/run_id") != v.get("run_id")
                {
                    return Err(StepFail::req(
                        "RW-RESUME-8",
                        format!("reset epoch/run_id differ from snapshot's: {v}"),
                    ));
                }
                self.resets.insert(s(0), v);
            }
            K::ResetMatchesHttp => {
                let Some(r) = self.resets.get(&s(0)).cloned() else {
                    return Err(StepFail::msg("step error: no reset received"));
                };
                let id = self.run_id(&s(1));
                let a = self
                    .http("GET", &format!("/v1/runs/{id}"), self.token(), None)
                    .await?;
                let snap = a.json();
                let mut want = r.get("snapshot").cloned().unwrap_or(Value::Null);
                let mut got = snap.clone();
                if got.get("as_of_seq") != want.get("as_of_seq") {
                    return Err(StepFail::msg(format!(
                        "step error: the run moved on (HTTP as_of_seq {:?}, reset {:?})",
                        got.get("as_of_seq"),
                        want.get("as_of_seq")
                    )));
                }
                if let (Some(w), Some(g)) = (want.as_object_mut(), got.as_object_mut()) {
                    w.remove("updated_at");
                    g.remove("updated_at");
                }
                if want != got {
                    return Err(StepFail::req(
                        "RW-SNAP-5",
                        format!(
                            "reset snapshot {} differs from GET /v1/runs snapshot {}",
                            clip(&want.to_string()),
                            clip(&got.to_string())
                        ),
                    ));
                }
            }
            K::ResetStatus => {
                let Some(r) = self.resets.get(&s(0)) else {
                    return Err(StepFail::msg("step error: no reset received"));
                };
                let st = r.pointer("/snapshot/status").and_then(Value::as_str);
                if st != Some(s(1).as_str()) {
                    return Err(StepFail::req(
                        "RW-SNAP-2",
                        format!("expected snapshot.status {:?}, got {st:?}", s(1)),
                    ));
                }
            }
            K::RecvEvents => {
                let (from, to) = (num(&s(1)), num(&s(2)));
                let id = self.run_id(&s(3));
                self.take_events(&s(0), &id, from, to).await?;
            }
            K::RecvAllEvents => {
                let id = self.run_id(&s(1));
                let head = self.run(&s(1)).head;
                let from = {
                    let c = self.client(&s(0))?;
                    c.events
                        .get(&id)
                        .and_then(|q| q.front())
                        .and_then(|e| e.get("seq"))
                        .and_then(Value::as_u64)
                        .or_else(|| c.cursors.get(&id).map(|x| x.1 + 1))
                        .unwrap_or(1)
                };
                if from <= head {
                    self.take_events(&s(0), &id, from, head).await?;
                }
            }
            K::RecvUnsub => {
                let id = self.run_id(&s(1));
                let v = self
                    .expect_control(&s(0), "unsubscribed", ANSWER_WAIT_MS)
                    .await
                    .map_err(|e| StepFail::req("RW-SUB-4", e.message))?;
                if v.get("run_id").and_then(Value::as_str) != Some(id.as_str()) {
                    return Err(StepFail::req(
                        "RW-SUB-4",
                        format!("expected unsubscribed for {id}, got {v}"),
                    ));
                }
            }
            K::NoEvent => {
                let id = self.run_id(&s(1));
                let q = self.quiet_ms(&s(0));
                let dl = self.dl(q);
                let c = self.client(&s(0))?;
                c.drain_until(dl).await;
                if let Some(e) = c.events.get(&id).and_then(|q| q.front()) {
                    return Err(StepFail::msg(format!(
                        "expected no event of run {id}, got {}",
                        clip(&e.to_string())
                    )));
                }
            }
            K::Identical => {
                let id = self.run_id(&s(2));
                let get = |w: &Self, n: &str| -> Vec<Value> {
                    w.clients
                        .get(n)
                        .and_then(|c| c.delivered.get(&id).cloned())
                        .unwrap_or_default()
                };
                let (x, y) = (get(self, &s(0)), get(self, &s(1)));
                if x != y {
                    return Err(StepFail::req(
                        "RW-EVENT-8",
                        format!(
                            "client {} got {} events of {id}, client {} got {}; first difference at index {}",
                            s(0),
                            x.len(),
                            s(1),
                            y.len(),
                            x.iter()
                                .zip(&y)
                                .position(|(a, b)| a != b)
                                .unwrap_or(x.len().min(y.len()))
                        ),
                    ));
                }
            }
            K::MatchesHistory => {
                let id = self.run_id(&s(0));
                let a = self
                    .http(
                        "GET",
                        &format!("/v1/runs/{id}/events?after_seq=0&limit=10000"),
                        self.token(),
                        None,
                    )
                    .await?;
                let hist = a
                    .json()
                    .get("events")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let got = self
                    .clients
                    .get(&s(1))
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
            }
            K::EventData => {
                let seq = num(&s(0));
                let id = self.run_id(&s(1));
                let want: Value = serde_json::from_str(&s(4))
                    .map_err(|e| StepFail::msg(format!("step error: bad JSON {e}")))?;
                let got = self
                    .clients
                    .get(&s(2))
                    .and_then(|c| c.delivered.get(&id))
                    .and_then(|v| {
                        v.iter()
                            .find(|e| e.get("seq").and_then(Value::as_u64) == Some(seq))
                            .cloned()
                    })
                    .ok_or_else(|| {
                        StepFail::msg(format!("event {seq} of {id} was not delivered"))
                    })?;
                if got.get("type").and_then(Value::as_str) != Some(s(3).as_str())
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
                    .any(|ns| s(3).starts_with(ns));
                    return Err(StepFail::req(
                        if known { "RW-TYPE-25" } else { "RW-TYPE-23" },
                        format!(
                            "expected type {} data {want}, got {}",
                            s(3),
                            clip(&got.to_string())
                        ),
                    ));
                }
            }
            K::Answer | K::AnswerCode | K::AnswerPointer => {
                let Some(a) = self.last.clone() else {
                    return Err(StepFail::msg("step error: no HTTP answer yet"));
                };
                let want = num(&s(0)) as u16;
                let whole = a.json();
                let body = whole.get("error").cloned().unwrap_or(Value::Null);
                if a.status != want {
                    return Err(StepFail::msg(format!(
                        "expected HTTP {want}, got {} {}",
                        a.status,
                        clip(&String::from_utf8_lossy(&a.body))
                    )));
                }
                if k != K::Answer {
                    let code = body.get("code").and_then(Value::as_str);
                    if code != Some(s(1).as_str()) {
                        return Err(StepFail::req(
                            "RW-INGEST-20",
                            format!(
                                "expected an error body {{\"error\": {{\"code\": {:?}, ...}}}}, got {whole}",
                                s(1)
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
                if k == K::AnswerPointer {
                    let p = body.get("pointer").and_then(Value::as_str).unwrap_or("");
                    if !p.starts_with(s(2).as_str()) {
                        return Err(StepFail::msg(format!(
                            "expected pointer {:?}, got body {whole}",
                            s(2)
                        )));
                    }
                }
            }
            K::AnswerRetryAfter => {
                let a = self
                    .last
                    .clone()
                    .ok_or_else(|| StepFail::msg("step error: no answer"))?;
                if a.header("retry-after").is_none() {
                    return Err(StepFail::req(
                        "RW-INGEST-21",
                        "the 503 answer has no Retry-After header",
                    ));
                }
            }
            K::AnswerJson => {
                let a = self
                    .last
                    .clone()
                    .ok_or_else(|| StepFail::msg("step error: no answer"))?;
                let want: Value = serde_json::from_str(&self.subst(&s(1)))
                    .map_err(|e| StepFail::msg(format!("step error: bad JSON {e}")))?;
                let ptr = format!("/{}", s(0).replace('.', "/"));
                let got = a.json().pointer(&ptr).cloned();
                let same = match (&got, &want) {
                    (Some(Value::Number(g)), Value::Number(w)) => g.as_f64() == w.as_f64(),
                    (g, w) => g.as_ref() == Some(w),
                };
                if !same {
                    return Err(StepFail::msg(format!(
                        "expected {} = {want}, got {got:?}",
                        s(0)
                    )));
                }
            }
            K::AppendedSeqs => {
                let Some((_, _, v)) = &self.last_append else {
                    return Err(StepFail::msg("step error: no append"));
                };
                let (f, l) = (
                    v.get("first_seq").and_then(Value::as_u64),
                    v.get("last_seq").and_then(Value::as_u64),
                );
                if (f, l) != (Some(num(&s(0))), Some(num(&s(1)))) {
                    return Err(StepFail::req(
                        "RW-EVENT-3",
                        format!(
                            "expected seqs {} to {}, got first_seq {f:?} last_seq {l:?}",
                            s(0),
                            s(1)
                        ),
                    ));
                }
            }
            K::SameAssignment => {
                let (Some((_, _, orig)), Some(re)) = (&self.last_append, &self.retry_answer) else {
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
                                        e.get("event_id")
                                            .and_then(Value::as_str)
                                            .map(str::to_owned),
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
            }
            K::HistoryHead => {
                let id = self.run_id(&s(0));
                let a = self
                    .http(
                        "GET",
                        &format!("/v1/runs/{id}/events?after_seq=0&limit=10000"),
                        self.token(),
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
                let want = num(&s(1));
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
            }
            K::ErrNoLeak => {
                let token = self.subst(&s(1));
                for e in self.rec.take() {
                    if e.actor == s(0) && e.dir == "in" && e.text.contains(&token) {
                        return Err(StepFail::req(
                            "RW-SEC-1",
                            format!("the server echoed the token in {}", clip(&e.text)),
                        ));
                    }
                }
            }
            K::AppendPastWindow => {
                let w = self
                    .welcome_u64(&s(0), "/replay_window_events")
                    .ok_or_else(|| StepFail::msg("step error: no welcome"))?;
                if w > 5000 {
                    return Err(StepFail::not_implemented(format!(
                        "the announced replay_window_events {w} is too large to exceed in a test"
                    )));
                }
                let base = self.run(&s(1)).head;
                let n = w + 5;
                for chunk in (1..=n).collect::<Vec<_>>().chunks(500) {
                    let evs = chunk.iter().map(|i| progress_event(base + i, 0)).collect();
                    self.append(&s(1), evs, self.token()).await?;
                }
            }
            K::RecvResetHead => {
                let head = self.run(&s(1)).head;
                let mut b = a.clone();
                b.push(head.to_string());
                return Box::pin(self.exec(K::RecvReset, b, doc)).await;
            }
            K::DistinctIds => {
                let id = self.run_id(&s(0));
                let got = self
                    .clients
                    .get(&s(1))
                    .and_then(|c| c.delivered.get(&id).cloned())
                    .unwrap_or_default();
                let mut seen = std::collections::BTreeSet::new();
                for e in &got {
                    let eid = e
                        .get("event_id")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    if eid.is_empty()
                        || eid.len() > 128
                        || !eid.bytes().all(|b| (0x21..0x7f).contains(&b))
                    {
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
            }
            K::FloodOver => {
                let max = self
                    .welcome_u64(&s(0), "/limits/max_messages_per_second")
                    .ok_or_else(|| StepFail::msg("step error: no welcome"))?;
                if max > 10_000 {
                    return Err(StepFail::not_implemented(format!(
                        "the announced max_messages_per_second {max} is too large to exceed in a test"
                    )));
                }
                for i in 0..max + max / 2 + 5 {
                    let m = json!({"type": "ping", "id": format!("flood-{i}")});
                    let c = self.client(&s(0))?;
                    if c.send(&m).await.is_err() {
                        break;
                    }
                }
            }
            K::PostTooLarge => {
                let max = self
                    .welcome_u64(&s(0), "/limits/max_event_bytes")
                    .ok_or_else(|| StepFail::msg("step error: no welcome"))?;
                let id = self.run_id(&s(1));
                let evs = vec![progress_event(1, 0), progress_event(2, max as usize + 10)];
                let body = serde_json::to_vec(&json!({ "events": evs })).unwrap_or_default();
                self.http(
                    "POST",
                    &format!("/v1/runs/{id}/events"),
                    self.token(),
                    Some(body),
                )
                .await?;
            }
            K::CloseReason => {
                let c = self.client(&s(0))?;
                let got = c.closed.as_ref().map(|x| x.1.clone());
                if got.as_deref() != Some(s(1).as_str()) {
                    return Err(StepFail::req(
                        "RW-CLOSE-6",
                        format!("expected close reason {:?}, got {got:?}", s(1)),
                    ));
                }
            }
            K::AppendExpired => {
                let m = self.target.token_minter.clone().ok_or_else(|| {
                    StepFail::not_implemented(
                        "no --expiring-token-cmd given: token-expiry scenarios need a way to mint expiring tokens",
                    )
                })?;
                let tok = m
                    .mint(0)
                    .await
                    .map_err(|e| StepFail::msg(format!("minting a token failed: {e}")))?;
                let n = num(&s(0));
                let evs = (1..=n).map(|i| progress_event(i, 0)).collect::<Vec<_>>();
                let id = self.run_id(&s(1));
                let body = serde_json::to_vec(&json!({ "events": evs })).unwrap_or_default();
                self.http(
                    "POST",
                    &format!("/v1/runs/{id}/events"),
                    Some(tok),
                    Some(body),
                )
                .await?;
            }
            K::GetNotYetValid | K::HelloNotYetValid => {
                let m = self.target.token_minter.clone().ok_or_else(|| {
                    StepFail::not_implemented(
                        "no token minter: not-yet-valid token scenarios need a way to mint tokens",
                    )
                })?;
                // Minted before the socket opens, so minting never counts against the
                // server's hello deadline.
                let tok = m
                    .mint_not_yet_valid(3_600_000)
                    .await
                    .map_err(|e| StepFail::msg(format!("minting a token failed: {e}")))?
                    .ok_or_else(|| {
                        StepFail::not_implemented(
                            "the token minter cannot mint a token that is not valid yet",
                        )
                    })?;
                if k == K::GetNotYetValid {
                    let path = self.subst(s(0).trim());
                    self.http("GET", &path, Some(tok), None).await?;
                } else {
                    self.connect(&s(0), ConnectOptions::default(), None).await?;
                    self.hello(&s(0), vec!["1.0".into()], Some(tok), vec![])
                        .await?;
                }
            }
            K::RawCloseDrop => {
                use tokio::io::AsyncReadExt;
                let pong = self
                    .welcome_u64(&s(0), "/pong_timeout_ms")
                    .ok_or_else(|| StepFail::msg("step error: no welcome"))?;
                self.rec.out(
                    "raw",
                    "GET (upgrade), then silence: no hello, no close reply",
                );
                let dl = self.dl(ANSWER_WAIT_MS);
                let frames::Raw {
                    mut tcp,
                    got: early,
                } = frames::Raw::open(&self.target, dl).await?;
                let upgraded = Instant::now();
                // The hello deadline, then the close handshake's pong_timeout_ms, then
                // 500 ms for the server's timers; a later drop is a miss judged against
                // the kit's lateness (the kit keeps reading to measure it).
                let due = upgraded + self.ms(self.target.hello_timeout_ms + pong + 500);
                let end = due + self.ms(pong.max(1000));
                let mut buf = vec![0u8; 65536];
                let mut got = early;
                loop {
                    match tokio::time::timeout_at(end, tcp.read(&mut buf)).await {
                        Err(_) => {
                            return Err(StepFail::timing(
                                "RW-CLOSE-9",
                                format!(
                                    "the server still held the TCP connection {} ms after the upgrade (hello deadline {} ms + pong_timeout_ms {pong} + 500 ms) although the client never completed the close handshake",
                                    upgraded.elapsed().as_millis(),
                                    self.target.hello_timeout_ms
                                ),
                                TimingMiss::new(end - due, upgraded, Instant::now()),
                            ));
                        }
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let dropped = Instant::now();
                if dropped > due {
                    return Err(StepFail::timing(
                        "RW-CLOSE-9",
                        format!(
                            "the server dropped the TCP connection {} ms after the upgrade, {} ms after the hello deadline {} ms + pong_timeout_ms {pong} + 500 ms",
                            dropped.saturating_duration_since(upgraded).as_millis(),
                            dropped.saturating_duration_since(due).as_millis(),
                            self.target.hello_timeout_ms
                        ),
                        TimingMiss::new(dropped - due, upgraded, dropped),
                    ));
                }
                self.rec.inn(
                    "raw",
                    &format!(
                        "{} bytes, then the server dropped the connection after {} ms",
                        got.len(),
                        upgraded.elapsed().as_millis()
                    ),
                );
                if !String::from_utf8_lossy(&got).contains("hello_timeout") {
                    return Err(StepFail::req(
                        "RW-CONN-3",
                        "the raw connection was dropped without a hello_timeout error frame",
                    ));
                }
            }
            K::ConnectExpiring | K::HelloExpired => {
                let Some(m) = self.target.token_minter.clone() else {
                    return Err(StepFail::not_implemented(
                        "no --expiring-token-cmd given: token-expiry scenarios need a way to mint expiring tokens",
                    ));
                };
                let ttl = if k == K::ConnectExpiring {
                    num(&s(1))
                } else {
                    0
                };
                // An already expired token was minted before the scenario opened its
                // socket (minting runs a command, whose run time must not count
                // against the server's hello deadline).
                let premint = if k == K::HelloExpired {
                    self.expired_token.take()
                } else {
                    None
                };
                let tok = match premint {
                    Some(t) => t,
                    None => m
                        .mint(ttl)
                        .await
                        .map_err(|e| StepFail::msg(format!("minting a token failed: {e}")))?,
                };
                // The token's own expiry (JWT `exp`, whole seconds) when readable.
                let exp = jwt_exp(&tok).unwrap_or_else(|| {
                    std::time::SystemTime::now() + std::time::Duration::from_millis(ttl)
                });
                self.expires.insert(s(0), exp);
                if k == K::ConnectExpiring {
                    self.connect(&s(0), ConnectOptions::default(), None).await?;
                    self.hello(&s(0), vec!["1.0".into()], Some(tok), vec![])
                        .await?;
                    self.expect_welcome(&s(0)).await?;
                } else {
                    self.hello(&s(0), vec!["1.0".into()], Some(tok), vec![])
                        .await?;
                }
            }
            K::ExpiredInTime => {
                let exp = *self
                    .expires
                    .get(&s(0))
                    .ok_or_else(|| StepFail::msg("step error: no expiring token"))?;
                let left = exp
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default();
                let expired = Instant::now() + left;
                let due = expired + self.ms(1000);
                let end = due + self.ms(2000);
                let c = self.client(&s(0))?;
                let v = loop {
                    match c.next_control(end).await {
                        Ok(v) if v.get("type").and_then(Value::as_str) == Some("pong") => {}
                        Ok(v) => break v,
                        Err(e) => {
                            let msg = format!(
                                "no token_expired error within 1000 ms after the token expired, nor {} ms later; {e}",
                                (end - due).as_millis()
                            );
                            return Err(if c.ended || c.closed.is_some() {
                                StepFail::req("RW-AUTH-8", msg)
                            } else {
                                StepFail::timing(
                                    "RW-AUTH-8",
                                    msg,
                                    TimingMiss::new(end - due, expired, Instant::now()),
                                )
                            });
                        }
                    }
                };
                let now = Instant::now();
                if now > due {
                    return Err(StepFail::timing(
                        "RW-AUTH-8",
                        format!(
                            "the token_expired error came {} ms after the token expired (allowed: 1000 ms)",
                            now.saturating_duration_since(expired).as_millis()
                        ),
                        TimingMiss::new(now - due, expired, now),
                    ));
                }
                if v.get("code").and_then(Value::as_str) != Some("token_expired")
                    || v.get("close_code").and_then(Value::as_u64) != Some(4103)
                {
                    return Err(StepFail::req(
                        "RW-AUTH-8",
                        format!("expected token_expired with close_code 4103, got {v}"),
                    ));
                }
                self.last_error.insert(s(0), v);
                let dl = self.dl(ANSWER_WAIT_MS);
                let c = self.client(&s(0))?;
                if !c.wait_end(dl).await || c.closed.as_ref().and_then(|x| x.0) != Some(4103) {
                    return Err(StepFail::req(
                        "RW-AUTH-8",
                        format!("expected a close with 4103; {}", c.nothing_msg()),
                    ));
                }
            }
            K::RequireRetention => {
                self.retention()?;
            }
            K::AppendUntilTrimmed => {
                let ret = self.retention()?;
                let alias = s(0);
                let id = self.run_id(&alias);
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
                    let head = self.run(&alias).head;
                    if head > n && self.second_trimmed(&alias).await? {
                        return Ok(());
                    }
                    let now = Instant::now();
                    if head >= enough {
                        let dl = *deadline.get_or_insert_with(|| now + self.ms(poll));
                        if now >= dl {
                            return Err(StepFail::msg(format!(
                                "the server was declared (--short-retention {}={n}) to trim runs named {}* to their last {n} events, but after {appended} appended events (head {head}) and {poll} ms of polling, GET /v1/runs/{id}/events?after_seq=1 still answers 200 from seq 2: the declaration is wrong or the server does not trim within {poll} ms",
                                ret.prefix, ret.prefix
                            )));
                        }
                    }
                    if appended < cap && (head < enough || now >= last_append + self.ms(100)) {
                        let k = batch.min(cap - appended);
                        let evs = (1..=k).map(|i| progress_event(head + i, 0)).collect();
                        self.append(&alias, evs, self.token()).await?;
                        appended += k;
                        last_append = Instant::now();
                    } else {
                        tokio::time::sleep(self.ms(20)).await;
                    }
                }
            }
            K::RetainedHistory => {
                let ret = self.retention()?;
                let id = self.run_id(&s(0));
                let head = self.run(&s(0)).head;
                let after = head.saturating_sub(ret.events);
                let limit = ret.events.clamp(1, 10_000);
                let a = self
                    .http(
                        "GET",
                        &format!("/v1/runs/{id}/events?after_seq={after}&limit={limit}"),
                        self.token(),
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
            }
            K::HeadInWindow => {
                let w = self
                    .welcome_u64(&s(1), "/replay_window_events")
                    .ok_or_else(|| StepFail::msg("step error: no welcome"))?;
                let head = self.run(&s(0)).head;
                if head > w {
                    return Err(StepFail::not_implemented(format!(
                        "the head {head} of the trimmed run exceeds the announced replay_window_events {w}, so a reset would not tell trimming from the replay window; declare a shorter --short-retention"
                    )));
                }
            }
            K::SubRetained => {
                let ret = self.retention()?;
                let w = self
                    .welcome_u64(&s(0), "/replay_window_events")
                    .ok_or_else(|| StepFail::msg("step error: no welcome"))?;
                if ret.events / 2 > w {
                    return Err(StepFail::not_implemented(format!(
                        "half the declared retention ({}) exceeds the announced replay_window_events {w}",
                        ret.events / 2
                    )));
                }
                let after = self.run(&s(1)).head.saturating_sub(ret.events / 2);
                self.sub_cursors.insert((s(0), s(1)), after);
                return Box::pin(self.exec(
                    K::SubEpoch,
                    vec![s(0), s(1), after.to_string(), s(2)],
                    doc,
                ))
                .await;
            }
            K::RecvSubscribedCursor => {
                let after = *self
                    .sub_cursors
                    .get(&(s(0), s(1)))
                    .ok_or_else(|| StepFail::msg("step error: no computed cursor"))?;
                let head = self.run(&s(1)).head;
                return Box::pin(self.exec(
                    K::RecvSubscribed,
                    vec![s(0), s(1), after.to_string(), head.to_string()],
                    doc,
                ))
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
                });
            }
            K::ResetPhase => {
                let Some(r) = self.resets.get(&s(0)) else {
                    return Err(StepFail::msg("step error: no reset received"));
                };
                let ph = r.pointer("/snapshot/phase").and_then(Value::as_str);
                if ph != Some(s(1).as_str()) {
                    return Err(StepFail::req(
                        "RW-SNAP-2",
                        format!("expected snapshot.phase {:?}, got {ph:?}", s(1)),
                    ));
                }
            }
            K::ReceivesNothingElse => {
                let q = self.quiet_ms(&s(0));
                let dl = self.dl(q);
                let c = self.client(&s(0))?;
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
            }
        }
        Ok(())
    }
}
