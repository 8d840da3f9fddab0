//! The node's reader task: `XREAD BLOCK` over the streams of the runs with local
//! subscribers, publishing what any node appended to them (see the store's module
//! docs, "Live fan-out across nodes").

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use redis::{AsyncConnectionConfig, RedisError, Value, aio::MultiplexedConnection};
use runwire_protocol::RunId;

use super::{
    Feed, Inner, LiveEvent, READ_COUNT, StoreError, StoredEvent, Watch, WatchPos, arr,
    parse_entries, pool::Conn, value_str,
};

/// Tells a watch's subscriptions that the run's log was re-created (Redis lost it,
/// or it expired and was opened again): each sends a `reset` with the new log's
/// snapshot (`RW-RESUME-13`).
pub(super) fn recreated(watch: &mut Watch) {
    let _ = watch.tx.send(LiveEvent::Recreated);
    watch.pos = None;
}

/// The node's reader: the live feed of the runs with local subscribers, from one
/// Redis (`XREAD BLOCK`) or a cluster (doorbells on sharded channels, see
/// `shards`), publishing what any node appended to the local subscribers in seq
/// order.
pub(super) async fn reader_loop(inner: Arc<Inner>) {
    match &inner.feed {
        Feed::Xread(client) => {
            let client = client.clone();
            xread_loop(inner, client).await;
        }
        Feed::Shards(nodes) => {
            let nodes = nodes.clone();
            super::shards::shard_loop(inner, nodes).await;
        }
    }
}

/// Forgets the runs without local subscribers (and counts the change in
/// `Inner::members`).
fn prune(inner: &Inner, w: &mut BTreeMap<RunId, Watch>) {
    let before = w.len();
    w.retain(|_, watch| watch.tx.receiver_count() > 0);
    if w.len() != before {
        inner.members.fetch_add(1, Ordering::AcqRel);
    }
}

/// The watched runs whose position is not fixed yet, and the others with their
/// cursors; runs without local subscribers are forgotten first.
pub(super) fn watched_runs(inner: &Inner) -> (Vec<RunId>, Vec<(RunId, u64)>) {
    let mut w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
    prune(inner, &mut w);
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
}

/// The watched runs whose position is not fixed yet, or `None` when the store stops.
/// Runs without local subscribers are forgotten first; while no run has any, it drops
/// the reader's connection `conn` and waits for one. It copies only the pending runs'
/// ids: a node may watch tens of thousands of runs, and this runs once per read.
pub(super) async fn follow<C>(inner: &Inner, conn: &mut Option<C>) -> Option<Vec<RunId>> {
    loop {
        if inner.closed.load(Ordering::Acquire) {
            return None;
        }
        {
            let mut w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
            prune(inner, &mut w);
            if !w.is_empty() {
                return Some(
                    w.iter()
                        .filter(|(_, x)| x.pos.is_none())
                        .map(|(r, _)| r.clone())
                        .collect(),
                );
            }
        }
        *conn = None;
        tokio::select! {
            () = inner.wake.notified() => {}
            () = inner.stop.notified() => return None,
        }
    }
}

/// Waits `backoff` unless the store stops first (then false).
pub(super) async fn pause(inner: &Inner, backoff: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(backoff) => true,
        () = inner.stop.notified() => false,
    }
}

/// After the feed's connection was (re-)established: Redis may have restarted
/// without its data (and its seed), so the seed is read again and every watched
/// run's log is checked to be the one that was being read.
pub(super) async fn after_connect(inner: &Inner, c: &Conn, failures: u32) {
    if failures > 0 {
        tracing::info!(url = %inner.url, "redis reachable again; live feed resumes from each run's cursor");
    }
    if let Err(e) = inner.refresh_seed().await {
        tracing::warn!(error = %e, "reading the epoch seed after reconnect failed");
    }
    if let Err(e) = revalidate(inner, c).await {
        tracing::warn!(error = %e, "checking watched runs after reconnect failed");
    }
}

/// The feed cannot connect: the subscriptions are told (`store_unavailable`), and the
/// reader waits a growing backoff. False when the store stops meanwhile.
pub(super) async fn unreachable(inner: &Inner, failures: u32, e: &StoreError) -> bool {
    if failures == 1 {
        tracing::warn!(url = %inner.url, error = %e, "redis unreachable: live subscriptions are told to reconnect");
    }
    inner.ring_unavailable();
    pause(
        inner,
        Duration::from_millis((50u64 << failures.min(5)).min(1_000)),
    )
    .await
}

