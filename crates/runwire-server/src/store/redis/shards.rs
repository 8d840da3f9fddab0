//! The node's reader on a Redis Cluster. A cluster refuses a command whose keys lie
//! in several slots, so one `XREAD BLOCK` over every watched stream is impossible:
//! instead each append script rings the run's doorbell, its new head on the run's
//! sharded pub/sub channel `PREFIX:{RUN}:c` (`SPUBLISH`, in the slot of the run's
//! keys, so it goes only to the shard's master and its subscribers). The reader
//! subscribes (`SSUBSCRIBE`) to the channels of the runs it watches, and on a
//! doorbell above its cursor reads the stream (`XRANGE`) from that cursor. The
//! stream stays the source of truth: a doorbell lost while a connection was down
//! costs nothing, because after every reconnect, and every `block_ms` while idle,
//! the reader reads every watched stream from its cursor.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use redis::{PushInfo, PushKind, RedisError, Value, cluster_async::ClusterConnection};
use runwire_protocol::RunId;
use tokio::sync::mpsc;

use super::{
    Inner, READ_COUNT, StoreError, cluster_client, parse_entries,
    pool::Conn,
    reader::{
        Born, adopt, after_connect, follow, init_positions, publish_run, run_of, touch_watched,
        unreachable, watched,
    },
    value_str,
};

/// The reader's cluster connection and the receiver of its push messages.
struct Shards {
    conn: ClusterConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    /// The runs whose channels this connection subscribed to.
    subscribed: BTreeSet<RunId>,
    /// `Inner::members` when `subscribed` was last brought in line with the watched
    /// runs (`u64::MAX`: never).
    synced: u64,
    /// When a node connection last dropped or a channel was moved away (a failover, a
    /// resharding): the client subscribes again on its own, and doorbells rung in
    /// between are lost, so every stream is read once its subscriptions are back.
    lost_at: Option<tokio::time::Instant>,
}

/// How long after a lost connection a subscription confirmation makes the reader
/// read every watched stream.
const RESUBSCRIBE_WINDOW: Duration = Duration::from_secs(10);

/// Marks the run of a doorbell above the reader's cursor dirty. True for a push that
/// means doorbells may have been lost: a dropped node connection, a channel moved
/// away from its node, a subscription restored after either.
fn on_push(inner: &Inner, s: &mut Shards, p: PushInfo, dirty: &mut BTreeSet<RunId>) -> bool {
    match p.kind {
        PushKind::SMessage => {
            let mut it = p.data.iter();
            let (Some(chan), Some(head)) =
                (it.next().and_then(value_str), it.next().and_then(value_str))
            else {
                return false;
            };
            let Some(run) = run_of(&chan, ":c") else {
                return false;
            };
            let head: u64 = head.parse().unwrap_or(u64::MAX);
            let w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
            if w.get(&run)
                .and_then(|x| x.pos.as_ref())
                .is_some_and(|pos| head > pos.cursor)
            {
                dirty.insert(run);
            }
            false
        }
        PushKind::Disconnection => {
            s.lost_at = Some(tokio::time::Instant::now());
            true
        }
        PushKind::SUnsubscribe => {
            // One this reader asked for is of a run it no longer follows.
            let ours = p
                .data
                .first()
                .and_then(value_str)
                .and_then(|c| run_of(&c, ":c"))
                .is_some_and(|r| s.subscribed.contains(&r));
            if ours {
                s.lost_at = Some(tokio::time::Instant::now());
            }
            ours
        }
        PushKind::SSubscribe => s
            .lost_at
            .is_some_and(|at| at.elapsed() < RESUBSCRIBE_WINDOW),
        _ => false,
    }
}

