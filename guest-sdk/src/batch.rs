//! Unpacks a `sluice:transform@0.2.0` input batch into [`Record`]s, runs
//! the transform on each, and packs the outputs into the answer.
//!
//! The contract moves a call's records as one byte list, an entry per
//! record and a table of strings, so that crossing costs a few allocations
//! per call, not three per record (see `wit/transform.wit`). This is the
//! only place that knows that layout; transforms see [`Record`] and
//! [`Emit`](crate::Emit) as before.

use crate::bindings::sluice::transform::types as wit;
use crate::{Output, Record, Transform};

/// Runs `transform` on every record of `batch`, in order, with the
/// semantics of [`crate::process_batch`]: one result per record, and a
/// record's outputs are discarded when it errors.
///
/// # Panics
///
/// When the batch breaks the contract (an offset or a string index out of
/// range), which only a host bug can cause: the call traps and the host
/// reports it, rather than running on the wrong bytes.
pub(crate) fn run<T: Transform>(transform: &mut T, batch: wit::InputBatch) -> wit::OutputBatch {
    let wit::InputBatch {
        data,
        records,
        strings,
        metadata,
    } = batch;
    let text = |i: u32| -> String {
        strings
            .get(i as usize)
            .unwrap_or_else(|| panic!("sluice host bug: string index {i} out of range"))
            .clone()
    };
    let mut answer = Answer::with_capacity(records.len(), data.len());
    let mut entries = metadata.iter().peekable();
    let mut start = 0usize;
    for (i, r) in records.iter().enumerate() {
        let end = r.end as usize;
        let bytes = data
            .get(start..end)
            .unwrap_or_else(|| panic!("sluice host bug: record {i} spans {start}..{end}"));
        let mut meta = Vec::new();
        while let Some(m) = entries.next_if(|m| m.owner as usize == i) {
            meta.push((text(m.key), text(m.value)));
        }
        let record = Record {
            data: bytes.to_vec(),
            source: text(r.source),
            received_at: text(r.received_at),
            route: r.route.map(text),
            metadata: meta,
        };
        start = end;
        match crate::process_record(transform, record) {
            Ok(outputs) => {
                let n = outputs.len();
                for o in outputs {
                    answer.push(o);
                }
                answer.batch.results.push(Ok(count(n)));
            }
            Err(e) => answer.batch.results.push(Err(e.into_wit())),
        }
    }
    answer.batch
}

/// A position or count as the contract's `u32`. A component's memory is
/// far below 4 GiB, so nothing it holds can overflow one.
fn count(n: usize) -> u32 {
    u32::try_from(n).expect("a wasm32 memory holds less than 4 GiB")
}

/// Strings are looked up in the answer's table before being added while it
/// holds at most this many: outputs share a few routes, and a long table of
/// distinct values is not worth searching; the host accepts repeats.
const INTERN_SCAN: usize = 64;

/// The answer being built.
struct Answer {
    batch: wit::OutputBatch,
}

impl Answer {
    fn with_capacity(records: usize, bytes: usize) -> Self {
        Answer {
            batch: wit::OutputBatch {
                data: Vec::with_capacity(bytes + bytes / 4),
                outputs: Vec::with_capacity(records),
                strings: Vec::new(),
                metadata: Vec::new(),
                results: Vec::with_capacity(records),
            },
        }
    }

    fn push(&mut self, o: Output) {
        let owner = count(self.batch.outputs.len());
        for (k, v) in o.metadata {
            let key = self.intern(k);
            let value = self.intern(v);
            self.batch
                .metadata
                .push(wit::MetadataEntry { owner, key, value });
        }
        let route = o.route.map(|r| self.intern(r));
        self.batch.data.extend_from_slice(&o.data);
        self.batch.outputs.push(wit::OutputRecord {
            end: count(self.batch.data.len()),
            route,
        });
    }

