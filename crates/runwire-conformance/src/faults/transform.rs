//! How a fault rewrites one frame on its way through the proxy: the table of every
//! fault's effect on the frames it breaks.

use super::*;

/// [`ServerFault::RateBeforeKind`]: learns the announced rate from `welcome`, counts
/// the client's messages in a token bucket, and answers a binary frame that finds it
/// empty with `rate_limited` and close 4101 itself (the frames answered back).
pub(super) fn rate_before_kind(
    from: From,
    st: &mut ConnState,
    shared: &Mutex<Shared>,
    msg: &Message,
) -> Option<Vec<Message>> {
    if from == From::Server {
        if let Message::Text(t) = msg
            && t.as_str().contains("\"welcome\"")
            && let Ok(v) = serde_json::from_str::<Value>(t.as_str())
            && let Some(r) = v
                .pointer("/limits/max_messages_per_second")
                .and_then(Value::as_u64)
            && let Ok(mut sh) = shared.lock()
        {
            sh.rate = Some(r);
        }
        return None;
    }
    if !matches!(msg, Message::Text(_) | Message::Binary(_)) {
        return None;
    }
    let rate = shared.lock().ok()?.rate? as f64;
    let now = std::time::Instant::now();
    let (tokens, at) = st.tokens.get_or_insert((rate, now));
    *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(rate);
    *at = now;
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        return None;
    }
    matches!(msg, Message::Binary(_)).then(|| {
        vec![
            text(&json!({
                "type": "error",
                "code": "rate_limited",
                "message": "more messages than the rate allows",
                "retryable": true,
                "retry_after_ms": 1000,
                "close_code": 4101
            })),
            Message::Close(Some(CloseFrame {
                code: WsCloseCode::from(4101),
                reason: "rate_limited".into(),
            })),
        ]
    })
}

