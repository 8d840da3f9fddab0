//! The frames built from pre-encoded events ([`runwire_protocol::raw`]) are byte for
//! byte what the typed encoder writes for the same events.

use proptest::prelude::*;
use runwire_protocol::{
    BatchFrame, EventFrame, ServerMessage, arbitrary as arb,
    codec::{self, encode},
    raw::{RawEvent, SeqTemplate, batch_frame, event_frame},
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("RUNWIRE_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn an_event_frame_is_the_encoded_event_message(event in arb::event()) {
        let raw = RawEvent::encode(&event);
        prop_assert_eq!(raw.as_str(), encode(&event));
        prop_assert_eq!(raw.decode().unwrap(), event.clone());
        prop_assert_eq!(
            event_frame(&raw),
            encode(&ServerMessage::Event(EventFrame { event }))
        );
    }

    #[test]
    fn a_batch_frame_is_the_encoded_batch_message(
        events in proptest::collection::vec(arb::event(), 1..6)
    ) {
        let raws: Vec<RawEvent> = events.iter().map(RawEvent::encode).collect();
        prop_assert_eq!(
            batch_frame(&raws),
            encode(&ServerMessage::Batch(BatchFrame { events }))
        );
    }

    #[test]
    fn a_template_with_its_seq_is_the_encoded_event(event in arb::event(), other in arb::safe_u64()) {
        let template = SeqTemplate::new(&event, None);
        prop_assert_eq!(template.with_seq(event.seq), RawEvent::encode(&event));
        let mut moved = event.clone();
        moved.seq = other;
        prop_assert_eq!(template.with_seq(other), RawEvent::encode(&moved));
        // With the producer's data kept verbatim (`RW-TYPE-25`).
        let data = serde_json::json!({"b": 1, "a": [true, null]});
        prop_assert_eq!(
            SeqTemplate::new(&event, Some(&data)).with_seq(other),
            RawEvent::encode_with_data(&moved, Some(&data))
        );
    }

    #[test]
    fn parse_keeps_an_event_text_and_refuses_others(event in arb::event()) {
        let text = encode(&event);
        let parsed = RawEvent::parse(&text, usize::MAX).unwrap();
        prop_assert_eq!(parsed.as_str(), text.as_str());
        let frame = codec::encode(&ServerMessage::Event(EventFrame { event }));
        prop_assert!(RawEvent::parse(&frame, usize::MAX).is_err());
    }
}
