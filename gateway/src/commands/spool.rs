//! `sluice spool list|drop`: what the spool holds per sink, and dropping
//! the data of a sink that left the config. Both take the state folder's
//! lock, so they refuse to run beside `sluice run` on the same folder.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::spool::{Spool, SpoolError};

/// One sink's spooled data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSpool {
    /// The sink.
    pub sink: String,
    /// Whether the config still has it.
    pub configured: bool,
    /// Records not yet delivered.
    pub records: u64,
    /// Their bytes, as framed in the log.
    pub bytes: u64,
    /// Log files and their total size (delivered data included until a
    /// whole segment is behind the cursor).
    pub segments: usize,
    /// Bytes on disk.
    pub disk_bytes: u64,
}

/// Why a spool command failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolCommandError {
    /// The config could not be loaded.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The spool could not be opened (another process holds it, …).
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// Dropping a sink the config still has.
    #[error(
        "sink `{0}` is in the config; its records would be delivered at the next start. Remove it from the config first"
    )]
    Configured(String),
    /// No such sink in the spool.
    #[error("the spool holds nothing for sink `{0}`")]
    Unknown(String),
}

/// Lists every sink's spooled data.
///
/// # Errors
///
/// [`SpoolCommandError`].
pub fn list(config: &Config) -> Result<Vec<SinkSpool>, SpoolCommandError> {
    let spool = open(config)?;
    let out = spool
        .logs()
        .map(|(sink, log)| {
            let (records, bytes) = log.depth();
            let (disk_bytes, segments) = log.files();
            SinkSpool {
                sink: sink.to_string(),
                configured: config.sinks.contains_key(sink),
                records,
                bytes,
                segments,
                disk_bytes,
            }
        })
        .collect();
    spool.close();
    Ok(out)
}

/// Deletes the spooled data of a sink that is no longer configured.
/// Returns what was dropped.
///
/// # Errors
///
/// [`SpoolCommandError`].
pub fn drop_sink(config: &Config, sink: &str) -> Result<SinkSpool, SpoolCommandError> {
    if config.sinks.contains_key(sink) {
        return Err(SpoolCommandError::Configured(sink.to_string()));
    }
    let spool = open(config)?;
    let Some(log) = spool.log(sink) else {
        spool.close();
        return Err(SpoolCommandError::Unknown(sink.to_string()));
    };
    let (records, bytes) = log.depth();
    let (disk_bytes, segments) = log.files();
    drop(log);
    spool.drop_sink(sink)?;
    spool.close();
    tracing::warn!(
        sink,
        records,
        bytes,
        "spool: dropped the records of a removed sink"
    );
    Ok(SinkSpool {
        sink: sink.to_string(),
        configured: false,
        records,
        bytes,
        segments,
        disk_bytes,
    })
}

fn open(config: &Config) -> Result<std::sync::Arc<Spool>, SpoolError> {
    let sinks: Vec<String> = config.sinks.keys().cloned().collect();
    Spool::open(
        &config.state_dir(),
        config.spool.clone(),
        &sinks,
        Metrics::new(),
    )
}
