//! The webhook server: `/validate` and `/mutate` over TLS on the webhook port, `/metrics` and
//! `/health/*` in plain HTTP on the ops port.
//!
//! [`Server::start`] is the whole server in-process (tests bind `127.0.0.1:0`); [`run`] is
//! `kube-baseline serve`: a runtime, logging, signals, [`Server::start`], then
//! [`Server::shutdown`] on SIGTERM or SIGINT.

pub mod coalesce;
pub mod deadline;
pub mod json_log;
pub mod log_writer;
pub mod ops;
pub mod routes;
pub mod tls;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admission::Snapshot;
use crate::certs;
use crate::config::{Config, ConfigError};
use crate::exceptions::metrics::ExceptionMetrics;
use crate::exceptions::source::{run_file_source, run_kube_source};
use crate::metrics::Metrics;
use crate::policy::PolicyId;
use crate::signature::{SignatureMetrics, Verifier};

pub use deadline::{parse_go_duration, Deadline};
pub use ops::ops_router;
pub use routes::router;
pub use tls::{CertificateError, CertificateFiles};

/// Default request body limit: 3 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Default time kept in hand before the API server's deadline.
pub const DEFAULT_DEADLINE_MARGIN: Duration = Duration::from_secs(1);
/// Default bound on draining in-flight reviews at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Default period of the certificate re-check that backs up the directory watch.
pub const DEFAULT_CERT_RECHECK: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable lines.
    Pretty,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Serving certificate (PEM, leaf first).
    #[arg(long, env = "KUBE_BASELINE_TLS_CERT", default_value = "certs/tls.crt")]
    pub tls_cert: PathBuf,
    /// Private key of the serving certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "KUBE_BASELINE_TLS_KEY", default_value = "certs/tls.key")]
    pub tls_key: PathBuf,
    /// Address of the webhook port (TLS: /validate, /mutate).
    #[arg(long, env = "KUBE_BASELINE_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of the ops port (plain HTTP: /metrics, /health/live, /health/ready).
    #[arg(long, env = "KUBE_BASELINE_OPS_LISTEN", default_value = "0.0.0.0:8080")]
    pub ops_listen: SocketAddr,
    /// Policy configuration (default: the embedded policies/baseline.yaml).
    #[arg(long, env = "KUBE_BASELINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(
        long,
        env = "KUBE_BASELINE_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
    /// When neither certificate file exists, generate a development CA and a serving
    /// certificate for localhost/127.0.0.1/::1 next to --tls-cert (ca.crt, tls.crt, tls.key).
    #[arg(long, env = "KUBE_BASELINE_DEV_CERTS")]
    pub dev_certs: bool,
    /// Largest request body read; larger ones get 413.
    #[arg(long, env = "KUBE_BASELINE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Answer this long before the API server's ?timeout= (capped at half of it).
    #[arg(long, env = "KUBE_BASELINE_DEADLINE_MARGIN", default_value = "1s",
          value_parser = deadline::parse_duration_arg)]
    pub deadline_margin: Duration,
    /// At shutdown, wait at most this long for in-flight reviews.
    #[arg(long, env = "KUBE_BASELINE_SHUTDOWN_GRACE", default_value = "20s",
          value_parser = deadline::parse_duration_arg)]
    pub shutdown_grace: Duration,
    /// At shutdown, keep accepting for this long after readiness turns false (lets the
    /// Service's endpoints drop the pod first).
    #[arg(long, env = "KUBE_BASELINE_SHUTDOWN_DELAY", default_value = "0s",
          value_parser = deadline::parse_duration_arg)]
    pub shutdown_delay: Duration,
    /// Serve BaselineExceptions from this directory of YAML files (reloaded on change).
    #[arg(
        long,
        env = "KUBE_BASELINE_EXCEPTIONS_DIR",
        conflicts_with = "watch_exceptions"
    )]
    pub exceptions_dir: Option<PathBuf>,
    /// Serve BaselineExceptions from the Kubernetes API (watch, in-cluster credentials or
    /// the kubeconfig).
    #[arg(long, env = "KUBE_BASELINE_WATCH_EXCEPTIONS")]
    pub watch_exceptions: bool,
    /// The ADR index (policies/adrs.yaml or a mounted ConfigMap), reloaded on change.
    /// Required with an exception source.
    #[arg(long, env = "KUBE_BASELINE_ADRS")]
    pub adrs: Option<PathBuf>,
    /// Re-read the certificate files this often, in case a change event was missed.
    #[arg(long, env = "KUBE_BASELINE_CERT_RECHECK", default_value = "60s",
          value_parser = deadline::parse_duration_arg)]
    pub cert_recheck: Duration,
    /// Benchmark reference only: answer every review `allowed: true` after reading and
    /// decoding it, with no evaluation, metrics or decision log (`benches/load.rs`).
    #[arg(long, hide = true)]
    pub reference_noop: bool,
    /// Benchmark calibration only, with `--reference-noop`: busy-wait this many nanoseconds
    /// per review after decoding it, to measure what that much work costs in the load bench.
    #[arg(long, hide = true, requires = "reference_noop", default_value_t = 0)]
    pub reference_busy_ns: u64,
}

