//! The local-directory sink: the embedded default. Objects are files under
//! a root folder, named by the same key templates the S3 sink uses.
//!
//! Atomic visibility: an object is written to `<root>/.sluice-tmp/`, fsynced,
//! then renamed into place (same file system, so the rename is atomic), and
//! every folder the rename needed is fsynced up to the root. A reader never
//! sees a partial file; temp files left by a crash are removed at start
//! (their objects are rebuilt from the spool). A retried object replaces
//! its own earlier copy; a name held by any other file is never given (see
//! `naming`), so no other file is overwritten.

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
    /// Default: `<UTC time with ms>-<random>`. A name that is taken moves
    /// to the next second (or gets `-1`, `-2`, … without a time), so an
    /// object never overwrites another.
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
    /// Objects written at once.
    #[serde(default = "super::default_in_flight")]
    pub max_in_flight: usize,
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
            self.max_in_flight,
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

/// The folders to fsync after an object is renamed into `dir` (under
/// `root`), computed before `dir` is created: `dir` itself (for the
/// object's entry), and the parent of every folder that does not exist yet
/// (for that folder's entry), up to the root. Without the parents, a power
/// cut could lose a new folder with the object in it.
fn folders_to_sync(root: &Path, dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut d = dir;
    while d != root && !d.exists() {
        match d.parent() {
            Some(parent) => {
                out.push(parent.to_path_buf());
                d = parent;
            }
            None => break,
        }
    }
    out.dedup();
    out
}

impl ObjectStore for LocalStore {
    fn temp_dir(&self) -> &Path {
        &self.temp
    }

    fn taken(&self, key: &str) -> bool {
        self.root.join(key).exists()
    }

    fn deliver(&self, temp: &Path, key: &str) -> Result<u64, SinkError> {
        let target = self.root.join(key);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        let to_sync = folders_to_sync(&self.root, &dir);
        std::fs::create_dir_all(&dir).map_err(|e| SinkError::io(&dir, &e))?;
        let size = std::fs::metadata(temp)
            .map_err(|e| SinkError::io(temp, &e))?
            .len();
        std::fs::rename(temp, &target).map_err(|e| SinkError::io(&target, &e))?;
        // The rename is durable only once the folder's entry is on disk,
        // and a new folder only once its parent's is.
        for d in to_sync {
            std::fs::File::open(&d)
                .and_then(|f| f.sync_all())
                .map_err(|e| SinkError::io(&d, &e))?;
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::folders_to_sync;

    #[test]
    fn every_new_folder_s_parent_is_synced_up_to_the_existing_one() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        std::fs::create_dir(root.join("a")).unwrap();
        let dir = root.join("a/b/c");
        assert_eq!(
            folders_to_sync(root, &dir),
            [dir.clone(), root.join("a/b"), root.join("a")]
        );
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(folders_to_sync(root, &dir), [dir], "nothing new");
        assert_eq!(folders_to_sync(root, root), [root.to_path_buf()]);
    }
}
