//! Prometheus metrics of serving and admission, in one [`Registry`] that other parts (the
//! exception sources, signature verification) register their own families into.
//!
//! Names are registered in full (`kube_baseline_...`, no registry prefix) so that a `grep`
//! for a series name finds where it is defined. prometheus-client appends `_total` to
//! counters and the unit (`_seconds`) to families registered with one.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

mod sharded;
pub use sharded::{ShardedCounter, ShardedGauge, ShardedHistogram};

use crate::admission::review::Operation;
use crate::admission::{AdmissionRequest, Decision, Verdict};
use crate::policy::PolicyId;
use crate::workload::WorkloadKind;

/// The Content-Type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets in seconds: 100 µs to 10 s, roughly ×2.5 apart.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Which webhook endpoint a review came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Validate = 0,
    Mutate = 1,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Validate => "validate",
            Endpoint::Mutate => "mutate",
        }
    }
}

/// Why a review got no AdmissionReview back (a non-200, or a review that ran out of time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorReason {
    BadRequest,
    TooLarge,
    DeadlineExceeded,
    Internal,
}

impl ErrorReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::BadRequest => "bad_request",
            ErrorReason::TooLarge => "too_large",
            ErrorReason::DeadlineExceeded => "deadline_exceeded",
            ErrorReason::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub operation: &'static str,
    pub kind: String,
    pub verdict: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub endpoint: &'static str,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    pub policy: &'static str,
    pub action: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WaiverLabels {
    pub adr: String,
    pub policy: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: &'static str,
}

// `ShardedHistogram::new` takes at most this many bounds.
const _: () = assert!(DURATION_BUCKETS.len() < sharded::MAX_BUCKETS);

fn duration_histogram() -> ShardedHistogram {
    ShardedHistogram::new(&DURATION_BUCKETS)
}

/// The serving and admission families. Cheap to update from any task (atomics). The series
/// every review updates (requests, duration, in flight) are kept per thread
/// ([`ShardedCounter`], [`ShardedHistogram`], [`ShardedGauge`]).
#[derive(Debug)]
pub struct Metrics {
    pub requests: Family<RequestLabels, ShardedCounter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<EndpointLabels, ShardedHistogram, fn() -> ShardedHistogram>,
    pub in_flight: ShardedGauge,
    pub tls_handshake_failures: Counter,
    pub certificate_expiry: Gauge,
    pub certificate_reloads: Family<ResultLabels, Counter>,
    pub policy_findings: Family<FindingLabels, Counter>,
    pub mutations: Family<PolicyLabels, Counter>,
    pub waivers: Family<WaiverLabels, Counter>,
    pub build_info: Family<VersionLabels, Gauge>,
    /// Handles on the `requests` series of the workload kinds, made on first use: a review
    /// counts itself with one atomic add instead of hashing its labels into the family's map
    /// under its lock.
    request_series: Box<[OnceLock<ShardedCounter>]>,
    /// Handles on the `duration` histogram of each endpoint.
    duration_series: [ShardedHistogram; 2],
    /// Handles on the `policy_findings` series, by policy ([`PolicyId::ALL`]'s order) and
    /// action ([`FINDING_ACTIONS`]), and on the `mutations` series, by policy: a denied review
    /// counts each of its policies without hashing labels (SipHash, ~300 instructions each).
    finding_series: [[Counter; 3]; PolicyId::ALL.len()],
    mutation_series: [Counter; PolicyId::ALL.len()],
}

/// The `action` label of `policy_findings`, in [`Metrics::finding_series`]' order: indexed
/// by [`DENIED`], [`WARNED`] and [`WAIVED`].
const FINDING_ACTIONS: [&str; 3] = ["denied", "warned", "waived"];
const DENIED: usize = 0;
const WARNED: usize = 1;
const WAIVED: usize = 2;

/// A policy's index in [`PolicyId::ALL`] (its declaration order).
fn policy_index(policy: PolicyId) -> usize {
    policy as usize
}

const OPERATIONS: [Operation; 4] = [
    Operation::Create,
    Operation::Update,
    Operation::Delete,
    Operation::Connect,
];
const VERDICTS: [Verdict; 5] = [
    Verdict::Allowed,
    Verdict::Warned,
    Verdict::Denied,
    Verdict::Skipped,
    Verdict::Invalid,
];
const REQUEST_SERIES: usize = 2 * OPERATIONS.len() * WorkloadKind::ALL.len() * VERDICTS.len();

