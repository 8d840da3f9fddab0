//! The mock server: accepts connections, plays each connection's script, records the
//! transcript and judges expectations as they happen. The parts: what the client
//! sends ([`inbound`]), a connection's script ([`conn`]) and its steps ([`steps`]).

mod conn;
mod inbound;
mod steps;

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
    /// The client's liveness budget on this connection once `welcome` was sent: the
    /// announced heartbeat interval plus the grace the client was configured with
    /// (`RW-HEART-5`).
    pub(crate) liveness_budget: Option<Duration>,
    /// When the mock sent each frame since `welcome` (the first entry).
    pub(crate) sent_since_welcome: Vec<Instant>,
    consumed_pong: usize,
    consumed_sub: usize,
    consumed_type: usize,
}

impl ConnState {
    /// The longest time the mock sent nothing on this connection between `welcome`
    /// and `at` (a frame sent after `at` does not end a silence): its length and its
    /// start. `None` before `welcome`.
    pub(crate) fn longest_silence_before(&self, at: Instant) -> Option<(Duration, Instant)> {
        let sent: Vec<Instant> = self
            .sent_since_welcome
            .iter()
            .copied()
            .filter(|t| *t <= at)
            .collect();
        let last = *sent.last()?;
        let mut best = (at.saturating_duration_since(last), last);
        for pair in sent.windows(2) {
            let gap = pair[1].saturating_duration_since(pair[0]);
            if gap > best.0 {
                best = (gap, pair[0]);
            }
        }
        Some(best)
    }

    /// When the client closed this connection after `welcome`: the close time, the
    /// client's liveness budget and the mock's longest silence before the close.
    fn close_after_silence(&self) -> Option<SilenceClose> {
        let (at, _) = self.closed?;
        let budget = self.liveness_budget?;
        let (silence, from) = self.longest_silence_before(at)?;
        Some(SilenceClose {
            at,
            budget,
            silence,
            from,
        })
    }
}

/// Locks a connection's state (a panicked holder's data is still good to read).
fn lock_state(state: &StdMutex<ConnState>) -> std::sync::MutexGuard<'_, ConnState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A client's close judged against the mock's own silence before it (`RW-HEART-5`):
/// a client that heard nothing for its liveness budget must close, so a close that
/// came after a silence of the mock's as long as the budget (a busy machine made the
/// mock late) shows nothing about the client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SilenceClose {
    /// When the client closed.
    at: Instant,
    /// Its liveness budget.
    budget: Duration,
    /// The mock's longest silence before `at`, since `welcome`.
    silence: Duration,
    /// Where that silence began.
    from: Instant,
}

impl SilenceClose {
    /// How much shorter than the budget the mock's silence was: the margin by which
    /// the close was early. Zero when the silence reached the budget.
    fn margin(self) -> Duration {
        self.budget.saturating_sub(self.silence)
    }

    fn describe(self) -> String {
        format!(
            "the mock's longest silence before the client closed was {:.1} ms, its \
             liveness budget {:.1} ms (RW-HEART-5)",
            ms(self.silence),
            ms(self.budget)
        )
    }
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
    /// Set when the client closed a connection after the mock's own silence had
    /// reached its liveness budget (`RW-HEART-5`, [`Shared::violate_closed`]): the
    /// number of violations recorded before. The ones recorded from then on (the
    /// reconnect, events never delivered, the exit) follow from a close the client
    /// had to make, so they are inconclusive too.
    pub(crate) explained_close: Option<usize>,
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

    /// Records that the client ended connection `conn` (its state `state`) while the
    /// script still waited on it. When the client closed after `welcome`, the
    /// judgment is a timing one: the close was early by how much the mock's own
    /// longest silence before it fell short of the client's liveness budget, and
    /// inconclusive when the measured lateness covers that (or the silence reached
    /// the budget: the client was right to close).
    pub(crate) fn violate_closed(
        &self,
        conn: u32,
        state: &StdMutex<ConnState>,
        requirement: &str,
        expectation: &str,
        message: String,
    ) {
        let close = lock_state(state).close_after_silence();
        if close.is_some() && self.close_explained(state).is_some() {
            self.mark_explained_close();
        }
        match close {
            Some(c) => self.violate_timing(
                Some(conn),
                requirement,
                expectation,
                format!("{message}; {}", c.describe()),
                TimingMiss::new(c.margin(), c.from, c.at),
            ),
            None => self.violate(Some(conn), requirement, expectation, message),
        }
    }

