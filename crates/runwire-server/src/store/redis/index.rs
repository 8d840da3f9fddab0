//! The run index: the ids of the runs with a log, for listings (spec §4.7,
//! `RW-INGEST-26`).
//!
//! A sorted set `PREFIX:{#runs}` holds every run id with score 0, so `ZRANGE … BYLEX`
//! walks them in byte order (Redis compares members with `memcmp`). Its hash tag
//! (`#` is no character of a run id) gives it a slot of its own, so it works on a
//! Redis Cluster; no script names it together with a run's keys.
//!
//! Writes. A node adds a run to the index when the append script tells it the run
//! has no log, before it runs the script that creates the log, and again once that
//! script succeeded. The first write makes the index hold every log even when the
//! node dies between the two steps; the second closes the race with the clean-up
//! below. A run appended to afterwards is already in the index: only a log's
//! creation costs the extra round trips.
//!
//! Clean-up. A run's keys expire `ttl_secs` after its last append and then leave a
//! member without a log. A listing that meets one removes it, then checks whether
//! the log exists after all (created meanwhile) and puts it back if so; since an
//! appender adds the run again after creating its log, a run with a log is never
//! left out of the index.

use runwire_protocol::RunId;

use super::{Inner, reply::epoch_of};
use crate::store::{ListedRun, RunInfo, StoreError};

impl Inner {
    /// The index key.
    fn index_key(&self) -> String {
        format!("{}:{{#runs}}", self.opts.prefix)
    }

    /// Adds `run_id` to the index (idempotent).
    pub(super) async fn index_run(&self, run_id: &RunId) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(self.index_key()).arg(0).arg(run_id.as_str());
        let _: i64 = self.pool.query(&cmd).await?;
        Ok(())
    }

    /// The runs with a log whose id starts with `prefix` and is greater than
    /// `after`, at most `limit` (see the module docs).
    pub(super) async fn list_runs(
        &self,
        prefix: &str,
        after: Option<&RunId>,
        limit: usize,
    ) -> Result<Vec<ListedRun>, StoreError> {
        let key = self.index_key();
        // Run ids are ASCII and every character they may hold sorts below 0x7F.
        let upper = if prefix.is_empty() {
            "+".to_owned()
        } else {
            format!("({prefix}\u{7f}")
        };
        let mut from = match after {
            Some(a) if a.as_str() >= prefix => format!("({a}"),
            _ => format!("[{prefix}"),
        };
        let mut out = Vec::new();
        while out.len() < limit {
            let want = limit - out.len();
            let mut cmd = redis::cmd("ZRANGE");
            cmd.arg(&key)
                .arg(&from)
                .arg(&upper)
                .arg("BYLEX")
                .arg("LIMIT")
                .arg(0)
                .arg(want);
            let ids: Vec<String> = self.pool.query(&cmd).await?;
            let Some(last) = ids.last() else { break };
            from = format!("({last}");
            let fetched = ids.len();
            let found =
                futures_util::future::try_join_all(ids.into_iter().map(|id| self.listed(&key, id)))
                    .await?;
            out.extend(found.into_iter().flatten());
            if fetched < want {
                break;
            }
        }
        Ok(out)
    }

    /// The position of the indexed run `id`, or `None` (and the member cleaned up)
    /// when it has no log.
    async fn listed(&self, key: &str, id: String) -> Result<Option<ListedRun>, StoreError> {
        let Ok(run_id) = RunId::new(id.as_str()) else {
            // Not a run id: nothing this store wrote; leave it alone.
            return Ok(None);
        };
        let k = self.keys(&run_id);
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&k.meta).arg("epoch").arg("head").arg("term");
        let v: Vec<Option<String>> = self.pool.query(&cmd).await?;
        let mut it = v.into_iter();
        if let (Some(Some(epoch)), head, term) = (it.next(), it.next(), it.next()) {
            let head_seq = head.flatten().and_then(|h| h.parse().ok()).unwrap_or(0);
            if head_seq > 0 {
                return Ok(Some(ListedRun {
                    run_id,
                    info: RunInfo {
                        epoch: epoch_of(epoch)?,
                        head_seq,
                        terminal: term.flatten().as_deref() == Some("1"),
                    },
                }));
            }
            return Ok(None);
        }
        // No head: the log expired (or is being created right now; its appender
        // adds it again once created). Remove, then look again.
        let mut rem = redis::cmd("ZREM");
        rem.arg(key).arg(&id);
        let _: i64 = self.pool.query(&rem).await?;
        let mut exists = redis::cmd("EXISTS");
        exists.arg(&k.meta).arg(&k.stream);
        let n: i64 = self.pool.query(&exists).await?;
        if n > 0 {
            self.index_run(&run_id).await?;
        }
        Ok(None)
    }
}
