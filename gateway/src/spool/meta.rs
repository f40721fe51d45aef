//! The spool's metadata, in SQLite (`state_dir/spool.db`, WAL): where each
//! sink's log ends and where its delivery cursor is, the object manifest,
//! and the pollers' checkpoints. Record payloads live in the logs (see
//! `log`); nothing here grows with the number of records.
//!
//! One connection behind a mutex serves the spool's writer thread (log
//! ends with checkpoints) and the sinks (manifest and cursors); each of
//! them writes a few rows per transaction, so they never wait long. A
//! poisoned connection lock is taken over (`util::lock`): SQLite rolls
//! back whatever a panicking holder left open.

use super::SpoolError;
use super::log::Pos;
use crate::config::SyncMode;
use crate::util::lock;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// `PRAGMA user_version` of this layout. 0 is the first release's
/// one-row-per-record `spool` table (migrated at open, see `Spool::open`).
pub const VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS checkpoints (
    source TEXT PRIMARY KEY,
    cursor TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS logs (
    sink TEXT PRIMARY KEY,
    end_seq INTEGER,
    end_segment INTEGER,
    end_offset INTEGER,
    cursor_seq INTEGER NOT NULL DEFAULT 1,
    cursor_segment INTEGER NOT NULL DEFAULT 1,
    cursor_offset INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS objects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    key TEXT NOT NULL,
    recipe TEXT NOT NULL,
    lo_seq INTEGER NOT NULL,
    lo_segment INTEGER NOT NULL,
    lo_offset INTEGER NOT NULL,
    hi_seq INTEGER NOT NULL,
    records INTEGER NOT NULL,
    oldest_ms INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    UNIQUE (sink, key)
);
CREATE INDEX IF NOT EXISTS objects_by_sink ON objects (sink, hi_seq);
CREATE TABLE IF NOT EXISTS run_ids (
    key TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (key, id)
) WITHOUT ROWID;
";

/// Ids a poller's run in progress has spooled: added with each page,
/// cleared with the page that ends the run, in the same transaction as the
/// page's records and cursor. A page adds only its own ids, so a run of N
/// pages writes N pages' worth of ids, not N² (the cursor JSON stays
/// small).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunIds {
    /// The poller's checkpoint key.
    pub key: String,
    /// Ids the page spooled.
    pub add: Vec<String>,
    /// The page ends the run: forget the run's ids.
    pub clear: bool,
}

/// One sink's row: its committed log end (if recorded) and cursor.
#[derive(Debug, Clone)]
pub struct LogRow {
    /// The sink.
    pub sink: String,
    /// The last recorded end (the writer records it lazily, and always
    /// with a checkpoint; see `log::SinkLog::open`).
    pub end: Option<Pos>,
    /// The delivery cursor.
    pub cursor: Pos,
}

/// An object recorded before its first upload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRow {
    /// Manifest id.
    pub id: i64,
    /// The sink.
    pub sink: String,
    /// Its key (as the sink names it, before any store prefix).
    pub key: String,
    /// How to rebuild it from the log, in the sink's own terms (opaque
    /// here).
    pub recipe: String,
    /// Where its first record is.
    pub lo: Pos,
    /// Its last record's seq.
    pub hi: u64,
    /// How many records it holds.
    pub records: u64,
    /// Receive time of its oldest record (Unix ms).
    pub oldest_ms: i64,
    /// Delivered.
    pub done: bool,
}

/// The metadata database.
#[derive(Debug)]
pub struct Meta {
    conn: Mutex<Connection>,
    path: PathBuf,
}

fn pos(seq: i64, segment: i64, offset: i64) -> Pos {
    Pos {
        seq: seq as u64,
        segment: segment as u64,
        offset: offset as u64,
    }
}

impl Meta {
    /// Opens (or creates) the database. Returns it and the layout version
    /// it had (0 for a first-release spool with rows to migrate).
    ///
    /// # Errors
    ///
    /// [`SpoolError::Sqlite`].
    pub fn open(path: &Path, sync: SyncMode) -> Result<(Self, i64), SpoolError> {
        let err = |source| SpoolError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        let sync = match sync {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=10000;"
        ))
        .map_err(err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let old_rows = version < VERSION && table_exists(&conn, "spool").map_err(err)?;
        if !old_rows {
            conn.execute_batch(&format!("PRAGMA user_version = {VERSION}"))
                .map_err(err)?;
        }
        Ok((
            Self {
                conn: Mutex::new(conn),
                path: path.to_path_buf(),
            },
            if old_rows { 0 } else { VERSION },
        ))
    }

