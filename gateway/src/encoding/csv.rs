//! RFC 4180 CSV in the style emnify writes to S3: the header and every
//! value double-quoted, `null` and `""` as an empty unquoted field, CRLF
//! line ends, UTF-8 as is. Nested objects and arrays are written as compact
//! JSON text inside quotes; numbers and booleans as their JSON text.

use super::EncodeError;
use serde_json::{Map, Value};

/// Writes a header from the first record's keys, in document order, then
/// one row per record. A later record may omit columns (written empty) but
/// may not add new ones: that is an error, never a silent drop.
#[derive(Debug, Default)]
pub struct CsvEncoder {
    columns: Option<Vec<String>>,
}

impl CsvEncoder {
    /// The header, once the first record has set it.
    pub fn columns(&self) -> Option<&[String]> {
        self.columns.as_deref()
    }

    /// Appends one row (preceded by the header for the first record).
    ///
    /// # Errors
    ///
    /// [`EncodeError::NotAnObject`] or [`EncodeError::NewColumns`]; nothing
    /// is appended then.
    pub fn encode(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let map: Map<String, Value> = match serde_json::from_slice(record) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(EncodeError::NotAnObject(
                    "the record is not a JSON object".into(),
                ));
            }
            Err(e) => {
                return Err(EncodeError::NotAnObject(format!(
                    "the record is not JSON: {e}"
                )));
            }
        };
        match &self.columns {
            None => {
                let columns: Vec<String> = map.keys().cloned().collect();
                write_row(out, columns.iter().map(|c| Some(Field::Text(c))));
                write_row(out, map.values().map(Field::of));
                self.columns = Some(columns);
            }
            Some(columns) => {
                let extra: Vec<String> = map
                    .keys()
                    .filter(|k| !columns.contains(k))
                    .cloned()
                    .collect();
                if !extra.is_empty() {
                    return Err(EncodeError::NewColumns(extra));
                }
                write_row(out, columns.iter().map(|c| map.get(c).and_then(Field::of)));
            }
        }
        Ok(())
    }
}

enum Field<'a> {
    Text(&'a str),
    Json(String),
}

impl<'a> Field<'a> {
    /// `None` is an empty unquoted field.
    fn of(v: &'a Value) -> Option<Field<'a>> {
        match v {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(Field::Text(s)),
            other => Some(Field::Json(other.to_string())),
        }
    }
}

fn write_row<'a>(out: &mut Vec<u8>, fields: impl Iterator<Item = Option<Field<'a>>>) {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let text = match &field {
            None => continue,
            Some(Field::Text(s)) => *s,
            Some(Field::Json(s)) => s.as_str(),
        };
        out.push(b'"');
        for chunk in text.split_inclusive('"') {
            out.extend_from_slice(chunk.as_bytes());
            if chunk.ends_with('"') {
                out.push(b'"');
            }
        }
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_all(records: &[&str]) -> (String, Vec<Result<(), EncodeError>>) {
        let mut e = CsvEncoder::default();
        let mut out = Vec::new();
        let results = records
            .iter()
            .map(|r| e.encode(r.as_bytes(), &mut out))
            .collect();
        (String::from_utf8(out).unwrap(), results)
    }

    #[test]
    fn header_from_first_record_everything_quoted_nulls_bare() {
        let (out, _) = encode_all(&[
            r#"{"id":"1","cost":"0.0007410000","x":null,"e":"","n":5,"b":true,"cur":"€"}"#,
        ]);
        assert_eq!(
            out,
            "\"id\",\"cost\",\"x\",\"e\",\"n\",\"b\",\"cur\"\r\n\"1\",\"0.0007410000\",,,\"5\",\"true\",\"€\"\r\n"
        );
    }

    #[test]
    fn quotes_commas_newlines_are_escaped_per_rfc4180() {
        let (out, _) = encode_all(&[r#"{"a":"say \"hi\", ok\nbye","o":{"k":[1,"x"]}}"#]);
        assert_eq!(out.lines().nth(1).unwrap(), "\"say \"\"hi\"\", ok");
        assert!(
            out.ends_with("bye\",\"{\"\"k\"\":[1,\"\"x\"\"]}\"\r\n"),
            "{out}"
        );
    }

    #[test]
    fn later_records_follow_the_header_order_and_may_omit_columns() {
        let (out, r) = encode_all(&[
            r#"{"a":"1","b":"2"}"#,
            r#"{"b":"3"}"#,
            r#"{"b":"4","a":"5"}"#,
        ]);
        assert!(r.iter().all(Result::is_ok));
        assert_eq!(
            out,
            "\"a\",\"b\"\r\n\"1\",\"2\"\r\n,\"3\"\r\n\"5\",\"4\"\r\n"
        );
    }

    #[test]
    fn new_columns_and_non_objects_are_errors_and_write_nothing() {
        let (out, r) = encode_all(&[r#"{"a":"1"}"#, r#"{"a":"2","z":"9"}"#, "[1]", "nope"]);
        assert_eq!(r[1], Err(EncodeError::NewColumns(vec!["z".into()])));
        assert!(matches!(r[2], Err(EncodeError::NotAnObject(_))));
        assert!(matches!(r[3], Err(EncodeError::NotAnObject(_))));
        assert_eq!(out, "\"a\"\r\n\"1\"\r\n");
    }
}
