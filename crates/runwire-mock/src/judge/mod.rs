//! Final judgement, once the client is done or the fixture's deadline passed: what
//! never happened (connections, script steps, subscriptions), the reconnect delays
//! over several connections ([`crate::reconnect`]), the close codes left for the end,
//! and what the client delivered to its application ([`lines`]); then the verdict.

mod lines;

use std::sync::{Arc, Mutex as StdMutex};

use serde_json::Value;
use tokio::time::Instant;

use lines::Judge;
pub(crate) use lines::last_epoch;

use crate::{
    Report,
    engine::{self, AdapterOutput, ConnState, Shared},
    fixture::{Accept, ExitExpect},
    lateness::TimingMiss,
    reconnect::{self, ConnTimes},
    reqs,
    transcript::{Outcome, Transcript, Verdict},
};

/// A connection as the final judgment sees it, copied out of the shared state so
/// that no lock is held while judging.
struct ConnSeen {
    /// It had a script (it is not one beyond the fixture's last).
    scripted: bool,
    /// It played its script to the end.
    script_done: bool,
    /// The script step it was at; `None` while it waited for `hello`.
    step: Option<usize>,
    /// When it was accepted and ended.
    times: ConnTimes,
    /// What it received (the `hello`, the subscriptions).
    state: Arc<StdMutex<ConnState>>,
}

/// Copies the connections and the adapter's output out of the shared state, with
/// the instant the client was started (or the mock, without an adapter).
fn seen(sh: &Shared) -> (Vec<ConnSeen>, AdapterOutput, Instant) {
    let st = sh.lock();
    let conns = st
        .conns
        .iter()
        .map(|c| ConnSeen {
            scripted: c.scripted,
            script_done: c.script_done,
            step: c.step,
            times: ConnTimes {
                accepted: c.accepted,
                ended: c.ended,
                scripted: c.scripted,
            },
            state: c.state.clone(),
        })
        .collect();
    let app = AdapterOutput {
        attached: st.app.attached,
        started: st.app.started,
        lines: st.app.lines.clone(),
        line_at: st.app.line_at.clone(),
        exit: st.app.exit,
        exit_at: st.app.exit_at,
        run_wait: None,
        killed_by_mock: st.app.killed_by_mock,
    };
    (conns, app, st.app.started.unwrap_or(sh.start))
}

/// The judgment at the end of a fixture, once the client is done or the deadline
/// passed: what never happened, the reconnect delays, the close codes left for the
/// end, and what the client delivered to its application.
pub(crate) struct FinalJudgment<'a> {
    sh: &'a Shared,
    /// Set when the fixture ended on its deadline: a judged absence is then a timing
    /// miss by the extension watched after the deadline.
    deadline_miss: Option<TimingMiss>,
    /// The fixture's first requirement, for violations without one of their own.
    primary: String,
}

impl<'a> FinalJudgment<'a> {
    /// Judges the fixture played on `sh`, which ended at `end` (`timed_out`: on its
    /// deadline), and returns the report.
    pub(crate) fn report(
        sh: &'a Shared,
        timed_out: bool,
        deadline_miss: Option<TimingMiss>,
        end: Instant,
    ) -> Report {
        let this = Self {
            sh,
            deadline_miss,
            primary: sh.fixture.primary_requirement().to_owned(),
        };
        let (conns, app, started) = seen(sh);
        let first_accept = conns.first().map(|c| c.times.accepted);
        let timed_lines: Vec<(Instant, Value)> = app
            .line_at
            .iter()
            .copied()
            .zip(app.lines.iter().cloned())
            .collect();
        let startup = first_accept.map(|a| a.saturating_duration_since(started));
        let overhead = reconnect::connect_overhead(&timed_lines, first_accept);
        if let Some(o) = overhead {
            sh.note(
                0,
                format!(
                    "connect overhead {:.1} ms (the client's first connecting line to the \
                     first accept)",
                    engine::ms(o)
                ),
            );
        }
        this.missing_connections(&conns, &app);
        this.unfinished_scripts(&conns);
        this.missing_subscriptions(&conns);
        // Reconnect delays, one connection at a time, jitter.
        let times: Vec<ConnTimes> = conns.iter().map(|c| c.times).collect();
        reconnect::judge(sh, &times, &timed_lines, overhead, end);
        close_codes_unless_browser(sh, &app.lines);
        let mut notes = Vec::new();
        if timed_out {
            notes.push(format!(
                "the fixture deadline of {} ms passed",
                sh.wire_ms(sh.fixture.deadline_ms())
            ));
        }
        let unimplemented = this.application(&app, &mut notes);
        let lateness = sh.probe.summary(sh.start.into_std(), end.into_std());
        sh.note(
            0,
            format!(
                "the kit's timers ran late by {:.1} ms (median), {:.1} ms (99th percentile), \
                 {:.1} ms (worst) during the run",
                lateness.p50_ms, lateness.p99_ms, lateness.max_ms
            ),
        );
        let (verdict, transcript) = this.verdict(notes, unimplemented);
        Report {
            verdict,
            transcript,
            app_lines: app.lines,
            exit: app.exit,
            startup,
            connect_overhead: overhead,
            lateness,
        }
    }

