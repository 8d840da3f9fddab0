//! A small, configurable Runwire client used to test the mock and its fixtures.
//!
//! In its correct mode it follows the client rules of `spec/protocol.md` (hello,
//! subscriptions with cursors, de-duplication, gap buffering and resubscribe, resets,
//! pongs, liveness, full-jitter backoff, close classes, retry_after, max attempts) and
//! reports to the mock through the adapter contract's JSON lines. Each [`Bugs`] flag
//! breaks one rule, so tests can prove that the fixtures catch that bug.
//!
//! It runs past 1,000 lines because it is a whole client, kept in one file so that
//! each [`Bugs`] flag sits beside the rule it breaks.

use std::{collections::BTreeMap, time::Duration};

use futures_util::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use runwire_mock::AppSink;
use runwire_protocol::{
    CloseAction, CloseCode, Epoch, Event, EventPayload, RunSnapshot, defaults::backoff_ceiling_ms,
};
use serde_json::{Value, json};
use tokio::{
    net::TcpStream,
    time::{Instant, sleep, sleep_until, timeout},
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        Message,
        protocol::{CloseFrame, frame::coding::CloseCode as WsCode},
    },
};

/// One deliberate bug per flag.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Bugs {
    /// Deliver events at or below the cursor again.
    pub(crate) no_dedup: bool,
    /// Deliver events as they arrive: no gap buffer, no ordering.
    pub(crate) no_order: bool,
    /// Resume from the cursor the application persisted at start, never the last
    /// delivered seq.
    pub(crate) wrong_cursor: bool,
    /// Treat terminal closes like reconnect-with-backoff closes.
    pub(crate) reconnect_after_terminal: bool,
    /// Always wait the whole backoff ceiling.
    pub(crate) no_jitter: bool,
    /// Never answer pings.
    pub(crate) no_pong: bool,
    /// Crash (exit 2) on an event type it does not know.
    pub(crate) crash_on_unknown_type: bool,
    /// Ignore `retry_after_ms`.
    pub(crate) ignore_retry_after: bool,
    /// Never declare a silent connection dead.
    pub(crate) no_liveness: bool,
    /// Declare a connection dead after half the heartbeat interval, without the
    /// grace: closes a connection the server keeps alive (`RW-HEART-5`).
    pub(crate) early_liveness: bool,
    /// Do not hand resets to the application.
    pub(crate) ignore_reset: bool,
    /// Keep reconnecting forever.
    pub(crate) no_max_attempts: bool,
    /// Put the token in the URL query.
    pub(crate) token_in_query: bool,
    /// On a gap, wait forever instead of resubscribing.
    pub(crate) no_resubscribe: bool,
    /// Close with code 4000 instead of 1000 when done.
    pub(crate) wrong_close_code: bool,
    /// Send as fast as it likes, ignoring the announced `max_messages_per_second`.
    pub(crate) ignore_rate_limit: bool,
    /// Report no connection state changes.
    pub(crate) silent_states: bool,
    /// Resubscribe runs whose subscription failed with `retryable: false`.
    pub(crate) retry_failed_subscriptions: bool,
    /// Deliver events of runs it did not subscribe to.
    pub(crate) deliver_foreign_runs: bool,
    /// Treat a run-scoped error as the end of an open subscription.
    pub(crate) run_error_ends_subscription: bool,
    /// Fold `todo.updated` by merging the new items into the old list (by id) instead
    /// of replacing it (`RW-TYPE-16`).
    pub(crate) merge_todos: bool,
    /// Fold `run.progress` by replacing the whole progress object, dropping members
    /// the event does not carry (`RW-TYPE-5`).
    pub(crate) replace_progress: bool,
    /// Fold `run.metadata` labels by replacing the map instead of merging key by key
    /// (`RW-TYPE-7`).
    pub(crate) replace_labels: bool,
    /// Fold every event frame received, also repeats at or below the folded
    /// `as_of_seq` that are not delivered (`RW-SNAP-3`).
    pub(crate) fold_duplicates: bool,
    /// Reconnect after a delay of 0 every time: announced delays are legal, but the
    /// client never backs off (`RW-RECONNECT-1`, the jitter judgment's bottom tail).
    pub(crate) no_backoff: bool,
    /// Keep the cursor's epoch across a reset into a new epoch (`RW-RESUME-9`).
    pub(crate) keep_epoch_on_reset: bool,
    /// Keep the gap buffer across a reset (`RW-RESUME-9`).
    pub(crate) keep_buffer_on_reset: bool,
    /// Fold a reset's snapshot onto the old state instead of replacing it
    /// (`RW-SNAP-2`).
    pub(crate) fold_reset_onto_state: bool,
    /// Report a terminal `unsupported_version` without `supported_versions`
    /// (`RW-VERSION-6`).
    pub(crate) drop_error_details: bool,
    /// Index its tokens by the attempt number since the last healthy session, not by
    /// every attempt since the start (`RW-AUTH-9`).
    pub(crate) stale_token: bool,
    /// Decode nothing beyond JSON: deliver events and answer pings whatever their
    /// schema (`RW-CONV-2`, `RW-EVENT-2`, `RW-EVENT-5` to `RW-EVENT-7`, `RW-HEART-2`).
    pub(crate) no_validation: bool,
    /// Match message types without regard to case (`RW-CONV-5`).
    pub(crate) case_insensitive: bool,
    /// Fold a `status` or `phase` found in the data of any event type (`RW-SNAP-4`).
    pub(crate) fold_unknown_types: bool,
    /// Resume from a persisted cursor that has no epoch, sending its `after_seq`
    /// without one (`RW-RESUME-15`).
    pub(crate) epochless_cursor: bool,
    /// Wait for `welcome` for ever (`RW-RECONNECT-11`).
    pub(crate) no_welcome_timeout: bool,
    /// Report the error frame that announced a terminal close twice: as a
    /// non-terminal error, then as the terminal one (`RW-ERROR-8`).
    pub(crate) double_terminal_report: bool,
    /// Behave like a browser: declare the `browser` profile and, on a text frame that
    /// is not UTF-8, let the connection fail without a close code (still reporting
    /// the error and reconnecting with backoff, `RW-CLOSE-10`). Not a bug.
    pub(crate) browser: bool,
    /// With `browser`: report nothing when the connection fails on such a frame
    /// (`RW-CLOSE-10`).
    pub(crate) browser_silent: bool,
    /// Write the member `versions` of `hello` twice (`RW-CONV-3`).
    pub(crate) duplicate_members: bool,
    /// Print no `folded` lines (a client whose adapter does not fold).
    pub(crate) no_folded_lines: bool,
    /// Choose, announce and wait a backoff delay 1 ms above the envelope's ceiling.
    pub(crate) announce_over_ceiling: bool,
    /// Wait this much longer before reconnecting than the delay it announces.
    pub(crate) reconnect_extra_ms: u64,
    /// Announce a reconnect delay, then reconnect at once.
    pub(crate) reconnect_at_once: bool,
    /// Wait this long before answering a ping.
    pub(crate) pong_delay_ms: u64,
    /// Wait this long after closing before reporting its exit.
    pub(crate) exit_delay_ms: u64,
    /// Wait this long before its first connection (a slow start-up).
    pub(crate) start_delay_ms: u64,
    /// The waits above block the runtime thread (`std::thread::sleep`) instead of
    /// awaiting: on a current-thread runtime the whole process stalls, mock included,
    /// as when the machine deschedules it.
    pub(crate) block_runtime: bool,
}

