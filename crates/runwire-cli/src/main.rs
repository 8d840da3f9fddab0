//! The `runwire` command-line tool.
//!
//! Each subcommand lives in its own module under `cmd/`; library crates do the work,
//! this binary parses arguments, prints, and maps outcomes to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Runwire: a protocol and conformance kit for streaming the live state of long-running runs.
#[derive(Debug, Parser)]
#[command(name = "runwire", version, about, long_about = None)]
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
    /// Watch one run live: progress bar, phase, status, logs and tool calls; exits 0
    /// when it completes, 1 when it fails, 3 when it is cancelled.
    Watch(cmd::watch::WatchArgs),
    /// TLS helpers: a development CA and server certificate.
    #[command(subcommand)]
    Tls(cmd::tls::TlsCommand),
    // Other subcommands (serve, publish, watch, mock, conform, client-adapter) are
    // added here, one variant and one module each.
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

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    // One TLS crypto provider for every library that builds a TLS configuration of its
    // own (reqwest is built without one).
    runwire_client::tls::install_default_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Schema(c) => cmd::schema::run(c),
        Command::Conform(a) => cmd::conform::run(*a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Publish(a) => cmd::publish::run(a),
        Command::Mock(a) => cmd::mock::run(a),
        Command::ClientAdapter(a) => cmd::client_adapter::run(a),
        Command::Watch(a) => cmd::watch::run(a),
        Command::Tls(c) => cmd::tls::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