/// Tracks what a client holds per run, from the server's frames, for the faults that
/// need it: epochs for [`ClientFault::KeepsEpochAfterReset`], the gap buffer for
/// [`ClientFault::KeepsBufferAcrossReset`]. Returns the frames to send the client after
/// `v`: the old epoch's buffered events, when a broken client would deliver them.
pub(super) fn track_server_frame(
    fault: ClientFault,
    shared: &Mutex<Shared>,
    ty: &str,
    v: &Value,
) -> Vec<Message> {
    let Ok(mut sh) = shared.lock() else {
        return Vec::new();
    };
    let run = v
        .get("run_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let epoch = v
        .get("epoch")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let mut extra = Vec::new();
    match ty {
        "subscribed" => {
            let after = v.get("after_seq").and_then(Value::as_u64).unwrap_or(0);
            sh.held.insert(run.clone(), (after, BTreeMap::new()));
            sh.epochs.insert(run, epoch);
        }
        "reset" => {
            let as_of = v
                .pointer("/snapshot/as_of_seq")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let old = sh.epochs.insert(run.clone(), epoch.clone());
            if let Some(old) = old.filter(|o| *o != epoch) {
                if fault == ClientFault::KeepsBufferAcrossReset
                    && let Some((_, buf)) = sh.held.get(&run)
                {
                    for e in buf.range(as_of + 1..).map(|(_, e)| e) {
                        extra.push(text(&json!({"type": "event", "event": e})));
                    }
                }
                sh.old_epochs.insert(run.clone(), old);
            }
            sh.held.insert(run, (as_of, BTreeMap::new()));
        }
        "event" | "batch" => {
            let events: Vec<Value> = match ty {
                "event" => v.get("event").cloned().into_iter().collect(),
                _ => v
                    .get("events")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            };
            for e in events {
                let (Some(r), Some(seq)) = (
                    e.get("run_id").and_then(Value::as_str),
                    e.get("seq").and_then(Value::as_u64),
                ) else {
                    continue;
                };
                let Some((last, buf)) = sh.held.get_mut(r) else {
                    continue;
                };
                if seq == *last + 1 {
                    *last = seq;
                    while buf.remove(&(*last + 1)).is_some() {
                        *last += 1;
                    }
                    buf.retain(|s, _| *s > *last);
                } else if seq > *last + 1 {
                    buf.insert(seq, e.clone());
                }
            }
        }
        _ => {}
    }
    extra
}

/// Writes the member `versions` of a `hello` twice ([`ClientFault::SendsDuplicateMembers`]).
pub(super) fn duplicate_versions(v: &Value) -> Option<Message> {
    let versions = v.get("versions")?.to_string();
    let body = v.to_string();
    let rest = body.strip_prefix('{')?;
    Some(Message::text(format!("{{\"versions\":{versions},{rest}")))
}

/// [`ServerFault::UrgentNotFlushed`]: how long to hold a server frame that carries a
/// terminal status or a todo update (the announced window); records the window from
/// `welcome`.
pub(super) fn urgent_hold(
    fault: Fault,
    st: &Mutex<ConnState>,
    m: &Message,
) -> Option<std::time::Duration> {
    if fault != Fault::Server(ServerFault::UrgentNotFlushed) {
        return None;
    }
    let Message::Text(t) = m else { return None };
    let v: Value = serde_json::from_str(t.as_str()).ok()?;
    let mut g = st.lock().ok()?;
    if v.get("type").and_then(Value::as_str) == Some("welcome") {
        g.batch_window_ms = v
            .get("batch_window_ms")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        return None;
    }
    let events: Vec<&Value> = match v.get("type").and_then(Value::as_str) {
        Some("event") => v.get("event").into_iter().collect(),
        Some("batch") => v
            .get("events")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        _ => return None,
    };
    let urgent = events.iter().any(|e| {
        let ty = e.get("type").and_then(Value::as_str).unwrap_or("");
        let status = e.pointer("/data/status").and_then(Value::as_str);
        ty == "todo.updated"
            || (ty == "run.status" && matches!(status, Some("completed" | "failed" | "cancelled")))
    });
    (urgent && g.batch_window_ms > 0).then(|| std::time::Duration::from_millis(g.batch_window_ms))
}

/// A UTC time as RFC 3339 with milliseconds (`2026-12-05T06:05:00.123Z`), the form
/// servers write `time` in, so that the two compare as strings.
pub(super) fn rfc3339_ms(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}

pub(super) fn text(v: &Value) -> Message {
    Message::text(v.to_string())
}

pub(super) fn transform(
    fault: Fault,
    from: From,
    st: &mut ConnState,
    shared: &Mutex<Shared>,
    msg: Message,
) -> (Vec<Message>, Vec<Message>) {
    // Returns (frames forwarded, frames answered back to the sender).
    if fault == Fault::Server(ServerFault::RateBeforeKind)
        && let Some(back) = rate_before_kind(from, st, shared, &msg)
    {
        return (vec![], back);
    }
    let Message::Text(t) = &msg else {
        return control(fault, from, msg);
    };
    if let Fault::Client(ClientFault::Swallows(kind)) = fault
        && from == From::Server
        && kind.in_text(t)
    {
        return (vec![], vec![]);
    }
    let Ok(v) = serde_json::from_str::<Value>(t) else {
        return (vec![msg], vec![]);
    };
    let ty = v
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    match (fault, from) {
        (Fault::Server(f), From::Server) => server_fault_down(f, st, v, &ty, msg),
        (Fault::Server(f), From::Client) => server_fault_up(f, st, shared, v, &ty, msg),
        (Fault::Client(f), From::Server) => client_fault_down(f, st, shared, v, &ty, msg),
        (Fault::Client(f), From::Client) => client_fault_up(f, st, shared, v, &ty, msg),
    }
}

/// A frame that is not text: the faults that rewrite or swallow close and binary frames.
fn control(fault: Fault, from: From, msg: Message) -> (Vec<Message>, Vec<Message>) {
    if let (Message::Close(_), Fault::Client(ClientFault::NoCloseWhenDone)) = (&msg, fault)
        && from == From::Client
    {
        return (vec![Message::Close(None)], vec![]);
    }
    if let (Message::Close(Some(cf)), Fault::Client(ClientFault::SendsReservedCloseCode)) =
        (&msg, fault)
        && from == From::Client
        && u16::from(cf.code) == 4000
    {
        return (
            vec![Message::Close(Some(CloseFrame {
                code: WsCloseCode::from(1006),
                reason: "".into(),
            }))],
            vec![],
        );
    }
    if let (Message::Binary(_), Fault::Client(ClientFault::Swallows(Invalid::NotOneObject))) =
        (&msg, fault)
        && from == From::Server
    {
        return (vec![], vec![]);
    }
    if let (Message::Close(Some(cf)), Fault::Client(ClientFault::ReconnectAfterTerminal)) =
        (&msg, fault)
        && from == From::Server
    {
        let c = u16::from(cf.code);
        if (4000..4100).contains(&c) || c == 1008 {
            return (
                vec![Message::Close(Some(CloseFrame {
                    code: WsCloseCode::from(1012),
                    reason: "".into(),
                }))],
                vec![],
            );
        }
    }
    if let (Message::Close(Some(cf)), Fault::Server(ServerFault::WrongCloseCode)) = (&msg, fault)
        && from == From::Server
        && u16::from(cf.code) != 1000
    {
        return (
            vec![Message::Close(Some(CloseFrame {
                code: WsCloseCode::Normal,
                reason: "".into(),
            }))],
            vec![],
        );
    }
    (vec![msg], vec![])
}

/// A server fault, on a frame from the server.
fn server_fault_down(
    f: ServerFault,
    st: &mut ConnState,
    mut v: Value,
    ty: &str,
    msg: Message,
) -> (Vec<Message>, Vec<Message>) {
    match f {
        ServerFault::SkipSeq => {
            if ty == "event" && v.pointer("/event/seq").and_then(Value::as_u64) == Some(3) {
                return (vec![], vec![]);
            }
            if ty == "batch"
                && let Some(a) = v.get_mut("events").and_then(Value::as_array_mut)
            {
                a.retain(|e| e.get("seq").and_then(Value::as_u64) != Some(3));
                if a.is_empty() {
                    return (vec![], vec![]);
                }
            }
            (vec![text(&v)], vec![])
        }
        ServerFault::DuplicateEvents if ty == "event" || ty == "batch" => {
            (vec![text(&v), text(&v)], vec![])
        }
        ServerFault::NeverPing if ty == "ping" => (vec![], vec![]),
        ServerFault::EmptyRunEpochForgotten
            if ty == "subscribed" && v.get("head_seq").and_then(Value::as_u64) == Some(0) =>
        {
            if let Some(e) = v.get("epoch").and_then(Value::as_str) {
                v["epoch"] = json!(format!("{e}f"));
            }
            (vec![text(&v)], vec![])
        }
        ServerFault::IgnorePongTimeout if ty == "ping" => {
            let id = v.get("id").cloned().unwrap_or(Value::Null);
            (vec![], vec![text(&json!({"type": "pong", "id": id}))])
        }
        ServerFault::NoErrorBeforeClose if ty == "error" && v.get("close_code").is_some() => {
            (vec![], vec![])
        }
        ServerFault::WelcomeWithoutLimits if ty == "welcome" => {
            if let Some(o) = v.as_object_mut() {
                o.remove("limits");
            }
            (vec![text(&v)], vec![])
        }
        ServerFault::DuplicateAtHandoff if ty == "subscribed" => {
            let run = v.get("run_id").and_then(Value::as_str).unwrap_or("");
            if let Some(o) = st.opening.get_mut(run) {
                o.1 = v.get("head_seq").and_then(Value::as_u64);
            }
            (vec![msg], vec![])
        }
        ServerFault::DuplicateAtHandoff if ty == "event" || ty == "batch" => {
            let events: Vec<Value> = match ty {
                "event" => v.get("event").cloned().into_iter().collect(),
                _ => v
                    .get("events")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            };
            let mut out = vec![msg];
            for e in events {
                let run = e.get("run_id").and_then(Value::as_str).unwrap_or("");
                let seq = e.get("seq").and_then(Value::as_u64).unwrap_or(0);
                let time = e.get("time").and_then(Value::as_str).unwrap_or("");
                if let Some((opened, Some(head))) = st.opening.get(run)
                    && seq <= *head
                    && time >= opened.as_str()
                {
                    out.push(text(&json!({"type": "event", "event": e})));
                }
            }
            (out, vec![])
        }
        _ => (vec![msg], vec![]),
    }
}

/// A server fault, on a frame from the client.
fn server_fault_up(
    f: ServerFault,
    st: &mut ConnState,
    shared: &Mutex<Shared>,
    mut v: Value,
    ty: &str,
    msg: Message,
) -> (Vec<Message>, Vec<Message>) {
    let first = !st.hello_seen;
    if ty == "hello" {
        st.hello_seen = true;
    }
    if f == ServerFault::DuplicateAtHandoff
        && let Some(a) = v.get("subscriptions").and_then(Value::as_array)
    {
        let now = rfc3339_ms(std::time::SystemTime::now());
        for e in a {
            if let Some(run) = e.get("run_id").and_then(Value::as_str) {
                st.opening.insert(run.to_owned(), (now.clone(), None));
            }
        }
    }
    match f {
        ServerFault::WrongResumeCursor if ty == "subscribe" || ty == "hello" => {
            if let Some(a) = v.get_mut("subscriptions").and_then(Value::as_array_mut) {
                for e in a {
                    if let Some(n) = e.get("after_seq").and_then(Value::as_u64) {
                        e["after_seq"] = json!(n + 1);
                    }
                }
            }
            (vec![text(&v)], vec![])
        }
        ServerFault::NoUnsupportedVersion if ty == "hello" => {
            v["versions"] = json!(["1.0"]);
            (vec![text(&v)], vec![])
        }
        ServerFault::LeakUnauthorizedRuns if ty == "hello" => {
            if let Some(tok) = shared.lock().ok().and_then(|s| s.full_token.clone()) {
                v["token"] = json!(tok);
            }
            (vec![text(&v)], vec![])
        }
        ServerFault::AcceptBeforeHello if first && ty != "hello" => {
            st.hello_seen = true;
            let tok = shared.lock().ok().and_then(|s| s.full_token.clone());
            let mut h = json!({"type": "hello", "versions": ["1.0"]});
            if let Some(t) = tok {
                h["token"] = json!(t);
            }
            (vec![text(&h), msg], vec![])
        }
        _ => (vec![msg], vec![]),
    }
}

/// A client fault, on a frame from the server.
fn client_fault_down(
    f: ClientFault,
    st: &mut ConnState,
    shared: &Mutex<Shared>,
    mut v: Value,
    ty: &str,
    msg: Message,
) -> (Vec<Message>, Vec<Message>) {
    let known = runwire_protocol::ServerMessage::TYPES.contains(&ty);
    if !known && let Ok(mut s) = shared.lock() {
        s.unknown_seen = true;
    }
    let extra = track_server_frame(f, shared, ty, &v);
    if !extra.is_empty() {
        let mut out = vec![msg];
        out.extend(extra);
        return (out, vec![]);
    }
    match f {
        ClientFault::IgnoresCase if ty.chars().any(|c| c.is_ascii_uppercase()) => {
            v["type"] = json!(ty.to_ascii_lowercase());
            (vec![text(&v)], vec![])
        }
        ClientFault::IgnoreRetryAfter if ty == "error" => {
            if let Some(o) = v.as_object_mut() {
                o.remove("retry_after_ms");
            }
            (vec![text(&v)], vec![])
        }
        ClientFault::ReconnectAfterTerminal if ty == "error" => {
            let c = v.get("close_code").and_then(Value::as_u64).unwrap_or(0);
            if (4000..4100).contains(&c) || c == 1008 {
                v["close_code"] = json!(1012);
                v["retryable"] = json!(true);
                v["code"] = json!("server_shutdown");
            }
            (vec![text(&v)], vec![])
        }
        ClientFault::AcceptsUnofferedVersion if ty == "welcome" => {
            let ver = v.get("version").and_then(Value::as_str).unwrap_or("");
            if !st.offered.iter().any(|o| o == ver)
                && let Some(first) = st.offered.first()
            {
                v["version"] = json!(first);
            }
            (vec![text(&v)], vec![])
        }
        _ => (vec![msg], vec![]),
    }
}

/// A client fault, on a frame from the client.
fn client_fault_up(
    f: ClientFault,
    st: &mut ConnState,
    shared: &Mutex<Shared>,
    mut v: Value,
    ty: &str,
    msg: Message,
) -> (Vec<Message>, Vec<Message>) {
    if ty == "hello" {
        st.offered = v
            .get("versions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
    }
    match f {
        ClientFault::KeepsEpochAfterReset if ty == "hello" || ty == "subscribe" => {
            let old = shared
                .lock()
                .map(|s| s.old_epochs.clone())
                .unwrap_or_default();
            if let Some(a) = v.get_mut("subscriptions").and_then(Value::as_array_mut) {
                for e in a {
                    let run = e.get("run_id").and_then(Value::as_str).unwrap_or("");
                    if let Some(o) = old.get(run) {
                        e["epoch"] = json!(o);
                    }
                }
            }
            if ty == "hello" {
                st.hello_seen = true;
            }
            (vec![text(&v)], vec![])
        }
        ClientFault::ReusesStaleToken if ty == "hello" => {
            st.hello_seen = true;
            if let Ok(mut s) = shared.lock() {
                match (&s.first_token, v.get("token").and_then(Value::as_str)) {
                    (Some(first), Some(_)) => v["token"] = json!(first),
                    (None, Some(t)) => s.first_token = Some(t.to_owned()),
                    _ => {}
                }
            }
            (vec![text(&v)], vec![])
        }
        ClientFault::SendsInvalidHello if ty == "hello" => {
            st.hello_seen = true;
            v["client"] = json!({"name": "broken-client"});
            (vec![text(&v)], vec![])
        }
        ClientFault::SendsDuplicateMembers if ty == "hello" => {
            st.hello_seen = true;
            (duplicate_versions(&v).into_iter().collect(), vec![])
        }
        ClientFault::SendsEpochlessCursor if ty == "hello" || ty == "subscribe" => {
            if let Some(a) = v.get_mut("subscriptions").and_then(Value::as_array_mut) {
                for e in a {
                    if e.get("epoch").is_none() {
                        e["after_seq"] = json!(1);
                    }
                }
            }
            if ty == "hello" {
                st.hello_seen = true;
            }
            (vec![text(&v)], vec![])
        }
        ClientFault::NoPong if ty == "pong" => (vec![], vec![]),
        ClientFault::NoLivenessTimeout
            if ty == "pong"
                && v.get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|i| i.starts_with("keep-")) =>
        {
            (vec![], vec![])
        }
        ClientFault::WrongCursor if ty == "hello" || ty == "subscribe" => {
            if (st.conn > 1 || ty == "subscribe")
                && let Some(a) = v.get_mut("subscriptions").and_then(Value::as_array_mut)
            {
                for e in a {
                    if let Some(n) = e.get("after_seq").and_then(Value::as_u64)
                        && n > 0
                    {
                        e["after_seq"] = json!(n - 1);
                    }
                }
            }
            (vec![text(&v)], vec![])
        }
        ClientFault::NoResubscribeOnGap
            if st.hello_seen && (ty == "unsubscribe" || ty == "subscribe") =>
        {
            (vec![], vec![])
        }
        _ => {
            if ty == "hello" {
                st.hello_seen = true;
            }
            (vec![msg], vec![])
        }
    }
}
