//! WebSocket-level protocol errors (`RW-CLOSE-12`) and the check order of binary
//! frames (`RW-INPUT-6`). The protocol-error tests speak WebSocket by hand over a raw
//! `TcpStream`, because a WebSocket client refuses to send broken frames.

use futures_util::SinkExt;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// A masked client frame with the all-zero key: `first` is the FIN/RSV/opcode byte.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![first, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

/// Reads what the server sends until it closes the TCP connection; returns the
/// opcode of its last frame and the close code that frame carries.
async fn last_frame(mut tcp: TcpStream) -> (Option<u8>, Option<u16>, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, tcp.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open"),
        }
    }
    let (mut i, mut op, mut code) = (0, None, None);
    while i + 2 <= got.len() {
        let (len, h) = match got[i + 1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([got[i + 2], got[i + 3]])), 4),
            127 => break,
            n => (usize::from(n), 2),
        };
        if i + h + len > got.len() {
            break;
        }
        let body = &got[i + h..i + h + len];
        op = Some(got[i] & 0x0f);
        code = (op == Some(8) && body.len() >= 2).then(|| u16::from_be_bytes([body[0], body[1]]));
        i += h + len;
    }
    (op, code, got)
}

#[tokio::test]
async fn rw_close_12_broken_frames_close_with_1002() {
    let s = start(config()).await;
    let hello = br#"{"type":"hello","versions":["1.0"]}"#;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unmasked text frame", {
            let mut f = vec![0x81, hello.len() as u8];
            f.extend_from_slice(hello);
            f
        }),
        ("reserved data opcode 0x3", masked(0x83, b"x")),
        ("reserved control opcode 0xB", masked(0x8B, b"x")),
        (
            "continuation frame that continues nothing",
            masked(0x80, b"x"),
        ),
        ("RSV1 set on a text frame", masked(0xC1, hello)),
        ("fragmented ping", masked(0x09, b"p")),
        ("text frame inside a fragmented text message", {
            let mut f = masked(0x01, b"{\"type\":");
            f.extend(masked(0x81, b"\"hello\"}"));
            f
        }),
    ];
    for (what, frame) in cases {
        for after_hello in [false, true] {
            let mut tcp = raw_upgrade(&s).await;
            if after_hello {
                tcp.write_all(&masked(0x81, hello)).await.expect("hello");
            }
            tcp.write_all(&frame).await.expect("write");
            let (op, code, got) = last_frame(tcp).await;
            assert_eq!(
                (op, code),
                (Some(8), Some(1002)),
                "{what} (after hello: {after_hello}): last frame opcode {op:?} close code {code:?}, bytes {got:?}"
            );
        }
    }
    // The server is still serving.
    let mut c = Client::connect(&s).await;
    c.hello(json!([])).await;
}

#[tokio::test]
async fn rw_input_6_binary_frame_is_reported_before_the_rate_limit() {
    let mut cfg = config();
    cfg.max_messages_per_second = 1;
    let s = start(cfg).await;
    let mut c = Client::connect(&s).await;
    // hello takes the only token; the binary frame arrives with the bucket empty.
    c.ws.feed(Message::text(
        json!({"type": "hello", "versions": ["1.0"]}).to_string(),
    ))
    .await
    .expect("feed");
    c.ws.feed(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("feed");
    c.ws.flush().await.expect("flush");
    assert!(matches!(
        c.msg().await,
        runwire_protocol::ServerMessage::Welcome(_)
    ));
    c.expect_error_close("binary_frame", 4000).await;
}
