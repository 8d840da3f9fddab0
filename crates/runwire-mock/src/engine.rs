//! The mock server: accepts connections, plays each connection's script, records the
//! transcript and judges expectations as they happen.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex as StdMutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use rand::{SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use runwire_protocol::{
    ClientMessage, CloseCode, ErrorCode, Hello, codec::decode_client_message, defaults,
    negotiate_version,
};
use serde_json::{Map, Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Mutex as AsyncMutex, mpsc, watch},
    task::AbortHandle,
    time::{Instant, sleep, sleep_until, timeout, timeout_at},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        handshake::server::{Request, Response},
        protocol::{
            CloseFrame,
            frame::{
                Frame,
                coding::{CloseCode as WsCloseCode, Data, OpCode},
            },
        },
    },
};

use crate::{
    fixture::{Accept, Connection, EventsStep, Fixture, Step},
    generate::Logs,
    lateness::{Probe, RunQueueWait, TimingMiss},
    reqs,
    transcript::{Direction, Entry, Violation, What},
};

type Sink = SplitSink<WebSocketStream<TcpStream>, Message>;

/// How long (unscaled ms) a "within W" judgment keeps watching after its deadline at
/// least; see [`Shared::extension`].
pub(crate) const EXTENSION_MS: u64 = 250;

/// A duration in fractional milliseconds (for messages).
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What the mock knows about one connection, shared between its tasks.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// Every valid client message, with its arrival time.
    pub(crate) msgs: Vec<(Instant, ClientMessage)>,
    /// The hello, when it arrived.
    pub(crate) hello: Option<Hello>,
    /// When the hello arrived.
    pub(crate) hello_at: Option<Instant>,
    /// The bearer token of the upgrade request's `Authorization` header.
    pub(crate) header_token: Option<String>,
    /// The first request per run on this connection: (after_seq, epoch).
    pub(crate) requested: BTreeMap<String, (Option<u64>, Option<String>)>,
    /// When the first request per run arrived.
    pub(crate) requested_at: BTreeMap<String, Instant>,
    /// The latest request per run on this connection.
    pub(crate) latest: BTreeMap<String, (Option<u64>, Option<String>)>,
    /// When the client ended the connection, and its close code (None: TCP close
    /// without a close frame).
    pub(crate) closed: Option<(Instant, Option<u16>)>,
    /// The mock ended the connection (drop, close).
    pub(crate) mock_ended: bool,
    /// The announced `max_frame_bytes` and `max_messages_per_second`, once `welcome`
    /// was sent (`RW-LIMIT-5`).
    pub(crate) limits: Option<(u64, u64)>,
    /// The client's token bucket under the announced rate: (tokens, last refill).
    bucket: Option<(f64, Instant)>,
    consumed_pong: usize,
    consumed_sub: usize,
    consumed_type: usize,
}

/// One connection as seen from the fixture.
#[derive(Debug)]
pub(crate) struct ConnRecord {
    pub(crate) accepted: Instant,
    pub(crate) ended: Option<Instant>,
    pub(crate) script_done: bool,
    /// When the script was played to its end.
    pub(crate) done_at: Option<Instant>,
    pub(crate) step: Option<usize>,
    pub(crate) state: Arc<StdMutex<ConnState>>,
    pub(crate) scripted: bool,
}

/// What the client application (through its adapter) printed and how it ended.
#[derive(Debug, Default)]
pub(crate) struct AdapterOutput {
    pub(crate) attached: bool,
    /// When the client was started (spawned or attached); its start-up runs from here
    /// to the first accept.
    pub(crate) started: Option<Instant>,
    pub(crate) lines: Vec<Value>,
    /// When each of `lines` reached the mock.
    pub(crate) line_at: Vec<Instant>,
    /// `Some(code)` once the client ended (`code` None: killed by a signal).
    pub(crate) exit: Option<Option<i32>>,
    /// When the client ended.
    pub(crate) exit_at: Option<Instant>,
    /// The run-queue wait of the client's process, when it runs as one.
    pub(crate) run_wait: Option<RunQueueWait>,
    pub(crate) killed_by_mock: bool,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) entries: Vec<Entry>,
    pub(crate) violations: Vec<Violation>,
    pub(crate) notes: Vec<String>,
    pub(crate) conns: Vec<ConnRecord>,
    pub(crate) extra_conns: u32,
    pub(crate) epochs: BTreeMap<String, String>,
    pub(crate) app: AdapterOutput,
    pub(crate) tasks: Vec<AbortHandle>,
    /// Close-code misses of `await_close` steps with `unless_browser`: (connection,
    /// requirement, message), violations unless the adapter declared the `browser`
    /// profile (`RW-CLOSE-10`).
    pub(crate) unless_browser: Vec<(u32, String, String)>,
}

/// Everything the tasks of one mock share.
pub(crate) struct Shared {
    pub(crate) start: Instant,
    pub(crate) fixture: Fixture,
    pub(crate) logs: Logs,
    pub(crate) scale: f64,
    pub(crate) seed: u64,
    pub(crate) live: Option<mpsc::UnboundedSender<Entry>>,
    pub(crate) st: StdMutex<State>,
    pub(crate) changed: watch::Sender<u64>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) wait_for_client: Option<Duration>,
    /// Measures the lateness of this process's timers (timing judgments).
    pub(crate) probe: Probe,
}

