//! The client suite: each scenario plays fixtures of the mock server
//! (`runwire-mock`) to the client under test, spawned per scenario as an adapter
//! command (`docs/client-adapter.md`), and grades the mock's verdict.

use std::{collections::BTreeMap, ffi::OsString, path::Path, sync::Arc};

use runwire_mock::{Direction, Fixture, Mock, MockOptions, Outcome, Report, What};

use crate::{
    model::{Error, ScenarioDef, WireEntry},
    pattern,
    runner::{AttemptCtx, BoxFut, Recorder, StepFail, StepResultT, World, WorldFactory},
};

/// Every client step pattern.
pub static STEP_PATTERNS: &[&str] = &[
    "the client under test plays fixture {s}",
    "the client passes the fixture",
    "the client is judged to violate {s}",
];

/// A client under test: a command spawned per scenario.
#[derive(Debug, Clone)]
pub struct ClientTarget {
    /// The program.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment (e.g. fault selection of a test adapter).
    pub env: Vec<(String, String)>,
    /// A fault injected between the mock and the adapter (the kit's self-test).
    #[cfg(feature = "self-test")]
    pub fault: Option<crate::faults::ClientFault>,
    /// How the target is described in reports.
    pub description: String,
}

impl ClientTarget {
    /// A command to spawn per scenario, without extra environment (or a fault).
    pub fn new(program: OsString, args: Vec<OsString>, description: String) -> Self {
        Self {
            program,
            args,
            env: Vec::new(),
            #[cfg(feature = "self-test")]
            fault: None,
            description,
        }
    }
}

/// Makes client-suite worlds.
pub struct ClientFactory {
    target: Arc<ClientTarget>,
    fixtures: Arc<BTreeMap<String, Fixture>>,
    time_scale: f64,
    probe: runwire_mock::Probe,
}

impl std::fmt::Debug for ClientFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientFactory").finish_non_exhaustive()
    }
}

impl ClientFactory {
    /// A factory over the embedded fixtures, or those of `fixtures_dir`.
    pub fn new(
        target: ClientTarget,
        fixtures_dir: Option<&Path>,
        time_scale: f64,
        probe: runwire_mock::Probe,
    ) -> Result<Self, Error> {
        let mut map = BTreeMap::new();
        if let Some(dir) = fixtures_dir {
            for (_, f) in runwire_mock::load_dir(dir).map_err(|e| Error::Fixture(e.to_string()))? {
                map.insert(f.id.clone(), f);
            }
        } else {
            for (name, text) in crate::features::embedded_fixtures() {
                let f = Fixture::parse(text, name).map_err(|e| Error::Fixture(e.to_string()))?;
                map.insert(f.id.clone(), f);
            }
        }
        Ok(Self {
            target: Arc::new(target),
            fixtures: Arc::new(map),
            time_scale,
            probe,
        })
    }

    /// The fixture ids known.
    pub fn fixture_ids(&self) -> Vec<String> {
        self.fixtures.keys().cloned().collect()
    }
}

impl WorldFactory for ClientFactory {
    fn make(&self, _scenario: &ScenarioDef, seed: u64, attempt: AttemptCtx) -> Box<dyn World> {
        Box::new(ClientWorld {
            target: Arc::clone(&self.target),
            fixtures: Arc::clone(&self.fixtures),
            scale: self.time_scale * attempt.scale_factor,
            seed,
            rec: Recorder::new(),
            last: None,
            probe: self.probe.clone(),
        })
    }

    fn is_defined(&self, text: &str) -> bool {
        STEP_PATTERNS
            .iter()
            .any(|p| pattern::matches(p, text).is_some())
    }

    fn time_scale(&self) -> f64 {
        self.time_scale
    }

    fn rescalable(&self) -> bool {
        true
    }
}

struct ClientWorld {
    target: Arc<ClientTarget>,
    fixtures: Arc<BTreeMap<String, Fixture>>,
    scale: f64,
    seed: u64,
    rec: Recorder,
    last: Option<Report>,
    probe: runwire_mock::Probe,
}

fn to_wire(e: &runwire_mock::Entry) -> WireEntry {
    let actor = if e.conn == 0 {
        match e.dir {
            Direction::App => "app".to_owned(),
            _ => "mock".to_owned(),
        }
    } else {
        format!("conn{}", e.conn)
    };
    let dir = match e.dir {
        Direction::In => "in",
        Direction::Out => "out",
        Direction::Mock | Direction::App => "note",
    };
    let text = match &e.what {
        What::Text { text } => text.clone(),
        What::Line { line } => format!("app: {line}"),
        What::Stderr { line } => format!("stderr: {line}"),
        other => {
            let r = e.render();
            let _ = other;
            r.split_once("] ").map(|x| x.1.to_owned()).unwrap_or(r)
        }
    };
    let (actor, dir) = match e.dir {
        Direction::In => (actor, "in"),
        _ => (actor, dir),
    };
    WireEntry {
        t_ms: e.t_ms,
        actor,
        dir: dir.to_owned(),
        text,
    }
}

