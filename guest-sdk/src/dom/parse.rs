//! The fast path of [`Node::parse`]: a direct recursive-descent parser for
//! the JSON that transforms see nearly always (compact, few escapes), which
//! also notes, per object, whether its text is *canonical*, i.e. exactly what
//! [`Node::write_json`] would write for it. A canonical object keeps its text
//! ([`Object`]'s `raw`) and is written back with one copy while nothing
//! changes it.
//!
//! Objects below the top level are only checked (the same checks, nothing
//! built) and become unbuilt [`Object`]s holding their text; [`members`]
//! builds one when it is first read. An object found not canonical while
//! being checked is parsed again, built, from its start.
//!
//! It gives up (returns `None`) on anything it does not handle exactly as
//! serde_json does: every error, a `\u` escape of a surrogate, an integer
//! outside u64/i64, `-0`, a float that does not fit f64, nesting deeper
//! than serde_json's limit. [`Node::parse`] then parses again with
//! serde_json, so what is accepted, what is rejected and the error message
//! stay serde_json's.

use super::{Entry, Node, Object, Raw, dedupe, escape_mask, key_slot, read_keys};
use serde_json::Number;
use std::borrow::Cow;
use std::mem::MaybeUninit;

/// Below serde_json's recursion limit (128), so that the fast path never
/// accepts what serde_json refuses.
const MAX_DEPTH: u32 = 120;

/// How many keys of an object being checked are kept on the stack (see
/// [`Parser::check_object`]): more than a nested object of an event has.
const LOCAL_KEYS: usize = 16;

/// Parses `text` as one JSON text, or `None` to let serde_json decide.
/// The caller checked UTF-8 once for the whole text: strings are slices of
/// it.
pub(super) fn parse(text: &str) -> Option<Node<'_>> {
    let mut p = Parser::new(text);
    p.skip_ws();
    let node = p.value()?;
    p.skip_ws();
    (p.at == text.len()).then_some(node)
}

