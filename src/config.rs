//! `policies/baseline.yaml`: typed, validated after parsing, every error with its path.
//!
//! The repository's file is embedded in the binary ([`EMBEDDED`]) and is the default.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::policy::PolicyId;

/// The repository's `policies/baseline.yaml`, the default configuration.
pub const EMBEDDED: &str = include_str!("../policies/baseline.yaml");

/// Why a YAML file of the project (`baseline.yaml`, `adrs.yaml`) cannot be used; every
/// message starts with the file and names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: cannot read: {source}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {path}: {message}")]
    Parse {
        origin: String,
        path: String,
        message: String,
    },
    #[error("{origin}: {}", .problems.join("; "))]
    Invalid {
        origin: String,
        problems: Vec<String>,
    },
}

/// Read a file for [`parse_yaml`]; the error names the path.
pub(crate) fn read_file(path: &Path) -> Result<(String, String)> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        origin: origin.clone(),
        source,
    })?;
    Ok((text, origin))
}

/// Deserialize YAML, naming the path of the field that does not fit (`policies.x.mode`).
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::Parse {
            origin: origin.to_owned(),
            path: if path == "." {
                "(top level)".into()
            } else {
                path
            },
            message: e.into_inner().to_string(),
        }
    })
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// What a policy does with its findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny the request.
    Enforce,
    /// Allow, with an admission warning that kubectl prints.
    Warn,
    /// Not evaluated.
    Off,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Off => "off",
        }
    }
}

fn enforce() -> Mode {
    Mode::Enforce
}
fn warn() -> Mode {
    Mode::Warn
}
fn yes() -> bool {
    true
}

/// Mode and exemptability, the settings every policy has.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Basic {
    #[serde(default = "enforce")]
    pub mode: Mode,
    #[serde(default = "yes")]
    pub exemptable: bool,
}

impl Default for Basic {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            exemptable: true,
        }
    }
}

/// `resource-limits`: never exemptable.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NeverExempt {
    #[serde(default = "enforce")]
    pub mode: Mode,
    #[serde(default)]
    pub exemptable: bool,
}

impl Default for NeverExempt {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            exemptable: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DropAllCapabilities {
    #[serde(default = "enforce")]
    pub mode: Mode,
    #[serde(default = "yes")]
    pub exemptable: bool,
    /// Capabilities a container may `add` (names without `CAP_`).
    #[serde(default = "default_allowed_capabilities")]
    pub allowed_capabilities: Vec<String>,
}

fn default_allowed_capabilities() -> Vec<String> {
    vec!["NET_BIND_SERVICE".into()]
}

impl Default for DropAllCapabilities {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            exemptable: true,
            allowed_capabilities: default_allowed_capabilities(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthProbes {
    #[serde(default = "enforce")]
    pub mode: Mode,
    #[serde(default = "yes")]
    pub exemptable: bool,
    #[serde(default = "default_liveness_path")]
    pub liveness_path: String,
    #[serde(default = "default_readiness_path")]
    pub readiness_path: String,
}

fn default_liveness_path() -> String {
    "/health/live".into()
}
fn default_readiness_path() -> String {
    "/health/ready".into()
}

impl Default for HealthProbes {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            exemptable: true,
            liveness_path: default_liveness_path(),
            readiness_path: default_readiness_path(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricsEndpoint {
    #[serde(default = "enforce")]
    pub mode: Mode,
    #[serde(default = "yes")]
    pub exemptable: bool,
    /// The pod label the ServiceMonitor selects on.
    #[serde(default = "default_app_label")]
    pub app_label: String,
    /// Names a container port may have to be scraped.
    #[serde(default = "default_port_names")]
    pub port_names: Vec<String>,
    /// The path a `prometheus.io/path` annotation must have, if present.
    #[serde(default = "default_metrics_path")]
    pub path: String,
}

fn default_app_label() -> String {
    "app".into()
}
fn default_port_names() -> Vec<String> {
    vec!["http".into(), "metrics".into()]
}
fn default_metrics_path() -> String {
    "/metrics".into()
}

impl Default for MetricsEndpoint {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            exemptable: true,
            app_label: default_app_label(),
            port_names: default_port_names(),
            path: default_metrics_path(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplicasMinimum {
    #[serde(default = "warn")]
    pub mode: Mode,
    #[serde(default = "yes")]
    pub exemptable: bool,
    #[serde(default = "default_minimum")]
    pub minimum: i32,
}

fn default_minimum() -> i32 {
    2
}

impl Default for ReplicasMinimum {
    fn default() -> Self {
        Self {
            mode: Mode::Warn,
            exemptable: true,
            minimum: 2,
        }
    }
}

/// A duration as written in the file: a number and a unit, `500ms`, `3s`, `10m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub std::time::Duration);

impl ConfigDuration {
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit())?;
        let (number, unit) = text.split_at(split);
        let n: u64 = number.parse().ok()?;
        let d = match unit {
            "ms" => std::time::Duration::from_millis(n),
            "s" => std::time::Duration::from_secs(n),
            "m" => std::time::Duration::from_secs(n.checked_mul(60)?),
            "h" => std::time::Duration::from_secs(n.checked_mul(3600)?),
            _ => return None,
        };
        Some(Self(d))
    }
}

impl std::fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(3_600_000) && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration (a whole number and ms, s, m or h, e.g. 3s)"
            ))
        })
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `image-signature`: cosign signatures, never exemptable. Off unless configured: no authority
/// is trusted out of the box.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageSignature {
    #[serde(default = "off")]
    pub mode: Mode,
    #[serde(default)]
    pub exemptable: bool,
    /// Globs of image references that need a signature (default: all). `*` matches any
    /// characters, `/` included; a glob is tried on the image as written and on its full form
    /// (`docker.io/library/nginx:1.27`).
    #[serde(default = "default_signed_images")]
    pub images: Vec<String>,
    /// Globs of images the platform trusts without a signature (e.g. the pause image). Platform
    /// configuration, not a developer exception.
    #[serde(default)]
    pub skip: Vec<String>,
    /// Who may sign: an image is accepted when any authority verifies one of its signatures.
    #[serde(default)]
    pub authorities: Vec<SignatureAuthority>,
    /// Per registry host (`registry.example:5000`): plain HTTP or an extra CA.
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryOptions>,
    /// A mounted `kubernetes.io/dockerconfigjson` file (`.dockerconfigjson`).
    #[serde(default)]
    pub credentials_path: Option<std::path::PathBuf>,
    /// Deadline of one registry call (always also inside the review's own deadline).
    #[serde(default = "default_registry_timeout")]
    pub timeout: ConfigDuration,
    #[serde(default)]
    pub cache: SignatureCache,
    /// Bound on registry calls in flight at once, across all reviews.
    #[serde(default = "default_max_registry_calls")]
    pub max_concurrent_registry_calls: usize,
    /// `/mutate` rewrites each verified image to `repo:tag@sha256:...`.
    #[serde(default = "yes")]
    pub pin_digests: bool,
}

