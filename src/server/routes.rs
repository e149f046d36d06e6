//! `POST /validate` and `POST /mutate`: body in, AdmissionReview out.
//!
//! One HTTP contract: a review that is read gets HTTP 200 with an AdmissionReview, whatever the
//! verdict. A body that is not a v1 AdmissionReview gets 400, a body over the limit 413, a
//! Content-Type other than `application/json` 415, and a review that cannot be answered
//! before the API server's deadline 504; each with a JSON `metav1.Status` body whose
//! `message` says what is wrong (the API server quotes it in its error). A non-200 makes the
//! API server apply the webhook's `failurePolicy`.

use std::borrow::Cow;
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};

use super::deadline::Deadline;
use super::json_log::DecisionLine;
use super::AppState;
use crate::admission::review::Review;
use crate::admission::{self, AdmissionRequest, Decision, DecodeError};
use crate::metrics::{Endpoint, ErrorReason, InFlight};
use crate::workload::Workload;

/// The webhook routes, on the TLS port.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .with_state(state)
}

/// The load bench's reference (`serve --reference-noop`): the same routes, TLS, body limit,
/// decode and encode as [`router`], but every readable review is answered `allowed: true`
/// with no evaluation, metrics or decision log. What the stack costs by itself.
///
/// With a non-zero `busy`, each decoded review also busy-waits that long on its worker
/// thread before the answer (`serve --reference-busy-ns`): the load bench's calibration of
/// what a given amount of work per review costs in its figures.
pub fn reference_noop_router(state: AppState, busy: Duration) -> Router {
    let handler = move |State(state): State<AppState>, request: Request| {
        let (parts, body) = request.into_parts();
        noop(state, parts.headers, body, busy)
    };
    Router::new()
        .route("/validate", post(handler))
        .route("/mutate", post(handler))
        .with_state(state)
}

async fn noop(state: AppState, headers: HeaderMap, body: Body, busy: Duration) -> Response {
    let read = read_body(&state, &headers, body).await;
    match read.and_then(|bytes| Ok(admission::review::decode_envelope(&bytes)?)) {
        Ok(request) => {
            busy_wait(busy);
            answer(&admission::AdmissionResponse::allow(request.uid).review())
        }
        Err(problem) => error_response(&problem),
    }
}

/// Keeps the thread busy for `time` (nothing when zero), as work of that length would.
fn busy_wait(time: Duration) {
    if time.is_zero() {
        return;
    }
    let until = Instant::now() + time;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// The `timeout` query parameter the API server adds (`?timeout=10s`); `None` when absent or
/// given twice.
fn timeout_parameter(uri: &Uri) -> Option<Cow<'_, str>> {
    let query = uri.query()?;
    // The API server's form, `timeout=10s` alone: nothing to decode.
    if let Some(value) = query.strip_prefix("timeout=") {
        if value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.')
        {
            return Some(Cow::Borrowed(value));
        }
    }
    let mut timeouts = form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == "timeout")
        .map(|(_, value)| value);
    let timeout = timeouts.next()?;
    timeouts.next().is_none().then_some(timeout)
}

// The handlers take the whole request and split it: axum's `Uri` and `HeaderMap` extractors
// clone them out of it (~300 instructions a review).
async fn validate(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    review(state, Endpoint::Validate, &parts.uri, &parts.headers, body).await
}

async fn mutate(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    review(state, Endpoint::Mutate, &parts.uri, &parts.headers, body).await
}

