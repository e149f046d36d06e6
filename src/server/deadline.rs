//! The API server's deadline: `?timeout=10s` on every webhook call, in Go's duration syntax.

use std::time::Duration;

/// The API server's default `timeoutSeconds`, used when a call carries no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a review may take: the API server's timeout minus a margin for the network and
/// for writing the answer. The margin is capped at half the timeout, so a short timeout still
/// leaves time to evaluate (`timeout=1s` with the default 1 s margin gives 500 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub timeout: Duration,
    pub margin: Duration,
    pub budget: Duration,
}

impl Deadline {
    pub fn new(timeout: Duration, margin: Duration) -> Self {
        let margin = margin.min(timeout / 2);
        Self {
            timeout,
            margin,
            budget: timeout - margin,
        }
    }

    /// From the `timeout` query parameter, or [`DEFAULT_TIMEOUT`] when it is absent or
    /// unreadable.
    pub fn from_query(timeout: Option<&str>, margin: Duration) -> Self {
        let timeout = timeout
            .and_then(parse_go_duration)
            .filter(|t| !t.is_zero())
            .unwrap_or(DEFAULT_TIMEOUT);
        Self::new(timeout, margin)
    }
}

/// Parse a Go `time.Duration` string (`10s`, `1m30s`, `1.5h`, `250ms`, `100us`, `100µs`,
/// `5ns`, `0`). Negative durations are refused (`None`): a deadline cannot be in the past.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    // The API server's form, whole seconds (`10s`): read without the general loop's
    // 128-bit arithmetic, once per review.
    if let Some(digits) = text.strip_suffix('s') {
        if (1..=9).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
            let secs = digits
                .bytes()
                .fold(0, |secs, digit| secs * 10 + u64::from(digit - b'0'));
            return Some(Duration::from_secs(secs));
        }
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return None;
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(after) => {
                let frac_len = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(frac_len)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => return None,
        };
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        total_nanos = total_nanos.checked_add(int.checked_mul(unit_nanos)?)?;
        if !frac_part.is_empty() {
            // Keep 18 digits at most: beyond a nanosecond of an hour they cannot matter.
            let digits = &frac_part[..frac_part.len().min(18)];
            let frac: u128 = digits.parse().ok()?;
            let scale = 10u128.pow(digits.len() as u32);
            total_nanos = total_nanos.checked_add(frac * unit_nanos / scale)?;
        }
        rest = after;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (total_nanos % 1_000_000_000) as u32))
}

/// A clap value parser for duration flags.
pub fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    parse_go_duration(text).ok_or_else(|| {
        format!("{text:?} is not a duration; write it like 500ms, 1s, 1m30s (units ns, us, ms, s, m, h)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_api_server_and_go_write() {
        let cases = [
            ("10s", Duration::from_secs(10)),
            ("0", Duration::ZERO),
            ("1m30s", Duration::from_secs(90)),
            ("1.5h", Duration::from_secs(5400)),
            ("250ms", Duration::from_millis(250)),
            ("100us", Duration::from_micros(100)),
            ("100\u{b5}s", Duration::from_micros(100)),
            ("100\u{3bc}s", Duration::from_micros(100)),
            ("5ns", Duration::from_nanos(5)),
            (".5s", Duration::from_millis(500)),
            ("1h2m3s4ms", Duration::from_millis(3_723_004)),
            ("+2s", Duration::from_secs(2)),
            ("007s", Duration::from_secs(7)),
            ("999999999s", Duration::from_secs(999_999_999)),
            ("9999999999s", Duration::from_secs(9_999_999_999)),
            ("30ms", Duration::from_millis(30)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_duration(text), Some(want), "{text}");
        }
    }

    #[test]
    fn refuses_what_go_refuses_and_negatives() {
        for text in [
            "",
            "10",
            "s",
            "1x",
            "-1s",
            "1s-",
            "1..5s",
            ".s",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_go_duration(text), None, "{text}");
        }
    }

    #[test]
    fn margin_is_capped_at_half_the_timeout() {
        let margin = Duration::from_secs(1);
        assert_eq!(
            Deadline::from_query(Some("10s"), margin).budget,
            Duration::from_secs(9)
        );
        assert_eq!(
            Deadline::from_query(Some("1s"), margin).budget,
            Duration::from_millis(500)
        );
        assert_eq!(Deadline::from_query(None, margin).timeout, DEFAULT_TIMEOUT);
        assert_eq!(
            Deadline::from_query(Some("soon"), margin).timeout,
            DEFAULT_TIMEOUT
        );
    }
}
