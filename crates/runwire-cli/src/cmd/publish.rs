//! `runwire publish`: a small producer for scripts and demos (spec §4.2).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use runwire_protocol::{
    RunId,
    codec::{decode, encode},
    http::{APPEND_MAX_EVENTS, AppendResponse, HttpError, NewEvent},
};

/// Appends events to a run through the producer HTTP API.
///
/// One event from flags (`--type` and `--data`), or many from a JSON Lines file
/// (`--file`, one `{"type", "data", "idempotency_key"?, "time"?}` per line), sent in
/// requests of up to 1000 events. Events without an idempotency key get one, so
/// retries after network errors and 5xx answers are exactly-once.
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
        conflicts_with = "file",
        requires = "data"
    )]
    event_type: Option<String>,
    /// Event data as a JSON object.
    #[arg(long, value_name = "JSON", conflicts_with = "file")]
    data: Option<String>,
    /// Idempotency key for the single event.
    #[arg(long, conflicts_with = "file")]
    key: Option<String>,
    /// JSON Lines file of events (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
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

fn parse_event(text: &str, origin: &str) -> anyhow::Result<NewEvent> {
    decode::<NewEvent>(text.as_bytes(), usize::MAX, "event").map_err(|e| match e.pointer() {
        Some(p) => anyhow::anyhow!("{origin}: invalid event at {p:?}: {e}"),
        None => anyhow::anyhow!("{origin}: {e}"),
    })
}

fn read_events(args: &PublishArgs) -> anyhow::Result<Vec<NewEvent>> {
    if let Some(path) = &args.file {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading stdin")?
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        };
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            out.push(parse_event(line, &format!("{}:{}", path.display(), i + 1))?);
        }
        if out.is_empty() {
            bail!("{}: no events", path.display());
        }
        return Ok(out);
    }
    let (Some(t), Some(d)) = (&args.event_type, &args.data) else {
        bail!("give --type and --data, or --file");
    };
    let data: serde_json::Value =
        serde_json::from_str(d).map_err(|e| anyhow::anyhow!("--data: invalid JSON: {e}"))?;
    let mut obj = serde_json::json!({ "type": t, "data": data });
    if let Some(k) = &args.key {
        obj["idempotency_key"] = serde_json::Value::String(k.clone());
    }
    Ok(vec![parse_event(&obj.to_string(), "--type/--data")?])
}

pub(crate) fn run(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let run_id = RunId::new(args.run_id.clone()).map_err(|e| anyhow::anyhow!("RUN_ID: {e}"))?;
    let mut events = read_events(&args)?;
    let prefix = format!("publish-{}", uuid::Uuid::new_v4().simple());
    for (i, e) in events.iter_mut().enumerate() {
        if e.idempotency_key.is_none() {
            e.idempotency_key = Some(format!("{prefix}-{i}"));
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(publish(&args, &run_id, events))
}

async fn publish(
    args: &PublishArgs,
    run_id: &RunId,
    events: Vec<NewEvent>,
) -> anyhow::Result<ExitCode> {
    let tls = runwire_client::tls::client_config(&args.ca_cert).context("--ca-cert")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tls_backend_preconfigured((*tls).clone())
        .build()
        .context("building the HTTP client")?;
    let url = format!(
        "{}{}",
        args.url.trim_end_matches('/'),
        runwire_protocol::http::events_path(run_id)
    );
    for chunk in events.chunks(APPEND_MAX_EVENTS) {
        let body = encode(&runwire_protocol::http::AppendRequest {
            events: chunk.to_vec(),
        });
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone());
            if let Some(t) = &args.token {
                req = req.bearer_auth(t);
            }
            let (retryable, err) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let bytes = resp.bytes().await.context("reading the answer")?;
                    if status.is_success() {
                        let r: AppendResponse = serde_json::from_slice(&bytes)
                            .context("the server's answer is not an AppendResponse")?;
                        let dup = r.events.iter().filter(|e| e.duplicate).count();
                        println!(
                            "{} seq {}..={} epoch {}{}",
                            r.run_id,
                            r.first_seq,
                            r.last_seq,
                            r.epoch,
                            if dup > 0 {
                                format!(" ({dup} already present)")
                            } else {
                                String::new()
                            }
                        );
                        break;
                    }
                    match serde_json::from_slice::<HttpError>(&bytes) {
                        Ok(e) => (
                            e.error.retryable,
                            format!(
                                "HTTP {status}: {} {}{}",
                                e.error.code,
                                e.error.message,
                                e.error
                                    .pointer
                                    .map(|p| format!(" (at {p})"))
                                    .unwrap_or_default()
                            ),
                        ),
                        Err(_) => (
                            status.is_server_error(),
                            format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
                        ),
                    }
                }
                Err(e) => (true, format!("request to {url} failed: {}", causes(&e))),
            };
            if !retryable || attempt >= args.attempts {
                eprintln!("error: {err}");
                return Ok(ExitCode::from(1));
            }
            let delay = 200u64 << attempt.min(6);
            eprintln!("retrying in {delay} ms: {err}");
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An error with its causes, outermost first: reqwest's own message ("error sending
/// request") says nothing of why (connection refused, an untrusted certificate).
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        next = cause.source();
    }
    text
}