impl Shared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn t_ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    /// A fixture duration after scaling.
    pub(crate) fn dur(&self, ms: u64) -> Duration {
        Duration::from_secs_f64((ms as f64) * self.scale / 1000.0)
    }

    /// A fixture duration after scaling, as whole milliseconds for the wire (at least
    /// 1 when `ms` is not 0).
    pub(crate) fn wire_ms(&self, ms: u64) -> u64 {
        if ms == 0 {
            return 0;
        }
        (((ms as f64) * self.scale).round() as u64).max(1)
    }

    pub(crate) fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(crate) fn record(&self, conn: u32, dir: Direction, what: What) {
        let entry = Entry {
            t_ms: self.t_ms(Instant::now()),
            conn,
            dir,
            what,
        };
        if let Some(l) = &self.live {
            let _ = l.send(entry.clone());
        }
        self.lock().entries.push(entry);
    }

    /// How long a "within W" judgment keeps watching after its deadline passed: 250 ms
    /// × the time scale, or twice the worst lateness measured since `from` (the start
    /// of the judged interval), whichever is longer. What comes during the extension
    /// came late by a measured margin; what does not come at all missed by the whole
    /// extension.
    pub(crate) fn extension(&self, from: Instant) -> Duration {
        let late = self.lateness(from, Instant::now()).total();
        self.dur(EXTENSION_MS).max(late.saturating_mul(2))
    }

    /// The lateness measured over `[from, to]`.
    pub(crate) fn lateness(&self, from: Instant, to: Instant) -> Lateness {
        let (from, to) = (from.into_std(), to.into_std());
        let wait = self.lock().app.run_wait.clone();
        Lateness {
            timers: self.probe.max_between(from, to),
            kit_waited: self.probe.threads_waited(from, to),
            client_waited: wait.map_or(Duration::ZERO, |w| w.between(from, to)),
        }
    }

    pub(crate) fn note(&self, conn: u32, text: impl Into<String>) {
        self.record(conn, Direction::Mock, What::Note { text: text.into() });
    }

    pub(crate) fn violate(
        &self,
        conn: Option<u32>,
        requirement: &str,
        expectation: &str,
        message: impl Into<String>,
    ) {
        let message = message.into();
        self.record(
            conn.unwrap_or(0),
            Direction::Mock,
            What::Violation {
                requirement: requirement.to_owned(),
                message: message.clone(),
            },
        );
        self.lock()
            .violations
            .push(Violation::new(requirement, expectation, message, conn));
        self.bump();
    }

    /// Records a violated timing judgment that missed its bound by `miss.margin`. When
    /// the lateness the probe measured over the judged interval is at least the
    /// margin, the violation is marked inconclusive (the machine may have caused it).
    pub(crate) fn violate_timing(
        &self,
        conn: Option<u32>,
        requirement: &str,
        expectation: &str,
        message: impl Into<String>,
        miss: TimingMiss,
    ) {
        let lateness = self.lateness(miss.from.into(), miss.to.into());
        let late = lateness.total();
        let explained = miss.margin <= late;
        let margin_ms = ms(miss.margin);
        let lateness_ms = ms(late);
        let measured = lateness.describe();
        let message = message.into();
        // The transcript line carries the numbers; the verdict keeps them in fields
        // (and `Verdict::render` prints them).
        self.record(
            conn.unwrap_or(0),
            Direction::Mock,
            What::Violation {
                requirement: requirement.to_owned(),
                message: format!(
                    "{message} (missed by {margin_ms:.1} ms; {measured}{})",
                    if explained { ": inconclusive" } else { "" }
                ),
            },
        );
        let mut v = Violation::new(requirement, expectation, message, conn);
        v.margin_ms = Some(margin_ms);
        v.lateness_ms = Some(lateness_ms);
        v.inconclusive = explained;
        self.lock().violations.push(v);
        self.bump();
    }

    fn current_epoch(&self, run: &str) -> String {
        if let Some(e) = self.lock().epochs.get(run) {
            return e.clone();
        }
        self.first_epoch(run)
    }

    pub(crate) fn first_epoch(&self, run: &str) -> String {
        self.fixture
            .runs
            .iter()
            .find(|r| r.run_id == run)
            .map_or_else(|| "e1".to_owned(), |r| r.epoch.clone())
    }

    fn spawn<F>(self: &Arc<Self>, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let h = tokio::spawn(fut);
        self.lock().tasks.push(h.abort_handle());
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// Runs the accept loop until shutdown.
pub(crate) async fn accept_loop(sh: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = sh.shutdown.subscribe();
    let scripted = sh.fixture.connections.len();
    let mut k: u32 = 0;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        k += 1;
        let state = Arc::new(StdMutex::new(ConnState::default()));
        let now = Instant::now();
        let is_scripted = (k as usize) <= scripted;
        if k == 1 {
            let started = sh.lock().app.started.unwrap_or(sh.start);
            sh.note(
                1,
                format!(
                    "first connection {:.1} ms after the client started (start-up); the \
                     fixture deadline of {} ms counts from here",
                    ms(now.saturating_duration_since(started)),
                    sh.wire_ms(sh.fixture.deadline_ms())
                ),
            );
        }
        {
            let mut st = sh.lock();
            if !is_scripted {
                st.extra_conns += 1;
            }
            st.conns.push(ConnRecord {
                accepted: now,
                ended: None,
                script_done: false,
                done_at: None,
                step: None,
                state: state.clone(),
                scripted: is_scripted,
            });
        }
        if !is_scripted {
            let req = sh
                .fixture
                .expect
                .extra_connection_requirement
                .clone()
                .unwrap_or_else(|| sh.fixture.primary_requirement().to_owned());
            sh.violate(
                Some(k),
                &req,
                "no_reconnect",
                format!(
                    "the client opened connection {k}, but the fixture scripts only {scripted}: \
                     it must not connect again"
                ),
            );
        }
        let sh2 = sh.clone();
        sh.spawn(async move {
            let script = if is_scripted {
                sh2.fixture.connections[(k - 1) as usize].clone()
            } else {
                Connection::default()
            };
            run_connection(sh2, k, tcp, script, state, is_scripted).await;
        });
        sh.bump();
    }
}

fn mark_ended(sh: &Shared, k: u32, at: Instant) {
    let mut st = sh.lock();
    if let Some(c) = st.conns.get_mut((k - 1) as usize)
        && c.ended.is_none()
    {
        c.ended = Some(at);
    }
    drop(st);
    sh.bump();
}

fn mark_done(sh: &Shared, k: u32) {
    let mut st = sh.lock();
    if let Some(c) = st.conns.get_mut((k - 1) as usize) {
        c.script_done = true;
        c.done_at.get_or_insert_with(Instant::now);
        c.step = None;
    }
    drop(st);
    sh.bump();
}

/// Notes the observed reconnect delay of connection `k` (from the end of connection
/// `k - 1` to this accept) in the transcript. Reconnect delays are judged when the
/// fixture ends ([`crate::reconnect`]), when every `reconnecting` line the client
/// printed has arrived.
async fn note_reconnect_delay(sh: &Shared, k: u32) {
    if k < 2 {
        return;
    }
    // The previous connection's end may be processed a moment after this accept.
    let grace = Instant::now() + one_connection_grace(sh);
    let mut rx = sh.changed.subscribe();
    loop {
        rx.borrow_and_update();
        let ended = sh
            .lock()
            .conns
            .get((k - 2) as usize)
            .is_some_and(|p| p.ended.is_some());
        if ended || timeout_at(grace, rx.changed()).await.is_err() {
            break;
        }
    }
    let (accepted, prev_ended) = {
        let st = sh.lock();
        let Some(cur) = st.conns.get((k - 1) as usize) else {
            return;
        };
        let prev = st.conns.get((k - 2) as usize).and_then(|p| p.ended);
        (cur.accepted, prev)
    };
    if let Some(e) = prev_ended {
        let delay = ms(accepted.saturating_duration_since(e));
        sh.note(k, format!("reconnect delay {delay:.1} ms"));
    }
}

/// How long after accepting connection `k` the mock still takes the end of
/// connection `k - 1` as having come first: the two are noticed by different tasks,
/// in either order (`RW-RECONNECT-9`).
pub(crate) fn one_connection_grace(sh: &Shared) -> Duration {
    sh.dur(100).max(Duration::from_millis(50))
}

