//! A borrowed JSON document for transforms on the hot path.
//!
//! [`serde_json::Value`] owns every string and hashes every key into an
//! `IndexMap`; for a 700-byte event that is a few dozen allocations and most
//! of the cost of a mapping transform. A [`Node`] borrows strings and keys
//! from the input bytes wherever they hold no escape sequence (nearly
//! always), keeps objects as small vectors in document order, and writes
//! itself straight back to bytes. It accepts and rejects exactly what
//! `Value` does (a direct parser takes the usual input and hands anything it
//! is not sure of to serde_json's own), and it follows `Value`'s semantics
//! where they differ from a plain vector: a repeated key keeps its first
//! position and its last value, a number is a [`serde_json::Number`].
//! Nested objects are built when first read (see [`Object`]), which changes
//! no result, only the cost.
//!
//! The path helpers ([`Node::get`], [`Node::set`], [`Node::remove`], …) and
//! [`Node::drop_empty`] behave exactly as their [`crate::json`] namesakes.
//!
//! ```
//! use sluice_sdk::dom::Node;
//!
//! let input = br#"{"user":{"name":"jane","mail":""},"n":1}"#;
//! let mut doc = Node::parse(input).unwrap();
//! doc.drop_empty();
//! doc.set("user.team", "blue".into()).unwrap();
//! assert_eq!(doc.get_str("user.name"), Some("jane"));
//! assert_eq!(doc.to_json(), br#"{"user":{"name":"jane","team":"blue"},"n":1}"#);
//! ```

mod parse;

use crate::json::PathError;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use std::borrow::Cow;
use std::cell::{Cell, OnceCell};
use std::collections::HashMap;
use std::fmt;

/// One JSON value, borrowing from the bytes it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as serde_json represents it (u64, i64 or finite f64).
    Number(Number),
    /// A string: borrowed when the input held it without escapes.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Node<'a>>),
    /// An object, in document order.
    Object(Object<'a>),
}

/// A JSON object: its members in document order, keys unique.
///
/// Lookups are linear, which beats hashing for the dozen or so keys of a
/// typical event object.
///
/// An object nested in parsed input may be only checked when it is parsed
/// (valid JSON, canonical, no repeated key), its members built when
/// something first reads them: a transform that passes most of an event
/// through never builds the objects it does not look at, and writes them
/// with one copy each. Checking and then building costs more than building
/// at once, so the parser builds at once the objects under keys under
/// which this instance has read one before. Reading is through
/// `&self`, so the members live in a [`OnceCell`]; an `Object` is
/// therefore not `Sync`, and `Node<'a>` is invariant in `'a`.
#[derive(Debug, Clone)]
pub struct Object<'a> {
    /// The members; unset while they are still only `raw`'s text.
    entries: OnceCell<Vec<Entry<'a>>>,
    /// The object's text in the parsed input, while it is exactly what
    /// [`Node::write_json`] would write for the first `raw.covers` entries
    /// and nothing has changed them: writing is then one copy, followed by
    /// the members added since (a transform that only adds fields writes
    /// the input with one copy). Every method that can change a covered
    /// member, or hand one out mutably, clears it first.
    raw: Option<Raw<'a>>,
}

/// One member of an [`Object`].
type Entry<'a> = (Cow<'a, str>, Node<'a>);

/// The canonical text of a parsed object (see [`Object`]'s `raw`).
#[derive(Debug, Clone, Copy)]
struct Raw<'a> {
    text: &'a str,
    /// Whether the text holds an empty value (`null`, `""`, `[]`, `{}`),
    /// itself included: without one, [`Node::drop_empty`] has nothing to do
    /// on the covered members.
    has_empty: bool,
    /// How many of the object's first entries the text holds; entries after
    /// them were added since parsing, with keys new to the object.
    covers: usize,
    /// The [`key_slot`] of the key the object was parsed under, for
    /// [`READ_KEYS`].
    slot: u8,
}

thread_local! {
    /// The [`key_slot`]s of the keys under which an unbuilt object was built
    /// (read) since the program started: the parser builds objects under these
    /// keys at once. A mapping reads the same few objects of every event, a
    /// pass-through reads none; this learns which kind of transform it serves
    /// after one event, per key. Bits are only ever set, and a wrong bit (two
    /// keys share a slot) only costs time: what is parsed is the same either
    /// way. Per thread (a component has one; native tests run in several).
    static READ_KEYS: Cell<u64> = const { Cell::new(0) };
}

/// [`READ_KEYS`] now.
fn read_keys() -> u64 {
    READ_KEYS.with(Cell::get)
}

impl Default for Object<'_> {
    fn default() -> Self {
        Object::from_entries(Vec::new())
    }
}

impl PartialEq for Object<'_> {
    /// Equal when they hold the same members, in any order (as `Value`).
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .all(|(k, v)| other.get(k).is_some_and(|o| o == v))
    }
}

impl<'a> Object<'a> {
    /// An empty object.
    pub fn new() -> Self {
        Object::default()
    }

    /// An empty object with room for `members` members: a document built
    /// member by member does not move while it grows.
    pub fn with_capacity(members: usize) -> Self {
        Object::from_entries(Vec::with_capacity(members))
    }

    /// An object of these members (keys unique), without text.
    fn from_entries(entries: Vec<Entry<'a>>) -> Self {
        Object {
            entries: OnceCell::from(entries),
            raw: None,
        }
    }

    /// A parsed object whose members are built on first use from `raw`,
    /// which the parser checked and found canonical.
    fn unbuilt(raw: Raw<'a>) -> Self {
        Object {
            entries: OnceCell::new(),
            raw: Some(raw),
        }
    }

