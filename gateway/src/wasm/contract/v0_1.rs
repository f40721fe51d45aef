//! `sluice:transform@0.1.0` (`gateway/wit/transform-0.1.0`): one value per
//! record, each with its own list and strings. The SDK built it until
//! 0.2.0; its components keep running unchanged.

wasmtime::component::bindgen!({
    path: "wit/transform-0.1.0",
    world: "transform-world",
});

use self::sluice::transform::types as wit;
use super::{ErrorKind, InputRecord, OutputRecord, RecordError, RecordResult};

/// `r` as a 0.1.0 input.
pub(super) fn input(r: &InputRecord) -> wit::InputRecord {
    wit::InputRecord {
        data: r.data.to_vec(),
        source: r.source.to_string(),
        received_at: r.received_at.to_string(),
        route: r.route.clone(),
        metadata: r.metadata.clone(),
    }
}

/// A 0.1.0 answer for one record.
pub(super) fn result(r: wit::RecordResult) -> RecordResult {
    match r {
        Ok(outputs) => Ok(outputs
            .into_iter()
            .map(|o| OutputRecord {
                data: o.data.into(),
                route: o.route,
                metadata: o.metadata,
            })
            .collect()),
        Err(e) => Err(RecordError {
            kind: match e.kind {
                wit::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
                wit::ErrorKind::Unsupported => ErrorKind::Unsupported,
                wit::ErrorKind::Internal => ErrorKind::Internal,
            },
            message: e.message,
        }),
    }
}
