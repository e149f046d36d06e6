//! `kube-baseline check`: the webhook's engine on manifests, offline, for CI.
//!
//! Each object is evaluated exactly as `/validate` would evaluate its CREATE: the same
//! [`admission::validate()`] with the same snapshot of policies and exceptions, so CI gives the
//! verdict the cluster will give.

use std::fmt::Write as _;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::admission::review::{AdmissionRequest, GroupVersionKind, Operation, UserInfo};
use crate::admission::{self, Action, Outcome, Snapshot, Verdict};
use crate::config::Config;
use crate::policy::PolicyId;
use crate::workload::WorkloadKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Grouped by file and object; colours only on a terminal.
    Text,
    /// One JSON document with every object and finding.
    Json,
    /// SARIF 2.1.0 for code-scanning UIs: a rule per policy, located at file and line.
    Sarif,
    /// JUnit XML: one test case per object.
    Junit,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Files, directories (recursive *.yaml, *.yml, *.json) or `-` for stdin.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Policy configuration (default: the embedded policies/baseline.yaml).
    #[arg(long, env = "KUBE_BASELINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Namespace for objects that have none.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Directory of BaselineException YAML files.
    #[arg(long)]
    pub exceptions: Option<PathBuf>,
    /// ADR index (policies/adrs.yaml).
    #[arg(long)]
    pub adrs: Option<PathBuf>,
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Also show the defaults `/mutate` would add.
    #[arg(long)]
    pub show_mutations: bool,
    /// Fail (exit 1) on warnings too.
    #[arg(long)]
    pub strict: bool,
    /// Evaluate at this time (RFC 3339) instead of now, e.g. to test exception expiry.
    #[arg(long)]
    pub now: Option<DateTime<Utc>>,
}

/// Why manifests could not be read: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Syntax {
        file: String,
        line: usize,
        message: String,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Exceptions(String),
}

/// One object of a manifest, with where it starts.
#[derive(Debug, Clone)]
pub struct Document {
    pub file: String,
    pub line: usize,
    pub value: Value,
}

/// Read files, directories (recursively, sorted) or `-` (stdin).
pub fn read_paths(paths: &[PathBuf]) -> Result<Vec<Document>, CheckError> {
    let mut docs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| CheckError::Read {
                    path: "<stdin>".into(),
                    source,
                })?;
            docs.extend(parse_text("<stdin>", &text)?);
            continue;
        }
        let mut files = Vec::new();
        collect_files(path, &mut files)?;
        for file in files {
            let name = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|source| CheckError::Read {
                path: name.clone(),
                source,
            })?;
            docs.extend(parse_text(&name, &text)?);
        }
    }
    Ok(docs)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), CheckError> {
    let meta = std::fs::metadata(path).map_err(|source| CheckError::Read {
        path: path.display().to_string(),
        source,
    })?;
    if !meta.is_dir() {
        out.push(path.to_owned());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .and_then(|dir| dir.map(|e| e.map(|e| e.path())).collect())
        .map_err(|source| CheckError::Read {
            path: path.display().to_string(),
            source,
        })?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect_files(&entry, out)?;
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(entry);
        }
    }
    Ok(())
}

/// Split a file into objects: multi-document YAML, a JSON document, `List` objects.
pub fn parse_text(file: &str, text: &str) -> Result<Vec<Document>, CheckError> {
    let mut docs = Vec::new();
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let value: Value = serde_json::from_str(text).map_err(|e| CheckError::Syntax {
            file: file.into(),
            line: e.line(),
            message: e.to_string(),
        })?;
        push_objects(file, 1, value, &mut docs);
        return Ok(docs);
    }
    for (start, chunk) in yaml_documents(text) {
        let value: Value = serde_yaml::from_str(&chunk).map_err(|e| CheckError::Syntax {
            file: file.into(),
            line: start + e.location().map_or(0, |l| l.line().saturating_sub(1)),
            message: format!("YAML error: {e}"),
        })?;
        let line = chunk
            .lines()
            .position(|l| {
                let l = l.trim();
                !l.is_empty() && !l.starts_with('#')
            })
            .map_or(start, |i| start + i);
        push_objects(file, line, value, &mut docs);
    }
    Ok(docs)
}