fn off() -> Mode {
    Mode::Off
}
fn default_signed_images() -> Vec<String> {
    vec!["*".into()]
}
fn default_registry_timeout() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(3))
}
fn default_max_registry_calls() -> usize {
    16
}

impl Default for ImageSignature {
    fn default() -> Self {
        Self {
            mode: Mode::Off,
            exemptable: false,
            images: default_signed_images(),
            skip: Vec::new(),
            authorities: Vec::new(),
            registries: BTreeMap::new(),
            credentials_path: None,
            timeout: default_registry_timeout(),
            cache: SignatureCache::default(),
            max_concurrent_registry_calls: default_max_registry_calls(),
            pin_digests: true,
        }
    }
}

/// One trusted signer: a cosign public key (`key` or `keyPath`), or a keyless identity
/// (`issuer` + `subject`/`subjectRegex`, checked against `trustRoot`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignatureAuthority {
    pub name: String,
    /// A PEM public key (`-----BEGIN PUBLIC KEY-----`), inline.
    #[serde(default)]
    pub key: Option<String>,
    /// A file holding a PEM public key.
    #[serde(default)]
    pub key_path: Option<std::path::PathBuf>,
    /// Keyless: the OIDC issuer in the Fulcio certificate.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Keyless: the exact identity (email or URI SAN).
    #[serde(default)]
    pub subject: Option<String>,
    /// Keyless: a regular expression the whole identity must match.
    #[serde(default)]
    pub subject_regex: Option<String>,
    /// Keyless: a Sigstore `trusted_root.json` (Fulcio CAs and Rekor keys), read offline.
    #[serde(default)]
    pub trust_root: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryOptions {
    /// Plain HTTP (a registry inside the cluster network).
    #[serde(default)]
    pub insecure: bool,
    /// A PEM CA bundle trusted in addition to the system roots.
    #[serde(default)]
    pub ca_path: Option<std::path::PathBuf>,
}

/// Verified digests are kept `ttl`; unsigned or invalid ones `negativeTtl`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignatureCache {
    #[serde(default = "default_cache_size")]
    pub size: usize,
    #[serde(default = "default_cache_ttl")]
    pub ttl: ConfigDuration,
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl: ConfigDuration,
}

fn default_cache_size() -> usize {
    10_000
}
fn default_cache_ttl() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(600))
}
fn default_negative_ttl() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(30))
}

impl Default for SignatureCache {
    fn default() -> Self {
        Self {
            size: default_cache_size(),
            ttl: default_cache_ttl(),
            negative_ttl: default_negative_ttl(),
        }
    }
}

