//! `sluice backfill`: run one source's poller over a historic window,
//! through its pipelines into the spool and the sinks, with a progress
//! line on stderr.
//!
//! Only one process may use a state folder (see `spool::lock`). When a
//! gateway holds it, the backfill runs inside that gateway through its
//! admin API (`POST /v1/backfills`, [`Backfills`]), beside live traffic,
//! and the CLI shows its progress; otherwise the CLI runs it on its own
//! and stops once the sinks have finished their objects.
//!
//! The window has its own checkpoint (`backfill:<source>:<since>:<until>`),
//! so an interrupted backfill resumes where it stopped, and the live
//! cursor of `sluice run` is not touched.

use super::admin_client::{AdminError, AdminTarget};
use super::run::{Core, Pollers, RunError};
use crate::config::Config;
use crate::metrics::CycleStats;
use crate::pipeline::PipelineError;
use crate::sources::poller::{PollCtx, PollError, Poller, Window};
use crate::util::lock;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What a standalone backfill did.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Per-cycle figures.
    pub stats: CycleStats,
    /// Wall time.
    pub elapsed: Duration,
    /// Records left in the spool (not yet delivered).
    pub undelivered: u64,
    /// Time spent after the last page: sinks finishing their objects.
    pub flush: Duration,
}

/// Why a backfill failed.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// Start-up failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The source is not a poller.
    #[error("source `{0}` is not a poller (backfill works on jumpcloud and jupiterone sources)")]
    NotAPoller(String),
    /// A window bound is not an RFC 3339 time, or they are in the wrong order.
    #[error("{0}")]
    Window(String),
    /// The poller stopped on an error.
    #[error("source `{source_name}`: {message}")]
    Poll {
        /// The source.
        source_name: String,
        /// Why.
        message: String,
    },
    /// The running gateway could not be asked, or refused.
    #[error("the gateway that holds the state folder: {0}")]
    Gateway(#[from] AdminError),
    /// A gateway holds the state folder but cannot run backfills.
    #[error("{0}")]
    NoAdmin(String),
}

/// Checks a window's bounds.
///
/// # Errors
///
/// [`BackfillError::Window`].
pub fn window(since: &str, until: Option<&str>) -> Result<Window, BackfillError> {
    let parse = |what: &str, t: &str| {
        crate::sources::poller::rfc3339_ns(t)
            .ok_or_else(|| BackfillError::Window(format!("--{what} {t:?} is not an RFC 3339 time")))
    };
    let from = parse("since", since)?;
    if let Some(u) = until
        && parse("until", u)? <= from
    {
        return Err(BackfillError::Window(
            "--until must be after --since".into(),
        ));
    }
    Ok(Window {
        since: since.to_string(),
        until: until.map(str::to_string),
    })
}

fn checkpoint_key(source: &str, w: &Window) -> String {
    format!(
        "backfill:{source}:{}:{}",
        w.since,
        w.until.as_deref().unwrap_or("now")
    )
}

/// Runs `poller` over `window`: counts it first (when the API can), then
/// reports every committed page to `on_page(events, pages, total)`.
async fn run_window(
    poller: &Poller,
    ctx: &mut PollCtx,
    window: &Window,
    stats: &mut CycleStats,
    on_page: Arc<dyn Fn(u64, u64, Option<u64>) + Send + Sync>,
) -> Result<(), PollError> {
    let counting = Instant::now();
    let total = poller.count(ctx, window).await;
    tracing::info!(source = &*ctx.name, total = ?total, secs = counting.elapsed().as_secs_f64(), "backfill: counted the window");
    on_page(0, 0, total);
    ctx.progress = Some(Arc::new(move |events, pages| on_page(events, pages, total)));
    poller.cycle(ctx, stats, Some(window)).await
}

/// Runs the backfill; stops early (keeping what was committed) when `stop`
/// completes.
///
/// # Errors
///
/// [`BackfillError`].
pub async fn backfill(
    config: Config,
    source: &str,
    since: &str,
    until: Option<&str>,
    stop: impl Future<Output = ()>,
) -> Result<Summary, BackfillError> {
    let window = window(since, until)?;
    let core = Core::start(&config).await?;
    let Some((poller, _)) = core.pollers.poller(source)? else {
        core.stop().await;
        return Err(BackfillError::NotAPoller(source.to_string()));
    };
    let mut ctx = core.pollers.ctx(source, checkpoint_key(source, &window));
    if let Some((pipeline, transform)) = crate::pipeline::first_waiting(&ctx.pipelines) {
        core.stop().await;
        return Err(BackfillError::Run(RunError::Pipeline(
            PipelineError::Waiting {
                pipeline: pipeline.to_string(),
                transform,
            },
        )));
    }
    let started = Instant::now();
    let bar = Arc::new(Mutex::new(Progress::new(None)));
    let b = bar.clone();
    let on_page = Arc::new(move |events, pages, total| {
        lock(&b).update(events, pages, total);
    });
    let mut stats = CycleStats::default();
    let result = tokio::select! {
        r = run_window(&poller, &mut ctx, &window, &mut stats, on_page) => r,
        () = stop => Err(PollError::Shutdown),
    };
    lock(&bar).finish();
    let elapsed = started.elapsed();
    core.metrics.poll_cycle(source, &stats, elapsed);
    let flushing = Instant::now();
    let undelivered = core.stop().await;
    let flush = flushing.elapsed();
    match result {
        Ok(()) | Err(PollError::Shutdown) => Ok(Summary {
            stats,
            elapsed,
            undelivered,
            flush,
        }),
        // A backfill has no fence (its window is its own), so it is never
        // deposed; were it, that would end it as an error would.
        Err(PollError::Fatal(message) | PollError::Deposed(message)) => Err(BackfillError::Poll {
            source_name: source.to_string(),
            message,
        }),
    }
}

