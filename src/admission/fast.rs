//! The fast path of [`decode_review`](super::review::decode_review) and of the no-op
//! reference's decode: the AdmissionReview envelope and its request read with
//! [`crate::scan`], the object straight into its [`Workload`] (or skipped).
//!
//! It reads what the serde path reads, with the same rules, and gives up ([`Bail`]) on
//! anything else: then the serde path decodes the body and gives its answer or its error.
//! Giving up is never wrong, only slower; the tests check that when this path answers, the
//! serde path answers the same.

use std::borrow::Cow;

use super::review::{
    workload_kind_of, AdmissionRequest, GroupVersionKind, GroupVersionResource, Operation, UserInfo,
};
use crate::scan::{fields, Bail, Parser, Scan};
use crate::workload::Workload;

/// What to do with `request.object`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    /// Read it into its workload (a kind the engine evaluates, given before the object).
    Workload,
    /// Skip it (checked, not kept): the no-op reference answers from the uid alone.
    Skip,
}

/// The envelope as read, before [`check_envelope`](super::review) looks at it.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub api_version: Option<Cow<'a, str>>,
    pub kind: Option<Cow<'a, str>>,
    pub request: Option<(AdmissionRequest, Option<Box<Workload<'a>>>)>,
}

/// The whole body: the envelope, then nothing but whitespace.
pub fn envelope(text: &str, object: Object) -> Scan<Envelope<'_>> {
    let mut p = Parser::new(text);
    let mut envelope = Envelope {
        api_version: None,
        kind: None,
        request: None,
    };
    fields!(p, |p| {
        "apiVersion" => opt_str(p).map(|v| envelope.api_version = v),
        "kind" => opt_str(p).map(|v| envelope.kind = v),
        "request" => {
            envelope.request = if p.null()? {
                None
            } else {
                Some(request(p, object)?)
            };
            Ok(())
        },
    })?;
    p.end()?;
    Ok(envelope)
}

fn opt_str<'a>(p: &mut Parser<'a>) -> Scan<Option<Cow<'a, str>>> {
    if p.null()? {
        Ok(None)
    } else {
        p.string().map(Some)
    }
}

fn opt_string(p: &mut Parser<'_>) -> Scan<Option<String>> {
    opt_str(p).map(|v| v.map(Cow::into_owned))
}

fn string(p: &mut Parser<'_>, slot: &mut String) -> Scan<()> {
    p.owned_string().map(|v| *slot = v)
}