/// Request limits the handlers apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub deadline_margin: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            deadline_margin: DEFAULT_DEADLINE_MARGIN,
        }
    }
}

/// What `/health/ready` reports: ready when every flag is set and the server is not shutting
/// down.
#[derive(Debug, Default)]
pub struct Health {
    config_loaded: AtomicBool,
    certificates_loaded: AtomicBool,
    /// Shared with the exception source, which sets it after its first full sync.
    exceptions_synced: Arc<AtomicBool>,
    shutting_down: AtomicBool,
}

impl Health {
    pub fn set_config_loaded(&self, loaded: bool) {
        self.config_loaded.store(loaded, Ordering::SeqCst);
    }

    pub fn set_certificates_loaded(&self, loaded: bool) {
        self.certificates_loaded.store(loaded, Ordering::SeqCst);
    }

    /// Set by the exception source after its first full sync.
    pub fn set_exceptions_synced(&self, synced: bool) {
        self.exceptions_synced.store(synced, Ordering::SeqCst);
    }

    /// The flag an exception source sets after its first full sync.
    pub fn exceptions_synced_flag(&self) -> Arc<AtomicBool> {
        self.exceptions_synced.clone()
    }

    pub fn set_shutting_down(&self, shutting_down: bool) {
        self.shutting_down.store(shutting_down, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.not_ready_reasons().is_empty()
    }

    /// What readiness waits for, in words.
    pub fn not_ready_reasons(&self) -> Vec<&'static str> {
        let mut reasons = Vec::new();
        if self.shutting_down.load(Ordering::SeqCst) {
            reasons.push("shutting down");
        }
        if !self.config_loaded.load(Ordering::SeqCst) {
            reasons.push("policy configuration not loaded");
        }
        if !self.certificates_loaded.load(Ordering::SeqCst) {
            reasons.push("serving certificate not loaded");
        }
        if !self.exceptions_synced.load(Ordering::SeqCst) {
            reasons.push("exception source not synced");
        }
        reasons
    }
}

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Policies and exceptions, swapped whole when either changes.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Every metric family, for `/metrics`. Other parts register into it before the server
    /// starts (see [`Server::start`]).
    pub registry: Arc<Registry>,
    pub limits: Limits,
    /// Image signature verification, when `image-signature` is not `off` anywhere.
    pub verifier: Option<Verifier>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("health", &self.health)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// A state with its own registry and the serving metrics, everything marked loaded: for
    /// exercising [`router`] and [`ops_router`] without sockets.
    pub fn new(config: Config, limits: Limits) -> Self {
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::new(&mut registry));
        let health = Health::default();
        health.set_config_loaded(true);
        health.set_certificates_loaded(true);
        health.set_exceptions_synced(true);
        Self {
            snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::new(config))),
            metrics,
            health: Arc::new(health),
            registry: Arc::new(registry),
            limits,
            verifier: None,
        }
    }
}

/// Everything [`Server::start`] needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub ops_listen: SocketAddr,
    pub tls: CertificateFiles,
    /// `None`: the embedded `policies/baseline.yaml`.
    pub config: Option<PathBuf>,
    pub limits: Limits,
    pub shutdown_grace: Duration,
    pub shutdown_delay: Duration,
    pub cert_recheck: Duration,
    /// Readiness waits for [`Health::set_exceptions_synced`] (always, when an exception
    /// source is configured).
    pub await_exception_sync: bool,
    /// Serve [`routes::reference_noop_router`] instead of [`router`]: the same TLS, HTTP,
    /// body limit, decode and encode with no evaluation. For the load bench's reference.
    pub reference_noop: bool,
    /// With [`Settings::reference_noop`]: the reference busy-waits this long per review.
    pub reference_busy: Duration,
    pub exceptions: ExceptionSource,
}

/// Where BaselineExceptions come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ExceptionSource {
    /// None: nothing is waived.
    #[default]
    None,
    /// A directory of YAML files and the ADR index file.
    Files { dir: PathBuf, adrs: PathBuf },
    /// The Kubernetes API and the ADR index file.
    Kubernetes { adrs: PathBuf },
}

