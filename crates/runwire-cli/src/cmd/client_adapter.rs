//! `runwire client-adapter`: the reference client adapter of the conformance kit.
//!
//! Follows `docs/client-adapter.md` exactly: configured by `RUNWIRE_*` environment
//! variables, prints one JSON line per thing the client delivers to its application,
//! exits 0 once every subscribed run reached a terminal status (after closing with
//! 1000), 1 after a terminal error (the last line is the `error` line). It also folds
//! each run's state like an application would (spec §8.3, [`RunSnapshot::apply`]) and
//! prints it as a `folded` line after every delivered event and reset.

use std::{
    collections::BTreeMap,
    io::Write,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::Args;
use runwire_client::{Client, ClientConfig, ClientEvent, ConnectionState, TokenProvider};
use runwire_protocol::{Epoch, RunId, RunSnapshot, SubscriptionRequest};
use serde_json::{Value, json};

/// Arguments of `runwire client-adapter` (all configuration comes from the
/// environment, see `docs/client-adapter.md`).
#[derive(Debug, Args)]
pub(crate) struct ClientAdapterArgs {}

/// The adapter's configuration, read from the environment.
#[derive(Debug)]
pub(crate) struct AdapterEnv {
    pub(crate) config: ClientConfig,
    pub(crate) runs: Vec<RunId>,
    pub(crate) seed: u64,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number<T: std::str::FromStr>(name: &str) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{name}={v:?} is not a valid number: {e}")),
    }
}

/// Parses one `RUNWIRE_RUNS` entry: `RUN_ID`, `RUN_ID@AFTER_SEQ` or
/// `RUN_ID@EPOCH:AFTER_SEQ`.
pub(crate) fn parse_run(entry: &str) -> Result<SubscriptionRequest> {
    let entry = entry.trim();
    let (id, cursor) = match entry.split_once('@') {
        Some((id, c)) => (id, Some(c)),
        None => (entry, None),
    };
    let run_id = RunId::new(id).with_context(|| format!("RUNWIRE_RUNS entry {entry:?}"))?;
    let Some(cursor) = cursor else {
        return Ok(SubscriptionRequest::new(run_id));
    };
    let (epoch, seq) = match cursor.rsplit_once(':') {
        Some((e, s)) => (
            Some(Epoch::new(e).with_context(|| format!("RUNWIRE_RUNS entry {entry:?}"))?),
            s,
        ),
        None => (None, cursor),
    };
    let seq: u64 = seq
        .parse()
        .with_context(|| format!("RUNWIRE_RUNS entry {entry:?}: {seq:?} is not a seq"))?;
    Ok(SubscriptionRequest::resume(run_id, epoch, seq))
}

impl AdapterEnv {
    /// Reads the `RUNWIRE_*` variables.
    pub(crate) fn from_env() -> Result<Self> {
        let url = var("RUNWIRE_URL").context("RUNWIRE_URL is required")?;
        let runs_var = var("RUNWIRE_RUNS").context("RUNWIRE_RUNS is required")?;
        let mut config = ClientConfig::new(url);
        let mut runs = Vec::new();
        for entry in runs_var.split(',').filter(|e| !e.trim().is_empty()) {
            let req = parse_run(entry)?;
            if runs.contains(&req.run_id) {
                bail!("RUNWIRE_RUNS lists {} twice", req.run_id);
            }
            runs.push(req.run_id.clone());
            config.subscriptions.push(req);
        }
        if runs.is_empty() {
            bail!("RUNWIRE_RUNS lists no run");
        }
        if let Some(tokens) = var("RUNWIRE_TOKENS") {
            let tokens: Vec<String> = tokens.split(',').map(|t| t.trim().to_owned()).collect();
            // The n-th connection attempt since the start (never reset) gets the n-th
            // token; the last one repeats (docs/client-adapter.md, RW-AUTH-9).
            config.token = Some(TokenProvider::from_fn(move |earlier| {
                let i = (earlier as usize).min(tokens.len() - 1);
                Some(tokens[i].clone())
            }));
        } else if let Some(t) = var("RUNWIRE_TOKEN") {
            config.token = Some(TokenProvider::fixed(t));
        }
        if let Some(v) = var("RUNWIRE_VERSIONS") {
            config.versions = v.split(',').map(|s| s.trim().to_owned()).collect();
        }
        if let Some(v) = number("RUNWIRE_RECONNECT_BASE_MS")? {
            config.backoff.base_ms = v;
        }
        if let Some(v) = number("RUNWIRE_RECONNECT_FACTOR")? {
            config.backoff.factor = v;
        }
        if let Some(v) = number("RUNWIRE_RECONNECT_CAP_MS")? {
            config.backoff.cap_ms = v;
        }
        if let Some(v) = number("RUNWIRE_RECONNECT_MAX_ATTEMPTS")? {
            config.backoff.max_attempts = v;
        }
        if let Some(v) = number("RUNWIRE_STABLE_SESSION_MS")? {
            config.stable_session = Duration::from_millis(v);
        }
        if let Some(v) = number("RUNWIRE_LIVENESS_GRACE_MS")? {
            config.liveness_grace = Duration::from_millis(v);
        }
        if let Some(v) = number("RUNWIRE_WELCOME_TIMEOUT_MS")? {
            config.welcome_timeout = Duration::from_millis(v);
        }
        if let Some(v) = number("RUNWIRE_GAP_TIMEOUT_MS")? {
            config.ordering.gap_timeout = Duration::from_millis(v);
        }
        let seed = match number::<u64>("RUNWIRE_SEED")? {
            Some(s) => s,
            None => rand::random(),
        };
        config.seed = Some(seed);
        config.client_info = Some(runwire_protocol::ClientInfo {
            name: "runwire-client-adapter".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        });
        Ok(Self { config, runs, seed })
    }
}