    /// The members, built from the text on first use.
    #[inline]
    fn members(&self) -> &Vec<Entry<'a>> {
        self.entries.get_or_init(|| self.build())
    }

    /// The members, mutably, built from the text on first use. Callers
    /// that change a covered member clear `raw` (see [`Object::touch`]).
    #[inline]
    fn members_mut(&mut self) -> &mut Vec<Entry<'a>> {
        if self.entries.get().is_none() {
            let built = self.build();
            self.entries = OnceCell::from(built);
        }
        self.entries.get_mut().expect("built above")
    }

    /// Builds the members of an unbuilt object from its text, and notes
    /// its key as one that is read.
    #[cold]
    fn build(&self) -> Vec<Entry<'a>> {
        let raw = self.raw.expect("an unbuilt object keeps its text");
        READ_KEYS.with(|keys| keys.set(keys.get() | 1 << raw.slot));
        parse::members(raw.text, raw.covers)
    }

    /// The member `key`.
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.members()
            .iter()
            .find(|(k, _)| same(k, key))
            .map(|(_, v)| v)
    }

    /// The member `key`, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node<'a>> {
        let i = self.position(key)?;
        self.touch(i);
        Some(&mut self.members_mut()[i].1)
    }

    /// Sets `key`: an existing member keeps its position and its old value
    /// is returned; a new one goes last.
    pub fn insert(&mut self, key: impl Into<Cow<'a, str>>, value: Node<'a>) -> Option<Node<'a>> {
        let key = key.into();
        match self.position(&key) {
            Some(i) => {
                self.touch(i);
                Some(std::mem::replace(&mut self.members_mut()[i].1, value))
            }
            None => {
                // A new key goes after the covered members: the text stays.
                self.members_mut().push((key, value));
                None
            }
        }
    }

    /// The index of member `key`.
    #[inline]
    fn position(&self, key: &str) -> Option<usize> {
        self.members().iter().position(|(k, _)| same(k, key))
    }

    /// Entry `i` is about to change or be handed out mutably: the text no
    /// longer holds it if it covered it.
    #[inline]
    fn touch(&mut self, i: usize) {
        if self.raw.is_some_and(|raw| i < raw.covers) {
            self.raw = None;
        }
    }

    /// Removes `key`, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<Node<'a>> {
        let i = self.position(key)?;
        self.raw = None;
        Some(self.members_mut().remove(i).1)
    }

    /// Keeps the members for which `keep` answers true, in order; `keep`
    /// may change the values it keeps. One pass: cheaper than a
    /// [`Object::remove`] per key when several go.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &mut Node<'a>) -> bool) {
        self.members_mut().retain_mut(|(k, v)| keep(k, v));
        self.raw = None;
    }

    /// The members in document order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node<'a>)> {
        self.members().iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        match (self.entries.get(), self.raw) {
            (Some(entries), _) => entries.len(),
            (None, Some(raw)) => raw.covers,
            (None, None) => unreachable!("an unbuilt object keeps its text"),
        }
    }

    /// True when the object has no members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The member `key`, inserting an empty object when it is missing.
    fn entry_object(&mut self, key: &'a str) -> &mut Node<'a> {
        let i = match self.position(key) {
            Some(i) => {
                self.touch(i);
                i
            }
            None => {
                // Room for the handful of members a path usually sets
                // under one parent (`user_agent.os.*`, `source.geo.*`):
                // growing moves every member, a `memory.copy` in WASM.
                let entries = self.members_mut();
                entries.push((Cow::Borrowed(key), Node::Object(Object::with_capacity(8))));
                entries.len() - 1
            }
        };
        &mut self.members_mut()[i].1
    }
}

/// Applies `Value`'s rule for repeated keys to `entries`: first position,
/// last value. True when there were repeats.
fn dedupe(entries: &mut Vec<Entry<'_>>) -> bool {
    let n = entries.len();
    // Small objects (the common case) are checked without hashing or
    // allocating: only keys whose bit was already set are compared.
    if n <= 32 {
        let mut seen = 0u64;
        let repeated = entries.iter().enumerate().any(|(i, (key, _))| {
            let bit = key_bit(key.as_bytes());
            let maybe = seen & bit != 0;
            seen |= bit;
            maybe && entries[..i].iter().any(|(k, _)| same(k, key))
        });
        if !repeated {
            return false;
        }
    }
    let mut at: HashMap<Cow<'_, str>, usize> = HashMap::with_capacity(n);
    let mut kept: Vec<Entry<'_>> = Vec::with_capacity(n);
    for (k, v) in entries.drain(..) {
        match at.get(&k) {
            Some(&i) => kept[i].1 = v,
            None => {
                at.insert(k.clone(), kept.len());
                kept.push((k, v));
            }
        }
    }
    let repeated = kept.len() != n;
    *entries = kept;
    repeated
}

/// The bit of `key` in a 64-bit filter of an object's keys: equal keys set
/// the same bit, so keys that all set different bits are all different.
#[inline(always)]
fn key_bit(key: &[u8]) -> u64 {
    1u64 << key_slot(key)
}

/// A number below 64 for `key`, equal for equal keys. Taken from the
/// length and the first and last bytes, which tell apart nearly every two
/// keys of an event (the length alone did not: `id` and `os`, `timestamp`
/// and `client_ip`).
#[inline(always)]
fn key_slot(key: &[u8]) -> u32 {
    let (first, last) = match key {
        [] => (0, 0),
        [first, .., last] => (*first, *last),
        [only] => (*only, *only),
    };
    let mixed = (key.len() as u32 ^ u32::from(first) << 8 ^ u32::from(last) << 16)
        .wrapping_mul(0x9e37_79b1);
    mixed >> 26
}

