//! Connection admission scenarios (`features/server/admission.feature`, spec §17,
//! `RW-SEC-11` to `RW-SEC-14`): what a server does with connections that never finish
//! their handshake, judged by what a raw TCP socket sees.
//!
//! The deadlines and the pre-hello limit are server configuration that is not
//! announced, so the kit is told them (`--header-timeout-ms`, `--body-timeout-ms`,
//! `--pre-hello-limit`, `--max-request-bytes`, see [`AdmissionDecl`]). A scenario that
//! needs an undeclared value is graded not implemented: a server is never failed on a
//! SHOULD it cannot be told about. The oversize `Content-Length` scenario (a MUST)
//! needs no declaration: without `--max-request-bytes` the kit declares 1 TiB, which
//! exceeds any request size limit.
//!
//! # Timing
//!
//! A deadline is met when the server closes (or answers) by the declared deadline plus
//! [`GRACE_MS`], counted from when the kit's socket was connected (the server's own
//! clock starts at its accept, which is no earlier). A later close is a timing miss by
//! how much it was later, judged against the kit's lateness measured over that
//! interval like every other timing judgment; no close within [`NEVER_MS`] past the
//! deadline is a miss of that size.

use std::time::Duration;

use runwire_mock::TimingMiss;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    time::Instant,
};

use super::{ServerTarget, scaled};
use crate::{
    net::{self, Endpoint, Stream},
    runner::StepFail,
};

/// What a server under test declares about its admission (none of it is announced).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmissionDecl {
    /// The header deadline in ms (`RW-SEC-11`).
    pub header_timeout_ms: Option<u64>,
    /// The body deadline in ms (`RW-SEC-13`).
    pub body_timeout_ms: Option<u64>,
    /// The most connections one address may hold before `hello` (`RW-SEC-12`).
    pub pre_hello_limit: Option<u32>,
    /// The request size limit in bytes (`RW-SEC-14`).
    pub max_request_bytes: Option<u64>,
    /// The most WebSocket connections one authenticated identity may hold
    /// (`RW-SEC-18`); the scenario fills it with the limited token.
    pub identity_limit: Option<u32>,
    /// The ingest URL is a proxy in front of the server (the kit's fault injection),
    /// so raw sockets would judge the proxy: every admission scenario is then graded
    /// not implemented.
    pub behind_proxy: bool,
}

/// What the kit allows past a declared deadline for the server's timer and its close
/// to reach the socket: a server's timers fire within milliseconds on a healthy
/// machine; anything later must be explained by the measured lateness.
pub(crate) const GRACE_MS: u64 = 100;
/// How long past a deadline the kit waits before it names the server for a missing
/// deadline (the same 2 s as for the hello deadline, `RW-CONN-3`).
pub(crate) const NEVER_MS: u64 = 2_000;
/// How long the kit waits for an answer that is not timed.
const ANSWER_WAIT_MS: u64 = 15_000;
/// Most silent sockets the pre-hello scenario opens (a larger declared limit is graded
/// not implemented rather than flooding the server).
const MAX_HELD: u32 = 1_024;
/// Most connections the per-identity scenario opens (each one a WebSocket with its own
/// reader state, so fewer than the silent sockets of the pre-hello scenario).
const MAX_IDENTITY_HELD: u32 = 512;

/// The admission step kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum A {
    RequireHeaderDeadline,
    RequireBodyDeadline,
    RequirePreHelloLimit,
    HalfHead,
    ClosedWithinHeader,
    PartialBody,
    BodyDeadline,
    OversizeHead,
    Answered413,
    FillPreHello,
    OneMoreRefused,
    FreedAfterClose,
    RequireTls,
    PlainUpgradeNotServed,
    PlainApiNotServed,
    RequireIdentityLimit,
    FillIdentity,
    OneMoreHelloRefused,
    IdentityHeldOpen,
}

