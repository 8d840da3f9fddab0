//! Reconnect judgments, made when the fixture ends: every reconnect delay against its
//! envelope, one connection at a time (`RW-RECONNECT-9`) and jitter.
//!
//! A reconnect delay is what the client *decided*; the time the mock measures between
//! two connections adds whatever the machine added (the mock noticing the end late,
//! the adapter's event loop lagging, the connect itself). So when the adapter
//! announces its decision (`{"kind":"state","state":"reconnecting","delay_ms":D}`,
//! `docs/client-adapter.md`), the mock judges two things separately:
//!
//! 1. the announced `D` against the fixture's envelope, exactly: no machine load
//!    changes a number the client chose, so a violation is conclusive;
//! 2. whether the client kept its announcement: from the moment the line reached the
//!    mock to the accept of the next connection it waited at least `D` and at most
//!    `D` plus the connect overhead measured at its first connection (within the
//!    measured lateness). A kept announcement settles the delay: whatever else the
//!    mock measured between the connections is the machine's.
//!
//! The spec judges what the client does, not what it says, so an announcement the
//! client did not keep is no violation in itself: the kit just cannot take the client's
//! word, and judges it like a client that announces nothing, on the observed time from
//! the end of the previous connection to the accept, with the measured connect
//! overhead and the lateness as its slack. (A client that says 10 ms and waits 500 ms
//! against a 40 ms envelope fails there; one that says 10 ms and waits 30 ms is inside
//! the envelope and passes.) The exact rule is documented in `docs/fixtures.md`
//! ("Reconnect delays").

use std::time::Duration;

use runwire_protocol::defaults;
use serde_json::Value;
use tokio::time::Instant;

use crate::{
    engine::{Shared, ms, one_connection_grace},
    fixture::DelayExpect,
    lateness::TimingMiss,
    reqs,
};

/// The resolution of an announced delay: `delay_ms` is a whole number of
/// milliseconds, and an adapter may truncate or round the delay its client chose.
pub(crate) const ANNOUNCE_RESOLUTION: Duration = Duration::from_millis(1);

/// The resolution of a client's timer: timers tick in whole milliseconds, so a sleep
/// of `D` returns up to 2 ms after `D` on an idle machine (the deadline is rounded up
/// to the next tick, and the tick is noticed up to one tick late). A timer never
/// returns early.
pub(crate) const TIMER_RESOLUTION: Duration = Duration::from_millis(2);

/// What the mock knows about one connection, for these judgments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnTimes {
    /// The accept.
    pub(crate) accepted: Instant,
    /// When the mock noticed its end.
    pub(crate) ended: Option<Instant>,
    /// It had a script.
    pub(crate) scripted: bool,
}

/// A `reconnecting` line: the delay it announced and when it reached the mock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Announcement {
    /// `delay_ms`.
    pub(crate) delay_ms: f64,
    /// When the line arrived.
    pub(crate) at: Instant,
}

fn state_is(line: &Value, state: &str) -> bool {
    line.get("kind").and_then(Value::as_str) == Some("state")
        && line.get("state").and_then(Value::as_str) == Some(state)
}

/// The announcement before each reconnect: entry `n` (0-based) is the `n + 1`-th
/// `reconnecting` line, which announces the delay before connection `n + 2`; `None`
/// when that line carries no numeric `delay_ms`.
pub(crate) fn announcements(lines: &[(Instant, Value)]) -> Vec<Option<Announcement>> {
    lines
        .iter()
        .filter(|(_, l)| state_is(l, "reconnecting"))
        .map(|(at, l)| {
            l.get("delay_ms")
                .and_then(Value::as_f64)
                .filter(|d| d.is_finite())
                .map(|delay_ms| Announcement { delay_ms, at: *at })
        })
        .collect()
}

/// The adapter's connect overhead: from its first `connecting` line reaching the mock
/// to the mock's first accept (0 when the line came after the accept); `None` when it
/// printed no `connecting` line or never connected.
pub(crate) fn connect_overhead(
    lines: &[(Instant, Value)],
    first_accept: Option<Instant>,
) -> Option<Duration> {
    let (at, _) = lines.iter().find(|(_, l)| state_is(l, "connecting"))?;
    Some(first_accept?.saturating_duration_since(*at))
}

/// The envelope a fixture allows for one reconnect, in the wire milliseconds the
/// client computes with (the scaled reconnect parameters of its environment).
#[derive(Debug, Clone, Copy)]
struct Envelope {
    /// `(backoff attempt, ceiling)`.
    ceiling: Option<(u32, u64)>,
    min: Option<u64>,
    max: Option<u64>,
}

