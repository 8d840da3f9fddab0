//! `runwire conform`: the conformance kit.
//!
//! - `runwire conform` — both suites against the bundled reference server (in
//!   process) and the reference client adapter (`runwire client-adapter`).
//! - `runwire conform server --url ws://… --ingest http://… [--token …]`
//! - `runwire conform client -- CMD ARGS…`
//! - `runwire conform coverage` — requirement × scenario matrix; exit 1 when a MUST
//!   has no scenario.
//! - `runwire conform list` — the scenarios (after `--tags`).
//! - `runwire conform report-schema` — the JSON Schema of `--json`.

use std::{
    ffi::OsString,
    io::Write as _,
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use runwire_conformance::{
    ClientTarget, ConformOptions, Plan, ServerControl, ServerTarget, coverage, expect,
    features::TagFilter, model::report_schema, preflight, reference, report,
};

/// Known bugs of the bundled reference implementations (applied in the default mode).
const REFERENCE_EXPECTED_FAILURES: &str =
    include_str!("../../../../conformance/expected-failures.json");

/// Arguments of `runwire conform`.
#[derive(Debug, Args)]
pub(crate) struct ConformArgs {
    #[command(subcommand)]
    target: Option<Target>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run; boxing buys nothing
enum Target {
    /// Run the server suite against a server given by URL.
    Server(ServerArgs),
    /// Run the client suite against a client adapter command (after `--`).
    Client(ClientArgs),
    /// Print the spec requirement × scenario matrix; exit 1 if a MUST has no scenario.
    Coverage {
        /// List every scenario id per requirement.
        #[arg(long)]
        verbose: bool,
    },
    /// List the scenarios (after --tags).
    List,
    /// Print the JSON Schema of the --json report.
    ReportSchema,
    /// Print every step pattern the feature files may use ({s} a quoted string, {n} a
    /// number, {w} a word, {rest} free text).
    Steps,
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// The stream endpoint, e.g. ws://127.0.0.1:7070/v1/stream.
    #[arg(long)]
    url: String,
    /// The producer API base URL, e.g. http://127.0.0.1:7070.
    #[arg(long)]
    ingest: String,
    /// Also trust the certificate authorities in this PEM file for `wss://` and
    /// `https://` (besides the system's); may be repeated.
    #[arg(long, value_name = "FILE", env = "RUNWIRE_CA_CERT")]
    ca_cert: Vec<std::path::PathBuf>,
    /// A token allowed to append to and read every run (omit if the server requires no
    /// authentication; auth scenarios are then graded not implemented).
    #[arg(long, env = "RUNWIRE_CONFORM_TOKEN")]
    token: Option<String>,
    /// A token allowed to read only runs named `rwc-allowed-*` (per-run authorization).
    #[arg(long, env = "RUNWIRE_CONFORM_LIMITED_TOKEN")]
    limited_token: Option<String>,
    /// A shell command that restarts the server gracefully (restart/shutdown scenarios).
    /// When it has exited, the runner polls `GET <ingest>/healthz` every 100 ms until it
    /// answers 200 (at most 30 s).
    #[arg(long)]
    restart_cmd: Option<String>,
    /// A shell command that prints a token with every permission expiring after
    /// `$RUNWIRE_CONFORM_TTL_MS` milliseconds (0: already expired), for the
    /// token-expiry scenarios (`RW-AUTH-5`, `RW-AUTH-8`).
    #[arg(long)]
    expiring_token_cmd: Option<String>,
    /// The server's hello deadline in ms (it is not announced).
    #[arg(long, default_value_t = runwire_protocol::defaults::HELLO_TIMEOUT_MS)]
    hello_timeout_ms: u64,
    /// The server's header deadline in ms (`RW-SEC-11`, not announced); without it
    /// the header-deadline scenario is graded not implemented.
    #[arg(long)]
    header_timeout_ms: Option<u64>,
    /// The server's body deadline for appends in ms (`RW-SEC-13`); without it the
    /// body-deadline scenario is graded not implemented.
    #[arg(long)]
    body_timeout_ms: Option<u64>,
    /// The most connections one source address may hold before `hello`
    /// (`RW-SEC-12`); without it the pre-hello limit scenario is graded not
    /// implemented. The kit opens that many silent sockets (at most 1024).
    #[arg(long)]
    pre_hello_limit: Option<u32>,
    /// The most WebSocket connections one identity may hold (`RW-SEC-18`); the kit
    /// fills it with `--limited-token` (at most 512). Without it the per-identity
    /// scenario is graded not implemented.
    #[arg(long)]
    identity_limit: Option<u32>,
    /// The server's request size limit in bytes (`RW-SEC-14`); without it the kit
    /// declares a 1 TiB body, over any limit.
    #[arg(long)]
    max_request_bytes: Option<u64>,
    /// Declares that runs whose id starts with PREFIX keep at least their last N events
    /// and are trimmed eventually once they hold more (e.g. `rwc-retained-=50`), for the
    /// retention scenarios (trimmed history 410 `RW-INGEST-17`, reset of a trimmed
    /// cursor `RW-RESUME-5`); without it they are graded not implemented. N should be
    /// well below the announced replay_window_events.
    #[arg(long, value_name = "PREFIX=N")]
    short_retention: Option<runwire_conformance::ShortRetention>,
    /// The largest kernel send buffer of the server's sockets, in bytes (default: this
    /// machine's net.ipv4.tcp_wmem maximum). Declare it when the server runs on another
    /// host or sets SO_SNDBUF: the slow-consumer scenarios count a frame as queued only
    /// once more than this was sent.
    #[arg(long, value_name = "BYTES")]
    server_send_buffer: Option<u64>,
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// The adapter command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<OsString>,
}

#[derive(Debug, Args)]
struct Common {
    /// Only scenarios matching this tag expression, e.g. '@must and @heartbeat'.
    #[arg(long, global = true)]
    tags: Option<String>,
    /// Seed of every random choice (default: random, printed).
    #[arg(long, global = true)]
    seed: Option<u64>,
    /// Multiply every timer and deadline by this (slow systems: 2, 5, …), or `auto`:
    /// measure this machine's timer lateness and the adapter's start-up time first and
    /// choose the scale from them (printed, and recorded in every report).
    #[arg(long, global = true, default_value = "auto")]
    time_scale: TimeScale,
    /// Time scale of the client suite (default: with `--time-scale auto` chosen from
    /// the measured lateness and adapter start-up; otherwise --time-scale, doubled in
    /// the default mode because the adapter is a separate process).
    #[arg(long, global = true)]
    client_time_scale: Option<f64>,
    /// Rerun a scenario whose timing judgments were inconclusive (missed by less than
    /// the measured lateness) up to this many times, alone; the client suite at twice
    /// the previous time scale each time.
    #[arg(long, global = true, default_value_t = 2)]
    retries: u32,
    /// Scenarios run concurrently (those tagged @serial run alone afterwards).
    #[arg(long, global = true, default_value_t = 8)]
    jobs: usize,
    /// SHOULD failures fail the run.
    #[arg(long, global = true)]
    strict: bool,
    /// Write a JUnit XML report.
    #[arg(long, global = true)]
    junit: Option<PathBuf>,
    /// Write the JSON report (schema: schema/tools/conformance-report.schema.json).
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report (index.html) into this directory.
    #[arg(long, global = true)]
    html: Option<PathBuf>,
    /// Expected failures: a JSON object of scenario-id glob (or requirement id) → reason.
    #[arg(long, global = true)]
    expected_failures: Option<PathBuf>,
    /// Default mode: do not apply the built-in list of known reference-implementation
    /// bugs (conformance/expected-failures.json, embedded).
    #[arg(long, global = true)]
    no_expected_failures: bool,
    /// Compare grades with a committed baseline; exit 1 on any difference.
    #[arg(long, global = true)]
    baseline: Option<PathBuf>,
    /// Write this run's grades as a baseline file.
    #[arg(long, global = true)]
    write_baseline: Option<PathBuf>,
    /// Feature files from this directory (server/*.feature, client/*.feature) instead
    /// of the embedded ones.
    #[arg(long, global = true)]
    features_dir: Option<PathBuf>,
    /// Client fixtures from this directory instead of the embedded ones.
    #[arg(long, global = true)]
    fixtures_dir: Option<PathBuf>,
    /// Upper bound per scenario, in ms (scaled by --time-scale).
    #[arg(long, global = true, default_value_t = 60_000)]
    scenario_timeout_ms: u64,
    /// Upper bound for the whole run, in seconds (scaled by --time-scale).
    #[arg(long, global = true, default_value_t = 600)]
    timeout_s: u64,
    /// Default mode and coverage: only this suite (server or client).
    #[arg(long, global = true)]
    suite: Option<String>,
    /// No progress lines.
    #[arg(long, short, global = true)]
    quiet: bool,
}

/// `--time-scale`: a number, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum TimeScale {
    Auto,
    Fixed(f64),
}

impl std::str::FromStr for TimeScale {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        match s.parse::<f64>() {
            Ok(x) if x > 0.0 && x.is_finite() => Ok(Self::Fixed(x)),
            _ => Err(format!("{s:?} is not a positive number or `auto`")),
        }
    }
}

