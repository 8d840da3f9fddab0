//! The slow-consumer plan: how long a client of the server suite stops reading, how
//! much the producer appends meanwhile, and from when the server was obliged to close
//! it as a slow consumer (spec §15, `RW-SLOW-1`, `RW-SLOW-6`).
//!
//! # Why a plan
//!
//! A stopped reader is cut off by whichever of two bounds the server reaches first,
//! and the kit must never race the server's own heartbeat: a client that does not
//! read does not answer pings either, so after `pong_timeout_ms` the server may close
//! it for that instead. And a frame only starts to wait in the server's queue once the
//! kernel's socket buffers are full (the server's send buffer and the kit's receive
//! buffer, a few MiB on Linux), which takes as long as the machine needs to append
//! that much. So instead of a fixed burst and a fixed pause, the kit:
//!
//! 1. stops reading at `T0`;
//! 2. appends events to a run the client is subscribed to, counting their bytes, until
//!    the server is *obliged* to have closed the client: either more than the kernel
//!    buffers plus the announced `slow_consumer_max_bytes` was appended (the byte
//!    bound, at the acknowledgement of the event that crossed it), or the first event
//!    that could not fit in the kernel buffers was acknowledged and then the batching
//!    window plus `slow_consumer_max_age_ms` passed (the age bound);
//! 3. reads again a little after that obligation, but always before `T0 + 0.8 ×
//!    pong_timeout_ms`, so that the heartbeat cannot have closed the client first,
//!    and the server still holds its closing frames (`RW-SLOW-6`).
//!
//! When the machine is too slow to oblige the server before the client must read
//! again, the scenario is inconclusive, never a violation. When the server was
//! obliged and did not close the client, the miss (how long after its obligation the
//! client read again) is judged against the kit's measured lateness like every other
//! timing judgment.

use std::time::Duration;

use tokio::time::Instant;

use runwire_mock::TimingMiss;

use crate::runner::StepFail;

/// The spec's default byte bound, assumed when `welcome` does not announce one.
pub(crate) const DEFAULT_MAX_BYTES: u64 = 4 * 1024 * 1024;
/// The spec's default age bound, assumed when `welcome` does not announce one.
pub(crate) const DEFAULT_MAX_AGE_MS: u64 = 10_000;
/// What the kit's WebSocket reader may hold in memory beyond the socket's receive
/// buffer when it stops (its read buffer and a partly read frame).
const READER_SLACK: u64 = 256 * 1024 + 64 * 1024;
/// The share of `pong_timeout_ms` the client may stay stopped.
const BUDGET_SHARE: f64 = 0.8;

/// The largest send buffer the server's kernel gives a socket whose size the server
/// does not set: this machine's `net.ipv4.tcp_wmem` maximum (Linux grows a socket's
/// send buffer up to it), 4 MiB when unreadable. Exact when the server runs here and
/// leaves `SO_SNDBUF` alone; a server that sets a larger `SO_SNDBUF`, or runs on a host
/// with larger buffers, is declared with `--server-send-buffer` (`docs/server-guide.md`).
pub(crate) fn kernel_send_buffer(declared: Option<u64>) -> (u64, String) {
    if let Some(d) = declared {
        return (d, "--server-send-buffer".into());
    }
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(2)
                .and_then(|x| x.parse::<u64>().ok())
        })
        .map_or_else(
            || (4 * 1024 * 1024, "assumed 4 MiB".into()),
            |t| (t, "net.ipv4.tcp_wmem maximum".into()),
        )
}

/// One client's stop-reading plan.
#[derive(Debug, Clone)]
pub(crate) struct SlowPlan {
    /// When the client stopped reading.
    pub(crate) paused_at: Instant,
    /// The announced `pong_timeout_ms`.
    pub(crate) pong_ms: u64,
    /// The announced (or default) age bound.
    pub(crate) max_age_ms: u64,
    /// The announced (or default) byte bound.
    pub(crate) max_bytes: u64,
    /// The announced batching window.
    pub(crate) batch_ms: u64,
    /// What the kernel buffers and the kit's reader can hold unread.
    pub(crate) buffers: u64,
    /// Where `buffers` came from.
    pub(crate) buffers_source: String,
    /// Event payload bytes appended since the pause.
    pub(crate) bytes: u64,
    /// Events appended since the pause.
    pub(crate) events: u64,
    /// When the server was obliged to have closed the client, and why.
    pub(crate) obliged: Option<(Instant, String)>,
    /// When the client read again.
    pub(crate) resumed_at: Option<Instant>,
}