/// The `count` members of an unbuilt object, from its text, which
/// [`parse`] checked: canonical, so neither an error nor a repeated key can
/// occur.
pub(super) fn members(text: &str, count: usize) -> Vec<Entry<'_>> {
    let mut p = Parser::new(text);
    p.members_hint = count;
    match p.object() {
        Some(Node::Object(o)) => o.entries.into_inner().expect("a parsed object is built"),
        _ => unreachable!("an unbuilt object's text was checked when it was parsed"),
    }
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
    /// The keys of the objects being checked past each one's first
    /// [`LOCAL_KEYS`] (see [`Parser::check_object`]), innermost last, as
    /// they are written (escapes and all).
    keys: Vec<&'a [u8]>,
    /// Set while an object found not canonical is parsed again: everything
    /// below it is built.
    build_all: bool,
    /// The [`key_slot`] of the member whose value is being parsed (of the
    /// array's key for an array's items).
    slot: u32,
    /// The number of members of the next object, when known (see
    /// [`members`]); 0 when not.
    members_hint: usize,
    /// [`super::READ_KEYS`] when the parse began.
    read_keys: u64,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            text,
            bytes: text.as_bytes(),
            at: 0,
            depth: 0,
            noncanonical: 0,
            empties: 0,
            keys: Vec::new(),
            build_all: false,
            slot: 0,
            members_hint: 0,
            read_keys: read_keys(),
        }
    }

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
            b'"' => self.string_value(),
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
        let start = self.at;
        let (noncanonical, empties) = (self.noncanonical, self.empties);
        let slot = self.slot;
        if self.depth > 0 && !self.build_all && self.read_keys & 1 << slot == 0 {
            // Nested, under a key not read so far: checked only, built when
            // read.
            let covers = self.check_object()?;
            if self.noncanonical == noncanonical {
                return Some(Node::Object(Object::unbuilt(Raw {
                    text: self.slice(start, self.at),
                    has_empty: self.empties != empties,
                    covers,
                    slot: slot as u8,
                })));
            }
            // Rare (whitespace, an unusual escape or number, a repeated
            // key; the check stopped there): parse it again, built, and all
            // below it too, since text that is not compact at one level
            // seldom is at the next. The counts are as they were, so it is
            // noted as non-canonical once, by the build.
            self.at = start;
            self.noncanonical = noncanonical;
            self.empties = empties;
            self.build_all = true;
            let node = self.object();
            self.build_all = false;
            return node;
        }
        self.enter()?;
        self.at += 1; // `{`
        let mut entries = Vec::new();
        // Which keys' bits are set (see `key_bit`); only a key whose bit is
        // set already is compared with the keys before it.
        let (mut seen, mut repeated) = (0u64, false);
        self.skip_ws();
        if self.eat(b'}').is_none() {
            // The count when a check found it (an unbuilt object being
            // built); else, for the top level, room for the dozen or so
            // keys of an event, and less below it: fewer regrowths.
            let room = match std::mem::take(&mut self.members_hint) {
                0 if self.depth == 1 => 16,
                0 => 8,
                known => known,
            };
            entries.reserve(room);
            loop {
                if self.peek()? != b'"' {
                    return None;
                }
                let key = self.string()?;
                self.slot = key_slot(key.as_bytes());
                let bit = 1u64 << self.slot;
                if seen & bit != 0 && !repeated {
                    repeated = entries.iter().any(|(k, _)| *k == key);
                }
                seen |= bit;
                self.colon()?;
                // Most values are strings: read here, without a call.
                let value = if self.peek() == Some(b'"') {
                    self.string_value()?
                } else {
                    self.value()?
                };
                entries.push((key, value));
                if self.member_end()? {
                    break;
                }
            }
        }
        self.depth -= 1;
        if repeated && dedupe(&mut entries) {
            self.noncanonical += 1;
        }
        if entries.is_empty() {
            self.empties += 1;
        }
        let covers = entries.len();
        let mut o = Object::from_entries(entries);
        if self.noncanonical == noncanonical {
            o.raw = Some(Raw {
                text: self.slice(start, self.at),
                has_empty: self.empties != empties,
                covers,
                slot: slot as u8,
            });
        }
        Some(Node::Object(o))
    }

    /// Skips the `:` after a key, and any whitespace before the value.
    #[inline(always)]
    fn colon(&mut self) -> Option<()> {
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
        Some(())
    }

    /// Skips the `,` or `}` after an object's member; true at the `}`.
    #[inline(always)]
    fn member_end(&mut self) -> Option<bool> {
        if !matches!(self.peek(), Some(b',' | b'}')) {
            self.skip_ws();
        }
        match self.peek()? {
            b',' => {
                self.at += 1;
                if self.peek() != Some(b'"') {
                    self.skip_ws();
                }
                Some(false)
            }
            b'}' => {
                self.at += 1;
                Some(true)
            }
            _ => None,
        }
    }

    /// Checks the object at `{` as [`Parser::object`] would parse it, with
    /// the same counts, building nothing; returns its number of members.
    /// Repeated keys are found by comparing keys as written: in a
    /// canonical object (the only kind whose check is kept) equal keys are
    /// written alike. Stops as soon as the object is known not to be
    /// canonical (the caller parses it again); the count is then
    /// meaningless.
    #[allow(unsafe_code, reason = "reads only the keys it wrote")]
    fn check_object(&mut self) -> Option<usize> {
        let noncanonical = self.noncanonical;
        self.enter()?;
        self.at += 1; // `{`
        self.skip_ws();
        let mut members = 0;
        if self.eat(b'}').is_none() {
            // The keys so far, for comparing a key whose bit is already
            // set: the first few in an array of this call's own, whose
            // stores the compiler knows change nothing else; a push to a
            // `Vec` made it load the parser's fields again after every key.
            // Keys past those (big objects) go to `self.keys`.
            let mut local = [MaybeUninit::<&'a [u8]>::uninit(); LOCAL_KEYS];
            let first = self.keys.len();
            let (mut seen, mut repeated) = (0u64, false);
            loop {
                if self.peek()? != b'"' {
                    return None;
                }
                let from = self.at + 1;
                self.check_string()?;
                let key = &self.bytes[from..self.at - 1];
                let bit = 1u64 << key_slot(key);
                if seen & bit != 0 && !repeated {
                    let kept = &local[..members.min(LOCAL_KEYS)];
                    // SAFETY: the first `members` entries (up to
                    // LOCAL_KEYS) were written below, one per key.
                    repeated = kept.iter().any(|k| unsafe { k.assume_init() } == key)
                        || self.keys[first..].contains(&key);
                }
                seen |= bit;
                match local.get_mut(members) {
                    Some(slot) => drop(slot.write(key)),
                    None => self.keys.push(key),
                }
                members += 1;
                self.colon()?;
                // Most values are strings: checked here, without a call.
                if self.peek() == Some(b'"') {
                    self.check_string_value()?;
                } else {
                    self.check_value()?;
                }
                if repeated || self.noncanonical != noncanonical {
                    self.noncanonical += 1;
                    break;
                }
                if self.member_end()? {
                    break;
                }
            }
            self.keys.truncate(first);
        }
        self.depth -= 1;
        if members == 0 {
            self.empties += 1;
        }
        Some(members)
    }

    /// Checks one value as [`Parser::value`] would parse it, building
    /// nothing.
    fn check_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => self.check_object().map(drop),
            b'[' => {
                // Arrays are rare in events: parsed, and dropped.
                self.array().map(drop)
            }
            b'"' => self.check_string_value(),
            b't' => self.literal("true", Node::Null).map(drop),
            b'f' => self.literal("false", Node::Null).map(drop),
            b'n' => {
                self.empties += 1;
                self.literal("null", Node::Null).map(drop)
            }
            b'-' | b'0'..=b'9' => self.check_number(),
            _ => None,
        }
    }

    /// A string value at `"`, counted when empty.
    #[inline(always)]
    fn string_value(&mut self) -> Option<Node<'a>> {
        let s = self.string()?;
        if s.is_empty() {
            self.empties += 1;
        }
        Some(Node::String(s))
    }

    /// Checks a string value at `"` as [`Parser::string_value`] reads it.
    #[inline(always)]
    fn check_string_value(&mut self) -> Option<()> {
        let from = self.at;
        self.check_string()?;
        if self.at == from + 2 {
            self.empties += 1;
        }
        Some(())
    }

    /// Checks the string at `"` as [`Parser::string`] parses it.
    #[inline(always)]
    fn check_string(&mut self) -> Option<()> {
        self.at += 1; // `"`
        let end = self.scan_plain()?;
        if self.bytes[end] == b'"' {
            self.at = end + 1;
            return Some(());
        }
        // Escapes (rare): decoded as a parse would, and dropped.
        self.at -= 1;
        self.string().map(drop)
    }

    fn array(&mut self) -> Option<Node<'a>> {
        self.enter()?;
        self.at += 1; // `[`
        let mut items = Vec::new();
        // The items' objects count as under the array's key.
        let slot = self.slot;
        self.skip_ws();
        if self.eat(b']').is_none() {
            loop {
                self.slot = slot;
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
    /// (and noted when serde_json would write them differently). The usual
    /// case, no escape, is inlined where strings are read.
    #[inline(always)]
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.at += 1; // `"`
        let start = self.at;
        let end = self.scan_plain()?;
        if self.bytes[end] == b'"' {
            self.at = end + 1;
            return Some(Cow::Borrowed(self.slice(start, end)));
        }
        self.escaped_string(start, end)
    }

    /// `text[start..end]`, where each end is at an ASCII byte (a quote, a
    /// brace, a digit) or just after one, or at the text's end: a
    /// character boundary, which `str`'s own slicing would check again for
    /// every string, number and object.
    #[inline(always)]
    #[allow(
        unsafe_code,
        reason = "both ends are character boundaries of valid UTF-8"
    )]
    fn slice(&self, start: usize, end: usize) -> &'a str {
        let bytes: &'a [u8] = &self.bytes[start..end];
        debug_assert!(self.text.is_char_boundary(start) && self.text.is_char_boundary(end));
        // SAFETY: `bytes` is part of `text`, which is valid UTF-8, and
        // neither end is inside a character: in UTF-8 an ASCII byte starts
        // a character, and so does the byte after one.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// The rest of [`Parser::string`] from the first escape, at `end`.
    #[inline(never)]
    fn escaped_string(&mut self, start: usize, end: usize) -> Option<Cow<'a, str>> {
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
    #[inline(always)]
    fn scan_plain(&self) -> Option<usize> {
        let mut i = self.at;
        // Sixteen bytes at a time where SIMD is there: a key or a short
        // value ends in the first block.
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        while let Some(block) = self.bytes.get(i..i + 16) {
            let marks = super::simd::special_bytes(block.try_into().expect("sixteen bytes"));
            if marks != 0 {
                i += marks.trailing_zeros() as usize;
                return matches!(self.bytes[i], b'"' | b'\\').then_some(i);
            }
            i += 16;
        }
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

    /// Reads a number's text, checked against JSON's grammar.
    fn number_text(&mut self) -> Option<NumberText<'a>> {
        let start = self.at;
        let negative = self.eat(b'-').is_some();
        let int_start = self.at;
        let int_digits = self.digits();
        // JSON: at least one digit, no leading zero.
        if int_digits == 0 || (int_digits > 1 && self.bytes[int_start] == b'0') {
            return None;
        }
        let integer = self.slice(int_start, self.at);
        let mut fraction = None;
        if self.eat(b'.').is_some() {
            let from = self.at;
            if self.digits() == 0 {
                return None;
            }
            fraction = Some(self.slice(from, self.at));
        }
        let mut exponent = false;
        if let Some(b'e' | b'E') = self.peek() {
            exponent = true;
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(NumberText {
            text: self.slice(start, self.at),
            negative,
            integer,
            fraction,
            exponent,
        })
    }

    fn number(&mut self) -> Option<Node<'a>> {
        let text = self.number_text()?;
        self.build_number(&text).map(Node::Number)
    }

    /// Checks a number as [`Parser::number`] would parse it. A float in
    /// the usual form is decided from its digits, without converting it.
    fn check_number(&mut self) -> Option<()> {
        let text = self.number_text()?;
        if let (false, Some(fraction)) = (text.exponent, text.fraction)
            && is_shortest_fixed(text.integer, fraction)
        {
            // At most 15 digits, not all zero: a finite, non-zero f64.
            return Some(());
        }
        self.build_number(&text).map(drop)
    }

    /// The number `t` is, as serde_json makes it (`None` where it would
    /// not, or not surely alike); notes a text that does not write back as
    /// it is.
    fn build_number(&mut self, t: &NumberText<'a>) -> Option<Number> {
        if t.fraction.is_none() && !t.exponent {
            let magnitude: u64 = t.integer.parse().ok()?;
            return if t.negative {
                // `-0` is left to serde_json.
                if magnitude == 0 {
                    return None;
                }
                Some(Number::from(0i64.checked_sub_unsigned(magnitude)?))
            } else {
                Some(Number::from(magnitude))
            };
        }
        let f: f64 = t.text.parse().ok()?;
        // serde_json refuses what overflows; -0.0 is left to it too.
        if !f.is_finite() || f == 0.0 && f.is_sign_negative() {
            return None;
        }
        let n = Number::from_f64(f)?;
        let shortest = match (t.exponent, t.fraction) {
            (false, Some(fraction)) => is_shortest_fixed(t.integer, fraction),
            _ => false,
        };
        if !shortest && !writes_as(&n, t.text) {
            self.noncanonical += 1;
        }
        Some(n)
    }
}