impl Settings {
    /// Defaults, with these certificate files.
    pub fn new(tls_cert: impl Into<PathBuf>, tls_key: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8443),
            ops_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080),
            tls: CertificateFiles {
                cert: tls_cert.into(),
                key: tls_key.into(),
            },
            config: None,
            limits: Limits::default(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            shutdown_delay: Duration::ZERO,
            cert_recheck: DEFAULT_CERT_RECHECK,
            await_exception_sync: false,
            exceptions: ExceptionSource::None,
            reference_noop: false,
            reference_busy: Duration::ZERO,
        }
    }

    /// Both ports on 127.0.0.1 with ports chosen by the OS.
    pub fn loopback(mut self) -> Self {
        self.listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        self.ops_listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        self
    }
}

impl From<&ServeArgs> for Settings {
    fn from(args: &ServeArgs) -> Self {
        let mut settings = Settings::new(&args.tls_cert, &args.tls_key);
        settings.listen = args.listen;
        settings.ops_listen = args.ops_listen;
        settings.config = args.config.clone();
        settings.limits = Limits {
            max_body_bytes: args.max_body_bytes,
            deadline_margin: args.deadline_margin,
        };
        settings.shutdown_grace = args.shutdown_grace;
        settings.shutdown_delay = args.shutdown_delay;
        settings.cert_recheck = args.cert_recheck;
        settings.exceptions = match (&args.exceptions_dir, args.watch_exceptions, &args.adrs) {
            (Some(dir), _, Some(adrs)) => ExceptionSource::Files {
                dir: dir.clone(),
                adrs: adrs.clone(),
            },
            (None, true, Some(adrs)) => ExceptionSource::Kubernetes { adrs: adrs.clone() },
            _ => ExceptionSource::None,
        };
        settings.reference_noop = args.reference_noop;
        settings.reference_busy = Duration::from_nanos(args.reference_busy_ns);
        settings
    }
}

