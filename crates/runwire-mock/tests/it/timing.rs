//! Timing judgments: reconnect delays are judged on what the client decided (its
//! announced `delay_ms`) and on whether it kept to it; a miss within the lateness the
//! mock measured is inconclusive, not a failure; a slow start-up does not eat the
//! fixture's timers.

use runwire_mock::{Fixture, Outcome, Report, Violation};

use crate::{client::Bugs, harness};

/// One reconnect after a dropped connection. Reconnect base 100 ms, factor 2: the
/// reconnect is backoff attempt 1, envelope `0..=200 ms`.
fn reconnect_fixture() -> Fixture {
    Fixture::parse(
        r#"{"id": "timing-reconnect", "title": "reconnect", "requirements": ["RW-RECONNECT-1"],
        "level": "must",
        "runs": [{"run_id": "run-1", "length": 3, "end": "completed"}],
        "client": {"runs": [{"run_id": "run-1"}],
                   "reconnect": {"base_ms": 100, "factor": 2, "cap_ms": 1000}},
        "connections": [
            {"steps": [{"welcome": {}}, {"drop": {}}]},
            {"reconnect_delay": {"backoff_attempt": 1},
             "steps": [{"welcome": {}}, {"subscribed": {"run": "run-1", "head_seq": 0}},
                       {"events": {"run": "run-1", "from_seq": 1, "to_seq": 3}},
                       {"await_close": {"code": 1000}}]}],
        "expect": {"exit": "success", "delivered": [{"run": "run-1", "timeline": ["1-3"]}]}}"#,
        "timing-reconnect.json",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A ping answered within 100 ms (`await_pong`), then a whole run. `deadline_ms`
/// bounds the fixture.
fn pong_fixture(deadline_ms: u64) -> Fixture {
    Fixture::parse(
        &format!(
            r#"{{"id": "timing-pong", "title": "pong", "requirements": ["RW-HEART-4"],
            "level": "must", "deadline_ms": {deadline_ms},
            "runs": [{{"run_id": "run-1", "length": 2, "end": "completed"}}],
            "client": {{"runs": [{{"run_id": "run-1"}}]}},
            "connections": [
                {{"steps": [{{"welcome": {{}}}}, {{"subscribed": {{"run": "run-1", "head_seq": 0}}}},
                           {{"ping": {{"id": "p"}}}}, {{"await_pong": {{"within_ms": 100}}}},
                           {{"events": {{"run": "run-1", "from_seq": 1, "to_seq": 2}}}},
                           {{"await_close": {{"code": 1000}}}}]}}],
            "expect": {{"exit": "success", "delivered": [{{"run": "run-1", "timeline": ["1-2"]}}]}}}}"#
        ),
        "timing-pong.json",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn bugs(f: impl FnOnce(&mut Bugs)) -> Bugs {
    let mut b = Bugs::default();
    f(&mut b);
    b
}

/// Plays `fixture` against the test client, replayed alone while inconclusive (as the
/// conformance runner does): what remains is the verdict on the client.
async fn settled(fixture: Fixture, b: Bugs) -> Report {
    let first = harness::play(fixture.clone(), b).await;
    harness::settle(fixture, b, first).await
}

fn of<'a>(r: &'a Report, expectation: &str) -> Vec<&'a Violation> {
    r.verdict
        .violations
        .iter()
        .filter(|v| v.expectation == expectation)
        .collect()
}

