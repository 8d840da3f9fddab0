//! The reconnect schedule, exactly, with a fixed RNG (spec §12).

use std::time::Duration;

use runwire_client::{Backoff, BackoffConfig};
use runwire_protocol::CloseAction;

const SEED: u64 = 0x5eed_0001;

fn config() -> BackoffConfig {
    BackoffConfig {
        base_ms: 500,
        factor: 2,
        cap_ms: 20_000,
        max_attempts: 10,
    }
}

/// RW-RECONNECT-1: the delay before attempt n is uniform in 0..=min(cap, base*factor^n);
/// n counts consecutive failures, so the ceilings are 1 s, 2 s, 4 s, ... 20 s.
#[test]
fn rw_reconnect_1_envelope_per_attempt() {
    println!("seed {SEED}");
    let mut b = Backoff::new(config(), SEED);
    let expected = [
        1_000, 2_000, 4_000, 8_000, 16_000, 20_000, 20_000, 20_000, 20_000,
    ];
    let mut delays = Vec::new();
    for (i, ceiling) in expected.iter().enumerate() {
        let p = b
            .plan(CloseAction::ReconnectWithBackoff, None, true)
            .expect("within max attempts");
        assert_eq!(p.attempt, i as u32 + 1, "attempt number");
        assert_eq!(p.ceiling_ms, *ceiling, "ceiling of failure {}", i + 1);
        assert!(p.delay <= Duration::from_millis(*ceiling), "{p:?}");
        delays.push(p.delay);
    }
    // Full jitter: the draws are spread, not pinned to the ceiling.
    assert!(
        delays
            .iter()
            .zip(expected)
            .any(|(d, c)| d.as_millis() < c as u128 / 2)
    );
    // The same seed gives the same schedule.
    let mut again = Backoff::new(config(), SEED);
    for d in &delays {
        let p = again
            .plan(CloseAction::ReconnectWithBackoff, None, true)
            .expect("within max attempts");
        assert_eq!(p.delay, *d);
    }
}

/// RW-RECONNECT-1: after a healthy session (no failure) the first reconnect has n = 0.
#[test]
fn rw_reconnect_1_first_reconnect_after_healthy_session() {
    let mut b = Backoff::new(config(), SEED);
    let p = b
        .plan(CloseAction::ReconnectWithBackoff, None, false)
        .expect("planned");
    assert_eq!((p.attempt, p.ceiling_ms), (0, 500));
    assert!(p.delay <= Duration::from_millis(500));
}

/// The draws cover the envelope uniformly: over many draws at n = 0 both halves of
/// 0..=base are hit and nothing exceeds it.
#[test]
fn rw_reconnect_1_full_jitter_distribution() {
    let mut b = Backoff::new(config(), SEED);
    let (mut low, mut high) = (0, 0);
    for _ in 0..2_000 {
        let p = b
            .plan(CloseAction::ReconnectWithBackoff, None, false)
            .expect("planned");
        let ms = p.delay.as_millis();
        assert!(ms <= 500);
        if ms < 250 {
            low += 1;
        } else {
            high += 1;
        }
    }
    assert!(low > 800 && high > 800, "low {low} high {high}");
}

/// RW-RECONNECT-3: after max_attempts consecutive failures the client gives up.
#[test]
fn rw_reconnect_3_max_attempts() {
    let mut cfg = config();
    cfg.max_attempts = 3;
    let mut b = Backoff::new(cfg, SEED);
    assert!(
        b.plan(CloseAction::ReconnectWithBackoff, None, true)
            .is_some()
    );
    assert!(
        b.plan(CloseAction::ReconnectWithBackoff, None, true)
            .is_some()
    );
    assert_eq!(b.failures(), 2);
    assert!(
        b.plan(CloseAction::ReconnectWithBackoff, None, true)
            .is_none()
    );
    // Reconnect-now closes count too (RW-RECONNECT-6).
    let mut b = Backoff::new(cfg, SEED);
    assert!(b.plan(CloseAction::ReconnectNow, None, true).is_some());
    assert!(b.plan(CloseAction::ReconnectNow, None, true).is_some());
    assert!(b.plan(CloseAction::ReconnectNow, None, true).is_none());
}

