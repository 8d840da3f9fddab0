//! What the client sends: the read loop that records every frame, answers pings,
//! checks the advertised limits and keeps what the script's steps wait for.

// A part of the engine, in its vocabulary.
use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) async fn read_loop(
    sh: Arc<Shared>,
    k: u32,
    mut stream: futures_util::stream::SplitStream<WebSocketStream<TcpStream>>,
    state: Arc<StdMutex<ConnState>>,
    sink: Arc<AsyncMutex<Option<Sink>>>,
    tx: watch::Sender<u64>,
    stalled: Arc<AtomicBool>,
    script: Connection,
) {
    let mut first = true;
    while let Some(item) = stream.next().await {
        // When the frame arrived: the time every judgment of it uses.
        let at = Instant::now();
        let msg = match item {
            Ok(m) => m,
            Err(e) => {
                sh.note(k, format!("read error: {e}"));
                break;
            }
        };
        match msg {
            Message::Text(t) => {
                let text = t.as_str().to_owned();
                sh.record(k, Direction::In, What::Text { text: text.clone() });
                check_limits(&sh, k, &state, text.len(), at);
                if let Some(name) = crate::validate::duplicate_member(&text) {
                    sh.violate(
                        Some(k),
                        reqs::DUPLICATE_MEMBERS,
                        "client_message",
                        format!("the client sent a JSON object with the member {name:?} twice"),
                    );
                }
                match decode_client_message(text.as_bytes(), 1 << 20) {
                    Ok(m) => {
                        on_message(&sh, k, &state, &sink, &stalled, &script, m, first, at).await;
                    }
                    Err(e) => sh.violate(
                        Some(k),
                        reqs::CLIENT_SCHEMA,
                        "client_message",
                        format!("the client sent an invalid message: {e}"),
                    ),
                }
                first = false;
            }
            Message::Binary(b) => {
                sh.record(k, Direction::In, What::Binary { hex: hex(&b) });
                sh.violate(
                    Some(k),
                    reqs::CLIENT_INPUT,
                    "client_message",
                    "the client sent a binary frame; Runwire uses text frames only",
                );
                first = false;
            }
            Message::Close(cf) => {
                let (code, reason) = match &cf {
                    Some(f) => (Some(u16::from(f.code)), f.reason.as_str().to_owned()),
                    None => (None, String::new()),
                };
                // The WebSocket layer replaces a code it does not accept (the reserved
                // 1004-1006 and 1015, codes outside 1000-4999; also 1014) by 1002
                // "Protocol violation" before handing the frame over.
                let replaced = code == Some(1002) && reason == "Protocol violation";
                sh.record(k, Direction::In, What::Close { code, reason });
                if replaced {
                    sh.violate(
                        Some(k),
                        reqs::CLOSE_SENDABLE,
                        "close_code",
                        "the client sent a close code the WebSocket layer refuses to accept \
                         (a reserved code 1004-1006 or 1015, or one outside 1000-4999; or \
                         1014, which no client sends: RW-CLOSE-8)",
                    );
                } else if let Some(c) = code
                    && !CloseCode(c).is_sendable()
                {
                    sh.violate(
                        Some(k),
                        reqs::CLOSE_SENDABLE,
                        "close_code",
                        format!("the client sent close code {c}, which must never go on the wire"),
                    );
                }
                if let Ok(mut st) = state.lock()
                    && st.closed.is_none()
                    && !st.mock_ended
                {
                    st.closed = Some((at, code));
                }
                tx.send_modify(|v| *v += 1);
            }
            _ => {}
        }
        tx.send_modify(|v| *v += 1);
    }
    let now = Instant::now();
    let by_mock = {
        let mut st = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if st.closed.is_none() && !st.mock_ended {
            st.closed = Some((now, None));
        }
        st.mock_ended
    };
    if !by_mock {
        sh.record(
            k,
            Direction::Mock,
            What::Disconnect {
                by: "client".into(),
            },
        );
        mark_ended(&sh, k, now);
    }
    tx.send_modify(|v| *v += 1);
}

/// `RW-LIMIT-5`: once `welcome` announced its limits, every client frame must fit
/// `max_frame_bytes` and the client's messages must fit a token bucket of capacity and
/// refill rate `max_messages_per_second` (the server's rule, `RW-LIMIT-4`).
///
/// The bucket is a timing judgment: messages the client spaced correctly arrive
/// bunched when this process was descheduled while they were on their way. A message
/// that finds the bucket empty came `(1 - tokens) / rate` too early; that margin is
/// judged against the lateness measured over the bucket's refill window (1 s).
fn check_limits(
    sh: &Arc<Shared>,
    k: u32,
    state: &Arc<StdMutex<ConnState>>,
    len: usize,
    at: Instant,
) {
    let mut st = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some((max_frame, rate)) = st.limits else {
        return;
    };
    let mut too_big = None;
    if len as u64 > max_frame {
        too_big = Some(format!(
            "the client sent a {len}-byte frame; welcome announced max_frame_bytes {max_frame}"
        ));
    }
    let mut too_early = None;
    if let Some((tokens, last)) = st.bucket {
        let cap = rate as f64;
        let tokens = (tokens + at.saturating_duration_since(last).as_secs_f64() * cap).min(cap);
        if tokens < 1.0 {
            too_early = Some(Duration::from_secs_f64((1.0 - tokens) / cap.max(1.0)));
            st.bucket = Some((tokens, at));
        } else {
            st.bucket = Some((tokens - 1.0, at));
        }
    }
    drop(st);
    if let Some(p) = too_big {
        sh.violate(Some(k), reqs::CLIENT_LIMITS, "limits", p);
    }
    if let Some(early) = too_early {
        let from = at.checked_sub(Duration::from_secs(1)).unwrap_or(at);
        sh.violate_timing(
            Some(k),
            reqs::CLIENT_LIMITS,
            "limits",
            format!(
                "the client sent messages faster than the announced max_messages_per_second \
                 {rate} allows (token bucket empty: this message came {:.1} ms before the \
                 bucket held a token)",
                ms(early)
            ),
            TimingMiss::new(early, from, at),
        );
    }
}

