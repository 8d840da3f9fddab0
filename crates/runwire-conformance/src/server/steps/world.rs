//! The state of one server scenario ([`ServerWorld`]) and how it runs a step: it
//! finds the step's registration, runs it, and reads its failure in the light of what
//! the scenario's connections saw.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use runwire_mock::TimingMiss;
use serde_json::Value;
use tokio::time::Instant;

use super::{On, auth};
use crate::{
    http::HttpAnswer,
    model::ScenarioDef,
    runner::{BoxFut, Recorder, StepFail, StepResultT, World},
    server::{ServerTarget, conn::Conn, flood, slow::SlowPlan},
};

/// A run the scenario names by an alias.
pub(super) struct RunInfo {
    pub(super) id: String,
    pub(super) epoch: Option<String>,
    pub(super) head: u64,
    pub(super) acked: Vec<(u64, Instant)>,
}

/// The state of one server scenario.
pub(crate) struct ServerWorld {
    pub(super) target: Arc<ServerTarget>,
    pub(super) scale: f64,
    pub(super) ns: String,
    pub(super) rng: ChaCha8Rng,
    pub(super) rec: Recorder,
    pub(super) runs: BTreeMap<String, RunInfo>,
    pub(super) clients: BTreeMap<String, Conn>,
    pub(super) retired: Vec<Conn>,
    pub(super) last: Option<HttpAnswer>,
    pub(super) last_append: Option<(String, Vec<u8>, Value)>,
    pub(super) retry_answer: Option<Value>,
    pub(super) last_error: BTreeMap<String, Value>,
    pub(super) resets: BTreeMap<String, Value>,
    pub(super) restarting: Option<tokio::task::JoinHandle<Result<(), String>>>,
    pub(super) expires: BTreeMap<String, std::time::SystemTime>,
    /// The cursor each (client, run alias) last subscribed from by a computed seq.
    pub(super) sub_cursors: BTreeMap<(String, String), u64>,
    /// The stop-reading plan of each client that stopped reading (§15).
    pub(super) slow: BTreeMap<String, SlowPlan>,
    /// Whether a step will send hello with an expired token (minted before the
    /// first step, so that minting never runs while a socket waits for its hello).
    pub(super) needs_expired_token: bool,
    /// That token, once minted.
    pub(super) expired_token: Option<String>,
    /// When the scenario began.
    pub(super) started: Instant,
    /// The raw sockets of the admission steps (`crate::server::admission`).
    pub(super) admission: crate::server::admission::State,
    /// The scenario's seed (the flood step names its runs from it).
    pub(super) seed: u64,
    /// A flood step ran: the failures of the later steps are read in its light
    /// (`crate::server::flood::blame_epoch_mismatch`).
    pub(super) flooded: bool,
}

impl ServerWorld {
    /// A failure while the server had closed, as a slow consumer, a client the
    /// scenario never stopped reading: the kit's reader fell behind, which on a busy
    /// machine is the kit's lateness, not the server's fault. The miss is the age
    /// bound (the kit would have had to fall behind longer than it for a correct
    /// server to give up), judged against the lateness measured since the scenario
    /// began.
    pub(super) fn unexpected_slow_close(&self, f: StepFail) -> StepFail {
        if f.timing.is_some() || f.inconclusive || f.not_implemented {
            return f;
        }
        let Some(c) = self.clients.values().chain(self.retired.iter()).find(|c| {
            !self.slow.contains_key(&c.name) && c.closed.as_ref().is_some_and(|x| x.0 == Some(4100))
        }) else {
            return f;
        };
        let age = c
            .welcome
            .as_ref()
            .and_then(|(w, _)| w.pointer("/limits/slow_consumer_max_age_ms"))
            .and_then(Value::as_u64)
            .unwrap_or(crate::server::slow::DEFAULT_MAX_AGE_MS);
        StepFail::timing(
            f.requirement.unwrap_or_else(|| "RW-SLOW-1".into()),
            format!(
                "{}; the server had closed client {} as a slow consumer although the kit never stopped reading it (its reader may have fallen behind on a busy machine)",
                f.message, c.name
            ),
            TimingMiss::new(Duration::from_millis(age), self.started, Instant::now()),
        )
    }