impl Envelope {
    fn of(sh: &Shared, d: &DelayExpect) -> Self {
        let r = &sh.fixture.client.reconnect;
        Self {
            ceiling: d.backoff_attempt.map(|n| {
                (
                    n,
                    defaults::backoff_ceiling_ms(
                        n,
                        sh.wire_ms(r.base_ms),
                        r.factor,
                        sh.wire_ms(r.cap_ms),
                    ),
                )
            }),
            min: d.min_ms.map(|m| sh.wire_ms(m)),
            max: d.max_ms.map(|m| sh.wire_ms(m)),
        }
    }
}

/// The requirement a reconnect violation names: the fixture's, else by the bound.
fn requirement(d: &DelayExpect, lower: bool) -> &str {
    d.requirement.as_deref().unwrap_or(if lower {
        reqs::RETRY_AFTER
    } else {
        reqs::BACKOFF
    })
}

/// One reconnect's delay as judged, for the jitter check: the announced delay
/// (exact), or the observed one less the connect overhead (a measurement over
/// `[from, to]`).
#[derive(Debug, Clone, Copy)]
struct Sample {
    delay_ms: f64,
    ceiling_ms: f64,
    measured: Option<(Instant, Instant)>,
}

/// Judges every reconnect of the run. `end` is when the fixture ended (a connection
/// the mock never saw end was open until then).
pub(crate) fn judge(
    sh: &Shared,
    conns: &[ConnTimes],
    lines: &[(Instant, Value)],
    overhead: Option<Duration>,
    end: Instant,
) {
    let f = &sh.fixture;
    let announced = announcements(lines);
    let overhead = overhead.unwrap_or_default();
    let grace = one_connection_grace(sh);
    let mut samples: Vec<Option<Sample>> = vec![None; conns.len()];
    for (i, c) in conns.iter().enumerate().skip(1) {
        if !c.scripted {
            continue;
        }
        let k = i as u32 + 1;
        let prev_end = conns[i - 1].ended;
        // RW-RECONNECT-9: connection k - 1 ended before k came.
        match prev_end {
            Some(e) if e <= c.accepted + grace => {}
            other => {
                let e = other.unwrap_or(end).max(c.accepted);
                let later = e.saturating_duration_since(c.accepted);
                sh.violate_timing(
                    Some(k),
                    reqs::ONE_CONNECTION,
                    "one_connection",
                    if other.is_some() {
                        format!(
                            "the client opened connection {k} while connection {} was still \
                             open (it ended {:.1} ms later)",
                            k - 1,
                            ms(later)
                        )
                    } else {
                        format!(
                            "the client opened connection {k} while connection {} was still \
                             open (it was open when the fixture ended, {:.1} ms later)",
                            k - 1,
                            ms(later)
                        )
                    },
                    TimingMiss::new(later, c.accepted, e),
                );
            }
        }
        let expect = f
            .connections
            .get(i)
            .and_then(|s| s.reconnect_delay.as_ref());
        let envelope = expect.map(|d| Envelope::of(sh, d));
        match announced.get(i - 1).copied().flatten() {
            Some(a) => {
                if let (Some(d), Some(env)) = (expect, envelope) {
                    judge_announced(sh, k, d, env, a.delay_ms);
                }
                if let Some(broken) = announcement_broken(sh, k, a, c.accepted, prev_end, overhead)
                {
                    // Not kept: the client's word settles nothing; judge what it did.
                    sh.note(k, broken);
                    let (Some(d), Some(env), Some(e)) = (expect, envelope, prev_end) else {
                        continue;
                    };
                    let observed = c.accepted.saturating_duration_since(e);
                    judge_observed(sh, k, d, env, observed, overhead, e, c.accepted);
                    if let Some((_, ceiling)) = env.ceiling {
                        samples[i] = Some(Sample {
                            delay_ms: ms(observed.saturating_sub(overhead)),
                            ceiling_ms: ceiling as f64,
                            measured: Some((e, c.accepted)),
                        });
                    }
                } else if let Some((_, ceiling)) = envelope.and_then(|e| e.ceiling) {
                    samples[i] = Some(Sample {
                        delay_ms: a.delay_ms,
                        ceiling_ms: ceiling as f64,
                        measured: None,
                    });
                }
            }
            None => {
                let (Some(d), Some(env), Some(e)) = (expect, envelope, prev_end) else {
                    continue;
                };
                let observed = c.accepted.saturating_duration_since(e);
                judge_observed(sh, k, d, env, observed, overhead, e, c.accepted);
                if let Some((_, ceiling)) = env.ceiling {
                    samples[i] = Some(Sample {
                        delay_ms: ms(observed.saturating_sub(overhead)),
                        ceiling_ms: ceiling as f64,
                        measured: Some((e, c.accepted)),
                    });
                }
            }
        }
    }
    if let Some(j) = &f.expect.jitter {
        judge_jitter(sh, j, &samples);
    }
}

