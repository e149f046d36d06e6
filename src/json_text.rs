//! JSON strings written as serde_json writes them: `"` and `\` escaped, `\b`, `\f`, `\n`, `\r`
//! and `\t` in their short form, every other control character as `\u00xx`, everything else
//! (UTF-8 included) as it is. The answer to a review and the decision log line are written
//! with it: plain runs are found 8 or 16 bytes at a time ([`crate::scan`]) and copied whole,
//! where serde_json looks each byte up and writes through `io::Write`. A denial's message and
//! causes (~3 KB) took ~27,000 instructions in serde_json (callgrind).

use crate::scan::{has_special, long_plain_end};

/// From this length on, a string is scanned sixteen bytes at a time.
const LONG: usize = 64;

/// Pushes the inside of the JSON string for `text` (no quotes).
pub(crate) fn push_escaped(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    // Most short strings (uids, names) have nothing to escape: one check without early
    // exits, one copy. A long one (a denial's message) is scanned once, run by run.
    if bytes.len() < LONG && !has_special(bytes) {
        out.push_str(text);
        return;
    }
    let mut start = 0;
    loop {
        let end = long_plain_end(bytes, start);
        // `start` follows an ASCII byte (or is 0) and `end` is at one (or the end):
        // character boundaries.
        if let Some(run) = text.get(start..end) {
            out.push_str(run);
        }
        let Some(&byte) = bytes.get(end) else {
            return;
        };
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
        }
        start = end + 1;
    }
}

/// Pushes `text` as a JSON string, quotes included.
pub(crate) fn push_string(out: &mut String, text: &str) {
    out.push('"');
    push_escaped(out, text);
    out.push('"');
}

/// Pushes `value` in decimal, without `core::fmt` (every log line has a latency, every
/// answer a code, every finding a container index).
pub(crate) fn push_decimal(out: &mut String, mut value: u64) {
    // Most are one digit: a finding's container index, its line number in the denial.
    if value < 10 {
        out.push(char::from(b'0' + value as u8));
        return;
    }
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // ASCII digits: one copy rather than a push (and its capacity check) each.
    out.push_str(std::str::from_utf8(&digits[start..]).unwrap_or_default());
}

/// Pushes `key` (with the punctuation before it, `,"name":`) and `value` as a JSON string.
pub(crate) fn push_member(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    push_string(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_as_display_writes_them() {
        for value in [0, 7, 9, 10, 99, 100, 403, 65_535, 1_234_567, u64::MAX] {
            let mut out = String::from("[");
            push_decimal(&mut out, value);
            assert_eq!(out, format!("[{value}"));
        }
    }

    #[test]
    fn strings_are_written_byte_for_byte_as_serde_json_writes_them() {
        let mut every_byte = String::new();
        for c in (0u8..0x80).map(char::from) {
            every_byte.push(c);
        }
        let long_plain = "x".repeat(100);
        let long_then_quote = format!("{long_plain}\"");
        let mixed = format!("{}\n{}\u{1}", "é".repeat(40), "y".repeat(70));
        for text in [
            &long_plain,
            &long_then_quote,
            &mixed,
            "",
            "plain",
            "a \"quoted\" \\ line\nwith\ttabs\r, \u{8}\u{c}\u{1}\u{1f}\u{7f} and é ✓",
            "\"",
            "ends with a quote\"",
            &every_byte,
            &every_byte.repeat(3),
        ] {
            let mut ours = String::new();
            push_string(&mut ours, text);
            assert_eq!(ours, serde_json::to_string(text).unwrap(), "{text:?}");
        }
    }
}
