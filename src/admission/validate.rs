//! `/validate`: evaluate the policies, apply exceptions, answer with one denial or warnings.

use std::cell::OnceCell;

use chrono::{DateTime, Utc};

use super::review::{AdmissionRequest, AdmissionResponse, Operation};
use super::{message, Action, Decision, Outcome, Snapshot, Verdict};
use crate::config::{Mode, Modes, NamespaceRules};
use crate::exceptions::{self, index, Exception};
use crate::policy::{self, Finding, PolicyId};
use crate::workload::Workload;

/// The time a review is judged at, for the exceptions' expiry. The server's is read from the
/// clock the first time an exception needs it: a review that no exception covers (almost
/// all of them) does not read the wall clock and convert it (~250 instructions).
pub enum Now {
    /// A given time ([`validate`]'s: `check`, tests).
    At(DateTime<Utc>),
    /// The wall clock, read once on first use.
    Clock(OnceCell<DateTime<Utc>>),
}

impl Now {
    /// The wall clock, not read yet.
    pub fn clock() -> Self {
        Now::Clock(OnceCell::new())
    }

    pub fn get(&self) -> DateTime<Utc> {
        match self {
            Now::At(at) => *at,
            Now::Clock(read) => *read.get_or_init(Utc::now),
        }
    }
}

/// The workload a review is about, or why it is not evaluated.
pub(crate) enum Subject<'a> {
    Workload(Box<Workload<'a>>),
    /// Not evaluated (wrong operation, subresource, other kind, excluded namespace).
    Skip,
    /// A known kind whose object cannot be read.
    Invalid(String),
}

/// Decide whether a review is evaluated, and decode its object once (unless `decoded`, from
/// [`decode_review`](super::review::decode_review), has it already). `rules` are the review's
/// namespace's ([`rules_of`]).
pub(crate) fn subject<'a>(
    request: &AdmissionRequest,
    rules: &NamespaceRules,
    decoded: Option<Box<Workload<'a>>>,
) -> Subject<'a> {
    if matches!(request.operation, Operation::Delete | Operation::Connect) {
        return Subject::Skip;
    }
    if request
        .sub_resource
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return Subject::Skip;
    }
    let Some(kind) = request.workload_kind() else {
        return Subject::Skip;
    };
    if rules.excluded {
        return Subject::Skip;
    }
    if let Some(workload) = decoded {
        return Subject::Workload(workload);
    }
    let Some(json) = request.object_json() else {
        return Subject::Invalid(format!("{kind} review has no object to evaluate"));
    };
    match Workload::from_json(kind, json) {
        Ok(workload) => Subject::Workload(Box::new(workload)),
        Err(e) => Subject::Invalid(e.to_string()),
    }
}

pub fn namespace_of(request: &AdmissionRequest) -> &str {
    request
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default")
}

/// Whether the review's namespace is excluded and the policies' modes in it: looked up once
/// per review and handed to [`prepare`], the signature check and [`finish`].
pub fn rules_of(snapshot: &Snapshot, request: &AdmissionRequest) -> NamespaceRules {
    snapshot.config.namespace(namespace_of(request))
}

/// Evaluate a review against the snapshot at time `now`.
pub fn validate(snapshot: &Snapshot, request: &AdmissionRequest, now: DateTime<Utc>) -> Decision {
    validate_decoded(snapshot, request, None, now)
}

/// [`validate`] of a review from [`decode_review`](super::review::decode_review), whose
/// workload `decoded` was read in the same pass as the envelope. Image signatures are the
/// server's (I/O); here they are not checked.
pub fn validate_decoded(
    snapshot: &Snapshot,
    request: &AdmissionRequest,
    decoded: Option<Box<Workload>>,
    now: DateTime<Utc>,
) -> Decision {
    let rules = rules_of(snapshot, request);
    let now = Now::At(now);
    match prepare(snapshot, request, &rules, decoded, &now) {
        Prepared::Decided(decision) => decision,
        Prepared::Workload(workload) => {
            finish(snapshot, request, &rules, &workload, Vec::new(), &now)
        }
    }
}

/// The first half of a review: decided already, or a workload to evaluate.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // made and consumed once per review, never stored
pub enum Prepared<'a> {
    Decided(Decision),
    Workload(Box<Workload<'a>>),
}

