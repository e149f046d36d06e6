//! The webhook's own deployment (`deploy/`) and its operations kit (`deploy/observability/`,
//! `docs/runbooks/`), checked with the real tools: `kubectl kustomize` builds every overlay
//! exactly as `kubectl apply -k` would, and Debian's `promtool` checks and unit-tests the
//! alerting rules (scripts/test.sh installs it on a fresh machine).
//!
//! No kube-apiserver, cert-manager or Prometheus Operator runs on this machine: these tests
//! check the built manifests' content (and run the webhook's own policy engine on its
//! Deployment), not their admission by a live cluster. In particular the matchConditions' CEL
//! is not compiled here; a real API server would be needed for that.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use kube_baseline::config::{Config, Mode};
use kube_baseline::policy::{evaluate, PolicyId};
use kube_baseline::workload::{Workload, WorkloadKind};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

const ENVIRONMENTS: [&str; 3] = ["dev", "staging", "prod"];
const RUNBOOK_BASE: &str =
    "https://git.localplus.io/platform/kube-baseline/blob/main/docs/runbooks/";
const RUNBOOK_SECTIONS: [&str; 7] = [
    "Overview",
    "Impact",
    "Prerequisites",
    "Diagnosis Steps",
    "Resolution Steps",
    "Escalation",
    "Related",
];
/// Series the rules may read that kube-baseline does not expose: kube-state-metrics' replica
/// counts for the webhook's own Deployment.
const KUBE_STATE_METRICS: [&str; 1] = ["kube_deployment_status_replicas_available"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: impl AsRef<Path>) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The objects of one overlay, as `kubectl kustomize deploy/overlays/<env>` prints them.
struct Build {
    env: &'static str,
    objects: Vec<Value>,
}