impl ImageSignature {
    /// Everything the types cannot check; files are read by the verifier at start-up.
    fn validate(&self, problems: &mut Vec<String>) {
        const P: &str = "policies.image-signature";
        if self.exemptable {
            problems.push(format!(
                "{P}.exemptable: must be false: image signatures can never be waived"
            ));
        }
        if self.mode != Mode::Off && self.authorities.is_empty() {
            problems.push(format!(
                "{P}.authorities: at least one authority is needed when mode is {}",
                self.mode.as_str()
            ));
        }
        if self.images.is_empty() {
            problems.push(format!(
                "{P}.images: must not be empty (use [\"*\"] for every image)"
            ));
        }
        globset(&self.images, &format!("{P}.images"), problems);
        globset(&self.skip, &format!("{P}.skip"), problems);
        let mut names = std::collections::BTreeSet::new();
        for (i, a) in self.authorities.iter().enumerate() {
            let at = format!("{P}.authorities[{i}]");
            if a.name.trim().is_empty() {
                problems.push(format!("{at}.name: must not be empty"));
            } else if !names.insert(a.name.as_str()) {
                problems.push(format!("{at}.name: {:?} is used twice", a.name));
            }
            let kinds = [a.key.is_some(), a.key_path.is_some(), a.issuer.is_some()]
                .iter()
                .filter(|k| **k)
                .count();
            if kinds != 1 {
                problems.push(format!(
                    "{at}: give exactly one of key, keyPath or issuer (keyless)"
                ));
            }
            if let Some(pem) = &a.key {
                if let Err(e) =
                    sigstore::crypto::CosignVerificationKey::try_from_pem(pem.as_bytes())
                {
                    problems.push(format!("{at}.key: not a PEM public key: {e}"));
                }
            }
            if a.issuer.is_some() {
                match (&a.subject, &a.subject_regex) {
                    (Some(_), Some(_)) | (None, None) => problems.push(format!(
                        "{at}: a keyless authority needs exactly one of subject or subjectRegex"
                    )),
                    (None, Some(re)) => {
                        if let Err(e) = regex::Regex::new(re) {
                            problems.push(format!(
                                "{at}.subjectRegex: invalid regular expression: {e}"
                            ));
                        }
                    }
                    (Some(_), None) => {}
                }
                if a.trust_root.is_none() {
                    problems.push(format!(
                        "{at}.trustRoot: a keyless authority needs a trust root file (Fulcio CAs and Rekor keys)"
                    ));
                }
            } else {
                for (field, set) in [
                    ("subject", a.subject.is_some()),
                    ("subjectRegex", a.subject_regex.is_some()),
                    ("trustRoot", a.trust_root.is_some()),
                ] {
                    if set {
                        problems.push(format!(
                            "{at}.{field}: only for keyless authorities (with issuer)"
                        ));
                    }
                }
            }
        }
        for (host, _) in self.registries.iter() {
            if host.is_empty()
                || host.contains("://")
                || host.contains('/')
                || host.chars().any(char::is_whitespace)
            {
                problems.push(format!(
                    "{P}.registries.{host:?}: a registry is a host with an optional port (registry.example:5000), without scheme or path"
                ));
            }
        }
        if self.timeout.0.is_zero() {
            problems.push(format!("{P}.timeout: must be more than 0"));
        }
        if self.cache.size == 0 {
            problems.push(format!("{P}.cache.size: must be at least 1"));
        }
        if self.cache.ttl.0.is_zero() {
            problems.push(format!("{P}.cache.ttl: must be more than 0"));
        }
        if self.max_concurrent_registry_calls == 0 {
            problems.push(format!(
                "{P}.maxConcurrentRegistryCalls: must be at least 1"
            ));
        }
    }
}

/// One block per policy, keyed by the policy id.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Policies {
    #[serde(default)]
    pub run_as_non_root: Basic,
    #[serde(default)]
    pub read_only_root_filesystem: Basic,
    #[serde(default)]
    pub resource_limits: NeverExempt,
    #[serde(default)]
    pub drop_all_capabilities: DropAllCapabilities,
    #[serde(default)]
    pub no_privilege_escalation: Basic,
    #[serde(default)]
    pub image_signature: ImageSignature,
    #[serde(default)]
    pub health_probes: HealthProbes,
    #[serde(default)]
    pub metrics_endpoint: MetricsEndpoint,
    #[serde(default)]
    pub replicas_minimum: ReplicasMinimum,
}

impl Policies {
    pub fn mode(&self, policy: PolicyId) -> Mode {
        match policy {
            PolicyId::RunAsNonRoot => self.run_as_non_root.mode,
            PolicyId::ReadOnlyRootFilesystem => self.read_only_root_filesystem.mode,
            PolicyId::ResourceLimits => self.resource_limits.mode,
            PolicyId::DropAllCapabilities => self.drop_all_capabilities.mode,
            PolicyId::NoPrivilegeEscalation => self.no_privilege_escalation.mode,
            PolicyId::ImageSignature => self.image_signature.mode,
            PolicyId::HealthProbes => self.health_probes.mode,
            PolicyId::MetricsEndpoint => self.metrics_endpoint.mode,
            PolicyId::ReplicasMinimum => self.replicas_minimum.mode,
        }
    }

