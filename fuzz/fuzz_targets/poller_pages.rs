//! The JumpCloud and JupiterOne page parsers: any answer body is read
//! without a panic, and each element's cursor fields agree with its text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::sources::{jumpcloud, jupiterone, poller};

fuzz_target!(|body: &[u8]| {
    if let Ok(events) = jumpcloud::parse_page(body) {
        for raw in &events {
            let (_, at) = jumpcloud::event_head(raw.get());
            if let Some((text, ns)) = at {
                assert_eq!(poller::rfc3339_ns(&text), Some(ns));
            }
        }
    }
    if let Ok(jupiterone::Answer::Page(elements, _, _)) = jupiterone::parse_answer(body) {
        for raw in &elements {
            let (_, begin) = jupiterone::element_head(raw);
            if let Some((text, ns)) = begin {
                assert_eq!(text.parse::<i128>().ok().map(|ms| ms * 1_000_000), Some(ns));
            }
        }
    }
});
