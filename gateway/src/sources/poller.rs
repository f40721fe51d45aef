//! What every poller shares: the watermark cursor, committing a page of
//! records together with the cursor, retry waits, and the run loop.
//!
//! Exactly-once pages: a page's records and the cursor that follows them
//! go into the spool in one SQLite transaction. A crash before the commit
//! means the page is fetched again (nothing of it was kept); a crash after
//! means it never is (the cursor moved). Within a source's timeline the
//! cursor is a watermark: the newest timestamp spooled plus the ids of the
//! events at exactly that timestamp. The next query starts at that
//! timestamp inclusive and drops the ids already spooled, so events that
//! share a timestamp are neither lost (as with a "strictly after" cursor)
//! nor duplicated.

use crate::metrics::{CycleStats, Metrics};
use crate::pipeline::{Pipeline, run_all};
use crate::spool::Spool;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// The cursor of one poller, stored as JSON in the spool's checkpoints.
///
/// Times are compared at **millisecond** precision, the precision the APIs
/// sort by: JumpCloud orders events by (epoch ms, opaque id), as its
/// `search_after` token `[ms, id]` shows, so within one millisecond an
/// event with a later sub-millisecond time may come first. Comparing finer
/// would take a not-yet-spooled event of the watermark's millisecond for
/// an old one and drop it as a duplicate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// The configured start this cursor was built from. When the config's
    /// start changes, the cursor is reset (as Devo's collector does).
    pub start: String,
    /// The newest timestamp spooled, as the API wrote it.
    pub at: Option<String>,
    /// The same instant in nanoseconds since the epoch; only its
    /// millisecond counts.
    pub at_ns: Option<i128>,
    /// Ids of the spooled events in exactly `at`'s millisecond.
    pub ids: BTreeSet<String>,
    /// For APIs that do not return events in time order (JupiterOne): the
    /// ids spooled so far by the query run in progress. The watermark moves
    /// only when a run completes; a run cut short by a crash is redone from
    /// the same start and these ids are skipped.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub pending: BTreeSet<String>,
    /// The newest event of the run in progress: (text, ns, ids in its ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_max: Option<(String, i128, BTreeSet<String>)>,
    /// Unordered APIs with a lag (JupiterOne): `id@epoch-ms` of every
    /// version spooled at or after the watermark, which the next runs see
    /// again and skip.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub recent: BTreeSet<String>,
    /// When the run in progress started (Unix ms): its snapshot's time,
    /// which bounds how far the watermark may move at its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_started_ms: Option<i64>,
}

/// The millisecond of an instant in nanoseconds.
pub fn ms_of(ns: i128) -> i128 {
    ns.div_euclid(1_000_000)
}

impl Watermark {
    /// Whether an event was already spooled: in a millisecond before the
    /// watermark's, or in the same one with a known id. Events without an
    /// id or time are never considered duplicates.
    pub fn seen(&self, at_ns: Option<i128>, id: Option<&str>) -> bool {
        match (self.at_ns.map(ms_of), at_ns.map(ms_of)) {
            (Some(w), Some(t)) if t < w => true,
            (Some(w), Some(t)) if t == w => id.is_some_and(|id| self.ids.contains(id)),
            _ => false,
        }
    }

