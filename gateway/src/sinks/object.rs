//! What goes into an object, and its bytes.
//!
//! A sink's records are split into *groups*: the folder its key template
//! renders (plus emnify's file kind), and the encoding. An object holds
//! the records of one group between two positions of the sink's log, in
//! log order. Which group a record belongs to depends only on the record
//! and the sink's layout, and the bytes of an object depend only on its
//! records and settings (gzip with mtime 0, one code path for zstd), so an
//! object can be rebuilt from the log byte for byte, from the [`Recipe`]
//! kept in the manifest, by a retry or after a crash. That is what makes a
//! retried upload an overwrite instead of a second copy.
//!
//! Records the encoding cannot hold (CSV of a non-object, a JSON line
//! with a raw newline that is not JSON) go, wrapped with the error, to the
//! `dead_letter` group as JSON lines.

use super::SinkError;
use super::key::{KeyContext, KeyTemplate};
use crate::config::Compression;
use crate::encoding::{EncodeError, Encoder, Encoding};
use crate::spool::frame::Frame;
use crate::spool::log::{Damage, Pos, Reader, SinkLog};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How an object's file is named (emnify's layout names by kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Named by the sink's name style.
    Plain,
    /// emnify usage records: `cdr_YYYYMMDD_HHmmss`.
    Cdr,
    /// emnify events: `events_YYYYMMDD_HHmmss`.
    Events,
}

/// A group of records that share objects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Group {
    /// The folder, without a trailing `/`.
    pub prefix: String,
    /// The file kind.
    pub kind: Kind,
    /// The encoding of its objects.
    pub encoding: Encoding,
}

/// The folder of records the sink's encoding cannot hold.
pub const REJECTED_PREFIX: &str = "dead_letter";

impl Group {
    /// The group of records the encoding rejected.
    pub fn rejected() -> Self {
        Group {
            prefix: REJECTED_PREFIX.into(),
            kind: Kind::Plain,
            encoding: Encoding::Jsonl,
        }
    }
}

/// Everything needed to rebuild an object from the log, as recorded in the
/// manifest when it was sealed (so a config change in between does not
/// change what a retry uploads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    /// The object's group.
    pub group: Group,
    /// The sink's key template, as written.
    pub key: String,
    /// The sink used emnify's layout.
    pub emnify: bool,
    /// The sink's encoding (which records it rejects).
    pub encoding: Encoding,
    /// Compression.
    pub compression: Compression,
    /// Compression level.
    pub level: Option<i32>,
}

/// Computes records' groups for one layout.
#[derive(Debug)]
pub struct Grouper {
    key: KeyTemplate,
    emnify: bool,
    encoding: Encoding,
    /// The last (route, source, second) rendered and its folder: most
    /// records in a row share them.
    last: Option<(String, String, i64, String)>,
}

impl Grouper {
    /// A grouper for a layout.
    pub fn new(key: KeyTemplate, emnify: bool, encoding: Encoding) -> Self {
        Self {
            key,
            emnify,
            encoding,
            last: None,
        }
    }

    /// The grouper a recipe was made with.
    ///
    /// # Errors
    ///
    /// [`SinkError::Fatal`] when the recorded template no longer parses.
    pub fn of(recipe: &Recipe) -> Result<Self, SinkError> {
        let key = KeyTemplate::parse(&recipe.key)
            .map_err(|e| SinkError::Fatal(format!("a recorded object's key template: {e}")))?;
        Ok(Self::new(key, recipe.emnify, recipe.encoding))
    }

    /// The recipe of an object of `group` made with this layout.
    pub fn recipe(&self, group: Group, compression: Compression, level: Option<i32>) -> Recipe {
        Recipe {
            group,
            key: self.key.text().to_string(),
            emnify: self.emnify,
            encoding: self.encoding,
            compression,
            level,
        }
    }

