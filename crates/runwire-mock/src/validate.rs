//! Semantic checks of a parsed fixture: everything serde cannot see (references to
//! undeclared runs, impossible ranges, steps after the connection ended, …). Each
//! failure names a JSON pointer into the fixture.

use std::collections::BTreeSet;

use runwire_protocol::{CloseCode, Epoch, EventPayload, RunId, is_valid_event_type, parse_version};
use serde_json::Value;

use crate::{
    fixture::{Accept, EventsStep, Fixture, Step, TimelineItem, parse_range},
    generate::SUPPORTED_TYPES,
};

type Failure = (String, String);

fn fail<T>(pointer: impl Into<String>, reason: impl Into<String>) -> Result<T, Failure> {
    Err((pointer.into(), reason.into()))
}

fn is_requirement(s: &str) -> bool {
    let mut parts = s.split('-');
    parts.next() == Some("RW")
        && parts
            .next()
            .is_some_and(|a| !a.is_empty() && a.bytes().all(|c| c.is_ascii_uppercase()))
        && parts
            .next()
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
        && parts.next().is_none()
}

fn check_requirement(p: &str, r: &Option<String>) -> Result<(), Failure> {
    match r {
        Some(r) if !is_requirement(r) => {
            fail(p, format!("requirement {r:?} is not of the form RW-AREA-N"))
        }
        _ => Ok(()),
    }
}

/// Runs every semantic check; the first failure wins.
pub(crate) fn check(f: &Fixture) -> Result<(), Failure> {
    let id_ok = !f.id.is_empty()
        && f.id.len() <= 128
        && f.id.as_bytes()[0].is_ascii_alphanumeric()
        && f.id
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if !id_ok {
        return fail("/id", "id must be 1-128 lowercase letters, digits and '-'");
    }
    if f.requirements.is_empty() {
        return fail(
            "/requirements",
            "a fixture must name at least one requirement",
        );
    }
    for (i, r) in f.requirements.iter().enumerate() {
        if !is_requirement(r) {
            return fail(
                format!("/requirements/{i}"),
                format!("{r:?} is not of the form RW-AREA-N"),
            );
        }
    }
    if f.deadline_ms() == 0 || f.deadline_ms() > 600_000 {
        return fail("/deadline_ms", "deadline_ms must be 1 to 600000");
    }
    if f.server_versions().is_empty() {
        return fail("/server_versions", "list at least one version");
    }
    for (i, v) in f.server_versions().iter().enumerate() {
        if parse_version(v).is_none() {
            return fail(
                format!("/server_versions/{i}"),
                format!("{v:?} is not MAJOR.MINOR"),
            );
        }
    }
    check_runs(f)?;
    check_client(f)?;
    if f.connections.is_empty() {
        return fail(
            "/connections",
            "a fixture must script at least one connection",
        );
    }
    for (ci, c) in f.connections.iter().enumerate() {
        check_connection(f, ci, c)?;
    }
    check_expect(f)
}