impl SlowPlan {
    /// A plan for a client that stopped at `paused_at`, from what its `welcome`
    /// announced and its socket's receive buffer.
    pub(crate) fn new(
        paused_at: Instant,
        welcome: &serde_json::Value,
        recv_buffer: u64,
        declared_send_buffer: Option<u64>,
    ) -> Self {
        let num = |p: &str| welcome.pointer(p).and_then(serde_json::Value::as_u64);
        let (kernel, source) = kernel_send_buffer(declared_send_buffer);
        Self {
            paused_at,
            pong_ms: num("/pong_timeout_ms").unwrap_or(runwire_protocol::defaults::PONG_TIMEOUT_MS),
            max_age_ms: num("/limits/slow_consumer_max_age_ms").unwrap_or(DEFAULT_MAX_AGE_MS),
            max_bytes: num("/limits/slow_consumer_max_bytes").unwrap_or(DEFAULT_MAX_BYTES),
            batch_ms: num("/batch_window_ms").unwrap_or(0),
            buffers: kernel + recv_buffer + READER_SLACK,
            buffers_source: format!(
                "server send buffer {kernel} B ({source}) + client receive buffer {recv_buffer} B + reader {READER_SLACK} B"
            ),
            bytes: 0,
            events: 0,
            obliged: None,
            resumed_at: None,
        }
    }

    /// The last moment the client may read again.
    pub(crate) fn budget_end(&self) -> Instant {
        self.paused_at + Duration::from_secs_f64(self.pong_ms as f64 * BUDGET_SHARE / 1000.0)
    }

    /// Whether appending more can still oblige the server earlier or at all.
    pub(crate) fn keep_appending(&self, now: Instant) -> bool {
        if now >= self.budget_end() {
            return false;
        }
        match &self.obliged {
            None => true,
            // The byte bound obliges at once; the age bound only later, and more
            // bytes may reach the byte bound before it.
            Some((at, why)) => !why.starts_with("byte") && now < *at,
        }
    }

    /// Counts `n` appended events of `size` payload bytes acknowledged at `acked`.
    pub(crate) fn appended(&mut self, n: u64, size: u64, acked: Instant) {
        for _ in 0..n {
            self.bytes += size;
            self.events += 1;
            if self.bytes > self.buffers + self.max_bytes
                && self.obliged.as_ref().is_none_or(|(at, _)| acked < *at)
            {
                self.obliged = Some((
                    acked,
                    format!(
                        "bytes: {} B were appended after the client stopped reading, more than the buffers ({} B) plus slow_consumer_max_bytes ({} B)",
                        self.bytes, self.buffers, self.max_bytes
                    ),
                ));
            } else if self.bytes > self.buffers && self.obliged.is_none() {
                self.obliged = Some((
                    acked + Duration::from_millis(self.batch_ms + self.max_age_ms),
                    format!(
                        "age: event {} (acknowledged {} ms after the client stopped reading) could not fit in the buffers ({} B), so it waited in the server's queue from then on; batch_window_ms {} + slow_consumer_max_age_ms {} later the server had to close the client",
                        self.events,
                        acked.saturating_duration_since(self.paused_at).as_millis(),
                        self.buffers,
                        self.batch_ms,
                        self.max_age_ms
                    ),
                ));
            }
        }
    }

    /// When the client should read again: a little after the obligation (half the age
    /// bound, at least 100 ms, so that the judgment has a margin over the machine's
    /// lateness), never after the budget.
    pub(crate) fn resume_at(&self) -> Instant {
        let end = self.budget_end();
        match &self.obliged {
            Some((at, _)) => {
                let margin = Duration::from_millis((self.max_age_ms / 2).max(100));
                (*at + margin).min(end).max(*at)
            }
            None => end,
        }
    }

    fn ms_since_pause(&self, t: Instant) -> u128 {
        t.saturating_duration_since(self.paused_at).as_millis()
    }

