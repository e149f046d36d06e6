//! Helpers for the server tests: certificates from the crate's own rcgen code, a server on
//! 127.0.0.1 with OS-chosen ports, and clients over real TLS sockets (rustls + hyper's client
//! connections, so each test controls ALPN, the TLS version and which connection is used).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube_baseline::certs::{Authority, ServingPair};
use kube_baseline::server::{Server, Settings};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// How long a test waits for something that should happen (a reload, a drain) before failing.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A captured AdmissionReview from `tests/data/apiserver/`.
pub fn captured(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/apiserver")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every captured review, by file name.
pub fn all_captured() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/apiserver");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(
        !names.is_empty(),
        "no captured reviews in {}",
        dir.display()
    );
    names
        .into_iter()
        .map(|n| (n.clone(), captured(&n)))
        .collect()
}

pub fn request_uid(review: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(review).unwrap();
    value["request"]["uid"].as_str().unwrap().to_owned()
}

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

pub fn issue(authority: &Authority) -> ServingPair {
    authority
        .issue(&["localhost".into()], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
        .unwrap()
}

pub fn write_pair(dir: &Path, pair: &ServingPair) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tls.crt"), &pair.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &pair.key_pem).unwrap();
}

pub fn der_of(pair: &ServingPair) -> CertificateDer<'static> {
    rustls_pemfile::certs(&mut pair.cert_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
}

/// A running server with its certificate directory and CA.
pub struct TestServer {
    pub server: Server,
    pub authority: Authority,
    pub serving: ServingPair,
    /// Holds the certificate files for the server's lifetime.
    pub _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Start with the defaults on loopback, after `adjust` edits the settings.
    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::new().unwrap();
        let serving = issue(&authority);
        write_pair(dir.path(), &serving);
        let mut settings =
            Settings::new(dir.path().join("tls.crt"), dir.path().join("tls.key")).loopback();
        adjust(&mut settings);
        let server = Server::start(settings).await.unwrap();
        Self {
            server,
            authority,
            serving,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.webhook_addr
    }

    pub fn client(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        client_config(&self.authority.cert_pem(), alpn, &[])
    }
}

/// A rustls client that trusts `ca_pem`, offers `alpn`, and speaks `versions` (all when
/// empty).
pub fn client_config(
    ca_pem: &str,
    alpn: &[&[u8]],
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let versions = if versions.is_empty() {
        rustls::ALL_VERSIONS
    } else {
        versions
    };
    let mut config = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

pub async fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsStream<TcpStream> {
    try_tls_connect(addr, config).await.unwrap()
}

pub async fn try_tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    TlsConnector::from(config).connect(name, tcp).await
}

/// The leaf certificate a TLS connection was served with.
pub fn peer_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// One client connection, HTTP/1.1 or HTTP/2.
pub enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Body>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

/// What a request got back.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub version: Version,
    pub content_type: String,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Conn {
    /// HTTP over an established TLS stream, by the protocol ALPN chose (HTTP/1.1 without).
    pub async fn over(stream: TlsStream<TcpStream>) -> Self {
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Conn::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Conn::H1(sender)
        }
    }

    pub async fn open(addr: SocketAddr, config: Arc<ClientConfig>) -> Self {
        Self::over(tls_connect(addr, config).await).await
    }

    pub async fn send(&mut self, request: Request<Body>) -> Result<Answer, hyper::Error> {
        let response = match self {
            Conn::H1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Conn::H2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
        };
        let status = response.status();
        let version = response.version();
        let content_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            version,
            content_type,
            body,
        })
    }

    /// POST a body with a Content-Type.
    pub async fn post(&mut self, path: &str, content_type: &str, body: Body) -> Answer {
        let request = post_request(path, content_type, body, self.is_h2());
        self.send(request).await.unwrap()
    }

    pub async fn post_review(&mut self, path: &str, review: &[u8]) -> Answer {
        self.post(path, "application/json", full(review.to_vec()))
            .await
    }

    pub fn is_h2(&self) -> bool {
        matches!(self, Conn::H2(_))
    }
}

pub fn post_request(path: &str, content_type: &str, body: Body, h2: bool) -> Request<Body> {
    let mut builder = Request::post(if h2 {
        format!("https://127.0.0.1{path}")
    } else {
        path.to_owned()
    });
    if !h2 {
        builder = builder.header(hyper::header::HOST, "127.0.0.1");
    }
    if !content_type.is_empty() {
        builder = builder.header(hyper::header::CONTENT_TYPE, content_type);
    }
    builder.body(body).unwrap()
}

/// GET on the ops port (plain HTTP/1.1).
pub async fn ops_get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get(path)
        .header(hyper::header::HOST, "127.0.0.1")
        .body(full(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Wait until `check` is true, failing the test after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "gave up waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The value of one series in a Prometheus text exposition.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}
