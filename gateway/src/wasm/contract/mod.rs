//! The transform contract: the three versions the host runs, behind one
//! record type.
//!
//! - `sluice:transform@0.3.0` (`guest-sdk/wit/transform.wit`), what the SDK
//!   builds: a call crosses as a byte list and a list of `u32` words saying
//!   where each record and string is in it, each way ([`v0_3`]).
//! - `sluice:transform@0.2.0` (`gateway/wit/transform-0.2.0`): one byte
//!   list, an entry per record and a table of strings ([`v0_2`]).
//! - `sluice:transform@0.1.0` (`gateway/wit/transform-0.1.0`): one value
//!   per record ([`v0_1`]).
//!
//! Components built against an older version keep running unchanged; the
//! host converts. The rest of the gateway sees only [`InputRecord`],
//! [`OutputRecord`] and [`RecordError`]; [`Pre::new`] picks the version by
//! what the component exports, preferring the newest.

use std::sync::Arc;

use bytes::Bytes;
use wasmtime::Store;
use wasmtime::component::{InstancePre, ResourceAny};

use super::HostState;

pub(super) mod v0_1;
pub(super) mod v0_2;
pub(super) mod v0_3;

/// One record going into a transform.
///
/// Its bytes and strings are shared, not copied: a record's bytes go from
/// one step of a pipeline to the next and into the spool as the same
/// buffer, and the records of a call share one source and receive time.
/// A call copies them once, into the buffer it hands the component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputRecord {
    /// The raw bytes as received.
    pub data: Bytes,
    /// The name of the source that received it.
    pub source: Arc<str>,
    /// When it was received, RFC 3339 UTC.
    pub received_at: Arc<str>,
    /// The route assigned so far, if any.
    pub route: Option<String>,
    /// Further string metadata.
    pub metadata: Vec<(String, String)>,
}

/// One record a transform emitted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputRecord {
    /// The bytes to deliver: for contracts 0.2.0 and 0.3.0 a slice of the
    /// call's answer, which all of its outputs share instead of each
    /// copying its part out.
    pub data: Bytes,
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
    V0_3(v0_3::TransformWorldPre<HostState>),
    V0_2(v0_2::TransformWorldPre<HostState>),
    V0_1(v0_1::TransformWorldPre<HostState>),
}

impl Pre {
    /// Binds `pre` to the newest version it exports.
    ///
    /// # Errors
    ///
    /// Why it is not a 0.3.0 transform (wasmtime's message), when it is not
    /// a 0.2.0 or 0.1.0 one either.
    pub(super) fn new(pre: InstancePre<HostState>) -> Result<Self, String> {
        let current = match v0_3::TransformWorldPre::new(pre.clone()) {
            Ok(p) => return Ok(Pre::V0_3(p)),
            Err(e) => format!("{e:#}"),
        };
        if let Ok(p) = v0_2::TransformWorldPre::new(pre.clone()) {
            return Ok(Pre::V0_2(p));
        }
        v0_1::TransformWorldPre::new(pre)
            .map(Pre::V0_1)
            .map_err(|_| current)
    }

    /// Instantiates the component in `store`.
    pub(super) fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Bound> {
        Ok(match self {
            Pre::V0_3(p) => Bound::V0_3(p.instantiate(store)?, v0_3::Packer::default()),
            Pre::V0_2(p) => Bound::V0_2(p.instantiate(store)?, v0_2::Packer::default()),
            Pre::V0_1(p) => Bound::V0_1(p.instantiate(store)?),
        })
    }
}

/// An instantiated component, with the buffers its calls reuse.
pub(super) enum Bound {
    V0_3(v0_3::TransformWorld, v0_3::Packer),
    V0_2(v0_2::TransformWorld, v0_2::Packer),
    V0_1(v0_1::TransformWorld),
}

