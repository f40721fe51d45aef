//! One sink's payload log: append-only segment files of [`frame`]s.
//!
//! Layout: `state_dir/log/<sink>/<first seq, 20 digits>.seg`. Sequence
//! numbers start at 1 and have no gaps; a segment is named by the seq of
//! its first frame, so a reader that meets damage can always resume at the
//! next segment. The last segment is the active one; the writer rolls to a
//! new one once it is `segment_bytes` long.
//!
//! Who touches what:
//! - the spool's writer thread is the only writer ([`SinkLog::append`]);
//!   frames become readable when it [`publish`](SinkLog::publish)es the new
//!   end, after they are written and (with `sync = "full"`) fsynced;
//! - a sink reads with a [`Reader`] up to the published end, never past it,
//!   so it cannot see a group commit that may still be undone;
//! - the sink moves the cursor ([`SinkLog::set_cursor`]) once the records
//!   before it are delivered, and [`SinkLog::release`] deletes the segments
//!   wholly behind it. The active segment is never deleted.

use super::frame::{self, Decoded, Frame};
use crate::util::lock;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// A position between two frames of one log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// The seq of the frame at this position (one past the last before it).
    pub seq: u64,
    /// The segment (named by its first seq).
    pub segment: u64,
    /// Byte offset within the segment.
    pub offset: u64,
}

impl Pos {
    /// The start of an empty log.
    pub const START: Pos = Pos {
        seq: 1,
        segment: 1,
        offset: 0,
    };
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    first_seq: u64,
    /// Bytes of all earlier segments since the log was opened: positions
    /// map to one growing byte count (for depth in bytes).
    base: u64,
    /// Readable length: final for a sealed segment, the published end for
    /// the active one.
    len: u64,
}

#[derive(Debug)]
struct Shared {
    segments: Vec<Segment>,
    end: Pos,
    cursor: Pos,
    /// Set when an append failed and could not be undone; appends are
    /// refused until restart (recovery then truncates the tail).
    poisoned: Option<String>,
}

/// The writer thread's side: the active segment and the frames being
/// staged for the current group commit.
#[derive(Debug)]
struct WriteSide {
    file: Option<(u64, File)>,
    /// Physical length of the active segment (== published end offset
    /// between group commits).
    len: u64,
    next_seq: u64,
    staged: Vec<u8>,
    staged_records: u64,
}

/// One sink's log.
#[derive(Debug)]
pub struct SinkLog {
    /// The sink's name.
    pub name: Arc<str>,
    dir: PathBuf,
    quarantine: PathBuf,
    segment_bytes: u64,
    shared: Mutex<Shared>,
    write: Mutex<WriteSide>,
    /// Received time (Unix ms) of the oldest record not yet delivered, as
    /// the sink last reported it; `i64::MAX` when it holds none.
    oldest_ms: AtomicI64,
}

/// Damage found while reading: reported to the operator by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Where the bad bytes start.
    pub at: Pos,
    /// How many bytes were skipped.
    pub bytes: u64,
    /// How many records they held (the gap in sequence numbers; at least 1).
    pub frames: u64,
    /// The file the bytes were copied to, if they could be.
    pub quarantined: Option<PathBuf>,
}

