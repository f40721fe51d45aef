//! The transform store: customer components uploaded through the admin
//! API, kept content-addressed under `state_dir/transforms/`.
//!
//! Layout: `blobs/<sha256>.wasm` (each distinct component once) and
//! `index.json` (per name: numbered versions and the active one). Every
//! write goes to a temp file that is fsynced and renamed, so a crash
//! leaves the old index or the new one, never half of one. Blobs are
//! written before the index names them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One stored version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// 1, 2, 3… per name.
    pub version: u32,
    /// The component's sha256 (hex).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was uploaded (RFC 3339).
    pub uploaded_at: String,
}

/// A name's versions and which one is active.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The active version, if any.
    pub active: Option<u32>,
    /// Every stored version, oldest first.
    pub versions: Vec<Version>,
}

impl Entry {
    /// The active version's record.
    pub fn active_version(&self) -> Option<&Version> {
        self.active
            .and_then(|a| self.versions.iter().find(|v| v.version == a))
    }

    /// A version by number, or by its sha256 or a unique prefix of it.
    pub fn find(&self, which: &Which) -> Option<&Version> {
        self.lookup(which).ok()
    }

    /// Like [`Entry::find`], with the reason when there is no one version:
    /// none has that number or digest, the prefix is too short, or it
    /// matches several versions.
    ///
    /// # Errors
    ///
    /// The reason, as a sentence for the API's answer.
    pub fn lookup(&self, which: &Which) -> Result<&Version, String> {
        let prefix = match which {
            Which::Version(n) => {
                return self
                    .versions
                    .iter()
                    .find(|v| v.version == *n)
                    .ok_or_else(|| format!("there is no {which}"));
            }
            Which::Sha256(s) => s.trim_end_matches(['…', '.']).to_ascii_lowercase(),
        };
        if prefix.len() < MIN_SHA256_PREFIX || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{prefix:?} is not a sha256: give the hex digest, or at least its first {MIN_SHA256_PREFIX} digits"
            ));
        }
        let mut matches = self
            .versions
            .iter()
            .filter(|v| v.sha256.starts_with(&prefix));
        match (matches.next(), matches.next()) {
            (Some(v), None) => Ok(v),
            (None, _) => Err(format!("there is no version with sha256 {prefix}…")),
            (Some(a), Some(b)) => Err(format!(
                "sha256 {prefix}… matches versions {} and {}: give more digits",
                a.version, b.version
            )),
        }
    }
}

/// Transform names: what can be a config reference and a metric label.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The shortest sha256 prefix accepted where a version is named.
pub const MIN_SHA256_PREFIX: usize = 4;

/// A version, named by number or by content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    /// Version number.
    Version(u32),
    /// sha256 (hex), whole or a unique prefix of at least
    /// [`MIN_SHA256_PREFIX`] digits.
    Sha256(String),
}

impl std::fmt::Display for Which {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Which::Version(n) => write!(f, "version {n}"),
            Which::Sha256(s) => write!(f, "version with sha256 {s}"),
        }
    }
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("transform store {}: {message}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What happened.
        message: String,
    },
    /// No such name or version.
    #[error("{0}")]
    NotFound(String),
    /// The version is active (or otherwise in use) and cannot be removed.
    #[error("{0}")]
    InUse(String),
}

fn io(path: &Path, e: &std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The store. One per gateway; every change holds its lock.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    index: Mutex<BTreeMap<String, Entry>>,
}

