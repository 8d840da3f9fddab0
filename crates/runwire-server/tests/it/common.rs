//! Test harness: an in-process server on port 0, a raw WebSocket client and an HTTP
//! producer.

use std::{sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use runwire_protocol::{
    ErrorFrame, Event, RunId, ServerMessage, Welcome, codec::decode_server_message,
};
use runwire_server::{EventStore, MemoryStore, RunningServer, Server, ServerConfig};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, protocol::CloseFrame},
};

/// Opens a TCP connection and does the WebSocket handshake (HTTP/1.1 upgrade) by hand.
pub(crate) async fn raw_upgrade(server: &RunningServer) -> TcpStream {
    let mut tcp = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        runwire_protocol::STREAM_PATH,
        server.local_addr()
    );
    tcp.write_all(req.as_bytes()).await.expect("write request");
    // Byte by byte, so that nothing after the response head is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = tokio::time::timeout(WAIT, tcp.read_u8())
            .await
            .expect("response within the wait bound")
            .expect("response head");
        head.push(b);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

/// Upper bound for any single wait; a failing test fails after this, a passing test
/// never waits for it.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// An HTTP client (reqwest is built with rustls and no provider of its own, so ring is
/// made the process default first).
pub(crate) fn http_client() -> reqwest::Client {
    let _ = runwire_server::tls_provider().install_default();
    reqwest::Client::new()
}

/// A config for tests: port 0 and the spec defaults otherwise.
pub(crate) fn config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        close_timeout_ms: 2_000,
        ..ServerConfig::default()
    }
}

pub(crate) async fn start(config: ServerConfig) -> RunningServer {
    start_with(config, Arc::new(MemoryStore::new())).await
}

pub(crate) async fn start_with(config: ServerConfig, store: Arc<dyn EventStore>) -> RunningServer {
    Server::bind(config, store).await.expect("server starts")
}

pub(crate) fn run(id: &str) -> RunId {
    RunId::new(id).expect("run id")
}

/// What a client sees.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // test code; mirrors ServerMessage
pub(crate) enum Frame {
    Msg(ServerMessage),
    Close(Option<u16>, String),
}

pub(crate) struct Client {
    pub(crate) ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub(crate) async fn connect(server: &RunningServer) -> Self {
        Self::connect_opts(server, None, None).await
    }

