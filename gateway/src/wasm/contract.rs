//! The transform contract: the two versions the host runs, behind one
//! record type.
//!
//! - `sluice:transform@0.2.0` (`guest-sdk/wit/transform.wit`), what the SDK
//!   builds: a call's records cross as one byte list, one fixed-size entry
//!   per record and a table of the distinct strings, so a call costs the
//!   component a handful of allocations whatever its size.
//! - `sluice:transform@0.1.0` (`gateway/wit/transform-0.1.0`), what SDKs
//!   before it built: one value per record. Components built against it
//!   keep running unchanged; the host converts.
//!
//! The rest of the gateway sees only [`InputRecord`], [`OutputRecord`] and
//! [`RecordError`]; [`Pre::new`] picks the version by what the component
//! exports, preferring 0.2.0.

use wasmtime::Store;
use wasmtime::component::{InstancePre, ResourceAny};

use super::HostState;

/// Bindings of the current contract.
pub(super) mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit",
        world: "transform-world",
    });
}

/// Bindings of the first contract, kept so its components keep running.
pub(super) mod v0_1 {
    wasmtime::component::bindgen!({
        path: "wit/transform-0.1.0",
        world: "transform-world",
    });
}

use v0_2::sluice::transform::types as wit;

/// One record going into a transform.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputRecord {
    /// The raw bytes as received.
    pub data: Vec<u8>,
    /// The name of the source that received it.
    pub source: String,
    /// When it was received, RFC 3339 UTC.
    pub received_at: String,
    /// The route assigned so far, if any.
    pub route: Option<String>,
    /// Further string metadata.
    pub metadata: Vec<(String, String)>,
}

/// One record a transform emitted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputRecord {
    /// The bytes to deliver.
    pub data: Vec<u8>,
    /// The route; `None` keeps the input's.
    pub route: Option<String>,
    /// Metadata to attach (added to, and overriding, the input's).
    pub metadata: Vec<(String, String)>,
}

/// Why a transform failed one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input is malformed for this transform.
    InvalidInput,
    /// The input is well formed but not handled by this transform.
    Unsupported,
    /// A bug or an unexpected state inside the transform.
    Internal,
}

/// A per-record failure, as the transform reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// The class of failure.
    pub kind: ErrorKind,
    /// The transform's explanation.
    pub message: String,
}

/// The answer for one record: outputs, or the transform's error.
pub type RecordResult = Result<Vec<OutputRecord>, RecordError>;

/// A configuration the transform refused.
pub(super) struct Refused {
    pub key: Option<String>,
    pub message: String,
}

/// A component pre-instantiated against the version it implements.
#[derive(Clone)]
pub(super) enum Pre {
    V0_2(v0_2::TransformWorldPre<HostState>),
    V0_1(v0_1::TransformWorldPre<HostState>),
}

impl Pre {
    /// Binds `pre` to the newest version it exports.
    ///
    /// # Errors
    ///
    /// Why it is not a 0.2.0 transform (wasmtime's message), when it is not
    /// a 0.1.0 one either.
    pub(super) fn new(pre: InstancePre<HostState>) -> Result<Self, String> {
        match v0_2::TransformWorldPre::new(pre.clone()) {
            Ok(p) => Ok(Pre::V0_2(p)),
            Err(current) => match v0_1::TransformWorldPre::new(pre) {
                Ok(p) => Ok(Pre::V0_1(p)),
                Err(_) => Err(format!("{current:#}")),
            },
        }
    }

    /// Instantiates the component in `store`.
    pub(super) fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Bound> {
        Ok(match self {
            Pre::V0_2(p) => Bound::V0_2(p.instantiate(store)?, Packer::default()),
            Pre::V0_1(p) => Bound::V0_1(p.instantiate(store)?),
        })
    }
}

/// An instantiated component, with the buffers its calls reuse.
pub(super) enum Bound {
    V0_2(v0_2::TransformWorld, Packer),
    V0_1(v0_1::TransformWorld),
}

