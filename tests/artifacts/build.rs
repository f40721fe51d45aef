//! Builds every crate under `tests/guests` for wasm32-wasip2 and writes a
//! `pub const <NAME>_COMPONENT: &str = "<path>";` for each, plus a
//! `foreach_guest!` macro so a test module can check that every guest has a
//! test (wasmtime's `assert_test_exists` pattern).

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../..").canonicalize().unwrap();
    let guests = sluice_guest_build::discover(&root.join("tests/guests"));
    let watch = [
        root.join("guest-sdk"),
        // Workspace dependencies' features (serde_json's, say) change the
        // guests' code without changing the lock.
        root.join("Cargo.toml"),
        root.join("Cargo.lock"),
    ];
    let built = sluice_guest_build::build(&root, &guests, &watch);

    let mut code = String::new();
    let mut names = Vec::new();
    for b in &built {
        let ident = b.package.replace('-', "_");
        writeln!(code, "/// Path of the `{}` test component.", b.package).unwrap();
        writeln!(
            code,
            "pub const {}_COMPONENT: &str = {:?};",
            ident.to_uppercase(),
            b.path.display().to_string()
        )
        .unwrap();
        names.push(ident);
    }
    writeln!(code, "/// Calls `$mac!(name)` for every test guest.").unwrap();
    writeln!(
        code,
        "#[macro_export]\nmacro_rules! foreach_guest {{ ($mac:ident) => {{ {} }}; }}",
        names
            .iter()
            .map(|n| format!("$mac!({n});"))
            .collect::<String>()
    )
    .unwrap();
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(out, code).unwrap();
}
