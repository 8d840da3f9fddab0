//! The store's connection for commands: one multiplexed connection (to one Redis, or
//! a cluster connection that routes each command to its slot's master),
//! re-established after it broke, so that every command runs on a live connection or
//! fails fast.

use std::time::Duration;

use redis::{
    AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};

use super::StoreError;

/// Where the store's connections go: one Redis, or a Redis Cluster.
#[derive(Clone)]
pub(super) enum Target {
    /// One Redis (or one primary).
    Single(redis::Client, AsyncConnectionConfig),
    /// A Redis Cluster: each command goes to the master of its key's slot (a run's
    /// keys share one slot, see `scripts::Keys`).
    Cluster(ClusterClient),
}

impl Target {
    /// A new connection.
    pub(super) async fn connect(&self) -> Result<Conn, RedisError> {
        match self {
            Self::Single(client, config) => client
                .get_multiplexed_async_connection_with_config(config)
                .await
                .map(Conn::Single),
            Self::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
        }
    }
}

/// A connection to one Redis or to a cluster; commands are written the same way to
/// both (a command or pipeline for a cluster names keys of one slot).
#[derive(Clone)]
pub(super) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A connection that is re-established after it broke: every command either runs on
/// a live connection or fails fast with `Unavailable`.
pub(super) struct Pool {
    target: Target,
    url: String,
    current: tokio::sync::Mutex<PoolState>,
}

pub(super) struct PoolState {
    generation: u64,
    conn: Option<Conn>,
    /// The last failed connect: callers within [`RECONNECT_HOLDOFF`] of it fail at
    /// once instead of queueing up behind one connect timeout each.
    failed: Option<(std::time::Instant, StoreError)>,
}

/// How long a failed connect answers for every caller.
pub(super) const RECONNECT_HOLDOFF: Duration = Duration::from_millis(100);

impl Pool {
    pub(super) fn new(target: Target, url: String) -> Self {
        Self {
            target,
            url,
            current: tokio::sync::Mutex::new(PoolState {
                generation: 0,
                conn: None,
                failed: None,
            }),
        }
    }

    pub(super) fn error(&self, e: &RedisError) -> StoreError {
        StoreError::Unavailable(format!("redis at {}: {e}", self.url))
    }

    /// The current connection and its generation, connecting if there is none.
    pub(super) async fn get(&self) -> Result<(u64, Conn), StoreError> {
        let mut cur = self.current.lock().await;
        if let Some(c) = &cur.conn {
            return Ok((cur.generation, c.clone()));
        }
        if let Some((at, e)) = &cur.failed
            && at.elapsed() < RECONNECT_HOLDOFF
        {
            return Err(e.clone());
        }
        match self.target.connect().await {
            Ok(conn) => {
                cur.generation += 1;
                cur.conn = Some(conn.clone());
                cur.failed = None;
                Ok((cur.generation, conn))
            }
            Err(e) => {
                let e = self.error(&e);
                cur.failed = Some((std::time::Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Drops connection `generation` after an error that may have broken it.
    pub(super) async fn broken(&self, generation: u64, e: &RedisError) {
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_unrecoverable_error()
            || e.is_connection_refusal()
        {
            let mut cur = self.current.lock().await;
            if cur.generation == generation {
                cur.conn = None;
            }
        }
    }

    /// Runs an operation that is safe to repeat (a read, or a write that checks its
    /// own precondition); when the connection turns out to be broken (a dropped
    /// connection, an I/O error) it runs once more on a fresh one, so that a
    /// re-established connection costs a subscription nothing.
    pub(super) async fn retry<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        match self.attempt(&f).await? {
            Ok(v) => Ok(v),
            Err(e) if !e.is_timeout() && (e.is_connection_dropped() || e.is_io_error()) => {
                self.run(f).await
            }
            Err(e) => Err(self.error(&e)),
        }
    }

    /// A command that is safe to repeat (see [`Pool::retry`]).
    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        self.retry(|mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    /// A script that is safe to repeat (see [`Pool::retry`]).
    pub(super) async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.retry(|mut c| async move { inv.invoke_async(&mut c).await })
            .await
    }

    /// Runs one operation on the connection (appends: never repeated, a producer
    /// retries with its idempotency keys).
    pub(super) async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        self.attempt(f).await?.map_err(|e| self.error(&e))
    }

    /// Runs `f` once on the current connection; a failure marks the connection
    /// broken and is handed back.
    async fn attempt<T, F, Fut>(&self, f: F) -> Result<Result<T, RedisError>, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let (generation, conn) = self.get().await?;
        let r = f(conn).await;
        if let Err(e) = &r {
            self.broken(generation, e).await;
        }
        Ok(r)
    }
}
