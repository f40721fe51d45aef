//! Records in and out, and per-record errors.

use crate::bindings::sluice::transform::types as wit;
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
#[derive(Debug, Default)]
pub struct Emit {
    outputs: Vec<Output>,
}

impl Emit {
    /// Emits raw bytes, keeping the input's route.
    pub fn emit(&mut self, data: impl Into<Vec<u8>>) {
        self.push(Output {
            data: data.into(),
            ..Output::default()
        });
    }

    /// Emits a JSON value, serialised compactly, keeping the input's route.
    pub fn emit_json(&mut self, value: &Value) {
        self.emit(value.to_string());
    }

    /// Emits a JSON value with a route.
    pub fn emit_json_routed(&mut self, value: &Value, route: impl Into<String>) {
        self.emit_routed(value.to_string(), route);
    }

    /// Emits raw bytes with a route.
    pub fn emit_routed(&mut self, data: impl Into<Vec<u8>>, route: impl Into<String>) {
        self.push(Output {
            data: data.into(),
            route: Some(route.into()),
            metadata: Vec::new(),
        });
    }

    /// Emits a fully specified output.
    pub fn push(&mut self, output: Output) {
        self.outputs.push(output);
    }

    /// How many outputs have been emitted so far.
    pub fn len(&self) -> usize {
        self.outputs.len()
    }

    /// True when nothing has been emitted.
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    pub(crate) fn into_outputs(self) -> Vec<Output> {
        self.outputs
    }
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

    pub(crate) fn into_wit(self) -> wit::RecordError {
        let kind = match self.kind {
            ErrorKind::InvalidInput => wit::ErrorKind::InvalidInput,
            ErrorKind::Unsupported => wit::ErrorKind::Unsupported,
            ErrorKind::Internal => wit::ErrorKind::Internal,
        };
        wit::RecordError {
            kind,
            message: self.message,
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
    fn meta_takes_last_value() {
        let mut r = Record::new("{}");
        r.metadata = vec![("k".into(), "1".into()), ("k".into(), "2".into())];
        assert_eq!(r.meta("k"), Some("2"));
        assert_eq!(r.meta("x"), None);
    }
}
