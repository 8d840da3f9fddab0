//! `runwire serve`: the reference server (WebSocket stream + HTTP ingest on one port).

use std::{io::IsTerminal, net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use runwire_server::{Server, ServerConfig, open_store};

/// Runs the Runwire reference server.
///
/// Configuration, lowest precedence first: defaults (the spec's), `--config FILE`
/// (TOML), `RUNWIRE_<KEY>` environment variables (`RUNWIRE_HEARTBEAT_INTERVAL_MS`,
/// `RUNWIRE_AUTH__JWT_SECRET`, ...), then flags (`--listen`, `--store`, `--set
/// KEY=VALUE`). See docs/server.md for every key.
///
/// Logs go to stderr. `RUNWIRE_LOG` selects what is logged, in tracing's `EnvFilter`
/// syntax (default `info`; e.g. `RUNWIRE_LOG=debug` or
/// `RUNWIRE_LOG=info,runwire_server=debug`); every closed connection is one line at
/// info (target `runwire::conn`).
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:7070; port 0 picks a free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Event store: `memory`, `sqlite:PATH` (default sqlite:runwire.db), or
    /// `redis://HOST:PORT[/DB]` to share one log between several nodes (docs/scale-out.md).
    #[arg(long)]
    store: Option<String>,
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override one configuration key, e.g. `--set heartbeat_interval_ms=5000`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// TLS certificate chain (PEM, leaf first): serve `wss://` and `https://` only
    /// (with `--tls-key`; the key `tls.cert`). `SIGHUP` reads both files again.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM; the key `tls.key`).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log line format on stderr: `text` (coloured only when stderr is a terminal) or
    /// `json` (one JSON object per line, for log collectors).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines; ANSI colours only on a terminal.
    Text,
    /// One JSON object per line, with the event's fields at the top level.
    Json,
}

/// Installs the global log subscriber: `RUNWIRE_LOG` (EnvFilter syntax, default
/// `info`) selects the lines, `format` their shape; lines go to stderr.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNWIRE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .try_init(),
        // Escape codes only for a terminal: a file or a pipe gets plain text.
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

fn load_config(args: &ServeArgs) -> anyhow::Result<ServerConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            ServerConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => ServerConfig::default(),
    };
    config
        .apply_env(std::env::vars())
        .context("in RUNWIRE_* environment variables")?;
    for kv in &args.set {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--set {kv:?}: expected KEY=VALUE");
        };
        config.set(k.trim(), v.trim())?;
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(s) = &args.store {
        config.store = s.clone();
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls.cert = Some(cert.clone());
        config.tls.key = Some(key.clone());
    }
    Ok(config)
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args)?;
    init_logging(args.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(config))
}

async fn serve(config: ServerConfig) -> anyhow::Result<ExitCode> {
    let store = open_store(&config.store, &config)
        .with_context(|| format!("opening store {}", config.store))?;
    if !config.auth.enabled() {
        // Through the log, so that `--log-format json` keeps stderr one JSON object per
        // line.
        tracing::warn!(
            listen = %config.listen,
            "no authentication configured (auth.tokens / auth.jwt_secret): anyone who can \
             reach the listen address can publish to and read every run; listening on \
             loopback only; configure auth to serve other hosts"
        );
    }
    let store_name = config.store.clone();
    let server = Server::bind(config, Arc::clone(&store)).await?;
    // The first stdout line is machine-readable: tests and scripts read the address.
    // A reader that goes away after it (a pipe closed early) must not stop the server,
    // so write errors are ignored rather than raised by `println!`.
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "runwire serve listening on {}", server.local_addr());
    let _ = writeln!(
        out,
        "  stream: {}  ingest: {}/v1/runs/{{run_id}}/events  store: {store_name}",
        server.ws_url(),
        server.http_url()
    );
    let _ = out.flush();
    drop(out);
    wait_for_signal(&server).await;
    tracing::info!("shutting down: telling clients to reconnect, flushing the store");
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Waits for `SIGINT` or `SIGTERM`; on `SIGHUP` reads the TLS files again.
async fn wait_for_signal(server: &runwire_server::RunningServer) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                _ = hup.recv() => match server.reload_tls() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate and key read again"),
                    Err(e) => tracing::error!(
                        error = %e,
                        "SIGHUP: cannot reload TLS; the certificate in service stays"
                    ),
                },
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = server;
        let _ = tokio::signal::ctrl_c().await;
    }
}