/// The admission steps and their patterns.
pub(crate) static STEPS: &[(A, &str)] = &[
    (
        A::RequireHeaderDeadline,
        "the server declares a header deadline",
    ),
    (
        A::RequireBodyDeadline,
        "the server declares a body deadline",
    ),
    (
        A::RequirePreHelloLimit,
        "the server declares a pre-hello limit per address",
    ),
    (A::HalfHead, "a raw connection sends half a request head"),
    (
        A::ClosedWithinHeader,
        "the raw connection is closed within the header deadline",
    ),
    (
        A::PartialBody,
        "a raw connection sends an append head and only part of its body",
    ),
    (
        A::BodyDeadline,
        "the raw connection is answered 408 or closed within the body deadline",
    ),
    (
        A::OversizeHead,
        "a raw connection sends an append head declaring a body over the request size limit",
    ),
    (
        A::Answered413,
        "the raw connection is answered 413 {s} without its body",
    ),
    (
        A::FillPreHello,
        "silent connections fill the pre-hello limit",
    ),
    (
        A::OneMoreRefused,
        "one more connection is refused with 503, Retry-After and {s}",
    ),
    (
        A::FreedAfterClose,
        "once the silent connections close, a new connection is served",
    ),
    (A::RequireTls, "the target is served over TLS"),
    (
        A::RequireIdentityLimit,
        "the server declares a connection limit per identity",
    ),
    (
        A::FillIdentity,
        "connections with the limited token fill the identity limit",
    ),
    (
        A::OneMoreHelloRefused,
        "one more hello with the limited token is refused with {s}, retry_after_ms and close {n}",
    ),
    (
        A::IdentityHeldOpen,
        "the connections that filled the identity limit are still open",
    ),
    (
        A::PlainUpgradeNotServed,
        "a plain-text WebSocket upgrade to the stream's address is not upgraded",
    ),
    (
        A::PlainApiNotServed,
        "a plain-text request to the producer API's address gets no API answer",
    ),
];

/// A scenario's admission state: its raw connection and the silent ones it holds.
#[derive(Debug, Default)]
pub(crate) struct State {
    raw: Option<(Stream, Instant)>,
    held: Vec<Stream>,
    /// The WebSockets that fill an identity's limit.
    identity: Vec<Ws>,
}

/// A kit WebSocket (TLS for `wss://`).
type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

type R<T> = Result<T, StepFail>;

/// The target's ingest endpoint (TLS for `https://`).
fn endpoint(target: &ServerTarget) -> R<Endpoint> {
    if target.admission.behind_proxy {
        return Err(StepFail::not_implemented(
            "the ingest URL is a proxy in front of the server; raw sockets would judge the proxy",
        ));
    }
    Endpoint::parse(&target.ingest_url).map_err(StepFail::msg)
}

async fn connect(target: &ServerTarget) -> R<Stream> {
    let ep = endpoint(target)?;
    net::connect(&ep)
        .await
        .map_err(|e| StepFail::msg(format!("cannot connect to {}: {e}", ep.authority)))
}

/// What a raw socket saw until the server closed it, or until `until`.
struct Seen {
    bytes: Vec<u8>,
    /// When the server closed the connection (EOF or reset), if it did by `until`.
    closed: Option<Instant>,
    /// When a complete response head had arrived, if one did.
    head_at: Option<Instant>,
}

impl Seen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    fn status(&self) -> Option<u16> {
        let t = self.text();
        let line = t.lines().next()?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    fn header(&self, name: &str) -> Option<String> {
        let t = self.text();
        let head = t.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    fn body_code(&self) -> Option<String> {
        let t = self.text();
        let body = t.split_once("\r\n\r\n")?.1;
        let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
        v.pointer("/error/code")?.as_str().map(str::to_owned)
    }
}

/// Reads until the server closes the socket or `until`; with `stop_at_response`,
/// also stops once a whole response (head and `Content-Length` body) has arrived.
async fn watch(s: &mut Stream, until: Instant, stop_at_response: bool) -> Seen {
    let mut seen = Seen {
        bytes: Vec::new(),
        closed: None,
        head_at: None,
    };
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout_at(until, s.read(&mut buf)).await;
        match read {
            Err(_) => return seen,
            Ok(Ok(0) | Err(_)) => {
                seen.closed = Some(Instant::now());
                return seen;
            }
            Ok(Ok(n)) => {
                seen.bytes.extend_from_slice(&buf[..n]);
                let t = seen.text();
                if let Some(end) = t.find("\r\n\r\n") {
                    seen.head_at.get_or_insert_with(Instant::now);
                    let len = seen
                        .header("content-length")
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if stop_at_response && seen.bytes.len() >= end + 4 + len {
                        return seen;
                    }
                }
            }
        }
    }
}

