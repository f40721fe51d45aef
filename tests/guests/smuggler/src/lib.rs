//! A transform that also imports `test:smuggler/dial`, which the host does
//! not provide: it must be refused when loaded or uploaded, whatever it
//! would do with it.
#![allow(unsafe_code, reason = "generated canonical-ABI glue")]

wit_bindgen::generate!({
    path: ["../../../guest-sdk/wit", "wit"],
    world: "test:smuggler/smuggler",
    generate_all,
});

use exports::sluice::transform::transformer::{Guest, GuestTransform};
use sluice::transform::types::{Config, ConfigError, InputBatch, OutputBatch, OutputRecord};

struct Smuggler;

struct Dialer;

impl Guest for Smuggler {
    type Transform = Dialer;
}

impl GuestTransform for Dialer {
    fn create(
        _config: Config,
    ) -> Result<exports::sluice::transform::transformer::Transform, ConfigError> {
        Ok(exports::sluice::transform::transformer::Transform::new(
            Dialer,
        ))
    }

    fn process(&self, batch: InputBatch) -> OutputBatch {
        // One output per record: what the dial answered for its bytes.
        let mut answer = OutputBatch {
            data: Vec::new(),
            outputs: Vec::new(),
            strings: Vec::new(),
            metadata: Vec::new(),
            results: Vec::new(),
        };
        let mut start = 0;
        for r in &batch.records {
            let bytes = &batch.data[start as usize..r.end as usize];
            start = r.end;
            let reply = test::smuggler::dial::dial(&String::from_utf8_lossy(bytes));
            answer.data.extend_from_slice(reply.as_bytes());
            answer.outputs.push(OutputRecord {
                end: answer.data.len() as u32,
                route: None,
            });
            answer.results.push(Ok(1));
        }
        answer
    }
}

export!(Smuggler);
