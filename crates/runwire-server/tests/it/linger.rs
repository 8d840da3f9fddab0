//! Lingering close (`RW-LIMIT-1`): the `frame_too_large` error frame and close frame
//! reach a client that is still sending the rest of its oversize frame, followed by a
//! clean FIN instead of a TCP reset; and a client that never stops sending is cut off.
//!
//! These tests speak WebSocket by hand over a raw `TcpStream`, because they need what a
//! WebSocket client hides: writing a frame header without its payload, and telling a
//! clean EOF from `ECONNRESET`.

use std::{io, sync::atomic::Ordering, time::Duration};

use runwire_protocol::{ServerMessage, codec::decode_server_message};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::tcp::OwnedReadHalf,
};

use crate::common::*;

/// The header of a masked (client) text frame announcing `len` payload bytes, with
/// the all-zero masking key, so payload bytes go on the wire as they are.
fn text_frame_header(len: u64) -> Vec<u8> {
    let mut h = vec![0x81, 0x80 | 127];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// How the server's side of the stream ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Eof,
    Error(io::ErrorKind),
}

/// Reads until EOF or an error; returns the bytes and how the stream ended.
async fn read_to_end(mut r: OwnedReadHalf) -> (Vec<u8>, End) {
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) => return (bytes, End::Eof),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) => return (bytes, End::Error(e.kind())),
        }
    }
}

/// A server → client frame (unmasked).
#[derive(Debug)]
enum WireFrame {
    Text(String),
    Close(u16, String),
}

/// Splits what the server sent into frames; panics on a truncated frame.
fn parse_frames(mut b: &[u8]) -> Vec<WireFrame> {
    let mut out = Vec::new();
    while !b.is_empty() {
        assert!(b.len() >= 2, "truncated frame header: {b:?}");
        let opcode = b[0] & 0x0f;
        assert_eq!(b[1] & 0x80, 0, "server frames are not masked");
        let (len, at) = match b[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 => {
                let mut l = [0u8; 8];
                l.copy_from_slice(&b[2..10]);
                (usize::try_from(u64::from_be_bytes(l)).expect("length"), 10)
            }
            n => (usize::from(n), 2),
        };
        assert!(b.len() >= at + len, "truncated frame payload");
        let payload = &b[at..at + len];
        out.push(match opcode {
            1 => WireFrame::Text(String::from_utf8(payload.to_vec()).expect("utf-8")),
            8 => {
                assert!(payload.len() >= 2, "close frame without a code");
                WireFrame::Close(
                    u16::from_be_bytes([payload[0], payload[1]]),
                    String::from_utf8_lossy(&payload[2..]).into_owned(),
                )
            }
            other => panic!("unexpected frame with opcode {other}"),
        });
        b = &b[at + len..];
    }
    out
}

/// Asserts that the server sent exactly the `frame_too_large` error frame and a close
/// with code 4009 (`RW-LIMIT-1`).
fn assert_frame_too_large(bytes: &[u8]) {
    let frames = parse_frames(bytes);
    match frames.as_slice() {
        [WireFrame::Text(t), WireFrame::Close(code, reason)] => {
            match decode_server_message(t.as_bytes(), usize::MAX).expect("error frame") {
                ServerMessage::Error(e) => {
                    assert_eq!(e.code.as_str(), "frame_too_large", "{e:?}");
                    assert_eq!(e.close_code, Some(4009), "{e:?}");
                }
                other => panic!("expected the error frame, got {other:?}"),
            }
            assert_eq!(*code, 4009);
            assert_eq!(reason, "frame_too_large");
        }
        other => panic!("expected error frame + close, got {other:?}"),
    }
}

fn small_frames_config(close_timeout_ms: u64) -> runwire_server::ServerConfig {
    let mut cfg = config();
    cfg.max_frame_bytes = 1024;
    cfg.close_timeout_ms = close_timeout_ms;
    cfg
}