impl Build {
    fn of(env: &'static str) -> Build {
        let text = common::kustomize(env);
        let objects = serde_yaml::Deserializer::from_str(&text)
            .map(|doc| {
                let yaml = serde_yaml::Value::deserialize(doc).expect("kustomize prints YAML");
                serde_json::to_value(yaml).expect("YAML maps to JSON")
            })
            .filter(|v| !v.is_null())
            .collect();
        Build { env, objects }
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name)
            .unwrap_or_else(|| panic!("{}: no {kind}/{name} in the build", self.env))
    }

    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    /// A generated ConfigMap, whose name carries kustomize's content hash.
    fn config_map(&self, prefix: &str) -> &Value {
        let hashed = Regex::new(&format!("^{prefix}-[a-z0-9]{{10}}$")).unwrap();
        let found: Vec<_> = self
            .all("ConfigMap")
            .into_iter()
            .filter(|o| hashed.is_match(o["metadata"]["name"].as_str().unwrap_or("")))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: one generated ConfigMap {prefix}-<hash>",
            self.env
        );
        found[0]
    }

    fn deployment(&self) -> &Value {
        self.get("Deployment", "kube-baseline")
    }

    fn container(&self) -> &Value {
        let containers = self.deployment()["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers");
        assert_eq!(containers.len(), 1, "{}: one container", self.env);
        &containers[0]
    }

    fn config(&self) -> Config {
        let cm = self.config_map("kube-baseline-config");
        let text = cm["data"]["baseline.yaml"]
            .as_str()
            .expect("baseline.yaml key");
        Config::parse(text, &format!("{} ConfigMap baseline.yaml", self.env))
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_overlay_builds_with_the_expected_objects() {
    let expected: BTreeSet<(&str, &str)> = [
        ("Namespace", "kube-baseline"),
        (
            "CustomResourceDefinition",
            "baselineexceptions.baseline.localplus.io",
        ),
        ("ServiceAccount", "kube-baseline"),
        ("ClusterRole", "kube-baseline"),
        ("ClusterRoleBinding", "kube-baseline"),
        ("ClusterRole", "baseline-exception-approver"),
        ("ClusterRoleBinding", "baseline-exception-approver"),
        ("ClusterRole", "baseline-exception-viewer"),
        ("Issuer", "kube-baseline-selfsigned"),
        ("Certificate", "kube-baseline-ca"),
        ("Issuer", "kube-baseline-ca"),
        ("Certificate", "kube-baseline-serving"),
        ("Service", "kube-baseline"),
        ("Deployment", "kube-baseline"),
        ("PodDisruptionBudget", "kube-baseline"),
        ("HorizontalPodAutoscaler", "kube-baseline"),
        ("ServiceMonitor", "kube-baseline"),
        ("ValidatingWebhookConfiguration", "kube-baseline"),
        ("MutatingWebhookConfiguration", "kube-baseline"),
        ("PrometheusRule", "kube-baseline"),
        ("ConfigMap", "kube-baseline-dashboard"),
    ]
    .into_iter()
    .collect();
    let hashed = Regex::new(r"-[a-z0-9]{10}$").unwrap();
    for env in ENVIRONMENTS {
        let build = Build::of(env);
        let got: BTreeSet<(String, String)> = build
            .objects
            .iter()
            .map(|o| {
                let name = o["metadata"]["name"].as_str().unwrap_or("").to_owned();
                let name = if o["kind"] == "ConfigMap" {
                    hashed.replace(&name, "").into_owned()
                } else {
                    name
                };
                (o["kind"].as_str().unwrap_or("").to_owned(), name)
            })
            .collect();
        let mut want: BTreeSet<(String, String)> = expected
            .iter()
            .map(|(k, n)| (k.to_string(), n.to_string()))
            .collect();
        want.insert(("ConfigMap".into(), "kube-baseline-config".into()));
        want.insert(("ConfigMap".into(), "kube-baseline-adrs".into()));
        assert_eq!(got, want, "{env}: objects in the build");

        // Everything namespaced lands in the webhook's namespace.
        let cluster_scoped = [
            "Namespace",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
            "ValidatingWebhookConfiguration",
            "MutatingWebhookConfiguration",
        ];
        for o in &build.objects {
            let kind = o["kind"].as_str().unwrap();
            let ns = &o["metadata"]["namespace"];
            if cluster_scoped.contains(&kind) {
                assert!(ns.is_null(), "{env}: {kind} is cluster-scoped");
            } else {
                assert_eq!(
                    ns, "kube-baseline",
                    "{env}: {kind} {}",
                    o["metadata"]["name"]
                );
            }
        }
    }
}

#[test]
fn the_webhook_deployment_follows_the_golden_path() {
    for env in ENVIRONMENTS {
        let build = Build::of(env);
        let d = build.deployment();
        let pod = &d["spec"]["template"]["spec"];
        let c = build.container();
        assert!(
            d["spec"]["replicas"].as_i64().unwrap() >= 2,
            "{env}: 2+ replicas"
        );
        assert_eq!(
            d["spec"]["template"]["metadata"]["labels"]["app"],
            "kube-baseline"
        );
        assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "kube-baseline");
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
        assert_eq!(pod["serviceAccountName"], "kube-baseline");

        let psc = &pod["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true, "{env}");
        assert_eq!(psc["runAsUser"], 1000, "{env}");
        assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{env}");
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{env}");
        assert_eq!(sc["runAsUser"], 1000, "{env}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{env}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{env}");
        assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{env}");
        assert!(
            sc["capabilities"]["add"].is_null(),
            "{env}: no capability added"
        );
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{env}");

        let r = &c["resources"];
        assert_eq!(r["requests"]["cpu"], "100m", "{env}");
        assert_eq!(r["requests"]["memory"], "256Mi", "{env}");
        assert_eq!(r["limits"]["cpu"], "500m", "{env}");
        assert_eq!(r["limits"]["memory"], "512Mi", "{env}");

        let ports: BTreeMap<String, i64> = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["containerPort"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            BTreeMap::from([("http".to_owned(), 8080), ("webhook".to_owned(), 8443)]),
            "{env}"
        );
        assert_eq!(
            c["livenessProbe"]["httpGet"]["path"], "/health/live",
            "{env}"
        );
        assert_eq!(c["livenessProbe"]["httpGet"]["port"], "http", "{env}");
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"], "/health/ready",
            "{env}"
        );
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], "http", "{env}");

        assert_eq!(
            c["image"], "registry.localplus.io/platform/kube-baseline:0.1.0",
            "{env}"
        );
        let args = strings(&c["args"]);
        assert_eq!(args[0], "serve", "{env}");
        let flag = |name: &str| {
            let i = args
                .iter()
                .position(|a| a == name)
                .unwrap_or_else(|| panic!("{env}: serve {name}"));
            args[i + 1].clone()
        };
        assert_eq!(flag("--tls-cert"), "/certs/tls.crt");
        assert_eq!(flag("--tls-key"), "/certs/tls.key");

        // The serving certificate is cert-manager's Secret, mounted read-only at /certs.
        let mounts = c["volumeMounts"].as_array().unwrap();
        let certs = mounts
            .iter()
            .find(|m| m["mountPath"] == "/certs")
            .expect("/certs mount");
        assert_eq!(certs["readOnly"], true);
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == certs["name"])
            .expect("certs volume");
        let serving = build.get("Certificate", "kube-baseline-serving");
        assert_eq!(
            volume["secret"]["secretName"], serving["spec"]["secretName"],
            "{env}"
        );

        // The config files the flags name are the generated ConfigMaps' keys.
        let config_mount = mounts
            .iter()
            .find(|m| m["mountPath"] == "/etc/kube-baseline")
            .expect("/etc/kube-baseline mount");
        let config_volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == config_mount["name"])
            .expect("config volume");
        let sources: BTreeMap<String, String> = config_volume["projected"]["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["configMap"]["items"][0]["path"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    s["configMap"]["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            sources["baseline.yaml"],
            build.config_map("kube-baseline-config")["metadata"]["name"]
                .as_str()
                .unwrap()
        );
        assert_eq!(
            sources["adrs.yaml"],
            build.config_map("kube-baseline-adrs")["metadata"]["name"]
                .as_str()
                .unwrap()
        );
        assert_eq!(flag("--config"), "/etc/kube-baseline/baseline.yaml");
        assert_eq!(flag("--adrs"), "/etc/kube-baseline/adrs.yaml");
        assert!(
            args.iter().any(|a| a == "--watch-exceptions"),
            "{env}: exceptions from the API"
        );
        // The binary's own parser accepts exactly these arguments.
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: kube_baseline::server::ServeArgs,
        }
        let parsed = <Cli as clap::Parser>::try_parse_from(
            std::iter::once("kube-baseline").chain(args[1..].iter().map(String::as_str)),
        );
        assert!(
            parsed.is_ok(),
            "{env}: serve rejects {args:?}: {:?}",
            parsed.err()
        );

        // Spread across nodes.
        let spread = pod["topologySpreadConstraints"]
            .as_array()
            .expect("topology spread");
        let by_host = spread
            .iter()
            .find(|t| t["topologyKey"] == "kubernetes.io/hostname")
            .expect("spread across nodes");
        assert_eq!(
            by_host["labelSelector"]["matchLabels"]["app"],
            "kube-baseline"
        );
        assert_eq!(by_host["maxSkew"], 1);
    }
}

