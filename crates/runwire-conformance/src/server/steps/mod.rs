//! Step definitions of the server suite, one module per domain of
//! `features/server/*.feature`. A step is one function whose typed arguments are
//! parsed from the captures of its pattern, registered once, with that pattern, in
//! its domain's `register` ([`registry`]); feature files are checked against the
//! patterns before anything runs.
//!
//! Adding a step: write its function in the domain's module and register it there.

mod admission;
mod auth;
mod batching;
mod connect;
mod errors;
mod flood;
mod heartbeat;
mod history;
mod input;
mod limits;
mod listing;
mod origin;
mod producer;
mod receive;
mod registry;
mod reset;
mod restart;
mod retention;
mod slow;
mod subscribe;
mod support;
mod world;

use std::sync::LazyLock;

use registry::{Doc, On, Registry, Step};
use support::{ANSWER_WAIT_MS, R, due_verdict, progress_event};
use world::RunInfo;
pub(crate) use world::ServerWorld;

/// Every server step, in matching order: the first pattern that matches a step's text
/// defines it, so a pattern comes before any that would hide it (the test
/// `no_step_pattern_is_hidden_by_an_earlier_one`).
static STEPS: LazyLock<Registry> = LazyLock::new(|| {
    let mut r = Registry::default();
    // Mostly in the order of the feature files they serve; `auth` before `history`,
    // whose `the producer sends GET {rest}` would hide its token variants.
    admission::register(&mut r);
    auth::register(&mut r);
    batching::register(&mut r);
    connect::register(&mut r);
    flood::register(&mut r);
    heartbeat::register(&mut r);
    history::register(&mut r);
    producer::register(&mut r);
    input::register(&mut r);
    limits::register(&mut r);
    listing::register(&mut r);
    origin::register(&mut r);
    reset::register(&mut r);
    restart::register(&mut r);
    retention::register(&mut r);
    slow::register(&mut r);
    subscribe::register(&mut r);
    // Steps many features share: what clients receive.
    receive::register(&mut r);
    errors::register(&mut r);
    r
});

/// Every server step pattern, in matching order.
pub(crate) fn step_patterns() -> impl Iterator<Item = &'static str> {
    STEPS.steps().iter().map(|s| s.pattern)
}

/// The step that defines `text`, with the captures of its pattern.
pub(crate) fn find(text: &str) -> Option<(&'static Step, Vec<String>)> {
    STEPS.find(text)
}

#[cfg(test)]
mod tests {
    use super::{STEPS, find};

    /// An example text of `pattern`.
    fn example(pattern: &str) -> String {
        pattern
            .replace("{s}", "\"x\"")
            .replace("{n}", "1")
            .replace("{w}", "w")
            .replace("{rest}", "{}")
    }

    #[test]
    fn no_step_pattern_is_hidden_by_an_earlier_one() {
        for (i, s) in STEPS.steps().iter().enumerate() {
            let text = example(s.pattern);
            let got = find(&text).map(|x| x.0.pattern);
            assert_eq!(
                got,
                Some(s.pattern),
                "{text:?} (step {i}) is defined by {got:?}, not by {:?}",
                s.pattern
            );
        }
    }

    #[test]
    fn every_step_function_takes_what_its_pattern_captures() {
        for s in STEPS.steps() {
            let Some(params) = &s.params else { continue };
            let captured: Vec<&str> = s
                .pattern
                .split('{')
                .skip(1)
                .filter_map(|p| p.split_once('}').map(|x| x.0))
                .collect();
            let typed: Vec<&[&str]> = params.iter().copied().filter(|f| !f.is_empty()).collect();
            assert_eq!(
                captured.len(),
                typed.len(),
                "{:?} captures {captured:?}, its function takes {typed:?}",
                s.pattern
            );
            for (c, t) in captured.iter().zip(&typed) {
                assert!(
                    t.contains(c),
                    "{:?}: {{{c}}} cannot give an argument taken from {t:?}",
                    s.pattern
                );
            }
        }
    }

    #[test]
    fn every_pattern_is_registered_once() {
        let mut seen = std::collections::BTreeSet::new();
        for s in STEPS.steps() {
            assert!(
                seen.insert(s.pattern),
                "{:?} is registered twice",
                s.pattern
            );
        }
    }
}
