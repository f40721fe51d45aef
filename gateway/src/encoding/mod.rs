//! Record encodings for outputs: JSON lines and CSV.
//!
//! `sluice transform run --output` and the sinks use these same encoders,
//! so what the CLI prints is byte for byte what lands in storage.

mod csv;

pub use csv::CsvEncoder;

/// An output encoding.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// One record per line, as the transform emitted it.
    #[default]
    Jsonl,
    /// RFC 4180 CSV: a header from the first record's keys, then one row per
    /// record.
    Csv,
}

/// Why a record could not be encoded. The record is not written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    /// CSV needs a JSON object.
    #[error("cannot write as CSV: {0}")]
    NotAnObject(String),
    /// The record has keys the header does not.
    #[error("cannot write as CSV: keys not in the header: {}", .0.join(", "))]
    NewColumns(Vec<String>),
    /// JSON lines need one line per record.
    #[error("cannot write as JSON lines: the record contains a newline")]
    Newline,
}

/// Encodes records one at a time into a byte buffer.
#[derive(Debug)]
pub enum Encoder {
    /// JSON lines.
    Jsonl,
    /// CSV.
    Csv(CsvEncoder),
}

impl Encoder {
    /// A fresh encoder (for CSV: the next record sets the header).
    pub fn new(encoding: Encoding) -> Self {
        match encoding {
            Encoding::Jsonl => Encoder::Jsonl,
            Encoding::Csv => Encoder::Csv(CsvEncoder::default()),
        }
    }

    /// Appends one record to `out`. On error nothing is appended.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] when the record does not fit the encoding.
    pub fn encode(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Encoder::Jsonl => {
                let record = record.strip_suffix(b"\n").unwrap_or(record);
                if record.contains(&b'\n') {
                    return Err(EncodeError::Newline);
                }
                out.extend_from_slice(record);
                out.push(b'\n');
                Ok(())
            }
            Encoder::Csv(c) => c.encode(record, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_one_line_per_record() {
        let mut e = Encoder::new(Encoding::Jsonl);
        let mut out = Vec::new();
        e.encode(b"{\"a\":1}", &mut out).unwrap();
        e.encode(b"{\"b\":2}\n", &mut out).unwrap();
        assert_eq!(out, b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(e.encode(b"{\n}", &mut out), Err(EncodeError::Newline));
        assert_eq!(out.len(), 16, "nothing appended on error");
    }
}
