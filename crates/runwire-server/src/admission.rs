//! Connection admission: deadlines and limits for connections that have not yet sent
//! `hello` (spec §17, `RW-SEC-9`, `RW-SEC-11` to `RW-SEC-14`).
//!
//! The server drives every accepted connection itself with hyper's HTTP/1.1 server
//! (as `axum::serve` did, which exposes no timeouts; this build serves HTTP/1.1 only,
//! as before), so that:
//!
//! - **Header deadline** (`header_timeout_ms`, `RW-SEC-11`): the whole request head
//!   must arrive within it, counted from the moment the server starts reading it (at
//!   accept for the first request, after the previous response on a keep-alive
//!   connection). hyper's `header_read_timeout` closes the connection otherwise, so a
//!   silent socket, a slowloris head and an idle keep-alive connection all end.
//! - **Handshake deadline** (`handshake_timeout_ms`, `RW-SEC-11`): from accept, a
//!   connection must within it either have sent a complete request head that is not an
//!   upgrade, or have been answered on its upgrade request (`101`, or a refusal).
//!   Otherwise it is closed. After the upgrade the hello deadline (`RW-CONN-3`) takes
//!   over. With TLS (`crate::tls`) the TLS handshake comes first and counts against
//!   this deadline too; the header deadline starts after it.
//! - **Keep-alive idle** (`keep_alive_timeout_ms`): an HTTP/1.1 connection with no
//!   request in progress is closed gracefully after this long without a request (at
//!   most `header_timeout_ms`, which bounds the wait for the next head anyway).
//! - **Body deadline** (`body_timeout_ms`, `RW-SEC-13`): an append's whole body must
//!   arrive within it after its head ([`read_body`]); the answer is otherwise 408
//!   `invalid_request` and the connection closes.
//! - **Declared size** (`RW-SEC-14`): an append whose `Content-Length` exceeds
//!   `max_request_bytes` is answered 413 `invalid_request` before any of its body is
//!   read ([`read_body`]); a client that sent `Expect: 100-continue` never sends it.
//! - **Limits** (`max_connections`, `max_pre_hello_per_address`, `RW-SEC-12`): a
//!   connection over either limit is refused at accept, before anything is read: the
//!   server writes `503 Service Unavailable` with `Retry-After` and the
//!   `server_overloaded` error body at once, half-closes, and reads what the client
//!   still sends until it closes or `header_timeout_ms` (at most `close_timeout_ms`)
//!   passes (a lingering close, so that the answer is not destroyed by a reset). At
//!   most [`REFUSALS_LINGERING_MAX`] refusals linger at once; beyond that a refused
//!   socket is closed right after the answer is written, so a flood of connections
//!   costs the server a bounded number of file descriptors.
//!
//! A connection counts as *pre-hello* for its source address from accept until it
//! sends `hello` on its WebSocket, or until its first request head that is not an
//! upgrade is complete (or its upgrade request is refused): such a connection is an
//! ordinary HTTP client, bounded by the keep-alive idle deadline.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    pin::pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::ConnectInfo,
    http::{HeaderMap, Request, StatusCode, header},
};
use futures_util::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{io::AsyncWriteExt, sync::watch, time::Instant};

use crate::{
    config::ServerConfig,
    linger::{self, LingerHandle, LingerListener, LingerStream, Transport},
    metrics::Metrics,
    tls::Tls,
};