    /// Records a violation. `absence` marks a judgment of something that did not
    /// happen (a connection, a script step, an exit, a line): when the fixture ended
    /// on its deadline, that is a timing judgment, missed by the extension watched
    /// after the deadline.
    fn violate(
        &self,
        absence: bool,
        conn: Option<u32>,
        requirement: &str,
        expectation: &str,
        message: String,
    ) {
        match self.deadline_miss {
            Some(miss) if absence => self.sh.violate_timing(
                conn,
                requirement,
                expectation,
                format!("{message} (the fixture deadline passed)"),
                miss,
            ),
            _ => self.sh.violate(conn, requirement, expectation, message),
        }
    }

    /// Scripted connections that never came.
    fn missing_connections(&self, conns: &[ConnSeen], app: &AdapterOutput) {
        let f = &self.sh.fixture;
        let arrived = conns.iter().filter(|c| c.scripted).count();
        for (k, c) in f.connections.iter().enumerate().skip(arrived) {
            let req = c
                .reconnect_delay
                .as_ref()
                .and_then(|d| d.requirement.clone())
                .unwrap_or_else(|| self.primary.clone());
            let exited_first = app.exit.is_some() && !app.killed_by_mock;
            let why = if exited_first {
                "the client exited first"
            } else {
                "the fixture deadline passed"
            };
            self.violate(
                !exited_first,
                Some(k as u32 + 1),
                &req,
                "connection",
                format!(
                    "expected the client to open connection {}{}; {why}",
                    k + 1,
                    c.label
                        .as_ref()
                        .map(|l| format!(" ({l})"))
                        .unwrap_or_default()
                ),
            );
        }
    }

    /// Scripted connections that did not play their script to the end.
    fn unfinished_scripts(&self, conns: &[ConnSeen]) {
        let f = &self.sh.fixture;
        for (i, c) in conns.iter().enumerate() {
            if c.scripted && !c.script_done {
                let step = c.step.map_or_else(
                    || "hello".to_owned(),
                    |s| format!("step {s} ({})", f.connections[i].steps[s].name()),
                );
                self.violate(
                    true,
                    Some(i as u32 + 1),
                    &self.primary,
                    "script",
                    format!(
                        "connection {} did not finish its script: stuck at {step}",
                        i + 1
                    ),
                );
            }
        }
    }

    /// Cursor expectations of a `hello` that never met a subscription.
    fn missing_subscriptions(&self, conns: &[ConnSeen]) {
        let f = &self.sh.fixture;
        for (i, c) in conns.iter().enumerate() {
            if !c.scripted || f.connections[i].accept != Accept::Websocket {
                continue;
            }
            let st = c
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if st.hello.is_none() {
                continue;
            }
            let missing: Vec<_> = f.connections[i]
                .hello
                .cursors
                .iter()
                .filter(|cur| !st.requested.contains_key(&cur.run))
                .map(|cur| cur.run.clone())
                .collect();
            drop(st);
            for run in missing {
                self.violate(
                    true,
                    Some(i as u32 + 1),
                    reqs::SUBSCRIBE,
                    "subscribe",
                    format!("the client never subscribed to run {run} on this connection"),
                );
            }
        }
    }