impl<'a> Node<'a> {
    /// Parses one JSON text. Accepts and rejects exactly what
    /// `serde_json::from_slice::<Value>` does.
    ///
    /// # Errors
    ///
    /// serde_json's error for malformed JSON or trailing bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        // The fast parser handles the usual input; anything it is not sure
        // to treat exactly as serde_json does goes to serde_json.
        match str_from_utf8(bytes) {
            Ok(text) => Self::parse_str(text),
            Err(_) => serde_json::from_slice(bytes),
        }
    }

    /// [`Node::parse`] for text already known to be UTF-8, which saves
    /// checking it again (a transform that also keeps the input as a string,
    /// as `event.original`, checks it once).
    ///
    /// # Errors
    ///
    /// As [`Node::parse`].
    pub fn parse_str(text: &'a str) -> Result<Self, serde_json::Error> {
        match parse::parse(text) {
            Some(node) => Ok(node),
            None => serde_json::from_str(text),
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(s) => Some(s),
            _ => None,
        }
    }

    /// The object, if this is one.
    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Node::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The object, mutably, if this is one.
    pub fn as_object_mut(&mut self) -> Option<&mut Object<'a>> {
        match self {
            Node::Object(o) => Some(o),
            _ => None,
        }
    }

    /// True for an object.
    pub fn is_object(&self) -> bool {
        matches!(self, Node::Object(_))
    }

    /// The number as f64, if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Node::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    /// "a string", "an object", … for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Number(_) => "a number",
            Node::String(_) => "a string",
            Node::Array(_) => "an array",
            Node::Object(_) => "an object",
        }
    }

    /// The value at a dotted `path`, if every step exists and is an object.
    pub fn get(&self, path: &str) -> Option<&Node<'a>> {
        segments(path).try_fold(self, |v, key| v.as_object()?.get(key))
    }

    /// The string at `path`.
    pub fn get_str(&self, path: &str) -> Option<&str> {
        self.get(path)?.as_str()
    }

    fn get_mut(&mut self, path: &str) -> Option<&mut Node<'a>> {
        segments(path).try_fold(self, |v, key| v.as_object_mut()?.get_mut(key))
    }

    /// Sets `path` to `value`, creating missing objects on the way, and
    /// returns the previous value, as [`crate::json::set`]. New keys borrow
    /// from `path` (a literal, or a string held by the transform's config),
    /// so building a document allocates nothing per key.
    ///
    /// # Errors
    ///
    /// [`PathError`] when a value on the way exists and is not an object;
    /// the document is then unchanged.
    pub fn set(&mut self, path: &'a str, value: Node<'a>) -> Result<Option<Node<'a>>, PathError> {
        // One walk, one scan of the path. A missing key is created as an
        // empty object, and all below it is new, so a non-object can only
        // be met before anything has changed: a failure leaves the
        // document as it was.
        let mut cur = self;
        let mut walked = 0usize;
        let mut rest: &'a str = path;
        while let Some(dot) = rest.bytes().position(|b| b == b'.') {
            let key = &rest[..dot];
            rest = &rest[dot + 1..];
            match cur {
                Node::Object(o) => {
                    walked += key.len() + 1;
                    cur = o.entry_object(key);
                }
                other => return Err(blocked(path, walked, other)),
            }
        }
        match cur {
            Node::Object(o) => Ok(o.insert(rest, value)),
            other => Err(blocked(path, walked, other)),
        }
    }

    /// Fails as [`Node::set`] would, without changing anything: walks the
    /// existing part of `path`'s parents and finds a non-object on the way.
    fn check_settable(&self, path: &str) -> Result<(), PathError> {
        let parent_path = split_last(path).map(|(p, _)| p);
        let mut cur = self;
        let mut walked = 0usize;
        let mut steps = parent_segments(parent_path);
        loop {
            let Some(obj) = cur.as_object() else {
                return Err(blocked(path, walked, cur));
            };
            let Some(key) = steps.next() else {
                return Ok(());
            };
            walked += key.len() + 1;
            match obj.get(key) {
                Some(next) => cur = next,
                None => return Ok(()), // the rest of the way is created
            }
        }
    }

    /// Removes the value at `path` and returns it; parents stay, even empty.
    pub fn remove(&mut self, path: &str) -> Option<Node<'a>> {
        match split_last(path) {
            None => self.as_object_mut()?.remove(path),
            Some((parent, leaf)) => self.get_mut(parent)?.as_object_mut()?.remove(leaf),
        }
    }

    /// Moves the value at `from` to `to`, as [`crate::json::rename`].
    ///
    /// # Errors
    ///
    /// [`PathError`] when `to` cannot be written; the value goes back to
    /// `from` (as its object's last member).
    pub fn rename(&mut self, from: &'a str, to: &'a str) -> Result<bool, PathError> {
        let Some(v) = self.remove(from) else {
            return Ok(false);
        };
        if let Err(e) = self.check_settable(to) {
            // `from`'s parent still exists, so this cannot fail.
            let _ = self.set(from, v);
            return Err(e);
        }
        self.set(to, v).map(|_| true)
    }

    /// Elastic's `dropEmptyFields`, as [`crate::json::drop_empty`]: deletes
    /// every `null` and `""`, and every object or array left empty. Returns
    /// true when `self` is now empty.
    pub fn drop_empty(&mut self) -> bool {
        match self {
            Node::Object(o) => {
                if let Some(raw) = o.raw
                    && !raw.has_empty
                {
                    // Only the members added since parsing can be empty
                    // (an unbuilt object has none).
                    let Some(entries) = o.entries.get_mut() else {
                        return false;
                    };
                    let mut i = raw.covers;
                    while i < entries.len() {
                        if entries[i].1.drop_empty() {
                            entries.remove(i);
                        } else {
                            i += 1;
                        }
                    }
                    return entries.is_empty();
                }
                o.retain(|_, child| !child.drop_empty());
                o.is_empty()
            }
            Node::Array(items) => {
                items.retain_mut(|child| !child.drop_empty());
                items.is_empty()
            }
            Node::Null => true,
            Node::String(s) => s.is_empty(),
            Node::Bool(_) | Node::Number(_) => false,
        }
    }

    /// Appends the compact JSON text of this value to `out`, byte for byte
    /// what `serde_json::to_vec` writes for the equivalent `Value`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Node::Null => out.extend_from_slice(b"null"),
            Node::Bool(true) => out.extend_from_slice(b"true"),
            Node::Bool(false) => out.extend_from_slice(b"false"),
            Node::Number(n) => {
                serde_json::to_writer(&mut *out, n).expect("writing JSON to a Vec cannot fail");
            }
            Node::String(s) => write_str(out, s),
            Node::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_json(out);
                }
                out.push(b']');
            }
            Node::Object(Object {
                raw: Some(raw),
                entries,
            }) => {
                let Some(entries) = entries.get() else {
                    // Never built: its text, as parsed.
                    out.extend_from_slice(raw.text.as_bytes());
                    return;
                };
                let added = &entries[raw.covers..];
                if added.is_empty() {
                    out.extend_from_slice(raw.text.as_bytes());
                } else {
                    // The text without its `}`, then the added members.
                    let text = raw.text.as_bytes();
                    out.extend_from_slice(&text[..text.len() - 1]);
                    for (i, (k, v)) in added.iter().enumerate() {
                        write_key(out, k, i == 0 && raw.covers == 0);
                        v.write_json(out);
                    }
                    out.push(b'}');
                }
            }
            Node::Object(o) => {
                out.push(b'{');
                for (i, (k, v)) in o.members().iter().enumerate() {
                    write_key(out, k, i == 0);
                    v.write_json(out);
                }
                out.push(b'}');
            }
        }
    }

    /// The compact JSON text of this value.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_json(&mut out);
        out
    }
}

/// [`std::str::from_utf8`], faster on text that is mostly ASCII (JSON
/// events are): sixteen bytes are checked at once where SIMD is there, and
/// the standard check runs from the first block holding a non-ASCII byte.
/// A transform that needs its input both as a string and parsed checks it
/// with this once and parses with [`Node::parse_str`].
///
/// # Errors
///
/// As [`std::str::from_utf8`], with the offsets of the whole input.
#[allow(
    unsafe_code,
    reason = "the ASCII prefix and the checked rest make valid UTF-8"
)]
pub fn str_from_utf8(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        let ascii = simd::ascii_prefix(bytes);
        if ascii > 0 {
            // The standard check of the rest; its errors are made
            // relative to the whole by checking the whole again.
            if std::str::from_utf8(&bytes[ascii..]).is_err() {
                return std::str::from_utf8(bytes);
            }
            // SAFETY: `bytes[..ascii]` is ASCII and ends at a character
            // boundary, and the rest was just checked.
            return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
    }
    std::str::from_utf8(bytes)
}

/// The error for `path` when the value after its first `walked` bytes
/// (keys and dots) is `found`, not an object.
fn blocked(path: &str, walked: usize, found: &Node<'_>) -> PathError {
    PathError {
        path: path.to_string(),
        blocked_at: if walked == 0 {
            "(root)".to_string()
        } else {
            path[..walked - 1].to_string()
        },
        found: found.type_name(),
    }
}

/// Key equality, inlined: keys are short, and in WebAssembly a call to
/// `memcmp` (a byte loop there) costs more than the comparison itself.
#[inline]
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

/// The keys of a dotted path. Paths are short, so a plain byte scan beats
/// `str::split`'s general searcher, which showed up in profiles.
#[inline(always)]
fn segments(path: &str) -> Segments<'_> {
    Segments { rest: Some(path) }
}

