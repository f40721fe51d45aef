//! Unpacks a `sluice:transform@0.2.0` input batch into [`Record`]s, runs
//! the transform on each, and packs the outputs into the answer.
//!
//! The contract moves a call's records as one byte list, an entry per
//! record and a table of strings, so that crossing costs a few allocations
//! per call, not three per record (see `wit/transform.wit`). This is the
//! only place that knows that layout; transforms see [`Record`] and
//! [`Emit`](crate::Emit) as before.

use crate::bindings::sluice::transform::types as wit;
use crate::record::Emitted;
use crate::{Emit, Record, Transform};

/// Runs `transform` on every record of `batch`, in order, with the
/// semantics of [`crate::process_batch`]: one result per record, and a
/// record's outputs are discarded when it errors.
///
/// # Panics
///
/// When the batch breaks the contract (an offset or a string index out of
/// range), which only a host bug can cause: the call traps and the host
/// reports it, rather than running on the wrong bytes.
pub(crate) fn run<T: Transform>(
    transform: &mut T,
    batch: wit::InputBatch,
    answer_bytes: usize,
) -> wit::OutputBatch {
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
    let mut answer = Answer::with_capacity(records.len());
    // One `Emit` for the whole call, writing into the answer's data: a
    // record's outputs land where they are returned from, and an error
    // cuts them off again.
    let mut out = Emit {
        data: Vec::with_capacity(answer_bytes),
        ..Emit::default()
    };
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
        out.base = out.data.len();
        match transform.process(record, &mut out) {
            Ok(()) => {
                answer.batch.results.push(Ok(count(out.outputs.len())));
                for emitted in out.outputs.drain(..) {
                    answer.push(emitted);
                }
            }
            Err(e) => {
                out.data.truncate(out.base);
                out.outputs.clear();
                answer.batch.results.push(Err(e.into_wit()));
            }
        }
    }
    answer.batch.data = out.data;
    answer.batch
}

/// Sizes a call's answer from the last call's: output bytes per input byte
/// stay about the same for one transform, so the answer is allocated once at
/// about its final size instead of growing (and being copied) as it fills.
#[derive(Debug, Default)]
pub(crate) struct Sizing {
    /// The last call's input and answer bytes.
    last: std::cell::Cell<(usize, usize)>,
}

impl Sizing {
    /// The capacity to give an answer to `input` bytes.
    pub(crate) fn hint(&self, input: usize) -> usize {
        let (seen_in, seen_out) = self.last.get();
        if seen_in == 0 {
            return input + input / 4;
        }
        // A 64-byte margin per KiB. After an odd call (one tiny record
        // that gave a huge output) at most 4 MiB is reserved up front, a
        // small part of the instance's memory cap; a larger answer grows.
        let scaled = (input as u128 * seen_out as u128 / seen_in as u128) as usize;
        (scaled + scaled / 16 + 256).min(4 << 20)
    }

    /// Notes a call's sizes.
    pub(crate) fn note(&self, input: usize, answer: usize) {
        self.last.set((input, answer));
    }
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
    fn with_capacity(records: usize) -> Self {
        Answer {
            batch: wit::OutputBatch {
                data: Vec::new(),
                outputs: Vec::with_capacity(records),
                strings: Vec::new(),
                metadata: Vec::new(),
                results: Vec::with_capacity(records),
            },
        }
    }

    /// Lists an output whose bytes are already in place.
    fn push(&mut self, o: Emitted) {
        let owner = count(self.batch.outputs.len());
        for (k, v) in o.metadata {
            let key = self.intern(k);
            let value = self.intern(v);
            self.batch
                .metadata
                .push(wit::MetadataEntry { owner, key, value });
        }
        let route = o.route.map(|r| self.intern(r));
        self.batch.outputs.push(wit::OutputRecord {
            end: count(o.end),
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
    use crate::{Config, ConfigError, Output, RecordError};

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
        let answer = run(&mut Echo, input, 0);
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

    /// The component's loop and the native `process_batch` give the same
    /// answers for the same records.
    #[test]
    fn the_component_loop_answers_as_process_batch() {
        let specs: [Spec<'_>; 6] = [
            ("x", None, &[]),
            ("fail", None, &[]),
            ("", Some(2), &[(3, 4)]),
            ("none", None, &[]),
            ("two", None, &[]),
            ("two", Some(2), &[]),
        ];
        let input = batch(&specs);
        let records: Vec<Record> = specs
            .iter()
            .map(|(data, route, meta)| Record {
                data: data.as_bytes().to_vec(),
                source: input.strings[0].clone(),
                received_at: input.strings[1].clone(),
                route: route.map(|i| input.strings[i as usize].clone()),
                metadata: meta
                    .iter()
                    .map(|&(k, v)| {
                        (
                            input.strings[k as usize].clone(),
                            input.strings[v as usize].clone(),
                        )
                    })
                    .collect(),
            })
            .collect();
        let native: Unpacked = crate::process_batch(&mut Echo, records)
            .into_iter()
            .map(|r| {
                r.map(|outs| {
                    outs.into_iter()
                        .map(|o| (o.text(), o.route, o.metadata))
                        .collect()
                })
                .map_err(|e| e.message)
            })
            .collect();
        assert_eq!(unpack(&run(&mut Echo, input, 1)), native);
    }

    #[test]
    #[should_panic(expected = "host bug")]
    fn an_offset_out_of_range_traps() {
        let mut input = batch(&[("abc", None, &[])]);
        input.records[0].end = 9;
        run(&mut Echo, input, 0);
    }
}