    pub fn exemptable(&self, policy: PolicyId) -> bool {
        policy.can_ever_be_waived()
            && match policy {
                PolicyId::RunAsNonRoot => self.run_as_non_root.exemptable,
                PolicyId::ReadOnlyRootFilesystem => self.read_only_root_filesystem.exemptable,
                PolicyId::ResourceLimits => self.resource_limits.exemptable,
                PolicyId::DropAllCapabilities => self.drop_all_capabilities.exemptable,
                PolicyId::NoPrivilegeEscalation => self.no_privilege_escalation.exemptable,
                PolicyId::ImageSignature => self.image_signature.exemptable,
                PolicyId::HealthProbes => self.health_probes.exemptable,
                PolicyId::MetricsEndpoint => self.metrics_endpoint.exemptable,
                PolicyId::ReplicasMinimum => self.replicas_minimum.exemptable,
            }
    }
}

/// Modes for namespaces matching globs, e.g. `dev-*` in `warn`. The first override whose
/// glob matches and that names the policy wins.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceOverride {
    pub namespaces: Vec<String>,
    pub policies: BTreeMap<PolicyId, Mode>,
    #[serde(skip)]
    matcher: Option<GlobSet>,
}

/// Values `/mutate` adds where the user set nothing. A field set to `null` is not defaulted.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Defaults {
    #[serde(default = "some_true")]
    pub run_as_non_root: Option<bool>,
    #[serde(default = "default_run_as_user")]
    pub run_as_user: Option<i64>,
    #[serde(default = "default_seccomp")]
    pub seccomp_profile: Option<String>,
    #[serde(default = "some_true")]
    pub read_only_root_filesystem: Option<bool>,
    #[serde(default = "some_false")]
    pub allow_privilege_escalation: Option<bool>,
    /// Add `capabilities.drop: [ALL]` when `drop` is unset.
    #[serde(default = "yes")]
    pub drop_all_capabilities: bool,
    #[serde(default)]
    pub resources: ResourceDefaults,
}

fn some_true() -> Option<bool> {
    Some(true)
}
fn some_false() -> Option<bool> {
    Some(false)
}
fn default_run_as_user() -> Option<i64> {
    Some(1000)
}
fn default_seccomp() -> Option<String> {
    Some("RuntimeDefault".into())
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            run_as_non_root: some_true(),
            run_as_user: default_run_as_user(),
            seccomp_profile: default_seccomp(),
            read_only_root_filesystem: some_true(),
            allow_privilege_escalation: some_false(),
            drop_all_capabilities: true,
            resources: ResourceDefaults::default(),
        }
    }
}

/// Default quantities; `null` switches one off, a key left out keeps the platform's value.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceDefaults {
    #[serde(default)]
    pub requests: Requests,
    #[serde(default)]
    pub limits: Limits,
}

/// Default requests; a key left out keeps the platform's value, `null` switches it off.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Requests {
    #[serde(default = "default_request_cpu")]
    pub cpu: Option<String>,
    #[serde(default = "default_request_memory")]
    pub memory: Option<String>,
}

/// Default limits; a key left out keeps the platform's value, `null` switches it off.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    #[serde(default = "default_limit_cpu")]
    pub cpu: Option<String>,
    #[serde(default = "default_limit_memory")]
    pub memory: Option<String>,
}

fn default_request_cpu() -> Option<String> {
    Some("100m".into())
}
fn default_request_memory() -> Option<String> {
    Some("256Mi".into())
}
fn default_limit_cpu() -> Option<String> {
    Some("500m".into())
}
fn default_limit_memory() -> Option<String> {
    Some("512Mi".into())
}

impl Default for Requests {
    fn default() -> Self {
        Self {
            cpu: default_request_cpu(),
            memory: default_request_memory(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cpu: default_limit_cpu(),
            memory: default_limit_memory(),
        }
    }
}

/// Rules for `BaselineException` objects.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExceptionSettings {
    /// `userInfo.groups` allowed to create, change or delete exceptions.
    #[serde(default = "default_approver_groups")]
    pub approver_groups: Vec<String>,
    /// Pattern an exception's `adr` must match.
    #[serde(default = "default_adr_pattern")]
    pub adr_pattern: String,
    /// How far ahead `expires` may be.
    #[serde(default = "default_max_lifetime_days")]
    pub max_lifetime_days: u32,
    /// Exceptions expiring within this window add a warning.
    #[serde(default = "default_expiry_warning_days")]
    pub expiry_warning_days: u32,
    /// Whether `match.namespaces: ["*"]` is accepted.
    #[serde(default)]
    pub allow_all_namespaces: bool,
}

fn default_approver_groups() -> Vec<String> {
    vec!["platform-team".into()]
}
fn default_adr_pattern() -> String {
    "^ADR-[0-9]{3,5}$".into()
}
fn default_max_lifetime_days() -> u32 {
    180
}
fn default_expiry_warning_days() -> u32 {
    14
}

impl Default for ExceptionSettings {
    fn default() -> Self {
        Self {
            approver_groups: default_approver_groups(),
            adr_pattern: default_adr_pattern(),
            max_lifetime_days: default_max_lifetime_days(),
            expiry_warning_days: default_expiry_warning_days(),
            allow_all_namespaces: false,
        }
    }
}

fn default_excluded_namespaces() -> Vec<String> {
    vec!["kube-system".into(), "kube-baseline".into()]
}

