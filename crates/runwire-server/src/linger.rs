//! Lingering close: the server's last bytes of a connection are not lost to a TCP reset
//! (`RW-LIMIT-1`, and every other close after which the client may still be sending).
//!
//! # The problem
//!
//! On Linux, `close()` on a socket whose receive queue still holds unread bytes (or
//! that receives bytes afterwards) sends a TCP RST instead of a FIN. A peer, or a proxy
//! in between, that gets the RST may discard what it has not yet handed on, including
//! the `error` frame and close frame the server wrote just before. The typical case is
//! `frame_too_large`: the WebSocket reader rejects the frame after its header, so the
//! rest of the oversize payload is still in flight or unread when the server closes.
//!
//! # The cure (as HTTP servers do it, for example Apache's `lingering_close`)
//!
//! After the final frames are written and flushed, the server half-closes the socket
//! for writing (`shutdown(SHUT_WR)`: a FIN follows the close frame), then reads and
//! discards what the peer still sends until the peer closes its side (EOF), for at most
//! `close_timeout_ms` and at most [`LINGER_MAX_BYTES`] bytes. Only then is the socket
//! closed, with an empty receive queue after an EOF, so no RST is sent. A peer that
//! keeps sending past either bound is cut off (the close then does reset it, which is
//! all it deserves).
//!
//! # Getting the socket back from the WebSocket
//!
//! axum's `WebSocket` hides its transport, and the HTTP/1.1 upgrade path wraps it in
//! private types (hyper-util's `Rewind`, hyper's boxed `Upgraded`), so the socket
//! cannot be reached by downcasting. Instead the listener hands out every accepted
//! socket as a [`LingerStream`], a transparent wrapper around the `TcpStream`, and
//! gives each connection a [`LingerHandle`] (as axum connect info) that shares one
//! slot with its stream. A handler that wants a lingering close calls
//! [`LingerHandle::request`] *before* it drops the WebSocket and gets a receiver; when
//! the last owner of the transport (the WebSocket, through hyper's `Upgraded`) drops
//! the [`LingerStream`], its `Drop` moves the `TcpStream` into that receiver instead of
//! closing it. The handler then runs [`linger`] on it, inside the connection's own
//! task, so graceful shutdown waits for it like for any open connection.
//!
//! This design holds no second file descriptor (no `dup`): the socket has exactly one
//! owner at every moment (the wrapper, then the channel, then [`linger`]) and is closed
//! when that owner is dropped. If nobody receives it (no request was made, the
//! receiver is gone, or the handler's wait timed out), it is closed at once as before.
//! The `TcpStream` keeps its single registration with the tokio reactor throughout.
//!
//! Only an HTTP/1.1 upgrade hands the whole TCP connection to the WebSocket; over
//! HTTP/2 (extended CONNECT) the WebSocket is one stream of a shared connection, the
//! stream is never dropped at the WebSocket's end, and no linger is requested.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use crate::admission::Ticket;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

/// At most this many bytes are read and discarded during a lingering close: enough
/// for the rest of any oversize frame a real client might send, small enough that a
/// peer cannot make the server read for long at loopback speed.
pub(crate) const LINGER_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// The slot shared by a [`LingerStream`] and its [`LingerHandle`]s: where the stream
/// goes when it is dropped, if someone asked for it.
type Slot = Arc<Mutex<Option<oneshot::Sender<Transport>>>>;

/// A connection's transport: the socket, or TLS over it (`crate::tls`).
#[derive(Debug)]
pub(crate) enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: the TLS state is large).
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Transport {
    /// The socket below any TLS.
    fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Self::Plain(t) => t,
            Self::Tls(t) => t.get_mut().0,
        }
    }
}

/// Delegates a poll method to the transport's variant.
macro_rules! delegate {
    ($self:expr, $t:ident => $call:expr) => {
        match $self {
            Transport::Plain($t) => $call,
            Transport::Tls($t) => $call,
        }
    };
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self.get_mut(), t => Pin::new(t).poll_read(cx, buf))
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self.get_mut(), t => Pin::new(t).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self.get_mut(), t => Pin::new(t).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        delegate!(self, t => t.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self.get_mut(), t => Pin::new(t).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self.get_mut(), t => Pin::new(t).poll_shutdown(cx))
    }
}

/// An accepted connection. It reads and writes exactly like the transport it wraps;
/// when dropped after [`LingerHandle::request`], it hands the transport over instead
/// of closing it.
#[derive(Debug)]
pub(crate) struct LingerStream {
    /// Always `Some` until `drop` (an `Option` only so that `drop` can move it out).
    io: Option<Transport>,
    slot: Slot,
    /// The connection's place in the admission counts (`crate::admission`), held as
    /// long as the socket is.
    ticket: Option<Arc<Ticket>>,
}

