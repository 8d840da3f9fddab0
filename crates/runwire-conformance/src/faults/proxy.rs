//! The fault-injecting WebSocket proxy: accepts a connection, opens one upstream,
//! and relays frames both ways through [`transform`](super::transform).

use super::*;

/// `head` without its `name` header lines.
pub(super) fn without_header(head: &[u8], name: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    text.split_inclusive("\r\n")
        .filter(|l| {
            l.split_once(':')
                .is_none_or(|(n, _)| !n.trim().eq_ignore_ascii_case(name))
        })
        .collect::<String>()
        .into_bytes()
}

/// Reads an HTTP head byte by byte (so nothing after it is consumed).
pub(super) async fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.ok()? == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.push(b[0]);
    }
    Some(buf)
}

/// A running fault-injecting WebSocket proxy.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    pub(super) shared: Arc<Mutex<Shared>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub(super) async fn start(upstream: SocketAddr, fault: Fault) -> Result<Self, Error> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| Error::Target(format!("proxy bind: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Target(format!("proxy addr: {e}")))?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let sh = Arc::clone(&shared);
        let count = Arc::new(AtomicU32::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let conn = count.fetch_add(1, Ordering::SeqCst) + 1;
                let sh = Arc::clone(&sh);
                tokio::spawn(async move {
                    let _ = relay(client, upstream, fault, conn, sh).await;
                });
            }
        });
        Ok(Self { addr, task, shared })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

pub(super) async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: Fault,
    conn: u32,
    shared: Arc<Mutex<Shared>>,
) -> Option<()> {
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        return None;
    };
    let mut req = read_head(&mut client).await?;
    if fault == Fault::Server(ServerFault::AnyOrigin) {
        req = without_header(&req, "origin");
    }
    up.write_all(&req).await.ok()?;
    let resp = read_head(&mut up).await?;
    client.write_all(&resp).await.ok()?;
    if !resp.starts_with(b"HTTP/1.1 101") {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
        return None;
    }
    let cws = WebSocketStream::from_raw_socket(client, Role::Server, None).await;
    let uws = WebSocketStream::from_raw_socket(up, Role::Client, None).await;
    let (c_tx, c_rx) = cws.split();
    let (u_tx, u_rx) = uws.split();
    let st = Arc::new(Mutex::new(ConnState {
        conn,
        ..ConnState::default()
    }));
    let (to_client, to_client_rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let (to_server, to_server_rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let keep = matches!(fault, Fault::Client(ClientFault::NoLivenessTimeout))
        .then(|| tokio::spawn(keep_fed(to_client.clone())));
    let a = tokio::spawn(from_client(
        c_rx,
        Relay {
            fault,
            st: Arc::clone(&st),
            shared: Arc::clone(&shared),
            to_client: to_client.clone(),
            to_server: to_server.clone(),
        },
    ));
    let b = tokio::spawn(from_server(
        u_rx,
        Relay {
            fault,
            st,
            shared,
            to_client,
            to_server,
        },
    ));
    let w1 = tokio::spawn(write_out(to_client_rx, c_tx));
    let w2 = tokio::spawn(write_out(to_server_rx, u_tx));
    let _ = tokio::join!(a, b, w1, w2);
    if let Some(k) = keep {
        k.abort();
    }
    Some(())
}

/// The read half of one side of a relayed connection.
type Reader = futures_util::stream::SplitStream<WebSocketStream<TcpStream>>;
/// The write half of one side of a relayed connection.
type Writer = futures_util::stream::SplitSink<WebSocketStream<TcpStream>, Message>;
/// The queue of frames to write to one side.
type Queue = tokio::sync::mpsc::UnboundedSender<Message>;

/// What both directions of one relayed connection share.
struct Relay {
    fault: Fault,
    st: Arc<Mutex<ConnState>>,
    shared: Arc<Mutex<Shared>>,
    to_client: Queue,
    to_server: Queue,
}

impl Relay {
    /// Passes `m` from `from` through the fault and queues what comes out, both ways.
    /// `false` once the connection state is poisoned.
    fn pass(&self, from: From, m: Message) -> bool {
        let (fwd, back) = {
            let Ok(mut g) = self.st.lock() else {
                return false;
            };
            transform(self.fault, from, &mut g, &self.shared, m)
        };
        let (ahead, behind) = match from {
            From::Client => (&self.to_server, &self.to_client),
            From::Server => (&self.to_client, &self.to_server),
        };
        for f in fwd {
            let _ = ahead.send(f);
        }
        for b in back {
            let _ = behind.send(b);
        }
        true
    }
}

/// Relays the client's frames to the server.
async fn from_client(mut c_rx: Reader, r: Relay) {
    while let Some(Ok(m)) = c_rx.next().await {
        if matches!(m, Message::Ping(_) | Message::Pong(_)) {
            continue;
        }
        if !r.pass(From::Client, m) {
            return;
        }
    }
    let _ = r.to_server.send(Message::Close(None));
}

/// Relays the server's frames to the client.
async fn from_server(mut u_rx: Reader, r: Relay) {
    let fault = r.fault;
    // ShutdownDropsPending: event frames wait here like a pending batch, and a
    // server_shutdown error discards what is waiting.
    let pending_batch = fault == Fault::Server(ServerFault::ShutdownDropsPending);
    let mut held: Vec<Message> = Vec::new();
    let far = tokio::time::Instant::now() + std::time::Duration::from_secs(86_400);
    let release = tokio::time::sleep_until(far);
    tokio::pin!(release);
    loop {
        let m = tokio::select! {
            m = u_rx.next() => match m {
                Some(Ok(m)) => m,
                _ => break,
            },
            () = &mut release, if !held.is_empty() => {
                for h in held.drain(..) {
                    let _ = r.to_client.send(h);
                }
                release.as_mut().reset(far);
                continue;
            }
        };
        if matches!(m, Message::Ping(_) | Message::Pong(_)) {
            continue;
        }
        if let Some(hold) = urgent_hold(fault, &r.st, &m) {
            tokio::time::sleep(hold).await;
        }
        if pending_batch && let Message::Text(t) = &m {
            let t = t.as_str();
            if t.contains("\"type\":\"event\"") || t.contains("\"type\":\"batch\"") {
                if held.is_empty() {
                    release
                        .as_mut()
                        .reset(tokio::time::Instant::now() + std::time::Duration::from_millis(200));
                }
                held.push(m);
                continue;
            }
            if t.contains("\"server_shutdown\"") {
                held.clear();
            }
        }
        if !r.pass(From::Server, m) {
            return;
        }
    }
    for h in held.drain(..) {
        let _ = r.to_client.send(h);
    }
    let _ = r.to_client.send(Message::Close(None));
}

/// The broken client of [`ClientFault::NoLivenessTimeout`] "never notices silence":
/// the proxy keeps it fed with pings of its own.
async fn keep_fed(tc: Queue) {
    let mut n = 0u64;
    let mut iv = tokio::time::interval(std::time::Duration::from_millis(50));
    loop {
        iv.tick().await;
        n += 1;
        if tc
            .send(text(&json!({"type": "ping", "id": format!("keep-{n}")})))
            .is_err()
        {
            return;
        }
    }
}

/// Writes the queued frames to one side until a close frame or a failed write.
async fn write_out(mut rx: tokio::sync::mpsc::UnboundedReceiver<Message>, mut tx: Writer) {
    while let Some(m) = rx.recv().await {
        let close = matches!(m, Message::Close(_));
        if tx.send(m).await.is_err() || close {
            break;
        }
    }
    let _ = tx.close().await;
}
