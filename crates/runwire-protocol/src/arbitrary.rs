//! proptest strategies for every wire type (feature `arbitrary`), so that round-trip,
//! schema-agreement and model-based tests share one generator.

use std::collections::BTreeMap;

use proptest::{collection::vec, option, prelude::*};
use serde_json::{Value, json};

use crate::{
    http::{AppendRequest, AppendResponse, AppendedEvent, HistoryResponse, HttpError, NewEvent},
    *,
};

/// A run id.
pub fn run_id() -> impl Strategy<Value = RunId> {
    "[A-Za-z0-9][A-Za-z0-9._:-]{0,20}".prop_map(|s| RunId::new(s).expect("pattern"))
}

/// An epoch.
pub fn epoch() -> impl Strategy<Value = Epoch> {
    "[A-Za-z0-9_-]{1,16}".prop_map(|s| Epoch::new(s).expect("pattern"))
}

/// An event id.
pub fn event_id() -> impl Strategy<Value = EventId> {
    "[!-~]{1,40}".prop_map(|s| EventId::new(s).expect("pattern"))
}

/// A timestamp.
pub fn timestamp() -> impl Strategy<Value = Timestamp> {
    (
        1970i32..2100,
        1u8..=12,
        1u8..=28,
        0u8..24,
        0u8..60,
        0u8..60,
        option::of(0u32..1000),
    )
        .prop_map(|(y, mo, d, h, mi, s, ms)| {
            let t = match ms {
                Some(ms) => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z"),
                None => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
            };
            Timestamp::new(t).expect("valid")
        })
}

/// A safe integer (≤ 2^53 − 1), biased towards the edges.
pub fn safe_u64() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..1000, Just(MAX_SEQ), (0u64..=MAX_SEQ)]
}

fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..1000, Just(MAX_SEQ), (1u64..=MAX_SEQ)]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z ]{0,12}", "\\PC{0,8}", Just(String::new())]
}

fn nonempty(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-zA-Z0-9_.-]{{1,{max}}}")).expect("regex")
}

/// A small JSON value without floats (floats do not round-trip bit-exactly through every
/// JSON parser).
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0u64..=MAX_SEQ).prop_map(|n| json!(n)),
        "[a-z]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON value that is not `null` (an optional member set to `null` reads as absent).
fn json_non_null() -> impl Strategy<Value = Value> {
    json_value().prop_filter("not null", |v| !v.is_null())
}

