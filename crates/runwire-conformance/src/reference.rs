//! The bundled reference target: the reference server in process (embedded SQLite
//! store in a temporary directory, short timers, two static tokens, a short retention
//! for the runs `rwc-retained-*`) with restart control.

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use runwire_server::{
    AuthConfig, EventStore, RetentionConfig, RetentionRule, Role, RunningServer, Server,
    ServerConfig, SqliteStore, StaticToken,
};
use tokio::sync::Mutex;

use crate::{
    model::Error,
    server::{ServerControl, ServerTarget, ShortRetention},
};

/// The full-access token of the reference target.
pub const REFERENCE_TOKEN: &str = "rwc-reference-full-token";
/// The limited token of the reference target (runs `rwc-allowed-*` only).
pub const REFERENCE_LIMITED_TOKEN: &str = "rwc-reference-limited-token";
/// The JWT secret of the reference target (expiring tokens are minted with it).
pub const REFERENCE_JWT_SECRET: &str = "rwc-reference-jwt-secret-for-expiring-tokens";

/// The run-id prefix the reference target trims ([`REFERENCE_RETAINED_EVENTS`]); the
/// kit names only the runs of `@retention` scenarios with it (ordinary runs are
/// `rwc-<8 hex digits>-…`).
pub const REFERENCE_RETAINED_PREFIX: &str = "rwc-retained-";
/// The events every `rwc-retained-*` run of the reference target keeps at least: small,
/// so the `@retention` scenarios trim a run with a few hundred events, and far below
/// the reference target's replay window (1000), so a trimmed cursor is told apart
/// from one outside the window.
pub const REFERENCE_RETAINED_EVENTS: u64 = 50;

/// The configuration the kit runs the reference server with: every timer short so
/// the suite is fast, limits small enough to exceed in a test.
#[allow(clippy::field_reassign_with_default)] // reads better as one setting a line
pub fn reference_config(time_scale: f64) -> ServerConfig {
    let t = |ms: u64| ((ms as f64) * time_scale).ceil() as u64;
    let mut c = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ServerConfig::default()
    };
    c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    // A second: the kit may be descheduled between the upgrade and its hello on a
    // busy machine (that is graded inconclusive, but should stay rare).
    c.hello_timeout_ms = t(1000);
    c.heartbeat_interval_ms = t(300);
    // Long enough that a client of the slow-consumer scenarios can fill the kernel's
    // socket buffers (a few MiB) and wait out the age bound before it must read
    // again (0.8 x pong_timeout_ms, §15), on a debug build of a busy machine too.
    c.pong_timeout_ms = t(4000);
    // Long enough that a busy connection's batching is told apart from an urgent
    // flush (RW-BATCH-3 allows 100 ms for "at once"); an idle connection gets every
    // event at once anyway (adaptive batching).
    c.batch_window_ms = t(250);
    c.replay_window_events = 1000;
    c.max_subscriptions = 8;
    c.max_messages_per_second = 100;
    // Small enough that the slow-consumer scenarios oblige the server quickly, large
    // enough that one append of ten 50 KB events to a client that reads does not
    // exceed it.
    c.slow_consumer_max_bytes = 1024 * 1024;
    c.slow_consumer_max_age_ms = t(200);
    c.shutdown_reconnect_spread_ms = t(200);
    c.close_timeout_ms = t(3000);
    // Admission (RW-SEC-11 to RW-SEC-14): short deadlines so that the admission
    // scenarios take a fraction of a second. The header deadline also bounds an idle
    // keep-alive connection; a second keeps the kit's pooled HTTP connections from
    // being closed under it between the steps of a scenario. The pre-hello limit is
    // far above the suite's concurrent handshakes (its scenario runs alone).
    c.header_timeout_ms = t(1000);
    c.handshake_timeout_ms = t(2000);
    c.keep_alive_timeout_ms = t(1000);
    c.body_timeout_ms = t(500);
    c.max_pre_hello_per_address = 64;
    // Far above the connections the suite's scenarios hold with one token at once;
    // the identity-limit scenario fills it with the limited token, alone.
    c.max_connections_per_identity = 128;
    // Only the retention scenarios' runs are trimmed; every other run keeps every
    // event (RW-RESUME-12).
    c.retention = RetentionConfig {
        events: 0,
        runs: vec![RetentionRule {
            pattern: format!("{REFERENCE_RETAINED_PREFIX}*"),
            events: REFERENCE_RETAINED_EVENTS,
        }],
    };
    c.auth = AuthConfig {
        tokens: vec![
            StaticToken {
                token: REFERENCE_TOKEN.into(),
                roles: vec![Role::Producer, Role::Consumer],
                runs: Vec::new(),
                name: Some("conformance-full".into()),
            },
            StaticToken {
                token: REFERENCE_LIMITED_TOKEN.into(),
                roles: vec![Role::Consumer],
                runs: vec!["rwc-allowed-*".into()],
                name: Some("conformance-limited".into()),
            },
        ],
        jwt_secret: Some(REFERENCE_JWT_SECRET.into()),
        ..AuthConfig::default()
    };
    c
}

/// The in-process reference server.
pub struct ReferenceServer {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    config: ServerConfig,
    running: Mutex<Option<RunningServer>>,
}

