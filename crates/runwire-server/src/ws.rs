//! The WebSocket endpoint `GET /v1/stream` (spec §5–§16): the upgrade ([`stream`]) and
//! one task per connection (hello, heartbeat, limits, subscribe and unsubscribe, the
//! goodbye); each subscription runs in its own task ([`crate::subscription`]).

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::{
        ConnectInfo, State, WebSocketUpgrade,
        ws::{Message, WebSocket},
    },
    http::{HeaderMap, StatusCode, Version, header},
    response::{IntoResponse, Response},
};
use futures_util::StreamExt;
use runwire_protocol::{
    ClientMessage, ErrorCode, ErrorFrame, Hello, PROTOCOL_VERSIONS, Ping, Pong, RunId, ServerInfo,
    ServerMessage, Subscribe, SubscriptionRequest, Unsubscribe, Unsubscribed, Welcome,
    codec::{DecodeError, decode_client_message, peek_type},
    negotiate_version,
};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{
    auth::{AuthError, Authenticator, Principal},
    config::Role,
    deadline::Deadline,
    http::ApiError,
    linger::{self, LingerEnd, LingerHandle},
    metrics::{Metrics, PeerEnd},
    outbound::{Outbound, QueueError},
    state::AppState,
    subscription::{SubReport, Subscription},
};

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

/// `GET /v1/stream`: the WebSocket upgrade (spec §5). A token may come in the
/// `Authorization` header; never in the query string (`RW-AUTH-2`).
pub(crate) async fn stream(
    State(state): State<Arc<AppState>>,
    ConnectInfo(linger): ConnectInfo<LingerHandle>,
    version: Version,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                format!(
                    "{} takes a WebSocket upgrade (RFC 6455): {e}",
                    runwire_protocol::STREAM_PATH
                ),
            )
            .into_response();
        }
    };
    let token = Authenticator::bearer(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
    .map(str::to_owned);
    // Never buffer more than max_frame_bytes of a frame (`RW-LIMIT-1`): a larger
    // message fails the read and is answered with frame_too_large.
    let limit = state.config.max_frame_bytes as usize;
    // Client frames are small; a 4 KiB read buffer (instead of 128 KiB) keeps idle
    // connections cheap. Larger frames are still read, in more steps.
    let peer = linger.peer();
    ws.read_buffer_size(4096)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            // Only an HTTP/1.1 upgrade hands the whole TCP connection to the WebSocket,
            // so only then can it close with a lingering close (see `linger`).
            let linger = (version == Version::HTTP_11).then_some(linger);
            serve_connection(socket, state, token, linger, peer)
        })
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
    let _guard = state.connections.enter();
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
    let mut expiry = Deadline::unset();
    let mut pong_deadline = Deadline::unset();
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
                    pong_deadline.set(deadline);
                }
                conn.send(&ServerMessage::Ping(Ping { id: id.clone() }));
                conn.pings.push_back((id, deadline));
            }
            () = pong_deadline.passed(), if !conn.pings.is_empty() => {
                Metrics::inc(&metrics.pong_timeouts);
                conn.out.close(ErrorFrame::new(
                    ErrorCode::PongTimeout,
                    format!("no pong within {} ms", cfg.pong_timeout_ms),
                ));
            }
            () = expiry.passed(), if conn.principal.as_ref().is_some_and(|p| p.expires_at.is_some()) => {
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
                        expiry.set(tokio::time::Instant::now() + ms(left));
                    }
                }
                match conn.pings.front() {
                    Some((_, d)) => pong_deadline.set(*d),
                    None => pong_deadline.clear(),
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
            let sub = match Subscription::open(&self.state, &self.out, self.reports.clone(), &req)
                .await
            {
                Ok(Some(sub)) => sub,
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
            let task = tokio::spawn(sub.run());
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

/// The `retry_after_ms` of a `hello` refused over `max_connections_per_identity`
/// (`RW-SEC-18`): the identity's own connections must close first, which takes at
/// least a round trip; a second keeps a loop of refused reconnects cheap.
const IDENTITY_RETRY_AFTER_MS: u64 = 1_000;

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
