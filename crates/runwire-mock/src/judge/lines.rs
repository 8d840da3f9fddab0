//! What the client delivered to its application (the adapter's JSON lines) and how it
//! exited, judged against the fixture's final expectations.

use std::collections::BTreeMap;

use runwire_protocol::RunSnapshot;
use serde_json::Value;

use crate::{
    fixture::{ErrorLineExpect, ExitExpect, Fixture, TimelineItem, parse_range},
    generate::Logs,
    reqs,
    transcript::Violation,
};

/// The epoch of the last log declared for `run` (the one a fixture usually ends on).
pub(crate) fn last_epoch(f: &Fixture, run: &str) -> Option<String> {
    f.runs
        .iter()
        .rev()
        .find(|r| r.run_id == run)
        .map(|r| r.epoch.clone())
}

/// Whether `have` contains every member of `want` with an equal value (objects
/// compared member by member, recursively).
fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| contains(hv, v))),
        _ => have == want,
    }
}

/// One application-visible item of a run.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Event {
        seq: u64,
        event_id: String,
        event_type: String,
    },
    Reset {
        reason: String,
        epoch: String,
        as_of_seq: u64,
    },
}

/// An expected event.
#[derive(Debug, Clone)]
struct ExpEvent {
    seq: u64,
    optional: bool,
}

/// An expected segment: the events after a reset (or from the start).
#[derive(Debug, Clone)]
struct ExpSegment {
    reset: Option<(String, String, u64)>,
    epoch: String,
    events: Vec<ExpEvent>,
}

