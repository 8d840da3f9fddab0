//! The executor: runs scenarios (concurrently where they share no state, `@serial`
//! ones alone afterwards), bounds each by its timeout, grades the outcome and applies
//! the expected-failures file.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{FutureExt, StreamExt, stream};
use tokio::time::Instant;

use crate::model::{Grade, ScenarioDef, ScenarioResult, StepResult, StepStatus, WireEntry};

/// Records a scenario's wire transcript.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    entries: Arc<Mutex<Vec<WireEntry>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A new, empty transcript starting now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            entries: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn push(&self, actor: &str, dir: &str, text: &str) {
        let t_ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let text = if text.len() > 2000 {
            let mut end = 2000;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}… ({} bytes)", &text[..end], text.len())
        } else {
            text.to_owned()
        };
        if let Ok(mut e) = self.entries.lock()
            && e.len() < 5000
        {
            e.push(WireEntry {
                t_ms,
                actor: actor.to_owned(),
                dir: dir.to_owned(),
                text,
            });
        }
    }

    /// Runner (or mock) → implementation.
    pub fn out(&self, actor: &str, text: &str) {
        self.push(actor, "out", text);
    }

    /// Implementation → runner (or mock).
    pub fn inn(&self, actor: &str, text: &str) {
        self.push(actor, "in", text);
    }

    /// A note.
    pub fn note(&self, actor: &str, text: impl AsRef<str>) {
        self.push(actor, "note", text.as_ref());
    }

    /// Appends entries recorded elsewhere (e.g. by the mock server).
    pub fn extend(&self, entries: Vec<WireEntry>) {
        if let Ok(mut e) = self.entries.lock() {
            e.extend(entries);
        }
    }

    /// The entries so far.
    pub fn take(&self) -> Vec<WireEntry> {
        self.entries.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// Why a step did not hold.
#[derive(Debug, Clone)]
pub struct StepFail {
    /// The requirement the failed expectation proves, when the step knows it.
    pub requirement: Option<String>,
    /// What was expected and what was seen.
    pub message: String,
    /// The implementation does not implement what the step needs.
    pub not_implemented: bool,
}

impl StepFail {
    /// A failed expectation tied to a requirement.
    pub fn req(requirement: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            requirement: Some(requirement.into()),
            message: message.into(),
            not_implemented: false,
        }
    }

    /// A failure without a specific requirement (the scenario's requirements apply).
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            requirement: None,
            message: message.into(),
            not_implemented: false,
        }
    }

    /// The target cannot run this scenario.
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self {
            requirement: None,
            message: message.into(),
            not_implemented: true,
        }
    }
}

impl From<String> for StepFail {
    fn from(s: String) -> Self {
        Self::msg(s)
    }
}

/// The result type of steps.
pub type StepResultT = Result<(), StepFail>;

/// A boxed future.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A scenario's world: executes steps one at a time.
pub trait World: Send {
    /// Executes one step.
    fn step<'a>(
        &'a mut self,
        keyword: &'a str,
        text: &'a str,
        doc: Option<&'a str>,
    ) -> BoxFut<'a, StepResultT>;
    /// Checks invariants observed in the background (called after the last step and
    /// after every `Then`); returns the first violation.
    fn check<'a>(&'a mut self) -> BoxFut<'a, StepResultT>;
    /// Releases resources (closes connections, stops processes).
    fn teardown(&mut self) -> BoxFut<'_, ()>;
    /// The transcript recorder.
    fn recorder(&self) -> Recorder;
}

/// Makes a fresh world per scenario.
pub trait WorldFactory: Send + Sync {
    /// A world for `scenario`, with its seed.
    fn make(&self, scenario: &ScenarioDef, seed: u64) -> Box<dyn World>;
    /// Whether a step text is defined (checked before anything runs).
    fn is_defined(&self, text: &str) -> bool;
}

/// Execution options.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Concurrent scenarios.
    pub jobs: usize,
    /// Upper bound per scenario (already scaled).
    pub scenario_timeout: Duration,
    /// Upper bound for everything (already scaled).
    pub global_timeout: Duration,
    /// The run seed; each scenario derives its own from it and its id.
    pub seed: u64,
}