impl Bound {
    /// Calls `transform.create`.
    pub(super) fn create(
        &self,
        store: &mut Store<HostState>,
        config: &[(String, String)],
    ) -> wasmtime::Result<Result<ResourceAny, Refused>> {
        let config = config.to_vec();
        Ok(match self {
            Bound::V0_2(world, _) => world
                .sluice_transform_transformer()
                .transform()
                .call_create(store, &config)?
                .map_err(|e| Refused {
                    key: e.key,
                    message: e.message,
                }),
            Bound::V0_1(world) => world
                .sluice_transform_transformer()
                .transform()
                .call_create(store, &config)?
                .map_err(|e| Refused {
                    key: e.key,
                    message: e.message,
                }),
        })
    }

    /// Calls `transform.process` on `records`: the outer error is the call's
    /// (a trap, the deadline), the inner one says how the answer breaks the
    /// contract.
    pub(super) fn process(
        &mut self,
        store: &mut Store<HostState>,
        handle: ResourceAny,
        records: &[InputRecord],
    ) -> wasmtime::Result<Result<Vec<RecordResult>, String>> {
        match self {
            Bound::V0_2(world, packer) => {
                packer.pack(records);
                let answer = world
                    .sluice_transform_transformer()
                    .transform()
                    .call_process(store, handle, &packer.batch)?;
                Ok(unpack(answer, records.len()))
            }
            Bound::V0_1(world) => {
                let batch: Vec<_> = records.iter().map(v0_1_input).collect();
                let answers = world
                    .sluice_transform_transformer()
                    .transform()
                    .call_process(store, handle, &batch)?;
                if answers.len() != records.len() {
                    return Ok(Err(wrong_count(answers.len(), records.len())));
                }
                Ok(Ok(answers.into_iter().map(v0_1_result).collect()))
            }
        }
    }
}

fn wrong_count(answered: usize, records: usize) -> String {
    format!("answered {answered} results for {records} records")
}

