//! The delivery loop every object sink runs, on its own thread.
//!
//! It reads the sink's log in order and appends each record to the open
//! object of its group (see `object`), then seals objects on size, count
//! or age. Sealing = finish the temp file (fsync), pick a name and record
//! the object in the manifest (see `naming`), and only then upload.
//! Up to `max_in_flight` uploads run at once, each on its own thread.
//!
//! The cursor (the first record not yet delivered) is the lowest first
//! record of any open or unfinished object; it moves, with the finished
//! objects marked done, in one metadata transaction, and segments wholly
//! behind it are then deleted. So order and restart safety hold whatever
//! order uploads finish in.
//!
//! Crash ordering: an object is in the manifest before any byte of it is
//! uploaded. After a crash (or when a retry finds its temp file gone) it is
//! rebuilt from the log, byte for byte, and uploaded under the same key: an
//! upload that did land but whose answer was lost is overwritten, never
//! doubled. Records not yet in any recorded object are simply read again
//! into new objects. On restart, records already in a recorded object
//! (delivered or not) are recognised by the object's recipe and skipped.

use super::object::{self, AppendError, Builder, Group, Grouper, Recipe};
use super::{ObjectSettings, ObjectStore, SinkError, extension, naming};
use crate::metrics::Metrics;
use crate::spool::Spool;
use crate::spool::frame::Frame;
use crate::spool::log::{Pos, Reader, SinkLog};
use crate::spool::meta::{Meta, ObjectRow};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Most objects open at once; beyond it the oldest is sealed early.
const MAX_OPEN: usize = 256;
/// Most records read between two looks at uploads and the clock.
const PUMP_BATCH: usize = 20_000;
/// Backoff of a failed upload (doubling per attempt) and its cap.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The wait before retry number `attempt` (1 for the first): doubling
/// from [`RETRY_FIRST`] up to [`RETRY_MAX`].
fn retry_wait(attempt: u32) -> Duration {
    RETRY_FIRST
        .saturating_mul(1 << (attempt.clamp(1, 8) - 1))
        .min(RETRY_MAX)
}
/// How long a stopping sink waits for uploads under way.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);
/// How often the manifest forgets old delivered objects.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// An object being filled.
struct Open {
    builder: Builder,
    lo: Pos,
    hi: u64,
    records: u64,
    opened: Instant,
    oldest_ms: i64,
}

/// A sealed object not yet delivered.
struct Pending {
    row: ObjectRow,
    recipe: Recipe,
    /// Its file, if built in this process and still there.
    temp: Option<PathBuf>,
    attempts: u32,
    next_try: Instant,
    in_flight: bool,
}

/// An object recorded before the reader's start point: records it holds
/// are skipped when read again.
struct Covered {
    row: ObjectRow,
    recipe: Recipe,
    grouper: Grouper,
}

/// An upload's outcome, sent back by its thread.
struct Finished {
    id: i64,
    /// The temp file, when it is still there (for the next attempt).
    temp: Option<PathBuf>,
    result: Result<Uploaded, SinkError>,
}

struct Uploaded {
    size: u64,
    records: u64,
}

struct Delivery<S> {
    s: ObjectSettings,
    store: Arc<S>,
    log: Arc<SinkLog>,
    meta: Arc<Meta>,
    metrics: Metrics,
    grouper: Grouper,
    /// Taken out while `pump` reads, so a borrowed frame can be handed to
    /// `&mut self` methods.
    reader: Option<Reader>,
    open: HashMap<Group, Open>,
    pending: BTreeMap<i64, Pending>,
    covered: Vec<Covered>,
    covered_until: u64,
    done: Vec<i64>,
    cursor: Pos,
    in_flight: usize,
    temp_seq: u64,
    results: mpsc::UnboundedSender<Finished>,
    fatal: Option<String>,
    /// Log depth (records, bytes) above which the object holding the
    /// cursor back is sealed early, so one slow group cannot pin the log.
    pin_limit: (u64, u64),
}

