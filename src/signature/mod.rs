//! `image-signature`: every image must resolve to a digest whose cosign signature verifies
//! against a configured authority. Never waivable.
//!
//! Two layers, like the rest of the crate:
//! - I/O: [`Verifier`] resolves tags at the registry, fetches the cosign signature stored at
//!   the `sha256-<hex>.sig` tag (sigstore crate), verifies it against the authorities, and
//!   caches the outcome by digest. Concurrent verifications of one reference share one
//!   registry round trip; registry calls are bounded and always inside the review's deadline.
//! - Pure: [`findings`] turns verification outcomes into [`Finding`](crate::policy::Finding)s with the container, the
//!   image and the field, and [`pins`] gives the JSON-patch operations that rewrite each
//!   verified image to `repo:tag@sha256:...` for `/mutate`.
//!
//! What is cached, and why a moved tag cannot slip through: outcomes are keyed by **digest**
//! (`registry/repository@sha256:...`), the only thing a signature covers. A tag is resolved at
//! the registry on every verification (one `HEAD` request: no image pull, and not counted by
//! Docker Hub's pull rate limit) and is never cached, so a tag moved to an unsigned image
//! resolves to the new digest, which is not in the cache and is denied. An image already
//! pinned to a digest is verified by digest and is a pure cache hit, even with the registry
//! down, for `cache.ttl` after it was verified. Denials for a digest (unsigned, invalid, not
//! found) are kept `cache.negativeTtl`; "registry unreachable" is never cached.

mod authority;
mod cache;
mod credentials;
mod findings;
mod metrics;
mod reference;
mod registry;
mod verify;

pub use authority::{Authority, TrustRootFile};
pub use findings::{findings, pins, ImageVerification, SignatureReport};
pub use metrics::SignatureMetrics;
pub use reference::ImageRef;
pub use verify::Verifier;

/// The outcome of verifying one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// A signature over `digest` verifies against `authority`.
    Verified { digest: String, authority: String },
    /// No cosign signature is stored for the digest.
    Unsigned { digest: String, reason: String },
    /// Signatures exist, none verifies against any authority.
    InvalidSignature {
        digest: String,
        authorities: Vec<String>,
        reason: String,
    },
    /// The registry has no such image (repository, tag or digest).
    NotFound { reason: String },
    /// The registry could not be reached, answered with a server error or rate limit, or did
    /// not answer in time. Not the developer's fault.
    RegistryUnreachable { registry: String, reason: String },
    /// The reference could not be turned into a digest for another reason (not a valid
    /// reference, access denied, unexpected answer).
    TagUnresolvable { reason: String },
    /// Not subject to a signature: matches `skip`, or no glob of `images`.
    Skipped { reason: String },
}

impl Verification {
    /// The `result` label of `kube_baseline_signature_verifications_total`; `None` for
    /// images that need no signature (not counted).
    pub fn result_label(&self) -> Option<&'static str> {
        Some(match self {
            Self::Verified { .. } => "verified",
            Self::Unsigned { .. } => "unsigned",
            Self::InvalidSignature { .. } => "invalid_signature",
            Self::NotFound { .. } => "not_found",
            Self::RegistryUnreachable { .. } => "registry_unreachable",
            Self::TagUnresolvable { .. } => "error",
            Self::Skipped { .. } => return None,
        })
    }

    /// Whether the image may run.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Verified { .. } | Self::Skipped { .. })
    }
}

/// Why the verifier could not be built at start-up. Every error names the field.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("{field}: cannot read {path}: {source}")]
    Read {
        field: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

pub type Result<T, E = SignatureError> = std::result::Result<T, E>;