/// Decide what needs no evaluation (BaselineException reviews, skips, unreadable objects) and
/// decode the workload of the others once. The server verifies image signatures (I/O) between
/// [`prepare`] and [`finish`]. `decoded` is the workload of a [`Review`](super::review::Review);
/// `rules` are its namespace's ([`rules_of`]).
pub fn prepare<'a>(
    snapshot: &Snapshot,
    request: &AdmissionRequest,
    rules: &NamespaceRules,
    decoded: Option<Box<Workload<'a>>>,
    now: &Now,
) -> Prepared<'a> {
    // Before the DELETE skip of `subject`: deleting an exception is an approver's act too.
    if exceptions::admission::is_exception_review(request) {
        return Prepared::Decided(exceptions::admission::review(snapshot, request, now.get()));
    }
    match subject(request, rules, decoded) {
        Subject::Workload(w) => Prepared::Workload(w),
        Subject::Skip => Prepared::Decided(Decision::skipped(&request.uid)),
        Subject::Invalid(reason) => Prepared::Decided(Decision::of(
            AdmissionResponse::invalid(&request.uid, reason),
            Verdict::Invalid,
        )),
    }
}

/// Evaluate the policies, add the `image-signature` findings the server verified, and decide.
pub fn finish(
    snapshot: &Snapshot,
    request: &AdmissionRequest,
    rules: &NamespaceRules,
    workload: &Workload,
    signature_findings: Vec<Finding>,
    now: &Now,
) -> Decision {
    let namespace = namespace_of(request);
    let modes = &rules.modes;
    let mut findings = policy::evaluate(&snapshot.config, workload, modes);
    findings.extend(signature_findings);
    // Nothing to decide: allowed as it is. `decide`, out of line, keeps the code of denials,
    // warnings and waivers off the cache lines a compliant review runs
    // (docs/benchmarks-history.md).
    if findings.is_empty() {
        return Decision::of(AdmissionResponse::allow(&request.uid), Verdict::Allowed);
    }
    decide(
        snapshot,
        &request.uid,
        workload,
        namespace,
        modes,
        findings,
        now,
    )
}

/// Audit annotation keys. The API server records them as `<webhook name>/<key>`, so the key
/// itself must be a plain name without a `/`.
pub const AUDIT_WAIVED_BY: &str = "waived-by";
pub const AUDIT_WAIVERS: &str = "waivers";

