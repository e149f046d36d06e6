//! `image-signature` against a real OCI registry: Debian's `docker-registry` (distribution
//! 2.8) on loopback, plain HTTP and TLS with its own CA. Images are built and signed here
//! (sigstore's signing API, ECDSA P-256); nothing is mocked and nothing is downloaded.
//!
//! There is no kube-apiserver here: these tests call the verifier the `/validate` and
//! `/mutate` handlers call (`Verifier::check_workload`) with workloads decoded by the crate's
//! own `Workload` view.

mod common;
#[path = "signature/harness.rs"]
mod harness;
#[path = "server/support.rs"]
#[allow(dead_code)]
mod support;

use std::time::Duration;

use harness::{write, KeylessWorld, Tamper, TestKey, TestRegistry};
use kube_baseline::config::Config;
use kube_baseline::policy::PolicyId;
use kube_baseline::signature::{Verification, Verifier};
use kube_baseline::workload::{Workload, WorkloadKind};
use prometheus_client::registry::Registry;
use tokio::time::Instant;

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(8)
}

/// A verifier trusting `keys` (name, public PEM) for images of `registry`.
fn verifier_for(registry: &TestRegistry, keys: &[(&str, &str)], extra: &str) -> Verifier {
    let config = Config::parse(&config_yaml(registry, keys, extra), "test").expect("valid config");
    Verifier::new(&config.policies.image_signature, &mut Registry::default()).expect("verifier")
}

/// `policies/baseline.yaml` text enforcing signatures by `keys` for images of `registry`.
fn config_yaml(registry: &TestRegistry, keys: &[(&str, &str)], extra: &str) -> String {
    let mut yaml =
        String::from("policies:\n  image-signature:\n    mode: enforce\n    authorities:\n");
    for (name, pem) in keys {
        let indented = pem.trim_end().replace('\n', "\n          ");
        yaml.push_str(&format!(
            "      - name: {name}\n        key: |\n          {indented}\n"
        ));
    }
    if registry.ca_pem.is_some() {
        yaml.push_str(&format!(
            "    registries:\n      \"{}\": {{caPath: {}}}\n",
            registry.host(),
            registry.ca_path().display()
        ));
    } else {
        yaml.push_str(&format!(
            "    registries:\n      \"{}\": {{insecure: true}}\n",
            registry.host()
        ));
    }
    yaml.push_str(extra);
    yaml
}

fn deployment(images: &[(&str, &str)]) -> Workload<'static> {
    let containers: Vec<serde_json::Value> = images
        .iter()
        .map(|(name, image)| serde_json::json!({"name": name, "image": image}))
        .collect();
    let json = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"replicas": 50, "selector": {}, "template": {"spec": {"containers": containers}}},
    });
    Workload::from_json(WorkloadKind::Deployment, &json.to_string()).expect("workload")
}

#[tokio::test]
async fn an_image_signed_by_the_trusted_key_is_verified_and_pinned_to_its_digest() {
    let registry = TestRegistry::start();
    let key = TestKey::generate();
    let digest = registry.push_image("shop/app", "1.0", "hello").await;
    registry.sign("shop/app", &digest, &key).await;
    let verifier = verifier_for(&registry, &[("release", &key.public_pem)], "");
    let image = format!("{}/shop/app:1.0", registry.host());

    let report = verifier
        .check_workload(&deployment(&[("app", &image)]), deadline())
        .await;
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(
        report.images[0].verification,
        Verification::Verified {
            digest: digest.clone(),
            authority: "release".into()
        }
    );
    assert_eq!(
        serde_json::to_value(&report.patch).unwrap(),
        serde_json::json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image",
            "value": format!("{image}@{digest}")}])
    );

    // What /validate then sees: the pinned image, verified from the cache.
    let hits = verifier.metrics().cache_requests("hit");
    let pinned = verifier
        .check_workload(
            &deployment(&[("app", &format!("{image}@{digest}"))]),
            deadline(),
        )
        .await;
    assert!(pinned.findings.is_empty(), "{:?}", pinned.findings);
    assert!(pinned.patch.is_empty(), "already pinned: no patch");
    assert_eq!(verifier.metrics().cache_requests("hit"), hits + 1);
}

