//! Preflight and calibration: before any scenario runs, check that the target can be
//! reached at all (one clear line and exit 2 when it cannot, instead of a hundred MUST
//! "violations"), measure how late this machine runs timers and how long the client
//! adapter takes to start, and choose the time scale from those numbers
//! (`--time-scale auto`). `docs/ci-guide.md`, "Preflight and calibration", documents
//! the rule.

use std::{process::Stdio, time::Duration};

use runwire_mock::Probe;
use tokio::{net::TcpListener, process::Command, time::Instant};

use crate::{
    client::ClientTarget,
    model::{Calibration, Lateness},
    server::ServerTarget,
};

/// Why the kit cannot run against a target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PreflightError {
    /// The stream endpoint does not accept a WebSocket upgrade.
    #[error("cannot open {url}: {reason}")]
    Stream {
        /// The `--url`.
        url: String,
        /// What went wrong (connection refused by ADDR, HTTP status, timeout).
        reason: String,
    },
    /// The producer API does not answer HTTP.
    #[error("cannot reach the producer API {url}: {reason}")]
    Ingest {
        /// The `--ingest` URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The adapter command cannot be started, or never connects.
    #[error("the client adapter {command} {reason}")]
    Adapter {
        /// The command line.
        command: String,
        /// What went wrong.
        reason: String,
    },
}

/// Describes a failed TCP connect with the address that refused it.
fn connect_error(addr: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => format!("connection refused by {addr}"),
        _ => format!("cannot connect to {addr}: {e}"),
    }
}

/// Checks that the server target's stream endpoint completes a WebSocket upgrade and
/// its producer API answers HTTP, each within `limit`.
pub async fn check_server(target: &ServerTarget, limit: Duration) -> Result<(), PreflightError> {
    let stream_err = |reason: String| PreflightError::Stream {
        url: target.ws_url.clone(),
        reason,
    };
    let hostport = crate::net::Endpoint::parse(&target.ws_url)
        .ok()
        .filter(|_| target.ws_url.starts_with("ws"))
        .ok_or_else(|| stream_err("not a ws:// or wss:// URL".into()))?
        .authority;
    // A plain TCP connect first, so that a refused or unreachable address is named.
    match tokio::time::timeout(limit, tokio::net::TcpStream::connect(&hostport)).await {
        Err(_) => {
            return Err(stream_err(format!(
                "no TCP connection to {hostport} within {} ms",
                limit.as_millis()
            )));
        }
        Ok(Err(e)) => return Err(stream_err(connect_error(&hostport, &e))),
        Ok(Ok(_)) => {}
    }
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        target.ws_url.as_str(),
    )
    .map_err(|e| stream_err(format!("bad URL: {e}")))?;
    if let Some(t) = &target.token {
        // Some servers refuse the upgrade itself without credentials.
        if let Ok(v) = format!("Bearer {t}").parse() {
            req.headers_mut().insert("authorization", v);
        }
    }
    let upgrade = tokio_tungstenite::connect_async_tls_with_config(
        req,
        None,
        true,
        Some(crate::net::connector()),
    );
    match tokio::time::timeout(limit, upgrade).await {
        Err(_) => {
            return Err(stream_err(format!(
                "the WebSocket upgrade did not complete within {} ms",
                limit.as_millis()
            )));
        }
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            return Err(stream_err(format!(
                "the upgrade was answered with HTTP {} instead of 101 (is the path right?)",
                resp.status()
            )));
        }
        Ok(Err(e)) => return Err(stream_err(format!("the WebSocket upgrade failed: {e}"))),
        Ok(Ok((mut ws, _))) => {
            let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
        }
    }
    let ingest_err = |reason: String| PreflightError::Ingest {
        url: target.ingest_url.clone(),
        reason,
    };
    let (ihost, _) = crate::http::split_base(&target.ingest_url).map_err(ingest_err)?;
    match tokio::time::timeout(limit, tokio::net::TcpStream::connect(&ihost)).await {
        Err(_) => {
            return Err(ingest_err(format!(
                "no TCP connection to {ihost} within {} ms",
                limit.as_millis()
            )));
        }
        Ok(Err(e)) => return Err(ingest_err(connect_error(&ihost, &e))),
        Ok(Ok(_)) => {}
    }
    // Any HTTP answer will do (the run need not exist, the token may be refused).
    crate::http::request(
        &target.ingest_url,
        "GET",
        "/v1/runs/rwc-preflight/events",
        target.token.as_deref(),
        None,
        limit,
    )
    .await
    .map_err(|e| ingest_err(format!("no HTTP answer: {e}")))?;
    Ok(())
}

