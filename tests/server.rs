//! The webhook server over real TLS sockets on 127.0.0.1, with rcgen certificates.
//!
//! There is no kube-apiserver here: the reviews it sends are the captured ones in
//! `tests/data/apiserver/` (kube-apiserver v1.32), posted the way it posts them
//! (`POST /validate?timeout=10s`, `Content-Type: application/json`, HTTP/2 when ALPN offers
//! it).

#[path = "server/support.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::{StatusCode, Version};
use kube_baseline::metrics::ResultLabels;
use kube_baseline::server::{Server, Settings};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEPLOYMENT: &str = "create-deployment-validate.json";

// ---------------------------------------------------------------- reviews, HTTP/1.1 and HTTP/2

#[tokio::test]
async fn every_captured_review_gets_its_uid_back_over_http1() {
    let ts = TestServer::start().await;
    let mut conn = Conn::open(ts.addr(), ts.client(&[b"http/1.1"])).await;
    for (name, review) in all_captured() {
        let answer = conn.post_review("/validate?timeout=10s", &review).await;
        assert_eq!(answer.status, StatusCode::OK, "{name}: {}", answer.text());
        assert_eq!(answer.version, Version::HTTP_11);
        let body = json(&answer.body);
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1", "{name}");
        assert_eq!(body["kind"], "AdmissionReview", "{name}");
        assert_eq!(body["response"]["uid"], request_uid(&review), "{name}");
    }
}

#[tokio::test]
async fn every_captured_review_gets_its_uid_back_over_http2_negotiated_by_alpn() {
    let ts = TestServer::start().await;
    // Offer both, as the API server does; the server must pick h2.
    let stream = tls_connect(ts.addr(), ts.client(&[b"h2", b"http/1.1"])).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut conn = Conn::over(stream).await;
    for (name, review) in all_captured() {
        for path in ["/validate?timeout=10s", "/mutate?timeout=10s"] {
            let answer = conn.post_review(path, &review).await;
            assert_eq!(
                answer.status,
                StatusCode::OK,
                "{name} {path}: {}",
                answer.text()
            );
            assert_eq!(answer.version, Version::HTTP_2);
            assert_eq!(
                json(&answer.body)["response"]["uid"],
                request_uid(&review),
                "{name} {path}"
            );
        }
    }
}

/// The server gathers HTTP/2 answers that are ready together into one write
/// (`server::coalesce`). Reviews in flight together on one connection must still each get
/// their own answer, whole: the same answer as when sent alone, with their own uid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_in_flight_together_on_one_http2_connection_get_the_answers_they_get_alone() {
    let ts = TestServer::start().await;
    // Each captured review's answer when sent alone, over HTTP/1.1.
    let mut alone = Conn::open(ts.addr(), ts.client(&[b"http/1.1"])).await;
    let mut expected = Vec::new();
    for (name, review) in all_captured() {
        let answer = json(&alone.post_review("/validate", &review).await.body);
        expected.push((name, review, answer["response"].clone()));
    }
    let Conn::H2(sender) = Conn::open(ts.addr(), ts.client(&[b"h2"])).await else {
        panic!("the server did not choose h2");
    };
    let mut in_flight = tokio::task::JoinSet::new();
    for copy in 0..8 {
        for (name, review, answer) in &expected {
            let mut review: serde_json::Value = json(review);
            let uid = format!("{name}-{copy}");
            review["request"]["uid"] = uid.clone().into();
            let mut expected = answer.clone();
            expected["uid"] = uid.into();
            let mut conn = Conn::H2(sender.clone());
            in_flight.spawn(async move {
                let body = serde_json::to_vec(&review).unwrap();
                let answer = conn.post_review("/validate", &body).await;
                (json(&answer.body)["response"].clone(), expected)
            });
        }
    }
    let mut answered = 0;
    while let Some(done) = in_flight.join_next().await {
        let (answer, expected) = done.unwrap();
        assert_eq!(answer, expected);
        answered += 1;
    }
    assert_eq!(answered, 8 * expected.len());
}

// ---------------------------------------------------------------- TLS versions, plain HTTP