fn show(r: &Report) -> String {
    format!("{}\n{}", r.verdict.render(), r.transcript.to_text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_client_passes_the_reconnect_judgments() {
    let r = settled(reconnect_fixture(), Bugs::default()).await;
    assert!(r.verdict.passed(), "{}", show(&r));
    // The connect overhead was measured from the client's first `connecting` line.
    assert!(r.connect_overhead.is_some(), "{}", show(&r));
}

/// The announced delay is the client's decision: outside the envelope it fails,
/// conclusively and without tolerance, even though the observed delay (201 ms for a
/// 200 ms ceiling) is one no measurement could tell from a correct one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_delay_outside_the_envelope_fails_conclusively() {
    let r = settled(
        reconnect_fixture(),
        bugs(|b| b.announce_over_ceiling = true),
    )
    .await;
    assert_eq!(r.verdict.outcome, Outcome::Fail, "{}", show(&r));
    let v = of(&r, "reconnect_delay");
    assert_eq!(v.len(), 1, "{}", show(&r));
    assert_eq!(v[0].requirement, "RW-RECONNECT-1");
    assert!(
        v[0].message
            .contains("announced a reconnect delay of 201 ms; backoff attempt 1 allows 0..=200 ms"),
        "{}",
        show(&r)
    );
    assert!(!v[0].inconclusive && v[0].margin_ms.is_none(), "{v:?}");
}

/// A client that announces one delay and waits much longer did not keep its word:
/// it is judged on the observed delay, which lies 400 ms beyond its envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_waits_longer_than_it_announced_is_judged_on_what_it_did() {
    let r = settled(reconnect_fixture(), bugs(|b| b.reconnect_extra_ms = 400)).await;
    assert_eq!(r.verdict.outcome, Outcome::Fail, "{}", show(&r));
    let v = of(&r, "reconnect_delay");
    assert_eq!(v.len(), 1, "{}", show(&r));
    assert!(
        v[0].message.contains("backoff attempt 1 allows 0..=200 ms"),
        "{}",
        show(&r)
    );
    assert!(!v[0].inconclusive, "{v:?}");
    let margin = v[0].margin_ms.expect("a timing judgment");
    assert!(margin > 150.0, "{v:?}");
    assert!(
        r.transcript
            .to_text()
            .contains("the announcement was not kept"),
        "{}",
        show(&r)
    );
}

/// A client that announces a delay and reconnects at once broke its word, but a delay
/// of 0 lies inside the full-jitter envelope: the spec judges what the client does, so
/// it passes, with a note (a client that never backs off is caught by the jitter
/// judgments over several reconnects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reconnects_at_once_after_announcing_a_delay_is_judged_on_what_it_did() {
    let r = settled(
        reconnect_fixture(),
        bugs(|b| {
            b.no_jitter = true; // announces the ceiling, 200 ms
            b.reconnect_at_once = true;
        }),
    )
    .await;
    assert_eq!(r.verdict.outcome, Outcome::Pass, "{}", show(&r));
    assert!(
        r.transcript
            .to_text()
            .contains("before the delay had passed"),
        "{}",
        show(&r)
    );
}

/// A client that announces nothing is judged on the observed delay (end of the
/// previous connection to the accept): a correct one passes, one that waits far past
/// the envelope fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_announces_nothing_is_judged_on_observed_delays() {
    let quiet = settled(reconnect_fixture(), bugs(|b| b.silent_states = true)).await;
    assert!(quiet.verdict.passed(), "{}", show(&quiet));
    assert_eq!(quiet.connect_overhead, None);

    let slow = settled(
        reconnect_fixture(),
        bugs(|b| {
            b.silent_states = true;
            b.reconnect_extra_ms = 400;
        }),
    )
    .await;
    assert_eq!(slow.verdict.outcome, Outcome::Fail, "{}", show(&slow));
    let v = of(&slow, "reconnect_delay");
    assert_eq!(v.len(), 1, "{}", show(&slow));
    assert!(
        v[0].message.contains("the client announced none")
            && v[0].message.contains("backoff attempt 1 allows 0..=200 ms"),
        "{}",
        show(&slow)
    );
    assert!(!v[0].inconclusive, "{v:?}");
}

/// The same late pong (100 ms allowed, answered after 300 ms): while the whole
/// process was stalled (the client blocks the runtime's only thread, the mock's
/// timers with it) the miss lies within the measured lateness and the run is
/// inconclusive; without the stall it is a failure.
#[tokio::test]
async fn a_late_pong_while_the_runtime_was_stalled_is_inconclusive() {
    let b = bugs(|b| {
        b.pong_delay_ms = 300;
        b.block_runtime = true;
    });
    let r = harness::play(pong_fixture(5000), b).await;
    assert_eq!(r.verdict.outcome, Outcome::Inconclusive, "{}", show(&r));
    let v = of(&r, "pong");
    assert_eq!(v.len(), 1, "{}", show(&r));
    let (margin, late) = (
        v[0].margin_ms.expect("margin"),
        v[0].lateness_ms.expect("lateness"),
    );
    assert!(v[0].inconclusive && margin <= late, "{v:?}");
    assert!(v[0].message.contains("came"), "{v:?}");
}