    /// The watermark's millisecond as RFC 3339 (`…T13:03:42.218Z`): where
    /// the next query starts, inclusive, so every event of that
    /// millisecond comes again and the known ids are skipped.
    pub fn query_start(&self) -> Option<String> {
        let ms = i64::try_from(ms_of(self.at_ns?)).ok()?;
        Some(
            chrono::DateTime::from_timestamp_millis(ms)?
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
    }

    /// Records an event spooled by an unordered run (see `pending`).
    pub fn add_pending(&mut self, at: Option<(&str, i128)>, id: Option<&str>) {
        if let Some(id) = id {
            self.pending.insert(id.to_string());
        }
        let Some((text, ns)) = at else { return };
        match &mut self.pending_max {
            Some((_, max, ids)) if ms_of(ns) == ms_of(*max) => {
                ids.extend(id.map(str::to_string));
            }
            Some((_, max, _)) if ms_of(ns) < ms_of(*max) => {}
            slot => {
                *slot = Some((
                    text.to_string(),
                    ns,
                    id.map(str::to_string).into_iter().collect(),
                ))
            }
        }
    }

    /// Whether an unordered run already spooled this id.
    pub fn pending_seen(&self, id: Option<&str>) -> bool {
        id.is_some_and(|id| self.pending.contains(id))
    }

    /// Ends an unordered run: the watermark moves to the run's newest event.
    pub fn finish_run(&mut self) {
        self.pending.clear();
        if let Some((text, ns, ids)) = self.pending_max.take() {
            match self.at_ns.map(ms_of) {
                Some(w) if ms_of(ns) < w => {}
                Some(w) if ms_of(ns) == w => self.ids.extend(ids),
                _ => {
                    self.at = Some(text);
                    self.at_ns = Some(ns);
                    self.ids = ids;
                }
            }
        }
    }

    /// Moves the watermark over a newly spooled event.
    pub fn advance(&mut self, at: &str, at_ns: i128, id: Option<&str>) {
        match self.at_ns.map(ms_of) {
            Some(w) if ms_of(at_ns) < w => {}
            Some(w) if ms_of(at_ns) == w => {
                if let Some(id) = id {
                    self.ids.insert(id.to_string());
                }
            }
            _ => {
                self.at = Some(at.to_string());
                self.at_ns = Some(at_ns);
                self.ids = id
                    .map(|i| BTreeSet::from([i.to_string()]))
                    .unwrap_or_default();
            }
        }
    }
}

/// Why a poller stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// An error an operator must fix (bad key, no permission, bad query).
    #[error("{0}")]
    Fatal(String),
    /// sluice is shutting down.
    #[error("shutting down")]
    Shutdown,
    /// Cluster mode: this replica no longer leads the source, and why.
    #[error("no longer leading: {0}")]
    Deposed(String),
}

/// What a poller needs from the gateway.
#[derive(Clone)]
pub struct PollCtx {
    /// The source's name.
    pub name: Arc<str>,
    /// The checkpoint key (the source's name, or a backfill's own key).
    pub checkpoint: String,
    /// The spool.
    pub spool: Arc<Spool>,
    /// The source's pipelines.
    pub pipelines: Vec<Arc<Pipeline>>,
    /// Transform concurrency.
    pub workers: Arc<Semaphore>,
    /// Metrics.
    pub metrics: Metrics,
    /// Turns true at shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// Called after every committed page with (events spooled so far in
    /// this run, pages so far): the backfill's progress bar.
    pub progress: Option<Arc<dyn Fn(u64, u64) + Send + Sync>>,
    /// Cluster mode: the lead this poller polls under. Each page's cursor
    /// is then also written to etcd, fenced, after the spool commit
    /// (see [`crate::cluster`]).
    pub fence: Option<Arc<crate::cluster::Fence>>,
}

