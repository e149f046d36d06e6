//! The exception registry: watcher events, the file source, admission of BaselineException
//! objects, waivers in `/validate`, the generated CRD and `exceptions lint`.
//!
//! No kube-apiserver runs on this machine. The Kubernetes source is exercised by feeding
//! the reflector's `Writer::apply_watcher_event` the events a watcher yields (as
//! `.reflect(writer)` does), and reviews are the AdmissionReview bodies the API server
//! sends (see `tests/data/apiserver/` for captured ones), run through `admission::validate`.

#[path = "exceptions/support.rs"]
mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::FutureExt;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use kube_baseline::admission::{Snapshot, Verdict};
use kube_baseline::config::Config;
use kube_baseline::exceptions::cli::lint;
use kube_baseline::exceptions::metrics::{ExceptionMetrics, FILES};
use kube_baseline::exceptions::source::{run_file_source, KubeSource};
use kube_baseline::exceptions::{model, BaselineException, Registry};
use kube_baseline::policy::PolicyId;
use kube_baseline::workload::WorkloadKind;
use serde_json::json;
use support::*;

fn waived(registry: &Registry) -> bool {
    let config = Config::embedded();
    let snapshot = Snapshot {
        config,
        exceptions: registry.clone(),
    };
    let d = run(
        &snapshot,
        &deployment_review(writable_root(deployment(
            "payments",
            "legacy-nginx",
            "nginx",
        ))),
        now(),
    );
    d.verdict == Verdict::Warned
}

fn names(registry: &Registry) -> Vec<String> {
    registry
        .exceptions()
        .iter()
        .map(|e| e.name.clone())
        .collect()
}

// ---------------------------------------------------------------- Kubernetes source

fn object(name: &str) -> BaselineException {
    exception(exception_json(name))
}

fn build(source: &KubeSource) -> Registry {
    Registry::build(source.loaded(), adrs(), &Config::embedded(), now())
}

/// Stands in for the API server: the events are those a watcher yields for a list, then
/// watch changes, then a re-list after a lost watch.
#[test]
fn watcher_events_apply_delete_and_relist_rebuild_the_registry() {
    let (reader, mut writer) = reflector::store::<BaselineException>();
    let mut source = KubeSource::new(reader);
    let mut feed = |source: &mut KubeSource, event: Event<BaselineException>| {
        writer.apply_watcher_event(&event);
        source.on_event(&event)
    };

    assert!(!feed(&mut source, Event::Init));
    assert!(!feed(&mut source, Event::InitApply(object("adr-0042-a"))));
    assert!(
        feed(&mut source, Event::InitDone),
        "the end of the list publishes"
    );
    assert_eq!(names(&build(&source)), ["adr-0042-a"]);
    assert!(waived(&build(&source)));

    assert!(feed(&mut source, Event::Apply(object("adr-0042-b"))));
    assert_eq!(names(&build(&source)), ["adr-0042-a", "adr-0042-b"]);

    assert!(feed(&mut source, Event::Delete(object("adr-0042-a"))));
    assert!(feed(&mut source, Event::Delete(object("adr-0042-b"))));
    assert!(build(&source).exceptions().is_empty());
    assert!(
        !waived(&build(&source)),
        "a deleted exception waives nothing"
    );

    // Re-list: the set in progress is not published; at its end it replaces the old set.
    assert!(feed(&mut source, Event::Apply(object("adr-0042-stale"))));
    assert!(!feed(&mut source, Event::Init));
    assert!(!feed(&mut source, Event::InitApply(object("adr-0042-c"))));
    assert_eq!(
        names(&build(&source)),
        ["adr-0042-stale"],
        "old set until the list ends"
    );
    assert!(feed(&mut source, Event::InitDone));
    assert_eq!(names(&build(&source)), ["adr-0042-c"]);
}

