//! A connection's outbound queue, bounded by bytes and by the age of its oldest frame
//! (`RW-SLOW-1`), and the writer task that drains it into the socket.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, stream::SplitSink};
use runwire_protocol::{CloseCode, ErrorFrame, ServerMessage, codec::encode};
use tokio::sync::Notify;

use crate::metrics::{ConnStats, Metrics};

enum Out {
    Frame {
        text: Utf8Bytes,
        enqueued: Instant,
        /// For live events: when the oldest event of the frame was published on the
        /// live feed, and how many events the frame carries (the delivery latency
        /// histogram).
        published: Option<(Instant, u32)>,
    },
    Close {
        error: Utf8Bytes,
        code: CloseCode,
        reason: Utf8Bytes,
    },
    /// The client closed or vanished: flush (which sends the close reply) and stop.
    Finish,
    /// The WebSocket layer failed the connection (an RFC 6455 protocol error): a close
    /// frame with this code and no error frame (`RW-CLOSE-12`).
    Bare { code: u16, reason: Utf8Bytes },
}

/// The frames not yet handed to the writer. Its buffer is released whenever it runs
/// empty, so an idle connection holds none (a channel keeps its first block of 32
/// slots for the connection's whole life: 2.6 KiB per connection).
#[derive(Default)]
struct Queue(Mutex<VecDeque<Out>>);

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Out>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, out: Out) {
        self.lock().push_back(out);
    }

    /// The oldest item; the buffer is released once the queue is empty.
    fn pop(&self) -> Option<Out> {
        let mut q = self.lock();
        let out = q.pop_front();
        if q.is_empty() && q.capacity() > 0 {
            *q = VecDeque::new();
        }
        out
    }

    /// Drops every item and the buffer.
    fn clear(&self) {
        *self.lock() = VecDeque::new();
    }
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueError {
    /// The connection is closing; nothing more is sent.
    Closed,
    /// The queue is over its byte limit: the connection is being closed as a slow
    /// consumer.
    SlowConsumer,
}

/// The sending half of a connection, shared by the connection task and its
/// subscription tasks.
pub(crate) struct Outbound {
    queue: Queue,
    /// Rung when `queue` gets an item (one waiter: the writer).
    queued: Notify,
    queued_bytes: AtomicU64,
    /// Enqueue time of the oldest frame not yet written.
    oldest: Mutex<Option<Instant>>,
    max_bytes: u64,
    /// Refused at once beyond this (four times the bound, at least the bound plus
    /// 16 MiB): what one burst may briefly queue before the periodic check.
    hard_cap: u64,
    max_age: Duration,
    low_watermark: u64,
    drained: Notify,
    closing: AtomicBool,
    /// The urgent final error (slow consumer): the writer drops what is queued and
    /// sends this at once.
    urgent: Mutex<Option<(Utf8Bytes, CloseCode, Utf8Bytes)>>,
    /// Whether [`Outbound::close_now`] was called (the urgent close outlives the
    /// taking of `urgent`).
    urgent_close: AtomicBool,
    abort: Notify,
    metrics: Arc<Metrics>,
    /// Traffic and ending, for the closed-connection log line.
    pub(crate) stats: ConnStats,
}

impl Outbound {
    /// Creates the queue and spawns the writer task over `sink`. The final frames of
    /// an ordinary close get `close_timeout` to be written; those of a slow-consumer
    /// close get `slow_close_timeout`, at least the pong timeout (`RW-SLOW-6`: they
    /// wait behind what the socket already holds until the client reads again).
    pub(crate) fn spawn(
        sink: SplitSink<WebSocket, Message>,
        max_bytes: u64,
        max_age: Duration,
        close_timeout: Duration,
        slow_close_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let out = Arc::new(Self {
            queue: Queue::default(),
            queued: Notify::new(),
            queued_bytes: AtomicU64::new(0),
            oldest: Mutex::new(None),
            max_bytes,
            hard_cap: max_bytes
                .saturating_mul(4)
                .max(max_bytes.saturating_add(16 << 20)),
            max_age,
            low_watermark: (max_bytes / 4).clamp(1, 1 << 20),
            drained: Notify::new(),
            closing: AtomicBool::new(false),
            urgent: Mutex::new(None),
            urgent_close: AtomicBool::new(false),
            abort: Notify::new(),
            metrics,
            stats: ConnStats::default(),
        });
        let o = Arc::clone(&out);
        let handle = tokio::spawn(writer(o, sink, close_timeout, slow_close_timeout));
        (out, handle)
    }

