//! The transcript format is stable: snapshots of the wire part of a few fixtures, with
//! timestamps, ports and measured delays redacted.

use runwire_mock::{Direction, Transcript};

use crate::{client::Bugs, harness};

/// The text form of the wire and mock entries (application lines interleave with the
/// wire nondeterministically, so they are left out), redacted.
fn wire_text(t: &Transcript) -> String {
    let mut out = String::new();
    for e in &t.entries {
        if e.dir == Direction::App {
            continue;
        }
        let line = e.render();
        // "[   12 ms] " -> "[t] "
        let line = match line.find("] ") {
            Some(i) if line.starts_with('[') => format!("[t]{}", &line[i + 1..]),
            _ => line,
        };
        let mut line = redact_after(&line, "127.0.0.1:", |c| c.is_ascii_digit(), "PORT");
        // Measured times: delays, start-up, overheads, margins and lateness.
        for marker in [
            "reconnect delay ",
            "first connection ",
            "connect overhead ",
            "ran late by ",
            " ms (median), ",
            " ms (99th percentile), ",
            "nor in the ",
            "it came ",
        ] {
            line = redact_after(&line, marker, |c| c.is_ascii_digit() || c == '.', "D");
        }
        // The measured part of a timing violation says which lateness sources were
        // nonzero: redact it whole.
        if let Some(i) = line.find(" (missed by ")
            && let Some(j) = line[i..].find(')')
        {
            line = format!(
                "{} (missed by D; lateness D){}",
                &line[..i],
                &line[i + j + 1..]
            );
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn redact_after(s: &str, marker: &str, keep: impl Fn(char) -> bool, with: &str) -> String {
    match s.find(marker) {
        Some(i) => {
            let start = i + marker.len();
            let rest = &s[start..];
            let end = rest.find(|c: char| !keep(c)).unwrap_or(rest.len());
            format!("{}{with}{}", &s[..start], &rest[end..])
        }
        None => s.to_owned(),
    }
}

#[tokio::test]
async fn happy_path_transcript() {
    let r = harness::play(harness::load("happy-path"), Bugs::default()).await;
    assert!(r.verdict.passed(), "{}", r.verdict.render());
    insta::assert_snapshot!(wire_text(&r.transcript));
}

#[tokio::test]
async fn gap_resubscribe_transcript() {
    let r = harness::play(harness::load("gap-resubscribe"), Bugs::default()).await;
    assert!(r.verdict.passed(), "{}", r.verdict.render());
    insta::assert_snapshot!(wire_text(&r.transcript));
}

#[tokio::test]
async fn drop_mid_batch_transcript() {
    let r = harness::play(harness::load("drop-mid-batch"), Bugs::default()).await;
    assert!(r.verdict.passed(), "{}", r.verdict.render());
    insta::assert_snapshot!(wire_text(&r.transcript));
}

/// A failing run: the violation is in the transcript where it was detected.
#[tokio::test]
async fn violation_transcript() {
    let b = Bugs {
        no_pong: true,
        ..Bugs::default()
    };
    let r = harness::play(harness::load("ping-pong"), b).await;
    assert!(!r.verdict.passed());
    insta::assert_snapshot!(wire_text(&r.transcript));
    let verdict =
        ["missed by ", "meanwhile ", "nor in the "]
            .iter()
            .fold(r.verdict.render(), |v, m| {
                v.lines()
                    .map(|l| redact_after(l, m, |c| c.is_ascii_digit() || c == '.', "D"))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
    insta::assert_snapshot!("violation_verdict", verdict);
}

/// The JSON form of an entry: field names and tags are part of the contract.
#[test]
fn entry_json_shape() {
    use runwire_mock::{Entry, What};
    let e = Entry {
        t_ms: 12,
        conn: 1,
        dir: Direction::Out,
        what: What::Close {
            code: Some(4200),
            reason: "server_shutdown".into(),
        },
    };
    assert_eq!(
        serde_json::to_string(&e).expect("json"),
        r#"{"t_ms":12,"conn":1,"dir":"out","kind":"close","code":4200,"reason":"server_shutdown"}"#
    );
    assert_eq!(
        e.render(),
        r#"[    12 ms] #1  -> close 4200 "server_shutdown""#
    );
}
