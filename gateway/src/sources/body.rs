//! Push request bodies: decompression and splitting into records.
//!
//! Three shapes are accepted, and told apart without trusting the client's
//! content type more than needed:
//! - `application/x-ndjson` (or `application/jsonl`): one JSON value per line;
//! - a JSON array (emnify's Bulk mode): each element is a record;
//! - a single JSON value (emnify's REST mode), pretty-printed or not.
//!
//! A record's bytes are kept verbatim (for `event.original`), never
//! re-serialised. A request is all or nothing: one bad line fails it.

use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use std::io::Read;

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not JSON where JSON was due. `line` is 1-based within the
    /// (decompressed) body.
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Malformed {
        /// Line.
        line: usize,
        /// Column.
        column: usize,
        /// serde_json's description.
        message: String,
    },
    /// The body is empty.
    #[error("the body is empty")]
    Empty,
    /// More records than the source allows per request.
    #[error("{count} records in one request; the limit is {limit}")]
    TooManyRecords {
        /// Records found (at least).
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// Larger than allowed after decompression.
    #[error("the decompressed body exceeds {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Bad gzip data.
    #[error("cannot decompress the body: {0}")]
    Compression(String),
    /// A content encoding other than gzip or identity.
    #[error("unsupported Content-Encoding {0:?} (use gzip or none)")]
    UnsupportedEncoding(String),
    /// The memory for bodies in flight is taken by other requests.
    #[error("too many large request bodies are in flight; retry later")]
    Busy,
}

/// Charges memory to the budget of bodies in flight: `charge(n)` is
/// called before `n` more bytes are held, and `false` stops the work.
pub type Charge<'a> = &'a mut dyn FnMut(usize) -> bool;

/// Undoes `Content-Encoding`, refusing output larger than `limit`. The
/// output buffer is charged to `charge` as it grows, so many bombs at once
/// cannot hold more than the budget.
///
/// # Errors
///
/// [`BodyError::UnsupportedEncoding`], [`BodyError::Compression`],
/// [`BodyError::TooLarge`] or [`BodyError::Busy`].
pub fn decode(
    body: bytes::Bytes,
    content_encoding: Option<&str>,
    limit: usize,
    charge: Charge<'_>,
) -> Result<bytes::Bytes, BodyError> {
    match content_encoding.map(str::trim) {
        None | Some("" | "identity") => Ok(body),
        Some(e) if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("x-gzip") => {
            let mut out: Vec<u8> = Vec::new();
            // A gzip bomb stops at `limit + 1` bytes instead of filling memory.
            let mut reader =
                flate2::read::MultiGzDecoder::new(body.as_ref()).take(limit as u64 + 1);
            let mut chunk = vec![0u8; 64 << 10];
            loop {
                let n = reader
                    .read(&mut chunk)
                    .map_err(|e| BodyError::Compression(e.to_string()))?;
                if n == 0 {
                    break;
                }
                // What is charged is what is allocated: the buffer grows by
                // doubling, and each growth is paid for before it happens.
                if out.len() + n > out.capacity() {
                    let cap = (out.len() + n).max(out.capacity() * 2).max(1 << 20);
                    if !charge(cap - out.capacity()) {
                        return Err(BodyError::Busy);
                    }
                    out.reserve_exact(cap - out.len());
                }
                out.extend_from_slice(&chunk[..n]);
                if out.len() > limit {
                    return Err(BodyError::TooLarge { limit });
                }
            }
            Ok(out.into())
        }
        Some(other) => Err(BodyError::UnsupportedEncoding(other.to_string())),
    }
}

/// The message that stops the array scan at `max_records`.
const TOO_MANY: &str = "sluice: more records than the limit";

/// A JSON array's elements, verbatim, counted while they are scanned: the
/// scan stops at `max + 1` elements instead of indexing a huge array.
struct Elements {
    max: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for Elements {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Elements {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(e) = seq.next_element::<&'de RawValue>()? {
            if out.len() == self.max {
                return Err(serde::de::Error::custom(TOO_MANY));
            }
            out.push(e);
        }
        Ok(out)
    }
}

