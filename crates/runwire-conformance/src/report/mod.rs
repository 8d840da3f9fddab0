//! Report writers: console (progress line and summary table), JUnit XML, JSON
//! (`schema/tools/conformance-report.schema.json`) and a self-contained HTML page.

mod html;

use std::{collections::BTreeMap, fmt::Write as _};

pub use html::html;

use crate::model::{Calibration, Grade, Level, RunReport, ScenarioResult};

/// One progress line for a finished scenario (or a rerun of one).
pub fn progress_line(r: &ScenarioResult) -> String {
    let mark = match r.grade {
        Grade::Pass => "pass",
        Grade::Fail => match r.effective_level() {
            Level::Must => "FAIL",
            Level::Should => "warn",
            Level::May => "note",
        },
        Grade::NotImplemented => "n/i ",
        Grade::ExpectedFailure => "xfail",
        Grade::UnexpectedPass => "XPASS",
        Grade::Inconclusive => "inc?",
    };
    let attempt = if r.attempts.is_empty() {
        String::new()
    } else {
        format!(
            "  (attempt {}, alone, time scale {})",
            r.attempts.len() + 1,
            r.time_scale
        )
    };
    format!("{mark:<5} {:>6} ms  {}{attempt}", r.duration_ms, r.id)
}

/// One line describing the calibration: what was measured and the scale chosen.
pub fn calibration_line(c: &Calibration) -> String {
    let mut s = format!(
        "calibration: timer lateness p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        c.timer_lateness.p50_ms, c.timer_lateness.p99_ms, c.timer_lateness.max_ms
    );
    if let Some(a) = c.adapter_startup_ms {
        let _ = write!(s, "; adapter start-up {a:.0} ms");
    }
    let _ = write!(
        s,
        "; time scale {} (server suite), {} (client suite){}",
        c.time_scale,
        c.client_time_scale,
        if c.auto {
            format!(", chosen by --time-scale auto: {}", c.reason)
        } else {
            format!(" ({})", c.reason)
        }
    );
    s
}

/// The summary: a table per suite and area, then every failure with its message.
pub fn summary(report: &RunReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s);
    for t in &report.targets {
        let _ = writeln!(s, "{} suite: {}", t.suite.as_str(), t.description);
    }
    if let Some(cal) = &report.calibration {
        let _ = writeln!(s, "{}", calibration_line(cal));
    }
    area_table(&mut s, report);
    failures(&mut s, report);
    inconclusive(&mut s, report);
    decided_on_rerun(&mut s, report);
    not_implemented(&mut s, report);
    stale_expected_failures(&mut s, report);
    durations(&mut s, report);
    totals(&mut s, report);
    s
}

/// The count of each grade per suite and area, and for the whole run.
fn area_table(s: &mut String, report: &RunReport) {
    let mut areas: BTreeMap<(String, String), [u32; 7]> = BTreeMap::new();
    for r in &report.results {
        let e = areas
            .entry((r.suite.as_str().to_owned(), r.area.clone()))
            .or_default();
        e[0] += 1;
        match r.grade {
            Grade::Pass | Grade::UnexpectedPass => e[1] += 1,
            Grade::Fail if r.effective_level() == Level::Must => e[2] += 1,
            Grade::Fail => e[3] += 1,
            Grade::NotImplemented => e[4] += 1,
            Grade::ExpectedFailure => e[5] += 1,
            Grade::Inconclusive => e[6] += 1,
        }
    }
    let _ = writeln!(
        s,
        "\n{:<7} {:<16} {:>5} {:>5} {:>9} {:>11} {:>8} {:>6} {:>6}",
        "suite", "area", "total", "pass", "fail MUST", "warn SHOULD", "not impl", "xfail", "incon"
    );
    for ((suite, area), c) in &areas {
        let _ = writeln!(
            s,
            "{suite:<7} {area:<16} {:>5} {:>5} {:>9} {:>11} {:>8} {:>6} {:>6}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6]
        );
    }
    let c = &report.counts;
    let _ = writeln!(
        s,
        "{:<7} {:<16} {:>5} {:>5} {:>9} {:>11} {:>8} {:>6} {:>6}",
        "all",
        "",
        c.total,
        c.pass + c.unexpected_pass,
        c.fail_must,
        c.fail_should + c.fail_may,
        c.not_implemented,
        c.expected_failure,
        c.inconclusive
    );
}

