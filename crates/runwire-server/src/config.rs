//! Server configuration: every timer and limit of the spec, with the spec's defaults
//! (`runwire_protocol::defaults`, spec Appendix B).
//!
//! A [`ServerConfig`] is built from, in increasing precedence: [`Default`], a TOML file
//! ([`ServerConfig::from_toml`]), environment variables `RUNWIRE_<KEY>` (nested keys
//! with `__`, e.g. `RUNWIRE_AUTH__JWT_SECRET`, see [`ServerConfig::apply_env`]) and
//! `key=value` overrides ([`ServerConfig::set`]).

use std::net::SocketAddr;

use runwire_protocol::{Limits, defaults};
use serde::{Deserialize, Serialize};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML text is not a valid configuration.
    #[error("invalid configuration: {0}")]
    Toml(String),
    /// An override names no configuration key or has a value of the wrong type.
    #[error("invalid setting {key}={value:?}: {reason}")]
    Setting {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A value is out of its allowed range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A role a token grants (spec §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// May append events over HTTP and read runs over HTTP.
    Producer,
    /// May subscribe over WebSocket and read runs over HTTP.
    Consumer,
}

/// A static bearer token with its scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    /// The secret token value.
    pub token: String,
    /// The roles it grants.
    pub roles: Vec<Role>,
    /// Run-id patterns it may access (`*` matches any run-id characters); empty means
    /// every run.
    #[serde(default)]
    pub runs: Vec<String>,
    /// A name for logs (never the token itself).
    #[serde(default)]
    pub name: Option<String>,
}

/// Authentication settings (spec §7). With neither tokens nor a JWT secret, auth is
/// off: every request is allowed and the server binds to loopback only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Static tokens.
    pub tokens: Vec<StaticToken>,
    /// HMAC secret for HS256/HS384/HS512 JWTs. Claims: `exp` (required), `role`
    /// (string) or `roles` (array) of `producer`/`consumer`, `runs` (array of
    /// run-id patterns; absent = every run), `sub` (logged).
    pub jwt_secret: Option<String>,
    /// Required `iss` claim, if set.
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, if set.
    pub jwt_audience: Option<String>,
    /// Clock skew allowed when checking `nbf` and `iat`, in seconds (`RW-AUTH-14`;
    /// default `TOKEN_CLOCK_SKEW_S`, 60). `exp` is checked without leeway
    /// (`RW-AUTH-8`).
    pub jwt_leeway_s: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            jwt_secret: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_s: defaults::TOKEN_CLOCK_SKEW_S,
        }
    }
}

impl AuthConfig {
    /// Whether any authentication is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || self.jwt_secret.is_some()
    }
}

/// Which events the stores keep (spec section 8.3): by default every event of every
/// run (`RW-RESUME-12`). With a limit, a run keeps at least its last `events` events
/// (trimmed in steps of a tenth of it) plus a stored snapshot, so a reset still
/// carries the whole folded state; older cursors are answered with 410
/// `cursor_too_old` in history reads (`RW-INGEST-17`) and a `reset` on subscribe
/// (`RW-RESUME-5`). The memory and SQLite stores apply it to every run; the Redis
/// store applies the runs it names (a rule, or a nonzero `events`) and keeps its
/// URL's `retain_events` for the others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Events every run keeps at least; 0 keeps every event.
    pub events: u64,
    /// Rules for some runs; the first whose pattern matches the run id wins.
    pub runs: Vec<RetentionRule>,
}

/// A retention rule for the runs whose id matches a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// Run id pattern; `*` matches any run of characters (as in token `runs`).
    pub pattern: String,
    /// Events these runs keep at least; 0 keeps every event.
    pub events: u64,
}

impl RetentionConfig {
    /// The retention of `run_id`: events it keeps at least, 0 = all.
    pub fn for_run(&self, run_id: &runwire_protocol::RunId) -> u64 {
        self.runs
            .iter()
            .find(|r| crate::auth::glob(&r.pattern, run_id.as_str()))
            .map_or(self.events, |r| r.events)
    }

    /// The retention `[retention]` sets for `run_id`: its rule's, else a nonzero
    /// `events`; `None` when neither applies (a store's own default then holds).
    pub fn explicit_for(&self, run_id: &runwire_protocol::RunId) -> Option<u64> {
        self.runs
            .iter()
            .find(|r| crate::auth::glob(&r.pattern, run_id.as_str()))
            .map(|r| r.events)
            .or((self.events > 0).then_some(self.events))
    }

