//! `runwire watch`: a live terminal view of one run.
//!
//! Subscribes to the run with the reference client, folds its events into a
//! [`RunSnapshot`] and shows a progress bar (percent, step, tool), the phase and
//! status, log lines and tool calls as they happen. Reconnects silently, showing
//! "reconnecting…" meanwhile, and exits with the run's outcome: 0 completed, 1 failed,
//! 3 cancelled (2 for an error of the command itself, e.g. a terminal client error).
//! `--json` prints the events as JSON lines instead (and resets as `reset` frames).

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use runwire_client::{Client, ClientConfig, ClientEvent, ConnectionState};
use runwire_protocol::{
    Event, EventPayload, LogLevel, RunId, RunSnapshot, RunStatus, STREAM_PATH, SubscriptionRequest,
};

/// Arguments of `runwire watch`.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// The server: its WebSocket stream URL (`ws://host:port/v1/stream`), or its base
    /// URL (`http://host:port`, the stream path is added).
    #[arg(long, env = "RUNWIRE_URL")]
    url: String,
    /// The run to watch.
    run_id: String,
    /// Bearer token, sent in `hello` (never in the URL).
    #[arg(long, env = "RUNWIRE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print each event as one JSON line (resets as the `reset` frame) instead of the
    /// live view.
    #[arg(long)]
    json: bool,
    /// Resume after this seq (with `--epoch`), e.g. from a previous `--json` output.
    #[arg(long)]
    after_seq: Option<u64>,
    /// The epoch of `--after-seq`.
    #[arg(long, requires = "after_seq")]
    epoch: Option<String>,
    /// Also trust the certificate authorities in this PEM file for `wss://` (besides
    /// the system's); may be repeated.
    #[arg(long, value_name = "FILE", env = "RUNWIRE_CA_CERT")]
    ca_cert: Vec<PathBuf>,
}