/// Every failure, MUST first, with its message and the flags that replay it.
fn failures(s: &mut String, report: &RunReport) {
    let mut failures: Vec<&ScenarioResult> = report
        .results
        .iter()
        .filter(|r| r.grade == Grade::Fail)
        .collect();
    failures.sort_by_key(|r| (r.effective_level(), r.id.clone()));
    if !failures.is_empty() {
        let _ = writeln!(s, "\nFailures:");
        for r in failures {
            let level = if r.effective_level() != r.level {
                format!(
                    "{} scenario, {} violated",
                    r.level.as_str(),
                    r.effective_level().as_str()
                )
            } else {
                r.level.as_str().to_owned()
            };
            let _ = writeln!(
                s,
                "  {} [{level}] {}\n    {}{}\n    replay: --seed {} --tags '@{}'",
                r.id,
                r.name,
                r.message.as_deref().unwrap_or("failed"),
                attempts_note(r),
                report.seed,
                r.requirements.first().map_or("", String::as_str)
            );
        }
    }
}

/// Every inconclusive scenario, with what each attempt missed.
fn inconclusive(s: &mut String, report: &RunReport) {
    let inconclusive: Vec<&ScenarioResult> = report
        .results
        .iter()
        .filter(|r| r.grade == Grade::Inconclusive)
        .collect();
    if !inconclusive.is_empty() {
        let _ = writeln!(
            s,
            "\nInconclusive (every attempt missed a timing bound by less than the kit's own measured lateness; \
             neither pass nor fail: rerun on a quieter machine or with a larger --time-scale):"
        );
        for r in inconclusive {
            let _ = writeln!(
                s,
                "  {} [{}] {}\n    {}{}",
                r.id,
                r.level.as_str(),
                r.name,
                r.message.as_deref().unwrap_or(""),
                attempts_note(r)
            );
        }
    }
}

/// Every scenario decided on a rerun, with its first attempt.
fn decided_on_rerun(s: &mut String, report: &RunReport) {
    let decided: Vec<&ScenarioResult> = report
        .results
        .iter()
        .filter(|r| !r.attempts.is_empty() && r.grade != Grade::Inconclusive)
        .collect();
    if !decided.is_empty() {
        let _ = writeln!(
            s,
            "\nDecided on a rerun (the first attempt was inconclusive):"
        );
        for r in decided {
            let _ = writeln!(
                s,
                "  {}: {} at attempt {} (time scale {}); first attempt: {}",
                r.id,
                r.grade.as_str(),
                r.attempts.len() + 1,
                r.time_scale,
                r.attempts
                    .first()
                    .and_then(|a| a.message.as_deref())
                    .unwrap_or("")
            );
        }
    }
}

/// Every scenario that was not implemented, with why.
fn not_implemented(s: &mut String, report: &RunReport) {
    let ni: Vec<&ScenarioResult> = report
        .results
        .iter()
        .filter(|r| r.grade == Grade::NotImplemented)
        .collect();
    if !ni.is_empty() {
        let _ = writeln!(s, "\nNot implemented:");
        for r in ni {
            let _ = writeln!(s, "  {}: {}", r.id, r.message.as_deref().unwrap_or(""));
        }
    }
}

/// A warning per stale expected-failure entry.
fn stale_expected_failures(s: &mut String, report: &RunReport) {
    for st in &report.stale_expected_failures {
        let _ = writeln!(
            s,
            "warning: stale expected-failure entry {:?} ({}): {}",
            st.pattern,
            if st.why == "passed" {
                "it passes now; remove it"
            } else {
                "it matches no scenario that ran"
            },
            st.reason
        );
    }
}

/// The distribution of scenario durations.
fn durations(s: &mut String, report: &RunReport) {
    let mut d: Vec<u64> = report.results.iter().map(|r| r.duration_ms).collect();
    d.sort_unstable();
    if !d.is_empty() {
        let p = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize];
        let _ = writeln!(
            s,
            "\nscenario durations: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms, sum {:.1} s",
            p(0.5),
            p(0.9),
            p(0.99),
            d[d.len() - 1],
            d.iter().sum::<u64>() as f64 / 1000.0
        );
    }
}

/// The closing count line and the result.
fn totals(s: &mut String, report: &RunReport) {
    let c = &report.counts;
    let _ = writeln!(
        s,
        "\n{} scenarios: {} passed, {} failed ({} MUST, {} SHOULD, {} MAY), {} not implemented, {} expected failures, {} inconclusive ({} rerun) in {:.1} s (seed {}, time scale {})",
        c.total,
        c.pass + c.unexpected_pass,
        c.fail,
        c.fail_must,
        c.fail_should,
        c.fail_may,
        c.not_implemented,
        c.expected_failure,
        c.inconclusive,
        c.rerun,
        report.duration_ms as f64 / 1000.0,
        report.seed,
        report.time_scale
    );
    let _ = writeln!(
        s,
        "{}",
        match (report.passed, c.inconclusive) {
            (false, _) => "RESULT: FAIL".to_owned(),
            (true, 0) => "RESULT: PASS".to_owned(),
            (true, n) =>
                format!("RESULT: PASS ({n} inconclusive: not judged on this machine, see above)"),
        }
    );
}

