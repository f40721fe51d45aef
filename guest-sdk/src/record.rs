//! Records in and out, and per-record errors.

use crate::dom;
use serde_json::{Map, Value};
use std::fmt;

/// One input record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// The raw bytes as received: typically one JSON document.
    pub data: Vec<u8>,
    /// The name of the source that received it.
    pub source: String,
    /// When the gateway received it, RFC 3339 UTC. Transforms have no clock;
    /// use this.
    pub received_at: String,
    /// The route assigned so far, if any.
    pub route: Option<String>,
    /// Further string metadata.
    pub metadata: Vec<(String, String)>,
}

impl Record {
    /// A record holding `data`, with empty metadata (handy in tests).
    pub fn new(data: impl Into<Vec<u8>>) -> Self {
        Record {
            data: data.into(),
            ..Record::default()
        }
    }

    /// Parses the bytes as JSON.
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::InvalidInput`] error with serde's message (line and
    /// column) when the bytes are not JSON.
    pub fn json(&self) -> Result<Value, RecordError> {
        serde_json::from_slice(&self.data).map_err(not_json)
    }

    /// Parses the bytes as a JSON object.
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::InvalidInput`] error when the bytes are not JSON or
    /// not an object.
    pub fn json_object(&self) -> Result<Map<String, Value>, RecordError> {
        match self.json()? {
            Value::Object(m) => Ok(m),
            other => Err(not_an_object(crate::json::type_name(&other))),
        }
    }

    /// Parses the bytes as a JSON object into a [`dom::Node`] that borrows
    /// its keys and strings from the record: the fast path, with the same
    /// errors as [`Record::json_object`] (see the SDK's README, "Writing a
    /// fast transform").
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::InvalidInput`] error when the bytes are not JSON or
    /// not an object.
    pub fn object_node(&self) -> Result<dom::Node<'_>, RecordError> {
        let node = dom::Node::parse(&self.data).map_err(not_json)?;
        if node.is_object() {
            Ok(node)
        } else {
            Err(not_an_object(node.type_name()))
        }
    }

    /// The value of metadata `key`, if set.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn not_json(e: serde_json::Error) -> RecordError {
    RecordError::invalid_input(format!("not valid JSON: {e}"))
}

fn not_an_object(type_name: &str) -> RecordError {
    RecordError::invalid_input(format!("expected a JSON object, got {type_name}"))
}

/// One output record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// The bytes to deliver.
    pub data: Vec<u8>,
    /// The route; `None` keeps the input's.
    pub route: Option<String>,
    /// Metadata to attach.
    pub metadata: Vec<(String, String)>,
}

impl Output {
    /// The data as UTF-8 text (lossy), for tests and logs.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// Collects the outputs of one input record.
///
/// Inside a component the outputs' bytes go straight into the answer of the
/// whole call: [`Emit::emit_with`] lets a transform write its output there
/// with no buffer of its own, and nothing is copied again on the way out.
#[derive(Debug, Default)]
pub struct Emit {
    /// The outputs' bytes, back to back. In a component this is the call's
    /// answer, and the bytes before `base` are earlier records' outputs.
    pub(crate) data: Vec<u8>,
    /// Where this record's outputs begin in `data`.
    pub(crate) base: usize,
    /// This record's outputs, in order.
    pub(crate) outputs: Vec<Emitted>,
}

/// Where one output's bytes end in [`Emit`]'s buffer, and what goes with it.
#[derive(Debug)]
pub(crate) struct Emitted {
    pub(crate) end: usize,
    pub(crate) route: Option<String>,
    pub(crate) metadata: Vec<(String, String)>,
}

impl Emit {
    /// Emits raw bytes, keeping the input's route.
    pub fn emit(&mut self, data: impl Into<Vec<u8>>) {
        self.data.extend_from_slice(&data.into());
        self.close(None, Vec::new());
    }

    /// Emits the bytes that `write` appends to the buffer it is given,
    /// keeping the input's route: the output is written in place, with no
    /// `Vec` of its own. `write` must only append (`extend_from_slice`,
    /// `push`, `dom::Node::write_json`, `reserve`): the bytes already in
    /// the buffer belong to earlier outputs.
    ///
    /// ```
    /// # use sluice_sdk::{Emit, Record, RecordError};
    /// # fn f(record: Record, out: &mut Emit) -> Result<(), RecordError> {
    /// let doc = record.object_node()?;
    /// out.emit_with(|buf| doc.write_json(buf));
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// When `write` removed bytes of earlier outputs.
    pub fn emit_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.write(write);
        self.close(None, Vec::new());
    }

    /// [`Emit::emit_with`] with a route.
    ///
    /// # Panics
    ///
    /// When `write` removed bytes of earlier outputs.
    pub fn emit_routed_with(&mut self, route: impl Into<String>, write: impl FnOnce(&mut Vec<u8>)) {
        self.write(write);
        self.close(Some(route.into()), Vec::new());
    }

    /// Emits a JSON value, serialised compactly, keeping the input's route.
    pub fn emit_json(&mut self, value: &Value) {
        self.emit_with(|buf| write_value(buf, value));
    }

    /// Emits a JSON value with a route.
    pub fn emit_json_routed(&mut self, value: &Value, route: impl Into<String>) {
        self.emit_routed_with(route, |buf| write_value(buf, value));
    }

    /// Emits raw bytes with a route.
    pub fn emit_routed(&mut self, data: impl Into<Vec<u8>>, route: impl Into<String>) {
        self.data.extend_from_slice(&data.into());
        self.close(Some(route.into()), Vec::new());
    }

    /// Emits a fully specified output.
    pub fn push(&mut self, output: Output) {
        self.data.extend_from_slice(&output.data);
        self.close(output.route, output.metadata);
    }

    /// How many outputs have been emitted so far.
    pub fn len(&self) -> usize {
        self.outputs.len()
    }

    /// True when nothing has been emitted.
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    fn write(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.data.len();
        write(&mut self.data);
        assert!(
            self.data.len() >= start,
            "Emit::emit_with: the closure removed bytes of earlier outputs"
        );
    }

    /// Ends the output whose bytes were just appended.
    fn close(&mut self, route: Option<String>, metadata: Vec<(String, String)>) {
        self.outputs.push(Emitted {
            end: self.data.len(),
            route,
            metadata,
        });
    }

    pub(crate) fn into_outputs(mut self) -> Vec<Output> {
        // One output, alone in the buffer (the usual case natively): it
        // takes the buffer, uncopied.
        if let [only] = &mut self.outputs[..]
            && self.base == 0
        {
            self.data.truncate(only.end);
            return vec![Output {
                data: self.data,
                route: only.route.take(),
                metadata: std::mem::take(&mut only.metadata),
            }];
        }
        let mut start = self.base;
        self.outputs
            .into_iter()
            .map(|e| {
                let data = self.data[start..e.end].to_vec();
                start = e.end;
                Output {
                    data,
                    route: e.route,
                    metadata: e.metadata,
                }
            })
            .collect()
    }
}