/// The keys of an optional parent path: none for `None`.
#[inline(always)]
fn parent_segments(parent: Option<&str>) -> Segments<'_> {
    Segments { rest: parent }
}

/// Iterator of [`segments`].
struct Segments<'p> {
    rest: Option<&'p str>,
}

impl<'p> Iterator for Segments<'p> {
    type Item = &'p str;

    // Inlined: as a call, this was a tenth of a mapping transform's time.
    #[inline(always)]
    fn next(&mut self) -> Option<&'p str> {
        let r = self.rest?;
        match r.bytes().position(|b| b == b'.') {
            Some(i) => {
                self.rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                self.rest = None;
                Some(r)
            }
        }
    }
}

/// `path.rsplit_once('.')`, by a plain byte scan (see [`segments`]).
#[inline(always)]
fn split_last(path: &str) -> Option<(&str, &str)> {
    let i = path.bytes().rposition(|b| b == b'.')?;
    Some((&path[..i], &path[i + 1..]))
}

/// Writes `s` as a JSON string, escaped exactly as serde_json escapes it:
/// `"` and `\`, the five short forms, other control characters as
/// `\u00xx` (lowercase), everything else (DEL and non-ASCII included) as is.
///
/// This is the hot loop of a mapping that keeps `event.original` (a whole
/// event inside a string, where every fourth or fifth byte is a quote), so
/// it works sixteen bytes at a time with SIMD (blocks of quotes and
/// backslashes expanded by shuffles), else eight: an exact bit mask says
/// which bytes need escaping; the plain bytes before the first one are
/// copied with one fixed-size store (all eight are stored, the surplus is
/// cut off again), and the scan goes on right after the escaped byte. No
/// variable-length copy happens: in WebAssembly that is a `memory.copy`,
/// which wasmtime runs as a call into the host.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_quoted(out, Affix::QUOTE, s, Affix::QUOTE);
}

/// One or two bytes written around a string by [`write_quoted`], as one
/// store: the opening quote with the comma before an object's member, the
/// closing quote with the colon after a key.
#[derive(Clone, Copy)]
struct Affix {
    bytes: u64,
    len: usize,
}

impl Affix {
    /// `"`.
    const QUOTE: Affix = Affix::of(b"\"");
    /// `,"`: a member after the first.
    const NEXT_KEY: Affix = Affix::of(b",\"");
    /// `":`: the end of a key.
    const KEY_END: Affix = Affix::of(b"\":");

    const fn of(text: &[u8]) -> Affix {
        let mut bytes = 0u64;
        let mut i = 0;
        while i < text.len() {
            bytes |= (text[i] as u64) << (8 * i);
            i += 1;
        }
        Affix {
            bytes,
            len: text.len(),
        }
    }
}

/// Writes an object's key `k`, with the comma before it unless it is the
/// `first`, and the colon after it.
#[inline]
fn write_key(out: &mut Vec<u8>, k: &str, first: bool) {
    let open = if first { Affix::QUOTE } else { Affix::NEXT_KEY };
    write_quoted(out, open, k, Affix::KEY_END);
}

/// [`write_str`] between `open` and `close` (which hold the quotes).
#[inline(always)]
fn write_quoted(out: &mut Vec<u8>, open: Affix, s: &str, close: Affix) {
    let bytes = s.as_bytes();
    // Room for the affixes, the plain case and two words of slack: a word
    // is always stored whole, so no copy has a variable length and no
    // store checks the capacity (a mapping writes ~80 strings of ~7 bytes
    // per record, where that per-byte bookkeeping was most of the cost).
    // After every escape the room is made this again for what is left.
    const SLACK: usize = 4 + 16;
    out.reserve(bytes.len() + SLACK);
    put_word(out, open.bytes, open.len);
    let mut i = 0;
    // Sixteen bytes at a time where SIMD is there, escaping quotes and
    // backslashes (JSON text inside a string) with a shuffle per word;
    // control characters are left to the word loop below.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    while let Some(block) = bytes.get(i..i + 16) {
        let block: &[u8; 16] = block.try_into().expect("sixteen bytes");
        let (special, control) = simd::classify(block);
        let (low, high) = simd::words(block);
        if special == 0 {
            put_word(out, low, 8);
            put_word(out, high, 8);
            i += 16;
            continue;
        }
        if control != 0 {
            break;
        }
        // At most 32 bytes: the room left is at least 16 + SLACK.
        for (word, marks) in [(low, special & 0xff), (high, special >> 8)] {
            let (first, rest, escapes) = simd::expand_marked(word, marks as usize);
            put_word(out, first, 8);
            put_word(out, rest, escapes);
        }
        i += 16;
        out.reserve(bytes.len() - i + SLACK);
    }
    while let Some(chunk) = bytes.get(i..i + 8) {
        let chunk: [u8; 8] = chunk.try_into().expect("eight bytes");
        let word = u64::from_le_bytes(chunk);
        let mask = escape_mask(word);
        if mask == 0 {
            put_word(out, word, 8);
            i += 8;
            continue;
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        if control_mask(word) == 0 {
            // Only quotes and backslashes: all of the word's escapes at once
            // (the loop's reserve left room for two words).
            let marks = simd::byte_marks(mask);
            let (first, rest, escapes) = simd::expand_marked(word, marks);
            put_word(out, first, 8);
            put_word(out, rest, escapes);
            i += 8;
            out.reserve(bytes.len() - i + SLACK);
            continue;
        }
        let plain = (mask.trailing_zeros() / 8) as usize;
        put_word(out, word, plain);
        escape_byte(out, (word >> (8 * plain)) as u8);
        i += plain + 1;
        out.reserve(bytes.len() - i + SLACK);
    }
    // The last 0 to 7 bytes, as one word padded with zeros, which the mask
    // ignores.
    let rest = &bytes[i..];
    let word = short_word(rest);
    let mask = escape_mask(word) & !(u64::MAX << (8 * rest.len()));
    if mask == 0 {
        put_word(out, word, rest.len());
    } else {
        for &b in rest {
            if ESCAPE[usize::from(b)] == 0 {
                out.push(b);
            } else {
                escape_byte(out, b);
            }
        }
        out.reserve(1 + 8);
    }
    put_word(out, close.bytes, close.len);
}

/// `bytes` (at most seven) as a little-endian word, zero above them: at
/// most three fixed-size loads, where a copy into a buffer would be a
/// variable-length `memory.copy`.
#[inline(always)]
fn short_word(bytes: &[u8]) -> u64 {
    let n = bytes.len();
    debug_assert!(n < 8);
    let mut word = 0u64;
    let mut at = 0;
    if n & 4 != 0 {
        word = u64::from(u32::from_le_bytes(
            bytes[..4].try_into().expect("four bytes"),
        ));
        at = 4;
    }
    if n & 2 != 0 {
        let pair = u16::from_le_bytes(bytes[at..at + 2].try_into().expect("two bytes"));
        word |= u64::from(pair) << (8 * at);
        at += 2;
    }
    if n & 1 != 0 {
        word |= u64::from(bytes[at]) << (8 * at);
    }
    word
}