    /// Whether any run is trimmed.
    pub fn trims(&self) -> bool {
        self.events > 0 || self.runs.iter().any(|r| r.events > 0)
    }

    /// How many events past its retention a run grows before it is trimmed: a
    /// tenth of the retention, at least 10.
    pub fn step(retain: u64) -> u64 {
        (retain / 10).max(10)
    }
}

/// TLS serving (spec §17, `RW-SEC-3`): PEM files read at start and again on
/// [`crate::RunningServer::reload_tls`] (`runwire serve` calls it on `SIGHUP`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, leaf first.
    pub cert: Option<std::path::PathBuf>,
    /// The private key of the leaf certificate, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<std::path::PathBuf>,
}

impl TlsConfig {
    /// Whether TLS is configured (both files given).
    pub fn enabled(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }
}

/// SQLite store settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteConfig {
    /// `full` (default): every commit is fsynced before the append is acknowledged,
    /// so acknowledged events survive power loss. `normal`: WAL commits are not
    /// fsynced; acknowledged events survive a process crash but the last commits may
    /// be lost on power loss or an OS crash.
    pub synchronous: String,
    /// With `full`: fsync inside the commit, before subscribers get the events
    /// (`true`), instead of after it, before only the producers' answers (`false`,
    /// the default). `true` also keeps events a subscriber saw from being lost to
    /// power loss, at the price of every delivery waiting for the disk.
    pub deliver_after_sync: bool,
    /// Most append requests folded into one transaction by the group-commit writer.
    pub group_commit_max: usize,
    /// Read connections for replay and history reads.
    pub readers: usize,
    /// A run's folded snapshot is stored every this many events, so that a snapshot
    /// read or a reset folds only the events after it (and retention can trim below
    /// it).
    pub snapshot_every: u64,
    /// How often the background maintenance thread checkpoints the WAL into the
    /// database file (only when something was committed since). Checkpoints run off
    /// the writer thread, so appends never wait for one.
    pub checkpoint_interval_ms: u64,
    /// The WAL's bound in bytes: a WAL grown past it is restarted by the maintenance
    /// thread and cut back to it by the next commit (`journal_size_limit`); a WAL
    /// idle for a whole checkpoint interval is truncated to zero bytes.
    pub wal_max_bytes: u64,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            synchronous: "full".into(),
            deliver_after_sync: false,
            group_commit_max: 256,
            readers: 4,
            snapshot_every: 10_000,
            checkpoint_interval_ms: 250,
            wal_max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Every setting of the server. `Default` is the spec's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Without auth, only loopback addresses are allowed unless
    /// `allow_unauthenticated_public` is set.
    pub listen: SocketAddr,
    /// The event store: `memory` or `sqlite:PATH` (used by `runwire serve`; embedders
    /// pass a store to [`crate::Server::bind`]).
    pub store: String,
    /// Deadline for `hello` after the upgrade (`RW-CONN-3`).
    pub hello_timeout_ms: u64,
    /// Interval between server pings (`RW-HEART-1`).
    pub heartbeat_interval_ms: u64,
    /// Deadline for the pong (`RW-HEART-3`).
    pub pong_timeout_ms: u64,
    /// Batching window; 0 = no batching (`RW-BATCH-1`).
    pub batch_window_ms: u64,
    /// Most events in one batch frame.
    pub batch_max_events: usize,
    /// How far behind the head a cursor may be and still be replayed (`RW-RESUME-5`).
    pub replay_window_events: u64,
    /// Events read from the store per replay step.
    pub replay_chunk_events: usize,
    /// Largest inbound frame (`RW-LIMIT-1`).
    pub max_frame_bytes: u32,
    /// Largest serialized event (`RW-LIMIT-2`).
    pub max_event_bytes: u32,
    /// Most subscriptions per connection (`RW-LIMIT-3`).
    pub max_subscriptions: u32,
    /// Client messages per second, sustained and burst (`RW-LIMIT-4`).
    pub max_messages_per_second: u32,
    /// Outbound queue limit in bytes (`RW-SLOW-1`).
    pub slow_consumer_max_bytes: u64,
    /// Outbound queue limit by age of the oldest queued frame (`RW-SLOW-1`).
    pub slow_consumer_max_age_ms: u64,
    /// Upper bound of the jittered `retry_after_ms` sent at shutdown (`RW-SHUTDOWN-2`).
    pub shutdown_reconnect_spread_ms: u64,
    /// How long the server tries to deliver a final error and close frame.
    pub close_timeout_ms: u64,
    /// The kernel send buffer of each connection (`SO_SNDBUF`); 0 (the default)
    /// picks a quarter of `slow_consumer_max_bytes`, between 16 KiB and 1 MiB. A
    /// connection's throughput is at most this per round trip: raise it for clients
    /// far away (a larger buffer hides more of a stalled client from the
    /// slow-consumer limits, `RW-SLOW-1`).
    pub socket_send_buffer_bytes: u64,
    /// Largest HTTP request body; a larger declared `Content-Length` is refused before
    /// the body is read (`RW-SEC-14`).
    pub max_request_bytes: usize,
    /// The whole HTTP request head must arrive within this long, counted from accept
    /// or from the previous response (`RW-SEC-11`). Bounds silent sockets, slow heads
    /// and idle keep-alive connections.
    pub header_timeout_ms: u64,
    /// From accept, a connection must within this long have sent a complete request
    /// head that is not an upgrade, or have been answered on its upgrade; after the
    /// upgrade `hello_timeout_ms` takes over (`RW-SEC-11`).
    pub handshake_timeout_ms: u64,
    /// An append's whole body must arrive within this long after its head; else 408
    /// `invalid_request` (`RW-SEC-13`).
    pub body_timeout_ms: u64,
    /// An HTTP/1.1 keep-alive connection with no request in progress is closed after
    /// this long (at most `header_timeout_ms` in effect).
    pub keep_alive_timeout_ms: u64,
    /// Most connections open at once; more are refused with 503 and `Retry-After`
    /// (`RW-SEC-12`). 0: no limit.
    pub max_connections: u32,
    /// Most connections from one source address that have not sent `hello` yet (a
    /// plain HTTP client stops counting at its first request head); more are refused
    /// with 503 and `Retry-After` (`RW-SEC-12`). 0: no limit.
    pub max_pre_hello_per_address: u32,
    /// Most WebSocket connections one authenticated identity (a static token's `name`,
    /// a JWT's `sub`) holds open at once; a `hello` over it is answered
    /// `server_overloaded` (close 4104) with `retry_after_ms` (`RW-SEC-18`). Not
    /// applied without auth. 0: no limit.
    pub max_connections_per_identity: u32,
    /// Allow binding a non-loopback address without auth (not recommended).
    pub allow_unauthenticated_public: bool,
    /// Origins (`scheme://host[:port]`) whose web pages may open the stream and call
    /// the HTTP API from a browser, besides the server's own origin; `*` allows every
    /// origin. A request with another `Origin` is refused with 403 (spec §17,
    /// `RW-SEC-2`, `RW-SEC-17`). Requests without `Origin` (not from a browser page)
    /// are not affected.
    pub allowed_origins: Vec<String>,
    /// Authentication.
    pub auth: AuthConfig,
    /// TLS: with a certificate and key the server serves `wss://` and `https://` only.
    pub tls: TlsConfig,
    /// SQLite store settings.
    pub sqlite: SqliteConfig,
    /// Which events the memory and SQLite stores keep.
    pub retention: RetentionConfig,
    /// Serve the live run page at `GET /` and its files under `/_page/` (default
    /// true); with `false` those paths answer 404 like any other unknown path.
    pub page: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            store: "sqlite:runwire.db".into(),
            hello_timeout_ms: defaults::HELLO_TIMEOUT_MS,
            heartbeat_interval_ms: defaults::HEARTBEAT_INTERVAL_MS,
            pong_timeout_ms: defaults::PONG_TIMEOUT_MS,
            batch_window_ms: defaults::BATCH_WINDOW_MS,
            batch_max_events: defaults::BATCH_MAX_EVENTS,
            replay_window_events: defaults::REPLAY_WINDOW_EVENTS,
            replay_chunk_events: 1000,
            max_frame_bytes: defaults::MAX_FRAME_BYTES,
            max_event_bytes: defaults::MAX_EVENT_BYTES,
            max_subscriptions: defaults::MAX_SUBSCRIPTIONS,
            max_messages_per_second: defaults::MAX_MESSAGES_PER_SECOND,
            slow_consumer_max_bytes: defaults::SLOW_CONSUMER_MAX_BYTES,
            slow_consumer_max_age_ms: defaults::SLOW_CONSUMER_MAX_AGE_MS,
            shutdown_reconnect_spread_ms: defaults::SHUTDOWN_RECONNECT_SPREAD_MS,
            close_timeout_ms: 5_000,
            socket_send_buffer_bytes: 0,
            max_request_bytes: 16 * 1024 * 1024,
            header_timeout_ms: defaults::HEADER_TIMEOUT_MS,
            handshake_timeout_ms: defaults::HANDSHAKE_TIMEOUT_MS,
            body_timeout_ms: defaults::BODY_TIMEOUT_MS,
            keep_alive_timeout_ms: defaults::KEEP_ALIVE_TIMEOUT_MS,
            max_connections: defaults::MAX_CONNECTIONS,
            max_pre_hello_per_address: defaults::MAX_PRE_HELLO_PER_ADDRESS,
            max_connections_per_identity: defaults::MAX_CONNECTIONS_PER_IDENTITY,
            allow_unauthenticated_public: false,
            allowed_origins: Vec::new(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            sqlite: SqliteConfig::default(),
            retention: RetentionConfig::default(),
            page: true,
        }
    }
}

