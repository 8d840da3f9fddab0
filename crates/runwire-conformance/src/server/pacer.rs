//! The kit's side of the announced message rate (`RW-LIMIT-4`, `RW-LIMIT-5`).
//!
//! A server counts every client message, `hello` and `pong` included, against a token
//! bucket of capacity `max_messages_per_second` that refills at that rate and is full
//! when the connection opens. A kit that sends faster than that is a client breaking
//! `RW-LIMIT-5`: the server closes it with `rate_limited`, and whatever the step was
//! checking would be blamed on the server. So every kit connection keeps a copy of the
//! server's bucket: each message it sends takes a token, the automatic pongs too (they
//! are never delayed, a heartbeat scenario times them), and a message waits while the
//! bucket holds fewer than one token plus a reserve. The reserve absorbs what the copy
//! cannot see: messages the network delivers closer together than they were sent, so
//! that the server refilled less between them than the kit counted.
//!
//! Until `welcome` announces the rate, the bucket has the default of Appendix B
//! (`MAX_MESSAGES_PER_SECOND`). Steps that exceed the rate on purpose send unpaced.

use std::time::Duration;

use tokio::time::Instant;

/// A copy of the server's token bucket for one connection.
#[derive(Debug)]
pub(crate) struct Pacer {
    tokens: f64,
    rate: f64,
    at: Instant,
}

impl Pacer {
    /// A full bucket at the default rate, as the server's is when the connection opens.
    pub(crate) fn new() -> Self {
        let rate = f64::from(runwire_protocol::defaults::MAX_MESSAGES_PER_SECOND);
        Self {
            tokens: rate,
            rate,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
    }

    /// The rate `welcome` announced (`limits.max_messages_per_second`).
    pub(crate) fn announce(&mut self, rate: u64) {
        self.refill(Instant::now());
        #[allow(clippy::cast_precision_loss)] // a rate, far below 2^52
        let rate = rate.max(1) as f64;
        self.rate = rate;
        self.tokens = self.tokens.min(rate);
    }

    /// Tokens kept back for arrival jitter: a tenth of the bucket, at least 2 (but never
    /// the whole bucket of a tiny rate).
    fn reserve(&self) -> f64 {
        (self.rate / 10.0).max(2.0).min(self.rate - 1.0).max(0.0)
    }

    /// How long a message must wait before it may be sent (zero: at once).
    pub(crate) fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        let missing = 1.0 + self.reserve() - self.tokens;
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.rate)
        }
    }

    /// Counts a message sent at `now`.
    pub(crate) fn take(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `n` messages as fast as the pacer allows, starting at `t`, and checks each
    /// against a bucket like the server's (`RW-LIMIT-4`); returns when the last went.
    fn run(
        p: &mut Pacer,
        server: &mut Pacer,
        mut t: Instant,
        n: u32,
        pong_every: Option<Duration>,
    ) -> Instant {
        let mut next_pong = pong_every.map(|d| t + d);
        for _ in 0..n {
            let w = p.wait(t);
            t += w;
            while let (Some(at), Some(d)) = (next_pong, pong_every)
                && at <= t
            {
                p.take(at);
                server.take(at);
                assert!(
                    server.tokens >= 0.0,
                    "the server's bucket ran dry on a pong"
                );
                next_pong = Some(at + d);
            }
            p.take(t);
            server.take(t);
            assert!(server.tokens >= 0.0, "the server's bucket ran dry");
        }
        t
    }

    #[test]
    fn a_burst_stays_within_the_servers_bucket() {
        let t = Instant::now();
        let (mut p, mut server) = (Pacer::new(), Pacer::new());
        p.at = t;
        server.at = t;
        let end = run(&mut p, &mut server, t, 500, None);
        // 500 messages at 50/s after a burst of about 47: at least 9 s.
        assert!(end >= t + Duration::from_secs(9), "{:?}", end - t);
    }

    #[test]
    fn pongs_are_counted_and_never_overdraw() {
        let t = Instant::now();
        let (mut p, mut server) = (Pacer::new(), Pacer::new());
        p.at = t;
        server.at = t;
        p.announce(20);
        server.announce(20);
        run(
            &mut p,
            &mut server,
            t,
            300,
            Some(Duration::from_millis(100)),
        );
    }

    #[test]
    fn a_tiny_rate_still_sends() {
        let t = Instant::now();
        let (mut p, mut server) = (Pacer::new(), Pacer::new());
        p.at = t;
        server.at = t;
        p.announce(1);
        server.announce(1);
        let end = run(&mut p, &mut server, t, 3, None);
        assert!(end >= t + Duration::from_secs(2));
    }
}