#[tokio::test]
async fn over_tls_the_registry_ca_must_be_configured() {
    let registry = TestRegistry::start_tls();
    let key = TestKey::generate();
    let digest = registry.push_image("app", "v1", "tls").await;
    registry.sign("app", &digest, &key).await;
    let image = format!("{}/app:v1", registry.host());

    let verifier = verifier_for(&registry, &[("release", &key.public_pem)], "");
    assert_eq!(
        verifier.verify(&image, deadline()).await,
        Verification::Verified {
            digest,
            authority: "release".into()
        }
    );

    // The same registry without its CA: the TLS handshake fails, reported as an outage.
    let yaml = format!(
        "policies:\n  image-signature:\n    mode: enforce\n    authorities:\n      - name: release\n        keyPath: {}\n",
        write(registry.dir(), "cosign.pub", &key.public_pem).display()
    );
    let config = Config::parse(&yaml, "test").unwrap();
    let untrusting =
        Verifier::new(&config.policies.image_signature, &mut Registry::default()).unwrap();
    let v = untrusting.verify(&image, deadline()).await;
    assert!(
        matches!(&v, Verification::RegistryUnreachable { registry: r, .. } if *r == registry.host()),
        "{v:?}"
    );
}

#[tokio::test]
async fn an_unsigned_image_is_denied_with_the_reason() {
    let registry = TestRegistry::start();
    let key = TestKey::generate();
    let digest = registry
        .push_image("app", "unsigned", "nobody signed me")
        .await;
    let verifier = verifier_for(&registry, &[("release", &key.public_pem)], "");
    let image = format!("{}/app:unsigned", registry.host());

    let report = verifier
        .check_workload(&deployment(&[("app", &image)]), deadline())
        .await;
    assert!(
        matches!(&report.images[0].verification, Verification::Unsigned { digest: d, .. } if *d == digest),
        "{:?}",
        report.images[0].verification
    );
    assert!(report.patch.is_empty(), "an unverified image is not pinned");
    let f = &report.findings[0];
    assert_eq!(f.policy, PolicyId::ImageSignature);
    assert_eq!(f.container.as_deref(), Some("app"));
    assert_eq!(f.field, "spec.template.spec.containers[0].image");
    assert!(f.message.contains("has no signature"), "{}", f.message);
    assert!(f.message.contains(&image), "{}", f.message);
    assert!(f.message.contains(".sig"), "{}", f.message);
}

/// A pinned image is looked up and its signature fetched at once; which of the two
/// answers decides must not change with that.
#[tokio::test]
async fn a_pinned_image_is_judged_by_its_existence_first_then_by_its_signature() {
    let registry = TestRegistry::start();
    let key = TestKey::generate();
    let unsigned = registry
        .push_image("app", "unsigned", "nobody signed me")
        .await;
    let signed = registry.push_image("app", "signed", "signed").await;
    registry.sign("app", &signed, &key).await;
    let verifier = verifier_for(&registry, &[("release", &key.public_pem)], "");
    let absent = format!("sha256:{}", "0".repeat(64));

    let missing = verifier
        .verify(&format!("{}/app@{absent}", registry.host()), deadline())
        .await;
    assert!(
        matches!(&missing, Verification::NotFound { reason } if reason.contains("is not in the registry")),
        "a digest the registry lacks is not found, not unsigned: {missing:?}"
    );
    let v = verifier
        .verify(&format!("{}/app@{unsigned}", registry.host()), deadline())
        .await;
    assert!(
        matches!(&v, Verification::Unsigned { digest, .. } if *digest == unsigned),
        "{v:?}"
    );
    let v = verifier
        .verify(
            &format!("{}/app:signed@{signed}", registry.host()),
            deadline(),
        )
        .await;
    assert!(
        matches!(&v, Verification::Verified { digest, authority } if *digest == signed && authority == "release"),
        "{v:?}"
    );
}

