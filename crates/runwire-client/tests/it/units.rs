//! The tracker and the chunk assembler on their own (no I/O).

use runwire_client::{ChunkAssembler, ChunkError, Cursor, OrderingConfig, Tracker};
use runwire_protocol::{
    ChunkEncoding, Event, OutputChunkData, Reset, ResetReason, RunSnapshot, Subscribed,
};

use crate::server::{epoch, event, run};

fn opened(tracker: &mut Tracker, r: &runwire_protocol::RunId, after: u64) {
    tracker.track(r.clone(), Cursor::default());
    tracker.on_subscribed(&Subscribed {
        run_id: r.clone(),
        epoch: epoch("e"),
        after_seq: after,
        head_seq: after,
    });
}

fn feed(tracker: &mut Tracker, evs: impl IntoIterator<Item = Event>) -> Vec<u64> {
    let mut out = Vec::new();
    for e in evs {
        tracker.push(e, &mut |e: Event| out.push(e.seq));
    }
    out
}

/// RW-ORDER-4/5/6: duplicates dropped, out-of-order buffered and released in order.
#[test]
fn rw_order_6_tracker_orders_and_dedups() {
    let r = run("r");
    let mut t = Tracker::new(OrderingConfig::default());
    opened(&mut t, &r, 0);
    let got = feed(&mut t, [2, 1, 1, 4, 3, 3, 2, 5].map(|s| event(&r, s, 9)));
    assert_eq!(got, vec![1, 2, 3, 4, 5]);
    let st = t.stats();
    assert_eq!(st.delivered, 5);
    assert_eq!(st.duplicates, 3);
    assert_eq!(t.cursor(&r).unwrap().seq, 5);
    assert_eq!(t.cursor(&r).unwrap().epoch, Some(epoch("e")));
}

/// RW-ORDER-3: a gap in one run does not hold back another run.
#[test]
fn rw_order_3_runs_are_independent() {
    let (a, b) = (run("a"), run("b"));
    let mut t = Tracker::new(OrderingConfig::default());
    opened(&mut t, &a, 0);
    opened(&mut t, &b, 0);
    let got = feed(
        &mut t,
        [
            event(&a, 2, 9),
            event(&b, 1, 9),
            event(&b, 2, 9),
            event(&a, 1, 9),
        ],
    );
    assert_eq!(got, vec![1, 2, 1, 2]);
    assert_eq!(t.cursor(&a).unwrap().seq, 2);
    assert_eq!(t.cursor(&b).unwrap().seq, 2);
}

/// RW-ORDER-5, RW-ORDER-7: an overflowing gap asks for a resubscribe at once, drops
/// the buffer, and nothing of the run is delivered until the new subscription opens.
#[test]
fn rw_order_7_resync_blocks_delivery_until_resubscribed() {
    let r = run("r");
    let mut t = Tracker::new(OrderingConfig {
        gap_timeout: std::time::Duration::from_secs(60),
        gap_buffer_events: 2,
    });
    opened(&mut t, &r, 0);
    assert_eq!(feed(&mut t, [event(&r, 1, 9)]), vec![1]);
    assert!(feed(&mut t, [3, 4, 5].map(|s| event(&r, s, 9))).is_empty());
    assert!(t.has_overflow());
    let due = t.take_resyncs(std::time::Instant::now());
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].1.seq, 1);
    // While resyncing, even the next expected seq is not delivered.
    assert!(feed(&mut t, [event(&r, 2, 9)]).is_empty());
    assert!(
        t.take_resyncs(std::time::Instant::now()).is_empty(),
        "one resync at a time"
    );
    t.on_subscribed(&Subscribed {
        run_id: r.clone(),
        epoch: epoch("e"),
        after_seq: 1,
        head_seq: 5,
    });
    assert_eq!(
        feed(&mut t, [2, 3, 4, 5].map(|s| event(&r, s, 9))),
        vec![2, 3, 4, 5]
    );
    assert_eq!(
        t.resume_requests(),
        vec![runwire_protocol::SubscriptionRequest::resume(
            r,
            Some(epoch("e")),
            5
        )]
    );
}

