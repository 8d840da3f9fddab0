//! Model-based property test (spec §8, §9, §12, §13): an in-process server plays a
//! random fault schedule — connection drops at random points, duplicate frames,
//! reordering within a window, lost events, batches, delays, stalls, resets (trimmed
//! history, re-created logs), server restarts and terminal closes — and the
//! application must see every event of every run exactly once and in seq order, or a
//! reset followed by events that fold to the same state as the server's log, and the
//! client must never reconnect after a terminal close.
//!
//! `RUNWIRE_PROPTEST_CASES` sets the number of cases (default 256) and
//! `RUNWIRE_PROPTEST_SEED` the proptest seed (printed).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use proptest::{
    prelude::*,
    test_runner::{Config, RngSeed, TestCaseError, TestRunner},
};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use runwire_client::{Client, ClientEvent, ConnectionState};
use runwire_protocol::{
    BatchFrame, ClientMessage, Epoch, ErrorCode, ErrorFrame, Event, Ping, Reset, ResetReason,
    RunId, RunSnapshot, ServerMessage, SubscriptionRequest, Unsubscribed,
};

use crate::server::*;

const HEARTBEAT_MS: u64 = 30;

#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    events_per_run: Vec<u64>,
    /// Close with a terminal code on this connection (0-based), if set.
    terminal_on_conn: Option<usize>,
    gap_buffer: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<u64>(),
        prop::collection::vec(2u64..=40, 1..=3),
        prop::option::weighted(0.15, 0usize..3),
        prop::sample::select(vec![3usize, 16, 1000]),
    )
        .prop_map(
            |(seed, events_per_run, terminal_on_conn, gap_buffer)| Case {
                seed,
                events_per_run,
                terminal_on_conn,
                gap_buffer,
            },
        )
}

struct RunLog {
    id: RunId,
    events: Vec<Event>,
    epoch: Epoch,
    generation: u32,
    /// The highest seq ever sent (the head seen by subscriptions).
    head: u64,
    /// Events with seq <= trimmed are no longer retained.
    trimmed: u64,
}

impl RunLog {
    fn last(&self) -> u64 {
        self.events.len() as u64
    }

    fn snapshot(&self, as_of: u64) -> RunSnapshot {
        let mut s = RunSnapshot::empty(self.id.clone(), self.epoch.clone());
        for e in &self.events[..as_of as usize] {
            s.apply(e);
        }
        s
    }
}

struct Model {
    case: Case,
    runs: Vec<RunLog>,
    /// Connection count when the terminal close was sent.
    terminal_sent_at: Option<usize>,
}

type Shared = Arc<Mutex<Model>>;

/// Per-connection subscription state.
struct Sub {
    /// The highest seq this subscription has sent in order (or skipped on purpose).
    sent: u64,
}

/// Totals over all cases, printed at the end to show what the schedule exercised.
#[derive(Debug, Default)]
struct Totals {
    cases: u64,
    connections: u64,
    resets: u64,
    terminal: u64,
    events: u64,
}

static TOTALS: Mutex<Totals> = Mutex::new(Totals {
    cases: 0,
    connections: 0,
    resets: 0,
    terminal: 0,
    events: 0,
});

async fn open(
    c: &mut Conn,
    model: &Shared,
    req: &SubscriptionRequest,
    subs: &mut BTreeMap<usize, Sub>,
) {
    let reply = {
        let m = model.lock().unwrap();
        let Some(i) = m.runs.iter().position(|r| r.id == req.run_id) else {
            panic!("client subscribed to an unknown run {}", req.run_id);
        };
        let r = &m.runs[i];
        let after = req.after_seq.unwrap_or(0);
        let reason = if req.epoch.as_ref().is_some_and(|e| *e != r.epoch) {
            Some(ResetReason::EpochMismatch)
        } else if after > r.head {
            Some(ResetReason::CursorAhead)
        } else if after < r.trimmed {
            Some(ResetReason::CursorTooOld)
        } else {
            None
        };
        match reason {
            Some(reason) => {
                subs.insert(i, Sub { sent: r.head });
                ServerMessage::Reset(Reset {
                    run_id: r.id.clone(),
                    epoch: r.epoch.clone(),
                    reason,
                    snapshot: r.snapshot(r.head),
                })
            }
            None => {
                subs.insert(i, Sub { sent: after });
                subscribed(&r.id, &r.epoch, after, r.head)
            }
        }
    };
    c.send(&reply).await;
}