/// The JSON line for one client event (`docs/client-adapter.md`, "Output"), or
/// `None` for things the contract does not print.
pub(crate) fn line(ev: &ClientEvent) -> Option<Value> {
    Some(match ev {
        ClientEvent::State(s) => {
            let mut v = json!({"kind": "state", "state": s.state.as_str()});
            if let Some(a) = s.attempt {
                v["attempt"] = json!(a);
            }
            if let Some(d) = s.delay {
                v["delay_ms"] = json!(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            }
            if let Some(c) = s.close_code {
                v["close_code"] = json!(c);
            }
            v
        }
        ClientEvent::Subscribed(s) => json!({
            "kind": "subscribed",
            "run_id": s.run_id,
            "epoch": s.epoch,
            "after_seq": s.after_seq,
            "head_seq": s.head_seq,
        }),
        ClientEvent::Event(e) => json!({"kind": "event", "event": e}),
        ClientEvent::Reset(r) => json!({
            "kind": "reset",
            "run_id": r.run_id,
            "epoch": r.epoch,
            "reason": r.reason,
            "snapshot": r.snapshot,
        }),
        ClientEvent::Error(e) => {
            let mut v = json!({
                "kind": "error",
                "code": e.code,
                "message": e.message,
                "terminal": e.terminal,
            });
            if let Some(r) = &e.run_id {
                v["run_id"] = json!(r);
            }
            if let Some(c) = e.close_code {
                v["close_code"] = json!(c);
            }
            if let Some(sv) = &e.supported_versions {
                v["supported_versions"] = json!(sv);
            }
            if let Some(c) = &e.last_error_code {
                v["last_error_code"] = json!(c);
            }
            v
        }
        _ => return None,
    })
}

/// The application's folded state of every run (spec §8.3): a reset's snapshot is
/// the new base, every delivered event is folded onto it with [`RunSnapshot::apply`]
/// (which leaves the state unchanged for a seq at or below `as_of_seq`, `RW-SNAP-3`).
#[derive(Debug, Default)]
pub(crate) struct Folds {
    runs: BTreeMap<RunId, RunSnapshot>,
    epochs: BTreeMap<RunId, Epoch>,
}

impl Folds {
    /// Folds one client event; returns the `folded` line to print after it, if the
    /// event changed what the application holds (a delivered event or a reset).
    pub(crate) fn fold(&mut self, ev: &ClientEvent) -> Option<Value> {
        let run_id = match ev {
            ClientEvent::Subscribed(s) => {
                // A subscription in another epoch than the folded state is a new log.
                if self
                    .runs
                    .get(&s.run_id)
                    .is_some_and(|snap| snap.epoch != s.epoch)
                {
                    self.runs.remove(&s.run_id);
                }
                self.epochs.insert(s.run_id.clone(), s.epoch.clone());
                return None;
            }
            ClientEvent::Reset(r) => {
                self.epochs.insert(r.run_id.clone(), r.epoch.clone());
                self.runs.insert(r.run_id.clone(), r.snapshot.clone());
                r.run_id.clone()
            }
            ClientEvent::Event(e) => {
                let snap = match self.runs.get_mut(&e.run_id) {
                    Some(s) => s,
                    None => {
                        let epoch = self.epochs.get(&e.run_id)?.clone();
                        self.runs
                            .entry(e.run_id.clone())
                            .or_insert_with(|| RunSnapshot::empty(e.run_id.clone(), epoch))
                    }
                };
                snap.apply(e);
                e.run_id.clone()
            }
            _ => return None,
        };
        let snap = self.runs.get(&run_id)?;
        Some(json!({"kind": "folded", "run_id": run_id, "snapshot": snap}))
    }
}

fn print(out: &mut impl Write, v: &Value) -> Result<()> {
    writeln!(out, "{v}")?;
    out.flush()?;
    Ok(())
}

/// Runs the adapter.
pub(crate) fn run(_args: ClientAdapterArgs) -> Result<ExitCode> {
    let env = AdapterEnv::from_env()?;
    eprintln!("runwire client-adapter: RUNWIRE_SEED={}", env.seed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(drive(env))
}

async fn drive(env: AdapterEnv) -> Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Runs not yet settled: a run settles with a terminal status, or when its
    // subscription fails for good (the client no longer wants it).
    let pending = Arc::new(Mutex::new(env.runs.clone()));
    let mut client = Client::connect(env.config);
    let handle = client.handle();
    let mut closing = false;
    let mut folds = Folds::default();
    while let Some(ev) = client.next().await {
        if let Some(v) = line(&ev) {
            print(&mut out, &v)?;
        }
        if let Some(v) = folds.fold(&ev) {
            print(&mut out, &v)?;
        }
        let settled = match &ev {
            ClientEvent::Event(e) if e.payload.is_terminal() => Some(e.run_id.clone()),
            ClientEvent::Reset(r) if r.snapshot.is_terminal() => Some(r.run_id.clone()),
            ClientEvent::Error(e) if e.ends_subscription() => e.run_id.clone(),
            _ => None,
        };
        if let Some(run_id) = settled {
            let mut p = pending.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            p.retain(|r| *r != run_id);
            if p.is_empty() && !closing {
                closing = true;
                // RW-CONN-11: close with 1000 and do not reconnect.
                handle.close();
            }
        }
        match &ev {
            ClientEvent::State(s) if s.state == ConnectionState::Closed => {
                return Ok(ExitCode::SUCCESS);
            }
            ClientEvent::Error(e) if e.terminal => return Ok(ExitCode::from(1)),
            _ => {}
        }
    }
    if closing {
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("the client stopped without a terminal error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_entries() {
        let r = parse_run("run-1").unwrap();
        assert_eq!(r, SubscriptionRequest::new(RunId::new("run-1").unwrap()));
        let r = parse_run("run-1@7").unwrap();
        assert_eq!((r.after_seq, r.epoch), (Some(7), None));
        let r = parse_run(" run:x@e-1:12 ").unwrap();
        assert_eq!(r.run_id.as_str(), "run:x");
        assert_eq!(r.after_seq, Some(12));
        assert_eq!(r.epoch.unwrap().as_str(), "e-1");
        assert!(parse_run("run@x").is_err());
        assert!(parse_run("bad/id").is_err());
        assert!(parse_run("r@bad epoch:1").is_err());
    }

    fn ev(seq: u64, ty: &str, data: Value) -> ClientEvent {
        ClientEvent::Event(
            serde_json::from_value(json!({
                "event_id": format!("ev-{seq}"), "run_id": "run-1", "seq": seq, "type": ty,
                "time": "2026-11-22T10:00:00Z", "data": data,
            }))
            .unwrap(),
        )
    }

    fn subscribed(epoch: &str) -> ClientEvent {
        ClientEvent::Subscribed(
            serde_json::from_value(json!({
                "type": "subscribed", "run_id": "run-1", "epoch": epoch, "after_seq": 0, "head_seq": 0,
            }))
            .unwrap(),
        )
    }

    /// RW-TYPE-5, RW-TYPE-7, RW-TYPE-16 and RW-SNAP-3 through the adapter's fold: the
    /// last `folded` line holds the merged progress and labels, the replaced todos, and
    /// is unchanged by a repeat.
    #[test]
    fn folded_lines_follow_the_folding_rules() {
        let mut f = Folds::default();
        assert!(f.fold(&subscribed("e1")).is_none());
        f.fold(&ev(
            1,
            "run.progress",
            json!({"percent": 40, "step": "compile"}),
        ));
        f.fold(&ev(
            2,
            "run.metadata",
            json!({"labels": {"a": "1", "b": "1"}}),
        ));
        f.fold(&ev(
            3,
            "todo.updated",
            json!({"items": [{"id": "x", "text": "x", "status": "pending"}]}),
        ));
        f.fold(&ev(4, "run.progress", json!({"percent": 60})));
        f.fold(&ev(5, "run.metadata", json!({"labels": {"b": "2"}})));
        let line = f
            .fold(&ev(
                6,
                "todo.updated",
                json!({"items": [{"id": "y", "text": "y", "status": "pending"}]}),
            ))
            .unwrap();
        assert_eq!(line["kind"], "folded");
        assert_eq!(line["run_id"], "run-1");
        let snap = &line["snapshot"];
        assert_eq!(snap["as_of_seq"], 6);
        assert_eq!(snap["progress"]["step"], "compile");
        assert_eq!(snap["progress"]["percent"], 60.0);
        assert_eq!(snap["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        assert_eq!(
            snap["todos"],
            json!([{"id": "y", "text": "y", "status": "pending"}])
        );
        // A repeat of seq 1 changes nothing.
        let again = f
            .fold(&ev(1, "run.progress", json!({"step": "fetch"})))
            .unwrap();
        assert_eq!(again["snapshot"], *snap);
        // A subscription in a new epoch starts the fold over.
        f.fold(&subscribed("e2"));
        let fresh = f
            .fold(&ev(1, "run.phase", json!({"phase": "plan"})))
            .unwrap();
        assert_eq!(fresh["snapshot"]["epoch"], "e2");
        assert!(fresh["snapshot"].get("progress").is_none());
    }
}
