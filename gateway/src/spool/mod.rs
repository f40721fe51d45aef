//! The durable spool between the pipelines and the sinks.
//!
//! - **Payload**: one append-only log per sink (`log`, `frame`): records
//!   as CRC32C-checked frames in segment files, deleted a segment at a
//!   time once delivered. A slow sink only ever pins its own log.
//! - **Metadata**: SQLite (`meta`): each log's committed end and delivery
//!   cursor, the object manifest the sinks name their objects in, and the
//!   pollers' checkpoints.
//! - **One process** per state directory (`lock`).
//!
//! Concurrency and crash ordering: one writer thread appends. It takes
//! every append queued at the moment (group commit), writes each touched
//! log's frames, fsyncs them once per log (`sync = "full"`), then, if any
//! of the appends carries a checkpoint, commits one SQLite transaction with
//! the checkpoints and the new log ends. Only then are the frames published
//! to readers and every caller answered, so a 200 or a moved cursor always
//! follows durable records. A crash before the metadata commit leaves
//! frames that recovery cuts (they are marked `NEEDS_META`), so a page's
//! records and its cursor stay one unit; plain appends are valid as soon
//! as their fsync returns, and their ends are recorded lazily (at most a
//! second behind) only to shorten the start-up scan.

pub mod frame;
pub mod lock;
pub mod log;
pub mod meta;

use crate::config::{SpoolConfig, SyncMode};
use crate::metrics::Metrics;
use crate::util::lock;
use log::{Pos, SinkLog};
use meta::Meta;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
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
    /// The encoded record (shared with the transform's answer it came
    /// from: the spool only reads it).
    pub data: bytes::Bytes,
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
    /// A log file operation failed.
    #[error("spool {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The disk (or quota) is full: nothing of the append was kept.
    #[error("the spool's disk is full ({0}); nothing was stored")]
    DiskFull(String),
    /// Another process has the state directory.
    #[error(transparent)]
    Locked(#[from] lock::LockError),
    /// A row names a sink the spool has no log for.
    #[error("no spool log for sink `{0}`")]
    UnknownSink(String),
    /// The writer thread has stopped (sluice is shutting down).
    #[error("the spool is closed")]
    Closed,
}

