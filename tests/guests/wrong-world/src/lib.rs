//! A well-formed component that does not implement `sluice:transform`.
#![allow(unsafe_code, reason = "generated canonical-ABI glue")]

wit_bindgen::generate!({ path: "wit", world: "wrong" });

struct Greeter;

impl exports::other::thing::greeter::Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello {name}")
    }
}

export!(Greeter);