    /// The record's group, if the encoding accepts it.
    pub fn group(&mut self, f: &Frame<'_>) -> Group {
        let prefix = if self.key.reads_fields() {
            let record = serde_json::from_slice::<serde_json::Value>(f.data).ok();
            self.render(f, record.as_ref())
        } else {
            let secs = f.received_ms.div_euclid(1000);
            match &self.last {
                Some((r, s, t, p)) if r == f.route && s == f.source && *t == secs => p.clone(),
                _ => {
                    let p = self.render(f, None);
                    self.last = Some((f.route.into(), f.source.into(), secs, p.clone()));
                    p
                }
            }
        };
        let (prefix, kind) = if !self.emnify {
            (prefix, Kind::Plain)
        } else if f.route == crate::pipeline::DEAD_LETTER_ROUTE {
            // Dead letters never take a data file's name.
            (join(REJECTED_PREFIX, &prefix), Kind::Plain)
        } else if f.route == "emnify.usage" {
            (prefix, Kind::Cdr)
        } else {
            (prefix, Kind::Events)
        };
        Group {
            prefix,
            kind,
            encoding: self.encoding,
        }
    }

    fn render(&self, f: &Frame<'_>, record: Option<&serde_json::Value>) -> String {
        self.key.render(&KeyContext {
            route: f.route,
            source: f.source,
            time: chrono::DateTime::from_timestamp_millis(f.received_ms).unwrap_or_default(),
            record,
        })
    }
}

fn join(a: &str, b: &str) -> String {
    if b.is_empty() {
        a.to_string()
    } else {
        format!("{a}/{b}")
    }
}

/// The JSON line a rejected record becomes.
pub fn rejected_line(sink: &str, route: &str, error: &EncodeError, data: &[u8]) -> Vec<u8> {
    serde_json::json!({
        "sink": sink,
        "route": route,
        "error": error.to_string(),
        "original": String::from_utf8_lossy(data),
    })
    .to_string()
    .into_bytes()
}

/// Why a record was not added.
#[derive(Debug)]
pub enum AppendError {
    /// CSV: the record has columns the header lacks; it belongs in a new
    /// object of the same group.
    NewColumns,
    /// The encoding cannot hold it at all.
    Rejected(EncodeError),
    /// Writing the temp file failed.
    Io(std::io::Error),
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

/// How many encoded bytes [`Builder`] gathers before it hands them to the
/// compressor. flate2 zero-fills the free part of its 32 KiB output buffer on
/// every write, so one write per record (an ECS document is ~2 KB) cleared
/// about fifteen times the bytes it compressed: `memset` was 2% of the push
/// load's profile. Fewer, larger writes also call the compressor less often.
const BLOCK: usize = 64 * 1024;

/// An object's file being written.
pub struct Builder {
    temp: PathBuf,
    writer: Box<dyn FinishWrite>,
    encoder: Encoder,
    /// Encoded records not yet written (less than [`BLOCK`] bytes, plus the
    /// last record). An I/O error writing them fails the object, as any
    /// write error does: the records stay in the spool and are read again.
    pending: Vec<u8>,
    raw_bytes: u64,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("temp", &self.temp)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// Creates the temp file. The same records through the same settings
    /// always give the same bytes: gzip's header carries no time or name.
    ///
    /// # Errors
    ///
    /// I/O errors creating the file.
    pub fn create(
        temp: PathBuf,
        encoding: Encoding,
        compression: Compression,
        level: Option<i32>,
    ) -> std::io::Result<Self> {
        let file = std::fs::File::create(&temp)?;
        let buf = std::io::BufWriter::with_capacity(1 << 16, file);
        let writer: Box<dyn FinishWrite> = match compression {
            Compression::None => Box::new(buf),
            Compression::Gzip => Box::new(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .write(buf, flate2::Compression::new(level.unwrap_or(6) as u32)),
            ),
            Compression::Zstd => {
                Box::new(zstd::stream::write::Encoder::new(buf, level.unwrap_or(3))?)
            }
        };
        Ok(Self {
            temp,
            writer,
            encoder: Encoder::new(encoding),
            pending: Vec::with_capacity(BLOCK),
            raw_bytes: 0,
        })
    }