/// Checks one run the client asks for (in `hello` or `subscribe`) against the
/// script, and records the first request for it.
fn on_subscription(
    sh: &Shared,
    k: u32,
    state: &StdMutex<ConnState>,
    script: &Connection,
    s: runwire_protocol::SubscriptionRequest,
    at: Instant,
) {
    let run = s.run_id.as_str().to_owned();
    let epoch = s.epoch.as_ref().map(|e| e.as_str().to_owned());
    if script.hello.not_subscribed.contains(&run) {
        sh.violate(
            Some(k),
            reqs::SUBSCRIBE,
            "subscribe",
            format!(
                "the client asked for run {run}, which it must leave out (its subscription \
                 failed with retryable: false)"
            ),
        );
    }
    if s.after_seq.unwrap_or(0) > 0 && epoch.is_none() {
        sh.violate(
            Some(k),
            reqs::CURSOR_EPOCH,
            "cursor",
            format!(
                "run {run}: the client resumed after_seq {} without the cursor's epoch",
                s.after_seq.unwrap_or(0)
            ),
        );
    }
    let fresh = state
        .lock()
        .map(|mut st| {
            st.latest.insert(run.clone(), (s.after_seq, epoch.clone()));
            if st.requested.contains_key(&run) {
                false
            } else {
                st.requested
                    .insert(run.clone(), (s.after_seq, epoch.clone()));
                st.requested_at.insert(run.clone(), at);
                true
            }
        })
        .unwrap_or(false);
    if !fresh {
        return;
    }
    for cur in script.hello.cursors.iter().filter(|c| c.run == run) {
        let req = cur.requirement.as_deref().unwrap_or(reqs::CURSOR);
        let got = s.after_seq.unwrap_or(0);
        if got != cur.after_seq {
            sh.violate(
                Some(k),
                req,
                "cursor",
                format!(
                    "run {run}: the client resumed after_seq {got}; expected {} (the last \
                     seq it delivered)",
                    cur.after_seq
                ),
            );
        }
        if let Some(e) = &cur.epoch
            && epoch.as_ref() != Some(e)
        {
            sh.violate(
                Some(k),
                req,
                "cursor",
                format!(
                    "run {run}: the client sent epoch {:?}; expected {e:?}",
                    epoch.as_deref().unwrap_or("(none)")
                ),
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn on_message(
    sh: &Arc<Shared>,
    k: u32,
    state: &Arc<StdMutex<ConnState>>,
    sink: &Arc<AsyncMutex<Option<Sink>>>,
    stalled: &AtomicBool,
    script: &Connection,
    m: ClientMessage,
    first: bool,
    at: Instant,
) {
    let is_hello = matches!(m, ClientMessage::Hello(_));
    if first && !is_hello {
        sh.violate(
            Some(k),
            reqs::HELLO_FIRST,
            "hello",
            format!(
                "the first client message was {:?}, not hello",
                m.message_type()
            ),
        );
    }
    let had_hello = state.lock().map(|s| s.hello.is_some()).unwrap_or(false);
    if is_hello && had_hello {
        sh.violate(
            Some(k),
            reqs::HELLO_FIRST,
            "hello",
            "the client sent a second hello on one connection",
        );
    }
    let subs: Vec<_> = match &m {
        ClientMessage::Hello(h) => h.subscriptions.clone(),
        ClientMessage::Subscribe(s) => s.subscriptions.clone(),
        _ => Vec::new(),
    };
    for s in subs {
        on_subscription(sh, k, state, script, s, at);
    }
    let answer = match &m {
        ClientMessage::Ping(p) => Some(json!({"type": "pong", "id": p.id})),
        ClientMessage::Unsubscribe(u) => {
            let mut st = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for r in &u.run_ids {
                st.latest.remove(r.as_str());
            }
            drop(st);
            Some(Value::Array(
                u.run_ids
                    .iter()
                    .map(|r| json!({"type": "unsubscribed", "run_id": r}))
                    .collect(),
            ))
        }
        _ => None,
    };
    if let Ok(mut st) = state.lock() {
        if let ClientMessage::Hello(h) = &m
            && st.hello.is_none()
        {
            st.hello = Some(h.clone());
            st.hello_at = Some(at);
        }
        st.msgs.push((at, m));
    }
    if let Some(answer) = answer
        && !stalled.load(Ordering::SeqCst)
    {
        let frames = match answer {
            Value::Array(a) => a,
            v => vec![v],
        };
        let mut g = sink.lock().await;
        if let Some(s) = g.as_mut() {
            for f in frames {
                let text = f.to_string();
                sh.record(k, Direction::Out, What::Text { text: text.clone() });
                let _ = s.send(Message::text(text)).await;
            }
        }
    }
}