/// The reader on one Redis: `XREAD BLOCK` over the watched runs' streams.
async fn xread_loop(inner: Arc<Inner>, client: redis::Client) {
    let mut conn: Option<(MultiplexedConnection, i64)> = None;
    let mut failures: u32 = 0;
    let mut read_errors: u32 = 0;
    let mut last_touch = tokio::time::Instant::now();
    loop {
        let Some(pending) = follow(&inner, &mut conn).await else {
            return;
        };
        let (c, id) = match conn.take() {
            Some(c) => c,
            None => match connect_reader(&inner, &client).await {
                Ok(c) => {
                    after_connect(&inner, &Conn::Single(c.0.clone()), failures).await;
                    failures = 0;
                    c
                }
                Err(e) => {
                    failures += 1;
                    if !unreachable(&inner, failures, &e).await {
                        return;
                    }
                    continue;
                }
            },
        };
        let shared = Conn::Single(c.clone());
        if !pending.is_empty()
            && let Err(e) = init_positions(&inner, &shared, &pending).await
        {
            tracing::warn!(error = %e, "redis reader lost its connection");
            failures += 1;
            continue;
        }
        if inner.opts.ttl_secs > 0
            && last_touch.elapsed() >= Duration::from_secs((inner.opts.ttl_secs / 4).max(1))
        {
            last_touch = tokio::time::Instant::now();
            touch_watched(&inner, &shared).await;
        }
        let (_, active) = watched_runs(&inner);
        if active.is_empty() {
            conn = Some((c, id));
            continue;
        }
        let Some(result) = blocking_read(&inner, c.clone(), id, &active).await else {
            return;
        };
        match result {
            Ok(v) => {
                read_errors = 0;
                match deliver(&inner, v) {
                    Ok(born) => adopt(&inner, &shared, born).await,
                    Err(e) => tracing::error!(error = %e, "unreadable stream entries"),
                }
                conn = Some((c, id));
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis reader lost its connection; reconnecting");
                failures += 1;
                read_errors += 1;
                // Not a one-off drop: back off (an error that reconnecting does not
                // cure must not spin).
                if read_errors > 1
                    && !pause(
                        &inner,
                        Duration::from_millis((25u64 << read_errors.min(6)).min(1_000)),
                    )
                    .await
                {
                    return;
                }
                // Try again at once; ring the subscriptions only if that fails.
                if failures > 1 {
                    inner.ring_unavailable();
                }
            }
        }
    }
}

