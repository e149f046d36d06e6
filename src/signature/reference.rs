//! Image references as Kubernetes users write them, normalised the way container runtimes do.

use oci_client::Reference;

/// One image reference: as written, and its parsed, normalised form.
#[derive(Debug, Clone)]
pub struct ImageRef {
    /// As in the pod spec (`nginx:1.27`).
    pub written: String,
    pub(crate) parsed: Reference,
}

impl ImageRef {
    /// Parse; `None` when the text is not an image reference.
    pub fn parse(image: &str) -> Option<Self> {
        let trimmed = image.trim();
        if trimmed.is_empty() || trimmed != image {
            return None;
        }
        let parsed = Reference::try_from(image).ok()?;
        Some(Self {
            written: image.to_owned(),
            parsed,
        })
    }

    /// `docker.io`, `registry.example:5000`.
    pub fn registry(&self) -> &str {
        self.parsed.registry()
    }

    pub fn repository(&self) -> &str {
        self.parsed.repository()
    }

    pub fn tag(&self) -> Option<&str> {
        self.parsed.tag()
    }

    pub fn digest(&self) -> Option<&str> {
        self.parsed.digest()
    }

    /// The full form: `docker.io/library/nginx:1.27`.
    pub fn whole(&self) -> String {
        self.parsed.whole()
    }

    /// The cache key of a digest of this repository: `registry/repository@sha256:...`.
    pub fn digest_key(&self, digest: &str) -> String {
        format!("{}/{}@{}", self.registry(), self.repository(), digest)
    }

    /// The key concurrent verifications share: the digest reference when pinned, else
    /// `registry/repository:tag`.
    pub fn flight_key(&self) -> String {
        match self.digest() {
            Some(d) => self.digest_key(d),
            None => format!(
                "{}/{}:{}",
                self.registry(),
                self.repository(),
                self.tag().unwrap_or("latest")
            ),
        }
    }

    /// The same repository at a digest.
    pub(crate) fn at_digest(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.registry().to_owned(),
            self.repository().to_owned(),
            digest.to_owned(),
        )
    }

    /// Where cosign stores the signature of a digest: `repo:sha256-<hex>.sig`.
    pub(crate) fn signature_tag(&self, digest: &str) -> Reference {
        Reference::with_tag(
            self.registry().to_owned(),
            self.repository().to_owned(),
            format!("{}.sig", digest.replace(':', "-")),
        )
    }

    /// The image as written, pinned: `nginx:1.27@sha256:...`. An image already pinned keeps
    /// its text.
    pub fn pinned(&self, digest: &str) -> String {
        if self.digest().is_some() {
            self.written.clone()
        } else {
            format!("{}@{digest}", self.written)
        }
    }
}

/// Whether a `sha256:<64 hex>` digest is well formed.
pub(crate) fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn short_names_are_normalised_like_the_runtime_does() {
        let r = ImageRef::parse("nginx").unwrap();
        assert_eq!(r.whole(), "docker.io/library/nginx:latest");
        assert_eq!(r.flight_key(), "docker.io/library/nginx:latest");
    }

    #[test]
    fn a_pinned_reference_is_keyed_by_its_digest_whatever_its_tag() {
        let a = ImageRef::parse(&format!("reg:5000/app:1.0@{D}")).unwrap();
        let b = ImageRef::parse(&format!("reg:5000/app@{D}")).unwrap();
        assert_eq!(a.flight_key(), b.flight_key());
        assert_eq!(a.flight_key(), format!("reg:5000/app@{D}"));
        assert_eq!(a.pinned(D), format!("reg:5000/app:1.0@{D}"));
    }

    #[test]
    fn pinning_keeps_the_image_as_written() {
        let r = ImageRef::parse("reg:5000/team/app:1.0").unwrap();
        assert_eq!(r.pinned(D), format!("reg:5000/team/app:1.0@{D}"));
        assert_eq!(
            r.signature_tag(D).whole(),
            format!("reg:5000/team/app:{}.sig", D.replace(':', "-"))
        );
    }

    #[test]
    fn garbage_is_not_a_reference() {
        assert!(ImageRef::parse("").is_none());
        assert!(ImageRef::parse("UPPER/Case:tag").is_none());
        assert!(ImageRef::parse(" nginx").is_none());
        assert!(is_sha256_digest(D));
        assert!(!is_sha256_digest("sha256:abc"));
    }
}
