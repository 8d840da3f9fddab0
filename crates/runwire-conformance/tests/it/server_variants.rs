//! The kit must be right: every deliberately broken server variant fails at least one
//! scenario, and the failure message names the violated requirement.

use runwire_conformance::{
    ConformOptions, Grade, Plan, conform,
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
    assert!(ServerFault::ALL.len() >= 10);
    for fault in ServerFault::ALL {
        let proxy = FaultyServer::start(&original, *fault).await.unwrap();
        let req = fault.requirement();
        // The scenarios that prove the requirement, and the area around it.
        let opts = ConformOptions {
            seed: 77,
            jobs: 8,
            tags: Some(TagFilter::parse(&format!("@{req} and not @serial")).unwrap()),
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
        if !caught || report.passed {
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
}
