//! One WebSocket client of the server suite: a reader task that records the wire
//! transcript and answers pings, and a router that checks every frame against the
//! protocol invariants as it arrives (order, gaps, duplicates, frames before
//! `welcome`, frames after a closing error, close codes).

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::{
    SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use serde_json::{Value, json};
use tokio::{
    net::TcpStream,
    sync::{Mutex, mpsc, watch},
    time::Instant,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        Message,
        client::IntoClientRequest,
        protocol::{
            CloseFrame, WebSocketConfig,
            frame::{Frame, coding::CloseCode as WsCloseCode},
        },
    },
};

use super::pacer::Pacer;
use crate::runner::Recorder;

/// Locks the pacer; a poisoned lock still holds a usable count.
fn lock(p: &std::sync::Mutex<Pacer>) -> std::sync::MutexGuard<'_, Pacer> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The receive buffer assumed when the kit could not read its socket's: Linux's
/// largest default (`net.ipv4.tcp_rmem`, 6 MiB) would be too pessimistic for loopback,
/// where the kit asks for 32 KiB and gets 64 KiB; 256 KiB also covers what the
/// WebSocket reader may have pulled into memory before it stopped.
pub(crate) const DEFAULT_RECV_BUFFER: u64 = 256 * 1024;
type Sink = Arc<Mutex<SplitSink<Ws, Message>>>;

/// What the reader task saw.
#[derive(Debug)]
enum In {
    Text(String, Instant),
    Binary,
    Close(Option<u16>, String),
    Gone(String),
}

/// How something due by a deadline came ([`Conn::wait_due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// In time.
    OnTime,
    /// Late by `by`, at `at`.
    Late {
        /// How late.
        by: Duration,
        /// When it arrived.
        at: Instant,
    },
    /// Not within the extension either (`waited` past the deadline), or the
    /// connection ended first.
    Never {
        /// How long past the deadline the kit waited.
        waited: Duration,
        /// The connection ended, so it cannot come any more.
        ended: bool,
    },
}

/// A violated invariant, seen while routing frames.
#[derive(Debug, Clone)]
pub(crate) struct Violation {
    pub(crate) requirement: &'static str,
    pub(crate) message: String,
}

/// A connected client.
pub(crate) struct Conn {
    pub(crate) name: String,
    sink: Sink,
    rx: mpsc::UnboundedReceiver<In>,
    rx_done: bool,
    pause: watch::Sender<bool>,
    auto_pong: Arc<AtomicBool>,
    /// The kit's copy of the server's message-rate bucket (`RW-LIMIT-5`).
    pacer: Arc<std::sync::Mutex<Pacer>>,
    rec: Recorder,
    /// Control frames not yet consumed by a step (everything but events and pings).
    pub(crate) controls: VecDeque<Value>,
    /// Events not yet consumed, per run.
    pub(crate) events: BTreeMap<String, VecDeque<Value>>,
    /// Open subscriptions: run → next expected seq.
    pub(crate) subs: BTreeMap<String, u64>,
    /// Cursor per run: (epoch, last seq delivered).
    pub(crate) cursors: BTreeMap<String, (Option<String>, u64)>,
    /// Everything delivered per run: (seq, event_id, whole event).
    pub(crate) delivered: BTreeMap<String, Vec<Value>>,
    /// Frame types in arrival order.
    pub(crate) frame_types: Vec<String>,
    /// When pings arrived.
    pub(crate) pings: Vec<Instant>,
    /// The welcome and when it arrived.
    pub(crate) welcome: Option<(Value, Instant)>,
    /// The close frame the server sent (code, reason).
    pub(crate) closed: Option<(Option<u16>, String)>,
    /// The TCP connection is gone.
    pub(crate) ended: bool,
    pending_close_code: Option<u64>,
    client_closing: bool,
    /// Batch frames seen and their sizes.
    pub(crate) batches: Vec<usize>,
    /// Single event frames seen.
    pub(crate) singles: u32,
    /// When each event arrived: (run, seq, instant).
    pub(crate) arrivals: Vec<(String, u64, Instant)>,
    /// Invariant violations.
    pub(crate) violations: Vec<Violation>,
    /// When the reader last stopped reading (a slow consumer), if it is stopped.
    pub(crate) paused_at: Option<Instant>,
    /// The receive buffer the kernel gave this client's socket, in bytes (what the
    /// client side can hold unread).
    pub(crate) recv_buffer: u64,
    /// When the WebSocket upgrade completed (the server's hello deadline started a
    /// little earlier).
    pub(crate) opened_at: Instant,
    /// When the kit finished sending `hello`.
    pub(crate) hello_sent: Option<Instant>,
    /// Every error frame's code and when it arrived.
    pub(crate) errors_at: Vec<(String, Instant)>,
}