    /// What the client delivered to its application and how it exited, when an
    /// adapter was attached; else a note that those expectations were not judged.
    /// Returns what the client said it does not implement, if anything.
    fn application(&self, app: &AdapterOutput, notes: &mut Vec<String>) -> Option<String> {
        let f = &self.sh.fixture;
        let mut judge = Judge {
            fixture: f,
            logs: &self.sh.logs,
            out: Vec::new(),
        };
        let mut unimplemented = None;
        if app.attached {
            let exit_code = app.exit.flatten();
            // Still running at the end: killed by the mock, or (an in-process client)
            // never reported an exit.
            let running = app.killed_by_mock || app.exit.is_none();
            judge.exit(f.expect.exit, exit_code, running);
            judge.delivered(&app.lines);
            judge.errors(&app.lines);
            judge.lines(&app.lines);
            let no_fold = judge.folded(&app.lines);
            if exit_code == Some(89) && !app.killed_by_mock {
                unimplemented = Some(
                    app.lines
                        .iter()
                        .rev()
                        .find(|l| l.get("kind").and_then(Value::as_str) == Some("unimplemented"))
                        .and_then(|l| l.get("feature").and_then(Value::as_str))
                        .unwrap_or("(no unimplemented line)")
                        .to_owned(),
                );
            } else if no_fold.is_some() {
                unimplemented = no_fold;
            }
        } else if f.expect.exit.is_some()
            || !f.expect.delivered.is_empty()
            || !f.expect.errors.is_empty()
            || !f.expect.lines.is_empty()
            || f.expect.terminal_error.is_some()
            || !f.expect.folded.is_empty()
        {
            notes.push(
                "application expectations (exit, delivered, errors) not judged: no adapter attached"
                    .into(),
            );
        }
        for j in judge.out {
            self.violate(
                j.absence,
                None,
                &j.violation.requirement,
                &j.violation.expectation,
                j.violation.message,
            );
        }
        unimplemented
    }

    /// The verdict over everything recorded, and the transcript.
    fn verdict(&self, notes: Vec<String>, unimplemented: Option<String>) -> (Verdict, Transcript) {
        let (sh, f) = (self.sh, &self.sh.fixture);
        let st = sh.lock();
        let mut violations = st.violations.clone();
        if let Some(from) = st.explained_close {
            // RW-HEART-5: what followed a close the client had to make is not the
            // client's doing (see `State::explained_close`).
            for v in violations.iter_mut().skip(from).filter(|v| !v.inconclusive) {
                v.inconclusive = true;
                v.message.push_str(
                    " (inconclusive: it follows from a close after the mock's own silence \
                     reached the client's liveness budget)",
                );
            }
        }
        let mut all_notes = st.notes.clone();
        all_notes.extend(notes);
        let outcome = if unimplemented.is_some() && f.expect.exit != Some(ExitExpect::Unimplemented)
        {
            Outcome::NotImplemented
        } else if violations.is_empty() {
            Outcome::Pass
        } else if violations.iter().all(|v| v.inconclusive) {
            Outcome::Inconclusive
        } else {
            Outcome::Fail
        };
        let verdict = Verdict {
            fixture: f.id.clone(),
            level: f.level,
            requirements: f.requirements.clone(),
            seed: sh.seed,
            outcome,
            violations,
            notes: all_notes,
            unimplemented,
        };
        let transcript = Transcript {
            fixture: f.id.clone(),
            seed: sh.seed,
            time_scale: sh.scale,
            entries: st.entries.clone(),
        };
        (verdict, transcript)
    }
}

/// `RW-CLOSE-10`: close codes after a frame that is not valid UTF-8 are judged
/// unless the adapter declared the browser profile.
fn close_codes_unless_browser(sh: &Shared, lines: &[Value]) {
    let pending = sh
        .st
        .lock()
        .map(|mut st| std::mem::take(&mut st.unless_browser))
        .unwrap_or_default();
    let browser = lines.iter().any(|l| {
        l.get("kind").and_then(Value::as_str) == Some("platform")
            && l.get("profile").and_then(Value::as_str) == Some("browser")
    });
    for (k, req, message) in pending {
        if browser {
            sh.note(
                k,
                format!(
                    "{message}: not judged, the adapter declared the browser profile (RW-CLOSE-10)"
                ),
            );
        } else {
            sh.violate(Some(k), &req, "client_close", message);
        }
    }
}
