//! The Runwire scriptable mock server.
//!
//! A [`Fixture`] scripts what the mock does on each connection a client makes (frames,
//! faults, waits) and what it expects (hello contents, pongs, resume cursors, reconnect
//! delays, what the client delivered to its application). [`Mock`] plays a fixture on
//! a local port, optionally spawns the client's adapter (`docs/client-adapter.md`),
//! records a [`Transcript`] and returns a [`Verdict`] naming every violated
//! expectation with its requirement ID (`spec/protocol.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use runwire_mock::{Fixture, Mock, MockOptions};
//! let fixture = Fixture::from_path("fixtures/client/happy-path.json".as_ref())?;
//! let mut mock = Mock::start(fixture, MockOptions::default()).await?;
//! mock.spawn_adapter("runwire", &["client-adapter".into()])?;
//! let report = mock.finish().await;
//! println!("{}", report.verdict.render());
//! # Ok(()) }
//! ```
//!
//! The fixture format and the transcript format are documented in `docs/fixtures.md`.

mod engine;
pub mod fixture;
mod generate;
mod judge;
pub mod lateness;
mod reconnect;
pub mod reqs;
mod transcript;
mod validate;

use std::{
    ffi::OsString,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex as StdMutex},
    time::Duration,
};

pub use fixture::{Fixture, FixtureError, Level};
pub use generate::{LogData, Logs, SUPPORTED_TYPES};
pub use lateness::{LatenessSummary, Probe, RunQueueWait, TimingMiss};
pub use reconnect::{
    JITTER_FALSE_ALARM_PER_FIXTURE, JITTER_FALSE_ALARM_PER_RUN, JITTER_FIXTURES, jitter_tail,
};
pub use transcript::{Direction, Entry, Outcome, Transcript, Verdict, Violation, What};
pub use validate::duplicate_member;

use engine::{Shared, State};
use fixture::ExitExpect;
use rand::Rng;
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
    sync::{mpsc, oneshot, watch},
    time::{Instant, sleep_until, timeout},
};

/// The JSON Schema of the fixture format (`schema/tools/fixture.schema.json`).
pub fn fixture_schema() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(Fixture)).unwrap_or(Value::Null);
    if let Value::Object(obj) = &mut schema {
        obj.insert(
            "$id".into(),
            Value::String("https://runwire.dev/schema/tools/fixture.schema.json".into()),
        );
        obj.insert(
            "title".into(),
            Value::String("Runwire client fixture".into()),
        );
    }
    schema
}

/// Loads every `*.json` fixture of a directory, sorted by file name. The first
/// malformed fixture is an error.
pub fn load_dir(dir: &Path) -> Result<Vec<(PathBuf, Fixture)>, FixtureError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| FixtureError {
            file: dir.display().to_string(),
            pointer: String::new(),
            reason: format!("cannot read directory: {e}"),
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| Fixture::from_path(&p).map(|f| (p, f)))
        .collect()
}

/// Why a mock could not start or spawn its adapter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MockError {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// Spawning the adapter failed.
    #[error("cannot start the adapter {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The error.
        source: std::io::Error,
    },
    /// An adapter is already attached.
    #[error("an application is already attached to this mock")]
    AlreadyAttached,
}

/// How long the mock waits for a client's first connection by default
/// ([`MockOptions::wait_for_client`]): an adapter in an interpreted language on a
/// loaded machine takes seconds to start.
pub const DEFAULT_STARTUP_WAIT: Duration = Duration::from_secs(30);

/// How to run a fixture.
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Where to listen; port 0 picks a free port. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Every fixture duration is multiplied by this. Default 1.
    pub time_scale: f64,
    /// The seed; overrides the fixture's. When neither is set a random seed is drawn
    /// (and reported in the verdict and transcript).
    pub seed: Option<u64>,
    /// Receives every transcript entry as it happens (for live printing).
    pub live: Option<mpsc::UnboundedSender<Entry>>,
    /// How long the mock waits for the client's first connection, from the moment
    /// the adapter is spawned (or the in-process client attached, or the mock started
    /// when neither happens): the client's start-up. `None`:
    /// [`DEFAULT_STARTUP_WAIT`]. The fixture's deadline always counts from the first
    /// connection, so a slow start-up never eats the fixture's timers.
    pub wait_for_client: Option<Duration>,
    /// The lateness probe that timing judgments consult ([`lateness`]); `None` starts
    /// one for this mock.
    pub probe: Option<Probe>,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            time_scale: 1.0,
            seed: None,
            live: None,
            wait_for_client: None,
            probe: None,
        }
    }
}