/// The webhook obeys its own baseline: its engine, with the configuration each environment
/// deploys, finds nothing wrong with its Deployment.
#[test]
fn the_webhook_deployment_passes_its_own_policies() {
    for env in ENVIRONMENTS {
        let build = Build::of(env);
        let config = build.config();
        let json = serde_json::to_string(build.deployment()).unwrap();
        let workload = Workload::from_json(WorkloadKind::Deployment, &json).unwrap();
        let findings = evaluate(&config, &workload, &config.modes("kube-baseline"));
        assert!(findings.is_empty(), "{env}: {findings:#?}");
        // And it would pass with every policy enforced in any namespace.
        let findings = evaluate(&config, &workload, &config.modes("payments"));
        assert!(findings.is_empty(), "{env}: {findings:#?}");
    }
}

#[test]
fn staging_and_prod_deploy_the_repository_policies_unchanged() {
    let policies = read("policies/baseline.yaml");
    let adrs = read("policies/adrs.yaml");
    for env in ["staging", "prod"] {
        let build = Build::of(env);
        assert_eq!(
            build.config_map("kube-baseline-config")["data"]["baseline.yaml"],
            policies.as_str(),
            "{env}: baseline.yaml is policies/baseline.yaml"
        );
        assert_eq!(
            build.config_map("kube-baseline-adrs")["data"]["adrs.yaml"],
            adrs.as_str(),
            "{env}: adrs.yaml is policies/adrs.yaml"
        );
    }
    let dev = Build::of("dev");
    assert_eq!(
        dev.config_map("kube-baseline-adrs")["data"]["adrs.yaml"],
        adrs.as_str()
    );
}

/// dev's configuration is the repository's with some policy modes relaxed, nothing else:
/// every other key equal, and no mode stricter than prod's.
#[test]
fn dev_only_relaxes_policy_modes() {
    let prod: serde_yaml::Value = serde_yaml::from_str(&read("policies/baseline.yaml")).unwrap();
    let dev_text = read("deploy/overlays/dev/baseline.yaml");
    let dev: serde_yaml::Value = serde_yaml::from_str(&dev_text).unwrap();
    let strip_modes = |v: &serde_yaml::Value| {
        let mut v = v.clone();
        for (_, policy) in v["policies"].as_mapping_mut().unwrap().iter_mut() {
            policy.as_mapping_mut().unwrap().remove("mode");
        }
        v
    };
    assert_eq!(
        strip_modes(&dev),
        strip_modes(&prod),
        "dev differs from policies/baseline.yaml beyond modes"
    );

    let strictness = |m: Mode| match m {
        Mode::Off => 0,
        Mode::Warn => 1,
        Mode::Enforce => 2,
    };
    let prod = Config::embedded();
    let dev_build = Build::of("dev");
    let dev = dev_build.config();
    assert_eq!(
        dev_build.config_map("kube-baseline-config")["data"]["baseline.yaml"],
        dev_text.as_str(),
        "the dev overlay deploys deploy/overlays/dev/baseline.yaml"
    );
    let mut relaxed = Vec::new();
    for policy in PolicyId::ALL {
        let (d, p) = (dev.policies.mode(policy), prod.policies.mode(policy));
        assert!(
            strictness(d) <= strictness(p),
            "dev is stricter than prod on {policy}"
        );
        if d != p {
            relaxed.push(policy);
        }
        if !policy.can_ever_be_waived() || is_security(policy) {
            assert_eq!(d, p, "dev relaxes the security policy {policy}");
        }
    }
    assert!(
        !relaxed.is_empty(),
        "dev relaxes at least one observability policy"
    );
}

fn is_security(policy: PolicyId) -> bool {
    matches!(
        policy,
        PolicyId::RunAsNonRoot
            | PolicyId::ReadOnlyRootFilesystem
            | PolicyId::ResourceLimits
            | PolicyId::DropAllCapabilities
            | PolicyId::NoPrivilegeEscalation
            | PolicyId::ImageSignature
    )
}

