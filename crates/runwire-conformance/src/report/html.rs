//! The self-contained HTML report: a summary, an area × scenario matrix, then every
//! scenario (failures first) with its steps and its wire transcript as a timeline.

use std::{collections::BTreeMap, fmt::Write as _};

use super::xml_escape as esc;
use crate::model::{Grade, Level, RunReport, ScenarioResult, StepStatus};

const CSS: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:20px}
header .meta{opacity:.8;font-size:13px}
main{padding:20px 28px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.pass{background:#d8f3dc;color:#1b5e20}.fail{background:#ffd6d6;color:#8b0000}
.warn{background:#fff1c1;color:#7a5200}.ni{background:#e3e7ee;color:#444}
.xfail{background:#e8dcff;color:#4a2b8a}.inc{background:#d9ecff;color:#0d3c6e}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:18px}
.card{background:#fff;border-radius:8px;padding:10px 16px;box-shadow:0 1px 2px #0001;min-width:110px}
.card b{display:block;font-size:22px}
table.matrix{border-collapse:collapse;background:#fff;margin-bottom:24px}
.matrix td,.matrix th{border:1px solid #e1e4ea;padding:4px 8px;text-align:left;vertical-align:top}
.cell{display:inline-block;width:14px;height:14px;margin:1px;border-radius:3px}
.cell.pass{background:#4caf50}.cell.fail{background:#e53935}.cell.warn{background:#f9a825}
.cell.ni{background:#9e9e9e}.cell.xfail{background:#7e57c2}.cell.inc{background:#42a5f5}
details.sc{background:#fff;border-radius:8px;margin:8px 0;box-shadow:0 1px 2px #0001}
details.sc>summary{padding:8px 12px;cursor:pointer}
details.sc .body{padding:4px 16px 14px}
.msg{background:#fff4f4;border-left:3px solid #e53935;padding:6px 10px;margin:6px 0;white-space:pre-wrap}
.steps li{margin:2px 0}.steps .failed{color:#b00020;font-weight:600}.steps .skipped{color:#999}
.tl{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;border-collapse:collapse;width:100%}
.tl td{padding:1px 6px;vertical-align:top;border-bottom:1px solid #f0f0f0}
.tl .t{color:#888;text-align:right;white-space:nowrap}.tl .a{color:#555;white-space:nowrap}
.tl .out td.x{color:#0d47a1}.tl .in td.x{color:#1b5e20}.tl .note td.x{color:#777;font-style:italic}
.tl .viol td.x{color:#b00020;font-weight:600}
.tl td.x{word-break:break-all}
.tags{color:#666;font-size:12px}
"#;

fn class(r: &ScenarioResult) -> &'static str {
    match r.grade {
        Grade::Pass | Grade::UnexpectedPass => "pass",
        Grade::Fail if r.effective_level() == Level::Must => "fail",
        Grade::Fail => "warn",
        Grade::NotImplemented => "ni",
        Grade::ExpectedFailure => "xfail",
        Grade::Inconclusive => "inc",
    }
}

fn label(r: &ScenarioResult) -> &'static str {
    match r.grade {
        Grade::Pass => "pass",
        Grade::UnexpectedPass => "pass (listed as expected failure)",
        Grade::Fail if r.effective_level() == Level::Must => "FAIL",
        Grade::Fail => "warning",
        Grade::NotImplemented => "not implemented",
        Grade::ExpectedFailure => "expected failure",
        Grade::Inconclusive => "inconclusive",
    }
}

fn anchor(id: &str) -> String {
    id.replace('/', "--")
}

/// Renders the report as one HTML page (no external resources).
pub fn html(report: &RunReport) -> String {
    let mut s = String::new();
    header(&mut s, report);
    matrix(&mut s, report);
    // Scenarios, failures first.
    let mut order: Vec<&ScenarioResult> = report.results.iter().collect();
    order.sort_by_key(|r| {
        let rank = match class(r) {
            "fail" => 0,
            "warn" => 1,
            "inc" => 2,
            "xfail" => 3,
            "ni" => 4,
            _ => 5,
        };
        (rank, r.id.clone())
    });
    s.push_str("<h2>Scenarios <button onclick=\"document.querySelectorAll('details.sc').forEach(d=>d.open=true)\">expand all</button> <button onclick=\"document.querySelectorAll('details.sc').forEach(d=>d.open=false)\">collapse all</button></h2>");
    for r in order {
        scenario(&mut s, r);
    }
    // Opening a scenario from the matrix (or a link with #id) expands it.
    s.push_str("<script>function o(){var e=location.hash&&document.getElementById(location.hash.slice(1));if(e){e.open=true;e.scrollIntoView();}}addEventListener('hashchange',o);o();</script>");
    s.push_str("</main></body></html>\n");
    s
}

/// The page head, the run's metadata and the count cards.
fn header(s: &mut String, report: &RunReport) {
    let c = &report.counts;
    let _ = write!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Runwire conformance report</title><style>{CSS}</style></head><body>"
    );
    let _ = write!(
        s,
        "<header><h1>Runwire conformance report <span class=\"badge {}\">{}</span></h1><div class=\"meta\">runwire {} · seed {} · time scale {} · {:.1} s",
        if report.passed { "pass" } else { "fail" },
        if report.passed { "PASS" } else { "FAIL" },
        esc(&report.tool_version),
        report.seed,
        report.time_scale,
        report.duration_ms as f64 / 1000.0
    );
    for t in &report.targets {
        let _ = write!(s, "<br>{} suite: {}", t.suite.as_str(), esc(&t.description));
    }
    if let Some(cal) = &report.calibration {
        let _ = write!(s, "<br>{}", esc(&super::calibration_line(cal)));
    }
    s.push_str("</div></header><main>");
    let _ = write!(
        s,
        "<div class=\"cards\"><div class=\"card\"><b>{}</b>scenarios</div><div class=\"card\"><b>{}</b>passed</div><div class=\"card\"><b>{}</b>MUST failures</div><div class=\"card\"><b>{}</b>SHOULD/MAY warnings</div><div class=\"card\"><b>{}</b>not implemented</div><div class=\"card\"><b>{}</b>expected failures</div><div class=\"card\"><b>{}</b>inconclusive</div><div class=\"card\"><b>{}</b>rerun</div></div>",
        c.total,
        c.pass + c.unexpected_pass,
        c.fail_must,
        c.fail_should + c.fail_may,
        c.not_implemented,
        c.expected_failure,
        c.inconclusive,
        c.rerun
    );
}

/// The matrix of areas × scenarios, and the stale expected-failure entries.
fn matrix(s: &mut String, report: &RunReport) {
    // Matrix: area × scenarios.
    let mut areas: BTreeMap<(String, String), Vec<&ScenarioResult>> = BTreeMap::new();
    for r in &report.results {
        areas
            .entry((r.suite.as_str().to_owned(), r.area.clone()))
            .or_default()
            .push(r);
    }
    s.push_str("<h2>Areas × scenarios</h2><table class=\"matrix\"><tr><th>suite</th><th>area</th><th>scenarios</th><th>pass</th></tr>");
    for ((suite, area), rs) in &areas {
        let pass = rs
            .iter()
            .filter(|r| matches!(r.grade, Grade::Pass | Grade::UnexpectedPass))
            .count();
        let _ = write!(s, "<tr><td>{}</td><td>{}</td><td>", esc(suite), esc(area));
        for r in rs {
            let _ = write!(
                s,
                "<a href=\"#{}\" title=\"{} — {}\"><span class=\"cell {}\"></span></a>",
                anchor(&r.id),
                esc(&r.id),
                label(r),
                class(r)
            );
        }
        let _ = write!(s, "</td><td>{pass}/{}</td></tr>", rs.len());
    }
    s.push_str("</table>");
    for t in &report.stale_expected_failures {
        let _ = write!(
            s,
            "<p class=\"msg\">Stale expected-failure entry <code>{}</code> ({}): {}</p>",
            esc(&t.pattern),
            esc(&t.why),
            esc(&t.reason)
        );
    }
}

/// One scenario: its grade, message, attempts, steps and transcript.
fn scenario(s: &mut String, r: &ScenarioResult) {
    let open = if matches!(class(r), "fail" | "warn" | "inc") {
        " open"
    } else {
        ""
    };
    let _ = write!(
        s,
        "<details class=\"sc\" id=\"{}\"{open}><summary><span class=\"badge {}\">{}</span> <b>{}</b> — {} <span class=\"tags\">[{}] {} · {} ms</span></summary><div class=\"body\">",
        anchor(&r.id),
        class(r),
        label(r),
        esc(&r.id),
        esc(&r.name),
        r.level.as_str(),
        esc(&r.requirements.join(" ")),
        r.duration_ms
    );
    if let Some(m) = &r.message {
        let _ = write!(s, "<div class=\"msg\">{}</div>", esc(m));
    }
    if let Some(x) = &r.expected_failure_reason {
        let _ = write!(s, "<p>Expected failure: {}</p>", esc(x));
    }
    for (i, a) in r.attempts.iter().enumerate() {
        let _ = write!(
            s,
            "<p class=\"tags\">attempt {} ({}, time scale {}{}): {} — {}</p>",
            i + 1,
            a.grade.as_str(),
            a.time_scale,
            if a.alone { ", alone" } else { "" },
            a.lateness
                .map(|l| format!(
                    "timer lateness p99 {:.1} ms, max {:.1} ms",
                    l.p99_ms, l.max_ms
                ))
                .unwrap_or_default(),
            esc(a.message.as_deref().unwrap_or(""))
        );
    }
    if let Some(l) = &r.lateness {
        let _ = write!(
            s,
            "<div class=\"tags\">kit timer lateness during this attempt: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples) · time scale {}</div>",
            l.p50_ms, l.p99_ms, l.max_ms, l.samples, r.time_scale
        );
    }
    let _ = write!(
        s,
        "<div class=\"tags\">tags: {} · seed {}</div><ol class=\"steps\">",
        esc(&r
            .tags
            .iter()
            .map(|t| format!("@{t}"))
            .collect::<Vec<_>>()
            .join(" ")),
        r.seed
    );
    for st in &r.steps {
        let cls = match st.status {
            StepStatus::Passed => "passed",
            StepStatus::Failed | StepStatus::NotImplemented => "failed",
            StepStatus::Skipped => "skipped",
        };
        let _ = write!(
            s,
            "<li class=\"{cls}\">{} {} <span class=\"tags\">{} ms</span></li>",
            esc(&st.keyword),
            esc(&st.text),
            st.duration_ms
        );
    }
    s.push_str("</ol><table class=\"tl\">");
    for e in &r.transcript {
        let arrow = match e.dir.as_str() {
            "out" => "→",
            "in" => "←",
            _ => "·",
        };
        let cls = if e.text.contains("VIOLATION") || e.text.contains(" violated") {
            "viol"
        } else {
            e.dir.as_str()
        };
        let _ = write!(
            s,
            "<tr class=\"{}\"><td class=\"t\">{} ms</td><td class=\"a\">{} {arrow}</td><td class=\"x\">{}</td></tr>",
            esc(cls),
            e.t_ms,
            esc(&e.actor),
            esc(&e.text)
        );
    }
    s.push_str("</table></div></details>");
}