/// The result of a fixture run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The judgement.
    pub verdict: Verdict,
    /// Everything that happened.
    pub transcript: Transcript,
    /// The JSON lines the application printed.
    pub app_lines: Vec<Value>,
    /// How the application ended: `Some(Some(code))` exited, `Some(None)` killed by
    /// a signal, `None` no application attached (or it never reported its end).
    pub exit: Option<Option<i32>>,
    /// The client's start-up: from spawning the adapter (attaching the in-process
    /// client, or starting the mock) to the first accepted connection; `None` when no
    /// connection came. The fixture's timers start at that connection.
    pub startup: Option<Duration>,
    /// The adapter's connect overhead: from its first `connecting` line reaching the
    /// mock to the first accept; `None` when it printed no `connecting` line (or never
    /// connected). Reconnect judgments use it as slack (`docs/fixtures.md`).
    pub connect_overhead: Option<Duration>,
    /// How late the kit's own timers ran over the whole run ([`lateness`]).
    pub lateness: LatenessSummary,
}

/// Where an in-process client reports what it delivered, in the adapter contract's
/// line format (`docs/client-adapter.md`). Adapters spawned with
/// [`Mock::spawn_adapter`] feed one internally.
#[derive(Clone)]
pub struct AppSink {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AppSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSink").finish_non_exhaustive()
    }
}

impl AppSink {
    /// One line the client printed.
    pub fn line(&self, line: Value) {
        let at = Instant::now();
        self.shared.record(
            0,
            Direction::App,
            What::Line {
                line: line.to_string(),
            },
        );
        {
            let mut st = self.shared.lock();
            st.app.lines.push(line);
            st.app.line_at.push(at);
        }
        self.shared.bump();
    }

    /// One raw stdout line: parsed as JSON, or a violation of the adapter contract.
    pub fn raw_line(&self, text: &str) {
        match serde_json::from_str::<Value>(text) {
            Ok(v) if v.get("kind").and_then(Value::as_str).is_some() => self.line(v),
            _ => {
                self.shared.record(
                    0,
                    Direction::App,
                    What::Line {
                        line: text.to_owned(),
                    },
                );
                self.shared.violate(
                    None,
                    reqs::ADAPTER,
                    "adapter_output",
                    format!(
                        "the adapter printed a line that is not a JSON object with a kind: {:?}",
                        text.chars().take(200).collect::<String>()
                    ),
                );
            }
        }
    }

    /// The client runs as process `pid`: the time it waits for a CPU counts as
    /// lateness in every timing judgment ([`RunQueueWait`]; Linux only, elsewhere
    /// this does nothing). [`Mock::spawn_adapter`] does this for the adapter it spawns.
    pub fn watch_process(&self, pid: u32) {
        let wait = RunQueueWait::start(pid);
        if wait.is_none() {
            self.shared.note(
                0,
                format!("cannot read the scheduler statistics of process {pid}"),
            );
        }
        self.shared.lock().app.run_wait = wait;
    }

    /// One stderr line (recorded, not judged).
    pub fn stderr(&self, text: &str) {
        self.shared.record(
            0,
            Direction::App,
            What::Stderr {
                line: text.to_owned(),
            },
        );
    }

    /// The client ended with an exit code (None: killed by a signal).
    pub fn exit(&self, code: Option<i32>) {
        self.exit_at(code, Instant::now());
    }

    /// The client ended at `at` (the moment its process was seen to end).
    fn exit_at(&self, code: Option<i32>, at: Instant) {
        self.shared.record(0, Direction::App, What::Exit { code });
        {
            let mut st = self.shared.lock();
            if st.app.exit.is_none() {
                st.app.exit = Some(code);
                st.app.exit_at = Some(at);
            }
        }
        self.shared.bump();
    }
}