    /// Queues a server message.
    pub(crate) fn send(&self, msg: &ServerMessage) -> Result<(), QueueError> {
        self.send_text(encode(msg))
    }

    /// Queues a frame's text, enforcing the byte limit.
    pub(crate) fn send_text(&self, text: String) -> Result<(), QueueError> {
        self.send_frame(text, None)
    }

    /// Queues a frame of `events` events (replay when `published` is `None`, live
    /// events published at `published` otherwise), enforcing the byte limit.
    pub(crate) fn send_events_text(
        &self,
        text: String,
        events: usize,
        published: Option<Instant>,
    ) -> Result<(), QueueError> {
        self.stats.events_out(events as u64);
        let n = u32::try_from(events).unwrap_or(u32::MAX);
        self.send_frame(text, published.map(|p| (p, n)))
    }

    fn send_frame(
        &self,
        text: String,
        published: Option<(Instant, u32)>,
    ) -> Result<(), QueueError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(QueueError::Closed);
        }
        let n = text.len() as u64;
        let total = self.queued_bytes.fetch_add(n, Ordering::AcqRel) + n;
        {
            let mut oldest = self.oldest.lock().unwrap_or_else(|e| e.into_inner());
            if oldest.is_none() {
                *oldest = Some(Instant::now());
            }
        }
        self.push(Out::Frame {
            text: Utf8Bytes::from(text),
            enqueued: Instant::now(),
            published,
        });
        // The byte bound itself (`RW-SLOW-1`) is judged by the periodic check
        // ([`Outbound::over_limit`]), after the writer had a chance to hand a burst to
        // the socket: one large append must not cut off a client that reads at full
        // speed. Only a runaway queue far past the bound is refused at once.
        if total > self.hard_cap {
            return Err(QueueError::SlowConsumer);
        }
        Ok(())
    }

    /// Whether the oldest unsent frame is older than the age limit, or the queue is
    /// over its byte limit.
    pub(crate) fn over_limit(&self) -> bool {
        if self.queued_bytes.load(Ordering::Acquire) > self.max_bytes {
            return true;
        }
        let oldest = *self.oldest.lock().unwrap_or_else(|e| e.into_inner());
        oldest.is_some_and(|t| t.elapsed() > self.max_age)
    }

    /// Waits until the queue holds less than the low watermark, so that replay is read
    /// from the store only as fast as the socket drains (`RW-SLOW-3`).
    pub(crate) async fn wait_drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.queued_bytes.load(Ordering::Acquire) < self.low_watermark
                || self.closing.load(Ordering::Acquire)
            {
                return;
            }
            notified.await;
        }
    }

    /// Whether nothing is queued (the socket has taken everything).
    pub(crate) fn is_idle(&self) -> bool {
        self.queued_bytes.load(Ordering::Acquire) == 0
    }

    /// Waits until nothing is queued.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_idle() || self.closing.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Whether a final error has been queued.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Whether the connection is closing urgently ([`Outbound::close_now`]): its final
    /// frames then get the slow close timeout, at least the pong timeout
    /// (`RW-SLOW-6`), behind what the socket still holds.
    pub(crate) fn is_closing_urgently(&self) -> bool {
        self.urgent_close.load(Ordering::Acquire)
    }

    /// Queues `error` after everything already queued, then a close with the error's
    /// close code. Later frames are refused.
    pub(crate) fn close(&self, error: ErrorFrame) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let code = CloseCode(error.close_code.unwrap_or(CloseCode::NORMAL.0));
        self.stats.ended(code.0, error.code.as_str());
        let reason = Utf8Bytes::from(error.code.as_str());
        self.push(Out::Close {
            error: Utf8Bytes::from(encode(&ServerMessage::Error(error))),
            code,
            reason,
        });
        self.drained.notify_waiters();
    }

    /// The client broke the WebSocket protocol itself (RFC 6455 §7.4.1): the writer
    /// flushes what it has, then closes with `code` (1002) and no error frame.
    pub(crate) fn close_protocol(&self, code: u16, reason: &str) {
        self.stats.ended(code, reason);
        self.closing.store(true, Ordering::Release);
        self.push(Out::Bare {
            code,
            reason: Utf8Bytes::from(reason),
        });
        self.drained.notify_waiters();
    }

    /// The client ended the connection: the writer flushes what it has (including the
    /// reply to a client close) and stops.
    pub(crate) fn finish(&self) {
        self.closing.store(true, Ordering::Release);
        self.push(Out::Finish);
        self.drained.notify_waiters();
    }

    /// Drops everything queued and sends `error` and the close at once (used for the
    /// slow-consumer close, where the queue itself is the problem).
    pub(crate) fn close_now(&self, error: ErrorFrame) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let code = CloseCode(error.close_code.unwrap_or(CloseCode::NORMAL.0));
        self.stats.ended(code.0, error.code.as_str());
        let reason = Utf8Bytes::from(error.code.as_str());
        self.urgent_close.store(true, Ordering::Release);
        *self.urgent.lock().unwrap_or_else(|e| e.into_inner()) = Some((
            Utf8Bytes::from(encode(&ServerMessage::Error(error))),
            code,
            reason,
        ));
        self.abort.notify_one();
        self.drained.notify_waiters();
    }

    /// Queues `out` for the writer.
    fn push(&self, out: Out) {
        self.queue.push(out);
        self.queued.notify_one();
    }

    /// The next queued item, if any.
    fn pop(&self) -> Option<Out> {
        self.queue.pop()
    }

    /// Waits for the next queued item (cancel safe: nothing is taken until it is
    /// returned).
    async fn next(&self) -> Out {
        loop {
            if let Some(out) = self.pop() {
                return out;
            }
            self.queued.notified().await;
        }
    }

    fn written(&self, n: u64, next_oldest: Option<Instant>) {
        let before = self.queued_bytes.fetch_sub(n, Ordering::AcqRel);
        *self.oldest.lock().unwrap_or_else(|e| e.into_inner()) = next_oldest;
        if before.saturating_sub(n) < self.low_watermark {
            self.drained.notify_waiters();
        }
    }
}