/// Why a review got no AdmissionReview.
#[derive(Debug, thiserror::Error)]
enum Problem {
    #[error("Content-Type must be application/json, got {0:?}")]
    ContentType(String),
    #[error("request body is larger than the limit of {limit} bytes (--max-body-bytes)")]
    TooLarge { limit: usize },
    #[error("request body could not be read: {0}")]
    Unreadable(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    DeadlineExceeded(String),
}

impl Problem {
    fn status(&self) -> StatusCode {
        match self {
            Problem::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Problem::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Problem::Unreadable(_) | Problem::Decode(_) => StatusCode::BAD_REQUEST,
            Problem::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn reason(&self) -> ErrorReason {
        match self {
            Problem::TooLarge { .. } => ErrorReason::TooLarge,
            Problem::DeadlineExceeded(_) => ErrorReason::DeadlineExceeded,
            Problem::ContentType(_) | Problem::Unreadable(_) | Problem::Decode(_) => {
                ErrorReason::BadRequest
            }
        }
    }

    /// The `reason` of the `metav1.Status` body, as the API server names it.
    fn status_reason(&self) -> &'static str {
        match self {
            Problem::ContentType(_) => "UnsupportedMediaType",
            Problem::TooLarge { .. } => "RequestEntityTooLarge",
            Problem::Unreadable(_) | Problem::Decode(_) => "BadRequest",
            Problem::DeadlineExceeded(_) => "Timeout",
        }
    }
}

/// The body of an HTTP error: a `metav1.Status`, which the API server's client decodes and
/// quotes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorStatus {
    pub kind: String,
    pub api_version: String,
    pub status: String,
    pub message: String,
    pub reason: String,
    pub code: u16,
}

fn error_response(problem: &Problem) -> Response {
    let status = problem.status();
    let body = ErrorStatus {
        kind: "Status".into(),
        api_version: "v1".into(),
        status: "Failure".into(),
        message: problem.to_string(),
        reason: problem.status_reason().into(),
        code: status.as_u16(),
    };
    (status, Json(body)).into_response()
}

/// Read, decode, evaluate and answer one review, within the API server's deadline.
async fn review(
    state: AppState,
    endpoint: Endpoint,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let _in_flight = InFlight::start(&state.metrics);
    let deadline = Deadline::from_query(
        timeout_parameter(uri).as_deref(),
        state.limits.deadline_margin,
    );
    let until = tokio::time::Instant::from_std(started) + deadline.budget;

    // A small body has usually arrived with the headers: then it is read without arming a
    // timer. Only a body still on its way is read under the deadline.
    let mut reading = std::pin::pin!(read_body(&state, headers, body));
    let read = match futures::poll!(reading.as_mut()) {
        Poll::Ready(read) => Ok(read),
        // Boxed, as the signature check below: the timer is only paid for when it is used,
        // and the review's future (moved into a task per HTTP/2 stream) stays small.
        Poll::Pending => Box::pin(tokio::time::timeout_at(until, reading)).await,
    };
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(problem)) => return refuse(&state, endpoint, None, problem, started),
        Err(_) => {
            let problem = deadline_exceeded(&deadline, "reading the request body");
            return refuse(&state, endpoint, None, problem, started);
        }
    };
    // The workload's strings are slices of `bytes` where they have no escapes.
    let Review { request, workload } = match admission::review::decode_review(&bytes) {
        Ok(review) => review,
        Err(error) => return refuse(&state, endpoint, None, error.into(), started),
    };
    let decision = match evaluate(&state, endpoint, &request, workload, until).await {
        Ok(decision) => decision,
        Err(OutOfTime) => {
            let problem = deadline_exceeded(&deadline, "evaluating the review");
            return refuse(&state, endpoint, Some(&request), problem, started);
        }
    };

    let elapsed = started.elapsed();
    state
        .metrics
        .record_decision(endpoint, &request, &decision, elapsed);
    log_decision(endpoint, &request, &decision, elapsed);
    answer(&decision.response.review())
}

/// HTTP 200 with the AdmissionReview
/// ([`to_json`](admission::review::AdmissionReviewResponse::to_json): axum's `Json` writes
/// through serde_json and an `io::Write` adapter over `BytesMut`, a call per token).
fn answer(review: &admission::review::AdmissionReviewResponse) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        review.to_json(),
    )
        .into_response()
}

fn deadline_exceeded(deadline: &Deadline, during: &str) -> Problem {
    Problem::DeadlineExceeded(format!(
        "kube-baseline ran out of time {during}: the API server's timeout is {:?} and \
         kube-baseline answers {:?} before it (--deadline-margin); the webhook's \
         failurePolicy applies",
        deadline.timeout, deadline.margin
    ))
}

/// The body of a review, once its Content-Type and size are checked.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, Problem> {
    // Compared as bytes: a String of the header is made only for the error.
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map_or(&b""[..], |v| v.as_bytes());
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if !essence.eq_ignore_ascii_case(b"application/json") {
        let content_type = String::from_utf8_lossy(content_type).into_owned();
        return Err(Problem::ContentType(content_type));
    }
    let limit = state.limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Problem::TooLarge { limit });
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(Problem::TooLarge { limit })
        }
        Err(error) => return Err(Problem::Unreadable(error.to_string())),
    };
    Ok(bytes)
}

/// Time kept for answering after the signature check gives up on a registry.
const SIGNATURE_MARGIN: std::time::Duration = std::time::Duration::from_millis(200);

/// The review's deadline passed while waiting for a registry.
#[derive(Debug)]
struct OutOfTime;