/// A number's text, split by JSON's grammar.
struct NumberText<'a> {
    /// All of it.
    text: &'a str,
    negative: bool,
    /// The digits before any `.`.
    integer: &'a str,
    /// The digits after the `.`, if there is one.
    fraction: Option<&'a str>,
    /// Whether an `e` part follows.
    exponent: bool,
}

/// True when a float written `integer.fraction` (no exponent, as JSON
/// allows them: no leading zero but `0`) is exactly what serde_json writes
/// back, decided from the digits alone. Formatting the float to compare
/// was most of the cost of a coordinate; this answers for the usual ones
/// and [`writes_as`] for the rest.
///
/// serde_json writes the shortest digits that read back as the same f64,
/// in plain notation when the first digit's power of ten is -5 to 15. A
/// decimal of at most 15 significant digits (`f64::DIGITS`) is the only
/// decimal of that many digits or fewer that reads as its f64, so those
/// digits are the shortest, unless they end in a zero.
fn is_shortest_fixed(integer: &str, fraction: &str) -> bool {
    let Some(last) = fraction.bytes().last() else {
        return false;
    };
    if last == b'0' {
        return false;
    }
    let digits = if integer == "0" {
        let zeros = fraction.bytes().take_while(|&b| b == b'0').count();
        // 0.0000d: the first digit's power is -5 at most.
        if zeros > 4 {
            return false;
        }
        fraction.len() - zeros
    } else {
        // d…d.d: at most 15 digits keep the first digit's power below 15.
        integer.len() + fraction.len()
    };
    digits <= f64::DIGITS as usize
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every decimal the digit rule calls canonical is written back by
    /// serde_json exactly as it was read, over random decimals at and
    /// around the rule's limits (digits, leading zeros, powers of ten).
    #[test]
    fn the_digit_rule_for_floats_agrees_with_serde_json() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let digits = |next: &mut dyn FnMut(u64) -> u64, n: u64| -> String {
            (0..n).map(|_| char::from(b'0' + next(10) as u8)).collect()
        };
        let (mut claimed, mut refused) = (0, 0);
        for _ in 0..200_000 {
            let integer = match next(3) {
                0 => "0".to_string(),
                _ => {
                    let lead = char::from(b'1' + next(9) as u8);
                    let len = next(18);
                    format!("{lead}{}", digits(&mut next, len))
                }
            };
            let zeros = "0".repeat(next(8) as usize);
            let len = 1 + next(18);
            let fraction = format!("{zeros}{}", digits(&mut next, len));
            let sign = if next(2) == 0 { "-" } else { "" };
            let text = format!("{sign}{integer}.{fraction}");
            let f: f64 = text.parse().unwrap();
            let Some(n) = Number::from_f64(f) else {
                continue;
            };
            if is_shortest_fixed(&integer, &fraction) {
                claimed += 1;
                assert!(writes_as(&n, &text), "{text} is written as {n}");
            } else {
                refused += 1;
            }
        }
        assert!(claimed > 20_000 && refused > 20_000, "{claimed} {refused}");
    }
}