/// Splits a body into records.
///
/// # Errors
///
/// [`BodyError`] naming the first bad line.
pub fn split(
    body: &[u8],
    content_type: Option<&str>,
    max_records: usize,
) -> Result<Vec<Vec<u8>>, BodyError> {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .ok_or(BodyError::Empty)?;
    let mime = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase());
    let ndjson = matches!(
        mime.as_deref(),
        Some(
            "application/x-ndjson"
                | "application/ndjson"
                | "application/jsonl"
                | "application/x-jsonlines"
        )
    );
    if !ndjson && body[start] == b'[' {
        use serde::de::DeserializeSeed;
        let mut de = serde_json::Deserializer::from_slice(body);
        let elements = Elements { max: max_records }
            .deserialize(&mut de)
            .and_then(|e| de.end().map(|()| e))
            .map_err(|e| {
                if e.to_string().starts_with(TOO_MANY) {
                    BodyError::TooManyRecords {
                        count: max_records + 1,
                        limit: max_records,
                    }
                } else {
                    malformed(e)
                }
            })?;
        return Ok(elements
            .iter()
            .map(|e| e.get().as_bytes().to_vec())
            .collect());
    }
    if !ndjson {
        match serde_json::from_slice::<&RawValue>(body) {
            Ok(one) => return Ok(vec![one.get().as_bytes().to_vec()]),
            // More than one value: newline-delimited after all.
            Err(e) if e.to_string().starts_with("trailing characters") => {}
            Err(e) => return Err(malformed(e)),
        }
    }
    let mut records = Vec::new();
    for (i, line) in lines(body).enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // JSON is UTF-8 (RFC 8259 §8.1); serde_json checks that only where
        // it keeps a string, not while skipping one, so check it here as the
        // array and single-value shapes do.
        let text = std::str::from_utf8(line).map_err(|e| BodyError::Malformed {
            line: i + 1,
            column: e.valid_up_to() + 1,
            message: "invalid UTF-8".into(),
        })?;
        serde_json::from_str::<IgnoredAny>(text).map_err(|e| BodyError::Malformed {
            line: i + 1,
            column: e.column(),
            message: strip_position(&e),
        })?;
        if records.len() == max_records {
            return Err(BodyError::TooManyRecords {
                count: records.len() + 1,
                limit: max_records,
            });
        }
        records.push(line.to_vec());
    }
    Ok(records)
}