/// Mints expiring tokens with a shell command.
struct CmdMinter {
    cmd: String,
}

impl runwire_conformance::TokenMinter for CmdMinter {
    fn mint(
        &self,
        ttl_ms: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + '_>>
    {
        Box::pin(async move {
            let out = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&self.cmd)
                .env("RUNWIRE_CONFORM_TTL_MS", ttl_ms.to_string())
                .output()
                .await
                .map_err(|e| format!("cannot run {:?}: {e}", self.cmd))?;
            if !out.status.success() {
                return Err(format!("{:?} exited with {}", self.cmd, out.status));
            }
            let t = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if t.is_empty() {
                return Err(format!("{:?} printed no token", self.cmd));
            }
            Ok(t)
        })
    }
}

/// Restarts an external server with a shell command, then waits for /healthz.
struct CmdRestart {
    cmd: String,
    ingest: String,
}

impl ServerControl for CmdRestart {
    fn restart(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let st = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&self.cmd)
                .status()
                .await
                .map_err(|e| format!("cannot run {:?}: {e}", self.cmd))?;
            if !st.success() {
                return Err(format!("{:?} exited with {st}", self.cmd));
            }
            // Wait (bounded: 30 s) until GET /healthz answers 200 again.
            let mut last = String::from("no answer yet");
            for _ in 0..300 {
                match runwire_conformance::healthz(&self.ingest, Duration::from_secs(2)).await {
                    Ok(200) => return Ok(()),
                    Ok(status) => last = format!("GET /healthz answered {status}"),
                    Err(e) => last = e,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(format!(
                "{} did not answer GET /healthz with 200 within 30 s after the restart command ({last})",
                self.ingest
            ))
        })
    }
}

