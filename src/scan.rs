//! A JSON pull parser for the one hot path: an AdmissionReview read straight into the
//! [`Review`](crate::admission::review::Review) the engine evaluates.
//!
//! serde_json through `#[derive(Deserialize)]` spent most of a review's own time there: each
//! nested struct is built in the visitor's locals, returned in a `Result`, wrapped in an
//! `Option` and moved into its parent, and every key and skipped value goes through the
//! generic `Visitor` machinery (docs/benchmarks-history.md). The decoders built on this parser
//! (`admission::review::fast`, `workload::fast`) fill the same types in place.
//!
//! The parser only has to be right when it succeeds. Anything it does not handle the way
//! serde_json would, or that serde_json would refuse, makes it give up with [`Bail`], and the
//! caller decodes the body with serde instead, which gives the answer or the error message it
//! always has. So it is at least as strict as serde_json:
//! - whitespace is JSON's four characters; numbers follow RFC 8259's grammar; literals are
//!   spelled out; strings refuse control characters and unknown escapes;
//! - every value it skips is checked as serde_json checks an ignored value (a `\u` escape in
//!   a skipped string needs four hex digits; its code point is not checked, as in serde_json);
//! - a string it keeps must have valid escapes: a lone surrogate gives up (serde_json refuses
//!   it);
//! - nesting deeper than [`MAX_DEPTH`] gives up (serde_json refuses past 128);
//! - integers with a fraction or an exponent, `-0`, or out of range, give up (serde_json
//!   reads them as floats, or refuses them, for an integer field).
//!
//! The text is a `&str` (the body is checked to be UTF-8 once): a string without escapes is
//! a slice of it, and every slice starts and ends next to an ASCII quote.

use std::borrow::Cow;

/// The fast path gave up: decode with serde instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bail;

pub type Scan<T> = Result<T, Bail>;

/// Deepest nesting of arrays and objects the parser follows.
pub const MAX_DEPTH: u32 = 100;

/// A cursor over a JSON text.
#[derive(Debug)]
pub struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: u32,
}

/// `byte` repeated in each of a word's 8 bytes.
const fn splat(byte: u8) -> u64 {
    u64::from_le_bytes([byte; 8])
}

const LOW_BITS: u64 = splat(0x01);
const HIGH_BITS: u64 = splat(0x80);

/// The high bit of the lowest byte of `word` that is below `n` (n ≤ 0x80) is set, and no
/// lower byte's is. Bytes above a match may be flagged falsely (by the borrow), never below:
/// the lowest flag is exact.
const fn bytes_below(word: u64, n: u8) -> u64 {
    word.wrapping_sub(splat(n)) & !word & HIGH_BITS
}

/// The same for bytes equal to 0.
const fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(LOW_BITS) & !word & HIGH_BITS
}

/// Whether a byte ends the plain run of a string: a quote, a backslash or a control
/// character.
const fn is_special(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < 0x20
}

/// The index of the first byte at or after `from` that [`is_special`], or `bytes.len()`.
/// Eight bytes at a time: the strings of a review are mostly plain and often long (image
/// references, the `last-applied-configuration` annotation).
#[inline(always)]
pub(crate) fn plain_end(bytes: &[u8], mut from: usize) -> usize {
    while let Some(chunk) = bytes.get(from..from + 8) {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let found = special_bytes(u64::from_le_bytes(chunk));
        if found != 0 {
            return from + (found.trailing_zeros() / 8) as usize;
        }
        from += 8;
    }
    while from < bytes.len() && !is_special(bytes[from]) {
        from += 1;
    }
    from
}

/// [`plain_end`] for long runs (a denial's message): sixteen bytes at a time first, in a
/// loop the compiler turns into vector compares (~1.3 instructions a byte against the word
/// loop's ~3), then [`plain_end`] for the chunk the run ends in. Slower than [`plain_end`]
/// for a run shorter than sixteen bytes, as most of a review's strings are.
pub(crate) fn long_plain_end(bytes: &[u8], mut from: usize) -> usize {
    while let Some(chunk) = bytes.get(from..from + 16) {
        let Ok(chunk) = <&[u8; 16]>::try_from(chunk) else {
            break;
        };
        // `|` rather than `||`: no early exit, so that the chunk is compared as a vector.
        let special = chunk.iter().fold(false, |any, &b| {
            any | (b == b'"') | (b == b'\\') | (b < 0x20)
        });
        if special {
            break;
        }
        from += 16;
    }
    plain_end(bytes, from)
}