/// At most this many refused connections wait in their lingering close at once; more
/// refusals are closed right after their answer is written.
pub(crate) const REFUSALS_LINGERING_MAX: usize = 64;

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` connections are open.
    TooManyConnections,
    /// `max_pre_hello_per_address` connections from this address have not sent
    /// `hello` yet.
    TooManyPreHello,
}

/// The connection counts and limits of one server.
#[derive(Debug)]
pub(crate) struct Admission {
    max_connections: usize,
    max_pre_hello_per_address: usize,
    open: AtomicUsize,
    pre_hello: Mutex<BTreeMap<IpAddr, usize>>,
    refusing: AtomicUsize,
}

/// One admitted connection's place in the counts; released when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    pre_hello: AtomicBool,
}

impl Ticket {
    /// The connection is no longer pre-hello (it sent `hello`, or is a plain HTTP
    /// client): it stops counting against its address's pre-hello limit.
    pub(crate) fn hello_sent(&self) {
        if self.pre_hello.swap(false, Ordering::AcqRel) {
            let mut map = self
                .admission
                .pre_hello
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&self.ip);
                }
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.hello_sent();
        self.admission.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// The limits of `config` (0 disables a limit).
    pub(crate) fn new(config: &ServerConfig) -> Self {
        Self {
            max_connections: usize::try_from(config.max_connections).unwrap_or(usize::MAX),
            max_pre_hello_per_address: usize::try_from(config.max_pre_hello_per_address)
                .unwrap_or(usize::MAX),
            open: AtomicUsize::new(0),
            pre_hello: Mutex::new(BTreeMap::new()),
            refusing: AtomicUsize::new(0),
        }
    }

    /// Admits a connection from `ip`, or says why not (`RW-SEC-12`).
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Arc<Ticket>, Refusal> {
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        if self.max_connections > 0 && open >= self.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::TooManyConnections);
        }
        {
            let mut map = self.pre_hello.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(ip).or_insert(0);
            if self.max_pre_hello_per_address > 0 && *n >= self.max_pre_hello_per_address {
                drop(map);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::TooManyPreHello);
            }
            *n += 1;
        }
        Ok(Arc::new(Ticket {
            admission: Arc::clone(self),
            ip,
            pre_hello: AtomicBool::new(true),
        }))
    }
}

/// The refusal written at accept: 503 with `Retry-After` and the spec's error body
/// (`RW-INGEST-20`, `RW-INGEST-21`, `RW-SEC-12`).
pub(crate) fn refusal_response(why: Refusal) -> Vec<u8> {
    let message = match why {
        Refusal::TooManyConnections => "the server has too many connections open; retry later",
        Refusal::TooManyPreHello => {
            "too many connections from this address have not sent hello yet; retry later"
        }
    };
    let body = serde_json::to_string(&runwire_protocol::http::HttpError::new(
        runwire_protocol::ErrorCode::ServerOverloaded,
        message,
    ))
    .unwrap_or_default();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Refuses an accepted connection. A plain connection gets the 503 at once (a fresh
/// socket's send buffer is empty, so the write does not block), then a short lingering
/// close if fewer than [`REFUSALS_LINGERING_MAX`] refusals linger already, else it is
/// closed at once. A TLS connection can only be answered after its TLS handshake, so it
/// is answered only within that same budget (handshake, answer and lingering close
/// bounded by `linger_for`), and closed at once beyond it.
fn refuse(
    admission: &Arc<Admission>,
    io: LingerStream,
    why: Refusal,
    linger_for: Duration,
    tls: Option<&Tls>,
) {
    let answer = refusal_response(why);
    tracing::debug!(?why, tls = tls.is_some(), "connection refused");
    let pending = match tls {
        None => {
            let Some(tcp) = io.into_tcp() else { return };
            if tcp.try_write(&answer).is_err() {
                return;
            }
            Ok(tcp)
        }
        Some(tls) => Err((io, tls.acceptor())),
    };
    if admission.refusing.fetch_add(1, Ordering::AcqRel) >= REFUSALS_LINGERING_MAX {
        admission.refusing.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let admission = Arc::clone(admission);
    tokio::spawn(async move {
        let transport = match pending {
            Ok(tcp) => Some(Transport::Plain(tcp)),
            Err((io, acceptor)) => {
                let answered = async move {
                    let mut io = io.start_tls(&acceptor).await.ok()?;
                    io.write_all(&answer).await.ok()?;
                    io.into_transport()
                };
                tokio::time::timeout(linger_for, answered)
                    .await
                    .ok()
                    .flatten()
            }
        };
        if let Some(mut transport) = transport {
            let _ = linger::linger(&mut transport, linger_for, 64 * 1024).await;
        }
        admission.refusing.fetch_sub(1, Ordering::AcqRel);
    });
}

/// The per-connection deadlines of a configuration.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    header: Duration,
    handshake: Duration,
    keep_alive: Duration,
    refusal_linger: Duration,
}

impl Deadlines {
    fn of(config: &ServerConfig) -> Self {
        let ms = Duration::from_millis;
        Self {
            header: ms(config.header_timeout_ms),
            handshake: ms(config.handshake_timeout_ms),
            keep_alive: ms(config.keep_alive_timeout_ms),
            refusal_linger: ms(config.header_timeout_ms.min(config.close_timeout_ms)),
        }
    }
}

/// What the connection loop and its requests share.
#[derive(Debug)]
struct ConnState {
    /// The handshake deadline no longer applies.
    handshaken: AtomicBool,
    /// Requests being answered.
    active: AtomicUsize,
    /// When the last request was answered, in ms since `start`.
    last_done_ms: AtomicU64,
    start: Instant,
}

impl ConnState {
    fn since_start_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Accepts and serves connections until `stop` turns true, then waits for every
/// connection task to end (each is told to shut down gracefully, like
/// `axum::serve(..).with_graceful_shutdown`).
pub(crate) async fn serve(
    mut listener: LingerListener,
    app: Router,
    config: &ServerConfig,
    tls: Option<Arc<Tls>>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let admission = Arc::new(Admission::new(config));
    let deadlines = Deadlines::of(config);
    let (close_tx, close_rx) = watch::channel(());
    loop {
        let (io, addr): (LingerStream, SocketAddr) = tokio::select! {
            conn = axum::serve::Listener::accept(&mut listener) => conn,
            _ = stop.wait_for(|v| *v) => break,
        };
        let accepted = Instant::now();
        match admission.admit(addr.ip()) {
            Ok(ticket) => {
                let app = app.clone();
                let stop = stop.clone();
                let close_rx = close_rx.clone();
                let acceptor = tls.as_deref().map(Tls::acceptor);
                let metrics = Arc::clone(&metrics);
                tokio::spawn(async move {
                    // The ticket counts the connection during its TLS handshake too.
                    let io = match acceptor {
                        None => Some(io),
                        Some(a) => {
                            let deadline = accepted + deadlines.handshake;
                            start_tls(io, &a, deadline, &metrics, stop.clone()).await
                        }
                    };
                    if let Some(io) = io {
                        let (io, handle) = io.admitted(ticket);
                        let conn = Conn {
                            app,
                            deadlines,
                            stop,
                            accepted,
                            metrics,
                        };
                        serve_connection(io, handle, conn).await;
                    }
                    drop(close_rx);
                });
            }
            Err(why) => {
                Metrics::inc(match why {
                    Refusal::TooManyConnections => &metrics.refused_connection_limit,
                    Refusal::TooManyPreHello => &metrics.refused_pre_hello_limit,
                });
                refuse(
                    &admission,
                    io,
                    why,
                    deadlines.refusal_linger,
                    tls.as_deref(),
                );
            }
        }
    }
    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
}

/// Runs an admitted connection's TLS handshake (`crate::tls`), which must end before
/// the handshake deadline (`RW-SEC-11`) and is abandoned when the server stops.
async fn start_tls(
    io: LingerStream,
    acceptor: &tokio_rustls::TlsAcceptor,
    deadline: Instant,
    metrics: &Metrics,
    mut stop: watch::Receiver<bool>,
) -> Option<LingerStream> {
    tokio::select! {
        r = tokio::time::timeout_at(deadline, io.start_tls(acceptor)) => match r {
            Ok(Ok(io)) => Some(io),
            Ok(Err(e)) => {
                Metrics::inc(&metrics.tls_handshake_failures);
                tracing::debug!(error = %e, "TLS handshake failed; closing the connection");
                None
            }
            Err(_) => {
                Metrics::inc(&metrics.handshake_timeouts);
                tracing::debug!("handshake deadline passed during the TLS handshake; closing the connection");
                None
            }
        },
        _ = stop.wait_for(|v| *v) => None,
    }
}

/// What serving one admitted connection needs besides its stream.
struct Conn {
    app: Router,
    deadlines: Deadlines,
    stop: watch::Receiver<bool>,
    /// When it was accepted: its deadlines count from then.
    accepted: Instant,
    metrics: Arc<Metrics>,
}

/// Serves one admitted connection with its deadlines, counted from `accepted`.
async fn serve_connection(io: LingerStream, handle: LingerHandle, conn: Conn) {
    let Conn {
        app,
        deadlines,
        mut stop,
        accepted,
        metrics,
    } = conn;
    let state = Arc::new(ConnState {
        handshaken: AtomicBool::new(false),
        active: AtomicUsize::new(0),
        last_done_ms: AtomicU64::new(0),
        start: accepted,
    });
    let svc_state = Arc::clone(&state);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = Arc::clone(&svc_state);
        let handle = handle.clone();
        let mut req = req.map(Body::new);
        let upgrade = req.headers().contains_key(header::UPGRADE);
        if !upgrade {
            // A plain HTTP request: its head is complete, so the handshake is over
            // and the connection is an ordinary client now.
            state.handshaken.store(true, Ordering::Release);
            handle.hello_sent();
        }
        req.extensions_mut().insert(ConnectInfo(handle.clone()));
        state.active.fetch_add(1, Ordering::AcqRel);
        let fut = tower_service::Service::call(&mut app.clone(), req);
        async move {
            let res = fut.await;
            if upgrade {
                state.handshaken.store(true, Ordering::Release);
                if res
                    .as_ref()
                    .is_ok_and(|r| r.status() != StatusCode::SWITCHING_PROTOCOLS)
                {
                    handle.hello_sent();
                }
            }
            state
                .last_done_ms
                .store(state.since_start_ms(), Ordering::Release);
            state.active.fetch_sub(1, Ordering::AcqRel);
            Ok::<_, Infallible>(res.unwrap_or_else(|e| match e {}))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(deadlines.header)
        .keep_alive(true);
    let mut conn = pin!(
        builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades()
    );
    let handshake = tokio::time::sleep_until(accepted + deadlines.handshake);
    let mut handshake = pin!(handshake);
    let idle = tokio::time::sleep_until(accepted + deadlines.keep_alive);
    let mut idle = pin!(idle);
    let mut closing = false;
    // Whether the handshake deadline has passed (and the connection survived it).
    let mut handshake_over = false;
    // The state the requests change is read when a timer fires: a `select!`
    // precondition is evaluated only when the `select!` starts.
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "connection ended");
                }
                break;
            }
            _ = stop.wait_for(|v| *v), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = &mut handshake, if !handshake_over => {
                if !state.handshaken.load(Ordering::Acquire) {
                    Metrics::inc(&metrics.handshake_timeouts);
                    tracing::debug!("handshake deadline passed; closing the connection");
                    break;
                }
                handshake_over = true;
            }
            () = &mut idle, if !closing => {
                if !state.handshaken.load(Ordering::Acquire)
                    || state.active.load(Ordering::Acquire) > 0
                {
                    idle.as_mut().reset(Instant::now() + deadlines.keep_alive);
                    continue;
                }
                let last = Duration::from_millis(state.last_done_ms.load(Ordering::Acquire));
                let due = state.start + last + deadlines.keep_alive;
                if Instant::now() >= due {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                } else {
                    idle.as_mut().reset(due);
                }
            }
        }
    }
}

/// Why an append body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The declared or received size exceeds `max_request_bytes`.
    TooLarge,
    /// The whole body did not arrive within `body_timeout_ms`.
    Timeout,
    /// The body could not be read.
    Read(String),
}

/// Reads an append's body (`RW-SEC-13`, `RW-SEC-14`): refuses a declared
/// `Content-Length` over `max` before reading any of it, reads at most `max` bytes,
/// and gives up when the whole body has not arrived within `timeout`.
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let collect = async move {
        let mut stream = body.into_data_stream();
        let mut first: Option<Bytes> = None;
        let mut buf: Vec<u8> = Vec::new();
        let mut len = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| BodyError::Read(e.to_string()))?;
            len = len.saturating_add(chunk.len());
            if len > max {
                return Err(BodyError::TooLarge);
            }
            match first.take() {
                None if buf.is_empty() => first = Some(chunk),
                None => buf.extend_from_slice(&chunk),
                Some(f) => {
                    let cap = declared.map_or(len, |d| usize::try_from(d).unwrap_or(len));
                    buf.reserve(cap.max(len));
                    buf.extend_from_slice(&f);
                    buf.extend_from_slice(&chunk);
                }
            }
        }
        Ok(first.unwrap_or_else(|| Bytes::from(buf)))
    };
    tokio::time::timeout(timeout, collect)
        .await
        .map_err(|_| BodyError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(total: u32, per_address: u32) -> Arc<Admission> {
        let c = ServerConfig {
            max_connections: total,
            max_pre_hello_per_address: per_address,
            ..ServerConfig::default()
        };
        Arc::new(Admission::new(&c))
    }

    #[test]
    fn the_per_address_limit_counts_pre_hello_connections_only() {
        let a = admission(0, 2);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let t1 = a.admit(ip).expect("first");
        let _t2 = a.admit(ip).expect("second");
        assert_eq!(a.admit(ip).err(), Some(Refusal::TooManyPreHello));
        assert!(a.admit(other).is_ok(), "another address has its own count");
        t1.hello_sent();
        let _t3 = a
            .admit(ip)
            .expect("a connection that sent hello no longer counts");
        assert_eq!(a.admit(ip).err(), Some(Refusal::TooManyPreHello));
    }

    #[test]
    fn the_total_limit_counts_every_open_connection() {
        let a = admission(2, 0);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t1 = a.admit(ip).expect("first");
        t1.hello_sent();
        let _t2 = a.admit(ip).expect("second");
        assert_eq!(a.admit(ip).err(), Some(Refusal::TooManyConnections));
        drop(t1);
        assert!(a.admit(ip).is_ok(), "a closed connection frees its place");
        assert!(a.pre_hello.lock().expect("lock").len() <= 1);
    }

    #[test]
    fn the_admission_keys_are_configuration_keys() {
        let mut c = ServerConfig::from_toml(
            "header_timeout_ms = 1500\nmax_pre_hello_per_address = 7\nmax_connections = 0\n",
        )
        .expect("toml");
        assert_eq!(c.header_timeout_ms, 1500);
        assert_eq!(c.max_pre_hello_per_address, 7);
        c.set("body_timeout_ms", "250").expect("set");
        assert_eq!(c.body_timeout_ms, 250);
        assert!(
            c.set("keep_alive_timeout_ms", "0").is_err(),
            "a deadline of 0"
        );
        let d = ServerConfig::default();
        assert_eq!(
            (d.header_timeout_ms, d.max_pre_hello_per_address),
            (10_000, 128)
        );
    }

    #[test]
    fn the_refusal_is_a_503_with_retry_after_and_the_error_body() {
        let r = String::from_utf8(refusal_response(Refusal::TooManyPreHello)).expect("utf8");
        assert!(r.starts_with("HTTP/1.1 503 "));
        assert!(r.contains("\r\nretry-after: 1\r\n"));
        assert!(r.contains("\"code\":\"server_overloaded\""));
        assert!(r.contains("\"retryable\":true"));
    }
}