impl std::fmt::Debug for PollCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollCtx")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PollCtx {
    /// The stored cursor, reset when it was built from another start.
    ///
    /// # Errors
    ///
    /// [`PollError::Fatal`] when the spool cannot be read.
    pub fn load(&self, start: &str) -> Result<Watermark, PollError> {
        self.load_from(&self.checkpoint, start)
    }

    /// The cursor stored under another key (see [`PollCtx::load`]); the
    /// next commit stores it under this context's own key.
    ///
    /// # Errors
    ///
    /// [`PollError::Fatal`] when the spool cannot be read.
    pub fn load_from(&self, key: &str, start: &str) -> Result<Watermark, PollError> {
        let stored = self
            .spool
            .checkpoint(key)
            .map_err(|e| PollError::Fatal(e.to_string()))?;
        let fresh = Watermark {
            start: start.to_string(),
            ..Watermark::default()
        };
        Ok(
            match stored.and_then(|s| serde_json::from_str::<Watermark>(&s).ok()) {
                Some(w) if w.start == start => w,
                Some(_) => {
                    tracing::warn!(
                        source = &*self.name,
                        start,
                        "the configured start changed; the cursor is reset"
                    );
                    fresh
                }
                None => fresh,
            },
        )
    }

    /// Runs the page through the pipelines and commits its rows with the
    /// new cursor as one unit. Waits while a sink it feeds is over its
    /// spool budget, and retries (with backoff, logged) while the
    /// transforms cannot run or the spool cannot commit, such as on a full
    /// disk: the page is neither lost nor skipped, and the poller goes on
    /// once it can be stored.
    ///
    /// # Errors
    ///
    /// [`PollError::Shutdown`] when stopping.
    pub async fn commit(
        &mut self,
        records: Vec<Vec<u8>>,
        cursor: &Watermark,
        run_ids: Option<crate::spool::meta::RunIds>,
    ) -> Result<(), PollError> {
        let bytes: u64 = records.iter().map(|r| r.len() as u64).sum();
        let sinks = crate::pipeline::sinks_of(&self.pipelines);
        while self
            .spool
            .admission(&sinks, records.len() as u64, bytes)
            .is_err()
        {
            self.sleep(Duration::from_secs(1)).await?;
        }
        let at_ns = cursor.at_ns;
        let cursor = serde_json::to_string(cursor).map_err(|e| PollError::Fatal(e.to_string()))?;
        let records = Arc::new(records);
        let mut backoff = Backoff::new();
        // A worker that could not be had or that failed is a moment's
        // trouble (memory, the instance pool): retried, never a reason to
        // stop the source. Nothing of the page is stored until it passes.
        let rows = loop {
            let received_at_ms = chrono::Utc::now().timestamp_millis();
            match run_all(
                &self.pipelines,
                &self.workers,
                records.clone(),
                received_at_ms,
            )
            .await
            {
                Ok(rows) => break rows,
                Err(crate::pipeline::RunAllError::Closed) => return Err(PollError::Shutdown),
                Err(e) => {
                    let wait = backoff.next(None);
                    self.metrics
                        .poll_retry(&self.name, &format!("transforms: {e}"), wait);
                    self.sleep(wait).await?;
                }
            }
        };
        loop {
            let checkpoint = Some((self.checkpoint.clone(), cursor.clone()));
            match self
                .spool
                .append_page(rows.clone(), checkpoint, run_ids.clone())
                .await
            {
                Ok(()) => break,
                Err(crate::spool::SpoolError::Closed) => return Err(PollError::Shutdown),
                Err(e) => {
                    let wait = backoff.next(None);
                    self.metrics
                        .poll_retry(&self.name, &format!("spool: {e}"), wait);
                    self.sleep(wait).await?;
                }
            }
        }
        // Step 4 in cluster mode, after the page is durable here: a crash
        // in between makes the next leader poll this page again.
        if let Some(fence) = self.fence.clone() {
            fence.commit(self, &cursor, records.len()).await?;
        }
        if let Some(ns) = at_ns {
            self.metrics.poll_cursor(&self.name, ns as f64 / 1e9);
        }
        Ok(())
    }

    /// Commits a page (see [`PollCtx::commit`]) and accounts for it: the
    /// cycle's figures, the metrics, the backfill's progress line.
    ///
    /// # Errors
    ///
    /// As [`PollCtx::commit`].
    pub async fn commit_page(
        &mut self,
        records: Vec<Vec<u8>>,
        cursor: &Watermark,
        run_ids: Option<crate::spool::meta::RunIds>,
        received: usize,
        duplicates: usize,
        stats: &mut CycleStats,
    ) -> Result<(), PollError> {
        let spooled = records.len();
        self.commit(records, cursor, run_ids).await?;
        stats.pages += 1;
        stats.received += received as u64;
        stats.duplicates += duplicates as u64;
        stats.spooled += spooled as u64;
        self.metrics
            .poll_page(&self.name, received, duplicates, spooled);
        if let Some(p) = &self.progress {
            p(stats.spooled, stats.pages);
        }
        Ok(())
    }

    /// Sleeps, or returns [`PollError::Shutdown`] as soon as shutdown starts.
    ///
    /// # Errors
    ///
    /// [`PollError::Shutdown`].
    pub async fn sleep(&mut self, d: Duration) -> Result<(), PollError> {
        if *self.shutdown.borrow() {
            return Err(PollError::Shutdown);
        }
        self.check_lead()?;
        let fence = self.fence.clone();
        let lost = async {
            match &fence {
                Some(f) => f.lost().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(d) => Ok(()),
            _ = self.shutdown.changed() => Err(PollError::Shutdown),
            () = lost => Err(crate::cluster::Fence::lapsed()),
        }
    }

    /// Cluster mode: [`PollError::Deposed`] once the lease is no longer
    /// known to be valid. Checked before every API request and during
    /// every wait, so a replica that may have lost the lead sends nothing
    /// more; a request already answered is still spooled, and its fenced
    /// cursor write decides (see [`crate::cluster`]).
    ///
    /// # Errors
    ///
    /// [`PollError::Deposed`].
    pub fn check_lead(&self) -> Result<(), PollError> {
        match &self.fence {
            Some(f) if !f.held() => Err(crate::cluster::Fence::lapsed()),
            _ => Ok(()),
        }
    }
}

