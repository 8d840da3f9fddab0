//! The steps of a connection script, one method each (the step kinds of
//! [`Step`], `docs/fixtures.md`).

// A part of the engine, in its vocabulary.
use super::*;
use crate::fixture::{
    AwaitCloseStep, AwaitMessageStep, AwaitPongStep, AwaitSubscribeStep, CloseStep, DropStep,
    Empty, ErrorStep, FrameStep, PingStep, RawStep, RepeatStep, ResetStep, SilenceStep,
    SubscribedStep, WaitStep, WelcomeStep,
};

impl Conn {
    /// Plays one step of a connection's script.
    pub(super) async fn run_step(&mut self, step: &Step, hello: &Hello) {
        match step {
            Step::Welcome(w) => self.step_welcome(w, hello).await,
            Step::Subscribed(s) => self.step_subscribed(s).await,
            Step::Reset(s) => self.step_reset(s).await,
            Step::Events(s) => self.step_events(s).await,
            Step::Batch(s) => self.step_batch(s).await,
            Step::DropMidBatch(s) => self.step_drop_mid_batch(s).await,
            Step::Reorder(s) => self.step_reorder(s).await,
            Step::Ping(p) => self.step_ping(p).await,
            Step::Error(e) => self.step_error(e).await,
            Step::Frame(f) => self.step_frame(f).await,
            Step::Raw(r) => self.step_raw(r).await,
            Step::Repeat(r) => self.step_repeat(r).await,
            Step::Drop(d) => self.step_drop(d).await,
            Step::Close(c) => self.step_close(c).await,
            Step::Wait(w) => self.step_wait(w).await,
            Step::Stall(w) => self.step_stall(w).await,
            Step::Hang(h) => self.step_hang(h).await,
            Step::AwaitPong(a) => self.step_await_pong(a).await,
            Step::AwaitSubscribe(a) => self.step_await_subscribe(a).await,
            Step::AwaitMessage(a) => self.step_await_message(a).await,
            Step::AwaitClose(a) => self.step_await_close(a).await,
            Step::ExpectSilence(s) => self.step_expect_silence(s).await,
        }
    }

    /// `welcome`: send `welcome`.
    async fn step_welcome(&mut self, w: &WelcomeStep, hello: &Hello) {
        let sh = self.sh.clone();
        let k = self.k;
        let server = sh.fixture.server_versions();
        let server_refs: Vec<&str> = server.iter().map(String::as_str).collect();
        let version = w.version.clone().unwrap_or_else(|| {
            negotiate_version(&hello.versions, &server_refs)
                .or(server_refs.first().copied())
                .unwrap_or("1.0")
                .to_owned()
        });
        let lim = w.limits.clone().unwrap_or_default();
        let frame_limit = lim
            .max_frame_bytes
            .unwrap_or(u64::from(defaults::MAX_FRAME_BYTES));
        let rate_limit = lim
            .max_messages_per_second
            .unwrap_or(u64::from(defaults::MAX_MESSAGES_PER_SECOND));
        {
            // The server's bucket is full when the connection opens and every
            // message so far (the hello) took a token from it (RW-LIMIT-4).
            let mut st = self.st();
            let used = st.msgs.len() as f64;
            st.limits = Some((frame_limit, rate_limit));
            st.bucket = Some(((rate_limit as f64 - used).max(0.0), Instant::now()));
        }
        let mut v = json!({
            "type": "welcome",
            "version": version,
            "session_id": w.session_id.clone().unwrap_or_else(|| format!("mock-session-{k}")),
            "heartbeat_interval_ms": sh.wire_ms(w.heartbeat_interval_ms.unwrap_or(2000)),
            "pong_timeout_ms": sh.wire_ms(w.pong_timeout_ms.unwrap_or(1000)),
            "batch_window_ms": sh.wire_ms(w.batch_window_ms.unwrap_or(0)),
            "replay_window_events": w.replay_window_events.unwrap_or(1000),
            "limits": {
                "max_frame_bytes": frame_limit,
                "max_event_bytes": lim.max_event_bytes.unwrap_or(u64::from(defaults::MAX_EVENT_BYTES)),
                "max_subscriptions": lim.max_subscriptions.unwrap_or(u64::from(defaults::MAX_SUBSCRIPTIONS)),
                "max_messages_per_second": rate_limit,
            },
            "server": { "name": "runwire-mock", "version": env!("CARGO_PKG_VERSION") },
        });
        merge(&mut v, w.extra.as_ref());
        if self.send_json(&v).await {
            // RW-HEART-5: from here the client declares the connection dead after a
            // silence of the interval plus its grace (both as the client got them).
            let hb = sh.wire_ms(w.heartbeat_interval_ms.unwrap_or(2000));
            let grace = sh.wire_ms(sh.fixture.client.liveness_grace_ms);
            let mut st = self.st();
            st.liveness_budget = Some(Duration::from_millis(hb + grace));
            st.sent_since_welcome = vec![Instant::now()];
        }
    }

