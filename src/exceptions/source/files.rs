//! A directory of YAML files of `BaselineException` documents (`policies/exceptions/`),
//! reloaded on change. A file that cannot be read as exceptions is reported (log line and
//! `kube_baseline_exception_source_errors_total{source="files"}`) and its last good content
//! kept; a file that reads but whose exceptions fail validation yields invalid exceptions
//! (they waive nothing; `kube_baseline_exceptions{state="invalid"}`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::Utc;
use serde::Deserialize;

use super::{parent_dir, watch_dirs, AdrFile, SourceError, REFRESH};
use crate::config::Config;
use crate::exceptions::metrics::{ExceptionMetrics, FILES};
use crate::exceptions::validation::{parse_object, Problem};
use crate::exceptions::{Loaded, Registry};

/// Every document of a YAML (or JSON) text, each read with [`parse_object`]. Empty
/// documents are skipped. `origin` names the file; documents after the first are named
/// `FILE (document N)`.
pub fn read_documents(text: &str, origin: &str) -> Vec<Loaded> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let name = if i == 0 {
            origin.to_owned()
        } else {
            format!("{origin} (document {})", i + 1)
        };
        let value = match serde_json::Value::deserialize(doc) {
            Ok(serde_json::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                out.push(Loaded {
                    origin: name,
                    object: Err(Problem::new("(yaml)", e.to_string())),
                });
                // The parser cannot resynchronise after a syntax error.
                break;
            }
        };
        out.push(Loaded {
            origin: name,
            object: parse_object(value),
        });
    }
    out
}

/// Whether a directory entry is an exceptions file: `*.yaml` / `*.yml`, not hidden (a
/// ConfigMap mount's `..data` entries are hidden).
fn is_exceptions_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    !hidden && yaml && path.is_file()
}

/// The last good content of each file: what it holds, and a hash of its text to notice a
/// change (the text itself is not kept: with 10,000 files it is megabytes).
#[derive(Debug)]
struct FileState {
    hash: u64,
    loaded: Vec<Loaded>,
}

fn hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// What one scan found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// The set of exceptions or the ADR index changed: publish a new registry.
    pub changed: bool,
    /// Files (and the ADR index) that could not be read, newly reported in this scan.
    pub errors: Vec<String>,
}

/// The directory source's state: the last good content of every file and of the ADR index.
#[derive(Debug)]
pub struct FileSource {
    dir: PathBuf,
    adrs: AdrFile,
    config: Arc<Config>,
    metrics: ExceptionMetrics,
    files: BTreeMap<PathBuf, FileState>,
    /// Broken content already reported, so a file that stays broken is counted once.
    reported: HashMap<PathBuf, String>,
}

impl FileSource {
    pub fn new(
        dir: PathBuf,
        adrs_path: PathBuf,
        config: Arc<Config>,
        metrics: ExceptionMetrics,
    ) -> Self {
        Self {
            dir,
            adrs: AdrFile::new(adrs_path),
            config,
            metrics,
            files: BTreeMap::new(),
            reported: HashMap::new(),
        }
    }

