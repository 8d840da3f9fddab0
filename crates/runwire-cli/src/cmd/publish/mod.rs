//! `runwire publish`: a producer for scripts, demos and live pipes (spec §4.2).
//!
//! - one event from flags (`--type`, `--data`);
//! - a JSON Lines stream (`--file FILE`, `--file -` for stdin), sent as it is read
//!   ([`stream`]): each line as soon as it arrives, or a small batch when lines
//!   arrive faster than `--batch-window`;
//! - a growing text file (`--tail FILE`), each new line as a `log.line` event.
//!
//! Every event carries an idempotency key (one the line gave, or one made up here),
//! so a request retried after a network error or a 5xx answer never appends twice
//! (`RW-INGEST-5`).

mod send;
mod stream;
mod tail;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use runwire_protocol::{RunId, codec::decode, http::NewEvent};

/// Appends events to a run through the producer HTTP API.
///
/// One event from flags (`--type` and `--data`), a JSON Lines stream (`--file`, one
/// `{"type", "data", "idempotency_key"?, "time"?}` per line) sent line by line as it
/// is read, or a growing log file (`--tail`). Events without an idempotency key get
/// one, so retries after network errors and 5xx answers are exactly-once.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// Base URL of the server, e.g. http://127.0.0.1:7070.
    #[arg(
        long,
        env = "RUNWIRE_HTTP_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    url: String,
    /// The run to append to.
    run_id: String,
    /// Event type, e.g. run.progress.
    #[arg(
        long = "type",
        value_name = "TYPE",
        conflicts_with_all = ["file", "tail"],
        requires = "data"
    )]
    event_type: Option<String>,
    /// Event data as a JSON object.
    #[arg(long, value_name = "JSON", conflicts_with_all = ["file", "tail"])]
    data: Option<String>,
    /// Idempotency key for the single event.
    #[arg(long, conflicts_with_all = ["file", "tail"])]
    key: Option<String>,
    /// JSON Lines file of events (`-` for stdin), sent line by line as it is read.
    #[arg(long, value_name = "FILE", conflicts_with = "tail")]
    file: Option<PathBuf>,
    /// Follow a growing text file (from its start) and append each new line as a
    /// `log.line` event, until interrupted (Ctrl-C).
    #[arg(long, value_name = "FILE")]
    tail: Option<PathBuf>,
    /// `--tail`: the level of the `log.line` events.
    #[arg(long, default_value = "info", requires = "tail", value_parser = ["trace", "debug", "info", "warn", "error"])]
    level: String,
    /// `--tail`: the `source` of the `log.line` events (default: the file's name).
    #[arg(long, requires = "tail")]
    source: Option<String>,
    /// Lines that arrive within this many milliseconds of the first line of a batch
    /// go in one request (at most 1000 events).
    #[arg(long, value_name = "MS", default_value_t = 50)]
    batch_window: u64,
    /// Bearer token.
    #[arg(long, env = "RUNWIRE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Attempts per request for retryable failures.
    #[arg(long, default_value_t = 5)]
    attempts: u32,
    /// Also trust the certificate authorities in this PEM file for `https://` (besides
    /// the system's); may be repeated.
    #[arg(long, value_name = "FILE", env = "RUNWIRE_CA_CERT")]
    ca_cert: Vec<PathBuf>,
}

/// Parses one event; `origin` names where it came from (`FILE:LINE`).
pub(super) fn parse_event(text: &str, origin: &str) -> anyhow::Result<NewEvent> {
    decode::<NewEvent>(text.as_bytes(), usize::MAX, "event").map_err(|e| match e.pointer() {
        Some(p) => anyhow::anyhow!("{origin}: invalid event at {p:?}: {e}"),
        None => anyhow::anyhow!("{origin}: {e}"),
    })
}

/// The event of `--type`/`--data`/`--key`.
fn flag_event(args: &PublishArgs) -> anyhow::Result<NewEvent> {
    let (Some(t), Some(d)) = (&args.event_type, &args.data) else {
        bail!("give --type and --data, --file, or --tail");
    };
    let data: serde_json::Value =
        serde_json::from_str(d).map_err(|e| anyhow::anyhow!("--data: invalid JSON: {e}"))?;
    let mut obj = serde_json::json!({ "type": t, "data": data });
    if let Some(k) = &args.key {
        obj["idempotency_key"] = serde_json::Value::String(k.clone());
    }
    parse_event(&obj.to_string(), "--type/--data")
}

pub(crate) fn run(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let run_id = RunId::new(args.run_id.clone()).map_err(|e| anyhow::anyhow!("RUN_ID: {e}"))?;
    let single = match (&args.file, &args.tail) {
        (None, None) => Some(flag_event(&args)?),
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let sender = send::Sender::new(&args, &run_id)?;
        let keys = stream::Keys::new();
        let source = match (single, &args.file, &args.tail) {
            (Some(mut e), _, _) => {
                keys.fill(&mut e);
                return Ok(match sender.append(&[e]).await {
                    Ok(r) => {
                        println!("{}", send::acknowledged(&r));
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::from(1)
                    }
                });
            }
            (None, Some(path), _) => stream::lines(path.clone(), keys)?,
            (None, None, Some(path)) => tail::follow(
                path.clone(),
                tail::LineEvents {
                    level: args.level.clone(),
                    source: args.source.clone(),
                },
                keys,
            )?,
            (None, None, None) => bail!("give --type and --data, --file, or --tail"),
        };
        stream::publish(
            &sender,
            source,
            Duration::from_millis(args.batch_window),
            args.tail.is_none(),
        )
        .await
    })
}
