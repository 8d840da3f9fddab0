//! The fixture library against the correct test client.

use futures_util::{StreamExt, stream};
use runwire_mock::load_dir;

use crate::{client::Bugs, harness};

/// Plays every fixture of the library against the correct client, a few at a time.
///
/// A correct client never fails. Run four at a time on a busy test machine, a timing
/// judgment may miss by less than the lateness measured meanwhile: such a run is
/// inconclusive, and (as the conformance runner does) it is played again alone, where
/// it must pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_passes_with_the_correct_client() {
    let fixtures = load_dir(&harness::fixture_dir()).unwrap_or_else(|e| panic!("{e}"));
    assert!(fixtures.len() >= 40, "only {} fixtures", fixtures.len());
    let reports: Vec<_> = stream::iter(fixtures)
        .map(|(_, f)| async move { (f.clone(), harness::play(f, Bugs::default()).await) })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut failed = Vec::new();
    for (f, first) in reports {
        let r = harness::settle(f, Bugs::default(), first).await;
        if !r.verdict.passed() {
            failed.push(format!(
                "{}\n{}",
                r.verdict.render(),
                r.transcript.to_text()
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} fixture(s) failed:\n{}",
        failed.len(),
        failed.join("\n\n")
    );
}

/// The time scale multiplies every duration: the adapter's timers and the fixture's
/// waits. A fixture still passes at scale 3, and the environment shows the scaling.
#[tokio::test]
async fn time_scale_widens_every_duration() {
    use runwire_mock::{Mock, MockOptions};
    let mut report = None;
    // Replayed while inconclusive (see `harness::settle`).
    for _ in 0..4 {
        let mock = Mock::start(
            harness::load("liveness-timeout"),
            MockOptions {
                seed: Some(harness::SEED),
                time_scale: 3.0,
                ..MockOptions::default()
            },
        )
        .await
        .expect("start");
        let env = mock.adapter_env();
        let get = |k: &str| env.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
        assert_eq!(get("RUNWIRE_LIVENESS_GRACE_MS").as_deref(), Some("240"));
        assert_eq!(get("RUNWIRE_RECONNECT_BASE_MS").as_deref(), Some("60"));
        assert_eq!(get("RUNWIRE_TIME_SCALE").as_deref(), Some("3"));
        let app = mock.attach_app().expect("attach");
        tokio::spawn(crate::client::run(env, Bugs::default(), app));
        let r = mock.finish().await;
        let settled = r.verdict.outcome != runwire_mock::Outcome::Inconclusive;
        report = Some(r);
        if settled {
            break;
        }
    }
    let report = report.expect("played");
    assert!(report.verdict.passed(), "{}", report.verdict.render());
    // The welcome announced the scaled heartbeat interval.
    let welcome = report
        .transcript
        .entries
        .iter()
        .find_map(|e| match &e.what {
            runwire_mock::What::Text { text } if text.contains("\"welcome\"") => Some(text.clone()),
            _ => None,
        })
        .expect("welcome sent");
    assert!(
        welcome.contains("\"heartbeat_interval_ms\":300"),
        "{welcome}"
    );
}

/// One seed, one run: generated events and reorder permutations replay exactly; another
/// seed changes them.
#[tokio::test]
async fn a_seed_replays_a_run_exactly() {
    let wire = |r: &runwire_mock::Report| -> Vec<String> {
        r.transcript
            .entries
            .iter()
            .filter(|e| e.dir == runwire_mock::Direction::Out)
            .filter_map(|e| match &e.what {
                runwire_mock::What::Text { text } => Some(text.clone()),
                _ => None,
            })
            .collect()
    };
    let a = harness::play(harness::load("reorder-within-window"), Bugs::default()).await;
    let b = harness::play(harness::load("reorder-within-window"), Bugs::default()).await;
    assert_eq!(wire(&a), wire(&b));
    let mut other = harness::load("reorder-within-window");
    other.seed = Some(harness::SEED + 1);
    let c = harness::play(other, Bugs::default()).await;
    assert_ne!(wire(&a), wire(&c));
    assert!(a.verdict.passed() && c.verdict.passed());
}

/// The jitter judgments' false-alarm budget holds: at most `JITTER_FIXTURES` fixtures
/// carry `expect.jitter`, so a correct client fails some jitter judgment of a
/// conformance run with probability at most `JITTER_FALSE_ALARM_PER_RUN`
/// (`docs/fixtures.md`, "Jitter").
#[test]
fn jitter_judgments_stay_within_their_false_alarm_budget() {
    let fixtures = load_dir(&harness::fixture_dir()).unwrap_or_else(|e| panic!("{e}"));
    let with: Vec<String> = fixtures
        .iter()
        .filter(|(_, f)| f.expect.jitter.is_some())
        .map(|(_, f)| f.id.clone())
        .collect();
    assert!(
        with.len() <= runwire_mock::JITTER_FIXTURES,
        "{} fixtures carry expect.jitter ({}), the budget is shared by {}: raise \
         JITTER_FIXTURES and revisit docs/fixtures.md",
        with.len(),
        with.join(", "),
        runwire_mock::JITTER_FIXTURES
    );
    let total = with.len() as f64 * runwire_mock::JITTER_FALSE_ALARM_PER_FIXTURE;
    assert!(total <= runwire_mock::JITTER_FALSE_ALARM_PER_RUN * (1.0 + 1e-9));
    // Every judgment has enough reconnects for its bottom tail to catch a client
    // whose delays are all 0 against a 40 ms envelope.
    for (_, f) in &fixtures {
        if let Some(j) = &f.expect.jitter {
            let q = runwire_mock::jitter_tail(j.connections.len());
            assert!(q > 1.0 / 41.0, "{}: q {q} too small", f.id);
        }
    }
}
