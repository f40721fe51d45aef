//! `sluice:transform@0.3.0` (`guest-sdk/wit/transform.wit`), what the SDK
//! builds: a call crosses as a byte list and a list of `u32` words saying
//! where each record and string is in it, each way. The canonical ABI
//! copies lists of bytes and of integers whole, and lowering a list is one
//! entry into the component (its `cabi_realloc`), so a call costs the same
//! few steps whatever its size.

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "transform-world",
});

use self::sluice::transform::types as wit;
use super::{
    ErrorKind, INTERN_SCAN, InputRecord, OutputRecord, RecordError, RecordResult, index,
    wrong_count,
};

/// The word that stands for an absent optional span, and for a failed
/// record in an answer.
const NONE: u32 = u32::MAX;

/// Builds 0.3.0 input batches, reusing one batch's buffers for the next.
pub(crate) struct Packer {
    batch: wit::InputBatch,
    /// The spans of the strings already in `batch.data`.
    strings: Vec<[u32; 2]>,
}

impl Default for Packer {
    fn default() -> Self {
        Packer {
            batch: wit::InputBatch {
                data: Vec::new(),
                index: Vec::new(),
            },
            strings: Vec::new(),
        }
    }
}

impl Packer {
    /// The batch of `records`, in this packer's buffers.
    pub(super) fn pack(&mut self, records: &[InputRecord]) -> &wit::InputBatch {
        let Packer { batch: b, strings } = self;
        b.data.clear();
        b.index.clear();
        strings.clear();
        // The records' bytes, and room for the few strings they share.
        b.data
            .reserve(records.iter().map(|r| r.data.len()).sum::<usize>() + 128);
        b.index.reserve(records.len() * 9);
        for r in records {
            let data = span(&mut b.data, &r.data);
            let source = intern(&mut b.data, strings, &r.source);
            let received_at = intern(&mut b.data, strings, &r.received_at);
            let route = match &r.route {
                Some(s) => intern(&mut b.data, strings, s),
                None => [NONE, 0],
            };
            b.index.extend(data);
            b.index.extend(source);
            b.index.extend(received_at);
            b.index.extend(route);
            b.index.push(index(r.metadata.len()));
            for (k, v) in &r.metadata {
                let key = intern(&mut b.data, strings, k);
                let value = intern(&mut b.data, strings, v);
                b.index.extend(key);
                b.index.extend(value);
            }
        }
        b
    }
}

/// Appends `bytes` to `data`, giving their span.
fn span(data: &mut Vec<u8>, bytes: &[u8]) -> [u32; 2] {
    let start = index(data.len());
    data.extend_from_slice(bytes);
    [start, index(bytes.len())]
}

/// The span of `s` in `data`: one of `strings` when it is among the first
/// [`INTERN_SCAN`] of them, else appended (a repeat is harmless).
fn intern(data: &mut Vec<u8>, strings: &mut Vec<[u32; 2]>, s: &str) -> [u32; 2] {
    let scan = &strings[..strings.len().min(INTERN_SCAN)];
    if let Some(&found) = scan.iter().find(|&&t| bytes(data, t) == Some(s.as_bytes())) {
        return found;
    }
    let new = span(data, s.as_bytes());
    strings.push(new);
    new
}

/// The bytes `span` names in `data`, if it lies inside.
fn bytes(data: &[u8], [start, len]: [u32; 2]) -> Option<&[u8]> {
    let start = start as usize;
    data.get(start..start.checked_add(len as usize)?)
}

/// Reads an answer's words, saying what it read when they run out.
struct Words<'a> {
    words: std::slice::Iter<'a, u32>,
    data: &'a [u8],
}

impl<'a> Words<'a> {
    /// The next `N` words, or why there are not that many: `what` names
    /// what they were to be.
    fn take<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u32; N], String> {
        let mut out = [0; N];
        for w in &mut out {
            *w = *self
                .words
                .next()
                .ok_or_else(|| format!("its index ends inside {}", what()))?;
        }
        Ok(out)
    }

    /// The bytes `span` names, or why it names none.
    fn bytes_at(&self, span: [u32; 2], what: &dyn Fn() -> String) -> Result<&'a [u8], String> {
        bytes(self.data, span).ok_or_else(|| {
            format!(
                "{} spans {}+{}, outside its {} bytes",
                what(),
                span[0],
                span[1],
                self.data.len()
            )
        })
    }

    /// The string `span` names.
    fn text_at(&self, span: [u32; 2], what: &dyn Fn() -> String) -> Result<String, String> {
        let b = self.bytes_at(span, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("{} is not UTF-8", what()))
    }

    /// The range of `data` that the span that comes next names.
    fn range(&mut self, what: &dyn Fn() -> String) -> Result<std::ops::Range<usize>, String> {
        let span = self.take(what)?;
        let len = self.bytes_at(span, what)?.len();
        let start = span[0] as usize;
        Ok(start..start + len)
    }

    /// The string of the span that comes next.
    fn text(&mut self, what: &dyn Fn() -> String) -> Result<String, String> {
        let span = self.take(what)?;
        self.text_at(span, what)
    }

    /// The string of the optional span that comes next.
    fn optional_text(&mut self, what: &dyn Fn() -> String) -> Result<Option<String>, String> {
        match self.take(what)? {
            [NONE, _] => Ok(None),
            span => self.text_at(span, what).map(Some),
        }
    }
}

