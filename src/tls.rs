//! TLS configuration for both directions: client trust roots (JWKS, upstream) and the listener's key pair.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS file that could not be used. Startup error: reaches `main` only.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read PEM certificates from {path}: {reason}")]
    Certificates { path: PathBuf, reason: String },
    #[error("cannot read a PEM private key from {path}: {reason}")]
    PrivateKey { path: PathBuf, reason: String },
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Client config trusting the bundled webpki roots (so distroless/scratch images need no CA
/// bundle) plus, when given, the certificates in `extra_ca`.
pub(crate) fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        for cert in certificates(path)? {
            roots.add(cert)?;
        }
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The listener's certificate, replaceable while the server runs (hot reload).
#[derive(Debug)]
pub(crate) struct ServerCert {
    current: ArcSwap<CertifiedKey>,
}

impl ServerCert {
    /// Loads the PEM chain and key; fails if they do not belong together.
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(certified_key(cert, key)?),
        }))
    }

    /// Reads and checks a new pair without using it (a reload reads it first and installs it
    /// only once nothing else can fail). Blocking file reads.
    pub(crate) fn read(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
        certified_key(cert, key)
    }

    /// Serves `pair` from the next handshake on.
    pub(crate) fn install(&self, pair: CertifiedKey) {
        self.current.store(Arc::new(pair));
    }

    /// Server config for the proxy listener, offering HTTP/2 and HTTP/1.1 by ALPN.
    pub(crate) fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::PrivateKey {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    Ok(CertifiedKey::from_der(chain, key, &provider)?)
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError::Certificates {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no certificates in file".into()));
    }
    Ok(certs)
}
