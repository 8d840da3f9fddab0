//! `runwire mock`: serve one client fixture, print every frame as it happens, and end
//! with a verdict naming every violated expectation and its requirement ID.
//!
//! Exit codes: 0 pass, 1 fail, 2 malformed fixture or usage error, 3 inconclusive
//! (every violation was a timing miss within the lateness measured on this machine),
//! 89 the adapter reported the fixture's feature as not implemented.

use std::{ffi::OsString, io::Write as _, net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use runwire_mock::{Fixture, Mock, MockOptions, Outcome};
use tokio::sync::mpsc;

/// Arguments of `runwire mock`.
#[derive(Debug, clap::Args)]
pub(crate) struct MockArgs {
    /// The fixture file (e.g. `fixtures/client/happy-path.json`).
    #[arg(long)]
    fixture: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write the transcript here: JSON lines when the name ends in `.jsonl`, text
    /// otherwise.
    #[arg(long)]
    transcript: Option<PathBuf>,
    /// Multiply every duration of the fixture by this factor (for slow clients).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Seed for every random choice (default: the fixture's, else random; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Without an adapter command: how long to wait for the client's first connection
    /// before the fixture's clock starts, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    wait_ms: u64,
    /// Print only the verdict: no frames, no header (without an adapter command, the
    /// URL to connect to is still printed first).
    #[arg(long, short)]
    quiet: bool,
    /// The adapter to spawn with the fixture's environment (`docs/client-adapter.md`),
    /// after `--`. Without it, connect a client by hand to the printed URL.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

pub(crate) fn run(args: MockArgs) -> anyhow::Result<ExitCode> {
    let fixture = match Fixture::from_path(&args.fixture) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: malformed fixture: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if !(args.time_scale.is_finite() && args.time_scale > 0.0) {
        eprintln!("error: --time-scale must be a positive number");
        return Ok(ExitCode::from(2));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(args, fixture))
}

async fn serve(args: MockArgs, fixture: Fixture) -> anyhow::Result<ExitCode> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let manual = args.command.is_empty();
    let title = fixture.title.clone();
    let mut mock = match Mock::start(
        fixture,
        MockOptions {
            listen: args.listen,
            time_scale: args.time_scale,
            seed: args.seed,
            live: (!args.quiet).then_some(tx),
            wait_for_client: manual.then(|| std::time::Duration::from_millis(args.wait_ms)),
            ..MockOptions::default()
        },
    )
    .await
    {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if args.quiet && manual {
        // The one thing a client started by hand needs.
        println!("url {}", mock.url());
    } else if !args.quiet {
        println!(
            "runwire mock: {} ({title})\n  url {}\n  seed {}  time-scale {}",
            mock.fixture().id,
            mock.url(),
            mock.seed(),
            args.time_scale
        );
    }
    if manual && !args.quiet {
        println!("  waiting for a client; its adapter environment would be:");
        for (k, v) in mock.adapter_env() {
            println!("    {k}={v}");
        }
    } else {
        let program = args.command[0].clone();
        if let Err(e) = mock.spawn_adapter(program, &args.command[1..]) {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    }
    let printer = tokio::spawn(async move {
        let mut out = std::io::stdout();
        while let Some(entry) = rx.recv().await {
            let _ = writeln!(out, "{}", entry.render());
        }
    });
    let report = mock.finish().await;
    let _ = printer.await;
    if let Some(path) = &args.transcript {
        let text = if path.extension().is_some_and(|e| e == "jsonl") {
            report.transcript.to_json_lines()
        } else {
            report.transcript.to_text()
        };
        std::fs::write(path, text)
            .with_context(|| format!("writing the transcript to {}", path.display()))?;
    }
    println!("{}", report.verdict.render());
    Ok(match report.verdict.outcome {
        Outcome::Pass => ExitCode::SUCCESS,
        Outcome::Fail => ExitCode::from(1),
        Outcome::NotImplemented => ExitCode::from(89),
        Outcome::Inconclusive => ExitCode::from(3),
    })
}