#[test]
fn prod_has_more_headroom_than_the_base() {
    let prod = Build::of("prod");
    let staging = Build::of("staging");
    assert_eq!(prod.deployment()["spec"]["replicas"], 3);
    assert_eq!(
        prod.get("HorizontalPodAutoscaler", "kube-baseline")["spec"]["minReplicas"],
        3
    );
    assert_eq!(
        prod.get("PodDisruptionBudget", "kube-baseline")["spec"]["minAvailable"],
        2
    );
    assert_eq!(staging.deployment()["spec"]["replicas"], 2);
    assert_eq!(
        staging.get("PodDisruptionBudget", "kube-baseline")["spec"]["minAvailable"],
        1
    );
    for build in [&prod, &staging, &Build::of("dev")] {
        let replicas = build.deployment()["spec"]["replicas"].as_i64().unwrap();
        let hpa = &build.get("HorizontalPodAutoscaler", "kube-baseline")["spec"];
        let min_available = build.get("PodDisruptionBudget", "kube-baseline")["spec"]
            ["minAvailable"]
            .as_i64()
            .unwrap();
        assert_eq!(
            hpa["minReplicas"].as_i64().unwrap(),
            replicas,
            "{}: HPA floor = replicas",
            build.env
        );
        assert!(
            min_available < replicas,
            "{}: the PDB must allow a drain",
            build.env
        );
    }
}

#[test]
fn service_pdb_hpa_and_service_monitor_match_the_template() {
    for env in ENVIRONMENTS {
        let build = Build::of(env);
        let svc = build.get("Service", "kube-baseline");
        assert_eq!(svc["spec"]["selector"]["app"], "kube-baseline");
        let ports: Vec<(i64, String)> = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["port"].as_i64().unwrap(),
                    p["targetPort"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert!(
            ports.contains(&(443, "webhook".into())),
            "{env}: 443 → webhook (8443)"
        );
        assert!(ports.contains(&(8080, "http".into())), "{env}: 8080 http");
        assert!(svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "http"));

        let pdb = build.get("PodDisruptionBudget", "kube-baseline");
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"]["app"],
            "kube-baseline"
        );

        let hpa = &build.get("HorizontalPodAutoscaler", "kube-baseline")["spec"];
        assert_eq!(hpa["scaleTargetRef"]["name"], "kube-baseline");
        assert!(hpa["minReplicas"].as_i64().unwrap() >= 2);
        assert_eq!(hpa["maxReplicas"], 10);
        let targets: BTreeMap<String, i64> = hpa["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["resource"]["name"].as_str().unwrap().to_owned(),
                    m["resource"]["target"]["averageUtilization"]
                        .as_i64()
                        .unwrap(),
                )
            })
            .collect();
        assert_eq!(
            targets,
            BTreeMap::from([("cpu".into(), 70), ("memory".into(), 80)])
        );

        let sm = build.get("ServiceMonitor", "kube-baseline");
        assert_eq!(
            sm["spec"]["selector"]["matchLabels"]["app"],
            svc["metadata"]["labels"]["app"]
        );
        let ep = &sm["spec"]["endpoints"][0];
        assert_eq!(ep["port"], "http");
        assert_eq!(ep["path"], "/metrics");
        assert_eq!(ep["interval"], "30s");

        let dashboard = build.get("ConfigMap", "kube-baseline-dashboard");
        assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
        let json = dashboard["data"]["kube-baseline.json"].as_str().unwrap();
        let parsed: Value = serde_json::from_str(json).expect("dashboard is JSON");
        assert_eq!(parsed["uid"], "kube-baseline");
    }
}

#[test]
fn certificates_chain_from_a_self_signed_ca_to_the_service_names() {
    let build = Build::of("prod");
    let selfsigned = build.get("Issuer", "kube-baseline-selfsigned");
    assert!(selfsigned["spec"]["selfSigned"].is_object());
    let ca = build.get("Certificate", "kube-baseline-ca");
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(ca["spec"]["issuerRef"]["name"], "kube-baseline-selfsigned");
    let ca_issuer = build.get("Issuer", "kube-baseline-ca");
    assert_eq!(
        ca_issuer["spec"]["ca"]["secretName"],
        ca["spec"]["secretName"]
    );
    let serving = build.get("Certificate", "kube-baseline-serving");
    assert_eq!(serving["spec"]["issuerRef"]["name"], "kube-baseline-ca");
    let names = strings(&serving["spec"]["dnsNames"]);
    let svc = build.get("Service", "kube-baseline");
    let (name, ns) = (
        svc["metadata"]["name"].as_str().unwrap(),
        svc["metadata"]["namespace"].as_str().unwrap(),
    );
    assert!(names.contains(&format!("{name}.{ns}.svc")), "{names:?}");
    assert!(
        names.contains(&format!("{name}.{ns}.svc.cluster.local")),
        "{names:?}"
    );
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        let config = build.get(kind, "kube-baseline");
        assert_eq!(
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            format!("{ns}/kube-baseline-serving"),
            "{kind}"
        );
        for webhook in config["webhooks"].as_array().unwrap() {
            let service = &webhook["clientConfig"]["service"];
            assert_eq!(service["name"], name);
            assert_eq!(service["namespace"], ns);
            assert_eq!(service["port"], 443);
        }
    }
}