/// `(first line, text)` of each YAML document, split on `---` lines.
fn yaml_documents(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut start = 1;
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let is_separator = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_separator || line == "..." {
            out.push((start, std::mem::take(&mut current)));
            start = i + 2;
            if let Some(rest) = line
                .strip_prefix("---")
                .map(str::trim)
                .filter(|r| !r.is_empty() && !r.starts_with('#'))
            {
                // `--- {inline: doc}` on the separator line.
                start = i + 1;
                current.push_str(rest);
                current.push('\n');
            }
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    out.push((start, current));
    out
}

fn push_objects(file: &str, line: usize, value: Value, docs: &mut Vec<Document>) {
    match value {
        Value::Null => {}
        Value::Array(items) => {
            for item in items {
                push_objects(file, line, item, docs);
            }
        }
        Value::Object(ref map)
            if map
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List"))
                && map.get("items").is_some_and(Value::is_array) =>
        {
            if let Some(Value::Array(items)) = value.get("items").cloned() {
                for item in items {
                    push_objects(file, line, item, docs);
                }
            }
        }
        value => docs.push(Document {
            file: file.into(),
            line,
            value,
        }),
    }
}

/// The verdict for one object.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectResult {
    pub file: String,
    pub line: usize,
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub verdict: &'static str,
    pub allowed: bool,
    /// The denial exactly as `kubectl apply` would print it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub findings: Vec<Outcome>,
    pub warnings: Vec<String>,
    /// JSON-patch operations `/mutate` would apply (with `--show-mutations`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mutations: Vec<Value>,
}

impl ObjectResult {
    pub fn object(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }

    fn denied(&self) -> bool {
        !self.allowed
    }
}

/// Evaluate every document as a CREATE into its namespace (or `default_namespace`).
pub fn evaluate(
    snapshot: &Snapshot,
    docs: &[Document],
    default_namespace: &str,
    now: DateTime<Utc>,
    show_mutations: bool,
) -> Vec<ObjectResult> {
    docs.iter()
        .map(|doc| evaluate_one(snapshot, doc, default_namespace, now, show_mutations))
        .collect()
}

fn evaluate_one(
    snapshot: &Snapshot,
    doc: &Document,
    default_namespace: &str,
    now: DateTime<Utc>,
    show_mutations: bool,
) -> ObjectResult {
    let v = &doc.value;
    let text = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let api_version = text("/apiVersion");
    let kind = text("/kind");
    let name = match text("/metadata/name") {
        n if n.is_empty() => text("/metadata/generateName"),
        n => n,
    };
    let namespace = match text("/metadata/namespace") {
        n if n.is_empty() => default_namespace.to_owned(),
        n => n,
    };
    let mut result = ObjectResult {
        file: doc.file.clone(),
        line: doc.line,
        api_version: api_version.clone(),
        kind: kind.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
        verdict: Verdict::Skipped.as_str(),
        allowed: true,
        message: None,
        findings: Vec::new(),
        warnings: Vec::new(),
        mutations: Vec::new(),
    };
    if kind.is_empty() || api_version.is_empty() {
        return result;
    }
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
    if let Some(problem) = schema_problem(group, version, &kind, v) {
        result.verdict = Verdict::Invalid.as_str();
        result.allowed = false;
        result.message = Some(problem);
        return result;
    }
    let Ok(object) = serde_json::value::to_raw_value(v) else {
        return result;
    };
    let request = AdmissionRequest {
        uid: format!("check:{}:{}", doc.file, doc.line),
        kind: GroupVersionKind {
            group: group.into(),
            version: version.into(),
            kind,
        },
        resource: Default::default(),
        sub_resource: None,
        name: Some(name),
        namespace: Some(namespace),
        operation: Operation::Create,
        user_info: UserInfo::default(),
        object: Some(object),
        old_object: None,
        dry_run: Some(true),
    };
    let decision = admission::validate(snapshot, &request, now);
    result.verdict = decision.verdict.as_str();
    result.allowed = decision.response.allowed;
    result.message = decision.response.status.map(|s| s.message);
    result.findings = decision.outcomes;
    result.warnings = decision.response.warnings;
    if show_mutations {
        let mutation = admission::mutate(snapshot, &request, now);
        result.mutations = mutation
            .response
            .patch
            .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
            .and_then(|bytes| serde_json::from_slice::<Vec<Value>>(&bytes).ok())
            .unwrap_or_default();
    }
    result
}