    /// Encodes and writes one record (in blocks of [`BLOCK`] bytes).
    ///
    /// # Errors
    ///
    /// [`AppendError`]; nothing of this record is written then.
    pub fn append(&mut self, data: &[u8]) -> Result<(), AppendError> {
        let mark = self.pending.len();
        if let Err(e) = self.encode(data) {
            self.pending.truncate(mark);
            return Err(e);
        }
        self.raw_bytes += (self.pending.len() - mark) as u64;
        if self.pending.len() >= BLOCK {
            self.writer
                .write_all(&self.pending)
                .map_err(AppendError::Io)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Encodes `data` after the pending bytes.
    fn encode(&mut self, data: &[u8]) -> Result<(), AppendError> {
        match self.encoder.encode(data, &mut self.pending) {
            Ok(()) => Ok(()),
            // Pretty-printed JSON from a transform: compact it (newlines
            // outside strings are only whitespace).
            Err(EncodeError::Newline) => {
                let v: serde_json::Value = serde_json::from_slice(data)
                    .map_err(|_| AppendError::Rejected(EncodeError::Newline))?;
                self.encoder
                    .encode(v.to_string().as_bytes(), &mut self.pending)
                    .map_err(AppendError::Rejected)
            }
            Err(EncodeError::NewColumns(_)) => Err(AppendError::NewColumns),
            Err(e) => Err(AppendError::Rejected(e)),
        }
    }

    /// Encoded bytes so far, before compression.
    pub fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    /// The temp file.
    pub fn temp(&self) -> &Path {
        &self.temp
    }

    /// Writes the trailers, fsyncs, and returns the file and its size.
    ///
    /// # Errors
    ///
    /// I/O errors; the temp file is removed then.
    pub fn finish(self) -> std::io::Result<(PathBuf, u64)> {
        let Builder {
            temp,
            mut writer,
            pending,
            ..
        } = self;
        let done = writer
            .write_all(&pending)
            .and_then(|()| writer.finish())
            .and_then(|()| Ok(std::fs::metadata(&temp)?.len()));
        match done {
            Ok(size) => Ok((temp, size)),
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    /// Drops the object and its temp file.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// Whether the sink's encoding rejects a record on its own (a fresh
/// encoder; only a new column depends on earlier records).
pub fn rejection(encoding: Encoding, data: &[u8]) -> Option<EncodeError> {
    let mut scratch = Vec::new();
    match Encoder::new(encoding).encode(data, &mut scratch) {
        Ok(()) | Err(EncodeError::NewColumns(_)) => None,
        Err(EncodeError::Newline) => match serde_json::from_slice::<serde_json::Value>(data) {
            Ok(_) => None,
            Err(_) => Some(EncodeError::Newline),
        },
        Err(e) => Some(e),
    }
}

/// How a record belongs to an object.
#[derive(Debug)]
pub enum Member {
    /// As it is.
    Raw,
    /// Wrapped with why the encoding rejected it (a `dead_letter` object).
    Wrapped(EncodeError),
}

/// Whether the record belongs to an object of `recipe` (`grouper` must be
/// [`Grouper::of`] the recipe): its group is the object's, and the
/// encoding takes it; or the object holds rejected records and the
/// encoding rejects it. The same rule fills objects as they are built, so
/// a rebuild gathers exactly the records the object had.
pub fn membership(grouper: &mut Grouper, recipe: &Recipe, f: &Frame<'_>) -> Option<Member> {
    let nominal = grouper.group(f);
    let target = &recipe.group;
    let rejected_group = *target == Group::rejected();
    if nominal != *target && !rejected_group {
        return None;
    }
    match rejection(recipe.encoding, f.data) {
        Some(e) if rejected_group => Some(Member::Wrapped(e)),
        Some(_) => None,
        None if nominal == *target => Some(Member::Raw),
        None => None,
    }
}

/// What a rebuild produced.
#[derive(Debug)]
pub struct Rebuilt {
    /// The temp file.
    pub temp: PathBuf,
    /// Its size.
    pub size: u64,
    /// Records written.
    pub records: u64,
    /// Damage met in the log range (those records could not be included).
    pub damage: Vec<Damage>,
}

/// Rebuilds the object of `recipe` holding the records of its group from
/// `lo` through seq `hi`, into `temp`.
///
/// # Errors
///
/// [`SinkError`] on I/O, or when a record no longer fits the object (which
/// would mean the object cannot be rebuilt as it was).
pub fn rebuild(
    log: &Arc<SinkLog>,
    sink: &str,
    recipe: &Recipe,
    lo: Pos,
    hi: u64,
    temp: PathBuf,
) -> Result<Rebuilt, SinkError> {
    let io = |path: &Path, e: std::io::Error| SinkError::io(path, &e);
    let mut grouper = Grouper::of(recipe)?;
    let mut builder = Builder::create(
        temp.clone(),
        recipe.group.encoding,
        recipe.compression,
        recipe.level,
    )
    .map_err(|e| io(&temp, e))?;
    let mut reader = Reader::new(log.clone(), lo);
    let mut records = 0;
    loop {
        let item = match reader.next_frame() {
            Ok(Some(item)) if item.frame.seq <= hi => item,
            Ok(_) => break,
            Err(e) => {
                builder.discard();
                return Err(io(&temp, e));
            }
        };
        let f = item.frame;
        let result = match membership(&mut grouper, recipe, &f) {
            None => continue,
            Some(Member::Raw) => builder.append(f.data),
            Some(Member::Wrapped(e)) => builder.append(&rejected_line(sink, f.route, &e, f.data)),
        };
        match result {
            Ok(()) => records += 1,
            Err(AppendError::Io(e)) => {
                builder.discard();
                return Err(io(&temp, e));
            }
            Err(_) => {
                builder.discard();
                return Err(SinkError::Fatal(format!(
                    "rebuilding an object of sink `{sink}`: record {} no longer fits it",
                    f.seq
                )));
            }
        }
    }
    let damage = reader.take_damage();
    let (temp, size) = builder.finish().map_err(|e| io(&temp, e))?;
    Ok(Rebuilt {
        temp,
        size,
        records,
        damage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same records written one `write` each, as before [`BLOCK`]: the
    /// bytes an older build made for an object.
    fn record_by_record(records: &[Vec<u8>], compression: Compression) -> Vec<u8> {
        match compression {
            Compression::None => records.concat(),
            Compression::Gzip => {
                let mut gz = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(Vec::new(), flate2::Compression::new(6));
                for r in records {
                    gz.write_all(r).unwrap();
                }
                gz.finish().unwrap()
            }
            Compression::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
                for r in records {
                    z.write_all(r).unwrap();
                }
                z.finish().unwrap()
            }
        }
    }

    /// Records across several blocks, with rejected ones among them: the
    /// object holds exactly the accepted records, in order, and its bytes
    /// are those of writing each record alone, so an object an older build
    /// uploaded is rebuilt byte for byte.
    #[test]
    fn blocks_hold_exactly_the_accepted_records_with_unchanged_bytes() {
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let dir = tempfile::tempdir().unwrap();
            let temp = dir.path().join("object");
            let mut b = Builder::create(temp.clone(), Encoding::Jsonl, compression, None).unwrap();
            let mut accepted = Vec::new();
            for i in 0..300usize {
                let record = match i % 40 {
                    // A raw newline in text that is not JSON: rejected.
                    7 => format!("not json {i}\nat all").into_bytes(),
                    // Pretty-printed JSON: compacted.
                    8 => format!("{{\n  \"i\": {i}\n}}").into_bytes(),
                    _ => format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(i * 7)).into_bytes(),
                };
                match b.append(&record) {
                    Ok(()) => {
                        let line = if i % 40 == 8 {
                            format!("{{\"i\":{i}}}").into_bytes()
                        } else {
                            record
                        };
                        accepted.push([line, b"\n".to_vec()].concat());
                    }
                    Err(AppendError::Rejected(_)) => assert_eq!(i % 40, 7, "record {i}"),
                    Err(e) => panic!("record {i}: {e:?}"),
                }
            }
            let raw: usize = accepted.iter().map(Vec::len).sum();
            assert!(raw > 4 * BLOCK, "the records span several blocks");
            assert_eq!(b.raw_bytes(), raw as u64);
            let (path, size) = b.finish().unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes.len() as u64, size);
            assert!(
                bytes == record_by_record(&accepted, compression),
                "{compression:?}: the object's bytes changed"
            );
        }
    }
}
