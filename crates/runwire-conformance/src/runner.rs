//! The executor: runs scenarios (concurrently where they share no state, `@serial`
//! ones alone afterwards), bounds each by its timeout, grades the outcome, and reruns
//! the inconclusive ones alone.
//!
//! # Lateness-aware grading
//!
//! A step that fails a timing judgment says by how much it missed its bound and over
//! which interval ([`StepFail::timing`]). The runner asks the lateness probe
//! ([`runwire_mock::lateness`]) for the worst lateness of the kit's own timers over
//! that interval: a miss no larger than it is *inconclusive* (the machine may have
//! caused it), a larger one is a violation. Inconclusive scenarios are rerun after
//! all others, one at a time, up to `retries` times (the client suite at twice the
//! previous time scale): the first attempt that passes or fails conclusively decides;
//! if every attempt is inconclusive the grade stays inconclusive, which neither passes
//! nor fails the run.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{FutureExt, StreamExt, stream};
use runwire_mock::lateness::{Probe, TimingMiss};
use tokio::time::Instant;

use crate::model::{
    Attempt, Grade, Level, ScenarioDef, ScenarioResult, StepDef, StepResult, StepStatus, WireEntry,
};

/// Records a scenario's wire transcript.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    entries: Arc<Mutex<Vec<WireEntry>>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
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
    /// A timing judgment that missed its bound: the runner compares the miss with the
    /// lateness measured over its interval, and grades the scenario inconclusive when
    /// the lateness explains it.
    pub timing: Option<TimingMiss>,
    /// Already judged inconclusive (the mock server judged the client's timing).
    pub inconclusive: bool,
}

impl StepFail {
    /// A failed expectation tied to a requirement.
    pub fn req(requirement: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            requirement: Some(requirement.into()),
            message: message.into(),
            not_implemented: false,
            timing: None,
            inconclusive: false,
        }
    }

    /// A failure without a specific requirement (the scenario's requirements apply).
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            requirement: None,
            message: message.into(),
            not_implemented: false,
            timing: None,
            inconclusive: false,
        }
    }

    /// The target cannot run this scenario.
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self {
            requirement: None,
            message: message.into(),
            not_implemented: true,
            timing: None,
            inconclusive: false,
        }
    }

    /// A timing judgment of `requirement` that missed its bound by `miss.margin`.
    pub fn timing(
        requirement: impl Into<String>,
        message: impl Into<String>,
        miss: TimingMiss,
    ) -> Self {
        Self {
            timing: Some(miss),
            ..Self::req(requirement, message)
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
    /// How long this scenario needs at least, once the target's timers are known
    /// (for example three heartbeat intervals of what the server announced): the
    /// runner extends the scenario's deadline to it (never past the global one).
    fn min_timeout(&self) -> Option<Duration> {
        None
    }
}

/// How one attempt of a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttemptCtx {
    /// 1 for the first attempt.
    pub number: u32,
    /// Multiplies the suite's time scale (reruns of the client suite double it).
    pub scale_factor: f64,
    /// The scenario runs alone (a rerun).
    pub alone: bool,
}

impl AttemptCtx {
    /// The first attempt, at the suite's own time scale.
    pub const FIRST: Self = Self {
        number: 1,
        scale_factor: 1.0,
        alone: false,
    };
}