/// The flags of the bytes of `word` that [`is_special`]: none when none is, the lowest exact.
#[inline(always)]
const fn special_bytes(word: u64) -> u64 {
    zero_bytes(word ^ splat(b'"')) | zero_bytes(word ^ splat(b'\\')) | bytes_below(word, 0x20)
}

/// Whether any byte of `bytes` [`is_special`]: must be escaped in a JSON string. Eight bytes
/// at a time with no early exit, the last eight overlapping the word before them; the log
/// line and the answer check each string they write, mostly short and plain (uids, names).
pub(crate) fn has_special(bytes: &[u8]) -> bool {
    let word = |chunk: &[u8]| <[u8; 8]>::try_from(chunk).map_or(0, u64::from_le_bytes);
    if bytes.len() < 8 {
        return bytes.iter().any(|&byte| is_special(byte));
    }
    let mut found = 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        found |= special_bytes(word(chunk));
    }
    if !chunks.remainder().is_empty() {
        found |= special_bytes(word(&bytes[bytes.len() - 8..]));
    }
    found != 0
}

fn hex_digit(byte: u8) -> Scan<u16> {
    match byte {
        b'0'..=b'9' => Ok(u16::from(byte - b'0')),
        b'a'..=b'f' => Ok(u16::from(byte - b'a' + 10)),
        b'A'..=b'F' => Ok(u16::from(byte - b'A' + 10)),
        _ => Err(Bail),
    }
}

impl<'a> Parser<'a> {
    pub fn new(text: &'a str) -> Self {
        Parser {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            depth: 0,
        }
    }

    /// Compact JSON, as the API server sends it, has no whitespace: one comparison, and the
    /// loop past whitespace is a function of its own rather than inlined at every call site.
    #[inline(always)]
    fn skip_whitespace(&mut self) {
        if self.bytes.get(self.pos).is_some_and(|&byte| byte <= b' ') {
            self.skip_whitespace_run();
        }
    }