impl SpoolError {
    /// Whether this is a full disk (the push source answers 507).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, SpoolError::DiskFull(_))
    }

    fn io(path: &Path, source: std::io::Error) -> Self {
        if is_enospc(&source) {
            return SpoolError::DiskFull(format!("{}: {source}", path.display()));
        }
        SpoolError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn is_enospc(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Why a source must back off: the first sink it feeds that is over budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget {
    /// The sink.
    pub sink: String,
    /// What is over, in words.
    pub why: String,
}

enum Op {
    Append {
        rows: Vec<NewRow>,
        checkpoint: Option<(String, String)>,
        run_ids: Option<meta::RunIds>,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
}

/// The spool. Cheap to share behind an `Arc`.
pub struct Spool {
    dir: PathBuf,
    meta: Arc<Meta>,
    logs: BTreeMap<String, Arc<SinkLog>>,
    limits: SpoolConfig,
    ops: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    commits: watch::Sender<u64>,
    metrics: Metrics,
    _lock: lock::StateLock,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Most appends committed in one group.
const GROUP_COMMIT_OPS: usize = 256;
/// How far behind the recorded log ends may fall (see the module docs).
const END_RECORD_INTERVAL: Duration = Duration::from_secs(1);
/// First-release rows migrated per transaction.
const MIGRATE_CHUNK: usize = 10_000;

impl Spool {
    /// Locks `state_dir`, opens the metadata and a log for every sink in
    /// `sinks` and every sink that still has spooled data, recovers each
    /// log's tail, migrates a first-release `spool.db`, and starts the
    /// writer thread.
    ///
    /// # Errors
    ///
    /// [`SpoolError`]: another process has the folder, or it cannot be
    /// read.
    pub fn open(
        state_dir: &Path,
        limits: SpoolConfig,
        sinks: &[String],
        metrics: Metrics,
    ) -> Result<Arc<Self>, SpoolError> {
        std::fs::create_dir_all(state_dir).map_err(|e| SpoolError::io(state_dir, e))?;
        let held = lock::StateLock::acquire(state_dir)?;
        let (meta, version) = Meta::open(&state_dir.join("spool.db"), limits.sync)?;
        let meta = Arc::new(meta);
        let rows: BTreeMap<String, meta::LogRow> = meta
            .logs()?
            .into_iter()
            .map(|r| (r.sink.clone(), r))
            .collect();
        let log_root = state_dir.join("log");
        let mut names: Vec<String> = sinks.to_vec();
        names.extend(rows.keys().cloned());
        if let Ok(entries) = std::fs::read_dir(&log_root) {
            names.extend(
                entries
                    .flatten()
                    .filter_map(|e| log::sink_name(e.file_name().to_str()?)),
            );
        }
        if version == 0 {
            names.extend(old_sinks(&meta)?);
        }
        names.sort();
        names.dedup();
        let mut logs = BTreeMap::new();
        for name in names {
            let row = rows.get(&name);
            let dir = log_root.join(log::dir_name(&name));
            let (log, recovery) = SinkLog::open(
                name.as_str().into(),
                dir.clone(),
                state_dir.join("quarantine"),
                limits.segment_bytes,
                row.and_then(|r| r.end),
                row.map_or(Pos::START, |r| r.cursor),
            )
            .map_err(|e| SpoolError::io(&dir, e))?;
            if recovery.truncated_bytes > 0 {
                tracing::info!(
                    sink = name.as_str(),
                    bytes = recovery.truncated_bytes,
                    "spool: cut an unfinished write at the end of the log (never acknowledged)"
                );
            }
            for d in &recovery.damage {
                metrics.spool_damage(&name, d);
            }
            if let Some((from, to)) = recovery.missing {
                tracing::error!(
                    sink = name.as_str(),
                    from_seq = from,
                    to_seq = to,
                    "spool: records recorded as committed are missing from the log files (disk trouble?)"
                );
            }
            logs.insert(name, log);
        }
        let (commits, _) = watch::channel(0);
        let (tx, rx) = mpsc::channel();
        let spool = Arc::new(Self {
            dir: state_dir.to_path_buf(),
            meta,
            logs,
            limits,
            ops: Mutex::new(Some(tx)),
            writer: Mutex::new(None),
            commits,
            metrics,
            _lock: held,
        });
        if version == 0 {
            spool.migrate()?;
        }
        let writer = Writer {
            spool: Arc::downgrade(&spool),
            meta: spool.meta.clone(),
            logs: spool.logs.clone(),
            sync: spool.limits.sync == SyncMode::Full,
            min_free: spool.limits.min_free_bytes,
            unrecorded: BTreeMap::new(),
            last_recorded: Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| SpoolError::io(state_dir, e))?;
        *lock(&spool.writer) = Some(handle);
        Ok(spool)
    }

    /// Moves a first-release spool's rows into the logs, a chunk per
    /// transaction: the frames (marked `NEEDS_META`) and the deletion of
    /// their rows commit together, so a crash midway neither loses nor
    /// doubles a row.
    fn migrate(&self) -> Result<(), SpoolError> {
        let mut after = 0;
        let mut moved = 0u64;
        loop {
            let rows = self.meta.old_rows(after, MIGRATE_CHUNK)?;
            let Some(last) = rows.last().map(|r| r.0) else {
                break;
            };
            let mut touched = Vec::new();
            for (_, sink, route, source, received_ms, data) in &rows {
                let log = self
                    .logs
                    .get(sink)
                    .ok_or_else(|| SpoolError::UnknownSink(sink.clone()))?;
                log.stage(*received_ms, frame::NEEDS_META, route, source, data);
                if !touched.iter().any(|t: &Arc<SinkLog>| Arc::ptr_eq(t, log)) {
                    touched.push(log.clone());
                }
            }
            let sync = self.limits.sync == SyncMode::Full;
            commit_group(&self.meta, &touched, sync, &[], &[], Some(last), &self.dir)?;
            moved += rows.len() as u64;
            after = last;
        }
        self.meta.finish_migration()?;
        tracing::info!(
            records = moved,
            "spool: moved the records of a first-release spool.db into the log"
        );
        Ok(())
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The metadata (manifest, cursors, checkpoints).
    pub fn meta(&self) -> &Arc<Meta> {
        &self.meta
    }

    /// A sink's log.
    pub fn log(&self, sink: &str) -> Option<Arc<SinkLog>> {
        self.logs.get(sink).cloned()
    }

    /// Every log: configured sinks and orphans.
    pub fn logs(&self) -> impl Iterator<Item = (&str, &Arc<SinkLog>)> {
        self.logs.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The budget of one sink's backlog: `[spool]`, then
    /// `[spool.sinks.NAME]` over it.
    pub fn budget(&self, sink: &str) -> (u64, u64, Option<f64>) {
        let o = self.limits.sinks.get(sink);
        (
            o.and_then(|o| o.max_records)
                .unwrap_or(self.limits.max_records),
            o.and_then(|o| o.max_bytes).unwrap_or(self.limits.max_bytes),
            o.and_then(|o| o.max_age_secs).or(self.limits.max_age_secs),
        )
    }

    /// Whether `records` more records of `bytes` bytes may go to `sinks`
    /// now: `Err` names the first sink over its high-water mark, that the
    /// request would not fit, or whose oldest record is too old.
    ///
    /// # Errors
    ///
    /// [`OverBudget`].
    pub fn admission(
        &self,
        sinks: &[Arc<str>],
        records: u64,
        bytes: u64,
    ) -> Result<(), OverBudget> {
        let hw = self.limits.high_water;
        for sink in sinks {
            let Some(log) = self.logs.get(&**sink) else {
                continue;
            };
            let (max_records, max_bytes, max_age) = self.budget(sink);
            let (r, b) = log.depth();
            let over = |have: u64, add: u64, max: u64| {
                have as f64 >= hw * max as f64 || have.saturating_add(add) > max
            };
            let why = if over(r, records, max_records) {
                Some(format!("{r} records spooled (budget {max_records})"))
            } else if over(b, bytes, max_bytes) {
                Some(format!("{b} bytes spooled (budget {max_bytes})"))
            } else {
                max_age.and_then(|max| {
                    let age = log.oldest_ms().map_or(0.0, |ms| {
                        (chrono::Utc::now().timestamp_millis() - ms).max(0) as f64 / 1000.0
                    });
                    (age > max).then(|| format!("oldest record {age:.0} s old (budget {max} s)"))
                })
            };
            if let Some(why) = why {
                return Err(OverBudget {
                    sink: sink.to_string(),
                    why,
                });
            }
        }
        Ok(())
    }

    /// Records and bytes held for every sink together.
    pub fn depth(&self) -> (u64, u64) {
        self.logs.values().fold((0, 0), |(r, b), log| {
            let (lr, lb) = log.depth();
            (r + lr, b + lb)
        })
    }

    /// Durably appends rows, in one group commit with any others queued at
    /// the same time. Returns once they are written and (with
    /// `sync = "full"`) fsynced.
    ///
    /// # Errors
    ///
    /// [`SpoolError`]; then nothing of `rows` was stored.
    pub async fn append(&self, rows: Vec<NewRow>) -> Result<(), SpoolError> {
        self.append_with_checkpoint(rows, None).await
    }

    /// Appends rows and sets a source's checkpoint as one unit: after a
    /// crash both are there or neither is.
    ///
    /// # Errors
    ///
    /// [`SpoolError`]; then neither was stored.
    pub async fn append_with_checkpoint(
        &self,
        rows: Vec<NewRow>,
        checkpoint: Option<(String, String)>,
    ) -> Result<(), SpoolError> {
        self.append_page(rows, checkpoint, None).await
    }

    /// Appends a poller's page: its rows, its cursor, and the ids its run
    /// has spooled (see [`meta::RunIds`]), all as one unit.
    ///
    /// # Errors
    ///
    /// [`SpoolError`]; then none of it was stored.
    pub async fn append_page(
        &self,
        rows: Vec<NewRow>,
        checkpoint: Option<(String, String)>,
        run_ids: Option<meta::RunIds>,
    ) -> Result<(), SpoolError> {
        let (reply, rx) = oneshot::channel();
        lock(&self.ops)
            .as_ref()
            .ok_or(SpoolError::Closed)?
            .send(Op::Append {
                rows,
                checkpoint,
                run_ids,
                reply,
            })
            .map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// The ids the poller run in progress under `key` has spooled.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Sqlite`].
    pub fn run_ids(&self, key: &str) -> Result<std::collections::HashSet<String>, SpoolError> {
        self.meta.run_ids(key)
    }

    /// A source's stored checkpoint.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Sqlite`].
    pub fn checkpoint(&self, source: &str) -> Result<Option<String>, SpoolError> {
        self.meta.checkpoint(source)
    }

    /// A receiver that changes after every commit that added records;
    /// sinks wait on it instead of polling.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// The metrics the spool reports damage to.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Deletes a sink's log and its metadata (`sluice spool drop`). The
    /// sink must not be running.
    ///
    /// # Errors
    ///
    /// [`SpoolError`]; what was deleted stays deleted.
    pub fn drop_sink(&self, sink: &str) -> Result<(), SpoolError> {
        let dir = self.dir.join("log").join(log::dir_name(sink));
        self.meta.drop_sink(sink)?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SpoolError::io(&dir, e)),
        }
    }

    /// Stops the writer after it has committed everything queued.
    pub fn close(&self) {
        lock(&self.ops).take();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }
}

/// Bytes available to this process on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The sinks named in first-release rows.
fn old_sinks(meta: &Meta) -> Result<Vec<String>, SpoolError> {
    let mut sinks = Vec::new();
    let mut after = 0;
    loop {
        let rows = meta.old_rows(after, MIGRATE_CHUNK)?;
        let Some(last) = rows.last().map(|r| r.0) else {
            break;
        };
        sinks.extend(rows.into_iter().map(|r| r.1));
        sinks.sort();
        sinks.dedup();
        after = last;
    }
    Ok(sinks)
}

/// Writes, fsyncs, records (when `checkpoints` or `migrated` ask for it,
/// or `record_ends` lists ends to record) and publishes the frames staged
/// in `touched`; on any failure undoes them all.
fn commit_group(
    meta: &Meta,
    touched: &[Arc<SinkLog>],
    sync: bool,
    checkpoints: &[(&str, &str)],
    run_ids: &[&meta::RunIds],
    migrated: Option<i64>,
    dir: &Path,
) -> Result<Vec<(Arc<SinkLog>, Pos)>, SpoolError> {
    let undo = |e: &std::io::Error| {
        for log in touched {
            log.undo(e);
        }
    };
    for log in touched {
        if let Err(e) = log.write_staged(sync) {
            undo(&e);
            return Err(SpoolError::io(
                &dir.join("log").join(log::dir_name(&log.name)),
                e,
            ));
        }
    }
    if !checkpoints.is_empty() || !run_ids.is_empty() || migrated.is_some() {
        let ends: Vec<(&str, Pos)> = touched.iter().map(|l| (&*l.name, l.staged_end())).collect();
        if let Err(e) = meta.commit(&ends, checkpoints, run_ids, migrated) {
            let e = match e {
                SpoolError::Sqlite {
                    source: rusqlite::Error::SqliteFailure(f, _),
                    ..
                } if f.code == rusqlite::ErrorCode::DiskFull => {
                    SpoolError::DiskFull("spool.db".into())
                }
                other => other,
            };
            undo(&std::io::Error::other(e.to_string()));
            return Err(e);
        }
    }
    Ok(touched
        .iter()
        .map(|log| {
            let (end, _, _) = log.publish();
            (log.clone(), end)
        })
        .collect())
}

/// The writer thread's state.
struct Writer {
    spool: std::sync::Weak<Spool>,
    meta: Arc<Meta>,
    logs: BTreeMap<String, Arc<SinkLog>>,
    sync: bool,
    min_free: u64,
    /// Published ends not yet recorded in the metadata.
    unrecorded: BTreeMap<String, Pos>,
    last_recorded: Instant,
}

impl Writer {
    fn run(mut self, rx: &mpsc::Receiver<Op>) {
        let mut ops = Vec::new();
        loop {
            match rx.recv_timeout(END_RECORD_INTERVAL) {
                Ok(op) => ops.push(op),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.record_ends();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.record_ends();
                    return;
                }
            }
            while ops.len() < GROUP_COMMIT_OPS {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            self.commit(std::mem::take(&mut ops));
            if self.last_recorded.elapsed() >= END_RECORD_INTERVAL {
                self.record_ends();
            }
        }
    }

    fn commit(&mut self, ops: Vec<Op>) {
        let Some(spool) = self.spool.upgrade() else {
            return;
        };
        let flagged = ops.iter().any(
            |Op::Append {
                 checkpoint,
                 run_ids,
                 ..
             }| { checkpoint.is_some() || run_ids.is_some() },
        );
        let flags = if flagged { frame::NEEDS_META } else { 0 };
        let mut touched: Vec<Arc<SinkLog>> = Vec::new();
        let mut failed: Option<SpoolError> = None;
        for Op::Append { rows, .. } in &ops {
            for row in rows {
                let Some(log) = self.logs.get(&*row.sink) else {
                    failed = Some(SpoolError::UnknownSink(row.sink.to_string()));
                    break;
                };
                log.stage(
                    row.received_at_ms,
                    flags,
                    &row.route,
                    &row.source,
                    &row.data,
                );
                if !touched.iter().any(|t| Arc::ptr_eq(t, log)) {
                    touched.push(log.clone());
                }
            }
        }
        let failed = failed.or_else(|| self.no_room(&spool.dir, &ops));
        let result = match failed {
            Some(e) => {
                for log in &touched {
                    log.undo(&std::io::Error::other(e.to_string()));
                }
                Err(e)
            }
            None => {
                let checkpoints: Vec<(&str, &str)> = ops
                    .iter()
                    .filter_map(|Op::Append { checkpoint, .. }| {
                        checkpoint.as_ref().map(|(s, c)| (s.as_str(), c.as_str()))
                    })
                    .collect();
                let run_ids: Vec<&meta::RunIds> = ops
                    .iter()
                    .filter_map(|Op::Append { run_ids, .. }| run_ids.as_ref())
                    .collect();
                commit_group(
                    &self.meta,
                    &touched,
                    self.sync,
                    &checkpoints,
                    &run_ids,
                    None,
                    &spool.dir,
                )
            }
        };
        match result {
            Ok(published) => {
                for (log, end) in published {
                    if flagged {
                        self.unrecorded.remove(&*log.name);
                    } else {
                        self.unrecorded.insert(log.name.to_string(), end);
                    }
                }
                spool.commits.send_modify(|n| *n += 1);
                for Op::Append { reply, .. } in ops {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                let message = e.to_string();
                let disk_full = e.is_disk_full();
                let mut first = Some(e);
                for Op::Append { reply, .. } in ops {
                    let err = first.take().unwrap_or_else(|| {
                        if disk_full {
                            SpoolError::DiskFull(message.clone())
                        } else {
                            SpoolError::Io {
                                path: spool.dir.clone(),
                                source: std::io::Error::other(message.clone()),
                            }
                        }
                    });
                    let _ = reply.send(Err(err));
                }
            }
        }
    }

    /// A full disk, before anything is written: the file system must keep
    /// `min_free` bytes after the batch, for the metadata.
    fn no_room(&self, dir: &Path, ops: &[Op]) -> Option<SpoolError> {
        let bytes: u64 = ops
            .iter()
            .flat_map(|Op::Append { rows, .. }| rows)
            .map(|r| frame::encoded_len(&r.route, &r.source, &r.data) as u64)
            .sum();
        let free = free_bytes(dir)?;
        (free < self.min_free.saturating_add(bytes)).then(|| {
            SpoolError::DiskFull(format!(
                "{} has {free} bytes free, and keeps at least {} (spool.min_free_bytes)",
                dir.display(),
                self.min_free
            ))
        })
    }

    /// Records published ends in the metadata, at most once a second: they
    /// only shorten the start-up scan (see the module docs).
    fn record_ends(&mut self) {
        self.last_recorded = Instant::now();
        if self.unrecorded.is_empty() {
            return;
        }
        let ends: Vec<(&str, Pos)> = self
            .unrecorded
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        if self.meta.commit(&ends, &[], &[], None).is_ok() {
            self.unrecorded.clear();
        }
    }
}

#[cfg(test)]
mod tests;
