//! Native TLS with rustls (ring provider): TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`, optional
//! client certificates (mTLS), and certificates that are reloaded when their files change
//! (Let's Encrypt renewals) or on SIGHUP, without touching established connections: each new
//! handshake asks the resolver for the current certificate.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use crate::config::TlsConfig;

#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM object.
    File(PathBuf, String),
    /// rustls refused the material (e.g. the key does not match the certificate).
    Config(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::File(p, why) => write!(f, "TLS file {}: {why}", p.display()),
            TlsError::Config(why) => write!(f, "TLS configuration: {why}"),
        }
    }
}

impl std::error::Error for TlsError {}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::File(path.to_path_buf(), e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File(path.to_path_buf(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::File(path.to_path_buf(), String::from("no PEM certificate found")));
    }
    Ok(certs)
}

fn load_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certs(cert)?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File(key.to_path_buf(), e.to_string()))?;
    CertifiedKey::from_der(chain, der, &provider())
        .map(Arc::new)
        .map_err(|e| TlsError::Config(format!("{} with {}: {e}", cert.display(), key.display())))
}

type Stamp = Option<(SystemTime, u64, SystemTime, u64)>;

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let (c, k) = (std::fs::metadata(cert).ok()?, std::fs::metadata(key).ok()?);
    Some((c.modified().ok()?, c.ino() ^ c.len(), k.modified().ok()?, k.ino() ^ k.len()))
}

/// Serves the current certificate to every new handshake; `reload` swaps it.
pub struct CertReloader {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: Mutex<Stamp>,
}

impl fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertReloader").field("cert", &self.cert).field("key", &self.key).finish()
    }
}

impl CertReloader {
    pub fn load(cert: &Path, key: &Path) -> Result<CertReloader, TlsError> {
        let stamp = stamp(cert, key);
        let current = load_key(cert, key)?;
        Ok(CertReloader {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(current),
            stamp: Mutex::new(stamp),
        })
    }

    /// Re-reads the files if they changed (or always, with `force`). A broken pair (e.g. the
    /// certificate renewed but the key not yet) is logged and the previous one stays in use;
    /// it is tried again on the next change.
    pub fn reload(&self, force: bool) -> bool {
        let now = stamp(&self.cert, &self.key);
        let Ok(mut last) = self.stamp.lock() else { return false };
        if !force && *last == now {
            return false;
        }
        match load_key(&self.cert, &self.key) {
            Ok(k) => {
                if let Ok(mut cur) = self.current.write() {
                    *cur = k;
                }
                *last = now;
                log::info!("TLS certificate {} reloaded", self.cert.display());
                true
            }
            Err(e) => {
                log::error!("TLS certificate not reloaded, keeping the previous one: {e}");
                // Retry when a file changes again (a half-written renewal completes).
                *last = now;
                false
            }
        }
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|k| k.clone())
    }
}

/// Builds the rustls configuration for `cfg`, with certificates served by `certs`.
pub fn server_config(cfg: &TlsConfig, certs: Arc<CertReloader>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if cfg.client_cas.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for path in &cfg.client_cas {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| TlsError::File(path.clone(), e.to_string()))?;
            }
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The answer to a plain-HTTP request on the TLS port.
pub const PLAIN_HTTP_ON_TLS_PORT: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 59\r\n\r\nThis port speaks TLS: use https:// to reach this registry.\n";

#[cfg(test)]
mod tests {
    #[test]
    fn plain_http_answer_is_well_formed() {
        let text = std::str::from_utf8(super::PLAIN_HTTP_ON_TLS_PORT).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().parse().unwrap();
        assert_eq!(body.len(), len);
    }
}