/// Makes a fresh world per scenario.
pub trait WorldFactory: Send + Sync {
    /// A world for `scenario`, with its seed, for one attempt.
    fn make(&self, scenario: &ScenarioDef, seed: u64, attempt: AttemptCtx) -> Box<dyn World>;
    /// Whether a step text is defined (checked before anything runs).
    fn is_defined(&self, text: &str) -> bool;
    /// The time scale the worlds of this factory run at (before an attempt's factor).
    fn time_scale(&self) -> f64;
    /// Whether a rerun may run at a larger time scale (the client suite: the mock
    /// scales every fixture timer and the adapter's configuration with it).
    fn rescalable(&self) -> bool {
        false
    }
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
    /// How many times an inconclusive scenario is rerun at most.
    pub retries: u32,
    /// The lateness probe timing judgments are compared with.
    pub probe: Probe,
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

/// The level of a requirement in the spec (`spec/requirements.json`, embedded).
pub fn requirement_level(id: &str) -> Option<Level> {
    static LEVELS: std::sync::OnceLock<std::collections::BTreeMap<String, Level>> =
        std::sync::OnceLock::new();
    LEVELS
        .get_or_init(|| {
            crate::coverage::requirements()
                .into_iter()
                .map(|r| (r.id, r.level))
                .collect()
        })
        .get(id)
        .copied()
}

/// The judgment of a failed step: a violation, or inconclusive when the failure was
/// a timing miss within the measured lateness. Appends the numbers to the message.
fn judge_fail(f: &mut StepFail, probe: &Probe) -> bool {
    if let Some(miss) = f.timing {
        let (late, explained) = miss.judge(probe);
        f.message.push_str(&format!(
            " (missed by {:.1} ms; the kit's own timers ran up to {:.1} ms late meanwhile{})",
            miss.margin.as_secs_f64() * 1000.0,
            late.as_secs_f64() * 1000.0,
            if explained {
                ": inconclusive, the machine may have caused it"
            } else {
                ""
            }
        ));
        return explained;
    }
    f.inconclusive
}

/// Whether a step with `keyword` is a `Then` (an `And` or `But` after a `Then`
/// counts as one), given the steps before it.
fn is_then(keyword: &str, before: &[StepResult]) -> bool {
    keyword == "Then"
        || (keyword == "And" || keyword == "But")
            && before
                .iter()
                .rev()
                .find(|s| s.keyword != "And" && s.keyword != "But")
                .is_some_and(|s| s.keyword == "Then")
}

/// Grades the failure `f` of step `st`: the scenario's grade, the requirement it
/// violated (none when not implemented), and the message.
fn grade_failure(
    sc: &ScenarioDef,
    st: &StepDef,
    f: &mut StepFail,
    probe: &Probe,
) -> (Grade, Option<String>, String) {
    if f.not_implemented {
        return (
            Grade::NotImplemented,
            None,
            format!("not implemented: {}", f.message),
        );
    }
    let inconclusive = judge_fail(f, probe);
    let req = f.requirement.clone().unwrap_or_else(|| first_req(sc));
    let level = requirement_level(&req).unwrap_or(sc.level);
    let grade = if inconclusive {
        Grade::Inconclusive
    } else {
        Grade::Fail
    };
    let msg = format!(
        "{req} ({}) {} at step \"{} {}\" (line {}): {}",
        level.as_str(),
        if inconclusive {
            "undecided"
        } else {
            "violated"
        },
        st.keyword,
        st.text,
        st.line,
        f.message
    );
    (grade, Some(req), msg)
}

/// Runs one attempt of a scenario to a graded result.
pub async fn run_one(
    factory: &dyn WorldFactory,
    sc: &ScenarioDef,
    opts: &ExecOptions,
    global_deadline: Instant,
    attempt: AttemptCtx,
) -> ScenarioResult {
    let seed = scenario_seed(opts.seed, &sc.id);
    let started = Instant::now();
    let mut deadline = (started + opts.scenario_timeout).min(global_deadline);
    let mut world = factory.make(sc, seed, attempt);
    let rec = world.recorder();
    if attempt.number > 1 {
        rec.note(
            "runner",
            format!(
                "attempt {} (alone, time scale {}): the previous attempt was inconclusive",
                attempt.number,
                factory.time_scale() * attempt.scale_factor
            ),
        );
    }
    let mut steps = Vec::new();
    let mut grade = Grade::Pass;
    let mut message = None;
    let mut violated = None;
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
        if let Some(min) = world.min_timeout() {
            deadline = deadline.max(started + min).min(global_deadline);
        }
        rec.note("runner", format!("step: {} {}", st.keyword, st.text));
        let t0 = Instant::now();
        let is_then = is_then(&st.keyword, &steps);
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
                deadline.saturating_duration_since(started).as_millis()
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
                let (g, v, msg) = grade_failure(sc, st, &mut f, &opts.probe);
                (grade, violated) = (g, v);
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
        let level = requirement_level(&req).unwrap_or(sc.level);
        let msg = format!("{req} ({}) violated: {}", level.as_str(), f.message);
        rec.note("runner", &msg);
        violated = Some(req);
        message = Some(msg);
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), world.teardown()).await;
    let ended = std::time::Instant::now();
    let lateness: crate::model::Lateness = opts.probe.summary(started.into_std(), ended).into();
    // A failure that names several requirements ("RW-A-1, RW-A-2") counts at the
    // strongest of them.
    let violated_level = violated
        .as_deref()
        .and_then(|v| v.split(", ").filter_map(requirement_level).min());
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
        violated,
        violated_level,
        time_scale: factory.time_scale() * attempt.scale_factor,
        lateness: Some(lateness),
        attempts: Vec::new(),
    }
}

/// Runs scenarios: the parallel ones `jobs` at a time, then the `@serial` ones alone,
/// then reruns the inconclusive ones alone (up to `opts.retries` times each).
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
            async move {
                (
                    i,
                    run_one(&*f, sc, opts, global_deadline, AttemptCtx::FIRST).await,
                )
            }
        }))
        .buffer_unordered(opts.jobs.max(1));
        while let Some((i, r)) = s.next().await {
            progress(&r);
            results[i] = Some(r);
        }
    }
    for i in serial {
        let r = run_one(
            &*factory,
            &scenarios[i],
            opts,
            global_deadline,
            AttemptCtx {
                alone: true,
                ..AttemptCtx::FIRST
            },
        )
        .await;
        progress(&r);
        results[i] = Some(r);
    }
    for (i, slot) in results.iter_mut().enumerate() {
        let Some(first) = slot.take() else { continue };
        *slot = Some(
            rerun_inconclusive(
                &*factory,
                &scenarios[i],
                opts,
                global_deadline,
                first,
                progress,
            )
            .await,
        );
    }
    results.into_iter().flatten().collect()
}

/// Reruns an inconclusive result alone until an attempt decides (passes or fails
/// conclusively) or `opts.retries` reruns are spent; the result returned is the last
/// attempt's, with the earlier ones in `attempts`.
async fn rerun_inconclusive(
    factory: &dyn WorldFactory,
    sc: &ScenarioDef,
    opts: &ExecOptions,
    global_deadline: Instant,
    first: ScenarioResult,
    progress: &(dyn Fn(&ScenarioResult) + Sync),
) -> ScenarioResult {
    let mut current = first;
    let mut attempts = Vec::new();
    let mut factor = 1.0;
    let mut number = 1;
    while current.grade == Grade::Inconclusive
        && number <= opts.retries
        && Instant::now() < global_deadline
    {
        number += 1;
        if factory.rescalable() {
            factor *= 2.0;
        }
        attempts.push(Attempt {
            grade: current.grade,
            message: current.message.clone(),
            duration_ms: current.duration_ms,
            time_scale: current.time_scale,
            alone: number > 2 || sc.serial,
            lateness: current.lateness,
        });
        current = run_one(
            factory,
            sc,
            opts,
            global_deadline,
            AttemptCtx {
                number,
                scale_factor: factor,
                alone: true,
            },
        )
        .await;
        current.attempts = attempts.clone();
        progress(&current);
    }
    if current.attempts.is_empty() && !attempts.is_empty() {
        current.attempts = attempts;
    }
    current
}