#[tokio::test]
async fn the_same_late_pong_without_a_stall_fails() {
    let r = settled(pong_fixture(5000), bugs(|b| b.pong_delay_ms = 300)).await;
    assert_eq!(r.verdict.outcome, Outcome::Fail, "{}", show(&r));
    let v = of(&r, "pong");
    assert_eq!(v.len(), 1, "{}", show(&r));
    assert!(!v[0].inconclusive, "{v:?}");
    // It came at least 200 ms after the 100 ms allowed; the mock watched past the
    // deadline (250 ms at least) and measured how late.
    let margin = v[0].margin_ms.expect("margin");
    assert!(margin >= 190.0, "{v:?}");
    assert!(
        v[0].message
            .contains("no pong for ping \"p\" within 100 ms: it came"),
        "{}",
        show(&r)
    );
}

/// The client's exit is part of the fixture's deadline (600 ms from the first
/// connection): a client that exits 750 ms after closing is late. While the process
/// was stalled that is inconclusive; otherwise a failure.
#[tokio::test]
async fn an_exit_after_the_deadline_fails_unless_the_machine_stalled() {
    let late = settled(pong_fixture(600), bugs(|b| b.exit_delay_ms = 750)).await;
    assert_eq!(late.verdict.outcome, Outcome::Fail, "{}", show(&late));
    let v = of(&late, "deadline");
    assert_eq!(v.len(), 1, "{}", show(&late));
    assert!(
        v[0].message.contains("the client exited") && !v[0].inconclusive,
        "{v:?}"
    );
    assert_eq!(late.verdict.violations.len(), 1, "{}", show(&late));

    let stalled = harness::play(
        pong_fixture(600),
        bugs(|b| {
            b.exit_delay_ms = 750;
            b.block_runtime = true;
        }),
    )
    .await;
    assert_eq!(
        stalled.verdict.outcome,
        Outcome::Inconclusive,
        "{}",
        show(&stalled)
    );
}

/// A client that never exits misses the deadline by the whole extension the mock
/// watched after it; its missing exit is a timing judgment of that size.
#[tokio::test]
async fn a_client_that_never_exits_misses_by_the_extension() {
    // Far longer than the deadline and its extension: the mock ends the client.
    let r = settled(pong_fixture(300), bugs(|b| b.exit_delay_ms = 60_000)).await;
    assert_eq!(r.verdict.outcome, Outcome::Fail, "{}", show(&r));
    let v = of(&r, "exit");
    assert_eq!(v.len(), 1, "{}", show(&r));
    assert!(
        v[0].message.contains("the fixture deadline passed") && !v[0].inconclusive,
        "{v:?}"
    );
    assert!(v[0].margin_ms.expect("margin") >= 250.0, "{v:?}");
}

/// The fixture's timers start at the first connection: a client that takes longer to
/// start than the whole fixture deadline still passes, and its start-up is reported.
#[tokio::test]
async fn a_slow_start_up_does_not_eat_the_fixture_deadline() {
    let r = harness::play(pong_fixture(600), bugs(|b| b.start_delay_ms = 900)).await;
    assert!(r.verdict.passed(), "{}", show(&r));
    let startup = r.startup.expect("connected");
    assert!(startup.as_millis() >= 900, "{startup:?}");
    assert!(
        r.transcript
            .to_text()
            .contains("(start-up); the fixture deadline of 600 ms counts from here"),
        "{}",
        show(&r)
    );
}