fn json_object() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map("[a-z]{1,4}", json_value(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn run_status() -> impl Strategy<Value = RunStatus> {
    prop_oneof![
        Just(RunStatus::Queued),
        Just(RunStatus::Running),
        Just(RunStatus::Completed),
        Just(RunStatus::Failed),
        Just(RunStatus::Cancelled),
    ]
}

fn progress() -> impl Strategy<Value = ProgressData> {
    (
        option::of((0u32..=400).prop_map(|q| f64::from(q) / 4.0)),
        option::of(text()),
        option::of(safe_u64()),
        option::of(safe_u64()),
        option::of(text()),
        option::of(text()),
    )
        .prop_map(
            |(percent, step, current, total, tool, message)| ProgressData {
                percent,
                step,
                current,
                total,
                tool,
                message,
            },
        )
}

fn todo_status() -> impl Strategy<Value = TodoStatus> {
    prop_oneof![
        Just(TodoStatus::Pending),
        Just(TodoStatus::InProgress),
        Just(TodoStatus::Completed),
        Just(TodoStatus::Cancelled),
    ]
}

fn log_level() -> impl Strategy<Value = LogLevel> {
    prop_oneof![
        Just(LogLevel::Trace),
        Just(LogLevel::Debug),
        Just(LogLevel::Info),
        Just(LogLevel::Warn),
        Just(LogLevel::Error),
    ]
}

fn log_line() -> impl Strategy<Value = LogLineData> {
    (log_level(), text(), option::of(text())).prop_map(|(level, message, source)| LogLineData {
        level,
        message,
        source,
    })
}

fn tool_started() -> impl Strategy<Value = ToolStartedData> {
    (nonempty(12), text(), option::of(json_non_null())).prop_map(|(call_id, tool, input)| {
        ToolStartedData {
            call_id,
            tool,
            input,
        }
    })
}

fn artifact() -> impl Strategy<Value = ArtifactCreatedData> {
    (
        nonempty(12),
        text(),
        text(),
        text(),
        option::of(safe_u64()),
        option::of(text()),
    )
        .prop_map(|(artifact_id, kind, uri, media_type, size_bytes, name)| {
            ArtifactCreatedData {
                artifact_id,
                kind,
                uri,
                media_type,
                size_bytes,
                name,
            }
        })
}

fn todo_item() -> impl Strategy<Value = TodoItem> {
    (text(), text(), todo_status()).prop_map(|(id, text, status)| TodoItem { id, text, status })
}

/// Any event payload, known or unknown.
pub fn payload() -> impl Strategy<Value = EventPayload> {
    prop_oneof![
        (run_status(), option::of(text())).prop_map(|(status, reason)| RunStatusData {
            status,
            reason
        }
        .into()),
        progress().prop_map(Into::into),
        (
            option::of(text()),
            option::of(text()),
            option::of(text()),
            option::of(text()),
            proptest::collection::btree_map("[a-z]{1,5}", text(), 0..3)
        )
            .prop_map(|(agent, model, project, title, labels)| RunMetadataData {
                agent,
                model,
                project,
                title,
                labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
            }
            .into()),
        ("[a-z][a-z0-9_.-]{0,10}", option::of(text())).prop_map(|(phase, message)| RunPhaseData {
            phase,
            message
        }
        .into()),
        log_line().prop_map(Into::into),
        tool_started().prop_map(Into::into),
        (
            nonempty(12),
            text(),
            any::<bool>(),
            option::of(json_non_null()),
            option::of(text()),
            option::of(safe_u64())
        )
            .prop_map(
                |(call_id, tool, ok, output, error, duration_ms)| ToolFinishedData {
                    call_id,
                    tool,
                    ok,
                    output,
                    error,
                    duration_ms,
                }
                .into()
            ),
        (nonempty(12), text(), any::<bool>()).prop_map(|(message_id, delta, done)| {
            AgentMessageData {
                message_id,
                delta,
                done,
            }
            .into()
        }),
        (nonempty(12), text(), any::<bool>()).prop_map(|(message_id, delta, done)| {
            AgentThinkingData {
                message_id,
                delta,
                done,
            }
            .into()
        }),
        (
            text(),
            prop_oneof![
                Just(FileChange::Created),
                Just(FileChange::Modified),
                Just(FileChange::Deleted),
                Just(FileChange::Renamed)
            ],
            option::of(text())
        )
            .prop_map(|(path, change, previous_path)| FileChangedData {
                path,
                change,
                previous_path
            }
            .into()),
        artifact().prop_map(Into::into),
        vec(todo_item(), 0..4).prop_map(|items| TodoUpdatedData { items }.into()),
        (
            nonempty(12),
            any::<u32>(),
            any::<bool>(),
            prop_oneof![Just(ChunkEncoding::Utf8), Just(ChunkEncoding::Base64)],
            text(),
            option::of(text())
        )
            .prop_map(|(output_id, index, last, encoding, data, media_type)| {
                OutputChunkData {
                    output_id,
                    index,
                    last,
                    encoding,
                    data,
                    media_type,
                }
                .into()
            }),
        ("[a-z]{1,6}\\.[a-z]{1,6}", json_object())
            .prop_filter("not a known type", |(t, _)| !KNOWN_EVENT_TYPES
                .contains(&t.as_str()))
            .prop_map(|(event_type, data)| EventPayload::Unknown { event_type, data }),
    ]
}

/// Any event.
pub fn event() -> impl Strategy<Value = Event> {
    (event_id(), run_id(), seq(), timestamp(), payload()).prop_map(
        |(event_id, run_id, seq, time, payload)| Event {
            event_id,
            run_id,
            seq,
            time,
            payload,
        },
    )
}

fn subscription() -> impl Strategy<Value = SubscriptionRequest> {
    (run_id(), option::of(safe_u64()), option::of(epoch())).prop_map(
        |(run_id, after_seq, epoch)| SubscriptionRequest {
            run_id,
            after_seq,
            epoch,
        },
    )
}

fn version() -> impl Strategy<Value = String> {
    (0u16..20, 0u16..20).prop_map(|(a, b)| format!("{a}.{b}"))
}

fn ping_id() -> impl Strategy<Value = String> {
    nonempty(64)
}

/// Any client message.
pub fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (
            vec(version(), 1..4),
            option::of(text()),
            option::of((text(), text()).prop_map(|(name, version)| ClientInfo { name, version })),
            vec(subscription(), 0..3)
        )
            .prop_map(
                |(versions, token, client, subscriptions)| ClientMessage::Hello(Hello {
                    versions,
                    token,
                    client,
                    subscriptions
                })
            ),
        vec(subscription(), 1..4)
            .prop_map(|subscriptions| ClientMessage::Subscribe(Subscribe { subscriptions })),
        vec(run_id(), 1..4).prop_map(|run_ids| ClientMessage::Unsubscribe(Unsubscribe { run_ids })),
        ping_id().prop_map(|id| ClientMessage::Ping(Ping { id })),
        ping_id().prop_map(|id| ClientMessage::Pong(Pong { id })),
    ]
}

