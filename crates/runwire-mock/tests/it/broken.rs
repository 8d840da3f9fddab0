//! Deliberately broken clients: each bug must fail the fixtures that target it, and
//! the verdict must name the violated requirement.

use futures_util::{StreamExt, stream};

use crate::{client::Bugs, harness};

fn bugs(f: impl FnOnce(&mut Bugs)) -> Bugs {
    let mut b = Bugs::default();
    f(&mut b);
    b
}

/// (bug, fixture, requirement the verdict must name)
fn cases() -> Vec<(&'static str, Bugs, &'static str, &'static str)> {
    vec![
        (
            "no_backoff",
            bugs(|b| b.no_backoff = true),
            "backoff-distribution",
            "RW-RECONNECT-1",
        ),
        (
            "keep_epoch_on_reset",
            bugs(|b| b.keep_epoch_on_reset = true),
            "reset-new-epoch-cursor",
            "RW-RESUME-9",
        ),
        (
            "keep_buffer_on_reset",
            bugs(|b| b.keep_buffer_on_reset = true),
            "reset-new-epoch-discards-buffer",
            "RW-RESUME-9",
        ),
        (
            "fold_reset_onto_state",
            bugs(|b| b.fold_reset_onto_state = true),
            "fold-reset-replaces-state",
            "RW-SNAP-2",
        ),
        (
            "drop_error_details",
            bugs(|b| b.drop_error_details = true),
            "version-mismatch",
            "RW-VERSION-6",
        ),
        (
            "drop_error_details",
            bugs(|b| b.drop_error_details = true),
            "max-attempts-last-error",
            "RW-RECONNECT-3",
        ),
        (
            "epochless_cursor",
            bugs(|b| b.epochless_cursor = true),
            "persisted-cursor-without-epoch",
            "RW-RESUME-15",
        ),
        (
            "no_welcome_timeout",
            bugs(|b| b.no_welcome_timeout = true),
            "welcome-timeout",
            "RW-RECONNECT-11",
        ),
        (
            "double_terminal_report",
            bugs(|b| b.double_terminal_report = true),
            "close-terminal-unauthorized",
            "RW-ERROR-8",
        ),
        (
            "browser_silent",
            bugs(|b| {
                b.browser = true;
                b.browser_silent = true;
            }),
            "invalid-utf8-text-frame",
            "RW-CLOSE-10",
        ),
        (
            "stale_token",
            bugs(|b| b.stale_token = true),
            "token-after-stable-session",
            "RW-AUTH-9",
        ),
        (
            "no_validation",
            bugs(|b| b.no_validation = true),
            "invalid-unsafe-integer",
            "RW-CONV-2",
        ),
        (
            "no_validation",
            bugs(|b| b.no_validation = true),
            "invalid-negative-integer",
            "RW-CONV-2",
        ),
        (
            "no_validation",
            bugs(|b| b.no_validation = true),
            "invalid-run-id",
            "RW-EVENT-2",
        ),
        (
            "no_validation",
            bugs(|b| b.no_validation = true),
            "invalid-event-time",
            "RW-EVENT-5",
        ),
        (
            "no_validation",
            bugs(|b| b.no_validation = true),
            "invalid-event-type",
            "RW-EVENT-6",
        ),
        (
            "no_validation",
            bugs(|b| b.no_validation = true),
            "invalid-event-data",
            "RW-EVENT-7",
        ),
        (
            "no_validation",
            bugs(|b| b.no_validation = true),
            "invalid-ping-id",
            "RW-HEART-2",
        ),
        (
            "case_insensitive",
            bugs(|b| b.case_insensitive = true),
            "case-sensitive-types",
            "RW-CONV-5",
        ),
        (
            "fold_unknown_types",
            bugs(|b| b.fold_unknown_types = true),
            "fold-unknown-types-change-nothing",
            "RW-SNAP-4",
        ),
        (
            "duplicate_members",
            bugs(|b| b.duplicate_members = true),
            "client-messages-valid",
            "RW-CONV-3",
        ),
        (
            "no_dedup",
            bugs(|b| b.no_dedup = true),
            "duplicate-frame",
            "RW-ORDER-4",
        ),
        (
            "no_dedup",
            bugs(|b| b.no_dedup = true),
            "replay-overlaps-live",
            "RW-ORDER-4",
        ),
        (
            "no_dedup",
            bugs(|b| b.no_dedup = true),
            "duplicates-after-resume",
            "RW-ORDER-4",
        ),
        (
            "no_dedup",
            bugs(|b| b.no_dedup = true),
            "duplicate-batch",
            "RW-ORDER-4",
        ),
        (
            "no_order",
            bugs(|b| b.no_order = true),
            "out-of-order-pair",
            "RW-ORDER-6",
        ),
        (
            "no_order",
            bugs(|b| b.no_order = true),
            "reorder-within-window",
            "RW-ORDER-6",
        ),
        (
            "no_order",
            bugs(|b| b.no_order = true),
            "gap-resubscribe",
            "RW-ORDER-5",
        ),
        (
            "wrong_cursor",
            bugs(|b| b.wrong_cursor = true),
            "drop-after-welcome",
            "RW-RESUME-10",
        ),
        (
            "wrong_cursor",
            bugs(|b| b.wrong_cursor = true),
            "resume-after-reset",
            "RW-RESUME-10",
        ),
        (
            "wrong_cursor",
            bugs(|b| b.wrong_cursor = true),
            "gap-resubscribe",
            "RW-RESUME-10",
        ),
        (
            "reconnect_after_terminal",
            bugs(|b| b.reconnect_after_terminal = true),
            "close-terminal-unauthorized",
            "RW-RECONNECT-5",
        ),
        (
            "reconnect_after_terminal",
            bugs(|b| b.reconnect_after_terminal = true),
            "close-terminal-unknown-4050",
            "RW-RECONNECT-5",
        ),
        (
            "reconnect_after_terminal",
            bugs(|b| b.reconnect_after_terminal = true),
            "version-mismatch",
            "RW-VERSION-6",
        ),
        (
            "reconnect_after_terminal",
            bugs(|b| b.reconnect_after_terminal = true),
            "error-close-code-then-drop",
            "RW-RECONNECT-5",
        ),
        (
            "no_jitter",
            bugs(|b| b.no_jitter = true),
            "backoff-envelope",
            "RW-RECONNECT-1",
        ),
        (
            "no_pong",
            bugs(|b| b.no_pong = true),
            "ping-pong",
            "RW-HEART-4",
        ),
        (
            "no_pong",
            bugs(|b| b.no_pong = true),
            "ping-during-stream",
            "RW-HEART-4",
        ),
        (
            "crash_on_unknown_type",
            bugs(|b| b.crash_on_unknown_type = true),
            "unknown-event-type",
            "RW-VERSION-4",
        ),
        (
            "ignore_retry_after",
            bugs(|b| b.ignore_retry_after = true),
            "retry-after-backoff",
            "RW-RECONNECT-2",
        ),
        (
            "ignore_retry_after",
            bugs(|b| b.ignore_retry_after = true),
            "server-restart-retry-after",
            "RW-RECONNECT-6",
        ),
        (
            "no_liveness",
            bugs(|b| b.no_liveness = true),
            "liveness-timeout",
            "RW-HEART-5",
        ),
        (
            "ignore_reset",
            bugs(|b| b.ignore_reset = true),
            "reset-cursor-too-old",
            "RW-RESUME-9",
        ),
        (
            "ignore_reset",
            bugs(|b| b.ignore_reset = true),
            "reset-epoch-change",
            "RW-RESUME-9",
        ),
        (
            "no_max_attempts",
            bugs(|b| b.no_max_attempts = true),
            "max-attempts-exhausted",
            "RW-RECONNECT-3",
        ),
        (
            "token_in_query",
            bugs(|b| b.token_in_query = true),
            "token-expiry-mid-stream",
            "RW-AUTH-1",
        ),
        (
            "no_resubscribe",
            bugs(|b| b.no_resubscribe = true),
            "gap-resubscribe",
            "RW-ORDER-5",
        ),
        (
            "no_resubscribe",
            bugs(|b| b.no_resubscribe = true),
            "gap-in-batch",
            "RW-ORDER-5",
        ),
        (
            "ignore_rate_limit",
            bugs(|b| b.ignore_rate_limit = true),
            "limits-announced-rate",
            "RW-LIMIT-5",
        ),
        (
            "wrong_close_code",
            bugs(|b| b.wrong_close_code = true),
            "happy-path",
            "RW-CONN-11",
        ),
        (
            "merge_todos",
            bugs(|b| b.merge_todos = true),
            "fold-todos-replaced",
            "RW-TYPE-16",
        ),
        (
            "replace_progress",
            bugs(|b| b.replace_progress = true),
            "fold-progress-keeps-absent",
            "RW-TYPE-5",
        ),
        (
            "replace_labels",
            bugs(|b| b.replace_labels = true),
            "fold-metadata-merges-labels",
            "RW-TYPE-7",
        ),
        (
            "fold_duplicates",
            bugs(|b| b.fold_duplicates = true),
            "fold-duplicate-unchanged",
            "RW-SNAP-3",
        ),
        (
            "fold_duplicates",
            bugs(|b| b.fold_duplicates = true),
            "fold-from-reset-snapshot",
            "RW-SNAP-3",
        ),
    ]
}

