//! TLS serving (spec §17, `RW-SEC-3`): `wss://` and `https://` on one port with the
//! certificate of `tls.cert`/`tls.key`, a reload that swaps it for new connections, the
//! TLS handshake inside the handshake deadline (`RW-SEC-11`), and the lingering close
//! (`RW-LIMIT-1`) through TLS.

use std::{
    path::Path,
    sync::{Arc, atomic::Ordering},
};

use runwire_protocol::ServerMessage;
use runwire_server::{DevCertificates, RunningServer, ServerConfig, ServerError, dev_certificates};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::common::*;

/// A client configuration that trusts `ca_pem` only.
fn trusting(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA pem")).expect("CA");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(runwire_server::tls_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn certs() -> DevCertificates {
    dev_certificates(&["localhost", "127.0.0.1"], 1).expect("certificates")
}

/// Writes the server's files into `dir`.
fn write(dir: &Path, c: &DevCertificates) {
    std::fs::write(dir.join("cert.pem"), &c.cert_pem).expect("cert");
    std::fs::write(dir.join("key.pem"), &c.key_pem).expect("key");
}

fn tls_config(dir: &Path) -> ServerConfig {
    let mut c = config();
    c.tls.cert = Some(dir.join("cert.pem"));
    c.tls.key = Some(dir.join("key.pem"));
    c
}

async fn https_client(ca_pem: &str) -> reqwest::Client {
    let _ = runwire_server::tls_provider().install_default();
    reqwest::Client::builder()
        .tls_backend_preconfigured((*trusting(ca_pem)).clone())
        .build()
        .expect("client")
}

/// The stream ends cleanly after the close: `close_notify` and FIN, no TLS error.
async fn assert_clean_end(client: &mut Client) {
    let end = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut client.ws))
        .await
        .expect("the stream ends within the wait bound");
    assert!(
        matches!(
            end,
            None | Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed))
        ),
        "{end:?}"
    );
}

async fn wss_hello(server: &RunningServer, ca_pem: &str) -> Client {
    let mut c = Client::connect_tls(server, trusting(ca_pem))
        .await
        .expect("wss upgrade");
    c.hello(json!([{"run_id": "tls-1"}])).await;
    assert!(matches!(c.msg().await, ServerMessage::Subscribed(_)));
    c
}

#[tokio::test]
async fn the_stream_and_the_api_are_served_over_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = certs();
    write(dir.path(), &ca);
    let server = start(tls_config(dir.path())).await;
    assert!(server.ws_url().starts_with("wss://"), "{}", server.ws_url());
    assert!(server.http_url().starts_with("https://"));
    let mut sub = wss_hello(&server, &ca.ca_pem).await;
    let http = https_client(&ca.ca_pem).await;
    let r = http
        .post(format!("{}/v1/runs/tls-1/events", server.http_url()))
        .json(&json!({"events": [{"type": "log.line", "data": {"level": "info", "message": "over tls"}}]}))
        .send()
        .await
        .expect("https append");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    loop {
        match sub.msg().await {
            ServerMessage::Event(e) => {
                assert_eq!(e.event.seq, 1);
                break;
            }
            ServerMessage::Batch(b) => {
                assert_eq!(b.events[0].seq, 1);
                break;
            }
            _ => {}
        }
    }
    // A client that does not trust the CA gets no connection.
    let other = certs();
    let e = Client::connect_tls(&server, trusting(&other.ca_pem))
        .await
        .err()
        .expect("an untrusted certificate is refused");
    assert!(e.to_string().contains("certificate"), "{e}");
    server.shutdown().await;
}

