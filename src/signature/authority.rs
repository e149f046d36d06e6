//! Who may sign: cosign public keys and keyless identities, compiled once at start-up.

use std::path::Path;

use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sigstore::cosign::bundle_content::BundleContent;
use sigstore::cosign::signature_layers::CertificateSubject;
use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraint};
use sigstore::cosign::SignatureLayer;
use sigstore::crypto::Signature;
use sigstore::trust::ManualTrustRoot;

use super::{Result, SignatureError};
use crate::config::SignatureAuthority;

/// A compiled authority. Any authority accepting any signature layer verifies the image
/// (policy-controller's semantics: OR within the policy).
#[derive(Debug)]
pub struct Authority {
    pub name: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Key(PublicKeyVerifier),
    Keyless {
        issuer: String,
        subject: Subject,
        /// Index of the trust root (the signature layers are fetched once per trust root).
        root: usize,
    },
}

#[derive(Debug)]
enum Subject {
    Exact(String),
    Regex(regex::Regex),
}

impl Subject {
    fn matches(&self, s: &str) -> bool {
        match self {
            Self::Exact(e) => e == s,
            Self::Regex(r) => r.is_match(s),
        }
    }
}

/// A Sigstore `trusted_root.json`, read offline: the Fulcio CA certificates and the Rekor
/// public keys (the only parts keyless cosign signatures need).
pub struct TrustRootFile {
    pub root: ManualTrustRoot<'static>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrustedRootJson {
    #[serde(default)]
    tlogs: Vec<Tlog>,
    #[serde(default)]
    certificate_authorities: Vec<CertificateAuthority>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tlog {
    public_key: RawBytes,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CertificateAuthority {
    cert_chain: CertChain,
}

#[derive(Deserialize)]
struct CertChain {
    certificates: Vec<RawBytes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytes {
    raw_bytes: String,
}

/// The id Rekor bundles use for a log key: hex SHA-256 of its DER public key.
pub(crate) fn rekor_key_id(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

impl TrustRootFile {
    /// Parse the JSON text; errors say which part is wrong.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let json: TrustedRootJson = serde_json::from_str(text)
            .map_err(|e| format!("not a Sigstore trusted_root.json: {e}"))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut root = ManualTrustRoot::default();
        for (i, ca) in json.certificate_authorities.iter().enumerate() {
            for (j, cert) in ca.cert_chain.certificates.iter().enumerate() {
                let der = b64.decode(&cert.raw_bytes).map_err(|_| {
                    format!("certificateAuthorities[{i}].certChain.certificates[{j}].rawBytes: not base64")
                })?;
                x509_parser::parse_x509_certificate(&der).map_err(|e| {
                    format!("certificateAuthorities[{i}].certChain.certificates[{j}]: not a certificate: {e}")
                })?;
                root.fulcio_certs.push(der.into());
            }
        }
        for (i, tlog) in json.tlogs.iter().enumerate() {
            let der = b64
                .decode(&tlog.public_key.raw_bytes)
                .map_err(|_| format!("tlogs[{i}].publicKey.rawBytes: not base64"))?;
            sigstore::crypto::CosignVerificationKey::try_from_der(&der)
                .map_err(|e| format!("tlogs[{i}].publicKey: not a public key: {e}"))?;
            root.rekor_keys.insert(rekor_key_id(&der), der);
        }
        if root.fulcio_certs.is_empty() {
            return Err("certificateAuthorities: no Fulcio certificate".into());
        }
        if root.rekor_keys.is_empty() {
            return Err(
                "tlogs: no Rekor key (keyless signatures are trusted only with a Rekor bundle)"
                    .into(),
            );
        }
        Ok(Self { root })
    }

    pub fn load(path: &Path, field: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| SignatureError::Read {
            field: field.to_owned(),
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| SignatureError::Invalid {
            field: field.to_owned(),
            message: format!("{}: {message}", path.display()),
        })
    }
}

impl Authority {
    /// Compile the `index`th authority; `roots` collects the distinct trust roots by path.
    pub(crate) fn compile(
        index: usize,
        config: &SignatureAuthority,
        roots: &mut Vec<(std::path::PathBuf, TrustRootFile)>,
    ) -> Result<Self> {
        let at = format!("policies.image-signature.authorities[{index}]");
        let invalid = |field: &str, message: String| SignatureError::Invalid {
            field: format!("{at}.{field}"),
            message,
        };
        let key_pem = match (&config.key, &config.key_path) {
            (Some(pem), _) => Some(pem.clone()),
            (None, Some(path)) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| SignatureError::Read {
                        field: format!("{at}.keyPath"),
                        path: path.display().to_string(),
                        source,
                    })?,
                )
            }
            (None, None) => None,
        };
        let kind = if let Some(pem) = key_pem {
            let field = if config.key.is_some() {
                "key"
            } else {
                "keyPath"
            };
            Kind::Key(
                PublicKeyVerifier::try_from(pem.as_bytes())
                    .map_err(|e| invalid(field, format!("not a PEM public key: {e}")))?,
            )
        } else {
            let issuer = config
                .issuer
                .clone()
                .ok_or_else(|| invalid("issuer", "missing".into()))?;
            let subject = match (&config.subject, &config.subject_regex) {
                (Some(s), _) => Subject::Exact(s.clone()),
                (None, Some(re)) => Subject::Regex(
                    regex::Regex::new(&format!("^(?:{re})$"))
                        .map_err(|e| invalid("subjectRegex", e.to_string()))?,
                ),
                (None, None) => return Err(invalid("subject", "missing".into())),
            };
            let path = config
                .trust_root
                .clone()
                .ok_or_else(|| invalid("trustRoot", "missing".into()))?;
            let root = match roots.iter().position(|(p, _)| *p == path) {
                Some(i) => i,
                None => {
                    let file = TrustRootFile::load(&path, &format!("{at}.trustRoot"))?;
                    roots.push((path, file));
                    roots.len() - 1
                }
            };
            Kind::Keyless {
                issuer,
                subject,
                root,
            }
        };
        Ok(Self {
            name: config.name.clone(),
            kind,
        })
    }

