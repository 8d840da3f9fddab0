//! The node's reader task: `XREAD BLOCK` over the streams of the runs with local
//! subscribers, publishing what any node appended to them (see the store's module
//! docs, "Live fan-out across nodes").

use std::{
    collections::BTreeSet,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use redis::{AsyncConnectionConfig, RedisError, Value, aio::MultiplexedConnection};
use runwire_protocol::RunId;

use super::{
    Inner, LiveEvent, READ_COUNT, StoreError, StoredEvent, Watch, WatchPos, arr, parse_entries,
    value_str,
};

/// Tells a watch's subscriptions that the run's log was re-created (Redis lost it,
/// or it expired and was opened again): each sends a `reset` with the new log's
/// snapshot (`RW-RESUME-13`).
pub(super) fn recreated(watch: &mut Watch) {
    let _ = watch.tx.send(LiveEvent::Recreated);
    watch.pos = None;
}

/// The node's reader: `XREAD BLOCK` over the watched runs' streams, publishing
/// what any node appended to the local subscribers, in seq order.
pub(super) async fn reader_loop(inner: Arc<Inner>) {
    let mut conn: Option<(MultiplexedConnection, i64)> = None;
    let mut failures: u32 = 0;
    let mut read_errors: u32 = 0;
    let mut last_touch = tokio::time::Instant::now();
    loop {
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        // Forget runs without local subscribers.
        let (pending, active) = {
            let mut w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
            w.retain(|_, watch| watch.tx.receiver_count() > 0);
            let pending: Vec<RunId> = w
                .iter()
                .filter(|(_, x)| x.pos.is_none())
                .map(|(r, _)| r.clone())
                .collect();
            let active: Vec<(RunId, u64)> = w
                .iter()
                .filter_map(|(r, x)| x.pos.as_ref().map(|p| (r.clone(), p.cursor)))
                .collect();
            (pending, active)
        };
        if pending.is_empty() && active.is_empty() {
            conn = None;
            tokio::select! {
                () = inner.wake.notified() => {}
                () = inner.stop.notified() => return,
            }
            continue;
        }
        let (mut c, id) = match conn.take() {
            Some(c) => c,
            None => match connect_reader(&inner).await {
                Ok(c) => {
                    if failures > 0 {
                        tracing::info!(url = %inner.url, "redis reachable again; live feed resumes from each run's cursor");
                    }
                    failures = 0;
                    // Redis may have restarted without its data (and its seed).
                    if let Err(e) = inner.refresh_seed().await {
                        tracing::warn!(error = %e, "reading the epoch seed after reconnect failed");
                    }
                    // After a reconnect, check every run's log is still the one we
                    // were reading (redis may have restarted without its data).
                    if let Err(e) = revalidate(&inner, &c.0).await {
                        tracing::warn!(error = %e, "checking watched runs after reconnect failed");
                    }
                    c
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(url = %inner.url, error = %e, "redis unreachable: live subscriptions are told to reconnect");
                    }
                    inner.ring_unavailable();
                    let backoff = Duration::from_millis((50u64 << failures.min(5)).min(1_000));
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = inner.stop.notified() => return,
                    }
                    continue;
                }
            },
        };
        if !pending.is_empty() {
            match init_positions(&inner, &mut c, &pending).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "redis reader lost its connection");
                    failures += 1;
                    continue;
                }
            }
        }
        if inner.opts.ttl_secs > 0
            && last_touch.elapsed() >= Duration::from_secs((inner.opts.ttl_secs / 4).max(1))
        {
            last_touch = tokio::time::Instant::now();
            touch_watched(&inner, &mut c).await;
        }
        let active: Vec<(RunId, u64)> = {
            let w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
            w.iter()
                .filter_map(|(r, x)| x.pos.as_ref().map(|p| (r.clone(), p.cursor)))
                .collect()
        };
        if active.is_empty() {
            conn = Some((c, id));
            continue;
        }
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(inner.opts.block_ms)
            .arg("STREAMS");
        for (r, _) in &active {
            cmd.arg(inner.keys(r).stream);
        }
        for (_, cursor) in &active {
            cmd.arg(format!("{cursor}-0"));
        }
        let result = {
            let read = cmd.query_async::<Value>(&mut c);
            tokio::pin!(read);
            let mut unblocking = false;
            let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
            let retry = tokio::time::sleep_until(far);
            tokio::pin!(retry);
            loop {
                tokio::select! {
                    r = &mut read => break Some(r),
                    () = inner.wake.notified(), if !unblocking => {
                        unblocking = true;
                        retry.as_mut().reset(tokio::time::Instant::now());
                    }
                    () = &mut retry, if unblocking => {
                        // The read may not have reached Redis yet: retry the unblock
                        // until it interrupted the read (or the read returned).
                        let done = inner
                            .pool
                            .run(|mut p| async move {
                                redis::cmd("CLIENT").arg("UNBLOCK").arg(id).query_async::<i64>(&mut p).await
                            })
                            .await;
                        if matches!(done, Ok(1) | Err(_)) {
                            retry.as_mut().reset(far);
                        } else {
                            retry.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(2));
                        }
                    }
                    () = inner.stop.notified() => break None,
                }
            }
        };
        let Some(result) = result else { return };
        match result {
            Ok(v) => {
                read_errors = 0;
                if let Err(e) = deliver(&inner, v) {
                    tracing::error!(error = %e, "unreadable stream entries");
                }
                conn = Some((c, id));
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis reader lost its connection; reconnecting");
                failures += 1;
                read_errors += 1;
                if read_errors > 1 {
                    // Not a one-off drop: back off (an error that reconnecting does
                    // not cure must not spin).
                    let backoff = Duration::from_millis((25u64 << read_errors.min(6)).min(1_000));
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = inner.stop.notified() => return,
                    }
                }
                // Try again at once; ring the subscriptions only if that fails.
                if failures > 1 {
                    inner.ring_unavailable();
                }
            }
        }
    }
}