/// The announced delay against the envelope, exactly.
fn judge_announced(sh: &Shared, k: u32, d: &DelayExpect, env: Envelope, delay: f64) {
    let said = format!("the client announced a reconnect delay of {delay} ms");
    if let Some((n, c)) = env.ceiling
        && !(0.0..=c as f64).contains(&delay)
    {
        sh.violate(
            Some(k),
            requirement(d, false),
            "reconnect_delay",
            format!(
                "{said}; backoff attempt {n} allows 0..={c} ms (min(cap, base * factor^{n}) \
                 with full jitter)"
            ),
        );
    }
    if let Some(min) = env.min
        && delay < min as f64
    {
        sh.violate(
            Some(k),
            requirement(d, true),
            "reconnect_delay",
            format!("{said}; expected at least {min} ms"),
        );
    }
    if let Some(max) = env.max
        && delay > max as f64
    {
        sh.violate(
            Some(k),
            requirement(d, false),
            "reconnect_delay",
            format!("{said}; expected at most {max} ms"),
        );
    }
}

/// Whether the client kept its announcement: from the line's arrival to the accept it
/// waited at least the delay and at most the delay plus the connect overhead, each
/// within the lateness measured meanwhile. `None` when kept, else why not (a note:
/// the reconnect is then judged on the observed delay).
fn announcement_broken(
    sh: &Shared,
    k: u32,
    a: Announcement,
    accepted: Instant,
    prev_end: Option<Instant>,
    overhead: Duration,
) -> Option<String> {
    let delay = Duration::from_secs_f64(a.delay_ms.max(0.0) / 1000.0);
    // Signed: the line may reach the mock after the accept (it travels through the
    // adapter's output while the client connects).
    let observed_ms = if accepted >= a.at {
        ms(accepted - a.at)
    } else {
        -ms(a.at - accepted)
    };
    let late_ms =
        observed_ms - ms(delay) - ms(overhead) - ms(ANNOUNCE_RESOLUTION) - ms(TIMER_RESOLUTION);
    let early_ms = ms(delay) - ms(ANNOUNCE_RESOLUTION) - observed_ms;
    // The line may have been late on its way: the interval starts at the end of the
    // previous connection (when the client decided).
    let from = prev_end.map_or(a.at, |e| e.min(a.at));
    let late = ms(sh.lateness(from, accepted.max(a.at)).total());
    let said = format!(
        "connection {k}: the client announced a reconnect delay of {} ms and connected {observed_ms:.1} ms after announcing it",
        a.delay_ms
    );
    if late_ms > late {
        Some(format!(
            "{said}, {late_ms:.1} ms more than the delay plus its connect overhead of {:.1} ms (lateness meanwhile {late:.1} ms): the announcement was not kept, so the delay is judged as observed",
            ms(overhead)
        ))
    } else if early_ms > late {
        Some(format!(
            "{said}, before the delay had passed (lateness meanwhile {late:.1} ms): the announcement was not kept, so the delay is judged as observed"
        ))
    } else {
        None
    }
}

/// A client that announced nothing: the observed delay (previous end to accept)
/// against the envelope, the connect overhead as slack for upper bounds.
#[allow(clippy::too_many_arguments)]
fn judge_observed(
    sh: &Shared,
    k: u32,
    d: &DelayExpect,
    env: Envelope,
    observed: Duration,
    overhead: Duration,
    from: Instant,
    to: Instant,
) {
    let seen = format!(
        "reconnect delay was {:.1} ms (end of connection {} to this accept; the client \
         announced none)",
        ms(observed),
        k - 1
    );
    let over = |bound: u64| -> Option<Duration> {
        observed
            .checked_sub(overhead)?
            .checked_sub(Duration::from_millis(bound))?
            .checked_sub(TIMER_RESOLUTION)
            .filter(|m| !m.is_zero())
    };
    if let Some((n, c)) = env.ceiling
        && let Some(margin) = over(c)
    {
        sh.violate_timing(
            Some(k),
            requirement(d, false),
            "reconnect_delay",
            format!(
                "{seen}; backoff attempt {n} allows 0..={c} ms (min(cap, base * factor^{n}) \
                 with full jitter), plus the connect overhead of {:.1} ms",
                ms(overhead)
            ),
            TimingMiss::new(margin, from, to),
        );
    }
    if let Some(min) = env.min
        && let Some(margin) = Duration::from_millis(min)
            .checked_sub(observed)
            .and_then(|m| m.checked_sub(ANNOUNCE_RESOLUTION))
            .filter(|m| !m.is_zero())
    {
        sh.violate_timing(
            Some(k),
            requirement(d, true),
            "reconnect_delay",
            format!("{seen}; expected at least {min} ms"),
            TimingMiss::new(margin, from, to),
        );
    }
    if let Some(max) = env.max
        && let Some(margin) = over(max)
    {
        sh.violate_timing(
            Some(k),
            requirement(d, false),
            "reconnect_delay",
            format!(
                "{seen}; expected at most {max} ms, plus the connect overhead of {:.1} ms",
                ms(overhead)
            ),
            TimingMiss::new(margin, from, to),
        );
    }
}

