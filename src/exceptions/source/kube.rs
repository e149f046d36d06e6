//! `BaselineException` objects from the Kubernetes API: a kube-runtime watcher feeding a
//! reflector store (`watcher(..).default_backoff().reflect(writer)`). Readiness waits for
//! the initial list; on watch errors the store keeps the last good state while the watcher
//! retries with backoff, and `kube_baseline_exception_source_synced{source="kubernetes"}`
//! drops to 0 until the watch recovers.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::Utc;
use futures::{FutureExt, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

use super::{parent_dir, watch_dirs, AdrFile, SourceError, REFRESH};
use crate::config::Config;
use crate::exceptions::metrics::{ExceptionMetrics, KUBERNETES};
use crate::exceptions::model::BaselineException;
use crate::exceptions::{Loaded, Registry};

/// The reflector's view, and whether the initial list has completed.
#[derive(Debug, Clone)]
pub struct KubeSource {
    reader: Store<BaselineException>,
    synced: bool,
}

impl KubeSource {
    pub fn new(reader: Store<BaselineException>) -> Self {
        Self {
            reader,
            synced: false,
        }
    }

    /// Called with each event after the reflector applied it to the store. Returns whether
    /// the registry must be rebuilt: at the end of every (re-)list, and on each change once
    /// the first list is complete. Events of a list in progress wait for its end, so a
    /// re-list never publishes half a set.
    pub fn on_event(&mut self, event: &Event<BaselineException>) -> bool {
        match event {
            Event::Init | Event::InitApply(_) => false,
            Event::InitDone => {
                self.synced = true;
                true
            }
            Event::Apply(_) | Event::Delete(_) => self.synced,
        }
    }

    /// Whether the first list has completed.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// The store's objects, for [`Registry::build`].
    pub fn loaded(&self) -> Vec<Loaded> {
        self.reader
            .state()
            .into_iter()
            .map(|o| Loaded {
                origin: "kubernetes".into(),
                object: Ok(BaselineException::clone(&o)),
            })
            .collect()
    }
}

/// Watch `BaselineException`s cluster-wide until the task is dropped. `publish` receives a
/// new registry after the initial list and after every change (and when the ADR index file
/// changes); `synced` turns true after the initial list with the ADR index loaded, and stays
/// true (the last good state keeps serving while the watch retries).
pub async fn run_kube_source(
    client: Client,
    adrs_path: PathBuf,
    config: Arc<Config>,
    publish: impl Fn(Registry) + Send + 'static,
    synced: Arc<AtomicBool>,
    metrics: ExceptionMetrics,
) -> Result<(), SourceError> {
    let adrs_dir = parent_dir(&adrs_path);
    let (_adr_watch, mut adr_events) = watch_dirs(&[adrs_dir.as_path()])?;
    let mut adrs = AdrFile::new(adrs_path);
    adrs.reload(&metrics, KUBERNETES);
    let warning_days = config.exceptions.expiry_warning_days;

    let api: Api<BaselineException> = Api::all(client);
    let (reader, writer) = reflector::store();
    let mut source = KubeSource::new(reader);
    let stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let mut stream = std::pin::pin!(stream);
    metrics.set_synced(KUBERNETES, false);
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut current: Option<Registry> = None;

    loop {
        let mut rebuild = false;
        tokio::select! {
            item = stream.next() => {
                let Some(item) = item else { return Ok(()) };
                rebuild |= handle(&mut source, item, &metrics);
                // Take every event already waiting, then build once.
                while let Some(Some(item)) = stream.next().now_or_never() {
                    rebuild |= handle(&mut source, item, &metrics);
                }
            }
            event = adr_events.recv() => {
                if event.is_none() {
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                while adr_events.try_recv().is_ok() {}
                rebuild |= adrs.reload(&metrics, KUBERNETES) && source.is_synced();
            }
            _ = tick.tick() => {
                let now = Utc::now();
                if let Some(registry) = &current {
                    metrics.observe(registry, now, warning_days);
                }
            }
        }
        let Some(index) = adrs.index().filter(|_| rebuild && source.is_synced()) else {
            continue;
        };
        let now = Utc::now();
        let registry = Registry::build(source.loaded(), Arc::clone(&index), &config, now);
        metrics.observe(&registry, now, warning_days);
        for bad in registry.invalid() {
            let problems: Vec<String> = bad.problems.iter().map(|p| p.to_string()).collect();
            tracing::warn!(exception = %bad.name, problems = %problems.join("; "), "invalid exception: it waives nothing");
        }
        tracing::info!(
            exceptions = registry.exceptions().len(),
            invalid = registry.invalid().len(),
            "exceptions loaded from the Kubernetes API"
        );
        // Keep it (a cheap, shared clone) for the periodic metrics refresh.
        current = Some(registry.clone());
        publish(registry);
        synced.store(true, Ordering::Release);
    }
}

fn handle(
    source: &mut KubeSource,
    item: Result<Event<BaselineException>, watcher::Error>,
    metrics: &ExceptionMetrics,
) -> bool {
    match item {
        Ok(event) => {
            let rebuild = source.on_event(&event);
            if source.is_synced() {
                metrics.set_synced(KUBERNETES, true);
            }
            rebuild
        }
        Err(e) => {
            tracing::warn!(error = %e, "BaselineException watch failed; keeping the last good exceptions and retrying (is the CRD installed and the RBAC granted?)");
            metrics.error(KUBERNETES);
            metrics.set_synced(KUBERNETES, false);
            false
        }
    }
}