    /// Marks that the violations from now on follow from a close the mock's own
    /// silence explains (the first such close counts).
    fn mark_explained_close(&self) {
        let mut st = self.lock();
        let n = st.violations.len();
        st.explained_close.get_or_insert(n);
    }

    /// Whether the client's close of the connection with state `state` is explained by
    /// the mock's silence before it (see [`Self::violate_closed`]).
    fn close_explained(&self, state: &StdMutex<ConnState>) -> Option<SilenceClose> {
        let c = lock_state(state).close_after_silence()?;
        (c.margin() <= self.lateness(c.from, c.at).total()).then_some(c)
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

/// Judges connection `k`, which the fixture does not script (only `scripted` are). A
/// reconnect after a close that the mock's own silence explains (the client had to
/// close, `RW-HEART-5`, and then to reconnect) is inconclusive like that close.
fn extra_connection(sh: &Shared, k: u32, scripted: usize) {
    let req = sh
        .fixture
        .expect
        .extra_connection_requirement
        .clone()
        .unwrap_or_else(|| sh.fixture.primary_requirement().to_owned());
    let message = format!(
        "the client opened connection {k}, but the fixture scripts only {scripted}: it must \
         not connect again"
    );
    let previous = k
        .checked_sub(2)
        .and_then(|i| sh.lock().conns.get(i as usize).map(|c| c.state.clone()));
    let explained = previous.and_then(|st| sh.close_explained(&st));
    match explained {
        Some(c) => {
            sh.mark_explained_close();
            let message = format!(
                "{message} (after closing connection {} when {}: inconclusive)",
                k - 1,
                c.describe()
            );
            sh.record(
                k,
                Direction::Mock,
                What::Violation {
                    requirement: req.clone(),
                    message: message.clone(),
                },
            );
            let mut v = Violation::new(&req, "no_reconnect", message, Some(k));
            v.inconclusive = true;
            sh.lock().violations.push(v);
            sh.bump();
        }
        None => sh.violate(Some(k), &req, "no_reconnect", message),
    }
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
            extra_connection(&sh, k, scripted);
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
    tcp: TcpStream,
    script: Connection,
    state: Arc<StdMutex<ConnState>>,
    scripted: bool,
) {
    if scripted {
        note_reconnect_delay(&sh, k).await;
    }
    if script.accept != Accept::Websocket {
        refuse(&sh, k, tcp, &script.accept).await;
        return;
    }
    if script
        .steps
        .iter()
        .any(|s| matches!(s, Step::Drop(d) if d.reset))
    {
        #[allow(deprecated)] // linger 0 does not block: it makes the drop an RST
        let _ = tcp.set_linger(Some(Duration::ZERO));
    }
    let Some((ws, path, header_token)) = upgrade(&sh, k, tcp).await else {
        return;
    };
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
        tokio::spawn(inbound::read_loop(
            sh, k, stream, state, sink, tx, stalled, script,
        ))
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

/// Plays a connection the fixture refuses (`accept` other than `websocket`): a TCP
/// reset, an HTTP error, or silence until the client gives up.
async fn refuse(sh: &Shared, k: u32, mut tcp: TcpStream, accept: &Accept) {
    match accept {
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
            mark_ended(sh, k, Instant::now());
            mark_done(sh, k);
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
            mark_ended(sh, k, Instant::now());
            mark_done(sh, k);
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
            mark_done(sh, k);
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
            mark_ended(sh, k, Instant::now());
        }
        Accept::Websocket => {}
    }
}

/// Completes the WebSocket upgrade within its deadline (and the extension watched
/// after it); returns the socket with the request's path and bearer token, or `None`
/// (recorded, the connection marked ended) when the upgrade failed.
async fn upgrade(
    sh: &Shared,
    k: u32,
    tcp: TcpStream,
) -> Option<(WebSocketStream<TcpStream>, Option<String>, Option<String>)> {
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
            mark_ended(sh, k, Instant::now());
            mark_done(sh, k);
            return None;
        }
        Err(_) => {
            sh.note(k, "WebSocket handshake timed out");
            mark_ended(sh, k, Instant::now());
            mark_done(sh, k);
            return None;
        }
    };
    let (path, header_token) = captured.lock().map(|c| c.clone()).unwrap_or((None, None));
    Some((ws, path, header_token))
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

/// The address a mock listens on, resolved.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
