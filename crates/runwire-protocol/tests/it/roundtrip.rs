//! Every message round-trips through encode/decode (proptest).

use proptest::prelude::*;
use runwire_protocol::{
    arbitrary as arb,
    codec::{self, decode, decode_client_message, decode_event, decode_server_message},
    http::{AppendRequest, AppendResponse, HistoryResponse, HttpError},
};

const MAX: usize = usize::MAX;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("RUNWIRE_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn client_messages_round_trip(m in arb::client_message()) {
        let text = codec::encode(&m);
        prop_assert_eq!(decode_client_message(text.as_bytes(), MAX).unwrap(), m);
    }

    #[test]
    fn server_messages_round_trip(m in arb::server_message()) {
        let text = codec::encode(&m);
        prop_assert_eq!(decode_server_message(text.as_bytes(), MAX).unwrap(), m);
    }

    #[test]
    fn events_round_trip(e in arb::event()) {
        let text = codec::encode(&e);
        prop_assert_eq!(decode_event(text.as_bytes(), MAX).unwrap(), e);
    }

    #[test]
    fn http_bodies_round_trip(
        req in arb::append_request(),
        resp in arb::append_response(),
        hist in arb::history_response(),
        err in arb::http_error(),
    ) {
        prop_assert_eq!(decode::<AppendRequest>(codec::encode(&req).as_bytes(), MAX, "r").unwrap(), req);
        prop_assert_eq!(decode::<AppendResponse>(codec::encode(&resp).as_bytes(), MAX, "r").unwrap(), resp);
        prop_assert_eq!(decode::<HistoryResponse>(codec::encode(&hist).as_bytes(), MAX, "r").unwrap(), hist);
        prop_assert_eq!(decode::<HttpError>(codec::encode(&err).as_bytes(), MAX, "r").unwrap(), err);
    }

    /// Members may come in any order: `data` before `type` takes the buffered path.
    #[test]
    fn events_decode_with_members_in_any_order(e in arb::event(), rot in 0usize..6) {
        let v = serde_json::to_value(&e).unwrap();
        let mut members: Vec<(String, serde_json::Value)> = v.as_object().unwrap().clone().into_iter().collect();
        members.rotate_left(rot);
        let body = members
            .iter()
            .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v))
            .collect::<Vec<_>>()
            .join(",");
        let text = format!("{{{body}}}");
        prop_assert_eq!(decode_event(text.as_bytes(), MAX).unwrap(), e);
    }
}