/// Turns a 0.3.0 answer into one result per record, checking every word,
/// span and string the transform gave.
pub(super) fn unpack(
    answer: wit::OutputBatch,
    records: usize,
) -> Result<Vec<RecordResult>, String> {
    // The outputs are slices of this one buffer (see `OutputRecord`).
    let data = bytes::Bytes::from(answer.data);
    let mut w = Words {
        words: answer.index.iter(),
        data: &data,
    };
    let mut answers = Vec::with_capacity(records);
    // Outputs so far, to name them in errors.
    let mut k = 0usize;
    while let Some(&head) = w.words.next() {
        let i = answers.len();
        if i == records {
            return Err(format!(
                "its index goes on after the results of all {records} records"
            ));
        }
        if head == NONE {
            let [kind] = w.take(&|| format!("the error of record {i}"))?;
            let kind = match kind {
                0 => ErrorKind::InvalidInput,
                1 => ErrorKind::Unsupported,
                2 => ErrorKind::Internal,
                other => {
                    return Err(format!(
                        "record {i} failed with error kind {other}, not 0, 1 or 2"
                    ));
                }
            };
            let message = w.text(&|| format!("the error of record {i}"))?;
            answers.push(Err(RecordError { kind, message }));
            continue;
        }
        // A count the index cannot hold is refused before any allocation.
        if head as usize > w.words.len() / 5 {
            return Err(format!(
                "record {i} claims {head} outputs, more than its index describes"
            ));
        }
        let mut emitted = Vec::with_capacity(head as usize);
        for _ in 0..head {
            let what = || format!("output {k}");
            let slice = data.slice(w.range(&what)?);
            let route = w.optional_text(&|| format!("the route of output {k}"))?;
            let [n] = w.take(&what)?;
            let what = || format!("a metadata entry of output {k}");
            if n as usize > w.words.len() / 4 {
                return Err(format!(
                    "output {k} claims {n} metadata entries, more than its index describes"
                ));
            }
            let mut metadata = Vec::with_capacity(n as usize);
            for _ in 0..n {
                metadata.push((w.text(&what)?, w.text(&what)?));
            }
            emitted.push(OutputRecord {
                data: slice,
                route,
                metadata,
            });
            k += 1;
        }
        answers.push(Ok(emitted));
    }
    if answers.len() != records {
        return Err(wrong_count(answers.len(), records));
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three records: `ab` routed `r`, an `internal` error `m`, then
    /// `cdef` with metadata `k=r`.
    fn answer() -> wit::OutputBatch {
        wit::OutputBatch {
            data: b"abcdefrkm".to_vec(),
            index: vec![
                1, 0, 2, 6, 1, 0, // one output: ab, routed r, no metadata
                NONE, 2, 8, 1, // failed: internal, m
                1, 2, 4, NONE, 0, 1, 7, 1, 6, 1, // one output: cdef, k=r
            ],
        }
    }

    /// The packer lists each record's spans, and each distinct string once.
    #[test]
    fn a_batch_packs_records_and_shared_strings() {
        let record = |data: &str, route: Option<&str>, metadata: &[(&str, &str)]| InputRecord {
            data: bytes::Bytes::copy_from_slice(data.as_bytes()),
            source: "s".into(),
            received_at: "t".into(),
            route: route.map(String::from),
            metadata: metadata
                .iter()
                .map(|&(k, v)| (k.into(), v.into()))
                .collect(),
        };
        let mut packer = Packer::default();
        let b = packer.pack(&[
            record("one", Some("t"), &[("k", "s")]),
            record("two", None, &[]),
        ]);
        // `s` and `t` once, `k` where first needed.
        assert_eq!(b.data, b"onestktwo");
        #[rustfmt::skip]
        let expected = [
            0, 3, 3, 1, 4, 1, 4, 1, 1, 5, 1, 3, 1,
            6, 3, 3, 1, 4, 1, NONE, 0, 0,
        ];
        assert_eq!(b.index, expected);
    }

    /// Every word, span and string is checked; a broken answer fails the
    /// call with a reason, never a panic or wrong bytes.
    #[test]
    fn a_broken_answer_is_refused_with_a_reason() {
        let ok = unpack(answer(), 3).unwrap();
        let first = &ok[0].as_ref().unwrap()[0];
        assert_eq!(
            (
                &first.data[..],
                first.route.as_deref(),
                first.metadata.len()
            ),
            (&b"ab"[..], Some("r"), 0)
        );
        assert_eq!(
            ok[1].as_ref().unwrap_err(),
            &RecordError {
                kind: ErrorKind::Internal,
                message: "m".into()
            }
        );
        let last = &ok[2].as_ref().unwrap()[0];
        assert_eq!(
            (&last.data[..], &last.metadata[..], last.route.as_deref()),
            (
                &b"cdef"[..],
                &[("k".to_string(), "r".to_string())][..],
                None
            )
        );

        let broken = |edit: &dyn Fn(&mut wit::OutputBatch), records: usize| {
            let mut a = answer();
            edit(&mut a);
            unpack(a, records).unwrap_err()
        };
        let word = |at: usize, value: u32| move |a: &mut wit::OutputBatch| a.index[at] = value;
        assert_eq!(
            broken(&|_| {}, 2),
            "its index goes on after the results of all 2 records"
        );
        assert_eq!(broken(&|_| {}, 4), "answered 3 results for 4 records");
        assert_eq!(
            broken(&|a| a.index.truncate(8), 3),
            "its index ends inside the error of record 1"
        );
        assert_eq!(
            broken(&word(0, 0), 3),
            format!("the route of output 0 spans 0+{NONE}, outside its 9 bytes")
        );
        assert_eq!(
            broken(&word(0, 1_000_000), 3),
            "record 0 claims 1000000 outputs, more than its index describes"
        );
        assert_eq!(
            broken(&|a| a.index.truncate(19), 3),
            "output 1 claims 1 metadata entries, more than its index describes"
        );
        assert_eq!(
            broken(&word(15, 9), 3),
            "output 1 claims 9 metadata entries, more than its index describes"
        );
        assert_eq!(
            broken(&word(1, 8), 3),
            "output 0 spans 8+2, outside its 9 bytes"
        );
        assert_eq!(
            broken(&word(1, u32::MAX - 1), 3),
            format!("output 0 spans {}+2, outside its 9 bytes", u32::MAX - 1)
        );
        assert_eq!(
            broken(&word(3, 9), 3),
            "the route of output 0 spans 9+1, outside its 9 bytes"
        );
        assert_eq!(
            broken(&word(7, 3), 3),
            "record 1 failed with error kind 3, not 0, 1 or 2"
        );
        assert_eq!(
            broken(&|a| a.data[7] = 0xff, 3),
            "a metadata entry of output 1 is not UTF-8"
        );
        assert_eq!(
            broken(&|a| a.data[6] = 0xc3, 3),
            "the route of output 0 is not UTF-8"
        );
        assert_eq!(
            broken(&|a| a.data[8] = 0x80, 3),
            "the error of record 1 is not UTF-8"
        );
    }

    /// Any answer, however corrupted, gives records' results or a reason,
    /// never a panic: words and bytes of a valid answer changed at random
    /// (to small numbers, to `NONE`, to anything), words dropped and added.
    #[test]
    fn a_corrupted_answer_never_panics() {
        // xorshift64*, seeded: the same cases on every run.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let (mut refused, mut accepted) = (0, 0);
        for _ in 0..20_000 {
            let mut a = answer();
            for _ in 0..1 + rand() % 3 {
                let r = rand();
                let at = (r >> 8) as usize;
                match r % 5 {
                    0 => {
                        let i = at % a.index.len();
                        a.index[i] = (rand() % 24) as u32;
                    }
                    1 => {
                        let i = at % a.index.len();
                        a.index[i] = [NONE, NONE - 1, rand() as u32][(rand() % 3) as usize];
                    }
                    2 => {
                        let i = at % a.data.len();
                        a.data[i] = rand() as u8;
                    }
                    3 => {
                        a.index.truncate(at % (a.index.len() + 1));
                    }
                    _ => a
                        .index
                        .insert(at % (a.index.len() + 1), (rand() % 10) as u32),
                }
                if a.index.is_empty() {
                    a.index.push(0);
                }
            }
            match unpack(a, 3) {
                Ok(results) => {
                    assert_eq!(results.len(), 3);
                    accepted += 1;
                }
                Err(reason) => {
                    assert!(!reason.is_empty());
                    refused += 1;
                }
            }
        }
        // Both kinds of outcome were reached, so the cases were not all
        // trivially refused.
        assert!(
            refused > 1000 && accepted > 100,
            "{refused} refused, {accepted} accepted"
        );
    }
}
