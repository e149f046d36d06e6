//! Test helpers: a real OCI registry (Debian's `docker-registry`, distribution 2.8) on a free
//! loopback port, tiny OCI images built here, and cosign signatures made with the sigstore
//! crate's signing API. Nothing is downloaded.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SigningKey,
};
use sha2::{Digest, Sha256};
use sigstore::cosign::constraint::{Constraint, PrivateKeySigner};
use sigstore::cosign::{CosignCapabilities, SignatureLayer};
use sigstore::crypto::SigningScheme;
use sigstore::registry::OciReference;

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A `docker-registry serve` process; killed on drop.
pub struct TestRegistry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    /// The CA of the TLS listener, PEM, when started with TLS.
    pub ca_pem: Option<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl TestRegistry {
    /// Plain HTTP.
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// HTTPS with a certificate for 127.0.0.1 from a CA made here.
    pub fn start_tls() -> Self {
        Self::launch(true)
    }

    fn launch(tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        let mut ca_pem = None;
        if tls {
            let ca_key = KeyPair::generate().expect("CA key");
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
            ca_params
                .distinguished_name
                .push(DnType::CommonName, "kube-baseline test registry CA");
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
            params
                .subject_alt_names
                .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
            params
                .distinguished_name
                .push(DnType::CommonName, "127.0.0.1");
            let cert = params.signed_by(&key, &ca).expect("leaf");
            std::fs::write(dir.path().join("tls.crt"), cert.pem()).expect("write");
            std::fs::write(dir.path().join("tls.key"), key.serialize_pem()).expect("write");
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("tls.crt").display(),
                dir.path().join("tls.key").display()
            ));
            std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
            ca_pem = Some(ca.pem());
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry is installed (scripts/test.sh installs it)");
        let mut registry = Self {
            child: Some(child),
            dir,
            port,
            ca_pem,
        };
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Some(status) = registry
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("docker-registry exited with {status}: {}", registry.log());
            }
            assert!(
                Instant::now() < until,
                "docker-registry did not listen within 15s: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        registry
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Access-log lines whose request line contains `needle`.
    pub fn requests(&self, needle: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\" ") && l.contains(" HTTP/1.1\"") && l.contains(needle))
            .count()
    }

    /// Stop the registry (the port then refuses connections).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// An OCI client configured for this registry.
    pub fn client(&self) -> oci_client::Client {
        let protocol = if self.ca_pem.is_some() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(vec![self.host()])
        };
        oci_client::Client::new(ClientConfig {
            protocol,
            extra_root_certificates: self
                .ca_pem
                .iter()
                .map(|pem| oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: pem.clone().into_bytes(),
                })
                .collect(),
            ..Default::default()
        })
    }

    fn sigstore_client(&self) -> sigstore::cosign::Client {
        let protocol = if self.ca_pem.is_some() {
            sigstore::registry::ClientProtocol::Https
        } else {
            sigstore::registry::ClientProtocol::HttpsExcept(vec![self.host()])
        };
        sigstore::cosign::ClientBuilder::default()
            .with_oci_client_config(sigstore::registry::ClientConfig {
                protocol,
                extra_root_certificates: self
                    .ca_pem
                    .iter()
                    .map(|pem| sigstore::registry::Certificate {
                        encoding: sigstore::registry::CertificateEncoding::Pem,
                        data: pem.clone().into_bytes(),
                    })
                    .collect(),
                ..Default::default()
            })
            .build()
            .expect("sigstore client")
    }

    /// Build and push a tiny image (an OCI config and one layer holding `content`) at
    /// `repo:tag`; returns the manifest digest.
    pub async fn push_image(&self, repo: &str, tag: &str, content: &str) -> String {
        let reference: Reference = format!("{}/{repo}:{tag}", self.host())
            .parse()
            .expect("reference");
        let layer = ImageLayer::oci_v1(content.as_bytes().to_vec(), None);
        let config = Config::oci_v1(
            format!(
                r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}}}}"#,
                hex::encode(Sha256::digest(content.as_bytes()))
            )
            .into_bytes(),
            None,
        );
        let client = self.client();
        client
            .push(&reference, &[layer], config, &RegistryAuth::Anonymous, None)
            .await
            .expect("push image");
        client
            .fetch_manifest_digest(&reference, &RegistryAuth::Anonymous)
            .await
            .expect("digest of the pushed image")
    }

    /// Sign `repo@digest` with cosign's format through the sigstore crate's signing API.
    pub async fn sign(&self, repo: &str, digest: &str, key: &TestKey) {
        let image: OciReference = format!("{}/{repo}@{digest}", self.host())
            .parse()
            .expect("reference");
        let mut client = self.sigstore_client();
        let auth = sigstore::registry::Auth::Anonymous;
        let (sig_ref, manifest_digest) = client
            .triangulate(&image, &auth)
            .await
            .expect("triangulate");
        assert_eq!(manifest_digest, digest);
        let mut layer = SignatureLayer::new_unsigned(&image, &manifest_digest).expect("layer");
        let signer = PrivateKeySigner::new_with_signer(key.signer());
        assert!(signer.add_constraint(&mut layer).expect("sign"));
        client
            .push_signature(None, &auth, &sig_ref, vec![layer])
            .await
            .expect("push signature");
    }

    /// Push a signature manifest holding one cosign layer with these annotations (keyless).
    pub async fn push_signature_layer(
        &self,
        repo: &str,
        digest: &str,
        payload: Vec<u8>,
        annotations: BTreeMap<String, String>,
    ) {
        let reference: Reference =
            format!("{}/{repo}:{}.sig", self.host(), digest.replace(':', "-"))
                .parse()
                .expect("reference");
        let layer = ImageLayer::new(
            payload,
            "application/vnd.dev.cosign.simplesigning.v1+json".into(),
            Some(annotations),
        );
        let config = Config::oci_v1(b"{}".to_vec(), None);
        let mut manifest = oci_client::manifest::OciImageManifest::build(
            std::slice::from_ref(&layer),
            &config,
            None,
        );
        manifest.media_type = Some(oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.to_owned());
        let client = self.client();
        for (data, digest) in [
            (config.data.clone(), config.sha256_digest()),
            (layer.data.clone(), layer.sha256_digest()),
        ] {
            client
                .push_blob(&reference, data, &digest)
                .await
                .expect("push blob");
        }
        // oci-client's own manifest push writes OLPC canonical JSON, which leaves the
        // newlines of a PEM annotation unescaped; cosign writes standard JSON.
        client
            .push_manifest_raw(
                &reference,
                serde_json::to_vec(&manifest).expect("manifest"),
                axum::http::HeaderValue::from_static(oci_client::manifest::OCI_IMAGE_MEDIA_TYPE),
            )
            .await
            .expect("push signature manifest");
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A cosign key pair (ECDSA P-256), kept as PEM.
pub struct TestKey {
    private_pem: String,
    pub public_pem: String,
}

impl TestKey {
    pub fn generate() -> Self {
        let signer = SigningScheme::ECDSA_P256_SHA256_ASN1
            .create_signer()
            .expect("signer");
        let pair = signer.to_sigstore_keypair().expect("key pair");
        Self {
            private_pem: pair.private_key_to_pem().expect("pem").to_string(),
            public_pem: pair.public_key_to_pem().expect("pem"),
        }
    }

    fn signer(&self) -> sigstore::crypto::SigStoreSigner {
        sigstore::crypto::signing_key::SigStoreKeyPair::from_pem(self.private_pem.as_bytes())
            .expect("key")
            .to_sigstore_signer(&SigningScheme::ECDSA_P256_SHA256_ASN1)
            .expect("signer")
    }
}

/// A Fulcio-like CA and a Rekor-like log key made here, written as a Sigstore
/// `trusted_root.json`.
pub struct KeylessWorld {
    ca: CertifiedIssuer<'static, KeyPair>,
    pub rekor: KeyPair,
}

pub const FULCIO_ISSUER_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 57264, 1, 1];

