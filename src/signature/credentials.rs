//! Registry credentials from a mounted `kubernetes.io/dockerconfigjson` Secret.

use std::collections::HashMap;

use base64::Engine;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Basic credentials by registry host (`docker.io`, `registry.example:5000`).
#[derive(Default, Clone)]
pub(crate) struct Credentials {
    by_host: HashMap<String, (String, String)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<&String> = self.by_host.keys().collect();
        f.debug_struct("Credentials")
            .field("hosts", &hosts)
            .finish()
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `reg:5000` stays.
fn host_of(key: &str) -> String {
    let no_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = no_scheme.split('/').next().unwrap_or(no_scheme);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        h => h.to_owned(),
    }
}

impl Credentials {
    /// Parse the file's text; the error says what is wrong without echoing secrets.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: DockerConfig =
            serde_json::from_str(text).map_err(|e| format!("not a dockerconfigjson file: {e}"))?;
        let mut by_host = HashMap::new();
        for (key, auth) in config.auths {
            let pair = match (auth.username, auth.password, auth.auth) {
                (Some(u), Some(p), _) => (u, p),
                (_, _, Some(encoded)) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(encoded.trim())
                        .map_err(|_| format!("auths.{key:?}.auth: not base64"))?;
                    let text = String::from_utf8(decoded)
                        .map_err(|_| format!("auths.{key:?}.auth: not UTF-8"))?;
                    let (u, p) = text
                        .split_once(':')
                        .ok_or_else(|| format!("auths.{key:?}.auth: not user:password"))?;
                    (u.to_owned(), p.to_owned())
                }
                _ => return Err(format!("auths.{key:?}: no auth nor username and password")),
            };
            by_host.insert(host_of(&key), pair);
        }
        Ok(Self { by_host })
    }

    pub fn for_registry(&self, registry: &str) -> RegistryAuth {
        match self.by_host.get(registry) {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_of_a_dockerconfigjson_entry_are_read() {
        let c = Credentials::parse(
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},
                "reg:5000":{"username":"a","password":"b"}}}"#,
        )
        .unwrap();
        assert!(
            matches!(c.for_registry("docker.io"), RegistryAuth::Basic(u, p) if u == "u" && p == "p")
        );
        assert!(matches!(c.for_registry("reg:5000"), RegistryAuth::Basic(u, _) if u == "a"));
        assert!(matches!(c.for_registry("other"), RegistryAuth::Anonymous));
    }

    #[test]
    fn a_broken_entry_is_named() {
        let e = Credentials::parse(r#"{"auths":{"reg":{"auth":"!!"}}}"#).unwrap_err();
        assert!(e.contains("auths.\"reg\".auth"), "{e}");
    }
}
