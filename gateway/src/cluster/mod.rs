//! Cluster mode: several replicas, each poller source led by one of them
//! at a time, its cursor fenced in a coordination store (etcd).
//!
//! Push needs no coordination: each replica spools and acknowledges on its
//! own, and its object names carry its instance id. Pollers do: a source
//! polled by two replicas would be spooled twice. So a replica polls a
//! source only while it leads it, and every cursor write is a transaction
//! that commits only if the writer still holds the leadership it was given
//! (the leader key's create revision). A replica that was paused or cut off
//! and does not know it has lost the lead cannot move the cursor: its write
//! is refused, and it stops.
//!
//! Write order per page (crash ordering):
//! 1. fetch; 2. transform; 3. commit records and the local checkpoint to
//!    the spool (durable); 4. the fenced cursor write.
//!
//! A crash between 3 and 4 leaves a page spooled whose cursor etcd never
//! saw: the next leader polls it again. That is at most one page per
//! failover, counted in `sluice_cluster_repolled_events_total`.
//!
//! The engine is behind [`Coordinator`], so another (a Kubernetes Lease)
//! can follow without touching the pollers.

pub mod etcd;
pub mod registry;

use crate::config::{Invalid, invalid};
use crate::metrics::Metrics;
use crate::sources::poller::{PollCtx, PollError, Poller, run_cycles};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// `[cluster]`: run as one of several replicas coordinated through etcd.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd client URLs, `https://` only (several members: any that
    /// answers is used).
    pub etcd: Vec<String>,
    /// TLS to etcd.
    pub tls: ClusterTls,
    /// Prefix of every key sluice keeps in etcd, such as `/sluice/prod`.
    /// Replicas with the same prefix form one cluster.
    pub prefix: String,
    /// This replica's id, unique in the cluster (default: the host name).
    /// Object names carry it, so two replicas never write the same key.
    pub instance_id: Option<String>,
    /// The etcd lease's TTL in seconds (3–300, default 10). A leader that
    /// crashes is replaced after about this long; one that cannot renew
    /// its lease for 2/3 of it stops polling first.
    #[serde(default = "default_ttl")]
    pub lease_ttl_secs: u64,
    /// When a poller's cursor in etcd moves: `spooled` (default: once the
    /// page is durable in the leader's spool) or `delivered` (once the
    /// sinks delivered it; see docs/cluster.md for the trade-off).
    #[serde(default)]
    pub cursor_commit: CursorCommit,
}

/// TLS to etcd: the CA that signed the members' certificates, and this
/// replica's client certificate when etcd asks for one
/// (`--client-cert-auth`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTls {
    /// PEM CA file.
    pub ca: PathBuf,
    /// PEM client certificate (with `key`).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

fn default_ttl() -> u64 {
    10
}

impl ClusterConfig {
    /// Checks the section (no I/O).
    pub(crate) fn validate(&self, out: &mut Vec<Invalid>) {
        if self.etcd.is_empty() {
            out.push(invalid(&["cluster", "etcd"], "needs at least one etcd URL"));
        }
        for (i, url) in self.etcd.iter().enumerate() {
            if !url.starts_with("https://") || url.len() <= "https://".len() {
                out.push(invalid(
                    &["cluster", "etcd", &i.to_string()],
                    format!("{url:?} must be an https:// URL: cursors and transforms never cross the network in clear text"),
                ));
            }
        }
        let p = &self.prefix;
        if !p.starts_with('/')
            || p.len() < 2
            || p.ends_with('/')
            || p.contains("//")
            || !p.bytes().all(|b| b.is_ascii_graphic())
        {
            out.push(invalid(
                &["cluster", "prefix"],
                "must be a path such as /sluice/prod: starts with /, no trailing / or //, printable ASCII",
            ));
        }
        if let Some(id) = &self.instance_id
            && !valid_instance_id(id)
        {
            out.push(invalid(
                &["cluster", "instance_id"],
                "must be 1-63 characters of A-Z a-z 0-9 . _ - (it goes into object names)",
            ));
        }
        if !(3..=300).contains(&self.lease_ttl_secs) {
            out.push(invalid(
                &["cluster", "lease_ttl_secs"],
                "must be between 3 and 300",
            ));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            out.push(invalid(
                &["cluster", "tls"],
                "needs both `cert` and `key`, or neither",
            ));
        }
    }

