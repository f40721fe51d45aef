//! The local-directory sink: the embedded default. Objects are files under
//! a root folder, named by the same key templates the S3 sink uses.
//!
//! Atomic visibility: an object is written to `<root>/.sluice-tmp/`, fsynced,
//! then renamed into place (same file system, so the rename is atomic) and
//! the folder is fsynced. A reader never sees a partial file; temp files
//! left by a crash are removed at start (their records are still spooled).

use super::{ObjectStore, SinkError};
use crate::config::{Compression, Invalid, RotateConfig, check_key_template, invalid};
use crate::encoding::Encoding;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Config of a local-directory sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Root folder (relative to the config file). Created if missing.
    pub path: PathBuf,
    /// Key template for the folder of each object (see `sinks::key`).
    #[serde(default = "default_key")]
    pub key: String,
    /// Template for object file names, without the extension, rendered
    /// when the object is finished (for example J1DS's `time=%H%M%S`).
    /// Default: `<UTC time with ms>-<random>`. A name that is taken gets
    /// `-1`, `-2`, … so an object never overwrites another.
    pub name: Option<String>,
    /// `jsonl` or `csv`.
    #[serde(default)]
    pub encoding: Encoding,
    /// `none`, `gzip` or `zstd`.
    #[serde(default)]
    pub compression: Compression,
    /// Compression level (gzip 0–9, default 6; zstd 1–22, default 3).
    pub compression_level: Option<i32>,
    /// When an object is finished.
    #[serde(default)]
    pub rotate: RotateConfig,
}

fn default_key() -> String {
    "{route}/%Y/%m/%d".into()
}

impl LocalConfig {
    /// Checks the template and limits (no I/O).
    pub(crate) fn validate(&self, name: &str, out: &mut Vec<Invalid>) {
        check_key_template(&["sinks", name, "key"], &self.key, out);
        if let Some(n) = &self.name {
            check_key_template(&["sinks", name, "name"], n, out);
            if n.contains('/') || n.is_empty() {
                out.push(invalid(
                    &["sinks", name, "name"],
                    "a file name: no `/`, not empty",
                ));
            }
        }
        super::validate_common(
            name,
            self.compression,
            self.compression_level,
            &self.rotate,
            out,
        );
        if self.path.as_os_str().is_empty() {
            out.push(invalid(&["sinks", name, "path"], "must not be empty"));
        }
    }
}

/// Writes objects as files under a root folder.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    temp: PathBuf,
}

impl LocalStore {
    /// Creates the root and temp folders and clears stale temp files.
    ///
    /// # Errors
    ///
    /// [`SinkError::Io`] when the folder cannot be created.
    pub fn open(root: PathBuf) -> Result<Self, SinkError> {
        let temp = root.join(".sluice-tmp");
        std::fs::create_dir_all(&temp).map_err(|e| SinkError::io(&temp, &e))?;
        if let Ok(entries) = std::fs::read_dir(&temp) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(Self { root, temp })
    }
}

impl ObjectStore for LocalStore {
    fn temp_dir(&self) -> &Path {
        &self.temp
    }

    fn deliver(&mut self, temp: &Path, key: &str) -> Result<u64, SinkError> {
        let mut target = self.root.join(key);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| SinkError::io(&dir, &e))?;
        // Names from a template can repeat (two objects in one second);
        // never overwrite: `name.jsonl` → `name-1.jsonl`, … One sink thread
        // writes this folder, so checking then renaming cannot race.
        let file = target
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (stem, ext) = file.split_once('.').unwrap_or((&file, ""));
        let mut n = 0;
        while target.exists() {
            n += 1;
            target = dir.join(if ext.is_empty() {
                format!("{stem}-{n}")
            } else {
                format!("{stem}-{n}.{ext}")
            });
        }
        let dir = dir.as_path();
        let size = std::fs::metadata(temp)
            .map_err(|e| SinkError::io(temp, &e))?
            .len();
        std::fs::rename(temp, &target).map_err(|e| SinkError::io(&target, &e))?;
        // The rename is durable only once the folder's entry is on disk.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| SinkError::io(dir, &e))?;
        Ok(size)
    }
}
