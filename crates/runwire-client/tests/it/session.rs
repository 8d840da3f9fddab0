//! The client against scripted servers: one behaviour of the spec per test.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use runwire_client::{Client, ClientEvent, ConnectionState, Cursor, TokenProvider};
use runwire_protocol::{
    BatchFrame, ClientMessage, ErrorCode, ErrorFrame, Ping, Reset, ResetReason, RunSnapshot,
    ServerMessage, SubscriptionRequest, Unsubscribed, codec,
};

use crate::server::*;

const SEED: u64 = 42;

/// RW-CONN-4, RW-VERSION-1, RW-AUTH-9, RW-RECONNECT-8, RW-RESUME-11: every attempt
/// sends hello with the versions, a fresh token from the provider, and each run's
/// cursor (epoch + last delivered seq).
#[tokio::test]
async fn rw_auth_9_hello_token_per_attempt_and_resume_cursors() {
    let r = run("run-a");
    let r2 = r.clone();
    let mut server = TestServer::start(move |mut c| {
        let r = r2.clone();
        async move {
            let _ = c.hello().await;
            c.welcome(10_000).await;
            if c.index == 0 {
                c.send(&subscribed(&r, &epoch("e1"), 0, 3)).await;
                for s in 1..=3 {
                    c.send(&event_frame(&r, s, 10)).await;
                }
                // token_expired: reconnect with backoff and a fresh token.
                c.error(ErrorFrame::new(ErrorCode::TokenExpired, "expired"))
                    .await;
                c.close(4103).await;
            } else {
                c.send(&subscribed(&r, &epoch("e1"), 3, 10)).await;
                for s in 4..=10 {
                    c.send(&event_frame(&r, s, 10)).await;
                }
                c.drain().await;
            }
        }
    })
    .await;
    let calls = Arc::new(AtomicU32::new(0));
    let calls2 = calls.clone();
    let mut cfg = server.config(SEED);
    cfg.token = Some(TokenProvider::from_fn(move |attempt| {
        calls2.fetch_add(1, Ordering::SeqCst);
        // The provider hears how many attempts came before: 0 for the first.
        Some(format!("tok-{}", attempt + 1))
    }));
    cfg.subscriptions.push(SubscriptionRequest::new(r.clone()));
    let mut client = Client::connect(cfg);
    let evs = collect_until(
        &mut client,
        |e| matches!(e, ClientEvent::Event(e) if e.payload.is_terminal()),
    )
    .await;
    assert_eq!(seqs(&evs, &r), (1..=10).collect::<Vec<_>>());
    let h0 = server.record(0).hello.expect("hello 0");
    let h1 = server.record(1).hello.expect("hello 1");
    assert_eq!(h0.versions, vec!["1.0".to_owned()]);
    assert_eq!(h0.token.as_deref(), Some("tok-1"));
    assert_eq!(h0.subscriptions, vec![SubscriptionRequest::new(r.clone())]);
    assert_eq!(
        h1.token.as_deref(),
        Some("tok-2"),
        "a fresh token per attempt"
    );
    assert_eq!(
        h1.subscriptions,
        vec![SubscriptionRequest::resume(r.clone(), Some(epoch("e1")), 3)]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The token_expired error reached the application, not as terminal.
    assert!(evs.iter().any(|e| matches!(e, ClientEvent::Error(e)
        if e.code == "token_expired" && !e.terminal)));
    assert_eq!(
        client.handle().cursor(&r),
        Some(Cursor {
            epoch: Some(epoch("e1")),
            seq: 10
        })
    );
    // RW-CONN-11: a clean close uses 1000.
    client.handle().close();
    let evs = collect_until(&mut client, |e| is_state(e, ConnectionState::Closed)).await;
    assert!(is_state(evs.last().unwrap(), ConnectionState::Closed));
    assert!(client.next().await.is_none());
    let _ = server.next_conn().await;
    let _ = server.next_conn().await;
    let t = server.client_close(1).await;
    assert_eq!(t, Some(1000));
}

/// RW-HEART-4: every ping is answered with a pong carrying the same id.
#[tokio::test]
async fn rw_heart_4_pong_with_same_id() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _server = TestServer::start(move |mut c| {
        let tx = tx.clone();
        async move {
            c.hello().await;
            c.welcome(10_000).await;
            for id in ["p-1", "x", "ping-with-a-longer-id-0123456789"] {
                c.send(&ServerMessage::Ping(Ping { id: id.into() })).await;
                match c.recv().await {
                    Some(ClientMessage::Pong(p)) => tx.send((id.to_owned(), p.id)).unwrap(),
                    other => panic!("expected pong, got {other:?}"),
                }
            }
            c.drain().await;
        }
    })
    .await;
    let client = Client::connect(_server.config(SEED));
    for _ in 0..3 {
        let (sent, got) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("pong")
            .expect("pong");
        assert_eq!(sent, got);
    }
    drop(client);
}