    /// `subscribed`: wait for the client to ask for the run (in `hello` or `subscribe`),
    /// then send `subscribed`.
    async fn step_subscribed(&mut self, s: &SubscribedStep) {
        let sh = self.sh.clone();
        if self.await_request(&s.run, s.within_ms).await.is_none() {
            return;
        }
        let after = self.st().latest.get(&s.run).and_then(|l| l.0);
        let epoch = self.resolve_epoch(&s.run, &s.epoch);
        let after_seq = s.after_seq.unwrap_or(after.unwrap_or(0));
        let head = s.head_seq.unwrap_or(after_seq);
        sh.lock().epochs.insert(s.run.clone(), epoch.clone());
        let v = json!({
            "type": "subscribed",
            "run_id": s.run,
            "epoch": epoch,
            "after_seq": after_seq,
            "head_seq": head,
        });
        self.send_json(&v).await;
    }

    /// `reset`: wait for the client to ask for the run, then send `reset` with a snapshot
    /// folded from the log up to `as_of_seq`.
    async fn step_reset(&mut self, s: &ResetStep) {
        let sh = self.sh.clone();
        if self.await_request(&s.run, s.within_ms).await.is_none() {
            return;
        }
        let epoch = self.resolve_epoch(&s.run, &s.epoch);
        sh.lock().epochs.insert(s.run.clone(), epoch.clone());
        let snapshot = sh
            .logs
            .snapshot(&s.run, &epoch, s.as_of_seq)
            .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
            .unwrap_or(Value::Null);
        let v = json!({
            "type": "reset",
            "run_id": s.run,
            "epoch": epoch,
            "reason": s.reason.as_str(),
            "snapshot": snapshot,
        });
        self.send_json(&v).await;
    }

    /// `events`: send events of a run's log, one `event` frame each.
    async fn step_events(&mut self, s: &EventsStep) {
        for ev in self.event_values(s) {
            if !self.send_json(&json!({"type": "event", "event": ev})).await {
                break;
            }
        }
    }

    /// `batch`: send events of a run's log in one `batch` frame.
    async fn step_batch(&mut self, s: &EventsStep) {
        let events = self.event_values(s);
        self.send_json(&json!({"type": "batch", "events": events}))
            .await;
    }

    /// `drop_mid_batch`: send a batch as a non-final WebSocket fragment (about half of it),
    /// then drop the TCP connection: the batch never completes.
    async fn step_drop_mid_batch(&mut self, s: &EventsStep) {
        let sh = self.sh.clone();
        let k = self.k;
        let events = self.event_values(s);
        let text = json!({"type": "batch", "events": events}).to_string();
        let mut cut = text.len() / 2;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let part = text.as_bytes()[..cut].to_vec();
        let mut g = self.sink.lock().await;
        if let Some(sink) = g.as_mut() {
            sh.record(
                k,
                Direction::Out,
                What::Text {
                    text: format!("{}…", &text[..cut]),
                },
            );
            let frame = Frame::message(part, OpCode::Data(Data::Text), false);
            let _ = sink.send(Message::Frame(frame)).await;
        }
        drop(g);
        self.drop_connection(format!(
            "drop mid-batch: sent {cut} of {} bytes as a non-final fragment, then TCP close",
            text.len()
        ))
        .await;
    }

