//! Builds workspace crates as `wasm32-wasip2` components from a build script.
//!
//! Used by two build scripts: the gateway's (which embeds `transforms/*` as
//! built-ins) and `tests/artifacts` (which builds the hostile test guests).
//! Both call a nested `cargo build --target wasm32-wasip2 --profile guest`
//! into one shared target directory, `<target>/wasm-guests`: cargo's own
//! file lock serialises the two, and the second reuses what the first
//! compiled. The outer target directory cannot be used because the outer
//! cargo holds its lock while build scripts run.
//!
//! Since Rust 1.82 `wasm32-wasip2` links components directly, so no extra
//! tool (cargo-component, wasm-tools) is needed.

#![deny(missing_docs)]

use sha2::{Digest, Sha256};
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Rust target every guest is built for.
pub const TARGET: &str = "wasm32-wasip2";

/// The cargo profile guests are built with (defined in the workspace root).
pub const PROFILE: &str = "guest";

/// One guest crate to build.
#[derive(Debug, Clone)]
pub struct Guest {
    /// The cargo package name, e.g. `add-fields`.
    pub package: String,
    /// The crate's folder, watched for changes.
    pub dir: PathBuf,
}

/// A built component.
#[derive(Debug, Clone)]
pub struct Built {
    /// The cargo package name.
    pub package: String,
    /// Absolute path of the `.wasm` component.
    pub path: PathBuf,
    /// Lower-case hex sha256 of the component bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// Lists the guest crates in `dir`: every sub-folder with a `Cargo.toml`,
/// sorted by name. The package name is read from the manifest's `name` key.
///
/// # Panics
///
/// Panics (failing the build script with the message) when `dir` cannot be
/// read or a manifest has no `name`.
pub fn discover(dir: &Path) -> Vec<Guest> {
    let mut guests = Vec::new();
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("read_dir entry").path();
        let manifest = path.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let text = fs::read_to_string(&manifest).expect("read guest manifest");
        let package = package_name(&text)
            .unwrap_or_else(|| panic!("{} has no package name", manifest.display()));
        guests.push(Guest { package, dir: path });
    }
    guests.sort_by(|a, b| a.package.cmp(&b.package));
    guests
}

/// Reads `name = "…"` from the `[package]` table of a manifest. A full TOML
/// parser would be a heavy build dependency for one key in files we write.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if in_package && let Some(rest) = line.strip_prefix("name") {
            let value = rest.trim_start().strip_prefix('=')?.trim();
            return Some(value.trim_matches('"').to_string());
        }
    }
    None
}

/// Builds `guests` as components and returns them in the same order.
///
/// Emits `cargo:rerun-if-changed` lines for each guest folder and for
/// `watch` (the WIT package, the SDK, the workspace manifest and lock).
///
/// # Panics
///
/// Panics with a clear message when the `wasm32-wasip2` target is not
/// installed or the nested build fails: a build script reports errors by
/// panicking.
pub fn build(workspace_root: &Path, guests: &[Guest], watch: &[PathBuf]) -> Vec<Built> {
    for guest in guests {
        println!("cargo:rerun-if-changed={}", guest.dir.display());
    }
    for path in watch {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    if guests.is_empty() {
        return Vec::new();
    }
    check_target_installed();

    let target_dir = wasm_target_dir();
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root)
        .args(["build", "--target", TARGET, "--profile", PROFILE])
        .env("CARGO_TARGET_DIR", &target_dir)
        // Flags meant for the host (coverage, sanitizers, target-cpu) must
        // not leak into the wasm build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_PRIMARY_PACKAGE");
    for guest in guests {
        cmd.args(["--package", &guest.package]);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo for the wasm guests: {e}"));
    assert!(
        status.success(),
        "building the wasm guests ({}) failed; see cargo's output above",
        guests
            .iter()
            .map(|g| g.package.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let out = target_dir.join(TARGET).join(PROFILE);
    guests
        .iter()
        .map(|guest| {
            let path = out.join(format!("{}.wasm", guest.package.replace('-', "_")));
            let bytes = fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "guest {} built but {} is missing: {e}",
                    guest.package,
                    path.display()
                )
            });
            Built {
                package: guest.package.clone(),
                sha256: hex_sha256(&bytes),
                size: bytes.len() as u64,
                path,
            }
        })
        .collect()
}

/// Fails early, and clearly, when the standard library for `wasm32-wasip2`
/// is missing: otherwise rustc reports a confusing "can't find crate for
/// `core`" deep inside the nested build.
fn check_target_installed() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output();
    let ok = match &out {
        Ok(o) if o.status.success() => {
            let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
            fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some())
        }
        _ => false,
    };
    assert!(
        ok,
        "the `{TARGET}` Rust target is not installed; run `rustup target add {TARGET}` \
         (scripts/setup.sh does this) and build again"
    );
}

/// `<outer target dir>/wasm-guests`, found from `OUT_DIR`
/// (`<target>/<profile>/build/<pkg>-<hash>/out`).
fn wasm_target_dir() -> PathBuf {
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set for build scripts"));
    let build = out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .expect("OUT_DIR is inside <target>/<profile>/build");
    // <target>/<profile>/build -> <target>; with --target there is one more
    // level (<target>/<triple>/<profile>/build), which still lands inside
    // the target dir, so this stays private to the build.
    let profile_dir = build.parent().expect("profile dir");
    profile_dir
        .parent()
        .expect("target dir")
        .join("wasm-guests")
}

/// Lower-case hex sha256 of `bytes`.
pub fn hex_sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        write!(s, "{b:02x}").expect("write to String");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_package_name_from_package_table_only() {
        let m = "[lib]\nname = \"lib_name\"\n[package]\nversion = \"1\"\nname = \"add-fields\"\n";
        assert_eq!(package_name(m).as_deref(), Some("add-fields"));
        assert_eq!(package_name("[dependencies]\nname = \"x\"\n"), None);
    }

    #[test]
    fn sha256_is_hex_of_digest() {
        assert_eq!(
            hex_sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