/// Runs a sink until `shutdown` turns true, then seals and uploads every
/// open object (one attempt each) and returns. Blocking: run it on its own
/// thread; async work goes through `handle`.
pub fn run<S: ObjectStore>(
    settings: ObjectSettings,
    store: S,
    spool: Arc<Spool>,
    metrics: Metrics,
    handle: &tokio::runtime::Handle,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(log) = spool.log(&settings.name) else {
        metrics.sink_stopped(&settings.name, "the spool has no log for this sink");
        return;
    };
    let (max_records, max_bytes, _) = spool.budget(&settings.name);
    let mut commits = spool.subscribe();
    let (results, mut finished) = mpsc::unbounded_channel();
    let grouper = Grouper::new(
        settings.key.clone(),
        matches!(settings.object_name, naming::NameStyle::Emnify),
        settings.encoding,
    );
    let cursor = log.cursor();
    let mut d = Delivery {
        store: Arc::new(store),
        reader: Some(Reader::new(log.clone(), cursor)),
        log,
        meta: spool.meta().clone(),
        metrics,
        grouper,
        open: HashMap::new(),
        pending: BTreeMap::new(),
        covered: Vec::new(),
        covered_until: 0,
        done: Vec::new(),
        cursor,
        in_flight: 0,
        temp_seq: 0,
        results,
        fatal: None,
        pin_limit: (max_records / 2, max_bytes / 2),
        s: settings,
    };
    let tick =
        Duration::from_millis(200).min(Duration::from_secs_f64(d.s.rotate.max_age_secs / 2.0));
    // Local failures in a row (a temp file, the manifest).
    let mut failures = 0;
    let mut next_prune = Instant::now();
    let mut stop_deadline: Option<Instant> = None;
    let mut resume_at = match d.restart() {
        Ok(()) => Instant::now(),
        Err(e) => d.local_failure(&e, &mut failures),
    };
    loop {
        let stopping = *shutdown.borrow();
        while let Ok(f) = finished.try_recv() {
            d.finished(f);
        }
        if let Some(reason) = d.fatal.clone() {
            d.wait_in_flight(handle, &mut finished);
            d.record_progress();
            d.metrics.sink_stopped(&d.s.name, &reason);
            return;
        }
        if Instant::now() >= resume_at {
            let step = d
                .pump(stopping)
                .and_then(|more| d.rotate(stopping).map(|()| more));
            match step {
                Ok(more) => {
                    failures = 0;
                    if more && !stopping {
                        // Still reading a backlog: look at uploads, then go on.
                        d.dispatch(stopping);
                        d.record_progress();
                        continue;
                    }
                }
                Err(e) => resume_at = d.local_failure(&e, &mut failures),
            }
        }
        d.dispatch(stopping);
        d.record_progress();
        if next_prune <= Instant::now() {
            next_prune = Instant::now() + PRUNE_EVERY;
            let before = chrono::Utc::now().timestamp_millis() - naming::REMEMBER_DAYS * 86_400_000;
            let _ = d.meta.prune(before);
        }
        if stopping {
            // Every object is sealed now; wait for the uploads under way,
            // for a while. Those that fail or are still running stay
            // recorded and go out at the next start.
            let deadline = *stop_deadline.get_or_insert_with(|| Instant::now() + SHUTDOWN_WAIT);
            if d.in_flight == 0 {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            // The timer is made inside the runtime (it needs its clock).
            match handle.block_on(async { tokio::time::timeout(left, finished.recv()).await }) {
                Ok(Some(f)) => d.finished(f),
                Ok(None) => return,
                Err(_) => {
                    d.record_progress();
                    tracing::warn!(
                        sink = &*d.s.name,
                        uploads = d.in_flight,
                        "uploads still under way at shutdown are left; their objects are uploaded again at the next start"
                    );
                    return;
                }
            }
            continue;
        }
        let retry_at = d
            .pending
            .values()
            .filter(|p| !p.in_flight)
            .map(|p| p.next_try)
            .min();
        let wake = [Some(Instant::now() + tick), retry_at, Some(resume_at)]
            .into_iter()
            .flatten()
            .filter(|t| *t > Instant::now())
            .min()
            .unwrap_or_else(|| Instant::now() + tick);
        handle.block_on(async {
            tokio::select! {
                _ = commits.changed() => {}
                f = finished.recv() => if let Some(f) = f { d.finished(f) },
                () = tokio::time::sleep_until(wake.into()) => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}

impl<S: ObjectStore> Delivery<S> {
    /// (Re)starts reading at the cursor: open objects are dropped, and
    /// every object already recorded past the cursor is either skipped
    /// when its records come by (delivered, or being delivered) or queued
    /// for upload, rebuilt from the log (recorded but not delivered).
    fn restart(&mut self) -> Result<(), SinkError> {
        for (_, o) in self.open.drain() {
            o.builder.discard();
        }
        self.cursor = self.log.cursor();
        self.reader = Some(Reader::new(self.log.clone(), self.cursor));
        self.covered.clear();
        self.covered_until = 0;
        let rows = self.meta.objects(&self.s.name, self.cursor.seq)?;
        let mut recovered = 0;
        for row in rows {
            let recipe: Recipe = serde_json::from_str(&row.recipe).map_err(|e| {
                SinkError::Fatal(format!(
                    "object {} in the manifest: bad recipe: {e}",
                    row.key
                ))
            })?;
            self.covered_until = self.covered_until.max(row.hi);
            if !row.done && !self.pending.contains_key(&row.id) && !self.done.contains(&row.id) {
                recovered += 1;
                self.pending.insert(
                    row.id,
                    Pending {
                        row: row.clone(),
                        recipe: recipe.clone(),
                        temp: None,
                        attempts: 0,
                        next_try: Instant::now(),
                        in_flight: false,
                    },
                );
            }
            self.covered.push(Covered {
                grouper: Grouper::of(&recipe)?,
                row,
                recipe,
            });
        }
        if recovered > 0 {
            tracing::info!(
                sink = &*self.s.name,
                objects = recovered,
                "objects recorded before a restart are uploaded again under their names"
            );
        }
        Ok(())
    }

    /// A local failure (a temp file, the manifest): drop what is open and
    /// read again from the cursor after a backoff. Returns when to resume.
    fn local_failure(&mut self, e: &SinkError, failures: &mut u32) -> Instant {
        if let SinkError::Fatal(reason) = e {
            self.fatal = Some(reason.clone());
            return Instant::now();
        }
        self.metrics
            .sink_failed(&self.s.name, e.kind(), &e.to_string());
        self.metrics.sink_retry(&self.s.name);
        *failures += 1;
        let wait = retry_wait(*failures);
        if let Err(again) = self.restart() {
            self.metrics
                .sink_failed(&self.s.name, again.kind(), &again.to_string());
        }
        Instant::now() + wait
    }

    /// Reads committed records into open objects. Returns whether more
    /// may be waiting (a batch was cut short). When `all`, reads to the end.
    fn pump(&mut self, all: bool) -> Result<bool, SinkError> {
        let Some(mut reader) = self.reader.take() else {
            return Ok(false);
        };
        let result = self.pump_from(&mut reader, all);
        for d in reader.take_damage() {
            self.metrics.spool_damage(&self.s.name, &d);
        }
        self.reader = Some(reader);
        result
    }

    fn pump_from(&mut self, reader: &mut Reader, all: bool) -> Result<bool, SinkError> {
        let mut n = 0;
        while all || n < PUMP_BATCH {
            let item = reader.next_frame().map_err(|e| SinkError::Io {
                path: PathBuf::from(format!("spool log of sink `{}`", self.s.name)),
                message: e.to_string(),
            })?;
            let Some(item) = item else {
                return Ok(false);
            };
            n += 1;
            self.add(item.at, &item.frame)?;
        }
        Ok(true)
    }

    fn add(&mut self, at: Pos, frame: &Frame<'_>) -> Result<(), SinkError> {
        if frame.seq <= self.covered_until && self.is_covered(frame) {
            return Ok(());
        }
        let group = self.grouper.group(frame);
        let added_to = match self.append(&group, at, frame, frame.data) {
            Ok(()) => group,
            Err(AppendError::NewColumns) => {
                // CSV: a record with new columns starts a new object with
                // its own header instead of being lost.
                self.seal(&group)?;
                match self.append(&group, at, frame, frame.data) {
                    Ok(()) => group,
                    Err(AppendError::Rejected(e)) => self.reject(at, frame, &e)?,
                    Err(AppendError::Io(e)) => return Err(self.write_error(&e)),
                    Err(AppendError::NewColumns) => {
                        return Err(SinkError::Fatal(
                            "a fresh CSV object refused a record's columns".into(),
                        ));
                    }
                }
            }
            Err(AppendError::Rejected(e)) => self.reject(at, frame, &e)?,
            Err(AppendError::Io(e)) => return Err(self.write_error(&e)),
        };
        let full = self.open.get(&added_to).is_some_and(|o| {
            o.builder.raw_bytes() >= self.s.rotate.max_bytes
                || o.records >= self.s.rotate.max_records
        });
        if full {
            self.seal(&added_to)?;
        }
        if self.open.len() > MAX_OPEN
            && let Some(oldest) = self
                .open
                .iter()
                .min_by_key(|(_, o)| o.opened)
                .map(|(g, _)| g.clone())
        {
            self.seal(&oldest)?;
        }
        Ok(())
    }

    fn is_covered(&mut self, f: &Frame<'_>) -> bool {
        self.covered.iter_mut().any(|c| {
            c.row.lo.seq <= f.seq
                && f.seq <= c.row.hi
                && object::membership(&mut c.grouper, &c.recipe, f).is_some()
        })
    }

    /// A record the sink's encoding cannot hold goes, wrapped with the
    /// error, to the `dead_letter` group.
    fn reject(
        &mut self,
        at: Pos,
        f: &Frame<'_>,
        e: &crate::encoding::EncodeError,
    ) -> Result<Group, SinkError> {
        self.metrics
            .sink_rejected_record(&self.s.name, &e.to_string());
        let line = object::rejected_line(&self.s.name, f.route, e, f.data);
        match self.append(&Group::rejected(), at, f, &line) {
            Ok(()) => Ok(Group::rejected()),
            Err(AppendError::Io(e)) => Err(self.write_error(&e)),
            Err(_) => Err(SinkError::Fatal("a dead-letter line did not encode".into())),
        }
    }

    fn write_error(&self, e: &std::io::Error) -> SinkError {
        SinkError::Io {
            path: self.store.temp_dir().to_path_buf(),
            message: format!("cannot write an object being built: {e}"),
        }
    }

    /// Appends `data` (the record, or its dead-letter line) to the open
    /// object of `group`, opening one if needed.
    fn append(
        &mut self,
        group: &Group,
        at: Pos,
        f: &Frame<'_>,
        data: &[u8],
    ) -> Result<(), AppendError> {
        if !self.open.contains_key(group) {
            self.temp_seq += 1;
            let temp = self.store.temp_dir().join(format!(
                "{}-{}-{}",
                crate::spool::log::dir_name(&self.s.name),
                std::process::id(),
                self.temp_seq
            ));
            let mut builder = Builder::create(
                temp,
                group.encoding,
                self.s.compression,
                self.s.compression_level,
            )
            .map_err(AppendError::Io)?;
            if let Err(e) = builder.append(data) {
                builder.discard();
                return Err(e);
            }
            self.open.insert(
                group.clone(),
                Open {
                    builder,
                    lo: at,
                    hi: f.seq,
                    records: 1,
                    opened: Instant::now(),
                    oldest_ms: f.received_ms,
                },
            );
        } else if let Some(o) = self.open.get_mut(group) {
            o.builder.append(data)?;
            o.hi = f.seq;
            o.records += 1;
            o.oldest_ms = o.oldest_ms.min(f.received_ms);
        }
        Ok(())
    }

    /// Seals objects that are old enough (all when `all`), and the one
    /// holding the cursor back when the log behind it grows too long.
    fn rotate(&mut self, all: bool) -> Result<(), SinkError> {
        let max_age = Duration::from_secs_f64(self.s.rotate.max_age_secs);
        let mut due: Vec<Group> = self
            .open
            .iter()
            .filter(|(_, o)| all || o.opened.elapsed() >= max_age)
            .map(|(g, _)| g.clone())
            .collect();
        let (records, bytes) = self.log.depth();
        if records > self.pin_limit.0 || bytes > self.pin_limit.1 {
            // Only an open object can be sealed early, and only sealing the
            // one that holds the cursor frees anything (an upload that is
            // failing is not helped by smaller objects).
            let held_by_upload = self.pending.values().map(|p| p.row.lo.seq).min();
            let pinning = self
                .open
                .iter()
                .min_by_key(|(_, o)| o.lo.seq)
                .filter(|(_, o)| held_by_upload.is_none_or(|p| o.lo.seq < p))
                .map(|(g, _)| g.clone());
            due.extend(pinning);
        }
        for g in due {
            self.seal(&g)?;
        }
        Ok(())
    }

    /// Finishes an object's file, names it, records it in the manifest,
    /// and queues its upload.
    fn seal(&mut self, group: &Group) -> Result<(), SinkError> {
        let Some(o) = self.open.remove(group) else {
            return Ok(());
        };
        let temp = o.builder.temp().to_path_buf();
        let (temp, _) = o.builder.finish().map_err(|e| SinkError::io(&temp, &e))?;
        let recipe =
            self.grouper
                .recipe(group.clone(), self.s.compression, self.s.compression_level);
        let mut row = ObjectRow {
            id: 0,
            sink: self.s.name.to_string(),
            key: String::new(),
            recipe: serde_json::to_string(&recipe)
                .map_err(|e| SinkError::Fatal(format!("cannot record an object: {e}")))?,
            lo: o.lo,
            hi: o.hi,
            records: o.records,
            oldest_ms: o.oldest_ms,
            done: false,
        };
        let ext = extension(group.encoding, self.s.compression);
        let reserved = naming::reserve(
            &self.meta,
            &*self.store,
            naming::Names {
                style: &self.s.object_name,
                instance: self.s.instance.as_deref(),
            },
            group,
            &ext,
            chrono::Utc::now(),
            &mut row,
        );
        let id = match reserved {
            Ok(id) => id,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        };
        row.id = id;
        self.pending.insert(
            id,
            Pending {
                row,
                recipe,
                temp: Some(temp),
                attempts: 0,
                next_try: Instant::now(),
                in_flight: false,
            },
        );
        Ok(())
    }

    /// Starts uploads, oldest first, up to `max_in_flight`. While stopping,
    /// objects that already failed are left for the next start.
    fn dispatch(&mut self, stopping: bool) {
        if self.fatal.is_some() {
            return;
        }
        let now = Instant::now();
        let ready: Vec<i64> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.in_flight && p.next_try <= now && !(stopping && p.attempts > 0))
            .map(|(id, _)| *id)
            .take(self.s.max_in_flight.saturating_sub(self.in_flight))
            .collect();
        for id in ready {
            let Some(p) = self.pending.get_mut(&id) else {
                continue;
            };
            p.in_flight = true;
            self.in_flight += 1;
            let job = Job {
                id,
                row: p.row.clone(),
                recipe: p.recipe.clone(),
                temp: p.temp.take(),
                temp_dir: self.store.temp_dir().to_path_buf(),
                sink: self.s.name.clone(),
            };
            let (store, log, results) =
                (self.store.clone(), self.log.clone(), self.results.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("upload-{}", self.s.name))
                .spawn(move || {
                    let finished = job.run(&*store, &log);
                    let _ = results.send(finished);
                });
            if let Err(e) = spawned {
                // No thread: try again later.
                if let Some(p) = self.pending.get_mut(&id) {
                    p.in_flight = false;
                    p.next_try = now + RETRY_FIRST;
                }
                self.in_flight -= 1;
                tracing::warn!(sink = &*self.s.name, error = %e, "cannot start an upload thread");
            }
        }
    }

    /// Takes an upload's outcome.
    fn finished(&mut self, f: Finished) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(p) = self.pending.get_mut(&f.id) else {
            return;
        };
        p.in_flight = false;
        match f.result {
            Ok(up) => {
                if up.records != p.row.records {
                    tracing::warn!(
                        sink = &*self.s.name,
                        key = p.row.key.as_str(),
                        recorded = p.row.records,
                        rebuilt = up.records,
                        "an object rebuilt from the log holds fewer records than when it was sealed (log damage)"
                    );
                }
                self.metrics.object_written(
                    &self.s.name,
                    &p.row.key,
                    up.records as usize,
                    up.size,
                    p.row.oldest_ms,
                );
                if let Some(t) = f.temp {
                    let _ = std::fs::remove_file(t);
                }
                self.done.push(f.id);
                self.pending.remove(&f.id);
            }
            Err(SinkError::Fatal(reason)) => {
                p.temp = f.temp;
                self.metrics.sink_failed(&self.s.name, "fatal", &reason);
                self.fatal = Some(reason);
            }
            Err(e) => {
                p.temp = f.temp;
                p.attempts += 1;
                p.next_try = Instant::now() + retry_wait(p.attempts);
                self.metrics
                    .sink_failed(&self.s.name, e.kind(), &e.to_string());
                self.metrics.sink_retry(&self.s.name);
            }
        }
    }

    /// Moves the cursor over delivered objects (marking them done in the
    /// same transaction), deletes the segments behind it, and publishes
    /// the oldest undelivered record's age.
    fn record_progress(&mut self) {
        let lowest = self
            .open
            .values()
            .map(|o| o.lo)
            .chain(self.pending.values().map(|p| p.row.lo))
            .min_by_key(|p| p.seq);
        let cursor = match lowest {
            Some(p) => p,
            None => match &self.reader {
                Some(r) => r.pos(),
                None => self.cursor,
            },
        };
        let moved = cursor.seq > self.cursor.seq;
        if moved || !self.done.is_empty() {
            let at = if moved { cursor } else { self.cursor };
            match self.meta.delivered(&self.s.name, &self.done, at) {
                Ok(()) => {
                    self.done.clear();
                    if moved {
                        self.cursor = cursor;
                        self.log.set_cursor(cursor);
                        if let Err(e) = self.log.release() {
                            tracing::warn!(sink = &*self.s.name, error = %e, "cannot delete a delivered log segment; will retry");
                        }
                        self.covered.retain(|c| c.row.hi >= cursor.seq);
                        if self.covered.is_empty() {
                            self.covered_until = 0;
                        }
                    }
                }
                Err(e) => self
                    .metrics
                    .sink_failed(&self.s.name, "spool", &e.to_string()),
            }
        }
        let oldest = self
            .open
            .values()
            .map(|o| o.oldest_ms)
            .chain(self.pending.values().map(|p| p.row.oldest_ms))
            .min();
        self.log.set_oldest_ms(oldest);
    }

    fn wait_in_flight(
        &mut self,
        handle: &tokio::runtime::Handle,
        finished: &mut mpsc::UnboundedReceiver<Finished>,
    ) {
        while self.in_flight > 0 {
            match handle.block_on(finished.recv()) {
                Some(f) => self.finished(f),
                None => return,
            }
        }
    }
}

/// One upload, run on its own thread.
struct Job {
    id: i64,
    row: ObjectRow,
    recipe: Recipe,
    temp: Option<PathBuf>,
    temp_dir: PathBuf,
    sink: Arc<str>,
}

impl Job {
    fn run(self, store: &dyn ObjectStore, log: &Arc<SinkLog>) -> Finished {
        let (temp, records) = match self.temp.filter(|t| t.exists()) {
            Some(t) => (t, self.row.records),
            None => {
                let temp = self.temp_dir.join(format!(
                    "{}-{}-r{}",
                    crate::spool::log::dir_name(&self.sink),
                    std::process::id(),
                    self.id
                ));
                match object::rebuild(
                    log,
                    &self.sink,
                    &self.recipe,
                    self.row.lo,
                    self.row.hi,
                    temp,
                ) {
                    Ok(r) => (r.temp, r.records),
                    Err(e) => {
                        return Finished {
                            id: self.id,
                            temp: None,
                            result: Err(e),
                        };
                    }
                }
            }
        };
        let result = store
            .deliver(&temp, &self.row.key)
            .map(|size| Uploaded { size, records });
        Finished {
            id: self.id,
            temp: Some(temp).filter(|t| t.exists()),
            result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::retry_wait;
    use std::time::Duration;

    #[test]
    fn retries_double_from_half_a_second_to_a_minute() {
        let waits: Vec<Duration> = (1..=9).map(retry_wait).collect();
        let ms = |m| Duration::from_millis(m);
        assert_eq!(
            waits,
            [
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(16000),
                ms(32000),
                ms(60000),
                ms(60000)
            ]
        );
        assert_eq!(retry_wait(u32::MAX), ms(60000));
    }
}
