//! The TLS server configuration: the certificate chain and key from PEM
//! files (`--tls-cert`, `--tls-key`), loaded at start and again on SIGHUP.

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the certificate chain and its private key are (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain: the server's certificate first, then the
    /// intermediates.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why a certificate or key could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfigError(pub String);

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsConfigError {}

/// The protocols offered in ALPN: WebSocket over HTTP/1.1 only.
const ALPN: &[&[u8]] = &[b"http/1.1"];

impl TlsFiles {
    /// Reads both files and builds the server configuration: TLS 1.3 and
    /// 1.2 only, ALPN `http/1.1`, `ring` as the crypto provider.
    pub fn load(&self) -> Result<Arc<ServerConfig>, TlsConfigError> {
        let chain = read_chain(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| TlsConfigError(format!("{}: no usable private key: {e}", self.key.display())))?;
        let provider = Arc::new(ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsConfigError(format!("TLS versions: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| {
                TlsConfigError(format!(
                    "{} and {}: certificate and key do not make a usable pair: {e}",
                    self.cert.display(),
                    self.key.display()
                ))
            })?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// Every certificate in a PEM file, in order; at least one.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let bad = |e: &dyn fmt::Display| TlsConfigError(format!("{}: {e}", path.display()));
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if chain.is_empty() {
        return Err(bad(&"no PEM certificate in the file"));
    }
    Ok(chain)
}
