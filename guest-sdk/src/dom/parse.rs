//! The fast path of [`Node::parse`]: a direct recursive-descent parser for
//! the JSON that transforms see nearly always (compact, few escapes), which
//! also notes, per object, whether its text is *canonical*, i.e. exactly what
//! [`Node::write_json`] would write for it. A canonical object keeps its text
//! ([`Object`]'s `raw`) and is written back with one copy while nothing
//! changes it.
//!
//! It gives up (returns `None`) on anything it does not handle exactly as
//! serde_json does: every error, a `\u` escape of a surrogate, an integer
//! outside u64/i64, `-0`, a float that does not fit f64, nesting deeper
//! than serde_json's limit. [`Node::parse`] then parses again with
//! serde_json, so what is accepted, what is rejected and the error message
//! stay serde_json's.

use super::{Node, Object, Raw, escape_mask};
use serde_json::Number;
use std::borrow::Cow;

/// Below serde_json's recursion limit (128), so that the fast path never
/// accepts what serde_json refuses.
const MAX_DEPTH: u32 = 120;

/// Parses `text` as one JSON text, or `None` to let serde_json decide.
/// The caller checked UTF-8 once for the whole text: strings are slices of
/// it.
pub(super) fn parse(text: &str) -> Option<Node<'_>> {
    let bytes = text.as_bytes();
    let mut p = Parser {
        text,
        bytes,
        at: 0,
        depth: 0,
        noncanonical: 0,
        empties: 0,
    };
    p.skip_ws();
    let node = p.value()?;
    p.skip_ws();
    (p.at == bytes.len()).then_some(node)
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    depth: u32,
    /// How many things seen so far make their text non-canonical
    /// (whitespace, an unusual escape or number, a repeated key). An object
    /// is canonical when this did not move while it was parsed.
    noncanonical: u32,
    /// How many empty values (`null`, `""`, `[]`, `{}`) seen so far, for
    /// [`Node::drop_empty`]'s shortcut.
    empties: u32,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Skips JSON whitespace; any makes the enclosing text non-canonical.
    fn skip_ws(&mut self) {
        let start = self.at;
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
        if self.at != start {
            self.noncanonical += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.at += 1)
    }

    fn literal(&mut self, word: &str, node: Node<'a>) -> Option<Node<'a>> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word.as_bytes()).then(|| {
            self.at = end;
            node
        })
    }

    fn value(&mut self) -> Option<Node<'a>> {
        match self.peek()? {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => {
                let s = self.string()?;
                if s.is_empty() {
                    self.empties += 1;
                }
                Some(Node::String(s))
            }
            b't' => self.literal("true", Node::Bool(true)),
            b'f' => self.literal("false", Node::Bool(false)),
            b'n' => {
                self.empties += 1;
                self.literal("null", Node::Null)
            }
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    fn object(&mut self) -> Option<Node<'a>> {
        self.enter()?;
        let start = self.at;
        let (noncanonical, empties) = (self.noncanonical, self.empties);
        self.at += 1; // `{`
        let mut entries = Vec::new();
        self.skip_ws();
        if self.eat(b'}').is_none() {
            // Event objects have a dozen keys or so: fewer regrowths.
            entries.reserve(8);
            loop {
                if self.peek()? != b'"' {
                    return None;
                }
                let key = self.string()?;
                // Compact text (the usual case) has no whitespace to skip.
                if self.peek() == Some(b':') {
                    self.at += 1;
                } else {
                    self.skip_ws();
                    self.eat(b':')?;
                }
                if !matches!(self.peek(), Some(b'"' | b'{' | b'[' | b'0'..=b'9')) {
                    self.skip_ws();
                }
                let value = self.value()?;
                entries.push((key, value));
                if !matches!(self.peek(), Some(b',' | b'}')) {
                    self.skip_ws();
                }
                match self.peek()? {
                    b',' => {
                        self.at += 1;
                        if self.peek() != Some(b'"') {
                            self.skip_ws();
                        }
                    }
                    b'}' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        let mut o = Object { entries, raw: None };
        if o.dedupe() {
            self.noncanonical += 1;
        }
        if o.is_empty() {
            self.empties += 1;
        }
        if self.noncanonical == noncanonical {
            o.raw = Some(Raw {
                text: &self.text[start..self.at],
                has_empty: self.empties != empties,
                covers: o.entries.len(),
            });
        }
        Some(Node::Object(o))
    }

    fn array(&mut self) -> Option<Node<'a>> {
        self.enter()?;
        self.at += 1; // `[`
        let mut items = Vec::new();
        self.skip_ws();
        if self.eat(b']').is_none() {
            loop {
                items.push(self.value()?);
                self.skip_ws();
                match self.peek()? {
                    b',' => {
                        self.at += 1;
                        self.skip_ws();
                    }
                    b']' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        if items.is_empty() {
            self.empties += 1;
        }
        Some(Node::Array(items))
    }

    /// A string at `"`: borrowed when it has no escape; escapes are decoded
    /// (and noted when serde_json would write them differently).
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.at += 1; // `"`
        let start = self.at;
        let end = self.scan_plain()?;
        if self.bytes[end] == b'"' {
            self.at = end + 1;
            return Some(Cow::Borrowed(&self.text[start..end]));
        }
        let mut owned = String::from(&self.text[start..end]);
        self.at = end;
        loop {
            let b = self.bytes[self.at];
            if b == b'"' {
                self.at += 1;
                return Some(Cow::Owned(owned));
            }
            // A backslash (scan_plain stops only at `"`, `\` or the end).
            let e = *self.bytes.get(self.at + 1)?;
            self.at += 2;
            let c = match e {
                b'"' => '"',
                b'\\' => '\\',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'/' => {
                    self.noncanonical += 1;
                    '/'
                }
                b'u' => {
                    let hex = self.text.get(self.at..self.at + 4)?;
                    let code = u32::from_str_radix(hex, 16).ok()?;
                    // `from_str_radix` takes a sign; JSON does not.
                    if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                        return None;
                    }
                    self.at += 4;
                    // Surrogate pairs are left to serde_json.
                    let c = char::from_u32(code)?;
                    // serde_json writes `\u00xx` (lowercase) only for the
                    // control characters without a short form.
                    let canonical = code < 0x20
                        && !matches!(code, 0x8 | 0x9 | 0xa | 0xc | 0xd)
                        && hex.starts_with("00")
                        && !hex.bytes().any(|h| h.is_ascii_uppercase());
                    if !canonical {
                        self.noncanonical += 1;
                    }
                    c
                }
                _ => return None,
            };
            owned.push(c);
            let from = self.at;
            let end = self.scan_plain()?;
            owned.push_str(&self.text[from..end]);
            self.at = end;
        }
    }

    /// From `self.at`, the index of the next `"` or `\`; `None` at a raw
    /// control character (which JSON forbids in strings) or the end.
    fn scan_plain(&self) -> Option<usize> {
        let mut i = self.at;
        while let Some(chunk) = self.bytes.get(i..i + 8) {
            let mask = escape_mask(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
            if mask != 0 {
                i += (mask.trailing_zeros() / 8) as usize;
                return matches!(self.bytes[i], b'"' | b'\\').then_some(i);
            }
            i += 8;
        }
        loop {
            match *self.bytes.get(i)? {
                b'"' | b'\\' => return Some(i),
                0..0x20 => return None,
                _ => i += 1,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Option<Node<'a>> {
        let start = self.at;
        let negative = self.eat(b'-').is_some();
        let int_start = self.at;
        let int_digits = self.digits();
        // JSON: at least one digit, no leading zero.
        if int_digits == 0 || (int_digits > 1 && self.bytes[int_start] == b'0') {
            return None;
        }
        let mut float = false;
        if self.eat(b'.').is_some() {
            float = true;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            float = true;
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        let text = &self.text[start..self.at];
        let number = if float {
            let f: f64 = text.parse().ok()?;
            // serde_json refuses what overflows; -0.0 is left to it too.
            if !f.is_finite() || f == 0.0 && f.is_sign_negative() {
                return None;
            }
            let n = Number::from_f64(f)?;
            if !writes_as(&n, text) {
                self.noncanonical += 1;
            }
            n
        } else {
            let digits = &self.text[int_start..self.at];
            let magnitude: u64 = digits.parse().ok()?;
            if negative {
                // `-0` is left to serde_json.
                if magnitude == 0 {
                    return None;
                }
                let n = 0i64.checked_sub_unsigned(magnitude)?;
                Number::from(n)
            } else {
                Number::from(magnitude)
            }
        };
        Some(Node::Number(number))
    }
}

/// True when serde_json writes `n` as exactly `text`.
fn writes_as(n: &Number, text: &str) -> bool {
    let mut buf = [0u8; 32];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    if serde_json::to_writer(&mut cursor, n).is_err() {
        return false;
    }
    let len = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
    buf.get(..len) == Some(text.as_bytes())
}
