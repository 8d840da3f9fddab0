//! The kit's own connections to a server under test: plain TCP for `ws://` and
//! `http://`, TLS for `wss://` and `https://` (spec §17, `RW-SEC-3`).
//!
//! The kit trusts the operating system's root certificates, plus the CA files given
//! with [`trust_ca_files`] (`runwire conform server --ca-cert FILE`). That trust is
//! process-wide and only grows: every suite run in the process may connect to every
//! server whose CA was added, which is what a test process wants, and no connection
//! is ever made with less trust than before.
//!
//! Hand-made connections (raw HTTP requests, hand-built WebSocket frames, slow
//! request heads) go through `connect`, so they speak TLS exactly when the target
//! URL asks for it; WebSocket clients use `connector`.

use std::{
    io,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
};

use runwire_client::tls::{TlsClientConfig, TlsError};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// The CA files trusted so far and the configuration built from them.
static TRUST: RwLock<Option<(Vec<PathBuf>, Arc<TlsClientConfig>)>> = RwLock::new(None);

/// Adds the certificate authorities in the PEM files `files` to what the kit trusts
/// for `wss://` and `https://`, besides the system's roots.
pub fn trust_ca_files(files: &[PathBuf]) -> Result<(), TlsError> {
    if files.is_empty() {
        return Ok(());
    }
    let mut trust = TRUST.write().unwrap_or_else(|e| e.into_inner());
    let mut all = trust.as_ref().map(|(f, _)| f.clone()).unwrap_or_default();
    for f in files {
        if !all.contains(f) {
            all.push(f.clone());
        }
    }
    let config = runwire_client::tls::client_config(&all)?;
    *trust = Some((all, config));
    Ok(())
}

/// The TLS configuration of every kit connection.
pub(crate) fn tls_config() -> Arc<TlsClientConfig> {
    match &*TRUST.read().unwrap_or_else(|e| e.into_inner()) {
        Some((_, c)) => Arc::clone(c),
        None => runwire_client::tls::default_config(),
    }
}

/// The connector for tokio-tungstenite: `wss://` URLs get the kit's TLS trust.
pub(crate) fn connector() -> tokio_tungstenite::Connector {
    tokio_tungstenite::Connector::Rustls(tls_config())
}

/// Where a URL points: `host:port`, the host alone (for TLS's server name), the path,
/// and whether it speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `host:port` (the default port of the scheme added when absent).
    pub(crate) authority: String,
    /// The host, without brackets for IPv6.
    pub(crate) host: String,
    /// The path, `/` at least.
    pub(crate) path: String,
    /// `wss://` or `https://`.
    pub(crate) tls: bool,
}

impl Endpoint {
    /// Parses a `ws://`, `wss://`, `http://` or `https://` URL.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?} has no scheme"))?;
        let (tls, port) = match scheme {
            "ws" | "http" => (false, 80),
            "wss" | "https" => (true, 443),
            other => return Err(format!("{url:?}: unsupported scheme {other:?}")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let (host, has_port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed IPv6 address"))?;
            (h.to_owned(), after.starts_with(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, _)) => (h.to_owned(), true),
                None => (authority.to_owned(), false),
            }
        };
        let authority = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:{port}")
        };
        Ok(Self {
            authority,
            host,
            path: path.to_owned(),
            tls,
        })
    }
}

/// A kit connection: TCP, or TLS over it.
#[derive(Debug)]
pub(crate) enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: the TLS state is large).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Opens a TCP connection to `ep`, then the TLS session when `ep` asks for one.
pub(crate) async fn connect(ep: &Endpoint) -> io::Result<Stream> {
    let tcp = TcpStream::connect(&ep.authority).await?;
    let _ = tcp.set_nodelay(true);
    start_tls(tcp, ep).await
}

/// Wraps an open socket in TLS when `ep` asks for it.
pub(crate) async fn start_tls(tcp: TcpStream, ep: &Endpoint) -> io::Result<Stream> {
    if !ep.tls {
        return Ok(Stream::Plain(tcp));
    }
    let name = rustls_pki_types::ServerName::try_from(ep.host.clone())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let tls = tokio_rustls::TlsConnector::from(tls_config())
        .connect(name, tcp)
        .await?;
    Ok(Stream::Tls(Box::new(tls)))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(t) => Pin::new(t).poll_read(cx, buf),
            Self::Tls(t) => Pin::new(t).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(t) => Pin::new(t).poll_write(cx, buf),
            Self::Tls(t) => Pin::new(t).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(t) => Pin::new(t).poll_flush(cx),
            Self::Tls(t) => Pin::new(t).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(t) => Pin::new(t).poll_shutdown(cx),
            Self::Tls(t) => Pin::new(t).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_add_the_default_port_and_know_tls() {
        let e = Endpoint::parse("wss://example.com/v1/stream").expect("wss");
        assert_eq!(
            (
                e.authority.as_str(),
                e.host.as_str(),
                e.path.as_str(),
                e.tls
            ),
            ("example.com:443", "example.com", "/v1/stream", true)
        );
        let e = Endpoint::parse("http://127.0.0.1:7070").expect("http");
        assert_eq!(
            (
                e.authority.as_str(),
                e.host.as_str(),
                e.path.as_str(),
                e.tls
            ),
            ("127.0.0.1:7070", "127.0.0.1", "/", false)
        );
        let e = Endpoint::parse("https://[::1]:8443/base").expect("v6");
        assert_eq!(
            (e.authority.as_str(), e.host.as_str()),
            ("[::1]:8443", "::1")
        );
        let e = Endpoint::parse("ws://example.com").expect("ws");
        assert_eq!((e.authority.as_str(), e.tls), ("example.com:80", false));
        assert!(Endpoint::parse("ftp://h").is_err());
        assert!(Endpoint::parse("h:1").is_err());
    }
}
