//! The WebSocket endpoint `GET /v1/stream` (spec §5–§16).

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use runwire_protocol::{
    ClientMessage, ErrorCode, ErrorFrame, Hello, PROTOCOL_VERSIONS, Ping, Pong, Reset, ResetReason,
    RunId, ServerInfo, ServerMessage, Subscribe, Subscribed, SubscriptionRequest, Unsubscribe,
    Unsubscribed, Welcome,
    codec::{DecodeError, decode_client_message, peek_type},
    negotiate_version,
};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{
    AppState,
    auth::{AuthError, Principal},
    config::Role,
    linger::{self, LingerEnd, LingerHandle},
    metrics::{Metrics, PeerEnd},
    outbound::{Outbound, QueueError},
    store::{LiveRecv, StoredEvent},
};

/// What a subscription task reports to its connection.
enum SubReport {
    /// A fatal error: close the connection with it.
    Fatal(ErrorFrame),
}

struct Conn {
    state: Arc<AppState>,
    out: Arc<Outbound>,
    principal: Option<Principal>,
    /// The connection's place in its identity's count (`RW-SEC-18`).
    identity: Option<crate::identity::IdentitySlot>,
    subs: BTreeMap<RunId, JoinHandle<()>>,
    reports: tokio::sync::mpsc::UnboundedSender<SubReport>,
    /// Token bucket for the client message rate (`RW-LIMIT-4`).
    tokens: f64,
    refilled: Instant,
    /// Unanswered server pings, oldest first, with their pong deadlines.
    pings: std::collections::VecDeque<(String, tokio::time::Instant)>,
    ping_counter: u64,
    /// The session id sent in `welcome`.
    session_id: Option<String>,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Serves one WebSocket connection until it closes.
///
/// When the connection ends before the client finished its side (it did not send a
/// close frame or close TCP: the read failed, as on an oversize frame, or the server
/// stopped waiting), and `linger` is given (an HTTP/1.1 upgrade), the socket is closed
/// with a lingering close (see [`crate::linger`]), so that the final `error` frame and
/// close frame are not destroyed by a TCP reset (`RW-LIMIT-1`, `RW-CLOSE-9`).
///
/// When it ends, one line is logged at info (target `runwire::conn`) with the reason,
/// the close code, the duration, the frames and events in and out, the session id and
/// the peer address `peer` (never the token, `RW-SEC-1`).
pub(crate) async fn serve_connection(
    socket: WebSocket,
    state: Arc<AppState>,
    header_token: Option<String>,
    linger: Option<LingerHandle>,
    peer: Option<std::net::SocketAddr>,
) {
    let started = Instant::now();
    let mut peer_end: Option<PeerEnd> = None;
    let metrics = Arc::clone(&state.metrics);
    Metrics::inc(&metrics.connections_total);
    Metrics::gauge(&metrics.connections, 1);
    let _guard = state.tracker.enter();
    let (sink, mut stream) = socket.split();
    let cfg = Arc::clone(&state.config);
    // How long a slow consumer's final frames may wait behind what its socket still
    // holds (`RW-SLOW-6`): the writer's bound, and the connection's wait for the writer.
    let slow_close_ms = cfg.close_timeout_ms.max(cfg.pong_timeout_ms);
    let (out, mut writer) = Outbound::spawn(
        sink,
        cfg.slow_consumer_max_bytes,
        ms(cfg.slow_consumer_max_age_ms),
        ms(cfg.close_timeout_ms),
        ms(slow_close_ms),
        Arc::clone(&metrics),
    );
    let (reports_tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let mut conn = Conn {
        state: Arc::clone(&state),
        out: Arc::clone(&out),
        principal: None,
        identity: None,
        subs: BTreeMap::new(),
        reports: reports_tx,
        tokens: f64::from(cfg.max_messages_per_second),
        refilled: Instant::now(),
        pings: std::collections::VecDeque::new(),
        ping_counter: 0,
        session_id: None,
    };
    let mut shutdown = state.shutdown.clone();
    let hello_deadline = tokio::time::sleep(ms(cfg.hello_timeout_ms));
    tokio::pin!(hello_deadline);
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + ms(cfg.heartbeat_interval_ms),
        ms(cfg.heartbeat_interval_ms),
    );
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let check_every = ms((cfg.slow_consumer_max_age_ms / 4).clamp(5, 1000));
    let mut slow_check = tokio::time::interval(check_every);
    slow_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let expiry = tokio::time::sleep_until(far);
    tokio::pin!(expiry);
    let pong_deadline = tokio::time::sleep_until(far);
    tokio::pin!(pong_deadline);
    let mut writer_done = false;
    // Whether the client finished its side: its close frame or the end of the stream
    // was read. Otherwise it may still be sending, and the close lingers.
    let mut peer_done = false;
    // Whether a read failed (an oversize frame, a protocol violation, a broken socket):
    // the stream then ends without reading the rest of the client's input, so its end
    // says nothing about the client, and the close lingers.
    let mut read_failed = false;

    if *shutdown.borrow() {
        conn.shutdown_close();
    }

    while !out.is_closing() {
        tokio::select! {
            biased;
            _ = &mut writer => {
                writer_done = true;
                peer_end.get_or_insert(PeerEnd {
                    reason: "write_failed",
                    close_code: None,
                    error: None,
                });
                break;
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    conn.drain_subscriptions().await;
                    conn.shutdown_close();
                }
            }
            Some(SubReport::Fatal(e)) = reports.recv() => {
                conn.out.close(e);
            }
            _ = slow_check.tick() => {
                if out.over_limit() {
                    conn.slow_consumer();
                }
            }
            () = &mut hello_deadline, if conn.principal.is_none() => {
                Metrics::inc(&metrics.protocol_errors);
                conn.out.close(ErrorFrame::new(
                    ErrorCode::HelloTimeout,
                    format!("no hello within {} ms", cfg.hello_timeout_ms),
                ));
            }
            _ = heartbeat.tick(), if conn.principal.is_some() => {
                // Every interval, whether or not earlier pings are answered
                // (`RW-HEART-1`); each has its own pong deadline (`RW-HEART-3`).
                conn.ping_counter += 1;
                let id = format!("s{}", conn.ping_counter);
                let deadline = tokio::time::Instant::now() + ms(cfg.pong_timeout_ms);
                if conn.pings.is_empty() {
                    pong_deadline.as_mut().reset(deadline);
                }
                conn.send(&ServerMessage::Ping(Ping { id: id.clone() }));
                conn.pings.push_back((id, deadline));
            }
            () = &mut pong_deadline, if !conn.pings.is_empty() => {
                Metrics::inc(&metrics.pong_timeouts);
                conn.out.close(ErrorFrame::new(
                    ErrorCode::PongTimeout,
                    format!("no pong within {} ms", cfg.pong_timeout_ms),
                ));
            }
            () = &mut expiry, if conn.principal.as_ref().is_some_and(|p| p.expires_at.is_some()) => {
                Metrics::inc(&metrics.auth_failures);
                conn.out.close(ErrorFrame::new(ErrorCode::TokenExpired, "the token expired"));
            }
            msg = stream.next() => {
                let Some(msg) = msg else {
                    peer_done = true;
                    peer_end = Some(PeerEnd {
                        reason: "connection_lost",
                        close_code: None,
                        error: None,
                    });
                    out.finish();
                    break;
                };
                out.stats.frame_in();
                let had_principal = conn.principal.is_some();
                match msg {
                    Ok(Message::Text(t)) => conn.on_frame(t.as_bytes(), &header_token).await,
                    Ok(Message::Binary(b)) => {
                        // Size, then kind, then rate (spec §14.2, `RW-INPUT-6`): a
                        // binary frame is `binary_frame` even with the bucket empty.
                        if b.len() > cfg.max_frame_bytes as usize {
                            conn.frame_too_large();
                        } else {
                            conn.protocol_error(ErrorFrame::new(
                                ErrorCode::BinaryFrame,
                                "binary frames are not allowed; send JSON text frames",
                            ));
                        }
                    }
                    Ok(Message::Ping(_) | Message::Pong(_)) => {}
                    Ok(Message::Close(frame)) => {
                        // Client-initiated close: the reply is flushed, no error frame
                        // (`RW-CLOSE-1`).
                        peer_end = Some(PeerEnd {
                            reason: "client_closed",
                            close_code: frame.map(|f| f.code),
                            error: None,
                        });
                        peer_done = true;
                        out.finish();
                        break;
                    }
                    Err(e) => {
                        read_failed = true;
                        let text = e.to_string();
                        tracing::debug!(error = %text, "reading from the client failed");
                        if text.contains("too long") || text.contains("Space limit") || text.contains("size") {
                            conn.frame_too_large();
                        } else if text.contains("UTF-8") || text.contains("utf-8") {
                            conn.protocol_error(ErrorFrame::new(
                                ErrorCode::InvalidJson,
                                "the text frame is not valid UTF-8",
                            ));
                        } else if is_protocol_error(&text) {
                            // The client broke RFC 6455 itself (an unmasked frame, a
                            // reserved opcode or bit, bad fragmentation): the stream
                            // cannot carry an error frame reliably, so the close says
                            // 1002 alone (`RW-CLOSE-12`).
                            Metrics::inc(&metrics.protocol_errors);
                            out.close_protocol(1002, "websocket protocol error");
                            break;
                        } else {
                            peer_end = Some(PeerEnd {
                                reason: "read_failed",
                                close_code: None,
                                error: Some(text),
                            });
                            out.finish();
                            break;
                        }
                    }
                }
                if !had_principal && let Some(p) = &conn.principal {
                    // No longer pre-hello (`RW-SEC-12`).
                    if let Some(l) = &linger {
                        l.hello_sent();
                    }
                    // The heartbeat runs from `welcome` (`RW-HEART-1`).
                    heartbeat.reset();
                    if let Some(left) = p.ms_until_expiry() {
                        expiry.as_mut().reset(tokio::time::Instant::now() + ms(left));
                    }
                }
                match conn.pings.front() {
                    Some((_, d)) => pong_deadline.as_mut().reset(*d),
                    None => pong_deadline.as_mut().reset(far),
                }
            }
        }
    }

