//! Counters, gauges and latency histograms exported at `GET /metrics` in the
//! Prometheus text format.

use std::{
    fmt::Write,
    net::SocketAddr,
    sync::{
        Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

macro_rules! metrics {
    ($( $field:ident : $kind:ident = $name:literal, $help:literal; )*) => {
        /// The server's counters and gauges.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(
                #[doc = $help]
                pub $field: metrics!(@ty $kind),
            )*
        }

        impl Metrics {
            /// Renders every metric in the Prometheus text exposition format.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    let _ = writeln!(out, "# HELP {} {}", $name, $help);
                    let _ = writeln!(out, "# TYPE {} {}", $name, metrics!(@kind $kind));
                    metrics!(@render $kind, out, $name, self.$field);
                )*
                out
            }
        }
    };
    (@ty counter) => { AtomicU64 };
    (@ty gauge) => { AtomicI64 };
    (@ty histogram) => { Histogram };
    (@kind counter) => { "counter" };
    (@kind gauge) => { "gauge" };
    (@kind histogram) => { "histogram" };
    (@render histogram, $out:ident, $name:literal, $v:expr) => {
        $v.render_into(&mut $out, $name)
    };
    (@render $other:ident, $out:ident, $name:literal, $v:expr) => {{
        let _ = writeln!($out, "{} {}", $name, $v.load(Ordering::Relaxed));
    }};
}