    /// `None` for key authorities, else the index of the trust root the layers must be
    /// fetched with.
    pub(crate) fn trust_root(&self) -> Option<usize> {
        match self.kind {
            Kind::Key(_) => None,
            Kind::Keyless { root, .. } => Some(root),
        }
    }

    /// Whether this authority accepts one of the layers.
    pub(crate) fn accepts(&self, layers: &[SignatureLayer]) -> bool {
        layers.iter().any(|layer| self.accepts_layer(layer))
    }

    fn accepts_layer(&self, layer: &SignatureLayer) -> bool {
        match &self.kind {
            Kind::Key(verifier) => verifier.verify(layer).unwrap_or(false),
            Kind::Keyless {
                issuer, subject, ..
            } => {
                // The crate has checked, when it built the layer: the certificate chains to a
                // Fulcio CA of the trust root, the bundle's SET is signed by a Rekor key of
                // the trust root, and the entry was logged while the certificate was valid.
                let Some(cert) = &layer.certificate_signature else {
                    return false;
                };
                if cert.issuer.as_deref() != Some(issuer.as_str()) {
                    return false;
                }
                let identity = match &cert.subject {
                    CertificateSubject::Email(e) => e,
                    CertificateSubject::Uri(u) => u,
                };
                if !subject.matches(identity) {
                    return false;
                }
                // The crate's identity constraints stop there; a signature must also be made
                // by the certificate's key, and be the one the transparency log recorded.
                let Some(signature) = &layer.signature else {
                    return false;
                };
                if cert
                    .verification_key
                    .verify_signature(
                        Signature::Base64Encoded(signature.as_bytes()),
                        &layer.raw_data,
                    )
                    .is_err()
                {
                    return false;
                }
                bundle_records(layer, signature)
            }
        }
    }
}

/// Whether the Rekor bundle's entry is this exact signature over this exact payload
/// (a `hashedrekord` entry). Bundles from OCI referrers are checked by the crate in full.
fn bundle_records(layer: &SignatureLayer, signature: &str) -> bool {
    match &layer.bundle {
        Some(BundleContent::SigstoreBundle(_)) => true,
        Some(BundleContent::RekorBundle(bundle)) => {
            let Ok(body) = base64::engine::general_purpose::STANDARD.decode(&bundle.payload.body)
            else {
                return false;
            };
            let Ok(entry) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return false;
            };
            if entry["kind"] != "hashedrekord" {
                return false;
            }
            let spec = &entry["spec"];
            let hash = hex::encode(Sha256::digest(&layer.raw_data));
            spec["signature"]["content"].as_str() == Some(signature)
                && spec["data"]["hash"]["algorithm"] == "sha256"
                && spec["data"]["hash"]["value"].as_str() == Some(hash.as_str())
        }
        None => false,
    }
}

/// Names of authorities, for denials.
pub(crate) fn names(authorities: &[Authority]) -> Vec<String> {
    authorities.iter().map(|a| a.name.clone()).collect()
}