/// Derives a scenario seed from the run seed and the scenario id (stable across runs
/// and job counts).
pub fn scenario_seed(run_seed: u64, id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ run_seed;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn first_req(sc: &ScenarioDef) -> String {
    sc.requirements.join(", ")
}

/// Runs one scenario to a graded result.
pub async fn run_one(
    factory: &dyn WorldFactory,
    sc: &ScenarioDef,
    opts: &ExecOptions,
    global_deadline: Instant,
) -> ScenarioResult {
    let seed = scenario_seed(opts.seed, &sc.id);
    let started = Instant::now();
    let deadline = (started + opts.scenario_timeout).min(global_deadline);
    let mut world = factory.make(sc, seed);
    let rec = world.recorder();
    let mut steps = Vec::new();
    let mut grade = Grade::Pass;
    let mut message = None;
    let mut failed = false;
    for st in &sc.steps {
        if failed {
            steps.push(StepResult {
                keyword: st.keyword.clone(),
                text: st.text.clone(),
                status: StepStatus::Skipped,
                message: None,
                duration_ms: 0,
            });
            continue;
        }
        rec.note("runner", format!("step: {} {}", st.keyword, st.text));
        let t0 = Instant::now();
        let is_then = st.keyword == "Then"
            || (st.keyword == "And" || st.keyword == "But")
                && steps
                    .iter()
                    .rev()
                    .find(|s: &&StepResult| s.keyword != "And" && s.keyword != "But")
                    .is_some_and(|s| s.keyword == "Then");
        let fut = std::panic::AssertUnwindSafe(world.step(
            &st.keyword,
            &st.text,
            st.docstring.as_deref(),
        ))
        .catch_unwind();
        let res = match tokio::time::timeout_at(deadline, fut).await {
            Ok(Err(_)) => Err(StepFail::msg(
                "internal error: the step definition panicked (a bug in the kit)",
            )),
            Ok(Ok(r)) => match r {
                Ok(()) if is_then => tokio::time::timeout_at(deadline, world.check())
                    .await
                    .unwrap_or(Ok(())),
                other => other,
            },
            Err(_) => Err(StepFail::msg(format!(
                "the scenario did not finish within its timeout of {} ms (this step was running)",
                opts.scenario_timeout.as_millis()
            ))),
        };
        let duration_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        match res {
            Ok(()) => steps.push(StepResult {
                keyword: st.keyword.clone(),
                text: st.text.clone(),
                status: StepStatus::Passed,
                message: None,
                duration_ms,
            }),
            Err(mut f) => {
                failed = true;
                // A protocol violation seen on the wire explains a failed wait better
                // than the wait itself ("gap in run A" rather than "29 of 30 arrived").
                if !f.not_implemented
                    && let Ok(Err(v)) =
                        tokio::time::timeout(Duration::from_secs(1), world.check()).await
                {
                    let then = match &f.requirement {
                        Some(r) => format!("{r}: {}", f.message),
                        None => f.message.clone(),
                    };
                    f = StepFail::req(
                        v.requirement.unwrap_or_else(|| first_req(sc)),
                        format!("{}; then: {then}", v.message),
                    );
                }
                let req = f.requirement.clone().unwrap_or_else(|| first_req(sc));
                let msg = if f.not_implemented {
                    grade = Grade::NotImplemented;
                    format!("not implemented: {}", f.message)
                } else {
                    grade = Grade::Fail;
                    format!(
                        "{req} ({}) violated at step \"{} {}\" (line {}): {}",
                        sc.level.as_str(),
                        st.keyword,
                        st.text,
                        st.line,
                        f.message
                    )
                };
                rec.note("runner", &msg);
                steps.push(StepResult {
                    keyword: st.keyword.clone(),
                    text: st.text.clone(),
                    status: if f.not_implemented {
                        StepStatus::NotImplemented
                    } else {
                        StepStatus::Failed
                    },
                    message: Some(msg.clone()),
                    duration_ms,
                });
                message = Some(msg);
            }
        }
    }
    if !failed && let Ok(Err(f)) = tokio::time::timeout_at(deadline, world.check()).await {
        grade = Grade::Fail;
        let req = f.requirement.clone().unwrap_or_else(|| first_req(sc));
        let msg = format!("{req} ({}) violated: {}", sc.level.as_str(), f.message);
        rec.note("runner", &msg);
        message = Some(msg);
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), world.teardown()).await;
    ScenarioResult {
        id: sc.id.clone(),
        suite: sc.suite,
        feature: sc.feature.clone(),
        name: sc.name.clone(),
        area: sc.area.clone(),
        level: sc.level,
        requirements: sc.requirements.clone(),
        tags: sc.tags.clone(),
        grade,
        message,
        expected_failure_reason: None,
        seed,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        steps,
        transcript: rec.take(),
    }
}

/// Runs scenarios: the parallel ones `jobs` at a time, then the `@serial` ones alone.
/// Results come back in scenario order. `progress` is called as each finishes.
pub async fn run_all(
    factory: Arc<dyn WorldFactory>,
    scenarios: &[ScenarioDef],
    opts: &ExecOptions,
    progress: &(dyn Fn(&ScenarioResult) + Sync),
) -> Vec<ScenarioResult> {
    let global_deadline = Instant::now() + opts.global_timeout;
    let mut results: Vec<Option<ScenarioResult>> = vec![None; scenarios.len()];
    let parallel: Vec<usize> = (0..scenarios.len())
        .filter(|i| !scenarios[*i].serial)
        .collect();
    let serial: Vec<usize> = (0..scenarios.len())
        .filter(|i| scenarios[*i].serial)
        .collect();
    {
        let mut s = stream::iter(parallel.into_iter().map(|i| {
            let f = Arc::clone(&factory);
            let sc = &scenarios[i];
            async move { (i, run_one(&*f, sc, opts, global_deadline).await) }
        }))
        .buffer_unordered(opts.jobs.max(1));
        while let Some((i, r)) = s.next().await {
            progress(&r);
            results[i] = Some(r);
        }
    }
    for i in serial {
        let r = run_one(&*factory, &scenarios[i], opts, global_deadline).await;
        progress(&r);
        results[i] = Some(r);
    }
    results.into_iter().flatten().collect()
}