fn check_runs(f: &Fixture) -> Result<(), Failure> {
    let mut seen = BTreeSet::new();
    for (i, r) in f.runs.iter().enumerate() {
        let p = format!("/runs/{i}");
        if let Err(e) = RunId::new(r.run_id.clone()) {
            return fail(format!("{p}/run_id"), e.to_string());
        }
        if let Err(e) = Epoch::new(r.epoch.clone()) {
            return fail(format!("{p}/epoch"), e.to_string());
        }
        if !seen.insert((r.run_id.clone(), r.epoch.clone())) {
            return fail(
                &p,
                format!("run {:?} epoch {:?} is declared twice", r.run_id, r.epoch),
            );
        }
        if r.length > 100_000 {
            return fail(format!("{p}/length"), "length must be at most 100000");
        }
        for (ti, t) in r.types.iter().enumerate() {
            if !SUPPORTED_TYPES.contains(&t.as_str()) {
                return fail(
                    format!("{p}/types/{ti}"),
                    format!(
                        "cannot generate events of type {t:?}; supported: {}",
                        SUPPORTED_TYPES.join(", ")
                    ),
                );
            }
        }
        let mut seqs = BTreeSet::new();
        for (oi, o) in r.overrides.iter().enumerate() {
            let op = format!("{p}/overrides/{oi}");
            if o.seq == 0 || o.seq > r.length {
                return fail(
                    format!("{op}/seq"),
                    format!("seq {} is outside the log 1..={}", o.seq, r.length),
                );
            }
            if !seqs.insert(o.seq) {
                return fail(
                    format!("{op}/seq"),
                    format!("seq {} is overridden twice", o.seq),
                );
            }
            if !is_valid_event_type(&o.event_type) {
                return fail(
                    format!("{op}/type"),
                    format!("{:?} is not a valid event type name", o.event_type),
                );
            }
            if let Err(e) =
                EventPayload::from_type_and_data(&o.event_type, Value::Object(o.data.clone()))
            {
                return fail(
                    format!("{op}/data"),
                    format!("not a valid {} payload: {e}", o.event_type),
                );
            }
            if let Some(t) = &o.time
                && let Err(e) = runwire_protocol::Timestamp::new(t.clone())
            {
                return fail(format!("{op}/time"), e.to_string());
            }
            if let Some(extra) = &o.extra {
                for k in extra.keys() {
                    if matches!(
                        k.as_str(),
                        "event_id" | "run_id" | "seq" | "type" | "time" | "data"
                    ) {
                        return fail(
                            format!("{op}/extra/{k}"),
                            "extra members must not replace envelope members",
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

fn declared_run(f: &Fixture, p: &str, run: &str) -> Result<(), Failure> {
    if f.runs.iter().any(|r| r.run_id == run) {
        Ok(())
    } else {
        fail(p, format!("run {run:?} is not declared in /runs"))
    }
}

fn declared_epoch(f: &Fixture, p: &str, run: &str, epoch: &Option<String>) -> Result<(), Failure> {
    if let Some(e) = epoch
        && !f.runs.iter().any(|r| r.run_id == run && &r.epoch == e)
    {
        return fail(
            p,
            format!("run {run:?} has no log with epoch {e:?} in /runs"),
        );
    }
    Ok(())
}

fn max_length(f: &Fixture, run: &str, epoch: &Option<String>) -> u64 {
    f.runs
        .iter()
        .filter(|r| r.run_id == run && epoch.as_ref().is_none_or(|e| &r.epoch == e))
        .map(|r| r.length)
        .max()
        .unwrap_or(0)
}

fn check_client(f: &Fixture) -> Result<(), Failure> {
    let c = &f.client;
    if c.runs.is_empty() {
        return fail(
            "/client/runs",
            "the client must subscribe to at least one run",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, r) in c.runs.iter().enumerate() {
        let p = format!("/client/runs/{i}");
        declared_run(f, &format!("{p}/run_id"), &r.run_id)?;
        if !seen.insert(&r.run_id) {
            return fail(&p, format!("run {:?} is listed twice", r.run_id));
        }
        if r.epoch.is_some() && r.after_seq.is_none() {
            return fail(format!("{p}/epoch"), "an epoch needs an after_seq");
        }
        if let Some(e) = &r.epoch
            && let Err(err) = Epoch::new(e.clone())
        {
            return fail(format!("{p}/epoch"), err.to_string());
        }
    }
    if let Some(vs) = &c.versions {
        if vs.is_empty() {
            return fail("/client/versions", "list at least one version");
        }
        for (i, v) in vs.iter().enumerate() {
            if parse_version(v).is_none() {
                return fail(
                    format!("/client/versions/{i}"),
                    format!("{v:?} is not MAJOR.MINOR"),
                );
            }
        }
    }
    for (i, t) in c.tokens.iter().enumerate() {
        if t.is_empty() || t.contains(',') {
            return fail(
                format!("/client/tokens/{i}"),
                "a token must be non-empty without ','",
            );
        }
    }
    let r = &c.reconnect;
    if r.base_ms == 0 {
        return fail("/client/reconnect/base_ms", "base_ms must be at least 1");
    }
    if r.factor == 0 {
        return fail("/client/reconnect/factor", "factor must be at least 1");
    }
    if r.cap_ms < r.base_ms {
        return fail(
            "/client/reconnect/cap_ms",
            "cap_ms must be at least base_ms",
        );
    }
    if r.max_attempts == 0 {
        return fail(
            "/client/reconnect/max_attempts",
            "max_attempts must be at least 1",
        );
    }
    Ok(())
}

fn check_events(f: &Fixture, p: &str, s: &EventsStep) -> Result<(), Failure> {
    declared_run(f, &format!("{p}/run"), &s.run)?;
    declared_epoch(f, &format!("{p}/epoch"), &s.run, &s.epoch)?;
    let has_range = s.from_seq.is_some() || s.to_seq.is_some();
    if has_range && !s.seqs.is_empty() {
        return fail(p, "give either from_seq/to_seq or seqs, not both");
    }
    if has_range {
        match (s.from_seq, s.to_seq) {
            (Some(a), Some(b)) if a >= 1 && a <= b => {}
            _ => {
                return fail(
                    p,
                    "from_seq and to_seq must both be set, 1 <= from_seq <= to_seq",
                );
            }
        }
    } else if s.seqs.is_empty() {
        return fail(p, "select events with from_seq/to_seq or seqs");
    }
    let len = max_length(f, &s.run, &s.epoch);
    if let Some(bad) = s.selected().into_iter().find(|&q| q == 0 || q > len) {
        return fail(
            p,
            format!(
                "seq {bad} is outside the log of run {:?} (1..={len})",
                s.run
            ),
        );
    }
    Ok(())
}

fn check_close_code(p: &str, code: u16) -> Result<(), Failure> {
    if !CloseCode(code).is_sendable() {
        return fail(
            p,
            format!("close code {code} cannot be sent (valid: 1000-1003, 1007-1014, 3000-4999)"),
        );
    }
    Ok(())
}

fn check_connection(f: &Fixture, ci: usize, c: &crate::fixture::Connection) -> Result<(), Failure> {
    let p = format!("/connections/{ci}");
    if let Some(d) = &c.reconnect_delay {
        if ci == 0 {
            return fail(
                format!("{p}/reconnect_delay"),
                "the first connection is not a reconnect",
            );
        }
        check_requirement(&format!("{p}/reconnect_delay/requirement"), &d.requirement)?;
        if d.backoff_attempt.is_none() && d.min_ms.is_none() && d.max_ms.is_none() {
            return fail(
                format!("{p}/reconnect_delay"),
                "set backoff_attempt, min_ms or max_ms",
            );
        }
    }
    if c.accept != Accept::Websocket {
        if !c.steps.is_empty() || c.hello != Default::default() {
            return fail(
                &p,
                "a connection that is not accepted as a WebSocket has no hello and no steps",
            );
        }
        return Ok(());
    }
    for (i, cur) in c.hello.cursors.iter().enumerate() {
        let cp = format!("{p}/hello/cursors/{i}");
        declared_run(f, &format!("{cp}/run"), &cur.run)?;
        check_requirement(&format!("{cp}/requirement"), &cur.requirement)?;
    }
    for (i, r) in c.hello.not_subscribed.iter().enumerate() {
        declared_run(f, &format!("{p}/hello/not_subscribed/{i}"), r)?;
    }
    for (i, v) in c.hello.versions_include.iter().enumerate() {
        if parse_version(v).is_none() {
            return fail(
                format!("{p}/hello/versions_include/{i}"),
                format!("{v:?} is not MAJOR.MINOR"),
            );
        }
    }
    let mut pinged = false;
    for (si, step) in c.steps.iter().enumerate() {
        let sp = format!("{p}/steps/{si}/{}", step.name());
        if si > 0 && c.steps[si - 1].ends_connection() {
            return fail(
                format!("{p}/steps/{si}"),
                format!(
                    "no step may follow {:?}: the connection is over",
                    c.steps[si - 1].name()
                ),
            );
        }
        check_step(f, &sp, step, &mut pinged)?;
    }
    Ok(())
}

/// Checks one step of a connection at pointer `sp`; `pinged` says whether an earlier
/// step of the connection sent a ping.
fn check_step(f: &Fixture, sp: &str, step: &Step, pinged: &mut bool) -> Result<(), Failure> {
    match step {
        Step::Welcome(w) => {
            if let Some(v) = &w.version
                && parse_version(v).is_none()
            {
                return fail(format!("{sp}/version"), format!("{v:?} is not MAJOR.MINOR"));
            }
            if w.heartbeat_interval_ms == Some(0) || w.pong_timeout_ms == Some(0) {
                return fail(sp, "heartbeat_interval_ms and pong_timeout_ms must be >= 1");
            }
        }
        Step::Subscribed(s) => {
            declared_run(f, &format!("{sp}/run"), &s.run)?;
            declared_epoch(f, &format!("{sp}/epoch"), &s.run, &s.epoch)?;
            if let (Some(a), Some(h)) = (s.after_seq, s.head_seq)
                && h < a
            {
                return fail(sp, "head_seq must be at least after_seq");
            }
        }
        Step::Reset(s) => {
            declared_run(f, &format!("{sp}/run"), &s.run)?;
            declared_epoch(f, &format!("{sp}/epoch"), &s.run, &s.epoch)?;
            let len = max_length(f, &s.run, &s.epoch);
            if s.as_of_seq > len {
                return fail(
                    format!("{sp}/as_of_seq"),
                    format!("as_of_seq {} is beyond the log (1..={len})", s.as_of_seq),
                );
            }
        }
        Step::Events(s) | Step::Batch(s) | Step::DropMidBatch(s) => check_events(f, sp, s)?,
        Step::Reorder(s) => {
            check_events(f, sp, s)?;
            if s.selected().len() < 2 {
                return fail(sp, "reorder needs at least two events");
            }
        }
        Step::Ping(pg) => {
            if let Some(id) = &pg.id
                && (id.is_empty() || id.len() > 64)
            {
                return fail(format!("{sp}/id"), "a ping id is 1-64 characters");
            }
            *pinged = true;
        }
        Step::Error(e) => {
            if e.code.is_empty() || e.code.len() > 64 {
                return fail(format!("{sp}/code"), "an error code is 1-64 characters");
            }
            if let Some(r) = &e.run {
                declared_run(f, &format!("{sp}/run"), r)?;
            }
            if let Some(cc) = e.close_code
                && cc != 0
            {
                check_close_code(&format!("{sp}/close_code"), cc)?;
            }
        }
        Step::Frame(fr) => {
            if !matches!(fr.json.get("type"), Some(Value::String(_))) {
                return fail(format!("{sp}/json"), "the frame needs a string \"type\"");
            }
        }
        Step::Raw(r) => match (&r.text, &r.text_hex, &r.binary_hex) {
            (Some(_), None, None) => {}
            (None, Some(h), None) | (None, None, Some(h)) => {
                let member = if r.text_hex.is_some() {
                    "text_hex"
                } else {
                    "binary_hex"
                };
                if h.len() % 2 != 0 || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return fail(format!("{sp}/{member}"), "not an even number of hex digits");
                }
            }
            _ => return fail(sp, "give exactly one of text, text_hex and binary_hex"),
        },
        Step::Repeat(r) => {
            let back = r.back.unwrap_or(1);
            if back == 0 {
                return fail(format!("{sp}/back"), "back must be at least 1");
            }
        }
        Step::Close(cl) => {
            check_close_code(&format!("{sp}/code"), cl.code)?;
            if cl.reason.as_ref().is_some_and(|r| r.len() > 123) {
                return fail(
                    format!("{sp}/reason"),
                    "a close reason is at most 123 bytes",
                );
            }
        }
        Step::AwaitPong(a) => {
            check_requirement(&format!("{sp}/requirement"), &a.requirement)?;
            if a.id.is_none() && !*pinged {
                return fail(sp, "await_pong without an id needs an earlier ping step");
            }
        }
        Step::AwaitSubscribe(a) => {
            declared_run(f, &format!("{sp}/run"), &a.run)?;
            check_requirement(&format!("{sp}/requirement"), &a.requirement)?;
        }
        Step::AwaitMessage(a) => {
            check_requirement(&format!("{sp}/requirement"), &a.requirement)?;
            if !runwire_protocol::ClientMessage::TYPES.contains(&a.message_type.as_str()) {
                return fail(
                    format!("{sp}/type"),
                    format!("{:?} is not a client message type", a.message_type),
                );
            }
        }
        Step::AwaitClose(a) => {
            check_requirement(&format!("{sp}/requirement"), &a.requirement)?;
            if let (Some(min), Some(max)) = (a.min_ms, a.within_ms)
                && min > max
            {
                return fail(sp, "min_ms must not exceed within_ms");
            }
        }
        Step::ExpectSilence(s) => {
            check_requirement(&format!("{sp}/requirement"), &s.requirement)?;
        }
        Step::Drop(_) | Step::Wait(_) | Step::Stall(_) | Step::Hang(_) => {}
    }
    Ok(())
}

fn check_expect(f: &Fixture) -> Result<(), Failure> {
    let e = &f.expect;
    for (i, d) in e.delivered.iter().enumerate() {
        let p = format!("/expect/delivered/{i}");
        declared_run(f, &format!("{p}/run"), &d.run)?;
        check_requirement(&format!("{p}/requirement"), &d.requirement)?;
        for (ti, item) in d.timeline.iter().enumerate() {
            let tp = format!("{p}/timeline/{ti}");
            match item {
                TimelineItem::Range(r) => {
                    if parse_range(r).is_none() {
                        return fail(
                            tp,
                            format!("{r:?} is not a seq range like \"1-5\" or \"7\""),
                        );
                    }
                }
                TimelineItem::Reset(r) => {
                    declared_epoch(f, &format!("{tp}/reset/epoch"), &d.run, &r.reset.epoch)?;
                }
            }
        }
    }
    for (i, l) in e.lines.iter().enumerate() {
        check_requirement(&format!("/expect/lines/{i}/requirement"), &l.requirement)?;
        if l.contains.is_empty() {
            return fail(
                format!("/expect/lines/{i}/contains"),
                "name at least one member",
            );
        }
    }
    for (i, fe) in e.folded.iter().enumerate() {
        let p = format!("/expect/folded/{i}");
        declared_run(f, &format!("{p}/run"), &fe.run)?;
        declared_epoch(f, &format!("{p}/epoch"), &fe.run, &fe.epoch)?;
        check_requirement(&format!("{p}/requirement"), &fe.requirement)?;
        if let Some(n) = fe.as_of_seq {
            let epoch = fe
                .epoch
                .clone()
                .or_else(|| crate::judge::last_epoch(f, &fe.run));
            let len = max_length(f, &fe.run, &epoch);
            if n > len {
                return fail(
                    format!("{p}/as_of_seq"),
                    format!("run {:?} has only {len} events", fe.run),
                );
            }
        }
    }
    for (i, er) in e.errors.iter().enumerate() {
        check_requirement(&format!("/expect/errors/{i}/requirement"), &er.requirement)?;
    }
    if let Some(t) = &e.terminal_error {
        check_requirement("/expect/terminal_error/requirement", &t.requirement)?;
        if t.terminal == Some(false) {
            return fail(
                "/expect/terminal_error/terminal",
                "a terminal error is terminal",
            );
        }
    }
    check_requirement(
        "/expect/extra_connection_requirement",
        &e.extra_connection_requirement,
    )?;
    if let Some(j) = &e.jitter {
        check_requirement("/expect/jitter/requirement", &j.requirement)?;
        if j.connections.len() < 3 {
            return fail("/expect/jitter/connections", "list at least 3 connections");
        }
        for (i, &n) in j.connections.iter().enumerate() {
            let ok = n >= 2
                && n <= f.connections.len()
                && f.connections[n - 1]
                    .reconnect_delay
                    .as_ref()
                    .is_some_and(|d| d.backoff_attempt.is_some());
            if !ok {
                return fail(
                    format!("/expect/jitter/connections/{i}"),
                    format!(
                        "connection {n} must exist (2..={}) and have reconnect_delay.backoff_attempt",
                        f.connections.len()
                    ),
                );
            }
        }
    }
    Ok(())
}

/// The first member name that appears twice in one JSON object of `text`, at any
/// depth (`RW-CONV-3`); `None` when there is none or `text` is not JSON.
pub fn duplicate_member(text: &str) -> Option<String> {
    use serde::de::{Deserializer as _, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    struct Dup<'a>(&'a mut Option<String>);

    impl<'de> serde::de::DeserializeSeed<'de> for Dup<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Dup<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            let mut seen = std::collections::BTreeSet::new();
            while let Some(key) = m.next_key::<String>()? {
                if !seen.insert(key.clone()) && self.0.is_none() {
                    *self.0 = Some(key);
                }
                m.next_value_seed(Dup(&mut *self.0))?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
            while s.next_element_seed(Dup(&mut *self.0))?.is_some() {}
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }

    let mut found = None;
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_any(Dup(&mut found)).ok()?;
    found
}

#[cfg(test)]
mod duplicate_tests {
    use super::duplicate_member;

    #[test]
    fn finds_a_member_named_twice_at_any_depth() {
        assert_eq!(duplicate_member(r#"{"a":1,"b":2}"#), None);
        assert_eq!(
            duplicate_member(r#"{"versions":["1.0"],"type":"hello","versions":["1.0"]}"#)
                .as_deref(),
            Some("versions")
        );
        assert_eq!(
            duplicate_member(r#"{"s":[{"run_id":"a","run_id":"b"}]}"#).as_deref(),
            Some("run_id")
        );
        assert_eq!(duplicate_member(r#"[{"a":1},{"a":1}]"#), None);
        assert_eq!(duplicate_member("not json"), None);
    }
}
