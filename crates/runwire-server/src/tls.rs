//! TLS serving (spec §17, `RW-SEC-3`): `wss://` and `https://` on the one port.
//!
//! The certificate chain and key are PEM files ([`crate::config::TlsConfig`]), read at
//! start and again by [`crate::RunningServer::reload_tls`]: a renewed certificate is
//! served to every connection accepted after the reload, connections already open keep
//! theirs, and a reload that fails (a missing file, a key that does not match) keeps
//! the certificate in service and says why.
//!
//! The TLS handshake runs in the connection's own task after admission, inside the
//! handshake deadline (`RW-SEC-11`): a client that opens a socket and never finishes its
//! TLS handshake is shed like one that never finishes its HTTP upgrade. Only
//! HTTP/1.1 is offered (ALPN `http/1.1`), as on plain connections.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use rustls::ServerConfig as RustlsConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_rustls::TlsAcceptor;

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key does not fit the certificate, or rustls refused the pair.
    #[error("{cert} with {key}: {reason}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
}

/// Reads a PEM certificate chain (leaf first).
pub(crate) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(file_err("no CERTIFICATE block in the file".into()));
    }
    Ok(chain)
}

/// Builds the rustls configuration from the two files.
fn load(cert: &Path, key: &Path) -> Result<Arc<RustlsConfig>, TlsError> {
    let chain = read_chain(cert)?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
        path: key.to_owned(),
        reason: format!("no usable private key ({e})"),
    })?;
    let pair_err = |reason: String| TlsError::Pair {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let provider = Arc::new(provider());
    let mut config = RustlsConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| pair_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| pair_err(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// rustls's *ring* provider: it builds with nothing but a C compiler. rustls now
/// recommends aws-lc-rs (post-quantum key exchange) and marks this deprecated; the
/// client side (`runwire_client::tls::provider`) makes the same choice.
#[allow(deprecated)]
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The server's TLS acceptor, replaceable while the server runs.
pub(crate) struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<TlsAcceptor>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the files of `config`, or `None` when TLS is not configured.
    pub(crate) fn from_config(
        config: &crate::config::TlsConfig,
    ) -> Result<Option<Arc<Self>>, TlsError> {
        let (Some(cert), Some(key)) = (&config.cert, &config.key) else {
            return Ok(None);
        };
        let acceptor = TlsAcceptor::from(load(cert, key)?);
        Ok(Some(Arc::new(Self {
            cert: cert.clone(),
            key: key.clone(),
            current: RwLock::new(acceptor),
        })))
    }

    /// The acceptor for a connection accepted now.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files again; on success new connections get the new certificate.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let acceptor = TlsAcceptor::from(load(&self.cert, &self.key)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = acceptor;
        Ok(())
    }
}

/// A certificate authority and a server certificate signed by it, for development and
/// tests: what `runwire tls dev-cert` writes.
#[cfg(feature = "dev-certs")]
#[derive(Debug, Clone)]
pub struct DevCertificates {
    /// The CA certificate (PEM): what clients trust (`--ca-cert`).
    pub ca_pem: String,
    /// The server certificate (PEM), valid for the names given.
    pub cert_pem: String,
    /// The server certificate's private key (PEM, PKCS#8).
    pub key_pem: String,
}

/// Makes a fresh CA and a server certificate for `names` (DNS names or IP addresses,
/// e.g. `localhost` and `127.0.0.1`), valid from now for `days` days.
#[cfg(feature = "dev-certs")]
pub fn dev_certificates(names: &[&str], days: u32) -> Result<DevCertificates, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let e = |e: rcgen::Error| e.to_string();
    let now = time_now();
    let until = now + std::time::Duration::from_secs(u64::from(days) * 86_400);
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.distinguished_name
        .push(DnType::CommonName, "Runwire development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now.into();
    ca.not_after = until.into();
    let ca_key = KeyPair::generate().map_err(e)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let issuer = Issuer::new(ca, ca_key);
    let owned: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut leaf = CertificateParams::new(owned).map_err(e)?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("runwire"),
    );
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now.into();
    leaf.not_after = until.into();
    let leaf_key = KeyPair::generate().map_err(e)?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(e)?;
    Ok(DevCertificates {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

#[cfg(feature = "dev-certs")]
fn time_now() -> std::time::SystemTime {
    // A minute back, so that a peer whose clock is slightly behind accepts it.
    std::time::SystemTime::now() - std::time::Duration::from_secs(60)
}