/// Starts the adapter against a listener that only accepts, and measures the time
/// from spawn to its first TCP connection; the adapter is killed afterwards. Fails
/// when the command cannot be spawned, exits before connecting, or does not connect
/// within `limit`.
pub async fn adapter_startup(
    target: &ClientTarget,
    limit: Duration,
) -> Result<Duration, PreflightError> {
    let command = std::iter::once(&target.program)
        .chain(target.args.iter())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let err = |reason: String| PreflightError::Adapter {
        command: command.clone(),
        reason,
    };
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| err(format!("cannot be tested: no local port: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| err(format!("cannot be tested: {e}")))?;
    let mut cmd = Command::new(&target.program);
    cmd.args(&target.args)
        .env("RUNWIRE_URL", format!("ws://{addr}/v1/stream"))
        .env("RUNWIRE_RUNS", "rwc-preflight")
        .env("RUNWIRE_SEED", "1")
        .envs(target.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| err(format!("cannot be started: {e}")))?;
    let stderr = child.stderr.take();
    let result = tokio::select! {
        a = tokio::time::timeout(limit, listener.accept()) => match a {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(err(format!("could not be tested: accept failed: {e}"))),
            Err(_) => Err(err(format!("did not connect within {} ms of starting", limit.as_millis()))),
        },
        st = child.wait() => {
            let mut last = String::new();
            if let Some(mut e) = stderr {
                let mut buf = Vec::new();
                let _ = tokio::time::timeout(
                    Duration::from_millis(500),
                    tokio::io::AsyncReadExt::read_to_end(&mut e, &mut buf),
                )
                .await;
                last = String::from_utf8_lossy(&buf)
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .to_owned();
            }
            Err(err(format!(
                "exited ({}) before it connected{}",
                st.map_or_else(|e| e.to_string(), |s| s.to_string()),
                if last.is_empty() { String::new() } else { format!(": {last}") }
            )))
        }
    };
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    result
}

/// Measures the probe's lateness over `window` (the kit sleeps meanwhile).
pub async fn timer_lateness(probe: &Probe, window: Duration) -> Lateness {
    let from = std::time::Instant::now();
    tokio::time::sleep(window).await;
    probe.summary(from, std::time::Instant::now()).into()
}

/// The time scales `--time-scale auto` chooses: the server suite's from the timer
/// lateness alone (its 99th percentile against 10 ms, the order of the shortest
/// slack the server suite judges), the client suite's also from the adapter's
/// start-up time (against 250 ms: a fixture's shortest deadlines are a few hundred
/// milliseconds). Each is rounded up to one of 1, 1.5, 2, 3, 4, 6, 8 (at most 8).
pub fn choose_scales(lateness: &Lateness, adapter_startup: Option<Duration>) -> (f64, f64, String) {
    const STEPS: [f64; 7] = [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0];
    let round_up = |x: f64| {
        STEPS
            .iter()
            .copied()
            .find(|s| *s >= x - 1e-9)
            .unwrap_or(8.0)
    };
    let by_lateness = lateness.p99_ms / 10.0;
    let server = round_up(by_lateness.max(1.0));
    let by_startup = adapter_startup.map_or(0.0, |d| d.as_secs_f64() * 1000.0 / 250.0);
    let client = round_up(by_lateness.max(by_startup).max(1.0));
    let reason = format!(
        "timer lateness p99 {:.1} ms / 10 ms{}",
        lateness.p99_ms,
        adapter_startup.map_or(String::new(), |d| format!(
            ", adapter start-up {:.0} ms / 250 ms",
            d.as_secs_f64() * 1000.0
        ))
    );
    (server, client, reason)
}

/// Builds the calibration record.
pub fn calibration(
    lateness: Lateness,
    adapter_startup: Option<Duration>,
    auto: bool,
    time_scale: f64,
    client_time_scale: f64,
    reason: String,
) -> Calibration {
    Calibration {
        timer_lateness: lateness,
        adapter_startup_ms: adapter_startup.map(|d| d.as_secs_f64() * 1000.0),
        auto,
        time_scale,
        client_time_scale,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_grow_with_lateness_and_startup() {
        let quiet = Lateness {
            samples: 60,
            p50_ms: 0.2,
            p99_ms: 1.5,
            max_ms: 3.0,
        };
        assert_eq!(choose_scales(&quiet, None).0, 1.0);
        assert_eq!(
            choose_scales(&quiet, Some(Duration::from_millis(40))).1,
            1.0
        );
        let busy = Lateness {
            p99_ms: 25.0,
            ..quiet
        };
        assert_eq!(choose_scales(&busy, None).0, 3.0);
        let (s, c, _) = choose_scales(&quiet, Some(Duration::from_millis(900)));
        assert_eq!((s, c), (1.0, 4.0));
        let awful = Lateness {
            p99_ms: 500.0,
            ..quiet
        };
        assert_eq!(choose_scales(&awful, None).0, 8.0);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_named() {
        // Port 1 on loopback: nothing listens there.
        let t = ServerTarget {
            ws_url: "ws://127.0.0.1:1/v1/stream".into(),
            ingest_url: "http://127.0.0.1:1".into(),
            token: None,
            limited_token: None,
            hello_timeout_ms: 3000,
            control: None,
            token_minter: None,
            short_retention: None,
            send_buffer: None,
            admission: Default::default(),
            description: String::new(),
        };
        let e = check_server(&t, Duration::from_secs(1)).await.unwrap_err();
        assert!(
            e.to_string().contains("connection refused by 127.0.0.1:1"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_missing_adapter_is_named() {
        let t = ClientTarget {
            program: "/nonexistent/runwire-adapter".into(),
            args: vec![],
            env: vec![],
            fault: None,
            description: String::new(),
        };
        let e = adapter_startup(&t, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("cannot be started"), "{e}");
        let t = ClientTarget {
            program: "sh".into(),
            args: vec!["-c".into(), "echo broken >&2; exit 3".into()],
            env: vec![],
            fault: None,
            description: String::new(),
        };
        let e = adapter_startup(&t, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("exited") && e.to_string().contains("broken"),
            "{e}"
        );
    }
}