/// Plays one connection of the model server.
async fn play(mut c: Conn, model: Shared) {
    let hello = c.hello().await;
    let (seed, terminal_here) = {
        let m = model.lock().unwrap();
        (m.case.seed, m.case.terminal_on_conn == Some(c.index))
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (c.index as u64).wrapping_mul(0x9e37_79b9));
    // Later connections fault less, so every case ends.
    let fault_p = match c.index {
        0..=3 => 0.04,
        4..=7 => 0.02,
        _ => 0.0,
    };
    c.welcome(HEARTBEAT_MS).await;
    let mut subs = BTreeMap::new();
    for req in &hello.subscriptions {
        open(&mut c, &model, req, &mut subs).await;
    }
    let mut ping_n = 0u32;
    let mut steps = 0u32;
    loop {
        let work = {
            let m = model.lock().unwrap();
            subs.iter().any(|(i, s)| s.sent < m.runs[*i].last())
        };
        tokio::select! {
            biased;
            msg = c.recv() => match msg {
                None => return,
                Some(ClientMessage::Subscribe(s)) => {
                    for req in &s.subscriptions {
                        open(&mut c, &model, req, &mut subs).await;
                    }
                }
                Some(ClientMessage::Unsubscribe(u)) => {
                    for run_id in u.run_ids {
                        let i = model.lock().unwrap().runs.iter().position(|r| r.id == run_id);
                        if let Some(i) = i {
                            subs.remove(&i);
                        }
                        c.send(&ServerMessage::Unsubscribed(Unsubscribed { run_id })).await;
                    }
                }
                Some(ClientMessage::Pong(_)) => {}
                Some(other) => panic!("unexpected client message {other:?}"),
            },
            _ = std::future::ready(()), if work => {
                steps += 1;
                if terminal_here && steps > 3 && rng.random_bool(0.2) {
                    model.lock().unwrap().terminal_sent_at = Some(c.index + 1);
                    c.error(ErrorFrame::new(ErrorCode::Unauthorized, "token revoked")).await;
                    c.close(4003).await;
                    return;
                }
                if rng.random_bool(fault_p) {
                    connection_fault(&mut c, &model, &mut rng, &subs).await;
                    return;
                }
                send_events(&mut c, &model, &mut rng, &mut subs).await;
            }
            _ = tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS)) => {
                ping_n += 1;
                c.send(&ServerMessage::Ping(Ping { id: format!("p{ping_n}") })).await;
            }
        }
    }
}

/// Ends the connection in one of the ways a real server or network does.
async fn connection_fault(
    c: &mut Conn,
    model: &Shared,
    rng: &mut ChaCha8Rng,
    subs: &BTreeMap<usize, Sub>,
) {
    match rng.random_range(0..8) {
        // Drop the TCP connection without a close frame.
        0 | 1 => {}
        // Slow consumer: reconnect with backoff after retry_after.
        2 => {
            c.error(
                ErrorFrame::new(ErrorCode::SlowConsumer, "slow")
                    .retry_after(rng.random_range(0..3)),
            )
            .await;
            c.close(4100).await;
        }
        // Restart: reconnect now.
        3 => {
            c.error(
                ErrorFrame::new(ErrorCode::ServerShutdown, "restart")
                    .retry_after(rng.random_range(0..3)),
            )
            .await;
            c.close(4200).await;
        }
        4 => {
            c.close(1012).await;
        }
        // Stall: say nothing until the client gives up on the connection.
        5 => {
            c.drain().await;
        }
        // History trimmed: the next resume from an older cursor gets a reset.
        6 => {
            if let Some((&i, _)) = subs.iter().next() {
                let mut m = model.lock().unwrap();
                let r = &mut m.runs[i];
                r.trimmed = r.head;
            }
        }
        // The log is re-created under a new epoch (same events): epoch_mismatch reset.
        _ => {
            if let Some((&i, _)) = subs.iter().next_back() {
                let mut m = model.lock().unwrap();
                let r = &mut m.runs[i];
                r.generation += 1;
                r.epoch = epoch(&format!("g{}", r.generation));
            }
        }
    }
}