/// RW-HEART-5: silence longer than heartbeat + grace ends the connection and the
/// client reconnects. RW-HEART-6: any frame, of any type, counts as liveness.
#[tokio::test]
async fn rw_heart_5_liveness_timeout_and_any_frame_counts() {
    let r = run("run-h");
    let r2 = r.clone();
    let mut server = TestServer::start(move |mut c| {
        let r = r2.clone();
        async move {
            c.hello().await;
            c.welcome(200).await;
            if c.index == 0 {
                c.send(&subscribed(&r, &epoch("e"), 0, 0)).await;
                // 400 ms of unknown-type frames every 20 ms: well past the 250 ms
                // liveness budget (200 ms heartbeat + 50 ms grace), never silent.
                for i in 0..20 {
                    c.send_text(format!(r#"{{"type":"x_future","i":{i}}}"#))
                        .await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                c.send(&event_frame(&r, 1, 2)).await;
                // Now silence: the client must give up on this connection.
                c.drain().await;
            } else {
                c.send(&subscribed(&r, &epoch("e"), 1, 2)).await;
                c.send(&event_frame(&r, 2, 2)).await;
                c.drain().await;
            }
        }
    })
    .await;
    let mut cfg = server.config(SEED);
    cfg.subscriptions.push(SubscriptionRequest::new(r.clone()));
    let mut client = Client::connect(cfg);
    let evs = collect_until(
        &mut client,
        |e| matches!(e, ClientEvent::Event(e) if e.seq == 1),
    )
    .await;
    assert!(
        !evs.iter()
            .any(|e| is_state(e, ConnectionState::Reconnecting)),
        "unknown frames must keep the connection alive: {evs:#?}"
    );
    let evs = collect_until(
        &mut client,
        |e| matches!(e, ClientEvent::Event(e) if e.seq == 2),
    )
    .await;
    assert!(
        evs.iter()
            .any(|e| matches!(e, ClientEvent::Error(e) if e.code == "liveness_timeout"))
    );
    assert!(
        evs.iter()
            .any(|e| is_state(e, ConnectionState::Reconnecting))
    );
    assert_eq!(server.next_conn().await, 0);
    assert_eq!(server.next_conn().await, 1);
    assert_eq!(
        server.record(1).hello.unwrap().subscriptions,
        vec![SubscriptionRequest::resume(r, Some(epoch("e")), 1)]
    );
}

/// RW-VERSION-6: unsupported_version is terminal, carries supported_versions, and the
/// client never reconnects.
#[tokio::test]
async fn rw_version_6_unsupported_version_is_terminal() {
    let server = TestServer::start(|mut c| async move {
        c.hello().await;
        let mut e = ErrorFrame::new(ErrorCode::UnsupportedVersion, "no common version");
        e.supported_versions = Some(vec!["2.0".into()]);
        c.error(e).await;
        c.close(4002).await;
    })
    .await;
    let mut cfg = server.config(SEED);
    cfg.versions = vec!["1.0".into()];
    let mut client = Client::connect(cfg);
    let evs = collect_until(&mut client, is_terminal_error).await;
    let err = evs
        .iter()
        .find_map(|e| match e {
            ClientEvent::Error(e) => Some(e.clone()),
            _ => None,
        })
        .expect("an error");
    assert!(err.terminal);
    assert_eq!(err.code, "unsupported_version");
    assert_eq!(err.supported_versions, Some(vec!["2.0".to_owned()]));
    assert!(
        client.next().await.is_none(),
        "the stream ends after failed"
    );
    client.join().await;
    assert_eq!(
        server.conn_count(),
        1,
        "no reconnect after a terminal close"
    );
}

/// RW-VERSION-7: a welcome naming a version the client did not offer is terminal.
#[tokio::test]
async fn rw_version_7_welcome_with_unoffered_version() {
    let server = TestServer::start(|mut c| async move {
        c.hello().await;
        let mut w = welcome(10_000);
        if let ServerMessage::Welcome(w) = &mut w {
            w.version = "9.9".into();
        }
        c.send(&w).await;
        c.drain().await;
    })
    .await;
    let mut client = Client::connect(server.config(SEED));
    let evs = collect_until(&mut client, is_terminal_error).await;
    assert!(evs.iter().any(|e| matches!(e, ClientEvent::Error(e)
        if e.terminal && e.code == "protocol_violation")));
    assert!(!evs.iter().any(|e| is_state(e, ConnectionState::Connected)));
    client.join().await;
    assert_eq!(server.conn_count(), 1);
}

/// RW-ORDER-4, RW-ORDER-5, RW-ORDER-6, RW-BATCH-4: duplicates are dropped, a gap is
/// buffered, and when it does not fill in time the run is resubscribed from the
/// cursor with unsubscribe + subscribe; the application sees each event once, in
/// order.
#[tokio::test]
async fn rw_order_5_gap_resubscribe_from_cursor() {
    let r = run("run-g");
    let r2 = r.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _server = TestServer::start(move |mut c| {
        let r = r2.clone();
        let tx = tx.clone();
        async move {
            c.hello().await;
            c.welcome(10_000).await;
            let e = epoch("ep");
            c.send(&subscribed(&r, &e, 0, 6)).await;
            c.send(&event_frame(&r, 1, 6)).await;
            c.send(&event_frame(&r, 2, 6)).await;
            c.send(&event_frame(&r, 1, 6)).await; // duplicate
            // 3 is lost; 4 and 5 arrive in one batch, 4 twice.
            c.send(&ServerMessage::Batch(BatchFrame {
                events: vec![event(&r, 4, 6), event(&r, 4, 6), event(&r, 5, 6)],
            }))
            .await;
            // The client must now resubscribe: unsubscribe, then subscribe(after 2).
            let m1 = c.recv().await;
            let m2 = c.recv().await;
            tx.send((m1, m2)).unwrap();
            c.send(&ServerMessage::Unsubscribed(Unsubscribed {
                run_id: r.clone(),
            }))
            .await;
            c.send(&subscribed(&r, &e, 2, 6)).await;
            c.send(&ServerMessage::Batch(BatchFrame {
                events: (3..=6).map(|s| event(&r, s, 6)).collect(),
            }))
            .await;
            c.drain().await;
        }
    })
    .await;
    let mut cfg = _server.config(SEED);
    cfg.subscriptions.push(SubscriptionRequest::new(r.clone()));
    let mut client = Client::connect(cfg);
    let evs = collect_until(
        &mut client,
        |e| matches!(e, ClientEvent::Event(e) if e.payload.is_terminal()),
    )
    .await;
    assert_eq!(seqs(&evs, &r), vec![1, 2, 3, 4, 5, 6]);
    let (m1, m2) = rx.recv().await.unwrap();
    assert_eq!(
        m1,
        Some(ClientMessage::Unsubscribe(runwire_protocol::Unsubscribe {
            run_ids: vec![r.clone()]
        }))
    );
    assert_eq!(
        m2,
        Some(ClientMessage::Subscribe(runwire_protocol::Subscribe {
            subscriptions: vec![SubscriptionRequest::resume(r.clone(), Some(epoch("ep")), 2)]
        }))
    );
    // The resync's unsubscribed is internal, not reported.
    assert!(
        !evs.iter()
            .any(|e| matches!(e, ClientEvent::Unsubscribed(_)))
    );
}

/// RW-ORDER-5: a gap that fills within the timeout is delivered in order, without a
/// resubscribe; the overflow of the gap buffer resubscribes at once.
#[tokio::test]
async fn rw_order_5_reorder_within_window_and_overflow() {
    let r = run("run-o");
    let r2 = r.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _server = TestServer::start(move |mut c| {
        let r = r2.clone();
        let tx = tx.clone();
        async move {
            c.hello().await;
            c.welcome(10_000).await;
            let e = epoch("ep");
            c.send(&subscribed(&r, &e, 0, 20)).await;
            for s in [3, 2, 1, 4, 6, 5] {
                c.send(&event_frame(&r, s, 20)).await;
            }
            // Overflow: 7 is missing and 4 more than the buffer (3) follow.
            for s in 8..=11 {
                c.send(&event_frame(&r, s, 20)).await;
            }
            let m1 = c.recv().await;
            let m2 = c.recv().await;
            tx.send((m1, m2)).unwrap();
            c.send(&subscribed(&r, &e, 6, 20)).await;
            for s in 7..=20 {
                c.send(&event_frame(&r, s, 20)).await;
            }
            c.drain().await;
        }
    })
    .await;
    let mut cfg = _server.config(SEED);
    cfg.ordering.gap_timeout = Duration::from_secs(30);
    cfg.ordering.gap_buffer_events = 3;
    cfg.subscriptions.push(SubscriptionRequest::new(r.clone()));
    let mut client = Client::connect(cfg);
    let evs = collect_until(
        &mut client,
        |e| matches!(e, ClientEvent::Event(e) if e.payload.is_terminal()),
    )
    .await;
    assert_eq!(seqs(&evs, &r), (1..=20).collect::<Vec<_>>());
    let (m1, m2) = rx.recv().await.unwrap();
    assert!(matches!(m1, Some(ClientMessage::Unsubscribe(_))), "{m1:?}");
    assert_eq!(
        m2,
        Some(ClientMessage::Subscribe(runwire_protocol::Subscribe {
            subscriptions: vec![SubscriptionRequest::resume(r.clone(), Some(epoch("ep")), 6)]
        }))
    );
}

/// RW-RESUME-9, RW-SUB-3: a reset hands the snapshot over, moves the cursor to
/// (epoch, as_of_seq), and only later events are delivered.
#[tokio::test]
async fn rw_resume_9_reset_moves_the_cursor() {
    let r = run("run-r");
    let r2 = r.clone();
    let mut server = TestServer::start(move |mut c| {
        let r = r2.clone();
        async move {
            c.hello().await;
            c.welcome(10_000).await;
            let mut snap = RunSnapshot::empty(r.clone(), epoch("new"));
            for s in 1..=10 {
                snap.apply(&event(&r, s, 12));
            }
            c.send(&ServerMessage::Reset(Reset {
                run_id: r.clone(),
                epoch: epoch("new"),
                reason: ResetReason::EpochMismatch,
                snapshot: snap,
            }))
            .await;
            for s in [9, 10, 11, 12] {
                c.send(&event_frame(&r, s, 12)).await;
            }
            c.drain().await;
        }
    })
    .await;
    let mut cfg = server.config(SEED);
    cfg.subscriptions.push(SubscriptionRequest::resume(
        r.clone(),
        Some(epoch("old")),
        30,
    ));
    let mut client = Client::connect(cfg);
    let evs = collect_until(
        &mut client,
        |e| matches!(e, ClientEvent::Event(e) if e.payload.is_terminal()),
    )
    .await;
    let reset = evs
        .iter()
        .find_map(|e| match e {
            ClientEvent::Reset(r) => Some(r.clone()),
            _ => None,
        })
        .expect("reset delivered");
    assert_eq!(reset.snapshot.as_of_seq, 10);
    assert_eq!(seqs(&evs, &r), vec![11, 12]);
    let _ = server.next_conn().await;
    assert_eq!(
        server.record(0).hello.unwrap().subscriptions,
        vec![SubscriptionRequest::resume(
            r.clone(),
            Some(epoch("old")),
            30
        )]
    );
    assert_eq!(
        client.handle().cursor(&r),
        Some(Cursor {
            epoch: Some(epoch("new")),
            seq: 12
        })
    );
}

/// RW-SUB-6, RW-RESUME-3: events of a run that is not open on the connection (no
/// subscribed/reset yet, or never subscribed) are not delivered.
#[tokio::test]
async fn rw_sub_6_no_events_before_subscribed() {
    let r = run("run-s");
    let other = run("run-other");
    let (r2, o2) = (r.clone(), other.clone());
    let _server = TestServer::start(move |mut c| {
        let (r, other) = (r2.clone(), o2.clone());
        async move {
            c.hello().await;
            c.welcome(10_000).await;
            c.send(&event_frame(&r, 1, 2)).await; // before subscribed: dropped
            c.send(&event_frame(&other, 1, 2)).await; // never subscribed: dropped
            c.send(&subscribed(&r, &epoch("e"), 0, 2)).await;
            c.send(&event_frame(&r, 1, 2)).await;
            c.send(&event_frame(&r, 2, 2)).await;
            c.drain().await;
        }
    })
    .await;
    let mut cfg = _server.config(SEED);
    cfg.subscriptions.push(SubscriptionRequest::new(r.clone()));
    let mut client = Client::connect(cfg);
    let evs = collect_until(
        &mut client,
        |e| matches!(e, ClientEvent::Event(e) if e.payload.is_terminal()),
    )
    .await;
    assert_eq!(seqs(&evs, &r), vec![1, 2]);
    assert!(seqs(&evs, &other).is_empty());
    // The first event delivered comes after the subscribed frame.
    let first_sub = evs
        .iter()
        .position(|e| matches!(e, ClientEvent::Subscribed(_)));
    let first_ev = evs.iter().position(|e| matches!(e, ClientEvent::Event(_)));
    assert!(first_sub < first_ev);
}

/// RW-SUB-10, RW-ERROR-5, RW-RECONNECT-8: a per-run error is reported with its run,
/// the other runs continue, and a non-retryable failure is left out of the next hello.
#[tokio::test]
async fn rw_sub_10_per_run_error_fails_alone() {
    let ok = run("run-ok");
    let bad = run("run-bad");
    let (ok2, bad2) = (ok.clone(), bad.clone());
    let mut server = TestServer::start(move |mut c| {
        let (ok, bad) = (ok2.clone(), bad2.clone());
        async move {
            c.hello().await;
            c.welcome(10_000).await;
            if c.index == 0 {
                c.send(&subscribed(&ok, &epoch("e"), 0, 1)).await;
                c.error(ErrorFrame::new(ErrorCode::Forbidden, "no").for_run(bad.clone()))
                    .await;
                c.send(&event_frame(&ok, 1, 3)).await;
                c.close(4104).await; // overloaded: reconnect with backoff
            } else {
                c.send(&subscribed(&ok, &epoch("e"), 1, 3)).await;
                c.send(&event_frame(&ok, 2, 3)).await;
                c.send(&event_frame(&ok, 3, 3)).await;
                c.drain().await;
            }
        }
    })
    .await;
    let mut cfg = server.config(SEED);
    cfg.subscriptions.push(SubscriptionRequest::new(ok.clone()));
    cfg.subscriptions
        .push(SubscriptionRequest::new(bad.clone()));
    let mut client = Client::connect(cfg);
    let evs = collect_until(
        &mut client,
        |e| matches!(e, ClientEvent::Event(e) if e.payload.is_terminal()),
    )
    .await;
    assert_eq!(seqs(&evs, &ok), vec![1, 2, 3]);
    assert!(evs.iter().any(|e| matches!(e, ClientEvent::Error(e)
        if e.code == "forbidden" && e.run_id.as_ref() == Some(&bad) && !e.terminal)));
    let _ = server.next_conn().await;
    let _ = server.next_conn().await;
    assert_eq!(
        server.record(1).hello.unwrap().subscriptions,
        vec![SubscriptionRequest::resume(ok.clone(), Some(epoch("e")), 1)]
    );
}

/// RW-RECONNECT-2: the client does not reconnect earlier than retry_after_ms.
#[tokio::test]
async fn rw_reconnect_2_retry_after_honoured() {
    let mut server = TestServer::start(|mut c| async move {
        c.hello().await;
        c.welcome(10_000).await;
        if c.index == 0 {
            c.error(ErrorFrame::new(ErrorCode::RateLimited, "slow down").retry_after(150))
                .await;
            c.close(4101).await;
        } else {
            c.drain().await;
        }
    })
    .await;
    let mut client = Client::connect(server.config(SEED));
    let evs = collect_until(&mut client, |e| is_state(e, ConnectionState::Reconnecting)).await;
    let Some(ClientEvent::State(st)) = evs.last() else {
        unreachable!()
    };
    assert!(st.delay.unwrap() >= Duration::from_millis(150), "{st:?}");
    assert_eq!(st.close_code, Some(4101));
    let c0 = server.next_conn().await;
    let c1 = server.next_conn().await;
    let gap = server.record(c1).accepted_at - server.record(c0).accepted_at;
    assert!(
        gap >= Duration::from_millis(150),
        "reconnected after {gap:?}"
    );
}

/// RW-RECONNECT-3, RW-RECONNECT-4: attempts that never reach welcome count as
/// failures; after max_attempts the client stops with a terminal error.
#[tokio::test]
async fn rw_reconnect_3_gives_up_after_max_attempts() {
    let server = TestServer::start(|mut c| async move {
        c.hello().await;
        // Drop the connection without welcome or close frame.
    })
    .await;
    let mut cfg = server.config(SEED);
    cfg.backoff.max_attempts = 4;
    let mut client = Client::connect(cfg);
    let evs = collect_until(&mut client, is_terminal_error).await;
    let attempts: Vec<u32> = evs
        .iter()
        .filter_map(|e| match e {
            ClientEvent::State(s) if s.state == ConnectionState::Connecting => s.attempt,
            _ => None,
        })
        .collect();
    assert_eq!(attempts, vec![0, 1, 2, 3]);
    assert!(evs.iter().any(|e| matches!(e, ClientEvent::Error(e)
        if e.terminal && e.code == "reconnect_failed")));
    client.join().await;
    assert_eq!(server.conn_count(), 4);
}

/// RW-RECONNECT-4: a session that stays up for stable_session_ms resets the count, so
/// the next reconnect is attempt 0 again.
#[tokio::test]
async fn rw_reconnect_4_stable_session_resets_attempts() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let tx2 = tx.clone();
    let server = TestServer::start(move |mut c| {
        let tx = tx2.clone();
        async move {
            c.hello().await;
            if c.index < 2 {
                return; // two failed attempts
            }
            c.welcome(10_000).await;
            let _ = tx.send(());
            c.send(&ServerMessage::Ping(Ping { id: "1".into() })).await;
            let _ = c.recv().await; // pong
            // Stay open well past stable_session (20 ms), heartbeating.
            for i in 0..8 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                c.send(&ServerMessage::Ping(Ping {
                    id: format!("h{i}"),
                }))
                .await;
                let _ = c.recv().await;
            }
            // Then drop without a close frame.
        }
    })
    .await;
    let mut cfg = server.config(SEED);
    cfg.stable_session = Duration::from_millis(20);
    let mut client = Client::connect(cfg);
    let evs = collect_until(&mut client, |e| is_state(e, ConnectionState::Connected)).await;
    rx.recv().await.unwrap();
    let attempts: Vec<u32> = evs
        .iter()
        .filter_map(|e| match e {
            ClientEvent::State(s) if s.state == ConnectionState::Connecting => s.attempt,
            _ => None,
        })
        .collect();
    assert_eq!(attempts, vec![0, 1, 2]);
    let evs = collect_until(&mut client, |e| is_state(e, ConnectionState::Reconnecting)).await;
    let Some(ClientEvent::State(st)) = evs.last() else {
        unreachable!()
    };
    assert_eq!(
        st.attempt,
        Some(0),
        "the stable session reset the count: {st:?}"
    );
}

/// RW-SUB-1, RW-SUB-4: subscribe and unsubscribe at any time through the handle; the
/// cursors follow, and a closed subscription is reported.
#[tokio::test]
async fn rw_sub_4_subscribe_and_unsubscribe_at_runtime() {
    let r = run("run-late");
    let r2 = r.clone();
    let _server = TestServer::start(move |mut c| {
        let r = r2.clone();
        async move {
            let h = c.hello().await;
            assert!(h.subscriptions.is_empty());
            c.welcome(10_000).await;
            match c.recv().await {
                Some(ClientMessage::Subscribe(s)) => {
                    assert_eq!(
                        s.subscriptions,
                        vec![SubscriptionRequest::resume(r.clone(), Some(epoch("e")), 2)]
                    );
                }
                other => panic!("expected subscribe, got {other:?}"),
            }
            c.send(&subscribed(&r, &epoch("e"), 2, 4)).await;
            c.send(&event_frame(&r, 3, 9)).await;
            c.send(&event_frame(&r, 4, 9)).await;
            match c.recv().await {
                Some(ClientMessage::Unsubscribe(u)) => assert_eq!(u.run_ids, vec![r.clone()]),
                other => panic!("expected unsubscribe, got {other:?}"),
            }
            // An event sent before the server processed the unsubscribe is dropped.
            c.send(&event_frame(&r, 5, 9)).await;
            c.send(&ServerMessage::Unsubscribed(Unsubscribed {
                run_id: r.clone(),
            }))
            .await;
            c.drain().await;
        }
    })
    .await;
    let mut client = Client::connect(_server.config(SEED));
    let handle = client.handle();
    collect_until(&mut client, |e| is_state(e, ConnectionState::Connected)).await;
    handle.subscribe(SubscriptionRequest::resume(r.clone(), Some(epoch("e")), 2));
    let evs = collect_until(
        &mut client,
        |e| matches!(e, ClientEvent::Event(e) if e.seq == 4),
    )
    .await;
    assert_eq!(seqs(&evs, &r), vec![3, 4]);
    assert_eq!(handle.cursor(&r).map(|c| c.seq), Some(4));
    handle.unsubscribe(r.clone());
    let evs = collect_until(&mut client, |e| matches!(e, ClientEvent::Unsubscribed(_))).await;
    assert!(seqs(&evs, &r).is_empty(), "{evs:?}");
    assert!(handle.cursors().is_empty());
}

/// RW-INPUT-12: an undecodable frame is reported, nothing of it is delivered, and the
/// client closes with 4000 and reconnects with backoff.
#[tokio::test]
async fn rw_input_12_invalid_frame_closes_4000_and_reconnects() {
    let r = run("run-bad");
    let r2 = r.clone();
    let mut server = TestServer::start(move |mut c| {
        let r = r2.clone();
        async move {
            let h = c.hello().await;
            c.welcome(10_000).await;
            let after = h.subscriptions[0].after_seq.unwrap_or(0);
            c.send(&subscribed(&r, &epoch("e"), after, 3)).await;
            if c.index == 0 {
                c.send(&event_frame(&r, 1, 3)).await;
                // seq 0 is invalid: the whole batch is undecodable.
                let bad = format!(
                    r#"{{"type":"batch","events":[{},{{"event_id":"x","run_id":"run-bad","seq":0,"type":"run.progress","time":"2026-01-01T00:00:00Z","data":{{}}}}]}}"#,
                    codec::encode(&event(&r, 2, 3))
                );
                c.send_text(bad).await;
                c.drain().await;
            } else {
                for s in after + 1..=3 {
                    c.send(&event_frame(&r, s, 3)).await;
                }
                c.drain().await;
            }
        }
    })
    .await;
    let mut cfg = server.config(SEED);
    cfg.subscriptions.push(SubscriptionRequest::new(r.clone()));
    let mut client = Client::connect(cfg);
    let evs = collect_until(
        &mut client,
        |e| matches!(e, ClientEvent::Event(e) if e.payload.is_terminal()),
    )
    .await;
    assert_eq!(seqs(&evs, &r), vec![1, 2, 3]);
    assert!(evs.iter().any(|e| matches!(e, ClientEvent::Error(e)
        if e.code == "invalid_frame" && !e.terminal)));
    let _ = server.next_conn().await;
    let _ = server.next_conn().await;
    assert_eq!(server.client_close(0).await, Some(4000));
    assert_eq!(
        server.record(1).hello.unwrap().subscriptions,
        vec![SubscriptionRequest::resume(r, Some(epoch("e")), 1)]
    );
}

/// RW-LIMIT-5: the client stays within the announced limits: no more subscriptions
/// than `max_subscriptions` (the extra one fails locally, with its run), and no frame
/// larger than `max_frame_bytes` (subscription lists are split).
#[tokio::test]
async fn rw_limit_5_within_announced_limits() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = TestServer::start(move |mut c| {
        let tx = tx.clone();
        async move {
            c.hello().await;
            let mut w = welcome(10_000);
            if let ServerMessage::Welcome(w) = &mut w {
                w.limits.max_subscriptions = 3;
                w.limits.max_frame_bytes = 160;
            }
            c.send(&w).await;
            while let Some(m) = c.recv().await {
                let size = codec::encode(&m).len();
                tx.send((m, size)).unwrap();
            }
        }
    })
    .await;
    let mut client = Client::connect(server.config(SEED));
    collect_until(&mut client, |e| is_state(e, ConnectionState::Connected)).await;
    let long = |i: u32| run(&format!("run-with-a-rather-long-identifier-{i:03}"));
    client
        .handle()
        .subscribe_all((0..4).map(|i| SubscriptionRequest::new(long(i))).collect());
    let evs = collect_until(&mut client, |e| matches!(e, ClientEvent::Error(_))).await;
    let Some(ClientEvent::Error(e)) = evs.last() else {
        unreachable!()
    };
    assert_eq!(e.code, "too_many_subscriptions");
    assert_eq!(e.run_id, Some(long(3)));
    assert!(e.ends_subscription());
    let mut subscribed = Vec::new();
    while subscribed.len() < 3 {
        let (m, size) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("frames")
            .expect("frames");
        assert!(size <= 160, "frame of {size} bytes: {m:?}");
        let ClientMessage::Subscribe(s) = m else {
            panic!("expected subscribe, got {m:?}");
        };
        subscribed.extend(s.subscriptions.into_iter().map(|s| s.run_id));
    }
    assert_eq!(subscribed, vec![long(0), long(1), long(2)]);
}