/// Turn findings into a response: findings of exemptable policies covered by an active
/// exception are waived (a warning each, audit annotations naming the ADRs); the remaining
/// enforce findings → one denial, warn findings → warnings.
#[inline(never)]
pub(crate) fn decide(
    snapshot: &Snapshot,
    uid: &str,
    workload: &Workload,
    namespace: &str,
    modes: &Modes,
    findings: Vec<Finding>,
    now: &Now,
) -> Decision {
    let config = &snapshot.config;
    let candidates: Vec<&Exception> = if findings
        .iter()
        .any(|f| config.policies.exemptable(f.policy))
    {
        snapshot
            .exceptions
            .matching(namespace, workload.kind, &workload.name)
    } else {
        Vec::new()
    };
    // Usually every finding is a denial: room for all of them, not grown 4 then 8 (a copy).
    let mut denials = Vec::with_capacity(findings.len());
    let mut warnings = Vec::new();
    let mut waived: Vec<(Finding, &Exception)> = Vec::new();
    // Exceptions that matched a denied finding but waive nothing.
    let mut inactive: Vec<&Exception> = Vec::new();
    for finding in findings {
        let mode = modes.get(finding.policy);
        if mode == Mode::Off {
            continue;
        }
        if config.policies.exemptable(finding.policy) && !candidates.is_empty() {
            let coverage = index::coverage(&candidates, &finding, now.get());
            if let Some(exception) = coverage.waiver {
                waived.push((finding, exception));
                continue;
            }
            if mode == Mode::Enforce {
                for e in coverage.inactive {
                    if !inactive.iter().any(|x| x.name == e.name) {
                        inactive.push(e);
                    }
                }
            }
        }
        match mode {
            Mode::Enforce => denials.push(finding),
            Mode::Warn => warnings.push(finding),
            Mode::Off => {}
        }
    }
    let mut denied_by: Vec<_> = denials.iter().map(|f| f.policy).collect();
    denied_by.dedup();
    let mut warned_by: Vec<_> = warnings.iter().map(|f| f.policy).collect();
    warned_by.dedup();
    let mut warning_lines: Vec<String> = warnings.iter().map(message::warning).collect();

    let (mut response, verdict, waivers) = if denials.is_empty() {
        let mut used: Vec<&Exception> = Vec::new();
        for (finding, e) in &waived {
            push_unique(&mut warning_lines, waiver_warning(finding, e));
            if !used.iter().any(|u| u.name == e.name) {
                used.push(e);
            }
        }
        let warning_days = config.exceptions.expiry_warning_days;
        for e in &used {
            if exceptions::expiring(e, now.get(), warning_days) {
                push_unique(&mut warning_lines, expiry_warning(e, now.get()));
            }
        }
        let verdict = if warning_lines.is_empty() {
            Verdict::Allowed
        } else {
            Verdict::Warned
        };
        let mut response = AdmissionResponse::allow(uid);
        let mut waivers: Vec<(String, PolicyId)> = Vec::new();
        if !waived.is_empty() {
            let mut adrs: Vec<&str> = used.iter().map(|e| e.adr.as_str()).collect();
            adrs.sort_unstable();
            adrs.dedup();
            response
                .audit_annotations
                .insert(AUDIT_WAIVED_BY.into(), adrs.join(","));
            let mut details: Vec<String> = Vec::new();
            for (finding, e) in &waived {
                push_unique(&mut details, audit_detail(finding, e));
                let key = (e.adr.clone(), finding.policy);
                if !waivers.contains(&key) {
                    waivers.push(key);
                }
            }
            response
                .audit_annotations
                .insert(AUDIT_WAIVERS.into(), details.join("; "));
        }
        (response, verdict, waivers)
    } else {
        let mut text = message::denial(workload, namespace, &denials, &config.policies);
        for e in &inactive {
            let why = e.why_inactive(now.get()).unwrap_or_default();
            text.push_str(&format!(
                "\nBaselineException {} ({}) matches but waives nothing: {why}.",
                e.name, e.adr
            ));
        }
        if !waived.is_empty() {
            let mut lines: Vec<String> = Vec::new();
            for (finding, e) in &waived {
                push_unique(&mut lines, waiver_warning(finding, e));
            }
            text.push_str(&format!("\nAlready waived: {}.", lines.join("; ")));
        }
        let causes = denials.iter().map(message::cause).collect();
        (
            AdmissionResponse::deny(uid, text, causes),
            Verdict::Denied,
            Vec::new(),
        )
    };
    response.warnings = warning_lines;
    let plain = |action: Action| {
        move |finding| Outcome {
            finding,
            action,
            waived_by: None,
        }
    };
    let outcomes = denials
        .into_iter()
        .map(plain(Action::Denied))
        .chain(warnings.into_iter().map(plain(Action::Warned)))
        .chain(waived.into_iter().map(|(finding, e)| Outcome {
            finding,
            action: Action::Waived,
            waived_by: Some(e.adr.clone()),
        }))
        .collect();
    Decision {
        response,
        verdict,
        denied_by,
        warned_by,
        waivers,
        mutations: Vec::new(),
        outcomes,
    }
}

fn push_unique(lines: &mut Vec<String>, line: String) {
    if !lines.contains(&line) {
        lines.push(line);
    }
}

/// Pushes `container "nginx"` or `pod`: what a finding is about.
fn push_subject(out: &mut String, finding: &Finding) {
    match &finding.container {
        Some(c) => {
            out.push_str("container ");
            message::push_quoted(out, c);
        }
        None => out.push_str("pod"),
    }
}

