//! Raw-frame steps: what no WebSocket client library sends, written byte by byte over
//! TCP after a hand-made upgrade. Frames that break RFC 6455 (`RW-CLOSE-12`), and a
//! binary frame that arrives when the message rate is used up (`RW-INPUT-6`: the
//! frame's kind is checked before the rate, spec §14.2).

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    time::Instant,
};

use super::ServerTarget;
use crate::{
    net::{self, Endpoint, Stream},
    runner::{Recorder, StepFail},
};

type R<T> = Result<T, StepFail>;

/// The broken frames a step can name, as its feature text spells them.
const BROKEN: &[(&str, &str)] = &[
    (
        "a frame with reserved opcode 0x3",
        "reserved data opcode 0x3",
    ),
    (
        "a frame with reserved opcode 0xB",
        "reserved control opcode 0xB",
    ),
    (
        "a continuation frame that continues nothing",
        "continuation frame without a message to continue",
    ),
    (
        "a text frame with RSV1 set",
        "text frame with the RSV1 bit set, no extension negotiated",
    ),
    ("a fragmented ping", "ping frame without FIN"),
    (
        "a text frame inside a fragmented message",
        "new text frame while a fragmented text message is open",
    ),
];

/// A masked client frame with the all-zero masking key (the payload goes on the wire
/// as it is); `first` is the FIN/RSV/opcode byte.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// The bytes of a broken frame named in a step.
fn broken_frame(name: &str) -> Option<Vec<u8>> {
    Some(match name {
        "a frame with reserved opcode 0x3" => masked(0x83, b"x"),
        "a frame with reserved opcode 0xB" => masked(0x8B, b"x"),
        "a continuation frame that continues nothing" => masked(0x80, b"x"),
        "a text frame with RSV1 set" => masked(0xC1, br#"{"type":"ping","id":"rsv"}"#),
        "a fragmented ping" => masked(0x09, b"p"),
        "a text frame inside a fragmented message" => {
            let mut f = masked(0x01, br#"{"type":"ping","#);
            f.extend(masked(0x81, br#"{"type":"ping","id":"x"}"#));
            f
        }
        _ => return None,
    })
}

/// A frame the server sent.
struct ServerFrame {
    opcode: u8,
    payload: Vec<u8>,
}

/// A hand-made WebSocket connection.
pub(super) struct Raw {
    /// The connection (TCP, or TLS over it), upgraded.
    pub(super) tcp: Stream,
    /// What the server sent after its `101` answer, read with it.
    pub(super) got: Vec<u8>,
}

impl Raw {
    /// Connects to the stream endpoint (TLS for `wss://`, `crate::net`) and completes an
    /// upgrade by hand, within `dl`.
    pub(super) async fn open(target: &ServerTarget, dl: Instant) -> R<Self> {
        let ep = Endpoint::parse(&target.ws_url).map_err(StepFail::msg)?;
        let (hostport, path) = (&ep.authority, &ep.path);
        let mut tcp = net::connect(&ep)
            .await
            .map_err(|e| StepFail::req("RW-CONN-1", format!("cannot connect: {e}")))?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(req.as_bytes())
            .await
            .map_err(|e| StepFail::msg(e.to_string()))?;
        let mut head = Vec::new();
        let mut buf = vec![0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tokio::time::timeout_at(dl, tcp.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => return Err(StepFail::req("RW-CONN-1", "the upgrade was not answered")),
            }
        }
        let at = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
        let got = head.split_off(at);
        Ok(Self { tcp, got })
    }

    async fn write(&mut self, bytes: &[u8]) -> R<()> {
        self.tcp
            .write_all(bytes)
            .await
            .map_err(|e| StepFail::msg(format!("writing failed: {e}")))
    }

    /// Reads until the server sends a close frame or closes the TCP connection; `Err`
    /// with `why` if it does neither by `dl`.
    async fn read_to_end(&mut self, dl: Instant, req: &str, why: &str) -> R<Vec<ServerFrame>> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if self.frames().iter().any(|f| f.opcode == 8) {
                break;
            }
            match tokio::time::timeout_at(dl, self.tcp.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => self.got.extend_from_slice(&buf[..n]),
                Err(_) => return Err(StepFail::req(req, why)),
            }
        }
        Ok(self.frames())
    }

    /// Reads until a whole text frame is there; returns it as JSON.
    async fn read_json(&mut self, dl: Instant) -> R<Value> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if let Some(f) = self.frames().into_iter().find(|f| f.opcode == 1) {
                let v = serde_json::from_slice(&f.payload)
                    .map_err(|e| StepFail::req("RW-CONV-1", format!("not JSON: {e}")))?;
                return Ok(v);
            }
            match tokio::time::timeout_at(dl, self.tcp.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.got.extend_from_slice(&buf[..n]),
                _ => return Err(StepFail::req("RW-CONN-2", "no welcome after hello")),
            }
        }
    }

    /// The whole frames received so far.
    fn frames(&self) -> Vec<ServerFrame> {
        let got = &self.got;
        let mut out = Vec::new();
        let mut i = 0;
        while i + 2 <= got.len() {
            let (len, h) = match got[i + 1] & 0x7f {
                126 if i + 4 <= got.len() => {
                    (usize::from(u16::from_be_bytes([got[i + 2], got[i + 3]])), 4)
                }
                127 if i + 10 <= got.len() => {
                    let mut l = [0u8; 8];
                    l.copy_from_slice(&got[i + 2..i + 10]);
                    (
                        usize::try_from(u64::from_be_bytes(l)).unwrap_or(usize::MAX),
                        10,
                    )
                }
                126 | 127 => break,
                n => (usize::from(n), 2),
            };
            if got.len() - i - h < len {
                break;
            }
            out.push(ServerFrame {
                opcode: got[i] & 0x0f,
                payload: got[i + h..i + h + len].to_vec(),
            });
            i += h + len;
        }
        out
    }
}