async fn send_events(
    c: &mut Conn,
    model: &Shared,
    rng: &mut ChaCha8Rng,
    subs: &mut BTreeMap<usize, Sub>,
) {
    let frames: Vec<ServerMessage> = {
        let mut m = model.lock().unwrap();
        let ready: Vec<usize> = subs
            .iter()
            .filter(|(i, s)| s.sent < m.runs[**i].last())
            .map(|(i, _)| *i)
            .collect();
        let Some(&i) = ready.get(rng.random_range(0..ready.len())) else {
            return;
        };
        let r = &mut m.runs[i];
        let sub = subs.get_mut(&i).expect("subscribed");
        let last = r.last();
        let next = sub.sent + 1;
        let ev = |s: u64| r.events[(s - 1) as usize].clone();
        let one = |e: Event| ServerMessage::Event(runwire_protocol::EventFrame { event: e });
        let out = match rng.random_range(0..10) {
            // A batch of consecutive events.
            0 | 1 => {
                let k = rng.random_range(1..=5).min(last - sub.sent);
                let b = BatchFrame {
                    events: (next..next + k).map(ev).collect(),
                };
                sub.sent += k;
                vec![ServerMessage::Batch(b)]
            }
            // Reordering within a window of 2-4.
            2 => {
                let k = rng.random_range(2..=4).min(last - sub.sent);
                let mut block: Vec<u64> = (next..next + k).collect();
                block.shuffle(rng);
                sub.sent += k;
                block.into_iter().map(|s| one(ev(s))).collect()
            }
            // A duplicate of an earlier event, then the next one.
            3 if sub.sent > 0 => {
                let d = rng.random_range(1..=sub.sent);
                sub.sent += 1;
                vec![one(ev(d)), one(ev(next))]
            }
            // A lost event (never the last: something must reveal the gap).
            4 if next < last => {
                sub.sent += 1;
                vec![]
            }
            _ => {
                sub.sent += 1;
                vec![one(ev(next))]
            }
        };
        r.head = r.head.max(sub.sent);
        out
    };
    for f in &frames {
        if !c.send(f).await {
            return;
        }
    }
    // Occasional delays between frames.
    if rng.random_bool(0.05) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1..4))).await;
    }
}

struct AppRun {
    cursor: u64,
    state: RunSnapshot,
    done: bool,
}