/// A folded snapshot built by applying generated events.
pub fn snapshot() -> impl Strategy<Value = RunSnapshot> {
    (run_id(), epoch(), vec((payload(), timestamp()), 0..6)).prop_map(
        |(run_id, epoch, payloads)| {
            let mut s = RunSnapshot::empty(run_id.clone(), epoch);
            for (i, (payload, time)) in payloads.into_iter().enumerate() {
                let e = Event {
                    event_id: EventId::new(format!("e{i}")).expect("valid"),
                    run_id: run_id.clone(),
                    seq: i as u64 + 1,
                    time,
                    payload,
                };
                s.apply(&e);
            }
            s
        },
    )
}

fn u32_pos() -> impl Strategy<Value = u32> {
    1u32..=u32::MAX
}

fn error_frame() -> impl Strategy<Value = ErrorFrame> {
    (
        prop_oneof![
            proptest::sample::select(ErrorCode::KNOWN).prop_map(ErrorCode::parse),
            "x_[a-z]{1,8}".prop_map(ErrorCode::Other)
        ],
        text(),
        any::<bool>(),
        option::of(safe_u64()),
        option::of(run_id()),
        option::of(1000u16..=4999),
        option::of(vec(version(), 1..3)),
    )
        .prop_map(
            |(code, message, retryable, retry_after_ms, run_id, close_code, supported_versions)| {
                ErrorFrame {
                    code,
                    message,
                    retryable,
                    retry_after_ms,
                    run_id,
                    close_code,
                    supported_versions,
                }
            },
        )
}

