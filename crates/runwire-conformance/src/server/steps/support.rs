//! What the server steps share: the world's helpers (the producer's HTTP requests,
//! the clients' connections, hellos and the frames they wait for) and the judgments
//! of things that are due.

use std::time::Duration;

use runwire_mock::TimingMiss;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{RunInfo, ServerWorld};
use crate::{
    http::{HttpAnswer, request_with},
    runner::StepFail,
    server::{
        conn::{Conn, ConnectOptions, Due, clip},
        scaled,
    },
};

/// A step helper's result.
pub(super) type R<T> = Result<T, StepFail>;

/// The verdict of a wait for something due ([`Conn::wait_due`]): `None` when it came
/// on time; a timing miss over `[from, arrival]` when it came late, or over the whole
/// extension when it never came (a plain violation when the connection ended first,
/// since then it cannot come any more).
pub(super) fn due_verdict(
    due: Due,
    requirement: &str,
    what: &str,
    from: Instant,
    nothing: impl FnOnce() -> String,
) -> Option<StepFail> {
    match due {
        Due::OnTime => None,
        Due::Late { by, at } => Some(StepFail::timing(
            requirement,
            format!("{what}: it came {} ms late", by.as_millis()),
            TimingMiss::new(by, from, at),
        )),
        Due::Never { waited, ended } => {
            let msg = format!(
                "{what}: it had not arrived {} ms past due; {}",
                waited.as_millis(),
                nothing()
            );
            Some(if ended {
                StepFail::req(requirement, msg)
            } else {
                StepFail::timing(
                    requirement,
                    msg,
                    TimingMiss::new(waited, from, Instant::now()),
                )
            })
        }
    }
}

/// How long (unscaled ms) a step waits for an answer the spec requires but does not
/// time (a `subscribed`, a `welcome`, the close after a closing error, events being
/// delivered). Only a failing run ever waits this long, so it is generous: a server
/// stalled by a busy disk for a few seconds is slow, not wrong.
pub(super) const ANSWER_WAIT_MS: u64 = 15_000;

/// A `run.progress` event numbered `i`, its message padded by `pad` bytes.
pub(super) fn progress_event(i: u64, pad: usize) -> Value {
    let mut msg = format!("step {i}");
    if pad > 0 {
        msg.push(' ');
        msg.extend(std::iter::repeat_n('x', pad));
    }
    json!({"type": "run.progress", "data": {"percent": (i % 101), "message": msg}})
}

impl ServerWorld {
    pub(super) fn ms(&self, ms: u64) -> Duration {
        scaled(ms, self.scale)
    }

    pub(super) fn dl(&self, ms: u64) -> Instant {
        Instant::now() + self.ms(ms)
    }

    pub(super) fn run(&mut self, alias: &str) -> &mut RunInfo {
        let ns = self.ns.clone();
        let retained = self
            .target
            .short_retention
            .as_ref()
            .map(|r| r.prefix.clone());
        self.runs.entry(alias.to_owned()).or_insert_with(|| {
            let id = if let Some(rest) = alias.strip_prefix("allowed") {
                format!("rwc-allowed-{ns}{rest}")
            } else if let (Some(rest), Some(prefix)) = (alias.strip_prefix("retained"), retained) {
                format!("{prefix}{ns}{rest}")
            } else {
                format!("rwc-{ns}-{alias}")
            };
            RunInfo {
                id,
                epoch: None,
                head: 0,
                acked: Vec::new(),
            }
        })
    }

    pub(super) fn run_id(&mut self, alias: &str) -> String {
        self.run(alias).id.clone()
    }