/// The lines of `body`, as `body.split(|&b| b == b'\n')` gives them (a
/// trailing newline ends with an empty line), found with `memchr`, many
/// bytes at a time: the closure looked at every byte, which was 9% of the
/// gateway's time under push load without a transform.
fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(body);
    std::iter::from_fn(move || {
        let text = rest?;
        match memchr::memchr(b'\n', text) {
            Some(end) => {
                rest = Some(&text[end + 1..]);
                Some(&text[..end])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

fn malformed(e: serde_json::Error) -> BodyError {
    BodyError::Malformed {
        line: e.line(),
        column: e.column(),
        message: strip_position(&e),
    }
}

/// serde_json's message without its own " at line L column C" suffix
/// (we report the position separately, against the whole body).
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_those_of_split() {
        let long = format!("{}\n{}", "a".repeat(100), "b".repeat(70));
        for body in [
            "",
            "\n",
            "\n\n",
            "x",
            "x\n",
            "\nx",
            "x\ny",
            "x\r\ny\n\n",
            "{}\n{}",
            &long,
        ] {
            let body = body.as_bytes();
            assert_eq!(
                lines(body).collect::<Vec<_>>(),
                body.split(|&b| b == b'\n').collect::<Vec<_>>(),
                "{body:?}"
            );
        }
    }

    fn texts(r: Vec<Vec<u8>>) -> Vec<String> {
        r.into_iter()
            .map(|v| String::from_utf8(v).unwrap())
            .collect()
    }

    #[test]
    fn ndjson_array_and_object() {
        let nd = b"{\"a\":1}\r\n\n  {\"b\": 2}\n";
        assert_eq!(
            texts(split(nd, Some("application/x-ndjson"), 10).unwrap()),
            ["{\"a\":1}", "  {\"b\": 2}"]
        );
        assert_eq!(
            texts(split(nd, None, 10).unwrap()).len(),
            2,
            "sniffed without a content type"
        );
        let arr = b" [ {\"a\": 1}, {\"b\":[2]} ]";
        assert_eq!(
            texts(split(arr, Some("application/json"), 10).unwrap()),
            ["{\"a\": 1}", "{\"b\":[2]}"]
        );
        let obj = b"{\n  \"a\": 1\n}\n";
        assert_eq!(
            texts(split(obj, Some("application/json"), 10).unwrap()),
            ["{\n  \"a\": 1\n}"]
        );
        assert!(split(b"[]", None, 10).unwrap().is_empty());
    }

    #[test]
    fn first_bad_line_is_named() {
        let e = split(
            b"{\"a\":1}\n{\"a\":\n{}\n",
            Some("application/x-ndjson"),
            10,
        )
        .unwrap_err();
        assert!(matches!(e, BodyError::Malformed { line: 2, .. }), "{e:?}");
        let e = split(b"[{\"a\":1},\n{\"a\" 2}]", None, 10).unwrap_err();
        assert!(matches!(e, BodyError::Malformed { line: 2, .. }), "{e:?}");
        assert_eq!(split(b"  \n", None, 10).unwrap_err(), BodyError::Empty);
        // Not UTF-8, in each shape: refused where it is.
        let e = split(b"{}\n{\"a\":\"\xff\"}\n", None, 10).unwrap_err();
        assert!(
            matches!(
                e,
                BodyError::Malformed {
                    line: 2,
                    column: 7,
                    ..
                }
            ),
            "{e:?}"
        );
        for body in [&b"[{\"a\":\"\xff\"}]"[..], b"{\"a\":\"\xff\"}"] {
            let e = split(body, None, 10).unwrap_err();
            assert!(matches!(e, BodyError::Malformed { line: 1, .. }), "{e:?}");
        }
    }

    #[test]
    fn record_limit() {
        let e = split(b"1\n2\n3\n", None, 2).unwrap_err();
        assert_eq!(e, BodyError::TooManyRecords { count: 3, limit: 2 });
        let e = split(b"[1,2,3]", None, 2).unwrap_err();
        assert_eq!(e, BodyError::TooManyRecords { count: 3, limit: 2 });
        // Counted while scanning: the rest of a huge array is never read,
        // so even a malformed tail after the limit says "too many".
        let e = split(b"[1,2,3,{bad", None, 2).unwrap_err();
        assert_eq!(e, BodyError::TooManyRecords { count: 3, limit: 2 });
        let e = split(b"[1,2] x", None, 2).unwrap_err();
        assert!(e.to_string().contains("trailing"), "{e}");
    }

    #[test]
    fn gzip_and_bombs() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&vec![b' '; 100_000]).unwrap();
        let bomb = bytes::Bytes::from(gz.finish().unwrap());
        assert_eq!(
            decode(bomb.clone(), Some("gzip"), 1000, &mut |_| true).unwrap_err(),
            BodyError::TooLarge { limit: 1000 }
        );
        assert_eq!(
            decode(bomb.clone(), Some("gzip"), 100_000, &mut |_| true)
                .unwrap()
                .len(),
            100_000
        );
        // The output is charged as it grows; a refused charge stops it.
        let mut charged = 0;
        let mut refuse = |n| {
            charged += n;
            false
        };
        assert_eq!(
            decode(bomb, Some("gzip"), 100_000, &mut refuse).unwrap_err(),
            BodyError::Busy
        );
        assert!(charged > 0, "a charge was asked for");
        assert!(matches!(
            decode(
                bytes::Bytes::from_static(b"nope"),
                Some("gzip"),
                10,
                &mut |_| true
            ),
            Err(BodyError::Compression(_))
        ));
        assert!(matches!(
            decode(bytes::Bytes::new(), Some("br"), 10, &mut |_| true),
            Err(BodyError::UnsupportedEncoding(_))
        ));
    }
}
