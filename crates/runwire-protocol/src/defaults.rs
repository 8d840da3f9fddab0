//! Default values of every timer and limit (spec Appendix B, with the reason for each).

/// How long the server waits for `hello` after the upgrade (`RW-CONN-3`).
pub const HELLO_TIMEOUT_MS: u64 = 3_000;
/// How often the server sends `ping` (`RW-HEART-1`).
pub const HEARTBEAT_INTERVAL_MS: u64 = 25_000;
/// How long the server waits for the `pong` (`RW-HEART-3`).
pub const PONG_TIMEOUT_MS: u64 = 10_000;
/// Added to the heartbeat interval to get the client's liveness timeout (`RW-HEART-5`).
pub const LIVENESS_GRACE_MS: u64 = 10_000;
/// Batching window; 0 turns batching off (`RW-BATCH-1`).
pub const BATCH_WINDOW_MS: u64 = 200;
/// Most events in one batch frame (`RW-BATCH-2`).
pub const BATCH_MAX_EVENTS: usize = 500;
/// How far behind the head a cursor may be and still be replayed (`RW-RESUME-5`).
pub const REPLAY_WINDOW_EVENTS: u64 = 100_000;
/// Largest inbound frame (`RW-LIMIT-1`).
pub const MAX_FRAME_BYTES: u32 = 64 * 1024;
/// Largest serialized event (`RW-LIMIT-2`).
pub const MAX_EVENT_BYTES: u32 = 64 * 1024;
/// Most subscriptions per connection (`RW-LIMIT-3`).
pub const MAX_SUBSCRIPTIONS: u32 = 100;
/// Client messages per second, sustained and as a burst (`RW-LIMIT-4`).
pub const MAX_MESSAGES_PER_SECOND: u32 = 50;
/// Outbound queue limit in bytes before a slow-consumer close (`RW-SLOW-1`).
pub const SLOW_CONSUMER_MAX_BYTES: u64 = 4 * 1024 * 1024;
/// Outbound queue limit by the age of the oldest queued frame (`RW-SLOW-1`).
pub const SLOW_CONSUMER_MAX_AGE_MS: u64 = 10_000;
/// Reconnect backoff base (`RW-RECONNECT-1`).
pub const RECONNECT_BASE_MS: u64 = 500;
/// Reconnect backoff factor (`RW-RECONNECT-1`).
pub const RECONNECT_FACTOR: u32 = 2;
/// Reconnect backoff cap (`RW-RECONNECT-1`).
pub const RECONNECT_CAP_MS: u64 = 20_000;
/// Consecutive failed attempts before a terminal error (`RW-RECONNECT-3`).
pub const RECONNECT_MAX_ATTEMPTS: u32 = 10;
/// A session that stays up this long after `welcome` resets the attempt counter
/// (`RW-RECONNECT-4`).
pub const STABLE_SESSION_MS: u64 = 5_000;
/// How long a client buffers out-of-order events before it resubscribes (`RW-ORDER-5`).
pub const GAP_TIMEOUT_MS: u64 = 2_000;
/// Most events a client buffers while waiting for a gap to fill (`RW-ORDER-5`).
pub const GAP_BUFFER_EVENTS: usize = 1_000;
/// Upper bound of the jittered `retry_after_ms` a shutting-down server sends
/// (`RW-SHUTDOWN-2`).
pub const SHUTDOWN_RECONNECT_SPREAD_MS: u64 = 5_000;
/// Clock skew a server allows when it checks a token's not-before and issued-at times
/// (`RW-AUTH-14`), in seconds.
pub const TOKEN_CLOCK_SKEW_S: u64 = 60;

/// The backoff envelope for attempt `n` (0-based): the delay is drawn uniformly from
/// `0..=min(cap, base * factor^n)` (full jitter, `RW-RECONNECT-1`).
pub fn backoff_ceiling_ms(attempt: u32, base_ms: u64, factor: u32, cap_ms: u64) -> u64 {
    let mut v = base_ms;
    for _ in 0..attempt {
        v = v.saturating_mul(u64::from(factor));
        if v >= cap_ms {
            return cap_ms;
        }
    }
    v.min(cap_ms)
}

/// Server deployment default (not announced): the whole HTTP request head must arrive
/// within this long (`RW-SEC-11`).
pub const HEADER_TIMEOUT_MS: u64 = 10_000;
/// Server deployment default (not announced): from accept, the WebSocket upgrade must
/// be complete (or a plain request head received) within this long (`RW-SEC-11`).
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Server deployment default (not announced): an append's whole body must arrive within
/// this long after its head (`RW-SEC-13`).
pub const BODY_TIMEOUT_MS: u64 = 30_000;
/// Server deployment default (not announced): an idle HTTP/1.1 keep-alive connection
/// is closed after this long without a request.
pub const KEEP_ALIVE_TIMEOUT_MS: u64 = 5_000;
/// Server deployment default (not announced): most connections open at once.
pub const MAX_CONNECTIONS: u32 = 10_000;
/// Server deployment default (not announced): most connections from one source address
/// that have not sent `hello` yet (`RW-SEC-12`).
pub const MAX_PRE_HELLO_PER_ADDRESS: u32 = 128;
/// Server deployment default (not announced): most connections one authenticated
/// identity holds open at once (`RW-SEC-18`).
pub const MAX_CONNECTIONS_PER_IDENTITY: u32 = 1_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling() {
        assert_eq!(backoff_ceiling_ms(0, 500, 2, 20_000), 500);
        assert_eq!(backoff_ceiling_ms(1, 500, 2, 20_000), 1_000);
        assert_eq!(backoff_ceiling_ms(5, 500, 2, 20_000), 16_000);
        assert_eq!(backoff_ceiling_ms(6, 500, 2, 20_000), 20_000);
        assert_eq!(backoff_ceiling_ms(200, 500, 2, 20_000), 20_000);
    }
}