/// A backfill as the admin API reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Its id in this gateway.
    pub id: u64,
    /// The source.
    pub source: String,
    /// Window start.
    pub since: String,
    /// Window end (`None`: now minus the source's lag).
    pub until: Option<String>,
    /// `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    /// Events the API says the window holds, when it can count them.
    pub total: Option<u64>,
    /// Events spooled so far.
    pub events: u64,
    /// Pages committed so far.
    pub pages: u64,
    /// API requests made.
    pub requests: u64,
    /// Events received.
    pub received: u64,
    /// Events already spooled by an earlier run of the window.
    pub duplicates: u64,
    /// Seconds since it started.
    pub elapsed_secs: f64,
    /// Why it failed.
    pub error: Option<String>,
}

struct Job {
    status: Arc<Mutex<Status>>,
    started: Instant,
    cancel: watch::Sender<bool>,
}

/// Backfills running inside a gateway, started through its admin API.
#[derive(Debug)]
pub struct Backfills {
    pollers: Pollers,
    jobs: Mutex<BTreeMap<u64, Job>>,
    next: AtomicU64,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Backfills {
    pub(crate) fn new(pollers: Pollers) -> Arc<Self> {
        Arc::new(Self {
            pollers,
            jobs: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
        })
    }

    /// Starts a backfill of `source` over a window, beside live traffic.
    /// A window already running is not started twice: its status is
    /// returned.
    ///
    /// # Errors
    ///
    /// [`BackfillError`] for a bad window or a source that is not a poller.
    pub fn start(
        self: &Arc<Self>,
        source: &str,
        since: &str,
        until: Option<&str>,
    ) -> Result<Status, BackfillError> {
        let window = window(since, until)?;
        let Some((poller, _)) = self.pollers.poller(source)? else {
            return Err(BackfillError::NotAPoller(source.to_string()));
        };
        let mut jobs = lock(&self.jobs);
        if let Some(job) = jobs.values().find(|j| {
            let s = lock(&j.status);
            s.state == "running"
                && s.source == source
                && s.since == since
                && s.until.as_deref() == until
        }) {
            return Ok(self.snapshot(job));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let status = Arc::new(Mutex::new(Status {
            id,
            source: source.to_string(),
            since: since.to_string(),
            until: until.map(str::to_string),
            state: "running".into(),
            ..Status::default()
        }));
        let (cancel, mut cancelled) = watch::channel(false);
        let job = Job {
            status: status.clone(),
            started: Instant::now(),
            cancel,
        };
        let first = self.snapshot(&job);
        jobs.insert(id, job);
        drop(jobs);
        let mut ctx = self.pollers.ctx(source, checkpoint_key(source, &window));
        let metrics = ctx.metrics.clone();
        let name = source.to_string();
        tracing::info!(
            source,
            since,
            until,
            id,
            "backfill started through the admin API"
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let st = status.clone();
            let on_page = Arc::new(move |events, pages, total| {
                let mut s = lock(&st);
                s.events = events;
                s.pages = pages;
                s.total = total;
            });
            let mut stats = CycleStats::default();
            let result = tokio::select! {
                r = run_window(&poller, &mut ctx, &window, &mut stats, on_page) => r,
                _ = cancelled.changed() => Err(PollError::Shutdown),
            };
            metrics.poll_cycle(&name, &stats, started.elapsed());
            let mut s = lock(&status);
            s.requests = stats.requests;
            s.received = stats.received;
            s.duplicates = stats.duplicates;
            s.events = stats.spooled;
            s.pages = stats.pages;
            s.state = match result {
                Ok(()) => "done".into(),
                Err(PollError::Shutdown) => "cancelled".into(),
                Err(PollError::Fatal(why) | PollError::Deposed(why)) => {
                    s.error = Some(why);
                    "failed".into()
                }
            };
            tracing::info!(
                source = name.as_str(),
                id,
                state = s.state.as_str(),
                events = s.events,
                "backfill ended"
            );
        });
        Ok(first)
    }

    fn snapshot(&self, job: &Job) -> Status {
        let mut s = lock(&job.status).clone();
        s.elapsed_secs = job.started.elapsed().as_secs_f64();
        s
    }

    /// A backfill's status.
    pub fn status(&self, id: u64) -> Option<Status> {
        lock(&self.jobs).get(&id).map(|j| self.snapshot(j))
    }

    /// Stops a backfill; what it committed stays, and starting the same
    /// window again resumes it.
    pub fn cancel(&self, id: u64) -> Option<Status> {
        let jobs = lock(&self.jobs);
        let job = jobs.get(&id)?;
        let _ = job.cancel.send(true);
        Some(self.snapshot(job))
    }
}

/// The admin API of the gateway that holds `config`'s state folder: its
/// address from `state_dir/admin.url` (written at start), the token from
/// the config.
///
/// # Errors
///
/// [`BackfillError::NoAdmin`] when the gateway cannot take backfills.
pub fn gateway_target(config: &Config) -> Result<AdminTarget, BackfillError> {
    let dir = config.state_dir();
    let no = |why: String| {
        BackfillError::NoAdmin(format!(
            "a running gateway holds {} and backfills run inside it through its admin API, but {why}",
            dir.display()
        ))
    };
    let token = match &config.admin.token {
        Some(t) => t.resolve().map_err(|e| no(format!("[admin] token: {e}")))?,
        None => return Err(no("the config sets no [admin] token".into())),
    };
    let line = std::fs::read_to_string(dir.join("admin.url"))
        .map_err(|e| no(format!("state_dir/admin.url: {e}")))?;
    let mut words = line.split_whitespace();
    let url = match (words.next(), words.next()) {
        (Some("admin"), Some(url)) => url.to_string(),
        _ => return Err(no("state_dir/admin.url is not an admin line".into())),
    };
    let ca_file = words
        .find_map(|w| w.strip_prefix("cert="))
        .map(std::path::PathBuf::from);
    Ok(AdminTarget {
        url,
        token: String::from_utf8_lossy(token.expose()).into_owned(),
        ca_file,
    })
}

/// Runs a backfill inside the gateway at `target`, drawing its progress
/// until it ends; `stop` cancels it (what it committed stays).
///
/// # Errors
///
/// [`BackfillError`]: the gateway refused, or the backfill failed.
pub async fn through_gateway(
    target: &AdminTarget,
    source: &str,
    since: &str,
    until: Option<&str>,
    stop: impl Future<Output = ()>,
) -> Result<Status, BackfillError> {
    window(since, until)?;
    let started: Status = from_json(target.start_backfill(source, since, until).await?)?;
    let id = started.id;
    let mut bar = Progress::new(None);
    tokio::pin!(stop);
    let status = loop {
        let status: Status = from_json(target.backfill(id).await?)?;
        bar.update(status.events, status.pages, status.total);
        if status.state != "running" {
            break status;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            () = &mut stop => {
                let _ = target.cancel_backfill(id).await;
            }
        }
    };
    bar.finish();
    match status.state.as_str() {
        "failed" => Err(BackfillError::Poll {
            source_name: source.to_string(),
            message: status.error.unwrap_or_default(),
        }),
        _ => Ok(status),
    }
}

fn from_json(v: serde_json::Value) -> Result<Status, BackfillError> {
    serde_json::from_value(v)
        .map_err(|e| BackfillError::Gateway(AdminError::Client(format!("unexpected answer: {e}"))))
}

/// The progress line: events, pages, rate, and percent and ETA when the
/// API gave a total. Redrawn in place on a terminal, a line every 2 s
/// otherwise.
struct Progress {
    total: Option<u64>,
    started: Instant,
    last_draw: Option<Instant>,
    events: u64,
    pages: u64,
    tty: bool,
}

impl Progress {
    fn new(total: Option<u64>) -> Self {
        Self {
            total,
            started: Instant::now(),
            last_draw: None,
            events: 0,
            pages: 0,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, events: u64, pages: u64, total: Option<u64>) {
        self.events = events;
        self.pages = pages;
        self.total = total.or(self.total);
        let every = if self.tty {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(2)
        };
        if self.last_draw.is_none_or(|t| t.elapsed() >= every) {
            self.draw(false);
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.events as f64 / secs;
        let mut line = format!(
            "backfill: {} events, {} pages, {rate:.0} events/s",
            self.events, self.pages
        );
        if let Some(total) = self.total.filter(|t| *t > 0) {
            let done = (self.events as f64 / total as f64).min(1.0);
            let width = 30;
            let filled = (done * width as f64) as usize;
            let eta = if rate > 0.0 {
                (total.saturating_sub(self.events)) as f64 / rate
            } else {
                0.0
            };
            line = format!(
                "[{}{}] {:>3.0}% {line}, ETA {}",
                "#".repeat(filled),
                "-".repeat(width - filled),
                done * 100.0,
                format_secs(eta)
            );
        }
        line
    }

    fn draw(&mut self, last: bool) {
        self.last_draw = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(
                err,
                "\r\x1b[2K{}{}",
                self.line(),
                if last { "\n" } else { "" }
            )
        } else {
            writeln!(err, "{}", self.line())
        };
        let _ = err.flush();
    }

    fn finish(&mut self) {
        self.draw(true);
    }
}

fn format_secs(s: f64) -> String {
    let s = s.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