/// The index of a `requests` series in [`Metrics::request_series`]; `None` for a kind that
/// is not a workload (counted through the family).
fn request_series_index(
    endpoint: Endpoint,
    operation: Operation,
    kind: &str,
    verdict: Verdict,
) -> Option<usize> {
    let kind = WorkloadKind::ALL.iter().position(|k| k.as_str() == kind)?;
    let operation = OPERATIONS.iter().position(|o| *o == operation)?;
    let verdict = VERDICTS.iter().position(|v| *v == verdict)?;
    let endpoint = endpoint as usize;
    Some(
        ((endpoint * OPERATIONS.len() + operation) * WorkloadKind::ALL.len() + kind)
            * VERDICTS.len()
            + verdict,
    )
}

impl Metrics {
    /// Create the families and register them into `registry`. Other parts register theirs
    /// into the same registry before it is frozen into the server's state.
    pub fn new(registry: &mut Registry) -> Self {
        let duration: Family<EndpointLabels, ShardedHistogram, fn() -> ShardedHistogram> =
            Family::new_with_constructor(duration_histogram);
        let duration_series = [Endpoint::Validate, Endpoint::Mutate].map(|endpoint| {
            duration
                .get_or_create(&EndpointLabels {
                    endpoint: endpoint.as_str(),
                })
                .clone()
        });
        let policy_findings: Family<FindingLabels, Counter> = Family::default();
        let finding_series = PolicyId::ALL.map(|policy| {
            FINDING_ACTIONS.map(|action| {
                policy_findings
                    .get_or_create(&FindingLabels {
                        policy: policy.as_str(),
                        action,
                    })
                    .clone()
            })
        });
        let mutations: Family<PolicyLabels, Counter> = Family::default();
        let mutation_series = PolicyId::ALL.map(|policy| {
            mutations
                .get_or_create(&PolicyLabels {
                    policy: policy.as_str(),
                })
                .clone()
        });
        let metrics = Self {
            requests: Family::default(),
            errors: Family::default(),
            duration,
            request_series: (0..REQUEST_SERIES).map(|_| OnceLock::new()).collect(),
            duration_series,
            in_flight: ShardedGauge::default(),
            tls_handshake_failures: Counter::default(),
            certificate_expiry: Gauge::default(),
            certificate_reloads: Family::default(),
            policy_findings,
            mutations,
            waivers: Family::default(),
            build_info: Family::default(),
            finding_series,
            mutation_series,
        };
        registry.register(
            "kube_baseline_admission_requests",
            "AdmissionReviews answered with an AdmissionReview, by endpoint, operation, kind and verdict",
            metrics.requests.clone(),
        );
        registry.register(
            "kube_baseline_admission_errors",
            "Reviews answered with an HTTP error or that ran out of time, by endpoint and reason",
            metrics.errors.clone(),
        );
        registry.register_with_unit(
            "kube_baseline_admission_request_duration",
            "Time from a review's arrival to its answer, by endpoint",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register(
            "kube_baseline_admission_requests_in_flight",
            "Reviews being read or evaluated now",
            metrics.in_flight.clone(),
        );
        registry.register(
            "kube_baseline_tls_handshake_failures",
            "TLS handshakes on the webhook port that failed (wrong protocol version, plain HTTP, bad client)",
            metrics.tls_handshake_failures.clone(),
        );
        registry.register(
            "kube_baseline_certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate, in Unix seconds",
            metrics.certificate_expiry.clone(),
        );
        registry.register(
            "kube_baseline_certificate_reloads",
            "Attempts to load a changed serving certificate, by result",
            metrics.certificate_reloads.clone(),
        );
        registry.register(
            "kube_baseline_policy_findings",
            "Policies that found something in a review, by policy and what happened (denied, warned, waived)",
            metrics.policy_findings.clone(),
        );
        registry.register(
            "kube_baseline_mutations",
            "Defaults applied by /mutate, by policy",
            metrics.mutations.clone(),
        );
        registry.register(
            "kube_baseline_waivers",
            "Findings waived by an exception in allowed reviews, by ADR and policy",
            metrics.waivers.clone(),
        );
        registry.register(
            "kube_baseline_build_info",
            "Always 1; the version label is the running build",
            metrics.build_info.clone(),
        );
        metrics
            .build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        // Zero series for the label sets that are known in advance, so that rates and
        // alerts see 0 rather than nothing.
        for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
            for reason in [
                ErrorReason::BadRequest,
                ErrorReason::TooLarge,
                ErrorReason::DeadlineExceeded,
                ErrorReason::Internal,
            ] {
                drop(metrics.errors.get_or_create(&ErrorLabels {
                    endpoint: endpoint.as_str(),
                    reason: reason.as_str(),
                }));
            }
            drop(metrics.duration.get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            }));
        }
        for result in ["success", "failure"] {
            drop(
                metrics
                    .certificate_reloads
                    .get_or_create(&ResultLabels { result }),
            );
        }
        metrics
    }

    /// Count a review that got an AdmissionReview back.
    pub fn record_decision(
        &self,
        endpoint: Endpoint,
        request: &AdmissionRequest,
        decision: &Decision,
        elapsed: Duration,
    ) {
        let labels = || RequestLabels {
            endpoint: endpoint.as_str(),
            operation: request.operation.as_str(),
            kind: kind_label(&request.kind.kind),
            verdict: decision.verdict.as_str(),
        };
        match request_series_index(
            endpoint,
            request.operation,
            &request.kind.kind,
            decision.verdict,
        ) {
            Some(index) => {
                self.request_series[index]
                    .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                    .inc();
            }
            None => {
                self.requests.get_or_create(&labels()).inc();
            }
        }
        self.observe_duration(endpoint, elapsed);
        for (action, policies) in [(DENIED, &decision.denied_by), (WARNED, &decision.warned_by)] {
            for policy in policies {
                self.finding_series[policy_index(*policy)][action].inc();
            }
        }
        for (adr, policy) in &decision.waivers {
            self.waivers
                .get_or_create(&WaiverLabels {
                    adr: adr.clone(),
                    policy: policy.as_str(),
                })
                .inc();
            self.finding_series[policy_index(*policy)][WAIVED].inc();
        }
        for policy in &decision.mutations {
            self.mutation_series[policy_index(*policy)].inc();
        }
    }

    /// Count a review that got an HTTP error or ran out of time.
    pub fn record_error(&self, endpoint: Endpoint, reason: ErrorReason, elapsed: Duration) {
        self.errors
            .get_or_create(&ErrorLabels {
                endpoint: endpoint.as_str(),
                reason: reason.as_str(),
            })
            .inc();
        self.observe_duration(endpoint, elapsed);
    }

    fn observe_duration(&self, endpoint: Endpoint, elapsed: Duration) {
        self.duration_series[endpoint as usize].observe(elapsed.as_secs_f64());
    }

    /// Set the serving certificate's notAfter (Unix seconds).
    pub fn set_certificate_expiry(&self, not_after_unix: i64) {
        self.certificate_expiry.set(not_after_unix);
    }

    pub fn record_certificate_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.certificate_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }
}

