//! TLS for the HTTPS listeners: load a certificate and key from PEM files,
//! or generate a self-signed pair into the state directory once.

use crate::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {}: {reason}", path.display())]
    Pem {
        /// "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating or writing the self-signed pair failed.
    #[error("self-signed certificate in {}: {reason}", dir.display())]
    SelfSigned {
        /// The folder.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A server TLS config, plus the certificate's SHA-256 fingerprint.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// For `tokio_rustls::TlsAcceptor`.
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate, colon-separated hex (what
    /// `openssl x509 -fingerprint -sha256` prints).
    pub fingerprint: String,
    /// The certificate file in use (clients of a self-signed listener need it).
    pub cert_path: PathBuf,
}

/// Builds the TLS config for a listener. ALPN offers HTTP/2 and HTTP/1.1.
///
/// # Errors
///
/// [`TlsError`].
pub fn server_tls(
    cfg: &TlsConfig,
    resolve: impl Fn(&Path) -> PathBuf,
    state_dir: &Path,
) -> Result<ServerTls, TlsError> {
    let (cert_path, key_path) = match (&cfg.cert, &cfg.key) {
        (Some(c), Some(k)) => (resolve(c), resolve(k)),
        _ => ensure_self_signed(&state_dir.join("tls"))?,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| pem("certificate", &cert_path, &e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("certificate", &cert_path, "no CERTIFICATE block"));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| pem("private key", &key_path, &e.to_string()))?;
    let fingerprint = fingerprint(&certs[0]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        fingerprint,
        cert_path,
    })
}

fn pem(what: &'static str, path: &Path, reason: &str) -> TlsError {
    TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// SHA-256 fingerprint of a DER certificate, `AB:CD:…`.
pub fn fingerprint(cert: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(cert)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Returns `dir/cert.pem` and `dir/key.pem`, generating them first if
/// either is missing. The certificate is valid for `localhost`,
/// `127.0.0.1` and `::1`.
fn ensure_self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.is_file() && key_path.is_file() {
        return Ok((cert_path, key_path));
    }
    let fail = |reason: String| TlsError::SelfSigned {
        dir: dir.to_path_buf(),
        reason,
    };
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let pair = rcgen::generate_simple_self_signed(names).map_err(|e| fail(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    write_private(&key_path, pair.signing_key.serialize_pem().as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    std::fs::write(&cert_path, pair.cert.pem()).map_err(|e| fail(e.to_string()))?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed certificate");
    Ok((cert_path, key_path))
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}
