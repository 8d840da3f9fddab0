//! Reports, expected failures and baselines on a small real run.

use runwire_conformance::{
    ConformOptions, Grade, Plan, conform,
    expect::{ExpectedFailures, baseline_of, diff_baseline},
    faults::{FaultyServer, ServerFault},
    features::TagFilter,
    model::report_schema,
    reference, report,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_expected_failures_and_baseline() {
    let server = reference::ReferenceServer::start(reference::reference_config(1.0))
        .await
        .unwrap();
    let original = server.target();
    let proxy = FaultyServer::start(&original, ServerFault::NeverPing)
        .await
        .unwrap();
    let xf = ExpectedFailures::parse(
        r#"{"$comment": "test", "server/heartbeat/pings-come-at-the-announced-cadence": "the proxy swallows pings", "server/nothing/*": "stale"}"#,
        "inline",
    )
    .unwrap();
    let opts = ConformOptions {
        seed: 3,
        tags: Some(TagFilter::parse("@heartbeat or @version").unwrap()),
        expected_failures: Some(xf),
        ..ConformOptions::default()
    };
    let rep = conform(
        Plan {
            server: Some(proxy.target(&original)),
            client: None,
        },
        &opts,
        &|_| {},
    )
    .await
    .unwrap();
    server.stop().await;
    let by_id = |id: &str| rep.results.iter().find(|r| r.id == id).unwrap();
    let cadence = by_id("server/heartbeat/pings-come-at-the-announced-cadence");
    assert_eq!(cadence.grade, Grade::ExpectedFailure);
    assert_eq!(
        cadence.expected_failure_reason.as_deref(),
        Some("the proxy swallows pings")
    );
    // The other heartbeat scenarios fail for real and fail the run.
    assert!(!rep.passed);
    assert!(rep.counts.fail_must >= 1);
    assert!(
        rep.stale_expected_failures
            .iter()
            .any(|s| s.pattern == "server/nothing/*" && s.why == "matches_nothing")
    );
    // Version scenarios pass through the proxy.
    assert!(
        rep.results
            .iter()
            .filter(|r| r.area == "version")
            .all(|r| r.grade == Grade::Pass)
    );

    // JUnit: well-formed enough, one testcase per scenario, failures for MUST.
    let junit = report::junit(&rep);
    assert_eq!(junit.matches("<testcase ").count(), rep.results.len());
    assert!(junit.contains("<failure message=\"RW-HEART-1"));
    assert!(junit.contains("expected failure: the proxy swallows pings"));

    // JSON: round-trips and every top-level member is in the schema.
    let json = report::json(&rep);
    let back: runwire_conformance::RunReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, rep);
    let schema = report_schema();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for k in v.as_object().unwrap().keys() {
        assert!(
            schema.pointer(&format!("/properties/{k}")).is_some(),
            "{k} not in schema"
        );
    }

    // HTML: self-contained, failures first, transcripts present.
    let html = report::html(&rep);
    assert!(html.starts_with("<!doctype html>"));
    assert!(!html.contains("<script src") && !html.contains("<link "));
    let first_fail = html.find("badge fail\">FAIL</span> <b>").unwrap();
    let first_pass = html.find("badge pass\">pass</span> <b>").unwrap();
    assert!(first_fail < first_pass, "failures come first");
    assert!(html.contains("hello"));

    // Baseline: identical run → no diff; a changed grade → one line.
    let base = baseline_of(&rep.results);
    assert!(diff_baseline(&base, &base).is_empty());
    let mut changed = base.clone();
    changed.insert(cadence.id.clone(), "pass".into());
    assert_eq!(diff_baseline(&changed, &base).len(), 1);
}

#[test]
fn a_fixture_without_a_feature_gets_a_generated_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/client/happy-path.json"
    ))
    .unwrap()
    .replace("\"id\": \"happy-path\"", "\"id\": \"extra-fixture\"");
    std::fs::write(dir.path().join("extra-fixture.json"), text).unwrap();
    let all = runwire_conformance::load_all(None, Some(dir.path())).unwrap();
    let generated: Vec<_> = all.iter().filter(|s| s.area == "fixtures").collect();
    assert_eq!(generated.len(), 1);
    assert_eq!(generated[0].id, "client/fixtures/extra-fixture");
    assert!(generated[0].requirements.contains(&"RW-CONN-4".to_owned()));
    // With the embedded library every fixture is played by exactly one scenario.
    let embedded = runwire_conformance::load_all(None, None).unwrap();
    for (name, _) in runwire_conformance::features::embedded_fixtures() {
        let id = name.trim_end_matches(".json");
        let n = embedded
            .iter()
            .flat_map(|s| s.steps.iter())
            .filter(|st| st.text == format!("the client under test plays fixture \"{id}\""))
            .count();
        assert_eq!(n, 1, "fixture {id} is played by {n} scenarios");
    }
}