impl LingerStream {
    /// Attaches the connection's admission ticket and makes its handle.
    pub(crate) fn admitted(mut self, ticket: Arc<Ticket>) -> (Self, LingerHandle) {
        let handle = LingerHandle {
            slot: Arc::clone(&self.slot),
            ticket: Some(Arc::clone(&ticket)),
            tls: matches!(self.io, Some(Transport::Tls(_))),
            peer: self.io.as_mut().and_then(|t| t.tcp_mut().peer_addr().ok()),
        };
        self.ticket = Some(ticket);
        (self, handle)
    }

    /// The socket itself, for a plain connection that is refused before it is served.
    pub(crate) fn into_tcp(self) -> Option<TcpStream> {
        match self.into_transport() {
            Some(Transport::Plain(t)) => Some(t),
            _ => None,
        }
    }

    /// The transport, for a connection that is refused before it is served.
    pub(crate) fn into_transport(mut self) -> Option<Transport> {
        self.io.take()
    }

    /// Runs the TLS handshake on the socket (`crate::tls`); the stream then reads and
    /// writes plain text through TLS. On failure the socket is closed.
    pub(crate) async fn start_tls(
        mut self,
        acceptor: &tokio_rustls::TlsAcceptor,
    ) -> io::Result<Self> {
        let Some(Transport::Plain(tcp)) = self.io.take() else {
            return Err(io::Error::other("not a plain TCP connection"));
        };
        let tls = acceptor.accept(tcp).await?;
        self.io = Some(Transport::Tls(Box::new(tls)));
        Ok(self)
    }

    fn io(&mut self) -> io::Result<&mut Transport> {
        self.io
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "stream handed over"))
    }
}

impl Drop for LingerStream {
    fn drop(&mut self) {
        let Some(io) = self.io.take() else { return };
        let sender = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(sender) = sender {
            // If the receiver is gone, `send` gives the stream back and it is closed
            // here, as without a request.
            let _ = sender.send(io);
        }
    }
}

