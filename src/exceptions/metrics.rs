//! The registry's metrics. `kube_baseline_waivers_total{adr,policy}` is counted by the server
//! from `Decision::waivers`; everything about the registry's state is here.

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExpiryLabels {
    pub exception: String,
    pub adr: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

/// Source label values.
pub const KUBERNETES: &str = "kubernetes";
pub const FILES: &str = "files";

/// Handles to the registry's metric families; cheap to clone (shared inside).
#[derive(Debug, Clone, Default)]
pub struct ExceptionMetrics {
    exceptions: Family<StateLabels, Gauge>,
    expiry: Family<ExpiryLabels, Gauge>,
    synced: Family<SourceLabels, Gauge>,
    errors: Family<SourceLabels, Counter>,
}

impl ExceptionMetrics {
    /// Register the families (names without `_total`; the client library adds it).
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let m = Self::default();
        registry.register(
            "kube_baseline_exceptions",
            "BaselineExceptions by state (active, expiring, expired, invalid)",
            m.exceptions.clone(),
        );
        registry.register(
            "kube_baseline_exception_expiry_timestamp_seconds",
            "When each valid BaselineException expires (unix seconds)",
            m.expiry.clone(),
        );
        registry.register(
            "kube_baseline_exception_source_synced",
            "1 when the exception source has loaded its initial set and its last read succeeded",
            m.synced.clone(),
        );
        registry.register(
            "kube_baseline_exception_source_errors",
            "Errors reading exceptions (watch errors, unreadable or broken files)",
            m.errors.clone(),
        );
        m
    }

    /// Set the state gauges and expiry timestamps from a registry at `now`.
    pub fn observe(&self, registry: &Registry, now: DateTime<Utc>, warning_days: u32) {
        let c = registry.counts(now, warning_days);
        for (state, n) in [
            ("active", c.active),
            ("expiring", c.expiring),
            ("expired", c.expired),
            ("invalid", c.invalid),
        ] {
            self.exceptions
                .get_or_create(&StateLabels { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.expiry.clear();
        for e in registry.exceptions() {
            self.expiry
                .get_or_create(&ExpiryLabels {
                    exception: e.name.clone(),
                    adr: e.adr.clone(),
                })
                .set(e.expires.timestamp());
        }
    }

    /// Also creates the source's error counter at 0, so `rate()` and `increase()` see it
    /// from the start.
    pub fn set_synced(&self, source: &'static str, synced: bool) {
        self.synced
            .get_or_create(&SourceLabels { source })
            .set(i64::from(synced));
        drop(self.errors.get_or_create(&SourceLabels { source }));
    }

    pub fn error(&self, source: &'static str) {
        self.errors.get_or_create(&SourceLabels { source }).inc();
    }

    /// Current error count of a source (for tests and logs).
    pub fn errors(&self, source: &'static str) -> u64 {
        self.errors.get_or_create(&SourceLabels { source }).get()
    }

    pub fn synced(&self, source: &'static str) -> bool {
        self.synced.get_or_create(&SourceLabels { source }).get() == 1
    }
}