impl Bugs {
    /// Waits `ms` milliseconds the way [`Bugs::block_runtime`] says (the behavior under
    /// test, not synchronization).
    async fn pause(&self, ms: u64) {
        if ms == 0 {
            return;
        }
        if self.block_runtime {
            std::thread::sleep(Duration::from_millis(ms));
        } else {
            sleep(Duration::from_millis(ms)).await;
        }
    }
}

#[derive(Debug, Clone)]
struct Config {
    url: String,
    runs: Vec<(String, u64, Option<String>)>,
    token: Option<String>,
    tokens: Vec<String>,
    versions: Vec<String>,
    base: u64,
    factor: u32,
    cap: u64,
    max_attempts: u32,
    stable: Duration,
    grace: Duration,
    gap: Duration,
    welcome: Duration,
    seed: u64,
}

fn parse(env: &[(String, String)]) -> Config {
    let get = |k: &str| env.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    let num = |k: &str, d: u64| get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let runs = get("RUNWIRE_RUNS")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|e| match e.split_once('@') {
            None => (e.to_owned(), 0, None),
            Some((r, c)) => match c.split_once(':') {
                Some((ep, n)) => (r.to_owned(), n.parse().unwrap_or(0), Some(ep.to_owned())),
                None => (r.to_owned(), c.parse().unwrap_or(0), None),
            },
        })
        .collect();
    Config {
        url: get("RUNWIRE_URL").unwrap_or_default(),
        runs,
        token: get("RUNWIRE_TOKEN"),
        tokens: get("RUNWIRE_TOKENS")
            .map(|t| t.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        versions: get("RUNWIRE_VERSIONS")
            .map(|t| t.split(',').map(str::to_owned).collect())
            .unwrap_or_else(|| vec!["1.0".into()]),
        base: num("RUNWIRE_RECONNECT_BASE_MS", 500),
        factor: u32::try_from(num("RUNWIRE_RECONNECT_FACTOR", 2)).unwrap_or(2),
        cap: num("RUNWIRE_RECONNECT_CAP_MS", 20_000),
        max_attempts: u32::try_from(num("RUNWIRE_RECONNECT_MAX_ATTEMPTS", 10)).unwrap_or(10),
        stable: Duration::from_millis(num("RUNWIRE_STABLE_SESSION_MS", 5000)),
        grace: Duration::from_millis(num("RUNWIRE_LIVENESS_GRACE_MS", 10_000)),
        gap: Duration::from_millis(num("RUNWIRE_GAP_TIMEOUT_MS", 2000)),
        welcome: Duration::from_millis(num("RUNWIRE_WELCOME_TIMEOUT_MS", 10_000)),
        seed: num("RUNWIRE_SEED", 0),
    }
}