/// Any known server message.
pub fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (
            version(),
            nonempty(32),
            (1u64..=MAX_SEQ, 1u64..=MAX_SEQ, safe_u64(), safe_u64()),
            (u32_pos(), u32_pos(), u32_pos(), u32_pos()),
            option::of((text(), text()).prop_map(|(name, version)| ServerInfo { name, version })),
            (option::of(1u64..=MAX_SEQ), option::of(1u64..=MAX_SEQ))
        )
            .prop_map(
                |(version, session_id, (hb, pt, bw, rw), (a, b, c, d), server, (sb, sa))| {
                    ServerMessage::Welcome(Welcome {
                        version,
                        session_id,
                        heartbeat_interval_ms: hb,
                        pong_timeout_ms: pt,
                        batch_window_ms: bw,
                        replay_window_events: rw,
                        limits: Limits {
                            max_frame_bytes: a,
                            max_event_bytes: b,
                            max_subscriptions: c,
                            max_messages_per_second: d,
                            slow_consumer_max_bytes: sb,
                            slow_consumer_max_age_ms: sa,
                        },
                        server,
                    })
                }
            ),
        (run_id(), epoch(), safe_u64(), safe_u64()).prop_map(
            |(run_id, epoch, after_seq, head_seq)| {
                ServerMessage::Subscribed(Subscribed {
                    run_id,
                    epoch,
                    after_seq,
                    head_seq,
                })
            }
        ),
        (
            snapshot(),
            prop_oneof![
                Just(ResetReason::EpochMismatch),
                Just(ResetReason::CursorTooOld),
                Just(ResetReason::CursorAhead)
            ]
        )
            .prop_map(|(snapshot, reason)| ServerMessage::Reset(Reset {
                run_id: snapshot.run_id.clone(),
                epoch: snapshot.epoch.clone(),
                reason,
                snapshot,
            })),
        run_id().prop_map(|run_id| ServerMessage::Unsubscribed(Unsubscribed { run_id })),
        event().prop_map(|event| ServerMessage::Event(EventFrame { event })),
        vec(event(), 1..4).prop_map(|events| ServerMessage::Batch(BatchFrame { events })),
        ping_id().prop_map(|id| ServerMessage::Ping(Ping { id })),
        ping_id().prop_map(|id| ServerMessage::Pong(Pong { id })),
        error_frame().prop_map(ServerMessage::Error),
    ]
}

/// Any producer event.
pub fn new_event() -> impl Strategy<Value = NewEvent> {
    (
        payload(),
        option::of("[a-z0-9:-]{1,20}"),
        option::of(timestamp()),
    )
        .prop_map(|(payload, idempotency_key, time)| NewEvent {
            raw_data: None,
            payload,
            idempotency_key,
            time,
        })
}

/// Any append request.
pub fn append_request() -> impl Strategy<Value = AppendRequest> {
    vec(new_event(), 1..4).prop_map(|events| AppendRequest { events })
}

/// Any append response.
pub fn append_response() -> impl Strategy<Value = AppendResponse> {
    (
        run_id(),
        epoch(),
        vec((event_id(), any::<bool>()), 1..4),
        1u64..1000,
    )
        .prop_map(|(run_id, epoch, ids, first)| {
            let events: Vec<AppendedEvent> = ids
                .into_iter()
                .enumerate()
                .map(|(i, (event_id, duplicate))| AppendedEvent {
                    seq: first + i as u64,
                    event_id,
                    duplicate,
                })
                .collect();
            AppendResponse {
                run_id,
                epoch,
                first_seq: first,
                last_seq: first + events.len() as u64 - 1,
                events,
            }
        })
}

/// Any history response.
pub fn history_response() -> impl Strategy<Value = HistoryResponse> {
    (
        run_id(),
        epoch(),
        vec(event(), 0..4),
        safe_u64(),
        any::<bool>(),
    )
        .prop_map(
            |(run_id, epoch, events, head_seq, has_more)| HistoryResponse {
                run_id,
                epoch,
                events,
                head_seq,
                has_more,
            },
        )
}

/// Any HTTP error body.
pub fn http_error() -> impl Strategy<Value = HttpError> {
    (
        proptest::sample::select(ErrorCode::KNOWN).prop_map(ErrorCode::parse),
        text(),
        option::of("(/[a-z0-9]{1,5}){0,3}"),
    )
        .prop_map(|(code, message, pointer)| {
            let mut e = HttpError::new(code, message);
            e.error.pointer = pointer;
            e
        })
}