/// One API request as a poller sends it, and how to word its failures.
#[derive(Debug)]
pub struct ApiRequest<'a> {
    /// The client.
    pub client: &'a crate::http_client::HttpClient,
    /// The URL.
    pub url: &'a str,
    /// Headers (credentials included; they are marked sensitive).
    pub headers: &'a [(hyper::header::HeaderName, hyper::header::HeaderValue)],
    /// The JSON body.
    pub body: &'a [u8],
    /// The API's name in messages ("JumpCloud").
    pub api: &'static str,
    /// What a 401 means for this API's credentials.
    pub unauthorized: &'static str,
    /// What a 403 means.
    pub forbidden: &'static str,
}

impl PollCtx {
    /// Sends `req` until it is answered 200, and returns that answer; the
    /// caller reads it (and counts the `ok`). 401 and 403 stop the source
    /// with the request's own message, other 4xx with the API's text;
    /// 429, 5xx and network errors are retried after `Retry-After` /
    /// `RateLimit-Reset` or `backoff`.
    ///
    /// # Errors
    ///
    /// [`PollError::Fatal`] as above, [`PollError::Shutdown`] while waiting.
    pub async fn send_until_ok(
        &mut self,
        stats: &mut CycleStats,
        req: &ApiRequest<'_>,
        backoff: &mut Backoff,
    ) -> Result<crate::http_client::Response, PollError> {
        use crate::http_client::{HttpError, retry_after};
        use hyper::StatusCode;
        loop {
            self.check_lead()?;
            stats.requests += 1;
            let sent = req
                .client
                .send(
                    hyper::Method::POST,
                    req.url,
                    req.headers,
                    Some(req.body.to_vec()),
                )
                .await;
            let (outcome, wait) = match sent {
                Err(e @ (HttpError::Url(_) | HttpError::Ca { .. })) => {
                    return Err(PollError::Fatal(e.to_string()));
                }
                Err(e) => {
                    self.metrics.poll_request(&self.name, "network");
                    (format!("network: {e}"), backoff.next(None))
                }
                Ok(resp) if resp.status == StatusCode::OK => return Ok(resp),
                Ok(resp)
                    if resp.status == StatusCode::UNAUTHORIZED
                        || resp.status == StatusCode::FORBIDDEN =>
                {
                    self.metrics.poll_request(&self.name, "4xx");
                    let why = if resp.status == StatusCode::UNAUTHORIZED {
                        req.unauthorized
                    } else {
                        req.forbidden
                    };
                    return Err(PollError::Fatal(why.to_string()));
                }
                Ok(resp)
                    if resp.status == StatusCode::TOO_MANY_REQUESTS
                        || resp.status.is_server_error() =>
                {
                    let kind = if resp.status.is_server_error() {
                        "5xx"
                    } else {
                        "429"
                    };
                    self.metrics.poll_request(&self.name, kind);
                    let hint = retry_after(&resp);
                    (
                        format!("{} answered {}{}", req.api, resp.status, hint_text(hint)),
                        backoff.next(hint),
                    )
                }
                Ok(resp) => {
                    self.metrics.poll_request(&self.name, "4xx");
                    return Err(PollError::Fatal(format!(
                        "{} answered {}: {}",
                        req.api,
                        resp.status,
                        snippet(&resp.body)
                    )));
                }
            };
            self.metrics.poll_retry(&self.name, &outcome, wait);
            self.sleep(wait).await?;
        }
    }

