//! Paths of the hostile test components, built by this crate's build script.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