/// Why the pod spec of a workload manifest does not match the Kubernetes schema, if it does
/// not. The webhook reads only the fields its policies use: in a cluster the API server has
/// checked the object's schema before any webhook sees it. Offline there is no API server,
/// so `check` reads the pod spec with k8s-openapi's full types, as the API server would,
/// and a malformed field that no policy reads (`env: "x"`) fails in CI, not at apply.
fn schema_problem(group: &str, version: &str, kind: &str, object: &Value) -> Option<String> {
    use serde::Deserialize as _;
    let workload = WorkloadKind::from_group_kind(group, kind).filter(|_| version == "v1")?;
    let spec = object.pointer(workload.spec_pointer())?;
    let error = k8s_openapi::api::core::v1::PodSpec::deserialize(spec).err()?;
    Some(format!(
        "{workload} object does not match the Kubernetes schema: {}: {error}",
        workload.spec_path()
    ))
}

/// Exit code: 1 when any object would be refused (or warned, with `strict`), else 0.
pub fn exit_code(results: &[ObjectResult], strict: bool) -> u8 {
    let failed = results
        .iter()
        .any(|r| r.denied() || (strict && !r.warnings.is_empty()));
    u8::from(failed)
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub objects: usize,
    pub denied: usize,
    pub warned: usize,
    pub allowed: usize,
    pub skipped: usize,
}

pub fn summary(results: &[ObjectResult]) -> Summary {
    let mut s = Summary {
        objects: results.len(),
        ..Summary::default()
    };
    for r in results {
        match r.verdict {
            "denied" | "invalid" => s.denied += 1,
            "warned" => s.warned += 1,
            "skipped" => s.skipped += 1,
            _ => s.allowed += 1,
        }
    }
    s
}

/// Render in the chosen format.
pub fn render(results: &[ObjectResult], format: Format, config: &Config, color: bool) -> String {
    match format {
        Format::Text => render_text(results, config, color),
        Format::Json => {
            let doc = json!({"results": results, "summary": summary(results)});
            serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
        }
        Format::Sarif => render_sarif(results, config),
        Format::Junit => render_junit(results),
    }
}

struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

