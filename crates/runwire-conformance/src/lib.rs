//! The Runwire conformance kit: two Gherkin suites that prove a server or a client
//! right or wrong against `spec/protocol.md`, graded per requirement level, with
//! console, JUnit, JSON and HTML reports.
//!
//! - **Server suite** (`features/server/*.feature`): the runner is the producer (the
//!   HTTP ingest API) and one or many WebSocket clients of a [`ServerTarget`]. Every
//!   frame is checked as it arrives against the invariants of the protocol (no gap,
//!   no duplicate, nothing before `welcome`, nothing after a closing `error`, close
//!   codes matching the error), on top of what each step expects.
//! - **Client suite** (`features/client/*.feature`): the mock server (`runwire-mock`)
//!   plays fixtures (`fixtures/client/*.json`) to a [`ClientTarget`], a command the
//!   runner spawns per scenario (`docs/client-adapter.md`).
//!
//! - **The kit checks itself** (`faults`, behind the `self-test` feature, which only
//!   the kit's own tests enable): a fault-injecting proxy turns the reference server
//!   and the reference adapter into broken variants (a skipped seq, repeated events,
//!   swallowed pings, a wrong resume cursor, no de-duplication, …); the integration
//!   tests require every variant to fail a scenario that names the violated
//!   requirement, and the reference implementations to pass everything.
//!
//! Every scenario carries its requirement ids (`@RW-SUB-3`), its level (`@must`,
//! `@should`, `@may`) and an area tag. A failure message names the requirement, what
//! was expected and what was seen. The feature files and fixtures are embedded at
//! build time, so an installed binary works anywhere.
//!
//! # Why our own executor over the `gherkin` parser
//!
//! The `cucumber` crate's runner reports passed/failed/skipped steps. This kit needs
//! more: grades per RFC 2119 level (MUST fails the run, SHOULD warns), *not
//! implemented* as its own outcome, expected failures with reasons and stale-entry
//! detection, a wire transcript attached to every scenario, `@serial` scenarios that
//! restart the server after the concurrent ones, and step definitions checked
//! before anything runs. So the kit uses cucumber's Gherkin parser (`gherkin`, with
//! its tag expressions) and a small executor ([`runner`]) of its own.
//!
//! ```no_run
//! # async fn demo() -> Result<(), runwire_conformance::Error> {
//! use runwire_conformance::{ConformOptions, Plan, conform, reference};
//! let server = reference::ReferenceServer::start(reference::reference_config(1.0)).await?;
//! let plan = Plan { server: Some(server.target()), client: None };
//! let report = conform(plan, &ConformOptions::default(), &|_| {}).await?;
//! assert!(report.passed);
//! # Ok(()) }
//! ```

pub mod client;
pub mod coverage;
pub mod expect;
#[cfg(feature = "self-test")]
pub mod faults;
pub mod features;
pub mod fold;
mod http;
pub mod model;
pub mod net;
mod pattern;
pub mod preflight;
#[cfg(feature = "reference")]
pub mod reference;
pub mod report;
pub mod runner;
pub mod server;
pub mod session;

use std::{path::PathBuf, sync::Arc, time::Duration};

pub use client::ClientTarget;
pub use model::{Error, Grade, Level, RunReport, ScenarioDef, ScenarioResult, Suite};
pub use server::{AdmissionDecl, ServerControl, ServerTarget, ShortRetention, TokenMinter};

use crate::{
    features::TagFilter,
    runner::{ExecOptions, WorldFactory},
};