/// (group, resource) pairs a webhook's rules match, with the operations of each.
fn rule_targets(webhook: &Value) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for rule in webhook["rules"].as_array().expect("rules") {
        assert_eq!(strings(&rule["apiVersions"]), ["v1"], "{}", webhook["name"]);
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                let ops: BTreeSet<String> = strings(&rule["operations"]).into_iter().collect();
                out.insert((group.clone(), resource), ops);
            }
        }
    }
    out
}

fn webhook<'a>(config: &'a Value, name: &str) -> &'a Value {
    config["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("webhook {name}"))
}

#[test]
fn webhook_rules_cover_exactly_the_kinds_the_engine_evaluates() {
    let engine: BTreeSet<(String, String)> = WorkloadKind::ALL
        .iter()
        .map(|k| (k.group().to_owned(), k.resource().to_owned()))
        .collect();
    let create_update: BTreeSet<String> = ["CREATE", "UPDATE"].map(String::from).into();
    for env in ENVIRONMENTS {
        let build = Build::of(env);
        let validating = build.get("ValidatingWebhookConfiguration", "kube-baseline");
        let mutating = build.get("MutatingWebhookConfiguration", "kube-baseline");
        for w in [
            webhook(validating, "validate.baseline.localplus.io"),
            webhook(mutating, "mutate.baseline.localplus.io"),
        ] {
            let targets = rule_targets(w);
            let got: BTreeSet<_> = targets.keys().cloned().collect();
            assert_eq!(
                got, engine,
                "{env}: {} rules vs WorkloadKind::ALL",
                w["name"]
            );
            for ops in targets.values() {
                assert_eq!(ops, &create_update, "{env}: {}", w["name"]);
            }
        }
        let exceptions = rule_targets(webhook(validating, "exceptions.baseline.localplus.io"));
        assert_eq!(
            exceptions,
            BTreeMap::from([(
                (
                    "baseline.localplus.io".to_owned(),
                    "baselineexceptions".to_owned()
                ),
                ["CREATE", "UPDATE", "DELETE"].map(String::from).into()
            )]),
            "{env}"
        );
        assert_eq!(validating["webhooks"].as_array().unwrap().len(), 2);
        assert_eq!(
            mutating["webhooks"].as_array().unwrap().len(),
            1,
            "mutating: workloads only"
        );
    }
}

#[test]
fn webhooks_fail_closed_but_can_never_deadlock_the_cluster() {
    let build = Build::of("prod");
    let config = build.config();
    let validating = build.get("ValidatingWebhookConfiguration", "kube-baseline");
    let mutating = build.get("MutatingWebhookConfiguration", "kube-baseline");
    let workload_hooks = [
        webhook(validating, "validate.baseline.localplus.io"),
        webhook(mutating, "mutate.baseline.localplus.io"),
    ];
    let all_hooks = workload_hooks
        .iter()
        .copied()
        .chain([webhook(validating, "exceptions.baseline.localplus.io")]);
    for w in all_hooks {
        assert_eq!(
            strings(&w["admissionReviewVersions"]),
            ["v1"],
            "{}",
            w["name"]
        );
        assert_eq!(w["sideEffects"], "None", "{}", w["name"]);
        assert_eq!(w["failurePolicy"], "Fail", "{}", w["name"]);
        let timeout = w["timeoutSeconds"].as_i64().expect("timeoutSeconds set");
        assert!((1..=30).contains(&timeout), "{}", w["name"]);
        let conditions = w["matchConditions"].as_array().expect("matchConditions");
        let names: BTreeSet<_> = conditions
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), conditions.len(), "unique condition names");
        assert!(conditions.len() <= 64, "the API server's limit");
    }
    assert_eq!(mutating["webhooks"][0]["reinvocationPolicy"], "IfNeeded");

    // The namespaces the API server skips are the ones the engine excludes, kube-system and
    // the webhook's own namespace among them.
    let own_namespace = build.deployment()["metadata"]["namespace"]
        .as_str()
        .unwrap()
        .to_owned();
    for w in workload_hooks {
        let exprs = w["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap();
        assert_eq!(exprs.len(), 1);
        assert_eq!(exprs[0]["key"], "kubernetes.io/metadata.name");
        assert_eq!(exprs[0]["operator"], "NotIn");
        let skipped: BTreeSet<String> = strings(&exprs[0]["values"]).into_iter().collect();
        let excluded: BTreeSet<String> = config.excluded_namespaces.iter().cloned().collect();
        assert_eq!(
            skipped, excluded,
            "namespaceSelector vs policies/baseline.yaml excludedNamespaces"
        );
        assert!(skipped.contains("kube-system") && skipped.contains(&own_namespace));
    }
    assert_eq!(
        workload_hooks[0]["matchConditions"], workload_hooks[1]["matchConditions"],
        "validate and mutate skip the same requests"
    );
    let exprs: Vec<&str> = workload_hooks[0]["matchConditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["expression"].as_str().unwrap())
        .collect();
    for needed in [
        "system:nodes",
        "system:serviceaccount:kube-system:",
        "deletionTimestamp",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(needed)),
            "a matchCondition about {needed}"
        );
    }
    // The webhook's own ServiceAccount is not exempted: it writes none of these objects.
    assert!(!exprs
        .iter()
        .any(|e| e.contains("system:serviceaccount:kube-baseline:")));
}