/// How to open a connection.
#[derive(Debug, Default, Clone)]
pub(crate) struct ConnectOptions {
    pub(crate) authorization: Option<String>,
}

impl Conn {
    /// Opens a WebSocket connection.
    pub(crate) async fn open(
        name: &str,
        url: &str,
        opts: ConnectOptions,
        rec: Recorder,
        limit: Duration,
    ) -> Result<Self, String> {
        let mut req = url
            .into_client_request()
            .map_err(|e| format!("bad WebSocket URL {url:?}: {e}"))?;
        if let Some(a) = &opts.authorization {
            req.headers_mut().insert(
                "authorization",
                a.parse().map_err(|_| "bad header value".to_owned())?,
            );
        }
        let mut cfg = WebSocketConfig::default();
        cfg.max_message_size = Some(256 << 20);
        cfg.max_frame_size = Some(256 << 20);
        let mut recv_buffer = DEFAULT_RECV_BUFFER;
        let (ws, _resp) = tokio::time::timeout(limit, async {
            if matches!(req.uri().scheme_str(), Some("ws" | "wss")) {
                // A small receive buffer, so that a client that stops reading fills the
                // server's queue quickly instead of the kernel's buffers (slow-consumer
                // scenarios must not race the server's pong timeout).
                let host = req.uri().host().unwrap_or("127.0.0.1").to_owned();
                let default_port = if req.uri().scheme_str() == Some("wss") {
                    443
                } else {
                    80
                };
                let port = req.uri().port_u16().unwrap_or(default_port);
                let addr = tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map_err(tokio_tungstenite::tungstenite::Error::Io)?
                    .next()
                    .ok_or_else(|| {
                        tokio_tungstenite::tungstenite::Error::Io(std::io::Error::other(
                            "the host did not resolve",
                        ))
                    })?;
                let sock = if addr.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()
                } else {
                    tokio::net::TcpSocket::new_v6()
                }
                .map_err(tokio_tungstenite::tungstenite::Error::Io)?;
                let _ = sock.set_recv_buffer_size(32 * 1024);
                if let Ok(n) = sock.recv_buffer_size() {
                    recv_buffer = u64::from(n);
                }
                let stream = sock
                    .connect(addr)
                    .await
                    .map_err(tokio_tungstenite::tungstenite::Error::Io)?;
                let _ = stream.set_nodelay(true);
                // `wss://`: TLS over this socket, with the kit's trust (`crate::net`).
                tokio_tungstenite::client_async_tls_with_config(
                    req,
                    stream,
                    Some(cfg),
                    Some(crate::net::connector()),
                )
                .await
            } else {
                tokio_tungstenite::connect_async_tls_with_config(
                    req,
                    Some(cfg),
                    true,
                    Some(crate::net::connector()),
                )
                .await
            }
        })
        .await
        .map_err(|_| {
            format!(
                "the WebSocket upgrade did not complete within {} ms",
                limit.as_millis()
            )
        })?
        .map_err(|e| format!("the WebSocket upgrade failed: {e}"))?;
        let opened_at = Instant::now();
        rec.note(name, format!("connected to {url}"));
        let (sink, stream) = ws.split();
        let sink = Arc::new(Mutex::new(sink));
        let (tx, rx) = mpsc::unbounded_channel();
        let (pause_tx, pause_rx) = watch::channel(false);
        let auto_pong = Arc::new(AtomicBool::new(true));
        let pacer = Arc::new(std::sync::Mutex::new(Pacer::new()));
        tokio::spawn(reader(
            name.to_owned(),
            stream,
            Arc::clone(&sink),
            tx,
            pause_rx,
            (Arc::clone(&auto_pong), Arc::clone(&pacer)),
            rec.clone(),
        ));
        Ok(Self {
            name: name.to_owned(),
            sink,
            rx,
            rx_done: false,
            pause: pause_tx,
            auto_pong,
            pacer,
            rec,
            controls: VecDeque::new(),
            events: BTreeMap::new(),
            subs: BTreeMap::new(),
            cursors: BTreeMap::new(),
            delivered: BTreeMap::new(),
            frame_types: Vec::new(),
            pings: Vec::new(),
            welcome: None,
            closed: None,
            ended: false,
            pending_close_code: None,
            client_closing: false,
            batches: Vec::new(),
            singles: 0,
            arrivals: Vec::new(),
            violations: Vec::new(),
            paused_at: None,
            recv_buffer,
            opened_at,
            hello_sent: None,
            errors_at: Vec::new(),
        })
    }

    /// Waits until the announced message rate allows one more message, and counts it
    /// (see [`super::pacer`]).
    async fn pace(&self) {
        loop {
            let wait = lock(&self.pacer).wait(Instant::now());
            if wait.is_zero() {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        lock(&self.pacer).take(Instant::now());
    }

    /// Sends a text frame, within the announced message rate.
    pub(crate) async fn send_text(&mut self, text: String) -> Result<(), String> {
        self.pace().await;
        self.send_text_unpaced(text).await
    }

    /// Sends a JSON message at once, whatever the announced message rate: for steps
    /// that exceed it on purpose.
    pub(crate) async fn send_unpaced(&mut self, v: &Value) -> Result<(), String> {
        lock(&self.pacer).take(Instant::now());
        self.send_text_unpaced(v.to_string()).await
    }

    async fn send_text_unpaced(&mut self, text: String) -> Result<(), String> {
        self.rec.out(&self.name, &text);
        self.sink
            .lock()
            .await
            .send(Message::text(text))
            .await
            .map_err(|e| format!("sending failed: {e}"))
    }

    /// Sends a JSON message.
    pub(crate) async fn send(&mut self, v: &Value) -> Result<(), String> {
        self.send_text(v.to_string()).await
    }

    /// Sends a binary frame.
    pub(crate) async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        self.pace().await;
        self.rec.out(
            &self.name,
            &format!("<binary frame, {} bytes>", bytes.len()),
        );
        self.sink
            .lock()
            .await
            .send(Message::binary(bytes))
            .await
            .map_err(|e| format!("sending failed: {e}"))
    }

    /// Sends a text frame whose payload is not valid UTF-8.
    pub(crate) async fn send_invalid_utf8(&mut self) -> Result<(), String> {
        self.pace().await;
        self.rec
            .out(&self.name, "<text frame with invalid UTF-8: ff fe 7b>");
        let frame = Frame::message(
            vec![0xff, 0xfe, b'{'],
            tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
            ),
            true,
        );
        self.sink
            .lock()
            .await
            .send(Message::Frame(frame))
            .await
            .map_err(|e| format!("sending failed: {e}"))
    }

    /// Starts a close handshake (code 1000).
    pub(crate) async fn close(&mut self) {
        self.client_closing = true;
        self.rec.out(&self.name, "<close 1000>");
        let _ = self
            .sink
            .lock()
            .await
            .send(Message::Close(Some(CloseFrame {
                code: WsCloseCode::Normal,
                reason: "".into(),
            })))
            .await;
    }

    /// Stops or resumes answering pings.
    pub(crate) fn set_auto_pong(&self, on: bool) {
        self.auto_pong.store(on, Ordering::SeqCst);
    }

    /// Stops or resumes reading the socket (a slow consumer).
    pub(crate) fn set_paused(&mut self, paused: bool) {
        self.paused_at = paused.then(Instant::now);
        let _ = self.pause.send(paused);
    }

    fn violate(&mut self, requirement: &'static str, message: String) {
        self.rec
            .note(&self.name, format!("VIOLATION {requirement}: {message}"));
        self.violations.push(Violation {
            requirement,
            message,
        });
    }

    /// Receives and routes one item; false when the deadline passed or nothing more
    /// can arrive.
    pub(crate) async fn pump(&mut self, deadline: Instant) -> bool {
        if self.rx_done {
            return false;
        }
        let item = match tokio::time::timeout_at(deadline, self.rx.recv()).await {
            Err(_) => return false,
            Ok(None) => {
                self.rx_done = true;
                self.ended = true;
                return false;
            }
            Ok(Some(i)) => i,
        };
        self.route(item);
        true
    }

    fn route(&mut self, item: In) {
        match item {
            In::Text(text, at) => self.route_text(&text, at),
            In::Binary => {
                self.violate("RW-CONV-1", "the server sent a binary frame".into());
            }
            In::Close(code, reason) => {
                self.check_close(code);
                self.closed = Some((code, reason));
            }
            In::Gone(why) => {
                self.ended = true;
                if self.closed.is_none() && !self.client_closing {
                    self.rec.note(&self.name, format!("connection lost: {why}"));
                }
            }
        }
    }

    /// A text frame: checked as a JSON object valid under the v1 schema (§2, §3), then
    /// routed by its type.
    fn route_text(&mut self, text: &str, at: Instant) {
        let v: Value = match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                self.violate(
                    "RW-CONV-1",
                    format!(
                        "the server sent a text frame that is not one JSON object: {}",
                        clip(text)
                    ),
                );
                return;
            }
        };
        if let Err(e) = runwire_protocol::codec::decode_server_message(text.as_bytes(), usize::MAX)
        {
            self.violate(
                "RW-COMPAT-5",
                format!("the server sent a frame that is not valid under the v1 schema: {e}"),
            );
        }
        if let Some(dup) = duplicate_member(text) {
            self.violate(
                "RW-CONV-3",
                format!(
                    "the server sent an object with two members named {dup:?}: {}",
                    clip(text)
                ),
            );
        }
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if self.pending_close_code.is_some() {
            self.violate(
                "RW-ERROR-3",
                format!(
                    "the server sent a {ty:?} frame after an error frame that carried close_code"
                ),
            );
        }
        if self.welcome.is_none() && ty != "welcome" && ty != "error" {
            self.violate(
                "RW-CONN-6",
                format!("the server sent a {ty:?} frame before welcome"),
            );
        }
        self.route_typed(v, &ty, text, at);
    }

    /// Records a frame of type `ty` where the session's checks and steps find it.
    fn route_typed(&mut self, v: Value, ty: &str, text: &str, at: Instant) {
        self.frame_types.push(ty.to_owned());
        match ty {
            "ping" => {
                let id = v.get("id").and_then(Value::as_str).unwrap_or("");
                if id.is_empty() || id.chars().count() > 64 {
                    self.violate(
                        "RW-HEART-2",
                        format!("a ping id must be 1-64 characters: {}", clip(text)),
                    );
                }
                self.pings.push(at);
            }
            "welcome" => {
                if let Some(rate) = v
                    .pointer("/limits/max_messages_per_second")
                    .and_then(Value::as_u64)
                {
                    lock(&self.pacer).announce(rate);
                }
                self.welcome = Some((v.clone(), at));
                self.controls.push_back(v);
            }
            "subscribed" => {
                let run = str_of(&v, "run_id");
                let after = v.get("after_seq").and_then(Value::as_u64).unwrap_or(0);
                self.subs.insert(run.clone(), after + 1);
                self.cursors.insert(
                    run,
                    (
                        v.get("epoch").and_then(Value::as_str).map(str::to_owned),
                        after,
                    ),
                );
                self.controls.push_back(v);
            }
            "reset" => {
                let run = str_of(&v, "run_id");
                let as_of = v
                    .pointer("/snapshot/as_of_seq")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                self.subs.insert(run.clone(), as_of + 1);
                self.cursors.insert(
                    run.clone(),
                    (
                        v.get("epoch").and_then(Value::as_str).map(str::to_owned),
                        as_of,
                    ),
                );
                self.events.remove(&run);
                self.controls.push_back(v);
            }
            "unsubscribed" => {
                self.subs.remove(&str_of(&v, "run_id"));
                self.controls.push_back(v);
            }
            "event" => {
                self.singles += 1;
                let ev = v.get("event").cloned().unwrap_or(Value::Null);
                self.route_event(ev, at);
            }
            "batch" => {
                let evs = v
                    .get("events")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if evs.is_empty() || evs.len() > runwire_protocol::defaults::BATCH_MAX_EVENTS {
                    self.violate(
                        "RW-BATCH-2",
                        format!(
                            "a batch frame holds {} events (allowed 1 to 500)",
                            evs.len()
                        ),
                    );
                }
                self.batches.push(evs.len());
                for ev in evs {
                    self.route_event(ev, at);
                }
            }
            "error" => {
                self.errors_at.push((str_of(&v, "code"), at));
                if let Some(c) = v.get("close_code").and_then(Value::as_u64) {
                    self.pending_close_code = Some(c);
                }
                for m in ["code", "message", "retryable"] {
                    if v.get(m).is_none() {
                        self.violate(
                            "RW-ERROR-1",
                            format!("an error frame lacks {m:?}: {}", clip(text)),
                        );
                    }
                }
                self.controls.push_back(v);
            }
            _ => self.controls.push_back(v),
        }
    }

    /// A close frame from the server: a code allowed on the wire (`RW-CLOSE-4`), the one
    /// its error frame announced (`RW-ERROR-3`, `RW-CLOSE-1`).
    fn check_close(&mut self, code: Option<u16>) {
        if let Some(c) = code
            && (c < 1000 || matches!(c, 1004..=1006 | 1015 | 1016..=2999))
        {
            self.violate(
                "RW-CLOSE-4",
                format!("the server sent the close code {c}, which must never go on the wire"),
            );
        }
        if !self.client_closing {
            match (code, self.pending_close_code) {
                (Some(c), Some(p)) if u64::from(c) == p => {}
                (Some(c), Some(p)) => self.violate(
                    "RW-ERROR-3",
                    format!("the server closed with {c} after an error frame with close_code {p}"),
                ),
                (c, None) => self.violate(
                    "RW-CLOSE-1",
                    format!(
                        "the server closed the connection (code {}) without an error frame carrying that close_code",
                        c.map_or("none".to_owned(), |c| c.to_string())
                    ),
                ),
                (None, Some(p)) => self.violate(
                    "RW-ERROR-3",
                    format!("the server sent a close frame without a code after an error frame with close_code {p}"),
                ),
            }
        }
    }

    fn route_event(&mut self, ev: Value, at: Instant) {
        let run = str_of(&ev, "run_id");
        let seq = ev.get("seq").and_then(Value::as_u64).unwrap_or(0);
        match self.subs.get(&run).copied() {
            None => self.violate(
                "RW-SEC-5",
                format!("event seq {seq} of run {run} arrived without an open subscription (before subscribed/reset or after unsubscribed)"),
            ),
            Some(next) => {
                if seq == next {
                    self.subs.insert(run.clone(), next + 1);
                } else if seq < next {
                    self.violate(
                        "RW-ORDER-2",
                        format!("event seq {seq} of run {run} was sent again (expected seq {next} next)"),
                    );
                } else {
                    self.violate(
                        "RW-ORDER-1",
                        format!("gap in run {run}: expected seq {next}, saw seq {seq}"),
                    );
                    self.subs.insert(run.clone(), seq + 1);
                }
            }
        }
        if let Some(c) = self.cursors.get_mut(&run) {
            c.1 = c.1.max(seq);
        }
        self.arrivals.push((run.clone(), seq, at));
        self.delivered
            .entry(run.clone())
            .or_default()
            .push(ev.clone());
        self.events.entry(run).or_default().push_back(ev);
    }

    /// The next control frame (not an event or ping).
    pub(crate) async fn next_control(&mut self, deadline: Instant) -> Result<Value, String> {
        loop {
            if let Some(c) = self.controls.pop_front() {
                return Ok(c);
            }
            if !self.pump(deadline).await {
                return Err(self.nothing_msg());
            }
        }
    }

    /// Waits until `n` unconsumed events of `run` are buffered.
    pub(crate) async fn wait_events(
        &mut self,
        run: &str,
        n: usize,
        deadline: Instant,
    ) -> Result<(), String> {
        while self.events.get(run).map_or(0, VecDeque::len) < n {
            if !self.pump(deadline).await {
                return Err(format!(
                    "{} of {n} events of run {run} arrived; then {}",
                    self.events.get(run).map_or(0, VecDeque::len),
                    self.nothing_msg()
                ));
            }
        }
        Ok(())
    }

    /// Waits until the server closed or dropped the connection.
    pub(crate) async fn wait_end(&mut self, deadline: Instant) -> bool {
        while self.closed.is_none() && !self.ended {
            if !self.pump(deadline).await {
                return false;
            }
        }
        true
    }

    /// Waits for something that was due at `due` (`found` returns when it arrived).
    /// When it has not arrived by then, keeps waiting until `due + extension` to
    /// measure how late it comes, so that the judgment can weigh the miss against
    /// the machine's lateness instead of failing at the first millisecond.
    pub(crate) async fn wait_due(
        &mut self,
        due: Instant,
        extension: Duration,
        found: impl Fn(&Self) -> Option<Instant>,
    ) -> Due {
        while found(self).is_none() {
            if !self.pump(due).await {
                break;
            }
        }
        if let Some(at) = found(self) {
            return if at <= due {
                Due::OnTime
            } else {
                Due::Late { by: at - due, at }
            };
        }
        let end = due + extension;
        while found(self).is_none() {
            if !self.pump(end).await {
                break;
            }
        }
        match found(self) {
            Some(at) => Due::Late {
                by: at.saturating_duration_since(due),
                at,
            },
            None => Due::Never {
                waited: Instant::now().saturating_duration_since(due),
                ended: self.ended || self.closed.is_some(),
            },
        }
    }

    /// Drains whatever arrives until the deadline.
    pub(crate) async fn drain_until(&mut self, deadline: Instant) {
        while self.pump(deadline).await {}
    }

    /// A description of why nothing came.
    pub(crate) fn nothing_msg(&self) -> String {
        if let Some((code, reason)) = &self.closed {
            format!(
                "the connection was closed with code {} {reason:?}",
                code.map_or("none".into(), |c| c.to_string())
            )
        } else if self.ended {
            "the connection was dropped".to_owned()
        } else {
            "nothing arrived before the deadline".to_owned()
        }
    }

    /// A JSON summary of the hello sent.
    pub(crate) fn hello(versions: &[String], token: Option<&str>, subs: Vec<Value>) -> Value {
        let mut h = json!({"type": "hello", "versions": versions, "client": {"name": "runwire-conformance", "version": env!("CARGO_PKG_VERSION")}});
        if let Some(t) = token {
            h["token"] = json!(t);
        }
        if !subs.is_empty() {
            h["subscriptions"] = Value::Array(subs);
        }
        h
    }
}