pub(super) async fn connect_reader(
    inner: &Inner,
) -> Result<(MultiplexedConnection, i64), StoreError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(inner.opts.connect_timeout_ms)))
        .set_response_timeout(Some(Duration::from_millis(
            inner.opts.block_ms + inner.opts.timeout_ms,
        )));
    let err = |e: RedisError| StoreError::Unavailable(format!("redis at {}: {e}", inner.url));
    let mut c = inner
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(err)?;
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut c)
        .await
        .map_err(err)?;
    Ok((c, id))
}

/// Fixes the reader's position for newly watched runs at their head, and publishes
/// the head event, so that a subscription that read an older head sees a seq jump
/// and catches up from the store.
pub(super) async fn init_positions(
    inner: &Inner,
    c: &mut MultiplexedConnection,
    runs: &[RunId],
) -> Result<(), StoreError> {
    let err = |e: RedisError| StoreError::Unavailable(format!("redis at {}: {e}", inner.url));
    // What subscribers were told before this read: a log that no longer matches it
    // vanished (or was re-created) in between.
    let seen_before: Vec<(Option<String>, bool)> = {
        let w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
        runs.iter()
            .map(|r| {
                w.get(r)
                    .map_or((None, false), |x| (x.seen_epoch.clone(), x.seen_stored))
            })
            .collect()
    };
    let mut pipe = redis::pipe();
    for r in runs {
        let k = inner.keys(r);
        pipe.cmd("HMGET").arg(&k.meta).arg("epoch").arg("head");
        pipe.cmd("XREVRANGE")
            .arg(&k.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
    }
    let out: Vec<Value> = pipe.query_async(c).await.map_err(err)?;
    let lost = seen_before
        .iter()
        .zip(out.chunks(2))
        .any(|((_, stored), o)| *stored && matches!(o.first(), Some(Value::Array(m)) if m.first().is_none_or(|e| *e == Value::Nil)));
    if lost {
        // A log subscribers saw is gone: Redis lost data, maybe its seed too.
        inner.refresh_seed().await?;
    }
    let mut it = out.into_iter();
    for (r, (seen, stored)) in runs.iter().zip(seen_before) {
        let meta = arr(it.next().unwrap_or(Value::Nil))?;
        let last = parse_entries(it.next().unwrap_or(Value::Nil))?;
        let epoch = meta.first().and_then(value_str);
        let head: u64 = meta
            .get(1)
            .and_then(value_str)
            .and_then(|h| h.parse().ok())
            .unwrap_or(0);
        let cursor = if epoch.is_some() { head } else { 0 };
        let mut w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(watch) = w.get_mut(r)
            && watch.pos.is_none()
        {
            // No log yet is not a re-creation: subscribers of a run without a log
            // were told the epoch its first append gives it; whether it did is
            // checked when its first events arrive (`deliver`).
            if seen.is_some() && (epoch.is_some() || stored) && epoch != seen {
                recreated(watch);
                watch.seen_epoch.clone_from(&epoch);
                watch.seen_stored = epoch.is_some();
            }
            watch.pos = Some(WatchPos { cursor, epoch });
            let last: Vec<StoredEvent> = last.into_iter().filter(|e| e.seq == cursor).collect();
            if !last.is_empty() {
                let _ = watch.tx.send(LiveEvent::Events(Arc::from(last)));
            }
        }
    }
    Ok(())
}

/// After a reconnect: a watched run whose epoch changed or whose head went back
/// (Redis restarted without its data, or the run expired) is rung, so that its
/// subscriptions end and the clients resubscribe (and get a reset).
pub(super) async fn revalidate(inner: &Inner, c: &MultiplexedConnection) -> Result<(), StoreError> {
    let watched: Vec<(RunId, WatchPos)> = {
        let w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
        w.iter()
            .filter_map(|(r, x)| x.pos.clone().map(|p| (r.clone(), p)))
            .collect()
    };
    if watched.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (r, _) in &watched {
        pipe.cmd("HMGET")
            .arg(inner.keys(r).meta)
            .arg("epoch")
            .arg("head");
    }
    let mut c = c.clone();
    let out: Vec<Vec<Option<String>>> = pipe
        .query_async(&mut c)
        .await
        .map_err(|e| StoreError::Unavailable(format!("redis at {}: {e}", inner.url)))?;
    let mut changed = BTreeSet::new();
    for ((r, pos), meta) in watched.iter().zip(out) {
        let epoch = meta.first().cloned().flatten();
        let head: u64 = meta
            .get(1)
            .cloned()
            .flatten()
            .and_then(|h| h.parse().ok())
            .unwrap_or(0);
        let same = match (&pos.epoch, &epoch) {
            (Some(a), Some(b)) => a == b && head >= pos.cursor,
            (None, _) => true,
            (Some(_), None) => false,
        };
        if !same {
            changed.insert(r.clone());
        }
    }
    if !changed.is_empty() {
        // Redis lost data: maybe its epoch seed too.
        inner.refresh_seed().await?;
        tracing::warn!(
            runs = changed.len(),
            "watched runs lost or re-created in redis; their subscriptions are reset"
        );
        let mut w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
        for r in &changed {
            if let Some(watch) = w.get_mut(r) {
                recreated(watch);
                // The resets open the run again (a new epoch if it is gone): that
                // epoch is the one they were told, not another re-creation.
                watch.seen_epoch = None;
                watch.seen_stored = false;
            }
        }
    }
    Ok(())
}

pub(super) async fn touch_watched(inner: &Inner, c: &mut MultiplexedConnection) {
    let runs: Vec<RunId> = inner
        .watches
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .cloned()
        .collect();
    for r in runs {
        let k = inner.keys(&r);
        let _ = inner
            .scripts
            .touch
            .key(&k.meta)
            .key(&k.stream)
            .key(&k.idem)
            .key(&k.snap)
            .arg(inner.ttl_ms())
            .invoke_async::<Value>(c)
            .await;
    }
}

/// Publishes an `XREAD` answer `[[stream, [entries]], …]`.
pub(super) fn deliver(inner: &Inner, v: Value) -> Result<(), StoreError> {
    let suffix = ":s";
    for per_stream in arr(v)? {
        let mut p = arr(per_stream)?.into_iter();
        let key = p.next().as_ref().and_then(value_str).unwrap_or_default();
        let events = parse_entries(p.next().unwrap_or(Value::Nil))?;
        // `PREFIX:{RUN}:s` → RUN.
        let Some(run) = key
            .strip_suffix(suffix)
            .and_then(|k| k.rsplit_once('{'))
            .and_then(|(_, r)| r.strip_suffix('}'))
            .and_then(|r| RunId::new(r).ok())
        else {
            continue;
        };
        let mut w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
        let Some(watch) = w.get_mut(&run) else {
            continue;
        };
        let Some(pos) = watch.pos.as_mut() else {
            continue;
        };
        if pos.epoch.is_none() && !events.is_empty() {
            // The log came into existence while watched: fix the position again,
            // which checks its epoch against the one subscribers were told (and
            // resets them if it differs) before anything of it is delivered.
            watch.pos = None;
            continue;
        }
        let fresh: Vec<StoredEvent> = events.into_iter().filter(|e| e.seq > pos.cursor).collect();
        if let Some(last) = fresh.last() {
            pos.cursor = last.seq;
            let _ = watch.tx.send(LiveEvent::Events(Arc::from(fresh)));
        }
    }
    Ok(())
}
