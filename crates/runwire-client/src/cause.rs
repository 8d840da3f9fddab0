//! Why a connection attempt failed or a connection was lost, in words an operator can
//! act on: `connection refused by 127.0.0.1:7999`, not `IO error: Connection refused
//! (os error 111)` behind a generic "cannot connect".

use std::io::ErrorKind;

use tokio_tungstenite::tungstenite;

/// The `host:port` part of a WebSocket URL (the URL itself when it has none).
pub(crate) fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

/// An error with its sources, outermost first, each said once.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        next = cause.source();
    }
    text
}

/// An I/O error of the TCP connection to `at`.
fn io(e: &std::io::Error, at: &str) -> String {
    match e.kind() {
        ErrorKind::ConnectionRefused => format!("connection refused by {at}"),
        ErrorKind::ConnectionReset => format!("connection reset by {at}"),
        ErrorKind::TimedOut => format!("connecting to {at} timed out"),
        ErrorKind::AddrNotAvailable => format!("address not available: {at}"),
        _ => {
            let text = chain(e);
            // getaddrinfo's "failed to lookup address information: …" and the like.
            if text.contains("lookup") || text.contains("resolve") {
                format!("cannot resolve {at}: {text}")
            } else {
                format!("cannot connect to {at}: {text}")
            }
        }
    }
}

/// Why the WebSocket connection attempt to `url` failed.
pub(crate) fn connect_failure(url: &str, e: &tungstenite::Error) -> String {
    let at = authority(url);
    match e {
        tungstenite::Error::Io(e) => io(e, at),
        tungstenite::Error::Http(resp) => format!(
            "{at} answered the WebSocket upgrade with HTTP {} (is {url} the server's stream URL?)",
            resp.status()
        ),
        tungstenite::Error::Tls(t) => format!("TLS handshake with {at} failed: {}", chain(t)),
        tungstenite::Error::Url(u) => format!("invalid URL {url}: {u}"),
        other => format!("cannot connect to {at}: {}", chain(other)),
    }
}

/// Why an established connection was lost.
pub(crate) fn connection_lost(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Io(io) if io.kind() == ErrorKind::ConnectionReset => {
            "the connection was reset by the server".to_owned()
        }
        other => format!("the connection was lost: {}", chain(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(authority("ws://127.0.0.1:7999/v1/stream"), "127.0.0.1:7999");
        assert_eq!(authority("wss://h.example?x"), "h.example");
        assert_eq!(authority("h:1"), "h:1");
    }

    #[test]
    fn a_refused_connection_names_the_address() {
        let e = tungstenite::Error::Io(std::io::Error::from(ErrorKind::ConnectionRefused));
        assert_eq!(
            connect_failure("ws://127.0.0.1:7999/v1/stream", &e),
            "connection refused by 127.0.0.1:7999"
        );
    }
}