/// Sends the final error frame and the close; the close reason is the error code
/// (`RW-CLOSE-6`).
async fn goodbye(
    sink: &mut SplitSink<WebSocket, Message>,
    error: Utf8Bytes,
    code: CloseCode,
    reason: Utf8Bytes,
    timeout: Duration,
    stats: &ConnStats,
) {
    let _ = tokio::time::timeout(timeout, async {
        sink.feed(Message::Text(error)).await?;
        // The error frame counts once it is handed to the socket layer with the close.
        stats.frames_out(1);
        sink.send(Message::Close(Some(CloseFrame {
            code: code.0,
            reason,
        })))
        .await
    })
    .await;
}

/// Ends the queue when the writer stops, however it stops (also when its task is
/// aborted): later frames are refused, and what is still queued is dropped.
struct Stopped<'a>(&'a Outbound);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.closing.store(true, Ordering::Release);
        self.0.queue.clear();
        self.0.drained.notify_waiters();
    }
}

async fn writer(
    out: Arc<Outbound>,
    mut sink: SplitSink<WebSocket, Message>,
    close_timeout: Duration,
    slow_close_timeout: Duration,
) {
    let _stopped = Stopped(&out);
    let mut pending: Option<Out> = None;
    // Live frames of the current write: (published, events), for the delivery latency
    // histogram; reused, so steady state allocates nothing.
    let mut live: Vec<(Instant, u32)> = Vec::new();
    loop {
        let first = match pending.take() {
            Some(m) => m,
            None => tokio::select! {
                biased;
                () = out.abort.notified() => break,
                m = out.next() => m,
            },
        };
        let (text, enqueued) = match first {
            Out::Frame {
                text,
                enqueued,
                published,
            } => {
                live.extend(published);
                (text, enqueued)
            }
            Out::Close {
                error,
                code,
                reason,
            } => {
                // Boxed, like the urgent goodbye below: the writer's future would
                // otherwise be as large as this rare state for every connection's life.
                Box::pin(goodbye(
                    &mut sink,
                    error,
                    code,
                    reason,
                    close_timeout,
                    &out.stats,
                ))
                .await;
                return;
            }
            Out::Finish => {
                let _ = tokio::time::timeout(close_timeout, sink.close()).await;
                return;
            }
            Out::Bare { code, reason } => {
                let _ = tokio::time::timeout(
                    close_timeout,
                    sink.send(Message::Close(Some(CloseFrame { code, reason }))),
                )
                .await;
                return;
            }
        };
        *out.oldest.lock().unwrap_or_else(|e| e.into_inner()) = Some(enqueued);
        // Feed everything that is ready, then flush once.
        let mut bytes = text.len() as u64;
        let mut frames = 1u64;
        let write = async {
            sink.feed(Message::Text(text)).await?;
            while frames < 256 {
                match out.pop() {
                    Some(Out::Frame {
                        text, published, ..
                    }) => {
                        live.extend(published);
                        bytes += text.len() as u64;
                        frames += 1;
                        sink.feed(Message::Text(text)).await?;
                    }
                    Some(last @ (Out::Close { .. } | Out::Finish | Out::Bare { .. })) => {
                        pending = Some(last);
                        break;
                    }
                    None => break,
                }
            }
            sink.flush().await
        };
        let res = tokio::select! {
            biased;
            () = out.abort.notified() => None,
            r = write => Some(r),
        };
        match res {
            None => break,
            Some(Err(_)) => {
                out.closing.store(true, Ordering::Release);
                out.drained.notify_waiters();
                return;
            }
            Some(Ok(())) => {
                Metrics::add(&out.metrics.frames_out, frames);
                out.stats.frames_out(frames);
                out.metrics.deliver_latency.observe_written(&mut live);
                out.written(bytes, None);
            }
        }
    }
    // Urgent close: drop the queue, send the error and the close.
    let urgent = out.urgent.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((error, code, reason)) = urgent {
        Box::pin(goodbye(
            &mut sink,
            error,
            code,
            reason,
            slow_close_timeout,
            &out.stats,
        ))
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Out {
        Out::Frame {
            text: Utf8Bytes::from(text),
            enqueued: Instant::now(),
            published: None,
        }
    }

    fn text(out: Option<Out>) -> Option<String> {
        match out? {
            Out::Frame { text, .. } => Some(text.as_str().to_owned()),
            _ => None,
        }
    }

    #[test]
    fn the_queue_keeps_order_and_releases_its_buffer_when_empty() {
        let q = Queue::default();
        for t in ["a", "b", "c", "d", "e"] {
            q.push(frame(t));
        }
        assert!(q.lock().capacity() >= 5);
        for t in ["a", "b", "c", "d"] {
            assert_eq!(text(q.pop()).as_deref(), Some(t));
            assert!(q.lock().capacity() > 0, "released while items remain");
        }
        assert_eq!(text(q.pop()).as_deref(), Some("e"));
        assert_eq!(q.lock().capacity(), 0, "an empty queue holds no buffer");
        assert!(q.pop().is_none());
        q.push(frame("f"));
        q.clear();
        assert_eq!(q.lock().capacity(), 0);
        assert!(q.pop().is_none());
    }
}