/// The verdict of a deadline: met by `at <= due + GRACE_MS`, else a timing miss.
fn judge_due(
    requirement: &str,
    what: &str,
    from: Instant,
    due: Instant,
    at: Option<Instant>,
) -> R<()> {
    let grace = Duration::from_millis(GRACE_MS);
    match at {
        Some(at) if at <= due + grace => Ok(()),
        Some(at) => {
            let by = at - (due + grace);
            Err(StepFail::timing(
                requirement,
                format!(
                    "{what}: it came {} ms after the declared deadline plus {GRACE_MS} ms",
                    by.as_millis()
                ),
                TimingMiss::new(by, from, at),
            ))
        }
        None => Err(StepFail::timing(
            requirement,
            format!(
                "{what}: it had not happened {NEVER_MS} ms past the declared deadline; the server has no such deadline, or a longer one than declared"
            ),
            TimingMiss::new(
                Duration::from_millis(NEVER_MS - GRACE_MS),
                from,
                Instant::now(),
            ),
        )),
    }
}

fn run_path() -> String {
    format!(
        "/v1/runs/rwc-admission-{:08x}/events",
        rand::random::<u32>()
    )
}

fn auth_line(target: &ServerTarget) -> String {
    target
        .token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default()
}

/// Executes one admission step.
pub(crate) async fn exec(
    target: &ServerTarget,
    st: &mut State,
    scale: f64,
    k: A,
    args: Vec<String>,
) -> R<()> {
    match k {
        A::RequireHeaderDeadline => declared_header(target).map(|_| ()),
        A::RequireBodyDeadline => declared_body(target).map(|_| ()),
        A::RequirePreHelloLimit => declared_pre_hello(target).map(|_| ()),
        A::RequireTls => served_over_tls(target).map(|_| ()),
        A::RequireIdentityLimit => identity_limit(target).map(|_| ()),
        A::HalfHead
        | A::ClosedWithinHeader
        | A::PartialBody
        | A::BodyDeadline
        | A::OversizeHead
        | A::Answered413 => deadlines(target, st, scale, k, args).await,
        A::FillPreHello | A::OneMoreRefused | A::FreedAfterClose => {
            pre_hello(target, st, scale, k, args).await
        }
        A::FillIdentity | A::OneMoreHelloRefused | A::IdentityHeldOpen => {
            identity(target, st, scale, k, args).await
        }
        A::PlainUpgradeNotServed | A::PlainApiNotServed => transport(target, scale, k).await,
    }
}