/// The false-alarm budget of one conformance run for the jitter judgments: the
/// probability that a correct full-jitter client fails some `expect.jitter` of the
/// library by chance.
pub const JITTER_FALSE_ALARM_PER_RUN: f64 = 1e-4;

/// How many fixtures of the library may carry `expect.jitter` within
/// [`JITTER_FALSE_ALARM_PER_RUN`]: each gets an equal share of the budget. The
/// library's tests fail when more fixtures carry the check, so that the budget is
/// revisited (`docs/fixtures.md`, "Jitter").
pub const JITTER_FIXTURES: usize = 2;

/// The false-alarm probability of one fixture's jitter judgment, both sides together:
/// [`JITTER_FALSE_ALARM_PER_RUN`] / [`JITTER_FIXTURES`].
pub const JITTER_FALSE_ALARM_PER_FIXTURE: f64 = JITTER_FALSE_ALARM_PER_RUN / JITTER_FIXTURES as f64;

/// The tail `q` of the jitter judgment over `k` reconnects: a correct client's `k`
/// normalized delays are independent and uniform, so they all sit in the top `q` (or
/// all in the bottom `q`) with probability at most `q^k`, and the judgment's false
/// alarm is `2 q^k` = [`JITTER_FALSE_ALARM_PER_FIXTURE`].
pub fn jitter_tail(k: usize) -> f64 {
    if k == 0 {
        return 0.0;
    }
    (JITTER_FALSE_ALARM_PER_FIXTURE / 2.0).powf(1.0 / k as f64)
}

/// Where one delay sits in its envelope, for the jitter judgment. A full-jitter
/// client draws a whole number of milliseconds uniformly from `0..=c` (`c + 1`
/// values), so for a tail `q`:
///
/// - "in the bottom `q`" is `(d + 1) / (c + 1) <= q`: at most `q (c + 1)` of the
///   `c + 1` values, probability at most `q`;
/// - "in the top `q`" is `d / (c + 1) >= 1 - q`: the values from `(1 - q)(c + 1)` to
///   `c`, at most `q (c + 1)` of them, probability at most `q`.
///
/// A client that draws a real number uniformly and announces it rounded lands in
/// either tail with the same probability up to a factor `(c + 1) / c`.
fn in_bottom(s: &Sample, q: f64) -> bool {
    (s.delay_ms + 1.0) / (s.ceiling_ms + 1.0) <= q
}

fn in_top(s: &Sample, q: f64) -> bool {
    s.delay_ms / (s.ceiling_ms + 1.0) >= 1.0 - q
}