impl ClientWorld {
    async fn play(&mut self, id: &str) -> StepResultT {
        let fixture = self
            .fixtures
            .get(id)
            .cloned()
            .ok_or_else(|| StepFail::msg(format!("step error: no fixture {id:?}")))?;
        let opts = MockOptions {
            time_scale: self.scale,
            seed: Some(self.seed),
            probe: Some(self.probe.clone()),
            ..MockOptions::default()
        };
        let mut mock = Mock::start(fixture, opts)
            .await
            .map_err(|e| StepFail::msg(format!("the mock could not start: {e}")))?;
        self.rec
            .note("mock", format!("fixture {id} at {}", mock.url()));
        #[cfg(feature = "self-test")]
        let faulty = match self.target.fault {
            Some(fault) => Some(self.through_fault(&mut mock, fault).await?),
            None => None,
        };
        #[cfg(not(feature = "self-test"))]
        let faulty: Option<std::convert::Infallible> = None;
        if faulty.is_some() {
            // The adapter runs behind the fault proxy.
        } else if self.target.env.is_empty() {
            mock.spawn_adapter(self.target.program.clone(), &self.target.args)
                .map_err(|e| StepFail::msg(e.to_string()))?;
        } else {
            // Extra environment: wrap through `env` semantics by setting it on this
            // process's children only (the adapter inherits it).
            let mut args: Vec<OsString> = Vec::new();
            for (k, v) in &self.target.env {
                args.push(format!("{k}={v}").into());
            }
            args.push(self.target.program.clone());
            args.extend(self.target.args.iter().cloned());
            mock.spawn_adapter("env", &args)
                .map_err(|e| StepFail::msg(e.to_string()))?;
        }
        let report = mock.finish().await;
        #[cfg(feature = "self-test")]
        if let Some((_, filter)) = &faulty {
            filter.abort();
        }
        self.rec
            .extend(report.transcript.entries.iter().map(to_wire).collect());
        self.last = Some(report);
        Ok(())
    }

    /// Starts the adapter behind a proxy that injects `fault` (the kit's self-test);
    /// returns the proxy, to hold until the fixture ends, and the task filtering the
    /// adapter's output, to abort then.
    #[cfg(feature = "self-test")]
    async fn through_fault(
        &mut self,
        mock: &mut Mock,
        fault: crate::faults::ClientFault,
    ) -> Result<(crate::faults::FaultyClient, tokio::task::JoinHandle<()>), StepFail> {
        let mut fc = crate::faults::FaultyClient::start(mock.addr(), fault)
            .await
            .map_err(|e| StepFail::msg(e.to_string()))?;
        let sink = mock
            .attach_app()
            .map_err(|e| StepFail::msg(e.to_string()))?;
        let mut env = mock.adapter_env();
        env.extend(self.target.env.iter().cloned());
        let filter = fc
            .spawn(&self.target.program, &self.target.args, env, sink)
            .map_err(|e| StepFail::msg(e.to_string()))?;
        self.rec.note(
            "mock",
            format!("fault {fault:?} injected through {}", fc.url()),
        );
        Ok((fc, filter))
    }

    fn judge(&self) -> StepResultT {
        let Some(r) = &self.last else {
            return Err(StepFail::msg("step error: no fixture played"));
        };
        match r.verdict.outcome {
            Outcome::Pass => Ok(()),
            Outcome::NotImplemented => Err(StepFail::not_implemented(format!(
                "the adapter does not implement {}",
                r.verdict
                    .unimplemented
                    .as_deref()
                    .unwrap_or("a feature this fixture needs")
            ))),
            Outcome::Inconclusive | Outcome::Fail => {
                let inconclusive = r.verdict.outcome == Outcome::Inconclusive;
                // Causes before symptoms: a conclusive violation before an inconclusive
                // one, and a specific violation before a stall ("did not end the
                // connection", "did not exit") that it may well have caused.
                let mut ordered: Vec<&runwire_mock::Violation> =
                    r.verdict.violations.iter().collect();
                ordered.sort_by_key(|v| (v.inconclusive, is_stall(v)));
                let v = ordered.first().copied();
                let mut msg = v.map_or_else(
                    || "the fixture failed".to_owned(),
                    |v| format!("[{}] {}", v.expectation, v.message),
                );
                for o in ordered.iter().skip(1).take(5) {
                    msg.push_str(&format!(
                        "; also {} [{}]: {}",
                        o.requirement, o.expectation, o.message
                    ));
                }
                if ordered.len() > 6 {
                    msg.push_str(&format!("; and {} more", ordered.len() - 6));
                }
                let mut f = StepFail::msg(msg);
                f.requirement = v.map(|v| v.requirement.clone());
                f.inconclusive = inconclusive;
                Err(f)
            }
        }
    }
}

/// Whether a violation is a stall: the client did not do something in time (end the
/// connection, exit, send a message), which is often the symptom of another violation.
fn is_stall(v: &runwire_mock::Violation) -> bool {
    v.message.contains("did not end the connection")
        || v.message.contains("did not exit")
        || v.message.starts_with("no ")
        || v.message.contains("still running")
}

impl World for ClientWorld {
    fn step<'a>(
        &'a mut self,
        _kw: &'a str,
        text: &'a str,
        _doc: Option<&'a str>,
    ) -> BoxFut<'a, StepResultT> {
        Box::pin(async move {
            if let Some(a) = pattern::matches(STEP_PATTERNS[0], text) {
                return self.play(&a[0]).await;
            }
            if pattern::matches(STEP_PATTERNS[1], text).is_some() {
                return self.judge();
            }
            if let Some(a) = pattern::matches(STEP_PATTERNS[2], text) {
                let Some(r) = &self.last else {
                    return Err(StepFail::msg("step error: no fixture played"));
                };
                if !r.verdict.violates(&a[0]) {
                    return Err(StepFail::msg(format!(
                        "expected the verdict to name {}, got: {}",
                        a[0],
                        r.verdict.render()
                    )));
                }
                return Ok(());
            }
            Err(StepFail::msg(format!("undefined step: {text}")))
        })
    }

    fn check<'a>(&'a mut self) -> BoxFut<'a, StepResultT> {
        Box::pin(async { Ok(()) })
    }

    fn teardown(&mut self) -> BoxFut<'_, ()> {
        Box::pin(async {})
    }

    fn recorder(&self) -> Recorder {
        self.rec.clone()
    }
}
