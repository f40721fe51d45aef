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
use sluice::transform::types::{Config, ConfigError, InputBatch, OutputBatch};

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
            index: Vec::new(),
        };
        // Each record is nine words and four per metadata entry.
        let mut at = 0;
        while at < batch.index.len() {
            let (start, len) = (batch.index[at] as usize, batch.index[at + 1] as usize);
            at += 9 + 4 * batch.index[at + 8] as usize;
            let reply = test::smuggler::dial::dial(&String::from_utf8_lossy(
                &batch.data[start..start + len],
            ));
            // One output, with no route and no metadata.
            let data = [answer.data.len() as u32, reply.len() as u32];
            answer.index.extend([1, data[0], data[1], u32::MAX, 0, 0]);
            answer.data.extend_from_slice(reply.as_bytes());
        }
        answer
    }
}

export!(Smuggler);
