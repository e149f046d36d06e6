//! TLS on the webhook port: certificates loaded and checked before binding, reloaded when
//! their directory changes, and a tokio-rustls accept loop serving HTTP/1.1 and HTTP/2.
//!
//! Reload: cert-manager (and the kubelet for any Secret volume) updates a mount by writing a
//! new timestamped directory and atomically renaming the `..data` symlink to it; `tls.crt`
//! and `tls.key` are symlinks through `..data`. Watching the two file paths misses that, so
//! the certificate's *directory* is watched (plus a periodic re-check in case events are
//! lost). A changed pair is parsed and checked; if it is good, the [`CertResolver`] swaps it
//! in and new handshakes use it, while open connections keep the session they have. If it is
//! bad, the old pair keeps serving and the error is logged and counted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::coalesce::Coalesce;
use crate::metrics::Metrics;

/// A TLS handshake must finish within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An HTTP/1.1 request's headers must arrive within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Events in the certificate directory are collected for this long before reloading, so
/// that one `..data` swap (several events) is one reload.
const DEBOUNCE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid PEM: {source}")]
    Pem {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM CERTIFICATE block found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a readable X.509 certificate: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path}: no PEM private key found (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("{path}: unusable private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("{key}: private key does not match the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The one crypto provider of the server (aws-lc-rs), passed explicitly because other
/// dependencies bring ring too and rustls then has no process default.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Where the serving certificate and key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A checked certificate and key, ready to serve.
#[derive(Debug, Clone)]
pub struct LoadedPair {
    pub certified: Arc<CertifiedKey>,
    /// The leaf certificate's notAfter, Unix seconds.
    pub not_after: i64,
    bytes: (Vec<u8>, Vec<u8>),
}

impl CertificateFiles {
    /// Read and check the pair: PEM certificate chain, a private key that matches the leaf.
    pub fn load(&self) -> Result<LoadedPair, CertificateError> {
        let bytes = self.read()?;
        self.parse(bytes)
    }

    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), CertificateError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| CertificateError::Read {
                path: path.to_owned(),
                source,
            })
        };
        Ok((read(&self.cert)?, read(&self.key)?))
    }

    fn parse(&self, bytes: (Vec<u8>, Vec<u8>)) -> Result<LoadedPair, CertificateError> {
        let (cert_pem, key_pem) = &bytes;
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|source| CertificateError::Pem {
                path: self.cert.clone(),
                source,
            })?;
        let leaf = chain
            .first()
            .ok_or_else(|| CertificateError::NoCertificate {
                path: self.cert.clone(),
            })?;
        let (_, x509) = x509_parser::parse_x509_certificate(leaf).map_err(|e| {
            CertificateError::BadCertificate {
                path: self.cert.clone(),
                reason: e.to_string(),
            }
        })?;
        let not_after = x509.validity().not_after.timestamp();
        let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .map_err(|source| CertificateError::Pem {
                path: self.key.clone(),
                source,
            })?
            .ok_or_else(|| CertificateError::NoKey {
                path: self.key.clone(),
            })?;
        let certified =
            CertifiedKey::from_der(chain, key, &crypto_provider()).map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => CertificateError::Mismatch {
                    cert: self.cert.clone(),
                    key: self.key.clone(),
                },
                other => CertificateError::BadKey {
                    path: self.key.clone(),
                    reason: other.to_string(),
                },
            })?;
        if not_after < chrono::Utc::now().timestamp() {
            tracing::warn!(
                cert = %self.cert.display(),
                not_after,
                "the serving certificate has expired; the API server will refuse it"
            );
        }
        Ok(LoadedPair {
            certified: Arc::new(certified),
            not_after,
            bytes,
        })
    }

    /// The directories to watch: where the `..data` swap happens.
    fn directories(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = [&self.cert, &self.key]
            .into_iter()
            .map(|p| match p.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
                _ => PathBuf::from("."),
            })
            .collect();
        dirs.dedup();
        dirs
    }
}

/// Hands every new handshake the current pair; swapped whole on reload.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    pub fn new(initial: Arc<CertifiedKey>) -> Self {
        Self {
            current: ArcSwap::new(initial),
        }
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        self.current.store(key);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS 1.2 and 1.3 only, ALPN `h2` then `http/1.1`, the certificate from `resolver`.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>, CertificateError> {
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Re-reads the pair when asked and swaps it in if it changed and is good.
#[derive(Debug)]
pub struct Reloader {
    files: CertificateFiles,
    resolver: Arc<CertResolver>,
    metrics: Arc<Metrics>,
    /// What the files held at the last attempt (or why they could not be read), so that an
    /// unchanged or still-broken pair is neither reloaded nor reported again.
    last_seen: Result<(Vec<u8>, Vec<u8>), String>,
}

/// What [`Reloader::check`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    Unchanged,
    Reloaded,
    Rejected,
}