/// The header, body and declared-size steps (`RW-SEC-11`, `RW-SEC-13`, `RW-SEC-14`).
async fn deadlines(
    target: &ServerTarget,
    st: &mut State,
    scale: f64,
    k: A,
    args: Vec<String>,
) -> R<()> {
    let answer_wait = scaled(ANSWER_WAIT_MS, scale);
    match k {
        A::HalfHead => {
            let mut s = connect(target).await?;
            let at = Instant::now();
            s.write_all(b"GET /v1/stream HTTP/1.1\r\nHost: runwire\r\nUpgrade: web")
                .await
                .map_err(|e| StepFail::msg(format!("write failed: {e}")))?;
            st.raw = Some((s, at));
            Ok(())
        }
        A::ClosedWithinHeader => {
            let h = declared_header(target)?;
            let (mut s, at) = st
                .raw
                .take()
                .ok_or_else(|| StepFail::msg("step error: no raw connection"))?;
            let due = at + scaled(h, scale);
            let until = due + Duration::from_millis(NEVER_MS);
            let seen = watch(&mut s, until, false).await;
            if seen.text().contains(" 101 ") {
                return Err(StepFail::req(
                    "RW-SEC-11",
                    "the server upgraded a connection whose request head was incomplete",
                ));
            }
            judge_due(
                "RW-SEC-11",
                &format!(
                    "the close of a connection with half a request head (header deadline {h} ms)"
                ),
                at,
                due,
                seen.closed,
            )
        }
        A::PartialBody => {
            let mut s = connect(target).await?;
            let head = format!(
                "POST {} HTTP/1.1\r\nHost: runwire\r\nContent-Type: application/json\r\n{}Content-Length: 1000\r\n\r\n{{\"events\":[",
                run_path(),
                auth_line(target)
            );
            s.write_all(head.as_bytes())
                .await
                .map_err(|e| StepFail::msg(format!("write failed: {e}")))?;
            st.raw = Some((s, Instant::now()));
            Ok(())
        }
        A::BodyDeadline => {
            let b = declared_body(target)?;
            let (mut s, at) = st
                .raw
                .take()
                .ok_or_else(|| StepFail::msg("step error: no raw connection"))?;
            let due = at + scaled(b, scale);
            let until = due + Duration::from_millis(NEVER_MS);
            let seen = watch(&mut s, until, true).await;
            if let Some(status) = seen.status()
                && seen.head_at.is_some()
                && status != 408
            {
                return Err(StepFail::req(
                    "RW-SEC-13",
                    format!(
                        "an append whose body stalled was answered {status}, not 408: {}",
                        clip(&seen.text())
                    ),
                ));
            }
            let at_end = seen.head_at.or(seen.closed);
            judge_due(
                "RW-SEC-13",
                &format!("the 408 or close of an append whose body stalled (body deadline {b} ms)"),
                at,
                due,
                at_end,
            )
        }
        A::OversizeHead => {
            let declared = target
                .admission
                .max_request_bytes
                .map_or(1u64 << 40, |m| m.saturating_add(1));
            let mut s = connect(target).await?;
            let head = format!(
                "POST {} HTTP/1.1\r\nHost: runwire\r\nContent-Type: application/json\r\n{}Content-Length: {declared}\r\n\r\n",
                run_path(),
                auth_line(target)
            );
            s.write_all(head.as_bytes())
                .await
                .map_err(|e| StepFail::msg(format!("write failed: {e}")))?;
            st.raw = Some((s, Instant::now()));
            Ok(())
        }
        A::Answered413 => {
            let code = args.first().cloned().unwrap_or_default();
            let (mut s, at) = st
                .raw
                .take()
                .ok_or_else(|| StepFail::msg("step error: no raw connection"))?;
            let seen = watch(&mut s, at + answer_wait, true).await;
            if seen.head_at.is_none() {
                return Err(StepFail::req(
                    "RW-SEC-14",
                    format!(
                        "no answer within {} ms to an append that declared a body over the request size limit and sent none of it{}",
                        answer_wait.as_millis(),
                        if seen.closed.is_some() {
                            " (the server closed the connection)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            let status = seen.status();
            let got = seen.body_code();
            if status != Some(413) || got.as_deref() != Some(code.as_str()) {
                return Err(StepFail::req(
                    "RW-SEC-14",
                    format!(
                        "expected 413 {code:?}, got {status:?} {got:?}: {}",
                        clip(&seen.text())
                    ),
                ));
            }
            Ok(())
        }
        other => Err(StepFail::msg(format!(
            "step error: {other:?} is not a deadlines step"
        ))),
    }
}

/// The pre-hello limit steps (`RW-SEC-12`).
async fn pre_hello(
    target: &ServerTarget,
    st: &mut State,
    scale: f64,
    k: A,
    args: Vec<String>,
) -> R<()> {
    let answer_wait = scaled(ANSWER_WAIT_MS, scale);
    match k {
        A::FillPreHello => {
            let n = declared_pre_hello(target)?;
            for i in 0..n {
                let s = connect(target).await?;
                st.held.push(s);
                if i % 64 == 63 {
                    tokio::task::yield_now().await;
                }
            }
            Ok(())
        }
        A::OneMoreRefused => {
            let code = args.first().cloned().unwrap_or_default();
            let mut s = connect(target).await?;
            let at = Instant::now();
            let seen = watch(&mut s, at + answer_wait, true).await;
            if seen.status() != Some(503) {
                return Err(StepFail::req(
                    "RW-SEC-12",
                    format!(
                        "a connection over the declared pre-hello limit of {} was not refused with 503 within {} ms: {}",
                        declared_pre_hello(target)?,
                        answer_wait.as_millis(),
                        if seen.bytes.is_empty() {
                            "it saw nothing".to_owned()
                        } else {
                            clip(&seen.text())
                        }
                    ),
                ));
            }
            if seen.header("retry-after").is_none() {
                return Err(StepFail::req(
                    "RW-INGEST-21",
                    "the 503 refusal carries no Retry-After header",
                ));
            }
            if seen.body_code().as_deref() != Some(code.as_str()) {
                return Err(StepFail::req(
                    "RW-SEC-12",
                    format!(
                        "the 503 refusal's error code is {:?}, not {code:?}",
                        seen.body_code()
                    ),
                ));
            }
            // Any silent socket the server closed early has not been held: a server
            // that refused one of them is still judged by the extra one above.
            Ok(())
        }
        A::FreedAfterClose => {
            st.held.clear();
            let until = Instant::now() + answer_wait;
            let mut last = String::new();
            // The server notices the closes asynchronously: try until it has.
            while Instant::now() < until {
                let mut s = connect(target).await?;
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: runwire\r\nConnection: close\r\n\r\n")
                    .await
                    .map_err(|e| StepFail::msg(format!("write failed: {e}")))?;
                let seen = watch(&mut s, until, true).await;
                match seen.status() {
                    Some(503) if seen.body_code().as_deref() == Some("server_overloaded") => {
                        last = clip(&seen.text());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Some(_) => return Ok(()),
                    None => last = clip(&seen.text()),
                }
            }
            Err(StepFail::req(
                "RW-SEC-12",
                format!(
                    "the pre-hello limit was not released {} ms after the silent connections closed: {last}",
                    answer_wait.as_millis()
                ),
            ))
        }
        other => Err(StepFail::msg(format!(
            "step error: {other:?} is not a pre_hello step"
        ))),
    }
}

/// The per-identity connection limit steps (`RW-SEC-18`).
async fn identity(
    target: &ServerTarget,
    st: &mut State,
    scale: f64,
    k: A,
    args: Vec<String>,
) -> R<()> {
    let answer_wait = scaled(ANSWER_WAIT_MS, scale);
    match k {
        A::FillIdentity => {
            let (n, token) = identity_limit(target)?;
            for i in 0..n {
                let mut ws = open_ws(target, answer_wait).await?;
                match hello(&mut ws, token, answer_wait).await {
                    Hello::Welcome => st.identity.push(ws),
                    other => {
                        return Err(StepFail::req(
                            "RW-SEC-18",
                            format!(
                                "hello {} of {n} with the limited token (under the declared limit) got {}",
                                i + 1,
                                other.describe()
                            ),
                        ));
                    }
                }
            }
            Ok(())
        }
        A::OneMoreHelloRefused => {
            let (n, token) = identity_limit(target)?;
            let code = args.first().cloned().unwrap_or_default();
            let close: u16 = args.get(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            let mut ws = open_ws(target, answer_wait).await?;
            match hello(&mut ws, token, answer_wait).await {
                Hello::Refused {
                    code: got,
                    retry_after_ms,
                    close_code,
                } if got == code && retry_after_ms.is_some() && close_code == Some(close) => Ok(()),
                other => Err(StepFail::req(
                    "RW-SEC-18",
                    format!(
                        "with {n} connections of the limited token open (the declared limit), one more hello got {}; expected error {code:?} with retry_after_ms and close {close}",
                        other.describe()
                    ),
                )),
            }
        }
        A::IdentityHeldOpen => {
            let n = st.identity.len();
            for (i, ws) in st.identity.iter_mut().enumerate() {
                if !still_open(ws, answer_wait).await {
                    return Err(StepFail::req(
                        "RW-SEC-18",
                        format!(
                            "connection {} of the {n} that filled the identity limit was closed when one more was refused",
                            i + 1
                        ),
                    ));
                }
            }
            st.identity.clear();
            Ok(())
        }
        other => Err(StepFail::msg(format!(
            "step error: {other:?} is not a identity step"
        ))),
    }
}

/// The transport security steps (`RW-SEC-3`).
async fn transport(target: &ServerTarget, scale: f64, k: A) -> R<()> {
    let answer_wait = scaled(ANSWER_WAIT_MS, scale);
    match k {
        A::PlainUpgradeNotServed => {
            let (ws, _) = served_over_tls(target)?;
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                ws.path, ws.authority
            );
            let seen = plain_exchange(&ws, &request, answer_wait).await?;
            if seen.status() == Some(101) {
                return Err(StepFail::req(
                    "RW-SEC-3",
                    format!(
                        "{} upgraded a plain-text WebSocket request: the stream is served without TLS",
                        ws.authority
                    ),
                ));
            }
            Ok(())
        }
        A::PlainApiNotServed => {
            let (_, api) = served_over_tls(target)?;
            let request = format!(
                "GET {}/v1/runs/rwc-plain-text/events HTTP/1.1\r\nHost: {}\r\n{}Connection: close\r\n\r\n",
                api.path.trim_end_matches('/'),
                api.authority,
                auth_line(target)
            );
            let seen = plain_exchange(&api, &request, answer_wait).await?;
            // No answer, a redirect, 400 (nginx's "plain HTTP request sent to HTTPS port")
            // or 426 Upgrade Required serve nothing of the API.
            match seen.status() {
                None | Some(300..=399 | 400 | 426) => Ok(()),
                Some(status) => Err(StepFail::req(
                    "RW-SEC-3",
                    format!(
                        "{} answered a plain-text API request with {status}: the API is served without TLS: {}",
                        api.authority,
                        clip(&seen.text())
                    ),
                )),
            }
        }
        other => Err(StepFail::msg(format!(
            "step error: {other:?} is not a transport step"
        ))),
    }
}

fn declared_header(target: &ServerTarget) -> R<u64> {
    target.admission.header_timeout_ms.ok_or_else(|| {
        StepFail::not_implemented("no header deadline declared (--header-timeout-ms)")
    })
}

fn declared_body(target: &ServerTarget) -> R<u64> {
    target
        .admission
        .body_timeout_ms
        .ok_or_else(|| StepFail::not_implemented("no body deadline declared (--body-timeout-ms)"))
}

fn declared_pre_hello(target: &ServerTarget) -> R<u32> {
    target
        .admission
        .pre_hello_limit
        .filter(|n| *n <= MAX_HELD)
        .ok_or_else(|| {
            StepFail::not_implemented(format!(
                "no pre-hello limit per address of at most {MAX_HELD} declared (--pre-hello-limit)"
            ))
        })
}

/// The stream and API endpoints of a target served over TLS.
fn served_over_tls(target: &ServerTarget) -> R<(Endpoint, Endpoint)> {
    let ws = Endpoint::parse(&target.ws_url).map_err(StepFail::msg)?;
    let api = Endpoint::parse(&target.ingest_url).map_err(StepFail::msg)?;
    if ws.tls && api.tls {
        Ok((ws, api))
    } else {
        Err(StepFail::not_implemented(
            "the target is not served over TLS (give wss:// and https:// URLs)",
        ))
    }
}

/// The declared identity limit and the limited token it is filled with.
fn identity_limit(target: &ServerTarget) -> R<(u32, &str)> {
    let n = target
        .admission
        .identity_limit
        .filter(|n| (1..=MAX_IDENTITY_HELD).contains(n))
        .ok_or_else(|| {
            StepFail::not_implemented(format!(
                "no connection limit per identity of 1 to {MAX_IDENTITY_HELD} declared (--identity-limit)"
            ))
        })?;
    let token = target.limited_token.as_deref().ok_or_else(|| {
        StepFail::not_implemented("no --limited-token: the identity limit is filled with it")
    })?;
    Ok((n, token))
}

async fn open_ws(target: &ServerTarget, wait: Duration) -> R<Ws> {
    let upgrade = tokio_tungstenite::connect_async_tls_with_config(
        target.ws_url.as_str(),
        None,
        true,
        Some(net::connector()),
    );
    match tokio::time::timeout(wait, upgrade).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(StepFail::msg(format!("the WebSocket upgrade failed: {e}"))),
        Err(_) => Err(StepFail::msg(format!(
            "the WebSocket upgrade did not complete within {} ms",
            wait.as_millis()
        ))),
    }
}

/// How the server answered a `hello`.
#[derive(Debug)]
enum Hello {
    Welcome,
    Refused {
        code: String,
        retry_after_ms: Option<u64>,
        close_code: Option<u16>,
    },
    Other(String),
}

impl Hello {
    fn describe(&self) -> String {
        match self {
            Self::Welcome => "welcome".into(),
            Self::Refused {
                code,
                retry_after_ms,
                close_code,
            } => {
                format!("error {code:?} (retry_after_ms {retry_after_ms:?}, close {close_code:?})")
            }
            Self::Other(s) => s.clone(),
        }
    }
}

/// Sends `hello` with `token` and reads the answer: `welcome`, or an error frame and
/// the close that follows it.
async fn hello(ws: &mut Ws, token: &str, wait: Duration) -> Hello {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let hello = serde_json::json!({"type": "hello", "versions": ["1.0"], "token": token});
    if let Err(e) = ws.send(Message::text(hello.to_string())).await {
        return Hello::Other(format!("a failed send of hello: {e}"));
    }
    let until = Instant::now() + wait;
    let mut refused: Option<(String, Option<u64>)> = None;
    loop {
        let Ok(next) = tokio::time::timeout_at(until, ws.next()).await else {
            return Hello::Other(format!("no answer within {} ms", wait.as_millis()));
        };
        match next {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                match v["type"].as_str() {
                    Some("welcome") => return Hello::Welcome,
                    Some("error") => {
                        refused = Some((
                            v["code"].as_str().unwrap_or_default().to_owned(),
                            v["retry_after_ms"].as_u64(),
                        ));
                    }
                    _ => {}
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, retry_after_ms) = refused.unwrap_or_default();
                return Hello::Refused {
                    code,
                    retry_after_ms,
                    close_code: frame.map(|f| u16::from(f.code)),
                };
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Hello::Other(format!("a connection error: {e}")),
            None => {
                return Hello::Other("a closed connection without a close frame".into());
            }
        }
    }
}

/// Whether a WebSocket still answers a ping with a pong.
async fn still_open(ws: &mut Ws, wait: Duration) -> bool {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    if ws
        .send(Message::Ping(b"rwc".to_vec().into()))
        .await
        .is_err()
    {
        return false;
    }
    let until = Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(until, ws.next()).await {
            Ok(Some(Ok(Message::Pong(p)))) if &p[..] == b"rwc" => return true,
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) | Err(_) => return false,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Sends `request` in plain text to the address of a TLS endpoint and reads what comes
/// back until the server closes or answers, for at most `wait`.
async fn plain_exchange(ep: &Endpoint, request: &str, wait: Duration) -> R<Seen> {
    let plain = Endpoint {
        tls: false,
        ..ep.clone()
    };
    let mut s = net::connect(&plain)
        .await
        .map_err(|e| StepFail::msg(format!("cannot connect to {}: {e}", ep.authority)))?;
    let at = Instant::now();
    // A TLS server may close as soon as it reads the first bytes; what it answers, if
    // anything, is what counts.
    let _ = s.write_all(request.as_bytes()).await;
    Ok(watch(&mut s, at + wait, true).await)
}

fn clip(s: &str) -> String {
    super::conn::clip(s)
}
