//! On-disk cache of compiled components, so a second run skips Cranelift.
//!
//! Entries are named by the component's sha256 and the engine's
//! compatibility hash (wasmtime version, target, settings), so a new
//! sluice build or different limits never load an incompatible artifact.
//! Files are written to a temporary name and renamed into place: a reader
//! sees a whole entry or none.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// `$SLUICE_CACHE_DIR`, else `$XDG_CACHE_HOME/sluice`, else
/// `$HOME/.cache/sluice`; `None` when none is set.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("SLUICE_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("sluice"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("sluice"))
}

/// Loads the compiled form of `bytes` from `dir`, or compiles it and stores
/// it there. A cache that cannot be read or written only costs a compile.
pub fn load_or_compile(
    engine: &Engine,
    dir: &Path,
    sha256: &str,
    bytes: &[u8],
) -> wasmtime::Result<Component> {
    let mut h = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let path = dir
        .join("wasm")
        .join(format!("{sha256}-{:016x}.cwasm", h.finish()));

    if path.is_file() {
        // SAFETY: deserialising runs no guest code but trusts the file to be
        // wasmtime's own output. This file is ours: written by this function
        // under a name that includes the engine's compatibility hash, and
        // wasmtime still checks its header and version on load.
        #[allow(unsafe_code, reason = "loading our own precompiled artifact")]
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => {
                tracing::debug!(path = %path.display(), "Compiled transform loaded from cache (cache hit).");
                return Ok(c);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "Ignoring unreadable compiled-transform cache entry.")
            }
        }
    }

    let compiled = engine.precompile_component(bytes)?;
    if let Err(e) = store(&path, &compiled) {
        tracing::warn!(path = %path.display(), error = %e, "Cannot write the compiled-transform cache; continuing without it.");
    } else {
        tracing::debug!(path = %path.display(), "Transform compiled and cached (cache miss).");
    }
    // SAFETY: `compiled` was produced by `precompile_component` on this very
    // engine a moment ago.
    #[allow(unsafe_code, reason = "loading an artifact this engine just produced")]
    unsafe {
        Component::deserialize(engine, &compiled)
    }
}

fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache path has a parent");
    std::fs::create_dir_all(dir)?;
    // Unique per process and per call: the gateway may compile the same
    // component on several threads at once, and each must write its own
    // temp file before the (atomic) rename.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
