//! The close-code table (spec §13.2, `RW-CLOSE-2`, `RW-CLOSE-3`, `RW-RECONNECT-5`,
//! `RW-RECONNECT-6`, `RW-RECONNECT-7`): every class, the defined codes, and unknown
//! codes in each range, played by a real server closing a real connection.

use std::time::Duration;

use runwire_client::{Client, ClientEvent, ConnectionState};
use runwire_protocol::{CloseAction, CloseCode, ErrorCode, ErrorFrame};

use crate::server::*;

/// Seed for the jitter draws; with base 10 ms and factor 1000, a backoff reconnect
/// after one failure draws from 0..=10 s while a reconnect-now draws from 0..=10 ms.
const SEED: u64 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Terminal,
    Backoff,
    Now,
}

/// Plays one connection that closes with `code` (after an error frame announcing it
/// when `with_error`, or with only the error frame and a TCP drop when `drop_tcp`),
/// and classifies what the client did.
async fn observe(code: u16, with_error: bool, drop_tcp: bool) -> Seen {
    let server = TestServer::start(move |mut c| async move {
        c.hello().await;
        c.welcome(10_000).await;
        if c.index > 0 {
            c.drain().await;
            return;
        }
        if with_error || drop_tcp {
            let mut e = ErrorFrame::new(ErrorCode::Other("x_test".into()), "closing");
            e.close_code = Some(code);
            e.retryable = CloseCode(code).action() != CloseAction::Terminal;
            c.error(e).await;
        }
        if !drop_tcp {
            c.close(code).await;
        }
    })
    .await;
    let mut cfg = server.config(SEED);
    cfg.backoff.base_ms = 10;
    cfg.backoff.factor = 1_000;
    cfg.backoff.cap_ms = 10_000;
    let mut client = Client::connect(cfg);
    let evs = collect_until(&mut client, |e| {
        is_state(e, ConnectionState::Reconnecting) || is_terminal_error(e)
    })
    .await;
    let seen = match evs.last() {
        Some(ClientEvent::Error(_)) => {
            assert!(
                evs.iter().any(|e| is_state(e, ConnectionState::Failed)),
                "failed precedes the terminal error: {evs:#?}"
            );
            client.join().await;
            assert_eq!(
                server.conn_count(),
                1,
                "code {code}: reconnected after terminal"
            );
            return Seen::Terminal;
        }
        Some(ClientEvent::State(s)) => {
            // tungstenite hides 1014 (see `received_close_code` in the driver); the
            // class is still right.
            if !drop_tcp && code != 1014 {
                assert_eq!(s.close_code, Some(code), "{s:?}");
            }
            if s.delay.unwrap() <= Duration::from_millis(10) {
                Seen::Now
            } else {
                Seen::Backoff
            }
        }
        other => panic!("unexpected {other:?}"),
    };
    client.handle().close();
    seen
}

fn expected(code: u16) -> Seen {
    match code {
        4000..=4099 | 1002 | 1003 | 1007 | 1008 | 1009 | 1010 => Seen::Terminal,
        4200..=4299 | 1001 | 1012 => Seen::Now,
        _ => Seen::Backoff,
    }
}

/// Every code v1 defines, plus unknown codes in every range.
#[tokio::test]
async fn rw_close_2_every_class_and_unknown_codes_by_range() {
    println!("seed {SEED}");
    let mut codes: Vec<u16> = CloseCode::DEFINED.iter().map(|(c, _)| c.0).collect();
    // Unknown codes: terminal range, backoff range, reconnect-now range, 3000s,
    // 4300-4999, and standard codes without a Runwire name.
    codes.extend([
        4050, 4099, 4150, 4199, 4250, 4299, 3000, 3999, 4300, 4999, 1002, 1003, 1007, 1008, 1009,
        1010, 1014,
    ]);
    let mut failures = Vec::new();
    for code in codes {
        let seen = observe(code, false, false).await;
        let want = expected(code);
        assert_eq!(
            want,
            match CloseCode(code).action() {
                CloseAction::Terminal => Seen::Terminal,
                CloseAction::ReconnectNow => Seen::Now,
                _ => Seen::Backoff,
            },
            "the protocol crate's table for {code}"
        );
        if seen != want {
            failures.push((code, want, seen));
        }
    }
    assert!(failures.is_empty(), "(code, expected, seen): {failures:?}");
}

/// RW-CLOSE-3: an error frame announcing a close code, followed by a TCP drop without
/// a close frame, is handled as that close code.
#[tokio::test]
async fn rw_close_3_error_frame_code_without_close_frame() {
    assert_eq!(observe(4003, false, true).await, Seen::Terminal);
    assert_eq!(observe(4200, false, true).await, Seen::Now);
    assert_eq!(observe(4100, false, true).await, Seen::Backoff);
}

/// The error frame before the close does not change the class.
#[tokio::test]
async fn rw_close_2_with_error_frames() {
    for code in [4000, 4003, 4100, 4105, 4200, 1012] {
        assert_eq!(
            observe(code, true, false).await,
            expected(code),
            "code {code}"
        );
    }
}

/// RW-RECONNECT-7: a connection lost without close frame or error frame reconnects
/// with backoff.
#[tokio::test]
async fn rw_reconnect_7_lost_connection_backs_off() {
    let server = TestServer::start(|mut c| async move {
        c.hello().await;
        c.welcome(10_000).await;
        if c.index > 0 {
            c.drain().await;
        }
        // index 0: dropped here, no close frame.
    })
    .await;
    let mut cfg = server.config(SEED);
    cfg.backoff.base_ms = 10;
    cfg.backoff.factor = 1_000;
    cfg.backoff.cap_ms = 10_000;
    let mut client = Client::connect(cfg);
    let evs = collect_until(&mut client, |e| is_state(e, ConnectionState::Reconnecting)).await;
    let Some(ClientEvent::State(s)) = evs.last() else {
        unreachable!()
    };
    assert_eq!(s.close_code, None);
    assert!(s.delay.unwrap() > Duration::from_millis(10), "{s:?}");
}