/// Writes `value` as `Value::to_string` does, into `buf`.
fn write_value(buf: &mut Vec<u8>, value: &Value) {
    serde_json::to_writer(buf, value).expect("writing JSON to a Vec cannot fail");
}

/// The class of a per-record failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input is malformed for this transform.
    InvalidInput,
    /// The input is well formed but not handled by this transform.
    Unsupported,
    /// A bug or unexpected state in the transform.
    Internal,
}

impl ErrorKind {
    /// The WIT name: `invalid-input`, `unsupported` or `internal`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Internal => "internal",
        }
    }
}

/// A per-record failure: the gateway sends the record with this error to
/// dead-letter and carries on with the rest of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// The class of failure.
    pub kind: ErrorKind,
    /// A human-readable explanation.
    pub message: String,
}

impl RecordError {
    /// An [`ErrorKind::InvalidInput`] error.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        RecordError {
            kind: ErrorKind::InvalidInput,
            message: message.into(),
        }
    }

    /// An [`ErrorKind::Unsupported`] error.
    pub fn unsupported(message: impl Into<String>) -> Self {
        RecordError {
            kind: ErrorKind::Unsupported,
            message: message.into(),
        }
    }

    /// An [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Self {
        RecordError {
            kind: ErrorKind::Internal,
            message: message.into(),
        }
    }

    /// The number of this error's kind in the contract's `error-kind`.
    pub(crate) fn kind_code(&self) -> u32 {
        match self.kind {
            ErrorKind::InvalidInput => 0,
            ErrorKind::Unsupported => 1,
            ErrorKind::Internal => 2,
        }
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for RecordError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_object_rejects_non_objects_with_type() {
        let e = Record::new("[1]").json_object().unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput);
        assert!(e.message.contains("got an array"), "{e}");
        let e = Record::new("{nope").json().unwrap_err();
        assert!(e.message.starts_with("not valid JSON"), "{e}");
    }

    #[test]
    fn every_way_of_emitting_gives_its_own_output_in_order() {
        let value = serde_json::json!({"é": "a\"b\\", "n": 1.5e300, "arr": [null, true]});
        let mut out = Emit::default();
        out.emit("raw");
        out.emit_with(|buf| buf.extend_from_slice(b"in place"));
        out.emit_with(|_| {});
        out.emit_routed_with("r1", |buf| buf.push(b'x'));
        out.emit_json(&value);
        out.emit_json_routed(&value, "r2");
        out.emit_routed(b"bytes".to_vec(), "r3");
        out.push(Output {
            data: b"full".to_vec(),
            route: Some("r4".into()),
            metadata: vec![("k".into(), "v".into())],
        });
        assert_eq!(out.len(), 8);
        let got: Vec<_> = out
            .into_outputs()
            .into_iter()
            .map(|o| (o.text(), o.route, o.metadata))
            .collect();
        let json = value.to_string();
        let plain = |s: &str| (s.to_string(), None, vec![]);
        let routed = |s: &str, r: &str| (s.to_string(), Some(r.to_string()), vec![]);
        assert_eq!(
            got,
            [
                plain("raw"),
                plain("in place"),
                plain(""),
                routed("x", "r1"),
                plain(&json),
                routed(&json, "r2"),
                routed("bytes", "r3"),
                (
                    "full".into(),
                    Some("r4".into()),
                    vec![("k".into(), "v".into())]
                ),
            ]
        );
    }

    #[test]
    fn outputs_start_at_the_base() {
        // In a component, earlier records' outputs sit before `base`.
        let mut out = Emit {
            data: b"earlier".to_vec(),
            base: 7,
            ..Emit::default()
        };
        out.emit("mine");
        assert_eq!(out.into_outputs()[0].text(), "mine");
    }

    #[test]
    #[should_panic(expected = "removed bytes of earlier outputs")]
    fn a_closure_that_removes_earlier_bytes_panics() {
        let mut out = Emit::default();
        out.emit("first");
        out.emit_with(Vec::clear);
    }

    #[test]
    fn meta_takes_last_value() {
        let mut r = Record::new("{}");
        r.metadata = vec![("k".into(), "1".into()), ("k".into(), "2".into())];
        assert_eq!(r.meta("k"), Some("2"));
        assert_eq!(r.meta("x"), None);
    }
}