/// Upper bounds of the latency histograms' buckets, in seconds (`le` labels).
pub const LATENCY_BUCKETS_S: [f64; 14] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The same bounds in nanoseconds, for the lock-free observation.
const LATENCY_BUCKETS_NS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A Prometheus histogram of durations with the fixed buckets
/// [`LATENCY_BUCKETS_S`]: an observation is a few relaxed atomic additions, no lock
/// and no allocation.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative; the last one is `+Inf` only).
    buckets: [AtomicU64; LATENCY_BUCKETS_NS.len() + 1],
    /// Sum of the observations, in nanoseconds.
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records `n` observations of `d`.
    pub fn observe_n(&self, d: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_NS
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(LATENCY_BUCKETS_NS.len());
        self.buckets[i].fetch_add(n, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(ns.saturating_mul(n), Ordering::Relaxed);
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    /// Records one observation of `d`.
    pub fn observe(&self, d: Duration) {
        self.observe_n(d, 1);
    }

    /// Records the live frames of one write that completed now: each `(published,
    /// events)` counts `events` observations of the time since `published`, and the
    /// list is emptied (kept allocated for the next write).
    pub(crate) fn observe_written(&self, live: &mut Vec<(Instant, u32)>) {
        if live.is_empty() {
            return;
        }
        let now = Instant::now();
        for (published, n) in live.drain(..) {
            self.observe_n(now.saturating_duration_since(published), u64::from(n));
        }
    }

    /// How many observations were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render_into(&self, out: &mut String, name: &str) {
        let mut cumulative = 0u64;
        for (i, le) in LATENCY_BUCKETS_S.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.buckets[LATENCY_BUCKETS_NS.len()].load(Ordering::Relaxed);
        // The count is read after the buckets; +Inf is the bucket total, so that
        // `+Inf` equals `_count` in one scrape even while observations land.
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

metrics! {
    connections_total: counter = "runwire_connections_total", "WebSocket connections accepted.";
    connections: gauge = "runwire_connections", "WebSocket connections open.";
    subscriptions: gauge = "runwire_subscriptions", "Subscriptions open.";
    events_in: counter = "runwire_events_in_total", "Events appended (excluding idempotent duplicates).";
    append_requests: counter = "runwire_append_requests_total", "Append requests answered successfully.";
    events_out: counter = "runwire_events_out_total", "Events sent to subscribers (replay and live).";
    frames_out: counter = "runwire_frames_out_total", "Frames sent to clients.";
    batches_out: counter = "runwire_batches_out_total", "Batch frames sent.";
    resets: counter = "runwire_resets_total", "Subscriptions answered with a reset.";
    slow_consumer_closes: counter = "runwire_slow_consumer_closes_total", "Connections closed as slow consumers.";
    rate_limited_closes: counter = "runwire_rate_limited_closes_total", "Connections closed for exceeding the message rate.";
    pong_timeouts: counter = "runwire_pong_timeouts_total", "Connections closed for a missing pong.";
    auth_failures: counter = "runwire_auth_failures_total", "Refused tokens and forbidden runs (HTTP and WebSocket).";
    protocol_errors: counter = "runwire_protocol_errors_total", "Error frames sent for bad client input.";
    store_errors: counter = "runwire_store_errors_total", "Store operations that failed.";
    lingering_closes: counter = "runwire_lingering_closes_total", "Connections closed with a lingering close (FIN sent, remaining client input read and discarded).";
    store_up: gauge = "runwire_store_up", "1 when the event store passed its last health check (run at every /healthz and /metrics request), else 0.";
    linger_cutoffs: counter = "runwire_linger_cutoffs_total", "Lingering closes ended by close_timeout_ms or the byte bound instead of the client closing its side.";
    origin_refusals: counter = "runwire_origin_refusals_total", "Requests and upgrades refused for an Origin that is not allowed.";
    refused_connection_limit: counter = "runwire_refused_connection_limit_total", "Connections refused at accept because max_connections were open (503, RW-SEC-12).";
    refused_pre_hello_limit: counter = "runwire_refused_pre_hello_limit_total", "Connections refused at accept because their address held max_pre_hello_per_address connections without hello (503, RW-SEC-12).";
    handshake_timeouts: counter = "runwire_handshake_timeouts_total", "Connections closed at the handshake deadline: no complete request head, no answered upgrade, or no finished TLS handshake (RW-SEC-11).";
    tls_handshake_failures: counter = "runwire_tls_handshake_failures_total", "TLS handshakes that failed (not TLS, no common version or cipher, a client that refused the certificate).";
    refused_identity_limit: counter = "runwire_refused_identity_limit_total", "Hellos refused with server_overloaded because their identity held max_connections_per_identity connections (RW-SEC-18).";
    body_timeouts: counter = "runwire_body_timeouts_total", "Appends answered 408 because their body did not arrive within body_timeout_ms (RW-SEC-13).";
    deliver_latency: histogram = "runwire_deliver_latency_seconds", "Live delivery latency: from an event's publication on this node's live feed (its append committed to the store) to the frame carrying it written to a subscriber's socket, one observation per event and subscriber (the events of a batch frame count with the publication time of the batch's oldest event).";
    append_duration: histogram = "runwire_append_duration_seconds", "Ingest latency: duration of successful POST /v1/runs/{run_id}/events requests, from the handler receiving the request (body read) to the answer (events durable).";
}

impl Metrics {
    /// Adds one to a counter.
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Moves a gauge.
    pub(crate) fn gauge(g: &AtomicI64, d: i64) {
        g.fetch_add(d, Ordering::Relaxed);
    }
}

/// How a connection ended when the server did not choose the close itself, for its
/// closed-connection log line.
#[derive(Debug)]
pub(crate) struct PeerEnd {
    /// `client_closed`, `connection_lost`, `read_failed`, `write_failed`.
    pub(crate) reason: &'static str,
    /// The client's close code, for `client_closed`.
    pub(crate) close_code: Option<u16>,
    /// The read error, for `read_failed`.
    pub(crate) error: Option<String>,
}

/// One connection's traffic and ending, for its closed-connection log line. Kept
/// here, beside the metrics, so the protocol code only calls it.
#[derive(Debug, Default)]
pub(crate) struct ConnStats {
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    events_out: AtomicU64,
    /// The close code and reason (the error code) the server chose, first one wins.
    ending: Mutex<Option<(u16, String)>>,
}

impl ConnStats {
    /// A frame arrived from the client.
    pub(crate) fn frame_in(&self) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` frames were written to the client's socket.
    pub(crate) fn frames_out(&self, n: u64) {
        self.frames_out.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` events were queued to the client.
    pub(crate) fn events_out(&self, n: u64) {
        self.events_out.fetch_add(n, Ordering::Relaxed);
    }

    /// The server closes the connection with `code` after the error `reason`; only the
    /// first ending counts.
    pub(crate) fn ended(&self, code: u16, reason: &str) {
        let mut e = self.ending.lock().unwrap_or_else(|e| e.into_inner());
        if e.is_none() {
            *e = Some((code, reason.to_owned()));
        }
    }

    /// The closed-connection log line (info, target `runwire::conn`): why and how the
    /// connection ended, how long it lasted, what went each way. Never the token
    /// (`RW-SEC-1`): the principal is the token's name.
    pub(crate) fn log_closed(
        &self,
        peer_end: Option<PeerEnd>,
        duration: Duration,
        session_id: Option<&str>,
        principal: Option<&str>,
        peer: Option<SocketAddr>,
    ) {
        let ending = self
            .ending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // The server's own close wins: a client that vanishes after the error frame
        // did not choose the ending.
        let (reason, close_code, error) = match (ending, peer_end) {
            (Some((code, reason)), _) => (reason, Some(code), None),
            (None, Some(p)) => (p.reason.to_owned(), p.close_code, p.error),
            (None, None) => ("server_closed".to_owned(), None, None),
        };
        tracing::info!(
            target: "runwire::conn",
            reason = %reason,
            close_code = close_code.map_or(-1, i64::from),
            duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            frames_in = self.frames_in.load(Ordering::Relaxed),
            frames_out = self.frames_out.load(Ordering::Relaxed),
            events_out = self.events_out.load(Ordering::Relaxed),
            session_id = session_id.unwrap_or("-"),
            peer = %peer.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            principal = principal.unwrap_or("-"),
            error = error.as_deref().unwrap_or("-"),
            "connection closed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets_sum_and_count() {
        let m = Metrics::default();
        m.deliver_latency.observe(Duration::from_micros(300));
        m.deliver_latency.observe_n(Duration::from_millis(3), 2);
        m.deliver_latency.observe(Duration::from_secs(60));
        let text = m.render();
        for line in [
            "# TYPE runwire_deliver_latency_seconds histogram",
            "runwire_deliver_latency_seconds_bucket{le=\"0.0005\"} 1",
            "runwire_deliver_latency_seconds_bucket{le=\"0.0025\"} 1",
            "runwire_deliver_latency_seconds_bucket{le=\"0.005\"} 3",
            "runwire_deliver_latency_seconds_bucket{le=\"10\"} 3",
            "runwire_deliver_latency_seconds_bucket{le=\"+Inf\"} 4",
            "runwire_deliver_latency_seconds_count 4",
            "runwire_deliver_latency_seconds_sum 60.0063",
            "runwire_append_duration_seconds_count 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(m.deliver_latency.count(), 4);
    }
}
