//! The WebSocket endpoint `GET /v1/stream` (spec §5–§16): the upgrade ([`stream`]) and
//! one task per connection (hello, heartbeat, limits, subscribe and unsubscribe, the
//! goodbye); each subscription runs in its own task ([`crate::subscription`]).

use std::{
    collections::BTreeMap,
    ops::ControlFlow,
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
    // Client frames are small (a pong is ~40 bytes, a hello with a token under 1 KiB);
    // the read buffer is zero-filled to its capacity on every read, so its size is
    // resident per connection: 1 KiB (instead of 128 KiB) keeps idle connections
    // cheap. A larger frame is still read whole: the buffer grows to hold it.
    let peer = linger.peer();
    ws.read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            // Only an HTTP/1.1 upgrade hands the whole TCP connection to the WebSocket,
            // so only then can it close with a lingering close (see `linger`).
            let linger = (version == Version::HTTP_11).then_some(linger);
            serve_connection(socket, state, token, linger, peer)
        })
}

/// A connection's WebSocket read buffer (see [`stream`]).
const READ_BUFFER_BYTES: usize = 1024;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// How a connection's main loop ended: what the goodbye and the closed-connection log
/// line need to know.
#[derive(Default)]
struct Ending {
    /// Why the peer side ended, when it did.
    peer_end: Option<PeerEnd>,
    /// The writer task finished (the goodbye is written, or a write failed).
    writer_done: bool,
    /// Whether the client finished its side: its close frame or the end of the stream
    /// was read. Otherwise it may still be sending, and the close lingers.
    peer_done: bool,
    /// Whether a read failed (an oversize frame, a protocol violation, a broken socket):
    /// the stream then ends without reading the rest of the client's input, so its end
    /// says nothing about the client, and the close lingers.
    read_failed: bool,
}

impl Ending {
    /// The peer's side ended for `reason` (`client_closed`, `connection_lost`, …).
    fn peer(&mut self, reason: &'static str, close_code: Option<u16>, error: Option<String>) {
        self.peer_end = Some(PeerEnd {
            reason,
            close_code,
            error,
        });
    }
}

/// The read half of a connection's WebSocket.
type Reader = futures_util::stream::SplitStream<WebSocket>;

/// How long a slow consumer's final frames may wait behind what its socket still holds
/// (`RW-SLOW-6`): the writer's bound, and the connection's wait for the writer.
fn slow_close_ms(cfg: &crate::config::ServerConfig) -> u64 {
    cfg.close_timeout_ms.max(cfg.pong_timeout_ms)
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
///
/// The setup runs before the returned future exists, and the future owns only what
/// the connection keeps: an `async fn` would also keep its arguments (the unsplit
/// socket among them) for the connection's whole life, half a KiB per idle
/// connection (docs/performance.md, "Connections per node").
pub(crate) fn serve_connection(
    socket: WebSocket,
    state: Arc<AppState>,
    header_token: Option<String>,
    linger: Option<LingerHandle>,
    peer: Option<std::net::SocketAddr>,
) -> impl Future<Output = ()> + Send + 'static {
    let started = Instant::now();
    let metrics = Arc::clone(&state.metrics);
    Metrics::inc(&metrics.connections_total);
    Metrics::gauge(&metrics.connections, 1);
    let (sink, stream) = socket.split();
    let cfg = Arc::clone(&state.config);
    let (out, writer) = Outbound::spawn(
        sink,
        cfg.slow_consumer_max_bytes,
        ms(cfg.slow_consumer_max_age_ms),
        ms(cfg.close_timeout_ms),
        ms(slow_close_ms(&cfg)),
        Arc::clone(&metrics),
    );
    let (reports_tx, reports) = tokio::sync::mpsc::unbounded_channel();
    let conn = Conn {
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
    async move {
        let _guard = state.connections.enter();
        let (mut conn, mut stream, mut writer, mut reports) = (conn, stream, writer, reports);
        let mut end = conn
            .serve(
                &mut stream,
                &mut writer,
                &mut reports,
                header_token.as_deref(),
                linger.as_ref(),
            )
            .await;

        // Stop the subscriptions, then let the writer finish the goodbye while
        // draining what the client still sends (so the close is not lost to a TCP
        // reset).
        for (_, h) in std::mem::take(&mut conn.subs) {
            h.abort();
            let _ = h.await;
            Metrics::gauge(&metrics.subscriptions, -1);
        }
        if !end.writer_done {
            goodbye(&cfg, &out, &mut writer, &mut stream, &mut end).await;
        }
        close_transport(&state, linger, stream, writer, &end).await;
        Metrics::gauge(&metrics.connections, -1);
        out.stats.log_closed(
            end.peer_end,
            started.elapsed(),
            conn.session_id.as_deref(),
            conn.principal.as_ref().map(|p| p.name.as_str()),
            peer,
        );
    }
}

/// Lets the writer finish the goodbye while reading what the client still sends, then
/// waits for the client's close reply (`RW-CLOSE-9`).
async fn goodbye(
    cfg: &crate::config::ServerConfig,
    out: &Outbound,
    writer: &mut JoinHandle<()>,
    stream: &mut Reader,
    end: &mut Ending,
) {
    // A slow consumer's goodbye waits behind what its socket still holds, for as
    // long as the writer gives it (`RW-SLOW-6`); other goodbyes for close_timeout_ms.
    let wait = if out.is_closing_urgently() {
        slow_close_ms(cfg)
    } else {
        cfg.close_timeout_ms
    };
    let deadline = tokio::time::sleep(ms(wait));
    tokio::pin!(deadline);
    let mut stream_open = !end.peer_done && !end.read_failed;
    loop {
        tokio::select! {
            _ = &mut *writer => { end.writer_done = true; break; }
            () = &mut deadline => { writer.abort(); break; }
            m = stream.next(), if stream_open => match m {
                None => { end.peer_done = true; stream_open = false; }
                Some(Err(_)) => { end.read_failed = true; stream_open = false; }
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
                        end.peer_done = true;
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) => {
                        end.read_failed = true;
                        break;
                    }
                }
            }
        })
        .await;
    }
}

