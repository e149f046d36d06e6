//! Pure: verification outcomes → findings (denials) and pinning patch operations.

use json_patch::jsonptr::PointerBuf;
use json_patch::{PatchOperation, ReplaceOperation};

use super::reference;
use super::Verification;
use crate::policy::{Finding, PolicyId};
use crate::workload::{ContainerKind, Workload};

/// The outcome for one container.
#[derive(Debug, Clone)]
pub struct ImageVerification {
    pub kind: ContainerKind,
    pub index: usize,
    pub container: String,
    /// The image as written in the spec.
    pub image: String,
    pub verification: Verification,
}

/// What [`super::Verifier::check_workload`] gives the handlers.
#[derive(Debug, Clone, Default)]
pub struct SignatureReport {
    /// One finding per container whose image may not run (policy `image-signature`).
    pub findings: Vec<Finding>,
    /// `replace` operations pinning verified images to their digest (empty when
    /// `pinDigests` is off or every image is already pinned).
    pub patch: Vec<PatchOperation>,
    /// Every container's outcome, for logs and audit annotations.
    pub images: Vec<ImageVerification>,
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

/// One finding per container whose image is not allowed, naming the container and the image.
pub fn findings(workload: &Workload, results: &[ImageVerification]) -> Vec<Finding> {
    let mut out = Vec::new();
    for r in results {
        let (c, image) = (&r.container, &r.image);
        let (message, fix) = match &r.verification {
            Verification::Verified { .. } | Verification::Skipped { .. } => continue,
            Verification::Unsigned { digest, reason } => (
                format!(
                    "container {c:?}: image {image:?} ({}…) has no signature ({reason})",
                    short(digest)
                ),
                "sign the image with cosign using a key or identity the platform trusts, and push the signature to the same repository".to_owned(),
            ),
            Verification::InvalidSignature {
                digest,
                authorities,
                reason,
            } => (
                format!(
                    "container {c:?}: the signature of image {image:?} ({}…) does not verify against any trusted authority ({reason}; authorities tried: {})",
                    short(digest),
                    authorities.join(", ")
                ),
                format!(
                    "sign the image with a key or identity of one of: {}",
                    authorities.join(", ")
                ),
            ),
            Verification::NotFound { reason } => (
                format!("container {c:?}: image {image:?} was not found: {reason}"),
                "check the image name, tag or digest, and that it was pushed to the registry".to_owned(),
            ),
            Verification::RegistryUnreachable { registry, reason } => (
                format!(
                    "container {c:?}: the signature of image {image:?} could not be checked: registry {registry} unreachable or timed out ({reason}). This is not a problem with your workload"
                ),
                "retry in a moment; if it persists, the platform team must check the registry and the webhook's access to it".to_owned(),
            ),
            Verification::TagUnresolvable { reason } => (
                format!(
                    "container {c:?}: image {image:?} could not be resolved to a digest: {reason}"
                ),
                "use a valid image reference (registry/repository:tag or @sha256:...) the webhook can read".to_owned(),
            ),
        };
        out.push(Finding {
            policy: PolicyId::ImageSignature,
            container: Some(c.clone()),
            field: workload.container_field(r.kind, r.index, "image"),
            message: message.into(),
            fix: fix.into(),
        });
    }
    out
}

/// JSON-patch operations rewriting each verified, not yet pinned image to
/// `image@sha256:...`, so that what runs is what was verified.
pub fn pins(workload: &Workload, results: &[ImageVerification]) -> Vec<PatchOperation> {
    results
        .iter()
        .filter_map(|r| {
            let Verification::Verified { digest, .. } = &r.verification else {
                return None;
            };
            // Verified, so a valid reference: no need to parse it again (~3.5 µs).
            let pinned = reference::pinned(&r.image, digest)?;
            let path = format!(
                "{}/{}/{}/image",
                workload.kind.spec_pointer(),
                r.kind.field(),
                r.index
            );
            Some(PatchOperation::Replace(ReplaceOperation {
                path: PointerBuf::parse(path).ok()?,
                value: serde_json::Value::String(pinned),
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::WorkloadKind;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn deployment() -> Workload<'static> {
        Workload::from_json(
            WorkloadKind::Deployment,
            r#"{"metadata":{"name":"web"},"spec":{"selector":{},"template":{"spec":{
                "initContainers":[{"name":"init","image":"reg/init:1"}],
                "containers":[{"name":"app","image":"reg/app:1"},{"name":"side","image":"reg/side@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}]}}}}"#,
        )
        .unwrap()
    }

    fn result(
        kind: ContainerKind,
        index: usize,
        name: &str,
        image: &str,
        v: Verification,
    ) -> ImageVerification {
        ImageVerification {
            kind,
            index,
            container: name.into(),
            image: image.into(),
            verification: v,
        }
    }

    fn verified() -> Verification {
        Verification::Verified {
            digest: D.into(),
            authority: "release".into(),
        }
    }

    #[test]
    fn verified_tags_are_pinned_and_pinned_images_are_left_alone() {
        let w = deployment();
        let ops = pins(
            &w,
            &[
                result(ContainerKind::Init, 0, "init", "reg/init:1", verified()),
                result(
                    ContainerKind::App,
                    1,
                    "side",
                    &format!("reg/side@{D}"),
                    verified(),
                ),
            ],
        );
        let json = serde_json::to_value(&ops).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"op":"replace","path":"/spec/template/spec/initContainers/0/image","value":format!("reg/init:1@{D}")}])
        );
    }

    #[test]
    fn every_denial_names_container_image_and_field() {
        let w = deployment();
        let f = findings(
            &w,
            &[result(
                ContainerKind::App,
                0,
                "app",
                "reg/app:1",
                Verification::InvalidSignature {
                    digest: D.into(),
                    authorities: vec!["release".into(), "ci".into()],
                    reason: "1 signature(s) found".into(),
                },
            )],
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].policy, PolicyId::ImageSignature);
        assert_eq!(f[0].field, "spec.template.spec.containers[0].image");
        assert!(f[0].message.contains("\"app\""), "{}", f[0].message);
        assert!(f[0].message.contains("reg/app:1"), "{}", f[0].message);
        assert!(
            f[0].message.contains("authorities tried: release, ci"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn an_outage_says_it_is_not_the_developers_fault() {
        let f = findings(
            &deployment(),
            &[result(
                ContainerKind::App,
                0,
                "app",
                "reg/app:1",
                Verification::RegistryUnreachable {
                    registry: "reg".into(),
                    reason: "connection refused".into(),
                },
            )],
        );
        assert!(f[0].message.contains("unreachable or timed out"));
        assert!(f[0].message.contains("not a problem with your workload"));
    }
}