    /// The configured instance id, or the host name reduced to the
    /// characters an id may hold.
    pub fn instance_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .or_else(|_| std::fs::read_to_string("/etc/hostname"))
                .unwrap_or_default();
            let id: String = host
                .trim()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        c
                    } else {
                        '_'
                    }
                })
                .take(63)
                .collect();
            if id.is_empty() { "sluice".into() } else { id }
        })
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }
}

fn valid_instance_id(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Why a coordination step failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The section cannot be used (an unreadable TLS file, say).
    #[error("[cluster]: {0}")]
    Config(String),
    /// The coordination store did not answer, or answered with an error;
    /// retried.
    #[error("etcd: {0}")]
    Unavailable(String),
    /// The write was refused: this replica no longer leads the source.
    #[error("refused: this replica no longer leads the source")]
    Fenced,
}

/// A boxed future, so [`Coordinator`] can be used as `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a replica needs from the coordination engine.
pub trait Coordinator: Send + Sync {
    /// Waits until this replica leads `source`; retries while the engine
    /// cannot be reached.
    fn campaign<'a>(&'a self, source: &'a str) -> BoxFuture<'a, Term>;
    /// The source's cursor as the last leader wrote it.
    fn load_cursor<'a>(
        &'a self,
        term: &'a Term,
    ) -> BoxFuture<'a, Result<Option<Cursor>, ClusterError>>;
    /// Writes the cursor if and only if `term` still leads the source
    /// ([`ClusterError::Fenced`] otherwise).
    fn commit_cursor<'a>(
        &'a self,
        term: &'a Term,
        cursor: &'a Cursor,
    ) -> BoxFuture<'a, Result<(), ClusterError>>;
    /// Writes the last cursor marked as handed over cleanly and gives up
    /// the lead, in one fenced step, so another replica can take over at
    /// once (no duplicates to count).
    fn resign<'a>(
        &'a self,
        term: &'a Term,
        cursor: &'a Cursor,
    ) -> BoxFuture<'a, Result<(), ClusterError>>;
}

/// One leadership of one source: valid while the lease it was won under
/// is renewed in time.
#[derive(Debug, Clone)]
pub struct Term {
    /// The source.
    pub source: String,
    /// The engine's fencing token (etcd: the leader key's create revision).
    pub token: i64,
    /// The lease the leadership hangs on.
    pub lease: i64,
    /// The current valid lease (None while it is not renewed in time).
    held: watch::Receiver<Option<i64>>,
}

impl Term {
    /// A term won under `lease`; `held` tells which lease is valid now.
    pub fn new(source: &str, token: i64, lease: i64, held: watch::Receiver<Option<i64>>) -> Self {
        Self {
            source: source.to_string(),
            token,
            lease,
            held,
        }
    }

    /// Whether the lease is still renewed in time.
    pub fn held(&self) -> bool {
        *self.held.borrow() == Some(self.lease)
    }

    /// Resolves once the lease is no longer known to be valid.
    pub async fn lost(&self) {
        let mut held = self.held.clone();
        let _ = held.wait_for(|l| *l != Some(self.lease)).await;
    }
}

/// A source's cursor as stored in the coordination engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Where the next leader resumes: the poller's cursors by checkpoint
    /// key, as its local checkpoints hold them (one for most sources; one
    /// per org for a JumpCloud MSP key, `<source>/org=<id>`). With
    /// `cursor_commit = "delivered"`, only as far as the sinks delivered.
    pub values: BTreeMap<String, String>,
    /// How far the writer had spooled (ahead of `values` while pages wait
    /// for delivery): what a new leader may poll again, and counts.
    #[serde(default)]
    pub spooled: BTreeMap<String, String>,
    /// The replica that wrote it.
    pub instance: String,
    /// True when that replica resigned after writing it, with nothing
    /// spooled past `values`.
    pub clean: bool,
}

/// When the cursor in etcd moves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CursorCommit {
    /// Once the page is durable in the leader's spool: at most one page of
    /// duplicates per failover; a leader that loses its disk for good loses
    /// what it had not delivered.
    #[default]
    Spooled,
    /// Once the sinks have delivered the page: nothing is lost even if a
    /// leader's disk is; a failover polls again everything the old leader
    /// had not delivered yet (counted).
    Delivered,
}

/// A page that waits for delivery before the cursor may pass it: the end
/// of each sink log it was appended to, and the cursors after it.
struct Undelivered {
    ends: Vec<(Arc<crate::spool::log::SinkLog>, u64)>,
    values: BTreeMap<String, String>,
}

