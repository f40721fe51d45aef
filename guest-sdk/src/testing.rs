//! A native test harness: run a [`Transform`] over records without WASM.
//!
//! It goes through [`crate::process_batch`], the same function the
//! component's glue calls, so what passes here behaves the same inside the
//! gateway (limits aside).

use crate::{Config, ConfigError, Output, Record, RecordError, RecordResult, Transform};
use serde_json::Value;

/// A transform instance under test.
pub struct Harness<T> {
    transform: T,
    /// The `source` metadata given to records (default `test`).
    pub source: String,
    /// The `received-at` metadata given to records.
    pub received_at: String,
}

impl<T> std::fmt::Debug for Harness<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl<T: Transform> Harness<T> {
    /// Creates the transform from key/value pairs.
    ///
    /// # Errors
    ///
    /// The transform's [`ConfigError`].
    pub fn new(config: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let transform = T::new(Config::new(config.iter().copied()))?;
        Ok(Harness {
            transform,
            source: "test".into(),
            received_at: "2026-01-01T00:00:00.000000000Z".into(),
        })
    }

    /// Runs a batch of raw records, one result per record.
    pub fn run_batch(&mut self, data: &[&[u8]]) -> Vec<RecordResult> {
        let batch = data
            .iter()
            .map(|d| Record {
                data: d.to_vec(),
                source: self.source.clone(),
                received_at: self.received_at.clone(),
                route: None,
                metadata: Vec::new(),
            })
            .collect();
        crate::process_batch(&mut self.transform, batch)
    }

    /// Runs one record given as text and returns its full outputs.
    ///
    /// # Errors
    ///
    /// The record's [`RecordError`].
    pub fn run_outputs(&mut self, line: &str) -> Result<Vec<Output>, RecordError> {
        self.run_batch(&[line.as_bytes()])
            .pop()
            .expect("one result per record")
    }

    /// Runs one record given as text and returns the outputs as text.
    ///
    /// # Errors
    ///
    /// The record's [`RecordError`].
    pub fn run_line(&mut self, line: &str) -> Result<Vec<String>, RecordError> {
        Ok(self.run_outputs(line)?.iter().map(Output::text).collect())
    }

    /// Runs one JSON value and parses each output back as JSON.
    ///
    /// # Errors
    ///
    /// The record's [`RecordError`].
    ///
    /// # Panics
    ///
    /// When an output is not JSON: that is a bug in a JSON transform.
    pub fn run_json(&mut self, input: &Value) -> Result<Vec<Value>, RecordError> {
        let outputs = self.run_outputs(&input.to_string())?;
        Ok(outputs
            .iter()
            .map(|o| {
                serde_json::from_slice(&o.data)
                    .unwrap_or_else(|e| panic!("output is not JSON ({e}): {}", o.text()))
            })
            .collect())
    }

    /// Runs every non-empty line of `jsonl` as one batch.
    pub fn run_jsonl(&mut self, jsonl: &str) -> Vec<RecordResult> {
        let lines: Vec<&[u8]> = jsonl
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::as_bytes)
            .collect();
        self.run_batch(&lines)
    }

    /// The transform itself.
    pub fn transform(&mut self) -> &mut T {
        &mut self.transform
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Emit;

    /// Splits `{"n": k}` into k copies; errors on non-objects.
    struct Repeat;

    impl Transform for Repeat {
        fn new(config: Config) -> Result<Self, ConfigError> {
            config.deny_unknown(&[])?;
            Ok(Repeat)
        }

        fn process(&mut self, record: Record, out: &mut Emit) -> Result<(), RecordError> {
            let doc = record.json_object()?;
            let n = doc.get("n").and_then(Value::as_u64).unwrap_or(1);
            for _ in 0..n {
                out.emit_json(&Value::Object(doc.clone()));
            }
            if n == 3 {
                // Outputs emitted before an error must be discarded.
                return Err(RecordError::unsupported("three is too many"));
            }
            Ok(())
        }
    }

    #[test]
    fn batch_gives_one_result_per_record_in_order() {
        let mut h = Harness::<Repeat>::new(&[]).unwrap();
        let results = h.run_jsonl("{\"n\":0}\n{\"n\":2}\n\n[1]\n{\"n\":3}\n");
        assert_eq!(results.len(), 4);
        assert_eq!(results[0].as_ref().unwrap().len(), 0);
        assert_eq!(results[1].as_ref().unwrap().len(), 2);
        assert_eq!(
            results[2].as_ref().unwrap_err().kind,
            crate::ErrorKind::InvalidInput
        );
        assert_eq!(
            results[3].as_ref().unwrap_err().message,
            "three is too many"
        );
    }

    #[test]
    fn config_errors_surface() {
        let e = Harness::<Repeat>::new(&[("x", "1")]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("x"));
    }
}

/// Turns a documentation example into strict JSON, for test fixtures
/// copied from vendors' docs: `//` comments are removed, and a line break
/// inside a string (docs sometimes wrap long strings) becomes a space.
/// Everything else is left as it is, so invalid JSON stays invalid.
pub fn strict_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                '\n' => {
                    out.push(' ');
                    continue;
                }
                _ => {}
            }
            out.push(c);
        } else if c == '/' && chars.peek() == Some(&'/') {
            for c in chars.by_ref() {
                if c == '\n' {
                    out.push('\n');
                    break;
                }
            }
        } else {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod strict_json_tests {
    use super::strict_json;

    #[test]
    fn strips_comments_outside_strings_only() {
        let text = "{ \"a\": 1, // note\n \"url\": \"http://x//y\", \"s\": \"two\nlines\" }";
        let v: serde_json::Value = serde_json::from_str(&strict_json(text)).unwrap();
        assert_eq!(v["url"], "http://x//y");
        assert_eq!(v["s"], "two lines");
        assert_eq!(v["a"], 1);
    }
}
