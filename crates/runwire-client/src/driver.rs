//! The connection task: one session after another until a terminal error or close.

use std::{collections::BTreeSet, time::Duration};

use futures_util::{SinkExt, StreamExt};
use rand::RngCore;
use runwire_protocol::{
    ClientMessage, CloseAction, CloseCode, ErrorCode, ErrorFrame, Event, Hello, Limits, Ping, Pong,
    RunId, ServerMessage, Subscribe, SubscriptionRequest, Unsubscribe, codec,
};
use tokio::{
    net::TcpStream,
    sync::mpsc,
    time::{Instant, sleep_until, timeout},
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        self, Message,
        protocol::{CloseFrame, WebSocketConfig, frame::coding::CloseCode as WsCloseCode},
    },
};

use crate::{
    Backoff, ClientConfig, ClientError, ClientErrorCode, ClientEvent, Command, ConnectionState,
    Cursor, SharedCursors, StateChange, Tracker,
    decode::{Decoded, decode_text_frame},
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a session ended.
enum Ended {
    /// The application closed the client.
    Closed,
    /// The application dropped the event stream.
    AppGone,
    /// Stop for good.
    Terminal(ClientError),
    /// Reconnect.
    Retry {
        action: CloseAction,
        retry_after_ms: Option<u64>,
        close_code: Option<u16>,
    },
}

impl Ended {
    fn backoff(close_code: Option<u16>) -> Self {
        Self::Retry {
            action: CloseAction::ReconnectWithBackoff,
            retry_after_ms: None,
            close_code,
        }
    }
}

fn client_error(code: ClientErrorCode, message: impl Into<String>, terminal: bool) -> ClientError {
    ClientError {
        code,
        message: message.into(),
        retryable: !terminal,
        terminal,
        run_id: None,
        retry_after_ms: None,
        close_code: None,
        supported_versions: None,
        last_error_code: None,
    }
}

fn from_frame(e: &ErrorFrame, terminal: bool) -> ClientError {
    ClientError {
        code: e.code.clone().into(),
        message: e.message.clone(),
        retryable: e.retryable,
        terminal,
        run_id: e.run_id.clone(),
        retry_after_ms: e.retry_after_ms,
        close_code: e.close_code,
        supported_versions: e.supported_versions.clone(),
        last_error_code: None,
    }
}

pub(crate) struct Driver {
    config: ClientConfig,
    commands: mpsc::UnboundedReceiver<Command>,
    commands_open: bool,
    out: mpsc::Sender<ClientEvent>,
    cursors: SharedCursors,
    tracker: Tracker,
    backoff: Backoff,
    events: Vec<Event>,
    outbox: Vec<ClientEvent>,
    /// Runs unsubscribed by a gap resync: their `unsubscribed` is not reported.
    resync_unsubs: BTreeSet<RunId>,
    /// The last error code the server sent, for the `reconnect_failed` report.
    last_error_code: Option<ErrorCode>,
    /// The limits of the current connection, once `welcome` announced them.
    limiter: Limiter,
    /// Connection attempts made since the client started, never reset: what the token
    /// provider is told (`RW-AUTH-9`).
    attempts_made: u32,
    /// Why the current attempt or session ended, for the `reconnecting` state change
    /// and the `reconnect_failed` report.
    cause: Option<String>,
}

/// Keeps the client within the limits `welcome` announced (`RW-LIMIT-5`): message
/// rate (a token bucket holding one second's worth), frame size (subscription lists are
/// split) and subscription count.
#[derive(Debug, Default)]
struct Limiter {
    limits: Option<Limits>,
    tokens: f64,
    last: Option<Instant>,
}

impl Limiter {
    /// Starts the bucket when `welcome` arrives. The server's bucket was full when the
    /// connection opened and `hello` already took one token (`RW-LIMIT-4`), so the
    /// client starts with one token less; counting the refill since the upgrade would
    /// need the server's clock, so this errs on the safe side.
    fn set(&mut self, limits: Limits) {
        self.tokens = (f64::from(limits.max_messages_per_second) - 1.0).max(0.0);
        self.last = Some(Instant::now());
        self.limits = Some(limits);
    }

    /// Waits until one more message may be sent.
    async fn take(&mut self) {
        let Some(l) = &self.limits else {
            return;
        };
        let rate = f64::from(l.max_messages_per_second.max(1));
        loop {
            let now = Instant::now();
            let elapsed = self.last.map_or(0.0, |t| (now - t).as_secs_f64());
            self.last = Some(now);
            self.tokens = (self.tokens + elapsed * rate).min(rate);
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                return;
            }
            let wait = (1.0 - self.tokens) / rate;
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }

    fn max_frame_bytes(&self) -> usize {
        self.limits
            .as_ref()
            .map_or(usize::MAX, |l| l.max_frame_bytes as usize)
    }
}

/// Splits `items` into groups whose encoded message stays under `max` bytes.
fn split_by_size<T: serde::Serialize>(items: Vec<T>, max: usize) -> Vec<Vec<T>> {
    const OVERHEAD: usize = 48;
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut cur = Vec::new();
    let mut size = OVERHEAD;
    for it in items {
        let n = codec::encode(&it).len() + 1;
        if !cur.is_empty() && size + n > max {
            out.push(std::mem::take(&mut cur));
            size = OVERHEAD;
        }
        size += n;
        cur.push(it);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Whether the session goes on.
type Flow = Result<(), Ended>;

impl Driver {
    pub(crate) fn new(
        config: ClientConfig,
        commands: mpsc::UnboundedReceiver<Command>,
        out: mpsc::Sender<ClientEvent>,
        cursors: SharedCursors,
    ) -> Self {
        let seed = config.seed.unwrap_or_else(|| rand::rng().next_u64());
        tracing::debug!(seed, "runwire client jitter seed");
        let mut tracker = Tracker::new(config.ordering);
        for s in &config.subscriptions {
            tracker.track(s.run_id.clone(), request_cursor(s));
        }
        let backoff = Backoff::new(config.backoff, seed);
        let d = Self {
            config,
            commands,
            commands_open: true,
            out,
            cursors,
            tracker,
            backoff,
            events: Vec::with_capacity(64),
            outbox: Vec::with_capacity(64),
            resync_unsubs: BTreeSet::new(),
            last_error_code: None,
            limiter: Limiter::default(),
            attempts_made: 0,
            cause: None,
        };
        d.sync_cursors();
        d
    }

    pub(crate) async fn run(mut self) {
        let mut delay: Option<Duration> = None;
        loop {
            if let Some(d) = delay.take()
                && let Err(end) = self.wait(d).await
            {
                self.finish(end).await;
                return;
            }
            let attempt = self.backoff.failures();
            let mut st = StateChange::new(ConnectionState::Connecting);
            st.attempt = Some(attempt);
            if self.emit(ClientEvent::State(st)).await.is_err() {
                return;
            }
            let mut healthy = false;
            let earlier = self.attempts_made;
            self.attempts_made = self.attempts_made.saturating_add(1);
            self.cause = None;
            let end = match self.session(earlier, &mut healthy).await {
                Ok(()) => Ended::backoff(None),
                Err(e) => e,
            };
            self.tracker.on_disconnect();
            self.resync_unsubs.clear();
            match end {
                Ended::Retry {
                    action,
                    retry_after_ms,
                    close_code,
                } => match self.backoff.plan(action, retry_after_ms, !healthy) {
                    Some(p) => {
                        let mut st = StateChange::new(ConnectionState::Reconnecting);
                        st.attempt = Some(p.attempt);
                        st.delay = Some(p.delay);
                        st.max_attempts = Some(self.backoff.config().max_attempts);
                        st.cause = Some(self.describe_end(close_code));
                        st.close_code = close_code;
                        if self.emit(ClientEvent::State(st)).await.is_err() {
                            return;
                        }
                        delay = Some(p.delay);
                    }
                    None => {
                        let mut e = client_error(
                            ClientErrorCode::ReconnectFailed,
                            format!(
                                "gave up after {} consecutive failed connection attempts, \
                                 the last one because {} \
                                 (last close code: {}, last error code: {})",
                                self.backoff.config().max_attempts,
                                self.describe_end(close_code),
                                close_code.map_or("none".into(), |c| c.to_string()),
                                self.last_error_code
                                    .as_ref()
                                    .map_or("none", ErrorCode::as_str),
                            ),
                            true,
                        );
                        e.close_code = close_code;
                        e.last_error_code.clone_from(&self.last_error_code);
                        self.finish(Ended::Terminal(e)).await;
                        return;
                    }
                },
                other => {
                    self.finish(other).await;
                    return;
                }
            }
        }
    }

    async fn finish(&mut self, end: Ended) {
        match end {
            Ended::Closed => {
                let _ = self
                    .emit(ClientEvent::State(StateChange::new(
                        ConnectionState::Closed,
                    )))
                    .await;
            }
            Ended::Terminal(e) => {
                // `failed`, then the terminal error as the stream's last item.
                let mut st = StateChange::new(ConnectionState::Failed);
                st.close_code = e.close_code;
                let _ = self.emit(ClientEvent::State(st)).await;
                let _ = self.emit(ClientEvent::Error(e)).await;
            }
            Ended::AppGone | Ended::Retry { .. } => {}
        }
    }

    async fn emit(&mut self, ev: ClientEvent) -> Flow {
        self.out.send(ev).await.map_err(|_| Ended::AppGone)
    }

    /// Reports a non-terminal failure of the attempt or session, remembers it as the
    /// cause, and ends the session for a reconnect with backoff.
    async fn retry_because(&mut self, err: ClientError) -> Ended {
        self.cause = Some(err.message.clone());
        match self.emit(ClientEvent::Error(err)).await {
            Ok(()) => Ended::backoff(None),
            Err(e) => e,
        }
    }

    /// Why the session or attempt that just ended ended, in words: the failure the
    /// client saw, the close code the server sent, or both.
    fn describe_end(&self, close_code: Option<u16>) -> String {
        match (close_code, &self.cause) {
            (Some(c), Some(why)) => format!("{why}; closed with code {}", CloseCode(c)),
            (Some(c), None) => format!(
                "the server closed the connection with code {}",
                CloseCode(c)
            ),
            (None, Some(why)) => why.clone(),
            (None, None) => "the connection ended".to_owned(),
        }
    }

    async fn flush(&mut self) -> Flow {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let mut outbox = std::mem::take(&mut self.outbox);
        for ev in outbox.drain(..) {
            if self.out.send(ev).await.is_err() {
                return Err(Ended::AppGone);
            }
        }
        self.outbox = outbox;
        self.sync_cursors();
        Ok(())
    }

    fn sync_cursors(&self) {
        let Ok(mut map) = self.cursors.lock() else {
            return;
        };
        for (r, c) in self.tracker.cursors() {
            match map.get_mut(r) {
                Some(m) => {
                    m.seq = c.seq;
                    if m.epoch != c.epoch {
                        m.epoch.clone_from(&c.epoch);
                    }
                }
                None => {
                    map.insert(r.clone(), c.clone());
                }
            }
        }
        if map.len() != self.tracker.cursors().count() {
            map.retain(|r, _| self.tracker.is_tracked(r));
        }
    }

    /// Waits before reconnecting, still taking commands.
    async fn wait(&mut self, d: Duration) -> Flow {
        let until = Instant::now() + d;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return Ok(()),
                cmd = self.commands.recv(), if self.commands_open => match cmd {
                    None => self.commands_open = false,
                    Some(Command::Close) => return Err(Ended::Closed),
                    Some(Command::Subscribe(reqs)) => {
                        for r in reqs {
                            self.tracker.track(r.run_id.clone(), request_cursor(&r));
                        }
                        self.sync_cursors();
                    }
                    Some(Command::Unsubscribe(ids)) => {
                        for id in ids {
                            if self.tracker.untrack(&id).is_some() {
                                self.outbox.push(ClientEvent::Unsubscribed(id));
                            }
                        }
                        self.flush().await?;
                        self.sync_cursors();
                    }
                },
            }
        }
    }

    async fn send(&mut self, ws: &mut Ws, msg: &ClientMessage) -> Flow {
        self.limiter.take().await;
        ws.send(Message::text(codec::encode(msg)))
            .await
            .map_err(|e| {
                tracing::debug!(error = %e, "send failed");
                self.cause = Some(format!("sending to the server failed: {e}"));
                Ended::backoff(None)
            })
    }

    /// Opens the connection attempt that follows `earlier` attempts since the client
    /// started, asking the token provider first (`RW-AUTH-9`).
    async fn connect(&mut self, earlier: u32) -> Result<Ws, Ended> {
        let token = match &self.config.token {
            Some(p) => match p.token(earlier).await {
                Ok(t) => t,
                Err(msg) => {
                    let err = client_error(
                        ClientErrorCode::TokenProvider,
                        format!("the token provider failed: {msg}"),
                        false,
                    );
                    return Err(self.retry_because(err).await);
                }
            },
            None => None,
        };
        let max = self.config.max_frame_bytes;
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let conn = timeout(
            self.config.connect_timeout,
            tokio_tungstenite::connect_async_tls_with_config(
                self.config.url.as_str(),
                Some(ws_config),
                true,
                Some(tokio_tungstenite::Connector::Rustls(
                    self.config
                        .tls
                        .clone()
                        .unwrap_or_else(crate::tls::default_config),
                )),
            ),
        )
        .await;
        let mut ws = match conn {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => {
                let terminal = matches!(e, tungstenite::Error::Url(_));
                let err = client_error(
                    ClientErrorCode::ConnectFailed,
                    crate::cause::connect_failure(&self.config.url, &e),
                    terminal,
                );
                if terminal {
                    return Err(Ended::Terminal(err));
                }
                return Err(self.retry_because(err).await);
            }
            Err(_) => {
                let err = client_error(
                    ClientErrorCode::ConnectFailed,
                    format!(
                        "connecting to {} timed out after {:.1} s",
                        crate::cause::authority(&self.config.url),
                        self.config.connect_timeout.as_secs_f64()
                    ),
                    false,
                );
                return Err(self.retry_because(err).await);
            }
        };
        let hello = ClientMessage::Hello(Hello {
            versions: self.config.versions.clone(),
            token,
            client: self.config.client_info.clone(),
            subscriptions: self.tracker.resume_requests(),
        });
        self.limiter = Limiter::default();
        self.send(&mut ws, &hello).await?;
        Ok(ws)
    }

    /// One connection, from the attempt to its end.
    async fn session(&mut self, earlier: u32, healthy: &mut bool) -> Flow {
        let mut ws = self.connect(earlier).await?;
        let result = self.session_loop(&mut ws, healthy).await;
        if let Err(Ended::AppGone) = result {
            // The application dropped the client: still a clean close (RW-CONN-11).
            close_gracefully(&mut ws).await;
        }
        result
    }

    async fn session_loop(&mut self, ws: &mut Ws, healthy: &mut bool) -> Flow {
        let mut s = Session {
            welcomed: false,
            liveness: Instant::now() + self.config.welcome_timeout,
            budget: self.config.welcome_timeout,
            stable_at: None,
            pending_error: None,
        };
        loop {
            let gap = self.tracker.next_deadline().map(Instant::from_std);
            tokio::select! {
                biased;
                msg = ws.next() => {
                    let Some(Ok(msg)) = msg else {
                        return Err(self.stream_ended(msg, ws, &mut s).await);
                    };
                    if s.welcomed {
                        s.liveness = Instant::now() + s.budget;
                    }
                    match msg {
                        Message::Text(t) => self.on_frame(t.as_str(), ws, &mut s).await?,
                        Message::Binary(_) => {
                            // RW-INPUT-12, RW-CONV-1: report, close 4000, back off.
                            self.cause = Some("the server sent a binary frame".into());
                            self.emit(ClientEvent::Error(client_error(
                                ClientErrorCode::InvalidFrame,
                                "the server sent a binary frame (Runwire frames are text)",
                                false,
                            )))
                            .await?;
                            close_with(ws, WsCloseCode::Library(4000), "protocol_error")
                                .await;
                            return Err(Ended::backoff(None));
                        }
                        Message::Close(cf) => {
                            let code = cf.and_then(|c| received_close_code(&c));
                            return Err(closed(code, s.pending_error.take()));
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                cmd = self.commands.recv(), if self.commands_open => {
                    match cmd {
                        None => self.commands_open = false,
                        Some(Command::Close) => {
                            close_gracefully(ws).await;
                            return Err(Ended::Closed);
                        }
                        Some(Command::Subscribe(reqs)) => {
                            let max = self
                                .limiter
                                .limits
                                .as_ref()
                                .map_or(usize::MAX, |l| l.max_subscriptions as usize);
                            let mut new: Vec<SubscriptionRequest> = Vec::new();
                            for r in reqs {
                                if self.tracker.is_tracked(&r.run_id) {
                                    continue;
                                }
                                if self.tracker.cursors().count() >= max {
                                    // RW-LIMIT-5: never ask for more than announced.
                                    let mut e = client_error(
                                        ErrorCode::TooManySubscriptions.into(),
                                        format!("the server allows {max} subscriptions per connection"),
                                        false,
                                    );
                                    e.retryable = false;
                                    e.run_id = Some(r.run_id.clone());
                                    self.emit(ClientEvent::Error(e)).await?;
                                    continue;
                                }
                                self.tracker.track(r.run_id.clone(), request_cursor(&r));
                                new.push(r);
                            }
                            self.sync_cursors();
                            self.send_subscribe(ws, new).await?;
                        }
                        Some(Command::Unsubscribe(ids)) => {
                            let gone: Vec<RunId> = ids
                                .into_iter()
                                .filter(|id| self.tracker.untrack(id).is_some())
                                .collect();
                            self.sync_cursors();
                            if !gone.is_empty() {
                                for id in &gone {
                                    self.resync_unsubs.remove(id);
                                }
                                self.send_unsubscribe(ws, gone).await?;
                            }
                        }
                    }
                }
                _ = sleep_until(s.liveness) => {
                    if !s.welcomed {
                        // RW-RECONNECT-11, RW-ERROR-7: no welcome in time is a failed
                        // attempt; close with 1000 (RW-CLOSE-8) and back off.
                        self.cause = Some(format!("no welcome within {} ms", s.budget.as_millis()));
                        self.emit(ClientEvent::Error(client_error(
                            ClientErrorCode::WelcomeTimeout,
                            format!("no welcome within {} ms; reconnecting", s.budget.as_millis()),
                            false,
                        )))
                        .await?;
                        close_with(ws, WsCloseCode::Normal, "").await;
                        return Err(Ended::backoff(None));
                    }
                    tracing::debug!("liveness timeout: no frame within {:?}", s.budget);
                    self.cause = Some(format!("no frame from the server within {} ms", s.budget.as_millis()));
                    self.emit(ClientEvent::Error(client_error(
                        ClientErrorCode::LivenessTimeout,
                        format!("no frame from the server within {} ms; reconnecting", s.budget.as_millis()),
                        false,
                    )))
                    .await?;
                    let _ = timeout(Duration::from_millis(100), ws.close(None)).await;
                    return Err(Ended::backoff(None));
                }
                _ = sleep_until(gap.unwrap_or_else(Instant::now)), if gap.is_some() => {
                    self.resync(ws).await?;
                }
                _ = sleep_until(s.stable_at.unwrap_or_else(Instant::now)), if s.stable_at.is_some() => {
                    // RW-RECONNECT-4: a healthy session forgets past failures.
                    self.backoff.reset();
                    *healthy = true;
                    s.stable_at = None;
                }
            }
        }
    }

    /// The socket ended (`None`) or failed before a message: why, and how the session
    /// ends.
    async fn stream_ended(
        &mut self,
        msg: Option<Result<Message, tungstenite::Error>>,
        ws: &mut Ws,
        s: &mut Session,
    ) -> Ended {
        match msg {
            Some(Err(tungstenite::Error::Utf8(e))) => {
                // A text frame that is not UTF-8 is undecodable (RW-INPUT-12): report
                // it, deliver nothing, close 4000 (RW-CLOSE-8) and reconnect with
                // backoff.
                let why = format!("the server sent a text frame that is not UTF-8: {e}");
                self.cause = Some(why.clone());
                let err = client_error(ClientErrorCode::InvalidFrame, why, false);
                if let Err(end) = self.emit(ClientEvent::Error(err)).await {
                    return end;
                }
                close_with(ws, WsCloseCode::Library(4000), "protocol_error").await;
                return Ended::backoff(None);
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "connection lost");
                if self.cause.is_none() {
                    self.cause = Some(crate::cause::connection_lost(&e));
                }
            }
            _ => {
                if self.cause.is_none() {
                    self.cause =
                        Some("the server ended the connection without a close frame".into());
                }
            }
        }
        closed(None, s.pending_error.take())
    }

    /// Resubscribes runs whose gap timed out or overflowed (`RW-ORDER-5`):
    /// `unsubscribe`, then `subscribe` from the cursor.
    async fn resync(&mut self, ws: &mut Ws) -> Flow {
        let due = self.tracker.take_resyncs(std::time::Instant::now());
        if due.is_empty() {
            return Ok(());
        }
        let mut run_ids = Vec::with_capacity(due.len());
        let mut subs = Vec::with_capacity(due.len());
        for (run_id, cursor) in due {
            tracing::debug!(%run_id, seq = cursor.seq, "gap: resubscribing from the cursor");
            self.resync_unsubs.insert(run_id.clone());
            subs.push(cursor.to_request(run_id.clone()));
            run_ids.push(run_id);
        }
        self.send_unsubscribe(ws, run_ids).await?;
        self.send_subscribe(ws, subs).await
    }

    /// Sends `subscribe`, split so that no frame exceeds `max_frame_bytes`.
    async fn send_subscribe(&mut self, ws: &mut Ws, subs: Vec<SubscriptionRequest>) -> Flow {
        for part in split_by_size(subs, self.limiter.max_frame_bytes()) {
            let msg = ClientMessage::Subscribe(Subscribe {
                subscriptions: part,
            });
            self.send(ws, &msg).await?;
        }
        Ok(())
    }

    /// Sends `unsubscribe`, split so that no frame exceeds `max_frame_bytes`.
    async fn send_unsubscribe(&mut self, ws: &mut Ws, run_ids: Vec<RunId>) -> Flow {
        for part in split_by_size(run_ids, self.limiter.max_frame_bytes()) {
            self.send(
                ws,
                &ClientMessage::Unsubscribe(Unsubscribe { run_ids: part }),
            )
            .await?;
        }
        Ok(())
    }

    async fn on_frame(&mut self, frame: &str, ws: &mut Ws, s: &mut Session) -> Flow {
        let decoded = match decode_text_frame(frame, self.config.max_frame_bytes, &mut self.events)
        {
            Ok(d) => d,
            Err(e) => {
                // The server violated the protocol (RW-INPUT-12): report it, deliver
                // nothing from the frame, close with 4000 (RW-CLOSE-8) and reconnect
                // with backoff; the cursors make the resume lossless.
                self.events.clear();
                self.cause = Some(format!("the server sent an invalid frame: {e}"));
                self.emit(ClientEvent::Error(client_error(
                    ClientErrorCode::InvalidFrame,
                    format!("the server sent an invalid frame: {e}"),
                    false,
                )))
                .await?;
                close_with(ws, WsCloseCode::Library(4000), "protocol_error").await;
                return Err(Ended::backoff(None));
            }
        };
        let msg = match decoded {
            Decoded::Events => {
                if !s.welcomed {
                    self.events.clear();
                    return Ok(());
                }
                let Self {
                    tracker,
                    events,
                    outbox,
                    ..
                } = self;
                let mut sink = |e: Event| outbox.push(ClientEvent::Event(e));
                for ev in events.drain(..) {
                    tracker.push(ev, &mut sink);
                }
                self.flush().await?;
                if self.tracker.has_overflow() {
                    self.resync(ws).await?;
                }
                return Ok(());
            }
            Decoded::Message(m) => *m,
        };
        match msg {
            ServerMessage::Ping(Ping { id }) => {
                // RW-HEART-2: answer every ping, with the same id, at once.
                self.send(ws, &ClientMessage::Pong(Pong { id })).await?;
            }
            ServerMessage::Welcome(w) => {
                if s.welcomed {
                    return Ok(());
                }
                if !self.config.versions.contains(&w.version) {
                    // RW-VERSION-7, RW-CLOSE-8.
                    close_with(ws, WsCloseCode::Library(4000), "protocol_error").await;
                    return Err(Ended::Terminal(client_error(
                        ClientErrorCode::ProtocolViolation,
                        format!(
                            "the server chose version {:?}, which this client did not offer ({})",
                            w.version,
                            self.config.versions.join(", ")
                        ),
                        true,
                    )));
                }
                s.welcomed = true;
                self.limiter.set(w.limits.clone());
                s.budget = Duration::from_millis(w.heartbeat_interval_ms)
                    .saturating_add(self.config.liveness_grace);
                s.liveness = Instant::now() + s.budget;
                s.stable_at = Some(Instant::now() + self.config.stable_session);
                let mut st = StateChange::new(ConnectionState::Connected);
                st.session = Some((w.session_id, w.version));
                self.emit(ClientEvent::State(st)).await?;
            }
            ServerMessage::Subscribed(sub) if self.tracker.is_tracked(&sub.run_id) => {
                self.tracker.on_subscribed(&sub);
                self.sync_cursors();
                self.emit(ClientEvent::Subscribed(sub)).await?;
            }
            ServerMessage::Reset(r) if self.tracker.is_tracked(&r.run_id) => {
                self.tracker.on_reset(&r);
                self.sync_cursors();
                self.emit(ClientEvent::Reset(Box::new(r))).await?;
            }
            ServerMessage::Unsubscribed(u) => {
                let ours = self.resync_unsubs.remove(&u.run_id);
                if !ours && !self.tracker.is_tracked(&u.run_id) {
                    self.emit(ClientEvent::Unsubscribed(u.run_id)).await?;
                }
            }
            ServerMessage::Error(e) => return self.on_error(e, ws, s).await,
            // Events were handled above; pongs answer pings this client does not
            // send; unknown message types are ignored (RW-VERSION-5).
            _ => {}
        }
        Ok(())
    }

    async fn on_error(&mut self, e: ErrorFrame, ws: &mut Ws, s: &mut Session) -> Flow {
        self.last_error_code = Some(e.code.clone());
        if let Some(code) = e.close_code {
            if CloseCode(code).action() == CloseAction::Terminal {
                // The server closes right after; stop now (RW-CLOSE-2).
                close_gracefully(ws).await;
                return Err(Ended::Terminal(from_frame(&e, true)));
            }
            self.cause = Some(format!("the server sent {}: {}", e.code, e.message));
            self.emit(ClientEvent::Error(from_frame(&e, false))).await?;
            s.pending_error = Some(e);
            return Ok(());
        }
        let err = from_frame(&e, false);
        if err.ends_subscription()
            && let Some(run_id) = &err.run_id
            && self.tracker.untrack(run_id).is_some()
        {
            // Only this subscription failed; the connection stays (RW-AUTH-6).
            self.sync_cursors();
        }
        self.emit(ClientEvent::Error(err)).await
    }
}

struct Session {
    welcomed: bool,
    liveness: Instant,
    budget: Duration,
    stable_at: Option<Instant>,
    pending_error: Option<ErrorFrame>,
}

/// The cursor a subscription request starts from. A cursor without its epoch starts
/// from the beginning of the log: its `seq` may name an event of a log that no longer
/// exists, and it cannot be sent without an epoch (`RW-RESUME-11`, `RW-RESUME-15`).
fn request_cursor(r: &SubscriptionRequest) -> Cursor {
    Cursor {
        epoch: r.epoch.clone(),
        seq: if r.epoch.is_some() {
            r.after_seq.unwrap_or(0)
        } else {
            0
        },
    }
}

/// What a close means (`RW-CLOSE-2`): the code of the close frame, else the one the
/// preceding error frame announced, else "abnormal" (reconnect with backoff).
fn closed(code: Option<u16>, pending: Option<ErrorFrame>) -> Ended {
    let code = code.or(pending.as_ref().and_then(|e| e.close_code));
    let action = code.map_or(CloseAction::ReconnectWithBackoff, |c| CloseCode(c).action());
    let retry_after_ms = pending.as_ref().and_then(|e| e.retry_after_ms);
    match action {
        CloseAction::Terminal => {
            let mut err = match &pending {
                Some(e) => from_frame(e, true),
                None => client_error(
                    ClientErrorCode::Closed,
                    format!(
                        "the server closed the connection with terminal code {}",
                        CloseCode(code.unwrap_or(0))
                    ),
                    true,
                ),
            };
            err.close_code = code;
            Ended::Terminal(err)
        }
        action => Ended::Retry {
            action,
            retry_after_ms,
            close_code: code,
        },
    }
}

/// The code of a received close frame. tungstenite replaces a code it does not
/// accept (1014, which RFC 6455 left unassigned but IANA later registered as "bad
/// gateway", and codes outside 1000–4999) with its own 1002 "Protocol violation"
/// before handing the frame over; that replacement is not the server's code, so it
/// is treated as an unknown code (reconnect with backoff, `RW-CLOSE-2`), or as the
/// code the preceding error frame announced (`RW-CLOSE-3`).
fn received_close_code(frame: &CloseFrame) -> Option<u16> {
    if frame.code == WsCloseCode::Protocol && frame.reason.as_str() == "Protocol violation" {
        return None;
    }
    Some(u16::from(frame.code))
}

/// Closes with `code` without waiting for the server's reply.
async fn close_with(ws: &mut Ws, code: WsCloseCode, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = timeout(Duration::from_millis(100), ws.close(Some(frame))).await;
}

/// Closes with 1000 (`RW-CONN-11`) and waits briefly for the server's reply.
async fn close_gracefully(ws: &mut Ws) {
    let frame = CloseFrame {
        code: WsCloseCode::Normal,
        reason: "".into(),
    };
    if timeout(Duration::from_millis(500), ws.close(Some(frame)))
        .await
        .map_or(true, |r| r.is_err())
    {
        return;
    }
    // Wait (briefly) for the server's close reply.
    let _ = timeout(Duration::from_millis(500), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}