#[derive(Debug, Clone, Default)]
struct Run {
    id: String,
    initial_after: u64,
    initial_epoch: Option<String>,
    epoch: Option<String>,
    last: u64,
    open: bool,
    terminal: bool,
    failed: bool,
    buffer: BTreeMap<u64, Value>,
    gap_since: Option<Instant>,
    /// Seqs delivered, for the `no_order` bug (which de-duplicates but never orders).
    seen: std::collections::BTreeSet<u64>,
    /// The application's folded state (spec §8.3), printed as `folded` lines.
    folded: Option<RunSnapshot>,
}

enum End {
    Done,
    Terminal {
        code: Option<u16>,
        error: Option<String>,
    },
    Crash,
    Reconnect {
        now: bool,
        retry_after: Option<u64>,
        welcomed: Option<Instant>,
    },
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Client {
    cfg: Config,
    bugs: Bugs,
    app: AppSink,
    runs: Vec<Run>,
    rng: ChaCha8Rng,
    /// `supported_versions` of the last error frame, for the terminal error line.
    supported: Option<Value>,
    /// The last close code and error code seen, for `reconnect_failed`
    /// (`RW-RECONNECT-3`).
    last_close: Option<u16>,
    last_error_code: Option<String>,
}

/// Runs the client until it ends, reporting through `app`, and reports its exit code.
pub(crate) async fn run(env: Vec<(String, String)>, bugs: Bugs, app: AppSink) {
    let cfg = parse(&env);
    let runs = cfg
        .runs
        .iter()
        .map(|(id, after, epoch)| Run {
            id: id.clone(),
            initial_after: *after,
            initial_epoch: epoch.clone(),
            epoch: epoch.clone(),
            // RW-RESUME-15: a cursor without its epoch starts from the beginning.
            last: if epoch.is_some() || bugs.epochless_cursor {
                *after
            } else {
                0
            },
            ..Run::default()
        })
        .collect();
    let mut c = Client {
        rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        cfg,
        bugs,
        app: app.clone(),
        runs,
        supported: None,
        last_close: None,
        last_error_code: None,
    };
    c.bugs.pause(c.bugs.start_delay_ms).await;
    if c.bugs.browser {
        c.line(json!({"kind": "platform", "profile": "browser"}));
    }
    let code = c.main().await;
    c.bugs.pause(c.bugs.exit_delay_ms).await;
    app.exit(Some(code));
}

impl Client {
    fn line(&self, v: Value) {
        if self.bugs.silent_states && v.get("kind").and_then(Value::as_str) == Some("state") {
            return;
        }
        self.app.line(v);
    }

    fn all_done(&self) -> bool {
        self.runs.iter().all(|r| r.terminal || r.failed)
    }