/// RW-RECONNECT-4: a stable session resets the count, so the next reconnect starts
/// over at n = 0 and max_attempts counts afresh.
#[test]
fn rw_reconnect_4_reset_after_stable_session() {
    let mut cfg = config();
    cfg.max_attempts = 3;
    let mut b = Backoff::new(cfg, SEED);
    b.plan(CloseAction::ReconnectWithBackoff, None, true);
    b.plan(CloseAction::ReconnectWithBackoff, None, true);
    assert_eq!(b.failures(), 2);
    b.reset();
    let p = b
        .plan(CloseAction::ReconnectWithBackoff, None, false)
        .expect("count was reset");
    assert_eq!((p.attempt, p.ceiling_ms), (0, 500));
    assert!(
        b.plan(CloseAction::ReconnectWithBackoff, None, true)
            .is_some()
    );
    assert!(
        b.plan(CloseAction::ReconnectWithBackoff, None, true)
            .is_some()
    );
    assert!(
        b.plan(CloseAction::ReconnectWithBackoff, None, true)
            .is_none()
    );
}

/// RW-RECONNECT-2: retry_after_ms is a lower bound for backoff closes (the larger of
/// the two wins).
#[test]
fn rw_reconnect_2_retry_after_is_a_floor() {
    let mut b = Backoff::new(config(), SEED);
    for _ in 0..50 {
        let p = b
            .plan(CloseAction::ReconnectWithBackoff, Some(700), false)
            .expect("planned");
        assert!(p.delay >= Duration::from_millis(700), "{p:?}");
        assert!(
            p.delay <= Duration::from_millis(700.max(p.ceiling_ms)),
            "{p:?}"
        );
    }
    // A retry_after below the draw does not shorten it: with base 10 s the draws
    // exceed 1 ms nearly always.
    let mut cfg = config();
    cfg.base_ms = 10_000;
    let mut b = Backoff::new(cfg, SEED);
    let above = (0..50)
        .filter_map(|_| b.plan(CloseAction::ReconnectWithBackoff, Some(1), false))
        .filter(|p| p.delay > Duration::from_millis(1))
        .count();
    assert!(above > 45);
}

/// RW-RECONNECT-6: reconnect-now waits retry_after_ms exactly when given, else a draw
/// from 0..=base, never the exponential envelope.
#[test]
fn rw_reconnect_6_reconnect_now() {
    let mut b = Backoff::new(config(), SEED);
    for _ in 0..5 {
        b.plan(CloseAction::ReconnectWithBackoff, None, true);
    }
    let p = b
        .plan(CloseAction::ReconnectNow, Some(1_234), true)
        .expect("planned");
    assert_eq!(p.delay, Duration::from_millis(1_234));
    for _ in 0..3 {
        let p = b
            .plan(CloseAction::ReconnectNow, None, false)
            .expect("planned");
        assert_eq!(p.ceiling_ms, 500);
        assert!(p.delay <= Duration::from_millis(500), "{p:?}");
    }
}

/// The cap holds for huge attempt numbers and factors (no overflow).
#[test]
fn rw_reconnect_1_cap_without_overflow() {
    let cfg = BackoffConfig {
        base_ms: u64::MAX / 2,
        factor: 1_000,
        cap_ms: 30_000,
        max_attempts: u32::MAX,
    };
    let mut b = Backoff::new(cfg, SEED);
    for _ in 0..100 {
        let p = b
            .plan(CloseAction::ReconnectWithBackoff, None, true)
            .expect("planned");
        assert_eq!(p.ceiling_ms, 30_000);
    }
}
