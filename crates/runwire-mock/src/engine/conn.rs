//! A connection's script as the mock plays it: waiting for the client's hello and
//! messages with "within" deadlines, sending frames, and playing the steps in order
//! ([`super::steps`] plays each one).

// A part of the engine, in its vocabulary.
use super::*;

impl Conn {
    pub(super) fn st(&self) -> std::sync::MutexGuard<'_, ConnState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) async fn wait_for<T>(
        &mut self,
        deadline: Instant,
        mut f: impl FnMut(&mut ConnState) -> Option<T>,
    ) -> Waited<T> {
        loop {
            self.rx.borrow_and_update();
            {
                let mut st = self.st();
                if let Some(v) = f(&mut st) {
                    return Waited::Found(v);
                }
                if st.closed.is_some() || st.mock_ended {
                    return Waited::Closed;
                }
            }
            match timeout_at(deadline, self.rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    // The reader ended: one last look.
                    let mut st = self.st();
                    return match f(&mut st) {
                        Some(v) => Waited::Found(v),
                        None => Waited::Closed,
                    };
                }
                Err(_) => {
                    let mut st = self.st();
                    return match f(&mut st) {
                        Some(v) => Waited::Found(v),
                        None => Waited::Timeout,
                    };
                }
            }
        }
    }

    /// Waits for something that must happen by `deadline` (`f` returns it with the
    /// time it happened). When the deadline passes without it, keeps watching for
    /// [`Shared::extension`] measured from `from`, so that a late arrival is judged by
    /// how late it came, and a missing one by the whole time watched.
    pub(super) async fn wait_timed<T>(
        &mut self,
        from: Instant,
        deadline: Instant,
        mut f: impl FnMut(&mut ConnState) -> Option<(T, Instant)>,
    ) -> Timed<T> {
        let (value, at) = match self.wait_for(deadline, &mut f).await {
            Waited::Found(x) => x,
            Waited::Closed => return Timed::Closed,
            Waited::Timeout => {
                let ext = self.sh.extension(from);
                match self.wait_for(deadline + ext, &mut f).await {
                    Waited::Found(x) => x,
                    Waited::Closed => {
                        let end = self
                            .st()
                            .closed
                            .map_or_else(Instant::now, |c| c.0)
                            .max(deadline);
                        return Timed::Missing {
                            watched: end.saturating_duration_since(deadline).min(ext),
                            closed: true,
                        };
                    }
                    Waited::Timeout => {
                        return Timed::Missing {
                            watched: ext,
                            closed: false,
                        };
                    }
                }
            }
        };
        if at <= deadline {
            Timed::InTime(value)
        } else {
            Timed::Late {
                value,
                by: at.saturating_duration_since(deadline),
                at,
            }
        }
    }

    /// Records the violation of a "within W" judgment that came late or not at all:
    /// `what` names what was expected ("no pong for ping \"p-1\" within 300 ms").
    pub(super) fn violate_within<T>(
        &self,
        requirement: &str,
        expectation: &str,
        what: &str,
        timed: &Timed<T>,
        from: Instant,
    ) {
        let now = Instant::now();
        match timed {
            Timed::Late { by, at, .. } => self.sh.violate_timing(
                Some(self.k),
                requirement,
                expectation,
                format!("{what}: it came {:.1} ms late", ms(*by)),
                TimingMiss::new(*by, from, *at),
            ),
            Timed::Missing { watched, closed } => self.sh.violate_timing(
                Some(self.k),
                requirement,
                expectation,
                if *closed {
                    format!(
                        "{what}, nor in the {:.0} ms after that before the connection ended",
                        ms(*watched)
                    )
                } else {
                    format!(
                        "{what}, nor in the {:.0} ms watched after that",
                        ms(*watched)
                    )
                },
                TimingMiss::new(*watched, from, now),
            ),
            Timed::InTime(_) | Timed::Closed => {}
        }
    }

    pub(super) async fn send(&mut self, msg: Message) -> bool {
        let what = match &msg {
            Message::Text(t) => What::Text {
                text: t.as_str().to_owned(),
            },
            Message::Binary(b) => What::Binary { hex: hex(b) },
            Message::Frame(f) => What::Note {
                text: format!("raw text frame, payload hex {}", hex(f.payload())),
            },
            _ => What::Note {
                text: "frame".into(),
            },
        };
        let mut g = self.sink.lock().await;
        let Some(s) = g.as_mut() else {
            drop(g);
            self.sh
                .note(self.k, "connection already closed: frame not sent");
            return false;
        };
        self.sh.record(self.k, Direction::Out, what);
        match s.send(msg.clone()).await {
            Ok(()) => {
                drop(g);
                {
                    let mut st = self.st();
                    if st.liveness_budget.is_some() {
                        st.sent_since_welcome.push(Instant::now());
                    }
                }
                self.sent.push(msg);
                true
            }
            Err(e) => {
                drop(g);
                self.sh.note(self.k, format!("send failed: {e}"));
                false
            }
        }
    }

    pub(super) async fn send_json(&mut self, v: &Value) -> bool {
        self.send(Message::text(v.to_string())).await
    }

    /// Ends the connection from the mock side, without a close frame.
    pub(super) async fn drop_connection(&mut self, fault: String) {
        self.st().mock_ended = true;
        self.sh
            .record(self.k, Direction::Mock, What::Fault { fault });
        if let Some(r) = self.reader.take() {
            r.abort();
            let _ = r.await;
        }
        let _ = self.sink.lock().await.take();
        mark_ended(&self.sh, self.k, Instant::now());
        self.sh.record(
            self.k,
            Direction::Mock,
            What::Disconnect { by: "mock".into() },
        );
    }

    pub(super) fn requirement<'a>(&'a self, r: &'a Option<String>, default: &'a str) -> &'a str {
        r.as_deref().unwrap_or(default)
    }

    pub(super) async fn play(&mut self, script: &Connection, scripted: bool) {
        let sh = self.sh.clone();
        let k = self.k;
        // Every connection begins with the client's hello.
        let within = sh.dur(script.hello.within_ms.unwrap_or(1000));
        let start = Instant::now();
        let timed = self
            .wait_timed(start, start + within, |st| {
                Some((st.hello.clone()?, st.hello_at.unwrap_or_else(Instant::now)))
            })
            .await;
        if scripted {
            self.violate_within(
                reqs::HELLO_FIRST,
                "hello",
                &format!("no hello within {} ms of the upgrade", within.as_millis()),
                &timed,
                start,
            );
        }
        let hello = match timed {
            Timed::InTime(h) | Timed::Late { value: h, .. } => h,
            Timed::Closed => {
                if scripted && !script.steps.is_empty() {
                    sh.violate(
                        Some(k),
                        reqs::HELLO_FIRST,
                        "hello",
                        "the client ended the connection without sending hello",
                    );
                }
                return;
            }
            Timed::Missing { .. } => return,
        };
        self.listened_at = Instant::now();
        if !scripted {
            return;
        }
        for v in &script.hello.versions_include {
            if !hello.versions.contains(v) {
                sh.violate(
                    Some(k),
                    reqs::HELLO_VERSIONS,
                    "hello",
                    format!("hello.versions {:?} does not include {v:?}", hello.versions),
                );
            }
        }
        if let Some(tok) = &script.hello.token {
            let header = self.st().header_token.clone();
            let ok = hello.token.as_ref() == Some(tok) || header.as_ref() == Some(tok);
            if !ok {
                // A token in hello or the header, but not this attempt's: the client did
                // not ask its token provider again (RW-AUTH-9). No token there at all is a
                // token that did not travel where it must (RW-AUTH-1).
                let tokens = &sh.fixture.client.tokens;
                let presented = hello.token.as_ref().or(header.as_ref());
                let (req, why) = match presented {
                    Some(p) if !tokens.is_empty() => (
                        reqs::TOKEN_FRESH,
                        if tokens.iter().any(|t| t == p) {
                            " (a stale token: the provider's answer for another attempt; the \
                             provider is asked before every connection attempt)"
                        } else {
                            " (the provider is asked before every connection attempt)"
                        },
                    ),
                    _ => (reqs::TOKEN, ""),
                };
                sh.violate(
                    Some(k),
                    req,
                    "token",
                    format!(
                        "expected token {tok:?} in hello.token or an Authorization header; got \
                         hello.token {:?}, header {:?}{why}",
                        hello.token, header
                    ),
                );
            }
        }
        for (i, step) in script.steps.iter().enumerate() {
            self.step_index = i;
            if let Ok(mut st) = sh.st.lock()
                && let Some(c) = st.conns.get_mut((k - 1) as usize)
            {
                c.step = Some(i);
            }
            self.run_step(step, &hello).await;
            if matches!(
                step,
                Step::Subscribed(_)
                    | Step::AwaitPong(_)
                    | Step::AwaitSubscribe(_)
                    | Step::AwaitMessage(_)
                    | Step::AwaitClose(_)
                    | Step::ExpectSilence(_)
            ) {
                self.listened_at = Instant::now();
            }
        }
    }

    pub(super) fn resolve_epoch(&self, run: &str, epoch: &Option<String>) -> String {
        epoch.clone().unwrap_or_else(|| self.sh.current_epoch(run))
    }

    pub(super) fn event_values(&self, s: &EventsStep) -> Vec<Value> {
        let epoch = self.resolve_epoch(&s.run, &s.epoch);
        s.selected()
            .into_iter()
            .filter_map(|q| self.sh.logs.wire(&s.run, &epoch, q).cloned())
            .collect()
    }

    pub(super) async fn await_request(
        &mut self,
        run: &str,
        within_ms: Option<u64>,
    ) -> Option<(Option<u64>, Option<String>)> {
        let within = self.sh.dur(within_ms.unwrap_or(1000));
        let start = Instant::now();
        let r = run.to_owned();
        let timed = self
            .wait_timed(start, start + within, |st| {
                let v = st.requested.get(&r).cloned()?;
                Some((
                    v,
                    st.requested_at
                        .get(&r)
                        .copied()
                        .unwrap_or_else(Instant::now),
                ))
            })
            .await;
        self.violate_within(
            reqs::SUBSCRIBE,
            "subscribe",
            &format!(
                "the client did not subscribe to run {run} within {} ms",
                within.as_millis()
            ),
            &timed,
            start,
        );
        if matches!(timed, Timed::Closed) {
            self.sh.violate(
                Some(self.k),
                reqs::SUBSCRIBE,
                "subscribe",
                format!("the connection ended before the client subscribed to run {run}"),
            );
        }
        timed.value()
    }
}
