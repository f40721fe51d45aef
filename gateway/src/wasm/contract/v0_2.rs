//! `sluice:transform@0.2.0` (`gateway/wit/transform-0.2.0`): a call's
//! records as one byte list, one fixed-size entry per record and a table
//! of the distinct strings. The SDK built it until 0.3.0; its components
//! keep running unchanged.

wasmtime::component::bindgen!({
    path: "wit/transform-0.2.0",
    world: "transform-world",
});

use self::sluice::transform::types as wit;
use super::{
    ErrorKind, INTERN_SCAN, InputRecord, OutputRecord, RecordError, RecordResult, index,
    wrong_count,
};

/// Builds 0.2.0 input batches, reusing one batch's buffers for the next.
pub(crate) struct Packer {
    batch: wit::InputBatch,
}

impl Default for Packer {
    fn default() -> Self {
        Packer {
            batch: wit::InputBatch {
                data: Vec::new(),
                records: Vec::new(),
                strings: Vec::new(),
                metadata: Vec::new(),
            },
        }
    }
}

impl Packer {
    /// The batch of `records`, in this packer's buffers.
    pub(super) fn pack(&mut self, records: &[InputRecord]) -> &wit::InputBatch {
        let b = &mut self.batch;
        b.data.clear();
        b.records.clear();
        b.strings.clear();
        b.metadata.clear();
        b.data
            .reserve(records.iter().map(|r| r.data.len()).sum::<usize>());
        for (i, r) in records.iter().enumerate() {
            b.data.extend_from_slice(&r.data);
            let source = intern(&mut b.strings, &r.source);
            let received_at = intern(&mut b.strings, &r.received_at);
            let route = r.route.as_deref().map(|s| intern(&mut b.strings, s));
            for (k, v) in &r.metadata {
                let key = intern(&mut b.strings, k);
                let value = intern(&mut b.strings, v);
                b.metadata.push(wit::MetadataEntry {
                    owner: index(i),
                    key,
                    value,
                });
            }
            b.records.push(wit::InputRecord {
                end: index(b.data.len()),
                source,
                received_at,
                route,
            });
        }
        b
    }
}

fn intern(strings: &mut Vec<String>, s: &str) -> u32 {
    if strings.len() <= INTERN_SCAN
        && let Some(i) = strings.iter().position(|t| t == s)
    {
        return index(i);
    }
    strings.push(s.to_owned());
    index(strings.len() - 1)
}

/// Turns a 0.2.0 answer into one result per record, checking every offset
/// and index the transform gave.
pub(super) fn unpack(
    answer: wit::OutputBatch,
    records: usize,
) -> Result<Vec<RecordResult>, String> {
    let wit::OutputBatch {
        data,
        outputs,
        strings,
        metadata,
        results,
    } = answer;
    if results.len() != records {
        return Err(wrong_count(results.len(), records));
    }
    // The outputs are slices of this one buffer (see `OutputRecord`).
    let data = bytes::Bytes::from(data);
    let listed: u64 = results
        .iter()
        .map(|r| r.as_ref().map_or(0, |&n| u64::from(n)))
        .sum();
    if listed != outputs.len() as u64 {
        return Err(format!(
            "its results count {listed} outputs but it listed {}",
            outputs.len()
        ));
    }
    let string = |i: u32| {
        strings.get(i as usize).cloned().ok_or_else(|| {
            format!(
                "string index {i} is out of range ({} strings)",
                strings.len()
            )
        })
    };
    let mut entries = metadata.iter().peekable();
    let mut outputs = outputs.iter().enumerate();
    let mut start = 0usize;
    let mut answers = Vec::with_capacity(records);
    for result in results {
        let count = match result {
            Ok(n) => n,
            Err(e) => {
                answers.push(Err(RecordError {
                    kind: e.kind.into(),
                    message: e.message,
                }));
                continue;
            }
        };
        let mut emitted = Vec::with_capacity(count as usize);
        for (k, o) in outputs.by_ref().take(count as usize) {
            let end = o.end as usize;
            if end < start || end > data.len() {
                return Err(format!(
                    "output {k} ends at byte {end}, outside {start}..={}",
                    data.len()
                ));
            }
            let mut meta = Vec::new();
            while let Some(m) = entries.next_if(|m| m.owner as usize == k) {
                meta.push((string(m.key)?, string(m.value)?));
            }
            emitted.push(OutputRecord {
                data: data.slice(start..end),
                route: o.route.map(string).transpose()?,
                metadata: meta,
            });
            start = end;
        }
        answers.push(Ok(emitted));
    }
    if start != data.len() {
        return Err(format!(
            "{} bytes of its data belong to no output",
            data.len() - start
        ));
    }
    if let Some(m) = entries.next() {
        return Err(format!(
            "a metadata entry names output {}, which is out of order or out of range",
            m.owner
        ));
    }
    Ok(answers)
}

