//! The push body: content-encoding, content-type sniffing, splitting into
//! records. Every record it returns is UTF-8, valid JSON, within the
//! record limit, and a piece of the decoded body, verbatim.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::sources::body::{BodyError, decode, split};

fuzz_target!(|input: &[u8]| {
    let Some((&flags, body)) = input.split_first() else {
        return;
    };
    let encoding = if flags & 1 != 0 { Some("gzip") } else { None };
    let content_type = match (flags >> 1) & 3 {
        0 => None,
        1 => Some("application/x-ndjson"),
        2 => Some("application/json; charset=utf-8"),
        _ => Some("text/plain"),
    };
    let max_records = 1 + usize::from(flags >> 3);
    let decoded = match decode(
        bytes::Bytes::copy_from_slice(body),
        encoding,
        1 << 20,
        &mut |_| true,
    ) {
        Ok(d) => d,
        Err(BodyError::Busy) => panic!("an unlimited budget said busy"),
        Err(_) => return,
    };
    let Ok(records) = split(&decoded, content_type, max_records) else {
        return;
    };
    assert!(records.len() <= max_records);
    for r in &records {
        let text = std::str::from_utf8(r)
            .unwrap_or_else(|e| panic!("a record that is not UTF-8 ({e}): {r:?}"));
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .unwrap_or_else(|e| panic!("a record that is not JSON ({e}): {r:?}"));
        assert!(
            memchr::memmem::find(&decoded, r).is_some(),
            "a record that is not a piece of the body: {r:?}"
        );
    }
});