/// A client that prints no `folded` line is graded *not implemented* on the fixtures
/// that judge folded state (`docs/client-adapter.md`), never *passed*.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_folded_state_is_not_implemented_on_fold_fixtures() {
    for id in [
        "fold-todos-replaced",
        "fold-progress-keeps-absent",
        "fold-metadata-merges-labels",
        "fold-duplicate-unchanged",
        "fold-from-reset-snapshot",
    ] {
        let report = harness::play(harness::load(id), bugs(|b| b.no_folded_lines = true)).await;
        assert_eq!(
            report.verdict.outcome,
            runwire_mock::Outcome::NotImplemented,
            "{id}: {}",
            report.verdict.render()
        );
        assert!(!report.verdict.passed(), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broken_client_fails_its_fixtures_naming_the_requirement() {
    let results: Vec<_> = stream::iter(cases())
        .map(|(bug, b, fixture, req)| async move {
            let report = harness::play(harness::load(fixture), b).await;
            (bug, b, fixture, req, report)
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut wrong = Vec::new();
    for (bug, b, fixture, req, first) in results {
        // A bug is caught conclusively: replayed alone while inconclusive, the run
        // must fail with a violation of the requirement that is not inconclusive.
        let report = harness::settle(harness::load(fixture), b, first).await;
        let conclusive = report
            .verdict
            .violations
            .iter()
            .any(|v| v.requirement == req && !v.inconclusive);
        if report.verdict.outcome != runwire_mock::Outcome::Fail || !conclusive {
            wrong.push(format!(
                "bug {bug} on {fixture}: expected a violation of {req}; got\n{}\n{}",
                report.verdict.render(),
                report.transcript.to_text()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

/// Every bug flag of the test client is exercised by at least one case.
#[test]
fn every_bug_has_a_case() {
    let names: std::collections::BTreeSet<_> = cases().into_iter().map(|c| c.0).collect();
    for bug in [
        "no_dedup",
        "no_order",
        "wrong_cursor",
        "reconnect_after_terminal",
        "no_jitter",
        "no_pong",
        "crash_on_unknown_type",
        "ignore_retry_after",
        "no_liveness",
        "ignore_reset",
        "no_max_attempts",
        "token_in_query",
        "no_resubscribe",
        "wrong_close_code",
        "merge_todos",
        "replace_progress",
        "replace_labels",
        "fold_duplicates",
        "no_backoff",
        "keep_epoch_on_reset",
        "keep_buffer_on_reset",
        "fold_reset_onto_state",
        "drop_error_details",
        "stale_token",
        "no_validation",
        "case_insensitive",
        "fold_unknown_types",
        "duplicate_members",
        "epochless_cursor",
        "no_welcome_timeout",
        "double_terminal_report",
        "browser_silent",
    ] {
        assert!(names.contains(bug), "{bug}");
    }
}

/// RW-CLOSE-10: a client whose WebSocket layer fails the connection by itself on a
/// text frame that is not UTF-8 (a browser) and declares the browser profile passes
/// the fixture without closing with 4000 (the close code is noted, not judged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_client_is_judged_by_its_profile() {
    let browser = bugs(|b| b.browser = true);
    let first = harness::play(harness::load("invalid-utf8-text-frame"), browser).await;
    let report = harness::settle(harness::load("invalid-utf8-text-frame"), browser, first).await;
    assert!(
        report.verdict.passed(),
        "{}\n{}",
        report.verdict.render(),
        report.transcript.to_text()
    );
    assert!(
        report
            .transcript
            .to_text()
            .contains("not judged, the adapter declared the browser profile"),
        "{}",
        report.transcript.to_text()
    );
}
