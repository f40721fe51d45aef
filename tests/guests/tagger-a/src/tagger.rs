// Shared by tagger-a and tagger-b, which differ only in `TAG`: two
// components with the same interface and different bytes, so hot-swap
// tests can tell from each output record which version processed it.

use sluice_sdk::serde_json::Value;
use sluice_sdk::{Config, ConfigError, Emit, Record, RecordError, Transform};

/// Adds `"tag": TAG` to every JSON object.
pub struct Tagger;

impl Transform for Tagger {
    fn new(config: Config) -> Result<Self, ConfigError> {
        config.deny_unknown(&[])?;
        Ok(Tagger)
    }

    fn process(&mut self, record: Record, out: &mut Emit) -> Result<(), RecordError> {
        let mut doc = record.json_object()?;
        doc.insert("tag".into(), Value::String(TAG.into()));
        out.emit_json(&Value::Object(doc));
        Ok(())
    }
}

sluice_sdk::export!(Tagger);
