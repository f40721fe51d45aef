//! The transforms built into the binary, and resolving a transform
//! reference (a built-in name or a `.wasm` path) to a loaded component.

use crate::wasm::{TransformComponent, WasmError, WasmHost};
use std::path::Path;

/// A transform component embedded in the binary at build time.
#[derive(Debug)]
pub struct Builtin {
    /// Its name, e.g. `add-fields` (the crate name under `transforms/`).
    pub name: &'static str,
    /// Lower-case hex sha256 of `bytes`, computed at build time.
    pub sha256: &'static str,
    /// The component.
    pub bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// The built-in called `name`.
pub fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// The built-ins' names, comma-separated.
pub fn names() -> String {
    BUILTINS
        .iter()
        .map(|b| b.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a transform reference could not be resolved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Neither a built-in nor a file.
    #[error("unknown transform `{name}`: not a built-in ({known}) and no such file")]
    Unknown {
        /// The reference as given.
        name: String,
        /// The built-in names.
        known: String,
    },
    /// Found, but loading failed.
    #[error(transparent)]
    Load(#[from] WasmError),
    /// A `sha256` pin that neither a stored version nor the built-in of
    /// that name matches.
    #[error(
        "the config pins sha256 {pin}, but {found}; refusing to start (upload that version, or update the pin if another component is intended)"
    )]
    PinNotFound {
        /// The pin.
        pin: String,
        /// What there is instead.
        found: String,
    },
}

/// Loads `reference`: a path (anything with a `/` or ending in `.wasm`, or
/// an existing file) is read from disk; otherwise it names a built-in.
///
/// # Errors
///
/// [`ResolveError::Unknown`] or the loading error.
pub fn resolve(host: &WasmHost, reference: &str) -> Result<TransformComponent, ResolveError> {
    let looks_like_path = reference.contains('/') || reference.ends_with(".wasm");
    if looks_like_path || (find(reference).is_none() && Path::new(reference).is_file()) {
        return Ok(host.load_file(Path::new(reference))?);
    }
    match find(reference) {
        Some(b) => Ok(host.load(b.name, b.bytes)?),
        None => Err(ResolveError::Unknown {
            name: reference.to_string(),
            known: names(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_sorted_components_with_matching_digests() {
        assert!(!BUILTINS.is_empty());
        assert!(BUILTINS.windows(2).all(|w| w[0].name < w[1].name));
        for b in BUILTINS {
            assert_eq!(
                &b.bytes[..8],
                b"\0asm\x0d\x00\x01\x00",
                "{} is a component",
                b.name
            );
            assert_eq!(crate::util::hex_sha256(b.bytes), b.sha256, "{}", b.name);
        }
        assert!(find("add-fields").is_some());
        assert!(find("nope").is_none());
    }

    /// A worker running the built-in ecs-jumpcloud component, as the
    /// gateway would.
    fn ecs_worker() -> crate::wasm::Worker {
        use crate::wasm::{HostConfig, WasmHost, Worker};
        let host = WasmHost::new(HostConfig {
            cache_dir: None,
            max_instances: 2,
            ..HostConfig::default()
        })
        .unwrap();
        let ecs = find("ecs-jumpcloud").unwrap();
        Worker::new(host.load(ecs.name, ecs.bytes).unwrap(), Vec::new()).unwrap()
    }

    /// The SDK escapes strings differently inside a component (SIMD paths
    /// for blocks of sixteen bytes and words of quotes and backslashes)
    /// than natively, so the escaping is checked in WebAssembly too: every
    /// escape at every offset of the blocks, through the real ecs-jumpcloud
    /// component, which writes each string twice: decoded as `message`,
    /// and inside the input's text as `event.original` (a pass-through
    /// would copy the parsed text instead, escaping nothing).
    #[test]
    fn strings_are_escaped_inside_the_component_as_serde_json_does() {
        use crate::wasm::input_record;
        let mut worker = ecs_worker();
        let mut strings = vec!["\"\\".repeat(13), "\"\"\"\"\"\"\"\"\u{1}\\\\".to_string()];
        let specials = ['"', '\\', '\n', '\u{1}', '\u{1f}', '\u{7f}', 'é', '😀'];
        for special in specials {
            for len in 1..=40 {
                for at in 0..len {
                    for second in [None, Some(len - 1), Some(at / 2), Some(at + 1)] {
                        strings.push(
                            ('a'..='z')
                                .take(len)
                                .enumerate()
                                .map(|(i, c)| {
                                    if i == at || Some(i) == second {
                                        special
                                    } else if i % 3 == 0 && special == '"' {
                                        '\\'
                                    } else {
                                        c
                                    }
                                })
                                .collect(),
                        );
                    }
                }
            }
        }
        let inputs: Vec<_> = strings
            .iter()
            .map(|s| {
                serde_json::to_vec(&serde_json::json!({
                    "timestamp": "2026-01-01T00:00:00Z",
                    "message": s,
                }))
                .unwrap()
            })
            .collect();
        let records: Vec<_> = inputs
            .iter()
            .map(|data| input_record(data.clone(), "test", "2026-01-01T00:00:00Z", None))
            .collect();
        let results = worker.process(&records).unwrap();
        for ((s, input), result) in strings.iter().zip(&inputs).zip(results) {
            let output = &result.unwrap()[0].data;
            let doc: serde_json::Value = serde_json::from_slice(output)
                .unwrap_or_else(|e| panic!("{s:?}: {e}: {}", String::from_utf8_lossy(output)));
            assert_eq!(doc["message"], serde_json::json!(s), "{s:?}");
            let original = doc["event"]["original"].as_str().unwrap();
            assert_eq!(original.as_bytes(), input.as_slice(), "{s:?}");
            // Escaped byte for byte as serde_json escapes.
            assert_eq!(
                String::from_utf8_lossy(output),
                serde_json::to_string(&doc).unwrap(),
                "{s:?}"
            );
        }
    }

    /// Inside a component the SDK checks UTF-8 with SIMD from the first
    /// non-ASCII block on; valid and broken text at every offset of those
    /// blocks gives the same documents (and serde_json's error positions)
    /// as the same transform compiled natively.
    #[test]
    fn utf8_is_checked_inside_the_component_as_natively() {
        use crate::wasm::input_record;
        use sluice_sdk::Transform;
        let mut worker = ecs_worker();
        let mut native =
            ecs_jumpcloud::EcsJumpcloud::new(sluice_sdk::Config::new(
                Vec::<(String, String)>::new(),
            ))
            .unwrap();
        let tails: [&[u8]; 6] = [
            "é".as_bytes(),
            "😀".as_bytes(),
            b"\xff",
            b"\xc3",
            b"\xed\xa0\x80",
            b"\xf0\x9f\x98",
        ];
        let mut inputs = Vec::new();
        for tail in tails {
            for at in 0..40 {
                let mut data = br#"{"timestamp":"2026-01-01T00:00:00Z","message":""#.to_vec();
                data.extend(std::iter::repeat_n(b'a', at));
                data.extend_from_slice(tail);
                data.extend_from_slice(br#"x","n":1}"#);
                inputs.push(data);
            }
        }
        let records: Vec<_> = inputs
            .iter()
            .map(|data| input_record(data.clone(), "test", "2026-01-01T00:00:00Z", None))
            .collect();
        let results = worker.process(&records).unwrap();
        let expected = sluice_sdk::process_batch(
            &mut native,
            inputs
                .iter()
                .map(|data| sluice_sdk::Record {
                    data: data.clone(),
                    source: "test".into(),
                    received_at: "2026-01-01T00:00:00Z".into(),
                    route: None,
                    metadata: Vec::new(),
                })
                .collect(),
        );
        let mut refused = 0;
        for ((input, ours), theirs) in inputs.iter().zip(results).zip(expected) {
            let ours = ours.unwrap().remove(0).data;
            let theirs = theirs.unwrap().remove(0).data;
            let shown = String::from_utf8_lossy(input);
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs),
                "{shown}"
            );
            refused += usize::from(String::from_utf8_lossy(&ours).contains("pipeline_error"));
        }
        // Four broken tails at 40 offsets each; the two good ones map.
        assert_eq!(refused, 4 * 40);
    }
}
