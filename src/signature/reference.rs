//! Image references as Kubernetes users write them, normalised the way container runtimes do.

use std::borrow::Cow;

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
        let parsed = parse_reference(image)?;
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
}

/// A valid image reference as written, pinned to `digest` (`nginx:1.27@sha256:...`), or
/// `None` when it already names a digest. Without parsing it again: in a reference, `@`
/// appears only before the digest.
pub fn pinned(image: &str, digest: &str) -> Option<String> {
    (!image.contains('@')).then(|| format!("{image}@{digest}"))
}

/// Longest repository path (after the registry) a reference may have.
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// `image` read by the grammar of the distribution project's `reference` package, and
/// normalised as container runtimes do (`nginx` is `docker.io/library/nginx:latest`): the
/// same references, read into the same parts, as oci-client's `Reference::try_from`
/// (tested against it), except that a tag's word characters are ASCII here, as in the
/// grammar, where that crate's regular expression takes any Unicode letter.
///
/// That crate compiles its regular expression on first use: ~24 MiB of resident memory for
/// the webhook (with `\w{0,127}` in Unicode mode, the automaton is large) and ~3.5 µs a
/// parse. This reads the text once, left to right.
fn parse_reference(image: &str) -> Option<Reference> {
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    // A `:` after the last `/` starts the tag: a port is always followed by a `/`.
    let (name, tag) = match rest.rfind(':') {
        Some(colon) if !rest[colon..].contains('/') => (&rest[..colon], Some(&rest[colon + 1..])),
        _ => (rest, None),
    };
    if !is_name(name) || !tag.is_none_or(is_tag) || !digest.is_none_or(is_digest) {
        return None;
    }
    let (registry, repository) = split_registry(name);
    if repository.len() > NAME_TOTAL_LENGTH_MAX {
        return None;
    }
    let (registry, repository) = (registry.to_owned(), repository.into_owned());
    Some(match (tag, digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(registry, repository, tag.to_owned(), digest.to_owned())
        }
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest.to_owned()),
        (tag, None) => {
            Reference::with_tag(registry, repository, tag.unwrap_or("latest").to_owned())
        }
    })
}

/// `[domain "/"] path-component ("/" path-component)*`.
fn is_name(name: &str) -> bool {
    let mut parts = name.split('/');
    let first = parts.next().unwrap_or_default();
    let rest_are_paths = parts.clone().all(is_path_component);
    // The first part is a path component, or a domain when more parts follow.
    rest_are_paths && (is_path_component(first) || (parts.next().is_some() && is_domain(first)))
}

/// `[a-z0-9]+ (separator [a-z0-9]+)*`, a separator being `.`, `_`, `__` or dashes.
fn is_path_component(part: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = part.as_bytes();
    if !bytes.first().is_some_and(|&b| alnum(b)) || !bytes.last().is_some_and(|&b| alnum(b)) {
        return false;
    }
    bytes
        .split(|&b| alnum(b))
        .filter(|run| !run.is_empty())
        .all(|run| matches!(run, b"." | b"_" | b"__") || run.iter().all(|&b| b == b'-'))
}