/// The whole of `policies/baseline.yaml`.
///
/// Once parsed, it is only read. Its globs are compiled when it is parsed, and what a
/// namespace resolves to is then kept per thread ([`Config::namespace`]). Neither sees a
/// field changed in place afterwards: to change a configuration, parse the changed text.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Namespaces (globs) allowed untouched: never evaluated, never mutated.
    #[serde(default = "default_excluded_namespaces")]
    pub excluded_namespaces: Vec<String>,
    #[serde(default)]
    pub policies: Policies,
    #[serde(default)]
    pub namespace_overrides: Vec<NamespaceOverride>,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub exceptions: ExceptionSettings,
    #[serde(skip)]
    excluded: Option<GlobSet>,
    /// Keys this configuration's entries in the per-thread cache of resolved namespaces.
    #[serde(skip)]
    generation: Generation,
}

/// A number no other [`Config`] value has, its clones included: a clone may be changed, so
/// it gets its own entries in the cache of resolved namespaces.
#[derive(Debug)]
struct Generation(u64);

impl Default for Generation {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl Clone for Generation {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// What a namespace resolves to under one configuration: whether it is excluded, and the
/// mode of every policy in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceRules {
    pub excluded: bool,
    pub modes: Modes,
}

/// Namespaces kept per thread before the cache starts again; a cluster has far fewer, and
/// the API server only sends namespaces that exist.
const RESOLVED_NAMESPACES: usize = 4096;

/// The namespaces a thread has resolved, under the configuration of `generation`.
#[derive(Default)]
struct Resolved {
    generation: u64,
    /// foldhash, not std's SipHash: the lookup is once per review, and SipHash took half of
    /// its ~260 instructions (callgrind). Seeded per process, and capped at
    /// [`RESOLVED_NAMESPACES`] entries.
    namespaces: HashMap<Box<str>, NamespaceRules, foldhash::fast::RandomState>,
}

thread_local! {
    /// Per thread, so that a review takes no lock and writes no memory another core reads.
    static RESOLVED: RefCell<Resolved> = RefCell::new(Resolved::default());
}

fn globset(patterns: &[String], path: &str, problems: &mut Vec<String>) -> GlobSet {
    let mut builder = GlobSetBuilder::new();
    for (i, pattern) in patterns.iter().enumerate() {
        match Glob::new(pattern) {
            Ok(glob) => {
                builder.add(glob);
            }
            Err(e) => problems.push(format!("{path}[{i}]: invalid glob {pattern:?}: {e}")),
        }
    }
    builder.build().unwrap_or_else(|e| {
        problems.push(format!("{path}: {e}"));
        GlobSet::empty()
    })
}

/// A Kubernetes quantity as `/mutate` may write it: digits with an optional decimal part and
/// an optional suffix.
pub(crate) fn is_quantity(q: &str) -> bool {
    crate::quantity::parse(q).is_some()
}

impl Config {
    /// The embedded default.
    pub fn embedded() -> Self {
        Self::parse(EMBEDDED, "embedded policies/baseline.yaml")
            .expect("the embedded policies/baseline.yaml is valid (checked by a test)")
    }

    pub fn load(path: &Path) -> Result<Self> {
        let (text, origin) = read_file(path)?;
        Self::parse(&text, &origin)
    }