impl From<wit::ErrorKind> for ErrorKind {
    fn from(kind: wit::ErrorKind) -> Self {
        match kind {
            wit::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
            wit::ErrorKind::Unsupported => ErrorKind::Unsupported,
            wit::ErrorKind::Internal => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> wit::OutputBatch {
        wit::OutputBatch {
            data: b"abcdef".to_vec(),
            outputs: vec![
                wit::OutputRecord {
                    end: 2,
                    route: Some(0),
                },
                wit::OutputRecord {
                    end: 6,
                    route: None,
                },
            ],
            strings: vec!["r".into(), "k".into()],
            metadata: vec![wit::MetadataEntry {
                owner: 1,
                key: 1,
                value: 0,
            }],
            results: vec![
                Ok(1),
                Err(wit::RecordError {
                    kind: wit::ErrorKind::Internal,
                    message: "m".into(),
                }),
                Ok(1),
            ],
        }
    }

    /// Every offset, count and index of an answer is checked; a broken one
    /// fails the call with a reason, never a panic or wrong bytes.
    #[test]
    fn a_broken_answer_is_refused_with_a_reason() {
        let ok = unpack(answer(), 3).unwrap();
        assert_eq!(ok[0].as_ref().unwrap()[0].data, &b"ab"[..]);
        assert_eq!(ok[0].as_ref().unwrap()[0].route.as_deref(), Some("r"));
        assert_eq!(ok[1].as_ref().unwrap_err().kind, ErrorKind::Internal);
        let last = &ok[2].as_ref().unwrap()[0];
        assert_eq!(
            (&last.data[..], &last.metadata[..]),
            (&b"cdef"[..], &[("k".to_string(), "r".to_string())][..])
        );

        let broken = |edit: fn(&mut wit::OutputBatch), records: usize| {
            let mut a = answer();
            edit(&mut a);
            unpack(a, records).unwrap_err()
        };
        assert_eq!(broken(|_| {}, 2), "answered 3 results for 2 records");
        assert_eq!(
            broken(|a| a.results[0] = Ok(2), 3),
            "its results count 3 outputs but it listed 2"
        );
        assert_eq!(
            broken(|a| a.outputs[1].end = 7, 3),
            "output 1 ends at byte 7, outside 2..=6"
        );
        assert_eq!(
            broken(|a| a.outputs[1].end = 1, 3),
            "output 1 ends at byte 1, outside 2..=6"
        );
        assert_eq!(
            broken(|a| a.outputs[1].end = 5, 3),
            "1 bytes of its data belong to no output"
        );
        assert_eq!(
            broken(|a| a.outputs[0].route = Some(2), 3),
            "string index 2 is out of range (2 strings)"
        );
        assert_eq!(
            broken(
                |a| a.metadata.push(wit::MetadataEntry {
                    owner: 0,
                    key: 0,
                    value: 0
                }),
                3
            ),
            "a metadata entry names output 0, which is out of order or out of range"
        );
        assert_eq!(
            broken(|a| a.metadata[0].owner = 2, 3),
            "a metadata entry names output 2, which is out of order or out of range"
        );
    }
}