/// `component ("." component)* [":" port]`; a component is letters and digits, with dashes
/// inside.
fn is_domain(domain: &str) -> bool {
    let (host, port) = match domain.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let component = |c: &str| {
        let b = c.as_bytes();
        b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric)
            && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
    };
    host.split('.').all(component)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[\w][\w.-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    (1..=128).contains(&bytes.len())
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `sha256:` and 64 hex digits, `sha384:` and 96, or `sha512:` and 128: the algorithms
/// oci-client reads.
fn is_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let length = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == length && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The registry and the repository: the first part is the registry when it has a `.` or a
/// `:`, or is `localhost`; otherwise Docker Hub, where a one-part name is an official image
/// (`library/`).
fn split_registry(name: &str) -> (&str, Cow<'_, str>) {
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => ("docker.io", name),
    };
    let registry = if registry == "index.docker.io" {
        "docker.io"
    } else {
        registry
    };
    if registry == "docker.io" && !repository.contains('/') {
        return (registry, Cow::Owned(format!("library/{repository}")));
    }
    (registry, Cow::Borrowed(repository))
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
        assert_eq!(a.digest(), Some(D));
        assert_eq!(pinned(&a.written, D), None, "already pinned");
    }

    #[test]
    fn pinning_keeps_the_image_as_written() {
        let r = ImageRef::parse("reg:5000/team/app:1.0").unwrap();
        assert_eq!(r.digest(), None);
        assert_eq!(
            pinned(&r.written, D),
            Some(format!("reg:5000/team/app:1.0@{D}"))
        );
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

/// [`parse_reference`] against oci-client's own parser.
#[cfg(test)]
mod same_as_oci_client {
    use super::*;
    use crate::testing::Rng;

    const HEX64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// References worth reading, good and bad: oci-client's own test cases, the forms pods
    /// use, and the edges of each part of the grammar.
    fn corpus() -> Vec<String> {
        let mut refs: Vec<String> = [
            "busybox",
            "test.com:tag",
            "test.com:5000",
            "test.com/repo:tag",
            "test:5000/repo",
            "test:5000/repo:tag",
            "lowercase:Uppercase",
            "sub-dom1.foo.com/bar/baz/quux",
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
            "b.gcr.io/test.example.com/my-app:test.example.com",
            "xn--n3h.com/myimage:xn--n3h.com",
            "foo_bar.com:8080",
            "foo/foo_bar.com:8080",
            "opensuse/leap:15.3",
            "",
            ":justtag",
            "Uppercase:tag",
            "Uppercase/lowercase:tag",
            "test:5000/Uppercase/lowercase:tag",
            "aa/asdf$$^/aa",
            "nginx",
            "nginx:1.27",
            "library/nginx",
            "docker.io/nginx",
            "index.docker.io/nginx:1",
            "index.docker.io/team/app",
            "localhost/app",
            "localhost:5000/app:v1",
            "registry.k8s.io/pause:3.9",
            "ghcr.io/acme/api:1.2.3",
            "quay.io/a/b/c/d:e",
            "a__b",
            "a___b",
            "a--b",
            "a-b",
            "a.b",
            "a..b",
            "a._b",
            "-a",
            "a-",
            "a/-b",
            "A.b/c",
            "a-.b/c",
            "a:0/b",
            "a:/b",
            "a:b:c",
            "a//b",
            "a/",
            "/a",
            "host:5000",
            "host:5000/",
            "a:_tag",
            "a:.tag",
            "a:-tag",
            "a:t_a-g.1",
            "a:tag/x",
            "a@",
            "a@sha256",
            "a:b@",
            "a@@sha256:x",
            "a b",
            " a",
            "a\t",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for base in ["a", "reg:5000/team/app", "app:1.0"] {
            refs.push(format!("{base}@sha256:{HEX64}"));
            refs.push(format!("{base}@sha256:{}", HEX64.to_uppercase()));
            refs.push(format!("{base}@sha256:{}", &HEX64[1..]));
            refs.push(format!("{base}@sha384:{HEX64}{}", &HEX64[..32]));
            refs.push(format!("{base}@sha512:{HEX64}{HEX64}"));
            refs.push(format!("{base}@md5:{}", &HEX64[..32]));
            refs.push(format!("{base}@sha256+b64:{HEX64}"));
        }
        refs.push(format!("a:{}", "t".repeat(128)));
        refs.push(format!("a:{}", "t".repeat(129)));
        refs.push(format!("r.io/{}", "a".repeat(255)));
        refs.push(format!("r.io/{}", "a".repeat(256)));
        refs.push("a".repeat(248));
        refs.push("a".repeat(247));
        refs
    }

    /// What a reference reads as, or `None`: registry, repository, tag, digest.
    type Parts = Option<(String, String, Option<String>, Option<String>)>;

    fn parts(r: Option<Reference>) -> Parts {
        r.map(|r| {
            (
                r.registry().to_owned(),
                r.repository().to_owned(),
                r.tag().map(str::to_owned),
                r.digest().map(str::to_owned),
            )
        })
    }

    fn compare(image: &str) {
        let ours = parts(parse_reference(image));
        let theirs = parts(Reference::try_from(image).ok());
        if image.is_ascii() {
            assert_eq!(ours, theirs, "{image:?}");
        } else {
            // Ours refuses Unicode letters in a tag; otherwise the same.
            assert!(
                ours.is_none() || ours == theirs,
                "{image:?}: {ours:?} / {theirs:?}"
            );
        }
    }

    #[test]
    fn every_reference_of_the_corpus_reads_the_same() {
        for image in corpus() {
            compare(&image);
        }
        assert!(parse_reference("app:vé").is_none(), "a tag is ASCII");
    }

    /// Pieces the mutations drop into a reference.
    const PIECES: &[&str] = &[
        "a",
        "Z",
        "0",
        "9",
        ".",
        "_",
        "-",
        ":",
        "/",
        "@",
        "__",
        "--",
        "..",
        "sha256:",
        HEX64,
        "localhost",
        "docker.io",
        "index.docker.io",
        ":5000",
        "é",
        " ",
        "",
    ];

    #[test]
    fn random_mutations_of_the_corpus_read_the_same() {
        let rounds: usize = std::env::var("REFERENCE_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        let seed: u64 = std::env::var("REFERENCE_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let mut rng =
            Rng((0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D)).max(1));
        let corpus = corpus();
        for _ in 0..rounds {
            let mut image = corpus[rng.below(corpus.len())].clone();
            for _ in 0..=rng.below(3) {
                let mut at = rng.below(image.len() + 1);
                while !image.is_char_boundary(at) {
                    at -= 1;
                }
                let piece = PIECES[rng.below(PIECES.len())];
                match rng.below(3) {
                    0 => image.insert_str(at, piece),
                    1 => {
                        let end = (at + 1 + rng.below(4)).min(image.len());
                        if let Some(cut) = image.get(at..end) {
                            image = image.replacen(cut, piece, 1);
                        }
                    }
                    _ => {
                        if let Some(end) =
                            (at + 1..=image.len()).find(|&e| image.is_char_boundary(e))
                        {
                            image.replace_range(at..end, "");
                        }
                    }
                }
            }
            compare(&image);
        }
    }
}