#[tokio::test]
async fn tls_1_2_and_1_3_clients_are_served() {
    let ts = TestServer::start().await;
    let review = captured(DEPLOYMENT);
    for (version, name) in [
        (&rustls::version::TLS12, "TLS 1.2"),
        (&rustls::version::TLS13, "TLS 1.3"),
    ] {
        let config = client_config(&ts.authority.cert_pem(), &[b"h2"], &[version]);
        let stream = tls_connect(ts.addr(), config).await;
        assert_eq!(
            stream.get_ref().1.protocol_version(),
            Some(version.version),
            "{name}"
        );
        let answer = Conn::over(stream)
            .await
            .post_review("/validate", &review)
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{name}");
    }
}

/// rustls cannot speak TLS 1.1, so the client is a hand-written ClientHello record with
/// client_version 0x0302 (TLS 1.1) and no supported_versions extension; its suites, groups and
/// signature algorithms are ones the server has, so only the version is wrong (the same bytes
/// with 0x0303 get a ServerHello). The server must answer with a fatal `protocol_version`
/// alert.
#[tokio::test]
async fn a_tls_1_1_client_hello_is_refused_with_a_protocol_version_alert() {
    let ts = TestServer::start().await;
    let mut hello_body = vec![0x03, 0x02]; // client_version TLS 1.1
    hello_body.extend([0x5a; 32]); // random
    hello_body.push(0); // session id length
                        // Cipher suites: ECDHE-ECDSA/RSA AES-128-GCM (which the server has, so that only the
                        // version is wrong), then TLS 1.1's CBC suites.
    hello_body.extend([
        0x00, 0x0a, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x13, 0xc0, 0x09, 0x00, 0x2f,
    ]);
    hello_body.extend([0x01, 0x00]); // compression: null
    hello_body.extend([0x00, 0x16]); // extensions, 22 bytes:
    hello_body.extend([0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17]); // groups: P-256
    hello_body.extend([0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]); // EC point formats
    hello_body.extend([0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03]); // sig algs: ECDSA P-256
    let mut handshake = vec![0x01, 0x00, 0x00, hello_body.len() as u8]; // ClientHello
    handshake.extend(&hello_body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8]; // handshake record
    record.extend(&handshake);

    let mut tcp = TcpStream::connect(ts.addr()).await.unwrap();
    tcp.write_all(&record).await.unwrap();
    let reply = read_until_closed(&mut tcp).await;
    assert!(
        reply.len() >= 7,
        "expected an alert record, got {reply:02x?}"
    );
    assert_eq!(reply[0], 0x15, "not an alert record: {reply:02x?}");
    assert_eq!(reply[5], 2, "alert is not fatal: {reply:02x?}");
    assert_eq!(reply[6], 70, "alert is not protocol_version: {reply:02x?}");
    let metrics = &ts.server.state().metrics;
    eventually("the handshake failure is counted", || async {
        metrics.tls_handshake_failures.get() == 1
    })
    .await;
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_refused() {
    let ts = TestServer::start().await;
    let review = captured(DEPLOYMENT);
    let mut tcp = TcpStream::connect(ts.addr()).await.unwrap();
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        review.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let _ = tcp.write_all(&review).await;
    let reply = read_until_closed(&mut tcp).await;
    assert!(
        !reply.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {}",
        String::from_utf8_lossy(&reply)
    );
    let metrics = &ts.server.state().metrics;
    eventually("the handshake failure is counted", || async {
        metrics.tls_handshake_failures.get() == 1
    })
    .await;
}

/// Reads until the peer closes (or resets) the connection; fails after [`PATIENCE`].
async fn read_until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    let mut reply = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server did not close the connection");
    reply
}

// ---------------------------------------------------------------- certificate rotation

/// A Secret volume as the kubelet (and so cert-manager) lays it out: the files are symlinks
/// through `..data`, which is atomically renamed to point at a new timestamped directory.
struct SecretMount {
    dir: tempfile::TempDir,
    generation: u32,
}

impl SecretMount {
    fn new(cert_pem: &str, key_pem: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut mount = Self { dir, generation: 0 };
        mount.swap(cert_pem, key_pem);
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{file}"), mount.dir.path().join(file))
                .unwrap();
        }
        mount
    }

    /// Write a new generation and swap `..data` to it in one rename.
    fn swap(&mut self, cert_pem: &str, key_pem: &str) {
        self.generation += 1;
        let name = format!(
            "..2026_11_24_00_00_{:02}.{}",
            self.generation,
            1000 + self.generation
        );
        let target = self.dir.path().join(&name);
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("tls.crt"), cert_pem).unwrap();
        std::fs::write(target.join("tls.key"), key_pem).unwrap();
        let tmp = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
    }

    fn settings(&self) -> Settings {
        let mut settings = Settings::new(
            self.dir.path().join("tls.crt"),
            self.dir.path().join("tls.key"),
        )
        .loopback();
        // Long enough that only the directory watch can notice the swap during the test.
        settings.cert_recheck = Duration::from_secs(3600);
        settings
    }
}