/// Closes the socket under a finished WebSocket: with a lingering close when the
/// client may still be sending, with TLS `close_notify` when it is done.
async fn close_transport(
    state: &AppState,
    linger: Option<LingerHandle>,
    stream: Reader,
    writer: JoinHandle<()>,
    end: &Ending,
) {
    match linger {
        Some(linger) if !end.peer_done || end.read_failed => {
            // The writer task holds the other half of the WebSocket: let it go first.
            if !end.writer_done {
                writer.abort();
                let _ = writer.await;
            }
            let handed_over = linger.request();
            drop(stream);
            lingering_close(state, handed_over).await;
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
    /// The connection's main loop: frames from the client, the timers (hello deadline,
    /// heartbeat, pong deadlines, token expiry, the slow-consumer check), shutdown and
    /// the subscriptions' fatal reports, until the goodbye starts or a side ends.
    async fn serve(
        &mut self,
        stream: &mut Reader,
        writer: &mut JoinHandle<()>,
        reports: &mut tokio::sync::mpsc::UnboundedReceiver<SubReport>,
        header_token: Option<&str>,
        linger: Option<&LingerHandle>,
    ) -> Ending {
        let cfg = Arc::clone(&self.state.config);
        let metrics = Arc::clone(&self.state.metrics);
        let out = Arc::clone(&self.out);
        let mut end = Ending::default();
        let mut shutdown = self.state.shutdown.clone();
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

        if *shutdown.borrow() {
            self.shutdown_close();
        }
        while !out.is_closing() {
            tokio::select! {
                biased;
                _ = &mut *writer => {
                    end.writer_done = true;
                    end.peer_end.get_or_insert(PeerEnd {
                        reason: "write_failed",
                        close_code: None,
                        error: None,
                    });
                    break;
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        self.drain_subscriptions().await;
                        self.shutdown_close();
                    }
                }
                Some(SubReport::Fatal(e)) = reports.recv() => {
                    self.out.close(*e);
                }
                _ = slow_check.tick() => {
                    if out.over_limit() {
                        self.slow_consumer();
                    }
                }
                () = &mut hello_deadline, if self.principal.is_none() => {
                    Metrics::inc(&metrics.protocol_errors);
                    self.out.close(ErrorFrame::new(
                        ErrorCode::HelloTimeout,
                        format!("no hello within {} ms", cfg.hello_timeout_ms),
                    ));
                }
                _ = heartbeat.tick(), if self.principal.is_some() => {
                    self.ping(&mut pong_deadline);
                }
                () = pong_deadline.passed(), if !self.pings.is_empty() => {
                    Metrics::inc(&metrics.pong_timeouts);
                    self.out.close(ErrorFrame::new(
                        ErrorCode::PongTimeout,
                        format!("no pong within {} ms", cfg.pong_timeout_ms),
                    ));
                }
                () = expiry.passed(), if self.principal.as_ref().is_some_and(|p| p.expires_at.is_some()) => {
                    Metrics::inc(&metrics.auth_failures);
                    self.out.close(ErrorFrame::new(ErrorCode::TokenExpired, "the token expired"));
                }
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        end.peer_done = true;
                        end.peer("connection_lost", None, None);
                        out.finish();
                        break;
                    };
                    out.stats.frame_in();
                    let had_principal = self.principal.is_some();
                    // Boxed: handling a message (a hello that subscribes, say) is the
                    // largest state of this loop, and an unboxed future is as large as
                    // its largest state for the whole life of every idle connection
                    // (1.2 KiB of each connection's task; a client sends few messages).
                    let handled = Box::pin(self.on_message(msg, header_token, &mut end)).await;
                    if handled.is_break() {
                        break;
                    }
                    if !had_principal && let Some(p) = &self.principal {
                        // No longer pre-hello (`RW-SEC-12`).
                        if let Some(l) = linger {
                            l.hello_sent();
                        }
                        // The heartbeat runs from `welcome` (`RW-HEART-1`).
                        heartbeat.reset();
                        if let Some(left) = p.ms_until_expiry() {
                            expiry.set(tokio::time::Instant::now() + ms(left));
                        }
                    }
                    match self.pings.front() {
                        Some((_, d)) => pong_deadline.set(*d),
                        None => pong_deadline.clear(),
                    }
                }
            }
        }
        end
    }

    /// Sends a heartbeat ping: every interval, whether or not earlier pings are
    /// answered (`RW-HEART-1`); each has its own pong deadline (`RW-HEART-3`).
    fn ping(&mut self, pong_deadline: &mut Deadline) {
        self.ping_counter += 1;
        let id = format!("s{}", self.ping_counter);
        let deadline = tokio::time::Instant::now() + ms(self.state.config.pong_timeout_ms);
        if self.pings.is_empty() {
            pong_deadline.set(deadline);
        }
        self.send(&ServerMessage::Ping(Ping { id: id.clone() }));
        self.pings.push_back((id, deadline));
    }

    /// Handles one read from the client; `Break` when the loop must end (the client
    /// closed, or the read failed).
    async fn on_message(
        &mut self,
        msg: Result<Message, axum::Error>,
        header_token: Option<&str>,
        end: &mut Ending,
    ) -> ControlFlow<()> {
        let max = self.state.config.max_frame_bytes;
        match msg {
            Ok(Message::Text(t)) => self.on_frame(t.as_bytes(), header_token).await,
            Ok(Message::Binary(b)) => {
                // Size, then kind, then rate (spec §14.2, `RW-INPUT-6`): a binary
                // frame is `binary_frame` even with the bucket empty.
                if b.len() > max as usize {
                    self.frame_too_large();
                } else {
                    self.protocol_error(ErrorFrame::new(
                        ErrorCode::BinaryFrame,
                        "binary frames are not allowed; send JSON text frames",
                    ));
                }
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(Message::Close(frame)) => {
                // Client-initiated close: the reply is flushed, no error frame
                // (`RW-CLOSE-1`).
                end.peer("client_closed", frame.map(|f| f.code), None);
                end.peer_done = true;
                self.out.finish();
                return ControlFlow::Break(());
            }
            Err(e) => return self.on_read_error(&e.to_string(), end),
        }
        ControlFlow::Continue(())
    }

    /// A read from the client failed: an oversize frame, invalid UTF-8, a broken
    /// RFC 6455 rule, or a broken socket.
    fn on_read_error(&mut self, text: &str, end: &mut Ending) -> ControlFlow<()> {
        end.read_failed = true;
        tracing::debug!(error = %text, "reading from the client failed");
        if text.contains("too long") || text.contains("Space limit") || text.contains("size") {
            self.frame_too_large();
        } else if text.contains("UTF-8") || text.contains("utf-8") {
            self.protocol_error(ErrorFrame::new(
                ErrorCode::InvalidJson,
                "the text frame is not valid UTF-8",
            ));
        } else if is_protocol_error(text) {
            // The client broke RFC 6455 itself (an unmasked frame, a reserved opcode or
            // bit, bad fragmentation): the stream cannot carry an error frame reliably,
            // so the close says 1002 alone (`RW-CLOSE-12`).
            Metrics::inc(&self.state.metrics.protocol_errors);
            self.out.close_protocol(1002, "websocket protocol error");
            return ControlFlow::Break(());
        } else {
            end.peer("read_failed", None, Some(text.to_owned()));
            self.out.finish();
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

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
    async fn on_frame(&mut self, frame: &[u8], header_token: Option<&str>) {
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

    async fn on_hello(&mut self, hello: Hello, header_token: Option<&str>) {
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
        let token = hello.token.as_deref().or(header_token);
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
