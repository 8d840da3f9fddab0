//! Client configuration.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use runwire_protocol::{ClientInfo, PROTOCOL_VERSIONS, SubscriptionRequest, defaults};

use crate::{BackoffConfig, OrderingConfig};

/// What a token provider returns: a token, no token, or an error message (the
/// attempt then fails and is retried with backoff).
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send>>;

/// Supplies the bearer token for `hello.token` (spec §7). It is called before every
/// connection attempt (`RW-AUTH-9`), with the number of connection attempts the
/// client made before this one since it started (0 for the first; never reset, also
/// not by a healthy session), so it can refresh an expired token (`token_expired`
/// closes with a reconnect code, `RW-AUTH-8`).
#[derive(Clone)]
pub struct TokenProvider(Arc<dyn Fn(u32) -> TokenFuture + Send + Sync>);

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenProvider(..)")
    }
}

impl TokenProvider {
    /// Always the same token.
    pub fn fixed(token: impl Into<String>) -> Self {
        let token = token.into();
        Self::from_fn(move |_| Some(token.clone()))
    }

    /// A synchronous callback.
    pub fn from_fn(f: impl Fn(u32) -> Option<String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(move |attempt| {
            let t = f(attempt);
            Box::pin(async move { Ok(t) })
        }))
    }

    /// An asynchronous callback, e.g. one that refreshes the token over HTTP.
    pub fn from_async<F, Fut>(f: F) -> Self
    where
        F: Fn(u32) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<String>, String>> + Send + 'static,
    {
        Self(Arc::new(move |attempt| Box::pin(f(attempt))))
    }

    /// Asks for the token of the connection attempt that follows `attempts` earlier
    /// ones.
    pub fn token(&self, attempt: u32) -> TokenFuture {
        (self.0)(attempt)
    }
}

/// Everything [`crate::Client::connect`] needs. Build with [`ClientConfig::new`] and
/// adjust the public fields; every default is the spec's (Appendix B).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The WebSocket URL, e.g. `ws://127.0.0.1:7300/v1/stream`. Never put a token in
    /// it (`RW-AUTH-1`).
    pub url: String,
    /// The protocol versions offered in `hello.versions` (`RW-VERSION-1`).
    pub versions: Vec<String>,
    /// Supplies `hello.token`.
    pub token: Option<TokenProvider>,
    /// Runs to subscribe to from the start, with optional cursors (e.g. persisted by
    /// the application before it restarted).
    pub subscriptions: Vec<SubscriptionRequest>,
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
    /// A session that stays up this long after `welcome` resets the backoff attempt
    /// counter (`RW-RECONNECT-4`).
    pub stable_session: Duration,
    /// Added to the heartbeat interval announced in `welcome` to get the liveness
    /// timeout: that long without any frame and the connection is dead (`RW-HEART-5`).
    pub liveness_grace: Duration,
    /// Gap buffering.
    pub ordering: OrderingConfig,
    /// How long to wait for the TCP + WebSocket handshake.
    pub connect_timeout: Duration,
    /// How long to wait for `welcome` after sending `hello`.
    pub welcome_timeout: Duration,
    /// Largest frame accepted from the server, in bytes.
    pub max_frame_bytes: usize,
    /// Seed for every random choice (backoff jitter). `None`: drawn from the OS.
    pub seed: Option<u64>,
    /// Capacity of the channel between the connection task and the application;
    /// when it is full the client stops reading the socket (the server's slow
    /// consumer handling then applies, spec §15).
    pub channel_capacity: usize,
    /// Sent in `hello.client`.
    pub client_info: Option<ClientInfo>,
    /// TLS for `wss://` URLs: the certificate authorities trusted
    /// ([`crate::tls::client_config`]). `None`: the operating system's roots.
    pub tls: Option<Arc<crate::tls::TlsClientConfig>>,
}

impl ClientConfig {
    /// A configuration with the spec's defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            versions: PROTOCOL_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
            token: None,
            subscriptions: Vec::new(),
            backoff: BackoffConfig::default(),
            stable_session: Duration::from_millis(defaults::STABLE_SESSION_MS),
            liveness_grace: Duration::from_millis(defaults::LIVENESS_GRACE_MS),
            ordering: OrderingConfig::default(),
            connect_timeout: Duration::from_secs(10),
            welcome_timeout: Duration::from_secs(10),
            max_frame_bytes: 16 * 1024 * 1024,
            seed: None,
            channel_capacity: 1024,
            client_info: Some(ClientInfo {
                name: "runwire-client".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            }),
            tls: None,
        }
    }

    /// Adds a subscription.
    pub fn subscribe(mut self, request: SubscriptionRequest) -> Self {
        self.subscriptions.push(request);
        self
    }

    /// Sets a fixed token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(TokenProvider::fixed(token));
        self
    }
}