/// The `kind` label: the request's kind when it looks like a Kubernetes kind, else `other`,
/// so that a malformed review cannot create unbounded series.
fn kind_label(kind: &str) -> String {
    let plausible = !kind.is_empty()
        && kind.len() <= 63
        && kind.starts_with(|c: char| c.is_ascii_uppercase())
        && kind.chars().all(|c| c.is_ascii_alphanumeric());
    if plausible {
        kind.to_owned()
    } else {
        "other".to_owned()
    }
}

/// The registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// Increments the in-flight gauge for as long as it lives.
#[derive(Debug)]
pub struct InFlight<'a>(&'a ShardedGauge);

impl<'a> InFlight<'a> {
    pub fn start(metrics: &'a Metrics) -> Self {
        metrics.in_flight.inc();
        Self(&metrics.in_flight)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_serving_family_is_exposed_with_its_full_name() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics.record_error(Endpoint::Validate, ErrorReason::TooLarge, Duration::ZERO);
        metrics.tls_handshake_failures.inc();
        let text = encode(&registry);
        for family in [
            "# TYPE kube_baseline_admission_errors counter",
            "# TYPE kube_baseline_admission_request_duration_seconds histogram",
            "# TYPE kube_baseline_admission_requests_in_flight gauge",
            "# TYPE kube_baseline_tls_handshake_failures counter",
            "# TYPE kube_baseline_certificate_expiry_timestamp_seconds gauge",
            "# TYPE kube_baseline_certificate_reloads counter",
            "# TYPE kube_baseline_policy_findings counter",
            "# TYPE kube_baseline_mutations counter",
            "# TYPE kube_baseline_build_info gauge",
        ] {
            assert!(text.contains(family), "{family} missing from\n{text}");
        }
        for series in [
            "kube_baseline_admission_errors_total{endpoint=\"validate\",reason=\"too_large\"} 1",
            "kube_baseline_admission_errors_total{endpoint=\"mutate\",reason=\"deadline_exceeded\"} 0",
            "kube_baseline_tls_handshake_failures_total 1",
            "kube_baseline_policy_findings_total{policy=\"run-as-non-root\",action=\"waived\"} 0",
            "kube_baseline_mutations_total{policy=\"resource-limits\"} 0",
            "kube_baseline_build_info{version=\"0.1.0\"} 1",
            "le=\"0.0001\"",
            "le=\"10.0\"",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
        // Requests appear with their first review (kind and operation are open sets).
        assert!(!text.contains("kube_baseline_admission_requests_total"));
    }

    #[test]
    fn every_review_is_counted_in_its_series_workload_kind_or_not() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let body = |kind: &str, operation: &str| {
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","kind":{{"group":"","version":"v1","kind":"{kind}"}},"operation":"{operation}"}}}}"#
            )
        };
        let decision = |verdict| {
            Decision::of(
                crate::admission::review::AdmissionResponse::allow("u"),
                verdict,
            )
        };
        let deployment =
            crate::admission::review::decode(body("Deployment", "CREATE").as_bytes()).unwrap();
        let namespace =
            crate::admission::review::decode(body("Namespace", "UPDATE").as_bytes()).unwrap();
        for _ in 0..3 {
            metrics.record_decision(
                Endpoint::Validate,
                &deployment,
                &decision(Verdict::Allowed),
                Duration::ZERO,
            );
        }
        metrics.record_decision(
            Endpoint::Mutate,
            &deployment,
            &decision(Verdict::Denied),
            Duration::ZERO,
        );
        metrics.record_decision(
            Endpoint::Validate,
            &namespace,
            &decision(Verdict::Skipped),
            Duration::ZERO,
        );
        let text = encode(&registry);
        for series in [
            r#"kube_baseline_admission_requests_total{endpoint="validate",operation="CREATE",kind="Deployment",verdict="allowed"} 3"#,
            r#"kube_baseline_admission_requests_total{endpoint="mutate",operation="CREATE",kind="Deployment",verdict="denied"} 1"#,
            r#"kube_baseline_admission_requests_total{endpoint="validate",operation="UPDATE",kind="Namespace",verdict="skipped"} 1"#,
            r#"kube_baseline_admission_request_duration_seconds_count{endpoint="validate"} 4"#,
            r#"kube_baseline_admission_request_duration_seconds_count{endpoint="mutate"} 1"#,
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
    }