    // Stop the subscriptions, then let the writer finish the goodbye while draining
    // what the client still sends (so the close is not lost to a TCP reset).
    for (_, h) in std::mem::take(&mut conn.subs) {
        h.abort();
        let _ = h.await;
        Metrics::gauge(&metrics.subscriptions, -1);
    }
    if !writer_done {
        // A slow consumer's goodbye waits behind what its socket still holds, for as
        // long as the writer gives it (`RW-SLOW-6`); other goodbyes for close_timeout_ms.
        let wait = if out.is_closing_urgently() {
            slow_close_ms
        } else {
            cfg.close_timeout_ms
        };
        let deadline = tokio::time::sleep(ms(wait));
        tokio::pin!(deadline);
        let mut stream_open = !peer_done && !read_failed;
        loop {
            tokio::select! {
                _ = &mut writer => { writer_done = true; break; }
                () = &mut deadline => { writer.abort(); break; }
                m = stream.next(), if stream_open => match m {
                    None => { peer_done = true; stream_open = false; }
                    Some(Err(_)) => { read_failed = true; stream_open = false; }
                    Some(Ok(_)) => {}
                },
            }
        }
        if stream_open {
            // The close frame is out (or could not be written within close_timeout_ms):
            // wait for the client's close reply for at most pong_timeout_ms, then drop
            // the TCP connection (`RW-CLOSE-9`).
            let _ = tokio::time::timeout(ms(cfg.pong_timeout_ms), async {
                loop {
                    match stream.next().await {
                        Some(Ok(Message::Close(_))) | None => {
                            peer_done = true;
                            break;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) => {
                            read_failed = true;
                            break;
                        }
                    }
                }
            })
            .await;
        }
    }
    match linger {
        Some(linger) if !peer_done || read_failed => {
            // The writer task holds the other half of the WebSocket: let it go first.
            if !writer_done {
                writer.abort();
                let _ = writer.await;
            }
            let handed_over = linger.request();
            drop(stream);
            lingering_close(&state, handed_over).await;
        }
        Some(linger) if linger.is_tls() => {
            // The peer is done; a TLS client still expects `close_notify` before the
            // FIN (the writer ends on its own after the close handshake).
            let handed_over = linger.request();
            drop(stream);
            let limit = ms(state.config.close_timeout_ms);
            if let Ok(Ok(mut io)) = tokio::time::timeout(limit, handed_over).await {
                linger::close_tls(&mut io, limit).await;
            }
        }
        _ => {}
    }
    Metrics::gauge(&metrics.connections, -1);
    out.stats.log_closed(
        peer_end,
        started.elapsed(),
        conn.session_id.as_deref(),
        conn.principal.as_ref().map(|p| p.name.as_str()),
        peer,
    );
}