/// The evaluation step. The policies are synchronous and take microseconds; only the
/// signature check waits (for registries), and only it is bounded by the deadline, so a
/// review that calls no registry sets no timer. The snapshot is held for the whole review,
/// so a reload mid-review does not mix policies.
async fn evaluate(
    state: &AppState,
    endpoint: Endpoint,
    request: &AdmissionRequest,
    decoded: Option<Box<Workload<'_>>>,
    until: tokio::time::Instant,
) -> Result<Decision, OutOfTime> {
    use admission::{mutate, validate};
    let snapshot = state.snapshot.load_full();
    let now = validate::Now::clock();
    // The namespace's exclusion and modes, looked up once for the whole review.
    let rules = validate::rules_of(&snapshot, request);
    // Only the workload's box is kept across the signature check, not the `Prepared` it came
    // in (as wide as a `Decision`), which ends with this block: the review's future is
    // smaller by that much.
    let workload = {
        let prepared = match endpoint {
            Endpoint::Validate => validate::prepare(&snapshot, request, &rules, decoded, &now),
            Endpoint::Mutate => mutate::prepare(request, &rules, decoded),
        };
        match prepared {
            validate::Prepared::Decided(decision) => return Ok(decision),
            validate::Prepared::Workload(workload) => workload,
        }
    };
    let report = signatures(state, &rules, &workload, until).await?;
    Ok(match endpoint {
        Endpoint::Validate => {
            validate::finish(&snapshot, request, &rules, &workload, report.findings, &now)
        }
        Endpoint::Mutate => mutate::finish(&snapshot, request, &rules, &workload, report.patch),
    })
}

/// Verify the workload's images when `image-signature` is on for its namespace: registry
/// calls (usually a cache hit) that must end before the review's deadline.
async fn signatures(
    state: &AppState,
    rules: &crate::config::NamespaceRules,
    workload: &crate::workload::Workload<'_>,
    until: tokio::time::Instant,
) -> Result<crate::signature::SignatureReport, OutOfTime> {
    match &state.verifier {
        Some(verifier)
            if rules.modes.get(crate::policy::PolicyId::ImageSignature)
                != crate::config::Mode::Off =>
        {
            let deadline = until
                .checked_sub(SIGNATURE_MARGIN)
                .unwrap_or(until)
                .max(tokio::time::Instant::now());
            // Boxed with its timer: the verifier's future is large, and held inline it would
            // make every review's future (moved into a task per HTTP/2 stream) that much
            // larger, even where signatures are off.
            Box::pin(tokio::time::timeout_at(
                until,
                verifier.check_workload(workload, deadline),
            ))
            .await
            .map_err(|_| OutOfTime)
        }
        _ => Ok(crate::signature::SignatureReport::default()),
    }
}

