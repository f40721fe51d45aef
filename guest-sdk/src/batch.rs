//! Unpacks a `sluice:transform@0.3.0` input batch into [`Record`]s, runs
//! the transform on each, and packs the outputs into the answer.
//!
//! The contract moves a call as a byte list and a list of `u32` words
//! saying where each record and string is in it, each way, so that
//! crossing copies two lists per call (see `wit/transform.wit`). This is
//! the only place that knows that layout; transforms see [`Record`] and
//! [`Emit`](crate::Emit).

use crate::bindings::sluice::transform::types as wit;
use crate::record::Emitted;
use crate::{Emit, Record, Transform};

/// The word that stands for an absent optional span, and for a failed
/// record in an answer.
const NONE: u32 = u32::MAX;

/// Runs `transform` on every record of `batch`, in order, with the
/// semantics of [`crate::process_batch`]: one result per record, and a
/// record's outputs are discarded when it errors.
///
/// # Panics
///
/// When the batch breaks the contract (an index cut short, a span out of
/// range, a string that is not UTF-8), which only a host bug can cause:
/// the call traps and the host reports it, rather than running on the
/// wrong bytes.
pub(crate) fn run<T: Transform>(
    transform: &mut T,
    batch: wit::InputBatch,
    answer_bytes: usize,
) -> wit::OutputBatch {
    let wit::InputBatch { data, index } = batch;
    let bytes = |start: u32, len: u32| -> &[u8] {
        let (start, len) = (start as usize, len as usize);
        let end = start.checked_add(len);
        end.and_then(|end| data.get(start..end)).unwrap_or_else(|| {
            panic!(
                "sluice host bug: span {start}+{len} is outside the call's {} bytes",
                data.len()
            )
        })
    };
    // The records of a call share their source and receive time, and the
    // host puts each such string in `data` once: it is checked once, then
    // copied.
    let mut checked = [(0u32, 0u32); CHECKED];
    let mut n_checked = 0;
    let mut text = |start: u32, len: u32| -> String {
        let b = bytes(start, len).to_vec();
        if checked[..n_checked].contains(&(start, len)) {
            // SAFETY: these very bytes (the same span of the same `data`,
            // which nothing changes during the call) passed
            // `String::from_utf8` below.
            #[allow(unsafe_code, reason = "the bytes were checked already")]
            return unsafe { String::from_utf8_unchecked(b) };
        }
        let t = String::from_utf8(b)
            .unwrap_or_else(|_| panic!("sluice host bug: a string is not UTF-8"));
        if n_checked < CHECKED {
            checked[n_checked] = (start, len);
            n_checked += 1;
        }
        t
    };
    let mut words = Words(index.iter());
    // About the words of one output with no metadata per record.
    let mut answer = Answer::with_capacity(index.len() * 2 / 3);
    // One `Emit` for the whole call, writing into the answer's data: a
    // record's outputs land where they are returned from, and an error
    // cuts them off again.
    let mut out = Emit {
        data: Vec::with_capacity(answer_bytes),
        ..Emit::default()
    };
    while let Some(start) = words.0.next() {
        let [len, source, source_len, time, time_len, route, route_len, n] = words.take();
        // Never more than the index has words for, whatever `n` says.
        let mut meta = Vec::with_capacity((n as usize).min(words.0.len() / 4));
        for _ in 0..n {
            let [k, k_len, v, v_len] = words.take();
            meta.push((text(k, k_len), text(v, v_len)));
        }
        let record = Record {
            data: bytes(*start, len).to_vec(),
            source: text(source, source_len),
            received_at: text(time, time_len),
            route: (route != NONE).then(|| text(route, route_len)),
            metadata: meta,
        };
        out.base = out.data.len();
        match transform.process(record, &mut out) {
            Ok(()) => {
                answer.index.push(count(out.outputs.len()));
                // The spans are taken from the ends `Emit` noted before any
                // string is appended after this record's outputs.
                let mut start = out.base;
                for emitted in out.outputs.drain(..) {
                    let end = emitted.end;
                    answer.output(&mut out.data, start, emitted);
                    start = end;
                }
            }
            Err(e) => {
                out.data.truncate(out.base);
                out.outputs.clear();
                let [start, len] = answer.string(&mut out.data, &e.message);
                answer.index.extend([NONE, e.kind_code(), start, len]);
            }
        }
    }
    wit::OutputBatch {
        data: out.data,
        index: answer.index,
    }
}

/// The words of an input's index, read in order.
struct Words<'a>(std::slice::Iter<'a, u32>);

impl Words<'_> {
    /// The next `N` words.
    fn take<const N: usize>(&mut self) -> [u32; N] {
        std::array::from_fn(|_| {
            *self
                .0
                .next()
                .unwrap_or_else(|| panic!("sluice host bug: the index ends inside a record"))
        })
    }
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

/// How many of a call's input strings are remembered as valid UTF-8, so
/// that they are not checked again for every record: the source, the
/// receive time and a few routes.
const CHECKED: usize = 8;

/// Strings are looked up among those already in the answer while it holds
/// at most this many: outputs share a few routes and keys, and a long list
/// of distinct values is not worth searching; a repeat costs only bytes.
const INTERN_SCAN: usize = 64;

/// The answer being built: its index, and the spans of the strings already
/// appended to its data.
struct Answer {
    index: Vec<u32>,
    strings: Vec<[u32; 2]>,
}

