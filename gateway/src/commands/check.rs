//! `sluice check`: everything `sluice run` verifies before it accepts data,
//! without binding a port or opening the spool.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::wasm::{HostConfig, WasmHost};
use std::path::Path;

/// Loads and validates the config, resolves its secrets, and loads every
/// transform (checking `sha256` pins and that each accepts its config).
/// Returns a one-line summary.
///
/// # Errors
///
/// The first step that fails, as a [`super::run::RunError`].
pub fn check(path: &Path) -> Result<String, super::run::RunError> {
    let config = Config::load(path)?;
    config.resolve_secrets()?;
    let host = WasmHost::new(HostConfig {
        deadline: std::time::Duration::from_millis(config.limits.transform_deadline_ms),
        memory_cap: (config.limits.transform_memory_mib as usize) << 20,
        max_instances: 16,
        cache_dir: HostConfig::default_cache_dir(),
    })?;
    let metrics = Metrics::new();
    // Uploaded transforms are looked up where `sluice run` keeps them,
    // without creating anything when the state folder does not exist yet.
    let store = if config.state_dir().join("transforms").is_dir() {
        Some(
            crate::store::Store::open(&config.state_dir())
                .map_err(|e| super::run::RunError::Store(e.to_string()))?,
        )
    } else {
        None
    };
    for (name, p) in &config.pipelines {
        Pipeline::build(name, p, &config, &host, metrics.clone(), store.as_ref())?;
    }
    Ok(format!(
        "{} listeners, {} sources, {} pipelines, {} sinks",
        config.listeners.len(),
        config.sources.len(),
        config.pipelines.len(),
        config.sinks.len()
    ))
}
