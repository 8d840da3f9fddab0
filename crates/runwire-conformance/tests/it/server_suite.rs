//! The whole server suite against the in-process reference server.

use runwire_conformance::{
    ConformOptions, Grade, Plan, ScenarioResult, conform, features::TagFilter, reference,
};

/// Runs the server suite with `opts` against a reference server started with `config`.
async fn run_server_suite(
    config: runwire_server::ServerConfig,
    opts: &ConformOptions,
) -> runwire_conformance::RunReport {
    let server = reference::ReferenceServer::start(config).await.unwrap();
    println!("seed {}", opts.seed);
    let plan = Plan {
        server: Some(server.target()),
        client: None,
    };
    let report = conform(plan, opts, &|_| {}).await.unwrap();
    server.stop().await;
    report
}

/// Runs the whole server suite against `config` and asserts that every scenario passes
/// (or fails as the committed expected failures say); without TLS the transport
/// security scenarios (`features/server/tls.feature`) are not implemented instead.
async fn passes_every_server_scenario(config: runwire_server::ServerConfig) {
    let tls = config.tls.enabled();
    // The committed expected failures (reference bugs reported upstream, with reasons).
    let xf = runwire_conformance::expect::ExpectedFailures::parse(
        include_str!("../../../../conformance/expected-failures.json"),
        "conformance/expected-failures.json",
    )
    .unwrap();
    let opts = ConformOptions {
        seed: 20261122,
        jobs: 4,
        expected_failures: Some(xf),
        ..ConformOptions::default()
    };
    let report = run_server_suite(config, &opts).await;
    let bad: Vec<String> = report
        .results
        .iter()
        .filter(|r| {
            let plain_tls_scenario =
                !tls && r.id.starts_with("server/tls/") && r.grade == Grade::NotImplemented;
            !plain_tls_scenario
                && !matches!(
                    r.grade,
                    Grade::Pass | Grade::ExpectedFailure | Grade::UnexpectedPass
                )
        })
        .map(describe)
        .collect();
    assert!(
        bad.is_empty(),
        "the reference server must pass everything:\n{}",
        bad.join("\n")
    );
    assert!(
        report.counts.total >= 60,
        "the server suite has at least 60 scenarios"
    );
    assert!(report.passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_server_passes_every_server_scenario() {
    passes_every_server_scenario(reference::reference_config(1.0)).await;
}

/// The same suite over `wss://` and `https://` (`RW-SEC-3`): every raw socket, hand-made
/// frame and HTTP request of the kit goes through TLS, trusting a CA made for the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_server_passes_every_server_scenario_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = runwire_server::dev_certificates(&["127.0.0.1", "localhost"], 1).unwrap();
    let (ca, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca, &certs.ca_pem).unwrap();
    std::fs::write(&cert, &certs.cert_pem).unwrap();
    std::fs::write(&key, &certs.key_pem).unwrap();
    runwire_conformance::net::trust_ca_files(&[ca]).unwrap();
    let mut config = reference::reference_config(1.0);
    config.tls.cert = Some(cert);
    config.tls.key = Some(key);
    passes_every_server_scenario(config).await;
}

/// The kit keeps to the message rate a server announces (`RW-LIMIT-5`), counting its
/// own pongs (`RW-LIMIT-4` counts them): against a server at the default rate (50 per
/// second) that pings every 50 ms, the scenarios that send the most messages (the flood
/// of `RW-SEC-15`, the subscription churn of `RW-SUB-4`) pass instead of being closed
/// with `rate_limited` and blaming the server for what the kit did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kit_keeps_to_the_announced_message_rate() {
    let mut config = reference::reference_config(1.0);
    config.max_messages_per_second = runwire_protocol::defaults::MAX_MESSAGES_PER_SECOND;
    config.heartbeat_interval_ms = 50;
    let opts = ConformOptions {
        seed: 20261205,
        tags: Some(TagFilter::parse("@RW-SEC-15 or @RW-SUB-4").unwrap()),
        ..ConformOptions::default()
    };
    let report = run_server_suite(config, &opts).await;
    let bad: Vec<String> = report
        .results
        .iter()
        .filter(|r| r.grade != Grade::Pass)
        .map(describe)
        .collect();
    assert!(
        report.counts.total >= 2,
        "{} scenarios ran",
        report.counts.total
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_capability_scenarios_are_not_implemented_without_them() {
    let server = reference::ReferenceServer::start(reference::reference_config(1.0))
        .await
        .unwrap();
    let mut target = server.target();
    target.token = None;
    target.limited_token = None;
    target.control = None;
    target.short_retention = None;
    let opts = ConformOptions {
        seed: 5,
        tags: Some(TagFilter::parse("@auth or @restart or @retention").unwrap()),
        ..ConformOptions::default()
    };
    let report = conform(
        Plan {
            server: Some(target),
            client: None,
        },
        &opts,
        &|_| {},
    )
    .await
    .unwrap();
    server.stop().await;
    assert!(report.counts.total > 0);
    assert!(
        report
            .results
            .iter()
            .any(|r| r.id.starts_with("server/retention/")),
        "the retention scenarios ran"
    );
    assert_eq!(
        report.counts.not_implemented,
        report.counts.total,
        "without tokens, restart control or a declared short retention these scenarios are graded not implemented: {:?}",
        report
            .results
            .iter()
            .map(|r| (&r.id, r.grade))
            .collect::<Vec<_>>()
    );
    assert!(report.passed, "not implemented does not fail the run");
}

/// One result as a line of an assertion message: id, grade and message.
fn describe(r: &ScenarioResult) -> String {
    format!(
        "{}: {:?} {}",
        r.id,
        r.grade,
        r.message.as_deref().unwrap_or("")
    )
}