/// Compresses sorted seqs into `1-3, 5`.
pub(crate) fn ranges(seqs: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let start = seqs[i];
        let mut end = start;
        while i + 1 < seqs.len() && seqs[i + 1] == end + 1 {
            i += 1;
            end = seqs[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(", ")
}

/// One violation of the final judgment.
pub(crate) struct Judged {
    pub(crate) violation: Violation,
    /// It judges something that did not happen (a line, an event, the exit): when the
    /// fixture ended on its deadline, the client may merely not have got there yet.
    pub(crate) absence: bool,
}

pub(crate) struct Judge<'a> {
    pub(crate) fixture: &'a Fixture,
    pub(crate) logs: &'a Logs,
    pub(crate) out: Vec<Judged>,
}

impl Judge<'_> {
    /// Something the client did wrong.
    fn violate(&mut self, requirement: &str, expectation: &str, message: String) {
        self.out.push(Judged {
            violation: Violation::new(requirement, expectation, message, None),
            absence: false,
        });
    }

    /// Something the client did not do (yet).
    fn absent(&mut self, requirement: &str, expectation: &str, message: String) {
        self.out.push(Judged {
            violation: Violation::new(requirement, expectation, message, None),
            absence: true,
        });
    }

    fn first_epoch(&self, run: &str) -> String {
        self.fixture
            .runs
            .iter()
            .find(|r| r.run_id == run)
            .map_or_else(|| "e1".to_owned(), |r| r.epoch.clone())
    }

    /// Judges the adapter's exit.
    pub(crate) fn exit(&mut self, expect: Option<ExitExpect>, exit: Option<i32>, killed: bool) {
        let Some(expect) = expect else { return };
        let primary = self.fixture.primary_requirement().to_owned();
        let seen = match (exit, killed) {
            (_, true) => "it was still running when the fixture ended".to_owned(),
            (Some(c), false) => format!("it exited with {c}"),
            (None, false) => "it was killed by a signal".to_owned(),
        };
        match expect {
            ExitExpect::Running => {
                if !killed {
                    self.violate(
                        &primary,
                        "exit",
                        format!("the client should have kept running, but {seen}"),
                    );
                }
            }
            other => {
                let want = other.code();
                if killed || exit != want {
                    let what = match other {
                        ExitExpect::Success => "exit 0 (every run reached a terminal status)",
                        ExitExpect::TerminalError => "exit 1 (a terminal error)",
                        ExitExpect::Unimplemented => "exit 89 (not implemented)",
                        ExitExpect::Running => "",
                    };
                    let message = format!("expected {what}; {seen}");
                    if killed {
                        self.absent(&primary, "exit", message);
                    } else {
                        self.violate(&primary, "exit", message);
                    }
                }
            }
        }
    }

    fn error_matches(e: &ErrorLineExpect, line: &Value) -> bool {
        let code = line.get("code").and_then(Value::as_str).unwrap_or("");
        if !e.code.split('|').any(|c| c.trim() == code) {
            return false;
        }
        if let Some(t) = e.terminal
            && line.get("terminal").and_then(Value::as_bool) != Some(t)
        {
            return false;
        }
        if let Some(r) = &e.run
            && line.get("run_id").and_then(Value::as_str) != Some(r.as_str())
        {
            return false;
        }
        if let Some(c) = &e.contains
            && !contains(line, &Value::Object(c.clone()))
        {
            return false;
        }
        true
    }

    /// How an expected error line is described in a violation.
    fn describe_error(e: &ErrorLineExpect) -> String {
        format!(
            "{}{}{}{}",
            e.code,
            e.terminal
                .map(|t| format!(", terminal {t}"))
                .unwrap_or_default(),
            e.run
                .as_ref()
                .map(|r| format!(", run {r}"))
                .unwrap_or_default(),
            e.contains
                .as_ref()
                .map(|c| format!(", containing {}", Value::Object(c.clone())))
                .unwrap_or_default(),
        )
    }

    /// Judges `expect.lines`: each must match a line after the previous match.
    pub(crate) fn lines(&mut self, lines: &[Value]) {
        let mut from = 0;
        for l in self.fixture.expect.lines.clone() {
            let want = Value::Object(l.contains.clone());
            match lines[from.min(lines.len())..]
                .iter()
                .position(|x| contains(x, &want))
            {
                Some(i) => from += i + 1,
                None => {
                    let req = l
                        .requirement
                        .clone()
                        .unwrap_or_else(|| self.fixture.primary_requirement().to_owned());
                    self.absent(
                        &req,
                        "line",
                        format!(
                            "expected the adapter to print a line containing {want} (after the \
                             lines matched before it)"
                        ),
                    );
                }
            }
        }
    }

    /// Judges `expect.folded`: the last `folded` line of each run must be the fold of
    /// its log (spec §8.3). Returns `Some(feature)` when the fixture needs folded state
    /// and the adapter printed no `folded` line at all (graded *not implemented*).
    pub(crate) fn folded(&mut self, lines: &[Value]) -> Option<String> {
        if self.fixture.expect.folded.is_empty() {
            return None;
        }
        let folded: Vec<&Value> = lines
            .iter()
            .filter(|l| l.get("kind").and_then(Value::as_str) == Some("folded"))
            .collect();
        if folded.is_empty() {
            return Some("folded state (no `folded` line)".to_owned());
        }
        for fe in self.fixture.expect.folded.clone() {
            let req = fe
                .requirement
                .clone()
                .unwrap_or_else(|| self.fixture.primary_requirement().to_owned());
            let epoch = fe
                .epoch
                .clone()
                .or_else(|| last_epoch(self.fixture, &fe.run))
                .unwrap_or_else(|| "e1".to_owned());
            let len = self.logs.get(&fe.run, &epoch).map_or(0, |l| l.events.len());
            let as_of = fe.as_of_seq.unwrap_or(len as u64);
            let Some(want) = self.logs.snapshot(&fe.run, &epoch, as_of) else {
                continue;
            };
            let Some(line) = folded
                .iter()
                .rev()
                .find(|l| l.get("run_id").and_then(Value::as_str) == Some(fe.run.as_str()))
            else {
                self.absent(
                    &req,
                    "folded",
                    format!(
                        "run {}: the adapter printed no folded state of this run",
                        fe.run
                    ),
                );
                continue;
            };
            let have_raw = line.get("snapshot").cloned().unwrap_or(Value::Null);
            match serde_json::from_value::<RunSnapshot>(have_raw.clone()) {
                Err(e) => self.violate(
                    &req,
                    "folded",
                    format!("run {}: the folded state is not a RunSnapshot: {e}", fe.run),
                ),
                Ok(have) if have != want => {
                    let (h, w) = (
                        serde_json::to_value(&have).unwrap_or_default(),
                        serde_json::to_value(&want).unwrap_or_default(),
                    );
                    let mut diffs = Vec::new();
                    let keys: std::collections::BTreeSet<&String> = h
                        .as_object()
                        .into_iter()
                        .chain(w.as_object())
                        .flat_map(|o| o.keys())
                        .collect();
                    for k in keys {
                        let (hv, wv) = (h.get(k), w.get(k));
                        if hv != wv {
                            let show = |v: Option<&Value>| {
                                let s = v.map_or_else(|| "absent".to_owned(), Value::to_string);
                                if s.chars().count() > 200 {
                                    format!("{}…", s.chars().take(200).collect::<String>())
                                } else {
                                    s
                                }
                            };
                            diffs.push(format!("{k}: {} (expected {})", show(hv), show(wv)));
                        }
                    }
                    // A state behind the log may be one the client had not finished.
                    self.absent(
                        &req,
                        "folded",
                        format!(
                            "run {}: the folded state differs from the fold of epoch {epoch}'s \
                             log through seq {as_of}: {}",
                            fe.run,
                            diffs.join("; ")
                        ),
                    );
                }
                Ok(_) => {}
            }
            if let Some(c) = &fe.contains {
                let c = Value::Object(c.clone());
                if !contains(&have_raw, &c) {
                    self.absent(
                        &req,
                        "folded",
                        format!(
                            "run {}: the folded state {have_raw} does not contain {c}",
                            fe.run
                        ),
                    );
                }
            }
        }
        None
    }

    /// Judges `error` lines.
    pub(crate) fn errors(&mut self, lines: &[Value]) {
        let errors: Vec<&Value> = lines
            .iter()
            .filter(|l| l.get("kind").and_then(Value::as_str) == Some("error"))
            .collect();
        let seen: Vec<String> = errors
            .iter()
            .map(|l| {
                format!(
                    "{}{}",
                    l.get("code").and_then(Value::as_str).unwrap_or("?"),
                    if l.get("terminal").and_then(Value::as_bool) == Some(true) {
                        " (terminal)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        let seen = if seen.is_empty() {
            "none".to_owned()
        } else {
            seen.join(", ")
        };
        for e in self.fixture.expect.errors.clone() {
            if !errors.iter().any(|l| Self::error_matches(&e, l)) {
                let req = e
                    .requirement
                    .clone()
                    .unwrap_or_else(|| self.fixture.primary_requirement().to_owned());
                self.absent(
                    &req,
                    "error_line",
                    format!(
                        "expected an error line with code {}; error lines seen: {seen}",
                        Self::describe_error(&e)
                    ),
                );
            }
        }
        // RW-ERROR-8: an error frame that announces a terminal close is reported once,
        // as the terminal error, not also as a non-terminal error right before it.
        if let [.., before, last] = errors.as_slice()
            && last.get("terminal").and_then(Value::as_bool) == Some(true)
            && before.get("terminal").and_then(Value::as_bool) != Some(true)
            && last
                .get("close_code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .is_some_and(|c| {
                    runwire_protocol::CloseCode(c).action()
                        == runwire_protocol::CloseAction::Terminal
                })
            && before.get("code").is_some()
            && before.get("code") == last.get("code")
            && before.get("message") == last.get("message")
        {
            self.violate(
                reqs::ERROR_ONCE,
                "error_line",
                format!(
                    "the client reported the error that announced its terminal close twice: \
                     first as a non-terminal error ({before}), then as the terminal one ({last})"
                ),
            );
        }
        if let Some(t) = self.fixture.expect.terminal_error.clone() {
            let req = t
                .requirement
                .clone()
                .unwrap_or_else(|| self.fixture.primary_requirement().to_owned());
            let mut want = t.clone();
            want.terminal = Some(true);
            match errors.last() {
                Some(l) if Self::error_matches(&want, l) => {}
                _ => self.absent(
                    &req,
                    "terminal_error",
                    format!(
                        "expected the client to stop with a terminal error {}; error lines seen: \
                         {seen}{}",
                        Self::describe_error(&t),
                        errors
                            .last()
                            .map(|l| format!("; the last one was {l}"))
                            .unwrap_or_default()
                    ),
                ),
            }
        }
    }

    fn expected_segments(
        &self,
        run: &str,
        timeline: &[TimelineItem],
        optional: &[u64],
    ) -> Vec<ExpSegment> {
        let mut segs = vec![ExpSegment {
            reset: None,
            epoch: self.first_epoch(run),
            events: Vec::new(),
        }];
        for item in timeline {
            match item {
                TimelineItem::Range(r) => {
                    if let Some((a, b)) = parse_range(r) {
                        let seg = segs.last_mut().expect("non-empty");
                        for seq in a..=b {
                            seg.events.push(ExpEvent {
                                seq,
                                optional: optional.contains(&seq),
                            });
                        }
                    }
                }
                TimelineItem::Reset(r) => {
                    let epoch = r
                        .reset
                        .epoch
                        .clone()
                        .unwrap_or_else(|| segs.last().expect("non-empty").epoch.clone());
                    segs.push(ExpSegment {
                        reset: Some((
                            r.reset.reason.as_str().to_owned(),
                            epoch.clone(),
                            r.reset.as_of_seq,
                        )),
                        epoch,
                        events: Vec::new(),
                    });
                }
            }
        }
        segs
    }

    /// Judges what was delivered per run.
    pub(crate) fn delivered(&mut self, lines: &[Value]) {
        let mut by_run: BTreeMap<String, Vec<Item>> = BTreeMap::new();
        for l in lines {
            match l.get("kind").and_then(Value::as_str) {
                Some("event") => {
                    let Some(ev) = l.get("event") else { continue };
                    let run = ev.get("run_id").and_then(Value::as_str).unwrap_or("");
                    by_run.entry(run.to_owned()).or_default().push(Item::Event {
                        seq: ev.get("seq").and_then(Value::as_u64).unwrap_or(0),
                        event_id: ev
                            .get("event_id")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        event_type: ev
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                    });
                }
                Some("reset") => {
                    let run = l.get("run_id").and_then(Value::as_str).unwrap_or("");
                    by_run.entry(run.to_owned()).or_default().push(Item::Reset {
                        reason: l
                            .get("reason")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        epoch: l
                            .get("epoch")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        as_of_seq: l
                            .get("snapshot")
                            .and_then(|s| s.get("as_of_seq"))
                            .and_then(Value::as_u64)
                            .unwrap_or(0),
                    });
                }
                _ => {}
            }
        }
        for d in self.fixture.expect.delivered.clone() {
            let actual = by_run.remove(&d.run).unwrap_or_default();
            let expected = self.expected_segments(&d.run, &d.timeline, &d.optional);
            let before = self.out.len();
            self.judge_run(&d.run, &expected, &actual);
            if let Some(r) = &d.requirement {
                for j in &mut self.out[before..] {
                    j.violation.requirement.clone_from(r);
                }
            }
        }
    }

    #[allow(clippy::too_many_lines)]
    fn judge_run(&mut self, run: &str, expected: &[ExpSegment], actual: &[Item]) {
        // Split the actual items at resets.
        type Seg = (Option<(String, String, u64)>, Vec<(u64, String, String)>);
        let mut segs: Vec<Seg> = vec![(None, Vec::new())];
        for item in actual {
            match item {
                Item::Event {
                    seq,
                    event_id,
                    event_type,
                } => segs.last_mut().expect("non-empty").1.push((
                    *seq,
                    event_id.clone(),
                    event_type.clone(),
                )),
                Item::Reset {
                    reason,
                    epoch,
                    as_of_seq,
                } => segs.push((
                    Some((reason.clone(), epoch.clone(), *as_of_seq)),
                    Vec::new(),
                )),
            }
        }
        let fmt_reset = |r: &(String, String, u64)| format!("{} epoch {} as_of {}", r.0, r.1, r.2);
        if segs.len() != expected.len() {
            let want: Vec<String> = expected
                .iter()
                .filter_map(|s| s.reset.as_ref().map(fmt_reset))
                .collect();
            let got: Vec<String> = segs
                .iter()
                .filter_map(|s| s.0.as_ref().map(fmt_reset))
                .collect();
            let message = format!(
                "run {run}: expected {} reset(s) [{}]; the application saw {} [{}]",
                want.len(),
                want.join("; "),
                got.len(),
                got.join("; ")
            );
            if segs.len() < expected.len() {
                self.absent(reqs::RESET, "delivered", message);
            } else {
                self.violate(reqs::RESET, "delivered", message);
            }
            // Compare the events as if there were no resets beyond the expected ones.
            if segs.len() > expected.len() {
                let extra: Vec<_> = segs.drain(expected.len()..).flat_map(|s| s.1).collect();
                segs.last_mut().expect("non-empty").1.extend(extra);
            }
        }
        for (i, exp) in expected.iter().enumerate() {
            let Some((got_reset, got)) = segs.get(i) else {
                let required: Vec<u64> = exp
                    .events
                    .iter()
                    .filter(|e| !e.optional)
                    .map(|e| e.seq)
                    .collect();
                if !required.is_empty() {
                    self.absent(
                        reqs::COMPLETE,
                        "delivered",
                        format!(
                            "run {run}: seqs {} of epoch {} were never delivered",
                            ranges(&required),
                            exp.epoch
                        ),
                    );
                }
                continue;
            };
            if let (Some(want), Some(have)) = (&exp.reset, got_reset)
                && (want.0 != have.0 || want.1 != have.1 || want.2 != have.2)
            {
                self.violate(
                    reqs::RESET,
                    "delivered",
                    format!(
                        "run {run}: expected reset {}; the application saw reset {}",
                        fmt_reset(want),
                        fmt_reset(have)
                    ),
                );
            }
            self.judge_segment(run, exp, got);
        }
    }

    /// Judges the events the application saw in one segment of a run (between
    /// resets) against the expected segment: duplicates, order, missing and unexpected
    /// seqs, and that each event is the one of the expected epoch's log.
    fn judge_segment(&mut self, run: &str, exp: &ExpSegment, got: &[(u64, String, String)]) {
        // Duplicates.
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for (seq, _, _) in got {
            *counts.entry(*seq).or_default() += 1;
        }
        let dups: Vec<String> = counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(s, n)| format!("{s} ({n} times)"))
            .collect();
        if !dups.is_empty() {
            self.violate(
                reqs::DEDUP,
                "delivered",
                format!(
                    "run {run}: events delivered more than once: seq {}",
                    dups.join(", ")
                ),
            );
        }
        // Order.
        let mut disorder = Vec::new();
        for w in got.windows(2) {
            if w[1].0 < w[0].0 {
                disorder.push(format!("{} after {}", w[1].0, w[0].0));
            }
        }
        if !disorder.is_empty() {
            disorder.truncate(5);
            self.violate(
                reqs::ORDER,
                "delivered",
                format!(
                    "run {run}: events delivered out of seq order: seq {}",
                    disorder.join(", ")
                ),
            );
        }
        // Missing and unexpected.
        let missing: Vec<u64> = exp
            .events
            .iter()
            .filter(|e| !e.optional && !counts.contains_key(&e.seq))
            .map(|e| e.seq)
            .collect();
        if !missing.is_empty() {
            self.absent(
                reqs::COMPLETE,
                "delivered",
                format!(
                    "run {run}: seqs {} were never delivered (delivered: {})",
                    ranges(&missing),
                    ranges(&counts.keys().copied().collect::<Vec<_>>())
                ),
            );
        }
        let unexpected: Vec<u64> = counts
            .keys()
            .copied()
            .filter(|s| !exp.events.iter().any(|e| e.seq == *s))
            .collect();
        if !unexpected.is_empty() {
            let req = if exp.reset.is_some() {
                reqs::RESET
            } else {
                reqs::COMPLETE
            };
            self.violate(
                req,
                "delivered",
                format!(
                    "run {run}: seqs {} were delivered but not expected here{}",
                    ranges(&unexpected),
                    if exp.reset.is_some() {
                        " (they are covered by the reset's snapshot)"
                    } else {
                        ""
                    }
                ),
            );
        }
        // Content: the event delivered is the one of the log (right epoch).
        let mut wrong = Vec::new();
        for (seq, id, ty) in got {
            if let Some(ev) = self.logs.event(run, &exp.epoch, *seq)
                && (ev.event_id.as_str() != id || ev.event_type() != ty)
            {
                wrong.push(format!(
                    "seq {seq} is {id} ({ty}), expected {} ({})",
                    ev.event_id,
                    ev.event_type()
                ));
            }
        }
        if !wrong.is_empty() {
            wrong.truncate(3);
            self.violate(
                reqs::RESET,
                "delivered",
                format!(
                    "run {run}: delivered events differ from epoch {}'s log: {}",
                    exp.epoch,
                    wrong.join("; ")
                ),
            );
        }
    }
}