#[test]
fn rbac_gives_the_webhook_read_only_access_and_the_platform_team_write_access() {
    let build = Build::of("prod");
    let config = build.config();
    let rules_of = |role: &str| -> Vec<(Vec<String>, Vec<String>, BTreeSet<String>)> {
        build.get("ClusterRole", role)["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    strings(&r["apiGroups"]),
                    strings(&r["resources"]),
                    strings(&r["verbs"]).into_iter().collect(),
                )
            })
            .collect()
    };
    let exceptions = (
        vec!["baseline.localplus.io".to_owned()],
        vec!["baselineexceptions".to_owned()],
    );
    let read: BTreeSet<String> = ["get", "list", "watch"].map(String::from).into();
    assert_eq!(
        rules_of("kube-baseline"),
        vec![(exceptions.0.clone(), exceptions.1.clone(), read.clone())],
        "the webhook may read BaselineExceptions and nothing more"
    );
    let binding = build.get("ClusterRoleBinding", "kube-baseline");
    assert_eq!(binding["roleRef"]["name"], "kube-baseline");
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(
        binding["subjects"][0]["name"],
        build.deployment()["spec"]["template"]["spec"]["serviceAccountName"]
    );
    assert!(build.all("Role").is_empty() && build.all("RoleBinding").is_empty());

    let approver = rules_of("baseline-exception-approver");
    assert_eq!(approver.len(), 1);
    assert_eq!((approver[0].0.clone(), approver[0].1.clone()), exceptions);
    for verb in ["create", "update", "patch", "delete"] {
        assert!(approver[0].2.contains(verb), "approvers may {verb}");
    }
    let binding = build.get("ClusterRoleBinding", "baseline-exception-approver");
    let groups: Vec<String> = binding["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["kind"], "Group");
            s["name"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        groups, config.exceptions.approver_groups,
        "RBAC and the webhook agree on approvers"
    );
    for (_, _, verbs) in rules_of("baseline-exception-viewer") {
        assert_eq!(verbs, read, "the viewer role is read-only");
    }
}

// ---------------------------------------------------------------------------------------
// Alerting rules, dashboard, runbooks

/// The PrometheusRule's spec, as deployed (from the prod build).
fn rule_groups() -> Value {
    let build = Build::of("prod");
    build.get("PrometheusRule", "kube-baseline")["spec"].clone()
}

fn rules() -> Vec<Value> {
    rule_groups()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

fn alerts() -> Vec<Value> {
    rules()
        .into_iter()
        .filter(|r| r["alert"].is_string())
        .collect()
}

/// The rules file and test files in a temporary directory, as promtool reads them.
fn promtool_dir() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let rules = serde_yaml::to_string(&rule_groups()).unwrap();
    std::fs::write(dir.path().join("kube-baseline.rules.yaml"), rules).unwrap();
    let mut tests = Vec::new();
    let src = root().join("deploy/observability/tests");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            std::fs::copy(&path, dir.path().join(&name)).unwrap();
            tests.push(name);
        }
    }
    tests.sort();
    assert!(!tests.is_empty());
    (dir, tests)
}

