//! Maps byte offsets and key paths of a TOML document to lines, so every
//! config error can say file, line and key.
//!
//! serde's errors carry a byte span but not always the key (an internally
//! tagged enum buffers its table first, so an unknown field is reported at
//! the table). Validation errors carry a key path but no span. Both are
//! resolved here against the spanned parse tree that `toml` exposes.

use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A parsed document that can answer "where is this key" questions.
pub(crate) struct Locator<'i> {
    text: &'i str,
    root: Option<Spanned<DeTable<'i>>>,
}

impl<'i> Locator<'i> {
    pub(crate) fn new(text: &'i str) -> Self {
        Self {
            text,
            root: DeTable::parse(text).ok(),
        }
    }

    /// 1-based line and column of a byte offset.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// The span of the key at `path` (the value's span when the key itself
    /// is implicit, as for `[[array]]` elements). Falls back to the deepest
    /// prefix of the path that exists, so a missing key points at its table.
    pub(crate) fn span_of(&self, path: &[String]) -> Option<Range<usize>> {
        let root = self.root.as_ref()?;
        let mut best = None;
        let mut table = Some(root.get_ref());
        let mut array: Option<&[Spanned<DeValue<'i>>]> = None;
        for segment in path {
            let value = if let Some(t) = table {
                let (key, value) = t.iter().find(|(k, _)| k.get_ref() == segment)?;
                best = Some(key.span());
                value
            } else if let Some(a) = array {
                let v = a.get(segment.parse::<usize>().ok()?)?;
                best = Some(v.span());
                v
            } else {
                break;
            };
            table = None;
            array = None;
            match value.get_ref() {
                DeValue::Table(t) => table = Some(t),
                DeValue::Array(a) => array = Some(a),
                _ => {}
            }
        }
        best
    }

    /// The key path whose value contains `span`, and the span of the
    /// innermost such key. When `field` is given (serde named an unknown or
    /// missing field), the key of that name inside the table is preferred.
    ///
    /// A table opened with a `[header]` has the header as its span, so the
    /// innermost entry is searched over every key and value, not by
    /// descending from the root.
    pub(crate) fn key_at(
        &self,
        span: &Range<usize>,
        field: Option<&str>,
    ) -> (Vec<String>, Option<Range<usize>>) {
        let Some(root) = self.root.as_ref() else {
            return (Vec::new(), None);
        };
        let mut entries = Vec::new();
        flatten(Node::Table(root.get_ref()), &mut Vec::new(), &mut entries);
        let best = entries
            .iter()
            .filter(|e| contains(&e.value, span) || contains(&e.key, span))
            .min_by_key(|e| e.value.len().min(e.key.len()));
        let Some(best) = best else {
            return (Vec::new(), None);
        };
        // serde names an unknown field (`field`), or for a wrong type only
        // the offending value (`5`): match a child by key, then by value.
        let children = || {
            entries
                .iter()
                .filter(|e| e.path.len() == best.path.len() + 1 && e.path.starts_with(&best.path))
        };
        if let Some(field) = field
            && let Some(child) = children()
                .find(|e| e.path[best.path.len()] == field)
                .or_else(|| {
                    children().find(|e| {
                        self.text
                            .get(e.value.clone())
                            .map(|v| v.trim_matches(['"', '\'']))
                            == Some(field)
                    })
                })
        {
            return (child.path.clone(), Some(child.key.clone()));
        }
        (best.path.clone(), Some(best.key.clone()))
    }
}

/// A key of the document with its path and spans.
struct Entry {
    path: Vec<String>,
    key: Range<usize>,
    value: Range<usize>,
}

fn flatten(node: Node<'_, '_>, path: &mut Vec<String>, out: &mut Vec<Entry>) {
    let children: Vec<(String, Range<usize>, &Spanned<DeValue<'_>>)> = match node {
        Node::Table(t) => t
            .iter()
            .map(|(k, v)| (k.get_ref().to_string(), k.span(), v))
            .collect(),
        Node::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v.span(), v))
            .collect(),
        Node::Leaf => Vec::new(),
    };
    for (name, key, value) in children {
        path.push(name);
        out.push(Entry {
            path: path.clone(),
            key,
            value: value.span(),
        });
        flatten(Node::of(value.get_ref()), path, out);
        path.pop();
    }
}

#[derive(Clone, Copy)]
enum Node<'a, 'i> {
    Table(&'a DeTable<'i>),
    Array(&'a [Spanned<DeValue<'i>>]),
    Leaf,
}

impl<'a, 'i> Node<'a, 'i> {
    fn of(value: &'a DeValue<'i>) -> Self {
        match value {
            DeValue::Table(t) => Node::Table(t),
            DeValue::Array(a) => Node::Array(a),
            _ => Node::Leaf,
        }
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer != &(0..0)
}

/// Renders a key path the way TOML spells it: `sources.push.auth.token`.
pub(crate) fn dotted(path: &[String]) -> String {
    path.join(".")
}
