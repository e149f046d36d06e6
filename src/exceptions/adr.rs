//! The ADR index (`policies/adrs.yaml`, or the same file mounted from a ConfigMap): the
//! architecture decision records an exception may be keyed to, with their status.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The status of an ADR. Only `accepted` ADRs key exceptions that waive anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdrStatus {
    Proposed,
    Accepted,
    Superseded,
    Deprecated,
}

impl AdrStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposed => "proposed",
            Self::Accepted => "accepted",
            Self::Superseded => "superseded",
            Self::Deprecated => "deprecated",
        }
    }
}

impl std::fmt::Display for AdrStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One architecture decision record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Adr {
    pub id: String,
    pub title: String,
    pub status: AdrStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AdrFile {
    #[serde(default)]
    adrs: Vec<Adr>,
}

/// Why an ADR index could not be loaded.
/// Why the ADR index cannot be used: the same errors as the policy configuration's.
pub type AdrError = crate::config::ConfigError;

/// The ADRs by id.
#[derive(Debug, Clone, Default)]
pub struct AdrIndex {
    by_id: HashMap<String, Adr>,
}

impl AdrIndex {
    /// Read and parse a file; `origin` in errors is the path.
    pub fn load(path: &Path) -> Result<Self, AdrError> {
        let (text, origin) = crate::config::read_file(path)?;
        Self::parse(&text, &origin)
    }

    /// Parse `adrs: [{id, title, status, url}]`. Ids must be unique and non-empty.
    pub fn parse(text: &str, origin: &str) -> Result<Self, AdrError> {
        let file: AdrFile = if text.trim().is_empty() {
            AdrFile { adrs: Vec::new() }
        } else {
            crate::config::parse_yaml(text, origin)?
        };
        let mut problems = Vec::new();
        let mut by_id = HashMap::with_capacity(file.adrs.len());
        for (i, adr) in file.adrs.into_iter().enumerate() {
            if adr.id.trim().is_empty() {
                problems.push(format!("adrs[{i}].id: must not be empty"));
                continue;
            }
            if by_id.contains_key(&adr.id) {
                problems.push(format!("adrs[{i}].id: {} is listed twice", adr.id));
                continue;
            }
            by_id.insert(adr.id.clone(), adr);
        }
        if problems.is_empty() {
            Ok(Self { by_id })
        } else {
            Err(AdrError::Invalid {
                origin: origin.to_owned(),
                problems,
            })
        }
    }

    pub fn from_adrs(adrs: impl IntoIterator<Item = Adr>) -> Self {
        Self {
            by_id: adrs.into_iter().map(|a| (a.id.clone(), a)).collect(),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Adr> {
        self.by_id.get(id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_and_statuses() {
        let index = AdrIndex::parse(
            "adrs:\n- {id: ADR-0042, title: Legacy nginx, status: accepted, url: https://x}\n- {id: ADR-0007, title: Old, status: superseded}\n",
            "adrs.yaml",
        )
        .unwrap();
        assert_eq!(index.get("ADR-0042").unwrap().status, AdrStatus::Accepted);
        assert_eq!(index.get("ADR-0007").unwrap().status, AdrStatus::Superseded);
        assert!(index.get("ADR-0001").is_none());
    }

    #[test]
    fn an_unknown_status_is_named_with_its_path() {
        let e = AdrIndex::parse(
            "adrs:\n- {id: ADR-0042, title: x, status: approved}\n",
            "adrs.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("adrs[0].status"), "{e}");
        assert!(e.contains("approved"), "{e}");
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let e = AdrIndex::parse(
            "adrs:\n- {id: ADR-0042, title: a, status: accepted}\n- {id: ADR-0042, title: b, status: proposed}\n",
            "adrs.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("adrs[1].id: ADR-0042 is listed twice"), "{e}");
    }
}
