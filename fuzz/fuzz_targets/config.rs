//! The config loader: TOML text to a validated config, secrets syntax
//! included (no I/O: secrets are only parsed here, not read). It never
//! panics, and every error names a line and column inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::config::{Config, ConfigError};

fuzz_target!(|text: &str| {
    match Config::from_text(std::path::Path::new("fuzz.toml"), text) {
        Ok(_) => {}
        Err(ConfigError::Invalid(issues)) => {
            assert!(!issues.is_empty());
            let lines = text.lines().count().max(1);
            for i in issues {
                assert!(
                    i.line >= 1 && i.line <= lines + 1,
                    "line {} of {lines}: {i}",
                    i.line
                );
            }
        }
        Err(e) => panic!("an unexpected error kind: {e}"),
    }
});