/// ` (attempt N of M; earlier: ...)` for a rerun result, else empty.
fn attempts_note(r: &ScenarioResult) -> String {
    if r.attempts.is_empty() {
        return String::new();
    }
    let earlier: Vec<String> = r
        .attempts
        .iter()
        .map(|a| {
            format!(
                "{} at time scale {}{}",
                a.grade.as_str(),
                a.time_scale,
                a.lateness
                    .map(|l| format!(" (timer lateness max {:.0} ms)", l.max_ms))
                    .unwrap_or_default()
            )
        })
        .collect();
    format!(
        "\n    attempt {} (alone, time scale {}); earlier attempts: {}",
        r.attempts.len() + 1,
        r.time_scale,
        earlier.join("; ")
    )
}

/// Escapes XML text.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => {}
            c => o.push(c),
        }
    }
    o
}

/// JUnit XML: one test suite per feature, one test case per scenario. MUST failures
/// are `<failure>`, SHOULD/MAY failures are `<failure type="warning">` only with
/// `strict`, otherwise reported in `<system-out>`; not implemented and expected
/// failures are `<skipped>` with the reason.
pub fn junit(report: &RunReport) -> String {
    let mut by_feature: BTreeMap<(String, String), Vec<&ScenarioResult>> = BTreeMap::new();
    for r in &report.results {
        by_feature
            .entry((r.suite.as_str().to_owned(), r.feature.clone()))
            .or_default()
            .push(r);
    }
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"runwire conform\" tests=\"{}\" failures=\"{}\" time=\"{:.3}\">",
        report.counts.total,
        report
            .results
            .iter()
            .filter(|r| RunReport::is_failing(r, report.strict))
            .count(),
        report.duration_ms as f64 / 1000.0
    );
    for ((suite, feature), rs) in by_feature {
        let fails = rs
            .iter()
            .filter(|r| RunReport::is_failing(r, report.strict))
            .count();
        let skipped = rs
            .iter()
            .filter(|r| {
                matches!(
                    r.grade,
                    Grade::NotImplemented | Grade::ExpectedFailure | Grade::Inconclusive
                )
            })
            .count();
        let time: u64 = rs.iter().map(|r| r.duration_ms).sum();
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}: {}\" tests=\"{}\" failures=\"{fails}\" skipped=\"{skipped}\" time=\"{:.3}\">",
            xml_escape(&suite),
            xml_escape(&feature),
            rs.len(),
            time as f64 / 1000.0
        );
        for r in rs {
            let _ = write!(
                s,
                "    <testcase classname=\"{}\" name=\"{} [{}] {}\" time=\"{:.3}\">",
                xml_escape(&format!("{suite}.{}", r.area)),
                xml_escape(&r.id),
                r.level.as_str(),
                xml_escape(&r.requirements.join(" ")),
                r.duration_ms as f64 / 1000.0
            );
            let msg = r.message.as_deref().unwrap_or("");
            match r.grade {
                Grade::Fail if RunReport::is_failing(r, report.strict) => {
                    let _ = write!(
                        s,
                        "<failure message=\"{}\" type=\"{}\">{}{}</failure>",
                        xml_escape(msg),
                        r.effective_level().as_str(),
                        xml_escape(&attempts_note(r)),
                        xml_escape(&transcript_text(r))
                    );
                }
                Grade::Fail => {
                    let _ = write!(
                        s,
                        "<system-out>{} warning: {}</system-out>",
                        r.effective_level().as_str(),
                        xml_escape(msg)
                    );
                }
                Grade::Inconclusive => {
                    let _ = write!(
                        s,
                        "<skipped message=\"inconclusive: {}\"/><system-out>{}{}</system-out>",
                        xml_escape(msg),
                        xml_escape(&attempts_note(r)),
                        xml_escape(&transcript_text(r))
                    );
                }
                Grade::NotImplemented => {
                    let _ = write!(s, "<skipped message=\"{}\"/>", xml_escape(msg));
                }
                Grade::ExpectedFailure => {
                    let _ = write!(
                        s,
                        "<skipped message=\"expected failure: {}\"/>",
                        xml_escape(r.expected_failure_reason.as_deref().unwrap_or(""))
                    );
                }
                _ => {}
            }
            let _ = writeln!(s, "</testcase>");
        }
        let _ = writeln!(s, "  </testsuite>");
    }
    s.push_str("</testsuites>\n");
    s
}

/// The transcript as text lines.
pub fn transcript_text(r: &ScenarioResult) -> String {
    let mut s = String::new();
    for e in &r.transcript {
        let arrow = match e.dir.as_str() {
            "out" => "->",
            "in" => "<-",
            _ => "--",
        };
        let _ = writeln!(s, "[{:>6} ms] {:<9} {arrow} {}", e.t_ms, e.actor, e.text);
    }
    s
}

/// The JSON report.
pub fn json(report: &RunReport) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default()
}