    pub(super) fn subst(&mut self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[i..]);
                return out;
            };
            let key = &after[..end];
            let val = if key == "token" {
                self.target.token.clone().unwrap_or_default()
            } else if key == "prefix" {
                // The prefix every run id of this scenario starts with (`run`).
                format!("rwc-{}-", self.ns)
            } else if key == "limited_token" {
                self.target.limited_token.clone().unwrap_or_default()
            } else if let Some(alias) = key.strip_prefix("epoch:") {
                self.run(alias).epoch.clone().unwrap_or_default()
            } else if let Some(alias) = key.strip_prefix("head:") {
                self.run(alias).head.to_string()
            } else {
                self.run_id(key)
            };
            out.push_str(&val);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    pub(super) fn client(&mut self, name: &str) -> R<&mut Conn> {
        self.clients
            .get_mut(name)
            .ok_or_else(|| StepFail::msg(format!("step error: client {name:?} is not connected")))
    }

    pub(super) fn welcome_u64(&self, name: &str, ptr: &str) -> Option<u64> {
        self.clients
            .get(name)
            .and_then(|c| c.welcome.as_ref())
            .and_then(|(w, _)| w.pointer(ptr))
            .and_then(Value::as_u64)
    }

    /// How long to wait for an answer that needs a timer to fire first.
    pub(super) fn timer_wait(&self, name: &str) -> u64 {
        let hb = self
            .welcome_u64(name, "/heartbeat_interval_ms")
            .unwrap_or(runwire_protocol::defaults::HEARTBEAT_INTERVAL_MS);
        let pong = self
            .welcome_u64(name, "/pong_timeout_ms")
            .unwrap_or(runwire_protocol::defaults::PONG_TIMEOUT_MS);
        2000 + hb + pong + self.target.hello_timeout_ms
    }

    pub(super) fn quiet_ms(&self, name: &str) -> u64 {
        self.welcome_u64(name, "/batch_window_ms").unwrap_or(200) + 300
    }

    pub(super) async fn http(
        &mut self,
        method: &str,
        path: &str,
        token: Option<String>,
        body: Option<Vec<u8>>,
    ) -> R<HttpAnswer> {
        self.http_with(method, path, token, body, &[]).await
    }

    /// [`Self::http`] with extra headers (`Origin`, a `Content-Type` of its own).
    pub(super) async fn http_with(
        &mut self,
        method: &str,
        path: &str,
        token: Option<String>,
        body: Option<Vec<u8>>,
        headers: &[(String, String)],
    ) -> R<HttpAnswer> {
        let shown = body
            .as_ref()
            .map(|b| clip(&String::from_utf8_lossy(b)))
            .unwrap_or_default();
        let extra: String = headers
            .iter()
            .map(|(n, v)| format!(" [{n}: {v}]"))
            .collect();
        self.rec
            .out("producer", &format!("{method} {path}{extra} {shown}"));
        let a = request_with(
            &self.target.ingest_url,
            method,
            path,
            token.as_deref(),
            body.as_deref(),
            headers,
            self.ms(30_000),
        )
        .await
        .map_err(|e| StepFail::msg(format!("HTTP {method} {path}: {e}")))?;
        self.rec.inn(
            "producer",
            &format!("{} {}", a.status, clip(&String::from_utf8_lossy(&a.body))),
        );
        self.last = Some(a.clone());
        Ok(a)
    }

    /// `GET path`, `${…}` substituted.
    pub(super) async fn get(&mut self, path: &str, token: Option<String>) -> R<()> {
        let path = self.subst(path.trim());
        self.http("GET", &path, token, None).await?;
        Ok(())
    }

    /// POSTs a step's doc string, `${…}` substituted, as the events of run `alias`.
    pub(super) async fn post_doc(
        &mut self,
        alias: &str,
        doc: &str,
        token: Option<String>,
        headers: &[(String, String)],
    ) -> R<HttpAnswer> {
        let id = self.run_id(alias);
        let body = self.subst(doc);
        self.http_with(
            "POST",
            &format!("/v1/runs/{id}/events"),
            token,
            Some(body.into_bytes()),
            headers,
        )
        .await
    }

    pub(super) async fn append(
        &mut self,
        alias: &str,
        events: Vec<Value>,
        token: Option<String>,
    ) -> R<Value> {
        let id = self.run_id(alias);
        let body = serde_json::to_vec(&json!({ "events": events })).unwrap_or_default();
        let path = format!("/v1/runs/{id}/events");
        let a = self.http("POST", &path, token, Some(body.clone())).await?;
        if a.status != 200 {
            return Err(StepFail::req(
                "RW-INGEST-1",
                format!(
                    "expected 200 for a valid append to {id}, got {} {}",
                    a.status,
                    clip(&String::from_utf8_lossy(&a.body))
                ),
            ));
        }
        let v = a.json();
        self.note_append(alias, &v);
        self.last_append = Some((path, body, v.clone()));
        Ok(v)
    }

    pub(super) fn note_append(&mut self, alias: &str, v: &Value) {
        let now = Instant::now();
        let r = self.run(alias);
        if let Some(e) = v.get("epoch").and_then(Value::as_str) {
            r.epoch = Some(e.to_owned());
        }
        if let Some(evs) = v.get("events").and_then(Value::as_array) {
            for e in evs {
                if let Some(s) = e.get("seq").and_then(Value::as_u64) {
                    r.head = r.head.max(s);
                    r.acked.push((s, now));
                }
            }
        }
    }

    pub(super) async fn connect(
        &mut self,
        name: &str,
        opts: ConnectOptions,
        url: Option<String>,
    ) -> R<()> {
        if let Some(old) = self.clients.remove(name) {
            self.retired.push(old);
        }
        let url = url.unwrap_or_else(|| self.target.ws_url.clone());
        let c = Conn::open(name, &url, opts, self.rec.clone(), self.ms(5000))
            .await
            .map_err(|e| StepFail::req("RW-CONN-1", e))?;
        self.clients.insert(name.to_owned(), c);
        Ok(())
    }

    pub(super) fn token(&self) -> Option<String> {
        self.target.token.clone()
    }

    pub(super) async fn hello(
        &mut self,
        name: &str,
        versions: Vec<String>,
        token: Option<String>,
        subs: Vec<Value>,
    ) -> R<()> {
        let h = Conn::hello(&versions, token.as_deref(), subs);
        let deadline = Duration::from_millis(self.target.hello_timeout_ms);
        let c = self.client(name)?;
        if let Err(e) = c.send(&h).await {
            // The server may have closed the socket at its hello deadline because
            // the kit itself was too late to send.
            let after = c.opened_at.elapsed();
            return Err(StepFail::timing(
                "RW-CONN-3",
                format!(
                    "the kit could not send its hello {} ms after the upgrade (the server's hello deadline is {} ms): {e}",
                    after.as_millis(),
                    deadline.as_millis()
                ),
                TimingMiss::new(deadline.saturating_sub(after), c.opened_at, Instant::now()),
            ));
        }
        c.hello_sent = Some(Instant::now());
        Ok(())
    }

    /// Connects client `name`, sends hello with `token` and receives welcome.
    pub(super) async fn connected(&mut self, name: &str, token: Option<String>) -> R<()> {
        self.connect(name, ConnectOptions::default(), None).await?;
        self.hello(name, vec!["1.0".into()], token, vec![]).await?;
        self.expect_welcome(name).await?;
        Ok(())
    }

    /// When a step expected something else and got `hello_timeout`: the server's
    /// deadline ran from the upgrade, so a hello the kit itself sent late (a busy
    /// machine) is not the server's fault. The miss is how much earlier than the
    /// announced deadline the kit sent its hello; none (the kit was later than the
    /// deadline) is always inconclusive.
    fn hello_timeout_miss(&self, name: &str, v: &Value) -> Option<StepFail> {
        if v.get("code").and_then(Value::as_str) != Some("hello_timeout") {
            return None;
        }
        let c = self.clients.get(name)?;
        let sent = c.hello_sent?;
        let after = sent.saturating_duration_since(c.opened_at);
        let deadline = Duration::from_millis(self.target.hello_timeout_ms);
        Some(StepFail::timing(
            "RW-CONN-3",
            format!(
                "expected welcome, got {}: the kit sent its hello {} ms after the upgrade, and the server's hello deadline is {} ms",
                clip(&v.to_string()),
                after.as_millis(),
                deadline.as_millis()
            ),
            runwire_mock::TimingMiss::new(deadline.saturating_sub(after), c.opened_at, sent),
        ))
    }

    pub(super) async fn expect_welcome(&mut self, name: &str) -> R<Value> {
        let dl = self.dl(ANSWER_WAIT_MS);
        let c = self.client(name)?;
        let v = c.next_control(dl).await.map_err(|e| {
            StepFail::req("RW-CONN-5", format!("expected welcome after hello; {e}"))
        })?;
        if v.get("type").and_then(Value::as_str) != Some("welcome") {
            if let Some(f) = self.hello_timeout_miss(name, &v) {
                return Err(f);
            }
            return Err(StepFail::req(
                "RW-CONN-6",
                format!("expected welcome, got {}", clip(&v.to_string())),
            ));
        }
        Ok(v)
    }

    pub(super) async fn expect_control(&mut self, name: &str, ty: &str, wait_ms: u64) -> R<Value> {
        let dl = self.dl(wait_ms);
        let c = self.client(name)?;
        let v = loop {
            let v = c
                .next_control(dl)
                .await
                .map_err(|e| StepFail::msg(format!("expected a {ty} frame; {e}")))?;
            // Pongs answer the runner's own pings; they are never what a step waits for.
            if ty != "pong" && v.get("type").and_then(Value::as_str) == Some("pong") {
                continue;
            }
            break v;
        };
        if v.get("type").and_then(Value::as_str) == Some("error") {
            self.last_error.insert(name.to_owned(), v.clone());
        }
        if v.get("type").and_then(Value::as_str) != Some(ty) {
            if let Some(f) = self.hello_timeout_miss(name, &v) {
                return Err(f);
            }
            return Err(StepFail::msg(format!(
                "expected a {ty} frame, got {}",
                clip(&v.to_string())
            )));
        }
        Ok(v)
    }

    pub(super) fn sub_entry(
        &mut self,
        alias: &str,
        after: Option<u64>,
        epoch: Option<String>,
    ) -> Value {
        let id = self.run_id(alias);
        let mut e = json!({"run_id": id});
        if let Some(a) = after {
            e["after_seq"] = json!(a);
        }
        if let Some(ep) = epoch {
            e["epoch"] = json!(ep);
        }
        e
    }

    pub(super) async fn subscribe(&mut self, name: &str, entries: Vec<Value>) -> R<()> {
        let m = json!({"type": "subscribe", "subscriptions": entries});
        self.client(name)?.send(&m).await.map_err(StepFail::msg)
    }

    pub(super) fn welcome_of(&self, name: &str) -> R<Value> {
        self.clients
            .get(name)
            .and_then(|c| c.welcome.clone())
            .map(|w| w.0)
            .ok_or_else(|| StepFail::msg(format!("step error: client {name} has no welcome")))
    }
}
