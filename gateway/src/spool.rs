//! The durable spool: a SQLite database (WAL) between the pipelines and the
//! sinks, which also holds the pollers' checkpoints.
//!
//! Concurrency: one writer thread owns the write connection. Appends,
//! deletes and checkpoint updates are sent to it over a channel; it commits
//! whatever has queued up in one transaction (group commit), then answers
//! every caller; large deletes go in parts, behind the appends (see
//! `writer_loop`). A caller's `append` returns only after that commit, which
//! is what lets a source acknowledge data. Reads use a second connection;
//! WAL lets them run beside the writer.
//!
//! Ids come from `AUTOINCREMENT`, so they only grow: a sink can remember the
//! last id it read and never miss or reread a row, even after deletes.

use crate::config::{SpoolConfig, SyncMode};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::{oneshot, watch};

/// A record on its way into the spool.
#[derive(Debug, Clone)]
pub struct NewRow {
    /// The sink that will deliver it.
    pub sink: Arc<str>,
    /// Its route (the sink's key templates use it).
    pub route: String,
    /// The source it came from.
    pub source: Arc<str>,
    /// When sluice received it, Unix milliseconds.
    pub received_at_ms: i64,
    /// The encoded record.
    pub data: Vec<u8>,
}

/// A record read back for delivery.
#[derive(Debug, Clone)]
pub struct Row {
    /// Spool id; pass it to [`Spool::delete`] once delivered.
    pub id: i64,
    /// Route.
    pub route: String,
    /// Source.
    pub source: String,
    /// Unix milliseconds.
    pub received_at_ms: i64,
    /// The record.
    pub data: Vec<u8>,
}

/// Spool failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// SQLite said no.
    #[error("spool database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The writer thread has stopped (sluice is shutting down).
    #[error("the spool is closed")]
    Closed,
    /// Could not create the state directory.
    #[error("cannot create {}: {source}", path.display())]
    Dir {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Whether a source may add data now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Below the high-water mark.
    Open,
    /// Over the high-water mark, or the request would not fit: back off.
    Backoff,
}

