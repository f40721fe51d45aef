//! Key and name templates: parse any template, render it with any route,
//! source, time and record. A rendered folder never leaves the sink's
//! root: no leading `/`, no `.`/`..` segment, no empty segment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::sinks::key::{KeyContext, KeyTemplate};

fuzz_target!(|input: (&str, &str, &str, i64, &[u8])| {
    let (template, route, source, ms, record) = input;
    let Ok(t) = KeyTemplate::parse(template) else {
        return;
    };
    let record: Option<serde_json::Value> = serde_json::from_slice(record).ok();
    let time = chrono::DateTime::from_timestamp_millis(ms.rem_euclid(10_000_000_000_000))
        .unwrap_or_default();
    let out = t.render(&KeyContext {
        route,
        source,
        time,
        record: record.as_ref(),
    });
    assert!(!out.starts_with('/'), "{template:?} -> {out:?}");
    if !out.is_empty() {
        for seg in out.split('/') {
            assert!(
                !seg.is_empty() && seg != "." && seg != "..",
                "{template:?} with {route:?}/{source:?} -> {out:?}"
            );
        }
    }
});