/// Stands in for the API server, as above: readiness follows the first complete list.
#[test]
fn readiness_waits_for_the_first_complete_list() {
    let (reader, mut writer) = reflector::store::<BaselineException>();
    let mut source = KubeSource::new(reader.clone());
    for event in [Event::Init, Event::InitApply(object("adr-0042-a"))] {
        writer.apply_watcher_event(&event);
        source.on_event(&event);
    }
    assert!(!source.is_synced());
    assert!(reader.wait_until_ready().now_or_never().is_none());
    writer.apply_watcher_event(&Event::InitDone);
    source.on_event(&Event::InitDone);
    assert!(source.is_synced());
    assert!(matches!(
        reader.wait_until_ready().now_or_never(),
        Some(Ok(()))
    ));
    // A later re-list does not make the source unready again.
    writer.apply_watcher_event(&Event::Init);
    source.on_event(&Event::Init);
    assert!(source.is_synced());
}

// ---------------------------------------------------------------- file source

fn write_exception(dir: &std::path::Path, file: &str, name: &str, namespace: &str) {
    let v = with(exception_json(name), |v| {
        v["spec"]["match"]["namespaces"] = json!([namespace]);
        v["spec"]["expires"] = json!(rfc3339(chrono::Utc::now() + chrono::Duration::days(30)));
    });
    std::fs::write(dir.join(file), serde_yaml::to_string(&v).unwrap()).unwrap();
}

#[tokio::test]
async fn file_source_follows_added_changed_broken_and_fixed_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("exceptions");
    std::fs::create_dir(&dir).unwrap();
    let adrs_path = tmp.path().join("adrs.yaml");
    std::fs::write(&adrs_path, ADRS).unwrap();

    let current = Arc::new(ArcSwap::from_pointee(Registry::default()));
    let synced = Arc::new(AtomicBool::new(false));
    let metrics = ExceptionMetrics::default();
    let publish = {
        let current = Arc::clone(&current);
        move |r: Registry| current.store(Arc::new(r))
    };
    let task = tokio::spawn(run_file_source(
        dir.clone(),
        adrs_path,
        Arc::new(Config::embedded()),
        publish,
        Arc::clone(&synced),
        metrics.clone(),
    ));
    let limit = Duration::from_secs(60);
    let matching = |ns: &str| {
        current
            .load()
            .matching(ns, WorkloadKind::Deployment, "legacy-nginx")
            .len()
    };

    assert!(eventually(limit, || synced.load(Ordering::Acquire)).await);
    assert!(metrics.synced(FILES));
    assert!(current.load().exceptions().is_empty());

    write_exception(&dir, "nginx.yaml", "adr-0042-nginx", "payments");
    assert!(
        eventually(limit, || matching("payments") == 1).await,
        "added file"
    );

    write_exception(&dir, "nginx.yaml", "adr-0042-nginx", "checkout");
    assert!(
        eventually(limit, || matching("checkout") == 1
            && matching("payments") == 0)
        .await,
        "changed file"
    );

    std::fs::write(dir.join("nginx.yaml"), "spec: [unclosed\n").unwrap();
    assert!(
        eventually(limit, || metrics.errors(FILES) >= 1).await,
        "broken file reported"
    );
    assert_eq!(matching("checkout"), 1, "the last good content is kept");

    write_exception(&dir, "nginx.yaml", "adr-0042-nginx", "payments");
    assert!(
        eventually(limit, || matching("payments") == 1
            && matching("checkout") == 0)
        .await,
        "fixed file"
    );

    std::fs::remove_file(dir.join("nginx.yaml")).unwrap();
    assert!(
        eventually(limit, || current.load().exceptions().is_empty()).await,
        "removed file"
    );
    task.abort();
}

// ---------------------------------------------------------------- admission of exceptions

const APPROVER: &[&str] = &["platform-team", "system:authenticated"];
const DEVELOPER: &[&str] = &["developers", "system:authenticated"];

fn review_exception(
    config: Config,
    operation: &str,
    v: serde_json::Value,
    groups: &[&str],
) -> kube_baseline::admission::Decision {
    let snapshot = Snapshot {
        config,
        exceptions: Registry::with_adrs(adrs()),
    };
    run(&snapshot, &exception_review(operation, v, groups), now())
}

