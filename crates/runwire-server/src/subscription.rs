//! One subscription of a connection: its position is fixed and answered with
//! `subscribed` or `reset` ([`Subscription::open`]), then its task replays from the
//! store and goes live without gap or duplicate ([`Subscription::run`], spec §8–§11).
//!
//! Every step that sends returns a [`Flow`]: `Continue` or `Break` with the reason
//! the subscription ends ([`End`]), which [`Subscription::run`] acts on in one place.

use std::{ops::ControlFlow, sync::Arc, time::Instant};

use runwire_protocol::{
    Epoch, ErrorCode, ErrorFrame, Reset, ResetReason, RunId, RunSnapshot, ServerMessage,
    Subscribed, SubscriptionRequest,
    raw::{batch_frame, event_frame},
};
use tokio::sync::{mpsc::UnboundedSender, watch};

use crate::{
    deadline::Deadline,
    metrics::Metrics,
    outbound::{Outbound, QueueError},
    state::AppState,
    store::{LiveReceiver, LiveRecv, StoreError, StoredEvent},
};

/// What a subscription task reports to its connection.
///
/// Boxed: an unbounded channel allocates its first block of 32 slots when it is
/// created, so the slot size is paid by every connection; a fatal report is rare.
/// (Unboxed, the `ErrorFrame` made that block about 3.9 KiB per connection.)
pub(crate) enum SubReport {
    /// A fatal error: close the connection with it.
    Fatal(Box<ErrorFrame>),
}

/// Why a subscription ends.
#[derive(Debug)]
enum End {
    /// Nothing to tell: the connection is closing, or the subscription drained on
    /// graceful shutdown.
    Quiet,
    /// The client did not read fast enough: the connection closes with
    /// `slow_consumer` (`RW-SLOW-1`).
    SlowConsumer,
    /// The store failed: the connection closes with `store_unavailable`.
    Store(String),
}

impl From<QueueError> for End {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Closed => Self::Quiet,
            QueueError::SlowConsumer => Self::SlowConsumer,
        }
    }
}

/// What a step of a subscription says next: go on, or end for a reason.
type Flow = ControlFlow<End>;

/// Continues when `r` is `Ok`, ends as its error says otherwise.
fn flow(r: Result<(), QueueError>) -> Flow {
    match r {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => ControlFlow::Break(e.into()),
    }
}

/// Ends with a store failure.
fn store_failed(e: impl std::fmt::Display) -> Flow {
    ControlFlow::Break(End::Store(e.to_string()))
}

/// Largest batch frame built from pre-encoded events, in bytes (besides the
/// `batch_max_events` bound), so that one frame never dominates the queue.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// A subscription after its `subscribed`/`reset`: where it stands and the live events
/// it holds back for a batch.
pub(crate) struct Subscription {
    state: Arc<AppState>,
    out: Arc<Outbound>,
    reports: UnboundedSender<SubReport>,
    run_id: RunId,
    live: LiveReceiver,
    /// The last seq the client has (the cursor, or a reset's `as_of_seq`).
    delivered: u64,
    /// Replay up to here before going live.
    target: u64,
    /// The first replay chunk, read while checking that the cursor is retained.
    first: Vec<StoredEvent>,
    /// Live events held back for a batch (`RW-BATCH-1`).
    batch: Vec<StoredEvent>,
    /// When the oldest event of `batch` arrived on the live feed.
    batch_since: Option<Instant>,
    /// When `batch` goes out at the latest; set while `batch` holds events.
    flush_at: Deadline,
    shutdown: watch::Receiver<bool>,
}

