//! The signature metrics, registered into the server's registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RegistryLabel {
    pub registry: String,
}

type HistogramFamily = Family<RegistryLabel, Histogram, fn() -> Histogram>;

/// `kube_baseline_signature_verifications_total{result}`,
/// `kube_baseline_signature_cache_requests_total{result}`,
/// `kube_baseline_registry_request_duration_seconds{registry}`.
#[derive(Clone, Debug)]
pub struct SignatureMetrics {
    pub(crate) verifications: Family<ResultLabel, Counter>,
    pub(crate) cache: Family<ResultLabel, Counter>,
    pub(crate) registry_duration: HistogramFamily,
}

fn registry_histogram() -> Histogram {
    // 1 ms … ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl SignatureMetrics {
    /// Create the families and register them.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            verifications: Family::default(),
            cache: Family::default(),
            registry_duration: Family::new_with_constructor(registry_histogram),
        };
        registry.register(
            "kube_baseline_signature_verifications",
            "Image signature verifications by result",
            m.verifications.clone(),
        );
        registry.register(
            "kube_baseline_signature_cache_requests",
            "Lookups of the verified-digest cache by result",
            m.cache.clone(),
        );
        registry.register(
            "kube_baseline_registry_request_duration_seconds",
            "Duration of calls to OCI registries, by registry host",
            m.registry_duration.clone(),
        );
        // Results known in advance start at 0, so rates and alerts see them from the start.
        for result in [
            "verified",
            "unsigned",
            "invalid_signature",
            "not_found",
            "registry_unreachable",
            "error",
        ] {
            drop(m.verifications.get_or_create(&ResultLabel { result }));
        }
        for result in ["hit", "miss", "negative_hit"] {
            drop(m.cache.get_or_create(&ResultLabel { result }));
        }
        m
    }

    /// Value of `kube_baseline_signature_verifications_total{result}` (tests, status pages).
    pub fn verifications(&self, result: &'static str) -> u64 {
        self.verifications
            .get_or_create(&ResultLabel { result })
            .get()
    }

    /// Value of `kube_baseline_signature_cache_requests_total{result}`.
    pub fn cache_requests(&self, result: &'static str) -> u64 {
        self.cache.get_or_create(&ResultLabel { result }).get()
    }
}