    #[test]
    fn findings_waivers_and_mutations_are_counted_by_policy_and_action() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        for (i, policy) in PolicyId::ALL.into_iter().enumerate() {
            assert_eq!(policy_index(policy), i, "{policy}");
        }
        let request = crate::admission::review::decode(
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"apps","version":"v1","kind":"Deployment"},"operation":"CREATE"}}"#,
        )
        .unwrap();
        let mut decision = Decision::of(
            crate::admission::review::AdmissionResponse::allow("u"),
            Verdict::Denied,
        );
        decision.denied_by = vec![PolicyId::RunAsNonRoot, PolicyId::ReplicasMinimum];
        decision.warned_by = vec![PolicyId::HealthProbes];
        decision.waivers = vec![("ADR-0042".into(), PolicyId::ReadOnlyRootFilesystem)];
        decision.mutations = vec![PolicyId::ResourceLimits];
        for _ in 0..2 {
            metrics.record_decision(Endpoint::Validate, &request, &decision, Duration::ZERO);
        }
        let text = encode(&registry);
        for series in [
            r#"kube_baseline_policy_findings_total{policy="run-as-non-root",action="denied"} 2"#,
            r#"kube_baseline_policy_findings_total{policy="replicas-minimum",action="denied"} 2"#,
            r#"kube_baseline_policy_findings_total{policy="health-probes",action="warned"} 2"#,
            r#"kube_baseline_policy_findings_total{policy="read-only-root-filesystem",action="waived"} 2"#,
            r#"kube_baseline_policy_findings_total{policy="run-as-non-root",action="warned"} 0"#,
            r#"kube_baseline_mutations_total{policy="resource-limits"} 2"#,
            r#"kube_baseline_mutations_total{policy="health-probes"} 0"#,
            r#"kube_baseline_waivers_total{adr="ADR-0042",policy="read-only-root-filesystem"} 2"#,
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
    }

    #[test]
    fn odd_kinds_share_one_series() {
        assert_eq!(kind_label("Deployment"), "Deployment");
        assert_eq!(kind_label("deployment\"}"), "other");
        assert_eq!(kind_label(""), "other");
    }
}