impl Store {
    /// Opens (or creates) `state_dir/transforms`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when the folder or index cannot be read.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let dir = state_dir.join("transforms");
        std::fs::create_dir_all(dir.join("blobs")).map_err(|e| io(&dir, &e))?;
        let path = dir.join("index.json");
        let index = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Io {
                path: path.clone(),
                message: format!("not a valid index: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(&path, &e)),
        };
        Ok(Self {
            dir,
            index: Mutex::new(index),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        crate::util::lock(&self.index)
    }

    /// Every name with its versions.
    pub fn list(&self) -> BTreeMap<String, Entry> {
        self.lock().clone()
    }

    /// One name's entry.
    pub fn get(&self, name: &str) -> Option<Entry> {
        self.lock().get(name).cloned()
    }

    /// The bytes of a stored blob.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`].
    pub fn blob(&self, sha256: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(sha256);
        std::fs::read(&path).map_err(|e| io(&path, &e))
    }

    /// Stores `bytes` (already validated) as the next version of `name`.
    /// Uploading bytes identical to an existing version returns that version.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`].
    pub fn add(&self, name: &str, bytes: &[u8], sha256: &str) -> Result<Version, StoreError> {
        self.put_blob(sha256, bytes)?;
        self.change(|index| Ok(index_add(index, name, sha256, bytes.len() as u64)))
    }

    /// Marks a version active; returns it and the one it replaces.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] or [`StoreError::Io`].
    pub fn activate(
        &self,
        name: &str,
        which: &Which,
    ) -> Result<(Version, Option<u32>), StoreError> {
        self.change(|index| index_activate(index, name, which))
    }

    /// Removes an inactive version (and its blob, if no other version uses it).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], [`StoreError::InUse`] or [`StoreError::Io`].
    pub fn remove(&self, name: &str, which: &Which) -> Result<Version, StoreError> {
        self.change(|index| index_remove(index, name, which))
    }

    /// Whether the blob of `sha256` is stored.
    pub fn has_blob(&self, sha256: &str) -> bool {
        self.blob_path(sha256).exists()
    }

    /// Stores a blob (before any index names it).
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`].
    pub fn put_blob(&self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let blob = self.blob_path(sha256);
        if blob.exists() {
            return Ok(());
        }
        write_atomic(&blob, bytes)
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.dir
            .join("blobs")
            .join(format!("{}.wasm", sha256.to_ascii_lowercase()))
    }

    /// Replaces the whole index (cluster mode: the cluster's registry, whose
    /// blobs were stored first), and removes the blobs it no longer names.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`].
    pub fn mirror(&self, next: &BTreeMap<String, Entry>) -> Result<(), StoreError> {
        self.change(|index| {
            index.clone_from(next);
            Ok(())
        })
    }

    /// Applies `f` to a copy of the index, saves it, then makes it current;
    /// drops blobs no version names any more. Holds the lock throughout.
    fn change<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, Entry>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut index = self.lock();
        let mut next = index.clone();
        let out = f(&mut next)?;
        if next == *index {
            return Ok(out);
        }
        self.save(&next)?;
        let used = |i: &BTreeMap<String, Entry>, sha: &str| {
            i.values()
                .flat_map(|e| &e.versions)
                .any(|v| v.sha256 == sha)
        };
        for v in index.values().flat_map(|e| &e.versions) {
            if !used(&next, &v.sha256) {
                let _ = std::fs::remove_file(self.blob_path(&v.sha256));
            }
        }
        *index = next;
        Ok(out)
    }

    fn save(&self, index: &BTreeMap<String, Entry>) -> Result<(), StoreError> {
        let path = self.dir.join("index.json");
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| StoreError::Io {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, &bytes)
    }
}

