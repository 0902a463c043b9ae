//! HTTPS for the gateway: rustls, HTTP/1.1 by ALPN. The certificate and
//! key are read from PEM files and read again on SIGHUP or when either
//! file changes; connections already open keep the configuration they
//! started with, new ones get the new one.

use parking_lot::{Mutex, RwLock};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;

/// How often the files are checked for a change.
const WATCH_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read the TLS key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the TLS certificate and key do not make a configuration: {0}")]
    Config(String),
}

pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
    /// The files' modification times when last read.
    read_at: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn build(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Cert { path: cert.into(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Cert { path: cert.into(), reason: "no certificate in it".into() });
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::Key { path: key.into(), reason: e.to_string() })?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl Tls {
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let config = build(cert, key)?;
        Ok(Arc::new(Tls {
            cert: cert.into(),
            key: key.into(),
            current: RwLock::new(Arc::new(config)),
            read_at: Mutex::new((modified(cert), modified(key))),
        }))
    }

    /// What a new connection's handshake uses.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().clone())
    }

    /// Reads the files again; a bad new pair is logged and the old one
    /// kept, so a half-written renewal never takes HTTPS down.
    pub fn reload(&self) {
        let stamps = (modified(&self.cert), modified(&self.key));
        match build(&self.cert, &self.key) {
            Ok(config) => {
                *self.current.write() = Arc::new(config);
                *self.read_at.lock() = stamps;
                tracing::info!(cert = %self.cert.display(), "TLS certificate loaded");
            }
            Err(e) => tracing::warn!("keeping the TLS certificate in use: {e}"),
        }
    }

    /// Reloads on SIGHUP, and when either file's modification time moves.
    pub fn watch(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                let signalled = tokio::select! {
                    _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => true,
                    _ = tokio::time::sleep(WATCH_EVERY) => false,
                };
                let Some(tls) = me.upgrade() else { break };
                let changed = *tls.read_at.lock() != (modified(&tls.cert), modified(&tls.key));
                if signalled || changed {
                    tls.reload();
                }
            }
        });
    }
}