/// Waits for the socket of a finished WebSocket (see [`crate::linger`]) and closes it
/// with a lingering close: FIN after the close frame, then the client's remaining
/// input is read and discarded until its EOF, for at most `close_timeout_ms`.
async fn lingering_close(state: &AppState, handed_over: oneshot::Receiver<linger::Transport>) {
    let limit = ms(state.config.close_timeout_ms);
    // Both halves of the WebSocket are dropped, so the stream comes at once; the bound
    // only guards against a transport that something else still holds.
    let Ok(Ok(mut tcp)) = tokio::time::timeout(limit, handed_over).await else {
        return;
    };
    Metrics::inc(&state.metrics.lingering_closes);
    match linger::linger(&mut tcp, limit, linger::LINGER_MAX_BYTES).await {
        LingerEnd::PeerClosed | LingerEnd::Failed => {}
        LingerEnd::TimedOut | LingerEnd::TooMuch => {
            // Counted before the close, so a client that sees the cut-off sees the count.
            Metrics::inc(&state.metrics.linger_cutoffs);
        }
    }
    drop(tcp);
}

impl Conn {
    fn send(&self, msg: &ServerMessage) {
        if let Err(QueueError::SlowConsumer) = self.out.send(msg) {
            self.slow_consumer();
        }
    }

    fn slow_consumer(&self) {
        if !self.out.is_closing() {
            Metrics::inc(&self.state.metrics.slow_consumer_closes);
            self.out.close_now(ErrorFrame::new(
                ErrorCode::SlowConsumer,
                "the client did not read fast enough; reconnect and resume from your cursor",
            ));
        }
    }

    /// Graceful shutdown (`RW-SHUTDOWN-4`): each subscription sends the events it
    /// holds in a pending batch and ends; waits for them at most `close_timeout_ms`,
    /// so that `server_shutdown` follows every event already received.
    async fn drain_subscriptions(&mut self) {
        let subs = std::mem::take(&mut self.subs);
        let limit = ms(self.state.config.close_timeout_ms);
        let deadline = tokio::time::Instant::now() + limit;
        for (_, mut h) in subs {
            if tokio::time::timeout_at(deadline, &mut h).await.is_err() {
                h.abort();
                let _ = h.await;
            }
            Metrics::gauge(&self.state.metrics.subscriptions, -1);
        }
    }

