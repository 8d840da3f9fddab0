//! `runwire watch --prefix`: finds the runs whose id starts with a prefix through
//! the run listing of the HTTP API (`GET /v1/runs`, spec §4.7), paging through it.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use runwire_protocol::{
    RunId,
    http::{HttpError, RUNS_MAX_LIMIT, RUNS_PATH, RunList},
};

/// Lists the runs of one prefix.
pub(super) struct Lister {
    http: reqwest::Client,
    /// `http(s)://host:port` (and any path prefix before the API's paths).
    base: String,
    prefix: String,
    token: Option<String>,
}

/// The base URL of the HTTP API for `--url`: `ws` becomes `http`, `wss` `https`, and
/// the stream path (`/v1/stream`) is dropped.
pub(super) fn http_base(url: &str) -> Result<String> {
    let (scheme, rest) = url.split_once("://").with_context(|| {
        format!("--url {url:?} has no scheme (ws://, wss://, http://, https://)")
    })?;
    let scheme = match scheme {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        other => bail!("--url scheme {other:?} is not ws, wss, http or https"),
    };
    let rest = rest.trim_end_matches('/');
    let rest = rest
        .strip_suffix(runwire_protocol::STREAM_PATH)
        .unwrap_or(rest);
    Ok(format!("{scheme}://{rest}"))
}

/// Whether `prefix` can start a run id: at most 128 of the characters a run id may
/// hold (`RW-EVENT-2`, `RW-INGEST-27`).
pub(super) fn check_prefix(prefix: &str) -> Result<()> {
    let bad = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')));
    if let Some(c) = bad {
        bail!(
            "--prefix {prefix:?}: {c:?} is not a character of a run id (A-Z, a-z, 0-9, '.', '_', ':', '-')"
        );
    }
    if prefix.len() > 128 {
        bail!(
            "--prefix is {} characters long; a run id has at most 128",
            prefix.len()
        );
    }
    Ok(())
}

impl Lister {
    pub(super) fn new(
        url: &str,
        prefix: String,
        token: Option<String>,
        tls: &runwire_client::tls::TlsClientConfig,
    ) -> Result<Self> {
        check_prefix(&prefix)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .tls_backend_preconfigured(tls.clone())
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: http_base(url)?,
            prefix,
            token,
        })
    }

    /// The prefix.
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every run with the prefix, paging through the listing.
    pub(super) async fn list(&self) -> Result<Vec<RunId>> {
        let mut runs: Vec<RunId> = Vec::new();
        loop {
            // The prefix and run ids hold only characters a query may carry as
            // they are (`check_prefix`, `RW-EVENT-2`).
            let mut url = format!(
                "{}{RUNS_PATH}?prefix={}&limit={RUNS_MAX_LIMIT}",
                self.base, self.prefix
            );
            if let Some(last) = runs.last() {
                url.push_str("&after=");
                url.push_str(last.as_str());
            }
            let mut req = self.http.get(&url);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("listing runs at {url}"))?;
            let status = resp.status();
            let body = resp
                .bytes()
                .await
                .with_context(|| format!("reading the listing from {url}"))?;
            if !status.is_success() {
                let why = serde_json::from_slice::<HttpError>(&body).map_or_else(
                    |_| String::from_utf8_lossy(&body).into_owned(),
                    |e| format!("{}: {}", e.error.code, e.error.message),
                );
                if status.as_u16() == 404 {
                    bail!(
                        "{url} answered 404 ({why}): this server does not list runs (GET /v1/runs, spec §4.7, is optional); name the runs instead"
                    );
                }
                bail!("{url} answered {status}: {why}");
            }
            let page: RunList = serde_json::from_slice(&body)
                .with_context(|| format!("the listing from {url} is not a run list"))?;
            let more = page.has_more && !page.runs.is_empty();
            runs.extend(page.runs.into_iter().map(|r| r.run_id));
            if !more {
                return Ok(runs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_and_prefixes() {
        assert_eq!(http_base("ws://h:1/v1/stream").unwrap(), "http://h:1");
        assert_eq!(http_base("https://h/").unwrap(), "https://h");
        assert_eq!(http_base("wss://h/x/v1/stream").unwrap(), "https://h/x");
        assert!(http_base("ftp://h").is_err());
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("ci:web-1.2_").is_ok());
        assert!(check_prefix("ci/web").is_err());
        assert!(check_prefix(&"a".repeat(129)).is_err());
    }
}
