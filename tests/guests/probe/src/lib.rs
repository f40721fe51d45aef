//! Reports what crossed the contract and answers with everything the
//! contract can carry back, so that the tests can check that each contract
//! version moves the same things both ways. A checked-in build of this guest
//! against `sluice:transform@0.1.0` (`tests/fixtures/components/`) runs next to
//! a fresh build against the current contract, on the same inputs.
//!
//! The record's bytes are a command:
//! - `fail` answers an `unsupported` error;
//! - `none` emits nothing;
//! - `log TEXT` logs TEXT at warn level through the host and emits nothing;
//! - `many N` emits N outputs, numbered, each routed `probe.K`;
//! - anything else emits one output: a line listing every field of the
//!   input (bytes, source, received-at, route, metadata), keeping the route,
//!   with metadata `seen=<byte count>`.

use sluice_sdk::{Config, ConfigError, Emit, Output, Record, RecordError, Transform};

/// The transform; it takes no settings.
pub struct Probe;

impl Transform for Probe {
    fn new(config: Config) -> Result<Self, ConfigError> {
        config.deny_unknown(&[])?;
        Ok(Probe)
    }

    fn process(&mut self, record: Record, out: &mut Emit) -> Result<(), RecordError> {
        match record.data.as_slice() {
            b"fail" => return Err(RecordError::unsupported("asked to fail")),
            b"none" => {}
            d if d.starts_with(b"log ") => {
                sluice_sdk::log::warn(&String::from_utf8_lossy(&d[4..]));
            }
            d if d.starts_with(b"many ") => {
                let n: usize = std::str::from_utf8(&d[5..])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| RecordError::invalid_input("many: not a number"))?;
                for k in 0..n {
                    out.push(Output {
                        data: format!("{k} of {n}").into_bytes(),
                        route: Some(format!("probe.{k}")),
                        metadata: vec![("k".into(), k.to_string())],
                    });
                }
            }
            d => out.push(Output {
                data: format!(
                    "data={:?} source={:?} received_at={:?} route={:?} metadata={:?}",
                    String::from_utf8_lossy(d),
                    record.source,
                    record.received_at,
                    record.route,
                    record.metadata
                )
                .into_bytes(),
                route: None,
                metadata: vec![("seen".into(), d.len().to_string())],
            }),
        }
        Ok(())
    }
}

sluice_sdk::export!(Probe);
