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
use sluice::transform::types::{Config, ConfigError, InputRecord, OutputRecord, RecordResult};

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

    fn process(&self, batch: Vec<InputRecord>) -> Vec<RecordResult> {
        batch
            .into_iter()
            .map(|r| {
                let answer = test::smuggler::dial::dial(&String::from_utf8_lossy(&r.data));
                Ok(vec![OutputRecord {
                    data: answer.into_bytes(),
                    route: None,
                    metadata: Vec::new(),
                }])
            })
            .collect()
    }
}

export!(Smuggler);