/// `case-sensitive-types` with a pause between the frames the client must not answer
/// and the silence window: a client that answers them answers before the window's
/// step begins, however slow the machine.
fn answered_before_the_window() -> Fixture {
    let mut f = harness::load("case-sensitive-types");
    let steps = &mut f.connections[0].steps;
    let at = steps
        .iter()
        .position(|s| matches!(s, runwire_mock::fixture::Step::ExpectSilence(_)))
        .expect("the fixture has a silence window");
    steps.insert(
        at,
        runwire_mock::fixture::Step::Wait(runwire_mock::fixture::WaitStep { ms: 100 }),
    );
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_sent_before_the_silence_step_began_still_breaks_the_silence() {
    let r = settled(
        answered_before_the_window(),
        bugs(|b| b.case_insensitive = true),
    )
    .await;
    let silence = of(&r, "silence");
    assert!(
        r.verdict.outcome == Outcome::Fail
            && silence
                .iter()
                .any(|v| v.requirement == "RW-CONV-5" && !v.inconclusive),
        "{}",
        show(&r)
    );
    let ok = settled(answered_before_the_window(), Bugs::default()).await;
    assert_eq!(ok.verdict.outcome, Outcome::Pass, "{}", show(&ok));
}

/// A connection kept alive by pings, but the mock itself falls silent for `wait_ms`
/// between two of them (as a mock on a stalled machine would); the client's liveness
/// budget is 100 + 60 = 160 ms.
fn silence_fixture(wait_ms: u64) -> Fixture {
    Fixture::parse(
        &format!(
            r#"{{"id": "timing-silence", "title": "silence", "requirements": ["RW-HEART-4", "RW-CONN-11"],
            "level": "must",
            "runs": [{{"run_id": "run-1", "length": 4}}],
            "client": {{"runs": [{{"run_id": "run-1"}}], "liveness_grace_ms": 60}},
            "connections": [
                {{"steps": [{{"welcome": {{"heartbeat_interval_ms": 100}}}},
                           {{"subscribed": {{"run": "run-1", "head_seq": 0}}}},
                           {{"events": {{"run": "run-1", "from_seq": 1, "to_seq": 2}}}},
                           {{"ping": {{}}}}, {{"await_pong": {{}}}},
                           {{"wait": {{"ms": {wait_ms}}}}},
                           {{"ping": {{}}}}, {{"await_pong": {{}}}},
                           {{"events": {{"run": "run-1", "from_seq": 3, "to_seq": 4}}}},
                           {{"ping": {{}}}}, {{"await_pong": {{}}}}]}}],
            "expect": {{"exit": "running", "delivered": [{{"run": "run-1", "timeline": ["1-4"]}}],
                       "quiet_ms": 30, "extra_connection_requirement": "RW-CONN-11"}}}}"#
        ),
        "timing-silence.json",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// RW-HEART-5 obliges a client to close after a silence of its budget: when the
/// mock's own silence reached the budget, the close (and the reconnect after it)
/// says nothing about the client, nor do the events it then missed: the run is
/// inconclusive, never a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_after_the_mocks_own_silence_is_inconclusive_not_a_failure() {
    let r = harness::play(silence_fixture(400), Bugs::default()).await;
    assert_eq!(r.verdict.outcome, Outcome::Inconclusive, "{}", show(&r));
    let pong = of(&r, "pong");
    assert!(
        !pong.is_empty() && pong.iter().all(|v| v.inconclusive),
        "{}",
        show(&r)
    );
    assert!(
        of(&r, "no_reconnect").iter().all(|v| v.inconclusive),
        "{}",
        show(&r)
    );
    // Events 3-4 were never sent on a connection the client had closed: a
    // consequence, not judged.
    let delivered = of(&r, "delivered");
    assert!(
        !delivered.is_empty() && delivered.iter().all(|v| v.inconclusive),
        "{}",
        show(&r)
    );
}

/// The same fixture with the mock pinging well inside the budget: a client that
/// closes a live connection early still fails, naming the requirement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_closes_a_live_connection_early_still_fails() {
    let good = settled(silence_fixture(90), Bugs::default()).await;
    assert!(good.verdict.passed(), "{}", show(&good));
    let r = settled(silence_fixture(90), bugs(|b| b.early_liveness = true)).await;
    assert_eq!(r.verdict.outcome, Outcome::Fail, "{}", show(&r));
    let pong = of(&r, "pong");
    assert!(pong.iter().any(|v| !v.inconclusive), "{}", show(&r));
}