/// The client announces an 8 MiB frame (limit 1 KiB) and sends 1 MiB of it in one
/// write with the header, so the server reads the header while most of the payload is
/// already queued unread in its socket. Without a lingering close the server's close
/// turns into a reset (Linux sends RST when closing with unread data) and the client
/// (or a proxy in between) sees `ECONNRESET`; with it, the client gets the error frame,
/// the close frame and a clean EOF, and the rest of its payload is accepted.
#[tokio::test]
async fn rw_limit_1_frame_too_large_is_followed_by_fin_not_reset() {
    let s = start(small_frames_config(2_000)).await;
    let tcp = raw_upgrade(&s).await;
    let (r, mut w) = tcp.into_split();
    let reader = tokio::spawn(read_to_end(r));
    let sent = 1024 * 1024;
    let mut data = text_frame_header(8 * 1024 * 1024);
    data.resize(data.len() + sent, b'x');
    let write = tokio::time::timeout(WAIT, async {
        w.write_all(&data).await?;
        w.shutdown().await
    })
    .await
    .expect("the server drains the payload within the wait bound");
    let (bytes, end) = tokio::time::timeout(WAIT, reader)
        .await
        .expect("the server ends the stream within the wait bound")
        .expect("reader");
    assert_frame_too_large(&bytes);
    assert_eq!(end, End::Eof, "a FIN after the close frame, not a reset");
    write.expect("the server read and discarded the rest of the frame");
    assert_eq!(s.metrics().lingering_closes.load(Ordering::Relaxed), 1);
}

/// A client that keeps sending after the close is read from for at most
/// `close_timeout_ms` (here 200 ms), then cut off: the server gives up reading and
/// closes, which resets the connection, so the client's writes fail. Without the time
/// bound it would be read from for as long as it sends, and the test would fail at its
/// wait bound.
#[tokio::test]
async fn rw_limit_1_lingering_close_is_cut_off_after_close_timeout() {
    let s = start(small_frames_config(200)).await;
    let tcp = raw_upgrade(&s).await;
    let (r, mut w) = tcp.into_split();
    let reader = tokio::spawn(read_to_end(r));
    let mut first = text_frame_header(u64::MAX >> 1);
    first.resize(first.len() + 4096, b'x');
    w.write_all(&first).await.expect("first write");
    // A slow, endless trickle (about 512 KiB/s, far below the byte bound): the pacing
    // only keeps the byte bound out of reach; nothing waits on it for synchronization.
    let mut pace = tokio::time::interval(Duration::from_millis(2));
    let chunk = vec![b'x'; 1024];
    let failed = tokio::time::timeout(WAIT, async {
        loop {
            pace.tick().await;
            if let Err(e) = w.write_all(&chunk).await {
                return e;
            }
        }
    })
    .await
    .expect("the server cuts the client off within the wait bound");
    assert!(
        matches!(
            failed.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        "{failed}"
    );
    let (bytes, end) = tokio::time::timeout(WAIT, reader)
        .await
        .expect("reader within the wait bound")
        .expect("reader");
    assert_frame_too_large(&bytes);
    assert_eq!(end, End::Eof, "the FIN came before the cut-off");
    assert_eq!(s.metrics().lingering_closes.load(Ordering::Relaxed), 1);
    assert_eq!(s.metrics().linger_cutoffs.load(Ordering::Relaxed), 1);
}

/// A client that sends as fast as it can after the close is cut off after the byte
/// bound of the lingering close (16 MiB), long before `close_timeout_ms` (here 60 s)
/// would end it: without the byte bound the test would fail at its wait bound.
#[tokio::test]
async fn rw_limit_1_lingering_close_is_cut_off_after_the_byte_bound() {
    let s = start(small_frames_config(60_000)).await;
    let tcp = raw_upgrade(&s).await;
    let (r, mut w) = tcp.into_split();
    let reader = tokio::spawn(read_to_end(r));
    w.write_all(&text_frame_header(u64::MAX >> 1))
        .await
        .expect("header");
    let chunk = vec![b'x'; 1024 * 1024];
    let mut written = 0u64;
    let failed = tokio::time::timeout(WAIT, async {
        loop {
            if let Err(e) = w.write_all(&chunk).await {
                return e;
            }
            written += chunk.len() as u64;
        }
    })
    .await
    .expect("the server cuts the client off within the wait bound");
    assert!(
        matches!(
            failed.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        "{failed}"
    );
    assert!(written >= 16 * 1024 * 1024, "cut off after {written} bytes");
    let (bytes, end) = tokio::time::timeout(WAIT, reader)
        .await
        .expect("reader within the wait bound")
        .expect("reader");
    assert_frame_too_large(&bytes);
    assert_eq!(end, End::Eof, "the FIN came before the cut-off");
    assert_eq!(s.metrics().linger_cutoffs.load(Ordering::Relaxed), 1);
}