/// A running mock server playing one fixture. Dropping it without
/// [`finish`](Mock::finish) stops it (listener, connections, adapter).
pub struct Mock {
    shared: Arc<Shared>,
    addr: SocketAddr,
    kill: Option<oneshot::Sender<()>>,
    adapter_done: Option<oneshot::Receiver<()>>,
}

impl std::fmt::Debug for Mock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mock").finish_non_exhaustive()
    }
}

impl Mock {
    /// Binds the listen address and starts playing `fixture` to whatever connects.
    pub async fn start(fixture: Fixture, options: MockOptions) -> Result<Self, MockError> {
        let seed = options
            .seed
            .or(fixture.seed)
            .unwrap_or_else(|| rand::rng().random());
        let scale = if options.time_scale.is_finite() && options.time_scale > 0.0 {
            options.time_scale
        } else {
            1.0
        };
        let listener = engine::bind(options.listen)
            .await
            .map_err(|source| MockError::Bind {
                addr: options.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| MockError::Bind {
            addr: options.listen,
            source,
        })?;
        let logs = Logs::generate(&fixture, seed);
        let (changed, _) = watch::channel(0u64);
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            start: Instant::now(),
            fixture,
            logs,
            scale,
            seed,
            live: options.live,
            st: StdMutex::new(State::default()),
            changed,
            shutdown,
            wait_for_client: options.wait_for_client,
            probe: options.probe.unwrap_or_else(Probe::start_default),
        });
        shared.note(
            0,
            format!(
                "fixture {} listening on {addr} seed {seed} time-scale {scale}",
                shared.fixture.id
            ),
        );
        let sh = shared.clone();
        let h = tokio::spawn(engine::accept_loop(sh, listener));
        shared.lock().tasks.push(h.abort_handle());
        Ok(Self {
            shared,
            addr,
            kill: None,
            adapter_done: None,
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The WebSocket URL for the client: `ws://ADDR/v1/stream`.
    pub fn url(&self) -> String {
        format!("ws://{}{}", self.addr, runwire_protocol::STREAM_PATH)
    }

    /// The seed of this run.
    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// The fixture.
    pub fn fixture(&self) -> &Fixture {
        &self.shared.fixture
    }

    /// The generated run logs.
    pub fn logs(&self) -> &Logs {
        &self.shared.logs
    }

    /// The adapter environment (`docs/client-adapter.md`), durations scaled.
    pub fn adapter_env(&self) -> Vec<(String, String)> {
        let sh = &self.shared;
        let c = &sh.fixture.client;
        let runs: Vec<String> = c
            .runs
            .iter()
            .map(|r| match (r.after_seq, &r.epoch) {
                (Some(n), Some(e)) => format!("{}@{e}:{n}", r.run_id),
                (Some(n), None) => format!("{}@{n}", r.run_id),
                _ => r.run_id.clone(),
            })
            .collect();
        let mut env = vec![
            ("RUNWIRE_URL".to_owned(), self.url()),
            ("RUNWIRE_RUNS".to_owned(), runs.join(",")),
        ];
        if let Some(t) = &c.token {
            env.push(("RUNWIRE_TOKEN".into(), t.clone()));
        }
        if !c.tokens.is_empty() {
            env.push(("RUNWIRE_TOKENS".into(), c.tokens.join(",")));
        }
        if let Some(v) = &c.versions {
            env.push(("RUNWIRE_VERSIONS".into(), v.join(",")));
        }
        let r = &c.reconnect;
        env.extend([
            (
                "RUNWIRE_RECONNECT_BASE_MS".into(),
                sh.wire_ms(r.base_ms).to_string(),
            ),
            ("RUNWIRE_RECONNECT_FACTOR".into(), r.factor.to_string()),
            (
                "RUNWIRE_RECONNECT_CAP_MS".into(),
                sh.wire_ms(r.cap_ms).to_string(),
            ),
            (
                "RUNWIRE_RECONNECT_MAX_ATTEMPTS".into(),
                r.max_attempts.to_string(),
            ),
            (
                "RUNWIRE_STABLE_SESSION_MS".into(),
                sh.wire_ms(c.stable_session_ms).to_string(),
            ),
            (
                "RUNWIRE_LIVENESS_GRACE_MS".into(),
                sh.wire_ms(c.liveness_grace_ms).to_string(),
            ),
            (
                "RUNWIRE_GAP_TIMEOUT_MS".into(),
                sh.wire_ms(c.gap_timeout_ms).to_string(),
            ),
            (
                "RUNWIRE_WELCOME_TIMEOUT_MS".into(),
                sh.wire_ms(c.welcome_timeout_ms).to_string(),
            ),
            ("RUNWIRE_SEED".into(), sh.seed.to_string()),
            ("RUNWIRE_TIME_SCALE".into(), sh.scale.to_string()),
        ]);
        env
    }

    /// Attaches an in-process client: it reports its lines and exit through the
    /// returned sink. Without an attached application, application-level expectations
    /// are not judged.
    pub fn attach_app(&self) -> Result<AppSink, MockError> {
        let mut st = self.shared.lock();
        if st.app.attached {
            return Err(MockError::AlreadyAttached);
        }
        st.app.attached = true;
        st.app.started = Some(Instant::now());
        Ok(AppSink {
            shared: self.shared.clone(),
        })
    }

    /// Spawns the adapter `program args…` with the fixture's environment and collects
    /// its output.
    pub fn spawn_adapter(
        &mut self,
        program: impl Into<OsString>,
        args: &[OsString],
    ) -> Result<(), MockError> {
        let program = program.into();
        let sink = self.attach_app()?;
        let mut cmd = Command::new(&program);
        cmd.args(args)
            .envs(self.adapter_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| {
            self.shared.lock().app.attached = false;
            MockError::Spawn {
                program: program.to_string_lossy().into_owned(),
                source,
            }
        })?;
        // The start-up runs from the spawn.
        self.shared.lock().app.started = Some(Instant::now());
        if let Some(pid) = child.id() {
            sink.watch_process(pid);
        }
        self.shared
            .note(0, format!("spawned adapter {}", program.to_string_lossy()));
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let out_task = {
            let sink = sink.clone();
            tokio::spawn(async move {
                if let Some(out) = stdout {
                    let mut lines = BufReader::new(out).lines();
                    while let Ok(Some(l)) = lines.next_line().await {
                        if !l.trim().is_empty() {
                            sink.raw_line(&l);
                        }
                    }
                }
            })
        };
        let err_task = {
            let sink = sink.clone();
            tokio::spawn(async move {
                if let Some(err) = stderr {
                    let mut lines = BufReader::new(err).lines();
                    while let Ok(Some(l)) = lines.next_line().await {
                        sink.stderr(&l);
                    }
                }
            })
        };
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s.ok(),
                _ = kill_rx => {
                    shared.lock().app.killed_by_mock = true;
                    let _ = child.start_kill();
                    child.wait().await.ok()
                }
            };
            let ended = Instant::now();
            let _ = out_task.await;
            let _ = timeout(Duration::from_millis(500), err_task).await;
            sink.exit_at(status.and_then(|s| s.code()), ended);
            let _ = done_tx.send(());
        });
        self.kill = Some(kill_tx);
        self.adapter_done = Some(done_rx);
        Ok(())
    }

    /// Waits until the fixture is over (every script played and the client gone, or
    /// the deadline), stops everything, and judges.
    ///
    /// The fixture's deadline counts from the first connection; before it, the mock
    /// waits for the client's start-up ([`MockOptions::wait_for_client`]). When the
    /// deadline passes with something still to come (a scripted connection, a script
    /// step, the client's exit), the mock keeps watching for an extension (250 ms ×
    /// the time scale, or twice the lateness measured so far): a fixture that ends
    /// during it ended late by a measured margin, one that does not end missed by the
    /// whole extension, and what is missing then is a timing judgment.
    pub async fn finish(mut self) -> Report {
        let sh = self.shared.clone();
        let f = &sh.fixture;
        let fixture_deadline = sh.dur(f.deadline_ms());
        let startup_wait = sh.wait_for_client.unwrap_or(DEFAULT_STARTUP_WAIT);
        let quiet = sh.dur(f.expect.quiet_ms.unwrap_or(0));
        let expect_running = f.expect.exit == Some(ExitExpect::Running);
        let scripts = f.connections.len();
        let mut rx = sh.changed.subscribe();
        let mut timed_out = false;
        // When every script finished: the quiet period of a client that keeps running
        // counts from there.
        let mut done_since: Option<Instant> = None;
        // The deadline passed with something pending: the extension being watched.
        let mut overtime: Option<Overtime> = None;
        loop {
            rx.borrow_and_update();
            let now = Instant::now();
            let (timers_from, deadline, connected) = {
                let st = sh.lock();
                match st.conns.first() {
                    Some(c) => (c.accepted, c.accepted + fixture_deadline, true),
                    None => {
                        let started = st.app.started.unwrap_or(sh.start);
                        (started, started + startup_wait, false)
                    }
                }
            };
            let wake: Option<Instant> = {
                let st = sh.lock();
                let arrived = st.conns.iter().filter(|c| c.scripted).count();
                let all_done = arrived >= scripts && st.conns.iter().all(|c| c.script_done);
                let last_end = st.conns.iter().filter_map(|c| c.ended).max();
                let all_ended = st.conns.iter().all(|c| c.ended.is_some());
                let app = &st.app;
                if app.attached && app.exit.is_some() {
                    if arrived < scripts || all_done {
                        break;
                    }
                    None
                } else if app.attached {
                    if all_done && st.extra_conns > 0 {
                        break;
                    }
                    if all_done && expect_running {
                        let from = *done_since.get_or_insert(now);
                        if now >= from + quiet {
                            break;
                        }
                        Some(from + quiet)
                    } else {
                        None
                    }
                } else if all_done && (all_ended || st.extra_conns > 0) {
                    let from = last_end.unwrap_or(now);
                    if st.extra_conns > 0 || now >= from + quiet {
                        break;
                    }
                    Some(from + quiet)
                } else {
                    None
                }
            };
            let mut until = wake.map_or(deadline, |w| w.min(deadline));
            if now >= deadline {
                if overtime.as_ref().is_some_and(|o| o.deadline != deadline) {
                    // The first connection came during the start-up extension: the
                    // fixture's own deadline now applies.
                    overtime = None;
                    continue;
                }
                let Some(pending) = self.pending() else {
                    timed_out = true;
                    break;
                };
                let o = overtime.get_or_insert_with(|| {
                    let until = deadline + sh.extension(timers_from);
                    sh.note(
                        0,
                        format!(
                            "{} passed ({pending}); watching {:.0} ms more",
                            if connected {
                                "the fixture deadline"
                            } else {
                                "the client's start-up wait"
                            },
                            engine::ms(until.saturating_duration_since(deadline))
                        ),
                    );
                    Overtime {
                        deadline,
                        until,
                        from: timers_from,
                    }
                });
                if now >= o.until {
                    timed_out = true;
                    break;
                }
                until = wake.map_or(o.until, |w| w.min(o.until));
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = sleep_until(until) => {}
            }
        }
        let end = Instant::now();
        let mut deadline_miss = None;
        match overtime {
            Some(o) if timed_out => {
                // Whatever is missing now missed the deadline by the whole extension.
                deadline_miss = Some(TimingMiss::new(
                    end.saturating_duration_since(o.deadline),
                    o.from,
                    end,
                ));
            }
            _ if !timed_out => self.judge_over_in_time(fixture_deadline),
            _ => {}
        }
        // Stop accepting, end the adapter, end every connection.
        let _ = sh.shutdown.send(true);
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(d) = self.adapter_done.take() {
            let _ = timeout(Duration::from_secs(5), d).await;
        }
        let tasks = std::mem::take(&mut sh.lock().tasks);
        for t in tasks {
            t.abort();
        }
        judge::FinalJudgment::report(&self.shared, timed_out, deadline_miss, end)
    }

    /// A fixture that ended (not on its deadline): the last thing it waited for (a
    /// scripted connection, the end of a script, the exit of a client expected to
    /// exit) must have happened within the deadline from the first connection; if it
    /// came later (the mock watched an extension, or the mock itself was stalled past
    /// the deadline), the fixture was late by that margin.
    fn judge_over_in_time(&self, fixture_deadline: Duration) {
        let sh = &self.shared;
        let f = &sh.fixture;
        let (first, last, what) = {
            let st = sh.lock();
            let Some(first) = st.conns.first().map(|c| c.accepted) else {
                return;
            };
            let mut last: Option<(Instant, String)> = None;
            let mut later = |at: Option<Instant>, what: String| {
                if let Some(at) = at
                    && last.as_ref().is_none_or(|l| at > l.0)
                {
                    last = Some((at, what));
                }
            };
            for (i, c) in st.conns.iter().enumerate().filter(|(_, c)| c.scripted) {
                later(Some(c.accepted), format!("connection {} came", i + 1));
                later(c.done_at, format!("connection {} played its script", i + 1));
            }
            if st.app.attached
                && !st.app.killed_by_mock
                && f.expect.exit.is_some_and(|e| e != ExitExpect::Running)
            {
                later(st.app.exit_at, "the client exited".into());
            }
            let Some((last, what)) = last else { return };
            (first, last, what)
        };
        let deadline = first + fixture_deadline;
        if last <= deadline {
            return;
        }
        let late = last.saturating_duration_since(deadline);
        sh.violate_timing(
            None,
            f.primary_requirement(),
            "deadline",
            format!(
                "the fixture was not over by its deadline of {} ms after the first connection: \
                 {what} {:.1} ms after it",
                sh.wire_ms(f.deadline_ms()),
                engine::ms(late)
            ),
            TimingMiss::new(late, first, last),
        );
    }

    /// What the final judgment would find missing if the fixture ended now: a
    /// scripted connection that has not come, a script not played to its end, or the
    /// exit of a client expected to exit. `None` when nothing is.
    fn pending(&self) -> Option<String> {
        let sh = &self.shared;
        let st = sh.lock();
        let arrived = st.conns.iter().filter(|c| c.scripted).count();
        if arrived < sh.fixture.connections.len() {
            return Some(format!("connection {} had not come", arrived + 1));
        }
        if let Some(i) = st.conns.iter().position(|c| c.scripted && !c.script_done) {
            return Some(format!("connection {} had not played its script", i + 1));
        }
        if st.app.attached
            && st.app.exit.is_none()
            && sh
                .fixture
                .expect
                .exit
                .is_some_and(|e| e != ExitExpect::Running)
        {
            return Some("the client had not exited".into());
        }
        None
    }

    fn stop(&mut self) {
        let _ = self.shared.shutdown.send(true);
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        let tasks = std::mem::take(&mut self.shared.lock().tasks);
        for t in tasks {
            t.abort();
        }
    }
}