    fn shutdown_close(&self) {
        let spread = self.state.config.shutdown_reconnect_spread_ms;
        let jitter = if spread == 0 {
            0
        } else {
            rand::random_range(0..=spread)
        };
        self.out.close(
            ErrorFrame::new(
                ErrorCode::ServerShutdown,
                "the server is shutting down; reconnect after retry_after_ms",
            )
            .retry_after(jitter),
        );
    }

    fn protocol_error(&self, e: ErrorFrame) {
        Metrics::inc(&self.state.metrics.protocol_errors);
        tracing::debug!(
            code = e.code.as_str(),
            close_code = e.close_code.map_or(-1, i64::from),
            message = %e.message,
            "bad input from the client"
        );
        if e.close_code.is_some() {
            self.out.close(e);
        } else {
            self.send(&ServerMessage::Error(e));
        }
    }

    /// Takes one token from the bucket; closes with `rate_limited` when empty.
    fn rate_ok(&mut self) -> bool {
        let rate = f64::from(self.state.config.max_messages_per_second);
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate).min(rate);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            Metrics::inc(&self.state.metrics.rate_limited_closes);
            self.out.close(
                ErrorFrame::new(
                    ErrorCode::RateLimited,
                    format!(
                        "more than {} messages per second",
                        self.state.config.max_messages_per_second
                    ),
                )
                .retry_after(1000),
            );
            false
        }
    }

    /// Checks a text frame in the order of spec §14.2 (`RW-INPUT-6`): size, rate,
    /// JSON syntax, top level, session position, type, schema.
    async fn on_frame(&mut self, frame: &[u8], header_token: &Option<String>) {
        let max = self.state.config.max_frame_bytes as usize;
        if frame.len() > max {
            self.frame_too_large();
            return;
        }
        if !self.rate_ok() {
            return;
        }
        let ty = match peek_type(frame, max) {
            Ok(t) => t,
            Err(e) => {
                self.protocol_error(ErrorFrame::new(e.error_code(), e.to_string()));
                return;
            }
        };
        match (&*ty, self.principal.is_some()) {
            ("hello", true) => {
                return self.protocol_error(ErrorFrame::new(
                    ErrorCode::DuplicateHello,
                    "hello was already received on this connection",
                ));
            }
            (other, false) if other != "hello" => {
                let other: String = other.chars().take(64).collect();
                return self.protocol_error(ErrorFrame::new(
                    ErrorCode::HelloRequired,
                    format!("{other:?} before hello; send hello first"),
                ));
            }
            _ => {}
        }
        let msg = match decode_client_message(frame, max) {
            Ok(m) => m,
            Err(e) => {
                let code = e.error_code();
                let text = match &e {
                    DecodeError::UnknownType(t) => {
                        format!("unknown message type {t:?}; the connection stays open")
                    }
                    other => other.to_string(),
                };
                self.protocol_error(ErrorFrame::new(code, text));
                return;
            }
        };
        match msg {
            ClientMessage::Hello(h) => self.on_hello(h, header_token).await,
            ClientMessage::Subscribe(Subscribe { subscriptions }) => {
                self.subscribe(subscriptions).await;
            }
            ClientMessage::Unsubscribe(Unsubscribe { run_ids }) => {
                self.unsubscribe(run_ids).await;
            }
            ClientMessage::Ping(p) => {
                self.send(&ServerMessage::Pong(Pong { id: p.id }));
            }
            ClientMessage::Pong(p) => {
                // A pong answers its ping and every older one.
                if let Some(i) = self.pings.iter().position(|(id, _)| *id == p.id) {
                    self.pings.drain(..=i);
                }
            }
            other => self.protocol_error(ErrorFrame::new(
                ErrorCode::UnknownMessageType,
                format!("message type {} is not handled", other.message_type()),
            )),
        }
    }

    fn frame_too_large(&self) {
        self.protocol_error(ErrorFrame::new(
            ErrorCode::FrameTooLarge,
            format!(
                "frame exceeds max_frame_bytes ({})",
                self.state.config.max_frame_bytes
            ),
        ));
    }

    async fn on_hello(&mut self, hello: Hello, header_token: &Option<String>) {
        let Some(version) = negotiate_version(&hello.versions, PROTOCOL_VERSIONS) else {
            Metrics::inc(&self.state.metrics.protocol_errors);
            let mut e = ErrorFrame::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "no common protocol version: client offers {:?}, server speaks {:?}",
                    hello.versions, PROTOCOL_VERSIONS
                ),
            );
            e.supported_versions =
                Some(PROTOCOL_VERSIONS.iter().map(|s| (*s).to_owned()).collect());
            self.out.close(e);
            return;
        };
        let token = hello.token.as_deref().or(header_token.as_deref());
        let principal = match self.state.auth.authenticate(token) {
            Ok(p) if p.has_role(Role::Consumer) => p,
            Ok(_) => {
                Metrics::inc(&self.state.metrics.auth_failures);
                self.out.close(ErrorFrame::new(
                    ErrorCode::Unauthorized,
                    "the token does not grant the consumer role",
                ));
                return;
            }
            Err(AuthError::Expired) => {
                Metrics::inc(&self.state.metrics.auth_failures);
                self.out.close(ErrorFrame::new(
                    ErrorCode::TokenExpired,
                    "the token has expired",
                ));
                return;
            }
            Err(e) => {
                Metrics::inc(&self.state.metrics.auth_failures);
                self.out
                    .close(ErrorFrame::new(ErrorCode::Unauthorized, e.to_string()));
                return;
            }
        };
        if self.state.config.auth.enabled() {
            let Some(slot) = self.state.identities.enter(&principal.name) else {
                Metrics::inc(&self.state.metrics.refused_identity_limit);
                self.out.close(
                    ErrorFrame::new(
                        ErrorCode::ServerOverloaded,
                        format!(
                            "{} holds max_connections_per_identity ({}) connections; close one or retry later",
                            principal.name, self.state.config.max_connections_per_identity
                        ),
                    )
                    .retry_after(IDENTITY_RETRY_AFTER_MS),
                );
                return;
            };
            self.identity = Some(slot);
        }
        self.principal = Some(principal);
        let cfg = &self.state.config;
        let session_id = uuid::Uuid::new_v4().simple().to_string();
        self.session_id = Some(session_id.clone());
        self.send(&ServerMessage::Welcome(Welcome {
            version: version.to_owned(),
            session_id,
            heartbeat_interval_ms: cfg.heartbeat_interval_ms,
            pong_timeout_ms: cfg.pong_timeout_ms,
            batch_window_ms: cfg.batch_window_ms,
            replay_window_events: cfg.replay_window_events,
            limits: cfg.limits(),
            server: Some(ServerInfo {
                name: "runwire-server".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            }),
        }));
        if !hello.subscriptions.is_empty() {
            self.subscribe(hello.subscriptions).await;
        }
    }

    /// Answers every entry in order (`RW-SUB-1`): `subscribed`, `reset` or an error.
    async fn subscribe(&mut self, reqs: Vec<SubscriptionRequest>) {
        for req in reqs {
            if self.out.is_closing() {
                return;
            }
            let run_id = req.run_id.clone();
            if self.subs.contains_key(&run_id) {
                self.protocol_error(
                    ErrorFrame::new(
                        ErrorCode::AlreadySubscribed,
                        format!("run {run_id} is already subscribed on this connection"),
                    )
                    .for_run(run_id),
                );
                continue;
            }
            if self.subs.len() >= self.state.config.max_subscriptions as usize {
                self.protocol_error(
                    ErrorFrame::new(
                        ErrorCode::TooManySubscriptions,
                        format!(
                            "at most {} subscriptions per connection",
                            self.state.config.max_subscriptions
                        ),
                    )
                    .for_run(run_id),
                );
                continue;
            }
            if !self
                .principal
                .as_ref()
                .is_some_and(|p| p.allows_run(&run_id))
            {
                Metrics::inc(&self.state.metrics.auth_failures);
                self.send(&ServerMessage::Error(
                    ErrorFrame::new(
                        ErrorCode::Forbidden,
                        format!("the token does not allow run {run_id}"),
                    )
                    .for_run(run_id),
                ));
                continue;
            }
            let start = match open_subscription(&self.state, &self.out, &req).await {
                Ok(Some(start)) => start,
                Ok(None) => {
                    self.slow_consumer();
                    return;
                }
                Err(e) => {
                    Metrics::inc(&self.state.metrics.store_errors);
                    self.out.close(
                        ErrorFrame::new(ErrorCode::StoreUnavailable, format!("event store: {e}"))
                            .for_run(run_id),
                    );
                    return;
                }
            };
            Metrics::gauge(&self.state.metrics.subscriptions, 1);
            let task = tokio::spawn(run_subscription(
                Arc::clone(&self.state),
                Arc::clone(&self.out),
                self.reports.clone(),
                run_id.clone(),
                start,
            ));
            self.subs.insert(run_id, task);
        }
    }

    async fn unsubscribe(&mut self, run_ids: Vec<RunId>) {
        for run_id in run_ids {
            match self.subs.remove(&run_id) {
                Some(h) => {
                    h.abort();
                    let _ = h.await;
                    Metrics::gauge(&self.state.metrics.subscriptions, -1);
                    self.send(&ServerMessage::Unsubscribed(Unsubscribed { run_id }));
                }
                None => self.protocol_error(
                    ErrorFrame::new(
                        ErrorCode::NotSubscribed,
                        format!("run {run_id} is not subscribed on this connection"),
                    )
                    .for_run(run_id),
                ),
            }
        }
    }
}