/// Pushes a date as `2027-03-31`, as chrono's `format("%Y-%m-%d")` writes it for years 0 to
/// 9999 (which parses its pattern on every call), digit by digit: `write!` with three padded
/// numbers was a tenth of a waived review's time.
fn push_day(out: &mut String, t: DateTime<Utc>) {
    use chrono::Datelike;
    // The UTC date itself: `DateTime`'s own year(), month() and day() each add the offset to
    // the whole date and time first (~300 instructions apiece).
    let date = t.naive_utc().date();
    let digit = |n: u32| char::from(b'0' + (n % 10) as u8);
    match u32::try_from(date.year()) {
        Ok(year) if year <= 9999 => {
            out.extend([year / 1000, year / 100, year / 10, year].map(digit));
        }
        _ => {
            use std::fmt::Write;
            let _ = write!(out, "{:04}", date.year());
        }
    }
    out.push('-');
    out.extend([date.month() / 10, date.month()].map(digit));
    out.push('-');
    out.extend([date.day() / 10, date.day()].map(digit));
}

/// `read-only-root-filesystem waived for container "nginx" by ADR-0042 until 2027-03-31`.
/// Pushed piece by piece: through `format!` it took ~40% of a waived review's evaluation.
fn waiver_warning(finding: &Finding, e: &Exception) -> String {
    let container = finding.container.as_ref().map_or(0, String::len);
    let mut line = String::with_capacity(64 + container + e.adr.len());
    line.push_str(finding.policy.as_str());
    line.push_str(" waived for ");
    push_subject(&mut line, finding);
    line.push_str(" by ");
    line.push_str(&e.adr);
    line.push_str(" until ");
    push_day(&mut line, e.expires);
    message::truncate(line)
}

/// `BaselineException adr-0042-legacy-nginx (ADR-0042) expires 2027-03-31, in 5 days: renew or fix`.
fn expiry_warning(e: &Exception, now: DateTime<Utc>) -> String {
    let days = (e.expires - now).num_days();
    let when = match days {
        0 => "today".to_owned(),
        1 => "in 1 day".to_owned(),
        n => format!("in {n} days"),
    };
    let mut day = String::with_capacity(10);
    push_day(&mut day, e.expires);
    message::truncate(format!(
        "BaselineException {} ({}) expires {day}, {when}: renew it or fix the workload",
        e.name, e.adr,
    ))
}

/// `read-only-root-filesystem/nginx by ADR-0042 (adr-0042-legacy-nginx)`.
fn audit_detail(finding: &Finding, e: &Exception) -> String {
    let who = finding.container.as_deref().unwrap_or("pod");
    let policy = finding.policy.as_str();
    let mut detail =
        String::with_capacity(policy.len() + who.len() + e.adr.len() + e.name.len() + 8);
    for piece in [policy, "/", who, " by ", &e.adr, " (", &e.name, ")"] {
        detail.push_str(piece);
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review::decode;

    #[test]
    fn a_day_is_written_as_chrono_writes_it() {
        for text in [
            "2027-03-31T00:00:00Z",
            "2026-01-05T23:59:59Z",
            "0999-12-01T12:00:00Z",
            "0007-10-09T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            let t = DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc);
            let mut day = String::from("until ");
            push_day(&mut day, t);
            assert_eq!(day, t.format("until %Y-%m-%d").to_string());
        }
    }

    #[test]
    fn a_review_reads_the_clock_once_and_only_when_asked() {
        let now = Now::clock();
        assert!(matches!(&now, Now::Clock(read) if read.get().is_none()));
        let before = Utc::now();
        let first = now.get();
        std::thread::sleep(std::time::Duration::from_millis(2));
        // Every exception of one review is judged at the same instant.
        assert_eq!(now.get(), first);
        assert!(first >= before && first < Utc::now());
        let at = before - chrono::Duration::days(3);
        assert_eq!(Now::At(at).get(), at);
    }
    use crate::config::Config;

    fn run(file: &str) -> Decision {
        let body = std::fs::read(format!("tests/data/apiserver/{file}")).unwrap();
        let request = decode(&body).unwrap();
        validate(&Snapshot::new(Config::embedded()), &request, Utc::now())
    }

    #[test]
    fn every_captured_compliant_workload_is_allowed_without_warnings() {
        for file in crate::admission::CAPTURED_COMPLIANT {
            let d = run(file);
            assert_eq!(d.verdict, Verdict::Allowed, "{file}: {:?}", d.response);
        }
    }

    #[test]
    fn delete_is_not_evaluated() {
        assert_eq!(
            run("delete-deployment-validate.json").verdict,
            Verdict::Skipped
        );
    }
}
