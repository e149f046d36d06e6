//! The JSON log line: one object per event, written straight into the line's buffer.
//!
//! tracing-subscriber's own JSON formatter collects an event's fields into a map of
//! `serde_json::Value`s (a `String` allocated per field, then sorted) before writing them:
//! on the decision line of a review that was 13% of the server's instructions per review
//! (callgrind, docs/benchmarks-history.md). This formatter writes each field as the event
//! records it, with JSON escaping, in the layout that formatter used with
//! `flatten_event(true)` and no spans:
//!
//! `{"timestamp":"2026-11-29T18:13:19.123456Z","level":"INFO","message":"decision",
//! "endpoint":"validate",…,"target":"kube_baseline::server::routes"}`
//!
//! Fields keep the order of the event. Strings, `%` (Display) and `?` (Debug) values are JSON
//! strings; integers and booleans are JSON numbers and booleans; non-finite floats, which
//! JSON cannot carry, are strings.

use std::fmt::{self, Write};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{Datelike, Timelike};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::log_writer::LogWriter;
use crate::admission::review::Operation;
use crate::admission::Verdict;
use crate::json_text::{push_decimal, push_escaped};
use crate::metrics::Endpoint;
use crate::policy::PolicyId;

/// The [`FormatEvent`] of `--log-format json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        with_line(|line| {
            write_event(line, SystemTime::now(), event)?;
            writer.write_str(line)
        })
    }
}

/// Runs `build` on an empty `String` of this thread, kept from line to line: a line is some 80
/// small pieces, handed over in one write.
fn with_line<R>(build: impl FnOnce(&mut String) -> R) -> R {
    thread_local! {
        static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    LINE.with(|line| {
        // A value whose `Display` logs would format a line within a line: it gets a buffer of
        // its own.
        let mut own = String::new();
        let mut shared = line.try_borrow_mut();
        let line = match &mut shared {
            Ok(line) => &mut **line,
            Err(_) => &mut own,
        };
        line.clear();
        build(line)
    })
}

fn write_event(out: &mut String, now: SystemTime, event: &Event<'_>) -> fmt::Result {
    let meta = event.metadata();
    write_head(out, now, meta.level())?;
    let mut fields = Fields {
        out,
        result: Ok(()),
    };
    event.record(&mut fields);
    fields.result?;
    out.write_str(",\"target\":")?;
    write_str(out, meta.target())?;
    out.write_str("}\n")
}

/// `{"timestamp":…,"level":…`
fn write_head(out: &mut String, now: SystemTime, level: &tracing::Level) -> fmt::Result {
    out.write_str("{\"timestamp\":\"")?;
    write_timestamp(out, now)?;
    out.write_str("\",\"level\":\"")?;
    out.write_str(level.as_str())?;
    out.write_str("\"")
}

/// The target of the decision line: `server::routes`, which logs it.
pub const DECISION_TARGET: &str = "kube_baseline::server::routes";

/// Where [`DecisionLine::write`] writes: set once by `serve` when it logs JSON lines.
static DECISIONS: OnceLock<LogWriter> = OnceLock::new();

/// From now on, [`DecisionLine::write`] writes to `writer`.
pub fn write_decisions_to(writer: LogWriter) {
    let _ = DECISIONS.set(writer);
}

/// The values of the decision line, one per review. The endpoint, operation, verdict and
/// policies are kube-baseline's own names, written as they are; the request's strings and the
/// ADRs are escaped.
#[derive(Debug, Clone, Copy)]
pub struct DecisionLine<'a> {
    pub endpoint: Endpoint,
    pub uid: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub operation: Operation,
    pub user: &'a str,
    pub dry_run: bool,
    pub verdict: Verdict,
    /// Written comma-separated, as every list of the line.
    pub denied: &'a [PolicyId],
    pub warned: &'a [PolicyId],
    /// The ADRs of the waivers used.
    pub adrs: &'a [&'a str],
    pub mutations: &'a [PolicyId],
    pub latency_us: u64,
}

/// Policies separated by commas.
fn policies(list: &[PolicyId]) -> String {
    list.iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Pushes the policies of `list` separated by commas. Their names need no escape.
fn push_policies(out: &mut String, list: &[PolicyId]) {
    for (i, policy) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(policy.as_str());
    }
}