fn scenarios_for_coverage(
    common: &Common,
) -> anyhow::Result<Vec<runwire_conformance::ScenarioDef>> {
    Ok(runwire_conformance::load_scenarios(
        common.features_dir.as_deref(),
    )?)
}

pub(crate) fn run(args: ConformArgs) -> anyhow::Result<ExitCode> {
    let common = args.common;
    match args.target {
        Some(Target::Coverage { verbose }) => {
            let sc = scenarios_for_coverage(&common)?;
            runwire_conformance::check_steps(&sc)?;
            let mut rows = coverage::matrix(&sc);
            // MUSTs no scenario can observe are listed apart with a reason; a stale or
            // unknown entry of that list is an error (conformance/unobservable.json).
            let unobservable = coverage::unobservable()
                .context("conformance/unobservable.json (embedded) is not a JSON object")?;
            let list_problems = coverage::mark_unobservable(&mut rows, &unobservable);
            let only = match common.suite.as_deref() {
                None => None,
                Some("server") => Some(runwire_conformance::Suite::Server),
                Some("client") => Some(runwire_conformance::Suite::Client),
                Some(other) => bail!("--suite must be server or client, not {other:?}"),
            };
            let scope = match only {
                Some(suite) => {
                    // Only the requirements this suite can test; a "both" requirement
                    // needs a scenario of this suite (or an entry saying why it cannot
                    // observe it).
                    rows.retain(|r| r.testable_by(suite));
                    coverage::Scope::Only(suite)
                }
                None => coverage::Scope::All,
            };
            print!("{}", coverage::render(&rows, verbose, scope));
            let unknown = coverage::unknown_tags(&sc);
            for (s, r) in &unknown {
                eprintln!(
                    "error: scenario {s} names {r}, which spec/requirements.json does not have"
                );
            }
            for p in &list_problems {
                eprintln!("error: conformance/unobservable.json: {p}");
            }
            let missing = coverage::missing_musts(&rows, scope);
            if !missing.is_empty() {
                eprintln!(
                    "error: {} MUST requirement(s) have no scenario: {}",
                    missing.len(),
                    missing.join(" ")
                );
                return Ok(ExitCode::from(1));
            }
            return Ok(if unknown.is_empty() && list_problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Some(Target::List) => {
            let sc = scenarios_for_coverage(&common)?;
            let tags = common.tags.as_deref().map(TagFilter::parse).transpose()?;
            for s in sc
                .iter()
                .filter(|s| tags.as_ref().is_none_or(|t| t.matches(&s.tags)))
            {
                println!(
                    "{:<60} {:<6} {}",
                    s.id,
                    s.level.as_str(),
                    s.requirements.join(" ")
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(Target::Steps) => {
            println!("# server suite");
            for p in runwire_conformance::server::step_patterns() {
                println!("{p}");
            }
            println!("\n# client suite");
            for p in runwire_conformance::client::STEP_PATTERNS {
                println!("{p}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(Target::ReportSchema) => {
            println!("{}", serde_json::to_string_pretty(&report_schema())?);
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let seed = common.seed.unwrap_or_else(rand::random::<u64>);
    let mut opts = ConformOptions {
        seed,
        time_scale: 1.0,
        client_time_scale: None,
        jobs: common.jobs.max(1),
        strict: common.strict,
        tags: common.tags.as_deref().map(TagFilter::parse).transpose()?,
        features_dir: common.features_dir.clone(),
        fixtures_dir: common.fixtures_dir.clone(),
        scenario_timeout_ms: common.scenario_timeout_ms,
        global_timeout_ms: common.timeout_s.saturating_mul(1000),
        expected_failures: None,
        retries: common.retries,
        probe: None,
        calibration: None,
    };
    if let Some(p) = &common.expected_failures {
        opts.expected_failures = Some(expect::ExpectedFailures::load(p)?);
    } else if args.target.is_none() && !common.no_expected_failures {
        // Against the bundled reference implementations, their known bugs (each with
        // its reason) are expected failures unless --no-expected-failures.
        opts.expected_failures = Some(expect::ExpectedFailures::parse(
            REFERENCE_EXPECTED_FAILURES,
            "conformance/expected-failures.json (built in)",
        )?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    eprintln!("runwire conform: seed {seed} (replay with --seed {seed})");
    let quiet = common.quiet;
    let bundled = args.target.is_none();
    let want = common.suite.as_deref();
    if let Some(Target::Server(s)) = &args.target {
        runwire_conformance::net::trust_ca_files(&s.ca_cert).context("--ca-cert")?;
    }
    let report = rt.block_on(async {
        let probe = runwire_mock::Probe::start_default();
        opts.probe = Some(probe.clone());
        // The targets, before anything runs.
        let mut server_target = None;
        let mut client_target = None;
        match args.target {
            Some(Target::Server(s)) => {
                server_target = Some(ServerTarget {
                    description: format!("{} (ingest {})", s.url, s.ingest),
                    token_minter: s.expiring_token_cmd.clone().map(|cmd| {
                        Arc::new(CmdMinter { cmd }) as Arc<dyn runwire_conformance::TokenMinter>
                    }),
                    control: s.restart_cmd.clone().map(|cmd| {
                        Arc::new(CmdRestart {
                            cmd,
                            ingest: s.ingest.clone(),
                        }) as Arc<dyn ServerControl>
                    }),
                    ws_url: s.url,
                    ingest_url: s.ingest,
                    token: s.token,
                    limited_token: s.limited_token,
                    hello_timeout_ms: s.hello_timeout_ms,
                    short_retention: s.short_retention,
                    send_buffer: s.server_send_buffer,
                    admission: runwire_conformance::AdmissionDecl {
                        header_timeout_ms: s.header_timeout_ms,
                        body_timeout_ms: s.body_timeout_ms,
                        pre_hello_limit: s.pre_hello_limit,
                        max_request_bytes: s.max_request_bytes,
                        identity_limit: s.identity_limit,
                        behind_proxy: false,
                    },
                });
            }
            Some(Target::Client(c)) => {
                let mut it = c.command.into_iter();
                let program = it.next().context("no adapter command given after --")?;
                let args: Vec<OsString> = it.collect();
                client_target = Some(ClientTarget {
                    description: std::iter::once(&program)
                        .chain(args.iter())
                        .map(|a| a.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(" "),
                    program,
                    args,
                    env: Vec::new(),
                    fault: None,
                });
            }
            _ => {
                if want.is_none_or(|s| s == "client") {
                    let exe =
                        std::env::current_exe().context("cannot find the runwire executable")?;
                    client_target = Some(ClientTarget {
                        description: format!(
                            "reference client adapter ({} client-adapter)",
                            exe.display()
                        ),
                        program: exe.into_os_string(),
                        args: vec!["client-adapter".into()],
                        env: Vec::new(),
                        fault: None,
                    });
                }
            }
        }
        // Preflight: an unreachable target or an adapter that cannot start is one
        // line and exit 2, not a hundred violations.
        if let Some(t) = &server_target
            && let Err(e) = preflight::check_server(t, Duration::from_secs(5)).await
        {
            return Ok(Err(e.to_string()));
        }
        let startup = match &client_target {
            Some(t) => match preflight::adapter_startup(t, Duration::from_secs(30)).await {
                Ok(d) => Some(d),
                Err(e) => return Ok(Err(e.to_string())),
            },
            None => None,
        };
        // Calibration: how late this machine runs timers right now.
        let lateness = preflight::timer_lateness(&probe, Duration::from_millis(300)).await;
        let (time_scale, client_time_scale, auto, reason) = match common.time_scale {
            TimeScale::Auto => {
                let (s, c, why) = preflight::choose_scales(&lateness, startup);
                let c = common.client_time_scale.unwrap_or(c);
                (s, c, true, why)
            }
            TimeScale::Fixed(x) => {
                let c = common
                    .client_time_scale
                    .unwrap_or(if bundled { x * 2.0 } else { x });
                (x, c, false, "--time-scale".to_owned())
            }
        };
        opts.time_scale = time_scale;
        opts.client_time_scale = Some(client_time_scale);
        let cal = preflight::calibration(
            lateness,
            startup,
            auto,
            time_scale,
            client_time_scale,
            reason,
        );
        eprintln!("{}", report::calibration_line(&cal));
        opts.calibration = Some(cal);
        let mut reference_server = None;
        if bundled && want.is_none_or(|s| s == "server") {
            let srv =
                reference::ReferenceServer::start(reference::reference_config(time_scale)).await?;
            server_target = Some(srv.target());
            reference_server = Some(srv);
        }
        let plan = Plan {
            server: server_target,
            client: client_target,
        };
        let lock = Mutex::new(());
        let progress = |r: &runwire_conformance::ScenarioResult| {
            if !quiet {
                let _g = lock.lock();
                let mut e = std::io::stderr().lock();
                let _ = writeln!(e, "{}", report::progress_line(r));
            }
        };
        let rep = runwire_conformance::conform(plan, &opts, &progress).await;
        if let Some(s) = reference_server {
            s.stop().await;
        }
        anyhow::Ok(Ok(rep?))
    })?;
    let report = match report {
        Ok(r) => r,
        Err(line) => {
            eprintln!("error: {line}");
            eprintln!("runwire conform: the kit could not run (exit 2); no scenario was judged");
            return Ok(ExitCode::from(2));
        }
    };
    print!("{}", report::summary(&report));
    if let Some(p) = &common.junit {
        std::fs::write(p, report::junit(&report))
            .with_context(|| format!("cannot write {}", p.display()))?;
        eprintln!("JUnit report: {}", p.display());
    }
    if let Some(p) = &common.json {
        std::fs::write(p, report::json(&report))
            .with_context(|| format!("cannot write {}", p.display()))?;
        eprintln!("JSON report: {}", p.display());
    }
    if let Some(d) = &common.html {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        let p = d.join("index.html");
        std::fs::write(&p, report::html(&report))
            .with_context(|| format!("cannot write {}", p.display()))?;
        eprintln!("HTML report: {}", p.display());
    }
    let new = expect::baseline_of(&report.results);
    if let Some(p) = &common.write_baseline {
        std::fs::write(p, serde_json::to_string_pretty(&new)? + "\n")
            .with_context(|| format!("cannot write {}", p.display()))?;
        eprintln!("baseline written: {}", p.display());
    }
    let mut code = if report.passed { 0 } else { 1 };
    if let Some(p) = &common.baseline {
        let old = expect::load_baseline(p)?;
        let diff = expect::diff_baseline(&old, &new);
        if diff.is_empty() {
            println!("baseline {}: no difference", p.display());
        } else {
            println!(
                "baseline {}: {} difference(s) (either this is a regression or the baseline needs updating with --write-baseline):",
                p.display(),
                diff.len()
            );
            for d in diff {
                println!("  {d}");
            }
            code = 1;
        }
    }
    Ok(ExitCode::from(code))
}
