//! The Runwire reference server: the WebSocket stream (`GET /v1/stream`) and the
//! producer HTTP API on one port, over a pluggable durable event store.
//!
//! It implements the server side of the Runwire v1 specification (`spec/protocol.md`):
//! hello deadline and version negotiation, subscriptions with cursor and epoch, replay
//! then live without gap or duplicate, `reset` with a snapshot, batching with
//! immediate flush, heartbeat, slow-consumer and rate limits, every bad-input rule,
//! bearer-token auth with per-run authorization, and graceful shutdown.
//!
//! # Embedding
//!
//! ```no_run
//! # async fn demo() -> Result<(), runwire_server::ServerError> {
//! use std::sync::Arc;
//! use runwire_server::{MemoryStore, Server, ServerConfig};
//!
//! let mut config = ServerConfig::default();
//! config.listen = "127.0.0.1:0".parse().unwrap(); // port 0: pick a free port
//! config.heartbeat_interval_ms = 200;              // short timers for tests
//! let server = Server::bind(config, Arc::new(MemoryStore::new())).await?;
//! println!("stream at {}, ingest at {}", server.ws_url(), server.http_url());
//! server.shutdown().await; // tells clients to reconnect, closes, flushes the store
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /v1/stream` | WebSocket stream (spec §5–§16) |
//! | `POST /v1/runs/{run_id}/events` | append events; answers once durable (spec §4.2) |
//! | `GET /v1/runs/{run_id}` | the run's folded snapshot (spec §4.3) |
//! | `GET /v1/runs/{run_id}/events?after_seq=&limit=` | history (spec §4.4) |
//! | `GET /v1/runs?prefix=&after=&limit=` | the runs by id prefix (spec §4.7) |
//! | `GET /healthz` | `{"status":"ok"}` |
//! | `GET /metrics` | Prometheus text |
//! | `GET /`, `GET /_page/…` | the live run page (not part of the protocol; `page = false` turns it off) |
//!
//! # Stores
//!
//! [`EventStore`] is the backend trait; [`SqliteStore`] (durable, group commit) is the
//! default of `runwire serve`, [`MemoryStore`] serves tests.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    routing::{get, post},
};
use tokio::sync::watch;

mod admission;
pub mod auth;
pub mod config;
mod deadline;
mod http;
mod identity;
mod linger;
pub mod metrics;
mod origin;
mod outbound;
mod page;
mod state;
pub mod store;
mod subscription;
mod tls;
mod ws;

pub use auth::{Authenticator, Principal};
pub use config::{
    AuthConfig, ConfigError, RetentionConfig, RetentionRule, Role, ServerConfig, SqliteConfig,
    StaticToken, TlsConfig,
};
pub use metrics::Metrics;
pub use store::{EventStore, MemoryStore, SqliteStore, StoreError, open_store};
#[cfg(feature = "dev-certs")]
pub use tls::{DevCertificates, dev_certificates};
pub use tls::{TlsError, provider as tls_provider};

use state::{AppState, InFlight};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Auth is off and the listen address is not loopback.
    #[error(
        "refusing to listen on {0} without authentication: configure auth tokens or a JWT secret, \
         or listen on a loopback address (or set allow_unauthenticated_public)"
    )]
    PublicWithoutAuth(SocketAddr),
    /// The TLS certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The kernel send buffer of a connection's socket: `socket_send_buffer_bytes` when
/// set, else a quarter of the slow-consumer byte bound, between 16 KiB and 1 MiB, so
/// that most of what a stalled client has not read waits in the server's own queue,
/// where its bytes and age are measured (`RW-SLOW-1`). One connection's throughput is
/// at most this buffer per round trip (1 MiB at 100 ms: about 10 MB/s).
pub(crate) fn send_buffer_bytes(config: &ServerConfig) -> usize {
    if config.socket_send_buffer_bytes > 0 {
        return usize::try_from(config.socket_send_buffer_bytes).unwrap_or(usize::MAX);
    }
    let quarter = usize::try_from(config.slow_consumer_max_bytes / 4).unwrap_or(usize::MAX);
    quarter.clamp(16 * 1024, 1024 * 1024)
}

/// The server entry point.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Binds `config.listen` and starts serving on `store`. Without auth configured
    /// the server warns loudly and refuses non-loopback addresses (`RW-AUTH-*`).
    pub async fn bind(
        config: ServerConfig,
        store: Arc<dyn EventStore>,
    ) -> Result<RunningServer, ServerError> {
        config.validate()?;
        if !config.auth.enabled() {
            if !config.listen.ip().is_loopback() && !config.allow_unauthenticated_public {
                return Err(ServerError::PublicWithoutAuth(config.listen));
            }
            tracing::warn!(
                "NO AUTHENTICATION CONFIGURED: anyone who can reach {} may publish and read every run",
                config.listen
            );
        }
        let tls = tls::Tls::from_config(&config.tls)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::default());
        let config_origins = config.allowed_origins.clone();
        let per_identity = config.max_connections_per_identity;
        let state = Arc::new(AppState {
            auth: Authenticator::new(&config.auth),
            config: Arc::new(config),
            store: Arc::clone(&store),
            metrics: Arc::clone(&metrics),
            shutdown: shutdown_rx.clone(),
            connections: InFlight::default(),
            appends: InFlight::default(),
            origins: origin::OriginPolicy::new(&config_origins),
            identities: Arc::new(identity::Identities::new(per_identity)),
        });
        let body_limit = state.config.max_request_bytes.saturating_add(1);
        let mut app = Router::new();
        if state.config.page {
            app = app
                .route("/", get(page::index))
                .route(page::SCRIPT_PATH, get(page::script))
                .route(page::STYLE_PATH, get(page::style));
        }
        let app = app
            .route(runwire_protocol::STREAM_PATH, get(ws::stream))
            .route(
                "/v1/runs/{run_id}/events",
                post(http::append).get(http::history),
            )
            .route("/v1/runs/{run_id}", get(http::snapshot))
            .route(runwire_protocol::http::RUNS_PATH, get(http::list_runs))
            .route("/healthz", get(http::healthz))
            .route("/metrics", get(http::metrics))
            // Origins are judged only for requests that reach an endpoint (404 and 405
            // come first, `RW-INGEST-23`); CORS preflights are answered for every path.
            .route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                origin::enforce,
            ))
            .fallback(http::not_found)
            .method_not_allowed_fallback(http::method_not_allowed)
            .layer(DefaultBodyLimit::max(body_limit))
            .layer(origin::cors(state.origins.clone()))
            .with_state(Arc::clone(&state));
        let stop = shutdown_rx;
        // Accepted sockets get TCP_NODELAY and a bounded send buffer, and can be taken
        // back from a finished WebSocket for a lingering close (see `linger`). Every
        // connection is admitted and served with the deadlines and limits of
        // `admission` (`RW-SEC-11` to `RW-SEC-14`).
        let sndbuf = send_buffer_bytes(&state.config);
        let listener = linger::LingerListener::new(listener, sndbuf);
        let config = Arc::clone(&state.config);
        let serve_tls = tls.clone();
        let serve_metrics = Arc::clone(&metrics);
        let task = tokio::spawn(async move {
            admission::serve(listener, app, &config, serve_tls, serve_metrics, stop).await;
        });
        Ok(RunningServer {
            addr,
            shutdown: shutdown_tx,
            task,
            state,
            tls,
        })
    }
}

/// A server that is accepting connections.
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    state: Arc<AppState>,
    tls: Option<Arc<tls::Tls>>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/v1/stream`, or `wss://` with TLS.
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.addr, runwire_protocol::STREAM_PATH)
    }

    /// `http://ADDR` (the producer API's base URL), or `https://` with TLS.
    pub fn http_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Reads the TLS certificate and key files again (`runwire serve` does it on
    /// `SIGHUP`): connections accepted afterwards get the new certificate, open ones
    /// keep theirs. On error the certificate in service stays. Without TLS configured
    /// this does nothing.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        match &self.tls {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.state.store
    }

    /// Graceful shutdown (`RW-SHUTDOWN-*`): stop accepting, send every client
    /// `server_shutdown` with a jittered `retry_after_ms` and close 4200, wait for the
    /// goodbyes (bounded by `close_timeout_ms`), then close the store so that every
    /// acknowledged event is durable.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let grace = Duration::from_millis(self.state.config.close_timeout_ms.saturating_mul(2));
        let _ = tokio::time::timeout(grace, self.state.connections.wait_idle()).await;
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
        if let Err(e) = self.state.store.close().await {
            tracing::error!(error = %e, "closing the store failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_buffer_follows_the_slow_consumer_bound_unless_set() {
        let mut c = ServerConfig {
            slow_consumer_max_bytes: 256 * 1024,
            ..ServerConfig::default()
        };
        assert_eq!(send_buffer_bytes(&c), 64 * 1024);
        c.slow_consumer_max_bytes = 1 << 30;
        assert_eq!(send_buffer_bytes(&c), 1024 * 1024, "capped at 1 MiB");
        c.slow_consumer_max_bytes = 1024;
        assert_eq!(send_buffer_bytes(&c), 16 * 1024, "at least 16 KiB");
        c.socket_send_buffer_bytes = 8 << 20;
        assert_eq!(send_buffer_bytes(&c), 8 << 20, "an explicit size wins");
    }
}
