//! What clients send (`features/server/input.feature`): frames that are not JSON, not
//! UTF-8, binary, or break the WebSocket protocol on raw connections.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ANSWER_WAIT_MS, Registry, ServerWorld};
use crate::{
    runner::{StepFail, StepResultT},
    server::frames,
};

pub(super) fn register(r: &mut Registry) {
    r.step(
        "a raw connection that sends an unmasked frame after the upgrade is closed with code 1002",
        raw_unmasked_frame,
    );
    r.step(
        "a raw connection that sends {s} after hello is closed with code 1002",
        raw_broken_frame,
    );
    r.step("a raw connection that uses up its message rate and then sends a binary frame receives error {s} and is closed with code {n}", raw_binary_over_rate);
    r.step("client {s} sends the frame {rest}", sends_frame);
    r.step("client {s} sends a binary frame", sends_binary);
    r.step(
        "client {s} sends a text frame that is not UTF-8",
        sends_invalid_utf8,
    );
}

/// `a raw connection that sends an unmasked frame after the upgrade is closed with code 1002`
async fn raw_unmasked_frame(w: &mut ServerWorld) -> StepResultT {
    let dl = w.dl(ANSWER_WAIT_MS);
    let frames::Raw { mut tcp, mut got } = frames::Raw::open(&w.target, dl).await?;
    let mut buf = vec![0u8; 4096];
    // A text frame with the mask bit clear, which RFC 6455 §5.1 forbids
    // from a client.
    let payload = br#"{"type":"ping","id":"unmasked"}"#;
    let mut frame = vec![0x81, payload.len() as u8];
    frame.extend_from_slice(payload);
    w.rec.out(
        "raw",
        "<unmasked text frame: {\"type\":\"ping\",\"id\":\"unmasked\"}>",
    );
    tcp.write_all(&frame)
        .await
        .map_err(|e| StepFail::msg(e.to_string()))?;
    loop {
        match tokio::time::timeout_at(dl, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {
                return Err(StepFail::req(
                    "RW-CLOSE-12",
                    "the connection stayed open after an unmasked client frame",
                ));
            }
        }
    }
    // The last frame must be a close frame with code 1002.
    let (last_op, close_code) = last_frame(&got);
    w.rec.inn(
        "raw",
        &format!(
            "{} bytes, last frame opcode {last_op:?}, close code {close_code:?}",
            got.len()
        ),
    );
    if last_op != Some(8) || close_code != Some(1002) {
        return Err(StepFail::req(
            "RW-CLOSE-12",
            format!(
                "after an unmasked client frame the server must close with 1002; its last frame had opcode {last_op:?} and close code {close_code:?}"
            ),
        ));
    }
    Ok(())
}

/// The opcode of the last whole frame in `got`, and its close code when it is a close
/// frame.
fn last_frame(got: &[u8]) -> (Option<u8>, Option<u16>) {
    let mut i = 0;
    let mut close_code = None;
    let mut last_op = None;
    while i + 2 <= got.len() {
        let op = got[i] & 0x0f;
        let mut len = usize::from(got[i + 1] & 0x7f);
        let mut h = 2;
        if len == 126 && i + 4 <= got.len() {
            len = usize::from(u16::from_be_bytes([got[i + 2], got[i + 3]]));
            h = 4;
        } else if len == 127 {
            break;
        }
        if i + h + len > got.len() {
            break;
        }
        let body = &got[i + h..i + h + len];
        last_op = Some(op);
        close_code = (op == 8 && body.len() >= 2).then(|| u16::from_be_bytes([body[0], body[1]]));
        i += h + len;
    }
    (last_op, close_code)
}

/// `a raw connection that sends {s} after hello is closed with code 1002`
async fn raw_broken_frame(w: &mut ServerWorld, frame: String) -> StepResultT {
    let dl = w.dl(ANSWER_WAIT_MS);
    frames::broken_after_hello(&w.target, &w.rec, dl, &frame).await
}

/// `a raw connection that uses up its message rate and then sends a binary frame receives error {s} and is closed with code {n}`
async fn raw_binary_over_rate(w: &mut ServerWorld, code: String, close: u64) -> StepResultT {
    let dl = w.dl(ANSWER_WAIT_MS);
    let close = u16::try_from(close).unwrap_or(u16::MAX);
    frames::binary_over_rate(&w.target, &w.rec, dl, &code, close).await
}

/// `client {s} sends the frame {rest}`
async fn sends_frame(w: &mut ServerWorld, client: String, frame: String) -> StepResultT {
    let t = w.subst(&frame);
    w.client(&client)?
        .send_text(t)
        .await
        .map_err(StepFail::msg)?;
    Ok(())
}

/// `client {s} sends a binary frame`
async fn sends_binary(w: &mut ServerWorld, client: String) -> StepResultT {
    w.client(&client)?
        .send_binary(br#"{"type":"ping","id":"b"}"#.to_vec())
        .await
        .map_err(StepFail::msg)?;
    Ok(())
}

/// `client {s} sends a text frame that is not UTF-8`
async fn sends_invalid_utf8(w: &mut ServerWorld, client: String) -> StepResultT {
    w.client(&client)?
        .send_invalid_utf8()
        .await
        .map_err(StepFail::msg)?;
    Ok(())
}
