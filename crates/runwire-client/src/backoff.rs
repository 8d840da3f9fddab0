//! Reconnect delays: full-jitter exponential backoff (spec §12, `RW-RECONNECT-1` to
//! `RW-RECONNECT-6`).

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use runwire_protocol::{CloseAction, defaults};

/// Backoff parameters. The defaults are the spec's (Appendix B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The ceiling of the first reconnect delay, in milliseconds.
    pub base_ms: u64,
    /// The ceiling grows by this factor per attempt.
    pub factor: u32,
    /// The largest ceiling, in milliseconds.
    pub cap_ms: u64,
    /// Consecutive reconnect attempts allowed before the client gives up with a
    /// terminal error (`RW-RECONNECT-3`).
    pub max_attempts: u32,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base_ms: defaults::RECONNECT_BASE_MS,
            factor: defaults::RECONNECT_FACTOR,
            cap_ms: defaults::RECONNECT_CAP_MS,
            max_attempts: defaults::RECONNECT_MAX_ATTEMPTS,
        }
    }
}

/// One planned reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// The spec's attempt number `n` of the connection attempt this delay precedes
    /// (`RW-RECONNECT-1`): the consecutive failed attempts before it, 0 for the first
    /// reconnect after a healthy session. The delay was drawn from `0..=ceiling(n)`.
    pub attempt: u32,
    /// How long to wait before connecting.
    pub delay: Duration,
    /// The upper bound of the jitter draw: `min(cap, base * factor^n)` for a backoff
    /// reconnect, `base` for a reconnect-now.
    pub ceiling_ms: u64,
    /// The server's `retry_after_ms`, when it gave one.
    pub retry_after_ms: Option<u64>,
}

/// The reconnect schedule of one client (spec §12): the count of consecutive failed
/// attempts plus a seeded RNG, so a given seed always yields the same delays.
///
/// An attempt fails when it does not reach `welcome`, or when its session ends less
/// than `stable_session_ms` after `welcome` (`RW-RECONNECT-4`).
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
    rng: ChaCha8Rng,
}

impl Backoff {
    /// A schedule with the given parameters and jitter seed.
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Self {
            config,
            failures: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The parameters.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// Consecutive failed attempts so far: the spec's attempt number `n` of the next
    /// reconnect.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Forgets past failures: called once a session has stayed up for
    /// `stable_session_ms` after `welcome` (`RW-RECONNECT-4`).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The ceiling for the spec's attempt number `n`: `min(cap, base * factor^n)`.
    pub fn ceiling_ms(&self, n: u32) -> u64 {
        let c = &self.config;
        defaults::backoff_ceiling_ms(n, c.base_ms, c.factor, c.cap_ms)
    }

    /// Plans the reconnect after a connection ended. `failed` says whether the
    /// attempt that just ended counts as failed (it never reached `welcome`, or its
    /// session was shorter than `stable_session_ms`). Returns `None` once
    /// `max_attempts` consecutive attempts have failed (`RW-RECONNECT-3`).
    ///
    /// - [`CloseAction::ReconnectWithBackoff`]: a draw from `0..=ceiling(n)` (full
    ///   jitter, `RW-RECONNECT-1`), or the server's `retry_after_ms` if larger
    ///   (`RW-RECONNECT-2`).
    /// - [`CloseAction::ReconnectNow`]: `retry_after_ms` if the server gave one (it
    ///   jitters it), else a draw from `0..=base` (`RW-RECONNECT-6`).
    /// - [`CloseAction::Terminal`] never reaches this function; it is planned like a
    ///   backoff close if it does.
    pub fn plan(
        &mut self,
        action: CloseAction,
        retry_after_ms: Option<u64>,
        failed: bool,
    ) -> Option<Planned> {
        if failed {
            self.failures = self.failures.saturating_add(1);
        }
        if self.failures >= self.config.max_attempts {
            return None;
        }
        let n = self.failures;
        let (ceiling_ms, delay_ms) = match action {
            CloseAction::ReconnectNow => {
                let c = self.config.base_ms.min(self.config.cap_ms);
                match retry_after_ms {
                    Some(r) => (c, r),
                    None => (c, self.rng.random_range(0..=c)),
                }
            }
            _ => {
                let c = self.ceiling_ms(n);
                let draw = self.rng.random_range(0..=c);
                (c, retry_after_ms.map_or(draw, |r| r.max(draw)))
            }
        };
        Some(Planned {
            attempt: n,
            delay: Duration::from_millis(delay_ms),
            ceiling_ms,
            retry_after_ms,
        })
    }
}