impl DecisionLine<'_> {
    /// Whether the level filter lets the decision line through (`RUST_LOG`).
    pub fn enabled() -> bool {
        tracing::enabled!(target: DECISION_TARGET, tracing::Level::INFO)
    }

    /// Logs the line: [`DecisionLine::write`] under `serve --log-format json`, otherwise (text
    /// logs, tests) the same event through tracing.
    pub fn log(&self) {
        if !self.write() {
            self.through_tracing();
        }
    }

    fn through_tracing(&self) {
        tracing::info!(
            target: DECISION_TARGET,
            endpoint = self.endpoint.as_str(),
            uid = self.uid,
            kind = self.kind,
            namespace = self.namespace,
            name = self.name,
            operation = self.operation.as_str(),
            user = self.user,
            dry_run = self.dry_run,
            verdict = self.verdict.as_str(),
            denied = policies(self.denied),
            warned = policies(self.warned),
            adrs = self.adrs.join(","),
            mutations = policies(self.mutations),
            latency_us = self.latency_us,
            "decision"
        );
    }

    /// Writes the line that [`JsonLines`] writes for the `decision` event with these fields,
    /// straight to the log writer: no tracing dispatch, no per-field visitor, the names and
    /// punctuation as a few literals. Through tracing, formatting this line was 7% of a
    /// review's instructions in the server (docs/benchmarks-history.md). `false`, writing
    /// nothing, unless `serve` logs JSON lines ([`write_decisions_to`]): the caller then logs
    /// it through tracing. The caller checks the level filter first ([`DecisionLine::enabled`]).
    pub fn write(&self) -> bool {
        let Some(writer) = DECISIONS.get() else {
            return false;
        };
        with_line(|line| {
            self.format(line, SystemTime::now());
            writer.write_line(line.as_bytes());
        });
        true
    }

    fn format(&self, out: &mut String, now: SystemTime) {
        // Writing to a `String` does not fail.
        let _ = write_head(out, now, &tracing::Level::INFO);
        out.push_str(",\"message\":\"decision\",\"endpoint\":\"");
        out.push_str(self.endpoint.as_str());
        out.push_str("\",\"uid\":\"");
        push_escaped(out, self.uid);
        out.push_str("\",\"kind\":\"");
        push_escaped(out, self.kind);
        out.push_str("\",\"namespace\":\"");
        push_escaped(out, self.namespace);
        out.push_str("\",\"name\":\"");
        push_escaped(out, self.name);
        out.push_str("\",\"operation\":\"");
        out.push_str(self.operation.as_str());
        out.push_str("\",\"user\":\"");
        push_escaped(out, self.user);
        out.push_str(if self.dry_run {
            "\",\"dry_run\":true,\"verdict\":\""
        } else {
            "\",\"dry_run\":false,\"verdict\":\""
        });
        out.push_str(self.verdict.as_str());
        out.push_str("\",\"denied\":\"");
        push_policies(out, self.denied);
        out.push_str("\",\"warned\":\"");
        push_policies(out, self.warned);
        out.push_str("\",\"adrs\":\"");
        for (i, adr) in self.adrs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_escaped(out, adr);
        }
        out.push_str("\",\"mutations\":\"");
        push_policies(out, self.mutations);
        out.push_str("\",\"latency_us\":");
        push_decimal(out, self.latency_us);
        out.push_str(",\"target\":\"");
        out.push_str(DECISION_TARGET);
        out.push_str("\"}\n");
    }
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber writes it. The date and time up
/// to the second are formatted once a second per thread; only the microseconds each line.
/// From the system clock directly: `chrono::Utc::now()` works out the calendar date of
/// every reading (~220 instructions), which only a new second needs.
fn write_timestamp(out: &mut String, now: SystemTime) -> fmt::Result {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    // A clock before 1970 is written as the epoch.
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let date = i64::try_from(secs)
                .ok()
                .and_then(|secs| chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0))
                .unwrap_or_default();
            cached.1.clear();
            write!(
                cached.1,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                date.year(),
                date.month(),
                date.day(),
                date.hour(),
                date.minute(),
                date.second(),
            )?;
            cached.0 = secs;
        }
        out.write_str(&cached.1)
    })?;
    let mut micros = since.subsec_micros();
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.write_str(".")?;
    out.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)?;
    out.write_str("Z")
}