impl Answer {
    fn with_capacity(words: usize) -> Self {
        Answer {
            index: Vec::with_capacity(words),
            strings: Vec::new(),
        }
    }

    /// Lists an output whose bytes are already in place at `start..o.end`,
    /// appending its route and metadata to `data`.
    fn output(&mut self, data: &mut Vec<u8>, start: usize, o: Emitted) {
        let route = match o.route {
            Some(r) => self.string(data, &r),
            None => [NONE, 0],
        };
        self.index.extend([
            count(start),
            count(o.end - start),
            route[0],
            route[1],
            count(o.metadata.len()),
        ]);
        for (k, v) in o.metadata {
            let key = self.string(data, &k);
            let value = self.string(data, &v);
            self.index.extend(key.into_iter().chain(value));
        }
    }

    /// The span of `s` in `data`, appending it unless it is there already.
    fn string(&mut self, data: &mut Vec<u8>, s: &str) -> [u32; 2] {
        if self.strings.len() <= INTERN_SCAN
            && let Some(&span) = self.strings.iter().find(|[start, len]| {
                data.get(*start as usize..(start + len) as usize) == Some(s.as_bytes())
            })
        {
            return span;
        }
        let span = [count(data.len()), count(s.len())];
        data.extend_from_slice(s.as_bytes());
        self.strings.push(span);
        span
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

    /// A record of a test batch: bytes, route, metadata.
    type Spec<'a> = (&'a str, Option<&'a str>, &'a [(&'a str, &'a str)]);

    const SOURCE: &str = "src";
    const RECEIVED: &str = "2026-12-02T00:00:00Z";

    /// Packs `records` as the host does, each string appended where first
    /// needed (the source and time once, up front).
    fn batch(records: &[Spec<'_>]) -> wit::InputBatch {
        let mut data = Vec::new();
        let mut put = |s: &str| {
            let span = [count(data.len()), count(s.len())];
            data.extend_from_slice(s.as_bytes());
            span
        };
        let (source, received_at) = (put(SOURCE), put(RECEIVED));
        let mut index = Vec::new();
        for (bytes, route, meta) in records {
            index.extend(put(bytes));
            index.extend(source.into_iter().chain(received_at));
            index.extend(route.map_or([NONE, 0], &mut put));
            index.push(count(meta.len()));
            for (k, v) in *meta {
                index.extend(put(k).into_iter().chain(put(v)));
            }
        }
        wit::InputBatch { data, index }
    }

    /// The outputs of one answer, as (result, [(data, route, metadata)]).
    type Unpacked = Vec<Result<Vec<(String, Option<String>, Vec<(String, String)>)>, String>>;

    fn unpack(a: &wit::OutputBatch) -> Unpacked {
        let mut words = a.index.iter().copied();
        let w = &mut words;
        let next = |w: &mut std::iter::Copied<std::slice::Iter<'_, u32>>| w.next().unwrap();
        let text = |start: u32, len: u32| {
            let start = start as usize;
            String::from_utf8(a.data[start..start + len as usize].to_vec()).unwrap()
        };
        let mut answers = Vec::new();
        while let Some(n) = w.next() {
            if n == NONE {
                let _kind = next(w);
                let (start, len) = (next(w), next(w));
                answers.push(Err(text(start, len)));
                continue;
            }
            let mut outputs = Vec::new();
            for _ in 0..n {
                let (start, len) = (next(w), next(w));
                let (route, route_len) = (next(w), next(w));
                let meta = (0..next(w))
                    .map(|_| {
                        let [k, k_len, v, v_len] = [next(w), next(w), next(w), next(w)];
                        (text(k, k_len), text(v, v_len))
                    })
                    .collect();
                let route = (route != NONE).then(|| text(route, route_len));
                outputs.push((text(start, len), route, meta));
            }
            answers.push(Ok(outputs));
        }
        answers
    }

    #[test]
    fn every_field_crosses_and_results_line_up_with_records() {
        let input = batch(&[
            ("x", None, &[]),
            ("fail", None, &[]),
            ("", Some("route.x"), &[("k1", "v1"), ("k1", "route.x")]),
            ("none", None, &[]),
            ("two", None, &[]),
            ("ü\"", Some("route.x"), &[]),
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
        // strings were appended once.
        let data = String::from_utf8(answer.data.clone()).unwrap();
        assert!(!data.contains("discarded"), "{data}");
        assert_eq!(data.matches("src").count(), 4, "{data}");
        assert!(
            data.ends_with("|src|2026-12-02T00:00:00Z|Some(\"route.x\")|[]"),
            "{data}"
        );
    }

    /// The component's loop and the native `process_batch` give the same
    /// answers for the same records.
    #[test]
    fn the_component_loop_answers_as_process_batch() {
        let specs: [Spec<'_>; 6] = [
            ("x", None, &[]),
            ("fail", None, &[]),
            ("", Some("route.x"), &[("k1", "v1")]),
            ("none", None, &[]),
            ("two", None, &[]),
            ("two", Some("route.x"), &[]),
        ];
        let input = batch(&specs);
        let records: Vec<Record> = specs
            .iter()
            .map(|(data, route, meta)| Record {
                data: data.as_bytes().to_vec(),
                source: SOURCE.into(),
                received_at: RECEIVED.into(),
                route: route.map(String::from),
                metadata: meta.iter().map(|&(k, v)| (k.into(), v.into())).collect(),
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
        input.index[1] = 99;
        run(&mut Echo, input, 0);
    }
}
