//! One append request with its retries (spec §4.2, §4.5): retryable failures (network
//! errors, 5xx, `retryable` error bodies) are retried with backoff and said with
//! their cause; the idempotency keys make a retried request exactly-once.

use std::time::Duration;

use anyhow::Context;
use runwire_protocol::{
    RunId,
    codec::encode,
    http::{AppendRequest, AppendResponse, HttpError, NewEvent},
};

use super::PublishArgs;

/// Sends append requests to one run.
pub(super) struct Sender {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    attempts: u32,
}

/// The line printed for an acknowledged request.
pub(super) fn acknowledged(r: &AppendResponse) -> String {
    let dup = r.events.iter().filter(|e| e.duplicate).count();
    format!(
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
    )
}

impl Sender {
    pub(super) fn new(args: &PublishArgs, run_id: &RunId) -> anyhow::Result<Self> {
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
        Ok(Self {
            http,
            url,
            token: args.token.clone(),
            attempts: args.attempts.max(1),
        })
    }

    /// Appends `events` in one request, retrying retryable failures; the error says
    /// why the last attempt failed.
    pub(super) async fn append(&self, events: &[NewEvent]) -> anyhow::Result<AppendResponse> {
        let body = encode(&AppendRequest {
            events: events.to_vec(),
        });
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (retryable, err) = match self.attempt(&body).await {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            if !retryable || attempt >= self.attempts {
                anyhow::bail!("{err}");
            }
            let delay = Duration::from_millis(200u64 << attempt.min(6));
            eprintln!(
                "{err} — retry {}/{} in {:.1} s",
                attempt + 1,
                self.attempts,
                delay.as_secs_f64()
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One request: the answer, or whether the failure is retryable and what it was.
    async fn attempt(&self, body: &str) -> Result<AppendResponse, (bool, String)> {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Err((true, request_failure(&self.url, &e))),
        };
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| {
            (
                true,
                format!("reading the answer of {}: {}", self.url, causes(&e)),
            )
        })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                (
                    false,
                    format!("the server's answer is not an AppendResponse: {e}"),
                )
            });
        }
        Err(match serde_json::from_slice::<HttpError>(&bytes) {
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
        })
    }
}

/// Why a request failed, leading with what an operator acts on: `connection refused
/// by 127.0.0.1:7999` rather than reqwest's "error sending request".
fn request_failure(url: &str, e: &reqwest::Error) -> String {
    let at = e
        .url()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
        .unwrap_or_else(|| url.to_owned());
    let all = causes(e);
    let io = std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source())
        .find_map(|e| e.downcast_ref::<std::io::Error>());
    let lead = match io.map(std::io::Error::kind) {
        Some(std::io::ErrorKind::ConnectionRefused) => format!("connection refused by {at}"),
        Some(std::io::ErrorKind::ConnectionReset) => format!("connection reset by {at}"),
        _ if e.is_timeout() => format!("no answer from {at} within 30 s"),
        _ if e.is_connect() => format!("cannot connect to {at}"),
        _ => format!("request to {url} failed"),
    };
    format!("{lead} ({all})")
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
