//! The `runwire` command-line tool.
//!
//! Each subcommand lives in its own module under `cmd/`; library crates do the work,
//! this binary parses arguments, prints, and maps outcomes to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Where the documentation is, under every `--help`.
const DOCS: &str = concat!(
    "Documentation: ",
    env!("CARGO_PKG_REPOSITORY"),
    "#readme (guides in docs/: server-guide.md, client-guide.md, ci-guide.md, \
     client-adapter.md; the protocol in spec/protocol.md)"
);

/// Runwire: a protocol and conformance kit for streaming the live state of long-running runs.
#[derive(Debug, Parser)]
#[command(name = "runwire", version, about, long_about = None, after_help = DOCS)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Schema tools: generate, diff, check, validate, list rules.
    #[command(subcommand)]
    Schema(cmd::schema::SchemaCommand),
    /// Conformance kit: run the server and client suites, coverage, reports.
    Conform(Box<cmd::conform::ConformArgs>),
    /// Serve one client fixture: play it to a connecting client (or an adapter spawned
    /// after `--`), print every frame, and judge.
    Mock(cmd::mock::MockArgs),
    /// Run the reference server: WebSocket stream and HTTP ingest on one port.
    Serve(cmd::serve::ServeArgs),
    /// Append events to a run through the producer HTTP API.
    Publish(cmd::publish::PublishArgs),
    /// The reference client adapter of the conformance kit (configured by RUNWIRE_*
    /// environment variables; see docs/client-adapter.md).
    ClientAdapter(cmd::client_adapter::ClientAdapterArgs),
    /// Watch runs live: a progress bar per run and every event (status, phase, logs,
    /// tool calls, agent text, todos, files, artifacts, outputs); exits 0 when they
    /// complete, 1 when one fails, 3 when one is cancelled (the worst of several).
    /// `--prefix P` watches every run whose id starts with P, new ones included.
    Watch(cmd::watch::WatchArgs),
    /// Print a shell completion script: `runwire completions bash > /etc/bash_completion.d/runwire`.
    Completions(cmd::completions::CompletionsArgs),
    /// TLS helpers: a development CA and server certificate.
    #[command(subcommand)]
    Tls(cmd::tls::TlsCommand),
    // One variant and one module under `cmd/` per subcommand.
}

/// A closed standard output (`runwire conform list | head`) ends the program quietly
/// with status 141, as a Unix tool killed by SIGPIPE does, instead of the panic that
/// `println!` raises on a broken pipe (on the main thread, where the commands that
/// print their results run). (Restoring the default SIGPIPE action would
/// need `unsafe`, which the workspace forbids.)
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        // Only the main thread's output ends the program: a long-running command
        // (`runwire serve`) whose reader went away keeps serving, as before.
        if msg.starts_with("failed printing to std")
            && msg.contains("Broken pipe")
            && std::thread::current().name() == Some("main")
        {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// Parses the command line; every command's `--help` ends with where the documentation
/// is.
fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let cmd = Cli::command().mut_subcommands(|s| s.after_help(DOCS));
    let matches = cmd.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    // One TLS crypto provider for every library that builds a TLS configuration of its
    // own (reqwest is built without one).
    runwire_client::tls::install_default_provider();
    let cli = parse();
    let result = match cli.command {
        Command::Schema(c) => cmd::schema::run(c),
        Command::Conform(a) => cmd::conform::run(*a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Publish(a) => cmd::publish::run(a),
        Command::Mock(a) => cmd::mock::run(a),
        Command::ClientAdapter(a) => cmd::client_adapter::run(a),
        Command::Watch(a) => cmd::watch::run(a),
        Command::Tls(c) => cmd::tls::run(c),
        Command::Completions(a) => {
            cmd::completions::run(&a, &mut <Cli as clap::CommandFactory>::command())
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