#[tokio::test]
async fn an_image_signed_by_another_key_is_denied_listing_the_authorities_tried() {
    let registry = TestRegistry::start();
    let trusted = TestKey::generate();
    let also_trusted = TestKey::generate();
    let stranger = TestKey::generate();
    let digest = registry
        .push_image("app", "1", "signed by a stranger")
        .await;
    registry.sign("app", &digest, &stranger).await;
    let verifier = verifier_for(
        &registry,
        &[
            ("release", &trusted.public_pem),
            ("hotfix", &also_trusted.public_pem),
        ],
        "",
    );
    let image = format!("{}/app:1", registry.host());

    let v = verifier.verify(&image, deadline()).await;
    match &v {
        Verification::InvalidSignature { authorities, .. } => {
            assert_eq!(authorities, &["release", "hotfix"])
        }
        other => panic!("{other:?}"),
    }
    let report = verifier
        .check_workload(&deployment(&[("app", &image)]), deadline())
        .await;
    assert!(
        report.findings[0]
            .message
            .contains("does not verify against any trusted authority"),
        "{}",
        report.findings[0].message
    );
    assert!(report.findings[0].message.contains("release, hotfix"));
}

#[tokio::test]
async fn a_tag_moved_to_an_unsigned_image_after_verification_is_denied() {
    let registry = TestRegistry::start();
    let key = TestKey::generate();
    let first = registry.push_image("app", "stable", "version 1").await;
    registry.sign("app", &first, &key).await;
    let verifier = verifier_for(&registry, &[("release", &key.public_pem)], "");
    let image = format!("{}/app:stable", registry.host());
    assert!(verifier.verify(&image, deadline()).await.is_allowed());

    // Someone pushes an unsigned image to the same tag.
    let second = registry
        .push_image("app", "stable", "version 2, unsigned")
        .await;
    assert_ne!(first, second);

    let by_tag = verifier.verify(&image, deadline()).await;
    assert!(
        matches!(&by_tag, Verification::Unsigned { digest, .. } if *digest == second),
        "the tag resolves to the new digest, which is denied: {by_tag:?}"
    );
    let by_digest = verifier
        .verify(&format!("{image}@{second}"), deadline())
        .await;
    assert!(!by_digest.is_allowed(), "{by_digest:?}");
    // The digest that was verified stays verified.
    assert!(verifier
        .verify(&format!("{image}@{first}"), deadline())
        .await
        .is_allowed());
}

#[tokio::test]
async fn a_stopped_registry_is_reported_unreachable_but_a_digest_verified_a_moment_ago_is_allowed_from_the_cache(
) {
    let mut registry = TestRegistry::start();
    let key = TestKey::generate();
    let digest = registry.push_image("app", "1", "cached").await;
    registry.sign("app", &digest, &key).await;
    let verifier = verifier_for(
        &registry,
        &[("release", &key.public_pem)],
        "    timeout: 2s\n",
    );
    let image = format!("{}/app:1", registry.host());
    assert!(verifier.verify(&image, deadline()).await.is_allowed());

    registry.stop();

    let tag = verifier.verify(&image, deadline()).await;
    assert!(
        matches!(&tag, Verification::RegistryUnreachable { registry: r, .. } if *r == registry.host()),
        "{tag:?}"
    );
    let report = verifier
        .check_workload(&deployment(&[("app", &image)]), deadline())
        .await;
    let message = &report.findings[0].message;
    assert!(message.contains("unreachable or timed out"), "{message}");
    assert!(
        message.contains("not a problem with your workload"),
        "{message}"
    );

    let pinned = verifier
        .check_workload(
            &deployment(&[("app", &format!("{image}@{digest}"))]),
            deadline(),
        )
        .await;
    assert!(pinned.findings.is_empty(), "{:?}", pinned.findings);
}