async fn run_case(case: Case) -> Result<(), TestCaseError> {
    let runs: Vec<RunLog> = case
        .events_per_run
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let id = run(&format!("run-{i}"));
            RunLog {
                events: (1..=*n).map(|s| event(&id, s, *n)).collect(),
                id,
                epoch: epoch("g0"),
                generation: 0,
                head: 0,
                trimmed: 0,
            }
        })
        .collect();
    let model: Shared = Arc::new(Mutex::new(Model {
        case: case.clone(),
        runs,
        terminal_sent_at: None,
    }));
    let m2 = model.clone();
    let server = TestServer::start(move |c| play(c, m2.clone())).await;
    let mut cfg = server.config(case.seed);
    cfg.backoff.max_attempts = 1_000;
    cfg.liveness_grace = Duration::from_millis(30);
    cfg.ordering.gap_timeout = Duration::from_millis(20);
    cfg.ordering.gap_buffer_events = case.gap_buffer;
    let mut app: BTreeMap<RunId, AppRun> = BTreeMap::new();
    for r in &model.lock().unwrap().runs {
        cfg.subscriptions
            .push(SubscriptionRequest::new(r.id.clone()));
        app.insert(
            r.id.clone(),
            AppRun {
                cursor: 0,
                state: RunSnapshot::empty(r.id.clone(), r.epoch.clone()),
                done: false,
            },
        );
    }
    let mut client = Client::connect(cfg);
    let mut failed = false;
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = client.next().await {
            match ev {
                ClientEvent::Event(e) => {
                    let a = app.get_mut(&e.run_id).expect("subscribed run");
                    prop_assert_eq!(
                        e.seq,
                        a.cursor + 1,
                        "run {}: exactly once, in order",
                        e.run_id
                    );
                    prop_assert!(!a.done, "event after the terminal status");
                    a.state.apply(&e);
                    a.cursor = e.seq;
                    TOTALS.lock().unwrap().events += 1;
                    a.done = e.payload.is_terminal();
                }
                ClientEvent::Reset(r) => {
                    TOTALS.lock().unwrap().resets += 1;
                    let a = app.get_mut(&r.run_id).expect("subscribed run");
                    let expect = {
                        let m = model.lock().unwrap();
                        let log = m.runs.iter().find(|l| l.id == r.run_id).expect("run");
                        prop_assert!(
                            r.snapshot.as_of_seq >= a.cursor,
                            "a reset never goes back here"
                        );
                        let mut s = log.snapshot(r.snapshot.as_of_seq);
                        s.epoch = r.epoch.clone();
                        s
                    };
                    prop_assert_eq!(&r.snapshot, &expect);
                    a.cursor = r.snapshot.as_of_seq;
                    a.done = r.snapshot.is_terminal();
                    a.state = r.snapshot.clone();
                }
                ClientEvent::State(s) if s.state == ConnectionState::Failed => {
                    prop_assert!(
                        case.terminal_on_conn.is_some(),
                        "failed without a terminal close"
                    );
                    failed = true;
                }
                ClientEvent::Error(e) if e.terminal => {
                    prop_assert!(failed, "the terminal error follows the failed state");
                    prop_assert_eq!(e.code.as_str(), "unauthorized", "{:?}", e);
                }
                _ => {}
            }
            if !failed && app.values().all(|a| a.done) {
                client.handle().close();
            }
        }
        Ok(())
    })
    .await;
    let Ok(result) = outcome else {
        let cursors: Vec<_> = app.iter().map(|(r, a)| (r.clone(), a.cursor)).collect();
        return Err(TestCaseError::fail(format!(
            "case did not finish in 30 s; app cursors {cursors:?}, connections {}",
            server.conn_count()
        )));
    };
    result?;
    client.join().await;
    {
        let mut t = TOTALS.lock().unwrap();
        t.cases += 1;
        t.connections += server.conn_count() as u64;
        t.terminal += u64::from(failed);
    }
    let m = model.lock().unwrap();
    if failed {
        let at = m.terminal_sent_at.expect("terminal close sent");
        prop_assert_eq!(
            server.conn_count(),
            at,
            "reconnected after a terminal close"
        );
    } else {
        for log in &m.runs {
            let a = &app[&log.id];
            prop_assert_eq!(a.cursor, log.last());
            let mut want = log.snapshot(log.last());
            want.epoch = a.state.epoch.clone();
            prop_assert_eq!(&a.state, &want, "folded state of {}", log.id);
        }
    }
    Ok(())
}

#[test]
fn rw_order_rw_resume_rw_reconnect_model_under_random_faults() {
    let cases: u32 = std::env::var("RUNWIRE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let seed: u64 = std::env::var("RUNWIRE_PROPTEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x52_57_43_4c);
    println!("proptest: {cases} cases, RUNWIRE_PROPTEST_SEED={seed}");
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |case| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run_case(case))
    });
    println!("exercised: {:?}", TOTALS.lock().unwrap());
    if let Err(e) = result {
        panic!("{e}\nreplay with RUNWIRE_PROPTEST_SEED={seed}");
    }
}