fn scalar(value: &str) -> toml::Value {
    if let Ok(v) = value.parse::<i64>() {
        return toml::Value::Integer(v);
    }
    if let Ok(v) = value.parse::<bool>() {
        return toml::Value::Boolean(v);
    }
    toml::Value::String(value.to_owned())
}

impl ServerConfig {
    /// Parses a TOML document; missing keys keep their defaults, unknown keys are
    /// errors.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let c: Self = toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Sets one key (`heartbeat_interval_ms`, `auth.jwt_secret`, ...) from its text.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let err = |reason: String| ConfigError::Setting {
            key: key.to_owned(),
            value: value.to_owned(),
            reason,
        };
        let mut root = toml::Value::try_from(&*self).map_err(|e| err(e.to_string()))?;
        let mut slot = &mut root;
        let parts: Vec<&str> = key.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let table = slot
                .as_table_mut()
                .ok_or_else(|| err("not a table".into()))?;
            if i + 1 == parts.len() {
                if !table.contains_key(*part) && !Self::optional_key(key) {
                    return Err(err("unknown key".into()));
                }
                // A list of strings (`allowed_origins`) is written comma-separated.
                let v = if table.get(*part).is_some_and(toml::Value::is_array) {
                    toml::Value::Array(
                        value
                            .split(',')
                            .map(str::trim)
                            .filter(|x| !x.is_empty())
                            .map(|x| toml::Value::String(x.to_owned()))
                            .collect(),
                    )
                } else {
                    scalar(value)
                };
                table.insert((*part).to_owned(), v);
                break;
            }
            slot = table
                .get_mut(*part)
                .ok_or_else(|| err("unknown key".into()))?;
        }
        let next: Self = root.try_into().map_err(|e| err(e.to_string()))?;
        next.validate().map_err(|e| err(e.to_string()))?;
        *self = next;
        Ok(())
    }

    fn optional_key(key: &str) -> bool {
        matches!(
            key,
            "auth.jwt_secret" | "auth.jwt_issuer" | "auth.jwt_audience" | "tls.cert" | "tls.key"
        )
    }

    /// Applies `RUNWIRE_<KEY>` variables: `RUNWIRE_HEARTBEAT_INTERVAL_MS=1000`,
    /// `RUNWIRE_AUTH__JWT_SECRET=...`. Variables naming no key are ignored (the CLI
    /// uses other `RUNWIRE_` variables); values of the wrong type are errors.
    pub fn apply_env<I: IntoIterator<Item = (String, String)>>(
        &mut self,
        vars: I,
    ) -> Result<(), ConfigError> {
        let known = toml::Value::try_from(&*self).map_err(|e| ConfigError::Toml(e.to_string()))?;
        for (k, v) in vars {
            let Some(rest) = k.strip_prefix("RUNWIRE_") else {
                continue;
            };
            let key = rest.to_ascii_lowercase().replace("__", ".");
            let exists = Self::optional_key(&key) || {
                let mut slot = Some(&known);
                for part in key.split('.') {
                    slot = slot.and_then(|s| s.get(part));
                }
                slot.is_some_and(|s| {
                    !s.is_table()
                        && s.as_array()
                            .is_none_or(|a| a.iter().all(toml::Value::is_str))
                })
            };
            if exists {
                self.set(&key, &v)?;
            }
        }
        Ok(())
    }

    /// Checks ranges the types do not express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.heartbeat_interval_ms == 0 || self.pong_timeout_ms == 0 {
            return bad("heartbeat_interval_ms and pong_timeout_ms must be at least 1");
        }
        for o in &self.allowed_origins {
            if o != "*" && crate::origin::normalize(o).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "allowed_origins: {o:?} is not an origin (scheme://host[:port], no path) or *"
                )));
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad("tls.cert and tls.key must be given together");
        }
        if self.hello_timeout_ms == 0 {
            return bad("hello_timeout_ms must be at least 1");
        }
        if self.header_timeout_ms == 0
            || self.handshake_timeout_ms == 0
            || self.body_timeout_ms == 0
            || self.keep_alive_timeout_ms == 0
        {
            return bad(
                "header_timeout_ms, handshake_timeout_ms, body_timeout_ms and keep_alive_timeout_ms must be at least 1",
            );
        }
        if self.max_frame_bytes == 0
            || self.max_event_bytes == 0
            || self.max_subscriptions == 0
            || self.max_messages_per_second == 0
        {
            return bad("limits must be at least 1");
        }
        if self.batch_max_events == 0 || self.batch_max_events > defaults::BATCH_MAX_EVENTS {
            return bad("batch_max_events must be 1 to 500 (RW-BATCH-2)");
        }
        if self.replay_chunk_events == 0 {
            return bad("replay_chunk_events must be at least 1");
        }
        if self.slow_consumer_max_bytes == 0 || self.slow_consumer_max_age_ms == 0 {
            return bad("slow-consumer limits must be at least 1");
        }
        if self.sqlite.snapshot_every == 0 || self.sqlite.checkpoint_interval_ms == 0 {
            return bad(
                "sqlite.snapshot_every and sqlite.checkpoint_interval_ms must be at least 1",
            );
        }
        if !matches!(
            self.sqlite.synchronous.as_str(),
            "full" | "normal" | "extra"
        ) {
            return bad("sqlite.synchronous must be full, normal or extra");
        }
        for t in &self.auth.tokens {
            if t.token.is_empty() {
                return bad("auth.tokens: token must not be empty");
            }
        }
        Ok(())
    }

    /// The limits announced in `welcome`.
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_event_bytes: self.max_event_bytes,
            max_subscriptions: self.max_subscriptions,
            max_messages_per_second: self.max_messages_per_second,
            slow_consumer_max_bytes: Some(self.slow_consumer_max_bytes),
            slow_consumer_max_age_ms: Some(self.slow_consumer_max_age_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_spec_defaults() {
        let c = ServerConfig::default();
        assert_eq!(c.hello_timeout_ms, 3_000);
        assert_eq!(c.heartbeat_interval_ms, 25_000);
        assert_eq!(c.batch_window_ms, 200);
        c.validate().unwrap();
    }

    #[test]
    fn toml_env_and_set() {
        let mut c = ServerConfig::from_toml(
            "heartbeat_interval_ms = 1000\n[auth]\njwt_secret = \"s\"\n[[auth.tokens]]\ntoken = \"t\"\nroles = [\"producer\"]\n",
        )
        .unwrap();
        assert_eq!(c.heartbeat_interval_ms, 1000);
        assert!(c.auth.enabled());
        c.apply_env([
            ("RUNWIRE_PONG_TIMEOUT_MS".to_owned(), "77".to_owned()),
            ("RUNWIRE_URL".to_owned(), "ignored".to_owned()),
            ("RUNWIRE_AUTH__JWT_ISSUER".to_owned(), "me".to_owned()),
        ])
        .unwrap();
        assert_eq!(c.pong_timeout_ms, 77);
        assert_eq!(c.auth.jwt_issuer.as_deref(), Some("me"));
        assert!(c.set("batch_window_ms", "0").is_ok());
        assert_eq!(c.batch_window_ms, 0);
        assert!(c.set("nope", "1").is_err());
        assert!(c.set("batch_window_ms", "x").is_err());
        assert!(ServerConfig::from_toml("bogus = 1").is_err());
        assert!(c.set("sqlite.synchronous", "sometimes").is_err());
    }
}
