//! Sinks: deliver spooled records as objects.
//!
//! The delivery loop is shared by every object sink. It reads a sink's
//! rows from the spool in id order, appends each to the open object for its
//! key (encoding, then compression, into a temp file), and finishes objects
//! on size, count or age. Finishing = fsync the temp file, hand it to the
//! [`ObjectStore`] (rename for a folder, upload for S3), and only then
//! delete the object's rows from the spool. A crash at any point leaves
//! the rows spooled: delivery is at least once, and exactly once unless
//! sluice dies between an object landing and its rows being deleted.

pub mod key;
pub mod local;
pub mod s3;

use crate::config::{Compression, Invalid, RotateConfig, invalid};
use crate::encoding::{EncodeError, Encoder, Encoding};
use crate::metrics::Metrics;
use crate::spool::{Row, Spool};
use key::{KeyContext, KeyTemplate};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A delivery failure. The records stay spooled and are retried.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A file operation failed.
    #[error("{}: {message}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    /// The store refused or failed the upload; worth retrying.
    #[error("{message}")]
    Remote {
        /// The store's error code (`SlowDown`, `InternalError`, `network`, …).
        code: String,
        /// What happened and what to check.
        message: String,
    },
    /// An error no retry can fix (credentials, the owner guard): the sink
    /// stops and its records stay in the spool.
    #[error("{0}")]
    Fatal(String),
}

impl SinkError {
    pub(crate) fn io(path: &Path, e: &std::io::Error) -> Self {
        SinkError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    fn kind(&self) -> &str {
        match self {
            SinkError::Io { .. } => "io",
            SinkError::Spool(_) => "spool",
            SinkError::Remote { code, .. } => code,
            SinkError::Fatal(_) => "fatal",
        }
    }
}

/// Where finished objects go.
pub trait ObjectStore: Send {
    /// Folder for objects being written (on the same file system as the
    /// destination when the store renames).
    fn temp_dir(&self) -> &Path;
    /// Makes the finished, fsynced file at `temp` visible as `key`.
    /// Returns the object's size.
    ///
    /// # Errors
    ///
    /// [`SinkError`]; the caller keeps the records spooled.
    fn deliver(&mut self, temp: &Path, key: &str) -> Result<u64, SinkError>;
}

/// Settings of the delivery loop.
#[derive(Debug, Clone)]
pub struct ObjectSettings {
    /// The sink's name.
    pub name: Arc<str>,
    /// Key template.
    pub key: KeyTemplate,
    /// How objects are named.
    pub object_name: NameStyle,
    /// Encoding.
    pub encoding: Encoding,
    /// Compression.
    pub compression: Compression,
    /// Compression level.
    pub compression_level: Option<i32>,
    /// Rotation.
    pub rotate: RotateConfig,
}

pub(crate) fn validate_common(
    name: &str,
    compression: Compression,
    level: Option<i32>,
    rotate: &RotateConfig,
    out: &mut Vec<Invalid>,
) {
    if let Some(level) = level {
        let ok = match compression {
            Compression::None => false,
            Compression::Gzip => (0..=9).contains(&level),
            Compression::Zstd => (1..=22).contains(&level),
        };
        if !ok {
            out.push(invalid(
                &["sinks", name, "compression_level"],
                "out of range for the compression (gzip 0-9, zstd 1-22, none takes no level)",
            ));
        }
    }
    if rotate.max_bytes == 0
        || rotate.max_records == 0
        || rotate.max_age_secs.is_nan()
        || rotate.max_age_secs <= 0.0
    {
        out.push(invalid(
            &["sinks", name, "rotate"],
            "max_bytes, max_records and max_age_secs must be positive",
        ));
    }
}

/// How finished objects are named (the folder comes from the key template).
#[derive(Debug, Clone)]
pub enum NameStyle {
    /// `<UTC time with ms>-<random>`: unique without coordination.
    Default,
    /// A template rendered with the finish time, e.g. J1DS's `time=%H%M%S`.
    Template(KeyTemplate),
    /// emnify's `cdr_YYYYMMDD_HHmmss` (usage) / `events_YYYYMMDD_HHmmss`;
    /// objects are kept apart by route.
    Emnify,
}

/// Most objects open at once; beyond it the oldest is finished early.
const MAX_OPEN: usize = 256;
/// Rows read from the spool per query.
const READ_BATCH: usize = 2000;

/// An object being written.
struct OpenObject {
    prefix: String,
    route: String,
    temp: PathBuf,
    writer: Box<dyn FinishWrite>,
    encoder: Encoder,
    ids: Vec<i64>,
    raw_bytes: u64,
    opened: Instant,
    oldest_ms: i64,
    scratch: Vec<u8>,
}

/// A writer that can be finished (compression trailers written, flushed,
/// fsynced).
trait FinishWrite: Write + Send {
    fn finish(self: Box<Self>) -> std::io::Result<()>;
}

impl FinishWrite for std::io::BufWriter<std::fs::File> {
    fn finish(self: Box<Self>) -> std::io::Result<()> {
        let file = self
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        file.sync_all()
    }
}

impl FinishWrite for flate2::write::GzEncoder<std::io::BufWriter<std::fs::File>> {
    fn finish(self: Box<Self>) -> std::io::Result<()> {
        Box::new((*self).finish()?).finish()
    }
}

impl FinishWrite for zstd::stream::write::Encoder<'static, std::io::BufWriter<std::fs::File>> {
    fn finish(self: Box<Self>) -> std::io::Result<()> {
        Box::new((*self).finish()?).finish()
    }
}