    fn intern(&mut self, s: String) -> u32 {
        let strings = &mut self.batch.strings;
        if strings.len() <= INTERN_SCAN
            && let Some(i) = strings.iter().position(|t| *t == s)
        {
            return count(i);
        }
        strings.push(s);
        count(strings.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, ConfigError, Emit, RecordError};

    /// Echoes each record's fields; `fail` errors after emitting; `none`
    /// emits nothing; `two` emits two routed outputs with metadata.
    struct Echo;

    impl Transform for Echo {
        fn new(_: Config) -> Result<Self, ConfigError> {
            Ok(Echo)
        }

        fn process(&mut self, r: Record, out: &mut Emit) -> Result<(), RecordError> {
            match r.data.as_slice() {
                b"fail" => {
                    out.emit("discarded");
                    Err(RecordError::unsupported("no"))
                }
                b"none" => Ok(()),
                b"two" => {
                    for k in ["a", "b"] {
                        out.push(Output {
                            data: k.into(),
                            route: Some(format!("r.{k}")),
                            metadata: vec![
                                ("k".into(), k.into()),
                                ("src".into(), r.source.clone()),
                            ],
                        });
                    }
                    Ok(())
                }
                d => {
                    out.emit(format!(
                        "{}|{}|{}|{:?}|{:?}",
                        String::from_utf8_lossy(d),
                        r.source,
                        r.received_at,
                        r.route,
                        r.metadata
                    ));
                    Ok(())
                }
            }
        }
    }

    /// A record of a test batch: bytes, route index, (key, value) indices.
    type Spec<'a> = (&'a str, Option<u32>, &'a [(u32, u32)]);

    fn batch(records: &[Spec<'_>]) -> wit::InputBatch {
        let mut b = wit::InputBatch {
            data: Vec::new(),
            records: Vec::new(),
            strings: ["src", "2026-12-02T00:00:00Z", "route.x", "k1", "v1"]
                .map(String::from)
                .to_vec(),
            metadata: Vec::new(),
        };
        for (i, (data, route, meta)) in records.iter().enumerate() {
            b.data.extend_from_slice(data.as_bytes());
            b.records.push(wit::InputRecord {
                end: count(b.data.len()),
                source: 0,
                received_at: 1,
                route: *route,
            });
            for &(key, value) in *meta {
                b.metadata.push(wit::MetadataEntry {
                    owner: count(i),
                    key,
                    value,
                });
            }
        }
        b
    }

    /// The outputs of one answer, as (result, [(data, route, metadata)]).
    type Unpacked = Vec<Result<Vec<(String, Option<String>, Vec<(String, String)>)>, String>>;

    fn unpack(a: &wit::OutputBatch) -> Unpacked {
        let mut outputs = a.outputs.iter().enumerate();
        let mut start = 0;
        a.results
            .iter()
            .map(|r| match r {
                Err(e) => Err(e.message.clone()),
                Ok(n) => Ok(outputs
                    .by_ref()
                    .take(*n as usize)
                    .map(|(k, o)| {
                        let data = String::from_utf8(a.data[start..o.end as usize].to_vec());
                        start = o.end as usize;
                        let meta = a
                            .metadata
                            .iter()
                            .filter(|m| m.owner as usize == k)
                            .map(|m| {
                                let s = |i: u32| a.strings[i as usize].clone();
                                (s(m.key), s(m.value))
                            })
                            .collect();
                        let route = o.route.map(|i| a.strings[i as usize].clone());
                        (data.unwrap(), route, meta)
                    })
                    .collect()),
            })
            .collect()
    }

    #[test]
    fn every_field_crosses_and_results_line_up_with_records() {
        let input = batch(&[
            ("x", None, &[]),
            ("fail", None, &[]),
            ("", Some(2), &[(3, 4), (3, 2)]),
            ("none", None, &[]),
            ("two", None, &[]),
            ("ü\"", Some(2), &[]),
        ]);
        let answer = run(&mut Echo, input);
        let out = unpack(&answer);
        let one = |s: &str| Ok(vec![(s.to_string(), None, vec![])]);
        assert_eq!(out.len(), 6);
        assert_eq!(out[0], one("x|src|2026-12-02T00:00:00Z|None|[]"));
        assert_eq!(out[1], Err("no".to_string()));
        assert_eq!(
            out[2],
            one(r#"|src|2026-12-02T00:00:00Z|Some("route.x")|[("k1", "v1"), ("k1", "route.x")]"#)
        );
        assert_eq!(out[3], Ok(vec![]));
        let meta = |k: &str| vec![("k".into(), k.into()), ("src".into(), "src".into())];
        assert_eq!(
            out[4],
            Ok(vec![
                ("a".into(), Some("r.a".into()), meta("a")),
                ("b".into(), Some("r.b".into()), meta("b")),
            ])
        );
        assert_eq!(
            out[5],
            one(r#"ü"|src|2026-12-02T00:00:00Z|Some("route.x")|[]"#)
        );
        // The discarded output of `fail` left no bytes behind, and repeated
        // strings are listed once.
        assert_eq!(
            answer.outputs.last().unwrap().end as usize,
            answer.data.len()
        );
        assert_eq!(answer.strings, ["k", "a", "src", "r.a", "b", "r.b"]);
    }

    #[test]
    #[should_panic(expected = "host bug")]
    fn an_offset_out_of_range_traps() {
        let mut input = batch(&[("abc", None, &[])]);
        input.records[0].end = 9;
        run(&mut Echo, input);
    }
}
