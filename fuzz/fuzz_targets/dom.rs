//! The SDK's borrowed JSON document: it accepts exactly what
//! `serde_json::Value` accepts, writes what serde_json writes, and
//! parse → write → parse gives the same document. Its fast parser keeps
//! the text of canonical objects and writes it back as is, and skips them
//! in `drop_empty` when they hold no empty value: both must stay invisible.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_sdk::dom::Node;

fuzz_target!(|bytes: &[u8]| {
    let node = Node::parse(bytes);
    let value = serde_json::from_slice::<serde_json::Value>(bytes);
    assert_eq!(node.is_ok(), value.is_ok(), "acceptance differs on {bytes:?}");
    let (Ok(node), Ok(value)) = (node, value) else {
        return;
    };
    let written = node.to_json();
    assert_eq!(
        written,
        serde_json::to_vec(&value).unwrap(),
        "output differs from serde_json's"
    );
    let mut again = Node::parse(&written).expect("its own output parses");
    assert_eq!(again.to_json(), written, "parse → write is not stable");
    let mut value = value;
    assert_eq!(
        again.drop_empty(),
        sluice_sdk::json::drop_empty(&mut value),
        "drop_empty differs"
    );
    assert_eq!(
        again.to_json(),
        serde_json::to_vec(&value).unwrap(),
        "drop_empty differs"
    );
});