impl AsyncRead for LingerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().io() {
            Ok(t) => Pin::new(t).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for LingerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().io() {
            Ok(t) => Pin::new(t).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().io() {
            Ok(t) => Pin::new(t).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().io() {
            Ok(t) => Pin::new(t).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().io() {
            Ok(t) => Pin::new(t).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// A connection's handle for a lingering close (axum connect info of every request
/// on the connection). It holds no socket, only the shared slot.
#[derive(Debug, Clone)]
pub(crate) struct LingerHandle {
    slot: Slot,
    ticket: Option<Arc<Ticket>>,
    /// Whether the connection speaks TLS.
    tls: bool,
    /// The client's address (for the connection's log line).
    peer: Option<SocketAddr>,
}

impl LingerHandle {
    /// Whether the connection speaks TLS: its end then needs a `close_notify` alert
    /// (see [`close_tls`]).
    pub(crate) fn is_tls(&self) -> bool {
        self.tls
    }

    /// The client's address, when the socket could tell it.
    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Asks for the connection's transport when it is dropped. Call it before dropping
    /// the WebSocket; the receiver yields the [`Transport`] once the WebSocket (and with
    /// it the upgraded transport) is gone.
    pub(crate) fn request(&self) -> oneshot::Receiver<Transport> {
        let (tx, rx) = oneshot::channel();
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    /// The connection sent `hello` (or is a plain HTTP client): it no longer counts
    /// against its address's pre-hello limit (`RW-SEC-12`).
    pub(crate) fn hello_sent(&self) {
        if let Some(t) = &self.ticket {
            t.hello_sent();
        }
    }
}

/// The server's listener: a `TcpListener` that sets the socket options of every
/// accepted connection and hands it out as a [`LingerStream`].
pub(crate) struct LingerListener {
    inner: TcpListener,
    send_buffer: usize,
}

impl LingerListener {
    /// Wraps `inner`; accepted sockets get `TCP_NODELAY` and an `SO_SNDBUF` of
    /// `send_buffer` bytes.
    pub(crate) fn new(inner: TcpListener, send_buffer: usize) -> Self {
        Self { inner, send_buffer }
    }
}

impl axum::serve::Listener for LingerListener {
    type Io = LingerStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        // Frames are written whole and flushed on purpose: Nagle's algorithm would only
        // delay them (up to the peer's delayed-ACK timeout).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        // The kernel's send buffer is bounded too (`RW-SLOW-1`): with autotuning it
        // grows to megabytes, which swallow what a stalled client does not read, so the
        // connection's own queue (bounded by bytes and age) would never fill.
        if let Err(e) = socket2::SockRef::from(&tcp).set_send_buffer_size(self.send_buffer) {
            tracing::debug!(error = %e, "cannot set SO_SNDBUF");
        }
        let io = LingerStream {
            io: Some(Transport::Plain(tcp)),
            slot: Arc::default(),
            ticket: None,
        };
        (io, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Ends a TLS connection whose peer is done: sends `close_notify` and a FIN, so that
/// the client sees the end of the stream rather than a truncation (a TLS client reports
/// an end without `close_notify` as an error), then closes. Bounded by `timeout`.
pub(crate) async fn close_tls(io: &mut Transport, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, io.shutdown()).await;
}

/// How a lingering close ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LingerEnd {
    /// The peer closed its side: the socket is closed with nothing unread (a FIN, no
    /// reset).
    PeerClosed,
    /// The socket failed (the peer reset it, or the shutdown failed).
    Failed,
    /// The peer kept sending for `timeout`.
    TimedOut,
    /// The peer sent more than [`LINGER_MAX_BYTES`].
    TooMuch,
}

/// The lingering close itself: sends a FIN after everything written so far
/// (`shutdown(SHUT_WR)`; over TLS a `close_notify` alert first), then reads and
/// discards until the peer's EOF, for at most `timeout` and `max_bytes`. What the peer
/// still sends is discarded below TLS, undecrypted. The caller drops `io` afterwards.
pub(crate) async fn linger(io: &mut Transport, timeout: Duration, max_bytes: u64) -> LingerEnd {
    if io.shutdown().await.is_err() {
        return LingerEnd::Failed;
    }
    let tcp = io.tcp_mut();
    let mut read = 0u64;
    let drain = async {
        loop {
            if tcp.readable().await.is_err() {
                return LingerEnd::Failed;
            }
            // The scratch buffer lives on the stack between two awaits, never in the
            // future: a connection waiting in its lingering close holds no buffer.
            let mut scratch = [0u8; 8 * 1024];
            match tcp.try_read(&mut scratch) {
                Ok(0) => return LingerEnd::PeerClosed,
                Ok(n) => {
                    read += n as u64;
                    if read > max_bytes {
                        return LingerEnd::TooMuch;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return LingerEnd::Failed,
            }
        }
    };
    tokio::time::timeout(timeout, drain)
        .await
        .unwrap_or(LingerEnd::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;
    use tokio::io::AsyncReadExt;

    /// A connected pair: the accepted side as a [`LingerStream`] with its handle, and
    /// the client side.
    async fn pair() -> (LingerStream, LingerHandle, TcpStream) {
        let inner = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = inner.local_addr().expect("addr");
        let mut listener = LingerListener::new(inner, 64 * 1024);
        let (client, (io, _)) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let handle = LingerHandle {
            slot: Arc::clone(&io.slot),
            ticket: None,
            tls: false,
            peer: None,
        };
        (io, handle, client.expect("connect"))
    }

    async fn read_all(c: &mut TcpStream) -> Vec<u8> {
        let mut v = Vec::new();
        c.read_to_end(&mut v).await.expect("read");
        v
    }

    #[tokio::test]
    async fn without_a_request_dropping_the_stream_closes_the_socket() {
        let (mut io, _handle, mut client) = pair().await;
        io.write_all(b"bye").await.expect("write");
        drop(io);
        assert_eq!(read_all(&mut client).await, b"bye");
    }

    #[tokio::test]
    async fn after_a_request_the_socket_is_handed_over_and_closed_by_its_new_owner() {
        let (mut io, handle, mut client) = pair().await;
        let rx = handle.request();
        io.write_all(b"one ").await.expect("write");
        drop(io);
        // Still open: the receiver owns the same socket now.
        let mut tcp = rx.await.expect("handed over");
        tcp.write_all(b"two").await.expect("write");
        drop(tcp);
        assert_eq!(read_all(&mut client).await, b"one two");
    }

    #[tokio::test]
    async fn a_request_whose_receiver_is_gone_closes_the_socket_on_drop() {
        let (io, handle, mut client) = pair().await;
        drop(handle.request());
        drop(io);
        assert!(read_all(&mut client).await.is_empty());
    }

    #[tokio::test]
    async fn linger_sends_fin_then_reads_until_the_peer_closes() {
        let (io, handle, mut client) = pair().await;
        let rx = handle.request();
        drop(io);
        let mut tcp = rx.await.expect("handed over");
        let server = tokio::spawn(async move {
            linger(&mut tcp, Duration::from_secs(30), LINGER_MAX_BYTES).await
        });
        client.write_all(&[7u8; 100_000]).await.expect("write");
        // The FIN comes first: the client sees EOF while the server still reads.
        assert!(read_all(&mut client).await.is_empty());
        client.shutdown().await.expect("shutdown");
        assert_eq!(server.await.expect("join"), LingerEnd::PeerClosed);
    }
}