/// The first member name that appears twice in one object of `text`, if any
/// (`serde_json` keeps the last value silently, so this is checked on the raw text;
/// the mock checks client frames with the same function).
pub(crate) use runwire_mock::duplicate_member;

fn str_of(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_owned()
}

/// Shortens a frame for messages.
pub(crate) fn clip(s: &str) -> String {
    if s.len() <= 300 {
        s.to_owned()
    } else {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &s[..end], s.len())
    }
}

async fn reader(
    name: String,
    mut stream: SplitStream<Ws>,
    sink: Sink,
    tx: mpsc::UnboundedSender<In>,
    mut pause: watch::Receiver<bool>,
    (auto_pong, pacer): (Arc<AtomicBool>, Arc<std::sync::Mutex<Pacer>>),
    rec: Recorder,
) {
    loop {
        if *pause.borrow() && pause.wait_for(|p| !*p).await.is_err() {
            return;
        }
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = pause.changed() => continue,
        };
        match msg {
            Some(Ok(Message::Text(t))) => {
                let text = t.to_string();
                let at = Instant::now();
                rec.inn(&name, &text);
                if auto_pong.load(Ordering::SeqCst)
                    && let Ok(v) = serde_json::from_str::<Value>(&text)
                    && v.get("type").and_then(Value::as_str) == Some("ping")
                {
                    let pong =
                        json!({"type": "pong", "id": v.get("id").cloned().unwrap_or(Value::Null)})
                            .to_string();
                    rec.out(&name, &pong);
                    // Counted, never delayed: heartbeat scenarios time the pong.
                    lock(&pacer).take(Instant::now());
                    let _ = sink.lock().await.send(Message::text(pong)).await;
                }
                let _ = tx.send(In::Text(text, at));
            }
            Some(Ok(Message::Binary(b))) => {
                rec.inn(&name, &format!("<binary frame, {} bytes>", b.len()));
                let _ = tx.send(In::Binary);
            }
            Some(Ok(Message::Close(f))) => {
                let code = f.as_ref().map(|f| u16::from(f.code));
                let reason = f.map(|f| f.reason.to_string()).unwrap_or_default();
                rec.inn(
                    &name,
                    &format!(
                        "<close {} {reason:?}>",
                        code.map_or("(no code)".into(), |c| c.to_string())
                    ),
                );
                let _ = tx.send(In::Close(code, reason));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                let _ = tx.send(In::Gone(e.to_string()));
                return;
            }
            None => {
                let _ = tx.send(In::Gone("end of stream".into()));
                return;
            }
        }
    }
}
