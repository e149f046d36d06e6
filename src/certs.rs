//! Development and first-install certificates (rcgen): a CA and a serving certificate signed
//! by it, written as `ca.crt`, `tls.crt` and `tls.key`.
//!
//! `kube-baseline certs --out DIR --dns NAME... [--ip IP...]` writes them explicitly;
//! `kube-baseline serve --dev-certs` calls the same [`generate`] and [`write()`] when the
//! serving files are missing. The CA's private key is never written: to issue a new serving
//! certificate, generate a new pair (and a new `caBundle`).

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine;
use chrono::{Datelike, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

/// File names inside the output directory, as a cert-manager Secret names them.
pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// How long a generated CA and serving certificate are valid.
pub const CA_VALIDITY_DAYS: i64 = 3650;
pub const SERVING_VALIDITY_DAYS: i64 = 365;

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("certificate generation: --dns/--ip: give at least one name or address")]
    NoNames,
    #[error("certificate generation: --dns {name:?}: {source}")]
    Name {
        name: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: already exists (use --force to overwrite)")]
    Exists { path: PathBuf },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = CertsError> = std::result::Result<T, E>;

/// A certificate authority held in memory; its key never leaves the process.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

/// A serving certificate (PEM) and its private key (PKCS#8 PEM).
#[derive(Debug, Clone)]
pub struct ServingPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA certificate and a serving pair it signed.
#[derive(Debug, Clone)]
pub struct Generated {
    pub ca_pem: String,
    pub serving: ServingPair,
}

impl Generated {
    /// The `caBundle` of a webhook configuration: base64 of the CA's PEM.
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes())
    }
}

/// Valid from yesterday (clock skew) for `days` days, whole days as rcgen counts them.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let from = Utc::now() - Duration::days(1);
    let until = Utc::now() + Duration::days(days);
    // Months and days always fit in a u8.
    params.not_before = rcgen::date_time_ymd(from.year(), from.month() as u8, from.day() as u8);
    params.not_after = rcgen::date_time_ymd(until.year(), until.month() as u8, until.day() as u8);
}

impl Authority {
    /// A new self-signed CA with a fresh P-256 key.
    pub fn new() -> Result<Self> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-baseline CA");
        dn.push(DnType::OrganizationName, "kube-baseline");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY_DAYS);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { issuer })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A serving certificate for these DNS names and IP addresses, signed by this CA. The
    /// first name is also the subject's common name.
    pub fn issue(&self, dns: &[String], ips: &[IpAddr]) -> Result<ServingPair> {
        let mut sans = Vec::with_capacity(dns.len() + ips.len());
        for name in dns {
            let ia5 = name.clone().try_into().map_err(|source| CertsError::Name {
                name: name.clone(),
                source,
            })?;
            sans.push(SanType::DnsName(ia5));
        }
        sans.extend(ips.iter().copied().map(SanType::IpAddress));
        let common_name = dns
            .first()
            .cloned()
            .or_else(|| ips.first().map(IpAddr::to_string))
            .ok_or(CertsError::NoNames)?;

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, SERVING_VALIDITY_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServingPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A new CA and a serving certificate for `dns` and `ips` signed by it.
pub fn generate(dns: &[String], ips: &[IpAddr]) -> Result<Generated> {
    if dns.is_empty() && ips.is_empty() {
        return Err(CertsError::NoNames);
    }
    let authority = Authority::new()?;
    let serving = authority.issue(dns, ips)?;
    Ok(Generated {
        ca_pem: authority.cert_pem(),
        serving,
    })
}

/// Where [`write()`] put the files.
#[derive(Debug, Clone)]
pub struct Written {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Write `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `dir`, creating it. Refuses to
/// replace an existing file unless `force`.
pub fn write(dir: &Path, generated: &Generated, force: bool) -> Result<Written> {
    let written = Written {
        ca: dir.join(CA_FILE),
        cert: dir.join(CERT_FILE),
        key: dir.join(KEY_FILE),
    };
    write_to(&written, generated, force)?;
    Ok(written)
}

/// Write the three files at the given paths (the CA, the serving certificate, its key).
pub fn write_to(paths: &Written, generated: &Generated, force: bool) -> Result<()> {
    let files = [
        (&paths.ca, generated.ca_pem.as_str(), false),
        (&paths.cert, generated.serving.cert_pem.as_str(), false),
        (&paths.key, generated.serving.key_pem.as_str(), true),
    ];
    if !force {
        if let Some((path, _, _)) = files.iter().find(|(path, _, _)| path.exists()) {
            return Err(CertsError::Exists {
                path: (*path).clone(),
            });
        }
    }
    for (path, contents, secret) in files {
        write_file(path, contents, secret).map_err(|source| CertsError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

fn write_file(path: &Path, contents: &str, secret: bool) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Directory to write ca.crt, tls.crt and tls.key into (created if missing).
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// DNS name of the serving certificate (repeat for more), e.g.
    /// kube-baseline.kube-baseline.svc.
    #[arg(long = "dns", value_name = "NAME")]
    pub dns: Vec<String>,
    /// IP address of the serving certificate (repeat for more).
    #[arg(long = "ip", value_name = "IP")]
    pub ips: Vec<IpAddr>,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// Where the files are and the `caBundle` for a webhook configuration, as printed.
pub fn describe(written: &Written, generated: &Generated) -> String {
    format!(
        "CA certificate: {}\nserving certificate: {}\nserving key: {}\n\
         caBundle (for the webhook configurations' clientConfig.caBundle):\n{}\n",
        written.ca.display(),
        written.cert.display(),
        written.key.display(),
        generated.ca_bundle()
    )
}

pub fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    let generated = generate(&args.dns, &args.ips)?;
    let written = write(&args.out, &generated, args.force)?;
    print!("{}", describe(&written, &generated));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;

    #[test]
    fn serving_certificate_names_every_dns_name_and_ip() {
        let generated = generate(
            &["kube-baseline.kube-baseline.svc".into(), "localhost".into()],
            &["127.0.0.1".parse().unwrap()],
        )
        .unwrap();
        let der = rustls_pemfile::certs(&mut generated.serving.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|name| match name {
                GeneralName::DNSName(dns) => dns.to_string(),
                GeneralName::IPAddress(&[a, b, c, d]) => IpAddr::from([a, b, c, d]).to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            ["kube-baseline.kube-baseline.svc", "localhost", "127.0.0.1"]
        );
        assert!(!cert.is_ca());
    }

    #[test]
    fn no_names_is_refused() {
        assert!(matches!(generate(&[], &[]), Err(CertsError::NoNames)));
    }

    #[test]
    fn write_refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let generated = generate(&["localhost".into()], &[]).unwrap();
        write(dir.path(), &generated, false).unwrap();
        let err = write(dir.path(), &generated, false).unwrap_err();
        assert!(err.to_string().contains("ca.crt: already exists"), "{err}");
        write(dir.path(), &generated, true).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn key_is_readable_by_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let generated = generate(&["localhost".into()], &[]).unwrap();
        let written = write(dir.path(), &generated, false).unwrap();
        let mode = std::fs::metadata(&written.key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