    pub(crate) fn new(target: Arc<ServerTarget>, scale: f64, seed: u64, sc: &ScenarioDef) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ns = format!("{:08x}", rng.random::<u32>());
        let rec = Recorder::new();
        rec.note("runner", format!("scenario {} seed {seed}", sc.id));
        Self {
            target,
            scale,
            ns,
            rng,
            rec,
            runs: BTreeMap::new(),
            clients: BTreeMap::new(),
            retired: Vec::new(),
            last: None,
            last_append: None,
            retry_answer: None,
            last_error: BTreeMap::new(),
            resets: BTreeMap::new(),
            restarting: None,
            expires: BTreeMap::new(),
            sub_cursors: BTreeMap::new(),
            slow: BTreeMap::new(),
            needs_expired_token: sc.steps.iter().any(|st| {
                super::find(&st.text).is_some_and(|(s, _)| s.pattern == auth::HELLO_EXPIRED)
            }),
            expired_token: None,
            started: Instant::now(),
            admission: crate::server::admission::State::default(),
            flooded: false,
            seed,
        }
    }

    /// Runs a step on the scenario's clients and runs ([`On::Scenario`]).
    async fn scenario_step(
        &mut self,
        step: &super::Step,
        args: Vec<String>,
        doc: Option<&str>,
    ) -> StepResultT {
        if std::mem::take(&mut self.needs_expired_token)
            && let Some(m) = self.target.token_minter.clone()
        {
            self.expired_token = Some(
                m.mint(0)
                    .await
                    .map_err(|e| StepFail::msg(format!("minting a token failed: {e}")))?,
            );
        }
        let r = step.run(self, args, doc).await;
        r.map_err(|f| self.unexpected_slow_close(f))
    }
}

impl World for ServerWorld {
    fn step<'a>(
        &'a mut self,
        _kw: &'a str,
        text: &'a str,
        doc: Option<&'a str>,
    ) -> BoxFut<'a, StepResultT> {
        Box::pin(async move {
            let r = match super::find(text) {
                None => Err(StepFail::msg(format!("undefined step: {text}"))),
                Some((step, args)) => match step.on {
                    On::OwnClient => {
                        self.flooded = true;
                        return step.run(self, args, doc).await;
                    }
                    On::RawSockets => step.run(self, args, doc).await,
                    On::Scenario => self.scenario_step(step, args, doc).await,
                },
            };
            if self.flooded {
                r.map_err(flood::blame_epoch_mismatch)
            } else {
                r
            }
        })
    }

    /// Sized from what the server announced: a scenario may wait for several
    /// heartbeat intervals, a pong timeout and the hello deadline, which a server
    /// run with its production timers (a 25 s heartbeat) needs far more than the
    /// default scenario timeout for.
    fn min_timeout(&self) -> Option<Duration> {
        let need = self
            .clients
            .values()
            .chain(self.retired.iter())
            .filter_map(|c| c.welcome.as_ref())
            .map(|(w, _)| {
                let n = |p: &str| w.pointer(p).and_then(Value::as_u64).unwrap_or(0);
                4 * n("/heartbeat_interval_ms")
                    + 2 * n("/pong_timeout_ms")
                    + self.target.hello_timeout_ms
            })
            .max()?;
        Some(Duration::from_millis(need) + self.ms(10_000))
    }

    fn check<'a>(&'a mut self) -> BoxFut<'a, StepResultT> {
        Box::pin(async move {
            for c in self.clients.values().chain(self.retired.iter()) {
                if let Some(v) = c.violations.first() {
                    return Err(StepFail::req(
                        v.requirement,
                        format!("client {}: {}", c.name, v.message),
                    ));
                }
            }
            Ok(())
        })
    }

    fn teardown(&mut self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            for c in self.clients.values_mut() {
                if c.closed.is_none() && !c.ended {
                    c.close().await;
                }
            }
            self.clients.clear();
            self.retired.clear();
        })
    }

    fn recorder(&self) -> Recorder {
        self.rec.clone()
    }
}