/// The folder name for a sink: config names may hold any character, so
/// everything outside `[A-Za-z0-9_-]` is hex-escaped (`.` → `%2e`).
pub fn dir_name(sink: &str) -> String {
    let mut out = String::with_capacity(sink.len());
    for b in sink.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// The inverse of [`dir_name`].
pub fn sink_name(dir: &str) -> Option<String> {
    let mut out = Vec::with_capacity(dir.len());
    let bytes = dir.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What [`SinkLog::open`] found and did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Bytes cut from the end: a torn write (kill -9 or power loss during
    /// an append) or frames whose group commit never committed.
    pub truncated_bytes: u64,
    /// Damage found between the last known end and the physical end.
    pub damage: Vec<Damage>,
    /// The committed end recorded in the metadata lay past what the files
    /// hold (acknowledged data missing: disk or file system trouble).
    pub missing: Option<(u64, u64)>,
}

impl SinkLog {
    /// Opens (or creates) the log in `dir`: deletes segments wholly behind
    /// `cursor`, then scans from the later of `meta_end` and `cursor` to the
    /// physical end. A torn frame at the very end is cut silently; a frame
    /// marked `NEEDS_META` at or past `meta_end` belongs to a group commit
    /// whose metadata never committed, so it and everything after it are
    /// cut (none of it was acknowledged: the writer answers only after that
    /// commit, and writes nothing else meanwhile).
    ///
    /// # Errors
    ///
    /// I/O errors on the folder or its files.
    pub fn open(
        name: Arc<str>,
        dir: PathBuf,
        quarantine: PathBuf,
        segment_bytes: u64,
        meta_end: Option<Pos>,
        cursor: Pos,
    ) -> io::Result<(Arc<Self>, Recovery)> {
        std::fs::create_dir_all(&dir)?;
        let mut listed = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let file = entry.file_name();
            let Some(first) = file
                .to_str()
                .and_then(|f| f.strip_suffix(".seg"))
                .and_then(|f| f.parse::<u64>().ok())
            else {
                continue;
            };
            listed.push((first, entry.metadata()?.len()));
        }
        listed.sort_unstable();
        // Segments wholly behind the cursor were delivered; a crash can
        // leave them between the cursor's commit and their deletion.
        while listed.len() > 1 && listed[1].0 <= cursor.seq && listed[0].0 < cursor.segment {
            let (first, _) = listed.remove(0);
            std::fs::remove_file(segment_path(&dir, first))?;
        }
        let mut segments = Vec::with_capacity(listed.len());
        let mut base = 0;
        for (first_seq, len) in listed {
            segments.push(Segment {
                first_seq,
                base,
                len,
            });
            base += len;
        }
        let start = match meta_end {
            Some(end) if end.seq >= cursor.seq => end,
            _ => cursor,
        };
        let log = Arc::new(Self {
            name,
            dir,
            quarantine,
            segment_bytes,
            shared: Mutex::new(Shared {
                segments,
                // Provisional: the scan below reads physically to the end.
                end: start,
                cursor,
                poisoned: None,
            }),
            write: Mutex::new(WriteSide {
                file: None,
                len: 0,
                next_seq: start.seq,
                staged: Vec::new(),
                staged_records: 0,
            }),
            oldest_ms: AtomicI64::new(i64::MAX),
        });
        let recovery = log.recover(start, meta_end.map_or(0, |e| e.seq))?;
        Ok((log, recovery))
    }

    fn recover(self: &Arc<Self>, start: Pos, meta_seq: u64) -> io::Result<Recovery> {
        let mut recovery = Recovery::default();
        let mut shared = lock(&self.shared);
        let Some(first) = shared.segments.first().copied() else {
            // No segment: a fresh log, or every file gone. Records the
            // metadata says were committed but not delivered are missing.
            let seq = start.seq.max(meta_seq);
            if meta_seq > shared.cursor.seq {
                recovery.missing = Some((shared.cursor.seq, meta_seq));
            }
            let at = Pos {
                seq,
                segment: seq,
                offset: 0,
            };
            shared.end = at;
            shared.cursor = at;
            drop(shared);
            lock(&self.write).next_seq = seq;
            return Ok(recovery);
        };
        // Scan from `start` if its segment is here; else from the segment
        // that holds it (or the first one, if it lies before them all).
        let from = if shared.segments.iter().any(|s| s.first_seq == start.segment) {
            start
        } else {
            let holder = shared
                .segments
                .iter()
                .rev()
                .find(|s| s.first_seq <= start.seq)
                .copied()
                .unwrap_or(first);
            Pos {
                seq: holder.first_seq,
                segment: holder.first_seq,
                offset: 0,
            }
        };
        let cursor = shared.cursor;
        if !shared
            .segments
            .iter()
            .any(|s| s.first_seq == cursor.segment)
        {
            // Only damage from outside removes the cursor's segment: read
            // again from the start of the segment that holds it.
            if cursor.seq < first.first_seq {
                recovery.missing = Some((cursor.seq, first.first_seq));
            }
            let holder = shared
                .segments
                .iter()
                .rev()
                .find(|s| s.first_seq <= cursor.seq)
                .copied()
                .unwrap_or(first);
            shared.cursor = Pos {
                seq: holder.first_seq,
                segment: holder.first_seq,
                offset: 0,
            };
        }
        drop(shared);
        let mut reader = Reader {
            log: self.clone(),
            pos: from,
            file: None,
            buf: Vec::new(),
            buf_off: 0,
            mode: Mode::Recover {
                meta_seq,
                stop: None,
            },
            damage: Vec::new(),
        };
        while reader.next_frame()?.is_some() {}
        let end = reader.pos;
        recovery.damage = std::mem::take(&mut reader.damage);
        drop(reader);
        if meta_seq > end.seq {
            recovery.missing = Some((end.seq, meta_seq));
        }
        // Cut everything past `end`: the rest of its segment and any later
        // segment.
        let mut shared = lock(&self.shared);
        let mut kept = Vec::with_capacity(shared.segments.len());
        let mut cut = false;
        for s in shared.segments.iter().copied() {
            let path = segment_path(&self.dir, s.first_seq);
            if s.first_seq < end.segment {
                kept.push(s);
            } else if s.first_seq == end.segment {
                if s.len > end.offset {
                    recovery.truncated_bytes += s.len - end.offset;
                    let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                    f.set_len(end.offset)?;
                    f.sync_all()?;
                }
                kept.push(Segment {
                    len: end.offset,
                    ..s
                });
            } else {
                recovery.truncated_bytes += s.len;
                std::fs::remove_file(&path)?;
                cut = true;
            }
        }
        if cut {
            sync_dir(&self.dir)?;
        }
        shared.segments = kept;
        shared.end = end;
        if shared.cursor.seq > end.seq {
            shared.cursor = end;
        }
        drop(shared);
        let mut w = lock(&self.write);
        w.next_seq = end.seq;
        w.len = end.offset;
        Ok(recovery)
    }

    /// The published end (the next seq to be written, and where).
    pub fn end(&self) -> Pos {
        lock(&self.shared).end
    }

    /// The delivery cursor: the first record not yet delivered.
    pub fn cursor(&self) -> Pos {
        lock(&self.shared).cursor
    }

    /// Records and bytes between the cursor and the end.
    pub fn depth(&self) -> (u64, u64) {
        let s = lock(&self.shared);
        let v = |p: &Pos| {
            s.segments
                .iter()
                .find(|seg| seg.first_seq == p.segment)
                .map_or(0, |seg| seg.base + p.offset)
        };
        let bytes = if s.segments.is_empty() {
            0
        } else {
            v(&s.end).saturating_sub(v(&s.cursor))
        };
        (s.end.seq.saturating_sub(s.cursor.seq), bytes)
    }

    /// Records how old the oldest undelivered record is (the sink's view).
    pub fn set_oldest_ms(&self, ms: Option<i64>) {
        self.oldest_ms
            .store(ms.unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// The oldest undelivered record's receive time, if any is held.
    pub fn oldest_ms(&self) -> Option<i64> {
        let (records, _) = self.depth();
        match self.oldest_ms.load(Ordering::Relaxed) {
            i64::MAX => None,
            _ if records == 0 => None,
            ms => Some(ms),
        }
    }

    /// Moves the delivery cursor forward (never back).
    pub fn set_cursor(&self, cursor: Pos) {
        let mut s = lock(&self.shared);
        if cursor.seq > s.cursor.seq && cursor.seq <= s.end.seq {
            s.cursor = cursor;
        }
    }

    /// Deletes the segments wholly behind the cursor. Call only once the
    /// cursor is durable (else a crash could need what was deleted).
    ///
    /// # Errors
    ///
    /// The first failed delete; the segment stays and is retried later.
    pub fn release(&self) -> io::Result<u64> {
        let doomed: Vec<u64> = {
            let s = lock(&self.shared);
            s.segments
                .windows(2)
                .take_while(|w| w[1].first_seq <= s.cursor.seq && w[0].first_seq < s.cursor.segment)
                .map(|w| w[0].first_seq)
                .collect()
        };
        let mut freed = 0;
        for first in doomed {
            let path = segment_path(&self.dir, first);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let mut s = lock(&self.shared);
            if let Some(i) = s.segments.iter().position(|seg| seg.first_seq == first) {
                freed += s.segments[i].len;
                s.segments.remove(i);
            }
        }
        Ok(freed)
    }

    /// Bytes on disk and segment count (for `sluice spool list`).
    pub fn files(&self) -> (u64, usize) {
        let s = lock(&self.shared);
        (s.segments.iter().map(|x| x.len).sum(), s.segments.len())
    }

    /// Writer thread: stages one record for the next group commit and
    /// returns its seq.
    pub fn stage(
        &self,
        received_ms: i64,
        flags: u8,
        route: &str,
        source: &str,
        data: &[u8],
    ) -> u64 {
        let mut w = lock(&self.write);
        let seq = w.next_seq + w.staged_records;
        frame::encode(&mut w.staged, seq, received_ms, flags, route, source, data);
        w.staged_records += 1;
        seq
    }

    /// Writer thread: writes the staged frames at the end of the active
    /// segment (rolling to a new segment first when it is full), and
    /// fsyncs them when `sync`. Nothing is readable until [`publish`].
    /// On error the caller must [`undo`](Self::undo).
    ///
    /// [`publish`]: Self::publish
    ///
    /// # Errors
    ///
    /// The I/O error (`ENOSPC` on a full disk, …).
    pub fn write_staged(&self, sync: bool) -> io::Result<()> {
        if let Some(why) = &lock(&self.shared).poisoned {
            return Err(io::Error::other(why.clone()));
        }
        let mut w = lock(&self.write);
        if w.staged.is_empty() {
            return Ok(());
        }
        let roll = match &w.file {
            None => true,
            Some(_) => w.len >= self.segment_bytes,
        };
        if roll {
            self.roll(&mut w)?;
        }
        let WriteSide {
            file, len, staged, ..
        } = &mut *w;
        let Some((_, f)) = file else {
            return Err(io::Error::other("no active segment"));
        };
        f.write_all_at(staged, *len)?;
        if sync {
            f.sync_data()?;
        }
        Ok(())
    }

    /// Opens the segment to append to: the last one, if it exists and has
    /// room, else a new one named by the next seq (and the folder fsynced,
    /// so the new name survives a power cut).
    fn roll(&self, w: &mut WriteSide) -> io::Result<()> {
        let (last, end) = {
            let s = lock(&self.shared);
            (s.segments.last().copied(), s.end)
        };
        if let Some(last) = last
            && w.file.is_none()
            && last.len < self.segment_bytes
            && last.first_seq == end.segment
        {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(segment_path(&self.dir, last.first_seq))?;
            w.file = Some((last.first_seq, f));
            w.len = end.offset;
            return Ok(());
        }
        let first = w.next_seq;
        let path = segment_path(&self.dir, first);
        // A file of this name can only hold frames that were never
        // committed (recovery cut them); start it afresh.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        sync_dir(&self.dir)?;
        let mut s = lock(&self.shared);
        let end = s.end;
        if let Some(last) = s.segments.last_mut()
            && last.first_seq == end.segment
        {
            // The previous segment is sealed at its published length.
            last.len = end.offset;
        }
        let base = s.segments.last().map_or(0, |l| l.base + l.len);
        if s.segments.last().is_none_or(|l| l.first_seq != first) {
            s.segments.push(Segment {
                first_seq: first,
                base,
                len: 0,
            });
        }
        drop(s);
        w.file = Some((first, f));
        w.len = 0;
        Ok(())
    }

    /// Writer thread, after [`write_staged`](Self::write_staged): the end
    /// the log will have once the staged frames are published.
    pub fn staged_end(&self) -> Pos {
        let w = lock(&self.write);
        match &w.file {
            Some((segment, _)) => Pos {
                seq: w.next_seq + w.staged_records,
                segment: *segment,
                offset: w.len + w.staged.len() as u64,
            },
            None => self.end(),
        }
    }

    /// Writer thread: makes the written frames readable and returns the
    /// new end and how many records and bytes were added.
    pub fn publish(&self) -> (Pos, u64, u64) {
        let mut w = lock(&self.write);
        let records = w.staged_records;
        let bytes = w.staged.len() as u64;
        let mut s = lock(&self.shared);
        if records == 0 {
            return (s.end, 0, 0);
        }
        let Some((segment, _)) = &w.file else {
            return (s.end, 0, 0);
        };
        let segment = *segment;
        w.len += bytes;
        w.next_seq += records;
        w.staged.clear();
        w.staged_records = 0;
        let end = Pos {
            seq: w.next_seq,
            segment,
            offset: w.len,
        };
        if let Some(seg) = s.segments.iter_mut().find(|x| x.first_seq == segment) {
            seg.len = end.offset;
        }
        s.end = end;
        (end, records, bytes)
    }

    /// Writer thread: forgets the staged frames and cuts whatever of them
    /// reached the file. If even that fails, the log refuses appends until
    /// restart (recovery then cuts the tail).
    pub fn undo(&self, why: &io::Error) {
        let mut w = lock(&self.write);
        w.staged.clear();
        w.staged_records = 0;
        let len = w.len;
        let cut = match &w.file {
            Some((_, f)) => f.set_len(len),
            None => Ok(()),
        };
        // Start the next commit in a fresh file handle: after a failed
        // fsync the kernel may have dropped the dirty pages it could not
        // write, and a later fsync on this handle would not say so.
        w.file = None;
        if let Err(e) = cut {
            lock(&self.shared).poisoned = Some(format!(
                "appending to the log of sink `{}` failed ({why}) and could not be undone ({e}); restart sluice",
                self.name
            ));
        }
    }

    /// The quarantine folder for damaged bytes.
    fn quarantine_bytes(&self, at: Pos, bytes: &[u8]) -> Option<PathBuf> {
        std::fs::create_dir_all(&self.quarantine).ok()?;
        let path = self.quarantine.join(format!(
            "{}-{:020}-{}.bin",
            dir_name(&self.name),
            at.segment,
            at.offset
        ));
        std::fs::write(&path, bytes).ok()?;
        Some(path)
    }

    /// For a reader: how far segment `segment` may be read, and the next
    /// segment's first seq, if a later segment exists.
    fn limit(&self, segment: u64, physical: bool) -> (u64, Option<u64>) {
        let s = lock(&self.shared);
        let i = s.segments.iter().position(|x| x.first_seq == segment);
        let next = i.and_then(|i| s.segments.get(i + 1)).map(|x| x.first_seq);
        let len = match i {
            None => 0,
            Some(_) if physical => {
                std::fs::metadata(segment_path(&self.dir, segment)).map_or(0, |m| m.len())
            }
            Some(_) if segment == s.end.segment => s.end.offset,
            Some(i) => s.segments[i].len,
        };
        (len, next)
    }
}

#[derive(Debug)]
enum Mode {
    /// Read committed frames only (sinks).
    Committed,
    /// Start-up scan of the uncommitted tail (see [`SinkLog::open`]).
    Recover { meta_seq: u64, stop: Option<Pos> },
}

/// Reads one log forward from a position.
#[derive(Debug)]
pub struct Reader {
    log: Arc<SinkLog>,
    pos: Pos,
    file: Option<(u64, File)>,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_off: u64,
    mode: Mode,
    damage: Vec<Damage>,
}

/// A frame read, with the position it starts at.
#[derive(Debug)]
pub struct Item<'a> {
    /// Where the frame starts.
    pub at: Pos,
    /// The frame.
    pub frame: Frame<'a>,
}

/// How much a reader asks the file for at once.
const READ_CHUNK: usize = 1 << 20;

impl Reader {
    /// A reader of committed frames from `from`.
    pub fn new(log: Arc<SinkLog>, from: Pos) -> Self {
        Self {
            log,
            pos: from,
            file: None,
            buf: Vec::new(),
            buf_off: 0,
            mode: Mode::Committed,
            damage: Vec::new(),
        }
    }

    /// The position of the next frame.
    pub fn pos(&self) -> Pos {
        self.pos
    }

    /// Damage met since the last call (to report and count).
    pub fn take_damage(&mut self) -> Vec<Damage> {
        std::mem::take(&mut self.damage)
    }

    /// The next frame, or `None` at the end.
    ///
    /// # Errors
    ///
    /// I/O errors reading a segment.
    pub fn next_frame(&mut self) -> io::Result<Option<Item<'_>>> {
        let physical = matches!(self.mode, Mode::Recover { .. });
        let (at, n) = loop {
            if let Mode::Recover { stop: Some(_), .. } = self.mode {
                return Ok(None);
            }
            let (limit, next_segment) = self.log.limit(self.pos.segment, physical);
            if self.pos.offset >= limit {
                let end = self.log.end();
                let sealed = physical || self.pos.segment != end.segment;
                match next_segment {
                    Some(next) if sealed => {
                        if next != self.pos.seq {
                            // Frames are missing between segments.
                            self.note_gap(self.pos, 0, next.saturating_sub(self.pos.seq), None);
                        }
                        self.pos = Pos {
                            seq: next,
                            segment: next,
                            offset: 0,
                        };
                        self.file = None;
                        self.buf.clear();
                        continue;
                    }
                    _ => return Ok(None),
                }
            }
            let avail = limit - self.pos.offset;
            let have = self.fill(frame::HEADER, limit)?;
            let start = (self.pos.offset - self.buf_off) as usize;
            let want = match frame::decode(&self.buf[start..start + have]) {
                Decoded::Frame(_, n) | Decoded::Short(n) if n as u64 <= avail => n,
                // Not a frame here, or one claiming more bytes than the
                // segment holds: damage, or (at start-up, at the end of the
                // last segment) a torn write.
                _ => {
                    self.resync(limit, next_segment)?;
                    continue;
                }
            };
            self.fill(want, limit)?;
            let start = (self.pos.offset - self.buf_off) as usize;
            let (seq, flags, n) = match frame::decode(&self.buf[start..start + want]) {
                Decoded::Frame(f, n) => (f.seq, f.flags, n),
                Decoded::Short(_) | Decoded::Bad => {
                    self.resync(limit, next_segment)?;
                    continue;
                }
            };
            if seq != self.pos.seq {
                self.resync(limit, next_segment)?;
                continue;
            }
            if let Mode::Recover { meta_seq, stop } = &mut self.mode
                && flags & frame::NEEDS_META != 0
                && seq >= *meta_seq
            {
                *stop = Some(self.pos);
                return Ok(None);
            }
            let at = self.pos;
            self.pos = Pos {
                seq: seq + 1,
                segment: at.segment,
                offset: at.offset + n as u64,
            };
            break (at, n);
        };
        let start = (at.offset - self.buf_off) as usize;
        let frame = frame::decode_checked(&self.buf[start..start + n])
            .ok_or_else(|| io::Error::other("a checked frame did not parse"))?;
        Ok(Some(Item { at, frame }))
    }

    /// Makes up to `want` bytes from `pos.offset` available in `buf`, never
    /// reading past `limit` (bytes past the published end may still be
    /// undone by the writer); returns how many there are.
    fn fill(&mut self, want: usize, limit: u64) -> io::Result<usize> {
        let off = self.pos.offset;
        if self
            .file
            .as_ref()
            .is_none_or(|(s, _)| *s != self.pos.segment)
        {
            let path = segment_path(&self.log.dir, self.pos.segment);
            self.file = Some((self.pos.segment, File::open(path)?));
            self.buf.clear();
            self.buf_off = off;
        }
        let buffered_end = self.buf_off + self.buf.len() as u64;
        let want = (want as u64).min(limit.saturating_sub(off));
        if off >= self.buf_off && off + want <= buffered_end {
            return Ok((buffered_end - off) as usize);
        }
        // Keep the unread part, drop what is behind `off`.
        if off >= self.buf_off && off <= buffered_end {
            self.buf.drain(..(off - self.buf_off) as usize);
        } else {
            self.buf.clear();
        }
        self.buf_off = off;
        let target = (want.max(READ_CHUNK as u64)).min(limit.saturating_sub(off)) as usize;
        let Some((_, f)) = &self.file else {
            return Ok(0);
        };
        while self.buf.len() < target {
            let have = self.buf.len();
            self.buf.resize(target, 0);
            let n = f.read_at(&mut self.buf[have..], off + have as u64)?;
            self.buf.truncate(have + n);
            if n == 0 {
                break;
            }
        }
        Ok(self.buf.len())
    }

    /// Bad bytes at `pos`: find the next valid frame in this segment (or go
    /// to the next segment), setting the skipped bytes aside. At start-up,
    /// bad bytes with nothing valid after them in the last segment are a
    /// torn write: reading stops there (and the caller cuts them).
    fn resync(&mut self, limit: u64, next_segment: Option<u64>) -> io::Result<()> {
        let at = self.pos;
        let rest = {
            let Some((_, f)) = &self.file else {
                return Err(io::Error::other("resync without an open segment"));
            };
            let mut rest = vec![0; (limit - at.offset) as usize];
            f.read_exact_at(&mut rest, at.offset)?;
            rest
        };
        let finder = memchr::memmem::Finder::new(&frame::MAGIC);
        let mut found = None;
        for i in finder.find_iter(&rest[1.min(rest.len())..]).map(|i| i + 1) {
            if let Decoded::Frame(f, _) = frame::decode(&rest[i..])
                && f.seq >= at.seq
            {
                found = Some((i, f.seq));
                break;
            }
        }
        let torn =
            matches!(self.mode, Mode::Recover { .. }) && found.is_none() && next_segment.is_none();
        if torn {
            if let Mode::Recover { stop, .. } = &mut self.mode {
                *stop = Some(at);
            }
            return Ok(());
        }
        self.buf.clear();
        self.buf_off = at.offset;
        match found {
            Some((skip, seq)) => {
                let saved = self.log.quarantine_bytes(at, &rest[..skip]);
                self.note_gap(at, skip as u64, (seq - at.seq).max(1), saved);
                self.pos = Pos {
                    seq,
                    segment: at.segment,
                    offset: at.offset + skip as u64,
                };
            }
            None => {
                let saved = self.log.quarantine_bytes(at, &rest);
                let next_seq = next_segment.unwrap_or(self.log.end().seq.max(at.seq + 1));
                self.note_gap(
                    at,
                    rest.len() as u64,
                    next_seq.saturating_sub(at.seq).max(1),
                    saved,
                );
                self.pos = Pos {
                    seq: next_seq,
                    segment: at.segment,
                    offset: limit,
                };
            }
        }
        Ok(())
    }

    fn note_gap(&mut self, at: Pos, bytes: u64, frames: u64, quarantined: Option<PathBuf>) {
        if frames == 0 && bytes == 0 {
            return;
        }
        self.damage.push(Damage {
            at,
            bytes,
            frames,
            quarantined,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, meta_end: Option<Pos>, cursor: Pos) -> (Arc<SinkLog>, Recovery) {
        SinkLog::open(
            "out".into(),
            dir.join("log"),
            dir.join("quarantine"),
            4096,
            meta_end,
            cursor,
        )
        .unwrap()
    }

    fn append(log: &SinkLog, records: &[&str], flags: u8) -> Pos {
        for r in records {
            log.stage(5, flags, "route", "src", r.as_bytes());
        }
        log.write_staged(true).unwrap();
        log.publish().0
    }

    fn read_all(log: &Arc<SinkLog>, from: Pos) -> (Vec<(u64, String)>, Vec<Damage>) {
        let mut r = Reader::new(log.clone(), from);
        let mut out = Vec::new();
        while let Some(item) = r.next_frame().unwrap() {
            out.push((
                item.frame.seq,
                String::from_utf8(item.frame.data.to_vec()).unwrap(),
            ));
        }
        (out, r.take_damage())
    }

    #[test]
    fn append_read_roll_and_release() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), None, Pos::START);
        let big = "x".repeat(1000);
        let mut ends = Vec::new();
        for _ in 0..20 {
            ends.push(append(&log, &[&big, "small"], 0));
        }
        assert_eq!(log.end().seq, 41);
        let (all, damage) = read_all(&log, Pos::START);
        assert!(damage.is_empty());
        assert_eq!(all.len(), 40);
        assert_eq!(
            all.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            (1..=40).collect::<Vec<_>>()
        );
        let (files, segments) = log.files();
        assert!(segments > 3, "rolled at 4 KiB: {segments}");
        assert_eq!(log.depth(), (40, files));
        // Release what is behind a cursor in a later segment.
        log.set_cursor(ends[15]);
        log.release().unwrap();
        assert!(log.files().1 < segments);
        let (rest, _) = read_all(&log, ends[15]);
        assert_eq!(rest.first().map(|r| r.0), Some(33));
        // Reopen: the end is found by scanning, from the recorded end.
        drop(log);
        let (log, rec) = open(dir.path(), Some(ends[10]), ends[15]);
        assert_eq!(rec.truncated_bytes, 0);
        assert!(rec.damage.is_empty());
        assert_eq!(log.end().seq, 41);
        assert_eq!(log.depth().0, 41 - 33);
    }

    #[test]
    fn torn_tail_is_cut_silently_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), None, Pos::START);
        let end = append(&log, &["a", "b"], 0);
        drop(log);
        // Half a frame at the end, as a kill during a write leaves it.
        let seg = segment_path(&dir.path().join("log"), 1);
        let mut half = Vec::new();
        frame::encode(&mut half, 3, 5, 0, "route", "src", b"torn record");
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes.extend_from_slice(&half[..half.len() - 4]);
        std::fs::write(&seg, &bytes).unwrap();
        let (log, rec) = open(dir.path(), None, Pos::START);
        assert_eq!(rec.truncated_bytes, half.len() as u64 - 4);
        assert!(rec.damage.is_empty(), "a torn tail is not damage");
        assert_eq!(log.end(), end);
        append(&log, &["c"], 0);
        let (all, _) = read_all(&log, Pos::START);
        assert_eq!(
            all.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn uncommitted_meta_frames_are_cut_with_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), None, Pos::START);
        let committed = append(&log, &["a"], frame::NEEDS_META);
        append(&log, &["b", "c"], 0);
        let end_before_page = log.end();
        append(&log, &["page 1", "page 2"], frame::NEEDS_META);
        drop(log);
        // The metadata knows the first page (committed) but not the second.
        let (log, rec) = open(dir.path(), Some(committed), Pos::START);
        assert!(rec.truncated_bytes > 0);
        assert_eq!(log.end(), end_before_page);
        let (all, _) = read_all(&log, Pos::START);
        assert_eq!(
            all.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn a_damaged_frame_is_skipped_quarantined_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), None, Pos::START);
        append(&log, &["one", "two", "three"], 0);
        let seg = segment_path(&dir.path().join("log"), 1);
        let mut bytes = std::fs::read(&seg).unwrap();
        let second = frame::encoded_len("route", "src", b"one");
        bytes[second + frame::HEADER + 30] ^= 0x40;
        std::fs::write(&seg, &bytes).unwrap();
        let (all, damage) = read_all(&log, Pos::START);
        assert_eq!(all, [(1, "one".to_string()), (3, "three".to_string())]);
        assert_eq!(damage.len(), 1);
        assert_eq!(damage[0].frames, 1);
        let saved = std::fs::read(damage[0].quarantined.as_ref().unwrap()).unwrap();
        assert_eq!(saved.len(), frame::encoded_len("route", "src", b"two"));
        // At start-up, damage followed by valid frames is damage, not a
        // torn tail: nothing after it is cut.
        drop(log);
        let (log, rec) = open(dir.path(), None, Pos::START);
        assert_eq!(rec.truncated_bytes, 0);
        assert_eq!(rec.damage.len(), 1);
        assert_eq!(log.end().seq, 4);
    }

    #[test]
    fn failed_appends_are_undone() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), None, Pos::START);
        let end = append(&log, &["kept"], 0);
        log.stage(1, 0, "r", "s", b"lost");
        log.write_staged(false).unwrap();
        log.undo(&io::Error::other("simulated fsync failure"));
        assert_eq!(log.end(), end);
        append(&log, &["next"], 0);
        let (all, damage) = read_all(&log, Pos::START);
        assert!(damage.is_empty());
        assert_eq!(all, [(1, "kept".to_string()), (2, "next".to_string())]);
    }

    #[test]
    fn sink_dir_names_round_trip() {
        for name in ["out", "my.sink", "a/b", "ünï", "%"] {
            let d = dir_name(name);
            assert!(
                d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-%".contains(&b))
            );
            assert_eq!(sink_name(&d).as_deref(), Some(name));
        }
    }
}
