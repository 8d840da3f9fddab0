//! The kit must be right: every deliberately broken server variant fails at least one
//! scenario, and the failure message names the violated requirement.

use runwire_conformance::{
    ConformOptions, Grade, Plan, RunReport, conform,
    faults::{FaultyServer, ServerFault},
    features::TagFilter,
    reference,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broken_server_is_caught_with_its_requirement() {
    let server = reference::ReferenceServer::start(reference::reference_config(1.0))
        .await
        .unwrap();
    let original = server.target();
    let mut missed = Vec::new();
    let mut misnamed = Vec::new();
    assert!(ServerFault::ALL.len() >= 10);
    for (i, fault) in ServerFault::ALL.iter().enumerate() {
        let proxy = FaultyServer::start(&original, *fault).await.unwrap();
        let req = fault.requirement();
        // The scenarios that prove the requirement, and the area around it.
        let opts = ConformOptions {
            // A seed per fault: run names derive from it, and the faults share one
            // server, so each fault's scenarios get runs of their own.
            seed: 77 + i as u64,
            jobs: 8,
            // Restart scenarios only for the fault that needs one: they restart the
            // shared reference server.
            tags: Some(
                TagFilter::parse(&if *fault == ServerFault::ShutdownDropsPending {
                    format!("@{req}")
                } else {
                    format!("@{req} and not @serial")
                })
                .unwrap(),
            ),
            ..ConformOptions::default()
        };
        let report = conform(
            Plan {
                server: Some(proxy.target(&original)),
                client: None,
            },
            &opts,
            &|_| {},
        )
        .await
        .unwrap();
        let caught = report.results.iter().any(|r| {
            r.grade == Grade::Fail && r.message.as_deref().is_some_and(|m| m.contains(req))
        });
        // Every failure names a requirement its scenario is tagged with, or one of the
        // wire invariants checked in every scenario: a message that blames the wrong
        // requirement sends an implementer to the wrong section of the spec.
        for r in report.results.iter().filter(|r| r.grade == Grade::Fail) {
            let named = r.violated.clone().unwrap_or_default();
            for req in named.split(", ") {
                if !(r.requirements.iter().any(|t| t == req)
                    || runwire_conformance::server::WIRE_INVARIANTS.contains(&req))
                {
                    misnamed.push(format!(
                        "{fault:?}: {} names {req}, which it is not tagged with: {}",
                        r.id,
                        r.message.as_deref().unwrap_or("")
                    ));
                }
            }
        }
        // A MUST violation fails the run; a SHOULD one only warns.
        let must = runwire_conformance::runner::requirement_level(req)
            == Some(runwire_conformance::Level::Must);
        if !caught || (must && report.passed) {
            missed.push(format!(
                "{fault:?} ({req}) was not caught: {:?}",
                report
                    .results
                    .iter()
                    .map(|r| (&r.id, r.grade, r.message.clone()))
                    .collect::<Vec<_>>()
            ));
        }
    }
    server.stop().await;
    assert!(missed.is_empty(), "{}", missed.join("\n"));
    assert!(misnamed.is_empty(), "{}", misnamed.join("\n"));
}

/// A server that answers a trimmed history read with 200 and the events it still has
/// (a silent gap) fails every retention scenario with `RW-INGEST-17`, while the history
/// scenarios that never read trimmed events still pass through the same proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rw_ingest_17_a_gap_instead_of_410_fails_the_retention_scenarios() {
    let report = behind_fault(
        ServerFault::TrimmedHistoryAsGap,
        17,
        "@retention or @history",
    )
    .await;
    let mut retention = 0;
    for r in &report.results {
        let msg = r.message.clone().unwrap_or_default();
        if r.id.starts_with("server/retention/") {
            retention += 1;
            assert_eq!(r.grade, Grade::Fail, "{}: {msg}", r.id);
            assert!(
                msg.contains("RW-INGEST-17") && msg.contains("not with a gap"),
                "{}: {msg}",
                r.id
            );
        } else {
            assert_eq!(r.grade, Grade::Pass, "{}: {msg}", r.id);
        }
    }
    assert_eq!(retention, 6, "every retention scenario ran");
    assert!(!report.passed);
}

/// A server without the optional run listing (404 to `GET /v1/runs`) gets a warning
/// for `RW-INGEST-25` (a SHOULD) and "not implemented" for the scenarios of what a
/// listing holds (`RW-INGEST-26` to `RW-INGEST-28`): the run passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rw_ingest_25_a_server_without_the_listing_is_warned_not_failed() {
    let report = behind_fault(ServerFault::NoRunListing, 25, "@listing").await;
    let grades: Vec<_> = report
        .results
        .iter()
        .map(|r| (r.id.as_str(), r.grade, r.violated.clone()))
        .collect();
    assert!(report.results.len() >= 4, "{grades:?}");
    for r in &report.results {
        if r.requirements.iter().any(|t| t == "RW-INGEST-25") {
            assert_eq!(r.grade, Grade::Fail, "{grades:?}");
            assert_eq!(
                r.violated_level,
                Some(runwire_conformance::Level::Should),
                "{grades:?}"
            );
        } else {
            assert_eq!(r.grade, Grade::NotImplemented, "{}: {grades:?}", r.id);
        }
    }
    assert!(report.passed, "a SHOULD only warns: {grades:?}");
}

/// The server suite's scenarios tagged `tags`, with `seed`, against the reference
/// server behind the fault proxy playing `fault`.
async fn behind_fault(fault: ServerFault, seed: u64, tags: &str) -> RunReport {
    let server = reference::ReferenceServer::start(reference::reference_config(1.0))
        .await
        .unwrap();
    let original = server.target();
    assert!(original.short_retention.is_some());
    let proxy = FaultyServer::start(&original, fault).await.unwrap();
    let opts = ConformOptions {
        seed,
        jobs: 4,
        tags: Some(TagFilter::parse(tags).unwrap()),
        ..ConformOptions::default()
    };
    println!("seed {}", opts.seed);
    let report = conform(
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
    report
}