impl std::fmt::Debug for ReferenceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferenceServer").finish_non_exhaustive()
    }
}

impl ReferenceServer {
    /// Starts it with `config` (its `listen` port 0 picks a free port; restarts reuse
    /// the port).
    pub async fn start(mut config: ServerConfig) -> Result<Arc<Self>, Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::Target(format!("temp dir: {e}")))?;
        let db = dir.path().join("runwire.db");
        let server = Self::bind(&config, &db).await?;
        config.listen = server.local_addr();
        Ok(Arc::new(Self {
            _dir: dir,
            db,
            config,
            running: Mutex::new(Some(server)),
        }))
    }

    async fn bind(config: &ServerConfig, db: &std::path::Path) -> Result<RunningServer, Error> {
        let store: Arc<dyn EventStore> = Arc::new(
            SqliteStore::open_with(db, &config.sqlite, config.retention.clone())
                .map_err(|e| Error::Target(format!("cannot open the store: {e}")))?,
        );
        Server::bind(config.clone(), store)
            .await
            .map_err(|e| Error::Target(format!("cannot start the reference server: {e}")))
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.config.listen
    }

    /// The server target for the suite.
    pub fn target(self: &Arc<Self>) -> ServerTarget {
        let tls = self.config.tls.enabled();
        let (ws, http) = if tls {
            ("wss", "https")
        } else {
            ("ws", "http")
        };
        ServerTarget {
            ws_url: format!("{ws}://{}{}", self.addr(), runwire_protocol::STREAM_PATH),
            ingest_url: format!("{http}://{}", self.addr()),
            token: Some(REFERENCE_TOKEN.into()),
            limited_token: Some(REFERENCE_LIMITED_TOKEN.into()),
            hello_timeout_ms: self.config.hello_timeout_ms,
            control: Some(Arc::clone(self) as Arc<dyn ServerControl>),
            token_minter: Some(Arc::new(JwtMinter {
                secret: REFERENCE_JWT_SECRET.into(),
            })),
            short_retention: declared_retention(&self.config),
            send_buffer: None,
            admission: crate::server::AdmissionDecl {
                header_timeout_ms: Some(self.config.header_timeout_ms),
                body_timeout_ms: Some(self.config.body_timeout_ms),
                pre_hello_limit: Some(self.config.max_pre_hello_per_address),
                max_request_bytes: u64::try_from(self.config.max_request_bytes).ok(),
                identity_limit: Some(self.config.max_connections_per_identity),
                behind_proxy: false,
            },
            description: format!(
                "reference server {} (in process, SQLite store, short timers{}) at {}",
                env!("CARGO_PKG_VERSION"),
                if tls { ", TLS" } else { "" },
                self.addr()
            ),
        }
    }

    /// Stops it gracefully.
    pub async fn stop(&self) {
        if let Some(s) = self.running.lock().await.take() {
            s.shutdown().await;
        }
    }
}

/// The short retention the reference target declares: its rule for
/// [`REFERENCE_RETAINED_PREFIX`], if `config` still has it.
fn declared_retention(config: &ServerConfig) -> Option<ShortRetention> {
    let pattern = format!("{REFERENCE_RETAINED_PREFIX}*");
    config
        .retention
        .runs
        .iter()
        .find(|r| r.pattern == pattern && r.events > 0)
        .map(|r| ShortRetention {
            prefix: REFERENCE_RETAINED_PREFIX.into(),
            events: r.events,
        })
}

/// Mints HS256 JWTs with every role, expiring after a given time (seconds granularity,
/// rounded up).
#[derive(Debug, Clone)]
pub struct JwtMinter {
    /// The HMAC secret the server verifies with.
    pub secret: String,
}

impl crate::server::TokenMinter for JwtMinter {
    fn mint(
        &self,
        ttl_ms: u64,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_secs();
            let exp = if ttl_ms == 0 {
                now.saturating_sub(5)
            } else {
                now + ttl_ms.div_ceil(1000)
            };
            let claims = serde_json::json!({
                "exp": exp,
                "sub": "rwc-expiring",
                "roles": ["producer", "consumer"],
            });
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes()),
            )
            .map_err(|e| e.to_string())
        })
    }

    fn mint_not_yet_valid(
        &self,
        valid_in_ms: u64,
    ) -> Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send + '_>> {
        Box::pin(async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_secs();
            let nbf = now + valid_in_ms.div_ceil(1000);
            let claims = serde_json::json!({
                "nbf": nbf,
                "iat": now,
                "exp": nbf + 3600,
                "sub": "rwc-not-yet-valid",
                "roles": ["producer", "consumer"],
            });
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes()),
            )
            .map(Some)
            .map_err(|e| e.to_string())
        })
    }
}

impl ServerControl for ReferenceServer {
    fn restart(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let mut guard = self.running.lock().await;
            if let Some(s) = guard.take() {
                s.shutdown().await;
            }
            let mut last = String::new();
            for _ in 0..50 {
                match Self::bind(&self.config, &self.db).await {
                    Ok(s) => {
                        *guard = Some(s);
                        return Ok(());
                    }
                    Err(e) => {
                        last = e.to_string();
                        // The port may linger for a moment after the old listener
                        // closed; retrying is bounded (50 × 20 ms).
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                }
            }
            Err(last)
        })
    }
}