/// What to run against.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// The server under test (runs the server suite).
    pub server: Option<ServerTarget>,
    /// The client under test (runs the client suite).
    pub client: Option<ClientTarget>,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct ConformOptions {
    /// The seed of every random choice (printed; replay with the same value).
    pub seed: u64,
    /// Multiplies every timer and deadline (for slow systems).
    pub time_scale: f64,
    /// The time scale of the client suite, when it differs (the client under test is
    /// a separate process, so its timing includes process scheduling).
    pub client_time_scale: Option<f64>,
    /// Concurrent scenarios.
    pub jobs: usize,
    /// SHOULD failures fail the run.
    pub strict: bool,
    /// Only scenarios matching this tag expression.
    pub tags: Option<TagFilter>,
    /// Feature files from this directory instead of the embedded ones.
    pub features_dir: Option<PathBuf>,
    /// Client fixtures from this directory instead of the embedded ones.
    pub fixtures_dir: Option<PathBuf>,
    /// Upper bound per scenario, in ms (scaled).
    pub scenario_timeout_ms: u64,
    /// Upper bound for everything, in ms (scaled).
    pub global_timeout_ms: u64,
    /// Expected failures.
    pub expected_failures: Option<expect::ExpectedFailures>,
    /// How many times an inconclusive scenario is rerun at most (alone; the client
    /// suite at twice the previous time scale each time).
    pub retries: u32,
    /// The lateness probe timing judgments consult; `None` starts one for the run.
    pub probe: Option<runwire_mock::Probe>,
    /// The preflight measurement, recorded in the report.
    pub calibration: Option<model::Calibration>,
}

impl Default for ConformOptions {
    fn default() -> Self {
        Self {
            seed: 1,
            time_scale: 1.0,
            client_time_scale: None,
            jobs: 8,
            strict: false,
            tags: None,
            features_dir: None,
            fixtures_dir: None,
            scenario_timeout_ms: 60_000,
            global_timeout_ms: 600_000,
            expected_failures: None,
            retries: 2,
            probe: None,
            calibration: None,
        }
    }
}

/// Loads every scenario (embedded, or from `features_dir`).
pub fn load_scenarios(features_dir: Option<&std::path::Path>) -> Result<Vec<ScenarioDef>, Error> {
    let files = match features_dir {
        Some(d) => features::read_dir(d)?,
        None => features::embedded_features()
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect(),
    };
    features::parse(&files)
}

/// Loads every scenario, plus one generated client scenario for each fixture that no
/// feature file plays (so a fixture added to the library is tested at once, in the
/// area `fixtures`, with the fixture's requirements and level as tags).
pub fn load_all(
    features_dir: Option<&std::path::Path>,
    fixtures_dir: Option<&std::path::Path>,
) -> Result<Vec<ScenarioDef>, Error> {
    let mut all = load_scenarios(features_dir)?;
    let fixtures: Vec<runwire_mock::Fixture> = match fixtures_dir {
        Some(d) => runwire_mock::load_dir(d)
            .map_err(|e| Error::Fixture(e.to_string()))?
            .into_iter()
            .map(|(_, f)| f)
            .collect(),
        None => features::embedded_fixtures()
            .iter()
            .map(|(n, t)| runwire_mock::Fixture::parse(t, n))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Fixture(e.to_string()))?,
    };
    let played: std::collections::BTreeSet<String> = all
        .iter()
        .filter(|s| s.suite == Suite::Client)
        .flat_map(|s| s.steps.iter())
        .filter_map(|st| pattern::matches(client::STEP_PATTERNS[0], &st.text))
        .filter_map(|a| a.into_iter().next())
        .collect();
    for f in fixtures {
        if played.contains(&f.id) {
            continue;
        }
        let level = f.level;
        let mut tags = vec!["fixtures".to_owned(), level.as_str().to_ascii_lowercase()];
        tags.extend(f.requirements.iter().cloned());
        all.push(ScenarioDef {
            id: format!("client/fixtures/{}", f.id),
            suite: Suite::Client,
            feature: "Fixtures without a feature file".into(),
            file: format!("fixtures/client/{}.json", f.id),
            line: 0,
            name: format!("{}: {}", f.id, f.title),
            tags,
            requirements: f.requirements.clone(),
            level,
            area: "fixtures".into(),
            serial: false,
            steps: vec![
                model::StepDef {
                    keyword: "When".into(),
                    text: format!("the client under test plays fixture \"{}\"", f.id),
                    docstring: None,
                    line: 0,
                },
                model::StepDef {
                    keyword: "Then".into(),
                    text: "the client passes the fixture".into(),
                    docstring: None,
                    line: 0,
                },
            ],
        });
    }
    Ok(all)
}