    /// A 200 the caller could not use (not JSON, a rate-limit error in the
    /// body): log why and wait before asking again.
    ///
    /// # Errors
    ///
    /// [`PollError::Shutdown`] while waiting.
    pub async fn retry_answer(&mut self, reason: &str, wait: Duration) -> Result<(), PollError> {
        self.metrics.poll_retry(&self.name, reason, wait);
        self.sleep(wait).await
    }
}

/// Exponential backoff with jitter: 1 s doubling to 60 s, ±20 %, and an
/// API's own `Retry-After` / `RateLimit-Reset` hint, clamped.
#[derive(Debug)]
pub struct Backoff(u32);

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// The shortest wait a hint can ask for: `Retry-After: 0` on every 429
/// must not become a busy loop.
pub const HINT_MIN: Duration = Duration::from_secs(1);
/// The longest: an API asking for hours is waited on for 15 minutes, then
/// asked again.
pub const HINT_MAX: Duration = Duration::from_secs(15 * 60);

impl Backoff {
    /// Starts at 1 s.
    pub fn new() -> Self {
        Backoff(0)
    }

    /// The next wait: the growing backoff, or the API's hint (clamped to
    /// [`HINT_MIN`]..[`HINT_MAX`]) when that is longer. A hint never
    /// shortens the wait, so repeated 429s with `Retry-After: 0` still back
    /// off further each time.
    pub fn next(&mut self, hint: Option<Duration>) -> Duration {
        self.next_with(hint, 0.8 + rand::random::<f64>() * 0.4)
    }

    /// [`Backoff::next`] with a given jitter factor (0.8–1.2).
    pub fn next_with(&mut self, hint: Option<Duration>, jitter: f64) -> Duration {
        let base = Duration::from_secs(1u64 << self.0.min(6)).min(Duration::from_secs(60));
        self.0 += 1;
        let own = base.mul_f64(jitter);
        match hint {
            Some(h) => h.clamp(HINT_MIN, HINT_MAX).max(own),
            None => own,
        }
    }
}

/// How a hint reads in a log line.
pub fn hint_text(hint: Option<Duration>) -> String {
    hint.map_or_else(String::new, |h| {
        format!(" (it asked for {} s)", h.as_secs())
    })
}

/// A poller of one of the supported APIs.
#[derive(Debug)]
pub enum Poller {
    /// JumpCloud Directory Insights.
    JumpCloud(super::jumpcloud::JumpCloud),
    /// JupiterOne `queryV1`.
    JupiterOne(super::jupiterone::JupiterOne),
}

/// A fixed window for a backfill (RFC 3339); `None` for the live cursor.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Start, inclusive.
    pub since: String,
    /// End, exclusive (default: now − the source's lag).
    pub until: Option<String>,
}

