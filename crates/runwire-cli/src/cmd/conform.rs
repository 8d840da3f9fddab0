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
    ClientTarget, ConformOptions, RunReport, ServerControl, ServerTarget, Suite, coverage, expect,
    features::TagFilter,
    model::report_schema,
    report,
    session::{Outcome, ScaleChoice, Session},
};

/// Known bugs of the bundled reference implementations (applied in the default mode).
const REFERENCE_EXPECTED_FAILURES: &str = include_str!("../../data/expected-failures.json");

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
    /// Print every step pattern the feature files may use.
    ///
    /// A placeholder is a name in braces: s a quoted string, n a number, w a word,
    /// rest free text.
    // (clap turns a brace-enclosed n into a line break in help text, so the
    // placeholders are named here without their braces.)
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
    /// The server's request size limit in bytes (`RW-SEC-14`); without it the kit
    /// declares a 1 TiB body, over any limit.
    #[arg(long)]
    max_request_bytes: Option<u64>,
    /// The most WebSocket connections one identity may hold (`RW-SEC-18`); the kit
    /// fills it with `--limited-token` (at most 512). Without it the per-identity
    /// scenario is graded not implemented.
    #[arg(long)]
    identity_limit: Option<u32>,
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
    time_scale: ScaleChoice,
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

/// `--suite`, when given.
fn only_suite(common: &Common) -> anyhow::Result<Option<Suite>> {
    Ok(match common.suite.as_deref() {
        None => None,
        Some("server") => Some(Suite::Server),
        Some("client") => Some(Suite::Client),
        Some(other) => bail!("--suite must be server or client, not {other:?}"),
    })
}

/// `runwire conform coverage`: the matrix, then every problem; exit 1 on any.
fn coverage(common: &Common, verbose: bool) -> anyhow::Result<ExitCode> {
    let sc = scenarios_for_coverage(common)?;
    runwire_conformance::check_steps(&sc)?;
    let check = coverage::check(&sc, only_suite(common)?, verbose)?;
    print!("{}", check.table);
    for e in &check.errors {
        eprintln!("error: {e}");
    }
    Ok(if check.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `runwire conform list`: the scenarios after `--tags`.
fn list(common: &Common) -> anyhow::Result<ExitCode> {
    let sc = scenarios_for_coverage(common)?;
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
    Ok(ExitCode::SUCCESS)
}

/// `runwire conform steps`: every step pattern of both suites.
fn steps() -> ExitCode {
    println!("# server suite");
    for p in runwire_conformance::server::step_patterns() {
        println!("{p}");
    }
    println!("\n# client suite");
    for p in runwire_conformance::client::STEP_PATTERNS {
        println!("{p}");
    }
    ExitCode::SUCCESS
}

pub(crate) fn run(args: ConformArgs) -> anyhow::Result<ExitCode> {
    let common = args.common;
    match args.target {
        Some(Target::Coverage { verbose }) => return coverage(&common, verbose),
        Some(Target::List) => return list(&common),
        Some(Target::Steps) => return Ok(steps()),
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
    if let Some(Target::Server(s)) = &args.target {
        runwire_conformance::net::trust_ca_files(&s.ca_cert).context("--ca-cert")?;
    }
    let session = session(args.target, &common)?;
    let quiet = common.quiet;
    let lock = Mutex::new(());
    let progress = |r: &runwire_conformance::ScenarioResult| {
        if !quiet {
            let _g = lock.lock();
            let mut e = std::io::stderr().lock();
            let _ = writeln!(e, "{}", report::progress_line(r));
        }
    };
    let calibrated = |cal: &runwire_conformance::model::Calibration| {
        eprintln!("{}", report::calibration_line(cal));
    };
    let report = match rt.block_on(session.run(opts, &calibrated, &progress))? {
        Outcome::Report(r) => r,
        Outcome::NotRun(e) => {
            eprintln!("error: {e}");
            eprintln!("runwire conform: the kit could not run (exit 2); no scenario was judged");
            return Ok(ExitCode::from(2));
        }
    };
    print!("{}", report::summary(&report));
    write_reports(&common, &report)
}

/// The targets of a run: the given server or client, or (no target given) the bundled
/// reference implementations of the suites `--suite` selects.
fn session(target: Option<Target>, common: &Common) -> anyhow::Result<Session> {
    let bundled = target.is_none();
    let want = common.suite.as_deref();
    let mut session = Session {
        server: None,
        client: None,
        reference_server: bundled && want.is_none_or(|s| s == "server"),
        bundled,
        scale: common.time_scale,
        client_time_scale: common.client_time_scale,
    };
    match target {
        Some(Target::Server(s)) => session.server = Some(server_target(s)),
        Some(Target::Client(c)) => {
            let mut it = c.command.into_iter();
            let program = it.next().context("no adapter command given after --")?;
            let args: Vec<OsString> = it.collect();
            let description = std::iter::once(&program)
                .chain(args.iter())
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            session.client = Some(ClientTarget::new(program, args, description));
        }
        _ => {
            if want.is_none_or(|s| s == "client") {
                let exe = std::env::current_exe().context("cannot find the runwire executable")?;
                let description = format!(
                    "reference client adapter ({} client-adapter)",
                    exe.display()
                );
                session.client = Some(ClientTarget::new(
                    exe.into_os_string(),
                    vec!["client-adapter".into()],
                    description,
                ));
            }
        }
    }
    Ok(session)
}

/// `runwire conform server …`: the server under test.
fn server_target(s: ServerArgs) -> ServerTarget {
    ServerTarget {
        description: format!("{} (ingest {})", s.url, s.ingest),
        token_minter: s
            .expiring_token_cmd
            .clone()
            .map(|cmd| Arc::new(CmdMinter { cmd }) as Arc<dyn runwire_conformance::TokenMinter>),
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
    }
}

/// Writes the reports asked for, the baseline, and compares with `--baseline`.
fn write_reports(common: &Common, report: &RunReport) -> anyhow::Result<ExitCode> {
    if let Some(p) = &common.junit {
        std::fs::write(p, report::junit(report))
            .with_context(|| format!("cannot write {}", p.display()))?;
        eprintln!("JUnit report: {}", p.display());
    }
    if let Some(p) = &common.json {
        std::fs::write(p, report::json(report))
            .with_context(|| format!("cannot write {}", p.display()))?;
        eprintln!("JSON report: {}", p.display());
    }
    if let Some(d) = &common.html {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        let p = d.join("index.html");
        std::fs::write(&p, report::html(report))
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
