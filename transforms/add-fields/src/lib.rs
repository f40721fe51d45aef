//! `add-fields`: adds each configuration key/value to every JSON object.
//!
//! `--config env=prod --config host.site=ams` turns `{"a":1}` into
//! `{"a":1,"env":"prod","host":{"site":"ams"}}`. Keys are dotted paths;
//! values are strings and replace any existing value. Fields are added in
//! key order. A record that is not a JSON object is an `invalid-input`
//! error. The SDK README's first example is this transform written on
//! `serde_json::Value`; this crate uses `sluice_sdk::dom`, as the README's
//! "Writing a fast transform" shows.

use sluice_sdk::{Config, ConfigError, Emit, Record, RecordError, Transform};

/// The transform: the fields to add, parsed once.
#[derive(Debug)]
pub struct AddFields {
    fields: Vec<(String, String)>,
}

impl Transform for AddFields {
    fn new(config: Config) -> Result<Self, ConfigError> {
        let mut fields = Vec::new();
        for (key, value) in config.iter() {
            if key.is_empty() || key.split('.').any(str::is_empty) {
                return Err(ConfigError::key(
                    key,
                    "is not a valid field path (empty segment)",
                ));
            }
            fields.push((key.to_string(), value.to_string()));
        }
        Ok(AddFields { fields })
    }

    fn process(&mut self, record: Record, out: &mut Emit) -> Result<(), RecordError> {
        // `dom` borrows keys and strings from the input and from the
        // configuration: building the output allocates a few vectors, not
        // a string per key (see the SDK's notes on fast transforms).
        let mut doc = record.object_node()?;
        for (path, value) in &self.fields {
            doc.set(path, value.as_str().into())?;
        }
        out.emit_with(|buf| doc.write_json(buf));
        Ok(())
    }
}

sluice_sdk::export!(AddFields);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::ErrorKind;
    use sluice_sdk::serde_json::json;
    use sluice_sdk::testing::Harness;

    #[test]
    fn appends_fields_after_existing_ones() {
        let mut h = Harness::<AddFields>::new(&[("x", "y")]).unwrap();
        assert_eq!(
            h.run_line(r#"{"a":1}"#).unwrap(),
            vec![r#"{"a":1,"x":"y"}"#]
        );
    }

    #[test]
    fn dotted_keys_nest_and_values_replace() {
        let mut h = Harness::<AddFields>::new(&[("host.site", "ams"), ("a", "new")]).unwrap();
        let out = h
            .run_json(&json!({"a": 1, "host": {"name": "h1"}}))
            .unwrap();
        assert_eq!(
            out,
            vec![json!({"a": "new", "host": {"name": "h1", "site": "ams"}})]
        );
    }

    #[test]
    fn non_objects_and_conflicts_are_record_errors() {
        let mut h = Harness::<AddFields>::new(&[("a.b", "x")]).unwrap();
        assert_eq!(
            h.run_line("[1,2]").unwrap_err().kind,
            ErrorKind::InvalidInput
        );
        assert_eq!(
            h.run_line("not json").unwrap_err().kind,
            ErrorKind::InvalidInput
        );
        let e = h.run_line(r#"{"a":5}"#).unwrap_err();
        assert!(e.message.contains("`a` is a number"), "{e}");
    }

    #[test]
    fn empty_path_segments_are_rejected() {
        assert_eq!(
            Harness::<AddFields>::new(&[("a..b", "x")])
                .unwrap_err()
                .key
                .as_deref(),
            Some("a..b")
        );
    }

    #[test]
    fn no_config_passes_objects_through() {
        let mut h = Harness::<AddFields>::new(&[]).unwrap();
        assert_eq!(
            h.run_line(r#"{"z":1,"a":2}"#).unwrap(),
            vec![r#"{"z":1,"a":2}"#]
        );
    }
}
