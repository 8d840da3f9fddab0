//! `runwire watch`: a live terminal view of one or more runs.
//!
//! Subscribes to the runs with the reference client, folds each run's events into a
//! [`RunSnapshot`] and shows a progress bar per run (percent, step, tool, the agent
//! text being streamed), and every event type of spec §3 as lines
//! ([`render`]). Each reconnect says why the connection ended and which attempt comes
//! next. Exits with the runs' outcome, the worst of several: 0 completed, 3 cancelled,
//! 1 failed (2 for an error of the command itself, e.g. a terminal client error or a
//! run that cannot be watched). `--json` prints the events as JSON lines instead (and
//! resets as `reset` frames).
//!
//! `--prefix P` watches every run whose id starts with `P`: the runs the server
//! lists (`GET /v1/runs`, spec §4.7, [`listing`]), and the ones it lists later, as
//! the listing is read again every `--poll-ms`. It follows them until interrupted
//! (exit 130, after a line per run), or with `--exit-when-done` until every run
//! found has ended (the exit code as for several named runs).

mod listing;
mod render;
mod view;

use std::{
    collections::BTreeMap,
    io::Write,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Args;
use runwire_client::{Client, ClientConfig, ClientEvent, ConnectionState, StateChange};
use runwire_protocol::{
    Event, Reset, RunId, RunSnapshot, RunStatus, STREAM_PATH, Subscribed, SubscriptionRequest,
};

use render::{Line, Render};
use view::View;

/// Arguments of `runwire watch`.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// The server: its WebSocket stream URL (`ws://host:port/v1/stream`), or its base
    /// URL (`http://host:port`, the stream path is added). The default is the one of
    /// `runwire serve` and `runwire publish`.
    #[arg(long, env = "RUNWIRE_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
    /// The runs to watch; the command ends when every one of them has ended.
    #[arg(value_name = "RUN_ID", required_unless_present = "prefix")]
    run_ids: Vec<String>,
    /// Watch every run whose id starts with PREFIX (the empty prefix: every run),
    /// as the server lists them (`GET /v1/runs`, spec §4.7), picking up runs created
    /// later. Follows them until interrupted (Ctrl-C: a line per run, exit 130), or
    /// with `--exit-when-done` until they have all ended.
    #[arg(long, value_name = "PREFIX", conflicts_with_all = ["run_ids", "after_seq"])]
    prefix: Option<String>,
    /// With `--prefix`: list the runs again every this many milliseconds, to pick
    /// up new ones.
    #[arg(long, value_name = "MS", default_value_t = 2000, requires = "prefix")]
    poll_ms: u64,
    /// With `--prefix`: exit once at least one run was found and every run found has
    /// ended, with the worst of their outcomes (0 completed, 3 cancelled, 1 failed,
    /// 2 a run that cannot be watched). A run created after that is not waited for.
    #[arg(long, requires = "prefix")]
    exit_when_done: bool,
    /// Bearer token, sent in `hello` (never in the URL).
    #[arg(long, env = "RUNWIRE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print each event as one JSON line (resets as the `reset` frame) instead of the
    /// live view.
    #[arg(long)]
    json: bool,
    /// Show the agent's thinking (`agent.thinking`, dimmed on a terminal); hidden by
    /// default.
    #[arg(long)]
    thinking: bool,
    /// One status line per run (a bar on a terminal, a line per change otherwise)
    /// instead of a line per event.
    #[arg(long, conflicts_with = "json")]
    compact: bool,
    /// Consecutive failed connection attempts before giving up (`RW-RECONNECT-3`).
    #[arg(long, default_value_t = runwire_protocol::defaults::RECONNECT_MAX_ATTEMPTS)]
    max_attempts: u32,
    /// Resume after this seq (with `--epoch`), e.g. from a previous `--json` output;
    /// only with one run.
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

/// The worst of several exit codes: an error of the command (2) before a failed run
/// (1) before a cancelled one (3) before a completed one (0).
pub(crate) fn worst(codes: impl IntoIterator<Item = u8>) -> u8 {
    let rank = |c: u8| match c {
        0 => 0,
        3 => 1,
        1 => 2,
        _ => 3,
    };
    codes.into_iter().max_by_key(|c| rank(*c)).unwrap_or(0)
}

/// A placeholder epoch until the subscription names the real one.
fn unknown() -> runwire_protocol::Epoch {
    runwire_protocol::Epoch::new("unknown").expect("a valid epoch literal")
}

/// Runs `runwire watch`.
pub(crate) fn run(args: WatchArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tls = runwire_client::tls::client_config(&args.ca_cert).context("--ca-cert")?;
    let lister = args
        .prefix
        .clone()
        .map(|p| listing::Lister::new(&args.url, p, args.token.clone(), &tls))
        .transpose()?;
    let runs = match &lister {
        Some(l) => rt.block_on(l.list())?,
        None => args
            .run_ids
            .iter()
            .map(|r| RunId::new(r.clone()).with_context(|| format!("RUN_ID {r:?}")))
            .collect::<Result<Vec<_>>>()?,
    };
    if args.after_seq.is_some() && runs.len() > 1 {
        bail!("--after-seq resumes one run; give one RUN_ID with it");
    }
    let url = stream_url(&args.url)?;
    let mut config = ClientConfig::new(url);
    if let Some(t) = args.token.clone() {
        config = config.token(t);
    }
    config.backoff.max_attempts = args.max_attempts.max(1);
    config.tls = Some(tls);
    let epoch = args
        .epoch
        .as_deref()
        .map(runwire_protocol::Epoch::new)
        .transpose()
        .context("--epoch")?;
    for run_id in &runs {
        config.subscriptions.push(match args.after_seq {
            Some(seq) => SubscriptionRequest::resume(run_id.clone(), epoch.clone(), seq),
            None => SubscriptionRequest::new(run_id.clone()),
        });
    }
    let view = (!args.json).then(|| {
        let mut v = View::new(&runs, args.compact);
        if lister.is_some() {
            for r in &runs {
                v.add(r);
            }
        }
        v
    });
    let follow = lister.map(|lister| Follow {
        lister,
        poll: Duration::from_millis(args.poll_ms.max(10)),
        exit_when_done: args.exit_when_done,
    });
    if let Some(f) = &follow {
        let text = format!(
            "watching the runs starting with {:?}: {} so far",
            f.lister.prefix(),
            runs.len()
        );
        eprintln!("{text}");
    }
    let mut w = Watch {
        follow,
        thinking: args.thinking,
        runs: runs
            .iter()
            .map(|r| (r.clone(), Watched::new(args.thinking)))
            .collect(),
        view,
        reconnects: 0,
        started: Instant::now(),
    };
    rt.block_on(w.watch(config))
}

/// One watched run.
struct Watched {
    snapshot: Option<RunSnapshot>,
    render: Render,
    events: u64,
    subscribed: bool,
    outcome: Option<RunStatus>,
    /// Why the run cannot be watched (a subscription error).
    error: Option<String>,
}

impl Watched {
    fn new(thinking: bool) -> Self {
        Self {
            snapshot: None,
            render: Render::new(thinking),
            events: 0,
            subscribed: false,
            outcome: None,
            error: None,
        }
    }

    fn done(&self) -> bool {
        self.outcome.is_some() || self.error.is_some()
    }
}

/// Ctrl-C (SIGINT), listened for from its creation on.
struct Interrupt {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupt {
    fn listen() -> Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("listening for Ctrl-C")?,
        })
    }

    /// Resolves at the next interrupt (never without an `Interrupt`).
    async fn recv(this: &mut Option<Self>) {
        match this {
            #[cfg(unix)]
            Some(i) => {
                i.signal.recv().await;
            }
            #[cfg(not(unix))]
            Some(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// `--prefix`: the runs are listed again every `poll`.
struct Follow {
    lister: listing::Lister,
    poll: Duration,
    exit_when_done: bool,
}

/// The state of the command.
struct Watch {
    /// With `--prefix`.
    follow: Option<Follow>,
    /// `--thinking`, for the runs found later.
    thinking: bool,
    runs: BTreeMap<RunId, Watched>,
    /// The human view; `None` with `--json`.
    view: Option<View>,
    reconnects: u32,
    started: Instant,
}

fn json_line(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

impl Watch {
    async fn watch(&mut self, config: ClientConfig) -> Result<ExitCode> {
        let mut client = Client::connect(config);
        let handle = client.handle();
        let poll = self.follow.as_ref().map_or(Duration::MAX, |f| f.poll);
        let mut next_poll = tokio::time::Instant::now() + poll.min(Duration::from_secs(86_400));
        let mut interrupted = false;
        // Listening from now on, so an interrupt while connecting is not missed.
        let mut interrupt = match &self.follow {
            Some(_) => Some(Interrupt::listen()?),
            None => None,
        };
        loop {
            let ev = tokio::select! {
                ev = client.next() => match ev {
                    Some(ev) => ev,
                    None => break,
                },
                () = tokio::time::sleep_until(next_poll), if self.follow.is_some() => {
                    self.poll_listing(&handle).await;
                    next_poll = tokio::time::Instant::now() + poll;
                    continue;
                }
                () = Interrupt::recv(&mut interrupt), if interrupt.is_some() && !interrupted => {
                    interrupted = true;
                    handle.close();
                    continue;
                }
            };
            match ev {
                ClientEvent::Event(e) => self.on_event(&e)?,
                ClientEvent::Reset(r) => self.on_reset(*r)?,
                ClientEvent::State(s) => self.on_state(&s),
                ClientEvent::Subscribed(sub) => self.on_subscribed(&sub),
                ClientEvent::Error(e) => {
                    if e.terminal {
                        self.finish_view();
                        bail!("{}: {}", e.code, e.message);
                    }
                    if let Some(run_id) = &e.run_id
                        && e.ends_subscription()
                        && let Some(w) = self.runs.get_mut(run_id)
                    {
                        let why = format!("cannot watch {run_id}: {}: {}", e.code, e.message);
                        eprintln!("{why}");
                        w.error = Some(why);
                    }
                }
                _ => {}
            }
            let all_done = self.runs.values().all(Watched::done);
            let stop = match &self.follow {
                None => all_done,
                Some(f) => f.exit_when_done && all_done && !self.runs.is_empty(),
            };
            if stop {
                handle.close();
            }
        }
        self.finish_view();
        self.summary(interrupted)
    }

    /// `--prefix`: lists the runs again and subscribes to the new ones. A failed
    /// listing is said and retried at the next poll; the runs already followed stay.
    async fn poll_listing(&mut self, handle: &runwire_client::ClientHandle) {
        let Some(f) = &self.follow else { return };
        let found = match f.lister.list().await {
            Ok(found) => found,
            Err(e) => {
                let text = format!("{e:#} — listing again in {} ms", f.poll.as_millis());
                match &self.view {
                    Some(v) => v.notice(&text),
                    None => eprintln!("{text}"),
                }
                return;
            }
        };
        let thinking = self.thinking;
        for run_id in found {
            if self.runs.contains_key(&run_id) {
                continue;
            }
            if let Some(v) = &mut self.view {
                v.add(&run_id);
            }
            self.runs.insert(run_id.clone(), Watched::new(thinking));
            handle.subscribe(SubscriptionRequest::new(run_id));
        }
    }

    fn finish_view(&self) {
        if let Some(v) = &self.view {
            v.finish();
        }
    }

    fn on_event(&mut self, e: &Event) -> Result<()> {
        let Some(w) = self.runs.get_mut(&e.run_id) else {
            return Ok(());
        };
        w.events += 1;
        let s = w
            .snapshot
            .get_or_insert_with(|| RunSnapshot::empty(e.run_id.clone(), unknown()));
        s.apply(e);
        match &mut self.view {
            None => json_line(&runwire_protocol::codec::encode(e))?,
            Some(v) => {
                for line in w.render.event(e) {
                    v.line(&e.run_id, &line);
                }
                v.status(&e.run_id, s, w.render.streaming());
            }
        }
        if e.payload.is_terminal() {
            w.outcome = e.payload.status();
        }
        Ok(())
    }

    fn on_reset(&mut self, r: Reset) -> Result<()> {
        let Some(w) = self.runs.get_mut(&r.run_id) else {
            return Ok(());
        };
        match &mut self.view {
            None => {
                let msg = runwire_protocol::ServerMessage::Reset(r.clone());
                json_line(&runwire_protocol::codec::encode(&msg))?;
            }
            Some(v) => {
                for line in w.render.reset() {
                    v.line(&r.run_id, &line);
                }
                v.line(
                    &r.run_id,
                    &Line {
                        text: format!(
                            "(resynchronized: state as of seq {}, {:?})",
                            r.snapshot.as_of_seq, r.reason
                        ),
                        dim: false,
                    },
                );
                for l in r.snapshot.recent_logs.iter().rev().take(5).rev() {
                    let text = format!("  {:?} {}", l.level, l.message);
                    v.line(&r.run_id, &Line { text, dim: false });
                }
                v.status(&r.run_id, &r.snapshot, None);
            }
        }
        if r.snapshot.is_terminal() {
            w.outcome = r.snapshot.status;
        }
        w.snapshot = Some(r.snapshot);
        Ok(())
    }

    /// The first `subscribed` of a run says where it stands, so that a run without
    /// events yet is not silence.
    fn on_subscribed(&mut self, sub: &Subscribed) {
        let Some(w) = self.runs.get_mut(&sub.run_id) else {
            return;
        };
        if w.snapshot.is_none() {
            w.snapshot = Some(RunSnapshot::empty(sub.run_id.clone(), sub.epoch.clone()));
        }
        if std::mem::replace(&mut w.subscribed, true) {
            return;
        }
        let text = match sub.head_seq {
            0 => format!("watching {}: no events yet", sub.run_id),
            n => format!("watching {}: {n} events so far", sub.run_id),
        };
        match &self.view {
            Some(v) => v.notice(&text),
            None => eprintln!("{text}"),
        }
    }

    /// Says why the connection ended and when the next attempt comes
    /// (`connection refused by 127.0.0.1:7999 — reconnecting, attempt 2/10 in 1.8 s`).
    fn on_state(&mut self, s: &StateChange) {
        if s.state != ConnectionState::Reconnecting {
            return;
        }
        self.reconnects += 1;
        let next = match (s.attempt, s.max_attempts) {
            (Some(n), Some(max)) => format!(", attempt {}/{max}", n + 1),
            _ => String::new(),
        };
        let delay = s
            .delay
            .map(|d| format!(" in {:.1} s", d.as_secs_f64()))
            .unwrap_or_default();
        let cause = s.cause.as_deref().unwrap_or("the connection ended");
        let text = format!("{cause} — reconnecting{next}{delay}");
        match &self.view {
            Some(v) => v.notice(&text),
            None => eprintln!("{text}"),
        }
    }

    /// One line per run, and the exit code: the worst of the runs'; 130 after an
    /// interrupt (`--prefix`), when runs that have not ended are said as such.
    fn summary(&self, interrupted: bool) -> Result<ExitCode> {
        let secs = self.started.elapsed().as_secs_f64();
        let mut codes = Vec::new();
        for (run_id, w) in &self.runs {
            if w.error.is_some() {
                codes.push(2);
                continue;
            }
            let Some(status) = w.outcome else {
                if interrupted {
                    let line = format!("run {run_id} has not ended: {} events seen", w.events);
                    if self.view.is_some() {
                        println!("{line}");
                    } else {
                        eprintln!("{line}");
                    }
                    continue;
                }
                bail!("the connection ended before run {run_id} did");
            };
            codes.push(exit_for(Some(status)));
            let reason = w
                .snapshot
                .as_ref()
                .and_then(|s| s.status_reason.clone())
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            let reconnects = match self.reconnects {
                0 => String::new(),
                n => format!(", {n} reconnects"),
            };
            let line = format!(
                "run {run_id} {status}{reason}: {} events in {secs:.1} s{reconnects}",
                w.events
            );
            if self.view.is_some() {
                println!("{line}");
            } else {
                eprintln!("{line}");
            }
        }
        if interrupted {
            return Ok(ExitCode::from(130));
        }
        Ok(ExitCode::from(worst(codes)))
    }
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

    #[test]
    fn exit_codes() {
        assert_eq!(exit_for(Some(RunStatus::Completed)), 0);
        assert_eq!(exit_for(Some(RunStatus::Failed)), 1);
        assert_eq!(exit_for(Some(RunStatus::Cancelled)), 3);
        assert_eq!(worst([0, 3, 0]), 3);
        assert_eq!(worst([3, 1, 0]), 1);
        assert_eq!(worst([1, 2]), 2);
        assert_eq!(worst([]), 0);
    }
}
