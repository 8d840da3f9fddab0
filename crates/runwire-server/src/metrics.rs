//! Counters exported at `GET /metrics` in the Prometheus text format.

use std::{
    fmt::Write,
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
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
                    let _ = writeln!(out, "{} {}", $name, self.$field.load(Ordering::Relaxed));
                )*
                out
            }
        }
    };
    (@ty counter) => { AtomicU64 };
    (@ty gauge) => { AtomicI64 };
    (@kind counter) => { "counter" };
    (@kind gauge) => { "gauge" };
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