#[test]
fn exception_reviews_are_refused_with_the_field_named() {
    type Edit = fn(&mut serde_json::Value);
    let table: &[(&str, Edit, &str, &str)] = &[
        (
            "bad ADR id",
            |v| v["spec"]["adr"] = json!("ADR42"),
            "spec.adr",
            "does not match the ADR id pattern",
        ),
        (
            "ADR superseded",
            |v| v["spec"]["adr"] = json!("ADR-0017"),
            "spec.adr",
            "ADR-0017 is superseded",
        ),
        (
            "ADR proposed",
            |v| v["spec"]["adr"] = json!("ADR-0060"),
            "spec.adr",
            "ADR-0060 is proposed",
        ),
        (
            "ADR not in index",
            |v| v["spec"]["adr"] = json!("ADR-9999"),
            "spec.adr",
            "not in the ADR index",
        ),
        (
            "unknown policy",
            |v| v["spec"]["policies"] = json!(["run-as-root"]),
            "spec.policies[0]",
            "unknown policy \"run-as-root\"",
        ),
        (
            "non-exemptable policy",
            |v| v["spec"]["policies"] = json!(["read-only-root-filesystem", "resource-limits"]),
            "spec.policies[1]",
            "resource-limits can never be waived",
        ),
        (
            "image-signature",
            |v| v["spec"]["policies"] = json!(["image-signature"]),
            "spec.policies[0]",
            "can never be waived",
        ),
        (
            "past expiry",
            |v| v["spec"]["expires"] = json!(rfc3339(days(-1))),
            "spec.expires",
            "is in the past",
        ),
        (
            "too-far expiry",
            |v| v["spec"]["expires"] = json!(rfc3339(days(181))),
            "spec.expires",
            "more than 180 days ahead",
        ),
        (
            "not RFC 3339",
            |v| v["spec"]["expires"] = json!("2027-03-31"),
            "spec.expires",
            "not an RFC 3339 time",
        ),
        (
            "empty namespaces",
            |v| v["spec"]["match"]["namespaces"] = json!([]),
            "spec.match.namespaces",
            "at least one namespace",
        ),
        (
            "every namespace",
            |v| v["spec"]["match"]["namespaces"] = json!(["*"]),
            "spec.match.namespaces[0]",
            "allowAllNamespaces",
        ),
        (
            "empty reason",
            |v| v["spec"]["reason"] = json!("  "),
            "spec.reason",
            "must say why",
        ),
        (
            "unknown kind",
            |v| v["spec"]["match"]["kinds"] = json!(["Deploymnet"]),
            "spec.match.kinds[0]",
            "not a workload kind",
        ),
        (
            "typo in a field",
            |v| v["spec"]["match"]["namespace"] = json!(["x"]),
            "spec.match.namespace",
            "unknown field",
        ),
    ];
    for (case, edit, field, text) in table {
        let v = with(exception_json("adr-0042-x"), *edit);
        let d = review_exception(Config::embedded(), "CREATE", v, APPROVER);
        assert_eq!(d.verdict, Verdict::Denied, "{case}");
        let msg = message(&d);
        assert!(
            msg.contains(&format!("{field}: ")),
            "{case}: field {field} not named in {msg}"
        );
        assert!(msg.contains(text), "{case}: {text:?} not in {msg}");
        let status = d.response.status.as_ref().unwrap();
        assert_eq!(status.code, 422, "{case}");
        assert!(
            status
                .details
                .as_ref()
                .unwrap()
                .causes
                .iter()
                .any(|c| c.field == *field),
            "{case}"
        );
    }
}

#[test]
fn only_approvers_may_create_change_or_delete_exceptions() {
    for op in ["CREATE", "UPDATE", "DELETE"] {
        let d = review_exception(
            Config::embedded(),
            op,
            exception_json("adr-0042-x"),
            DEVELOPER,
        );
        assert_eq!(d.verdict, Verdict::Denied, "{op} by a developer");
        let msg = message(&d);
        assert!(msg.contains("only members of platform-team"), "{msg}");
        assert!(msg.contains("user \"jane\""), "{msg}");
        let d = review_exception(
            Config::embedded(),
            op,
            exception_json("adr-0042-x"),
            APPROVER,
        );
        assert_eq!(
            d.verdict,
            Verdict::Allowed,
            "{op} by an approver: {:?}",
            d.response
        );
    }
}

#[test]
fn every_namespace_is_accepted_only_when_the_config_allows_it() {
    let v = with(exception_json("adr-0042-x"), |v| {
        v["spec"]["match"]["namespaces"] = json!(["*"])
    });
    let mut config = Config::embedded();
    config.exceptions.allow_all_namespaces = true;
    let d = review_exception(config, "CREATE", v, APPROVER);
    assert_eq!(d.verdict, Verdict::Allowed, "{:?}", d.response);
}