/// A registry that accepts connections and never answers: the review's deadline is kept and
/// the denial says the registry timed out.
#[tokio::test]
async fn a_registry_that_never_answers_is_reported_within_the_deadline() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = silent.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let key = TestKey::generate();
    let yaml = format!(
        "policies:\n  image-signature:\n    mode: enforce\n    timeout: 10s\n    registries:\n      \"{host}\": {{insecure: true}}\n    authorities:\n      - name: release\n        key: |\n          {}\n",
        key.public_pem.trim_end().replace('\n', "\n          ")
    );
    let config = Config::parse(&yaml, "test").unwrap();
    let verifier =
        Verifier::new(&config.policies.image_signature, &mut Registry::default()).unwrap();
    let review_deadline = Instant::now() + Duration::from_millis(500);
    let v = verifier
        .verify(&format!("{host}/app:1"), review_deadline)
        .await;
    match v {
        Verification::RegistryUnreachable { reason, .. } => {
            assert!(reason.contains("deadline"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    held.abort();
}

#[tokio::test]
async fn fifty_concurrent_reviews_of_one_new_image_fetch_its_signature_once() {
    let registry = TestRegistry::start();
    let key = TestKey::generate();
    let verifier = verifier_for(&registry, &[("release", &key.public_pem)], "");

    // What one verification costs at the registry, on another image.
    let probe = registry.push_image("probe", "1", "probe").await;
    registry.sign("probe", &probe, &key).await;
    let image = format!("{}/probe:1", registry.host());
    let probe_sig = format!("/v2/probe/manifests/{}.sig", probe.replace(':', "-"));
    let signed = settle(|| registry.requests(&probe_sig)).await;
    assert!(verifier.verify(&image, deadline()).await.is_allowed());
    let one = settle(|| registry.requests(&probe_sig)).await - signed;
    assert!(one >= 1, "the signature was fetched: {}", registry.log());

    let digest = registry
        .push_image("rollout", "2.0", "fifty replicas")
        .await;
    registry.sign("rollout", &digest, &key).await;
    let sig = format!("/v2/rollout/manifests/{}.sig", digest.replace(':', "-"));
    let tag = "/v2/rollout/manifests/2.0 ";
    let (sig_before, tag_before) = (
        settle(|| registry.requests(&sig)).await,
        settle(|| registry.requests(tag)).await,
    );
    let image = format!("{}/rollout:2.0", registry.host());
    let all = futures::future::join_all((0..50).map(|_| {
        let verifier = verifier.clone();
        let image = image.clone();
        tokio::spawn(async move { verifier.verify(&image, deadline()).await })
    }))
    .await;
    for v in all {
        assert!(v.unwrap().is_allowed());
    }
    assert_eq!(
        settle(|| registry.requests(&sig)).await - sig_before,
        one,
        "50 reviews cost the registry's signature what one review does"
    );
    assert_eq!(
        settle(|| registry.requests(tag)).await - tag_before,
        1,
        "one tag resolution"
    );
}

/// The access log is written after the response: wait until the count stops changing.
async fn settle(count: impl Fn() -> usize) -> usize {
    let mut last = count();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = count();
        if now == last && now > 0 {
            return now;
        }
        last = now;
    }
    last
}

#[tokio::test]
async fn images_matching_skip_or_outside_images_need_no_signature() {
    let registry = TestRegistry::start();
    let key = TestKey::generate();
    registry.push_image("pause", "3.10", "pause").await;
    registry.push_image("other", "1", "other").await;
    let verifier = verifier_for(
        &registry,
        &[("release", &key.public_pem)],
        "    skip: [\"*/pause:*\"]\n",
    );
    let v = verifier
        .verify(&format!("{}/pause:3.10", registry.host()), deadline())
        .await;
    assert!(matches!(v, Verification::Skipped { .. }), "{v:?}");
    assert!(!verifier
        .verify(&format!("{}/other:1", registry.host()), deadline())
        .await
        .is_allowed());
    let missing = verifier
        .verify(&format!("{}/nothing:here", registry.host()), deadline())
        .await;
    assert!(
        matches!(missing, Verification::NotFound { .. }),
        "{missing:?}"
    );
}

fn keyless_verifier(
    registry: &TestRegistry,
    trust_root: &std::path::Path,
    subject: &str,
) -> Verifier {
    let yaml = format!(
        "policies:\n  image-signature:\n    mode: enforce\n    registries:\n      \"{}\": {{insecure: true}}\n    authorities:\n      - name: ci\n        issuer: https://issuer.test\n        {subject}\n        trustRoot: {}\n",
        registry.host(),
        trust_root.display()
    );
    let config = Config::parse(&yaml, "test").expect("config");
    Verifier::new(&config.policies.image_signature, &mut Registry::default()).expect("verifier")
}

/// Keyless, offline: a Fulcio-like CA and a Rekor-like log key made here, given to the
/// verifier as a `trusted_root.json`. What this covers: the certificate chains to the CA,
/// carries the identity (email SAN) and the issuer extension, the signature is made by the
/// certificate's key, the Rekor bundle's SET is signed by the log key, the entry was logged
/// while the certificate was valid, and the entry records this signature over this payload.
/// What it cannot cover offline: the public Fulcio and Rekor themselves (an OIDC login and
/// a network upload); the Merkle inclusion proof and checkpoint of the newer Sigstore bundle
/// format, which cosign stores as an OCI referrer that distribution 2.8 cannot serve (no
/// referrers API); and certificate-transparency SCTs, which sigstore 0.15 does not check for
/// cosign signatures.
#[tokio::test]
async fn keyless_signatures_verify_offline_against_a_trust_root_made_here() {
    let registry = TestRegistry::start();
    let world = KeylessWorld::new();
    let root = write(
        registry.dir(),
        "trusted_root.json",
        &world.trusted_root_json(),
    );

    let good = registry.push_image("app", "keyless", "keyless").await;
    world
        .sign(
            &registry,
            "app",
            &good,
            "alice@example.com",
            "https://issuer.test",
            Tamper::default(),
        )
        .await;
    let image = format!("{}/app:keyless", registry.host());

    let exact = keyless_verifier(&registry, &root, "subject: alice@example.com");
    assert_eq!(
        exact.verify(&image, deadline()).await,
        Verification::Verified {
            digest: good.clone(),
            authority: "ci".into()
        }
    );
    let by_regex = keyless_verifier(&registry, &root, "subjectRegex: '.*@example\\.com'");
    assert!(by_regex.verify(&image, deadline()).await.is_allowed());

    let someone_else = keyless_verifier(&registry, &root, "subject: bob@example.com");
    assert!(matches!(
        someone_else.verify(&image, deadline()).await,
        Verification::InvalidSignature { .. }
    ));

    // Another issuer in the certificate.
    let other_issuer = registry.push_image("app", "issuer", "issuer").await;
    world
        .sign(
            &registry,
            "app",
            &other_issuer,
            "alice@example.com",
            "https://evil.test",
            Tamper::default(),
        )
        .await;
    assert!(!exact
        .verify(&format!("{}/app:issuer", registry.host()), deadline())
        .await
        .is_allowed());

    // A Rekor entry that records another payload: the bundle does not vouch for this signature.
    let tampered = registry.push_image("app", "tampered", "tampered").await;
    world
        .sign(
            &registry,
            "app",
            &tampered,
            "alice@example.com",
            "https://issuer.test",
            Tamper { body_hash: true },
        )
        .await;
    assert!(!exact
        .verify(&format!("{}/app:tampered", registry.host()), deadline())
        .await
        .is_allowed());

    // A trust root with other CA and log keys trusts none of it.
    let stranger = KeylessWorld::new();
    let other_root = write(
        registry.dir(),
        "other_root.json",
        &stranger.trusted_root_json(),
    );
    let untrusting = keyless_verifier(&registry, &other_root, "subject: alice@example.com");
    assert!(matches!(
        untrusting.verify(&image, deadline()).await,
        Verification::InvalidSignature { .. }
    ));
}

/// The webhook end to end over real TLS, as the API server would call it: `/mutate` pins a
/// signed image to its verified digest, `/validate` allows the pinned Deployment, and an
/// unsigned image is denied naming the container, the image and the reason.
#[tokio::test]
async fn through_the_webhook_mutate_pins_and_validate_allows_only_signed_images() {
    use base64::Engine as _;
    let registry = TestRegistry::start();
    let key = TestKey::generate();
    let digest = registry.push_image("shop/api", "1.4.2", "api").await;
    registry.sign("shop/api", &digest, &key).await;
    let unsigned = registry.push_image("shop/tool", "0.1", "tool").await;
    assert!(!unsigned.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "baseline.yaml",
        &config_yaml(&registry, &[("release", &key.public_pem)], ""),
    );
    let ts = support::TestServer::start_with(|s| {
        s.config = Some(config);
        s.exceptions = kube_baseline::server::ExceptionSource::Files {
            dir: "policies/exceptions".into(),
            adrs: "policies/adrs.yaml".into(),
        };
    })
    .await;
    support::eventually("the exception source syncs", || async {
        support::ops_get(ts.server.ops_addr, "/health/ready")
            .await
            .0
            == hyper::StatusCode::OK
    })
    .await;
    let image = format!("{}/shop/api:1.4.2", registry.host());
    let pod = |image: &str| {
        let mut pod = common::compliant_pod();
        pod["spec"]["initContainers"] = serde_json::json!([]);
        pod["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .truncate(1);
        pod["spec"]["containers"][0]["image"] = serde_json::json!(image);
        pod
    };
    let deployment = |image: &str| {
        common::workload(
            WorkloadKind::Deployment,
            "api",
            "shop",
            &pod(image),
            Some(2),
        )
    };
    let call = |path: &'static str, object: serde_json::Value| {
        let ts = &ts;
        async move {
            let mut conn = support::Conn::open(ts.addr(), ts.client(&[b"h2"])).await;
            let answer = conn.post_review(path, &common::create(&object)).await;
            assert_eq!(answer.status, hyper::StatusCode::OK, "{}", answer.text());
            support::json(&answer.body)["response"].clone()
        }
    };

    let mutated = call("/mutate?timeout=10s", deployment(&image)).await;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(mutated["patch"].as_str().expect("a patch"))
        .unwrap();
    let patch: serde_json::Value = serde_json::from_slice(&patch).unwrap();
    let pinned = format!("{image}@{digest}");
    assert!(
        patch
            .as_array()
            .unwrap()
            .iter()
            .any(|op| op["op"] == "replace"
                && op["path"] == "/spec/template/spec/containers/0/image"
                && op["value"] == pinned.as_str()),
        "{patch}"
    );

    let allowed = call("/validate?timeout=10s", deployment(&pinned)).await;
    assert_eq!(allowed["allowed"], true, "{allowed}");

    let tool = format!("{}/shop/tool:0.1", registry.host());
    let denied = call("/validate?timeout=10s", deployment(&tool)).await;
    assert_eq!(denied["allowed"], false);
    let message = denied["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "[image-signature] spec.template.spec.containers[0].image (container \"app\")"
        ),
        "{message}"
    );
    assert!(message.contains(&tool), "{message}");
    assert!(
        message.contains("Never waivable: image-signature."),
        "{message}"
    );

    // A waiver (policies/exceptions/adr-0042-legacy-nginx.yaml) for a signed legacy nginx.
    let mut legacy = pod(&pinned);
    legacy["spec"]["containers"][0]["name"] = serde_json::json!("nginx");
    legacy["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] =
        serde_json::json!(false);
    let legacy = common::workload(
        WorkloadKind::Deployment,
        "legacy-nginx-eu",
        "payments",
        &legacy,
        Some(2),
    );
    let waived = call("/validate?timeout=10s", legacy).await;
    assert_eq!(waived["allowed"], true, "{waived}");

    // After denials, mutations, waivers, exceptions and registry calls, /metrics has exactly
    // the families the alerts and the dashboard use.
    let (_, text) = support::ops_get(ts.server.ops_addr, "/metrics").await;
    common::assert_exposes_exactly_the_listed_metrics(&text);
}
