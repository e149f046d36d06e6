//! [`Verifier`]: tag → digest, signature fetch, authorities, cache, single flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use globset::{Glob, GlobSet, GlobSetBuilder};
use prometheus_client::registry::Registry as MetricsRegistry;
use sigstore::cosign::{CosignCapabilities, SignatureLayer};
use tokio::time::{timeout_at, Instant};

use super::authority::{self, Authority, TrustRootFile};
use super::cache::Cache;
use super::findings::{self, ImageVerification, SignatureReport};
use super::metrics::{ResultLabel, SignatureMetrics};
use super::reference::{is_sha256_digest, ImageRef};
use super::registry::{Failure, Registries};
use super::{Result, SignatureError, Verification};
use crate::config::ImageSignature;
use crate::workload::Workload;

type Flight = Shared<BoxFuture<'static, Verification>>;

/// Verifies image signatures; built once from the configuration at start-up and shared
/// (`Clone` is cheap) by every review.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    images: GlobSet,
    skip: GlobSet,
    authorities: Vec<Authority>,
    /// Keyless trust roots; the signature layers are fetched once per root used.
    roots: Vec<TrustRootFile>,
    /// The trust roots the authorities use, each once, in order: `None` (key authorities,
    /// no trust root) first.
    trust_groups: Vec<Option<usize>>,
    /// Idle sigstore clients: `[0]` without a trust root (key authorities), `[i + 1]` with
    /// `roots[i]`.
    clients: Vec<Mutex<Vec<sigstore::cosign::Client>>>,
    registries: Registries,
    cache: Cache,
    ttl: Duration,
    negative_ttl: Duration,
    flights: Mutex<HashMap<String, Flight>>,
    /// Each image text seen, prepared ([`Prepared`]); emptied when it reaches the cache's
    /// size.
    prepared: Mutex<HashMap<String, Arc<Prepared>>>,
    prepared_capacity: usize,
    metrics: SignatureMetrics,
    pin_digests: bool,
    max_idle_clients: usize,
}

fn globs(patterns: &[String], field: &str) -> Result<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    for (i, p) in patterns.iter().enumerate() {
        builder.add(Glob::new(p).map_err(|e| SignatureError::Invalid {
            field: format!("{field}[{i}]"),
            message: e.to_string(),
        })?);
    }
    builder.build().map_err(|e| SignatureError::Invalid {
        field: field.to_owned(),
        message: e.to_string(),
    })
}

impl Verifier {
    /// Compile the configuration (read key, trust root, CA and credential files) and register
    /// the metrics. Errors name the field.
    pub fn new(config: &ImageSignature, metrics: &mut MetricsRegistry) -> Result<Self> {
        let metrics = SignatureMetrics::register(metrics);
        Self::with_metrics(config, metrics)
    }

    /// Same, with metric families created elsewhere.
    pub fn with_metrics(config: &ImageSignature, metrics: SignatureMetrics) -> Result<Self> {
        let mut roots = Vec::new();
        let authorities = config
            .authorities
            .iter()
            .enumerate()
            .map(|(i, a)| Authority::compile(i, a, &mut roots))
            .collect::<Result<Vec<_>>>()?;
        let roots: Vec<TrustRootFile> = roots.into_iter().map(|(_, r)| r).collect();
        let registries = Registries::new(config, metrics.clone())?;
        let clients = (0..=roots.len()).map(|_| Mutex::new(Vec::new())).collect();
        let mut trust_groups: Vec<Option<usize>> =
            authorities.iter().map(Authority::trust_root).collect();
        trust_groups.sort_unstable();
        trust_groups.dedup();
        let verifier = Self {
            inner: Arc::new(Inner {
                images: globs(&config.images, "policies.image-signature.images")?,
                skip: globs(&config.skip, "policies.image-signature.skip")?,
                authorities,
                roots,
                trust_groups,
                clients,
                registries,
                cache: Cache::new(config.cache.size),
                ttl: config.cache.ttl.0,
                negative_ttl: config.cache.negative_ttl.0,
                flights: Mutex::new(HashMap::new()),
                prepared: Mutex::new(HashMap::new()),
                prepared_capacity: config.cache.size.max(1),
                metrics,
                pin_digests: config.pin_digests,
                max_idle_clients: config.max_concurrent_registry_calls,
            }),
        };
        verifier.inner.warm_clients();
        Ok(verifier)
    }