/// One `XREAD BLOCK` over the `active` runs' streams from their cursors, interrupted
/// with `CLIENT UNBLOCK` when a run is newly watched; `None` when the store stops.
async fn blocking_read(
    inner: &Inner,
    mut c: MultiplexedConnection,
    id: i64,
    active: &[(RunId, u64)],
) -> Option<Result<Value, RedisError>> {
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(inner.opts.block_ms)
        .arg("STREAMS");
    for (r, _) in active {
        cmd.arg(inner.keys(r).stream);
    }
    for (_, cursor) in active {
        cmd.arg(format!("{cursor}-0"));
    }
    let read = cmd.query_async::<Value>(&mut c);
    tokio::pin!(read);
    let mut unblocking = false;
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
    let retry = tokio::time::sleep_until(far);
    tokio::pin!(retry);
    loop {
        tokio::select! {
            r = &mut read => return Some(r),
            () = inner.wake.notified(), if !unblocking => {
                unblocking = true;
                retry.as_mut().reset(tokio::time::Instant::now());
            }
            () = &mut retry, if unblocking => {
                // The read may not have reached Redis yet: retry the unblock until it
                // interrupted the read (or the read returned).
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
            () = inner.stop.notified() => return None,
        }
    }
}

pub(super) async fn connect_reader(
    inner: &Inner,
    client: &redis::Client,
) -> Result<(MultiplexedConnection, i64), StoreError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(inner.opts.connect_timeout_ms)))
        .set_response_timeout(Some(Duration::from_millis(
            inner.opts.block_ms + inner.opts.timeout_ms,
        )));
    let err = |e: RedisError| StoreError::Unavailable(format!("redis at {}: {e}", inner.url));
    let mut c = client
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
    c: &Conn,
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
    // One pipeline per run (a cluster takes no pipeline over several slots), all at
    // once on the multiplexed connection.
    let reads = runs.iter().map(|r| {
        let k = inner.keys(r);
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(&k.meta).arg("epoch").arg("head");
        pipe.cmd("XREVRANGE")
            .arg(&k.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let mut c = c.clone();
        async move { pipe.query_async::<Vec<Value>>(&mut c).await }
    });
    let out: Vec<Value> = futures_util::future::try_join_all(reads)
        .await
        .map_err(err)?
        .into_iter()
        .flatten()
        .collect();
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
pub(super) async fn revalidate(inner: &Inner, c: &Conn) -> Result<(), StoreError> {
    let watched: Vec<(RunId, WatchPos)> = {
        let w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
        w.iter()
            .filter_map(|(r, x)| x.pos.clone().map(|p| (r.clone(), p)))
            .collect()
    };
    if watched.is_empty() {
        return Ok(());
    }
    let reads = watched.iter().map(|(r, _)| {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(inner.keys(r).meta).arg("epoch").arg("head");
        let mut c = c.clone();
        async move { cmd.query_async::<Vec<Option<String>>>(&mut c).await }
    });
    let out = futures_util::future::try_join_all(reads)
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

/// The runs this node has a watch on.
pub(super) fn watched<B: FromIterator<RunId>>(inner: &Inner) -> B {
    inner
        .watches
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .cloned()
        .collect()
}

pub(super) async fn touch_watched(inner: &Inner, c: &Conn) {
    let mut c = c.clone();
    let runs: Vec<RunId> = watched(inner);
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
            .invoke_async::<Value>(&mut c)
            .await;
    }
}

/// Runs whose log came into existence while watched, with the first events read
/// of it: delivered by [`adopt`] once the log's epoch is checked.
pub(super) type Born = Vec<(RunId, Vec<StoredEvent>)>;

/// Publishes an `XREAD` answer `[[stream, [entries]], …]`.
pub(super) fn deliver(inner: &Inner, v: Value) -> Result<Born, StoreError> {
    let mut born = Vec::new();
    for per_stream in arr(v)? {
        let mut p = arr(per_stream)?.into_iter();
        let key = p.next().as_ref().and_then(value_str).unwrap_or_default();
        let events = parse_entries(p.next().unwrap_or(Value::Nil))?;
        // `PREFIX:{RUN}:s` → RUN.
        let Some(run) = run_of(&key, ":s") else {
            continue;
        };
        if let Some(events) = publish_run(inner, &run, events) {
            born.push((run, events));
        }
    }
    Ok(born)
}

/// The run of a key or channel `PREFIX:{RUN}SUFFIX`.
pub(super) fn run_of(key: &str, suffix: &str) -> Option<RunId> {
    key.strip_suffix(suffix)
        .and_then(|k| k.rsplit_once('{'))
        .and_then(|(_, r)| r.strip_suffix('}'))
        .and_then(|r| RunId::new(r).ok())
}

/// Publishes events read of a run's stream to its local subscribers (those above the
/// reader's cursor, which moves on). Events of a log that came into existence while
/// watched are handed back for [`adopt`].
pub(super) fn publish_run(
    inner: &Inner,
    run: &RunId,
    events: Vec<StoredEvent>,
) -> Option<Vec<StoredEvent>> {
    let mut w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
    let watch = w.get_mut(run)?;
    let pos = watch.pos.as_mut()?;
    if pos.epoch.is_none() && !events.is_empty() {
        return Some(events);
    }
    let fresh: Vec<StoredEvent> = events.into_iter().filter(|e| e.seq > pos.cursor).collect();
    if let Some(last) = fresh.last() {
        pos.cursor = last.seq;
        let _ = watch.tx.send(LiveEvent::Events(Arc::from(fresh)));
    }
    None
}

/// Delivers the first events of logs that came into existence while watched, once
/// the log's epoch is the one the run's subscribers were told (the epoch a run
/// without a log is told, `RW-SEC-15`): the events go to every subscriber from the
/// feed, as on a single node, instead of each subscriber reading them from Redis. A
/// log with another epoch (re-created meanwhile) resets the subscriptions
/// (`RW-RESUME-13`) and its position is fixed again.
pub(super) async fn adopt(inner: &Inner, c: &Conn, born: Born) {
    if born.is_empty() {
        return;
    }
    let reads = born.iter().map(|(r, _)| {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(inner.keys(r).meta).arg("epoch");
        let mut c = c.clone();
        async move { cmd.query_async::<Option<String>>(&mut c).await }
    });
    let epochs = futures_util::future::join_all(reads).await;
    let mut w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
    for ((run, events), epoch) in born.into_iter().zip(epochs) {
        let Some(watch) = w.get_mut(&run) else {
            continue;
        };
        if watch.pos.as_ref().is_none_or(|p| p.epoch.is_some()) {
            continue;
        }
        let Ok(Some(epoch)) = epoch else {
            // Unreadable, or gone again: fix the position afresh.
            watch.pos = None;
            continue;
        };
        match &watch.seen_epoch {
            Some(seen) if *seen != epoch => {
                recreated(watch);
                watch.seen_epoch = Some(epoch);
                watch.seen_stored = true;
                continue;
            }
            _ => {
                watch.seen_epoch = Some(epoch.clone());
                watch.seen_stored = true;
            }
        }
        let Some(pos) = watch.pos.as_mut() else {
            continue;
        };
        pos.epoch = Some(epoch);
        let fresh: Vec<StoredEvent> = events.into_iter().filter(|e| e.seq > pos.cursor).collect();
        if let Some(last) = fresh.last() {
            pos.cursor = last.seq;
            let _ = watch.tx.send(LiveEvent::Events(Arc::from(fresh)));
        }
    }
}