    fn err(&self, source: rusqlite::Error) -> SpoolError {
        SpoolError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Every sink with a row.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Sqlite`].
    pub fn logs(&self) -> Result<Vec<LogRow>, SpoolError> {
        let conn = lock(&self.conn);
        let mut stmt = conn
            .prepare(
                "SELECT sink, end_seq, end_segment, end_offset, cursor_seq, cursor_segment, cursor_offset FROM logs",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| {
            let end: (Option<i64>, Option<i64>, Option<i64>) = (r.get(1)?, r.get(2)?, r.get(3)?);
            Ok(LogRow {
                sink: r.get(0)?,
                end: match end {
                    (Some(s), Some(g), Some(o)) => Some(pos(s, g, o)),
                    _ => None,
                },
                cursor: pos(r.get(4)?, r.get(5)?, r.get(6)?),
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// Records log ends and checkpoints in one transaction, and deletes
    /// migrated first-release rows up to `migrated_through` (an id).
    ///
    /// # Errors
    ///
    /// [`SpoolError`]; then nothing was recorded.
    pub fn commit(
        &self,
        ends: &[(&str, Pos)],
        checkpoints: &[(&str, &str)],
        run_ids: &[&RunIds],
        migrated_through: Option<i64>,
    ) -> Result<(), SpoolError> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut end = tx
                .prepare_cached(
                    "INSERT INTO logs (sink, end_seq, end_segment, end_offset) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (sink) DO UPDATE SET end_seq = ?2, end_segment = ?3, end_offset = ?4",
                )
                .map_err(|e| self.err(e))?;
            for (sink, p) in ends {
                end.execute(params![
                    sink,
                    p.seq as i64,
                    p.segment as i64,
                    p.offset as i64
                ])
                .map_err(|e| self.err(e))?;
            }
            let mut cp = tx
                .prepare_cached(
                    "INSERT INTO checkpoints (source, cursor, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                )
                .map_err(|e| self.err(e))?;
            let now = chrono::Utc::now().timestamp_millis();
            for (source, cursor) in checkpoints {
                cp.execute(params![source, cursor, now])
                    .map_err(|e| self.err(e))?;
            }
            let mut add = tx
                .prepare_cached("INSERT OR IGNORE INTO run_ids (key, id) VALUES (?1, ?2)")
                .map_err(|e| self.err(e))?;
            for run in run_ids {
                if run.clear {
                    tx.execute("DELETE FROM run_ids WHERE key = ?1", [&run.key])
                        .map_err(|e| self.err(e))?;
                } else {
                    for id in &run.add {
                        add.execute([&run.key, id]).map_err(|e| self.err(e))?;
                    }
                }
            }
            if let Some(id) = migrated_through {
                tx.execute("DELETE FROM spool WHERE id <= ?1", [id])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Reads first-release rows after id `after`, oldest first:
    /// (id, sink, route, source, received_ms, data).
    ///
    /// # Errors
    ///
    /// [`SpoolError::Sqlite`].
    #[allow(clippy::type_complexity, reason = "one private caller, the migration")]
    pub(crate) fn old_rows(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, String, String, i64, Vec<u8>)>, SpoolError> {
        let conn = lock(&self.conn);
        let mut stmt = conn
            .prepare(
                "SELECT id, sink, route, source, received_at, data FROM spool WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![after, limit as i64], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// Ends the migration: the old table is gone and the layout is current.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Sqlite`].
    pub(crate) fn finish_migration(&self) -> Result<(), SpoolError> {
        lock(&self.conn)
            .execute_batch(&format!(
                "DROP TABLE IF EXISTS spool; PRAGMA user_version = {VERSION};"
            ))
            .map_err(|e| self.err(e))
    }