/// What the test changes in a keyless signature to see it refused.
#[derive(Default, Clone, Copy)]
pub struct Tamper {
    /// The Rekor entry records another payload hash than the one signed.
    pub body_hash: bool,
}

impl KeylessWorld {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "test fulcio root");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        Self {
            ca,
            rekor: KeyPair::generate().expect("rekor key"),
        }
    }

    /// `trusted_root.json` trusting this CA and this log key.
    pub fn trusted_root_json(&self) -> String {
        serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{
                "baseUrl": "https://rekor.test",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": B64.encode(self.rekor.subject_public_key_info())},
            }],
            "certificateAuthorities": [{
                "uri": "https://fulcio.test",
                "certChain": {"certificates": [{"rawBytes": B64.encode(self.ca.der())}]},
            }],
        })
        .to_string()
    }

    /// Sign `repo@digest` the keyless way: a short-lived certificate for `email` from
    /// `issuer`, the signature over the cosign payload, and a Rekor bundle (SET) for it.
    pub async fn sign(
        &self,
        registry: &TestRegistry,
        repo: &str,
        digest: &str,
        email: &str,
        issuer: &str,
        tamper: Tamper,
    ) {
        let image: OciReference = format!("{}/{repo}@{digest}", registry.host())
            .parse()
            .expect("reference");
        let payload = SignatureLayer::new_unsigned(&image, digest)
            .expect("payload")
            .raw_data;
        let leaf_key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![SanType::Rfc822Name(
            email.to_owned().try_into().expect("ia5"),
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            FULCIO_ISSUER_OID,
            issuer.as_bytes().to_vec(),
        )];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + time::Duration::minutes(10);
        let cert = params.signed_by(&leaf_key, &self.ca).expect("leaf cert");
        let signature = B64.encode(leaf_key.sign(&payload).expect("sign"));

        let hash = if tamper.body_hash {
            hex::encode(Sha256::digest(b"something else"))
        } else {
            hex::encode(Sha256::digest(&payload))
        };
        let body = serde_json::json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hash}},
                "signature": {
                    "content": signature,
                    "publicKey": {"content": B64.encode(cert.pem())},
                },
            },
        });
        let body = B64.encode(body.to_string());
        let log_id = hex::encode(Sha256::digest(self.rekor.subject_public_key_info()));
        let integrated_time = now.unix_timestamp();
        // Canonical JSON (RFC 8785) of the bundle payload: keys sorted, no spaces.
        let canonical = format!(
            r#"{{"body":"{body}","integratedTime":{integrated_time},"logID":"{log_id}","logIndex":1}}"#
        );
        let set = B64.encode(self.rekor.sign(canonical.as_bytes()).expect("SET"));
        let bundle = serde_json::json!({
            "SignedEntryTimestamp": set,
            "Payload": {
                "body": body,
                "integratedTime": integrated_time,
                "logIndex": 1,
                "logID": log_id,
            },
        });
        let annotations = BTreeMap::from([
            ("dev.cosignproject.cosign/signature".to_owned(), signature),
            ("dev.sigstore.cosign/certificate".to_owned(), cert.pem()),
            ("dev.sigstore.cosign/bundle".to_owned(), bundle.to_string()),
        ]);
        registry
            .push_signature_layer(repo, digest, payload, annotations)
            .await;
    }
}

/// Write `text` to a new file in `dir`.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(text.as_bytes()).expect("write");
    path
}