async fn run_connection(
    sh: Arc<Shared>,
    k: u32,
    mut tcp: TcpStream,
    script: Connection,
    state: Arc<StdMutex<ConnState>>,
    scripted: bool,
) {
    if scripted {
        note_reconnect_delay(&sh, k).await;
    }
    match &script.accept {
        Accept::Reset => {
            sh.record(
                k,
                Direction::Mock,
                What::Connect {
                    accept: "reset".into(),
                    path: None,
                },
            );
            #[allow(deprecated)] // linger 0 does not block: it makes the close an RST
            let _ = tcp.set_linger(Some(Duration::ZERO));
            drop(tcp);
            sh.record(
                k,
                Direction::Mock,
                What::Fault {
                    fault: "refuse: TCP reset".into(),
                },
            );
            mark_ended(&sh, k, Instant::now());
            mark_done(&sh, k);
            return;
        }
        Accept::HttpError { status } => {
            let head = read_http_head(&mut tcp, sh.dur(2000)).await;
            sh.record(
                k,
                Direction::Mock,
                What::Connect {
                    accept: "http_error".into(),
                    path: head.as_deref().and_then(request_path),
                },
            );
            let resp = format!(
                "HTTP/1.1 {status} Mock Refused\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = tcp.write_all(resp.as_bytes()).await;
            let _ = tcp.shutdown().await;
            drop(tcp);
            sh.record(
                k,
                Direction::Mock,
                What::Fault {
                    fault: format!("refuse: HTTP {status}"),
                },
            );
            mark_ended(&sh, k, Instant::now());
            mark_done(&sh, k);
            return;
        }
        Accept::Silent => {
            sh.record(
                k,
                Direction::Mock,
                What::Connect {
                    accept: "silent".into(),
                    path: None,
                },
            );
            mark_done(&sh, k);
            let mut buf = [0u8; 4096];
            while let Ok(n) = tcp.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            sh.record(
                k,
                Direction::Mock,
                What::Disconnect {
                    by: "client".into(),
                },
            );
            mark_ended(&sh, k, Instant::now());
            return;
        }
        Accept::Websocket => {}
    }
    if script
        .steps
        .iter()
        .any(|s| matches!(s, Step::Drop(d) if d.reset))
    {
        #[allow(deprecated)] // linger 0 does not block: it makes the drop an RST
        let _ = tcp.set_linger(Some(Duration::ZERO));
    }
    let captured: Arc<StdMutex<(Option<String>, Option<String>)>> = Arc::default();
    let cap2 = captured.clone();
    #[allow(clippy::result_large_err)] // the error type is tungstenite's
    let callback = move |req: &Request, resp: Response| {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).to_owned());
        if let Ok(mut c) = cap2.lock() {
            *c = (Some(req.uri().to_string()), auth);
        }
        Ok(resp)
    };
    // The upgrade must complete within 2 s × the time scale; like every deadline, the
    // mock keeps watching for an extension before it gives the connection up (a client
    // descheduled during its handshake is late, not broken).
    let started = Instant::now();
    let limit = sh.dur(2000).max(Duration::from_millis(200));
    let mut handshake = std::pin::pin!(tokio_tungstenite::accept_hdr_async(tcp, callback));
    let upgraded = match timeout(limit, &mut handshake).await {
        Err(_) => {
            let ext = sh.extension(started);
            let r = timeout(ext, &mut handshake).await;
            if r.is_ok() {
                sh.note(
                    k,
                    format!(
                        "the WebSocket handshake took {:.1} ms (limit {} ms)",
                        ms(started.elapsed()),
                        limit.as_millis()
                    ),
                );
            }
            r
        }
        done => done,
    };
    let ws = match upgraded {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            sh.note(k, format!("WebSocket handshake failed: {e}"));
            mark_ended(&sh, k, Instant::now());
            mark_done(&sh, k);
            return;
        }
        Err(_) => {
            sh.note(k, "WebSocket handshake timed out");
            mark_ended(&sh, k, Instant::now());
            mark_done(&sh, k);
            return;
        }
    };
    let (path, header_token) = captured.lock().map(|c| c.clone()).unwrap_or((None, None));
    sh.record(
        k,
        Direction::Mock,
        What::Connect {
            accept: if scripted {
                "websocket".into()
            } else {
                "websocket, unscripted".into()
            },
            path: path.clone(),
        },
    );
    if let Some(p) = &path
        && let Some((_, q)) = p.split_once('?')
        && q.split('&').any(|kv| {
            let key = kv.split('=').next().unwrap_or("").to_ascii_lowercase();
            key.contains("token") || key == "auth" || key == "authorization"
        })
    {
        sh.violate(
            Some(k),
            reqs::TOKEN,
            "token",
            format!("the token travelled in the URL query ({p}); tokens go in hello or a header"),
        );
    }
    if let Ok(mut st) = state.lock() {
        st.header_token = header_token;
    }
    let (sink, stream) = ws.split();
    let sink = Arc::new(AsyncMutex::new(Some(sink)));
    let (tx, rx) = watch::channel(0u64);
    let stalled = Arc::new(AtomicBool::new(false));
    let reader = {
        let sh = sh.clone();
        let state = state.clone();
        let sink = sink.clone();
        let stalled = stalled.clone();
        let script = script.clone();
        tokio::spawn(read_loop(sh, k, stream, state, sink, tx, stalled, script))
    };
    sh.lock().tasks.push(reader.abort_handle());
    let mut conn = Conn {
        sh: sh.clone(),
        k,
        sink,
        state,
        rx,
        stalled,
        reader: Some(reader),
        sent: Vec::new(),
        last_ping: None,
        pings: 0,
        step_index: 0,
        listened_at: Instant::now(),
    };
    conn.play(&script, scripted).await;
    mark_done(&sh, k);
}

