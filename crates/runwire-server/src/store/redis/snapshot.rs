//! Snapshots and retention: folding a run's snapshot from the stored one plus the
//! stream after it, storing it back, and trimming the stream behind it (see the
//! store's module docs, "Snapshots and retention").

use std::sync::Arc;

use redis::Value;
use runwire_protocol::{Epoch, Event, RunId, RunSnapshot};

use super::{
    Inner, Keys, READ_COUNT, RetentionConfig, SNAPSHOT_CACHE, StoreError, arr, corrupt, epoch_of,
    parse_entries, s_at, u_at,
};

impl Inner {
    /// Folds events this node just appended into its cached snapshot of the run when
    /// they directly follow it (or start the log), so that neither snapshot reads nor
    /// compaction need to read and decode them again.
    pub(super) fn fold_appended(&self, run_id: &RunId, epoch: &Epoch, events: &[Event]) {
        let Some(first) = events.first().map(|e| e.seq) else {
            return;
        };
        let mut cache = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        let follows = cache
            .get(run_id)
            .is_some_and(|s| s.epoch == *epoch && s.as_of_seq + 1 == first);
        if !follows {
            if first != 1 {
                return;
            }
            if cache.len() >= SNAPSHOT_CACHE && !cache.contains_key(run_id) {
                cache.clear();
            }
            cache.insert(
                run_id.clone(),
                RunSnapshot::empty(run_id.clone(), epoch.clone()),
            );
        }
        if let Some(s) = cache.get_mut(run_id) {
            for e in events {
                s.apply(e);
            }
        }
    }

    /// Folds and stores the snapshot of a run in the background (one at a time per
    /// run and node), which also trims its stream to the retention.
    pub(super) fn spawn_compaction(self: &Arc<Self>, run_id: &RunId) {
        if !self
            .compacting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run_id.clone())
        {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.compacting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(run_id);
            return;
        };
        let me = Arc::clone(self);
        let run_id = run_id.clone();
        handle.spawn(async move {
            if let Err(e) = me.snapshot(&run_id, true).await {
                tracing::warn!(run_id = %run_id, error = %e, "storing the snapshot failed; retried on a later append");
            }
            me.compacting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&run_id);
        });
    }

    /// Folds the run's snapshot at its current head (`RW-SNAP-1`); with `store`, or
    /// when it is `snapshot_every` events past the stored one, stores it back.
    pub(super) async fn snapshot(
        &self,
        run_id: &RunId,
        store: bool,
    ) -> Result<Option<RunSnapshot>, StoreError> {
        let k = self.keys(run_id);
        for _attempt in 0..5 {
            let cached = self
                .snapshots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(run_id)
                .cloned();
            let (have_epoch, have_seq) = cached.as_ref().map_or((String::new(), 0), |s| {
                (s.epoch.as_str().to_owned(), s.as_of_seq)
            });
            let mut inv = self.scripts.snap_read.prepare_invoke();
            inv.key(&k.meta)
                .key(&k.stream)
                .key(&k.snap)
                .arg(have_epoch)
                .arg(have_seq)
                .arg(READ_COUNT);
            let v: Value = self.pool.invoke(&inv).await?;
            let a = arr(v)?;
            let mode = s_at(&a, 0)?;
            if mode == "none" {
                if self.is_watched(run_id) {
                    let info = self.open_run(run_id).await?;
                    return Ok(Some(RunSnapshot::empty(run_id.clone(), info.epoch)));
                }
                return Ok(None);
            }
            let epoch = epoch_of(s_at(&a, 1)?)?;
            let head = u_at(&a, 2)?;
            let from = u_at(&a, 3)?;
            let mut snap = if mode == "cached" {
                match cached {
                    Some(s) if s.epoch == epoch && s.as_of_seq == from => s,
                    _ => continue,
                }
            } else {
                let json = s_at(&a, 4)?;
                if json.is_empty() {
                    if from != 0 {
                        return Err(corrupt(format_args!(
                            "run {run_id} has no stored snapshot at seq {from}"
                        )));
                    }
                    RunSnapshot::empty(run_id.clone(), epoch.clone())
                } else {
                    let s: RunSnapshot = serde_json::from_str(&json)
                        .map_err(|e| corrupt(format_args!("snapshot of {run_id}: {e}")))?;
                    if s.as_of_seq != from || s.epoch != epoch {
                        continue;
                    }
                    s
                }
            };
            let stored_at = if mode == "stored" { from } else { 0 };
            let mut chunk = parse_entries(a.into_iter().nth(5).unwrap_or(Value::Nil))?;
            let mut complete = true;
            loop {
                for e in &chunk {
                    if e.seq != snap.as_of_seq + 1 {
                        complete = false;
                        break;
                    }
                    let ev = e.json.decode().map_err(|err| {
                        corrupt(format_args!("event {} of {run_id}: {err}", e.seq))
                    })?;
                    snap.apply(&ev);
                }
                if !complete || snap.as_of_seq >= head {
                    break;
                }
                chunk = self
                    .read(run_id, snap.as_of_seq, head, READ_COUNT)
                    .await
                    .unwrap_or_default();
                if chunk.is_empty() {
                    complete = false;
                    break;
                }
            }
            if !complete {
                // Trimmed or re-created meanwhile: start over from the stored snapshot.
                self.snapshots
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(run_id);
                continue;
            }
            {
                let mut cache = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= SNAPSHOT_CACHE && !cache.contains_key(run_id) {
                    cache.clear();
                }
                let keep = cache
                    .get(run_id)
                    .is_some_and(|c| c.epoch == snap.epoch && c.as_of_seq > snap.as_of_seq);
                if !keep {
                    cache.insert(run_id.clone(), snap.clone());
                }
            }
            let behind = if mode == "stored" {
                snap.as_of_seq - stored_at
            } else {
                // Unknown: the cached path does not read the stored position.
                0
            };
            if store || behind >= self.snapshot_every(run_id) {
                self.store_snapshot(&k, &snap).await?;
            }
            return Ok(Some(snap));
        }
        Err(StoreError::Unavailable(format!(
            "the log of run {run_id} kept changing while its snapshot was read"
        )))
    }

    /// Events the run's stream keeps at least (0: all): its `[retention]` rule, else
    /// the URL's `retain_events`.
    pub(super) fn retain(&self, run_id: &RunId) -> u64 {
        self.retention
            .explicit_for(run_id)
            .unwrap_or(self.opts.retain_events)
    }

    /// Events between stored snapshots (each also trims): `snapshot_every`, or the
    /// retention step of an explicit retention when that is shorter.
    pub(super) fn snapshot_every(&self, run_id: &RunId) -> u64 {
        match self.retention.explicit_for(run_id) {
            Some(r) if r > 0 => self.opts.snapshot_every.min(RetentionConfig::step(r)),
            _ => self.opts.snapshot_every,
        }
    }

    pub(super) async fn store_snapshot(
        &self,
        k: &Keys,
        snap: &RunSnapshot,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(snap).map_err(corrupt)?;
        let mut inv = self.scripts.snap_write.prepare_invoke();
        inv.key(&k.meta)
            .key(&k.snap)
            .key(&k.stream)
            .key(&k.idem)
            .arg(snap.epoch.as_str())
            .arg(snap.as_of_seq)
            .arg(json)
            .arg(self.retain(&snap.run_id))
            .arg(10 * READ_COUNT);
        let _: Value = self.pool.invoke(&inv).await?;
        Ok(())
    }
}
