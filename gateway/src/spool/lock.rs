//! One process per state directory: an exclusive `flock` on
//! `state_dir/lock`, held for the life of the spool. Two processes on one
//! spool would read the same records and deliver them twice, and their
//! counters would drift; the second one is refused instead.
//!
//! The kernel drops the lock when the process dies (kill -9 included), so
//! a stale lock file never blocks a restart. The file holds the owner's
//! pid, for the refusal message only.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("state_dir {} is in use by sluice pid {pid}", dir.display())]
    InUse {
        /// The state directory.
        dir: PathBuf,
        /// The holder's pid, as it wrote it (`?` if unreadable).
        pid: String,
    },
    /// The lock file could not be opened or written.
    #[error("cannot lock state_dir {}: {source}", dir.display())]
    Io {
        /// The state directory.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl StateLock {
    /// Takes the lock on `dir` (which must exist), or says who has it.
    ///
    /// # Errors
    ///
    /// [`LockError`].
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("lock"))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::InUse {
                    dir: dir.to_path_buf(),
                    pid: if pid.is_empty() {
                        "?".into()
                    } else {
                        pid.into()
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }

    /// Whether some process holds the lock on `dir` now.
    pub fn held(dir: &Path) -> bool {
        let Ok(file) = File::open(dir.join("lock")) else {
            return false;
        };
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let held = StateLock::acquire(dir.path()).unwrap();
        assert!(StateLock::held(dir.path()));
        // flock locks belong to the open file description: a second open in
        // this process conflicts just as another process would.
        let e = StateLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("is in use by sluice pid {}", std::process::id())),
            "{e}"
        );
        drop(held);
        assert!(!StateLock::held(dir.path()));
        StateLock::acquire(dir.path()).unwrap();
    }
}
