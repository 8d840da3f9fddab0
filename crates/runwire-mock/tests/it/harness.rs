//! Runs fixtures against the in-process test client.

use std::path::{Path, PathBuf};

use runwire_mock::{Fixture, Mock, MockOptions, Outcome, Report};

use crate::client::{self, Bugs};

/// The fixture library.
pub(crate) fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/client")
}

/// Loads one fixture of the library by id.
pub(crate) fn load(id: &str) -> Fixture {
    Fixture::from_path(&fixture_dir().join(format!("{id}.json"))).unwrap_or_else(|e| panic!("{e}"))
}

/// The seed every test uses unless the fixture names one (printed with each verdict).
pub(crate) const SEED: u64 = 20_261_122;

/// Plays `fixture` against the test client with `bugs`.
pub(crate) async fn play(fixture: Fixture, bugs: Bugs) -> Report {
    let seed = fixture.seed.unwrap_or(SEED);
    let mock = Mock::start(
        fixture,
        MockOptions {
            seed: Some(seed),
            ..MockOptions::default()
        },
    )
    .await
    .expect("mock starts");
    let app = mock.attach_app().expect("attach");
    let env = mock.adapter_env();
    tokio::spawn(client::run(env, bugs, app));
    mock.finish().await
}

/// How often [`settle`] replays an inconclusive run.
const REPLAYS: usize = 3;

/// `first`, or, while it is inconclusive (a timing judgment missed by less than the
/// lateness measured on this busy test machine), the report of `fixture` played
/// again alone: what the conformance runner does. Never turns a failure into a pass.
pub(crate) async fn settle(fixture: Fixture, bugs: Bugs, first: Report) -> Report {
    let mut report = first;
    for _ in 0..REPLAYS {
        if report.verdict.outcome != Outcome::Inconclusive {
            break;
        }
        report = play(fixture.clone(), bugs).await;
    }
    report
}