/// Builds 0.2.0 input batches, reusing one batch's buffers for the next.
pub(super) struct Packer {
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

/// Strings are looked up in the table before being added while it has at
/// most this many: a batch's records share their source, receive time and
/// usually their routes, and a long table of distinct values (metadata
/// unique per record) is not worth searching; a repeat is harmless.
const INTERN_SCAN: usize = 64;

impl Packer {
    fn pack(&mut self, records: &[InputRecord]) {
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
    }
}

/// A position or count as the contract's `u32`. A call holds at most a few
/// hundred MiB (the memory cap is far below 4 GiB), so this never saturates
/// in practice; if it did, the guest would see a bad offset and fail the
/// call, never read the wrong bytes silently.
fn index(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
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
fn unpack(answer: wit::OutputBatch, records: usize) -> Result<Vec<RecordResult>, String> {
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
                data: data[start..end].to_vec(),
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

fn v0_1_input(r: &InputRecord) -> v0_1::sluice::transform::types::InputRecord {
    v0_1::sluice::transform::types::InputRecord {
        data: r.data.clone(),
        source: r.source.clone(),
        received_at: r.received_at.clone(),
        route: r.route.clone(),
        metadata: r.metadata.clone(),
    }
}

fn v0_1_result(r: v0_1::sluice::transform::types::RecordResult) -> RecordResult {
    use v0_1::sluice::transform::types::ErrorKind as Old;
    match r {
        Ok(outputs) => Ok(outputs
            .into_iter()
            .map(|o| OutputRecord {
                data: o.data,
                route: o.route,
                metadata: o.metadata,
            })
            .collect()),
        Err(e) => Err(RecordError {
            kind: match e.kind {
                Old::InvalidInput => ErrorKind::InvalidInput,
                Old::Unsupported => ErrorKind::Unsupported,
                Old::Internal => ErrorKind::Internal,
            },
            message: e.message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::{HostConfig, WasmHost, Worker};

    /// The probe test guest built now (0.2.0) and as checked in, built by
    /// the last SDK of 0.1.0.
    fn probes() -> [(Worker, &'static str); 2] {
        let host = WasmHost::new(HostConfig {
            cache_dir: None,
            max_instances: 2,
            ..HostConfig::default()
        })
        .unwrap();
        let old = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/components/probe-0.1.0.wasm"
        );
        [sluice_test_artifacts::PROBE_COMPONENT, old].map(|path| {
            let component = host.load_file(path.as_ref()).unwrap();
            (Worker::new(component, Vec::new()).unwrap(), path)
        })
    }

    fn record(data: &str, route: Option<&str>, metadata: &[(&str, &str)]) -> InputRecord {
        InputRecord {
            data: data.into(),
            source: "src-a".into(),
            received_at: "2026-12-02T06:00:00.000000001Z".into(),
            route: route.map(String::from),
            metadata: metadata
                .iter()
                .map(|&(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Both contract versions carry every field both ways, in order, across
    /// calls (150 records make calls of 64, 64 and 22), and the host picked
    /// 0.2.0 for the new build, 0.1.0 for the old.
    #[test]
    fn both_versions_carry_the_same_records_both_ways() {
        let mut records = Vec::new();
        for i in 0..150 {
            let mut r = match i % 6 {
                0 => record(&format!("plain {i}"), None, &[]),
                1 => record("fail", Some("r.in"), &[]),
                2 => record("none", None, &[("k", "v")]),
                3 => record(&format!("many {}", i % 4), None, &[]),
                4 => record(
                    "ü \"quoted\" \\ {}",
                    Some("r.in"),
                    &[("k", "v"), ("k", &format!("v{i}")), ("other", "")],
                ),
                _ => record("", Some(&format!("route.{i}")), &[]),
            };
            if i == 77 {
                r.source = "src-b".into();
                r.received_at = "2026-12-02T06:00:01Z".into();
            }
            records.push(r);
        }
        let [(mut new, _), (mut old, _)] = probes();
        assert!(matches!(new.component().pre, Pre::V0_2(_)));
        assert!(matches!(old.component().pre, Pre::V0_1(_)));
        let ours = new.process(&records).unwrap();
        let theirs = old.process(&records).unwrap();
        assert_eq!(ours, theirs);

        assert_eq!(
            ours[0],
            Ok(vec![OutputRecord {
                data: br#"data="plain 0" source="src-a" received_at="2026-12-02T06:00:00.000000001Z" route=None metadata=[]"#.to_vec(),
                route: None,
                metadata: vec![("seen".into(), "7".into())],
            }])
        );
        assert_eq!(
            ours[1],
            Err(RecordError {
                kind: ErrorKind::Unsupported,
                message: "asked to fail".into()
            })
        );
        assert_eq!(ours[2], Ok(vec![]));
        let many = ours[3].as_ref().unwrap();
        assert_eq!(many.len(), 3);
        assert_eq!(many[2].data, b"2 of 3");
        assert_eq!(many[2].route.as_deref(), Some("probe.2"));
        assert_eq!(many[2].metadata, [("k".to_string(), "2".to_string())]);
        let text = |i: usize| String::from_utf8(ours[i].as_ref().unwrap()[0].data.clone()).unwrap();
        assert!(
            text(4).ends_with(
                r#"route=Some("r.in") metadata=[("k", "v"), ("k", "v4"), ("other", "")]"#
            ),
            "{}",
            text(4)
        );
        assert!(text(77).contains(r#"source="src-b" received_at="2026-12-02T06:00:01Z""#));
        assert!(
            text(149).contains(r#"route=Some("route.149")"#),
            "{}",
            text(149)
        );
    }

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
        assert_eq!(ok[0].as_ref().unwrap()[0].data, b"ab");
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