    async fn main(&mut self) -> i32 {
        let mut failures: u32 = 0;
        let mut attempt: usize = 0;
        loop {
            attempt += 1;
            // The spec's attempt number n: consecutive failed attempts before this one.
            self.line(json!({"kind": "state", "state": "connecting", "attempt": failures}));
            // The token provider is asked before every attempt, counting every attempt
            // since the start (RW-AUTH-9).
            let index = if self.bugs.stale_token {
                failures as usize
            } else {
                attempt - 1
            };
            let token = if self.cfg.tokens.is_empty() {
                self.cfg.token.clone()
            } else {
                Some(self.cfg.tokens[index.min(self.cfg.tokens.len() - 1)].clone())
            };
            let url = match (&token, self.bugs.token_in_query) {
                (Some(t), true) => format!("{}?token={t}", self.cfg.url),
                _ => self.cfg.url.clone(),
            };
            let limit = self.cfg.grace.max(Duration::from_millis(200));
            let end = match timeout(limit, tokio_tungstenite::connect_async(url)).await {
                Ok(Ok((ws, _))) => self.session(ws, token).await,
                _ => End::Reconnect {
                    now: false,
                    retry_after: None,
                    welcomed: None,
                },
            };
            let (now, retry_after, welcomed) = match end {
                End::Done => {
                    self.line(json!({"kind": "state", "state": "closed"}));
                    return 0;
                }
                End::Crash => return 2,
                End::Terminal { code, error } if !self.bugs.reconnect_after_terminal => {
                    let mut line = json!({
                        "kind": "error",
                        "code": error.unwrap_or_else(|| format!("closed_{}", code.unwrap_or(0))),
                        "message": "terminal close",
                        "terminal": true,
                    });
                    if let Some(v) = self
                        .supported
                        .clone()
                        .filter(|_| !self.bugs.drop_error_details)
                    {
                        line["supported_versions"] = v;
                    }
                    if let Some(c) = code {
                        line["close_code"] = json!(c);
                    }
                    if self.bugs.double_terminal_report {
                        let mut first = line.clone();
                        first["terminal"] = json!(false);
                        self.line(first);
                    }
                    self.line(line);
                    self.line(json!({"kind": "state", "state": "failed", "close_code": code}));
                    return 1;
                }
                End::Terminal { .. } => (false, None, None),
                End::Reconnect {
                    now,
                    retry_after,
                    welcomed,
                } => (now, retry_after, welcomed),
            };
            let stable = welcomed.is_some_and(|w| w.elapsed() >= self.cfg.stable);
            if stable {
                failures = 0;
            } else {
                failures += 1;
            }
            if failures >= self.cfg.max_attempts && !self.bugs.no_max_attempts {
                let mut line = json!({
                    "kind": "error",
                    "code": "reconnect_failed",
                    "message": format!("{failures} consecutive failed attempts"),
                    "terminal": true,
                });
                if !self.bugs.drop_error_details {
                    if let Some(c) = self.last_close {
                        line["close_code"] = json!(c);
                    }
                    if let Some(c) = &self.last_error_code {
                        line["last_error_code"] = json!(c);
                    }
                }
                self.line(line);
                self.line(json!({"kind": "state", "state": "failed"}));
                return 1;
            }
            let retry_after = if self.bugs.ignore_retry_after {
                None
            } else {
                retry_after
            };
            let delay = if now {
                retry_after.unwrap_or_else(|| self.rng.random_range(0..=self.cfg.base))
            } else {
                let c = backoff_ceiling_ms(failures, self.cfg.base, self.cfg.factor, self.cfg.cap);
                let d = if self.bugs.announce_over_ceiling {
                    c + 1
                } else if self.bugs.no_backoff {
                    0
                } else if self.bugs.no_jitter {
                    c
                } else {
                    self.rng.random_range(0..=c)
                };
                retry_after.map_or(d, |r| r.max(d))
            };
            self.line(json!({
                "kind": "state", "state": "reconnecting", "attempt": failures, "delay_ms": delay,
            }));
            if !self.bugs.reconnect_at_once {
                sleep(Duration::from_millis(delay + self.bugs.reconnect_extra_ms)).await;
            }
        }
    }

    /// Waits for a token of the announced message rate (`RW-LIMIT-5`): a bucket of
    /// capacity and refill rate `max_messages_per_second`, full when the connection
    /// opened, as the server counts (`RW-LIMIT-4`).
    async fn take_token(&self, bucket: &mut (f64, Instant, f64)) {
        if self.bugs.ignore_rate_limit {
            return;
        }
        let (tokens, last, rate) = *bucket;
        let now = Instant::now();
        let mut tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate);
        if tokens < 1.0 {
            // Rate limiting, not synchronization: wait until the bucket holds a token.
            tokio::time::sleep(Duration::from_secs_f64((1.0 - tokens) / rate)).await;
            tokens = 1.0;
        }
        *bucket = (tokens - 1.0, Instant::now(), rate);
    }

    async fn send(ws: &mut Ws, v: Value) {
        let _ = ws.send(Message::text(v.to_string())).await;
    }