    #[cold]
    #[inline(never)]
    fn skip_whitespace_run(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte that is not whitespace, not consumed.
    #[inline(always)]
    pub fn peek(&mut self) -> Scan<u8> {
        match self.bytes.get(self.pos) {
            Some(&byte) if byte > b' ' => Ok(byte),
            _ => self.peek_past_whitespace(),
        }
    }

    #[cold]
    #[inline(never)]
    fn peek_past_whitespace(&mut self) -> Scan<u8> {
        self.skip_whitespace_run();
        self.bytes.get(self.pos).copied().ok_or(Bail)
    }

    #[inline(always)]
    fn eat(&mut self, byte: u8) -> Scan<()> {
        if self.peek()? == byte {
            self.pos += 1;
            Ok(())
        } else {
            Err(Bail)
        }
    }

    fn literal(&mut self, word: &str) -> Scan<()> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> Scan<()> {
        self.skip_whitespace();
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// Consumes `null` if it comes next.
    pub fn null(&mut self) -> Scan<bool> {
        if self.peek()? == b'n' {
            self.literal("null")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn enter(&mut self) -> Scan<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(Bail)
        } else {
            Ok(())
        }
    }

    /// `open`, then items separated by commas (`item` consumes one), then `close`.
    #[inline(always)]
    fn delimited(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Scan<()>,
    ) -> Scan<()> {
        self.eat(open)?;
        self.enter()?;
        if self.peek()? == close {
            self.pos += 1;
        } else {
            loop {
                item(self)?;
                match self.peek()? {
                    b',' => self.pos += 1,
                    byte if byte == close => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(Bail),
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// An object: `field` is called with each key and must consume its value.
    pub fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Scan<()>) -> Scan<()> {
        self.delimited(b'{', b'}', |p| {
            let key = p.key()?;
            p.eat(b':')?;
            field(p, key)
        })
    }

    /// An object whose members `member` reads, each from its key's opening quote (for
    /// [`fields!`]).
    #[inline(always)]
    pub fn members(&mut self, mut member: impl FnMut(&mut Self) -> Scan<()>) -> Scan<()> {
        self.delimited(b'{', b'}', |p| {
            if p.peek()? != b'"' {
                return Err(Bail);
            }
            member(p)
        })
    }

    /// Consumes `quoted` (a key with its quotes) if the text continues with it.
    #[inline(always)]
    pub fn quoted_key(&mut self, quoted: &'static str) -> bool {
        let quoted = quoted.as_bytes();
        // The key's first letter first: one comparison rules out most of the listed keys.
        if self.bytes.get(self.pos + 1) != quoted.get(1) {
            return false;
        }
        let end = self.pos + quoted.len();
        if self.bytes.get(self.pos..end) == Some(quoted) {
            self.pos = end;
            true
        } else {
            false
        }
    }

    /// A member whose key no reader lists: its key, colon and value skipped. Out of line, one
    /// copy for every [`fields!`] rather than one inlined in each.
    #[inline(never)]
    pub fn skip_member(&mut self) -> Scan<()> {
        self.key()?;
        self.colon()?;
        self.skip()
    }

    /// The `:` after a key.
    #[inline(always)]
    pub fn colon(&mut self) -> Scan<()> {
        self.eat(b':')
    }

    /// An array: `item` is called for each element and must consume it.
    pub fn array(&mut self, item: impl FnMut(&mut Self) -> Scan<()>) -> Scan<()> {
        self.delimited(b'[', b']', item)
    }

    /// The start of the string whose opening quote comes next, and the end of its plain run.
    #[inline(always)]
    fn plain_run(&mut self) -> Scan<(usize, usize)> {
        if self.peek()? != b'"' {
            return Err(Bail);
        }
        let start = self.pos + 1;
        Ok((start, plain_end(self.bytes, start)))
    }

    /// A string, borrowed from the text when it has no escapes.
    #[inline]
    pub fn string(&mut self) -> Scan<Cow<'a, str>> {
        let (start, end) = self.plain_run()?;
        if self.bytes.get(end) == Some(&b'"') {
            self.pos = end + 1;
            // Both ends are next to an ASCII quote: character boundaries.
            self.text.get(start..end).map(Cow::Borrowed).ok_or(Bail)
        } else {
            self.escaped_string(start, end).map(Cow::Owned)
        }
    }

    /// A key: a string without escapes (serde decides about a key with one; the API server
    /// does not write them).
    #[inline(always)]
    pub fn key(&mut self) -> Scan<&'a str> {
        let (start, end) = self.plain_run()?;
        if self.bytes.get(end) != Some(&b'"') {
            return Err(Bail);
        }
        self.pos = end + 1;
        self.text.get(start..end).ok_or(Bail)
    }

    /// The rest of a string from the end of its first plain run at `end`.
    #[cold]
    #[inline(never)]
    fn escaped_string(&mut self, start: usize, mut end: usize) -> Scan<String> {
        let mut out = String::with_capacity(end - start + 16);
        out.push_str(self.text.get(start..end).ok_or(Bail)?);
        loop {
            match self.bytes.get(end) {
                Some(b'"') => {
                    self.pos = end + 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    end = self.unescape(end + 1, &mut out)?;
                    let run = plain_end(self.bytes, end);
                    out.push_str(self.text.get(end..run).ok_or(Bail)?);
                    end = run;
                }
                _ => return Err(Bail),
            }
        }
    }

    /// Decodes the escape after a backslash at `at - 1` into `out`; returns where it ends.
    fn unescape(&self, at: usize, out: &mut String) -> Scan<usize> {
        let simple = match self.bytes.get(at) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let (code, end) = self.unicode_escape(at)?;
                out.push(char::from_u32(code).ok_or(Bail)?);
                return Ok(end);
            }
            _ => return Err(Bail),
        };
        out.push(simple);
        Ok(at + 1)
    }

    /// The code point of the `\u` escape whose `u` is at `at`, and where the escape ends: a
    /// surrogate pair is read whole, a lone surrogate refused, as serde_json refuses it.
    fn unicode_escape(&self, at: usize) -> Scan<(u32, usize)> {
        let high = self.hex4(at + 1)?;
        match high {
            0xD800..=0xDBFF => {
                if self.bytes.get(at + 5..at + 7) != Some(b"\\u") {
                    return Err(Bail);
                }
                let low = self.hex4(at + 7)?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(Bail);
                }
                let code = 0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(low) - 0xDC00);
                Ok((code, at + 11))
            }
            0xDC00..=0xDFFF => Err(Bail),
            _ => Ok((u32::from(high), at + 5)),
        }
    }

    fn hex4(&self, at: usize) -> Scan<u16> {
        let digits = self.bytes.get(at..at + 4).ok_or(Bail)?;
        digits
            .iter()
            .try_fold(0u16, |value, &digit| Ok(value << 4 | hex_digit(digit)?))
    }

    /// A string, owned.
    pub fn owned_string(&mut self) -> Scan<String> {
        self.string().map(Cow::into_owned)
    }

    pub fn bool(&mut self) -> Scan<bool> {
        match self.peek()? {
            b't' => self.literal("true").map(|()| true),
            b'f' => self.literal("false").map(|()| false),
            _ => Err(Bail),
        }
    }

    /// An integer without fraction or exponent that fits an `i64`.
    pub fn i64(&mut self) -> Scan<i64> {
        self.skip_whitespace();
        let negative = self.bytes.get(self.pos) == Some(&b'-');
        if negative {
            self.pos += 1;
        }
        let start = self.pos;
        // The digits as a u64, checked against i64's range once at the end: 19 digits fit
        // a u64, and a twentieth (without a leading zero) is past i64's range anyway.
        let mut magnitude: u64 = 0;
        while let Some(&digit @ b'0'..=b'9') = self.bytes.get(self.pos) {
            if self.pos - start == 19 {
                return Err(Bail);
            }
            magnitude = magnitude * 10 + u64::from(digit - b'0');
            self.pos += 1;
        }
        let value = if negative {
            0i64.checked_sub_unsigned(magnitude)
        } else {
            i64::try_from(magnitude).ok()
        }
        .ok_or(Bail)?;
        let digits = self.pos - start;
        let leading_zero = digits > 1 && self.bytes[start] == b'0';
        // serde_json reads `-0` as the float -0.0, which an integer field refuses.
        let negative_zero = negative && value == 0;
        if digits == 0 || leading_zero || negative_zero {
            return Err(Bail);
        }
        match self.bytes.get(self.pos) {
            Some(b'.' | b'e' | b'E') => Err(Bail),
            _ => Ok(value),
        }
    }

    pub fn i32(&mut self) -> Scan<i32> {
        i32::try_from(self.i64()?).map_err(|_| Bail)
    }

    /// Skips one value of any type, checking it as serde_json checks an ignored value.
    pub fn skip(&mut self) -> Scan<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' => self.skip_object(),
            b'[' => self.array(Parser::skip),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => self.skip_number(),
            _ => Err(Bail),
        }
    }

    /// An object skipped: its keys are checked as strings, not unescaped or kept.
    fn skip_object(&mut self) -> Scan<()> {
        self.delimited(b'{', b'}', |p| {
            if p.peek()? != b'"' {
                return Err(Bail);
            }
            p.skip_string()?;
            p.eat(b':')?;
            p.skip()
        })
    }

    /// A string that comes next, checked as [`Parser::string`] checks it (a lone surrogate
    /// escape is refused, as serde_json refuses it in a string it reads) but not unescaped
    /// nor kept. [`Parser::skip`] checks less, as serde_json does for a value it ignores.
    pub fn skip_str(&mut self) -> Scan<()> {
        let (_, end) = self.plain_run()?;
        self.skip_rest_of_string(end, true)
    }

    /// A string skipped, from its opening quote at `self.pos`.
    #[inline]
    fn skip_string(&mut self) -> Scan<()> {
        let end = plain_end(self.bytes, self.pos + 1);
        self.skip_rest_of_string(end, false)
    }

    /// The rest of a skipped string from the end of its first plain run at `at`; with
    /// `surrogates`, a `\u` escape must also be a whole code point.
    #[inline(always)]
    fn skip_rest_of_string(&mut self, at: usize, surrogates: bool) -> Scan<()> {
        if self.bytes.get(at) == Some(&b'"') {
            self.pos = at + 1;
            Ok(())
        } else {
            self.skip_escaped_string(at, surrogates)
        }
    }

    /// [`Parser::skip_rest_of_string`] past its first escape.
    #[cold]
    #[inline(never)]
    fn skip_escaped_string(&mut self, mut at: usize, surrogates: bool) -> Scan<()> {
        loop {
            at = plain_end(self.bytes, at);
            match self.bytes.get(at) {
                Some(b'"') => {
                    self.pos = at + 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    at = match self.bytes.get(at + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => at + 2,
                        Some(b'u') if surrogates => self.unicode_escape(at + 1)?.1,
                        Some(b'u') => self.hex4(at + 2).map(|_| at + 6)?,
                        _ => return Err(Bail),
                    }
                }
                _ => return Err(Bail),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn skip_number(&mut self) -> Scan<()> {
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let start = self.pos;
        let integer = self.digits();
        if integer == 0 || (integer > 1 && self.bytes[start] == b'0') {
            return Err(Bail);
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Bail);
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Bail);
            }
        }
        Ok(())
    }

    /// `null` as `None`, anything else as `read` reads it into a default value.
    pub fn option<T: Default>(
        &mut self,
        slot: &mut Option<T>,
        read: impl FnOnce(&mut Self, &mut T) -> Scan<()>,
    ) -> Scan<()> {
        if self.null()? {
            *slot = None;
            Ok(())
        } else {
            read(self, slot.insert(T::default()))
        }
    }

    /// An array whose elements `read` reads, each into a default value pushed on `out`.
    pub fn vec<T: Default>(
        &mut self,
        out: &mut Vec<T>,
        mut read: impl FnMut(&mut Self, &mut T) -> Scan<()>,
    ) -> Scan<()> {
        self.array(|p| {
            out.push(T::default());
            match out.last_mut() {
                Some(last) => read(p, last),
                None => Err(Bail),
            }
        })
    }

    /// An array of strings, as `String`s or as slices of the text where they have no escapes.
    pub fn strings<T: From<Cow<'a, str>>>(&mut self, out: &mut impl Extend<T>) -> Scan<()> {
        self.array(|p| p.string().map(|s| out.extend([s.into()])))
    }
}

