//! A small scripted WebSocket server for the client tests, built on
//! `runwire-protocol` and tokio-tungstenite (not the reference server): each test
//! supplies an async handler that plays one connection.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use runwire_client::{ClientConfig, ClientEvent, ConnectionState};
use runwire_protocol::{
    ClientMessage, Epoch, ErrorFrame, Event, EventFrame, EventId, EventPayload, Hello, Limits,
    RunId, RunStatus, RunStatusData, ServerMessage, Subscribed, Timestamp, Welcome, codec,
};
use tokio::{net::TcpListener, sync::mpsc, time::Instant};
use tokio_tungstenite::{
    WebSocketStream, accept_async,
    tungstenite::{
        Message,
        protocol::{CloseFrame, frame::coding::CloseCode as WsCloseCode},
    },
};

pub(crate) type BoxFut = Pin<Box<dyn Future<Output = ()> + Send>>;
type Handler = Arc<dyn Fn(Conn) -> BoxFut + Send + Sync>;

/// What the server saw of one connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnRecord {
    pub(crate) accepted_at: Instant,
    pub(crate) hello: Option<Hello>,
    /// The close code the client sent, if it closed.
    pub(crate) client_close: Option<u16>,
}

#[derive(Default)]
pub(crate) struct Log {
    pub(crate) conns: Vec<ConnRecord>,
}

pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) log: Arc<Mutex<Log>>,
    accepted: mpsc::UnboundedReceiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Binds 127.0.0.1:0 and serves every connection with `handler`.
    pub(crate) async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |c| Box::pin(handler(c)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Log::default()));
        let (tx, accepted) = mpsc::unbounded_channel();
        let log2 = log.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let index = {
                    let mut l = log2.lock().unwrap();
                    l.conns.push(ConnRecord {
                        accepted_at: Instant::now(),
                        hello: None,
                        client_close: None,
                    });
                    l.conns.len() - 1
                };
                let _ = tx.send(index);
                let handler = handler.clone();
                let log = log2.clone();
                tokio::spawn(async move {
                    let Ok(ws) = accept_async(tcp).await else {
                        return;
                    };
                    handler(Conn { ws, index, log }).await;
                });
            }
        });
        Self {
            addr,
            log,
            accepted,
            task,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("ws://{}/v1/stream", self.addr)
    }

    /// A client configuration with short timers for tests.
    pub(crate) fn config(&self, seed: u64) -> ClientConfig {
        let mut c = ClientConfig::new(self.url());
        c.seed = Some(seed);
        c.backoff.base_ms = 1;
        c.backoff.cap_ms = 4;
        c.liveness_grace = Duration::from_millis(50);
        c.stable_session = Duration::from_secs(30);
        c.ordering.gap_timeout = Duration::from_millis(30);
        c.welcome_timeout = Duration::from_secs(5);
        c
    }

    /// Waits for the next accepted connection (bounded by a generous timeout).
    pub(crate) async fn next_conn(&mut self) -> usize {
        tokio::time::timeout(Duration::from_secs(10), self.accepted.recv())
            .await
            .expect("a connection within 10 s")
            .expect("server running")
    }

    pub(crate) fn conn_count(&self) -> usize {
        self.log.lock().unwrap().conns.len()
    }

    pub(crate) fn record(&self, i: usize) -> ConnRecord {
        self.log.lock().unwrap().conns[i].clone()
    }
}

/// One accepted connection.
pub(crate) struct Conn {
    pub(crate) ws: WebSocketStream<tokio::net::TcpStream>,
    pub(crate) index: usize,
    log: Arc<Mutex<Log>>,
}