    async fn close(ws: &mut Ws, code: u16) {
        let _ = ws
            .send(Message::Close(Some(CloseFrame {
                code: WsCode::from(code),
                reason: "".into(),
            })))
            .await;
        // Drain until the server answers the close or goes away.
        let _ = timeout(Duration::from_millis(500), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }

    fn cursor(&self, r: &Run) -> Value {
        let (after, epoch) = if self.bugs.wrong_cursor {
            (r.initial_after, r.initial_epoch.clone())
        } else {
            (r.last, r.epoch.clone())
        };
        let mut s = json!({"run_id": r.id});
        if after > 0 {
            s["after_seq"] = json!(after);
        }
        if let Some(e) = epoch {
            s["epoch"] = json!(e);
        }
        s
    }

    #[allow(clippy::too_many_lines)]
    async fn session(&mut self, mut ws: Ws, token: Option<String>) -> End {
        let subs: Vec<Value> = self
            .runs
            .iter()
            .filter(|r| !r.terminal && (!r.failed || self.bugs.retry_failed_subscriptions))
            .map(|r| self.cursor(r))
            .collect();
        for r in &mut self.runs {
            r.open = false;
            r.buffer.clear();
            r.gap_since = None;
        }
        let mut hello =
            json!({"type": "hello", "versions": self.cfg.versions, "subscriptions": subs});
        if let (Some(t), false) = (&token, self.bugs.token_in_query) {
            hello["token"] = json!(t);
        }
        if self.bugs.duplicate_members {
            let body = hello.to_string();
            let versions = hello["versions"].to_string();
            let _ = ws
                .send(Message::text(format!(
                    "{{\"versions\":{versions},{}",
                    &body[1..]
                )))
                .await;
        } else {
            Self::send(&mut ws, hello).await;
        }
        let started = Instant::now();
        let default_rate = f64::from(runwire_protocol::defaults::MAX_MESSAGES_PER_SECOND);
        // (tokens, last refill, rate); the hello took one token.
        let mut bucket = (default_rate - 1.0, started, default_rate);
        let mut welcomed: Option<Instant> = None;
        let mut interval: Option<Duration> = None;
        let mut last_frame = Instant::now();
        let mut last_error: Option<(String, Option<u64>, Option<u16>)> = None;
        loop {
            let live_deadline = match interval {
                Some(i) if self.bugs.early_liveness => last_frame + i / 2,
                Some(i) => last_frame + i + self.cfg.grace,
                // RW-RECONNECT-11: the welcome deadline.
                None if self.bugs.no_welcome_timeout => started + Duration::from_secs(3600),
                None => started + self.cfg.welcome,
            };
            let gap_deadline = self
                .runs
                .iter()
                .filter_map(|r| r.gap_since)
                .min()
                .map(|g| g + self.cfg.gap);
            let far = Instant::now() + Duration::from_secs(3600);
            let msg = tokio::select! {
                m = ws.next() => m,
                () = sleep_until(live_deadline), if !self.bugs.no_liveness => {
                    if welcomed.is_none() {
                        self.line(json!({"kind": "error", "code": "welcome_timeout", "message": "no welcome", "terminal": false}));
                    }
                    Self::close(&mut ws, 1000).await;
                    return End::Reconnect { now: false, retry_after: None, welcomed };
                }
                () = sleep_until(gap_deadline.unwrap_or(far)), if gap_deadline.is_some() && !self.bugs.no_resubscribe => {
                    let now = Instant::now();
                    let mut resub = Vec::new();
                    for r in &mut self.runs {
                        if r.gap_since.is_some_and(|g| g + self.cfg.gap <= now) {
                            r.gap_since = None;
                            r.buffer.clear();
                            r.open = false;
                            resub.push(r.clone());
                        }
                    }
                    for r in resub {
                        self.take_token(&mut bucket).await;
                        Self::send(&mut ws, json!({"type": "unsubscribe", "run_ids": [r.id]})).await;
                        let c = self.cursor(&r);
                        self.take_token(&mut bucket).await;
                        Self::send(&mut ws, json!({"type": "subscribe", "subscriptions": [c]})).await;
                    }
                    continue;
                }
            };
            last_frame = Instant::now();
            let text = match msg {
                Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
                Some(Ok(Message::Close(cf))) => {
                    let code = cf
                        .map(|f| u16::from(f.code))
                        .or_else(|| last_error.as_ref().and_then(|e| e.2));
                    return self.on_close(code, last_error, welcomed);
                }
                Some(Ok(Message::Binary(_))) => {
                    self.line(json!({"kind": "error", "code": "invalid_frame", "message": "binary frame", "terminal": false}));
                    Self::close(&mut ws, 4000).await;
                    return End::Reconnect {
                        now: false,
                        retry_after: None,
                        welcomed,
                    };
                }
                Some(Ok(_)) => continue,
                Some(Err(tokio_tungstenite::tungstenite::Error::Utf8(_))) => {
                    // RW-INPUT-12 (natively) or RW-CLOSE-10 (a browser's WebSocket layer
                    // fails the connection itself): report, deliver nothing, back off.
                    if !(self.bugs.browser && self.bugs.browser_silent) {
                        self.line(json!({"kind": "error", "code": "invalid_frame", "message": "text frame not UTF-8", "terminal": false}));
                    }
                    if !self.bugs.browser {
                        Self::close(&mut ws, 4000).await;
                    }
                    return End::Reconnect {
                        now: false,
                        retry_after: None,
                        welcomed,
                    };
                }
                Some(Err(_)) | None => {
                    let code = last_error.as_ref().and_then(|e| e.2);
                    return self.on_close(code, last_error, welcomed);
                }
            };
            // RW-INPUT-12: a frame that is not one JSON object, or a known message that
            // does not match its schema (the protocol crate's decoder), is undecodable.
            let decodes = self.bugs.no_validation
                || runwire_protocol::codec::decode_server_message(text.as_bytes(), 1 << 24).is_ok();
            let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&text)
                .map_err(|_| ())
                .and_then(|v| if decodes { Ok(v) } else { Err(()) })
            else {
                self.line(json!({"kind": "error", "code": "invalid_frame", "message": "undecodable frame", "terminal": false}));
                Self::close(&mut ws, 4000).await;
                return End::Reconnect {
                    now: false,
                    retry_after: None,
                    welcomed,
                };
            };
            let ty = m
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let ty = if self.bugs.case_insensitive {
                ty.to_ascii_lowercase()
            } else {
                ty
            };
            let run_of = |m: &serde_json::Map<String, Value>| {
                m.get("run_id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            match ty.as_str() {
                "welcome" => {
                    let v = m.get("version").and_then(Value::as_str).unwrap_or("");
                    if !self.cfg.versions.iter().any(|x| x == v) {
                        Self::close(&mut ws, 4000).await;
                        return End::Terminal {
                            code: Some(4000),
                            error: Some("protocol_violation".into()),
                        };
                    }
                    welcomed = Some(Instant::now());
                    if let Some(rate) = m
                        .get("limits")
                        .and_then(|l| l.get("max_messages_per_second"))
                        .and_then(Value::as_u64)
                        .filter(|r| *r > 0)
                    {
                        // The announced rate replaces the default (RW-CONN-8).
                        let rate = rate as f64;
                        bucket = (bucket.0.min(rate - 1.0).max(0.0), bucket.1, rate);
                    }
                    interval = m
                        .get("heartbeat_interval_ms")
                        .and_then(Value::as_u64)
                        .map(Duration::from_millis);
                    self.line(json!({"kind": "state", "state": "connected"}));
                }
                "subscribed" => {
                    let id = run_of(&m);
                    if let Some(r) = self.runs.iter_mut().find(|r| r.id == id) {
                        r.open = true;
                        r.epoch = m.get("epoch").and_then(Value::as_str).map(str::to_owned);
                        // A subscription in another epoch is a new log: fold anew.
                        if r.folded
                            .as_ref()
                            .is_some_and(|f| Some(f.epoch.as_str()) != r.epoch.as_deref())
                        {
                            r.folded = None;
                        }
                        r.last = m.get("after_seq").and_then(Value::as_u64).unwrap_or(0);
                        r.buffer.clear();
                        r.gap_since = None;
                    }
                    let mut line = m.clone();
                    line.remove("type");
                    line.insert("kind".into(), json!("subscribed"));
                    self.line(Value::Object(line));
                }
                "reset" => {
                    let id = run_of(&m);
                    let as_of = m
                        .get("snapshot")
                        .and_then(|s| s.get("as_of_seq"))
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    if let Some(r) = self.runs.iter_mut().find(|r| r.id == id) {
                        r.open = true;
                        if !self.bugs.ignore_reset && !self.bugs.keep_epoch_on_reset {
                            r.epoch = m.get("epoch").and_then(Value::as_str).map(str::to_owned);
                        }
                        r.last = as_of;
                        if !self.bugs.keep_buffer_on_reset {
                            r.buffer.clear();
                            r.gap_since = None;
                        }
                        if m.get("snapshot")
                            .and_then(|s| s.get("status"))
                            .and_then(Value::as_str)
                            .is_some_and(|s| matches!(s, "completed" | "failed" | "cancelled"))
                        {
                            r.terminal = true;
                        }
                    }
                    if !self.bugs.ignore_reset {
                        let mut line = m.clone();
                        line.remove("type");
                        line.insert("kind".into(), json!("reset"));
                        self.line(Value::Object(line));
                        let snap = m
                            .get("snapshot")
                            .cloned()
                            .and_then(|s| serde_json::from_value::<RunSnapshot>(s).ok());
                        if let Some(idx) = self.runs.iter().position(|r| r.id == id)
                            && let Some(snap) = snap
                        {
                            let snap =
                                match (&self.runs[idx].folded, self.bugs.fold_reset_onto_state) {
                                    // Old members the snapshot lacks survive.
                                    (Some(old), true) => {
                                        let mut merged =
                                            serde_json::to_value(old).unwrap_or_default();
                                        if let (Some(o), Value::Object(n)) = (
                                            merged.as_object_mut(),
                                            serde_json::to_value(&snap).unwrap_or_default(),
                                        ) {
                                            o.extend(n);
                                        }
                                        serde_json::from_value(merged).unwrap_or(snap)
                                    }
                                    _ => snap,
                                };
                            self.runs[idx].folded = Some(snap);
                            self.print_folded(idx);
                        }
                    }
                    if self.all_done() {
                        Self::close(&mut ws, self.done_code()).await;
                        return End::Done;
                    }
                }
                "event" => {
                    if let Some(ev) = m.get("event").cloned()
                        && let Some(end) = self.on_event(ev)
                    {
                        return self.finish(&mut ws, end).await;
                    }
                }
                "batch" => {
                    let events = m
                        .get("events")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    for ev in events {
                        if let Some(end) = self.on_event(ev) {
                            return self.finish(&mut ws, end).await;
                        }
                    }
                }
                "ping" if !self.bugs.no_pong => {
                    let id = m.get("id").cloned().unwrap_or(Value::Null);
                    self.bugs.pause(self.bugs.pong_delay_ms).await;
                    self.take_token(&mut bucket).await;
                    Self::send(&mut ws, json!({"type": "pong", "id": id})).await;
                }
                "error" => {
                    let code = m
                        .get("code")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    let close = m
                        .get("close_code")
                        .and_then(Value::as_u64)
                        .and_then(|c| u16::try_from(c).ok());
                    let retry = m.get("retry_after_ms").and_then(Value::as_u64);
                    let retryable = m.get("retryable").and_then(Value::as_bool).unwrap_or(false);
                    self.supported = m.get("supported_versions").cloned();
                    self.last_error_code = Some(code.clone());
                    let run = m.get("run_id").and_then(Value::as_str).map(str::to_owned);
                    let mut line = json!({"kind": "error", "code": code, "message": m.get("message").cloned().unwrap_or(json!("")), "terminal": false});
                    if let Some(r) = &run {
                        line["run_id"] = json!(r);
                        // An error answers one subscription entry; it does not end
                        // a subscription that is open (RW-SUB-5).
                        if !retryable
                            && let Some(x) = self.runs.iter_mut().find(|x| &x.id == r)
                            && (!x.open || self.bugs.run_error_ends_subscription)
                        {
                            x.failed = true;
                            x.open = false;
                        }
                    }
                    if close.is_none() {
                        self.line(line);
                        if self.all_done() {
                            Self::close(&mut ws, self.done_code()).await;
                            return End::Done;
                        }
                    }
                    last_error = Some((code, retry, close));
                }
                _ => {}
            }
        }
    }

    fn done_code(&self) -> u16 {
        if self.bugs.wrong_close_code {
            4000
        } else {
            1000
        }
    }

    async fn finish(&mut self, ws: &mut Ws, end: End) -> End {
        if matches!(end, End::Done) {
            Self::close(ws, self.done_code()).await;
        }
        end
    }

    fn on_close(
        &mut self,
        code: Option<u16>,
        last_error: Option<(String, Option<u64>, Option<u16>)>,
        welcomed: Option<Instant>,
    ) -> End {
        let retry_after = last_error.as_ref().and_then(|e| e.1);
        self.last_close = code;
        let action = code.map_or(CloseAction::ReconnectWithBackoff, |c| CloseCode(c).action());
        match action {
            CloseAction::Terminal => End::Terminal {
                code,
                error: last_error.map(|e| e.0),
            },
            CloseAction::ReconnectNow => End::Reconnect {
                now: true,
                retry_after,
                welcomed,
            },
            _ => End::Reconnect {
                now: false,
                retry_after,
                welcomed,
            },
        }
    }

    fn deliver(&mut self, idx: usize, ev: Value) {
        let terminal = ev.get("type").and_then(Value::as_str) == Some("run.status")
            && ev
                .get("data")
                .and_then(|d| d.get("status"))
                .and_then(Value::as_str)
                .is_some_and(|s| matches!(s, "completed" | "failed" | "cancelled"));
        if terminal {
            self.runs[idx].terminal = true;
        }
        self.line(json!({"kind": "event", "event": ev.clone()}));
        self.fold(idx, &ev, false);
    }

    /// Folds one event into the run's application state (spec §8.3) and prints it.
    /// `repeat` marks an event the client did not deliver (at or below its cursor).
    fn fold(&mut self, idx: usize, ev: &Value, repeat: bool) {
        let Ok(event) = serde_json::from_value::<Event>(ev.clone()) else {
            return;
        };
        let bugs = self.bugs;
        let run = &mut self.runs[idx];
        let epoch = run
            .epoch
            .clone()
            .and_then(|e| Epoch::new(e).ok())
            .or_else(|| Epoch::new("e1").ok());
        let Some(epoch) = epoch else { return };
        let snap = run
            .folded
            .get_or_insert_with(|| RunSnapshot::empty(event.run_id.clone(), epoch));
        let old_todos = snap.todos.clone();
        if repeat {
            // The fold_duplicates bug: no as_of_seq guard.
            snap.as_of_seq = snap.as_of_seq.min(event.seq.saturating_sub(1));
        }
        if !snap.apply(&event) {
            return;
        }
        match &event.payload {
            EventPayload::TodoUpdated(_) if bugs.merge_todos => {
                for old in old_todos.into_iter().rev() {
                    if !snap.todos.iter().any(|t| t.id == old.id) {
                        snap.todos.insert(0, old);
                    }
                }
            }
            EventPayload::RunProgress(d) if bugs.replace_progress => {
                snap.progress = Some(d.clone());
            }
            EventPayload::RunMetadata(d) if bugs.replace_labels => {
                if let Some(m) = snap.metadata.as_mut() {
                    m.labels.clone_from(&d.labels);
                }
            }
            _ => {}
        }
        let ty = ev.get("type").and_then(Value::as_str).unwrap_or("");
        let named = [
            "run.status",
            "run.progress",
            "run.metadata",
            "run.phase",
            "log.line",
            "tool.started",
            "tool.finished",
            "artifact.created",
            "todo.updated",
        ];
        if bugs.fold_unknown_types && !named.contains(&ty) {
            // The bug: a status or phase in any event's data lands in the state.
            let mut v = serde_json::to_value(&*snap).unwrap_or_default();
            for k in ["status", "phase"] {
                if let Some(x) = ev.pointer(&format!("/data/{k}")).filter(|x| x.is_string()) {
                    v[k] = x.clone();
                }
            }
            if let Ok(polluted) = serde_json::from_value::<RunSnapshot>(v) {
                *snap = polluted;
            }
        }
        self.print_folded(idx);
    }

    fn print_folded(&self, idx: usize) {
        if self.bugs.no_folded_lines {
            return;
        }
        if let Some(s) = &self.runs[idx].folded {
            self.line(json!({"kind": "folded", "run_id": s.run_id, "snapshot": s}));
        }
    }

    /// Processes one event; returns how the session ends when it does.
    fn on_event(&mut self, ev: Value) -> Option<End> {
        let run = ev
            .get("run_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let seq = ev.get("seq").and_then(Value::as_u64).unwrap_or(0);
        let ty = ev
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let Some(idx) = self.runs.iter().position(|r| r.id == run) else {
            if self.bugs.deliver_foreign_runs {
                self.line(json!({"kind": "event", "event": ev}));
            }
            return None;
        };
        if !self.runs[idx].open {
            return None;
        }
        if self.bugs.crash_on_unknown_type
            && !runwire_protocol::KNOWN_EVENT_TYPES.contains(&ty.as_str())
        {
            return Some(End::Crash);
        }
        let last = self.runs[idx].last;
        if self.bugs.no_order {
            if seq <= last || !self.runs[idx].seen.insert(seq) {
                return None;
            }
            self.deliver(idx, ev);
        } else if seq <= last {
            if self.bugs.no_dedup {
                self.deliver(idx, ev);
            } else if self.bugs.fold_duplicates {
                self.fold(idx, &ev, true);
            }
            return None;
        } else if seq == last + 1 {
            self.runs[idx].last = seq;
            self.deliver(idx, ev);
            loop {
                let next = self.runs[idx].last + 1;
                let Some(b) = self.runs[idx].buffer.remove(&next) else {
                    break;
                };
                self.runs[idx].last = next;
                self.deliver(idx, b);
            }
            if self.runs[idx].buffer.is_empty() {
                self.runs[idx].gap_since = None;
            }
        } else {
            self.runs[idx].buffer.insert(seq, ev);
            self.runs[idx].gap_since.get_or_insert_with(Instant::now);
        }
        self.all_done().then_some(End::Done)
    }
}