fn promtool(dir: &Path, args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool is installed (Debian package `prometheus`; scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "promtool {} failed:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_rules() {
    let (dir, _) = promtool_dir();
    promtool(dir.path(), &["check", "rules", "kube-baseline.rules.yaml"]);
}

#[test]
fn promtool_unit_tests_pass() {
    let (dir, tests) = promtool_dir();
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    promtool(dir.path(), &args);
}

/// Each alert has a unit test where it fires and one where it stays silent.
#[test]
fn every_alert_is_unit_tested_firing_and_silent() {
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    let (dir, tests) = promtool_dir();
    for name in tests {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let doc = serde_json::to_value(doc).unwrap();
        for test in doc["tests"].as_array().unwrap() {
            for case in test["alert_rule_test"].as_array().into_iter().flatten() {
                let alert = case["alertname"].as_str().unwrap().to_owned();
                match case["exp_alerts"].as_array() {
                    Some(expected) if !expected.is_empty() => firing.insert(alert),
                    _ => silent.insert(alert),
                };
            }
        }
    }
    for alert in alerts() {
        let name = alert["alert"].as_str().unwrap();
        assert!(firing.contains(name), "no promtool test where {name} fires");
        assert!(
            silent.contains(name),
            "no promtool test where {name} stays silent"
        );
    }
}

#[test]
fn every_alert_has_severity_summary_description_and_an_existing_runbook() {
    let alerts = alerts();
    assert!(alerts.len() >= 10);
    let mut linked = BTreeSet::new();
    for alert in &alerts {
        let name = alert["alert"].as_str().unwrap();
        let severity = alert["labels"]["severity"].as_str().unwrap_or("");
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                alert["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.trim().is_empty()),
                "{name}: annotation {key}"
            );
        }
        let url = alert["annotations"]["runbook_url"].as_str().unwrap();
        let file = url
            .strip_prefix(RUNBOOK_BASE)
            .unwrap_or_else(|| panic!("{name}: runbook_url {url} is not under {RUNBOOK_BASE}"));
        assert_eq!(
            file,
            format!("{name}.md"),
            "{name}: one runbook per alert, named after it"
        );
        let path = root().join("docs/runbooks").join(file);
        assert!(path.is_file(), "{name}: {} does not exist", path.display());
        assert_runbook_sections(&path);
        linked.insert(file.to_owned());
    }
    // Every runbook is an alert's, except the break-glass procedure the alert runbooks link to.
    for entry in std::fs::read_dir(root().join("docs/runbooks")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        if file != "break-glass.md" {
            assert!(
                linked.contains(&file),
                "docs/runbooks/{file} belongs to no alert"
            );
        }
    }
}

/// The seven sections of the platform's runbook structure, as `## ` headings, in order.
fn assert_runbook_sections(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let headings: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(str::trim)
        .collect();
    assert_eq!(headings, RUNBOOK_SECTIONS, "{}: sections", path.display());
    let sections: Vec<&str> = text.split("\n## ").skip(1).collect();
    for section in sections {
        let (title, body) = section.split_once('\n').unwrap_or((section, ""));
        assert!(
            !body.trim().is_empty(),
            "{}: section {title} is empty",
            path.display()
        );
    }
}