    /// `reorder`: send events as single frames in a seeded random order (never the log
    /// order).
    async fn step_reorder(&mut self, s: &EventsStep) {
        let sh = self.sh.clone();
        let k = self.k;
        let mut events = self.event_values(s);
        let mut rng = ChaCha8Rng::seed_from_u64(
            sh.seed ^ (u64::from(k) << 32) ^ (self.step_index as u64).rotate_left(48),
        );
        let original: Vec<Value> = events.clone();
        events.shuffle(&mut rng);
        if events == original {
            events.rotate_left(1);
        }
        let order: Vec<String> = events
            .iter()
            .map(|e| e.get("seq").map(ToString::to_string).unwrap_or_default())
            .collect();
        sh.record(
            k,
            Direction::Mock,
            What::Fault {
                fault: format!("reorder: seqs in order {}", order.join(",")),
            },
        );
        for ev in events {
            if !self.send_json(&json!({"type": "event", "event": ev})).await {
                break;
            }
        }
    }

    /// `ping`: send a `ping`.
    async fn step_ping(&mut self, p: &PingStep) {
        let k = self.k;
        self.pings += 1;
        let id =
            p.id.clone()
                .unwrap_or_else(|| format!("p-{k}-{}", self.pings));
        self.send_json(&json!({"type": "ping", "id": id})).await;
        self.last_ping = Some((id, Instant::now()));
    }

    /// `error`: send an `error` frame.
    async fn step_error(&mut self, e: &ErrorStep) {
        let sh = self.sh.clone();
        let code = ErrorCode::parse(&e.code);
        let known = !matches!(code, ErrorCode::Other(_));
        let retryable = e
            .retryable
            .unwrap_or(if known { code.retryable() } else { true });
        let close_code = match e.close_code {
            Some(0) => None,
            Some(c) => Some(c),
            None => code.close_code().map(|c| c.0),
        };
        let mut v = Map::new();
        v.insert("type".into(), json!("error"));
        v.insert("code".into(), json!(e.code));
        v.insert(
            "message".into(),
            json!(
                e.message
                    .clone()
                    .unwrap_or_else(|| format!("mock error ({})", sh.fixture.id))
            ),
        );
        v.insert("retryable".into(), json!(retryable));
        if let Some(ms) = e.retry_after_ms {
            v.insert("retry_after_ms".into(), json!(sh.wire_ms(ms)));
        }
        if let Some(r) = &e.run {
            v.insert("run_id".into(), json!(r));
        }
        if let Some(c) = close_code {
            v.insert("close_code".into(), json!(c));
        }
        let supported = e.supported_versions.clone().or_else(|| {
            (code == ErrorCode::UnsupportedVersion).then(|| sh.fixture.server_versions())
        });
        if let Some(s) = supported {
            v.insert("supported_versions".into(), json!(s));
        }
        self.send_json(&Value::Object(v)).await;
    }

    /// `frame`: send an arbitrary JSON object as a text frame (unknown message types,
    /// unknown fields in control messages).
    async fn step_frame(&mut self, f: &FrameStep) {
        self.send_json(&Value::Object(f.json.clone())).await;
    }