fn render_text(results: &[ObjectResult], config: &Config, color: bool) -> String {
    let paint = Paint(color);
    let mut out = String::new();
    let mut last_file = "";
    for r in results.iter().filter(|r| r.verdict != "skipped") {
        if r.file != last_file {
            let _ = writeln!(out, "{}", paint.wrap("1", &r.file));
            last_file = &r.file;
        }
        let verdict = match r.verdict {
            "denied" | "invalid" => paint.wrap("1;31", "DENIED"),
            "warned" => paint.wrap("33", "warned"),
            other => paint.wrap("32", other),
        };
        let _ = writeln!(out, "  {}:{} {} {verdict}", r.file, r.line, r.object());
        if r.verdict == "invalid" {
            if let Some(m) = &r.message {
                let _ = writeln!(out, "    {m}");
            }
        }
        for o in &r.findings {
            let f = &o.finding;
            let (mark, note) = match o.action {
                Action::Denied => (
                    paint.wrap("31", "✗"),
                    if config.policies.exemptable(f.policy) {
                        "ADR exception possible".to_owned()
                    } else {
                        "never waivable".to_owned()
                    },
                ),
                Action::Warned => (paint.wrap("33", "!"), "warning".to_owned()),
                Action::Waived => (
                    paint.wrap("36", "~"),
                    format!(
                        "waived by {}",
                        o.waived_by.as_deref().unwrap_or("an exception")
                    ),
                ),
            };
            let who = f
                .container
                .as_ref()
                .map(|c| format!(" (container {c:?})"))
                .unwrap_or_default();
            let _ = writeln!(out, "    {mark} [{}] {}{who}", f.policy, f.field);
            let _ = writeln!(out, "        {}. Fix: {}. ({note})", f.message, f.fix);
        }
        for m in &r.mutations {
            let _ = writeln!(
                out,
                "    {} would add {} = {}",
                paint.wrap("34", "+"),
                m["path"].as_str().unwrap_or_default(),
                m["value"]
            );
        }
    }
    let s = summary(results);
    let _ = writeln!(
        out,
        "{} objects: {} denied, {} warned, {} allowed, {} not evaluated",
        s.objects, s.denied, s.warned, s.allowed, s.skipped
    );
    out
}

fn policy_description(p: PolicyId) -> &'static str {
    match p {
        PolicyId::RunAsNonRoot => "Containers run as non-root (runAsNonRoot: true, no runAsUser: 0)",
        PolicyId::ReadOnlyRootFilesystem => "Containers have a read-only root filesystem",
        PolicyId::ResourceLimits => "Containers request and limit cpu and memory",
        PolicyId::DropAllCapabilities => "Containers drop ALL capabilities and add only allowed ones",
        PolicyId::NoPrivilegeEscalation => "No privileged containers, privilege escalation, host namespaces, hostPath, hostPort; seccomp RuntimeDefault",
        PolicyId::ImageSignature => "Images are signed and verified (cosign)",
        PolicyId::HealthProbes => "Long-running containers have /health/live and /health/ready probes",
        PolicyId::MetricsEndpoint => "Long-running workloads expose /metrics on a port named http or metrics",
        PolicyId::ReplicasMinimum => "Deployments and StatefulSets run at least two replicas",
    }
}

fn render_sarif(results: &[ObjectResult], config: &Config) -> String {
    let rules: Vec<Value> = PolicyId::ALL
        .iter()
        .map(|p| {
            json!({
                "id": p.as_str(),
                "name": p.as_str(),
                "shortDescription": {"text": policy_description(*p)},
                "properties": {"exemptable": config.policies.exemptable(*p)},
            })
        })
        .collect();
    let mut sarif_results = Vec::new();
    for r in results {
        for o in &r.findings {
            let f = &o.finding;
            let level = match o.action {
                Action::Denied => "error",
                Action::Warned => "warning",
                Action::Waived => "note",
            };
            let rule_index = PolicyId::ALL
                .iter()
                .position(|p| *p == f.policy)
                .unwrap_or(0);
            sarif_results.push(json!({
                "ruleId": f.policy.as_str(),
                "ruleIndex": rule_index,
                "level": level,
                "message": {"text": format!("{}: {} {}. Fix: {}.", r.object(), f.field, f.message, f.fix)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": r.file.trim_start_matches("./")},
                        "region": {"startLine": r.line.max(1)}
                    },
                    "logicalLocations": [{"fullyQualifiedName": format!("{}/{}", r.object(), f.field)}]
                }]
            }));
        }
    }
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "kube-baseline",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "results": sarif_results,
        }]
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

