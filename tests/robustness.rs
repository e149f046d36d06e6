//! Bad input never panics and always gets an answer: every prefix of every captured review,
//! and every field of a captured object replaced by a value of each other JSON type.

mod common;

use chrono::Utc;
use serde_json::{json, Value};

use kube_baseline::admission::review::decode;
use kube_baseline::admission::{mutate, validate, Snapshot, Verdict};
use kube_baseline::config::Config;

fn fixtures() -> impl Iterator<Item = &'static str> {
    common::CAPTURED_COMPLIANT
        .into_iter()
        .chain(["delete-deployment-validate.json"])
}

fn fixture(name: &str) -> Vec<u8> {
    common::captured(name)
}

#[test]
fn every_truncation_of_a_review_is_a_decode_error_not_a_panic() {
    for name in fixtures() {
        let body = fixture(name);
        for end in (0..body.len()).step_by(13) {
            assert!(decode(&body[..end]).is_err(), "{name} cut at {end} decoded");
        }
    }
}

/// Every leaf and object of the object replaced, one at a time, by each other JSON type.
fn variants(value: &Value, path: String, out: &mut Vec<String>) {
    out.push(path.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = k.replace('~', "~0").replace('/', "~1");
                variants(v, format!("{path}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                variants(v, format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn any_field_of_the_wrong_type_is_answered_as_invalid_or_evaluated() {
    let snapshot = Snapshot::new(Config::embedded());
    let replacements = [
        json!(null),
        json!(7),
        json!("x"),
        json!([]),
        json!({}),
        json!(true),
    ];
    for name in [
        "create-deployment-validate.json",
        "create-cronjob-validate.json",
        "create-pod-validate.json",
    ] {
        let review: Value = serde_json::from_slice(&fixture(name)).unwrap();
        let mut paths = Vec::new();
        let object = &review["request"]["object"];
        variants(object, String::new(), &mut paths);
        // managedFields and annotations are large and untyped; the spec is what matters.
        paths.retain(|p| p.starts_with("/spec"));
        assert!(paths.len() > 30, "{name}: {} paths", paths.len());
        for path in &paths {
            for replacement in &replacements {
                let mut broken = review.clone();
                *broken["request"]["object"].pointer_mut(path).unwrap() = replacement.clone();
                let body = serde_json::to_vec(&broken).unwrap();
                let request = decode(&body).expect("the envelope is intact");
                let d = validate(&snapshot, &request, Utc::now());
                assert_eq!(d.response.uid, request.uid);
                if d.verdict == Verdict::Invalid {
                    let status = d.response.status.as_ref().unwrap();
                    assert_eq!(status.code, 400);
                    assert!(
                        status
                            .message
                            .contains("does not match the Kubernetes schema"),
                        "{}",
                        status.message
                    );
                }
                let m = mutate(&snapshot, &request, Utc::now());
                assert_eq!(m.response.uid, request.uid);
            }
        }
    }
}