/// Appends the first `n` (at most eight) bytes of `word`, storing all eight
/// into room the caller reserved: one fixed-size store, no capacity check.
///
/// # Panics
///
/// When fewer than eight bytes of capacity are left (a caller's bug, never
/// undefined behaviour).
#[inline(always)]
#[allow(unsafe_code, reason = "one unaligned store into reserved capacity")]
fn put_word(out: &mut Vec<u8>, word: u64, n: usize) {
    debug_assert!(n <= 8);
    let len = out.len();
    let room = &mut out.spare_capacity_mut()[..8];
    // SAFETY: `room` is eight bytes of the vector's spare capacity (the
    // slice above checked it), so the unaligned store stays inside the
    // allocation; `n <= 8` of them become part of the vector, initialised.
    unsafe {
        room.as_mut_ptr()
            .cast::<[u8; 8]>()
            .write_unaligned(word.to_le_bytes());
        out.set_len(len + n.min(8));
    }
}

/// `ESCAPE[b]`: 0 = copy as is, `u` = `\u00xx`, else the short form's letter.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Appends the escape sequence of `b`, one of the bytes [`ESCAPE`] marks.
fn escape_byte(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match ESCAPE[usize::from(b)] {
        b'u' => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 0xf)],
        ]),
        short => out.extend_from_slice(&[b'\\', short]),
    }
}

/// The high bit of each byte of `w` (little-endian) that JSON must escape:
/// below 0x20, `"` or `\`. Exact: no carry crosses a byte, because every
/// sum below is of two values under 0x80.
fn escape_mask(w: u64) -> u64 {
    let equal = |c: u8| {
        let x = w ^ (ONES * u64::from(c));
        !(((x & LOW7) + LOW7) | x)
    };
    (control_mask(w) | equal(b'"') | equal(b'\\')) & HIGH
}

const ONES: u64 = 0x0101_0101_0101_0101;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` below 0x20 (a control character), as
/// in [`escape_mask`].
#[inline(always)]
fn control_mask(w: u64) -> u64 {
    // High bit set where the byte's low seven bits are >= 0x20; with the
    // byte's own high bit, a clear result means "below 0x20".
    !(((w & LOW7) + ONES * (0x80 - 0x20)) | w) & HIGH
}

/// Escaping with WebAssembly's 128-bit SIMD, in a component built with
/// `-C target-feature=+simd128` (as the built-in transforms are).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use core::arch::wasm32::{
        u8x16_bitmask, u8x16_eq, u8x16_lt, u8x16_splat, u8x16_swizzle, u64x2, u64x2_extract_lane,
        v128, v128_or,
    };

    /// `block` as one vector: a single `v128.load`, where building it from
    /// two words takes four instructions.
    #[inline(always)]
    #[allow(
        unsafe_code,
        reason = "a bit-for-bit reinterpretation of sixteen bytes"
    )]
    fn load(block: &[u8; 16]) -> v128 {
        // SAFETY: both types are sixteen bytes of plain data, and every bit
        // pattern is a valid `v128`.
        unsafe { core::mem::transmute::<[u8; 16], v128>(*block) }
    }

    /// A bit per byte of `block` that JSON must escape in a string (`"`,
    /// `\` or below 0x20), the first byte lowest: what [`super::escape_mask`]
    /// says of eight bytes, for sixteen in a few instructions.
    #[inline(always)]
    pub(super) fn special_bytes(block: &[u8; 16]) -> u32 {
        classify(block).0
    }

    /// `block` as two little-endian words, the first eight bytes first:
    /// two fixed-size loads.
    #[inline(always)]
    pub(super) fn words(block: &[u8; 16]) -> (u64, u64) {
        let (low, high) = block.split_at(8);
        (
            u64::from_le_bytes(low.try_into().expect("eight bytes")),
            u64::from_le_bytes(high.try_into().expect("eight bytes")),
        )
    }

    /// [`special_bytes`], and the same bits for the control characters
    /// alone.
    #[inline(always)]
    pub(super) fn classify(block: &[u8; 16]) -> (u32, u32) {
        let v = load(block);
        let control = u8x16_lt(v, u8x16_splat(0x20));
        let quote = v128_or(
            u8x16_eq(v, u8x16_splat(b'"')),
            u8x16_eq(v, u8x16_splat(b'\\')),
        );
        (
            u32::from(u8x16_bitmask(v128_or(quote, control))),
            u32::from(u8x16_bitmask(control)),
        )
    }

    /// How many leading bytes of `bytes` are ASCII, in blocks of sixteen
    /// (a multiple of sixteen: the block holding the first non-ASCII byte,
    /// and a last short block, are not counted).
    #[inline]
    pub(super) fn ascii_prefix(bytes: &[u8]) -> usize {
        let mut i = 0;
        // Four blocks at a time: a non-ASCII byte anywhere in them sets a
        // high bit of their union (events are nearly all ASCII).
        while let Some(blocks) = bytes.get(i..i + 64) {
            let block = |k: usize| load(blocks[k..k + 16].try_into().expect("sixteen bytes"));
            let union = v128_or(v128_or(block(0), block(16)), v128_or(block(32), block(48)));
            if u8x16_bitmask(union) != 0 {
                break;
            }
            i += 64;
        }
        while let Some(block) = bytes.get(i..i + 16) {
            if u8x16_bitmask(load(block.try_into().expect("sixteen bytes"))) != 0 {
                break;
            }
            i += 16;
        }
        i
    }

    /// One bit per byte (the first byte lowest) from a mask with the high
    /// bit of each marked byte set, as [`super::escape_mask`] gives.
    #[inline(always)]
    pub(super) fn byte_marks(mask: u64) -> usize {
        usize::from(u8x16_bitmask(u64x2(mask, 0)))
    }

    /// The eight bytes of `word` with a backslash before each byte that
    /// `marks` (one bit per byte, the first lowest) marks, all of them `"`
    /// or `\`: the first eight bytes, the rest and the rest's length. One
    /// shuffle of the word and eight backslashes, picked by a table indexed
    /// by the marks, whatever the number of escapes. JSON inside a string
    /// has a quote every four or five bytes, and a loop per escape was most
    /// of `write_str`'s time.
    #[inline(always)]
    pub(super) fn expand_marked(word: u64, marks: usize) -> (u64, u64, usize) {
        let source = u64x2(word, u64::from_le_bytes([b'\\'; 8]));
        let picks = u64x2(EXPAND[2 * marks], EXPAND[2 * marks + 1]);
        let v = u8x16_swizzle(source, picks);
        (
            u64x2_extract_lane::<0>(v),
            u64x2_extract_lane::<1>(v),
            marks.count_ones() as usize,
        )
    }

    /// For each 8-bit mask, the lanes to pick (two little-endian words):
    /// lane 8 (a backslash) before each marked byte, then the byte.
    static EXPAND: [u64; 512] = {
        let mut table = [0u64; 512];
        let mut marks = 0;
        while marks < 256 {
            let mut lanes = [0u8; 16];
            let (mut at, mut byte) = (0, 0);
            while byte < 8 {
                if marks >> byte & 1 == 1 {
                    lanes[at] = 8;
                    at += 1;
                }
                lanes[at] = byte as u8;
                at += 1;
                byte += 1;
            }
            let mut k = 0;
            while k < 8 {
                table[2 * marks] |= (lanes[k] as u64) << (8 * k);
                table[2 * marks + 1] |= (lanes[8 + k] as u64) << (8 * k);
                k += 1;
            }
            marks += 1;
        }
        table
    };
}

