//! `kube-baseline check` as CI runs it: the real binary on a fixture tree.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

mod common;

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kube-baseline"))
        .arg("check")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("kube-baseline runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let o = check(&all);
    let value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("json output parses: {e}\n{}", stdout(&o)));
    (o.status.code().unwrap(), value)
}

#[test]
fn compliant_manifests_exit_zero() {
    let o = check(&["tests/data/check/ok"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("2 objects: 0 denied, 0 warned, 1 allowed, 1 not evaluated"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn violations_exit_one_and_name_file_line_object_and_field() {
    let o = check(&["tests/data/check/bad"]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(
        text.contains("tests/data/check/bad/workloads.yaml:9 CronJob default/report DENIED"),
        "{text}"
    );
    assert!(
        text.contains("[run-as-non-root] spec.jobTemplate.spec.template.spec.containers[0].securityContext.runAsUser (container \"report\")"),
        "{text}"
    );
    assert!(text.contains("[resource-limits] spec.jobTemplate.spec.template.spec.containers[0].resources.limits.cpu"), "{text}");
    assert!(text.contains("never waivable"), "{text}");
    assert!(
        text.contains("tests/data/check/bad/pod.json:1 Pod shop/debug DENIED"),
        "{text}"
    );
}

#[test]
fn line_numbers_point_at_each_document() {
    let (_, v) = json(&["tests/data/check/bad/workloads.yaml"]);
    let lines: Vec<(String, u64)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_owned(),
                r["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("ConfigMap".into(), 1),
            ("CronJob".into(), 9),
            ("Deployment".into(), 35)
        ]
    );
}

#[test]
fn warnings_pass_unless_strict() {
    let file = "tests/data/check/bad/workloads.yaml";
    let (_, v) = json(&[file]);
    let deployment = &v["results"][2];
    assert_eq!(deployment["verdict"], "warned");
    assert!(deployment["warnings"][0]
        .as_str()
        .unwrap()
        .starts_with("replicas-minimum"));
    // Only the warned Deployment, from stdin: passes, and fails with --strict.
    let text = std::fs::read_to_string(file).unwrap();
    let deployment_only = text.split("\n---\n").nth(2).unwrap().to_owned();
    for (strict, code) in [(false, 0), (true, 1)] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kube-baseline"));
        cmd.args(["check", "-"]);
        if strict {
            cmd.arg("--strict");
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(deployment_only.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "strict={strict}: {}",
            stdout(&out)
        );
    }
}

#[test]
fn a_yaml_syntax_error_gives_file_line_and_exit_two() {
    let o = check(&["tests/data/check/broken"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("tests/data/check/broken/syntax.yaml:1"),
        "{err}"
    );
}

#[test]
fn a_missing_file_exits_two_and_says_so() {
    let o = check(&["tests/data/check/nope.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope.yaml: cannot read"));
}

#[test]
fn a_bad_config_exits_two_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("baseline.yaml");
    std::fs::write(
        &config,
        "policies:\n  resource-limits: {exemptable: true}\n",
    )
    .unwrap();
    let o = check(&["--config", config.to_str().unwrap(), "tests/data/check/ok"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("policies.resource-limits.exemptable"));
}

#[test]
fn sarif_output_is_valid_sarif_2_1_0_and_locates_findings() {
    let o = check(&["--output", "sarif", "tests/data/check/bad"]);
    assert_eq!(o.status.code(), Some(1));
    let sarif: Value = serde_json::from_slice(&o.stdout).unwrap();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sarif-schema-2.1.0.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(false)
        .build(&schema)
        .expect("the SARIF schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&sarif)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    let root = results
        .iter()
        .find(|r| {
            r["ruleId"] == "run-as-non-root"
                && r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                    == "tests/data/check/bad/workloads.yaml"
        })
        .expect("a run-as-non-root result");
    assert_eq!(root["level"], "error");
    let location = &root["locations"][0]["physicalLocation"];
    assert_eq!(
        location["artifactLocation"]["uri"],
        "tests/data/check/bad/workloads.yaml"
    );
    assert_eq!(location["region"]["startLine"], 9);
    let rules = sarif["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap();
    assert_eq!(rules.len(), 9);
}

#[test]
fn junit_output_has_one_test_case_per_object() {
    let o = check(&["--output", "junit", "tests/data/check/bad"]);
    let xml = stdout(&o);
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 4);
    let failed: Vec<_> = cases
        .iter()
        .filter(|c| c.children().any(|n| n.has_tag_name("failure")))
        .map(|c| c.attribute("name").unwrap())
        .collect();
    assert_eq!(failed, ["Pod shop/debug", "CronJob default/report"]);
}

#[test]
fn namespace_flag_applies_to_objects_without_one() {
    let (_, v) = json(&[
        "--namespace",
        "dev-reports",
        "tests/data/check/bad/workloads.yaml",
    ]);
    assert_eq!(v["results"][1]["namespace"], "dev-reports");
}

#[test]
fn json_carries_the_same_denial_text_as_the_webhook() {
    let (code, v) = json(&["tests/data/check/bad/pod.json"]);
    assert_eq!(code, 1);
    let message = v["results"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Pod shop/debug violates the platform baseline"),
        "{message}"
    );
    let findings = v["results"][0]["findings"].as_array().unwrap();
    assert!(findings.iter().all(|f| f["action"] == "denied"));
    assert!(findings
        .iter()
        .any(|f| f["field"] == "spec.containers[0].resources" && f["policy"] == "resource-limits"));
}

/// The webhook obeys its own baseline: every overlay, built by the real `kubectl kustomize`,
/// passes `kube-baseline check` (as CI would run it, from stdin).
#[test]
fn every_overlay_of_the_webhook_passes_its_own_check() {
    // Its namespace is excluded (so it can always restart); evaluate it anyway.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("baseline.yaml");
    let embedded = std::fs::read_to_string("policies/baseline.yaml").unwrap();
    let start = embedded.find("excludedNamespaces:").unwrap();
    let end = start + embedded[start..].find("\n\n").unwrap();
    let strict = format!(
        "{}excludedNamespaces: []{}",
        &embedded[..start],
        &embedded[end..]
    );
    std::fs::write(&config, strict).unwrap();
    for env in ["dev", "staging", "prod"] {
        let built = common::kustomize(env);
        let mut child = Command::new(env!("CARGO_BIN_EXE_kube-baseline"))
            .args([
                "check",
                "--strict",
                "--config",
                config.to_str().unwrap(),
                "-",
            ])
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(built.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{env}:\n{text}");
        assert!(
            text.contains("0 denied, 0 warned, 1 allowed"),
            "{env}: the Deployment was evaluated:\n{text}"
        );
    }
}

/// CI sees the cluster's exceptions: the same files, ADR index and expiry.
#[test]
fn exceptions_and_adrs_waive_in_check_until_expiry() {
    let file = "tests/data/check/waived/legacy-nginx.yaml";
    let without = check(&[file]);
    assert_eq!(without.status.code(), Some(1));

    let with = |now: &str| {
        check(&[
            "--exceptions",
            "policies/exceptions",
            "--adrs",
            "policies/adrs.yaml",
            "--now",
            now,
            file,
        ])
    };
    let waived = with("2027-01-15T00:00:00Z");
    let text = stdout(&waived);
    assert_eq!(waived.status.code(), Some(0), "{text}");
    assert!(text.contains("~ [read-only-root-filesystem] spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem (container \"nginx\")"), "{text}");
    assert!(text.contains("waived by ADR-0042"), "{text}");

    let expired = with("2027-04-02T00:00:00Z");
    assert_eq!(expired.status.code(), Some(1), "{}", stdout(&expired));
}

#[test]
fn exceptions_without_an_adr_index_is_a_usage_error() {
    let o = check(&["--exceptions", "policies/exceptions", "tests/data/check/ok"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--adrs"));
}

/// The webhook reads only the fields its policies use (the API server checks the schema
/// first); offline, `check` stands in for the API server and refuses a pod spec that does not
/// match the Kubernetes schema, even in a field no policy reads.
#[test]
fn a_pod_spec_that_breaks_the_kubernetes_schema_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let ok = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/check/ok/app.yaml"),
    )
    .unwrap();
    let broken = ok.replacen("image:", "env: not-a-list\n          image:", 1);
    assert_ne!(
        ok, broken,
        "the fixture has a container image to put env before"
    );
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, &broken).unwrap();
    let (code, report) = json(&[file.to_str().unwrap()]);
    assert_eq!(code, 1, "{report:#}");
    let objects = report["results"].as_array().expect("results");
    let invalid: Vec<&Value> = objects
        .iter()
        .filter(|o| o["verdict"] == "invalid")
        .collect();
    assert_eq!(invalid.len(), 1, "{report:#}");
    let message = invalid[0]["message"].as_str().unwrap();
    assert!(
        message.contains("does not match the Kubernetes schema: spec.template.spec:"),
        "{message}"
    );
    assert!(message.contains("invalid type"), "{message}");
}
