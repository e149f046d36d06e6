//! Calls to OCI registries: one client, a bound on calls in flight, a deadline per call, a
//! latency histogram per registry, and errors sorted into what a denial must say.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use tokio::sync::Semaphore;
use tokio::time::{timeout_at, Instant};

use super::credentials::Credentials;
use super::metrics::{RegistryLabel, SignatureMetrics};
use super::{Result, SignatureError};
use crate::config::ImageSignature;

/// Why a registry call failed, as a denial must tell it.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// 404: no such repository, tag or digest.
    NotFound(String),
    /// Connection refused, TLS failure, timeout, 5xx, 429: not the developer's fault.
    Unreachable(String),
    /// Anything else (access denied, unexpected answers).
    Other(String),
}

pub(crate) struct Registries {
    client: oci_client::Client,
    /// The same settings, for the sigstore crate's own client.
    pub sigstore_config: sigstore::registry::ClientConfig,
    credentials: Credentials,
    timeout: Duration,
    permits: Arc<Semaphore>,
    metrics: SignatureMetrics,
}

fn read_ca(field: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    let pem = std::fs::read(path).map_err(|source| SignatureError::Read {
        field: field.to_owned(),
        path: path.display().to_string(),
        source,
    })?;
    let mut reader = std::io::BufReader::new(pem.as_slice());
    let certs: Vec<_> = rustls_pemfile::certs(&mut reader)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| SignatureError::Invalid {
            field: field.to_owned(),
            message: format!("{}: not PEM: {e}", path.display()),
        })?;
    if certs.is_empty() {
        return Err(SignatureError::Invalid {
            field: field.to_owned(),
            message: format!("{}: no certificate in the file", path.display()),
        });
    }
    Ok(pem)
}

impl Registries {
    pub fn new(config: &ImageSignature, metrics: SignatureMetrics) -> Result<Self> {
        let insecure: Vec<String> = config
            .registries
            .iter()
            .filter(|(_, o)| o.insecure)
            .map(|(h, _)| h.clone())
            .collect();
        let mut cas = Vec::new();
        for (host, options) in &config.registries {
            if let Some(path) = &options.ca_path {
                let field = format!("policies.image-signature.registries.{host:?}.caPath");
                cas.push(read_ca(&field, path)?);
            }
        }
        let credentials = match &config.credentials_path {
            None => Credentials::default(),
            Some(path) => {
                let field = "policies.image-signature.credentialsPath";
                let text =
                    std::fs::read_to_string(path).map_err(|source| SignatureError::Read {
                        field: field.into(),
                        path: path.display().to_string(),
                        source,
                    })?;
                Credentials::parse(&text).map_err(|message| SignatureError::Invalid {
                    field: field.into(),
                    message: format!("{}: {message}", path.display()),
                })?
            }
        };
        let protocol = if insecure.is_empty() {
            oci_client::client::ClientProtocol::Https
        } else {
            oci_client::client::ClientProtocol::HttpsExcept(insecure.clone())
        };
        let client = oci_client::Client::new(oci_client::client::ClientConfig {
            protocol,
            extra_root_certificates: cas
                .iter()
                .map(|pem| oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            connect_timeout: Some(config.timeout.0),
            read_timeout: Some(config.timeout.0),
            // An image index is verified as such: never pick a platform's manifest.
            platform_resolver: None,
            ..Default::default()
        });
        let sigstore_config = sigstore::registry::ClientConfig {
            protocol: if insecure.is_empty() {
                sigstore::registry::ClientProtocol::Https
            } else {
                sigstore::registry::ClientProtocol::HttpsExcept(insecure)
            },
            extra_root_certificates: cas
                .into_iter()
                .map(|data| sigstore::registry::Certificate {
                    encoding: sigstore::registry::CertificateEncoding::Pem,
                    data,
                })
                .collect(),
            ..Default::default()
        };
        Ok(Self {
            client,
            sigstore_config,
            credentials,
            timeout: config.timeout.0,
            permits: Arc::new(Semaphore::new(config.max_concurrent_registry_calls)),
            metrics,
        })
    }

    pub fn auth(&self, registry: &str) -> RegistryAuth {
        self.credentials.for_registry(registry)
    }

    /// Run one registry call under a permit and `min(now + timeout, deadline)`.
    pub async fn call<T, E, F>(
        &self,
        registry: &str,
        deadline: Instant,
        classify: impl FnOnce(E) -> Failure,
        call: F,
    ) -> std::result::Result<T, Failure>
    where
        F: Future<Output = std::result::Result<T, E>>,
    {
        let own = Instant::now() + self.timeout;
        let limit = own.min(deadline);
        let late = |what: &str| {
            if own <= deadline {
                Failure::Unreachable(format!(
                    "{what} within the {}s registry timeout",
                    self.timeout.as_secs_f64()
                ))
            } else {
                Failure::Unreachable(format!("{what} before the review's deadline"))
            }
        };
        let _permit = match timeout_at(limit, self.permits.acquire()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(Failure::Other("verifier shut down".into())),
            Err(_) => {
                return Err(late(
                    "no free registry call slot (maxConcurrentRegistryCalls)",
                ))
            }
        };
        let start = Instant::now();
        let out = timeout_at(limit, call).await;
        self.metrics
            .registry_duration
            .get_or_create(&RegistryLabel {
                registry: registry.to_owned(),
            })
            .observe(start.elapsed().as_secs_f64());
        match out {
            Err(_) => Err(late("no answer")),
            Ok(Err(e)) => Err(classify(e)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// `HEAD` a manifest: the digest of a tag, or whether a digest or signature tag exists.
    pub async fn manifest_digest(
        &self,
        reference: &Reference,
        deadline: Instant,
    ) -> std::result::Result<String, Failure> {
        let auth = self.auth(reference.registry());
        self.call(
            reference.registry(),
            deadline,
            classify,
            self.client.fetch_manifest_digest(reference, &auth),
        )
        .await
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Sort an oci-client error into what the denial says.
pub(crate) fn classify(e: OciDistributionError) -> Failure {
    match &e {
        OciDistributionError::ImageManifestNotFoundError(m) => Failure::NotFound(m.clone()),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let text = envelope
                .errors
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            }) {
                Failure::NotFound(text)
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
            {
                Failure::Unreachable(format!("rate limited by the registry: {text}"))
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                Failure::Other(format!(
                    "access denied by the registry ({text}): check credentialsPath"
                ))
            } else {
                Failure::Other(text)
            }
        }
        OciDistributionError::ServerError { code, message, .. } => match code {
            404 => Failure::NotFound(format!("404 {message}")),
            429 => Failure::Unreachable(format!("rate limited by the registry (429) {message}")),
            500..=599 => Failure::Unreachable(format!("registry error {code} {message}")),
            _ => Failure::Other(format!("registry answered {code} {message}")),
        },
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => Failure::Other(format!(
            "access denied by the registry ({}): check credentialsPath",
            chain(&e)
        )),
        OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => {
            Failure::Unreachable(chain(&e))
        }
        _ => Failure::Other(chain(&e)),
    }
}
