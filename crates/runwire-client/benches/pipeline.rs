//! Receive-pipeline benchmark: decode + de-duplication + ordering, in process, one
//! core. Run: `cargo bench -p runwire-client --bench pipeline`.
//!
//! Feeds pre-encoded text frames of ~250-byte `run.progress` events (the event the
//! figures in `docs/performance.md` use) through
//! [`runwire_client::decode_text_frame`] and [`runwire_client::Tracker`], as the
//! connection task does, and prints events/s for single-event frames and for
//! batches, with two references measured in the same run on the same bytes: the
//! protocol crate's typed decode alone (no policy), and parsing into a
//! `serde_json::Value` (what a generic JSON client does before it looks at a frame);
//! `ratio` is pipeline speed over the `Value` baseline.

use std::{hint::black_box, time::Instant};

use runwire_client::{Cursor, Decoded, OrderingConfig, Tracker, decode_text_frame};
use runwire_protocol::{Epoch, RunId, Subscribed};

const EVENTS: u64 = 2_000_000;

fn event_json(run: &str, seq: u64) -> String {
    format!(
        r#"{{"event_id":"01J9Z8Q4V7M2K3N5P6R8S9T0{seq:08}","run_id":"{run}","seq":{seq},"type":"run.progress","time":"2026-11-22T10:00:00.123Z","data":{{"percent":{p}.5,"step":"compiling crate runwire-client","current":{seq},"total":2000000,"tool":"cargo"}}}}"#,
        p = seq % 100
    )
}

fn frames(batch: usize, dup_every: u64) -> (Vec<String>, u64) {
    let mut out = Vec::new();
    let mut bytes = 0;
    let mut seq = 1;
    while seq <= EVENTS {
        let n = (batch as u64).min(EVENTS - seq + 1);
        let evs: Vec<String> = (seq..seq + n)
            .flat_map(|s| {
                // Every `dup_every`-th event is sent twice (replay/live overlap).
                let dup = dup_every > 0 && s % dup_every == 0;
                let e = event_json("run-bench", s);
                if dup { vec![e.clone(), e] } else { vec![e] }
            })
            .collect();
        let f = if batch == 1 && evs.len() == 1 {
            format!(r#"{{"type":"event","event":{}}}"#, evs[0])
        } else {
            format!(r#"{{"type":"batch","events":[{}]}}"#, evs.join(","))
        };
        bytes += f.len() as u64;
        out.push(f);
        seq += n;
    }
    (out, bytes)
}

/// CPU time of this thread in seconds (`/proc/thread-self/schedstat`), so that the
/// rate is per CPU-second of one core even on a loaded machine; wall time when the
/// file is missing.
fn cpu_now() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(|ns| ns as f64 / 1e9)
        .unwrap_or_else(|| {
            static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
            START.get_or_init(Instant::now).elapsed().as_secs_f64()
        })
}

fn pipeline(frames: &[String]) -> (u64, f64) {
    let run = RunId::new("run-bench").expect("run id");
    let mut tracker = Tracker::new(OrderingConfig::default());
    tracker.track(run.clone(), Cursor::default());
    tracker.on_subscribed(&Subscribed {
        run_id: run,
        epoch: Epoch::new("e1").expect("epoch"),
        after_seq: 0,
        head_seq: 0,
    });
    let mut buf = Vec::with_capacity(512);
    let mut delivered = 0u64;
    let start = cpu_now();
    for f in frames {
        match decode_text_frame(f, 16 << 20, &mut buf) {
            Ok(Decoded::Events) => {
                for e in buf.drain(..) {
                    tracker.push(e, &mut |e| {
                        delivered += 1;
                        black_box(e);
                    });
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    (delivered, cpu_now() - start)
}

/// The protocol crate's typed decode alone (`serde_json` into `EventFrame` /
/// `BatchFrame`), without de-duplication or ordering: the floor for the pipeline.
fn typed_only(frames: &[String]) -> f64 {
    let start = cpu_now();
    for f in frames {
        if f.starts_with(r#"{"type":"event""#) {
            let v: runwire_protocol::EventFrame = serde_json::from_str(f).expect("event");
            black_box(v);
        } else {
            let v: runwire_protocol::BatchFrame = serde_json::from_str(f).expect("batch");
            black_box(v);
        }
    }
    cpu_now() - start
}

fn baseline(frames: &[String]) -> f64 {
    let start = cpu_now();
    for f in frames {
        let v: serde_json::Value = serde_json::from_str(f).expect("json");
        black_box(v);
    }
    cpu_now() - start
}

fn main() {
    let skip_baseline = std::env::args().any(|a| a == "--no-baseline");
    println!("runwire-client receive pipeline: decode + de-dup + ordering, one core");
    println!("(rates per CPU-second of the benchmark thread; {EVENTS} events per row)");
    println!(
        "{:<30} {:>10} {:>8} {:>14} {:>15} {:>7}",
        "frames", "events/s", "MB/s", "typed-only ev/s", "Value ev/s", "ratio"
    );
    for (label, batch, dup) in [
        ("event frames", 1usize, 0u64),
        ("event frames, 1% duplicates", 1, 100),
        ("batches of 50", 50, 0),
        ("batches of 500", 500, 0),
    ] {
        let (fs, bytes) = frames(batch, dup);
        // Warm up once, then measure the best of three.
        let _ = pipeline(&fs[..fs.len() / 10]);
        let mut best = f64::MAX;
        let mut delivered = 0;
        for _ in 0..3 {
            let (d, t) = pipeline(&fs);
            delivered = d;
            best = best.min(t);
        }
        assert_eq!(delivered, EVENTS, "every event delivered exactly once");
        let mut base = f64::MAX;
        let mut typed = f64::MAX;
        for _ in 0..if skip_baseline { 0 } else { 3 } {
            base = base.min(baseline(&fs));
            typed = typed.min(typed_only(&fs));
        }
        let eps = EVENTS as f64 / best;
        let (typed_eps, base_eps, ratio) = if skip_baseline {
            ("-".to_owned(), "-".to_owned(), "-".to_owned())
        } else {
            (
                format!("{:.0}", EVENTS as f64 / typed),
                format!("{:.0}", EVENTS as f64 / base),
                format!("{:.2}x", base / best),
            )
        };
        println!(
            "{label:<30} {eps:>10.0} {:>8.1} {typed_eps:>14} {base_eps:>15} {ratio:>7}",
            bytes as f64 / best / 1e6,
        );
    }
}