#[tokio::test]
async fn a_data_symlink_swap_rotates_the_certificate_without_dropping_open_connections() {
    let authority = kube_baseline::certs::Authority::new().unwrap();
    let first = issue(&authority);
    let mut mount = SecretMount::new(&first.cert_pem, &first.key_pem);
    let server = Server::start(mount.settings()).await.unwrap();
    let addr = server.webhook_addr;
    let client = client_config(&authority.cert_pem(), &[b"h2"], &[]);
    let review = captured(DEPLOYMENT);

    // An HTTP/2 connection opened before the rotation.
    let stream = tls_connect(addr, client.clone()).await;
    assert_eq!(peer_leaf(&stream), der_of(&first));
    let mut open = Conn::over(stream).await;
    assert_eq!(
        open.post_review("/validate", &review).await.status,
        StatusCode::OK
    );

    let second = issue(&authority);
    mount.swap(&second.cert_pem, &second.key_pem);
    eventually("a new connection is served the new certificate", || async {
        peer_leaf(&tls_connect(addr, client.clone()).await) == der_of(&second)
    })
    .await;
    let answer = open.post_review("/validate", &review).await;
    assert_eq!(answer.status, StatusCode::OK, "the open connection broke");
    assert_eq!(json(&answer.body)["response"]["uid"], request_uid(&review));

    // An invalid replacement: a certificate with the key of another.
    let third = issue(&authority);
    let stranger = issue(&authority);
    mount.swap(&third.cert_pem, &stranger.key_pem);
    let metrics = server.state().metrics.clone();
    eventually("the bad pair is rejected", || async {
        let failures = metrics
            .certificate_reloads
            .get_or_create(&ResultLabels { result: "failure" })
            .get();
        failures == 1
    })
    .await;
    let stream = tls_connect(addr, client.clone()).await;
    assert_eq!(
        peer_leaf(&stream),
        der_of(&second),
        "the old pair stopped serving"
    );
    let answer = Conn::over(stream)
        .await
        .post_review("/validate", &review)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        open.post_review("/mutate", &review).await.status,
        StatusCode::OK
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------- bad input

const FOUR_MIB: usize = 4 * 1024 * 1024;

struct BadInput {
    case: &'static str,
    path: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    status: StatusCode,
    message: &'static str,
}

fn bad_inputs() -> Vec<BadInput> {
    let v1 = |rest: &str| {
        format!(r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"{rest}}}"#)
    };
    let case = |case, body: Vec<u8>, status, message| BadInput {
        case,
        path: "/validate?timeout=10s",
        content_type: "application/json",
        body,
        status,
        message,
    };
    vec![
        case("empty body", Vec::new(), StatusCode::BAD_REQUEST, "request body is empty"),
        case("not JSON", b"kind: AdmissionReview".to_vec(), StatusCode::BAD_REQUEST, "request body is not valid JSON"),
        case("JSON but not a review", br#"{"hello":"world"}"#.to_vec(), StatusCode::BAD_REQUEST, "expected kind AdmissionReview"),
        case(
            "v1beta1 review",
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"a","operation":"CREATE"}}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "unsupported apiVersion \"admission.k8s.io/v1beta1\"",
        ),
        case("missing request", v1("").into_bytes(), StatusCode::BAD_REQUEST, "AdmissionReview has no request"),
        case(
            "missing uid",
            v1(r#","request":{"operation":"CREATE"}"#).into_bytes(),
            StatusCode::BAD_REQUEST,
            "AdmissionReview request has no uid",
        ),
        case(
            "4 MiB body",
            vec![b' '; FOUR_MIB],
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body is larger than the limit of 3145728 bytes",
        ),
        BadInput {
            content_type: "text/plain",
            ..case(
                "wrong content type",
                captured(DEPLOYMENT),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json, got \"text/plain\"",
            )
        },
        BadInput {
            content_type: "",
            ..case(
                "no content type",
                captured(DEPLOYMENT),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            )
        },
    ]
}

fn assert_status_body(case: &str, answer: &Answer, status: StatusCode, message: &str) {
    assert_eq!(answer.status, status, "{case}: {}", answer.text());
    assert_eq!(answer.content_type, "application/json", "{case}");
    let body = json(&answer.body);
    assert_eq!(body["kind"], "Status", "{case}");
    assert_eq!(body["code"], status.as_u16(), "{case}");
    let got = body["message"].as_str().unwrap();
    assert!(
        got.contains(message),
        "{case}: message {got:?} lacks {message:?}"
    );
}

/// Every bad input gets its status and a `metav1.Status` body naming the problem, over
/// HTTP/1.1 and HTTP/2; and the server answers a good review afterwards.
#[tokio::test]
async fn bad_input_gets_the_documented_status_and_message_and_the_server_keeps_serving() {
    let ts = TestServer::start().await;
    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        for input in bad_inputs() {
            let mut conn = Conn::open(ts.addr(), ts.client(&[alpn])).await;
            let case = format!("{} ({})", input.case, String::from_utf8_lossy(alpn));
            let answer = if input.body.len() == FOUR_MIB && !conn.is_h2() {
                // HTTP/1.1: send only the head; the server must answer from Content-Length
                // alone, without waiting for the body.
                head_only_http1(&ts, input.path, FOUR_MIB).await
            } else {
                conn.post(input.path, input.content_type, full(input.body))
                    .await
            };
            assert_status_body(&case, &answer, input.status, input.message);
        }
        let mut conn = Conn::open(ts.addr(), ts.client(&[alpn])).await;
        let review = captured(DEPLOYMENT);
        let answer = conn.post_review("/validate", &review).await;
        assert_eq!(answer.status, StatusCode::OK, "after the bad inputs");
    }
    let metrics = &ts.server.state().metrics;
    assert_eq!(metrics.in_flight.get(), 0);
}

async fn head_only_http1(ts: &TestServer, path: &str, length: usize) -> Answer {
    let mut stream = tls_connect(ts.addr(), ts.client(&[b"http/1.1"])).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    read_http1_response(&mut stream).await
}

/// A body streamed over HTTP/2 without a length: the server stops reading at the limit.
#[tokio::test]
async fn an_oversized_body_streamed_over_http2_is_refused_at_the_limit() {
    let ts = TestServer::start().await;
    let mut conn = Conn::open(ts.addr(), ts.client(&[b"h2"])).await;
    let chunk = Bytes::from(vec![b' '; 64 * 1024]);
    let chunks = futures::stream::iter(0..FOUR_MIB / chunk.len())
        .map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone())));
    let body = BodyExt::boxed(StreamBody::new(chunks));
    let answer = conn.post("/validate", "application/json", body).await;
    assert_status_body(
        "streamed 4 MiB",
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "larger than the limit of 3145728 bytes",
    );
    let review = captured(DEPLOYMENT);
    let mut conn = Conn::open(ts.addr(), ts.client(&[b"h2"])).await;
    assert_eq!(
        conn.post_review("/validate", &review).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn wrong_paths_and_methods_get_404_and_405() {
    let ts = TestServer::start().await;
    let mut conn = Conn::open(ts.addr(), ts.client(&[b"h2"])).await;
    let review = captured(DEPLOYMENT);
    assert_eq!(
        conn.post_review("/admit", &review).await.status,
        StatusCode::NOT_FOUND
    );
    let get = hyper::Request::get("https://127.0.0.1/validate")
        .body(full(Bytes::new()))
        .unwrap();
    assert_eq!(
        conn.send(get).await.unwrap().status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

// ---------------------------------------------------------------- deadline

/// The API server waits `timeout`; the webhook answers `--deadline-margin` (capped at half)
/// before it. Here the body stops arriving halfway, so the review cannot be read in time:
/// the answer is 504 with a message, well before the client would give up.
#[tokio::test]
async fn a_review_that_cannot_finish_before_the_deadline_gets_504_with_a_message() {
    let ts = TestServer::start().await;
    let review = captured(DEPLOYMENT);
    let mut stream = tls_connect(ts.addr(), ts.client(&[b"http/1.1"])).await;
    let head = format!(
        "POST /validate?timeout=1s HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        review.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&review[..review.len() / 2]).await.unwrap();
    stream.flush().await.unwrap();
    let answer = read_http1_response(&mut stream).await;
    assert_status_body(
        "deadline",
        &answer,
        StatusCode::GATEWAY_TIMEOUT,
        "ran out of time reading the request body: the API server's timeout is 1s",
    );
    let text = kube_baseline::metrics::encode(&ts.server.state().registry);
    assert_eq!(
        sample(
            &text,
            r#"kube_baseline_admission_errors_total{endpoint="validate",reason="deadline_exceeded"}"#
        ),
        Some(1.0)
    );
}

/// A minimal HTTP/1.1 response reader: status line, headers, Content-Length body.
async fn read_http1_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let read = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    return (
                        head,
                        Bytes::copy_from_slice(&buf[end + 4..end + 4 + length]),
                    );
                }
            }
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "connection closed mid-response: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let (head, body) = read.expect("no complete response in time");
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    Answer {
        status: StatusCode::from_u16(status).unwrap(),
        version: Version::HTTP_11,
        content_type,
        body,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------- graceful shutdown

/// A review whose body is still arriving is in flight (no test hook: the client simply sends
/// the second half later). Shutdown starts while it is; readiness turns false, new
/// connections are refused, and the review still gets its answer before shutdown completes.
#[tokio::test]
async fn graceful_shutdown_drains_an_in_flight_review() {
    let ts = TestServer::start_with(|s| s.shutdown_grace = PATIENCE).await;
    let TestServer {
        server, authority, ..
    } = ts;
    let addr = server.webhook_addr;
    let ops = server.ops_addr;
    let state = server.state().clone();
    let review = captured(DEPLOYMENT);
    let (first_half, second_half) = review.split_at(review.len() / 2);

    let client = client_config(&authority.cert_pem(), &[b"http/1.1"], &[]);
    let mut stream = tls_connect(addr, client).await;
    let head = format!(
        "POST /validate?timeout=30s HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        review.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first_half).await.unwrap();
    stream.flush().await.unwrap();
    eventually("the review is in flight", || async {
        state.metrics.in_flight.get() == 1
    })
    .await;

    let shutdown = tokio::spawn(server.shutdown());
    eventually("readiness turns false", || async {
        ops_get(ops, "/health/ready").await.0 == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    eventually("new connections are refused", || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(
        !shutdown.is_finished(),
        "shutdown did not wait for the review"
    );

    stream.write_all(second_half).await.unwrap();
    stream.flush().await.unwrap();
    let answer = read_http1_response(&mut stream).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(json(&answer.body)["response"]["uid"], request_uid(&review));
    let outcome = tokio::time::timeout(PATIENCE, shutdown)
        .await
        .expect("shutdown did not finish after the drain")
        .unwrap();
    assert!(outcome.drained);
    assert!(
        TcpStream::connect(ops).await.is_err(),
        "ops port still open"
    );
}

// ---------------------------------------------------------------- metrics and health

#[tokio::test]
async fn metrics_expose_the_named_series_after_traffic() {
    let ts = TestServer::start().await;
    let mut conn = Conn::open(ts.addr(), ts.client(&[b"h2"])).await;
    let deployment = captured(DEPLOYMENT);
    let pod = captured("create-pod-validate.json");
    assert_eq!(
        conn.post_review("/validate", &deployment).await.status,
        StatusCode::OK
    );
    assert_eq!(
        conn.post_review("/mutate", &pod).await.status,
        StatusCode::OK
    );
    let bad = conn.post("/validate", "application/json", full("{")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let mut plain = TcpStream::connect(ts.addr()).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    read_until_closed(&mut plain).await;

    let ops = ts.server.ops_addr;
    eventually("the handshake failure shows", || async {
        let (_, text) = ops_get(ops, "/metrics").await;
        sample(&text, "kube_baseline_tls_handshake_failures_total") == Some(1.0)
    })
    .await;
    let (status, text) = ops_get(ops, "/metrics").await;
    assert_eq!(status, StatusCode::OK);

    let has_series = |prefix: &str| text.lines().any(|l| l.starts_with(prefix));
    for prefix in [
        r#"kube_baseline_admission_requests_total{endpoint="validate",operation="CREATE",kind="Deployment",verdict=""#,
        r#"kube_baseline_admission_requests_total{endpoint="mutate",operation="CREATE",kind="Pod",verdict=""#,
        r#"kube_baseline_admission_request_duration_seconds_bucket{le="0.0001",endpoint="validate"}"#,
        r#"kube_baseline_admission_request_duration_seconds_bucket{le="10.0",endpoint="validate"}"#,
        r#"kube_baseline_admission_request_duration_seconds_count{endpoint="mutate"}"#,
        r#"kube_baseline_policy_findings_total{policy="run-as-non-root",action="denied"}"#,
        r#"kube_baseline_mutations_total{policy="resource-limits"}"#,
    ] {
        assert!(has_series(prefix), "no series {prefix} in\n{text}");
    }
    let exact = [
        (
            r#"kube_baseline_admission_errors_total{endpoint="validate",reason="bad_request"}"#,
            1.0,
        ),
        (r#"kube_baseline_admission_requests_in_flight"#, 0.0),
        (
            r#"kube_baseline_certificate_reloads_total{result="success"}"#,
            0.0,
        ),
        (r#"kube_baseline_build_info{version="0.1.0"}"#, 1.0),
    ];
    for (series, value) in exact {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    let der = der_of(&ts.serving);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(
        sample(&text, "kube_baseline_certificate_expiry_timestamp_seconds"),
        Some(cert.validity().not_after.timestamp() as f64)
    );
}

#[tokio::test]
async fn readiness_is_503_until_the_exception_source_syncs_then_200() {
    let ts = TestServer::start_with(|s| s.await_exception_sync = true).await;
    let ops = ts.server.ops_addr;
    let (status, body) = ops_get(ops, "/health/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "not ready: exception source not synced\n");
    assert_eq!(ops_get(ops, "/health/live").await.0, StatusCode::OK);

    ts.server.state().health.set_exceptions_synced(true);
    assert_eq!(
        ops_get(ops, "/health/ready").await,
        (StatusCode::OK, "ready\n".into())
    );
}

#[tokio::test]
async fn start_fails_naming_a_missing_certificate_file() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    let settings = Settings::new(&cert, dir.path().join("tls.key")).loopback();
    let err = Server::start(settings).await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}: cannot read:", cert.display())),
        "{err}"
    );
}

// ---------------------------------------------------------------- the binary

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kube-baseline"));
    for (key, _) in std::env::vars() {
        if key.starts_with("KUBE_BASELINE_") {
            command.env_remove(key);
        }
    }
    command.env_remove("RUST_LOG");
    command
}

/// What one `serve --dev-certs` run printed: it answers one review, then gets SIGTERM.
struct OneReview {
    /// stdout, line by line.
    log: Vec<String>,
    stderr: String,
    exit: std::process::ExitStatus,
    ca: String,
    review: Vec<u8>,
}

/// `serve --dev-certs` from an empty directory, with `env` set, answering one Deployment
/// review over HTTP/2, stopped with SIGTERM.
async fn serve_one_review(env: &[(&str, &str)]) -> OneReview {
    let dir = tempfile::tempdir().unwrap();
    let mut child = binary()
        .current_dir(dir.path())
        .envs(env.iter().copied())
        .args([
            "serve",
            "--dev-certs",
            "--listen",
            "127.0.0.1:0",
            "--ops-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = lines_tx.send(line.unwrap());
        }
    });
    let mut log = Vec::new();
    let webhook: SocketAddr = loop {
        let line = lines_rx
            .recv_timeout(PATIENCE)
            .expect("no 'listening' log line");
        let entry = json(line.as_bytes());
        log.push(line);
        if entry["message"] == "listening" {
            break entry["webhook"].as_str().unwrap().parse().unwrap();
        }
    };

    let ca = std::fs::read_to_string(dir.path().join("certs/ca.crt")).unwrap();
    assert!(dir.path().join("certs/tls.crt").exists());
    assert!(dir.path().join("certs/tls.key").exists());
    let review = captured(DEPLOYMENT);
    let mut conn = Conn::open(webhook, client_config(&ca, &[b"h2"], &[])).await;
    let answer = conn.post_review("/validate?timeout=10s", &review).await;
    assert_eq!(answer.status, StatusCode::OK);
    drop(conn);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let exit = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        (exit, stderr)
    });
    let (exit, stderr) = tokio::time::timeout(PATIENCE, exit).await.unwrap().unwrap();
    reader.join().unwrap();
    log.extend(lines_rx.try_iter());
    OneReview {
        log,
        stderr,
        exit,
        ca,
        review,
    }
}

impl OneReview {
    /// The decision lines about the review it answered.
    fn decisions(&self) -> Vec<serde_json::Value> {
        let uid = request_uid(&self.review);
        self.log
            .iter()
            .map(|l| json(l.as_bytes()))
            .filter(|e| e["message"] == "decision" && e["uid"] == uid.as_str())
            .collect()
    }
}

/// `serve --dev-certs` from an empty directory: generates certs/, prints the CA and its
/// caBundle, answers a review, logs exactly one decision line for it (without the object's
/// contents), and exits 0 on SIGTERM.
#[tokio::test]
async fn serve_with_dev_certs_logs_one_decision_per_review_and_exits_zero_on_sigterm() {
    let run = serve_one_review(&[]).await;
    let (log, stderr, exit) = (&run.log, &run.stderr, run.exit);
    assert!(exit.success(), "exit {exit:?}; stderr: {stderr}");

    assert!(stderr.contains("CA certificate: certs/ca.crt"), "{stderr}");
    let bundle = base64_of(&run.ca);
    assert!(stderr.contains(&bundle), "caBundle not printed: {stderr}");

    let decisions = run.decisions();
    assert_eq!(decisions.len(), 1, "decision lines: {log:#?}");
    let decision = &decisions[0];
    assert_eq!(decision["kind"], "Deployment");
    assert_eq!(decision["namespace"], "shop");
    assert_eq!(decision["name"], "api");
    assert_eq!(decision["operation"], "CREATE");
    assert_eq!(decision["user"], "admin");
    assert_eq!(decision["endpoint"], "validate");
    assert_eq!(decision["level"], "INFO");
    assert_eq!(decision["target"], "kube_baseline::server::routes");
    assert!(decision["verdict"].is_string());
    assert!(decision["latency_us"].is_u64());
    let everything = log.join("\n");
    assert!(
        !everything.contains("registry.localplus.io/payments/api"),
        "the object's contents were logged"
    );
    assert!(log
        .iter()
        .any(|l| json(l.as_bytes())["message"] == "stopped"));
}

/// `RUST_LOG` silences the decision lines alone, as it silences any target, although they do
/// not go through tracing's formatter.
#[tokio::test]
async fn rust_log_can_turn_the_decision_lines_off() {
    let run = serve_one_review(&[("RUST_LOG", "info,kube_baseline::server::routes=warn")]).await;
    assert!(run.exit.success(), "stderr: {}", run.stderr);
    assert_eq!(run.decisions().len(), 0, "decision lines: {:#?}", run.log);
    assert!(run
        .log
        .iter()
        .any(|l| json(l.as_bytes())["message"] == "stopped"));
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn serve_exits_non_zero_naming_a_missing_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let output = binary()
        .current_dir(dir.path())
        .args([
            "serve",
            "--tls-cert",
            "missing.crt",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("missing.crt: cannot read: No such file"),
        "{stderr}"
    );
}

#[test]
fn serve_exits_non_zero_naming_the_bad_config_field() {
    let dir = tempfile::tempdir().unwrap();
    let generated = kube_baseline::certs::generate(&["localhost".into()], &[]).unwrap();
    kube_baseline::certs::write(&dir.path().join("certs"), &generated, false).unwrap();
    let embedded = kube_baseline::config::EMBEDDED;
    let bad = embedded.replacen("mode: enforce", "mode: enforced", 1);
    assert_ne!(bad, embedded);
    std::fs::write(dir.path().join("baseline.yaml"), bad).unwrap();
    let output = binary()
        .current_dir(dir.path())
        .args([
            "serve",
            "--config",
            "baseline.yaml",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--ops-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("baseline.yaml"), "{stderr}");
    assert!(stderr.contains("policies.run-as-non-root.mode"), "{stderr}");
}

#[test]
fn certs_writes_a_ca_and_a_serving_pair_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = || {
        binary()
            .args(["certs", "--out"])
            .arg(&out)
            .args([
                "--dns",
                "kube-baseline.kube-baseline.svc",
                "--ip",
                "10.0.0.1",
            ])
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let ca = std::fs::read_to_string(out.join("ca.crt")).unwrap();
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains(&base64_of(&ca)), "{stdout}");
    let cert = std::fs::read_to_string(out.join("tls.crt")).unwrap();
    let der = rustls_pemfile::certs(&mut cert.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let sans = format!(
        "{:?}",
        cert.subject_alternative_name().unwrap().unwrap().value
    );
    assert!(sans.contains("kube-baseline.kube-baseline.svc"), "{sans}");
    assert!(out.join("tls.key").exists());

    let second = run();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already exists"));
}