fn request<'a>(
    p: &mut Parser<'a>,
    object: Object,
) -> Scan<(AdmissionRequest, Option<Box<Workload<'a>>>)> {
    let mut uid = String::new();
    let mut kind = GroupVersionKind::default();
    let mut resource = GroupVersionResource::default();
    let mut sub_resource = None;
    let mut name = None;
    let mut namespace = None;
    let mut operation = None;
    let mut user_info = UserInfo::default();
    let mut workload = None;
    let mut dry_run = None;
    fields!(p, |p| {
        "uid" => string(p, &mut uid),
        "kind" => fields!(p, |p| {
            "group" => string(p, &mut kind.group),
            "version" => string(p, &mut kind.version),
            "kind" => string(p, &mut kind.kind),
        }),
        "resource" => fields!(p, |p| {
            "group" => string(p, &mut resource.group),
            "version" => string(p, &mut resource.version),
            "resource" => string(p, &mut resource.resource),
        }),
        "subResource" => opt_string(p).map(|v| sub_resource = v),
        "name" => opt_string(p).map(|v| name = v),
        "namespace" => opt_string(p).map(|v| namespace = v),
        "operation" => {
            operation = Some(match &*p.string()? {
                "CREATE" => Operation::Create,
                "UPDATE" => Operation::Update,
                "DELETE" => Operation::Delete,
                "CONNECT" => Operation::Connect,
                _ => return Err(Bail),
            });
            Ok(())
        },
        "userInfo" => fields!(p, |p| {
            "username" => string(p, &mut user_info.username),
            "uid" => string(p, &mut user_info.uid),
            "groups" => p.strings(&mut user_info.groups),
        }),
        "object" => match object {
            Object::Skip => p.skip(),
            // The kind came first and is one the engine evaluates; otherwise the serde path
            // keeps the object raw.
            Object::Workload => {
                let kind = workload_kind_of(&kind).ok_or(Bail)?;
                workload = crate::workload::fast::workload(p, kind)?;
                Ok(())
            }
        },
        "oldObject" => p.skip(),
        "dryRun" => {
            dry_run = if p.null()? { None } else { Some(p.bool()?) };
            Ok(())
        },
    })?;
    let request = AdmissionRequest {
        uid,
        kind,
        resource,
        sub_resource,
        name,
        namespace,
        // serde refuses a request without one.
        operation: operation.ok_or(Bail)?,
        user_info,
        object: None,
        old_object: None,
        dry_run,
    };
    Ok((request, workload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review::{
        decode, decode_envelope, decode_review_fast, decode_review_serde, DecodeError, Review,
    };
    use crate::testing::Rng;

    fn captured() -> Vec<(String, String)> {
        crate::admission::CAPTURED_COMPLIANT
            .into_iter()
            .chain(["delete-deployment-validate.json"])
            .map(|file| {
                let text = std::fs::read_to_string(format!("tests/data/apiserver/{file}"))
                    .expect("fixture");
                (file.to_owned(), text)
            })
            .collect()
    }

    /// The fixtures as the API server sends them (compact), and as they are stored.
    fn seeds() -> Vec<String> {
        let mut seeds = Vec::new();
        for (_, text) in captured() {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            seeds.push(serde_json::to_string(&value).unwrap());
            seeds.push(text);
        }
        seeds
    }

    /// What a decode gave, in a form two decodes can be compared by.
    fn outcome(result: &Result<Review, DecodeError>) -> String {
        match result {
            Ok(Review { request, workload }) => format!(
                "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                request.uid,
                request.kind,
                request.resource,
                request.sub_resource,
                request.name,
                request.namespace,
                request.operation,
                request.user_info,
                request.object.as_ref().map(|raw| raw.get()),
                request.dry_run,
                workload,
            ),
            Err(error) => format!("error: {error}"),
        }
    }

    /// When the fast path answers, the serde path answers the same; says which it was.
    fn check(text: &str) -> bool {
        let fast = decode_review_fast(text);
        if let Some(fast) = &fast {
            let serde = decode_review_serde(text, text.as_bytes());
            assert_eq!(outcome(fast), outcome(&serde), "body: {text}");
        }
        // The no-op's envelope: the same request, the object skipped instead of kept.
        if envelope(text, Object::Skip).is_ok() {
            let ours = decode_envelope(text.as_bytes());
            let serde = decode(text.as_bytes());
            let summary = |result: &Result<AdmissionRequest, DecodeError>| match result {
                Ok(r) => format!(
                    "{:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                    r.uid, r.kind, r.resource, r.name, r.namespace, r.operation, r.user_info
                ),
                Err(error) => format!("error: {error}"),
            };
            assert_eq!(summary(&ours), summary(&serde), "body: {text}");
        }
        fast.is_some()
    }

    #[test]
    fn every_captured_review_takes_the_fast_path_and_reads_as_with_serde() {
        for seed in seeds() {
            assert!(check(&seed), "the fast path gave up on {seed}");
            let review = decode_review_fast(&seed).unwrap().unwrap();
            if review.request.operation != Operation::Delete {
                let workload = review.workload.expect("a workload");
                assert!(!workload.spec.containers.is_empty());
            }
        }
    }

    #[test]
    fn escaped_strings_unicode_and_unknown_fields_read_as_with_serde() {
        let body = r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","extra":[1,-2.5e3,{"x":null}],
            "request":{"uid":"u\u002d1","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE",
            "userInfo":{"username":"d\u00e9v","groups":["a","b\"c"],"extra":{"k":["v"]}},
            "object":{"metadata":{"name":"p\ud83d\ude00","labels":{"a":"1","a":"2"},"annotations":{"x":"\u003ctag\u003e\n","prometheus.io/path":"\/m\u0065trics\n"}},
            "spec":{"containers":[{"name":"c","image":"r/i:1","ports":[{"containerPort":0,"hostPort":null}],
            "resources":{"limits":{"cpu":"1","memory":null,"nvidia.com/gpu":"1"}},"securityContext":{"runAsUser":-1}}],
            "hostPID":true,"os":null,"volumes":[{"name":"v","hostPath":{"path":"/"}}]}},"dryRun":false}}"#;
        assert!(check(body));
        let review = decode_review_fast(body).unwrap().unwrap();
        let workload = review.workload.unwrap();
        assert_eq!(workload.name, "p😀");
        assert_eq!(workload.pod_labels.get("a").map(|v| &**v), Some("2"));
        // Only the annotations a policy reads are kept, unescaped.
        assert_eq!(workload.pod_annotations.get("x"), None);
        assert_eq!(
            workload
                .pod_annotations
                .get("prometheus.io/path")
                .map(|v| &**v),
            Some("/metrics\n")
        );
        assert_eq!(review.request.user_info.groups, ["a", "b\"c"]);
    }

    #[test]
    fn what_serde_refuses_or_reads_differently_is_left_to_serde() {
        let base = |object: &str| {
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","kind":{{"group":"apps","version":"v1","kind":"Deployment"}},"operation":"CREATE","object":{object}}}}}"#
            )
        };
        for object in [
            r#"{"spec":{"replicas":2,"replicas":3}}"#,
            r#"{"spec":{"replicas":2.0}}"#,
            r#"{"spec":{"replicas":"2"}}"#,
            r#"{"spec":{"template":{"spec":{"containers":[{"name":1}]}}}}"#,
            r#"{"spec":["not","an","object"]}"#,
            r#"{"metadata":{"name":"\ud800"}}"#,
            // An annotation no policy reads must still be a string.
            r#"{"spec":{"template":{"metadata":{"annotations":{"x":1}}}}}"#,
        ] {
            let body = base(object);
            assert!(decode_review_fast(&body).is_none(), "{body}");
        }
        // The object before its kind: serde keeps it raw.
        let late_kind = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","object":{},"kind":{"group":"apps","version":"v1","kind":"Deployment"},"operation":"CREATE"}}"#;
        assert!(decode_review_fast(late_kind).is_none());
        // Envelope errors are the same errors.
        let no_uid = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}}"#;
        assert!(check(no_uid));
        assert!(matches!(
            decode_review_fast(no_uid),
            Some(Err(DecodeError::MissingUid))
        ));
    }

    /// Pieces of JSON that the mutations drop into a body.
    const TOKENS: &[&str] = &[
        "",
        "{",
        "}",
        "[",
        "]",
        "\"",
        ":",
        ",",
        "\\",
        "\\u",
        "\\ud800",
        "\\u00e9",
        "\\n",
        "null",
        "true",
        "false",
        "0",
        "-",
        "01",
        "1.5",
        "1e3",
        "-0",
        "2147483648",
        " ",
        "\t",
        "\u{1}",
        "é",
        "{}",
        "[]",
        "\"x\"",
        "null,",
        "\"name\":\"dup\",",
    ];

    /// JSON values that the structural mutations put in place of a field's value.
    const VALUES: &[&str] = &[
        "null",
        "true",
        "0",
        "-0",
        "-1",
        "1.5",
        "2147483648",
        "\"\"",
        "\"x\\ny\"",
        "[]",
        "{}",
        "[null]",
        "{\"a\":1}",
        "[[[[[[]]]]]]",
        "\"\\u00e9\"",
    ];

    /// Replace a random value somewhere in `value` by one of [`VALUES`].
    fn replace_somewhere(value: &mut serde_json::Value, rng: &mut Rng, depth: usize) {
        use serde_json::Value;
        let stop = depth > 0 && rng.below(4) == 0;
        match value {
            Value::Object(map) if !map.is_empty() && !stop => {
                let key = map.keys().nth(rng.below(map.len())).unwrap().clone();
                replace_somewhere(map.get_mut(&key).unwrap(), rng, depth + 1);
            }
            Value::Array(items) if !items.is_empty() && !stop => {
                let at = rng.below(items.len());
                replace_somewhere(&mut items[at], rng, depth + 1);
            }
            _ => *value = serde_json::from_str(VALUES[rng.below(VALUES.len())]).unwrap(),
        }
    }

    /// Random edits of the captured reviews, byte by byte and value by value: wherever the
    /// fast path answers, serde answers the same. Both kinds of answer must be common, or the
    /// test would not be testing much. `FAST_DECODE_ROUNDS=N FAST_DECODE_SEED=S` runs longer
    /// or other rounds (`cargo test --release --lib mutated_reviews`).
    #[test]
    fn mutated_reviews_read_as_with_serde_whenever_the_fast_path_answers() {
        let setting = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let seed = setting("FAST_DECODE_SEED", 0);
        let mut rng =
            Rng((0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D)).max(1));
        let seeds = seeds();
        let (mut fast, mut gave_up) = (0, 0);
        for round in 0..setting("FAST_DECODE_ROUNDS", 6000) as usize {
            let seed = &seeds[round % seeds.len()];
            let text = if round % 2 == 0 {
                let mut bytes = seed.as_bytes().to_vec();
                for _ in 0..=rng.below(2) {
                    let at = rng.below(bytes.len() + 1);
                    let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                    match rng.below(3) {
                        0 if at < bytes.len() => {
                            bytes.remove(at);
                        }
                        1 if at < bytes.len() => {
                            bytes.splice(at..at + 1, token.iter().copied());
                        }
                        _ => {
                            bytes.splice(at..at, token.iter().copied());
                        }
                    }
                }
                match String::from_utf8(bytes) {
                    Ok(text) => text,
                    Err(_) => continue,
                }
            } else {
                let mut value: serde_json::Value = serde_json::from_str(seed).unwrap();
                for _ in 0..=rng.below(2) {
                    replace_somewhere(&mut value, &mut rng, 0);
                }
                serde_json::to_string(&value).unwrap()
            };
            if check(&text) {
                fast += 1;
            } else {
                gave_up += 1;
            }
        }
        eprintln!("fast path {fast}, gave up {gave_up}");
        assert!(
            fast > 1000 && gave_up > 1000,
            "fast {fast}, gave up {gave_up}"
        );
    }
}
