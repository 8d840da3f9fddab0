//! The fixture library against the correct test client.

use futures_util::{StreamExt, stream};
use runwire_mock::load_dir;

use crate::{client::Bugs, harness};

/// Plays every fixture of the library against the correct client, a few at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_passes_with_the_correct_client() {
    let fixtures = load_dir(&harness::fixture_dir()).unwrap_or_else(|e| panic!("{e}"));
    assert!(fixtures.len() >= 40, "only {} fixtures", fixtures.len());
    let reports: Vec<_> = stream::iter(fixtures)
        .map(|(_, f)| harness::play(f, Bugs::default()))
        .buffer_unordered(4)
        .collect()
        .await;
    let mut failed = Vec::new();
    for r in &reports {
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