/// The cursors as this term last wrote them (or will write them).
#[derive(Default)]
struct Written {
    values: BTreeMap<String, String>,
    spooled: BTreeMap<String, String>,
    /// Delivered mode: pages spooled whose delivery the cursor waits for.
    undelivered: std::collections::VecDeque<Undelivered>,
    /// The previous leader did not hand over cleanly: by checkpoint key,
    /// how far it may have spooled (its cursor's time). Pages that start
    /// at or before it may repeat its events and are counted.
    suspect: BTreeMap<String, Option<i128>>,
}

/// A poller's lead, as its page commits use it (see [`PollCtx::commit`]).
pub struct Fence {
    coordinator: Arc<dyn Coordinator>,
    term: Term,
    instance: String,
    mode: CursorCommit,
    metrics: Metrics,
    written: std::sync::Mutex<Written>,
    /// Serialises the writes of one term, so etcd sees them in order.
    writing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("term", &self.term)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// How long a failing coordination call waits before it is tried again.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The time a poller's cursor (a [`Watermark`](crate::sources::poller::Watermark)) stands at.
fn cursor_time(value: Option<&str>) -> Option<i128> {
    serde_json::from_str::<crate::sources::poller::Watermark>(value?)
        .ok()?
        .at_ns
}

impl Fence {
    /// Whether the lease is still known to be valid.
    pub fn held(&self) -> bool {
        self.term.held()
    }

    /// Resolves once the lease is no longer known to be valid.
    pub async fn lost(&self) {
        self.term.lost().await;
    }

    /// The error of a poller whose lease lapsed.
    pub fn lapsed() -> PollError {
        PollError::Deposed("the etcd lease was not renewed within 2/3 of its TTL".into())
    }

    /// Step 4 of a page, after its records and `value` (the cursor after
    /// it, under the page's checkpoint key) are durable in the spool: the
    /// fenced write. Retries while etcd cannot be reached and the lease is
    /// still valid. The write is tried even when the lease lapsed while
    /// the page was in flight: the fence, not this replica's clock, decides
    /// whether it still leads. In delivered mode the page is also queued
    /// until its sinks deliver it (see [`Fence::deliveries`]).
    ///
    /// # Errors
    ///
    /// [`PollError::Deposed`] when the write is refused or the lease lapses
    /// while retrying (the page's `events` are then counted as possibly
    /// repeated by the next leader); [`PollError::Shutdown`].
    pub async fn commit(
        &self,
        ctx: &mut PollCtx,
        value: &str,
        events: usize,
    ) -> Result<(), PollError> {
        let key = ctx.checkpoint.clone();
        let repeats = {
            let mut w = crate::util::lock(&self.written);
            // Cursors are parsed only while a previous leader's position
            // is still ahead (the first page or so of a term).
            let mut repeats = false;
            if let Some(limit) = w.suspect.get(&key).copied() {
                repeats = cursor_time(w.spooled.get(&key).map(String::as_str)) <= limit;
                if cursor_time(Some(value)) > limit {
                    w.suspect.remove(&key);
                }
            }
            w.spooled.insert(key.clone(), value.to_string());
            match self.mode {
                CursorCommit::Spooled => {
                    w.values.insert(key, value.to_string());
                }
                CursorCommit::Delivered => {
                    let values = w.spooled.clone();
                    w.undelivered.push_back(Undelivered {
                        ends: log_ends(ctx),
                        values,
                    });
                }
            }
            repeats
        };
        self.write(Some(ctx), events).await?;
        if repeats {
            self.metrics.cluster_repolled(
                &self.term.source,
                events,
                "page after a leader that did not hand over cleanly; it may have spooled these too",
            );
        }
        Ok(())
    }

    /// Moves `values` past every queued page its sinks have delivered;
    /// whether it moved.
    fn advance(&self) -> bool {
        let mut w = crate::util::lock(&self.written);
        let mut moved = None;
        while let Some(front) = w.undelivered.front() {
            if !front.ends.iter().all(|(log, end)| log.cursor().seq >= *end) {
                break;
            }
            moved = w.undelivered.pop_front().map(|u| u.values);
        }
        match moved {
            Some(values) => {
                w.values = values;
                true
            }
            None => false,
        }
    }

