//! Where exceptions come from: the Kubernetes API ([`kube`]) or a directory of YAML files
//! ([`files`]). Both keep the last good state when a read fails, build a whole new
//! [`Registry`](crate::exceptions::Registry) on every change and hand it to a `publish` callback; the server stores it in
//! a new snapshot. Both take the ADR index from a file (the repository's `policies/adrs.yaml`
//! or a mounted ConfigMap), reloaded on change.

pub mod files;
pub mod kube;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::adr::AdrIndex;
use super::metrics::ExceptionMetrics;

pub use files::{run_file_source, FileSource};
pub use kube::{run_kube_source, KubeSource};

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: String,
        #[source]
        source: notify::Error,
    },
    #[error("{path}: not a directory")]
    NotADirectory { path: String },
}

/// How often time-dependent metrics (expiring, expired) are refreshed and files re-read
/// even without a change notification.
pub const REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// Watch directories (not recursively); every event becomes a `()` on the channel. Watching
/// the directory rather than the file survives the atomic `..data` symlink swap of a
/// ConfigMap mount and editors that replace files.
pub(crate) fn watch_dirs(
    dirs: &[&Path],
) -> Result<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<()>), SourceError> {
    use notify::Watcher;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Only changes: reading the files (a scan) raises access events, which must not
        // trigger another scan.
        if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = tx.send(());
        }
    })
    .map_err(|source| SourceError::Watch {
        path: dirs
            .first()
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
        source,
    })?;
    for dir in dirs {
        watcher
            .watch(dir, notify::RecursiveMode::NonRecursive)
            .map_err(|source| SourceError::Watch {
                path: dir.display().to_string(),
                source,
            })?;
    }
    Ok((watcher, rx))
}

/// The directory holding a file (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The ADR index file with its last good content.
#[derive(Debug)]
pub(crate) struct AdrFile {
    path: PathBuf,
    last_text: Option<String>,
    good: Option<Arc<AdrIndex>>,
}

impl AdrFile {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            last_text: None,
            good: None,
        }
    }

    /// Re-read; `true` when the good index changed. A broken or missing file is reported
    /// once per content and the last good index kept.
    pub fn reload(&mut self, metrics: &ExceptionMetrics, source: &'static str) -> bool {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                let marker = format!("\0unreadable: {e}");
                if self.last_text.as_deref() != Some(&marker) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot read the ADR index; keeping the last good one");
                    metrics.error(source);
                    self.last_text = Some(marker);
                }
                return false;
            }
        };
        if self.last_text.as_deref() == Some(&text) {
            return false;
        }
        self.last_text = Some(text.clone());
        match AdrIndex::parse(&text, &self.path.display().to_string()) {
            Ok(index) => {
                tracing::info!(path = %self.path.display(), adrs = index.len(), "ADR index loaded");
                self.good = Some(Arc::new(index));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "broken ADR index; keeping the last good one");
                metrics.error(source);
                false
            }
        }
    }

    /// Whether `path` is this file (so a directory source holding it skips it).
    pub fn is(&self, path: &Path) -> bool {
        path == self.path
            || matches!(
                (path.canonicalize(), self.path.canonicalize()),
                (Ok(a), Ok(b)) if a == b
            )
    }

    pub fn index(&self) -> Option<Arc<AdrIndex>> {
        self.good.clone()
    }
}