impl Subscription {
    /// Fixes a subscription's position and answers it with `subscribed` or `reset`
    /// (`RW-RESUME-2` to `RW-RESUME-8`). The live feed is subscribed before the head
    /// is read, so an event appended meanwhile is in the replay or in the live feed
    /// (or both: the live side skips what the replay sent), never in neither.
    /// `Ok(None)`: the frame could not be queued (slow consumer).
    pub(crate) async fn open(
        state: &Arc<AppState>,
        out: &Arc<Outbound>,
        reports: UnboundedSender<SubReport>,
        req: &SubscriptionRequest,
    ) -> Result<Option<Self>, StoreError> {
        let cfg = &state.config;
        let store = &state.store;
        let run_id = &req.run_id;
        let live = store.live(run_id);
        let info = store.open_run(run_id).await?;
        let after = req.after_seq.unwrap_or(0);
        let mut first = Vec::new();
        let reason = if req.epoch.as_ref().is_some_and(|e| *e != info.epoch) {
            Some(ResetReason::EpochMismatch)
        } else if after > info.head_seq {
            Some(ResetReason::CursorAhead)
        } else if info.head_seq - after > cfg.replay_window_events {
            Some(ResetReason::CursorTooOld)
        } else if after < info.head_seq {
            // Read the first chunk now: a cursor whose next event retention deleted is
            // reset too (`RW-RESUME-5`).
            match store
                .read(run_id, after, info.head_seq, cfg.replay_chunk_events)
                .await
            {
                Ok(chunk) => {
                    first = chunk;
                    None
                }
                Err(StoreError::NotRetained { .. }) => Some(ResetReason::CursorTooOld),
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let (msg, delivered) = match reason {
            Some(reason) => reset_message(state, run_id, &info.epoch, reason).await?,
            None => (
                ServerMessage::Subscribed(Subscribed {
                    run_id: run_id.clone(),
                    epoch: info.epoch.clone(),
                    after_seq: after,
                    head_seq: info.head_seq,
                }),
                after,
            ),
        };
        if out.send(&msg).is_err() {
            return Ok(None);
        }
        Ok(Some(Self {
            state: Arc::clone(state),
            out: Arc::clone(out),
            reports,
            run_id: run_id.clone(),
            live,
            delivered,
            target: info.head_seq.max(delivered),
            first,
            batch: Vec::new(),
            batch_since: None,
            flush_at: Deadline::unset(),
            shutdown: state.shutdown.clone(),
        }))
    }

    /// Serves the subscription until it ends: replay, then live, without gap or
    /// duplicate (`RW-RESUME-1`, `RW-ORDER-1`, `RW-ORDER-2`). Live events are batched
    /// adaptively: they go out at once while the connection's socket keeps up, and
    /// accumulate (for at most the window, `RW-BATCH-1`) while it is busy; terminal
    /// status and todo updates flush at once (`RW-BATCH-3`).
    ///
    /// An `async` block rather than an `async fn`, which would hold `self` twice (the
    /// argument and its binding) for the subscription's whole life.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would hold self twice for the subscription's life"
    )]
    pub(crate) fn run(mut self) -> impl Future<Output = ()> + Send + 'static {
        async move {
            let ControlFlow::Break(end) = self.serve().await;
            match end {
                End::Quiet => {}
                End::SlowConsumer => {
                    if !self.out.is_closing() {
                        Metrics::inc(&self.state.metrics.slow_consumer_closes);
                        self.out.close_now(ErrorFrame::new(
                        ErrorCode::SlowConsumer,
                        "the outbound queue exceeded its byte limit; reconnect and resume from your cursor",
                    ));
                    }
                }
                End::Store(why) => {
                    Metrics::inc(&self.state.metrics.store_errors);
                    let _ = self.reports.send(SubReport::Fatal(Box::new(
                        ErrorFrame::new(ErrorCode::StoreUnavailable, format!("event store: {why}"))
                            .for_run(self.run_id.clone()),
                    )));
                }
            }
        }
    }

    /// The subscription's loop; only ever breaks.
    async fn serve(&mut self) -> ControlFlow<End, std::convert::Infallible> {
        let first = std::mem::take(&mut self.first);
        if let Some(last) = first.last()
            && first.first().map(|e| e.seq) == Some(self.delivered + 1)
        {
            self.delivered = last.seq;
            self.send(&first, true, None).await?;
        }
        // Set on graceful shutdown: catch up to the head once more, then end.
        let mut draining = false;
        loop {
            self.catch_up().await?;
            if draining {
                return ControlFlow::Break(End::Quiet);
            }
            draining = self.next().await?;
        }
    }

    /// Catches up from the store to `target`, read as the socket drains (`RW-SLOW-2`).
    async fn catch_up(&mut self) -> Flow {
        let chunk_events = self.state.config.replay_chunk_events;
        while self.delivered < self.target {
            self.out.wait_drained().await;
            if self.out.is_closing() {
                return ControlFlow::Break(End::Quiet);
            }
            let (run_id, delivered, target) = (&self.run_id, self.delivered, self.target);
            let chunk = match self
                .state
                .store
                .read(run_id, delivered, target, chunk_events)
                .await
            {
                Ok(c) => c,
                // Trimmed by retention while this subscription caught up.
                Err(StoreError::NotRetained { .. }) => {
                    self.reset_open(ResetReason::CursorTooOld).await?;
                    continue;
                }
                Err(e) => return store_failed(e),
            };
            let Some(last) = chunk.last() else {
                return store_failed(format_args!(
                    "events {}..={target} of run {run_id} are missing",
                    delivered + 1
                ));
            };
            if chunk.first().map(|e| e.seq) != Some(delivered + 1) {
                return store_failed(format_args!(
                    "gap in the log of run {run_id} after seq {delivered}"
                ));
            }
            self.delivered = last.seq;
            self.send(&chunk, true, None).await?;
        }
        ControlFlow::Continue(())
    }

    /// Waits for the next thing to do while live and does it; `Continue(true)` when
    /// graceful shutdown began (catch up once more, then end).
    async fn next(&mut self) -> ControlFlow<End, bool> {
        tokio::select! {
            biased;
            () = self.flush_at.passed(), if !self.batch.is_empty() => self.flush().await?,
            // Adaptive batching: the window is the longest an event waits; when the
            // socket has taken everything, pending events go at once.
            () = self.out.wait_idle(), if !self.batch.is_empty() => self.flush().await?,
            r = self.live.recv() => match r {
                LiveRecv::Events(evs) => self.on_live(&evs).await?,
                LiveRecv::Lagged => {
                    self.flush().await?;
                    match self.state.store.run_info(&self.run_id).await {
                        Ok(Some(i)) => self.target = i.head_seq,
                        Ok(None) => {}
                        Err(e) => store_failed(e)?,
                    }
                }
                LiveRecv::Recreated => self.reset_open(ResetReason::EpochMismatch).await?,
                LiveRecv::Unavailable(why) => {
                    let _ = self.flush().await;
                    store_failed(why)?;
                }
                LiveRecv::Closed => {
                    let _ = self.flush().await;
                    // The store is closing; shutdown closes the connection.
                    std::future::pending::<()>().await;
                }
            },
            // Last in the biased order, so live events already received are batched
            // first: on graceful shutdown send the pending batch, then every event
            // acknowledged so far that the live feed has not brought yet (appends
            // that passed the shutdown check finish first), then end (`RW-SHUTDOWN-4`).
            // The connection bounds all of it by close_timeout_ms.
            _ = async { self.shutdown.wait_for(|v| *v).await.is_ok() } => {
                if self.flush().await.is_break() {
                    return ControlFlow::Break(End::Quiet);
                }
                self.state.appends.wait_idle().await;
                match self.state.store.run_info(&self.run_id).await {
                    Ok(Some(i)) => self.target = self.target.max(i.head_seq),
                    Ok(None) => {}
                    Err(e) => store_failed(e)?,
                }
                return ControlFlow::Continue(true);
            }
        }
        ControlFlow::Continue(false)
    }

    /// Takes live events into the batch, and sends it when it must go now.
    async fn on_live(&mut self, evs: &[StoredEvent]) -> Flow {
        if self.batch.is_empty() {
            self.batch_since = Some(Instant::now());
        }
        let mut urgent = false;
        for e in evs {
            if e.seq <= self.delivered {
                continue;
            }
            if e.seq != self.delivered + 1 {
                // A jump (the feed skipped): read the range from the store.
                self.target = evs.last().map_or(e.seq, |l| l.seq);
                urgent = true;
                break;
            }
            self.delivered = e.seq;
            urgent |= e.flush;
            self.batch.push(e.clone());
        }
        let cfg = &self.state.config;
        if cfg.batch_window_ms == 0
            || urgent
            || self.batch.len() >= cfg.batch_max_events
            || self.out.is_idle()
        {
            self.flush().await?;
        } else if !self.batch.is_empty() && !self.flush_at.is_set() {
            let window = std::time::Duration::from_millis(cfg.batch_window_ms);
            self.flush_at.set(tokio::time::Instant::now() + window);
        }
        ControlFlow::Continue(())
    }

    /// Sends the pending batch (it may be empty) as live events.
    async fn flush(&mut self) -> Flow {
        self.flush_at.clear();
        let batch = std::mem::take(&mut self.batch);
        let since = self.batch_since.take();
        self.send(&batch, false, since).await
    }

    /// A `reset` on the open subscription (`RW-RESUME-13`): the pending batch goes
    /// first, then the run's current snapshot; the subscription continues after it.
    async fn reset_open(&mut self, reason: ResetReason) -> Flow {
        self.flush().await?;
        let info = match self.state.store.open_run(&self.run_id).await {
            Ok(i) => i,
            Err(e) => return store_failed(e),
        };
        let (msg, as_of) = match reset_message(&self.state, &self.run_id, &info.epoch, reason).await
        {
            Ok(m) => m,
            Err(e) => return store_failed(e),
        };
        if self.out.send(&msg).is_err() {
            return ControlFlow::Break(End::SlowConsumer);
        }
        self.delivered = as_of;
        self.target = info.head_seq.max(as_of);
        ControlFlow::Continue(())
    }

    /// Sends events in order (`RW-BATCH-2`). Live events (`paced` false) go to the
    /// outbound queue as they come: that queue is what the slow-consumer bounds apply
    /// to (§15, `RW-SLOW-1`), so a client that stops reading fills it and is closed.
    /// Events read from the store (replay, catch-up; `paced`) are sent as the socket
    /// drains: before each frame the task waits until the connection's queue is below
    /// its low watermark (`RW-SLOW-2`). `published`: when the oldest live event
    /// arrived on the live feed (the delivery latency histogram).
    ///
    /// One `event` frame per event without batching; `batch` frames of at most
    /// `batch_max_events` events and about [`MAX_BATCH_BYTES`] with batching.
    async fn send(&self, events: &[StoredEvent], paced: bool, published: Option<Instant>) -> Flow {
        let batching = self.state.config.batch_window_ms > 0;
        let max_events = self.state.config.batch_max_events;
        let metrics = &self.state.metrics;
        let out = &self.out;
        let mut i = 0;
        while i < events.len() {
            if paced {
                out.wait_drained().await;
            }
            if out.is_closing() {
                return ControlFlow::Break(End::Quiet);
            }
            let mut j = i + 1;
            if batching {
                let mut bytes = events[i].json.len();
                while j < events.len()
                    && j - i < max_events
                    && bytes + events[j].json.len() <= MAX_BATCH_BYTES
                {
                    bytes += events[j].json.len() + 1;
                    j += 1;
                }
            }
            let chunk = &events[i..j];
            let text = if let [one] = chunk {
                event_frame(&one.json)
            } else {
                Metrics::inc(&metrics.batches_out);
                batch_frame(chunk.iter().map(|e| &e.json))
            };
            Metrics::add(&metrics.events_out, chunk.len() as u64);
            flow(out.send_events_text(text, chunk.len(), published))?;
            i = j;
        }
        ControlFlow::Continue(())
    }
}

/// A `reset` with the run's current snapshot (an empty one in `epoch` when the run
/// has none yet) and the snapshot's `as_of_seq`. The frame's `epoch` is the
/// snapshot's, so the two always agree (`RW-RESUME-8`).
async fn reset_message(
    state: &AppState,
    run_id: &RunId,
    epoch: &Epoch,
    reason: ResetReason,
) -> Result<(ServerMessage, u64), StoreError> {
    let snapshot = state
        .store
        .snapshot(run_id)
        .await?
        .unwrap_or_else(|| RunSnapshot::empty(run_id.clone(), epoch.clone()));
    Metrics::inc(&state.metrics.resets);
    let as_of = snapshot.as_of_seq;
    let msg = ServerMessage::Reset(Reset {
        run_id: run_id.clone(),
        epoch: snapshot.epoch.clone(),
        reason,
        snapshot,
    });
    Ok((msg, as_of))
}