impl Poller {
    /// One cycle: every page from the cursor to now (or over `window`).
    ///
    /// # Errors
    ///
    /// [`PollError`]; pages committed before it stay committed.
    pub async fn cycle(
        &self,
        ctx: &mut PollCtx,
        stats: &mut CycleStats,
        window: Option<&Window>,
    ) -> Result<(), PollError> {
        match self {
            Poller::JumpCloud(p) => p.cycle(ctx, stats, window).await,
            Poller::JupiterOne(p) => p.cycle(ctx, stats, window).await,
        }
    }

    /// Events the API says the window holds, when it can count them.
    pub async fn count(&self, ctx: &mut PollCtx, window: &Window) -> Option<u64> {
        match self {
            Poller::JumpCloud(p) => p.count(ctx, window).await,
            Poller::JupiterOne(_) => None,
        }
    }
}

/// Runs `poller` every `interval` until shutdown or a fatal error, logging
/// each cycle's statistics.
pub async fn run_loop(mut ctx: PollCtx, interval: Duration, poller: Poller) {
    if let PollError::Fatal(reason) = run_cycles(&mut ctx, interval, &poller).await {
        ctx.metrics.poller_stopped(&ctx.name, &reason);
    }
}

/// Runs cycles every `interval` until one ends in an error, and returns it.
pub async fn run_cycles(ctx: &mut PollCtx, interval: Duration, poller: &Poller) -> PollError {
    loop {
        // A pipeline that waits for its transform to be uploaded could not
        // take a page: the API is not polled (its events stay there, and
        // the cursor where it was) until the transform is activated.
        while crate::pipeline::first_waiting(&ctx.pipelines).is_some() {
            if let Err(e) = ctx.sleep(Duration::from_secs(1)).await {
                return e;
            }
        }
        let started = std::time::Instant::now();
        let mut stats = CycleStats::default();
        let result = poller.cycle(ctx, &mut stats, None).await;
        ctx.metrics.poll_cycle(&ctx.name, &stats, started.elapsed());
        if let Err(e) = result {
            return e;
        }
        if let Err(e) = ctx.sleep(interval).await {
            return e;
        }
    }
}

/// Which API host to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// The US service.
    #[default]
    Us,
    /// The EU service.
    Eu,
}

/// Checks a poller's URL override and start (no I/O; reads the clock).
pub(crate) fn validate_common(
    name: &str,
    base_url: Option<&str>,
    proxy: Option<&crate::egress::ProxyConfig>,
    start: &str,
    interval_secs: u64,
    out: &mut Vec<crate::config::Invalid>,
) {
    use crate::config::invalid;
    if let Some(p) = proxy {
        crate::egress::validate(p, &["sources", name, "proxy"], out);
    }
    if let Some(url) = base_url
        && !url.starts_with("https://")
    {
        out.push(invalid(
            &["sources", name, "base_url"],
            "must be an https:// URL (API keys never go in clear text)",
        ));
    }
    match rfc3339_ns(start) {
        None => out.push(invalid(
            &["sources", name, "start"],
            "must be an RFC 3339 time such as 2025-01-01T00:00:00Z",
        )),
        Some(ns) if ns > i128::from(chrono::Utc::now().timestamp()) * 1_000_000_000 => {
            out.push(invalid(&["sources", name, "start"], "is in the future"));
        }
        Some(_) => {}
    }
    if interval_secs == 0 {
        out.push(invalid(
            &["sources", name, "interval_secs"],
            "must be positive",
        ));
    }
}