/// The reader on a cluster (module docs).
pub(super) async fn shard_loop(inner: Arc<Inner>, nodes: Vec<String>) {
    let mut shards: Option<Shards> = None;
    let mut dirty: BTreeSet<RunId> = BTreeSet::new();
    let mut failures: u32 = 0;
    let mut last_touch = tokio::time::Instant::now();
    loop {
        let Some(pending) = follow(&inner, &mut shards).await else {
            return;
        };
        let mut s = match shards.take() {
            Some(s) => s,
            None => match connect(&inner, &nodes).await {
                Ok(s) => {
                    after_connect(&inner, &Conn::Cluster(s.conn.clone()), failures).await;
                    failures = 0;
                    // Doorbells rung while no connection listened are lost: read
                    // every watched stream from its cursor.
                    dirty.extend(watched::<Vec<RunId>>(&inner));
                    s
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
        if let Err(e) = step(&inner, &mut s, &pending, &mut dirty).await {
            tracing::warn!(error = %e, "redis cluster reader lost its connection; reconnecting");
            failures += 1;
            if failures > 1 {
                inner.ring_unavailable();
                if !super::reader::pause(&inner, Duration::from_millis(50)).await {
                    return;
                }
            }
            continue;
        }
        if inner.opts.ttl_secs > 0
            && last_touch.elapsed() >= Duration::from_secs((inner.opts.ttl_secs / 4).max(1))
        {
            last_touch = tokio::time::Instant::now();
            touch_watched(&inner, &Conn::Cluster(s.conn.clone())).await;
        }
        if dirty.is_empty() {
            match wait(&inner, &mut s, &mut dirty).await {
                None => return,
                // The connection's push channel ended: connect again.
                Some(false) => continue,
                Some(true) => {}
            }
        }
        shards = Some(s);
    }
}

/// Connects the reader with a push channel for the doorbells.
async fn connect(inner: &Inner, nodes: &[String]) -> Result<Shards, StoreError> {
    let (tx, pushes) = mpsc::unbounded_channel();
    let client = cluster_client(nodes, &inner.opts, Some(tx))?;
    let conn = client
        .get_async_connection()
        .await
        .map_err(|e| StoreError::Unavailable(format!("redis cluster {}: {e}", inner.url)))?;
    Ok(Shards {
        conn,
        pushes,
        subscribed: BTreeSet::new(),
        synced: u64::MAX,
        lost_at: None,
    })
}

/// One step: follows the watched runs with subscriptions (before their position is
/// read, so that no doorbell after that read is missed), fixes the positions of new
/// runs, and reads the streams whose doorbell rang.
async fn step(
    inner: &Inner,
    s: &mut Shards,
    pending: &[RunId],
    dirty: &mut BTreeSet<RunId>,
) -> Result<(), StoreError> {
    let err = |e: RedisError| StoreError::Unavailable(format!("redis cluster {}: {e}", inner.url));
    // Bring the channel subscriptions in line with the watched runs, only when that
    // set changed: a node may watch tens of thousands of runs, and this runs once per
    // doorbell.
    if inner.members.load(Ordering::Acquire) != s.synced {
        let (watched, members): (BTreeSet<RunId>, u64) = {
            let w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
            (
                w.keys().cloned().collect(),
                inner.members.load(Ordering::Acquire),
            )
        };
        let gone: Vec<String> = s
            .subscribed
            .difference(&watched)
            .map(|r| inner.keys(r).chan)
            .collect();
        // Forgotten first: the confirmations of these are not a moved channel.
        s.subscribed.retain(|r| watched.contains(r));
        for chan in gone {
            s.conn.sunsubscribe(&chan).await.map_err(err)?;
        }
        let new: Vec<RunId> = watched.difference(&s.subscribed).cloned().collect();
        for r in new {
            s.conn.ssubscribe(inner.keys(&r).chan).await.map_err(err)?;
            s.subscribed.insert(r);
        }
        s.synced = members;
    }
    let conn = Conn::Cluster(s.conn.clone());
    if !pending.is_empty() {
        init_positions(inner, &conn, pending).await?;
    }
    dirty.retain(|r| s.subscribed.contains(r));
    if !dirty.is_empty() {
        let born = catch_up(inner, &conn, dirty).await?;
        adopt(inner, &conn, born).await;
    }
    Ok(())
}

/// Reads every dirty run's stream from the reader's cursor (`READ_COUNT` entries per
/// run and step; a run with more stays dirty) and publishes what it finds.
async fn catch_up(
    inner: &Inner,
    conn: &Conn,
    dirty: &mut BTreeSet<RunId>,
) -> Result<Born, StoreError> {
    let cursors: BTreeMap<RunId, u64> = {
        let w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
        dirty
            .iter()
            .filter_map(|r| Some((r.clone(), w.get(r)?.pos.as_ref()?.cursor)))
            .collect()
    };
    dirty.clear();
    let reads = cursors.iter().map(|(r, cursor)| {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(inner.keys(r).stream)
            .arg(format!("{}-0", cursor + 1))
            .arg("+")
            .arg("COUNT")
            .arg(READ_COUNT);
        let mut c = conn.clone();
        async move { cmd.query_async::<Value>(&mut c).await }
    });
    let answers = futures_util::future::try_join_all(reads)
        .await
        .map_err(|e| StoreError::Unavailable(format!("redis cluster {}: {e}", inner.url)))?;
    let mut born = Vec::new();
    for ((run, _), v) in cursors.into_iter().zip(answers) {
        let events = parse_entries(v)?;
        if events.len() >= READ_COUNT {
            dirty.insert(run.clone());
        }
        if let Some(events) = publish_run(inner, &run, events) {
            born.push((run, events));
        }
    }
    Ok(born)
}

/// Waits for a doorbell, a newly watched run, `block_ms` (then every watched run is
/// read, in case a doorbell was lost) or the store's end (then `None`); `Some(false)`
/// when the connection's push channel ended.
async fn wait(inner: &Inner, s: &mut Shards, dirty: &mut BTreeSet<RunId>) -> Option<bool> {
    let all = |dirty: &mut BTreeSet<RunId>| {
        let w = inner.watches.lock().unwrap_or_else(|e| e.into_inner());
        dirty.extend(w.keys().cloned());
    };
    tokio::select! {
        p = s.pushes.recv() => {
            let Some(p) = p else {
                all(dirty);
                return Some(false);
            };
            let mut lost = on_push(inner, s, p, dirty);
            while let Ok(p) = s.pushes.try_recv() {
                lost |= on_push(inner, s, p, dirty);
            }
            if lost {
                all(dirty);
            }
        }
        () = inner.wake.notified() => {}
        () = tokio::time::sleep(Duration::from_millis(inner.opts.block_ms)) => all(dirty),
        () = inner.stop.notified() => return None,
    }
    Some(true)
}