impl fmt::Display for Node<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_json()))
    }
}

impl<'a> From<&'a str> for Node<'a> {
    fn from(s: &'a str) -> Self {
        Node::String(Cow::Borrowed(s))
    }
}

impl From<String> for Node<'_> {
    fn from(s: String) -> Self {
        Node::String(Cow::Owned(s))
    }
}

impl<'a> From<Cow<'a, str>> for Node<'a> {
    fn from(s: Cow<'a, str>) -> Self {
        Node::String(s)
    }
}

impl From<bool> for Node<'_> {
    fn from(b: bool) -> Self {
        Node::Bool(b)
    }
}

impl From<f64> for Node<'_> {
    /// A non-finite float becomes `null`, as `Value::from` does.
    fn from(f: f64) -> Self {
        Number::from_f64(f).map_or(Node::Null, Node::Number)
    }
}

impl<'a> From<Vec<Node<'a>>> for Node<'a> {
    fn from(items: Vec<Node<'a>>) -> Self {
        Node::Array(items)
    }
}

impl<'a> From<Object<'a>> for Node<'a> {
    fn from(o: Object<'a>) -> Self {
        Node::Object(o)
    }
}

impl<'de> serde::Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node<'de>, E> {
        Ok(v.into())
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        serde::Deserialize::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8).min(4096));
        while let Some(key) = map.next_key_seed(KeySeed)? {
            entries.push((key, map.next_value()?));
        }
        dedupe(&mut entries);
        Ok(Node::Object(Object::from_entries(entries)))
    }
}