#[tokio::test]
async fn plain_http_on_a_tls_port_gets_no_answer() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = certs();
    write(dir.path(), &ca);
    let server = start(tls_config(dir.path())).await;
    let r = http_client()
        .get(format!("http://{}/healthz", server.local_addr()))
        .send()
        .await;
    assert!(r.is_err(), "plain HTTP must not be served: {r:?}");
    assert_eq!(
        server
            .metrics()
            .tls_handshake_failures
            .load(Ordering::Relaxed),
        1,
        "counted in runwire_tls_handshake_failures_total"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_to_new_connections_only() {
    let dir = tempfile::tempdir().expect("dir");
    let first = certs();
    write(dir.path(), &first);
    let server = start(tls_config(dir.path())).await;
    let mut open = wss_hello(&server, &first.ca_pem).await;

    // A broken file: the reload fails, naming the file, and the old certificate stays.
    std::fs::write(dir.path().join("cert.pem"), "garbage").expect("write");
    let e = server.reload_tls().expect_err("a broken certificate file");
    assert!(e.to_string().contains("cert.pem"), "{e}");
    wss_hello(&server, &first.ca_pem).await;

    let second = certs();
    write(dir.path(), &second);
    server.reload_tls().expect("reload");
    wss_hello(&server, &second.ca_pem).await;
    assert!(
        Client::connect_tls(&server, trusting(&first.ca_pem))
            .await
            .is_err(),
        "new connections get the new certificate"
    );
    // The connection opened before the reload still works.
    open.send(json!({"type": "subscribe", "subscriptions": [{"run_id": "tls-2"}]}))
        .await;
    loop {
        if let ServerMessage::Subscribed(s) = open.msg().await {
            assert_eq!(s.run_id.as_str(), "tls-2");
            break;
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn bind_names_a_missing_or_mismatched_file() {
    let dir = tempfile::tempdir().expect("dir");
    let e = runwire_server::Server::bind(
        tls_config(dir.path()),
        Arc::new(runwire_server::MemoryStore::new()),
    )
    .await
    .expect_err("no files");
    assert!(matches!(e, ServerError::Tls(_)), "{e}");
    assert!(e.to_string().contains("cert.pem"), "{e}");
    // A key of another certificate.
    let a = certs();
    let b = certs();
    std::fs::write(dir.path().join("cert.pem"), &a.cert_pem).expect("cert");
    std::fs::write(dir.path().join("key.pem"), &b.key_pem).expect("key");
    let e = runwire_server::Server::bind(
        tls_config(dir.path()),
        Arc::new(runwire_server::MemoryStore::new()),
    )
    .await
    .expect_err("mismatched key");
    assert!(e.to_string().contains("key.pem"), "{e}");
    // Half a configuration is refused before anything is read.
    let mut c = config();
    c.tls.cert = Some(dir.path().join("cert.pem"));
    assert!(c.validate().is_err());
    assert!(
        c.set("tls.key", "/nonexistent/key.pem").is_ok(),
        "tls.key is a key"
    );
}

#[tokio::test]
async fn a_socket_that_never_starts_tls_is_closed_at_the_handshake_deadline() {
    let dir = tempfile::tempdir().expect("dir");
    write(dir.path(), &certs());
    let mut c = tls_config(dir.path());
    c.handshake_timeout_ms = 200;
    let server = start(c).await;
    let mut tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .expect("closed within the wait bound")
        .unwrap_or(0);
    assert_eq!(n, 0, "the server closes without sending anything");
    let m = server.metrics();
    assert_eq!(m.handshake_timeouts.load(Ordering::Relaxed), 1);
    assert_eq!(m.tls_handshake_failures.load(Ordering::Relaxed), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn an_oversize_frame_gets_its_error_and_close_through_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = certs();
    write(dir.path(), &ca);
    let mut c = tls_config(dir.path());
    c.max_frame_bytes = 1024;
    let server = start(c).await;
    let mut client = wss_hello(&server, &ca.ca_pem).await;
    client.send_text("x".repeat(4096)).await;
    client.expect_error_close("frame_too_large", 4009).await;
    // Then a clean end of the stream: the server's close_notify and FIN, no error.
    assert_clean_end(&mut client).await;
    server.shutdown().await;
}

#[tokio::test]
async fn every_close_ends_the_tls_stream_cleanly() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = certs();
    write(dir.path(), &ca);
    let server = start(tls_config(dir.path())).await;
    // Server-initiated: an invalid message, its error and close, the client's reply.
    let mut client = wss_hello(&server, &ca.ca_pem).await;
    client.send_text("not json".into()).await;
    client.expect_error_close("invalid_json", 4000).await;
    assert_clean_end(&mut client).await;
    server.shutdown().await;
}
