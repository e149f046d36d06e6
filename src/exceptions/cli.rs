//! `kube-baseline exceptions list|lint|crd`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::adr::AdrIndex;
use super::source::files::read_documents;
use super::validation::{self, Rules};
use super::{expiring, Loaded, Registry, Standing};
use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum ExceptionsCommand {
    /// List exceptions with their state: ADR, policies, scope, expires, state.
    List(ListArgs),
    /// Validate exception files as the webhook would (without the approver check). Exit 0
    /// when every exception is valid, 1 when one is refused, 2 when an input cannot be read.
    Lint(LintArgs),
    /// Print the BaselineException CustomResourceDefinition (deploy/base/crd.yaml).
    Crd,
}

#[derive(Debug, clap::Args)]
pub struct Common {
    /// policies/baseline.yaml to validate against (default: the embedded one).
    #[arg(long, env = "KUBE_BASELINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The ADR index.
    #[arg(long, default_value = "policies/adrs.yaml", env = "KUBE_BASELINE_ADRS")]
    pub adrs: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub common: Common,
    /// Directory of exception files.
    #[arg(long, default_value = "policies/exceptions")]
    pub dir: PathBuf,
    /// List the cluster's BaselineException objects (current kubeconfig) instead of files.
    #[arg(long)]
    pub kubernetes: bool,
}

#[derive(Debug, clap::Args)]
pub struct LintArgs {
    #[command(flatten)]
    pub common: Common,
    /// Files of BaselineException documents.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub fn run(cmd: ExceptionsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ExceptionsCommand::List(args) => list(args),
        ExceptionsCommand::Lint(args) => {
            let (config, adrs) = load_common(&args.common)?;
            let mut out = String::new();
            let code = lint(&args.files, &config, &adrs, Utc::now(), &mut out)?;
            print!("{out}");
            Ok(code)
        }
        ExceptionsCommand::Crd => {
            print!("{}", super::model::crd_yaml());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_common(common: &Common) -> anyhow::Result<(Config, AdrIndex)> {
    let config = match &common.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    };
    let adrs = AdrIndex::load(&common.adrs)?;
    Ok((config, adrs))
}

/// Lint files; the report goes to `out`. Exit code 0 (all valid), 1 (a document refused).
/// An unreadable file is an error (exit 2 from `main`).
pub fn lint(
    files: &[PathBuf],
    config: &Config,
    adrs: &AdrIndex,
    now: DateTime<Utc>,
    out: &mut String,
) -> anyhow::Result<ExitCode> {
    let rules = Rules::new(config, adrs);
    let mut refused = 0usize;
    let mut valid = 0usize;
    let mut names: HashMap<String, String> = HashMap::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("{}: cannot read", file.display()))?;
        let docs = read_documents(&text, &file.display().to_string());
        if docs.is_empty() {
            out.push_str(&format!(
                "{}: no BaselineException documents\n",
                file.display()
            ));
            refused += 1;
        }
        for doc in docs {
            let object = match doc.object {
                Ok(o) => o,
                Err(p) => {
                    out.push_str(&format!("{}: {p}\n", doc.origin));
                    refused += 1;
                    continue;
                }
            };
            let name = object.metadata.name.clone().unwrap_or_default();
            match validation::check(&object, &rules, &doc.origin, now) {
                Ok(e) => {
                    if let Some(first) = names.get(&e.name) {
                        out.push_str(&format!(
                            "{}: {}: metadata.name: already defined by {first}\n",
                            doc.origin, e.name
                        ));
                        refused += 1;
                        continue;
                    }
                    names.insert(e.name.clone(), doc.origin.clone());
                    out.push_str(&format!(
                        "{}: {}: ok ({} waives {} until {})\n",
                        doc.origin,
                        e.name,
                        e.adr,
                        e.policies
                            .iter()
                            .map(|p| p.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        e.expires.format("%Y-%m-%d")
                    ));
                    valid += 1;
                }
                Err(problems) => {
                    for p in problems {
                        out.push_str(&format!("{}: {name}: {p}\n", doc.origin));
                    }
                    refused += 1;
                }
            }
        }
    }
    out.push_str(&format!("{valid} valid, {refused} refused\n"));
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let (config, adrs) = load_common(&args.common)?;
    let loaded = if args.kubernetes {
        from_cluster()?
    } else {
        from_dir(&args.dir)?
    };
    let now = Utc::now();
    let registry = Registry::build(loaded, Arc::new(adrs), &config, now);
    print!(
        "{}",
        table(&registry, now, config.exceptions.expiry_warning_days)
    );
    Ok(ExitCode::SUCCESS)
}

fn from_dir(dir: &Path) -> anyhow::Result<Vec<Loaded>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot read directory", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        out.extend(read_documents(&text, &path.display().to_string()));
    }
    Ok(out)
}

fn from_cluster() -> anyhow::Result<Vec<Loaded>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("cannot reach the cluster (kubeconfig)")?;
        let api: kube::Api<super::BaselineException> = kube::Api::all(client);
        let list = api
            .list(&Default::default())
            .await
            .context("cannot list BaselineExceptions (is the CRD installed?)")?;
        Ok(list
            .items
            .into_iter()
            .map(|o| Loaded {
                origin: "kubernetes".into(),
                object: Ok(o),
            })
            .collect())
    })
}

/// The `exceptions list` table.
pub fn table(registry: &Registry, now: DateTime<Utc>, warning_days: u32) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "NAME".into(),
        "ADR".into(),
        "POLICIES".into(),
        "SCOPE".into(),
        "EXPIRES".into(),
        "STATE".into(),
    ]];
    for e in registry.exceptions() {
        let state = match e.standing(now) {
            Standing::Active if expiring(e, now, warning_days) => {
                format!("expiring in {}d", (e.expires - now).num_days())
            }
            Standing::Active => "active".into(),
            Standing::Expired => "expired".into(),
            Standing::AdrNotAccepted(s) => format!("inactive: ADR {s}"),
            Standing::AdrUnknown => "inactive: ADR not in index".into(),
        };
        rows.push([
            e.name.clone(),
            e.adr.clone(),
            e.policies
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(","),
            e.scope(),
            e.expires.format("%Y-%m-%d").to_string(),
            state,
        ]);
    }
    for bad in registry.invalid() {
        let first = bad
            .problems
            .first()
            .map(|p| p.to_string())
            .unwrap_or_default();
        rows.push([
            bad.name.clone(),
            "-".into(),
            "-".into(),
            bad.origin.clone(),
            "-".into(),
            format!("invalid: {first}"),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i == 5 {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