/// Builds a header, marked sensitive so hyper never prints it.
pub fn secret_header(value: &[u8]) -> Result<hyper::header::HeaderValue, PollError> {
    let mut v = hyper::header::HeaderValue::from_bytes(value).map_err(|_| {
        PollError::Fatal("the API key contains characters not allowed in a header".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// The first 300 characters of a body, for error messages.
pub fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s: String = s.chars().take(300).collect();
    s.replace('\n', " ")
}

/// Parses an RFC 3339 timestamp (0–9 fraction digits) to nanoseconds.
pub fn rfc3339_ns(s: &str) -> Option<i128> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    Some(i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_keeps_ties_and_drops_seen() {
        const MS: i128 = 1_000_000;
        let mut w = Watermark::default();
        assert!(!w.seen(Some(5 * MS), Some("a")));
        w.advance("t5", 5 * MS, Some("a"));
        w.advance("t5", 5 * MS, Some("b"));
        assert!(w.seen(Some(5 * MS), Some("a")) && w.seen(Some(5 * MS), Some("b")));
        assert!(!w.seen(Some(5 * MS), Some("c")), "same ms, new id: kept");
        assert!(w.seen(Some(4 * MS), Some("z")), "older: already past");
        assert!(!w.seen(Some(6 * MS), Some("a")));
        w.advance("t6", 6 * MS, Some("c"));
        assert_eq!(w.ids, BTreeSet::from(["c".to_string()]));
        assert_eq!(w.at.as_deref(), Some("t6"));
        w.advance("t5", 5 * MS, Some("q"));
        assert_eq!(w.at_ns, Some(6 * MS), "never moves back");
    }

    /// The API orders one millisecond's events by id, not by their finer
    /// time: `.218593681` with a smaller id comes before `.218500000`.
    #[test]
    fn events_of_one_millisecond_are_told_apart_by_id_only() {
        let late_fraction = rfc3339_ns("2023-03-07T13:03:42.218593681Z").unwrap();
        let early_fraction = rfc3339_ns("2023-03-07T13:03:42.218500000Z").unwrap();
        let mut w = Watermark::default();
        w.advance("2023-03-07T13:03:42.218593681Z", late_fraction, Some("a1"));
        assert!(
            !w.seen(Some(early_fraction), Some("b2")),
            "a later id in the same millisecond is new, whatever its sub-ms time"
        );
        w.advance("2023-03-07T13:03:42.218500000Z", early_fraction, Some("b2"));
        assert!(w.seen(Some(early_fraction), Some("b2")));
        assert!(w.seen(Some(late_fraction), Some("a1")));
        assert_eq!(w.query_start().as_deref(), Some("2023-03-07T13:03:42.218Z"));
        let next_ms = rfc3339_ns("2023-03-07T13:03:42.219000001Z").unwrap();
        assert!(!w.seen(Some(next_ms), Some("a1")));
    }

    #[test]
    fn timestamps_with_0_to_9_fraction_digits() {
        let a = rfc3339_ns("2023-03-07T13:03:42Z").unwrap();
        let b = rfc3339_ns("2023-03-07T13:03:42.21859368Z").unwrap();
        let c = rfc3339_ns("2023-03-07T13:03:42.218593681Z").unwrap();
        assert!(a < b && b < c);
        assert_eq!(c - b, 1);
    }

    #[test]
    fn backoff_grows_and_honours_hints() {
        let secs = |d: Duration| d.as_secs_f64();
        let mut b = Backoff::new();
        let waits: Vec<f64> = (0..9).map(|_| secs(b.next_with(None, 1.0))).collect();
        assert_eq!(
            waits,
            [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0],
            "doubles to the 60 s cap"
        );
        let mut b = Backoff::new();
        assert_eq!(secs(b.next_with(None, 0.8)), 0.8, "jitter scales it");
        // A hint longer than the backoff wins...
        let mut b = Backoff::new();
        assert_eq!(
            b.next_with(Some(Duration::from_secs(7)), 1.0),
            Duration::from_secs(7)
        );
        // ...is clamped to 15 minutes...
        assert_eq!(
            b.next_with(Some(Duration::from_secs(86_400)), 1.0),
            HINT_MAX
        );
        // ...and `Retry-After: 0` neither spins nor stops the growth.
        let mut b = Backoff::new();
        let zeros: Vec<f64> = (0..4)
            .map(|_| secs(b.next_with(Some(Duration::ZERO), 1.0)))
            .collect();
        assert_eq!(zeros, [1.0, 2.0, 4.0, 8.0]);
    }
}