    /// Delivered mode: writes the cursor forward as the sinks deliver the
    /// queued pages, checked every 250 ms, for the whole term.
    ///
    /// # Errors
    ///
    /// Returns (never `Ok`) [`PollError::Deposed`] when a write is refused.
    pub async fn deliveries(&self) -> PollError {
        let mut pending = false;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            pending |= self.advance();
            if !pending {
                continue;
            }
            match self.write(None, 0).await {
                Ok(()) => pending = false,
                Err(e @ PollError::Deposed(_)) => return e,
                // Not written now (etcd unreachable): the next tick tries again.
                Err(_) => {}
            }
        }
    }

    /// Writes the cursors as they stand, fenced. With `ctx`, retries
    /// transient failures (waiting through `ctx`); without, one attempt.
    async fn write(&self, mut ctx: Option<&mut PollCtx>, events: usize) -> Result<(), PollError> {
        let _in_order = self.writing.lock().await;
        let cursor = {
            let w = crate::util::lock(&self.written);
            Cursor {
                values: w.values.clone(),
                spooled: w.spooled.clone(),
                instance: self.instance.clone(),
                clean: false,
            }
        };
        let source = &self.term.source;
        let mut wait = RETRY_MIN;
        loop {
            match self.coordinator.commit_cursor(&self.term, &cursor).await {
                Ok(()) => return Ok(()),
                Err(ClusterError::Fenced) => {
                    self.metrics.cluster_fenced(source);
                    self.metrics.cluster_repolled(
                        source,
                        events,
                        "page spooled by a deposed leader; the new one polls it too",
                    );
                    return Err(PollError::Deposed(
                        "etcd refused the cursor write: another replica leads the source".into(),
                    ));
                }
                Err(e) => {
                    let Some(ctx) = ctx.as_deref_mut() else {
                        return Err(PollError::Fatal(e.to_string()));
                    };
                    tracing::warn!(source = source.as_str(), error = %e, "cursor write failed; retrying");
                    if let Err(stop) = ctx.sleep(wait).await {
                        if matches!(stop, PollError::Deposed(_)) {
                            self.metrics.cluster_repolled(
                                source,
                                events,
                                "the lease lapsed before this page's cursor was written; the next leader polls it again",
                            );
                        }
                        return Err(stop);
                    }
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// The hand-over cursor: how far this replica spooled (its local
    /// checkpoints) and, in delivered mode, how far its sinks delivered.
    /// Clean when nothing spooled is left past `values`.
    fn hand_over(&self, ctx: &PollCtx) -> Cursor {
        self.advance();
        let w = crate::util::lock(&self.written);
        let mut keys: Vec<String> = w.spooled.keys().cloned().collect();
        keys.push(ctx.checkpoint.clone());
        let spooled = local_cursors(ctx, keys);
        let values = match self.mode {
            CursorCommit::Spooled => spooled.clone(),
            CursorCommit::Delivered => w.values.clone(),
        };
        Cursor {
            clean: values == spooled,
            values,
            spooled,
            instance: self.instance.clone(),
        }
    }
}

/// Runs a poller source in cluster mode: campaigns for it, polls while it
/// leads, and campaigns again when it loses the lead, until shutdown or an
/// error an operator must fix.
pub async fn run_poller(
    coordinator: Arc<dyn Coordinator>,
    instance: String,
    mode: CursorCommit,
    mut ctx: PollCtx,
    interval: Duration,
    poller: Poller,
) {
    let source = ctx.name.to_string();
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let term = tokio::select! {
            t = coordinator.campaign(&source) => t,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let fence = Arc::new(Fence {
            coordinator: coordinator.clone(),
            term: term.clone(),
            instance: instance.clone(),
            mode,
            metrics: ctx.metrics.clone(),
            written: std::sync::Mutex::default(),
            writing: tokio::sync::Mutex::new(()),
        });
        ctx.fence = Some(fence.clone());
        let outcome = lead(&coordinator, &fence, &mut ctx, interval, &poller).await;
        ctx.fence = None;
        let led = ctx.metrics.cluster_leads(&source);
        match outcome {
            PollError::Deposed(why) => {
                if led {
                    ctx.metrics.cluster_leader(&source, false, &why);
                }
            }
            e @ (PollError::Shutdown | PollError::Fatal(_)) => {
                let cursor = fence.hand_over(&ctx);
                let resigned = tokio::time::timeout(
                    Duration::from_secs(3),
                    coordinator.resign(&term, &cursor),
                )
                .await;
                if led && !matches!(resigned, Ok(Ok(()))) {
                    tracing::warn!(
                        source = source.as_str(),
                        "could not hand the lead over; another replica takes it when the lease expires"
                    );
                }
                if led {
                    ctx.metrics.cluster_leader(&source, false, "stopping");
                }
                if let PollError::Fatal(reason) = e {
                    ctx.metrics.poller_stopped(&source, &reason);
                }
                return;
            }
        }
    }
}

/// Where each sink log the source feeds ends now: a page appended before
/// is delivered once every log's delivery cursor reaches its end.
fn log_ends(ctx: &PollCtx) -> Vec<(Arc<crate::spool::log::SinkLog>, u64)> {
    crate::pipeline::sinks_of(&ctx.pipelines)
        .iter()
        .filter_map(|s| ctx.spool.log(s))
        .map(|log| {
            let end = log.end().seq;
            (log, end)
        })
        .collect()
}

/// This replica's checkpoints under `keys` (those it has).
fn local_cursors(
    ctx: &PollCtx,
    keys: impl IntoIterator<Item = String>,
) -> BTreeMap<String, String> {
    keys.into_iter()
        .filter_map(|k| {
            let v = ctx.spool.checkpoint(&k).ok().flatten()?;
            Some((k, v))
        })
        .collect()
}

/// One term of leadership: takes the fenced cursor over, then polls.
async fn lead(
    coordinator: &Arc<dyn Coordinator>,
    fence: &Arc<Fence>,
    ctx: &mut PollCtx,
    interval: Duration,
    poller: &Poller,
) -> PollError {
    let source = ctx.name.to_string();
    let mut wait = RETRY_MIN;
    let stored = loop {
        match coordinator.load_cursor(&fence.term).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(source = source.as_str(), error = %e, "cannot read the cursor; retrying");
                if let Err(e) = ctx.sleep(wait).await {
                    return e;
                }
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    };
    // Where to resume. From etcd's cursor, unless this replica wrote it
    // last: then nobody has polled since, and its own checkpoints
    // (spooled before each etcd write, so never behind it) may be ahead;
    // it resumes from them, and in delivered mode the cursor waits for
    // their delivery. Without a cursor in etcd (the first term ever) this
    // replica's own, if any, is where the cluster starts.
    let mut keys: Vec<String> = stored
        .iter()
        .flat_map(|c| c.values.keys().chain(c.spooled.keys()).cloned())
        .collect();
    keys.push(ctx.checkpoint.clone());
    let local = local_cursors(ctx, keys);
    let ours = match &stored {
        Some(c) => c.instance == fence.instance && !local.is_empty(),
        None => true,
    };
    let resume = match &stored {
        Some(c) if !ours => c.values.clone(),
        _ => local.clone(),
    };
    // The local checkpoints follow, since the poller reads them there.
    for (key, value) in &resume {
        if local.get(key) != Some(value)
            && let Err(e) = ctx
                .spool
                .append_with_checkpoint(Vec::new(), Some((key.clone(), value.clone())))
                .await
        {
            return PollError::Fatal(e.to_string());
        }
    }
    {
        let mut w = crate::util::lock(&fence.written);
        w.spooled.clone_from(&resume);
        w.values = match (fence.mode, &stored) {
            (CursorCommit::Delivered, Some(c)) if ours => {
                // What this replica spooled past etcd's cursor is in its
                // spool: the cursor passes it once it is delivered.
                w.undelivered.push_back(Undelivered {
                    ends: log_ends(ctx),
                    values: resume.clone(),
                });
                c.values.clone()
            }
            _ => resume.clone(),
        };
        if let Some(c) = stored.as_ref().filter(|c| !c.clean && !ours) {
            let spooled = if c.spooled.is_empty() {
                &c.values
            } else {
                &c.spooled
            };
            w.suspect = spooled
                .iter()
                .map(|(k, v)| (k.clone(), cursor_time(Some(v.as_str()))))
                .collect();
        }
    }
    // The term's first write claims the cursor (marked not clean), so a
    // crash from here on is seen by the next leader.
    if let Err(e) = fence.write(Some(ctx), 0).await {
        return e;
    }
    let why = match &stored {
        Some(c) if c.clean => format!("took over cleanly from {}", c.instance),
        Some(c) => format!("took over from {}, which did not hand over", c.instance),
        None => "first leader of this source".to_string(),
    };
    ctx.metrics.cluster_leader(&source, true, &why);
    match fence.mode {
        CursorCommit::Spooled => run_cycles(ctx, interval, poller).await,
        CursorCommit::Delivered => tokio::select! {
            e = run_cycles(ctx, interval, poller) => e,
            e = fence.deliveries() => e,
        },
    }
}