    /// Re-read the ADR index and every file of the directory.
    pub fn scan(&mut self) -> ScanReport {
        let mut report = ScanReport {
            changed: self.adrs.reload(&self.metrics, FILES),
            ..ScanReport::default()
        };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                let msg = format!("{}: cannot read directory: {e}", self.dir.display());
                if self.reported.insert(self.dir.clone(), msg.clone()).as_ref() != Some(&msg) {
                    tracing::warn!(error = %msg, "keeping the last good exceptions");
                    self.metrics.error(FILES);
                    report.errors.push(msg);
                }
                return report;
            }
        };
        self.reported.remove(&self.dir);
        let mut present: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_exceptions_file(p) && !self.adrs.is(p))
            .collect();
        present.sort();

        let before = self.files.len();
        self.files.retain(|path, _| present.contains(path));
        self.reported.retain(|path, _| present.contains(path));
        report.changed |= self.files.len() != before;

        for path in present {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    self.broken(
                        &path,
                        format!("\0{e}"),
                        format!("cannot read: {e}"),
                        &mut report,
                    );
                    continue;
                }
            };
            let digest = hash(&text);
            if self.files.get(&path).is_some_and(|f| f.hash == digest) {
                self.reported.remove(&path);
                continue;
            }
            let origin = path.display().to_string();
            let mut loaded = read_documents(&text, &origin);
            // Kept until the file changes: without the spare capacity of the vector's
            // growth (room for 4 objects of ~600 bytes for a file of one), which was half
            // the heap with 10,000 one-exception files (massif, docs/benchmarks-history.md).
            loaded.shrink_to_fit();
            let problems: Vec<String> = loaded
                .iter()
                .filter_map(|l| {
                    l.object
                        .as_ref()
                        .err()
                        .map(|p| format!("{}: {p}", l.origin))
                })
                .collect();
            if problems.is_empty() {
                if self.reported.remove(&path).is_some() {
                    tracing::info!(path = %origin, "exceptions file fixed");
                }
                self.files.insert(
                    path,
                    FileState {
                        hash: digest,
                        loaded,
                    },
                );
                report.changed = true;
            } else {
                let msg = problems.join("; ");
                self.broken(&path, text, msg, &mut report);
            }
        }
        report
    }

    fn broken(&mut self, path: &Path, content: String, message: String, report: &mut ScanReport) {
        if self.reported.get(path) == Some(&content) {
            return;
        }
        self.reported.insert(path.to_path_buf(), content);
        let kept = if self.files.contains_key(path) {
            "keeping its last good content"
        } else {
            "no earlier content to keep"
        };
        tracing::warn!(path = %path.display(), error = %message, "broken exceptions file; {kept}");
        self.metrics.error(FILES);
        report.errors.push(format!("{}: {message}", path.display()));
    }

    /// Whether the ADR index has been loaded once: before that the source is not synced.
    pub fn is_complete(&self) -> bool {
        self.adrs.index().is_some()
    }

    /// A registry of the last good content, validated at `now`.
    pub fn registry(&self, now: chrono::DateTime<Utc>) -> Registry {
        let loaded = self.files.values().flat_map(|f| f.loaded.iter().cloned());
        Registry::build(
            loaded,
            self.adrs.index().unwrap_or_default(),
            &self.config,
            now,
        )
    }
}

/// Serve exceptions from `dir` until the task is dropped. `publish` receives a new registry
/// after the first complete load and after every change; `synced` turns true after the first
/// complete load (the ADR index read) and stays true. Fails only when the directories
/// cannot be watched.
pub async fn run_file_source(
    dir: PathBuf,
    adrs_path: PathBuf,
    config: Arc<Config>,
    publish: impl Fn(Registry) + Send + 'static,
    synced: Arc<AtomicBool>,
    metrics: ExceptionMetrics,
) -> Result<(), SourceError> {
    if !dir.is_dir() {
        return Err(SourceError::NotADirectory {
            path: dir.display().to_string(),
        });
    }
    let adrs_dir = parent_dir(&adrs_path);
    let (_watcher, mut events) = watch_dirs(&[dir.as_path(), adrs_dir.as_path()])?;
    let warning_days = config.exceptions.expiry_warning_days;
    let mut source = FileSource::new(dir, adrs_path, config, metrics.clone());
    metrics.set_synced(FILES, false);
    let mut published: Option<Registry> = None;
    // The first scan is the loop's first pass, not the interval's immediate first tick.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + REFRESH, REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let report = source.scan();
        let now = Utc::now();
        if source.is_complete() && (report.changed || published.is_none()) {
            let registry = source.registry(now);
            metrics.observe(&registry, now, warning_days);
            for bad in registry.invalid() {
                let problems: Vec<String> = bad.problems.iter().map(|p| p.to_string()).collect();
                tracing::warn!(exception = %bad.name, origin = %bad.origin, problems = %problems.join("; "), "invalid exception: it waives nothing");
            }
            tracing::info!(
                exceptions = registry.exceptions().len(),
                invalid = registry.invalid().len(),
                "exceptions loaded from files"
            );
            publish(registry.clone());
            if published.is_none() {
                synced.store(true, Ordering::Release);
                metrics.set_synced(FILES, true);
            }
            published = Some(registry);
        } else if let Some(registry) = &published {
            // Nothing changed: only time moved (expiring, expired).
            metrics.observe(registry, now, warning_days);
        }
        tokio::select! {
            event = events.recv() => {
                if event.is_none() {
                    return Ok(());
                }
                // Editors and ConfigMap updates come as bursts of events: take them all.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                while events.try_recv().is_ok() {}
            }
            _ = tick.tick() => {}
        }
    }
}