/// Reads the object that comes next in `$parser` as a struct: each listed key's value is
/// read by its expression (which consumes it from the parser named `$p` and gives a
/// `Scan<()>`), at most once, as serde refuses a duplicate field; other keys are skipped.
///
/// ```ignore
/// fields!(parser, |p| {
///     "name" => nullable_string(p, &mut container.name),
///     "image" => opt_string(p, &mut container.image),
/// })
/// ```
macro_rules! fields {
    ($parser:expr, |$p:ident| { $($key:literal => $read:expr),* $(,)? }) => {{
        let mut seen = 0u32;
        $parser.members(|$p| {
            let mut bit = 0;
            // Each listed key is compared where it stands, quotes included, before the key
            // is scanned for its end: most keys of a review are listed ones.
            $(
                bit += 1;
                if $p.quoted_key(concat!("\"", $key, "\"")) {
                    $crate::scan::once(&mut seen, bit)?;
                    $p.colon()?;
                    return $read;
                }
            )*
            $p.skip_member()
        })
    }};
}
pub(crate) use fields;

/// Marks field `bit` of an object as read; a second time gives up (serde refuses a
/// duplicate field).
pub fn once(seen: &mut u32, bit: u32) -> Scan<()> {
    let mask = 1 << bit;
    if *seen & mask != 0 {
        return Err(Bail);
    }
    *seen |= mask;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip_all(text: &str) -> Scan<()> {
        let mut p = Parser::new(text);
        p.skip()?;
        p.end()
    }

    #[test]
    fn plain_end_finds_the_first_special_byte_at_every_offset() {
        for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
            for len in 0..70 {
                for at in 0..=len {
                    let mut bytes = vec![b'a'; len];
                    // Bytes that look close to the specials in a word: high bytes, 0x20, 0x21.
                    for (i, b) in bytes.iter_mut().enumerate() {
                        *b = [b'a', 0xc3, 0x20, b'#', 0xff][i % 5];
                    }
                    if at < len {
                        bytes[at] = special;
                        // A second special after the first must not move the answer.
                        if at + 3 < len {
                            bytes[at + 3] = b'"';
                        }
                    }
                    assert_eq!(plain_end(&bytes, 0), at, "{special:#x} at {at} of {len}");
                    assert_eq!(
                        long_plain_end(&bytes, 0),
                        at,
                        "{special:#x} at {at} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn has_special_finds_a_quote_backslash_or_control_byte_anywhere() {
        for len in 0..40 {
            let plain = "a".repeat(len);
            assert!(!has_special(plain.as_bytes()), "{plain:?}");
            assert!(!has_special("é\u{7f}~ ".repeat(len).as_bytes()));
            for at in 0..len {
                for special in [b'"', b'\\', b'\n', 0, 0x1f] {
                    let mut bytes = plain.clone().into_bytes();
                    bytes[at] = special;
                    assert!(has_special(&bytes), "{special:#x} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn strings_are_unescaped_as_serde_json_does() {
        for text in [
            r#""plain""#,
            r#""a\"b\\c\/d\be\ff\ng\rh\ti""#,
            r#""caf\u00e9 \u00E9 \u4e2d \ud83d\ude00 end""#,
            r#""\u003chtml\u003e &amp;""#,
            r#""""#,
            "\"é 中 😀\"",
        ] {
            let ours = Parser::new(text).string().unwrap();
            let theirs: String = serde_json::from_str(text).unwrap();
            assert_eq!(ours, theirs, "{text}");
        }
    }

    #[test]
    fn what_serde_json_refuses_gives_up() {
        for text in [
            r#""lone \ud800 high""#,
            r#""lone \udc00 low""#,
            r#""bad \x escape""#,
            r#""short \u12""#,
            "\"tab\tinside\"",
            r#""unterminated"#,
        ] {
            assert!(serde_json::from_str::<String>(text).is_err(), "{text}");
            assert_eq!(Parser::new(text).string(), Err(Bail), "{text}");
            assert_eq!(Parser::new(text).skip_str(), Err(Bail), "{text}");
        }
    }

    #[test]
    fn a_string_skipped_unread_ends_where_the_read_one_ends() {
        for text in [
            r#""plain" ,"#,
            r#""a \"quoted\" word\n" ,"#,
            r#""pair \ud83d\ude00 and \u00e9 and \/" ,"#,
            r#""""#,
        ] {
            let mut read = Parser::new(text);
            let mut skipped = Parser::new(text);
            assert!(read.string().is_ok(), "{text}");
            assert_eq!(skipped.skip_str(), Ok(()), "{text}");
            assert_eq!(skipped.pos, read.pos, "{text}");
        }
        assert_eq!(Parser::new("1").skip_str(), Err(Bail), "not a string");
    }

    #[test]
    fn skipping_accepts_exactly_the_json_serde_json_accepts() {
        let cases = [
            "0",
            "-0",
            "12",
            "-12.5e+3",
            "1E9",
            "0.0",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "true",
            "tru",
            "nul",
            "null",
            r#"{"a":[1,{"b":null}],"c":"\u12ab"}"#,
            r#"{"a":1,}"#,
            "[1,]",
            "[,1]",
            r#"{"a" 1}"#,
            r#"{"a":1 "b":2}"#,
            r#""\ud800""#,
            r#""\uzzzz""#,
            " [ ] ",
            "[] x",
        ];
        for text in cases {
            let serde = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
            assert_eq!(skip_all(text).is_ok(), serde, "{text}");
        }
    }

    /// `name` and `image` of a container-like object, read with [`fields!`].
    fn two_fields(text: &str) -> Scan<(Option<String>, Option<String>)> {
        let (mut name, mut image) = (None, None);
        let mut p = Parser::new(text);
        fields!(p, |p| {
            "name" => p.option(&mut name, |p, v| p.owned_string().map(|s| *v = s)),
            "image" => p.option(&mut image, |p, v| p.owned_string().map(|s| *v = s)),
        })?;
        p.end()?;
        Ok((name, image))
    }

    #[test]
    fn fields_reads_listed_keys_and_skips_the_others() {
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            two_fields(r#"{"name":"a","image":"b"}"#),
            Ok((some("a"), some("b")))
        );
        // Keys that start like a listed one, or that a listed one starts like, are other keys.
        assert_eq!(
            two_fields(r#"{"nameSuffix":"x","nam":"y","image":"b","imag":1}"#),
            Ok((None, some("b")))
        );
        // Whitespace around the colon, an empty object, a key with the same first letter.
        assert_eq!(
            two_fields(" { \"name\" :\t\"a\" , \"namespace\": {\"name\": 1} } "),
            Ok((some("a"), None))
        );
        assert_eq!(two_fields("{}"), Ok((None, None)));
        assert_eq!(two_fields(r#"{"":1,"name":null}"#), Ok((None, None)));
    }

    #[test]
    fn fields_gives_up_on_a_duplicate_an_escaped_key_or_a_missing_colon() {
        for text in [
            r#"{"name":"a","name":"b"}"#,
            r#"{"n\u0061me":"a"}"#,
            r#"{"other\n":"a"}"#,
            r#"{"name" "a"}"#,
            r#"{"name":"a",}"#,
            r#"{name:"a"}"#,
            r#"{"name":"a""#,
            r#"{"na"#,
        ] {
            assert_eq!(two_fields(text), Err(Bail), "{text}");
        }
    }

    #[test]
    fn integers_out_of_range_or_with_fractions_give_up() {
        assert_eq!(Parser::new("-9223372036854775808").i64(), Ok(i64::MIN));
        assert_eq!(Parser::new("9223372036854775808").i64(), Err(Bail));
        assert_eq!(Parser::new("9223372036854775807").i64(), Ok(i64::MAX));
        assert_eq!(Parser::new("-9223372036854775809").i64(), Err(Bail));
        assert_eq!(Parser::new("9999999999999999999").i64(), Err(Bail));
        assert_eq!(Parser::new("18446744073709551616").i64(), Err(Bail));
        assert_eq!(
            Parser::new("123456789012345678901234567890").i64(),
            Err(Bail)
        );
        assert_eq!(Parser::new("1000").i64(), Ok(1000));
        assert_eq!(Parser::new("-").i64(), Err(Bail));
        assert_eq!(Parser::new("2147483648").i32(), Err(Bail));
        assert_eq!(Parser::new(" -7,").i32(), Ok(-7));
        assert_eq!(Parser::new("2.0").i32(), Err(Bail));
        assert_eq!(Parser::new("2e1").i32(), Err(Bail));
        assert_eq!(Parser::new("007").i32(), Err(Bail));
        assert_eq!(Parser::new("-0").i32(), Err(Bail));
        assert_eq!(Parser::new("0").i32(), Ok(0));
    }

    #[test]
    fn nesting_past_the_limit_gives_up_before_the_stack_does() {
        let deep = "[".repeat(100_000);
        assert_eq!(skip_all(&deep), Err(Bail));
        let fine = format!("{}{}", "[".repeat(50), "]".repeat(50));
        assert_eq!(skip_all(&fine), Ok(()));
    }
}