// ---------------------------------------------------------------- waivers in /validate

fn violating() -> Vec<u8> {
    deployment_review(writable_root(deployment(
        "payments",
        "legacy-nginx-v2",
        "nginx",
    )))
}

#[test]
fn a_violating_deployment_is_denied_without_an_exception() {
    let d = run(&snapshot(vec![]), &violating(), now());
    assert_eq!(d.verdict, Verdict::Denied);
    assert!(message(&d).contains("read-only-root-filesystem"));
    assert!(d.waivers.is_empty());
}

#[test]
fn an_active_exception_waives_the_finding_with_a_warning_and_an_audit_annotation() {
    let d = run(
        &snapshot(vec![exception_json("adr-0042-legacy-nginx")]),
        &violating(),
        now(),
    );
    assert_eq!(d.verdict, Verdict::Warned, "{:?}", d.response);
    assert!(d.response.allowed);
    let expected = format!(
        "read-only-root-filesystem waived for container \"nginx\" by ADR-0042 until {}",
        days(120).format("%Y-%m-%d")
    );
    assert_eq!(d.response.warnings.len(), 1);
    assert_eq!(d.response.warnings[0], expected);
    assert!(expected.chars().count() < 120);
    assert_eq!(d.response.audit_annotations["waived-by"], "ADR-0042");
    assert_eq!(
        d.response.audit_annotations["waivers"],
        "read-only-root-filesystem/nginx by ADR-0042 (adr-0042-legacy-nginx)"
    );
    assert_eq!(
        d.waivers,
        [("ADR-0042".to_owned(), PolicyId::ReadOnlyRootFilesystem)]
    );
}

#[test]
fn the_same_exception_waives_nothing_once_expired_and_the_denial_says_so() {
    let snapshot = snapshot(vec![exception_json("adr-0042-legacy-nginx")]);
    let d = run(&snapshot, &violating(), days(121));
    assert_eq!(d.verdict, Verdict::Denied);
    let msg = message(&d);
    assert!(
        msg.contains(&format!(
            "BaselineException adr-0042-legacy-nginx (ADR-0042) matches but waives nothing: it expired on {}",
            rfc3339(days(120))
        )),
        "{msg}"
    );
}

#[test]
fn an_exception_keyed_to_a_superseded_adr_waives_nothing_and_says_why() {
    let v = with(exception_json("adr-0017-reporting"), |v| {
        v["spec"]["adr"] = json!("ADR-0017")
    });
    let d = run(&snapshot(vec![v]), &violating(), now());
    assert_eq!(d.verdict, Verdict::Denied);
    assert!(
        message(&d).contains("ADR-0017 is superseded in the ADR index"),
        "{}",
        message(&d)
    );
}

#[test]
fn an_exception_about_to_expire_adds_a_warning() {
    let v = with(exception_json("adr-0042-legacy-nginx"), |v| {
        v["spec"]["expires"] = json!(rfc3339(days(5)))
    });
    let d = run(&snapshot(vec![v]), &violating(), now());
    assert_eq!(d.verdict, Verdict::Warned);
    assert!(
        d.response
            .warnings
            .iter()
            .any(|w| w.contains("expires") && w.contains("in 5 days")),
        "{:?}",
        d.response.warnings
    );
    assert!(d.response.warnings.iter().all(|w| w.chars().count() <= 120));
}

#[test]
fn an_exception_for_another_namespace_or_container_waives_nothing() {
    let snapshot = snapshot(vec![exception_json("adr-0042-legacy-nginx")]);
    for d in [
        deployment("checkout", "legacy-nginx", "nginx"),
        deployment("payments", "legacy-nginx", "sidecar"),
        deployment("payments", "api", "nginx"),
    ] {
        let decision = run(&snapshot, &deployment_review(writable_root(d)), now());
        assert_eq!(decision.verdict, Verdict::Denied);
    }
}