/// The fixture's deadline (or the start-up wait) passed with something pending.
struct Overtime {
    /// The deadline that passed.
    deadline: Instant,
    /// The end of the extension.
    until: Instant,
    /// When the timers that deadline belongs to started (the judged interval).
    from: Instant,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Fixture {
        Fixture::parse(
            r#"{"id": "t", "title": "t", "requirements": ["RW-HEART-4"], "level": "must",
            "runs": [{"run_id": "run-1", "length": 1}], "client": {"runs": [{"run_id": "run-1"}]},
            "connections": [{"steps": []}]}"#,
            "t.json",
        )
        .expect("fixture")
    }

    /// A 300 ms miss over an interval in which the client's process waited 400 ms for
    /// a CPU is inconclusive; the same miss while it did not wait is a violation.
    #[tokio::test]
    async fn the_clients_run_queue_wait_counts_as_lateness() {
        let mut outcomes = Vec::new();
        for waited in [Duration::from_millis(400), Duration::ZERO] {
            let mock = Mock::start(fixture(), MockOptions::default())
                .await
                .expect("start");
            let from = Instant::now();
            let to = from + Duration::from_millis(500);
            mock.shared.lock().app.run_wait = Some(RunQueueWait::fixed(
                from.into_std(),
                Duration::from_millis(500),
                waited,
            ));
            mock.shared.violate_timing(
                Some(1),
                "RW-HEART-4",
                "pong",
                "no pong within 100 ms: it came 300.0 ms late",
                TimingMiss::new(Duration::from_millis(300), from, to),
            );
            let v = mock.shared.lock().violations[0].clone();
            outcomes.push((v.inconclusive, v.lateness_ms.unwrap_or_default()));
        }
        assert!(outcomes[0].0 && outcomes[0].1 >= 400.0, "{outcomes:?}");
        assert!(!outcomes[1].0, "{outcomes:?}");
    }
}