    /// Connects with an optional `Authorization: Bearer` header and an optional small
    /// receive buffer (to make a slow consumer).
    pub(crate) async fn connect_opts(
        server: &RunningServer,
        bearer: Option<&str>,
        recv_buffer: Option<u32>,
    ) -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        if let Some(n) = recv_buffer {
            socket.set_recv_buffer_size(n).expect("rcvbuf");
        }
        let stream = socket.connect(server.local_addr()).await.expect("connect");
        let mut req = server.ws_url().into_client_request().expect("request");
        if let Some(t) = bearer {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().expect("hdr"));
        }
        let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream))
            .await
            .expect("upgrade");
        Self { ws }
    }

    /// Connects over TLS (`wss://`), trusting `tls`'s roots.
    pub(crate) async fn connect_tls(
        server: &RunningServer,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            server.ws_url(),
            None,
            true,
            Some(tokio_tungstenite::Connector::Rustls(tls)),
        )
        .await?;
        Ok(Self { ws })
    }

    pub(crate) async fn send(&mut self, v: Value) {
        self.send_text(v.to_string()).await;
    }

    pub(crate) async fn send_text(&mut self, t: String) {
        self.ws.send(Message::text(t)).await.expect("send");
    }

    /// The next frame (server pings are returned too).
    pub(crate) async fn recv(&mut self) -> Frame {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame within the wait bound");
            match m {
                Some(Ok(Message::Text(t))) => {
                    return Frame::Msg(
                        decode_server_message(t.as_bytes(), usize::MAX)
                            .unwrap_or_else(|e| panic!("server sent an invalid frame {t}: {e}")),
                    );
                }
                Some(Ok(Message::Close(c))) => {
                    return Frame::Close(
                        c.as_ref().map(|c: &CloseFrame| u16::from(c.code)),
                        c.map(|c| c.reason.to_string()).unwrap_or_default(),
                    );
                }
                Some(Ok(Message::Binary(_))) => panic!("server sent a binary frame"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Frame::Close(None, e.to_string()),
                None => return Frame::Close(None, "eof".into()),
            }
        }
    }

    /// The next message, answering server pings on the way.
    pub(crate) async fn msg(&mut self) -> ServerMessage {
        loop {
            match self.recv().await {
                Frame::Msg(ServerMessage::Ping(p)) => {
                    self.send(json!({"type": "pong", "id": p.id})).await;
                }
                Frame::Msg(m) => return m,
                Frame::Close(c, r) => panic!("unexpected close {c:?} {r}"),
            }
        }
    }

    pub(crate) async fn hello(&mut self, subs: Value) -> Welcome {
        self.send(json!({"type": "hello", "versions": ["1.0"], "subscriptions": subs}))
            .await;
        match self.msg().await {
            ServerMessage::Welcome(w) => w,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub(crate) async fn hello_token(&mut self, token: &str) -> ServerMessage {
        self.send(json!({"type": "hello", "versions": ["1.0"], "token": token}))
            .await;
        self.msg().await
    }

    /// Expects an error frame followed by a close with its close code.
    pub(crate) async fn expect_error_close(&mut self, code: &str, close: u16) -> ErrorFrame {
        let e = loop {
            match self.recv().await {
                Frame::Msg(ServerMessage::Error(e)) => break e,
                Frame::Msg(ServerMessage::Ping(_)) => {}
                Frame::Msg(ServerMessage::Event(_) | ServerMessage::Batch(_)) => {}
                other => panic!("expected error {code}, got {other:?}"),
            }
        };
        assert_eq!(e.code.as_str(), code, "{e:?}");
        assert_eq!(e.close_code, Some(close), "{e:?}");
        match self.recv().await {
            Frame::Close(Some(c), reason) => {
                assert_eq!(c, close);
                assert_eq!(reason, code, "close reason is the error code (RW-CLOSE-6)");
            }
            other => panic!("expected close {close}, got {other:?}"),
        }
        e
    }

    /// Expects an error frame that keeps the connection open.
    pub(crate) async fn expect_error(&mut self, code: &str) -> ErrorFrame {
        match self.msg().await {
            ServerMessage::Error(e) => {
                assert_eq!(e.code.as_str(), code, "{e:?}");
                assert_eq!(e.close_code, None, "{e:?}");
                e
            }
            other => panic!("expected error {code}, got {other:?}"),
        }
    }

    /// Collects events of `run` until `last` arrives; checks gapless order from
    /// `after + 1` (`RW-ORDER-1`, `RW-ORDER-2`).
    pub(crate) async fn events_until(&mut self, run: &RunId, after: u64, last: u64) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        let mut next = after + 1;
        while next <= last {
            let evs = match self.msg().await {
                ServerMessage::Event(f) => vec![f.event],
                ServerMessage::Batch(b) => b.events,
                other => panic!("expected events, got {other:?}"),
            };
            for e in evs {
                if &e.run_id != run {
                    continue;
                }
                assert_eq!(e.seq, next, "gapless, no duplicates, in order");
                next += 1;
                out.push(e);
            }
        }
        out
    }

    /// Sends a ping and waits for its pong; every event in between is returned. Used
    /// to prove that nothing else is pending (the server answers in order).
    pub(crate) async fn sync(&mut self, id: &str) -> Vec<ServerMessage> {
        self.send(json!({"type": "ping", "id": id})).await;
        let mut seen = Vec::new();
        loop {
            match self.msg().await {
                ServerMessage::Pong(p) if p.id == id => return seen,
                other => seen.push(other),
            }
        }
    }
}

pub(crate) struct Producer {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    pub(crate) token: Option<String>,
}

impl Producer {
    pub(crate) fn new(server: &RunningServer) -> Self {
        Self {
            base: server.http_url(),
            http: crate::common::http_client(),
            token: None,
        }
    }

    pub(crate) fn with_token(mut self, t: &str) -> Self {
        self.token = Some(t.to_owned());
        self
    }

    fn req(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub(crate) async fn post_raw(&self, run: &str, body: String) -> (u16, Value) {
        let r = self
            .req(
                self.http
                    .post(format!("{}/v1/runs/{run}/events", self.base)),
            )
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("http");
        let status = r.status().as_u16();
        (status, r.json().await.expect("json body"))
    }

    pub(crate) async fn append(&self, run: &str, events: Value) -> (u16, Value) {
        self.post_raw(run, json!({ "events": events }).to_string())
            .await
    }

    /// Appends and asserts success.
    pub(crate) async fn ok(&self, run: &str, events: Value) -> Value {
        let (s, v) = self.append(run, events).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Appends `n` progress events, one request each or in one request.
    pub(crate) async fn progress(&self, run: &str, n: usize) -> Value {
        let events: Vec<Value> = (0..n)
            .map(|i| json!({"type": "run.progress", "data": {"current": i, "message": "working"}}))
            .collect();
        self.ok(run, Value::Array(events)).await
    }

    /// A GET whose answer is text (`/metrics`).
    pub(crate) async fn get_text(&self, path: &str) -> String {
        self.req(self.http.get(format!("{}{path}", self.base)))
            .send()
            .await
            .expect("http")
            .text()
            .await
            .expect("text body")
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .req(self.http.get(format!("{}{path}", self.base)))
            .send()
            .await
            .expect("http");
        let status = r.status().as_u16();
        (status, r.json().await.expect("json body"))
    }
}

impl Producer {
    /// Appends one progress event and returns the status.
    pub(crate) async fn progress_status(&self, run: &str) -> u16 {
        self.append(
            run,
            json!([{"type": "run.progress", "data": {"percent": 1}}]),
        )
        .await
        .0
    }
}
