//! Builds every crate under `transforms/` as a wasm32-wasip2 component and
//! generates `builtins.rs`, which embeds them in the `sluice` binary with
//! their names and sha256 digests. Sluice ships as one file.

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let transforms = sluice_guest_build::discover(&root.join("transforms"));
    let watch = [
        root.join("guest-sdk"),
        // Workspace dependencies' features (serde_json's, say) change the
        // guests' code without changing the lock.
        root.join("Cargo.toml"),
        root.join("Cargo.lock"),
    ];
    let built = sluice_guest_build::build(&root, &transforms, &watch);

    let mut code = String::from(
        "/// The transforms built into this binary, sorted by name.\npub static BUILTINS: &[Builtin] = &[\n",
    );
    for b in &built {
        writeln!(
            code,
            "    Builtin {{ name: {:?}, sha256: {:?}, bytes: include_bytes!({:?}) }},",
            b.package,
            b.sha256,
            b.path.display().to_string()
        )
        .unwrap();
    }
    code.push_str("];\n");
    std::fs::write(
        PathBuf::from(env::var("OUT_DIR").unwrap()).join("builtins.rs"),
        code,
    )
    .unwrap();
}