#[test]
fn break_glass_runbook_is_complete_and_runbook_links_resolve() {
    let dir = root().join("docs/runbooks");
    assert_runbook_sections(&dir.join("break-glass.md"));
    let text = read("docs/runbooks/break-glass.md");
    for needed in [
        "failurePolicy",
        "Ignore",
        "kubectl delete mutatingwebhookconfiguration",
        "scale",
        "Restore enforcement",
    ] {
        assert!(text.contains(needed), "break-glass.md: {needed}");
    }
    let link = Regex::new(r"\]\(([A-Za-z0-9_.-]+\.md)\)").unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for cap in link.captures_iter(&text) {
            assert!(
                dir.join(&cap[1]).is_file(),
                "{}: broken link {}",
                path.display(),
                &cap[1]
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Metric names

/// PromQL functions and aggregation operators (an identifier followed by `(`).
const PROMQL_FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "avg",
    "avg_over_time",
    "bottomk",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count",
    "count_over_time",
    "count_values",
    "day_of_month",
    "day_of_week",
    "days_in_month",
    "delta",
    "deriv",
    "exp",
    "floor",
    "group",
    "histogram_quantile",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max",
    "max_over_time",
    "min",
    "min_over_time",
    "minute",
    "month",
    "predict_linear",
    "present_over_time",
    "quantile",
    "quantile_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev",
    "stddev_over_time",
    "stdvar",
    "stdvar_over_time",
    "sum",
    "sum_over_time",
    "time",
    "timestamp",
    "topk",
    "vector",
    "year",
];
const PROMQL_KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN",
];

/// The series names a PromQL expression reads. Strings, label matchers, ranges, grouping
/// label lists and Grafana variables are removed first; what is left is numbers, operators,
/// keywords, functions (identifiers followed by `(`) and metric names. An unknown function is
/// an error, so a typo cannot hide a metric.
fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let strings = Regex::new(r#""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`"#).unwrap();
    let matchers = Regex::new(r"\{[^}]*\}").unwrap();
    let ranges = Regex::new(r"\[[^\]]*\]").unwrap();
    let grouping =
        Regex::new(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)").unwrap();
    let offset = Regex::new(r"\boffset\s+-?[0-9a-z]+").unwrap();
    let variables = Regex::new(r"\$\{[^}]*\}|\$[A-Za-z_]+").unwrap();
    let mut e = expr.to_owned();
    for re in [&strings, &matchers, &ranges, &grouping, &offset, &variables] {
        e = re.replace_all(&e, " ").into_owned();
    }
    let token =
        Regex::new(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|[A-Za-z_:][A-Za-z0-9_:]*").unwrap();
    let mut names = BTreeSet::new();
    for m in token.find_iter(&e) {
        let t = m.as_str();
        if t.starts_with(|c: char| c.is_ascii_digit()) || PROMQL_KEYWORDS.contains(&t) {
            continue;
        }
        if e[m.end()..].trim_start().starts_with('(') {
            if !PROMQL_FUNCTIONS.contains(&t) {
                return Err(format!("unknown PromQL function {t:?} in {expr}"));
            }
            continue;
        }
        names.insert(t.to_owned());
    }
    Ok(names)
}

#[test]
fn metric_name_extraction_finds_series_and_nothing_else() {
    let names = metric_names(
        r#"sum by (le, endpoint) (rate(kube_baseline_x_bucket{result=~"a|b", le!="+Inf"}[$__rate_interval] offset 5m))
           / ignoring(pod) group_left(version) kube_baseline:ratio:rate5m > 14.4 * 1e-3 and on() absent(up)"#,
    )
    .unwrap();
    assert_eq!(
        names,
        ["kube_baseline_x_bucket", "kube_baseline:ratio:rate5m", "up"]
            .map(String::from)
            .into()
    );
    assert!(metric_names("rat(kube_baseline_x_total[5m])").is_err());
}

/// The names in tests/data/metric-names.txt: what a running `kube-baseline serve` exposes.
fn exposed_metric_names() -> BTreeSet<String> {
    read("tests/data/metric-names.txt")
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn rules_and_dashboard_use_only_exposed_metric_names() {
    let exposed = exposed_metric_names();
    assert!(
        exposed.iter().all(|n| n.starts_with("kube_baseline_")),
        "{exposed:?}"
    );
    let rules = rules();
    let recorded: BTreeSet<String> = rules
        .iter()
        .filter_map(|r| r["record"].as_str().map(str::to_owned))
        .collect();
    let mut exprs: Vec<(String, String)> = rules
        .iter()
        .map(|r| {
            let name = r["record"]
                .as_str()
                .or(r["alert"].as_str())
                .unwrap()
                .to_owned();
            (
                format!("rule {name}"),
                r["expr"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let dashboard: Value =
        serde_json::from_str(&read("deploy/observability/dashboards/kube-baseline.json")).unwrap();
    let mut panel_exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut panel_exprs);
    assert!(panel_exprs.len() >= 15, "the dashboard has its queries");
    exprs.extend(panel_exprs.into_iter().map(|e| ("dashboard".to_owned(), e)));

    let mut used = BTreeSet::new();
    for (origin, expr) in &exprs {
        let names = metric_names(expr).unwrap_or_else(|e| panic!("{origin}: {e}"));
        assert!(!names.is_empty(), "{origin}: no series in {expr}");
        for name in names {
            let known = exposed.contains(&name)
                || recorded.contains(&name)
                || KUBE_STATE_METRICS.contains(&name.as_str());
            assert!(known, "{origin}: {name} is neither exposed (tests/data/metric-names.txt), recorded, nor kube-state-metrics");
            used.insert(name);
        }
    }
    // Every recording rule name is of the `level:metric:operations` form and is used.
    for name in &recorded {
        assert!(
            name.starts_with("kube_baseline:") && name.matches(':').count() == 2,
            "{name}"
        );
        assert!(
            used.contains(name),
            "recording rule {name} is used by no alert nor panel"
        );
    }
    // The issue's dashboard needs: every exposed family appears somewhere.
    for name in &exposed {
        let family = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            used.iter().any(|u| u.starts_with(family)),
            "{name} is exposed but neither alerted on nor shown on the dashboard"
        );
    }
}

/// The image's build stage (`FROM rust:X-bookworm`, then `cargo build --locked`) uses the
/// toolchain the crate declares (`rust-version`), and that toolchain is new enough for every
/// dependency in Cargo.lock: otherwise the image build fails on the first one that needs a
/// newer compiler, on a build host this machine cannot stand in for (no container runtime).
#[test]
fn the_dockerfile_builds_with_a_toolchain_every_locked_dependency_accepts() {
    // `1.91` and `1.91.0` are the same version: compared as three numbers.
    let version = |text: &str| -> [u64; 3] {
        let mut parts = [0; 3];
        for (part, n) in parts.iter_mut().zip(text.split('.')) {
            *part = n
                .parse()
                .unwrap_or_else(|_| panic!("not a version: {text}"));
        }
        parts
    };
    let manifest = read(root().join("Cargo.toml"));
    let declared = Regex::new(r#"(?m)^rust-version = "([0-9.]+)""#)
        .unwrap()
        .captures(&manifest)
        .expect("Cargo.toml declares rust-version")[1]
        .to_owned();
    let dockerfile = read(root().join("Dockerfile"));
    let builder = Regex::new(r"(?m)^FROM rust:([0-9.]+)-")
        .unwrap()
        .captures(&dockerfile)
        .expect("the Dockerfile builds FROM rust:<version>-…")[1]
        .to_owned();
    assert_eq!(
        builder, declared,
        "the Dockerfile's builder image and Cargo.toml's rust-version differ"
    );

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata JSON");
    let too_new: Vec<String> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| {
            let needs = p["rust_version"].as_str()?;
            (version(needs) > version(&declared))
                .then(|| format!("{} {} needs {needs}", p["name"], p["version"]))
        })
        .collect();
    assert!(
        too_new.is_empty(),
        "rust-version {declared} cannot build: {too_new:#?}"
    );
}