/// The file extension of objects with these settings.
pub fn extension(encoding: Encoding, compression: Compression) -> String {
    let base = match encoding {
        Encoding::Jsonl => "jsonl",
        Encoding::Csv => "csv",
    };
    match compression {
        Compression::None => base.to_string(),
        Compression::Gzip => format!("{base}.gz"),
        Compression::Zstd => format!("{base}.zst"),
    }
}

struct Delivery<S> {
    settings: ObjectSettings,
    store: S,
    spool: Arc<Spool>,
    metrics: Metrics,
    open: HashMap<(String, Encoding), OpenObject>,
    seq: u64,
    /// Per folder, the last second a templated name used: a name is never
    /// given twice (the next object takes the next second), so no object
    /// overwrites another even where nothing can be read back (S3).
    last_named: HashMap<String, i64>,
}

/// Runs a sink until `shutdown` turns true, then finishes every open object
/// and returns. Runs on its own thread (it does blocking file I/O); async
/// spool calls are driven with `handle`.
pub fn run<S: ObjectStore>(
    settings: ObjectSettings,
    store: S,
    spool: Arc<Spool>,
    metrics: Metrics,
    handle: &tokio::runtime::Handle,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut commits = spool.subscribe();
    let mut d = Delivery {
        settings,
        store,
        spool,
        metrics,
        open: HashMap::new(),
        seq: 0,
        last_named: HashMap::new(),
    };
    let mut cursor = 0i64;
    let mut backoff = Duration::from_millis(500);
    let tick = Duration::from_millis(200).min(Duration::from_secs_f64(
        d.settings.rotate.max_age_secs / 2.0,
    ));
    loop {
        let stopping = *shutdown.borrow();
        let result = d
            .pump(&mut cursor, handle)
            .and_then(|()| d.rotate(handle, stopping));
        match result {
            Ok(()) => backoff = Duration::from_millis(500),
            Err(e) => {
                d.metrics
                    .sink_failed(&d.settings.name, e.kind(), &e.to_string());
                // Start over from what is still spooled: nothing delivered
                // is deleted twice, nothing undelivered is skipped.
                d.abandon();
                cursor = 0;
                if let SinkError::Fatal(reason) = &e {
                    d.metrics.sink_stopped(&d.settings.name, reason);
                    return;
                }
                if stopping {
                    return;
                }
                d.metrics.sink_retry(&d.settings.name);
                handle.block_on(async {
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                });
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
        }
        if stopping {
            return;
        }
        handle.block_on(async {
            tokio::select! {
                _ = commits.changed() => {}
                () = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}

impl<S: ObjectStore> Delivery<S> {
    /// Reads everything new from the spool into open objects.
    fn pump(&mut self, cursor: &mut i64, handle: &tokio::runtime::Handle) -> Result<(), SinkError> {
        loop {
            let rows = self.spool.read(&self.settings.name, *cursor, READ_BATCH)?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            *cursor = last.id;
            let n = rows.len();
            for row in rows {
                self.add(row, handle)?;
            }
            if n < READ_BATCH {
                return Ok(());
            }
        }
    }

    fn add(&mut self, row: Row, handle: &tokio::runtime::Handle) -> Result<(), SinkError> {
        let time = chrono::DateTime::from_timestamp_millis(row.received_at_ms).unwrap_or_default();
        let parsed;
        let record = if self.settings.key.reads_fields() {
            parsed = serde_json::from_slice::<serde_json::Value>(&row.data).ok();
            parsed.as_ref()
        } else {
            None
        };
        let prefix = self.settings.key.render(&KeyContext {
            route: &row.route,
            source: &row.source,
            time,
            record,
        });
        let encoding = self.settings.encoding;
        // Objects are kept apart by folder, and by route where the name
        // depends on it (emnify's cdr_/events_ files share one folder).
        let group = match self.settings.object_name {
            NameStyle::Emnify => format!("{prefix}\u{0}{}", row.route),
            _ => prefix.clone(),
        };
        match self.append(&group, &prefix, encoding, &row) {
            Ok(()) => {}
            Err(Some(EncodeError::NewColumns(_))) => {
                // CSV: a record with new columns starts a new object with
                // its own header instead of being lost.
                self.finish((group.clone(), encoding), handle)?;
                if let Err(Some(e)) = self.append(&group, &prefix, encoding, &row) {
                    self.reject(&row, &e)?;
                }
            }
            Err(Some(e)) => self.reject(&row, &e)?,
            Err(None) => return Err(self.write_error(&prefix)),
        }
        let full = {
            let o = &self.open[&(group.clone(), encoding)];
            o.raw_bytes >= self.settings.rotate.max_bytes
                || o.ids.len() as u64 >= self.settings.rotate.max_records
        };
        if full {
            self.finish((group, encoding), handle)?;
        }
        if self.open.len() > MAX_OPEN {
            let oldest = self
                .open
                .iter()
                .min_by_key(|(_, o)| o.opened)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.finish(k, handle)?;
            }
        }
        Ok(())
    }

    /// A record this sink cannot encode goes, wrapped with the error, to
    /// the `dead_letter` folder as JSON lines.
    fn reject(&mut self, row: &Row, error: &EncodeError) -> Result<(), SinkError> {
        self.metrics
            .sink_rejected_record(&self.settings.name, &error.to_string());
        let wrapped = serde_json::json!({
            "sink": &*self.settings.name,
            "route": row.route,
            "error": error.to_string(),
            "original": String::from_utf8_lossy(&row.data),
        });
        let dead = Row {
            data: wrapped.to_string().into_bytes(),
            ..row.clone()
        };
        let prefix = crate::pipeline::DEAD_LETTER_ROUTE.to_string();
        self.append(&prefix, &prefix, Encoding::Jsonl, &dead)
            .map_err(|_| self.write_error(&prefix))
    }

    fn write_error(&self, prefix: &str) -> SinkError {
        SinkError::Io {
            path: self.store.temp_dir().join(prefix),
            message: "cannot write the object being built".into(),
        }
    }

    /// Appends to the object of `group` (its folder `prefix`), opening it
    /// if needed. `Err(Some)` is an encoding problem (nothing written),
    /// `Err(None)` an I/O failure.
    fn append(
        &mut self,
        group: &str,
        prefix: &str,
        encoding: Encoding,
        row: &Row,
    ) -> Result<(), Option<EncodeError>> {
        let key = (group.to_string(), encoding);
        if !self.open.contains_key(&key) {
            let o = self
                .open_object(prefix, &row.route, encoding)
                .map_err(|_| None)?;
            self.open.insert(key.clone(), o);
        }
        let o = self.open.get_mut(&key).ok_or(None)?;
        o.scratch.clear();
        match o.encoder.encode(&row.data, &mut o.scratch) {
            Ok(()) => {}
            // Pretty-printed JSON from a transform: compact it (newlines
            // outside strings are only whitespace).
            Err(EncodeError::Newline) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&row.data).map_err(|_| Some(EncodeError::Newline))?;
                o.encoder
                    .encode(v.to_string().as_bytes(), &mut o.scratch)
                    .map_err(Some)?;
            }
            Err(e) => return Err(Some(e)),
        }
        o.writer.write_all(&o.scratch).map_err(|_| None)?;
        o.raw_bytes += o.scratch.len() as u64;
        o.ids.push(row.id);
        o.oldest_ms = o.oldest_ms.min(row.received_at_ms);
        Ok(())
    }

    fn open_object(
        &mut self,
        prefix: &str,
        route: &str,
        encoding: Encoding,
    ) -> Result<OpenObject, SinkError> {
        self.seq += 1;
        let temp = self.store.temp_dir().join(format!(
            "{}-{}-{}",
            self.settings.name,
            std::process::id(),
            self.seq
        ));
        let file = std::fs::File::create(&temp).map_err(|e| SinkError::io(&temp, &e))?;
        let buf = std::io::BufWriter::with_capacity(1 << 16, file);
        // Dead letters are always uncompressed-by-encoding JSON lines but
        // share the sink's compression.
        let writer: Box<dyn FinishWrite> = match self.settings.compression {
            Compression::None => Box::new(buf),
            Compression::Gzip => Box::new(flate2::write::GzEncoder::new(
                buf,
                flate2::Compression::new(self.settings.compression_level.unwrap_or(6) as u32),
            )),
            Compression::Zstd => Box::new(
                zstd::stream::write::Encoder::new(
                    buf,
                    self.settings.compression_level.unwrap_or(3),
                )
                .map_err(|e| SinkError::io(&temp, &e))?,
            ),
        };
        Ok(OpenObject {
            prefix: prefix.to_string(),
            route: route.to_string(),
            temp,
            writer,
            encoder: Encoder::new(encoding),
            ids: Vec::new(),
            raw_bytes: 0,
            opened: Instant::now(),
            oldest_ms: i64::MAX,
            scratch: Vec::new(),
        })
    }

    /// Finishes objects that are old enough (all of them when `all`).
    fn rotate(&mut self, handle: &tokio::runtime::Handle, all: bool) -> Result<(), SinkError> {
        let max_age = Duration::from_secs_f64(self.settings.rotate.max_age_secs);
        let due: Vec<_> = self
            .open
            .iter()
            .filter(|(_, o)| all || o.opened.elapsed() >= max_age)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            self.finish(k, handle)?;
        }
        Ok(())
    }

    /// Finishes one object: trailer, fsync, deliver, then delete its rows.
    fn finish(
        &mut self,
        key: (String, Encoding),
        handle: &tokio::runtime::Handle,
    ) -> Result<(), SinkError> {
        let Some(o) = self.open.remove(&key) else {
            return Ok(());
        };
        let OpenObject {
            prefix,
            route,
            temp,
            writer,
            ids,
            oldest_ms,
            ..
        } = o;
        if ids.is_empty() {
            let _ = std::fs::remove_file(&temp);
            return Ok(());
        }
        let result = writer
            .finish()
            .map_err(|e| SinkError::io(&temp, &e))
            .and_then(|()| {
                let ext = extension(key.1, self.settings.compression);
                let name = self.object_name(&prefix, &route);
                let name = format!("{name}.{ext}");
                let object_key = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                let size = self.store.deliver(&temp, &object_key)?;
                Ok((object_key, size))
            });
        let (object_key, size) = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        };
        let records = ids.len();
        handle.block_on(self.spool.delete(ids))?;
        self.metrics
            .object_written(&self.settings.name, &object_key, records, size, oldest_ms);
        Ok(())
    }

    /// The name (without extension) of an object finished now in `prefix`.
    fn object_name(&mut self, prefix: &str, route: &str) -> String {
        let now = chrono::Utc::now();
        let template = match &self.settings.object_name {
            NameStyle::Default => {
                return format!(
                    "{}-{:08x}",
                    now.format("%Y%m%dT%H%M%S%.3fZ"),
                    rand::random::<u32>()
                );
            }
            NameStyle::Template(t) => Some(t.clone()),
            NameStyle::Emnify => None,
        };
        // Second-resolution names: never reuse a second in a folder.
        let slot = format!("{prefix}\u{0}{route}");
        let secs = now
            .timestamp()
            .max(self.last_named.get(&slot).map_or(i64::MIN, |last| last + 1));
        self.last_named.insert(slot, secs);
        let at = chrono::DateTime::from_timestamp(secs, 0).unwrap_or(now);
        match template {
            Some(t) => t.render(&KeyContext {
                route,
                source: "",
                time: at,
                record: None,
            }),
            None => {
                let kind = if route == "emnify.usage" {
                    "cdr"
                } else {
                    "events"
                };
                format!("{kind}_{}", at.format("%Y%m%d_%H%M%S"))
            }
        }
    }

    /// Drops every open object without delivering it (after an error).
    fn abandon(&mut self) {
        for (_, o) in self.open.drain() {
            let _ = std::fs::remove_file(&o.temp);
        }
    }
}