/// `expect.jitter`: a correct full-jitter client's delays, divided by their ceilings,
/// are independent and uniform on `[0, 1]`. The judgment fails the client when all `k`
/// reconnects sit in the top `q` of their envelopes (no jitter: it waits the whole
/// ceiling) or all in the bottom `q` (no backoff: it reconnects at once, in a tight
/// loop), with `q` = [`jitter_tail`]`(k)`, so a correct client fails with probability
/// [`JITTER_FALSE_ALARM_PER_FIXTURE`]. Announced delays are exact; observed ones are
/// measurements, and the judgment then missed by how far the sample nearest the
/// middle sits inside its tail.
fn judge_jitter(sh: &Shared, j: &crate::fixture::JitterExpect, samples: &[Option<Sample>]) {
    let picked: Vec<Sample> = j
        .connections
        .iter()
        .filter_map(|&n| samples.get(n.checked_sub(1)?).copied().flatten())
        .collect();
    if picked.len() != j.connections.len() || picked.iter().any(|s| s.ceiling_ms <= 0.0) {
        return;
    }
    let k = picked.len();
    let q = jitter_tail(k);
    let top = picked.iter().all(|s| in_top(s, q));
    let bottom = picked.iter().all(|s| in_bottom(s, q));
    if !top && !bottom {
        return;
    }
    let shown: Vec<String> = picked
        .iter()
        .map(|s| format!("{:.0}/{:.0} ms", s.delay_ms, s.ceiling_ms))
        .collect();
    let req = j.requirement.as_deref().unwrap_or(reqs::BACKOFF);
    let odds = format!(
        "all {k} in the {} {:.1} % of their envelopes, which a full-jitter client does with \
         probability {:.1e}",
        if top { "top" } else { "bottom" },
        q * 100.0,
        q.powi(k as i32)
    );
    let message = if top {
        format!(
            "reconnect delays all sit at the top of their backoff envelopes ({}; {odds}): no \
             full jitter",
            shown.join(", ")
        )
    } else {
        format!(
            "reconnect delays all sit at the bottom of their backoff envelopes ({}; {odds}): \
             the client does not back off (it reconnects at once)",
            shown.join(", ")
        )
    };
    // How far each measured sample sits inside its tail, in milliseconds.
    let measured: Vec<(f64, Instant, Instant)> = picked
        .iter()
        .filter_map(|s| {
            let (from, to) = s.measured?;
            let inside = if top {
                s.delay_ms - (1.0 - q) * (s.ceiling_ms + 1.0)
            } else {
                q * (s.ceiling_ms + 1.0) - 1.0 - s.delay_ms
            };
            Some((inside, from, to))
        })
        .collect();
    if measured.is_empty() {
        sh.violate(None, req, "jitter", message);
        return;
    }
    let margin = measured.iter().map(|m| m.0).fold(f64::INFINITY, f64::min);
    let from = measured
        .iter()
        .map(|m| m.1)
        .min()
        .unwrap_or_else(Instant::now);
    let to = measured
        .iter()
        .map(|m| m.2)
        .max()
        .unwrap_or_else(Instant::now);
    sh.violate_timing(
        None,
        req,
        "jitter",
        message,
        TimingMiss::new(Duration::from_secs_f64(margin.max(0.0) / 1000.0), from, to),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(delay_ms: f64, ceiling_ms: f64) -> Sample {
        Sample {
            delay_ms,
            ceiling_ms,
            measured: None,
        }
    }

    /// The false alarm of the judgment is the documented constant: `2 q^k`.
    #[test]
    fn the_tail_spends_the_budget() {
        for k in 1..=16 {
            let q = jitter_tail(k);
            let alarm = 2.0 * q.powi(k as i32);
            assert!(
                (alarm - JITTER_FALSE_ALARM_PER_FIXTURE).abs() < 1e-12,
                "k {k}: {alarm}"
            );
        }
        // Ten reconnects make the tail wide enough that a client whose delays are
        // all near 0 cannot escape it.
        assert!(jitter_tail(10) > 0.3, "{}", jitter_tail(10));
    }

    /// Each tail holds at most a fraction `q` of the `c + 1` whole-millisecond draws
    /// of a full-jitter client, for every ceiling.
    #[test]
    fn each_tail_holds_at_most_q_of_the_draws() {
        for q in [0.01, 0.07, 0.2, 0.35, 0.5] {
            for c in 1..=400u32 {
                let n = f64::from(c) + 1.0;
                let bottom = (0..=c)
                    .filter(|d| in_bottom(&sample(f64::from(*d), f64::from(c)), q))
                    .count() as f64;
                let top = (0..=c)
                    .filter(|d| in_top(&sample(f64::from(*d), f64::from(c)), q))
                    .count() as f64;
                assert!(bottom / n <= q + 1e-12, "bottom q {q} c {c}: {bottom}/{n}");
                assert!(top / n <= q + 1e-12, "top q {q} c {c}: {top}/{n}");
            }
        }
    }

    /// A delay of 0 or 1 ms sits in the bottom tail of every envelope of 40 ms or more
    /// once ten reconnects are judged; the whole ceiling sits in the top tail.
    #[test]
    fn tight_loops_and_fixed_delays_are_in_the_tails() {
        let q = jitter_tail(10);
        for c in [40.0, 80.0, 200.0] {
            assert!(in_bottom(&sample(0.0, c), q));
            assert!(in_bottom(&sample(1.0, c), q));
            assert!(!in_bottom(&sample(c / 2.0, c), q));
            assert!(in_top(&sample(c, c), q));
            assert!(!in_top(&sample(c / 2.0, c), q));
        }
    }
}