async fn read_http_head(tcp: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + limit;
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        match timeout_at(deadline, tcp.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

fn request_path(head: &str) -> Option<String> {
    head.lines()
        .next()?
        .split_whitespace()
        .nth(1)
        .map(str::to_owned)
}

#[allow(clippy::too_many_arguments)]
async fn read_loop(
    sh: Arc<Shared>,
    k: u32,
    mut stream: futures_util::stream::SplitStream<WebSocketStream<TcpStream>>,
    state: Arc<StdMutex<ConnState>>,
    sink: Arc<AsyncMutex<Option<Sink>>>,
    tx: watch::Sender<u64>,
    stalled: Arc<AtomicBool>,
    script: Connection,
) {
    let mut first = true;
    while let Some(item) = stream.next().await {
        // When the frame arrived: the time every judgment of it uses.
        let at = Instant::now();
        let msg = match item {
            Ok(m) => m,
            Err(e) => {
                sh.note(k, format!("read error: {e}"));
                break;
            }
        };
        match msg {
            Message::Text(t) => {
                let text = t.as_str().to_owned();
                sh.record(k, Direction::In, What::Text { text: text.clone() });
                check_limits(&sh, k, &state, text.len(), at);
                if let Some(name) = crate::validate::duplicate_member(&text) {
                    sh.violate(
                        Some(k),
                        reqs::DUPLICATE_MEMBERS,
                        "client_message",
                        format!("the client sent a JSON object with the member {name:?} twice"),
                    );
                }
                match decode_client_message(text.as_bytes(), 1 << 20) {
                    Ok(m) => {
                        on_message(&sh, k, &state, &sink, &stalled, &script, m, first, at).await;
                    }
                    Err(e) => sh.violate(
                        Some(k),
                        reqs::CLIENT_SCHEMA,
                        "client_message",
                        format!("the client sent an invalid message: {e}"),
                    ),
                }
                first = false;
            }
            Message::Binary(b) => {
                sh.record(k, Direction::In, What::Binary { hex: hex(&b) });
                sh.violate(
                    Some(k),
                    reqs::CLIENT_INPUT,
                    "client_message",
                    "the client sent a binary frame; Runwire uses text frames only",
                );
                first = false;
            }
            Message::Close(cf) => {
                let (code, reason) = match &cf {
                    Some(f) => (Some(u16::from(f.code)), f.reason.as_str().to_owned()),
                    None => (None, String::new()),
                };
                // The WebSocket layer replaces a code it does not accept (the reserved
                // 1004-1006 and 1015, codes outside 1000-4999; also 1014) by 1002
                // "Protocol violation" before handing the frame over.
                let replaced = code == Some(1002) && reason == "Protocol violation";
                sh.record(k, Direction::In, What::Close { code, reason });
                if replaced {
                    sh.violate(
                        Some(k),
                        reqs::CLOSE_SENDABLE,
                        "close_code",
                        "the client sent a close code the WebSocket layer refuses to accept \
                         (a reserved code 1004-1006 or 1015, or one outside 1000-4999; or \
                         1014, which no client sends: RW-CLOSE-8)",
                    );
                } else if let Some(c) = code
                    && !CloseCode(c).is_sendable()
                {
                    sh.violate(
                        Some(k),
                        reqs::CLOSE_SENDABLE,
                        "close_code",
                        format!("the client sent close code {c}, which must never go on the wire"),
                    );
                }
                if let Ok(mut st) = state.lock()
                    && st.closed.is_none()
                    && !st.mock_ended
                {
                    st.closed = Some((at, code));
                }
                tx.send_modify(|v| *v += 1);
            }
            _ => {}
        }
        tx.send_modify(|v| *v += 1);
    }
    let now = Instant::now();
    let by_mock = {
        let mut st = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if st.closed.is_none() && !st.mock_ended {
            st.closed = Some((now, None));
        }
        st.mock_ended
    };
    if !by_mock {
        sh.record(
            k,
            Direction::Mock,
            What::Disconnect {
                by: "client".into(),
            },
        );
        mark_ended(&sh, k, now);
    }
    tx.send_modify(|v| *v += 1);
}

/// `RW-LIMIT-5`: once `welcome` announced its limits, every client frame must fit
/// `max_frame_bytes` and the client's messages must fit a token bucket of capacity and
/// refill rate `max_messages_per_second` (the server's rule, `RW-LIMIT-4`).
///
/// The bucket is a timing judgment: messages the client spaced correctly arrive
/// bunched when this process was descheduled while they were on their way. A message
/// that finds the bucket empty came `(1 - tokens) / rate` too early; that margin is
/// judged against the lateness measured over the bucket's refill window (1 s).
fn check_limits(
    sh: &Arc<Shared>,
    k: u32,
    state: &Arc<StdMutex<ConnState>>,
    len: usize,
    at: Instant,
) {
    let mut st = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some((max_frame, rate)) = st.limits else {
        return;
    };
    let mut too_big = None;
    if len as u64 > max_frame {
        too_big = Some(format!(
            "the client sent a {len}-byte frame; welcome announced max_frame_bytes {max_frame}"
        ));
    }
    let mut too_early = None;
    if let Some((tokens, last)) = st.bucket {
        let cap = rate as f64;
        let tokens = (tokens + at.saturating_duration_since(last).as_secs_f64() * cap).min(cap);
        if tokens < 1.0 {
            too_early = Some(Duration::from_secs_f64((1.0 - tokens) / cap.max(1.0)));
            st.bucket = Some((tokens, at));
        } else {
            st.bucket = Some((tokens - 1.0, at));
        }
    }
    drop(st);
    if let Some(p) = too_big {
        sh.violate(Some(k), reqs::CLIENT_LIMITS, "limits", p);
    }
    if let Some(early) = too_early {
        let from = at.checked_sub(Duration::from_secs(1)).unwrap_or(at);
        sh.violate_timing(
            Some(k),
            reqs::CLIENT_LIMITS,
            "limits",
            format!(
                "the client sent messages faster than the announced max_messages_per_second \
                 {rate} allows (token bucket empty: this message came {:.1} ms before the \
                 bucket held a token)",
                ms(early)
            ),
            TimingMiss::new(early, from, at),
        );
    }
}

#[allow(clippy::too_many_arguments)]
async fn on_message(
    sh: &Arc<Shared>,
    k: u32,
    state: &Arc<StdMutex<ConnState>>,
    sink: &Arc<AsyncMutex<Option<Sink>>>,
    stalled: &AtomicBool,
    script: &Connection,
    m: ClientMessage,
    first: bool,
    at: Instant,
) {
    let is_hello = matches!(m, ClientMessage::Hello(_));
    if first && !is_hello {
        sh.violate(
            Some(k),
            reqs::HELLO_FIRST,
            "hello",
            format!(
                "the first client message was {:?}, not hello",
                m.message_type()
            ),
        );
    }
    let had_hello = state.lock().map(|s| s.hello.is_some()).unwrap_or(false);
    if is_hello && had_hello {
        sh.violate(
            Some(k),
            reqs::HELLO_FIRST,
            "hello",
            "the client sent a second hello on one connection",
        );
    }
    let subs: Vec<_> = match &m {
        ClientMessage::Hello(h) => h.subscriptions.clone(),
        ClientMessage::Subscribe(s) => s.subscriptions.clone(),
        _ => Vec::new(),
    };
    for s in subs {
        let run = s.run_id.as_str().to_owned();
        let epoch = s.epoch.as_ref().map(|e| e.as_str().to_owned());
        if script.hello.not_subscribed.contains(&run) {
            sh.violate(
                Some(k),
                reqs::SUBSCRIBE,
                "subscribe",
                format!(
                    "the client asked for run {run}, which it must leave out (its subscription \
                     failed with retryable: false)"
                ),
            );
        }
        if s.after_seq.unwrap_or(0) > 0 && epoch.is_none() {
            sh.violate(
                Some(k),
                reqs::CURSOR_EPOCH,
                "cursor",
                format!(
                    "run {run}: the client resumed after_seq {} without the cursor's epoch",
                    s.after_seq.unwrap_or(0)
                ),
            );
        }
        let fresh = state
            .lock()
            .map(|mut st| {
                st.latest.insert(run.clone(), (s.after_seq, epoch.clone()));
                if st.requested.contains_key(&run) {
                    false
                } else {
                    st.requested
                        .insert(run.clone(), (s.after_seq, epoch.clone()));
                    st.requested_at.insert(run.clone(), at);
                    true
                }
            })
            .unwrap_or(false);
        if !fresh {
            continue;
        }
        for cur in script.hello.cursors.iter().filter(|c| c.run == run) {
            let req = cur.requirement.as_deref().unwrap_or(reqs::CURSOR);
            let got = s.after_seq.unwrap_or(0);
            if got != cur.after_seq {
                sh.violate(
                    Some(k),
                    req,
                    "cursor",
                    format!(
                        "run {run}: the client resumed after_seq {got}; expected {} (the last \
                         seq it delivered)",
                        cur.after_seq
                    ),
                );
            }
            if let Some(e) = &cur.epoch
                && epoch.as_ref() != Some(e)
            {
                sh.violate(
                    Some(k),
                    req,
                    "cursor",
                    format!(
                        "run {run}: the client sent epoch {:?}; expected {e:?}",
                        epoch.as_deref().unwrap_or("(none)")
                    ),
                );
            }
        }
    }
    let answer = match &m {
        ClientMessage::Ping(p) => Some(json!({"type": "pong", "id": p.id})),
        ClientMessage::Unsubscribe(u) => {
            let mut st = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for r in &u.run_ids {
                st.latest.remove(r.as_str());
            }
            drop(st);
            Some(Value::Array(
                u.run_ids
                    .iter()
                    .map(|r| json!({"type": "unsubscribed", "run_id": r}))
                    .collect(),
            ))
        }
        _ => None,
    };
    if let Ok(mut st) = state.lock() {
        if let ClientMessage::Hello(h) = &m
            && st.hello.is_none()
        {
            st.hello = Some(h.clone());
            st.hello_at = Some(at);
        }
        st.msgs.push((at, m));
    }
    if let Some(answer) = answer
        && !stalled.load(Ordering::SeqCst)
    {
        let frames = match answer {
            Value::Array(a) => a,
            v => vec![v],
        };
        let mut g = sink.lock().await;
        if let Some(s) = g.as_mut() {
            for f in frames {
                let text = f.to_string();
                sh.record(k, Direction::Out, What::Text { text: text.clone() });
                let _ = s.send(Message::text(text)).await;
            }
        }
    }
}

struct Conn {
    sh: Arc<Shared>,
    k: u32,
    sink: Arc<AsyncMutex<Option<Sink>>>,
    state: Arc<StdMutex<ConnState>>,
    rx: watch::Receiver<u64>,
    stalled: Arc<AtomicBool>,
    reader: Option<tokio::task::JoinHandle<()>>,
    sent: Vec<Message>,
    last_ping: Option<(String, Instant)>,
    pings: u32,
    step_index: usize,
    /// When a step last finished waiting on the client (the hello, an await step,
    /// a silence window): an `expect_silence` window opens here, so a reply to
    /// what the mock sent since then counts however fast the client answered.
    listened_at: Instant,
}

enum Waited<T> {
    Found(T),
    Closed,
    Timeout,
}

/// The lateness measured over an interval: what the machine may have added to a time
/// the mock measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lateness {
    /// The worst lateness of the kit's own timers (the probe).
    pub(crate) timers: Duration,
    /// How long the kit's runtime threads waited for a CPU.
    pub(crate) kit_waited: Duration,
    /// How long the client's process waited for a CPU (zero for an in-process client,
    /// whose waits are the kit's, or where the kernel does not say).
    pub(crate) client_waited: Duration,
}

impl Lateness {
    /// The most the machine may have added: the kit may have noticed late, and both
    /// the kit and the client may have been descheduled (an upper bound: a stall can
    /// show in more than one of them).
    pub(crate) fn total(self) -> Duration {
        self.timers + self.kit_waited + self.client_waited
    }

    /// "the kit's timers ran up to 3.1 ms late, …": for messages.
    fn describe(self) -> String {
        let mut s = format!("the kit's timers ran up to {:.1} ms late", ms(self.timers));
        if !self.kit_waited.is_zero() {
            s.push_str(&format!(
                ", its threads waited {:.1} ms for a CPU",
                ms(self.kit_waited)
            ));
        }
        if !self.client_waited.is_zero() {
            s.push_str(&format!(
                ", the client's process waited {:.1} ms for a CPU",
                ms(self.client_waited)
            ));
        }
        s.push_str(" meanwhile");
        s
    }
}

/// What a "within W" wait saw ([`Conn::wait_timed`]).
enum Timed<T> {
    /// It happened in time.
    InTime(T),
    /// It happened at `at`, `by` after the deadline (during the extension).
    Late { value: T, by: Duration, at: Instant },
    /// The connection ended before the deadline without it.
    Closed,
    /// It did not happen by the deadline nor during the `watched` time after it (the
    /// whole extension, or until the connection ended: `closed`).
    Missing { watched: Duration, closed: bool },
}

impl<T> Timed<T> {
    /// The value, in time or late.
    fn value(self) -> Option<T> {
        match self {
            Self::InTime(v) | Self::Late { value: v, .. } => Some(v),
            Self::Closed | Self::Missing { .. } => None,
        }
    }
}

impl Conn {
    fn st(&self) -> std::sync::MutexGuard<'_, ConnState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn wait_for<T>(
        &mut self,
        deadline: Instant,
        mut f: impl FnMut(&mut ConnState) -> Option<T>,
    ) -> Waited<T> {
        loop {
            self.rx.borrow_and_update();
            {
                let mut st = self.st();
                if let Some(v) = f(&mut st) {
                    return Waited::Found(v);
                }
                if st.closed.is_some() || st.mock_ended {
                    return Waited::Closed;
                }
            }
            match timeout_at(deadline, self.rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    // The reader ended: one last look.
                    let mut st = self.st();
                    return match f(&mut st) {
                        Some(v) => Waited::Found(v),
                        None => Waited::Closed,
                    };
                }
                Err(_) => {
                    let mut st = self.st();
                    return match f(&mut st) {
                        Some(v) => Waited::Found(v),
                        None => Waited::Timeout,
                    };
                }
            }
        }
    }

    /// Waits for something that must happen by `deadline` (`f` returns it with the
    /// time it happened). When the deadline passes without it, keeps watching for
    /// [`Shared::extension`] measured from `from`, so that a late arrival is judged by
    /// how late it came, and a missing one by the whole time watched.
    async fn wait_timed<T>(
        &mut self,
        from: Instant,
        deadline: Instant,
        mut f: impl FnMut(&mut ConnState) -> Option<(T, Instant)>,
    ) -> Timed<T> {
        let (value, at) = match self.wait_for(deadline, &mut f).await {
            Waited::Found(x) => x,
            Waited::Closed => return Timed::Closed,
            Waited::Timeout => {
                let ext = self.sh.extension(from);
                match self.wait_for(deadline + ext, &mut f).await {
                    Waited::Found(x) => x,
                    Waited::Closed => {
                        let end = self
                            .st()
                            .closed
                            .map_or_else(Instant::now, |c| c.0)
                            .max(deadline);
                        return Timed::Missing {
                            watched: end.saturating_duration_since(deadline).min(ext),
                            closed: true,
                        };
                    }
                    Waited::Timeout => {
                        return Timed::Missing {
                            watched: ext,
                            closed: false,
                        };
                    }
                }
            }
        };
        if at <= deadline {
            Timed::InTime(value)
        } else {
            Timed::Late {
                value,
                by: at.saturating_duration_since(deadline),
                at,
            }
        }
    }

    /// Records the violation of a "within W" judgment that came late or not at all:
    /// `what` names what was expected ("no pong for ping \"p-1\" within 300 ms").
    fn violate_within<T>(
        &self,
        requirement: &str,
        expectation: &str,
        what: &str,
        timed: &Timed<T>,
        from: Instant,
    ) {
        let now = Instant::now();
        match timed {
            Timed::Late { by, at, .. } => self.sh.violate_timing(
                Some(self.k),
                requirement,
                expectation,
                format!("{what}: it came {:.1} ms late", ms(*by)),
                TimingMiss::new(*by, from, *at),
            ),
            Timed::Missing { watched, closed } => self.sh.violate_timing(
                Some(self.k),
                requirement,
                expectation,
                if *closed {
                    format!(
                        "{what}, nor in the {:.0} ms after that before the connection ended",
                        ms(*watched)
                    )
                } else {
                    format!(
                        "{what}, nor in the {:.0} ms watched after that",
                        ms(*watched)
                    )
                },
                TimingMiss::new(*watched, from, now),
            ),
            Timed::InTime(_) | Timed::Closed => {}
        }
    }

    async fn send(&mut self, msg: Message) -> bool {
        let what = match &msg {
            Message::Text(t) => What::Text {
                text: t.as_str().to_owned(),
            },
            Message::Binary(b) => What::Binary { hex: hex(b) },
            Message::Frame(f) => What::Note {
                text: format!("raw text frame, payload hex {}", hex(f.payload())),
            },
            _ => What::Note {
                text: "frame".into(),
            },
        };
        let mut g = self.sink.lock().await;
        let Some(s) = g.as_mut() else {
            drop(g);
            self.sh
                .note(self.k, "connection already closed: frame not sent");
            return false;
        };
        self.sh.record(self.k, Direction::Out, what);
        match s.send(msg.clone()).await {
            Ok(()) => {
                drop(g);
                self.sent.push(msg);
                true
            }
            Err(e) => {
                drop(g);
                self.sh.note(self.k, format!("send failed: {e}"));
                false
            }
        }
    }

    async fn send_json(&mut self, v: &Value) -> bool {
        self.send(Message::text(v.to_string())).await
    }

    /// Ends the connection from the mock side, without a close frame.
    async fn drop_connection(&mut self, fault: String) {
        self.st().mock_ended = true;
        self.sh
            .record(self.k, Direction::Mock, What::Fault { fault });
        if let Some(r) = self.reader.take() {
            r.abort();
            let _ = r.await;
        }
        let _ = self.sink.lock().await.take();
        mark_ended(&self.sh, self.k, Instant::now());
        self.sh.record(
            self.k,
            Direction::Mock,
            What::Disconnect { by: "mock".into() },
        );
    }

    fn requirement<'a>(&'a self, r: &'a Option<String>, default: &'a str) -> &'a str {
        r.as_deref().unwrap_or(default)
    }

    async fn play(&mut self, script: &Connection, scripted: bool) {
        let sh = self.sh.clone();
        let k = self.k;
        // Every connection begins with the client's hello.
        let within = sh.dur(script.hello.within_ms.unwrap_or(1000));
        let start = Instant::now();
        let timed = self
            .wait_timed(start, start + within, |st| {
                Some((st.hello.clone()?, st.hello_at.unwrap_or_else(Instant::now)))
            })
            .await;
        if scripted {
            self.violate_within(
                reqs::HELLO_FIRST,
                "hello",
                &format!("no hello within {} ms of the upgrade", within.as_millis()),
                &timed,
                start,
            );
        }
        let hello = match timed {
            Timed::InTime(h) | Timed::Late { value: h, .. } => h,
            Timed::Closed => {
                if scripted && !script.steps.is_empty() {
                    sh.violate(
                        Some(k),
                        reqs::HELLO_FIRST,
                        "hello",
                        "the client ended the connection without sending hello",
                    );
                }
                return;
            }
            Timed::Missing { .. } => return,
        };
        self.listened_at = Instant::now();
        if !scripted {
            return;
        }
        for v in &script.hello.versions_include {
            if !hello.versions.contains(v) {
                sh.violate(
                    Some(k),
                    reqs::HELLO_VERSIONS,
                    "hello",
                    format!("hello.versions {:?} does not include {v:?}", hello.versions),
                );
            }
        }
        if let Some(tok) = &script.hello.token {
            let header = self.st().header_token.clone();
            let ok = hello.token.as_ref() == Some(tok) || header.as_ref() == Some(tok);
            if !ok {
                // A token in hello or the header, but not this attempt's: the client did
                // not ask its token provider again (RW-AUTH-9). No token there at all is a
                // token that did not travel where it must (RW-AUTH-1).
                let tokens = &sh.fixture.client.tokens;
                let presented = hello.token.as_ref().or(header.as_ref());
                let (req, why) = match presented {
                    Some(p) if !tokens.is_empty() => (
                        reqs::TOKEN_FRESH,
                        if tokens.iter().any(|t| t == p) {
                            " (a stale token: the provider's answer for another attempt; the \
                             provider is asked before every connection attempt)"
                        } else {
                            " (the provider is asked before every connection attempt)"
                        },
                    ),
                    _ => (reqs::TOKEN, ""),
                };
                sh.violate(
                    Some(k),
                    req,
                    "token",
                    format!(
                        "expected token {tok:?} in hello.token or an Authorization header; got \
                         hello.token {:?}, header {:?}{why}",
                        hello.token, header
                    ),
                );
            }
        }
        for (i, step) in script.steps.iter().enumerate() {
            self.step_index = i;
            if let Ok(mut st) = sh.st.lock()
                && let Some(c) = st.conns.get_mut((k - 1) as usize)
            {
                c.step = Some(i);
            }
            self.run_step(step, &hello).await;
            if matches!(
                step,
                Step::Subscribed(_)
                    | Step::AwaitPong(_)
                    | Step::AwaitSubscribe(_)
                    | Step::AwaitMessage(_)
                    | Step::AwaitClose(_)
                    | Step::ExpectSilence(_)
            ) {
                self.listened_at = Instant::now();
            }
        }
    }

    fn resolve_epoch(&self, run: &str, epoch: &Option<String>) -> String {
        epoch.clone().unwrap_or_else(|| self.sh.current_epoch(run))
    }

    fn event_values(&self, s: &EventsStep) -> Vec<Value> {
        let epoch = self.resolve_epoch(&s.run, &s.epoch);
        s.selected()
            .into_iter()
            .filter_map(|q| self.sh.logs.wire(&s.run, &epoch, q).cloned())
            .collect()
    }

    async fn await_request(
        &mut self,
        run: &str,
        within_ms: Option<u64>,
    ) -> Option<(Option<u64>, Option<String>)> {
        let within = self.sh.dur(within_ms.unwrap_or(1000));
        let start = Instant::now();
        let r = run.to_owned();
        let timed = self
            .wait_timed(start, start + within, |st| {
                let v = st.requested.get(&r).cloned()?;
                Some((
                    v,
                    st.requested_at
                        .get(&r)
                        .copied()
                        .unwrap_or_else(Instant::now),
                ))
            })
            .await;
        self.violate_within(
            reqs::SUBSCRIBE,
            "subscribe",
            &format!(
                "the client did not subscribe to run {run} within {} ms",
                within.as_millis()
            ),
            &timed,
            start,
        );
        if matches!(timed, Timed::Closed) {
            self.sh.violate(
                Some(self.k),
                reqs::SUBSCRIBE,
                "subscribe",
                format!("the connection ended before the client subscribed to run {run}"),
            );
        }
        timed.value()
    }

    #[allow(clippy::too_many_lines)]
    async fn run_step(&mut self, step: &Step, hello: &Hello) {
        let sh = self.sh.clone();
        let k = self.k;
        match step {
            Step::Welcome(w) => {
                let server = sh.fixture.server_versions();
                let server_refs: Vec<&str> = server.iter().map(String::as_str).collect();
                let version = w.version.clone().unwrap_or_else(|| {
                    negotiate_version(&hello.versions, &server_refs)
                        .or(server_refs.first().copied())
                        .unwrap_or("1.0")
                        .to_owned()
                });
                let lim = w.limits.clone().unwrap_or_default();
                let frame_limit = lim
                    .max_frame_bytes
                    .unwrap_or(u64::from(defaults::MAX_FRAME_BYTES));
                let rate_limit = lim
                    .max_messages_per_second
                    .unwrap_or(u64::from(defaults::MAX_MESSAGES_PER_SECOND));
                {
                    // The server's bucket is full when the connection opens and every
                    // message so far (the hello) took a token from it (RW-LIMIT-4).
                    let mut st = self.st();
                    let used = st.msgs.len() as f64;
                    st.limits = Some((frame_limit, rate_limit));
                    st.bucket = Some(((rate_limit as f64 - used).max(0.0), Instant::now()));
                }
                let mut v = json!({
                    "type": "welcome",
                    "version": version,
                    "session_id": w.session_id.clone().unwrap_or_else(|| format!("mock-session-{k}")),
                    "heartbeat_interval_ms": sh.wire_ms(w.heartbeat_interval_ms.unwrap_or(2000)),
                    "pong_timeout_ms": sh.wire_ms(w.pong_timeout_ms.unwrap_or(1000)),
                    "batch_window_ms": sh.wire_ms(w.batch_window_ms.unwrap_or(0)),
                    "replay_window_events": w.replay_window_events.unwrap_or(1000),
                    "limits": {
                        "max_frame_bytes": frame_limit,
                        "max_event_bytes": lim.max_event_bytes.unwrap_or(u64::from(defaults::MAX_EVENT_BYTES)),
                        "max_subscriptions": lim.max_subscriptions.unwrap_or(u64::from(defaults::MAX_SUBSCRIPTIONS)),
                        "max_messages_per_second": rate_limit,
                    },
                    "server": { "name": "runwire-mock", "version": env!("CARGO_PKG_VERSION") },
                });
                merge(&mut v, w.extra.as_ref());
                self.send_json(&v).await;
            }
            Step::Subscribed(s) => {
                if self.await_request(&s.run, s.within_ms).await.is_none() {
                    return;
                }
                let after = self.st().latest.get(&s.run).and_then(|l| l.0);
                let epoch = self.resolve_epoch(&s.run, &s.epoch);
                let after_seq = s.after_seq.unwrap_or(after.unwrap_or(0));
                let head = s.head_seq.unwrap_or(after_seq);
                sh.lock().epochs.insert(s.run.clone(), epoch.clone());
                let v = json!({
                    "type": "subscribed",
                    "run_id": s.run,
                    "epoch": epoch,
                    "after_seq": after_seq,
                    "head_seq": head,
                });
                self.send_json(&v).await;
            }
            Step::Reset(s) => {
                if self.await_request(&s.run, s.within_ms).await.is_none() {
                    return;
                }
                let epoch = self.resolve_epoch(&s.run, &s.epoch);
                sh.lock().epochs.insert(s.run.clone(), epoch.clone());
                let snapshot = sh
                    .logs
                    .snapshot(&s.run, &epoch, s.as_of_seq)
                    .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
                    .unwrap_or(Value::Null);
                let v = json!({
                    "type": "reset",
                    "run_id": s.run,
                    "epoch": epoch,
                    "reason": s.reason.as_str(),
                    "snapshot": snapshot,
                });
                self.send_json(&v).await;
            }
            Step::Events(s) => {
                for ev in self.event_values(s) {
                    if !self.send_json(&json!({"type": "event", "event": ev})).await {
                        break;
                    }
                }
            }
            Step::Batch(s) => {
                let events = self.event_values(s);
                self.send_json(&json!({"type": "batch", "events": events}))
                    .await;
            }
            Step::DropMidBatch(s) => {
                let events = self.event_values(s);
                let text = json!({"type": "batch", "events": events}).to_string();
                let mut cut = text.len() / 2;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                let part = text.as_bytes()[..cut].to_vec();
                let mut g = self.sink.lock().await;
                if let Some(sink) = g.as_mut() {
                    sh.record(
                        k,
                        Direction::Out,
                        What::Text {
                            text: format!("{}…", &text[..cut]),
                        },
                    );
                    let frame = Frame::message(part, OpCode::Data(Data::Text), false);
                    let _ = sink.send(Message::Frame(frame)).await;
                }
                drop(g);
                self.drop_connection(format!(
                    "drop mid-batch: sent {cut} of {} bytes as a non-final fragment, then TCP close",
                    text.len()
                ))
                .await;
            }
            Step::Reorder(s) => {
                let mut events = self.event_values(s);
                let mut rng = ChaCha8Rng::seed_from_u64(
                    sh.seed ^ (u64::from(k) << 32) ^ (self.step_index as u64).rotate_left(48),
                );
                let original: Vec<Value> = events.clone();
                events.shuffle(&mut rng);
                if events == original {
                    events.rotate_left(1);
                }
                let order: Vec<String> = events
                    .iter()
                    .map(|e| e.get("seq").map(ToString::to_string).unwrap_or_default())
                    .collect();
                sh.record(
                    k,
                    Direction::Mock,
                    What::Fault {
                        fault: format!("reorder: seqs in order {}", order.join(",")),
                    },
                );
                for ev in events {
                    if !self.send_json(&json!({"type": "event", "event": ev})).await {
                        break;
                    }
                }
            }
            Step::Ping(p) => {
                self.pings += 1;
                let id =
                    p.id.clone()
                        .unwrap_or_else(|| format!("p-{k}-{}", self.pings));
                self.send_json(&json!({"type": "ping", "id": id})).await;
                self.last_ping = Some((id, Instant::now()));
            }
            Step::Error(e) => {
                let code = ErrorCode::parse(&e.code);
                let known = !matches!(code, ErrorCode::Other(_));
                let retryable = e
                    .retryable
                    .unwrap_or(if known { code.retryable() } else { true });
                let close_code = match e.close_code {
                    Some(0) => None,
                    Some(c) => Some(c),
                    None => code.close_code().map(|c| c.0),
                };
                let mut v = Map::new();
                v.insert("type".into(), json!("error"));
                v.insert("code".into(), json!(e.code));
                v.insert(
                    "message".into(),
                    json!(
                        e.message
                            .clone()
                            .unwrap_or_else(|| format!("mock error ({})", sh.fixture.id))
                    ),
                );
                v.insert("retryable".into(), json!(retryable));
                if let Some(ms) = e.retry_after_ms {
                    v.insert("retry_after_ms".into(), json!(sh.wire_ms(ms)));
                }
                if let Some(r) = &e.run {
                    v.insert("run_id".into(), json!(r));
                }
                if let Some(c) = close_code {
                    v.insert("close_code".into(), json!(c));
                }
                let supported = e.supported_versions.clone().or_else(|| {
                    (code == ErrorCode::UnsupportedVersion).then(|| sh.fixture.server_versions())
                });
                if let Some(s) = supported {
                    v.insert("supported_versions".into(), json!(s));
                }
                self.send_json(&Value::Object(v)).await;
            }
            Step::Frame(f) => {
                self.send_json(&Value::Object(f.json.clone())).await;
            }
            Step::Raw(r) => {
                let msg = match (&r.text, &r.text_hex, &r.binary_hex) {
                    (Some(t), _, _) => Message::text(t.clone()),
                    // A text frame whose payload need not be UTF-8: sent as a raw frame.
                    (None, Some(h), _) => Message::Frame(
                        tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
                            unhex(h),
                            tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                                tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
                            ),
                            true,
                        ),
                    ),
                    (None, None, Some(h)) => Message::binary(unhex(h)),
                    (None, None, None) => return,
                };
                self.send(msg).await;
            }
            Step::Repeat(r) => {
                let back = r.back.unwrap_or(1);
                match self
                    .sent
                    .len()
                    .checked_sub(back)
                    .map(|i| self.sent[i].clone())
                {
                    Some(m) => {
                        sh.record(
                            k,
                            Direction::Mock,
                            What::Fault {
                                fault: format!("duplicate: repeat frame {back} back"),
                            },
                        );
                        self.send(m).await;
                    }
                    None => sh.note(
                        k,
                        format!("repeat: this connection has sent fewer than {back} frames"),
                    ),
                }
            }
            Step::Drop(d) => {
                let fault = if d.reset {
                    "drop: TCP reset (RST), no close frame"
                } else {
                    "drop: TCP close (FIN), no close frame"
                };
                self.drop_connection(fault.into()).await;
            }
            Step::Close(c) => {
                let reason = c.reason.clone().unwrap_or_default();
                {
                    let mut g = self.sink.lock().await;
                    if let Some(s) = g.as_mut() {
                        sh.record(
                            k,
                            Direction::Out,
                            What::Close {
                                code: Some(c.code),
                                reason: reason.clone(),
                            },
                        );
                        self.state
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .mock_ended = true;
                        mark_ended(&sh, k, Instant::now());
                        let _ = s
                            .send(Message::Close(Some(CloseFrame {
                                code: WsCloseCode::from(c.code),
                                reason: reason.into(),
                            })))
                            .await;
                    }
                }
                // Give the client a moment to answer the close, then end the TCP connection.
                if let Some(r) = self.reader.take() {
                    let abort = r.abort_handle();
                    if timeout(sh.dur(1000).max(Duration::from_millis(100)), r)
                        .await
                        .is_err()
                    {
                        abort.abort();
                    }
                }
                let _ = self.sink.lock().await.take();
                sh.record(k, Direction::Mock, What::Disconnect { by: "mock".into() });
            }
            Step::Wait(w) => {
                sleep(sh.dur(w.ms)).await;
            }
            Step::Stall(w) => {
                sh.record(
                    k,
                    Direction::Mock,
                    What::Fault {
                        fault: format!("stall {} ms: nothing answered", sh.wire_ms(w.ms)),
                    },
                );
                self.stalled.store(true, Ordering::SeqCst);
                sleep(sh.dur(w.ms)).await;
                self.stalled.store(false, Ordering::SeqCst);
            }
            Step::Hang(_) => {
                sh.record(
                    k,
                    Direction::Mock,
                    What::Fault {
                        fault: "hang: never answer again".into(),
                    },
                );
                self.stalled.store(true, Ordering::SeqCst);
                let far = Instant::now() + Duration::from_secs(3600);
                let _ = self.wait_for(far, |_| None::<()>).await;
            }
            Step::AwaitPong(a) => {
                let (id, since) = match (&a.id, &self.last_ping) {
                    (Some(id), _) => (id.clone(), Instant::now()),
                    (None, Some((id, at))) => (id.clone(), *at),
                    (None, None) => return,
                };
                let within = sh.dur(a.within_ms.unwrap_or(500));
                let req = self.requirement(&a.requirement, reqs::PONG).to_owned();
                let timed = self
                    .wait_timed(since, since + within, |st| {
                        let start = st.consumed_pong;
                        let found = st.msgs[start..]
                            .iter()
                            .enumerate()
                            .find_map(|(i, (at, m))| match m {
                                ClientMessage::Pong(p) => Some((start + i, *at, p.id.clone())),
                                _ => None,
                            });
                        let (i, at, pid) = found?;
                        st.consumed_pong = i + 1;
                        Some((pid, at))
                    })
                    .await;
                self.violate_within(
                    &req,
                    "pong",
                    &format!("no pong for ping {id:?} within {} ms", within.as_millis()),
                    &timed,
                    since,
                );
                match timed {
                    Timed::InTime(pid) | Timed::Late { value: pid, .. } => {
                        if pid != id {
                            sh.violate(
                                Some(k),
                                &req,
                                "pong",
                                format!("the pong echoed id {pid:?}; the ping had id {id:?}"),
                            );
                        }
                    }
                    Timed::Closed => sh.violate(
                        Some(k),
                        &req,
                        "pong",
                        format!("the connection ended before a pong for ping {id:?}"),
                    ),
                    Timed::Missing { .. } => {}
                }
            }
            Step::AwaitSubscribe(a) => {
                let within = sh.dur(a.within_ms.unwrap_or(1000));
                let req = self.requirement(&a.requirement, reqs::GAP).to_owned();
                let run = a.run.clone();
                let start = Instant::now();
                let timed = self
                    .wait_timed(start, start + within, |st| {
                        let from = st.consumed_sub;
                        let found =
                            st.msgs[from..]
                                .iter()
                                .enumerate()
                                .find_map(|(i, (at, m))| match m {
                                    ClientMessage::Subscribe(s) => s
                                        .subscriptions
                                        .iter()
                                        .find(|r| r.run_id.as_str() == run)
                                        .map(|r| (from + i, r.clone(), *at)),
                                    _ => None,
                                });
                        let (i, r, at) = found?;
                        st.consumed_sub = i + 1;
                        Some((r, at))
                    })
                    .await;
                self.violate_within(
                    &req,
                    "resubscribe",
                    &format!(
                        "the client did not subscribe to run {} within {} ms",
                        a.run,
                        within.as_millis()
                    ),
                    &timed,
                    start,
                );
                match timed {
                    Timed::InTime(r) | Timed::Late { value: r, .. } => {
                        if let Some(want) = a.after_seq
                            && r.after_seq.unwrap_or(0) != want
                        {
                            sh.violate(
                                Some(k),
                                reqs::CURSOR,
                                "cursor",
                                format!(
                                    "run {}: the client resubscribed after_seq {}; expected {want}",
                                    a.run,
                                    r.after_seq.unwrap_or(0)
                                ),
                            );
                        }
                        if let Some(e) = &a.epoch
                            && r.epoch.as_ref().map(|x| x.as_str()) != Some(e.as_str())
                        {
                            sh.violate(
                                Some(k),
                                reqs::CURSOR,
                                "cursor",
                                format!(
                                    "run {}: the client resubscribed with epoch {:?}; expected {e:?}",
                                    a.run,
                                    r.epoch.as_ref().map(|x| x.as_str())
                                ),
                            );
                        }
                    }
                    Timed::Closed => sh.violate(
                        Some(k),
                        &req,
                        "resubscribe",
                        format!(
                            "the connection ended before the client resubscribed to run {}",
                            a.run
                        ),
                    ),
                    Timed::Missing { .. } => {}
                }
            }
            Step::AwaitMessage(a) => {
                let within = sh.dur(a.within_ms.unwrap_or(1000));
                let req = self
                    .requirement(&a.requirement, sh.fixture.primary_requirement())
                    .to_owned();
                let ty = a.message_type.clone();
                let start = Instant::now();
                let timed = self
                    .wait_timed(start, start + within, |st| {
                        let from = st.consumed_type;
                        let i = st.msgs[from..]
                            .iter()
                            .position(|(_, m)| m.message_type() == ty)?;
                        st.consumed_type = from + i + 1;
                        Some(((), st.msgs[from + i].0))
                    })
                    .await;
                let what = format!(
                    "no {} message from the client within {} ms",
                    a.message_type,
                    within.as_millis()
                );
                self.violate_within(&req, "await_message", &what, &timed, start);
                if matches!(timed, Timed::Closed) {
                    sh.violate(
                        Some(k),
                        &req,
                        "await_message",
                        format!("{what}: the connection ended first"),
                    );
                }
            }
            Step::AwaitClose(a) => {
                let start = Instant::now();
                let within = sh.dur(a.within_ms.unwrap_or(1000));
                let req = self
                    .requirement(&a.requirement, sh.fixture.primary_requirement())
                    .to_owned();
                let timed = self
                    .wait_timed(start, start + within, |st| st.closed.map(|c| (c, c.0)))
                    .await;
                let what = format!(
                    "the client did not end the connection within {} ms",
                    within.as_millis()
                );
                self.violate_within(&req, "client_close", &what, &timed, start);
                let closed = match timed {
                    Timed::InTime(c) | Timed::Late { value: c, .. } => Some(c),
                    // The mock ended the connection itself: the client did not.
                    Timed::Closed => {
                        let c = self.st().closed;
                        if c.is_none() {
                            sh.violate(Some(k), &req, "client_close", what);
                        }
                        c
                    }
                    Timed::Missing { .. } => None,
                };
                match closed {
                    None => {}
                    Some((at, code)) => {
                        if let Some(min) = a.min_ms {
                            let min = sh.dur(min);
                            let after = at.saturating_duration_since(start);
                            if after < min {
                                // A lower bound: the client was early by `min - after`
                                // (a step that began late shortens `after`).
                                sh.violate_timing(
                                    Some(k),
                                    &req,
                                    "client_close",
                                    format!(
                                        "the client ended the connection after {:.1} ms; it \
                                         must wait at least {} ms",
                                        ms(after),
                                        min.as_millis()
                                    ),
                                    TimingMiss::new(min - after, start, at),
                                );
                            }
                        }
                        if let Some(want) = a.code
                            && code != Some(want)
                        {
                            let message = match code {
                                Some(c) => {
                                    format!("the client closed with code {c}; expected {want}")
                                }
                                None => format!(
                                    "the client ended the connection without a close code \
                                     (no close frame, or one without a code); expected close \
                                     code {want}"
                                ),
                            };
                            if a.unless_browser {
                                // Judged at the end, once the adapter's platform line is in.
                                if let Ok(mut st) = sh.st.lock() {
                                    st.unless_browser.push((k, req.clone(), message));
                                }
                            } else {
                                sh.violate(Some(k), &req, "client_close", message);
                            }
                        }
                    }
                }
            }
            Step::ExpectSilence(s) => {
                // The window opens where the mock last listened, not where this step
                // begins: a reply to a frame the mock sent in the steps before counts
                // however fast the client answered.
                let opened = self.listened_at;
                let start = Instant::now();
                let end = start + sh.dur(s.ms);
                sleep_until(end).await;
                let req = self
                    .requirement(&s.requirement, sh.fixture.primary_requirement())
                    .to_owned();
                let offending: Vec<(Instant, String)> = self
                    .st()
                    .msgs
                    .iter()
                    .filter(|(at, m)| {
                        *at >= opened
                            && *at <= end
                            && if s.types.is_empty() {
                                !matches!(m, ClientMessage::Ping(_) | ClientMessage::Pong(_))
                            } else {
                                s.types.iter().any(|t| t == m.message_type())
                            }
                    })
                    .map(|(at, m)| (*at, m.message_type().to_owned()))
                    .collect();
                // A message near the end of the window may lie inside it only because
                // the window ended late (the step started late, so it ends late too).
                // The margin is how far before the end the earliest message arrived.
                let deepest = offending
                    .iter()
                    .map(|(at, _)| end.saturating_duration_since(*at))
                    .max();
                if let Some(depth) = deepest {
                    let shown: Vec<String> = offending
                        .iter()
                        .map(|(at, t)| {
                            if *at >= start {
                                format!("{t} {:.1} ms into the window", ms(*at - start))
                            } else {
                                format!("{t} {:.1} ms before it began", ms(start - *at))
                            }
                        })
                        .collect();
                    sh.violate_timing(
                        Some(k),
                        &req,
                        "silence",
                        format!(
                            "expected no {} from the client since the mock last waited on \
                             it and for {} ms after; got {}",
                            if s.types.is_empty() {
                                "messages".to_owned()
                            } else {
                                s.types.join(" or ")
                            },
                            sh.wire_ms(s.ms),
                            shown.join(", ")
                        ),
                        TimingMiss::new(depth, start, end),
                    );
                }
            }
        }
    }
}

fn merge(v: &mut Value, extra: Option<&Map<String, Value>>) {
    if let (Value::Object(obj), Some(extra)) = (v, extra) {
        for (k, x) in extra {
            obj.insert(k.clone(), x.clone());
        }
    }
}

/// The address a mock listens on, resolved.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
