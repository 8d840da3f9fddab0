//! The store's connection for commands: one multiplexed connection, re-established
//! after it broke, so that every command runs on a live connection or fails fast.

use std::time::Duration;

use redis::{AsyncConnectionConfig, RedisError, aio::MultiplexedConnection};

use super::StoreError;

/// A multiplexed connection that is re-established after it broke: every command
/// either runs on a live connection or fails fast with `Unavailable`.
pub(super) struct Pool {
    client: redis::Client,
    config: AsyncConnectionConfig,
    url: String,
    current: tokio::sync::Mutex<PoolState>,
}

pub(super) struct PoolState {
    generation: u64,
    conn: Option<MultiplexedConnection>,
    /// The last failed connect: callers within [`RECONNECT_HOLDOFF`] of it fail at
    /// once instead of queueing up behind one connect timeout each.
    failed: Option<(std::time::Instant, StoreError)>,
}

/// How long a failed connect answers for every caller.
pub(super) const RECONNECT_HOLDOFF: Duration = Duration::from_millis(100);

impl Pool {
    pub(super) fn new(client: redis::Client, config: AsyncConnectionConfig, url: String) -> Self {
        Self {
            client,
            config,
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
    pub(super) async fn get(&self) -> Result<(u64, MultiplexedConnection), StoreError> {
        let mut cur = self.current.lock().await;
        if let Some(c) = &cur.conn {
            return Ok((cur.generation, c.clone()));
        }
        if let Some((at, e)) = &cur.failed
            && at.elapsed() < RECONNECT_HOLDOFF
        {
            return Err(e.clone());
        }
        match self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
        {
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
        F: Fn(MultiplexedConnection) -> Fut,
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
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        self.attempt(f).await?.map_err(|e| self.error(&e))
    }

    /// Runs `f` once on the current connection; a failure marks the connection
    /// broken and is handed back.
    async fn attempt<T, F, Fut>(&self, f: F) -> Result<Result<T, RedisError>, StoreError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
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
