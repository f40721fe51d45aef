//! Emits every record's bytes unchanged, keeping its route: a transform that
//! does nothing, so that what it costs is the contract's own cost (records
//! into the component, outputs out of it). The transform benchmark measures
//! it as `passthrough`; the tests check that bytes cross both ways intact.

use sluice_sdk::{Config, ConfigError, Emit, Record, RecordError, Transform};

/// The transform; it takes no settings.
pub struct Passthrough;

impl Transform for Passthrough {
    fn new(config: Config) -> Result<Self, ConfigError> {
        config.deny_unknown(&[])?;
        Ok(Passthrough)
    }

    fn process(&mut self, record: Record, out: &mut Emit) -> Result<(), RecordError> {
        out.emit(record.data);
        Ok(())
    }
}

sluice_sdk::export!(Passthrough);
