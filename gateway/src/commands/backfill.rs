//! `sluice backfill`: run one source's poller over a historic window,
//! through its pipelines into the spool and the sinks, with a progress
//! line on stderr, then stop once the sinks have finished their objects.
//!
//! The window has its own checkpoint (`backfill:<source>:<since>:<until>`),
//! so an interrupted backfill resumes where it stopped, and the live
//! cursor of `sluice run` is not touched.

use super::run::{Core, RunError};
use crate::config::Config;
use crate::metrics::CycleStats;
use crate::sources::poller::{PollError, Window};
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a backfill did.
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
    let core = Core::start(&config).await?;
    let Some((poller, _)) = core.poller(&config, source)? else {
        core.stop().await;
        return Err(BackfillError::NotAPoller(source.to_string()));
    };
    let window = Window {
        since: since.to_string(),
        until: until.map(str::to_string),
    };
    let mut ctx = core.poll_ctx(
        source,
        format!("backfill:{source}:{since}:{}", until.unwrap_or("now")),
    );
    let counting = Instant::now();
    let total = poller.count(&mut ctx, &window).await;
    tracing::info!(source, total = ?total, secs = counting.elapsed().as_secs_f64(), "backfill: counted the window");
    let started = Instant::now();
    let bar = Arc::new(Mutex::new(Progress::new(total)));
    let b = bar.clone();
    ctx.progress = Some(Arc::new(move |events, pages| {
        b.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .update(events, pages);
    }));
    let mut stats = CycleStats::default();
    let result = tokio::select! {
        r = poller.cycle(&mut ctx, &mut stats, Some(&window)) => r,
        () = stop => Err(PollError::Shutdown),
    };
    bar.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .finish();
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
        Err(PollError::Fatal(message)) => Err(BackfillError::Poll {
            source_name: source.to_string(),
            message,
        }),
    }
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

    fn update(&mut self, events: u64, pages: u64) {
        self.events = events;
        self.pages = pages;
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