    /// Turns a failed "receives error slow_consumer" into the right verdict.
    /// `got` is what the client saw instead: `Some(code)` another error, `None`
    /// nothing; `dropped` whether the connection ended without the error frame.
    pub(crate) fn judge_failure(&self, original: StepFail, dropped: bool) -> StepFail {
        let resumed = self.resumed_at.unwrap_or_else(Instant::now);
        let lead = format!(
            "the client stopped reading at 0 ms, {} events of {} B in all were appended, and it read again at {} ms (pong_timeout_ms {})",
            self.events,
            self.bytes,
            self.ms_since_pause(resumed),
            self.pong_ms
        );
        let Some((obliged_at, why)) = self.obliged.clone().filter(|(at, _)| *at <= resumed) else {
            let mut f = StepFail::msg(format!(
                "{}; then: {lead}, before the server was obliged to close it: a frame waits in the server's queue only once the buffers ({}) are full, and this machine could not append that much before the client had to read again. Not judged; see docs/server-guide.md (slow consumers)",
                original.message, self.buffers_source
            ));
            f.requirement = Some("RW-SLOW-1".into());
            f.inconclusive = true;
            return f;
        };
        let heartbeat_edge = self.paused_at + Duration::from_millis(self.pong_ms);
        if dropped {
            // The server gave up on its closing frames before pong_timeout_ms had
            // passed since it could have decided (it cannot decide before the pause).
            let margin = heartbeat_edge.saturating_duration_since(resumed);
            return StepFail::timing(
                "RW-SLOW-6",
                format!(
                    "{}; {lead}: the server dropped the connection without the slow_consumer error frame although the client read again within pong_timeout_ms of the pause",
                    original.message
                ),
                TimingMiss::new(margin, self.paused_at, resumed),
            );
        }
        let margin = resumed.saturating_duration_since(obliged_at);
        StepFail::timing(
            "RW-SLOW-1",
            format!(
                "{}; {lead}; the server was obliged to close it at {} ms ({why})",
                original.message,
                self.ms_since_pause(obliged_at)
            ),
            TimingMiss::new(margin, self.paused_at, resumed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan() -> SlowPlan {
        let w = json!({"pong_timeout_ms": 4000, "batch_window_ms": 20,
            "limits": {"slow_consumer_max_bytes": 1000, "slow_consumer_max_age_ms": 200}});
        let mut p = SlowPlan::new(Instant::now(), &w, 0, Some(0));
        p.buffers = 10_000;
        p
    }

    #[test]
    fn the_age_bound_obliges_after_the_buffers_fill_then_the_byte_bound_at_once() {
        let mut p = plan();
        let t0 = p.paused_at;
        p.appended(10, 1000, t0 + Duration::from_millis(100));
        assert!(p.obliged.is_none(), "10,000 B fit in the buffers");
        p.appended(1, 500, t0 + Duration::from_millis(150));
        let (at, why) = p.obliged.clone().unwrap();
        assert_eq!(at, t0 + Duration::from_millis(150 + 20 + 200));
        assert!(why.starts_with("age"));
        assert!(p.keep_appending(t0 + Duration::from_millis(200)));
        p.appended(1, 600, t0 + Duration::from_millis(200));
        let (at, why) = p.obliged.clone().unwrap();
        assert_eq!(at, t0 + Duration::from_millis(200));
        assert!(why.starts_with("bytes"));
        assert!(!p.keep_appending(t0 + Duration::from_millis(210)));
        assert!(p.resume_at() >= at && p.resume_at() <= p.budget_end());
    }

    #[test]
    fn no_obligation_is_inconclusive_and_a_late_close_is_a_timing_miss() {
        let mut p = plan();
        p.resumed_at = Some(p.budget_end());
        let f = p.judge_failure(StepFail::msg("nothing arrived"), false);
        assert!(f.inconclusive && f.timing.is_none());
        p.appended(20, 1000, p.paused_at + Duration::from_millis(10));
        let f = p.judge_failure(StepFail::msg("nothing arrived"), false);
        assert!(!f.inconclusive);
        assert_eq!(f.requirement.as_deref(), Some("RW-SLOW-1"));
        assert!(f.timing.unwrap().margin > Duration::from_millis(1000));
        let f = p.judge_failure(StepFail::msg("dropped"), true);
        assert_eq!(f.requirement.as_deref(), Some("RW-SLOW-6"));
    }
}