    /// `raw`: send raw bytes: a text frame that need not be JSON, or a binary frame.
    async fn step_raw(&mut self, r: &RawStep) {
        let msg = match (&r.text, &r.text_hex, &r.binary_hex) {
            (Some(t), _, _) => Message::text(t.clone()),
            // A text frame whose payload need not be UTF-8: sent as a raw frame.
            (None, Some(h), _) => Message::Frame(
                tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
                    unhex(h),
                    tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                        tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
                    ),
                    true,
                ),
            ),
            (None, None, Some(h)) => Message::binary(unhex(h)),
            (None, None, None) => return,
        };
        self.send(msg).await;
    }

    /// `repeat`: send again a frame this connection already sent (a duplicate).
    async fn step_repeat(&mut self, r: &RepeatStep) {
        let sh = self.sh.clone();
        let k = self.k;
        let back = r.back.unwrap_or(1);
        match self
            .sent
            .len()
            .checked_sub(back)
            .map(|i| self.sent[i].clone())
        {
            Some(m) => {
                sh.record(
                    k,
                    Direction::Mock,
                    What::Fault {
                        fault: format!("duplicate: repeat frame {back} back"),
                    },
                );
                self.send(m).await;
            }
            None => sh.note(
                k,
                format!("repeat: this connection has sent fewer than {back} frames"),
            ),
        }
    }

    /// `drop`: drop the TCP connection without a close frame.
    async fn step_drop(&mut self, d: &DropStep) {
        let fault = if d.reset {
            "drop: TCP reset (RST), no close frame"
        } else {
            "drop: TCP close (FIN), no close frame"
        };
        self.drop_connection(fault.into()).await;
    }

    /// `close`: close the WebSocket with a code.
    async fn step_close(&mut self, c: &CloseStep) {
        let sh = self.sh.clone();
        let k = self.k;
        let reason = c.reason.clone().unwrap_or_default();
        {
            let mut g = self.sink.lock().await;
            if let Some(s) = g.as_mut() {
                sh.record(
                    k,
                    Direction::Out,
                    What::Close {
                        code: Some(c.code),
                        reason: reason.clone(),
                    },
                );
                self.state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .mock_ended = true;
                mark_ended(&sh, k, Instant::now());
                let _ = s
                    .send(Message::Close(Some(CloseFrame {
                        code: WsCloseCode::from(c.code),
                        reason: reason.into(),
                    })))
                    .await;
            }
        }
        // Give the client a moment to answer the close, then end the TCP connection.
        if let Some(r) = self.reader.take() {
            let abort = r.abort_handle();
            if timeout(sh.dur(1000).max(Duration::from_millis(100)), r)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        let _ = self.sink.lock().await.take();
        sh.record(k, Direction::Mock, What::Disconnect { by: "mock".into() });
    }

    /// `wait`: wait, reading and recording client frames and answering client pings.
    async fn step_wait(&mut self, w: &WaitStep) {
        let sh = self.sh.clone();
        sleep(sh.dur(w.ms)).await;
    }

    /// `stall`: wait without answering anything (client pings go unanswered).
    async fn step_stall(&mut self, w: &WaitStep) {
        let sh = self.sh.clone();
        let k = self.k;
        sh.record(
            k,
            Direction::Mock,
            What::Fault {
                fault: format!("stall {} ms: nothing answered", sh.wire_ms(w.ms)),
            },
        );
        self.stalled.store(true, Ordering::SeqCst);
        sleep(sh.dur(w.ms)).await;
        self.stalled.store(false, Ordering::SeqCst);
    }

    /// `hang`: never answer again; hold the connection until the client gives up or the
    /// fixture ends.
    async fn step_hang(&mut self, _: &Empty) {
        let sh = self.sh.clone();
        let k = self.k;
        sh.record(
            k,
            Direction::Mock,
            What::Fault {
                fault: "hang: never answer again".into(),
            },
        );
        self.stalled.store(true, Ordering::SeqCst);
        let far = Instant::now() + Duration::from_secs(3600);
        let _ = self.wait_for(far, |_| None::<()>).await;
    }

    /// `await_pong`: wait for the `pong` answering a ping.
    async fn step_await_pong(&mut self, a: &AwaitPongStep) {
        let sh = self.sh.clone();
        let k = self.k;
        let (id, since) = match (&a.id, &self.last_ping) {
            (Some(id), _) => (id.clone(), Instant::now()),
            (None, Some((id, at))) => (id.clone(), *at),
            (None, None) => return,
        };
        let within = sh.dur(a.within_ms.unwrap_or(500));
        let req = self.requirement(&a.requirement, reqs::PONG).to_owned();
        let timed = self
            .wait_timed(since, since + within, |st| {
                let start = st.consumed_pong;
                let found = st.msgs[start..]
                    .iter()
                    .enumerate()
                    .find_map(|(i, (at, m))| match m {
                        ClientMessage::Pong(p) => Some((start + i, *at, p.id.clone())),
                        _ => None,
                    });
                let (i, at, pid) = found?;
                st.consumed_pong = i + 1;
                Some((pid, at))
            })
            .await;
        self.violate_within(
            &req,
            "pong",
            &format!("no pong for ping {id:?} within {} ms", within.as_millis()),
            &timed,
            since,
        );
        match timed {
            Timed::InTime(pid) | Timed::Late { value: pid, .. } => {
                if pid != id {
                    sh.violate(
                        Some(k),
                        &req,
                        "pong",
                        format!("the pong echoed id {pid:?}; the ping had id {id:?}"),
                    );
                }
            }
            Timed::Closed => sh.violate_closed(
                k,
                &self.state,
                &req,
                "pong",
                format!("the connection ended before a pong for ping {id:?}"),
            ),
            Timed::Missing { .. } => {}
        }
    }

    /// `await_subscribe`: wait for a `subscribe` for a run (e.g. the resubscribe after a
    /// gap).
    async fn step_await_subscribe(&mut self, a: &AwaitSubscribeStep) {
        let sh = self.sh.clone();
        let k = self.k;
        let within = sh.dur(a.within_ms.unwrap_or(1000));
        let req = self.requirement(&a.requirement, reqs::GAP).to_owned();
        let run = a.run.clone();
        let start = Instant::now();
        let timed = self
            .wait_timed(start, start + within, |st| {
                let from = st.consumed_sub;
                let found = st.msgs[from..]
                    .iter()
                    .enumerate()
                    .find_map(|(i, (at, m))| match m {
                        ClientMessage::Subscribe(s) => s
                            .subscriptions
                            .iter()
                            .find(|r| r.run_id.as_str() == run)
                            .map(|r| (from + i, r.clone(), *at)),
                        _ => None,
                    });
                let (i, r, at) = found?;
                st.consumed_sub = i + 1;
                Some((r, at))
            })
            .await;
        self.violate_within(
            &req,
            "resubscribe",
            &format!(
                "the client did not subscribe to run {} within {} ms",
                a.run,
                within.as_millis()
            ),
            &timed,
            start,
        );
        match timed {
            Timed::InTime(r) | Timed::Late { value: r, .. } => {
                if let Some(want) = a.after_seq
                    && r.after_seq.unwrap_or(0) != want
                {
                    sh.violate(
                        Some(k),
                        reqs::CURSOR,
                        "cursor",
                        format!(
                            "run {}: the client resubscribed after_seq {}; expected {want}",
                            a.run,
                            r.after_seq.unwrap_or(0)
                        ),
                    );
                }
                if let Some(e) = &a.epoch
                    && r.epoch.as_ref().map(|x| x.as_str()) != Some(e.as_str())
                {
                    sh.violate(
                        Some(k),
                        reqs::CURSOR,
                        "cursor",
                        format!(
                            "run {}: the client resubscribed with epoch {:?}; expected {e:?}",
                            a.run,
                            r.epoch.as_ref().map(|x| x.as_str())
                        ),
                    );
                }
            }
            Timed::Closed => sh.violate_closed(
                k,
                &self.state,
                &req,
                "resubscribe",
                format!(
                    "the connection ended before the client resubscribed to run {}",
                    a.run
                ),
            ),
            Timed::Missing { .. } => {}
        }
    }

    /// `await_message`: wait for a client message of a given type.
    async fn step_await_message(&mut self, a: &AwaitMessageStep) {
        let sh = self.sh.clone();
        let k = self.k;
        let within = sh.dur(a.within_ms.unwrap_or(1000));
        let req = self
            .requirement(&a.requirement, sh.fixture.primary_requirement())
            .to_owned();
        let ty = a.message_type.clone();
        let start = Instant::now();
        let timed = self
            .wait_timed(start, start + within, |st| {
                let from = st.consumed_type;
                let i = st.msgs[from..]
                    .iter()
                    .position(|(_, m)| m.message_type() == ty)?;
                st.consumed_type = from + i + 1;
                Some(((), st.msgs[from + i].0))
            })
            .await;
        let what = format!(
            "no {} message from the client within {} ms",
            a.message_type,
            within.as_millis()
        );
        self.violate_within(&req, "await_message", &what, &timed, start);
        if matches!(timed, Timed::Closed) {
            sh.violate_closed(
                k,
                &self.state,
                &req,
                "await_message",
                format!("{what}: the connection ended first"),
            );
        }
    }

    /// `await_close`: wait for the client to end the connection (close frame or TCP close).
    async fn step_await_close(&mut self, a: &AwaitCloseStep) {
        let sh = self.sh.clone();
        let k = self.k;
        let start = Instant::now();
        let within = sh.dur(a.within_ms.unwrap_or(1000));
        let req = self
            .requirement(&a.requirement, sh.fixture.primary_requirement())
            .to_owned();
        let timed = self
            .wait_timed(start, start + within, |st| st.closed.map(|c| (c, c.0)))
            .await;
        let what = format!(
            "the client did not end the connection within {} ms",
            within.as_millis()
        );
        self.violate_within(&req, "client_close", &what, &timed, start);
        let closed = match timed {
            Timed::InTime(c) | Timed::Late { value: c, .. } => Some(c),
            // The mock ended the connection itself: the client did not.
            Timed::Closed => {
                let c = self.st().closed;
                if c.is_none() {
                    sh.violate(Some(k), &req, "client_close", what);
                }
                c
            }
            Timed::Missing { .. } => None,
        };
        match closed {
            None => {}
            Some((at, code)) => {
                if let Some(min) = a.min_ms {
                    let min = sh.dur(min);
                    let after = at.saturating_duration_since(start);
                    if after < min {
                        // A lower bound: the client was early by `min - after`
                        // (a step that began late shortens `after`).
                        sh.violate_timing(
                            Some(k),
                            &req,
                            "client_close",
                            format!(
                                "the client ended the connection after {:.1} ms; it \
                                 must wait at least {} ms",
                                ms(after),
                                min.as_millis()
                            ),
                            TimingMiss::new(min - after, start, at),
                        );
                    }
                }
                if let Some(want) = a.code
                    && code != Some(want)
                {
                    let message = match code {
                        Some(c) => {
                            format!("the client closed with code {c}; expected {want}")
                        }
                        None => format!(
                            "the client ended the connection without a close code \
                             (no close frame, or one without a code); expected close \
                             code {want}"
                        ),
                    };
                    if a.unless_browser {
                        // Judged at the end, once the adapter's platform line is in.
                        if let Ok(mut st) = sh.st.lock() {
                            st.unless_browser.push((k, req.clone(), message));
                        }
                    } else {
                        sh.violate(Some(k), &req, "client_close", message);
                    }
                }
            }
        }
    }

    /// `expect_silence`: expect the client to send nothing (of the given types) for a
    /// while.
    async fn step_expect_silence(&mut self, s: &SilenceStep) {
        let sh = self.sh.clone();
        let k = self.k;
        // The window opens where the mock last listened, not where this step
        // begins: a reply to a frame the mock sent in the steps before counts
        // however fast the client answered.
        let opened = self.listened_at;
        let start = Instant::now();
        let end = start + sh.dur(s.ms);
        sleep_until(end).await;
        let req = self
            .requirement(&s.requirement, sh.fixture.primary_requirement())
            .to_owned();
        let offending: Vec<(Instant, String)> = self
            .st()
            .msgs
            .iter()
            .filter(|(at, m)| {
                *at >= opened
                    && *at <= end
                    && if s.types.is_empty() {
                        !matches!(m, ClientMessage::Ping(_) | ClientMessage::Pong(_))
                    } else {
                        s.types.iter().any(|t| t == m.message_type())
                    }
            })
            .map(|(at, m)| (*at, m.message_type().to_owned()))
            .collect();
        // A message near the end of the window may lie inside it only because
        // the window ended late (the step started late, so it ends late too).
        // The margin is how far before the end the earliest message arrived.
        let deepest = offending
            .iter()
            .map(|(at, _)| end.saturating_duration_since(*at))
            .max();
        if let Some(depth) = deepest {
            let shown: Vec<String> = offending
                .iter()
                .map(|(at, t)| {
                    if *at >= start {
                        format!("{t} {:.1} ms into the window", ms(*at - start))
                    } else {
                        format!("{t} {:.1} ms before it began", ms(start - *at))
                    }
                })
                .collect();
            sh.violate_timing(
                Some(k),
                &req,
                "silence",
                format!(
                    "expected no {} from the client since the mock last waited on \
                     it and for {} ms after; got {}",
                    if s.types.is_empty() {
                        "messages".to_owned()
                    } else {
                        s.types.join(" or ")
                    },
                    sh.wire_ms(s.ms),
                    shown.join(", ")
                ),
                TimingMiss::new(depth, start, end),
            );
        }
    }
}

fn merge(v: &mut Value, extra: Option<&Map<String, Value>>) {
    if let (Value::Object(obj), Some(extra)) = (v, extra) {
        for (k, x) in extra {
            obj.insert(k.clone(), x.clone());
        }
    }
}