/// Adds a version of `name` to `index`, numbered after the highest; the
/// same bytes uploaded again give the version that has them.
pub fn index_add(
    index: &mut BTreeMap<String, Entry>,
    name: &str,
    sha256: &str,
    size: u64,
) -> Version {
    let entry = index.entry(name.to_string()).or_default();
    if let Some(v) = entry.find(&Which::Sha256(sha256.into())) {
        return v.clone();
    }
    let version = Version {
        version: entry.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1,
        sha256: sha256.to_string(),
        size,
        uploaded_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    entry.versions.push(version.clone());
    version
}

/// Marks a version of `name` active in `index`; returns it and the
/// version it replaces.
///
/// # Errors
///
/// [`StoreError::NotFound`].
pub fn index_activate(
    index: &mut BTreeMap<String, Entry>,
    name: &str,
    which: &Which,
) -> Result<(Version, Option<u32>), StoreError> {
    let (entry, v) = lookup(index, name, which)?;
    let previous = entry.active;
    if let Some(e) = index.get_mut(name) {
        e.active = Some(v.version);
    }
    Ok((v, previous))
}

/// Removes an inactive version of `name` from `index`.
///
/// # Errors
///
/// [`StoreError::NotFound`] or [`StoreError::InUse`].
pub fn index_remove(
    index: &mut BTreeMap<String, Entry>,
    name: &str,
    which: &Which,
) -> Result<Version, StoreError> {
    let (entry, v) = lookup(index, name, which)?;
    if entry.active == Some(v.version) {
        return Err(StoreError::InUse(format!(
            "version {} of {name:?} is active; activate another version first",
            v.version
        )));
    }
    if let Some(e) = index.get_mut(name) {
        e.versions.retain(|x| x.version != v.version);
        if e.versions.is_empty() {
            index.remove(name);
        }
    }
    Ok(v)
}

/// A name's entry and one of its versions.
fn lookup<'a>(
    index: &'a BTreeMap<String, Entry>,
    name: &str,
    which: &Which,
) -> Result<(&'a Entry, Version), StoreError> {
    let entry = index
        .get(name)
        .ok_or_else(|| StoreError::NotFound(format!("no transform named {name:?}")))?;
    let v = entry
        .lookup(which)
        .cloned()
        .map_err(|why| StoreError::NotFound(format!("transform {name:?}: {why}")))?;
    Ok((entry, v))
}

/// Writes `bytes` to `path` through a fsynced temp file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", rand::random::<u32>()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    result.map_err(|e: std::io::Error| {
        let _ = std::fs::remove_file(&tmp);
        io(path, &e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_activate_remove_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (aa, bb) = ("aa".repeat(32), "bb".repeat(32));
        let v1 = store.add("t", b"one", &aa).unwrap();
        let v2 = store.add("t", b"two", &bb).unwrap();
        assert_eq!((v1.version, v2.version), (1, 2));
        assert_eq!(
            store.add("t", b"one", &aa).unwrap().version,
            1,
            "same bytes, same version"
        );
        assert_eq!(store.activate("t", &Which::Version(2)).unwrap().1, None);
        assert_eq!(
            store
                .activate("t", &Which::Sha256(aa.to_ascii_uppercase()))
                .unwrap()
                .1,
            Some(2),
            "rollback by sha"
        );
        assert!(matches!(
            store.remove("t", &Which::Version(1)),
            Err(StoreError::InUse(_))
        ));
        assert_eq!(store.remove("t", &Which::Version(2)).unwrap().sha256, bb);
        assert!(store.blob(&bb).is_err(), "an unused blob is removed");
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let e = store.get("t").unwrap();
        assert_eq!(e.active, Some(1));
        assert_eq!(e.versions.len(), 1);
        assert_eq!(store.blob(&aa).unwrap(), b"one");
        assert!(matches!(
            store.activate("nope", &Which::Version(1)),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn a_version_is_found_by_a_unique_sha256_prefix_and_errors_read_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let one = format!("9f2c01{}", "0".repeat(58));
        let two = format!("9f2c02{}", "0".repeat(58));
        store.add("t", b"one", &one).unwrap();
        store.add("t", b"two", &two).unwrap();
        let e = store.get("t").unwrap();
        let find = |s: &str| e.lookup(&Which::Sha256(s.into())).map(|v| v.version);
        assert_eq!(find("9f2c02"), Ok(2));
        assert_eq!(find("9F2C01…"), Ok(1), "case and the README's ellipsis");
        assert_eq!(find(&one), Ok(1));
        assert_eq!(
            find("9f2c"),
            Err("sha256 9f2c… matches versions 1 and 2: give more digits".into())
        );
        assert_eq!(
            find("9f2"),
            Err(
                "\"9f2\" is not a sha256: give the hex digest, or at least its first 4 digits"
                    .into()
            )
        );
        assert_eq!(
            find("abcd"),
            Err("there is no version with sha256 abcd…".into())
        );
        assert_eq!(
            e.lookup(&Which::Version(7)).map(|v| v.version),
            Err("there is no version 7".into())
        );
        let StoreError::NotFound(message) = store.activate("t", &Which::Version(7)).unwrap_err()
        else {
            panic!("not found expected")
        };
        assert_eq!(message, "transform \"t\": there is no version 7");
    }
}