/// The stream URL for `--url`.
pub(crate) fn stream_url(url: &str) -> Result<String> {
    let (scheme, rest) = url.split_once("://").with_context(|| {
        format!("--url {url:?} has no scheme (ws://, wss://, http://, https://)")
    })?;
    let scheme = match scheme {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        other => bail!("--url scheme {other:?} is not ws, wss, http or https"),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('?') {
        bail!("--url must not carry a query string (tokens go in --token)");
    }
    let path_start = rest.find('/');
    Ok(match path_start {
        Some(_) => format!("{scheme}://{rest}"),
        None => format!("{scheme}://{rest}{STREAM_PATH}"),
    })
}

/// The exit code for a run's final status.
pub(crate) fn exit_for(status: Option<RunStatus>) -> u8 {
    match status {
        Some(RunStatus::Completed) => 0,
        Some(RunStatus::Cancelled) => 3,
        _ => 1,
    }
}

/// Where the human view goes: a progress bar on a terminal, plain lines otherwise.
struct View {
    bar: Option<ProgressBar>,
    last_percent: Option<u64>,
}

impl View {
    fn new(run_id: &RunId) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self {
                bar: None,
                last_percent: None,
            };
        }
        let bar = ProgressBar::new(100).with_style(
            ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos:>3}% {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(run_id.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            bar: Some(bar),
            last_percent: None,
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
        }
    }

    /// Shows the folded state: bar position and message.
    fn show(&mut self, s: &RunSnapshot, note: Option<&str>) {
        let percent = s
            .progress
            .as_ref()
            .and_then(|p| p.percent)
            .map(|p| p.clamp(0.0, 100.0).round() as u64);
        let mut parts = Vec::new();
        if let Some(st) = s.status {
            parts.push(st.to_string());
        }
        if let Some(ph) = &s.phase {
            parts.push(format!("phase {ph}"));
        }
        if let Some(p) = &s.progress {
            if let Some(step) = &p.step {
                parts.push(step.clone());
            }
            if let Some(tool) = &p.tool {
                parts.push(format!("tool {tool}"));
            }
        }
        if let Some(n) = note {
            parts.push(n.to_owned());
        }
        let msg = parts.join(" · ");
        match &self.bar {
            Some(b) => {
                b.set_position(percent.unwrap_or(0));
                b.set_message(msg);
            }
            None => {
                if percent.is_some() && percent != self.last_percent {
                    self.line(&format!("{:>3}% {msg}", percent.unwrap_or(0)));
                }
            }
        }
        self.last_percent = percent.or(self.last_percent);
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// A placeholder epoch until the subscription names the real one.
fn unknown() -> runwire_protocol::Epoch {
    runwire_protocol::Epoch::new("unknown").expect("a valid epoch literal")
}

/// How the watch view shows one event.
#[derive(Debug, PartialEq, Eq)]
enum Shown {
    /// A line above the status line.
    Line(String),
    /// No line of its own: the status line shows the run state it folds into.
    Folded,
    /// A type this build does not know.
    Unknown,
}

/// Every event type v1 defines has an arm here (the test below fails for one that
/// falls to the last arm).
fn describe(e: &Event) -> Shown {
    Shown::Line(match &e.payload {
        EventPayload::LogLine(l) => {
            let level = match l.level {
                LogLevel::Trace => "trace",
                LogLevel::Debug => "debug",
                LogLevel::Info => "info ",
                LogLevel::Warn => "warn ",
                LogLevel::Error => "error",
                _ => "log  ",
            };
            match &l.source {
                Some(src) => format!("  {level} [{src}] {}", l.message),
                None => format!("  {level} {}", l.message),
            }
        }
        EventPayload::ToolStarted(t) => format!("  → {} ({})", t.tool, t.call_id),
        EventPayload::ToolFinished(t) => {
            let took = t
                .duration_ms
                .map(|d| format!(" in {d} ms"))
                .unwrap_or_default();
            if t.ok {
                format!("  ✓ {} ({}){took}", t.tool, t.call_id)
            } else {
                let why = t.error.as_deref().unwrap_or("failed");
                format!("  ✗ {} ({}){took}: {why}", t.tool, t.call_id)
            }
        }
        EventPayload::RunPhase(p) => format!("phase {}", p.phase),
        EventPayload::RunStatus(s) => match &s.reason {
            Some(r) => format!("status {} ({r})", s.status),
            None => format!("status {}", s.status),
        },
        EventPayload::ArtifactCreated(a) => format!("  artifact {} {}", a.kind, a.uri),
        EventPayload::RunProgress(_)
        | EventPayload::RunMetadata(_)
        | EventPayload::AgentMessage(_)
        | EventPayload::AgentThinking(_)
        | EventPayload::FileChanged(_)
        | EventPayload::TodoUpdated(_)
        | EventPayload::OutputChunk(_) => return Shown::Folded,
        _ => return Shown::Unknown,
    })
}

/// Runs `runwire watch`.
pub(crate) fn run(args: WatchArgs) -> Result<ExitCode> {
    let run_id = RunId::new(args.run_id.clone()).context("RUN_ID")?;
    let url = stream_url(&args.url)?;
    let mut config = ClientConfig::new(url);
    if let Some(t) = args.token.clone() {
        config = config.token(t);
    }
    config.tls = Some(runwire_client::tls::client_config(&args.ca_cert).context("--ca-cert")?);
    let epoch = args
        .epoch
        .as_deref()
        .map(runwire_protocol::Epoch::new)
        .transpose()
        .context("--epoch")?;
    config.subscriptions.push(match args.after_seq {
        Some(seq) => SubscriptionRequest::resume(run_id.clone(), epoch, seq),
        None => SubscriptionRequest::new(run_id.clone()),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(watch(config, run_id, args.json))
}

async fn watch(config: ClientConfig, run_id: RunId, json_mode: bool) -> Result<ExitCode> {
    let started = Instant::now();
    let mut client = Client::connect(config);
    let handle = client.handle();
    let mut view = (!json_mode).then(|| View::new(&run_id));
    let mut state: Option<RunSnapshot> = None;
    let mut events = 0u64;
    let mut reconnects = 0u32;
    let mut outcome: Option<RunStatus> = None;
    while let Some(ev) = client.next().await {
        match ev {
            ClientEvent::Event(e) => {
                events += 1;
                let s =
                    state.get_or_insert_with(|| RunSnapshot::empty(e.run_id.clone(), unknown()));
                s.apply(&e);
                if json_mode {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{}", runwire_protocol::codec::encode(&e))?;
                    out.flush()?;
                } else if let Some(v) = &mut view {
                    if let Shown::Line(text) = describe(&e) {
                        v.line(&text);
                    }
                    v.show(s, None);
                }
                if e.payload.is_terminal() {
                    outcome = e.payload.status();
                    handle.close();
                }
            }
            ClientEvent::Reset(r) => {
                if json_mode {
                    let msg = runwire_protocol::ServerMessage::Reset((*r).clone());
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{}", runwire_protocol::codec::encode(&msg))?;
                    out.flush()?;
                } else if let Some(v) = &mut view {
                    v.line(&format!(
                        "(resynchronized: state as of seq {}, {:?})",
                        r.snapshot.as_of_seq, r.reason
                    ));
                    for l in r.snapshot.recent_logs.iter().rev().take(5).rev() {
                        v.line(&format!("  {:?} {}", l.level, l.message));
                    }
                    v.show(&r.snapshot, None);
                }
                if r.snapshot.is_terminal() {
                    outcome = r.snapshot.status;
                    handle.close();
                }
                state = Some(r.snapshot);
            }
            ClientEvent::State(s) => {
                if let Some(v) = &mut view {
                    let empty = RunSnapshot::empty(run_id.clone(), unknown());
                    let current = state.as_ref().unwrap_or(&empty);
                    match s.state {
                        ConnectionState::Reconnecting => {
                            reconnects += 1;
                            if v.bar.is_some() {
                                v.show(current, Some("reconnecting…"));
                            } else {
                                v.line("reconnecting…");
                            }
                        }
                        ConnectionState::Connected => v.show(current, None),
                        _ => {}
                    }
                } else if s.state == ConnectionState::Reconnecting {
                    reconnects += 1;
                    eprintln!("reconnecting…");
                }
            }
            ClientEvent::Subscribed(sub) if state.is_none() => {
                state = Some(RunSnapshot::empty(sub.run_id, sub.epoch));
            }
            ClientEvent::Error(e) => {
                if e.terminal {
                    if let Some(v) = &view {
                        v.finish();
                    }
                    bail!("{}: {}", e.code, e.message);
                }
                if e.run_id.as_ref() == Some(&run_id) && e.ends_subscription() {
                    if let Some(v) = &view {
                        v.finish();
                    }
                    bail!("cannot watch {run_id}: {}: {}", e.code, e.message);
                }
            }
            _ => {}
        }
    }
    if let Some(v) = &view {
        v.finish();
    }
    let Some(status) = outcome else {
        bail!("the connection ended before the run did");
    };
    let secs = started.elapsed().as_secs_f64();
    let reason = state
        .as_ref()
        .and_then(|s| s.status_reason.clone())
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let summary = format!(
        "run {run_id} {status}{reason}: {events} events in {secs:.1} s{}",
        if reconnects > 0 {
            format!(", {reconnects} reconnects")
        } else {
            String::new()
        }
    );
    if json_mode {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    Ok(ExitCode::from(exit_for(Some(status))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            stream_url("http://127.0.0.1:7300").unwrap(),
            "ws://127.0.0.1:7300/v1/stream"
        );
        assert_eq!(
            stream_url("ws://h:1/v1/stream").unwrap(),
            "ws://h:1/v1/stream"
        );
        assert_eq!(stream_url("https://h/").unwrap(), "wss://h/v1/stream");
        assert!(stream_url("h:1").is_err());
        assert!(stream_url("ftp://h").is_err());
        assert!(stream_url("ws://h/v1/stream?token=x").is_err());
    }

    /// A type added to the protocol reaches `arbitrary::event` and must get an arm
    /// in `describe`.
    #[test]
    fn every_known_event_type_is_rendered() {
        use proptest::{
            strategy::{Strategy, ValueTree},
            test_runner::TestRunner,
        };
        let mut runner = TestRunner::deterministic();
        let events = runwire_protocol::arbitrary::event();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let e = events.new_tree(&mut runner).expect("an event").current();
            let unknown = describe(&e) == Shown::Unknown;
            assert_eq!(unknown, !e.payload.is_known(), "{}", e.event_type());
            seen.insert(e.event_type().to_owned());
        }
        for t in runwire_protocol::KNOWN_EVENT_TYPES {
            assert!(seen.contains(*t), "{t} was never generated");
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_for(Some(RunStatus::Completed)), 0);
        assert_eq!(exit_for(Some(RunStatus::Failed)), 1);
        assert_eq!(exit_for(Some(RunStatus::Cancelled)), 3);
    }
}