/// The gap deadline: after gap_timeout the run is due for a resubscribe.
#[test]
fn rw_order_5_gap_timeout_deadline() {
    let r = run("r");
    let mut t = Tracker::new(OrderingConfig {
        gap_timeout: std::time::Duration::from_millis(0),
        gap_buffer_events: 100,
    });
    opened(&mut t, &r, 0);
    assert!(t.next_deadline().is_none());
    feed(&mut t, [event(&r, 2, 9)]);
    let d = t.next_deadline().expect("a gap is open");
    assert_eq!(t.take_resyncs(d).len(), 1);
}

/// RW-RESUME-9: a reset drops the buffer and moves the cursor; later events continue.
#[test]
fn rw_resume_9_tracker_reset() {
    let r = run("r");
    let mut t = Tracker::new(OrderingConfig::default());
    opened(&mut t, &r, 0);
    feed(&mut t, [event(&r, 1, 20), event(&r, 5, 20)]);
    let mut snap = RunSnapshot::empty(r.clone(), epoch("new"));
    for s in 1..=10 {
        snap.apply(&event(&r, s, 20));
    }
    t.on_reset(&Reset {
        run_id: r.clone(),
        epoch: epoch("new"),
        reason: ResetReason::CursorTooOld,
        snapshot: snap,
    });
    assert_eq!(
        t.cursor(&r),
        Some(&Cursor {
            epoch: Some(epoch("new")),
            seq: 10
        })
    );
    assert_eq!(
        feed(&mut t, [10, 11, 12].map(|s| event(&r, s, 20))),
        vec![11, 12]
    );
}

/// RW-SUB-6: nothing is delivered before the run opens on the connection, nor after a
/// disconnect until it opens again.
#[test]
fn rw_sub_6_tracker_requires_open_subscription() {
    let r = run("r");
    let mut t = Tracker::new(OrderingConfig::default());
    t.track(r.clone(), Cursor::default());
    assert!(feed(&mut t, [event(&r, 1, 9)]).is_empty());
    opened(&mut t, &r, 0);
    assert_eq!(feed(&mut t, [event(&r, 1, 9)]), vec![1]);
    t.on_disconnect();
    assert!(feed(&mut t, [event(&r, 2, 9)]).is_empty());
    assert_eq!(t.stats().unsubscribed, 2);
}

fn chunk(id: &str, index: u32, last: bool, data: &str) -> OutputChunkData {
    OutputChunkData {
        output_id: id.into(),
        index,
        last,
        encoding: ChunkEncoding::Utf8,
        data: data.into(),
        media_type: (index == 0).then(|| "text/plain".into()),
    }
}

/// RW-TYPE-20: an output is complete only with every index from 0 to `last`.
#[test]
fn rw_type_20_chunks_reassemble_in_index_order() {
    let mut a = ChunkAssembler::default();
    assert_eq!(a.push(&chunk("o1", 0, false, "hel")), Ok(None));
    assert_eq!(a.push(&chunk("o2", 0, false, "x")), Ok(None));
    assert_eq!(a.push(&chunk("o1", 1, false, "lo ")), Ok(None));
    let out = a
        .push(&chunk("o1", 2, true, "world"))
        .unwrap()
        .expect("complete");
    assert_eq!(out.data, "hello world");
    assert_eq!(out.media_type.as_deref(), Some("text/plain"));
    assert_eq!(
        out.base64_parts().collect::<Vec<_>>(),
        vec!["hel", "lo ", "world"]
    );
    assert_eq!(a.in_progress(), 1);
    // A missing index (its chunks before a reset's snapshot) is incomplete, never whole.
    assert!(matches!(
        a.push(&chunk("o3", 1, true, "tail")),
        Err(ChunkError::OutOfOrder {
            expected: 0,
            got: 1,
            ..
        })
    ));
    assert!(matches!(
        a.push(&chunk("o2", 2, true, "y")),
        Err(ChunkError::OutOfOrder {
            expected: 1,
            got: 2,
            ..
        })
    ));
    assert_eq!(a.in_progress(), 0, "a broken output is dropped");
    let mut b64 = chunk("o4", 0, false, "aGk=");
    b64.encoding = ChunkEncoding::Base64;
    a.push(&b64).unwrap();
    assert!(matches!(
        a.push(&chunk("o4", 1, true, "x")),
        Err(ChunkError::EncodingChanged { .. })
    ));
    let mut small = ChunkAssembler::new(4);
    assert!(matches!(
        small.push(&chunk("o5", 0, true, "too long")),
        Err(ChunkError::TooLarge { .. })
    ));
}
