//! The policy table: every kind × every policy, compliant and violating, through the same
//! `validate` the webhook serves; Kubernetes semantics cases; the golden denial message.

mod common;

use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use kube_baseline::admission::review::decode;
use kube_baseline::admission::{validate, Decision, Snapshot, Verdict};
use kube_baseline::config::Config;
use kube_baseline::workload::WorkloadKind;

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    #[serde(default)]
    policy: Option<String>,
    patch: json_patch::Patch,
    #[serde(default)]
    fields: Vec<String>,
    verdict: String,
    #[serde(default)]
    long: Option<String>,
    #[serde(default)]
    batch: Option<String>,
}

fn evaluate(config: &Config, object: &Value) -> Decision {
    let request = decode(&common::create(object)).expect("the test review decodes");
    validate(&Snapshot::new(config.clone()), &request, Utc::now())
}

fn causes(d: &Decision) -> Vec<String> {
    d.response
        .status
        .as_ref()
        .and_then(|s| s.details.as_ref())
        .map(|details| details.causes.iter().map(|c| c.field.clone()).collect())
        .unwrap_or_default()
}

fn full_field(kind: WorkloadKind, field: &str) -> String {
    if let Some(rest) = field.strip_prefix("metadata.") {
        format!("{}.{rest}", kind.pod_metadata_path())
    } else if field.starts_with("spec.") {
        field.to_owned()
    } else {
        format!("{}.{field}", kind.spec_path())
    }
}

