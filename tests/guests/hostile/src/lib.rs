//! A transform that misbehaves on command, to test the host's limits.
//!
//! Config `mode`:
//! - `loop`: spins forever on a record whose data is `"spin"`, passes others;
//! - `trap`: panics on a record whose data is `"boom"`, passes others;
//! - `membomb`: allocates without bound on `"bomb"`, passes others;
//! - `init-loop`, `init-trap`: misbehave in `create`;
//! - `stderr`: writes to stderr and stdout, then panics on `"boom"`;
//! - `reject`: rejects its configuration.
//!
//! Records that do not trigger the mode are echoed unchanged, so tests can
//! check that the host recovers and later batches still go through. A
//! trigger may also arrive as a JSON string (`"boom"`), as it does through
//! the gateway's push source, which only accepts JSON.

use sluice_sdk::{Config, ConfigError, Emit, Record, RecordError, Transform};

/// The misbehaving transform.
pub struct Hostile {
    mode: String,
}

impl Transform for Hostile {
    fn new(config: Config) -> Result<Self, ConfigError> {
        let mode = config.require("mode")?.to_string();
        match mode.as_str() {
            "init-loop" => spin(),
            "init-trap" => panic!("hostile guest: trap during create"),
            "reject" => return Err(ConfigError::key("mode", "rejected on purpose")),
            _ => {}
        }
        Ok(Hostile { mode })
    }

    fn process(&mut self, record: Record, out: &mut Emit) -> Result<(), RecordError> {
        let data = record.data.as_slice();
        let trigger = data
            .strip_prefix(b"\"")
            .and_then(|d| d.strip_suffix(b"\""))
            .unwrap_or(data);
        match (self.mode.as_str(), trigger) {
            ("loop", b"spin") => spin(),
            ("trap", b"boom") => panic!("hostile guest: boom"),
            ("stderr", b"boom") => {
                println!("this goes to stdout");
                eprintln!("hostile guest: about to fail");
                panic!("hostile guest: boom after stderr")
            }
            ("membomb", b"bomb") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            _ => out.emit(record.data),
        }
        Ok(())
    }
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

sluice_sdk::export!(Hostile);