/// Writes `,"name":value` for each field of the event.
struct Fields<'a> {
    out: &'a mut String,
    result: fmt::Result,
}

impl Fields<'_> {
    /// `,"name":` and the value as `value` writes it.
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            self.out.write_str(",\"")?;
            Escaped(&mut *self.out).write_str(field.name())?;
            self.out.write_str("\":")?;
            value(&mut *self.out)
        })();
    }

    /// `,"name":"…"`, with what `text` writes escaped between the quotes.
    fn string_field(&mut self, field: &Field, text: impl FnOnce(&mut Escaped<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            self.out.write_str(",\"")?;
            Escaped(&mut *self.out).write_str(field.name())?;
            self.out.write_str("\":\"")?;
            text(&mut Escaped(&mut *self.out))?;
            self.out.write_str("\"")
        })();
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string_field(field, |out| out.write_str(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |out| {
            push_decimal(out, value);
            Ok(())
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |out| {
            if value < 0 {
                out.push('-');
            }
            push_decimal(out, value.unsigned_abs());
            Ok(())
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, |out| {
            if value.is_finite() {
                write!(out, "{value}")
            } else {
                write!(out, "\"{value}\"")
            }
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.string_field(field, |out| write!(out, "{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.string_field(field, |out| write!(out, "{value:?}"));
    }
}

/// A JSON string, quoted and escaped.
fn write_str(out: &mut String, value: &str) -> fmt::Result {
    out.write_str("\"")?;
    Escaped(&mut *out).write_str(value)?;
    out.write_str("\"")
}

/// Escapes what it is given for the inside of a JSON string (RFC 8259 §7): `"`, `\` and the
/// control characters; everything else, UTF-8 included, is written as it is.
struct Escaped<'a>(&'a mut String);

impl Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_escaped(self.0, s);
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    /// Log output kept in memory, for a test's own subscriber.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn text_of(emit: impl FnOnce()) -> String {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(captured.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        captured.text()
    }

    fn lines_of(emit: impl FnOnce()) -> Vec<serde_json::Value> {
        text_of(emit)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    /// A line without its timestamp, which differs between two lines.
    fn after_timestamp(line: &str) -> &str {
        let at = line
            .find(",\"level\"")
            .unwrap_or_else(|| panic!("no level: {line}"));
        &line[at..]
    }

    #[test]
    fn the_direct_decision_line_is_the_line_tracing_writes() {
        let odd = "a \"quoted\"\\ name\nwith\ttabs, \u{1} and é";
        for (dry_run, text) in [(false, "shop"), (true, odd)] {
            let line = DecisionLine {
                endpoint: Endpoint::Validate,
                uid: "705ab4f5-6393-11e8-b7cc-42010a800002",
                kind: "Deployment",
                namespace: text,
                name: text,
                operation: Operation::Create,
                user: "dev@example.com",
                dry_run,
                verdict: Verdict::Denied,
                denied: &[PolicyId::RunAsNonRoot, PolicyId::ResourceLimits],
                warned: &[PolicyId::HealthProbes],
                adrs: &["ADR-0042", text],
                mutations: &[],
                latency_us: 1234,
            };
            let through_tracing = text_of(|| line.through_tracing());
            let mut direct = String::new();
            line.format(&mut direct, SystemTime::now());
            assert_eq!(after_timestamp(&direct), after_timestamp(&through_tracing));
            assert!(direct.ends_with('\n'));
            let parsed: serde_json::Value = serde_json::from_str(&direct).unwrap();
            assert_eq!(parsed["name"], text);
            assert_eq!(parsed["dry_run"], dry_run);
            assert_eq!(parsed["denied"], "run-as-non-root,resource-limits");
            assert_eq!(parsed["warned"], "health-probes");
            assert_eq!(parsed["adrs"], format!("ADR-0042,{text}"));
            assert_eq!(parsed["mutations"], "");
        }
    }

    #[test]
    fn the_names_written_unescaped_need_no_escape() {
        let verdicts = [
            Verdict::Allowed,
            Verdict::Warned,
            Verdict::Denied,
            Verdict::Skipped,
            Verdict::Invalid,
        ];
        let operations = [
            Operation::Create,
            Operation::Update,
            Operation::Delete,
            Operation::Connect,
        ];
        let names = (PolicyId::ALL.iter().map(|p| p.as_str()))
            .chain(verdicts.iter().map(|v| v.as_str()))
            .chain(operations.iter().map(|o| o.as_str()))
            .chain([Endpoint::Validate, Endpoint::Mutate].map(Endpoint::as_str));
        for name in names {
            let mut escaped = String::new();
            push_escaped(&mut escaped, name);
            assert_eq!(escaped, name);
            assert!(!name.contains(','), "{name}");
        }
    }

    #[test]
    fn without_serve_the_decision_line_is_left_to_tracing() {
        // Only `serve` sets where decision lines go; a test process never does.
        let line = DecisionLine {
            endpoint: Endpoint::Validate,
            uid: "",
            kind: "",
            namespace: "",
            name: "",
            operation: Operation::Create,
            user: "",
            dry_run: false,
            verdict: Verdict::Allowed,
            denied: &[],
            warned: &[],
            adrs: &[],
            mutations: &[],
            latency_us: 0,
        };
        assert!(!line.write());
    }

    #[test]
    fn a_line_is_one_json_object_with_every_field_typed() {
        let lines = lines_of(|| {
            let reason = "a \"quoted\"\\ line\nwith\ttabs and \u{1} and é";
            tracing::info!(
                endpoint = "validate",
                count = 3u64,
                delta = -2i64,
                zero = 0u64,
                max = u64::MAX,
                min = i64::MIN,
                ok = true,
                ratio = 0.5,
                nan = f64::NAN,
                shown = %reason,
                debugged = ?reason,
                "decision"
            );
        });
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["message"], "decision");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["endpoint"], "validate");
        assert_eq!(line["count"], 3);
        assert_eq!(line["delta"], -2);
        assert_eq!(line["zero"], 0);
        assert_eq!(line["max"], u64::MAX);
        assert_eq!(line["min"], i64::MIN);
        assert_eq!(line["ok"], true);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["nan"], "NaN");
        assert_eq!(
            line["shown"],
            "a \"quoted\"\\ line\nwith\ttabs and \u{1} and é"
        );
        assert_eq!(
            line["debugged"],
            format!("{:?}", "a \"quoted\"\\ line\nwith\ttabs and \u{1} and é")
        );
        assert!(line["target"]
            .as_str()
            .unwrap()
            .ends_with("server::json_log::tests"));
    }

    #[test]
    fn the_timestamp_is_rfc3339_utc_with_microseconds() {
        let date = chrono::DateTime::parse_from_rfc3339("2026-03-04T05:06:07.0123456Z").unwrap();
        let now = SystemTime::from(date);
        let mut out = String::new();
        write_timestamp(&mut out, now).unwrap();
        assert_eq!(out, "2026-03-04T05:06:07.012345Z");
        // The same second again (from the thread's cache), then the next one.
        let mut again = String::new();
        write_timestamp(&mut again, now + std::time::Duration::from_micros(7)).unwrap();
        assert_eq!(again, "2026-03-04T05:06:07.012352Z");
        let mut next = String::new();
        write_timestamp(&mut next, now + std::time::Duration::from_secs(1)).unwrap();
        assert_eq!(next, "2026-03-04T05:06:08.012345Z");
        let parsed = chrono::DateTime::parse_from_rfc3339(&out).unwrap();
        assert_eq!(parsed.timestamp(), date.timestamp());
        let mut epoch = String::new();
        write_timestamp(&mut epoch, UNIX_EPOCH - std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(epoch, "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn errors_are_their_display_text() {
        let lines = lines_of(|| {
            let error = std::io::Error::other("disk \"full\"");
            tracing::warn!(error = &error as &dyn std::error::Error, "failed");
        });
        assert_eq!(lines[0]["error"], "disk \"full\"");
        assert_eq!(lines[0]["level"], "WARN");
    }
}