/// Largest batch frame built from pre-encoded events, in bytes (besides the
/// `batch_max_events` bound), so that one frame never dominates the queue.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// The `retry_after_ms` of a `hello` refused over `max_connections_per_identity`
/// (`RW-SEC-18`): the identity's own connections must close first, which takes at
/// least a round trip; a second keeps a loop of refused reconnects cheap.
const IDENTITY_RETRY_AFTER_MS: u64 = 1_000;

/// Sends events in order, paced by the socket: before each frame the task waits until
/// the connection's queue is below its low watermark (`RW-SLOW-2`). One `event` frame
/// per event without batching; `batch` frames of at most `max_events` events and
/// about [`MAX_BATCH_BYTES`] with batching (`RW-BATCH-2`).
async fn send_events(
    out: &Outbound,
    metrics: &Metrics,
    batching: bool,
    max_events: usize,
    events: &[StoredEvent],
    paced: bool,
    published: Option<Instant>,
) -> Result<(), QueueError> {
    let mut i = 0;
    while i < events.len() {
        if paced {
            out.wait_drained().await;
        }
        if out.is_closing() {
            return Err(QueueError::Closed);
        }
        let mut j = i + 1;
        if batching {
            let mut bytes = events[i].json.len();
            while j < events.len()
                && j - i < max_events
                && bytes + events[j].json.len() <= MAX_BATCH_BYTES
            {
                bytes += events[j].json.len() + 1;
                j += 1;
            }
        }
        let chunk = &events[i..j];
        let text = if let [one] = chunk {
            event_frame(one)
        } else {
            let len: usize = chunk.iter().map(|e| e.json.len() + 1).sum();
            let mut s = String::with_capacity(len + 32);
            s.push_str(r#"{"type":"batch","events":["#);
            for (k, e) in chunk.iter().enumerate() {
                if k > 0 {
                    s.push(',');
                }
                s.push_str(&e.json);
            }
            s.push_str("]}");
            Metrics::inc(&metrics.batches_out);
            s
        };
        Metrics::add(&metrics.events_out, chunk.len() as u64);
        out.send_events_text(text, chunk.len(), published)?;
        i = j;
    }
    Ok(())
}

fn event_frame(e: &StoredEvent) -> String {
    let mut s = String::with_capacity(e.json.len() + 24);
    s.push_str(r#"{"type":"event","event":"#);
    s.push_str(&e.json);
    s.push('}');
    s
}

/// Where a subscription starts: fixed by [`open_subscription`].
struct SubStart {
    live: crate::store::LiveReceiver,
    /// The last seq the client has (the cursor, or the reset's `as_of_seq`).
    delivered: u64,
    /// Replay up to here before going live.
    target: u64,
    /// The first replay chunk, read while checking that the cursor is retained.
    first: Vec<StoredEvent>,
}

/// Fixes a subscription's position and answers it with `subscribed` or `reset`
/// (`RW-RESUME-2` to `RW-RESUME-8`). The live feed is subscribed before the head is
/// read, so an event appended meanwhile is in the replay or in the live feed (or
/// both: the live side skips what the replay sent), never in neither.
/// `Ok(None)`: the frame could not be queued (slow consumer).
async fn open_subscription(
    state: &AppState,
    out: &Outbound,
    req: &SubscriptionRequest,
) -> Result<Option<SubStart>, crate::store::StoreError> {
    let cfg = &state.config;
    let store = &state.store;
    let run_id = &req.run_id;
    let live = store.live(run_id);
    let info = store.open_run(run_id).await?;
    let after = req.after_seq.unwrap_or(0);
    let mut first = Vec::new();
    let reason = if req.epoch.as_ref().is_some_and(|e| *e != info.epoch) {
        Some(ResetReason::EpochMismatch)
    } else if after > info.head_seq {
        Some(ResetReason::CursorAhead)
    } else if info.head_seq - after > cfg.replay_window_events {
        Some(ResetReason::CursorTooOld)
    } else if after < info.head_seq {
        // Read the first chunk now: a cursor whose next event retention deleted is
        // reset too (`RW-RESUME-5`).
        match store
            .read(run_id, after, info.head_seq, cfg.replay_chunk_events)
            .await
        {
            Ok(chunk) => {
                first = chunk;
                None
            }
            Err(crate::store::StoreError::NotRetained { .. }) => Some(ResetReason::CursorTooOld),
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let (msg, delivered) = match reason {
        Some(reason) => reset_message(state, run_id, &info.epoch, reason).await?,
        None => (
            ServerMessage::Subscribed(Subscribed {
                run_id: run_id.clone(),
                epoch: info.epoch.clone(),
                after_seq: after,
                head_seq: info.head_seq,
            }),
            after,
        ),
    };
    if out.send(&msg).is_err() {
        return Ok(None);
    }
    Ok(Some(SubStart {
        live,
        delivered,
        target: info.head_seq.max(delivered),
        first,
    }))
}

/// Sends a `reset` with the run's current snapshot on an open subscription
/// (`RW-RESUME-13`) and returns the new (delivered, target) positions; `Ok(None)`:
/// the frame could not be queued (slow consumer).
async fn reset_subscription(
    state: &AppState,
    out: &Outbound,
    run_id: &RunId,
    reason: ResetReason,
) -> Result<Option<(u64, u64)>, crate::store::StoreError> {
    let info = state.store.open_run(run_id).await?;
    let (msg, as_of) = reset_message(state, run_id, &info.epoch, reason).await?;
    if out.send(&msg).is_err() {
        return Ok(None);
    }
    Ok(Some((as_of, info.head_seq.max(as_of))))
}

/// A `reset` with the run's current snapshot (an empty one in `epoch` when the run
/// has none yet) and the snapshot's `as_of_seq`. The frame's `epoch` is the
/// snapshot's, so the two always agree (`RW-RESUME-8`).
async fn reset_message(
    state: &AppState,
    run_id: &RunId,
    epoch: &runwire_protocol::Epoch,
    reason: ResetReason,
) -> Result<(ServerMessage, u64), crate::store::StoreError> {
    let snapshot = state
        .store
        .snapshot(run_id)
        .await?
        .unwrap_or_else(|| runwire_protocol::RunSnapshot::empty(run_id.clone(), epoch.clone()));
    Metrics::inc(&state.metrics.resets);
    let as_of = snapshot.as_of_seq;
    let msg = ServerMessage::Reset(Reset {
        run_id: run_id.clone(),
        epoch: snapshot.epoch.clone(),
        reason,
        snapshot,
    });
    Ok((msg, as_of))
}

/// Whether a read error is the client breaking the WebSocket protocol (RFC 6455 §5),
/// as tungstenite words it, rather than the connection going away.
fn is_protocol_error(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "protocol",
        "mask",
        "reserved",
        "opcode",
        "fragment",
        "continue frame",
        "rsv",
    ]
    .iter()
    .any(|w| t.contains(w))
        && !t.contains("reset without closing handshake")
}

/// One subscription after its `subscribed`/`reset`: replay, then live, without gap or
/// duplicate (`RW-RESUME-1`, `RW-ORDER-1`, `RW-ORDER-2`). Live events are batched
/// adaptively: they go out at once while the connection's socket keeps up, and
/// accumulate (for at most the window, `RW-BATCH-1`) while it is busy; terminal status
/// and todo updates flush at once (`RW-BATCH-3`).
async fn run_subscription(
    state: Arc<AppState>,
    out: Arc<Outbound>,
    reports: tokio::sync::mpsc::UnboundedSender<SubReport>,
    run_id: RunId,
    start: SubStart,
) {
    let fatal = |e: &dyn std::fmt::Display| {
        Metrics::inc(&state.metrics.store_errors);
        let _ = reports.send(SubReport::Fatal(
            ErrorFrame::new(ErrorCode::StoreUnavailable, format!("event store: {e}"))
                .for_run(run_id.clone()),
        ));
    };
    let slow = |out: &Outbound| {
        if !out.is_closing() {
            Metrics::inc(&state.metrics.slow_consumer_closes);
            out.close_now(ErrorFrame::new(
                ErrorCode::SlowConsumer,
                "the outbound queue exceeded its byte limit; reconnect and resume from your cursor",
            ));
        }
    };
    let cfg = &state.config;
    let store = &state.store;
    let SubStart {
        mut live,
        mut delivered,
        mut target,
        first,
    } = start;
    let batching = cfg.batch_window_ms > 0;
    // Live events go to the outbound queue as they come: that queue is what the
    // slow-consumer bounds apply to (§15, `RW-SLOW-1`), so a client that stops
    // reading fills it and is closed. Events read from the store (replay, catch-up)
    // are read as the socket drains instead (`RW-SLOW-2`).
    // `published`: when the oldest live event of `evs` arrived on the live feed (the
    // delivery latency histogram); `None` for events read from the store.
    let send = |evs: Vec<StoredEvent>, published: Option<Instant>| {
        let out = Arc::clone(&out);
        let metrics = Arc::clone(&state.metrics);
        let max = cfg.batch_max_events;
        async move { send_events(&out, &metrics, batching, max, &evs, false, published).await }
    };
    let send_paced = |evs: Vec<StoredEvent>| {
        let out = Arc::clone(&out);
        let metrics = Arc::clone(&state.metrics);
        let max = cfg.batch_max_events;
        async move { send_events(&out, &metrics, batching, max, &evs, true, None).await }
    };
    let window = ms(cfg.batch_window_ms);
    let mut shutdown = state.shutdown.clone();
    let mut batch: Vec<StoredEvent> = Vec::new();
    // When the oldest event of `batch` arrived on the live feed.
    let mut batch_since: Option<Instant> = None;
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let flush_at = tokio::time::sleep_until(far);
    tokio::pin!(flush_at);
    if let Some(last) = first.last()
        && first.first().map(|e| e.seq) == Some(delivered + 1)
    {
        delivered = last.seq;
        match send_paced(first).await {
            Ok(()) => {}
            Err(QueueError::SlowConsumer) => return slow(&out),
            Err(QueueError::Closed) => return,
        }
    }
    // A `reset` on the open subscription (`RW-RESUME-13`): the pending batch goes
    // first, then the snapshot; the subscription continues after it.
    macro_rules! reset_open {
        ($reason:expr) => {{
            flush_at.as_mut().reset(far);
            match send(std::mem::take(&mut batch), batch_since.take()).await {
                Ok(()) => {}
                Err(QueueError::SlowConsumer) => return slow(&out),
                Err(QueueError::Closed) => return,
            }
            match reset_subscription(&state, &out, &run_id, $reason).await {
                Ok(Some((d, t))) => {
                    delivered = d;
                    target = t;
                }
                Ok(None) => return slow(&out),
                Err(e) => return fatal(&e),
            }
        }};
    }
    // Set on graceful shutdown: catch up to the head once more, then end.
    let mut draining = false;
    loop {
        // Catch up from the store, read as the socket drains (`RW-SLOW-2`).
        while delivered < target {
            out.wait_drained().await;
            if out.is_closing() {
                return;
            }
            let chunk = match store
                .read(&run_id, delivered, target, cfg.replay_chunk_events)
                .await
            {
                Ok(c) => c,
                // Trimmed by retention while this subscription caught up.
                Err(crate::store::StoreError::NotRetained { .. }) => {
                    reset_open!(ResetReason::CursorTooOld);
                    continue;
                }
                Err(e) => return fatal(&e),
            };
            let Some(last) = chunk.last() else {
                return fatal(&format_args!(
                    "events {}..={target} of run {run_id} are missing",
                    delivered + 1
                ));
            };
            if chunk.first().map(|e| e.seq) != Some(delivered + 1) {
                return fatal(&format_args!(
                    "gap in the log of run {run_id} after seq {delivered}"
                ));
            }
            delivered = last.seq;
            match send_paced(chunk).await {
                Ok(()) => {}
                Err(QueueError::SlowConsumer) => return slow(&out),
                Err(QueueError::Closed) => return,
            }
        }
        if draining {
            return;
        }
        tokio::select! {
            biased;
            () = &mut flush_at, if !batch.is_empty() => {
                flush_at.as_mut().reset(far);
                match send(std::mem::take(&mut batch), batch_since.take()).await {
                    Ok(()) => {}
                    Err(QueueError::SlowConsumer) => return slow(&out),
                    Err(QueueError::Closed) => return,
                }
            }
            // Adaptive batching: the window is the longest an event waits; when the
            // socket has taken everything, pending events go at once.
            () = out.wait_idle(), if !batch.is_empty() => {
                flush_at.as_mut().reset(far);
                match send(std::mem::take(&mut batch), batch_since.take()).await {
                    Ok(()) => {}
                    Err(QueueError::SlowConsumer) => return slow(&out),
                    Err(QueueError::Closed) => return,
                }
            }
            r = live.recv() => match r {
                LiveRecv::Events(evs) => {
                    if batch.is_empty() {
                        batch_since = Some(Instant::now());
                    }
                    let mut urgent = false;
                    for e in evs.iter() {
                        if e.seq <= delivered {
                            continue;
                        }
                        if e.seq != delivered + 1 {
                            // A jump (the feed skipped): read the range from the store.
                            target = evs.last().map_or(e.seq, |l| l.seq);
                            urgent = true;
                            break;
                        }
                        delivered = e.seq;
                        urgent |= e.flush;
                        batch.push(e.clone());
                    }
                    if window.is_zero()
                        || urgent
                        || batch.len() >= cfg.batch_max_events
                        || out.is_idle()
                    {
                        flush_at.as_mut().reset(far);
                        match send(std::mem::take(&mut batch), batch_since.take()).await {
                            Ok(()) => {}
                            Err(QueueError::SlowConsumer) => return slow(&out),
                            Err(QueueError::Closed) => return,
                        }
                    } else if !batch.is_empty() && flush_at.deadline() == far {
                        flush_at.as_mut().reset(tokio::time::Instant::now() + window);
                    }
                }
                LiveRecv::Lagged => {
                    flush_at.as_mut().reset(far);
                    match send(std::mem::take(&mut batch), batch_since.take()).await {
                        Ok(()) => {}
                        Err(QueueError::SlowConsumer) => return slow(&out),
                        Err(QueueError::Closed) => return,
                    }
                    match store.run_info(&run_id).await {
                        Ok(Some(i)) => target = i.head_seq,
                        Ok(None) => {}
                        Err(e) => return fatal(&e),
                    }
                }
                LiveRecv::Recreated => reset_open!(ResetReason::EpochMismatch),
                LiveRecv::Unavailable(why) => {
                    let _ = send(std::mem::take(&mut batch), batch_since.take()).await;
                    return fatal(&why);
                }
                LiveRecv::Closed => {
                    let _ = send(std::mem::take(&mut batch), batch_since.take()).await;
                    // The store is closing; shutdown closes the connection.
                    std::future::pending::<()>().await;
                }
            },
            // Last in the biased order, so live events already received are batched
            // first: on graceful shutdown send the pending batch, then every event
            // acknowledged so far that the live feed has not brought yet (appends
            // that passed the shutdown check finish first), then end (`RW-SHUTDOWN-4`).
            // The connection bounds all of it by close_timeout_ms.
            _ = async { shutdown.wait_for(|v| *v).await.is_ok() } => {
                if send(std::mem::take(&mut batch), batch_since.take()).await.is_err() {
                    return;
                }
                state.appends.wait_idle().await;
                match store.run_info(&run_id).await {
                    Ok(Some(i)) => target = target.max(i.head_seq),
                    Ok(None) => {}
                    Err(e) => return fatal(&e),
                }
                draining = true;
            }
        }
    }
}