impl Reloader {
    pub fn new(
        files: CertificateFiles,
        loaded: &LoadedPair,
        resolver: Arc<CertResolver>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            files,
            resolver,
            metrics,
            last_seen: Ok(loaded.bytes.clone()),
        }
    }

    /// Look at the files once.
    pub fn check(&mut self) -> ReloadOutcome {
        let seen = self.files.read().map_err(|e| e.to_string());
        if seen == self.last_seen {
            return ReloadOutcome::Unchanged;
        }
        self.last_seen = seen.clone();
        let result = match seen {
            Ok(bytes) => self.files.parse(bytes).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match result {
            Ok(pair) => {
                self.resolver.set(pair.certified);
                self.metrics.record_certificate_reload(true);
                self.metrics.set_certificate_expiry(pair.not_after);
                tracing::info!(
                    cert = %self.files.cert.display(),
                    not_after = pair.not_after,
                    "serving certificate reloaded"
                );
                ReloadOutcome::Reloaded
            }
            Err(error) => {
                self.metrics.record_certificate_reload(false);
                tracing::error!(
                    %error,
                    "new serving certificate rejected; still serving the previous one"
                );
                ReloadOutcome::Rejected
            }
        }
    }
}

/// Watch the certificate directories and re-check every `recheck`, until `stop`.
pub(crate) async fn watch_certificates(
    mut reloader: Reloader,
    recheck: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let _watcher = match start_watcher(&reloader.files.directories(), tx) {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(
                %error,
                every = ?recheck,
                "cannot watch the certificate directory; re-checking periodically only"
            );
            None
        }
    };
    // A change between the first load and the watcher's start.
    reloader.check();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + recheck, recheck);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(()) = rx.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                reloader.check();
            }
            _ = ticker.tick() => {
                reloader.check();
            }
        }
    }
}

fn start_watcher(
    dirs: &[PathBuf],
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            // Our own reads show up as access events.
            Ok(event) if matches!(event.kind, notify::EventKind::Access(_)) => {}
            _ => {
                let _ = tx.send(());
            }
        }
    })?;
    for dir in dirs {
        watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

/// Resolves once `stop` is true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Accept TLS connections until `shutdown`; each connection is served until it ends, or, after
/// `shutdown`, until its in-flight requests finish. Every task holds a clone of `shutdown`, so
/// the sender's `closed()` tells when all are done.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve_connection(
                    tcp,
                    peer,
                    acceptor.clone(),
                    app.clone(),
                    metrics.clone(),
                    shutdown.clone(),
                ));
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Dropping the listener here refuses new connections.
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let tls = tokio::select! {
        _ = stopped(&mut shutdown) => return,
        result = handshake => match result {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                metrics.tls_handshake_failures.inc();
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                metrics.tls_handshake_failures.inc();
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    // HTTP/2 answers that are ready together go out in one write (see `coalesce`).
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let io = TokioIo::new(Coalesce::new(tls, h2));
    let conn = builder.serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs;

    fn write_pair(dir: &Path, pair: &certs::ServingPair) -> CertificateFiles {
        let files = CertificateFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&files.cert, &pair.cert_pem).unwrap();
        std::fs::write(&files.key, &pair.key_pem).unwrap();
        files
    }

    fn issue() -> certs::ServingPair {
        certs::generate(&["localhost".into()], &[]).unwrap().serving
    }

    #[test]
    fn a_missing_file_is_named() {
        let files = CertificateFiles {
            cert: "/nonexistent/tls.crt".into(),
            key: "/nonexistent/tls.key".into(),
        };
        let err = files.load().unwrap_err().to_string();
        assert!(
            err.starts_with("/nonexistent/tls.crt: cannot read:"),
            "{err}"
        );
    }

    #[test]
    fn a_file_without_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), &issue());
        std::fs::write(&files.cert, "not a certificate").unwrap();
        let err = files.load().unwrap_err().to_string();
        assert!(
            err.ends_with("tls.crt: no PEM CERTIFICATE block found"),
            "{err}"
        );
        let files = write_pair(dir.path(), &issue());
        std::fs::write(&files.key, "").unwrap();
        let err = files.load().unwrap_err().to_string();
        assert!(err.contains("tls.key: no PEM private key found"), "{err}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), &issue());
        std::fs::write(&files.key, issue().key_pem).unwrap();
        let err = files.load().unwrap_err().to_string();
        assert!(
            err.contains("tls.key: private key does not match the certificate in"),
            "{err}"
        );
    }

    #[test]
    fn reloader_swaps_a_good_pair_and_keeps_the_old_one_over_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), &issue());
        let first = files.load().unwrap();
        let resolver = Arc::new(CertResolver::new(first.certified.clone()));
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(Metrics::new(&mut registry));
        let mut reloader = Reloader::new(files.clone(), &first, resolver.clone(), metrics);
        assert_eq!(reloader.check(), ReloadOutcome::Unchanged);

        let second = issue();
        write_pair(dir.path(), &second);
        assert_eq!(reloader.check(), ReloadOutcome::Reloaded);
        let serving = resolver.current().cert[0].clone();
        assert_ne!(serving, first.certified.cert[0]);

        std::fs::write(&files.key, issue().key_pem).unwrap();
        assert_eq!(reloader.check(), ReloadOutcome::Rejected);
        assert_eq!(resolver.current().cert[0], serving);
        // Still broken: not retried, not reported again.
        assert_eq!(reloader.check(), ReloadOutcome::Unchanged);
        let text = crate::metrics::encode(&registry);
        assert!(text.contains("kube_baseline_certificate_reloads_total{result=\"failure\"} 1"));
        assert!(text.contains("kube_baseline_certificate_reloads_total{result=\"success\"} 1"));
    }
}