impl ServeArgs {
    /// Flag combinations clap cannot express.
    fn check(&self) -> anyhow::Result<()> {
        let source = self.exceptions_dir.is_some() || self.watch_exceptions;
        if source && self.adrs.is_none() {
            anyhow::bail!(
                "--adrs FILE is required with --exceptions-dir or --watch-exceptions: an exception waives only when its ADR is accepted in the index"
            );
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    #[error("policies.image-signature: {0}")]
    Signature(#[from] crate::signature::SignatureError),
    #[error("--exceptions-dir: {0}")]
    Exceptions(#[from] crate::exceptions::source::SourceError),
    #[error("--watch-exceptions: cannot reach the Kubernetes API: {0}")]
    Kubernetes(#[source] kube::Error),
    #[error("{flag} {addr}: cannot listen: {source}")]
    Bind {
        flag: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// Where the webhook port listens (the bound port when 0 was asked).
    pub webhook_addr: SocketAddr,
    pub ops_addr: SocketAddr,
    state: AppState,
    webhook_shutdown: watch::Sender<bool>,
    webhook_task: JoinHandle<()>,
    stop: watch::Sender<bool>,
    ops_task: JoinHandle<()>,
    reload_task: JoinHandle<()>,
    exceptions_task: Option<JoinHandle<()>>,
    shutdown_grace: Duration,
    shutdown_delay: Duration,
}

/// How a shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shutdown {
    /// Every webhook connection finished within the grace period.
    pub drained: bool,
}

impl Server {
    /// Load the configuration and the certificates (failing on a bad one, naming the file and
    /// the reason), then bind both ports and serve.
    pub async fn start(settings: Settings) -> Result<Server, ServerError> {
        let config = match &settings.config {
            Some(path) => Config::load(path)?,
            None => Config::embedded(),
        };
        let pair = settings.tls.load()?;

        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::new(&mut registry));
        let exception_metrics = ExceptionMetrics::register(&mut registry);
        let signature_metrics = SignatureMetrics::register(&mut registry);
        let verifier = if config.is_used_anywhere(PolicyId::ImageSignature) {
            Some(Verifier::with_metrics(
                &config.policies.image_signature,
                signature_metrics,
            )?)
        } else {
            None
        };

        let health = Arc::new(Health::default());
        health.set_config_loaded(true);
        health.set_certificates_loaded(true);
        let has_source = settings.exceptions != ExceptionSource::None;
        health.set_exceptions_synced(!(settings.await_exception_sync || has_source));
        metrics.set_certificate_expiry(pair.not_after);
        let config = Arc::new(config);

        let state = AppState {
            snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::new((*config).clone()))),
            metrics: metrics.clone(),
            health,
            registry: Arc::new(registry),
            limits: settings.limits,
            verifier,
        };
        let exceptions_task =
            start_exception_source(&settings.exceptions, &state, config, exception_metrics).await?;

        let resolver = Arc::new(tls::CertResolver::new(pair.certified.clone()));
        let acceptor = TlsAcceptor::from(tls::server_config(resolver.clone())?);

        let webhook_listener = bind("--listen", settings.listen).await?;
        let ops_listener = bind("--ops-listen", settings.ops_listen).await?;
        let webhook_addr = local_addr("--listen", &webhook_listener)?;
        let ops_addr = local_addr("--ops-listen", &ops_listener)?;

        let app = if settings.reference_noop {
            tracing::warn!("--reference-noop: every review is allowed without evaluation");
            routes::reference_noop_router(state.clone(), settings.reference_busy)
        } else {
            router(state.clone())
        };
        let (webhook_shutdown, webhook_rx) = watch::channel(false);
        let webhook_task = tokio::spawn(tls::serve(
            webhook_listener,
            acceptor,
            app,
            metrics.clone(),
            webhook_rx,
        ));
        let (stop, stop_rx) = watch::channel(false);
        let reloader = tls::Reloader::new(settings.tls.clone(), &pair, resolver, metrics);
        let reload_task = tokio::spawn(tls::watch_certificates(
            reloader,
            settings.cert_recheck,
            stop_rx.clone(),
        ));
        let ops_task = tokio::spawn(ops::serve(ops_listener, ops_router(state.clone()), stop_rx));

        tracing::info!(
            webhook = %webhook_addr,
            ops = %ops_addr,
            cert = %settings.tls.cert.display(),
            version = env!("CARGO_PKG_VERSION"),
            "listening"
        );
        Ok(Server {
            webhook_addr,
            ops_addr,
            state,
            webhook_shutdown,
            webhook_task,
            stop,
            ops_task,
            reload_task,
            exceptions_task,
            shutdown_grace: settings.shutdown_grace,
            shutdown_delay: settings.shutdown_delay,
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Readiness turns false; after the shutdown delay the webhook port stops accepting
    /// (new connections are refused) and open connections finish their in-flight requests
    /// (HTTP/2 gets GOAWAY, HTTP/1.1 closes after the current response), for at most the
    /// grace period; then the ops port and the certificate watch stop.
    pub async fn shutdown(self) -> Shutdown {
        self.state.health.set_shutting_down(true);
        tracing::info!(grace = ?self.shutdown_grace, "shutting down: readiness is false");
        if !self.shutdown_delay.is_zero() {
            tokio::time::sleep(self.shutdown_delay).await;
        }
        let _ = self.webhook_shutdown.send(true);
        let drained = tokio::time::timeout(self.shutdown_grace, self.webhook_shutdown.closed())
            .await
            .is_ok();
        if drained {
            tracing::info!("in-flight reviews drained");
        } else {
            tracing::warn!(
                in_flight = self.state.metrics.in_flight.get(),
                "grace period over with connections still open; closing them"
            );
        }
        self.webhook_task.abort();
        let _ = self.stop.send(true);
        let mut ops_task = self.ops_task;
        if tokio::time::timeout(ops::OPS_DRAIN, &mut ops_task)
            .await
            .is_err()
        {
            ops_task.abort();
        }
        let _ = self.reload_task.await;
        if let Some(task) = self.exceptions_task {
            task.abort();
        }
        Shutdown { drained }
    }
}

/// Start the configured exception source; every registry it builds becomes a new snapshot
/// with the same configuration, swapped whole.
async fn start_exception_source(
    source: &ExceptionSource,
    state: &AppState,
    config: Arc<Config>,
    metrics: ExceptionMetrics,
) -> Result<Option<JoinHandle<()>>, ServerError> {
    let snapshot = state.snapshot.clone();
    let base = config.clone();
    let publish = move |registry: crate::exceptions::Registry| {
        snapshot.store(Arc::new(Snapshot {
            config: (*base).clone(),
            exceptions: registry,
        }));
    };
    let synced = state.health.exceptions_synced_flag();
    let task = match source {
        ExceptionSource::None => return Ok(None),
        ExceptionSource::Files { dir, adrs } => {
            if !dir.is_dir() {
                return Err(crate::exceptions::source::SourceError::NotADirectory {
                    path: dir.display().to_string(),
                }
                .into());
            }
            let (dir, adrs) = (dir.clone(), adrs.clone());
            tokio::spawn(async move {
                let run = run_file_source(dir, adrs, config, publish, synced, metrics);
                if let Err(e) = run.await {
                    tracing::error!(error = %e, "exception file source stopped");
                }
            })
        }
        ExceptionSource::Kubernetes { adrs } => {
            let client = kube::Client::try_default()
                .await
                .map_err(ServerError::Kubernetes)?;
            let adrs = adrs.clone();
            tokio::spawn(async move {
                let run = run_kube_source(client, adrs, config, publish, synced, metrics);
                if let Err(e) = run.await {
                    tracing::error!(error = %e, "exception watch stopped");
                }
            })
        }
    };
    Ok(Some(task))
}

async fn bind(flag: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { flag, addr, source })
}

fn local_addr(flag: &'static str, listener: &TcpListener) -> Result<SocketAddr, ServerError> {
    listener.local_addr().map_err(|source| ServerError::Bind {
        flag,
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        source,
    })
}

/// `--dev-certs`: when neither file exists, generate a CA and a serving certificate for
/// localhost, write them next to the certificate, and say where the CA is. Returns whether
/// it generated.
pub fn ensure_dev_certs(cert: &Path, key: &Path) -> anyhow::Result<bool> {
    match (cert.exists(), key.exists()) {
        (true, true) => return Ok(false),
        (true, false) | (false, true) => {
            let (present, missing) = if cert.exists() {
                (cert, key)
            } else {
                (key, cert)
            };
            anyhow::bail!(
                "--dev-certs: {} exists but {} does not; remove the one or provide both",
                present.display(),
                missing.display()
            );
        }
        (false, false) => {}
    }
    let generated = certs::generate(
        &["localhost".to_owned()],
        &[
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
    )?;
    let dir = match cert.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let written = certs::Written {
        ca: dir.join(certs::CA_FILE),
        cert: cert.to_owned(),
        key: key.to_owned(),
    };
    // The CA belongs to this pair; an old ca.crt beside missing files is stale.
    certs::write_to(&written, &generated, true)?;
    eprintln!("kube-baseline: generated development certificates (localhost, 127.0.0.1, ::1)");
    eprint!("{}", certs::describe(&written, &generated));
    Ok(true)
}

/// Logging to stdout through [`log_writer`]. The guard flushes at the end of `serve`; `None`
/// when no thread could be started (then lines go straight to stdout).
fn init_tracing(format: LogFormat) -> Option<log_writer::LogGuard> {
    match log_writer::LogWriter::spawn(std::io::stdout()) {
        Ok((writer, guard)) => {
            let installed = install_tracing(format, writer.clone());
            if installed && format == LogFormat::Json {
                json_log::write_decisions_to(writer);
            }
            installed.then_some(guard)
        }
        Err(_) => {
            install_tracing(format, std::io::stdout);
            None
        }
    }
}

/// Whether this call installed the subscriber (a second call in one process keeps the first).
fn install_tracing<W>(format: LogFormat, writer: W) -> bool
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let result = match format {
        LogFormat::Json => tracing_subscriber::fmt()
            .event_format(json_log::JsonLines)
            .with_env_filter(filter)
            .with_writer(writer)
            .try_init(),
        LogFormat::Pretty => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .try_init(),
    };
    result.is_ok()
}

/// Resolves on SIGTERM or SIGINT, naming it.
async fn terminated() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        })
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}

/// `kube-baseline serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    args.check()?;
    let _logs = init_tracing(args.log_format);
    if args.dev_certs {
        ensure_dev_certs(&args.tls_cert, &args.tls_key)?;
    }
    let settings = Settings::from(&args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = Server::start(settings).await?;
        let signal = terminated().await?;
        tracing::info!(signal, "signal received");
        let outcome = server.shutdown().await;
        tracing::info!(drained = outcome.drained, "stopped");
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<Settings, clap::Error> {
        let cli = <Cli as clap::Parser>::try_parse_from(
            ["kube-baseline", "--tls-cert", "c.pem", "--tls-key", "k.pem"]
                .iter()
                .chain(args),
        )?;
        Ok(Settings::from(&cli.serve))
    }

    #[test]
    fn the_reference_busy_wait_is_only_for_the_reference_noop() {
        let error = parse(&["--reference-busy-ns", "2000"]).expect_err("refused");
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert!(error.to_string().contains("--reference-noop"), "{error}");

        let settings = parse(&["--reference-noop", "--reference-busy-ns", "2000"]).unwrap();
        assert!(settings.reference_noop);
        assert_eq!(settings.reference_busy, Duration::from_micros(2));
        let settings = parse(&[]).unwrap();
        assert!(!settings.reference_noop);
        assert_eq!(settings.reference_busy, Duration::ZERO);
    }
}