impl Conn {
    /// The next client message; `None` when the client closed or the connection
    /// ended. Text that does not decode panics the handler (a client bug).
    pub(crate) async fn recv(&mut self) -> Option<ClientMessage> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(t)) => {
                    let m = codec::decode_client_message(t.as_bytes(), 1 << 20)
                        .unwrap_or_else(|e| panic!("client sent an invalid frame {t}: {e}"));
                    return Some(m);
                }
                Ok(Message::Close(cf)) => {
                    let code = cf.map(|c| u16::from(c.code));
                    self.log.lock().unwrap().conns[self.index].client_close = code;
                    return None;
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Reads `hello` (records it) and returns it.
    pub(crate) async fn hello(&mut self) -> Hello {
        match self.recv().await {
            Some(ClientMessage::Hello(h)) => {
                self.log.lock().unwrap().conns[self.index].hello = Some(h.clone());
                h
            }
            other => panic!("expected hello, got {other:?}"),
        }
    }

    pub(crate) async fn send(&mut self, msg: &ServerMessage) -> bool {
        self.send_text(codec::encode(msg)).await
    }

    pub(crate) async fn send_text(&mut self, text: impl Into<String>) -> bool {
        self.ws.send(Message::text(text.into())).await.is_ok()
    }

    pub(crate) async fn welcome(&mut self, heartbeat_ms: u64) -> bool {
        self.send(&welcome(heartbeat_ms)).await
    }

    pub(crate) async fn error(&mut self, e: ErrorFrame) -> bool {
        self.send(&ServerMessage::Error(e)).await
    }

    /// Sends a close frame with `code` and drains until the client answers.
    pub(crate) async fn close(&mut self, code: u16) {
        let frame = CloseFrame {
            code: WsCloseCode::from(code),
            reason: "".into(),
        };
        let _ = self.ws.close(Some(frame)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Waits until the client goes away, answering pings meanwhile? No: just reads.
    pub(crate) async fn drain(&mut self) {
        while self.recv().await.is_some() {}
    }
}

pub(crate) fn run(id: &str) -> RunId {
    RunId::new(id).expect("run id")
}

pub(crate) fn epoch(e: &str) -> Epoch {
    Epoch::new(e).expect("epoch")
}

pub(crate) fn welcome(heartbeat_ms: u64) -> ServerMessage {
    ServerMessage::Welcome(Welcome {
        version: "1.0".into(),
        session_id: "s-test".into(),
        heartbeat_interval_ms: heartbeat_ms,
        pong_timeout_ms: 1_000,
        batch_window_ms: 0,
        replay_window_events: 1_000,
        limits: Limits {
            max_frame_bytes: 65_536,
            max_event_bytes: 65_536,
            max_subscriptions: 100,
            max_messages_per_second: 1_000,
            slow_consumer_max_bytes: None,
            slow_consumer_max_age_ms: None,
        },
        server: None,
    })
}

pub(crate) fn subscribed(run_id: &RunId, epoch: &Epoch, after: u64, head: u64) -> ServerMessage {
    ServerMessage::Subscribed(Subscribed {
        run_id: run_id.clone(),
        epoch: epoch.clone(),
        after_seq: after,
        head_seq: head,
    })
}

/// Event `seq` of a test log: progress events, with a terminal status at `last`.
pub(crate) fn event(run_id: &RunId, seq: u64, last: u64) -> Event {
    let payload: EventPayload = if seq == last {
        RunStatusData {
            status: RunStatus::Completed,
            reason: None,
        }
        .into()
    } else if seq % 7 == 3 {
        EventPayload::from_type_and_data(
            "acme.custom.thing",
            serde_json::json!({"n": seq, "nested": {"k": [1, 2]}}),
        )
        .expect("custom event")
    } else {
        runwire_protocol::ProgressData {
            percent: Some((seq * 100 / last.max(1)).min(100) as f64),
            step: Some(format!("step {seq}")),
            ..Default::default()
        }
        .into()
    };
    Event {
        event_id: EventId::new(format!("{run_id}-{seq}")).expect("event id"),
        run_id: run_id.clone(),
        seq,
        time: Timestamp::new(format!(
            "2026-11-22T10:{:02}:{:02}Z",
            (seq / 60) % 60,
            seq % 60
        ))
        .expect("time"),
        payload,
    }
}

pub(crate) fn event_frame(run_id: &RunId, seq: u64, last: u64) -> ServerMessage {
    ServerMessage::Event(EventFrame {
        event: event(run_id, seq, last),
    })
}

/// Collects client events until `stop` says so (bounded by 10 s).
pub(crate) async fn collect_until(
    client: &mut runwire_client::Client,
    mut stop: impl FnMut(&ClientEvent) -> bool,
) -> Vec<ClientEvent> {
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = client.next().await {
            let done = stop(&ev);
            out.push(ev);
            if done {
                return;
            }
        }
    })
    .await;
    assert!(r.is_ok(), "timed out; got so far: {out:#?}");
    out
}

pub(crate) fn is_state(ev: &ClientEvent, s: ConnectionState) -> bool {
    matches!(ev, ClientEvent::State(c) if c.state == s)
}

pub(crate) fn seqs(evs: &[ClientEvent], run_id: &RunId) -> Vec<u64> {
    evs.iter()
        .filter_map(|e| match e {
            ClientEvent::Event(e) if &e.run_id == run_id => Some(e.seq),
            _ => None,
        })
        .collect()
}

pub(crate) fn is_terminal_error(ev: &ClientEvent) -> bool {
    matches!(ev, ClientEvent::Error(e) if e.terminal)
}

impl TestServer {
    /// Waits (bounded) until the server has read connection `i`'s close frame.
    pub(crate) async fn client_close(&self, i: usize) -> Option<u16> {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(c) = self.record(i).client_close {
                    return c;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .ok()
    }
}
