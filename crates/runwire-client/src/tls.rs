//! TLS for `wss://` and `https://` (spec §17, `RW-SEC-3`): which certificate
//! authorities a connection trusts.
//!
//! By default a connection trusts the operating system's root certificates. A private
//! CA (a company CA, or the development CA of `runwire tls dev-cert`) is added with
//! [`client_config`]; the result goes into [`crate::ClientConfig::tls`] and serves the
//! CLI's HTTP client and the conformance kit alike.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, pem::PemObject};

pub use rustls::ClientConfig as TlsClientConfig;

/// Why a CA file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!(error = %e, "a system root certificate could not be loaded");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::trace!(added, ignored, "system root certificates");
    roots
}

/// The cryptography every Runwire TLS connection uses: rustls's *ring* provider.
///
/// *ring* builds with nothing but a C compiler, which every Rust toolchain has; rustls
/// now recommends aws-lc-rs, whose post-quantum key exchange (X25519MLKEM768) *ring*
/// lacks, and marks this function deprecated for that reason. Switching needs only this
/// function and the workspace's rustls features changed.
#[allow(deprecated)]
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Makes [`provider`] the process default, for libraries that build TLS
/// configurations of their own (reqwest is built here without a provider of its own).
/// Calling it again does nothing.
pub fn install_default_provider() {
    let _ = provider().install_default();
}

fn build(roots: RootCertStore) -> Arc<TlsClientConfig> {
    let provider = Arc::new(provider());
    let config = TlsClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    // The ring provider supports the safe default versions, so this cannot fail; a
    // build of rustls that did fail here would leave TLS unusable, which `expect`
    // reports at once rather than at the first connection.
    Arc::new(config.expect("the ring provider supports TLS 1.2 and 1.3"))
}

/// The default: the operating system's root certificates (read once per process).
pub fn default_config() -> Arc<TlsClientConfig> {
    static DEFAULT: OnceLock<Arc<TlsClientConfig>> = OnceLock::new();
    Arc::clone(DEFAULT.get_or_init(|| build(system_roots())))
}

/// The system's root certificates plus every certificate in the PEM files `ca_files`.
/// With no files this is [`default_config`].
pub fn client_config(ca_files: &[PathBuf]) -> Result<Arc<TlsClientConfig>, TlsError> {
    if ca_files.is_empty() {
        return Ok(default_config());
    }
    let mut roots = system_roots();
    for path in ca_files {
        for cert in read_certificates(path)? {
            roots.add(cert).map_err(|e| TlsError {
                path: path.clone(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        }
    }
    Ok(build(roots))
}

/// Reads every `CERTIFICATE` block of a PEM file; a file with none is an error.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block in the file".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused_with_its_path() {
        let dir = std::env::temp_dir().join(format!("runwire-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("empty.pem");
        std::fs::write(&file, "not a certificate\n").expect("write");
        let e = client_config(std::slice::from_ref(&file)).expect_err("refused");
        assert_eq!(e.path, file);
        assert!(e.to_string().contains("no CERTIFICATE block"), "{e}");
        let missing = dir.join("missing.pem");
        let e = client_config(std::slice::from_ref(&missing)).expect_err("refused");
        assert!(
            e.to_string().starts_with(&missing.display().to_string()),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