    /// Parse and validate; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let mut config: Config = parse_yaml(text, origin)?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                problems,
            })
        }
    }

    /// Check what the types cannot, compile the globs, and return every problem with its path.
    fn validate(&mut self) -> Vec<String> {
        // The namespaces resolved before were resolved with the globs compiled before.
        self.generation = Generation::default();
        let mut problems = Vec::new();
        let p = &self.policies;
        if p.resource_limits.exemptable {
            problems.push(
                "policies.resource-limits.exemptable: must be false: resource limits can never be waived".into(),
            );
        }
        p.image_signature.validate(&mut problems);
        for (field, path) in [
            ("livenessPath", &p.health_probes.liveness_path),
            ("readinessPath", &p.health_probes.readiness_path),
        ] {
            if !path.starts_with('/') {
                problems.push(format!(
                    "policies.health-probes.{field}: {path:?} must be an absolute path starting with /"
                ));
            }
        }
        if !p.metrics_endpoint.path.starts_with('/') {
            problems.push(format!(
                "policies.metrics-endpoint.path: {:?} must start with /",
                p.metrics_endpoint.path
            ));
        }
        if p.metrics_endpoint.port_names.is_empty() {
            problems
                .push("policies.metrics-endpoint.portNames: must name at least one port".into());
        }
        if p.metrics_endpoint.app_label.is_empty() {
            problems.push("policies.metrics-endpoint.appLabel: must not be empty".into());
        }
        if p.replicas_minimum.minimum < 1 {
            problems.push(format!(
                "policies.replicas-minimum.minimum: {} must be at least 1",
                p.replicas_minimum.minimum
            ));
        }
        for (i, cap) in p
            .drop_all_capabilities
            .allowed_capabilities
            .iter()
            .enumerate()
        {
            if cap.is_empty()
                || cap.starts_with("CAP_")
                || !cap.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            {
                problems.push(format!(
                    "policies.drop-all-capabilities.allowedCapabilities[{i}]: {cap:?} is not a capability name as Kubernetes writes it (e.g. NET_BIND_SERVICE, without CAP_)"
                ));
            }
            if cap == "ALL" {
                problems.push(format!(
                    "policies.drop-all-capabilities.allowedCapabilities[{i}]: ALL cannot be allowed"
                ));
            }
        }
        self.excluded = Some(globset(
            &self.excluded_namespaces,
            "excludedNamespaces",
            &mut problems,
        ));
        for (i, o) in self.namespace_overrides.iter_mut().enumerate() {
            if o.namespaces.is_empty() {
                problems.push(format!(
                    "namespaceOverrides[{i}].namespaces: must not be empty"
                ));
            }
            if o.policies
                .get(&PolicyId::ImageSignature)
                .is_some_and(|m| *m != Mode::Off)
                && self.policies.image_signature.authorities.is_empty()
            {
                problems.push(format!(
                    "namespaceOverrides[{i}].policies.image-signature: needs at least one authority in policies.image-signature.authorities"
                ));
            }
            o.matcher = Some(globset(
                &o.namespaces,
                &format!("namespaceOverrides[{i}].namespaces"),
                &mut problems,
            ));
        }
        let d = &self.defaults;
        if let Some(user) = d.run_as_user {
            if user == 0 {
                problems.push(
                    "defaults.runAsUser: 0 is root; the default must be a non-root user".into(),
                );
            } else if user < 0 {
                problems.push(format!("defaults.runAsUser: {user} must be positive"));
            }
        }
        if let Some(profile) = &d.seccomp_profile {
            if profile != "RuntimeDefault" {
                problems.push(format!(
                    "defaults.seccompProfile: {profile:?}: only RuntimeDefault can be defaulted (Localhost needs a profile per workload)"
                ));
            }
        }
        for (field, q) in [
            ("requests.cpu", &d.resources.requests.cpu),
            ("requests.memory", &d.resources.requests.memory),
            ("limits.cpu", &d.resources.limits.cpu),
            ("limits.memory", &d.resources.limits.memory),
        ] {
            if let Some(q) = q {
                if !is_quantity(q) {
                    problems.push(format!(
                        "defaults.resources.{field}: {q:?} is not a Kubernetes quantity (e.g. 100m, 256Mi)"
                    ));
                }
            }
        }
        for (kind, r, l) in [
            ("cpu", &d.resources.requests.cpu, &d.resources.limits.cpu),
            (
                "memory",
                &d.resources.requests.memory,
                &d.resources.limits.memory,
            ),
        ] {
            if let (Some(r), Some(l)) = (
                r.as_deref().and_then(crate::quantity::parse),
                l.as_deref().and_then(crate::quantity::parse),
            ) {
                if r > l {
                    problems.push(format!(
                        "defaults.resources.requests.{kind}: the default request is above the default limit"
                    ));
                }
            }
        }
        let e = &self.exceptions;
        if e.approver_groups.is_empty() {
            problems.push("exceptions.approverGroups: must name at least one group".into());
        }
        if let Err(err) = regex::Regex::new(&e.adr_pattern) {
            problems.push(format!(
                "exceptions.adrPattern: invalid regular expression: {err}"
            ));
        }
        if e.max_lifetime_days == 0 {
            problems.push("exceptions.maxLifetimeDays: must be at least 1".into());
        }
        problems
    }

    /// Whether `namespace` is excluded (never evaluated nor mutated) and the mode of every
    /// policy in it. Matching the globs takes ~2,000 instructions, a fifth of a compliant
    /// review's evaluation (callgrind), so each thread keeps what it resolved until the
    /// configuration changes.
    pub fn namespace(&self, namespace: &str) -> NamespaceRules {
        RESOLVED.with_borrow_mut(|resolved| {
            if resolved.generation != self.generation.0 {
                resolved.generation = self.generation.0;
                resolved.namespaces.clear();
            }
            if let Some(rules) = resolved.namespaces.get(namespace) {
                return *rules;
            }
            let rules = self.resolve(namespace);
            if resolved.namespaces.len() >= RESOLVED_NAMESPACES {
                resolved.namespaces.clear();
            }
            resolved.namespaces.insert(namespace.into(), rules);
            rules
        })
    }

    /// [`Config::namespace`] without the cache.
    fn resolve(&self, namespace: &str) -> NamespaceRules {
        NamespaceRules {
            excluded: self
                .excluded
                .as_ref()
                .is_some_and(|set| set.is_match(namespace)),
            modes: self.resolve_modes(namespace),
        }
    }

    /// Whether a policy runs anywhere: its mode, or an override, is not `off`.
    pub fn is_used_anywhere(&self, policy: PolicyId) -> bool {
        self.policies.mode(policy) != Mode::Off
            || self
                .namespace_overrides
                .iter()
                .any(|o| o.policies.get(&policy).is_some_and(|m| *m != Mode::Off))
    }

    /// Every policy's mode in a namespace, after overrides: for each policy, the first
    /// override that names it and matches the namespace, else its own mode.
    pub fn modes(&self, namespace: &str) -> Modes {
        self.namespace(namespace).modes
    }

    /// [`Config::modes`] without the cache. Each override's globs are matched at most once.
    fn resolve_modes(&self, namespace: &str) -> Modes {
        let mut modes = PolicyId::ALL.map(|p| self.policies.mode(p));
        let mut overridden = [false; PolicyId::ALL.len()];
        for o in &self.namespace_overrides {
            if o.policies.keys().all(|p| overridden[*p as usize]) {
                continue;
            }
            if !o.matcher.as_ref().is_some_and(|m| m.is_match(namespace)) {
                continue;
            }
            for (policy, mode) in &o.policies {
                let i = *policy as usize;
                if !overridden[i] {
                    modes[i] = *mode;
                    overridden[i] = true;
                }
            }
        }
        Modes(modes)
    }
}