    /// A source's stored checkpoint.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Sqlite`].
    pub fn checkpoint(&self, source: &str) -> Result<Option<String>, SpoolError> {
        lock(&self.conn)
            .query_row(
                "SELECT cursor FROM checkpoints WHERE source = ?1",
                [source],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The ids the run in progress under `key` has spooled.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Sqlite`].
    pub fn run_ids(&self, key: &str) -> Result<std::collections::HashSet<String>, SpoolError> {
        let conn = lock(&self.conn);
        let mut stmt = conn
            .prepare("SELECT id FROM run_ids WHERE key = ?1")
            .map_err(|e| self.err(e))?;
        stmt.query_map([key], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// Records an object before its first upload, under `key` if no other
    /// object of the sink has it. `Ok(None)` when the key is taken.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Sqlite`].
    pub fn reserve(&self, o: &ObjectRow) -> Result<Option<i64>, SpoolError> {
        let conn = lock(&self.conn);
        let n = conn
            .execute(
                "INSERT INTO objects (sink, key, recipe, lo_seq, lo_segment, lo_offset, hi_seq, records, oldest_ms, done, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10)
                 ON CONFLICT (sink, key) DO NOTHING",
                params![
                    o.sink,
                    o.key,
                    o.recipe,
                    o.lo.seq as i64,
                    o.lo.segment as i64,
                    o.lo.offset as i64,
                    o.hi as i64,
                    o.records as i64,
                    o.oldest_ms,
                    chrono::Utc::now().timestamp_millis()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok((n == 1).then(|| conn.last_insert_rowid()))
    }

    /// Whether an object of `sink` already has `key`.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Sqlite`].
    pub fn key_taken(&self, sink: &str, key: &str) -> Result<bool, SpoolError> {
        lock(&self.conn)
            .query_row(
                "SELECT 1 FROM objects WHERE sink = ?1 AND key = ?2",
                [sink, key],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| self.err(e))
    }

    /// The sink's objects that end at or after `seq`, in id order.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Sqlite`].
    pub fn objects(&self, sink: &str, seq: u64) -> Result<Vec<ObjectRow>, SpoolError> {
        let conn = lock(&self.conn);
        let mut stmt = conn
            .prepare(
                "SELECT id, key, recipe, lo_seq, lo_segment, lo_offset, hi_seq, records, oldest_ms, done
                 FROM objects WHERE sink = ?1 AND hi_seq >= ?2 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![sink, seq as i64], |r| {
            Ok(ObjectRow {
                id: r.get(0)?,
                sink: sink.to_string(),
                key: r.get(1)?,
                recipe: r.get(2)?,
                lo: pos(r.get(3)?, r.get(4)?, r.get(5)?),
                hi: r.get::<_, i64>(6)? as u64,
                records: r.get::<_, i64>(7)? as u64,
                oldest_ms: r.get(8)?,
                done: r.get::<_, i64>(9)? != 0,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// Marks objects delivered and moves the sink's cursor, in one
    /// transaction.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Sqlite`]; then neither changed.
    pub fn delivered(&self, sink: &str, ids: &[i64], cursor: Pos) -> Result<(), SpoolError> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut done = tx
                .prepare_cached("UPDATE objects SET done = 1 WHERE id = ?1")
                .map_err(|e| self.err(e))?;
            for id in ids {
                done.execute([id]).map_err(|e| self.err(e))?;
            }
            tx.execute(
                "INSERT INTO logs (sink, cursor_seq, cursor_segment, cursor_offset) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (sink) DO UPDATE SET cursor_seq = ?2, cursor_segment = ?3, cursor_offset = ?4",
                params![sink, cursor.seq as i64, cursor.segment as i64, cursor.offset as i64],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Forgets delivered objects older than `before_ms` that lie wholly
    /// behind their sink's cursor. Their keys may then be given again (see
    /// the sinks' naming).
    ///
    /// # Errors
    ///
    /// [`SpoolError::Sqlite`].
    pub fn prune(&self, before_ms: i64) -> Result<usize, SpoolError> {
        lock(&self.conn)
            .execute(
                "DELETE FROM objects WHERE done = 1 AND created_ms < ?1
                 AND hi_seq < (SELECT cursor_seq FROM logs WHERE logs.sink = objects.sink)",
                [before_ms],
            )
            .map_err(|e| self.err(e))
    }

    /// Removes every trace of a sink (`sluice spool drop`).
    ///
    /// # Errors
    ///
    /// [`SpoolError::Sqlite`].
    pub fn drop_sink(&self, sink: &str) -> Result<(), SpoolError> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM objects WHERE sink = ?1", [sink])
            .map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM logs WHERE sink = ?1", [sink])
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }
}

fn table_exists(conn: &Connection, name: &str) -> Result<bool, rusqlite::Error> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|o| o.is_some())
}