#[test]
fn a_resource_limits_finding_is_never_waived() {
    // A covering exception waives the exemptable finding only; the review stays denied.
    let d = run(
        &snapshot(vec![exception_json("adr-0042-legacy-nginx")]),
        &deployment_review(no_limits(writable_root(deployment(
            "payments",
            "legacy-nginx",
            "nginx",
        )))),
        now(),
    );
    assert_eq!(d.verdict, Verdict::Denied);
    assert_eq!(d.denied_by, [PolicyId::ResourceLimits]);
    let msg = message(&d);
    assert!(
        msg.contains("Already waived: read-only-root-filesystem"),
        "{msg}"
    );
    assert!(d.waivers.is_empty());

    // An exception naming resource-limits is refused by the registry and waives nothing.
    let slipped = with(exception_json("adr-0042-limits"), |v| {
        v["spec"]["policies"] = json!(["resource-limits"])
    });
    let s = snapshot(vec![slipped]);
    assert_eq!(s.exceptions.invalid().len(), 1);
    let d = run(
        &s,
        &deployment_review(no_limits(deployment("payments", "legacy-nginx", "nginx"))),
        now(),
    );
    assert_eq!(d.verdict, Verdict::Denied);
}

#[test]
fn lookups_do_not_see_exceptions_of_other_namespaces() {
    let mut objects: Vec<_> = (0..200)
        .map(|i| {
            with(exception_json(&format!("adr-0042-n{i}")), |v| {
                v["spec"]["match"]["namespaces"] = json!([format!("team-{i}")])
            })
        })
        .collect();
    objects.push(with(exception_json("adr-0042-glob"), |v| {
        v["spec"]["match"]["namespaces"] = json!(["pay*"])
    }));
    let r = registry_of(objects, &Config::embedded(), now());
    let found = r.matching("payments", WorkloadKind::Deployment, "legacy-nginx");
    assert_eq!(
        found.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["adr-0042-glob"]
    );
    assert_eq!(
        r.matching("team-7", WorkloadKind::Deployment, "legacy-nginx")
            .len(),
        1
    );
}

// ---------------------------------------------------------------- CRD and lint

#[test]
fn the_committed_crd_is_the_generated_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base/crd.yaml");
    let generated = model::crd_yaml();
    if std::env::var_os("KUBE_BASELINE_WRITE_CRD").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "deploy/base/crd.yaml differs from the Rust types: run `KUBE_BASELINE_WRITE_CRD=1 cargo test --test exceptions` (or `kube-baseline exceptions crd > deploy/base/crd.yaml`)"
    );
}

#[test]
fn the_example_files_are_valid_on_the_day_they_were_written() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let files: Vec<_> = std::fs::read_dir(root.join("policies/exceptions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.is_empty());
    let adrs = kube_baseline::exceptions::AdrIndex::load(&root.join("policies/adrs.yaml")).unwrap();
    let mut out = String::new();
    let code = lint(&files, &Config::embedded(), &adrs, now(), &mut out).unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS, "{out}");
}

fn kube_baseline(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kube-baseline"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn lint_exits_0_when_valid_1_when_refused_and_2_when_unreadable() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("adrs.yaml"), ADRS).unwrap();
    write_exception(tmp.path(), "good.yaml", "adr-0042-good", "payments");
    let bad = with(exception_json("adr-0042-bad"), |v| {
        v["spec"]["policies"] = json!(["image-signature"])
    });
    std::fs::write(
        tmp.path().join("bad.yaml"),
        serde_yaml::to_string(&bad).unwrap(),
    )
    .unwrap();

    let ok = kube_baseline(
        &["exceptions", "lint", "--adrs", "adrs.yaml", "good.yaml"],
        tmp.path(),
    );
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    let refused = kube_baseline(
        &[
            "exceptions",
            "lint",
            "--adrs",
            "adrs.yaml",
            "good.yaml",
            "bad.yaml",
        ],
        tmp.path(),
    );
    assert_eq!(refused.status.code(), Some(1));
    let out = String::from_utf8_lossy(&refused.stdout);
    assert!(
        out.contains(
            "bad.yaml: adr-0042-bad: spec.policies[0]: image-signature can never be waived"
        ),
        "{out}"
    );

    let missing = kube_baseline(
        &["exceptions", "lint", "--adrs", "adrs.yaml", "nope.yaml"],
        tmp.path(),
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.yaml"));
}