/// Calls `transform.create` on a world of any version (their generated
/// types differ, their shapes do not).
macro_rules! create {
    ($world:expr, $store:expr, $config:expr) => {
        $world
            .sluice_transform_transformer()
            .transform()
            .call_create($store, $config)?
            .map_err(|e| Refused {
                key: e.key,
                message: e.message,
            })
    };
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
            Bound::V0_3(world, _) => create!(world, store, &config),
            Bound::V0_2(world, _) => create!(world, store, &config),
            Bound::V0_1(world) => create!(world, store, &config),
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
            Bound::V0_3(world, packer) => {
                let answer = world
                    .sluice_transform_transformer()
                    .transform()
                    .call_process(store, handle, packer.pack(records))?;
                Ok(v0_3::unpack(answer, records.len()))
            }
            Bound::V0_2(world, packer) => {
                let answer = world
                    .sluice_transform_transformer()
                    .transform()
                    .call_process(store, handle, packer.pack(records))?;
                Ok(v0_2::unpack(answer, records.len()))
            }
            Bound::V0_1(world) => {
                let batch: Vec<_> = records.iter().map(v0_1::input).collect();
                let answers = world
                    .sluice_transform_transformer()
                    .transform()
                    .call_process(store, handle, &batch)?;
                if answers.len() != records.len() {
                    return Ok(Err(wrong_count(answers.len(), records.len())));
                }
                Ok(Ok(answers.into_iter().map(v0_1::result).collect()))
            }
        }
    }
}

fn wrong_count(answered: usize, records: usize) -> String {
    format!("answered {answered} results for {records} records")
}

/// Strings are looked up in the table before being added while it has at
/// most this many: a batch's records share their source, receive time and
/// usually their routes, and a long table of distinct values (metadata
/// unique per record) is not worth searching; a repeat is harmless.
const INTERN_SCAN: usize = 64;

/// A position or count as the contract's `u32`. A call holds at most a few
/// hundred MiB (the memory cap is far below 4 GiB), so this never saturates
/// in practice; if it did, the guest would see a bad offset and fail the
/// call, never read the wrong bytes silently.
fn index(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::{HostConfig, WasmHost, Worker};

    /// The probe test guest built now (0.3.0) and as checked in, built by
    /// the last SDKs of 0.2.0 and 0.1.0.
    fn probes() -> [(Worker, &'static str); 3] {
        let host = WasmHost::new(HostConfig {
            cache_dir: None,
            max_instances: 3,
            ..HostConfig::default()
        })
        .unwrap();
        let v0_2 = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/components/probe-0.2.0.wasm"
        );
        let v0_1 = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/components/probe-0.1.0.wasm"
        );
        [sluice_test_artifacts::PROBE_COMPONENT, v0_2, v0_1].map(|path| {
            let component = host.load_file(path.as_ref()).unwrap();
            (Worker::new(component, Vec::new()).unwrap(), path)
        })
    }

    fn record(data: &str, route: Option<&str>, metadata: &[(&str, &str)]) -> InputRecord {
        InputRecord {
            data: Bytes::copy_from_slice(data.as_bytes()),
            source: "src-a".into(),
            received_at: "2026-12-02T06:00:00.000000001Z".into(),
            route: route.map(String::from),
            metadata: metadata
                .iter()
                .map(|&(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// All contract versions carry every field both ways, in order, across
    /// calls (150 records make calls of 64, 64 and 22), and the host picked
    /// each build's version.
    #[test]
    fn every_version_carries_the_same_records_both_ways() {
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
        let [(mut new, _), (mut v0_2, _), (mut v0_1, _)] = probes();
        assert!(matches!(new.component().pre, Pre::V0_3(_)));
        assert!(matches!(v0_2.component().pre, Pre::V0_2(_)));
        assert!(matches!(v0_1.component().pre, Pre::V0_1(_)));
        let ours = new.process(&records).unwrap();
        assert_eq!(ours, v0_2.process(&records).unwrap());
        assert_eq!(ours, v0_1.process(&records).unwrap());

        assert_eq!(
            ours[0],
            Ok(vec![OutputRecord {
                data: br#"data="plain 0" source="src-a" received_at="2026-12-02T06:00:00.000000001Z" route=None metadata=[]"#.to_vec().into(),
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
        assert_eq!(many[2].data, &b"2 of 3"[..]);
        assert_eq!(many[2].route.as_deref(), Some("probe.2"));
        assert_eq!(many[2].metadata, [("k".to_string(), "2".to_string())]);
        let text =
            |i: usize| String::from_utf8(ours[i].as_ref().unwrap()[0].data.to_vec()).unwrap();
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
}