enum Op {
    Append {
        rows: Vec<NewRow>,
        checkpoint: Option<(String, String)>,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
    Delete {
        ids: Vec<i64>,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
}

/// The spool. Cheap to share behind an `Arc`.
pub struct Spool {
    ops: Mutex<Option<mpsc::Sender<Op>>>,
    reader: Mutex<Connection>,
    records: AtomicU64,
    bytes: AtomicU64,
    limits: SpoolConfig,
    commits: watch::Sender<u64>,
    path: PathBuf,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    route TEXT NOT NULL,
    source TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS spool_by_sink ON spool (sink, id);
CREATE TABLE IF NOT EXISTS checkpoints (
    source TEXT PRIMARY KEY,
    cursor TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
";

/// Most queued operations committed in one transaction.
const GROUP_COMMIT_OPS: usize = 256;
/// Most ids deleted in one transaction (see `writer_loop`): small enough
/// that an append waits at most a few milliseconds behind them.
const DELETE_CHUNK: usize = 1024;

impl Spool {
    /// Opens (or creates) `state_dir/spool.db` and starts the writer thread.
    ///
    /// # Errors
    ///
    /// [`SpoolError`] when the folder or database cannot be opened.
    pub fn open(state_dir: &Path, limits: SpoolConfig) -> Result<Arc<Self>, SpoolError> {
        std::fs::create_dir_all(state_dir).map_err(|source| SpoolError::Dir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join("spool.db");
        let sql = |source| SpoolError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let writer = Connection::open(&path).map_err(sql)?;
        let sync = match limits.sync {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        };
        writer
            .execute_batch(&format!(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=10000; {SCHEMA}"
            ))
            .map_err(sql)?;
        let reader = Connection::open(&path).map_err(sql)?;
        reader
            .execute_batch("PRAGMA busy_timeout=10000;")
            .map_err(sql)?;
        let (records, bytes): (i64, i64) = reader
            .query_row(
                "SELECT count(*), coalesce(sum(length(data)), 0) FROM spool",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(sql)?;
        let (tx, rx) = mpsc::channel();
        let (commits, _) = watch::channel(0);
        let spool = Arc::new(Self {
            ops: Mutex::new(Some(tx)),
            reader: Mutex::new(reader),
            records: AtomicU64::new(records as u64),
            bytes: AtomicU64::new(bytes as u64),
            limits,
            commits,
            path: path.clone(),
            writer: Mutex::new(None),
        });
        let weak = Arc::downgrade(&spool);
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer_loop(writer, &rx, &weak, &path, sync))
            .map_err(|source| SpoolError::Dir {
                path: state_dir.to_path_buf(),
                source,
            })?;
        *lock(&spool.writer) = Some(handle);
        Ok(spool)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `records` more records of `bytes` bytes may come in now.
    pub fn admission(&self, records: u64, bytes: u64) -> Admission {
        let (r, b) = self.depth();
        let hw = self.limits.high_water;
        let over = |have: u64, add: u64, max: u64| {
            have as f64 >= hw * max as f64 || have.saturating_add(add) > max
        };
        if over(r, records, self.limits.max_records) || over(b, bytes, self.limits.max_bytes) {
            Admission::Backoff
        } else {
            Admission::Open
        }
    }

    /// Records and bytes held now.
    pub fn depth(&self) -> (u64, u64) {
        (
            self.records.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// Durably appends rows, in one transaction with any others queued at
    /// the same time. Returns once committed (and, with `sync = "full"`,
    /// fsynced).
    ///
    /// # Errors
    ///
    /// [`SpoolError`]; then nothing of `rows` was stored.
    pub async fn append(&self, rows: Vec<NewRow>) -> Result<(), SpoolError> {
        self.append_with_checkpoint(rows, None).await
    }

    /// Appends rows and sets a source's checkpoint in the same transaction:
    /// either both are stored or neither is.
    ///
    /// # Errors
    ///
    /// [`SpoolError`]; then neither was stored.
    pub async fn append_with_checkpoint(
        &self,
        rows: Vec<NewRow>,
        checkpoint: Option<(String, String)>,
    ) -> Result<(), SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Append {
            rows,
            checkpoint,
            reply,
        })?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// Removes delivered rows. Returns once all of them are deleted.
    ///
    /// # Errors
    ///
    /// [`SpoolError`]; the rows not yet deleted stay and will be delivered
    /// again.
    pub async fn delete(&self, ids: Vec<i64>) -> Result<(), SpoolError> {
        if ids.is_empty() {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.send(Op::Delete { ids, reply })?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    fn send(&self, op: Op) -> Result<(), SpoolError> {
        lock(&self.ops)
            .as_ref()
            .ok_or(SpoolError::Closed)?
            .send(op)
            .map_err(|_| SpoolError::Closed)
    }

    /// Reads up to `limit` rows for `sink` with ids above `after`, oldest
    /// first. Blocking: call from a blocking thread.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Sqlite`].
    pub fn read(&self, sink: &str, after: i64, limit: usize) -> Result<Vec<Row>, SpoolError> {
        let conn = lock(&self.reader);
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, route, source, received_at, data FROM spool
                 WHERE sink = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![sink, after, limit as i64], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    route: r.get(1)?,
                    source: r.get(2)?,
                    received_at_ms: r.get(3)?,
                    data: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// When the oldest record still spooled was received (Unix ms).
    ///
    /// # Errors
    ///
    /// [`SpoolError::Sqlite`].
    pub fn oldest_received_ms(&self) -> Result<Option<i64>, SpoolError> {
        lock(&self.reader)
            .query_row(
                "SELECT received_at FROM spool ORDER BY id LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// A source's stored checkpoint.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Sqlite`].
    pub fn checkpoint(&self, source: &str) -> Result<Option<String>, SpoolError> {
        lock(&self.reader)
            .query_row(
                "SELECT cursor FROM checkpoints WHERE source = ?1",
                [source],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// A receiver that changes after every commit that added rows; sinks
    /// wait on it instead of polling.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Stops the writer after it has committed everything queued.
    pub fn close(&self) {
        lock(&self.ops).take();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }

    fn err(&self, source: rusqlite::Error) -> SpoolError {
        SpoolError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves the data consistent
    // (SQLite rolls back); carry on rather than poison every later call.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A delete being carried out in parts.
struct PendingDelete {
    ids: Vec<i64>,
    /// How many of `ids` are deleted so far.
    done: usize,
    reply: oneshot::Sender<Result<(), SpoolError>>,
}

/// The writer thread.
///
/// Appends come first. Each one holds a source's acknowledgement (a push
/// request's 200, a poller's next page), while a delete only tidies up after
/// delivery, and a rotated object can hold a hundred thousand rows, which
/// take SQLite a few hundred milliseconds to delete. So every transaction
/// commits all the appends that are waiting (group commit) plus at most
/// [`DELETE_CHUNK`] ids of the oldest pending delete; a delete's caller is
/// answered when its last part is committed. A crash between two parts
/// leaves some delivered rows, which are then delivered again
/// (at-least-once, as a crash before the delete would).
fn writer_loop(
    mut conn: Connection,
    rx: &mpsc::Receiver<Op>,
    spool: &std::sync::Weak<Spool>,
    path: &Path,
    sync: &str,
) {
    let mut appends: Vec<Op> = Vec::new();
    let mut deletes: VecDeque<PendingDelete> = VecDeque::new();
    fn take(op: Op, appends: &mut Vec<Op>, deletes: &mut VecDeque<PendingDelete>) {
        match op {
            Op::Delete { ids, reply } => deletes.push_back(PendingDelete {
                ids,
                done: 0,
                reply,
            }),
            append @ Op::Append { .. } => appends.push(append),
        }
    }
    loop {
        // Block only when there is nothing to do; once the channel is closed
        // (shutdown), finish the pending deletes, then stop.
        if appends.is_empty() && deletes.is_empty() {
            match rx.recv() {
                Ok(op) => take(op, &mut appends, &mut deletes),
                Err(_) => return,
            }
        }
        while appends.len() < GROUP_COMMIT_OPS {
            match rx.try_recv() {
                Ok(op) => take(op, &mut appends, &mut deletes),
                Err(_) => break,
            }
        }
        let mut ops = std::mem::take(&mut appends);
        let mut part = None;
        if let Some(d) = deletes.front_mut() {
            let end = (d.done + DELETE_CHUNK).min(d.ids.len());
            let (reply, answer) = oneshot::channel();
            ops.push(Op::Delete {
                ids: d.ids[d.done..end].to_vec(),
                reply,
            });
            d.done = end;
            part = Some(answer);
        }
        // A commit that only deletes delivered rows needs no fsync of its
        // own: lost in a power cut, it means those rows are delivered again
        // (at-least-once), and the next append's fsync of the WAL makes it
        // durable anyway. Without this, each part would cost an fsync.
        let relaxed = sync == "FULL" && ops.iter().all(|op| matches!(op, Op::Delete { .. }));
        if relaxed {
            let _ = conn.pragma_update(None, "synchronous", "NORMAL");
        }
        let result = apply(&mut conn, &ops);
        let outcome: Vec<Result<(i64, i64), rusqlite::Error>> = match result {
            Ok(deltas) => deltas.into_iter().map(Ok).collect(),
            // One bad operation must not fail the others: retry each alone.
            Err(_) if ops.len() > 1 => ops
                .iter()
                .map(|op| apply(&mut conn, std::slice::from_ref(op)).map(|d| d[0]))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        let Some(spool) = spool.upgrade() else { return };
        let mut added = false;
        for (op, res) in ops.into_iter().zip(outcome) {
            let res = res.map(|(records, bytes)| {
                if records >= 0 {
                    added |= records > 0;
                    spool.records.fetch_add(records as u64, Ordering::Relaxed);
                    spool.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                } else {
                    spool
                        .records
                        .fetch_sub(records.unsigned_abs(), Ordering::Relaxed);
                    spool
                        .bytes
                        .fetch_sub(bytes.unsigned_abs(), Ordering::Relaxed);
                }
            });
            let res = res.map_err(|source| SpoolError::Sqlite {
                path: path.display().to_string(),
                source,
            });
            let reply = match op {
                Op::Append { reply, .. } | Op::Delete { reply, .. } => reply,
            };
            let _ = reply.send(res);
        }
        if let Some(mut answer) = part {
            let result = answer.try_recv().unwrap_or(Err(SpoolError::Closed));
            let finished = deletes
                .front()
                .is_some_and(|d| result.is_err() || d.done == d.ids.len());
            if finished && let Some(d) = deletes.pop_front() {
                // A failed part ends the delete: its caller hears of it and
                // the rows not deleted are delivered again.
                let _ = d.reply.send(result);
            }
        }
        if added {
            spool.commits.send_modify(|n| *n += 1);
        }
        // Must hold again before the next commit, which may carry an append.
        if relaxed && let Err(e) = conn.pragma_update(None, "synchronous", sync) {
            tracing::error!(error = %e, "spool: cannot restore synchronous=FULL; stopping the writer");
            return;
        }
    }
}

/// Applies operations in one transaction; returns each one's change in
/// (records, bytes), negative for deletes.
fn apply(conn: &mut Connection, ops: &[Op]) -> Result<Vec<(i64, i64)>, rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut deltas = Vec::with_capacity(ops.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO spool (sink, route, source, received_at, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut delete =
            tx.prepare_cached("DELETE FROM spool WHERE id = ?1 RETURNING length(data)")?;
        let mut checkpoint = tx.prepare_cached(
            "INSERT INTO checkpoints (source, cursor, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
        )?;
        for op in ops {
            match op {
                Op::Append {
                    rows,
                    checkpoint: cp,
                    ..
                } => {
                    let mut bytes = 0i64;
                    for r in rows {
                        insert.execute(params![
                            &*r.sink,
                            r.route,
                            &*r.source,
                            r.received_at_ms,
                            r.data
                        ])?;
                        bytes += r.data.len() as i64;
                    }
                    if let Some((source, cursor)) = cp {
                        checkpoint.execute(params![
                            source,
                            cursor,
                            chrono::Utc::now().timestamp_millis()
                        ])?;
                    }
                    deltas.push((rows.len() as i64, bytes));
                }
                Op::Delete { ids, .. } => {
                    let (mut n, mut bytes) = (0i64, 0i64);
                    for id in ids {
                        if let Some(len) =
                            delete.query_row([id], |r| r.get::<_, i64>(0)).optional()?
                        {
                            n += 1;
                            bytes += len;
                        }
                    }
                    deltas.push((-n, -bytes));
                }
            }
        }
    }
    tx.commit()?;
    Ok(deltas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sink: &str, data: &str) -> NewRow {
        NewRow {
            sink: sink.into(),
            route: "r".into(),
            source: "s".into(),
            received_at_ms: 1,
            data: data.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn append_read_delete_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
        spool
            .append(vec![row("a", "1"), row("b", "22"), row("a", "333")])
            .await
            .unwrap();
        assert_eq!(spool.depth(), (3, 6));
        let a = spool.read("a", 0, 10).unwrap();
        assert_eq!(
            a.iter().map(|r| r.data.as_slice()).collect::<Vec<_>>(),
            [b"1".as_slice(), b"333"]
        );
        spool.delete(vec![a[0].id]).await.unwrap();
        assert_eq!(spool.depth(), (2, 5));
        assert_eq!(spool.read("a", a[0].id, 10).unwrap().len(), 1);
        spool.close();
        drop(spool);
        let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
        assert_eq!(spool.depth(), (2, 5), "counters are rebuilt from the file");
        // Ids never go back, even after deleting the newest row.
        let newest = spool.read("a", 0, 10).unwrap()[0].id;
        spool.delete(vec![newest]).await.unwrap();
        spool.append(vec![row("a", "4")]).await.unwrap();
        assert!(spool.read("a", 0, 10).unwrap()[0].id > newest);
    }

    #[tokio::test]
    async fn deletes_larger_than_a_chunk_remove_every_row_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
        let n = DELETE_CHUNK * 2 + 7;
        spool
            .append((0..n + 1).map(|_| row("a", "x")).collect())
            .await
            .unwrap();
        let ids: Vec<i64> = spool
            .read("a", 0, n + 1)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        let (delivered, kept) = ids.split_at(n);
        spool.delete(delivered.to_vec()).await.unwrap();
        assert_eq!(spool.depth(), (1, 1));
        assert_eq!(spool.read("a", 0, 10).unwrap()[0].id, kept[0]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_append_is_not_held_up_by_a_large_delete() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
        let n = DELETE_CHUNK * 50;
        spool
            .append((0..n).map(|_| row("a", "x")).collect())
            .await
            .unwrap();
        let ids: Vec<i64> = spool
            .read("a", 0, n)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        let s = spool.clone();
        let delete = tokio::spawn(async move { s.delete(ids).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        spool.append(vec![row("b", "late")]).await.unwrap();
        assert!(
            !delete.is_finished(),
            "the append was committed between two parts of the delete"
        );
        delete.await.unwrap().unwrap();
        assert_eq!(spool.depth(), (1, 4));
    }

    #[tokio::test]
    async fn checkpoint_commits_with_rows() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
        assert_eq!(spool.checkpoint("jc").unwrap(), None);
        spool
            .append_with_checkpoint(vec![row("a", "1")], Some(("jc".into(), "c1".into())))
            .await
            .unwrap();
        spool
            .append_with_checkpoint(vec![], Some(("jc".into(), "c2".into())))
            .await
            .unwrap();
        assert_eq!(spool.checkpoint("jc").unwrap().as_deref(), Some("c2"));
    }

    #[tokio::test]
    async fn admission_follows_the_high_water_mark() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolConfig {
            max_records: 10,
            high_water: 0.5,
            ..SpoolConfig::default()
        };
        let spool = Spool::open(dir.path(), limits).unwrap();
        assert_eq!(spool.admission(4, 10), Admission::Open);
        assert_eq!(spool.admission(11, 10), Admission::Backoff, "would not fit");
        spool
            .append((0..5).map(|_| row("a", "x")).collect())
            .await
            .unwrap();
        assert_eq!(spool.admission(1, 1), Admission::Backoff);
    }
}