/// The mode of every policy in one namespace ([`Config::modes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes([Mode; PolicyId::ALL.len()]);

impl Modes {
    pub fn get(&self, policy: PolicyId) -> Mode {
        self.0[policy as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(yaml: &str) -> String {
        Config::parse(yaml, "baseline.yaml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_embedded_file_is_valid_and_matches_the_documented_defaults() {
        let c = Config::embedded();
        assert_eq!(c.policies.replicas_minimum.mode, Mode::Warn);
        assert_eq!(c.policies.health_probes.liveness_path, "/health/live");
        assert!(c.namespace("kube-system").excluded);
        assert!(!c.namespace("payments").excluded);
    }

    #[test]
    fn an_empty_file_gives_the_platform_defaults() {
        let c = Config::parse("{}", "x").unwrap();
        assert_eq!(c.modes("shop").get(PolicyId::RunAsNonRoot), Mode::Enforce);
        assert_eq!(c.defaults.run_as_user, Some(1000));
        assert!(!c.policies.exemptable(PolicyId::ResourceLimits));
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let e = error("policies:\n  health-probes:\n    livenesPath: /x\n");
        assert!(e.contains("policies.health-probes"), "{e}");
        assert!(e.contains("livenesPath"), "{e}");
    }

    #[test]
    fn unknown_policy_is_named() {
        let e = error("policies:\n  run-as-root: {}\n");
        assert!(e.contains("run-as-root"), "{e}");
    }

    #[test]
    fn bad_mode_is_named_with_its_path() {
        let e = error("policies:\n  run-as-non-root:\n    mode: deny\n");
        assert!(e.contains("policies.run-as-non-root.mode"), "{e}");
    }

    #[test]
    fn resource_limits_and_image_signature_cannot_be_made_exemptable() {
        let e = error("policies:\n  resource-limits: {exemptable: true}\n  image-signature: {exemptable: true}\n");
        assert!(e.contains("policies.resource-limits.exemptable"), "{e}");
        assert!(e.contains("policies.image-signature.exemptable"), "{e}");
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once() {
        let e = error(
            "policies:\n  health-probes: {livenessPath: health}\n  replicas-minimum: {minimum: 0}\n  drop-all-capabilities: {allowedCapabilities: [CAP_NET_ADMIN]}\nexcludedNamespaces: ['[']\ndefaults: {runAsUser: 0, resources: {requests: {cpu: lots}}}\nexceptions: {adrPattern: '('}\n",
        );
        for field in [
            "policies.health-probes.livenessPath",
            "policies.replicas-minimum.minimum",
            "policies.drop-all-capabilities.allowedCapabilities[0]",
            "excludedNamespaces[0]",
            "defaults.runAsUser",
            "defaults.resources.requests.cpu",
            "exceptions.adrPattern",
        ] {
            assert!(e.contains(field), "{field} missing from {e}");
        }
    }

    #[test]
    fn namespace_overrides_apply_by_glob_and_first_match_wins() {
        let c = Config::parse(
            "namespaceOverrides:\n- namespaces: ['dev-*']\n  policies: {health-probes: warn}\n- namespaces: ['dev-legacy', 'sandbox']\n  policies: {health-probes: off, run-as-non-root: off}\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.modes("dev-shop").get(PolicyId::HealthProbes), Mode::Warn);
        assert_eq!(
            c.modes("dev-legacy").get(PolicyId::HealthProbes),
            Mode::Warn
        );
        assert_eq!(c.modes("dev-legacy").get(PolicyId::RunAsNonRoot), Mode::Off);
        assert_eq!(c.modes("sandbox").get(PolicyId::HealthProbes), Mode::Off);
        assert_eq!(c.modes("prod").get(PolicyId::HealthProbes), Mode::Enforce);
    }

    #[test]
    fn a_namespace_resolves_under_its_own_configuration_while_another_is_cached_on_the_thread() {
        let strict = Config::parse(
            "excludedNamespaces: ['infra-*']\nnamespaceOverrides:\n- namespaces: ['dev-*']\n  policies: {health-probes: warn}\n",
            "strict",
        )
        .unwrap();
        let lax = Config::parse(
            "excludedNamespaces: ['dev-*']\nnamespaceOverrides:\n- namespaces: ['*']\n  policies: {health-probes: off}\n",
            "lax",
        )
        .unwrap();
        // Alternating on one thread: each answer is its own configuration's, cached or not.
        for _ in 0..3 {
            for ns in ["dev-shop", "infra-dns", "prod"] {
                assert_eq!(strict.namespace(ns), strict.resolve(ns), "{ns}");
                assert_eq!(lax.namespace(ns), lax.resolve(ns), "{ns}");
            }
        }
        assert!(strict.namespace("infra-dns").excluded && !strict.namespace("dev-shop").excluded);
        assert!(lax.namespace("dev-shop").excluded && !lax.namespace("infra-dns").excluded);
        assert_eq!(
            strict.modes("dev-shop").get(PolicyId::HealthProbes),
            Mode::Warn
        );
        assert_eq!(lax.modes("prod").get(PolicyId::HealthProbes), Mode::Off);
        assert_eq!(
            strict.modes("prod").get(PolicyId::HealthProbes),
            Mode::Enforce
        );

        // A clone is changed and compiled again: it does not read the original's entries,
        // nor, once changed again in place, its own from before.
        let mut changed = strict.clone();
        changed.excluded_namespaces = vec!["prod".into()];
        assert!(changed.validate().is_empty());
        assert!(changed.namespace("prod").excluded && !strict.namespace("prod").excluded);
        changed.excluded_namespaces = vec!["dev-*".into()];
        assert!(changed.validate().is_empty());
        assert!(!changed.namespace("prod").excluded && changed.namespace("dev-shop").excluded);

        // Past the cache's size, every namespace still resolves as without it.
        for i in 0..RESOLVED_NAMESPACES + 10 {
            let ns = format!("dev-{i}");
            assert_eq!(strict.namespace(&ns), strict.resolve(&ns), "{ns}");
        }
        assert_eq!(
            strict.modes("dev-0").get(PolicyId::HealthProbes),
            Mode::Warn
        );
    }

    #[test]
    fn image_signature_is_off_by_default_and_its_block_is_documented_in_the_embedded_file() {
        let c = Config::embedded();
        let s = &c.policies.image_signature;
        assert_eq!(s.mode, Mode::Off);
        assert!(s.pin_digests);
        assert_eq!(s.timeout.0, std::time::Duration::from_secs(3));
        assert_eq!(s.cache.negative_ttl.0, std::time::Duration::from_secs(30));
        assert_eq!(
            Config::parse("{}", "x")
                .unwrap()
                .policies
                .image_signature
                .mode,
            Mode::Off
        );
    }

    #[test]
    fn image_signature_problems_are_named_with_their_path() {
        let e = error(
            "policies:\n  image-signature:\n    mode: enforce\n    skip: ['[']\n    cache: {size: 0}\n    registries: {'http://reg': {insecure: true}}\n    authorities:\n    - name: a\n      key: not a key\n    - name: a\n      issuer: https://i\n    - name: b\n      keyPath: /k\n      issuer: https://i\n      subjectRegex: '('\n",
        );
        for field in [
            "policies.image-signature.skip[0]",
            "policies.image-signature.cache.size",
            "policies.image-signature.registries",
            "policies.image-signature.authorities[0].key",
            "policies.image-signature.authorities[1].name",
            "policies.image-signature.authorities[1]: a keyless authority needs exactly one of subject",
            "policies.image-signature.authorities[1].trustRoot",
            "policies.image-signature.authorities[2]: give exactly one of",
            "policies.image-signature.authorities[2].subjectRegex",
        ] {
            assert!(e.contains(field), "{field} missing from {e}");
        }
    }

    #[test]
    fn enforcing_signatures_needs_an_authority_even_in_one_namespace() {
        let e = error("policies:\n  image-signature: {mode: enforce}\n");
        assert!(e.contains("policies.image-signature.authorities"), "{e}");
        let e = error(
            "namespaceOverrides:\n- namespaces: [prod]\n  policies: {image-signature: enforce}\n",
        );
        assert!(
            e.contains("namespaceOverrides[0].policies.image-signature"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_duration_is_named_with_its_path() {
        let e = error("policies:\n  image-signature:\n    timeout: 3 seconds\n");
        assert!(e.contains("policies.image-signature.timeout"), "{e}");
        assert_eq!(
            ConfigDuration::parse("500ms").unwrap().0,
            std::time::Duration::from_millis(500)
        );
        assert_eq!(ConfigDuration::parse("10m").unwrap().to_string(), "10m");
    }

    #[test]
    fn a_default_can_be_switched_off_with_null() {
        let c = Config::parse(
            "defaults:\n  runAsUser: null\n  resources:\n    limits: {cpu: null, memory: 1Gi}\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.defaults.run_as_user, None);
        assert_eq!(c.defaults.resources.limits.cpu, None);
        assert_eq!(c.defaults.resources.requests.cpu.as_deref(), Some("100m"));
    }
}