/// Out of line and cold: a review that is answered normally runs none of it.
#[cold]
#[inline(never)]
fn refuse(
    state: &AppState,
    endpoint: Endpoint,
    request: Option<&AdmissionRequest>,
    problem: Problem,
    started: Instant,
) -> Response {
    let elapsed = started.elapsed();
    state
        .metrics
        .record_error(endpoint, problem.reason(), elapsed);
    tracing::warn!(
        endpoint = endpoint.as_str(),
        uid = request.map_or("", |r| r.uid.as_str()),
        status = problem.status().as_u16(),
        reason = problem.reason().as_str(),
        error = %problem,
        latency_us = micros(elapsed),
        "review refused"
    );
    error_response(&problem)
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// The one decision line per review. Never the object's contents.
fn log_decision(
    endpoint: Endpoint,
    request: &AdmissionRequest,
    decision: &Decision,
    elapsed: Duration,
) {
    if !DecisionLine::enabled() {
        return;
    }
    let mut adrs: Vec<&str> = decision
        .waivers
        .iter()
        .map(|(adr, _)| adr.as_str())
        .collect();
    adrs.sort_unstable();
    adrs.dedup();
    let line = DecisionLine {
        endpoint,
        uid: &request.uid,
        kind: &request.kind.kind,
        namespace: request.namespace.as_deref().unwrap_or(""),
        name: request.name.as_deref().unwrap_or(""),
        operation: request.operation,
        user: &request.user_info.username,
        dry_run: request.dry_run.unwrap_or(false),
        verdict: decision.verdict,
        denied: &decision.denied_by,
        warned: &decision.warned_by,
        adrs: &adrs,
        mutations: &decision.mutations,
        latency_us: micros(elapsed),
    };
    line.log();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::server::Limits;
    use tower::ServiceExt;

    fn state() -> AppState {
        AppState::new(Config::embedded(), Limits::default())
    }

    #[test]
    fn the_timeout_parameter_is_read_from_the_query() {
        let timeout = |uri: &str| timeout_parameter(&uri.parse().unwrap()).map(Cow::into_owned);
        assert_eq!(timeout("/validate?timeout=10s").as_deref(), Some("10s"));
        assert_eq!(
            timeout("/validate?a=b&timeout=1m30s&c").as_deref(),
            Some("1m30s")
        );
        assert_eq!(timeout("/validate?timeout=1%2E5s").as_deref(), Some("1.5s"));
        assert_eq!(timeout("/validate?timeout=1.5s").as_deref(), Some("1.5s"));
        assert_eq!(timeout("/validate?timeout=2s&x=y").as_deref(), Some("2s"));
        assert_eq!(timeout("/validate?timeout=2s+").as_deref(), Some("2s "));
        assert_eq!(timeout("/validate?timeout=").as_deref(), Some(""));
        assert_eq!(timeout("/validate"), None);
        assert_eq!(timeout("/validate?timeouts=1s"), None);
        // Given twice: which one the API server meant is unknown, so the default applies.
        assert_eq!(timeout("/validate?timeout=1s&timeout=2s"), None);
    }

    async fn post(path: &str, content_type: &str, body: &'static [u8]) -> (StatusCode, String) {
        let request = axum::http::Request::post(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        let response = router(state()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_captured_review_is_answered_with_its_uid() {
        let body = include_bytes!("../../tests/data/apiserver/create-deployment-validate.json");
        let (status, text) = post("/validate?timeout=10s", "application/json", body).await;
        assert_eq!(status, StatusCode::OK);
        let review: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(review["kind"], "AdmissionReview");
        assert_eq!(
            review["response"]["uid"],
            "5ea659de-4648-4686-b7b3-8befc8e71695"
        );
    }

    #[tokio::test]
    async fn without_the_direct_writer_the_decision_line_goes_through_tracing() {
        // `serve --log-format pretty` and tests have no direct writer for the line.
        let captured = crate::server::json_log::tests::Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(captured.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let body = include_bytes!("../../tests/data/apiserver/create-deployment-validate.json");
        let (status, _) = post("/validate?timeout=10s", "application/json", body).await;
        assert_eq!(status, StatusCode::OK);
        let logs = captured.text();
        let line = logs
            .lines()
            .find(|line| line.contains("decision"))
            .unwrap_or_else(|| panic!("no decision line in {logs:?}"));
        assert!(line.contains("kube_baseline::server::routes"), "{line}");
        assert!(
            line.contains("uid=\"5ea659de-4648-4686-b7b3-8befc8e71695\""),
            "{line}"
        );
        assert!(line.contains("verdict=\"allowed\""), "{line}");
        assert!(line.contains("dry_run=false"), "{line}");
    }

    #[tokio::test]
    async fn the_reference_noop_allows_what_the_webhook_denies_and_busy_waits_as_told() {
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0a1b", "operation": "CREATE", "namespace": "shop",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "userInfo": {"username": "dev"},
                "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"},
                           "spec": {"containers": [{"name": "app", "image": "app:1"}]}}
            }
        })
        .to_string();
        let answer = |app: Router| {
            let review = review.clone();
            async move {
                let request = axum::http::Request::post("/validate?timeout=10s")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(review))
                    .unwrap();
                let response = app.oneshot(request).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(value["response"]["uid"], "0a1b");
                value["response"]["allowed"].as_bool().unwrap()
            }
        };
        assert!(
            !answer(router(state())).await,
            "the webhook denies a bare Pod"
        );
        assert!(answer(reference_noop_router(state(), Duration::ZERO)).await);
        let busy = Duration::from_millis(30);
        let started = Instant::now();
        assert!(answer(reference_noop_router(state(), busy)).await);
        assert!(
            started.elapsed() >= busy,
            "answered before the busy-wait ended"
        );
    }

    #[tokio::test]
    async fn errors_are_a_status_naming_the_problem() {
        let (status, text) = post("/mutate", "application/json; charset=utf-8", b"{").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let body: ErrorStatus = serde_json::from_str(&text).unwrap();
        assert_eq!(body.kind, "Status");
        assert_eq!(body.code, 400);
        assert!(
            body.message.starts_with("request body is not valid JSON"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_media_type_is_compared_without_case_parameters_or_spaces() {
        for accepted in ["Application/JSON", " application/json ; charset=utf-8"] {
            let (status, text) = post("/validate", accepted, b"{").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{accepted}: {text}");
        }
        for refused in ["application/jsonx", "text/plain; application/json", ""] {
            let (status, text) = post("/validate", refused, b"{}").await;
            assert_eq!(
                status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{refused}: {text}"
            );
            let body: ErrorStatus = serde_json::from_str(&text).unwrap();
            let expected = format!("Content-Type must be application/json, got {refused:?}");
            assert_eq!(body.message, expected);
        }
    }
}