/// Checks that every step of `scenarios` of `suite` has a definition.
pub fn check_steps(scenarios: &[ScenarioDef]) -> Result<(), Error> {
    for sc in scenarios {
        for st in &sc.steps {
            let ok = match sc.suite {
                Suite::Server => {
                    server::step_patterns().any(|p| pattern::matches(p, &st.text).is_some())
                }
                Suite::Client => client::STEP_PATTERNS
                    .iter()
                    .any(|p| pattern::matches(p, &st.text).is_some()),
            };
            if !ok {
                return Err(Error::UndefinedStep {
                    file: sc.file.clone(),
                    line: st.line,
                    text: st.text.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Runs the plan and returns the graded report. `progress` sees each result as it
/// finishes.
pub async fn conform(
    plan: Plan,
    opts: &ConformOptions,
    progress: &(dyn Fn(&ScenarioResult) + Sync),
) -> Result<RunReport, Error> {
    let started = tokio::time::Instant::now();
    let all = load_all(opts.features_dir.as_deref(), opts.fixtures_dir.as_deref())?;
    check_steps(&all)?;
    let selected: Vec<ScenarioDef> = all
        .into_iter()
        .filter(|s| opts.tags.as_ref().is_none_or(|t| t.matches(&s.tags)))
        .collect();
    let exec = ExecOptions {
        jobs: opts.jobs,
        scenario_timeout: server::scaled(opts.scenario_timeout_ms, opts.time_scale),
        global_timeout: server::scaled(opts.global_timeout_ms, opts.time_scale),
        seed: opts.seed,
        retries: opts.retries,
        probe: opts
            .probe
            .clone()
            .unwrap_or_else(runwire_mock::Probe::start_default),
    };
    let mut results = Vec::new();
    let mut targets = Vec::new();
    if let Some(t) = plan.server {
        targets.push(model::Target {
            suite: Suite::Server,
            description: t.description.clone(),
        });
        let sc: Vec<ScenarioDef> = selected
            .iter()
            .filter(|s| s.suite == Suite::Server)
            .cloned()
            .collect();
        let f: Arc<dyn WorldFactory> = Arc::new(server::ServerFactory::new(t, opts.time_scale));
        results.extend(runner::run_all(f, &sc, &exec, progress).await);
    }
    if let Some(t) = plan.client {
        targets.push(model::Target {
            suite: Suite::Client,
            description: t.description.clone(),
        });
        let sc: Vec<ScenarioDef> = selected
            .iter()
            .filter(|s| s.suite == Suite::Client)
            .cloned()
            .collect();
        let f: Arc<dyn WorldFactory> = Arc::new(client::ClientFactory::new(
            t,
            opts.fixtures_dir.as_deref(),
            opts.client_time_scale.unwrap_or(opts.time_scale),
            exec.probe.clone(),
        )?);
        results.extend(runner::run_all(f, &sc, &exec, progress).await);
    }
    let mut report = RunReport {
        format: 2,
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        seed: opts.seed,
        time_scale: opts.time_scale,
        strict: opts.strict,
        targets,
        duration_ms: 0,
        counts: model::Counts::default(),
        passed: false,
        results,
        stale_expected_failures: Vec::new(),
        retries: opts.retries,
        calibration: opts.calibration.clone(),
    };
    if let Some(x) = &opts.expected_failures {
        report.stale_expected_failures = x.apply(&mut report.results);
    }
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report.finalize();
    Ok(report)
}

/// `GET <ingest>/healthz`: the status code, or why there was no answer (for waiting
/// on a restarted server).
pub async fn healthz(ingest_url: &str, limit: Duration) -> Result<u16, String> {
    http::request(ingest_url, "GET", "/healthz", None, None, limit)
        .await
        .map(|a| a.status)
}

/// The default scenario timeout as a duration (for callers that print it).
pub fn default_scenario_timeout() -> Duration {
    Duration::from_millis(ConformOptions::default().scenario_timeout_ms)
}