    pub fn metrics(&self) -> &SignatureMetrics {
        &self.inner.metrics
    }

    /// Names of the configured authorities.
    pub fn authorities(&self) -> Vec<String> {
        authority::names(&self.inner.authorities)
    }

    /// Verify one image before `deadline`. Never fails: every problem is a [`Verification`].
    pub async fn verify(&self, image: &str, deadline: Instant) -> Verification {
        let v = self.verify_uncounted(image, deadline).await;
        if let Some(result) = v.result_label() {
            self.inner
                .metrics
                .verifications
                .get_or_create(&ResultLabel { result })
                .inc();
        }
        v
    }

    async fn verify_uncounted(&self, image: &str, deadline: Instant) -> Verification {
        let inner = &self.inner;
        let prepared = inner.prepare(image);
        let (r, digest_key) = match &*prepared {
            Prepared::Settled(v) => return v.clone(),
            Prepared::Reference(r, digest_key) => (r, digest_key),
        };
        if let Some(key) = digest_key {
            if let Some(v) = inner.cached(key) {
                return v;
            }
        }
        let key = r.flight_key();
        let flight = {
            let mut flights = inner.flights.lock().unwrap_or_else(|p| p.into_inner());
            flights
                .entry(key.clone())
                .or_insert_with(|| {
                    let inner = Arc::clone(&self.inner);
                    let r = r.clone();
                    let handle = tokio::spawn(async move {
                        let v = inner.resolve_and_verify(&r, deadline).await;
                        inner
                            .flights
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&key);
                        v
                    });
                    async move {
                        handle
                            .await
                            .unwrap_or_else(|e| Verification::TagUnresolvable {
                                reason: format!("internal error in the verification task: {e}"),
                            })
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        match timeout_at(deadline, flight).await {
            Ok(v) => v,
            Err(_) => Verification::RegistryUnreachable {
                registry: r.registry().to_owned(),
                reason: "no answer before the review's deadline".into(),
            },
        }
    }

    /// Verify every image of a workload (each distinct image once, concurrently) and build
    /// the findings and, when `pinDigests` is on, the pinning patch.
    pub async fn check_workload(
        &self,
        workload: &Workload<'_>,
        deadline: Instant,
    ) -> SignatureReport {
        let containers: Vec<(crate::workload::ContainerKind, usize, String, String)> = workload
            .containers()
            .filter_map(|c| {
                c.image
                    .map(|image| (c.kind, c.index, c.name.to_owned(), image.to_owned()))
            })
            .collect();
        let mut distinct: Vec<&str> = containers.iter().map(|c| c.3.as_str()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let outcomes =
            futures::future::join_all(distinct.iter().map(|image| self.verify(image, deadline)))
                .await;
        let by_image: HashMap<&str, Verification> = distinct.into_iter().zip(outcomes).collect();
        let images: Vec<ImageVerification> = containers
            .iter()
            .map(|(kind, index, name, image)| ImageVerification {
                kind: *kind,
                index: *index,
                container: name.clone(),
                image: image.clone(),
                verification: by_image.get(image.as_str()).cloned().unwrap_or(
                    Verification::TagUnresolvable {
                        reason: "internal error: image not verified".into(),
                    },
                ),
            })
            .collect();
        SignatureReport {
            findings: findings::findings(workload, &images),
            patch: if self.inner.pin_digests {
                findings::pins(workload, &images)
            } else {
                Vec::new()
            },
            images,
        }
    }
}

/// Longest image text kept prepared: a valid reference is shorter (a registry, a repository
/// of at most 255 bytes, a tag of at most 128, a sha512 digest of 135).
const MAX_PREPARED_TEXT: usize = 1024;

/// What verifying an image needs from its text alone, worked out once per distinct text
/// ([`Inner::prepare`]): parsing the reference, its full form, up to four glob matches and
/// the cache key, for every container of every review, were most of a cache hit (5.1 µs when
/// oci-client's regular expression parsed it; 0.35 µs now, with or without our own reader).
#[derive(Debug)]
enum Prepared {
    /// Answered without the cache or a registry: not a reference, skipped, not among the
    /// images that need a signature, an unsupported digest.
    Settled(Verification),
    /// To verify: the reference, and its cache key when it is pinned by digest.
    Reference(ImageRef, Option<String>),
}

impl Prepared {
    fn new(image: &str, images: &GlobSet, skip: &GlobSet) -> Self {
        let Some(r) = ImageRef::parse(image) else {
            return Self::Settled(Verification::TagUnresolvable {
                reason: "not a valid image reference".into(),
            });
        };
        let whole = r.whole();
        if skip.is_match(image) || skip.is_match(&whole) {
            return Self::Settled(Verification::Skipped {
                reason: "trusted without a signature by the platform (skip)".into(),
            });
        }
        if !(images.is_match(image) || images.is_match(&whole)) {
            return Self::Settled(Verification::Skipped {
                reason: "not among the images that need a signature (images)".into(),
            });
        }
        let digest_key = match r.digest() {
            Some(d) if !is_sha256_digest(d) => {
                return Self::Settled(Verification::TagUnresolvable {
                    reason: format!("unsupported digest {d:?} (expected sha256:<64 hex>)"),
                })
            }
            Some(d) => Some(r.digest_key(d)),
            None => None,
        };
        Self::Reference(r, digest_key)
    }
}

impl Inner {
    /// `image` prepared: from [`Inner::prepared`] when this text was seen before. The map
    /// holds at most as many texts as the cache holds digests, and is emptied when full:
    /// preparing again costs microseconds, and a cluster runs far fewer distinct images.
    /// Texts longer than any valid reference ([`MAX_PREPARED_TEXT`]) are prepared each
    /// time and never kept, so that pods with huge image fields cannot fill the memory.
    fn prepare(&self, image: &str) -> Arc<Prepared> {
        if image.len() > MAX_PREPARED_TEXT {
            return Arc::new(Prepared::new(image, &self.images, &self.skip));
        }
        let lock = || self.prepared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = lock().get(image) {
            return Arc::clone(p);
        }
        let p = Arc::new(Prepared::new(image, &self.images, &self.skip));
        let mut map = lock();
        if map.len() >= self.prepared_capacity {
            map.clear();
        }
        map.insert(image.to_owned(), Arc::clone(&p));
        p
    }

    /// A cache lookup by digest key, counted.
    fn cached(&self, key: &str) -> Option<Verification> {
        let hit = self.cache.get(key, Instant::now());
        let result = match &hit {
            Some(Verification::Verified { .. }) => "hit",
            Some(_) => "negative_hit",
            None => "miss",
        };
        self.metrics
            .cache
            .get_or_create(&ResultLabel { result })
            .inc();
        hit
    }

    fn remember(&self, key: String, v: &Verification) {
        let ttl = match v {
            Verification::Verified { .. } => self.ttl,
            Verification::Unsigned { .. }
            | Verification::InvalidSignature { .. }
            | Verification::NotFound { .. } => self.negative_ttl,
            _ => return,
        };
        self.cache.insert(key, v.clone(), ttl, Instant::now());
    }

    fn unreachable(r: &ImageRef, reason: String) -> Verification {
        Verification::RegistryUnreachable {
            registry: r.registry().to_owned(),
            reason,
        }
    }

    async fn resolve_and_verify(&self, r: &ImageRef, deadline: Instant) -> Verification {
        let pinned = r.digest().map(str::to_owned);
        let lookup = match &pinned {
            Some(d) => r.at_digest(d),
            None => r.parsed.clone(),
        };
        // A pinned digest is looked up and its signature fetched at once: a cache miss is a
        // series of round trips to the registry, and these two need nothing from each other.
        // Whether the image exists still decides first, as if they had run in turn.
        let (exists, signature) = match &pinned {
            Some(d) => {
                let (exists, signature) = tokio::join!(
                    self.registries.manifest_digest(&lookup, deadline),
                    self.verify_digest(r, d, deadline)
                );
                (exists, Some(signature))
            }
            None => (
                self.registries.manifest_digest(&lookup, deadline).await,
                None,
            ),
        };
        // The tag resolved, or the pinned digest found.
        let digest = match exists {
            Ok(d) => pinned.clone().unwrap_or(d),
            Err(Failure::NotFound(detail)) => {
                let v = Verification::NotFound {
                    reason: format!("{} is not in the registry ({detail})", lookup.whole()),
                };
                if let Some(d) = &pinned {
                    self.remember(r.digest_key(d), &v);
                }
                return v;
            }
            Err(Failure::Unreachable(reason)) => return Self::unreachable(r, reason),
            Err(Failure::Other(reason)) => return Verification::TagUnresolvable { reason },
        };
        if !is_sha256_digest(&digest) {
            return Verification::TagUnresolvable {
                reason: format!("the registry gave an unsupported digest {digest:?}"),
            };
        }
        let key = r.digest_key(&digest);
        let v = match signature {
            Some(v) => v,
            None => {
                if let Some(v) = self.cached(&key) {
                    return v;
                }
                self.verify_digest(r, &digest, deadline).await
            }
        };
        self.remember(key, &v);
        v
    }

    async fn verify_digest(&self, r: &ImageRef, digest: &str, deadline: Instant) -> Verification {
        let sig = r.signature_tag(digest);
        match self.registries.manifest_digest(&sig, deadline).await {
            Ok(_) => {}
            Err(Failure::NotFound(_)) => {
                return Verification::Unsigned {
                    digest: digest.to_owned(),
                    reason: format!("no cosign signature at {}", sig.whole()),
                }
            }
            Err(Failure::Unreachable(reason)) => return Self::unreachable(r, reason),
            Err(Failure::Other(reason)) => {
                return Verification::TagUnresolvable {
                    reason: format!("cannot read {}: {reason}", sig.whole()),
                }
            }
        }
        // One fetch per trust root in use: key authorities first (root-less client).
        let mut layers_seen = 0usize;
        for &group in &self.trust_groups {
            let layers = match self.fetch_layers(r, digest, group, deadline).await {
                Ok(l) => l,
                Err(v) => return v,
            };
            layers_seen = layers_seen.max(layers.len());
            if let Some(a) = self
                .authorities
                .iter()
                .filter(|a| a.trust_root() == group)
                .find(|a| a.accepts(&layers))
            {
                return Verification::Verified {
                    digest: digest.to_owned(),
                    authority: a.name.clone(),
                };
            }
        }
        Verification::InvalidSignature {
            digest: digest.to_owned(),
            authorities: authority::names(&self.authorities),
            reason: if layers_seen == 0 {
                format!("{} holds no readable cosign signature", sig.whole())
            } else {
                format!("{layers_seen} signature(s) found, none made by a trusted authority")
            },
        }
    }

    fn client(
        &self,
        group: Option<usize>,
    ) -> std::result::Result<sigstore::cosign::Client, String> {
        let slot = group.map_or(0, |g| g + 1);
        if let Some(c) = self.clients[slot]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
        {
            return Ok(c);
        }
        let builder = sigstore::cosign::ClientBuilder::default()
            .with_oci_client_config(self.registries.sigstore_config.clone());
        let builder = match group {
            None => builder,
            Some(g) => builder
                .with_trust_repository(&self.roots[g].root)
                .map_err(|e| e.to_string())?,
        };
        builder.build().map_err(|e| e.to_string())
    }

    /// One idle client for each trust root the authorities use, built before the first
    /// review: building one reads the system's CA certificates, ~13 ms that the first cache
    /// miss would otherwise wait for (`cargo bench --bench signature`). A client that cannot be
    /// built yet is built, or its error reported, when a review needs it.
    fn warm_clients(&self) {
        for &group in &self.trust_groups {
            match self.client(group) {
                Ok(client) => self.give_back(group, client),
                Err(reason) => tracing::warn!(%reason, "cannot build a registry client yet"),
            }
        }
    }

    fn give_back(&self, group: Option<usize>, client: sigstore::cosign::Client) {
        let slot = group.map_or(0, |g| g + 1);
        let mut idle = self.clients[slot].lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle_clients {
            idle.push(client);
        }
    }

    /// The signature layers the sigstore crate trusts (certificates and bundles checked
    /// against the trust root of `group`).
    async fn fetch_layers(
        &self,
        r: &ImageRef,
        digest: &str,
        group: Option<usize>,
        deadline: Instant,
    ) -> std::result::Result<Vec<SignatureLayer>, Verification> {
        let mut client = self
            .client(group)
            .map_err(|reason| Verification::TagUnresolvable {
                reason: format!("cannot build the registry client: {reason}"),
            })?;
        let auth: sigstore::registry::Auth = (&self.registries.auth(r.registry())).into();
        let source = sigstore::registry::OciReference::with_digest(
            r.registry().to_owned(),
            r.repository().to_owned(),
            digest.to_owned(),
        );
        let out = self
            .registries
            .call(
                r.registry(),
                deadline,
                |e: sigstore::errors::SigstoreError| Failure::Other(e.to_string()),
                client.trusted_signature_layers(&auth, &source),
            )
            .await;
        // The client goes back to the pool unless the registry could not be reached: a
        // signature the crate found missing or unreadable is an answer like any other, and
        // building a client again would cost the next miss ~13 ms.
        if !matches!(out, Err(Failure::Unreachable(_))) {
            self.give_back(group, client);
        }
        match out {
            Ok(layers) if !layers.is_empty() => Ok(layers),
            Ok(_) | Err(Failure::Other(_)) | Err(Failure::NotFound(_)) => {
                // The crate reports a failed signature download as "no layers": ask the
                // registry again to tell an outage from an empty or unreadable signature.
                let sig = r.signature_tag(digest);
                match self.registries.manifest_digest(&sig, deadline).await {
                    Err(Failure::Unreachable(reason)) => Err(Self::unreachable(r, reason)),
                    _ => {
                        if let Err(Failure::Other(reason)) = out {
                            tracing::warn!(image = %r.written, %reason, "signature fetch failed");
                        }
                        Ok(Vec::new())
                    }
                }
            }
            Err(Failure::Unreachable(reason)) => Err(Self::unreachable(r, reason)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ImageSignature;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// A well-formed reference whose digest is not sha256.
    static UNSUPPORTED: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("reg.example/app@sha512:{}", "ab".repeat(64)));

    fn verifier(cache_size: usize) -> Verifier {
        let mut config = ImageSignature {
            images: vec!["reg.example/*".into()],
            skip: vec!["reg.example/base/*".into()],
            ..ImageSignature::default()
        };
        config.cache.size = cache_size;
        Verifier::new(&config, &mut MetricsRegistry::default()).unwrap()
    }

    fn settled(p: &Prepared) -> Option<&Verification> {
        match p {
            Prepared::Settled(v) => Some(v),
            Prepared::Reference(..) => None,
        }
    }

    #[test]
    fn an_image_text_is_prepared_once_and_answers_the_same_from_the_map() {
        let v = verifier(100);
        for image in [
            "reg.example/base/os:1",
            "elsewhere.example/app:1",
            "Not A Reference",
            &*UNSUPPORTED,
        ] {
            let first = v.inner.prepare(image);
            let again = v.inner.prepare(image);
            assert!(Arc::ptr_eq(&first, &again), "{image} prepared twice");
            assert!(settled(&first).is_some(), "{image}: {first:?}");
        }
        let skipped = v.inner.prepare("reg.example/base/os:1");
        assert!(
            matches!(settled(&skipped), Some(Verification::Skipped { reason }) if reason.contains("(skip)"))
        );
        let other = v.inner.prepare("elsewhere.example/app:1");
        assert!(
            matches!(settled(&other), Some(Verification::Skipped { reason }) if reason.contains("(images)"))
        );
        let bad = v.inner.prepare(&UNSUPPORTED);
        assert!(
            matches!(settled(&bad), Some(Verification::TagUnresolvable { reason }) if reason.contains("unsupported digest"))
        );

        let pinned = v.inner.prepare(&format!("reg.example/app:1.0@{D}"));
        match &*pinned {
            Prepared::Reference(r, key) => {
                assert_eq!(r.written, format!("reg.example/app:1.0@{D}"));
                assert_eq!(
                    key.as_deref(),
                    Some(format!("reg.example/app@{D}").as_str())
                );
            }
            Prepared::Settled(v) => panic!("a pinned image to verify was settled: {v:?}"),
        }
        let tagged = v.inner.prepare("reg.example/app:1.0");
        assert!(matches!(&*tagged, Prepared::Reference(_, None)));
    }

    #[test]
    fn a_text_longer_than_any_reference_is_answered_but_not_kept() {
        let v = verifier(100);
        let huge = format!("reg.example/{}:1", "a".repeat(MAX_PREPARED_TEXT));
        for _ in 0..2 {
            let p = v.inner.prepare(&huge);
            assert!(matches!(
                settled(&p),
                Some(Verification::TagUnresolvable { .. })
            ));
        }
        assert_eq!(v.inner.prepared.lock().unwrap().len(), 0);
    }

    #[test]
    fn the_prepared_texts_never_outnumber_the_cache_size() {
        let v = verifier(3);
        for i in 0..10 {
            let image = format!("reg.example/app:{i}");
            assert!(
                matches!(&*v.inner.prepare(&image), Prepared::Reference(r, None) if r.written == image)
            );
            assert!(v.inner.prepared.lock().unwrap().len() <= 3);
        }
    }

    /// The first cache miss of a process would otherwise wait ~13 ms for a sigstore client.
    #[test]
    fn a_client_for_each_trust_root_in_use_is_ready_before_the_first_review() {
        let pem = sigstore::crypto::SigningScheme::ECDSA_P256_SHA256_ASN1
            .create_signer()
            .unwrap()
            .to_sigstore_keypair()
            .unwrap()
            .public_key_to_pem()
            .unwrap();
        let yaml = format!(
            "policies:\n  image-signature:\n    mode: enforce\n    authorities:\n      - name: \
             release\n        key: |\n          {}\n",
            pem.trim_end().replace('\n', "\n          ")
        );
        let config = crate::config::Config::parse(&yaml, "test").unwrap();
        let v = Verifier::new(
            &config.policies.image_signature,
            &mut MetricsRegistry::default(),
        )
        .unwrap();
        let idle = |slot: usize| v.inner.clients[slot].lock().unwrap().len();
        assert_eq!(idle(0), 1, "the key authority's client is built");
        assert!(
            (1..v.inner.clients.len()).all(|slot| idle(slot) == 0),
            "no trust root is in use"
        );
    }
}