/// RW-CONN-11: dropping the client closes the connection with 1000, also while the
/// server is still sending.
#[tokio::test]
async fn rw_conn_11_dropping_the_client_closes_with_1000() {
    let r = run("run-drop");
    let r2 = r.clone();
    let mut server = TestServer::start(move |mut c| {
        let r = r2.clone();
        async move {
            c.hello().await;
            c.welcome(10_000).await;
            c.send(&subscribed(&r, &epoch("e"), 0, 0)).await;
            // More than the client's channel holds: it is still busy when dropped.
            for seq in 1..=200 {
                c.send(&event_frame(&r, seq, 1_000_000)).await;
            }
            c.drain().await;
        }
    })
    .await;
    let mut cfg = server.config(SEED);
    cfg.channel_capacity = 4;
    cfg.subscriptions.push(SubscriptionRequest::new(r.clone()));
    let mut client = Client::connect(cfg);
    collect_until(
        &mut client,
        |e| matches!(e, ClientEvent::Event(e) if e.seq == 10),
    )
    .await;
    drop(client);
    let _ = server.next_conn().await;
    assert_eq!(server.client_close(0).await, Some(1000));
}

/// RW-AUTH-9: an asynchronous token provider is asked before every attempt; when it
/// fails, the attempt fails (reported, not terminal) and the next one asks again.
#[tokio::test]
async fn rw_auth_9_async_token_provider_failure_is_a_failed_attempt() {
    let mut server = TestServer::start(|mut c| async move {
        c.hello().await;
        c.welcome(10_000).await;
        c.drain().await;
    })
    .await;
    let mut cfg = server.config(SEED);
    cfg.token = Some(TokenProvider::from_async(|attempt| async move {
        if attempt == 0 {
            Err("identity provider unavailable".to_owned())
        } else {
            Ok(Some(format!("fresh-{}", attempt + 1)))
        }
    }));
    let mut client = Client::connect(cfg);
    let evs = collect_until(&mut client, |e| is_state(e, ConnectionState::Connected)).await;
    assert!(evs.iter().any(|e| matches!(e, ClientEvent::Error(e)
        if e.code == "token_provider" && !e.terminal)));
    let _ = server.next_conn().await;
    assert_eq!(server.conn_count(), 1, "no connection without a token");
    assert_eq!(
        server.record(0).hello.unwrap().token.as_deref(),
        Some("fresh-2")
    );
}