#[test]
fn every_kind_times_every_policy_case() {
    let cases: Vec<Case> =
        serde_yaml::from_str(&std::fs::read_to_string("tests/data/policy/cases.yaml").unwrap())
            .unwrap();
    let config = Config::embedded();
    let mut checked = 0;
    for case in &cases {
        let mut pod = common::compliant_pod();
        json_patch::patch(&mut pod, &case.patch).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        for kind in WorkloadKind::ALL {
            let object = common::workload(kind, "api", "shop", &pod, Some(2));
            let d = evaluate(&config, &object);
            let expected = if kind.is_long_running() {
                &case.long
            } else {
                &case.batch
            }
            .as_deref()
            .unwrap_or(&case.verdict);
            let what = format!("{kind} / {}", case.name);
            assert_eq!(d.verdict.as_str(), expected, "{what}: {:#?}", d.response);
            if expected == "denied" {
                let policy = case.policy.as_deref().unwrap();
                let denied: Vec<_> = d.denied_by.iter().map(|p| p.as_str()).collect();
                assert_eq!(denied, [policy], "{what}: policies");
                let want: Vec<String> = case.fields.iter().map(|f| full_field(kind, f)).collect();
                assert_eq!(causes(&d), want, "{what}: field paths");
                let message = &d.response.status.as_ref().unwrap().message;
                for field in &want {
                    assert!(
                        message.contains(field.as_str()),
                        "{what}: message lacks {field}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, cases.len() * 8);
}

fn deployment(pod: &Value, replicas: Option<i32>) -> Value {
    common::workload(WorkloadKind::Deployment, "api", "shop", pod, replicas)
}

#[test]
fn replicas_below_two_warn_for_deployments_and_statefulsets_only() {
    let config = Config::embedded();
    let pod = common::compliant_pod();
    for kind in WorkloadKind::ALL {
        let d = evaluate(
            &config,
            &common::workload(kind, "api", "shop", &pod, Some(1)),
        );
        if kind.has_replicas() {
            assert_eq!(d.verdict, Verdict::Warned, "{kind}");
            assert_eq!(d.response.warnings.len(), 1, "{kind}");
            assert!(
                d.response.warnings[0]
                    .starts_with("replicas-minimum: spec.replicas: replicas is 1"),
                "{:?}",
                d.response.warnings
            );
        } else {
            assert_eq!(d.verdict, Verdict::Allowed, "{kind}");
        }
    }
}

#[test]
fn unset_replicas_is_left_to_the_hpa() {
    let d = evaluate(
        &Config::embedded(),
        &deployment(&common::compliant_pod(), None),
    );
    assert_eq!(d.verdict, Verdict::Allowed);
}

#[test]
fn replicas_minimum_in_enforce_mode_denies() {
    let config = Config::parse(
        "policies:\n  replicas-minimum: {mode: enforce, minimum: 3}\n",
        "t",
    )
    .unwrap();
    let d = evaluate(&config, &deployment(&common::compliant_pod(), Some(2)));
    assert_eq!(d.verdict, Verdict::Denied);
    assert_eq!(causes(&d), ["spec.replicas"]);
}

#[test]
fn net_bind_service_may_be_added_but_not_net_admin() {
    let mut pod = common::compliant_pod();
    pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] =
        json!(["NET_BIND_SERVICE"]);
    assert_eq!(
        evaluate(&Config::embedded(), &deployment(&pod, Some(2))).verdict,
        Verdict::Allowed
    );
    pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["NET_ADMIN"]);
    let d = evaluate(&Config::embedded(), &deployment(&pod, Some(2)));
    assert_eq!(
        causes(&d),
        ["spec.template.spec.containers[0].securityContext.capabilities.add[0]"]
    );
}

#[test]
fn container_runas_non_root_true_overrides_a_pod_false() {
    let mut pod = common::compliant_pod();
    pod["spec"]["securityContext"]["runAsNonRoot"] = json!(false);
    for c in ["initContainers", "containers"] {
        for container in pod["spec"][c].as_array_mut().unwrap() {
            container["securityContext"]["runAsNonRoot"] = json!(true);
        }
    }
    assert_eq!(
        evaluate(&Config::embedded(), &deployment(&pod, Some(2))).verdict,
        Verdict::Allowed
    );
}

#[test]
fn a_container_runas_user_overrides_a_root_pod_user() {
    let mut pod = common::compliant_pod();
    pod["spec"]["securityContext"]["runAsUser"] = json!(0);
    for c in ["initContainers", "containers"] {
        for container in pod["spec"][c].as_array_mut().unwrap() {
            container["securityContext"]["runAsUser"] = json!(1000);
        }
    }
    assert_eq!(
        evaluate(&Config::embedded(), &deployment(&pod, Some(2))).verdict,
        Verdict::Allowed
    );
}

#[test]
fn ephemeral_containers_are_held_to_the_security_policies_but_not_resources_or_probes() {
    let mut pod = common::compliant_pod();
    pod["spec"]["ephemeralContainers"] = json!([{"name": "debug", "image": "busybox"}]);
    let d = evaluate(
        &Config::embedded(),
        &common::workload(WorkloadKind::Pod, "api", "shop", &pod, None),
    );
    let mut policies: Vec<_> = d.denied_by.iter().map(|p| p.as_str()).collect();
    policies.sort();
    assert_eq!(
        policies,
        [
            "drop-all-capabilities",
            "no-privilege-escalation",
            "read-only-root-filesystem"
        ]
    );
    assert!(
        causes(&d)
            .iter()
            .all(|f| f.starts_with("spec.ephemeralContainers[0].")),
        "{:?}",
        causes(&d)
    );
}

#[test]
fn a_job_without_probes_or_metrics_port_is_allowed() {
    let mut pod = common::compliant_pod();
    for container in pod["spec"]["containers"].as_array_mut().unwrap() {
        let c = container.as_object_mut().unwrap();
        c.remove("livenessProbe");
        c.remove("readinessProbe");
        c.remove("ports");
    }
    for kind in [WorkloadKind::Job, WorkloadKind::CronJob] {
        let d = evaluate(
            &Config::embedded(),
            &common::workload(kind, "batch", "shop", &pod, None),
        );
        assert_eq!(d.verdict, Verdict::Allowed, "{kind}: {:?}", d.response);
    }
}

#[test]
fn a_pod_that_never_restarts_needs_no_probes() {
    let mut pod = common::compliant_pod();
    pod["spec"]["restartPolicy"] = json!("Never");
    pod["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("livenessProbe");
    let d = evaluate(
        &Config::embedded(),
        &common::workload(WorkloadKind::Pod, "once", "shop", &pod, None),
    );
    assert_eq!(d.verdict, Verdict::Allowed, "{:?}", d.response);
}

#[test]
fn cronjob_findings_name_the_job_template_path() {
    let mut pod = common::compliant_pod();
    pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = json!(false);
    let d = evaluate(
        &Config::embedded(),
        &common::workload(WorkloadKind::CronJob, "report", "shop", &pod, None),
    );
    assert_eq!(
        causes(&d),
        ["spec.jobTemplate.spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem"]
    );
}

#[test]
fn warn_mode_allows_with_warnings_under_the_length_kubectl_shows() {
    let config = Config::parse(
        "policies:\n  health-probes: {mode: warn}\n  metrics-endpoint: {mode: warn}\n",
        "t",
    )
    .unwrap();
    let mut pod = common::compliant_pod();
    for container in pod["spec"]["containers"].as_array_mut().unwrap() {
        let c = container.as_object_mut().unwrap();
        c.remove("livenessProbe");
        c.remove("readinessProbe");
        c.remove("ports");
    }
    let d = evaluate(&config, &deployment(&pod, Some(2)));
    assert!(d.response.allowed);
    assert_eq!(d.verdict, Verdict::Warned);
    assert_eq!(d.response.warnings.len(), 5, "{:?}", d.response.warnings);
    for w in &d.response.warnings {
        assert!(w.chars().count() <= 120, "{w}");
    }
}

#[test]
fn namespace_overrides_and_excluded_namespaces() {
    let mut pod = common::compliant_pod();
    pod["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("livenessProbe");
    let config = Config::embedded();
    let in_ns = |ns: &str| {
        evaluate(
            &config,
            &common::workload(WorkloadKind::Deployment, "api", ns, &pod, Some(2)),
        )
    };
    assert_eq!(in_ns("shop").verdict, Verdict::Denied);
    assert_eq!(
        in_ns("dev-shop").verdict,
        Verdict::Warned,
        "dev-* runs health-probes in warn"
    );
    assert_eq!(in_ns("kube-system").verdict, Verdict::Skipped);
    assert_eq!(in_ns("kube-baseline").verdict, Verdict::Skipped);
}

#[test]
fn a_policy_turned_off_is_not_evaluated() {
    let config =
        Config::parse("policies:\n  read-only-root-filesystem: {mode: off}\n", "t").unwrap();
    let mut pod = common::compliant_pod();
    pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = json!(false);
    assert_eq!(
        evaluate(&config, &deployment(&pod, Some(2))).verdict,
        Verdict::Allowed
    );
}

#[test]
fn other_kinds_and_subresources_are_not_evaluated() {
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "shop"}, "spec": {}});
    assert_eq!(
        evaluate(&Config::embedded(), &service).verdict,
        Verdict::Skipped
    );

    let mut pod = common::compliant_pod();
    pod["spec"]["containers"][0]["securityContext"]["privileged"] = json!(true);
    let mut body = common::review("UPDATE", &deployment(&pod, Some(2)), "hpa", &[]);
    body["request"]["subResource"] = json!("scale");
    let request = decode(&serde_json::to_vec(&body).unwrap()).unwrap();
    let d = validate(&Snapshot::new(Config::embedded()), &request, Utc::now());
    assert_eq!(d.verdict, Verdict::Skipped);
}

#[test]
fn an_object_that_does_not_match_its_kind_is_refused_with_the_reason() {
    let object = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "namespace": "shop"},
        "spec": {"selector": {}, "template": {"spec": {"containers": {"name": "not-a-list"}}}}});
    let d = evaluate(&Config::embedded(), &object);
    assert_eq!(d.verdict, Verdict::Invalid);
    let status = d.response.status.unwrap();
    assert_eq!(status.code, 400);
    assert!(
        status.message.contains("Deployment object does not match"),
        "{}",
        status.message
    );
}

/// The full denial text, compared with a committed file so that a change of wording is a
/// deliberate diff. `UPDATE_GOLDEN=1 cargo test --test policies golden` rewrites it.
#[test]
fn golden_denial_message_for_a_deployment_with_several_violations() {
    let mut pod = common::compliant_pod();
    let app = &mut pod["spec"]["containers"][0];
    app["securityContext"]["runAsNonRoot"] = json!(false);
    app["securityContext"]["readOnlyRootFilesystem"] = json!(false);
    app["securityContext"]["capabilities"] = json!({"add": ["NET_ADMIN"]});
    app["resources"].as_object_mut().unwrap().remove("limits");
    app["livenessProbe"]["httpGet"]["path"] = json!("/healthz");
    pod["spec"]["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true);
    pod["spec"]["hostNetwork"] = json!(true);
    let d = evaluate(&Config::embedded(), &deployment(&pod, Some(2)));
    let message = d.response.status.unwrap().message;
    let path = "tests/data/golden/deployment-denial.txt";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all("tests/data/golden").unwrap();
        std::fs::write(path, &message).unwrap();
    }
    let golden =
        std::fs::read_to_string(path).expect("golden file exists (UPDATE_GOLDEN=1 writes it)");
    assert_eq!(message, golden);
}