fn render_junit(results: &[ObjectResult]) -> String {
    let s = summary(results);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"kube-baseline\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">",
        s.objects, s.denied, s.skipped
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"kube-baseline check\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">",
        s.objects, s.denied, s.skipped
    );
    for r in results {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\">",
            xml_escape(&format!("{}:{}", r.file, r.line)),
            xml_escape(&r.object())
        );
        if r.verdict == "skipped" {
            out.push_str("<skipped message=\"not a workload kind\"/>");
        } else if r.denied() {
            let message = r.message.as_deref().unwrap_or("denied");
            let _ = write!(
                out,
                "<failure message=\"{} violates the platform baseline\" type=\"denied\">{}</failure>",
                xml_escape(&r.object()),
                xml_escape(message)
            );
        }
        if !r.warnings.is_empty() {
            let _ = write!(
                out,
                "<system-out>{}</system-out>",
                xml_escape(&r.warnings.join("\n"))
            );
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// Build the snapshot `check` evaluates with: the configuration, and the exceptions and ADR
/// index when given, read with the same parser and validation as the webhook's file source.
pub fn snapshot(args: &CheckArgs, now: DateTime<Utc>) -> Result<Snapshot, CheckError> {
    use crate::exceptions::metrics::ExceptionMetrics;
    use crate::exceptions::source::FileSource;
    use crate::exceptions::{AdrIndex, Registry};

    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    };
    let exceptions = match (&args.exceptions, &args.adrs) {
        (None, None) => Registry::default(),
        (Some(_), None) => return Err(CheckError::Exceptions(
            "--exceptions DIR needs --adrs FILE: an exception waives only when its ADR is accepted"
                .into(),
        )),
        (None, Some(adrs)) => {
            let index = AdrIndex::load(adrs).map_err(|e| CheckError::Exceptions(e.to_string()))?;
            Registry::with_adrs(std::sync::Arc::new(index))
        }
        (Some(dir), Some(adrs)) => {
            AdrIndex::load(adrs).map_err(|e| CheckError::Exceptions(e.to_string()))?;
            if !dir.is_dir() {
                return Err(CheckError::Exceptions(format!(
                    "--exceptions {}: not a directory",
                    dir.display()
                )));
            }
            let mut source = FileSource::new(
                dir.clone(),
                adrs.clone(),
                std::sync::Arc::new(config.clone()),
                ExceptionMetrics::default(),
            );
            let report = source.scan();
            if !report.errors.is_empty() {
                return Err(CheckError::Exceptions(report.errors.join("; ")));
            }
            let registry = source.registry(now);
            for bad in registry.invalid() {
                let problems: Vec<String> = bad.problems.iter().map(|p| p.to_string()).collect();
                eprintln!(
                    "kube-baseline check: warning: exception {} ({}) waives nothing: {}",
                    bad.name,
                    bad.origin,
                    problems.join("; ")
                );
            }
            registry
        }
    };
    Ok(Snapshot { config, exceptions })
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let now = args.now.unwrap_or_else(Utc::now);
    let outcome = snapshot(&args, now).and_then(|snapshot| {
        let docs = read_paths(&args.paths)?;
        Ok((snapshot, docs))
    });
    let (snapshot, docs) = match outcome {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("kube-baseline check: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let results = evaluate(&snapshot, &docs, &args.namespace, now, args.show_mutations);
    let color = args.output == Format::Text
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none();
    print!("{}", render(&results, args.output, &snapshot.config, color));
    Ok(ExitCode::from(exit_code(&results, args.strict)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_keep_their_line_numbers() {
        let text = "# comment\napiVersion: v1\nkind: A\n---\n\n---\napiVersion: v1\nkind: B\n";
        let docs = parse_text("f.yaml", text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!((docs[0].line, docs[1].line), (2, 7));
    }

    #[test]
    fn a_yaml_error_names_file_and_line() {
        let text = "apiVersion: v1\nkind: A\n---\napiVersion: v1\nkind: [B\n";
        let err = parse_text("f.yaml", text).unwrap_err().to_string();
        assert!(
            err.starts_with("f.yaml:5:") || err.starts_with("f.yaml:6:"),
            "{err}"
        );
    }

    #[test]
    fn lists_are_flattened() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[{"kind":"A"},{"kind":"B"}]}"#;
        assert_eq!(parse_text("l.json", text).unwrap().len(), 2);
    }
}
