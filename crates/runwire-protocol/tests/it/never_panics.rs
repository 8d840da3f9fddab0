//! The decoders never panic, whatever the bytes (proptest over arbitrary bytes and over
//! mutations of valid frames).

use proptest::prelude::*;
use runwire_protocol::{arbitrary as arb, codec};

fn all_decoders(bytes: &[u8]) {
    let _ = codec::decode_client_message(bytes, 1 << 20);
    let _ = codec::decode_server_message(bytes, 1 << 20);
    let _ = codec::decode_event(bytes, 1 << 20);
    let _ =
        codec::decode::<runwire_protocol::http::AppendRequest>(bytes, 1 << 20, "append-request");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("RUNWIRE_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(512)
    ))]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        all_decoders(&bytes);
    }

    #[test]
    fn mutated_frames(m in arb::server_message(), c in arb::client_message(), cuts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        for text in [codec::encode(&m), codec::encode(&c)] {
            let mut bytes = text.into_bytes();
            for (idx, b) in &cuts {
                if bytes.is_empty() { break; }
                let i = idx.index(bytes.len());
                bytes[i] = *b;
            }
            all_decoders(&bytes);
            // Truncations too.
            for n in [0, bytes.len() / 3, bytes.len() / 2, bytes.len().saturating_sub(1)] {
                all_decoders(&bytes[..n]);
            }
        }
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep = format!(
        "{{\"type\":\"hello\",\"versions\":{}1{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(codec::decode_client_message(deep.as_bytes(), usize::MAX).is_err());
    let deep_data = format!(
        "{{\"event_id\":\"e\",\"run_id\":\"r\",\"seq\":1,\"type\":\"acme.x\",\"time\":\"2026-01-01T00:00:00Z\",\"data\":{{\"a\":{}1{}}}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(codec::decode_event(deep_data.as_bytes(), usize::MAX).is_err());
}