/// The close code of a close frame, if it carries one.
fn close_code(f: &ServerFrame) -> Option<u16> {
    (f.opcode == 8 && f.payload.len() >= 2)
        .then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]))
}

const HELLO: &[u8] = br#"{"type":"hello","versions":["1.0"]}"#;

/// "a raw connection that sends {s} after hello is closed with code 1002"
/// (`RW-CLOSE-12`).
pub(crate) async fn broken_after_hello(
    target: &ServerTarget,
    rec: &Recorder,
    dl: Instant,
    name: &str,
) -> R<()> {
    let frame = broken_frame(name).ok_or_else(|| {
        StepFail::msg(format!(
            "step error: unknown broken frame {name:?}; known: {:?}",
            BROKEN.iter().map(|(n, _)| *n).collect::<Vec<_>>()
        ))
    })?;
    let what = BROKEN
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(name, |(_, w)| *w);
    let mut raw = Raw::open(target, dl).await?;
    let mut hello = match &target.token {
        Some(t) => serde_json::json!({"type": "hello", "versions": ["1.0"], "token": t})
            .to_string()
            .into_bytes(),
        None => HELLO.to_vec(),
    };
    rec.out("raw", "<hello>");
    hello = masked(0x81, &hello);
    raw.write(&hello).await?;
    let welcome = raw.read_json(dl).await?;
    rec.inn("raw", &welcome.to_string());
    rec.out("raw", &format!("<{what}>"));
    raw.write(&frame).await?;
    let frames = raw
        .read_to_end(
            dl,
            "RW-CLOSE-12",
            &format!("the connection stayed open after a {what}"),
        )
        .await?;
    let last = frames.last();
    let code = last.and_then(close_code);
    rec.inn(
        "raw",
        &format!(
            "{} frames, last opcode {:?}, close code {code:?}",
            frames.len(),
            last.map(|f| f.opcode)
        ),
    );
    if code != Some(1002) {
        return Err(StepFail::req(
            "RW-CLOSE-12",
            format!(
                "after a {what} the server must close with 1002; its last frame had opcode {:?} and close code {code:?} (none: the client sees 1005 or 1006)",
                last.map(|f| f.opcode)
            ),
        ));
    }
    Ok(())
}

/// "a raw connection that uses up its message rate and then sends a binary frame
/// receives error {s} and is closed with code {n}" (`RW-INPUT-6`, `RW-INPUT-5`): hello
/// and `max_messages_per_second` − 1 pings, then a binary frame, in one write, so the
/// bucket (full when the connection opened, `RW-LIMIT-4`) is empty when the binary
/// frame arrives. The frame's kind comes before the rate (§14.2).
pub(crate) async fn binary_over_rate(
    target: &ServerTarget,
    rec: &Recorder,
    dl: Instant,
    code: &str,
    close: u16,
) -> R<()> {
    // The announced rate, from a first connection's welcome.
    let hello = match &target.token {
        Some(t) => serde_json::json!({"type": "hello", "versions": ["1.0"], "token": t})
            .to_string()
            .into_bytes(),
        None => HELLO.to_vec(),
    };
    let mut probe = Raw::open(target, dl).await?;
    probe.write(&masked(0x81, &hello)).await?;
    let welcome = probe.read_json(dl).await?;
    drop(probe);
    let rate = welcome
        .pointer("/limits/max_messages_per_second")
        .and_then(Value::as_u64)
        .ok_or_else(|| {
            StepFail::req(
                "RW-CONN-7",
                "welcome announces no limits.max_messages_per_second",
            )
        })?;
    if rate == 0 || rate > 10_000 {
        return Err(StepFail::not_implemented(format!(
            "the announced max_messages_per_second {rate} is too large to use up in a test"
        )));
    }
    let mut burst = masked(0x81, &hello);
    for i in 1..rate {
        burst.extend(masked(
            0x81,
            format!(r#"{{"type":"ping","id":"r{i}"}}"#).as_bytes(),
        ));
    }
    burst.extend(masked(0x82, br#"{"type":"ping","id":"b"}"#));
    rec.out(
        "raw",
        &format!(
            "<hello, {} pings and a binary frame, in one write>",
            rate - 1
        ),
    );
    let mut raw = Raw::open(target, dl).await?;
    raw.write(&burst).await?;
    let frames = raw
        .read_to_end(
            dl,
            "RW-INPUT-5",
            "the connection stayed open after a binary frame",
        )
        .await?;
    let error = frames
        .iter()
        .filter(|f| f.opcode == 1)
        .filter_map(|f| serde_json::from_slice::<Value>(&f.payload).ok())
        .find(|v| v.get("type").and_then(Value::as_str) == Some("error"));
    let got_code = error
        .as_ref()
        .and_then(|v| v.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let got_close = frames.last().and_then(close_code);
    rec.inn(
        "raw",
        &format!(
            "error {}, close code {got_close:?}",
            error
                .as_ref()
                .map_or_else(|| "none".to_owned(), Value::to_string)
        ),
    );
    if got_code != code || got_close != Some(close) {
        return Err(StepFail::req(
            "RW-INPUT-6",
            format!(
                "a binary frame that arrives with the message rate used up must be answered {code:?} and close code {close} (the frame's kind is checked before the rate, §14.2); got error {got_code:?} and close code {got_close:?}"
            ),
        ));
    }
    Ok(())
}