/// Reads an object key, borrowing it when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(KeySeed)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Every case: Node and Value agree on acceptance and on the output.
    const CASES: &[&str] = &[
        r#"{"a":1,"b":[1,2.5,-3,1e300,"x\"y",null,true,false,{}],"c":{"d":"é\u00e9\n"}}"#,
        r#"{"k":1,"k":2,"j":3}"#,
        r#"{"esc\u0041ped":"\ud83d\ude00","n":18446744073709551615,"m":-9223372036854775808}"#,
        r#"[0.1,1E2,-0.0,123456789012345678901234567890]"#,
        r#""just a string""#,
        r#"  {"ws" : [ 1 , 2 ] }  "#,
    ];

    #[test]
    fn parses_and_writes_as_serde_json_value_does() {
        for case in CASES {
            let node = Node::parse(case.as_bytes()).unwrap();
            let value: Value = serde_json::from_str(case).unwrap();
            assert_eq!(
                String::from_utf8(node.to_json()).unwrap(),
                value.to_string(),
                "{case}"
            );
        }
    }

    /// A small deterministic generator of JSON-ish text: compact and
    /// spaced, usual and odd escapes and numbers, repeated keys, deep
    /// nesting, and (by mutation) broken text.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn pick<'s>(&mut self, from: &[&'s str]) -> &'s str {
            from[(self.next() % from.len() as u64) as usize]
        }

        fn ws(&mut self, out: &mut String) {
            if self.next().is_multiple_of(8) {
                out.push_str(self.pick(&[" ", "\n", "\t ", "\r\n"]));
            }
        }

        fn value(&mut self, out: &mut String, depth: u32) {
            self.ws(out);
            let kind = if depth > 4 {
                self.next() % 5
            } else {
                self.next() % 8
            };
            match kind {
                0 => out.push_str(self.pick(&["null", "true", "false", "nul", "truee"])),
                1 | 2 => out.push_str(self.pick(&[
                    "0",
                    "-1",
                    "42",
                    "18446744073709551615",
                    "18446744073709551616",
                    "-9223372036854775808",
                    "-9223372036854775809",
                    "-0",
                    "01",
                    "1.5",
                    "41.8781",
                    "-87.6298",
                    "1e2",
                    "1E+2",
                    "2.5e300",
                    "1e400",
                    "1e-400",
                    "-1e-400",
                    "0e5",
                    "123456789012345678901234567890.5",
                    "-0.0",
                    "0.1",
                    "1.0",
                    "1e-7",
                    "1.",
                    ".5",
                    "-",
                    "3.14159265358979",
                ])),
                3 | 4 => self.string(out),
                5 => {
                    out.push('[');
                    for i in 0..self.next() % 4 {
                        if i > 0 {
                            out.push(',');
                        }
                        self.value(out, depth + 1);
                    }
                    self.ws(out);
                    out.push(']');
                }
                _ => {
                    out.push('{');
                    let n = self.next() % 6;
                    for i in 0..n {
                        if i > 0 {
                            out.push(',');
                        }
                        self.ws(out);
                        let key = self.pick(&[
                            "\"a\"",
                            "\"b\"",
                            "\"a\"",
                            "\"k\\u0041\"",
                            "\"\"",
                            "\"q\\\"x\"",
                            "\"q\\\"x\"",
                        ]);
                        out.push_str(key);
                        self.ws(out);
                        out.push(':');
                        self.value(out, depth + 1);
                    }
                    self.ws(out);
                    out.push('}');
                }
            }
            self.ws(out);
        }

        fn string(&mut self, out: &mut String) {
            out.push('"');
            for _ in 0..self.next() % 6 {
                out.push_str(self.pick(&[
                    "plain text",
                    "é",
                    "😀",
                    "\\\"",
                    "\\\\",
                    "\\n",
                    "\\/",
                    "\\u00e9",
                    "\\u001f",
                    "\\u001F",
                    "\\u0041",
                    "\\ud83d\\ude00",
                    "\\ud800",
                    "\\x",
                    "\\u12",
                    "\u{7f}",
                    "",
                    "abcdefgh",
                    "\t",
                ]));
            }
            out.push('"');
        }
    }

    /// Objects keep their parsed text while members are only added, so
    /// every change is checked against the same changes on a `Value`:
    /// adding keys (top level and nested), replacing a covered or an added
    /// member, handing one out mutably, removing, and `drop_empty`.
    #[test]
    fn added_members_are_written_after_the_kept_text_exactly_as_value_does() {
        let mut g = Gen(0xadd);
        let mut kept_text_and_added = 0;
        for _ in 0..5_000 {
            let mut text = String::new();
            g.value(&mut text, 1);
            let text = format!("{{\"k\":{text},\"e\":{{}},\"o\":{{\"p\":1}}}}");
            let Some(mut node) = parse::parse(&text) else {
                continue;
            };
            let mut value: Value = serde_json::from_str(&text).unwrap();
            for _ in 0..6 {
                let path = g.pick(&["new", "k", "e", "o", "o.p", "o.q", "new.x.y", "e.f", "k.z"]);
                match g.next() % 6 {
                    0..=2 => {
                        let v = g.pick(&["", "v", "q\"s"]);
                        let ours = node.set(path, v.into());
                        let theirs = crate::json::set(&mut value, path, v.into());
                        assert_eq!(ours.is_ok(), theirs.is_ok(), "{text} {path}");
                    }
                    3 => {
                        let ours = node.remove(path).map(|n| n.to_json());
                        let theirs = crate::json::remove(&mut value, path)
                            .map(|v| v.to_string().into_bytes());
                        assert_eq!(ours, theirs, "{text} {path}");
                    }
                    4 => {
                        if let Some(n) = node.get_mut(path) {
                            *n = Node::Bool(true);
                            *crate::json::get_mut(&mut value, path).unwrap() = Value::Bool(true);
                        }
                    }
                    _ => {
                        assert_eq!(
                            node.drop_empty(),
                            crate::json::drop_empty(&mut value),
                            "{text}"
                        );
                    }
                }
                let o = node.as_object().unwrap();
                if o.raw.is_some_and(|r| r.covers < o.len()) {
                    kept_text_and_added += 1;
                }
                assert_eq!(
                    String::from_utf8(node.to_json()).unwrap(),
                    value.to_string(),
                    "{text}"
                );
            }
        }
        assert!(kept_text_and_added > 100, "{kept_text_and_added}");
    }

    #[test]
    fn the_fast_parser_agrees_with_serde_json_whenever_it_answers() {
        let mut g = Gen(0x5eed);
        let (mut fast, mut raw, mut unbuilt) = (0, 0, 0);
        for round in 0..20_000 {
            let mut text = String::new();
            g.value(&mut text, 0);
            let mut bytes = text.into_bytes();
            if round % 3 == 0 && !bytes.is_empty() {
                // Break it: drop, duplicate or replace one byte.
                let at = (g.next() % bytes.len() as u64) as usize;
                match g.next() % 3 {
                    0 => drop(bytes.remove(at)),
                    1 => bytes.insert(at, bytes[at]),
                    _ => bytes[at] = b"{}[]\",:\\ 0a\x01\xff"[(g.next() % 13) as usize],
                }
            }
            let reference: Result<Node<'_>, _> = serde_json::from_slice(&bytes);
            // Half the rounds as if no object had been read before (nested
            // objects unbuilt), half after every kind was.
            READ_KEYS.with(|keys| keys.set(if round % 2 == 0 { 0 } else { u64::MAX }));
            let Some(node) = std::str::from_utf8(&bytes).ok().and_then(parse::parse) else {
                continue;
            };
            fast += 1;
            let shown = String::from_utf8_lossy(&bytes);
            let reference = reference.unwrap_or_else(|e| panic!("{shown}: serde_json says {e}"));
            // Written and dropped before anything reads (builds) its
            // nested objects, then again after.
            assert_eq!(node.to_json(), reference.to_json(), "{shown}");
            unbuilt += count_unbuilt(&node);
            let mut unread = node.clone();
            let mut dropped = reference.clone();
            assert_eq!(unread.drop_empty(), dropped.drop_empty(), "{shown}");
            assert_eq!(unread.to_json(), dropped.to_json(), "{shown}");
            assert_eq!(node, reference, "{shown}");
            assert_eq!(node.to_json(), reference.to_json(), "{shown}");
            raw += check_raw(&node, &shown);
            let mut dropped = reference.clone();
            let empty = dropped.drop_empty();
            let mut ours = node.clone();
            assert_eq!(ours.drop_empty(), empty, "{shown}");
            assert_eq!(ours.to_json(), dropped.to_json(), "{shown}");
        }
        // The generator must exercise both paths.
        assert!(
            fast > 5_000 && raw > 500 && unbuilt > 50,
            "fast {fast}, raw {raw}, unbuilt {unbuilt}"
        );
    }

    /// How many objects in `node` are not built yet (without building).
    fn count_unbuilt(node: &Node<'_>) -> usize {
        match node {
            Node::Array(items) => items.iter().map(count_unbuilt).sum(),
            Node::Object(o) => match o.entries.get() {
                None => 1,
                Some(entries) => entries.iter().map(|(_, v)| count_unbuilt(v)).sum(),
            },
            _ => 0,
        }
    }

    #[test]
    fn nested_objects_are_built_only_when_read() {
        READ_KEYS.with(|keys| keys.set(0));
        let text = r#"{"a":{"b":{"c":1}},"geo":{"lat":52.3676,"tags":["x",{"y":""}]},"n":null}"#;
        let mut doc = Node::parse(text.as_bytes()).unwrap();
        // Written, and emptied of nothing, without building anything.
        doc.set("added", "x".into()).unwrap();
        assert_eq!(count_unbuilt(&doc), 2);
        let written = String::from_utf8(doc.to_json()).unwrap();
        assert_eq!(
            written,
            format!("{},\"added\":\"x\"}}", &text[..text.len() - 1])
        );
        assert_eq!(count_unbuilt(&doc), 2);
        // Reading one member builds that object alone (its own nested
        // object stays text).
        assert_eq!(doc.get("a.b").map(Node::type_name), Some("an object"));
        assert_eq!(count_unbuilt(&doc), 2, "a is built, a.b is not");
        assert_eq!(doc.get("geo.lat").and_then(Node::as_f64), Some(52.3676));
        assert_eq!(
            count_unbuilt(&doc),
            2,
            "geo is built, its array's object not"
        );
        // `geo` holds an empty string: dropping empties builds and changes it.
        doc.drop_empty();
        assert_eq!(
            String::from_utf8(doc.to_json()).unwrap(),
            r#"{"a":{"b":{"c":1}},"geo":{"lat":52.3676,"tags":["x"]},"added":"x"}"#
        );
        // The next parse builds at once what was read under `a` and `geo`
        // (the array's object, whose key is the array's, included); `b`
        // was never read. What is parsed is the same either way.
        let again = Node::parse(text.as_bytes()).unwrap();
        assert_eq!(count_unbuilt(&again), 1, "only a.b is unbuilt");
        assert_eq!(again.get("a.b.c"), Some(&Node::Number(1u64.into())));
        assert_eq!(again.to_json(), text.as_bytes());
        READ_KEYS.with(|keys| keys.set(0));
        assert_eq!(Node::parse(text.as_bytes()).unwrap(), again);
    }

    /// Checks that every object holding its text would write exactly that
    /// text; returns how many did.
    fn check_raw(node: &Node<'_>, shown: &str) -> usize {
        match node {
            Node::Array(items) => items.iter().map(|i| check_raw(i, shown)).sum(),
            Node::Object(o) => {
                let below: usize = o.iter().map(|(_, v)| check_raw(v, shown)).sum();
                let Some(r) = o.raw else {
                    return below;
                };
                let mut written = node.clone();
                written.as_object_mut().unwrap().raw = None;
                assert_eq!(r.text.as_bytes(), written.to_json(), "{shown}");
                below + 1
            }
            _ => 0,
        }
    }

    #[test]
    fn the_escape_mask_is_exact_for_every_byte_among_every_neighbour() {
        let neighbours = [
            0x00, 0x1f, 0x20, 0x21, 0x22, 0x5c, 0x5d, 0x7f, 0x80, 0x9f, 0xa2, 0xff,
        ];
        for b in 0..=255u8 {
            for &n in &neighbours {
                for at in 0..8 {
                    let mut w = [n; 8];
                    w[at] = b;
                    let mask = escape_mask(u64::from_le_bytes(w));
                    for (i, &x) in w.iter().enumerate() {
                        let want = x < 0x20 || x == b'"' || x == b'\\';
                        assert_eq!(mask >> (i * 8 + 7) & 1 == 1, want, "{w:02x?} byte {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn strings_are_escaped_byte_for_byte_as_serde_json_does() {
        let all: String = (0u32..0x80)
            .filter_map(char::from_u32)
            .chain("é€😀".chars())
            .collect();
        let dense = "\"\\".repeat(13) + "\n\"a\"\u{0}\"";
        for s in [all.as_str(), "", "plain", "\"\\\"", "tail\u{1f}", &dense] {
            let mut ours = Vec::new();
            write_str(&mut ours, s);
            assert_eq!(ours, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
        // Every escape at every offset of the eight-byte skip, and
        // non-ASCII next to it.
        for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', ' ', '\u{7f}', 'é', '😀'] {
            for len in 1..=26 {
                for at in 0..len {
                    for second in [None, Some(len - 1), Some(at / 2)] {
                        let s: String = "abcdefghijklmnopqrstuvwxyz"
                            .chars()
                            .take(len)
                            .enumerate()
                            .map(|(i, c)| {
                                if i == at || Some(i) == second {
                                    special
                                } else {
                                    c
                                }
                            })
                            .collect();
                        let mut ours = Vec::new();
                        write_str(&mut ours, &s);
                        assert_eq!(ours, serde_json::to_vec(&s).unwrap(), "{s:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn repeated_keys_keep_first_position_and_last_value_in_big_objects_too() {
        let mut big = String::from("{");
        for i in 0..40 {
            big.push_str(&format!("\"k{}\":{i},", i % 20));
        }
        big.push_str("\"end\":0}");
        let node = Node::parse(big.as_bytes()).unwrap();
        let value: Value = serde_json::from_str(&big).unwrap();
        assert_eq!(
            String::from_utf8(node.to_json()).unwrap(),
            value.to_string()
        );
        assert_eq!(node.as_object().unwrap().len(), 21);
    }

    /// A nested object is only checked, with its first keys kept apart
    /// from the rest (`parse::LOCAL_KEYS`): a key repeated within the
    /// first ones, across the two, or among the rest is found either way.
    #[test]
    fn repeated_keys_are_found_in_checked_objects_of_any_size() {
        for (keys, repeat) in [(6, 2), (20, 3), (20, 17), (40, 30)] {
            let mut nested = String::from("{");
            for i in 0..keys {
                nested.push_str(&format!("\"key{i}\":{i},"));
            }
            nested.push_str(&format!("\"key{repeat}\":\"again\"}}"));
            let text = format!(r#"{{"a":{nested},"b":{{"c":1}}}}"#);
            READ_KEYS.with(|k| k.set(0));
            let node = Node::parse(text.as_bytes()).unwrap();
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                String::from_utf8(node.to_json()).unwrap(),
                value.to_string()
            );
            let a = node.get("a").unwrap().as_object().unwrap();
            assert_eq!(a.len(), keys, "{keys} keys, key{repeat} repeated");
            assert_eq!(
                a.get(&format!("key{repeat}")).unwrap().as_str(),
                Some("again")
            );
        }
    }

    #[test]
    fn rejects_what_value_rejects() {
        for bad in [
            "",
            "{",
            r#"{"a":1} x"#,
            r#"{"a":"\ud800"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":1e400}"#,
            &"[".repeat(200),
        ] {
            assert!(Node::parse(bad.as_bytes()).is_err(), "{bad}");
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let node = Node::parse(br#"{"plain":"abc","esc":"a\tb"}"#).unwrap();
        let o = node.as_object().unwrap();
        assert!(matches!(
            o.get("plain"),
            Some(Node::String(Cow::Borrowed("abc")))
        ));
        assert!(matches!(o.get("esc"), Some(Node::String(Cow::Owned(s))) if s == "a\tb"));
    }

    #[test]
    fn path_helpers_match_the_value_helpers() {
        let text = r#"{"a":{"b":1,"c":""},"d":[null,"",{"e":null}],"f":"x","g":{"h":{}}}"#;
        let mut node = Node::parse(text.as_bytes()).unwrap();
        let mut value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(node.drop_empty(), crate::json::drop_empty(&mut value));
        assert_eq!(node.to_json(), serde_json::to_vec(&value).unwrap());

        node.set("a.x.y", "z".into()).unwrap();
        crate::json::set(&mut value, "a.x.y", "z".into()).unwrap();
        assert_eq!(
            node.set("f.g", Node::Null).unwrap_err(),
            crate::json::set(&mut value, "f.g", Value::Null).unwrap_err()
        );
        assert!(node.rename("a.b", "b2").unwrap());
        crate::json::rename(&mut value, "a.b", "b2").unwrap();
        assert!(node.rename("f", "a.x.y.z").is_err());
        assert!(crate::json::rename(&mut value, "f", "a.x.y.z").is_err());
        assert_eq!(
            node.remove("a.x"),
            Some(Node::Object({
                let mut o = Object::new();
                o.insert("y", "z".into());
                o
            }))
        );
        crate::json::remove(&mut value, "a.x");
        assert_eq!(node.to_json(), serde_json::to_vec(&value).unwrap());
        assert_eq!(node.get_str("b2"), None);
        assert_eq!(node.get("b2"), Some(&Node::Number(1.into())));
    }

    /// Found by the `dom` fuzz target: with serde_json's default float
    /// parser (not correctly rounded) a long float drifted each time it was
    /// parsed and written. With `float_roundtrip` it is stable.
    #[test]
    fn floats_survive_any_number_of_round_trips() {
        for text in [
            "[-0.123456123456789012345678]",
            "[0.30000000000000004,1e300,-2.2250738585072014e-308]",
            "{\"lat\":52.367600000000003,\"lon\":4.9041}",
        ] {
            let once = Node::parse(text.as_bytes()).unwrap().to_json();
            let twice = Node::parse(&once).unwrap().to_json();
            assert_eq!(
                String::from_utf8(once).unwrap(),
                String::from_utf8(twice).unwrap(),
                "{text}"
            );
        }
    }
}
