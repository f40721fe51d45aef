//! `sluice run`: start every listener, pipeline and sink of a config and
//! run until told to stop.
//!
//! Start-up order matters: the spool opens first (so recovered data is
//! delivered), then transforms are loaded and pinned (a bad component stops
//! sluice before it accepts anything), then sinks start, and listeners last.
//! Shutdown runs the other way: listeners stop accepting and drain, then
//! sinks finish their open objects, then the spool closes. Whatever is not
//! delivered stays in the spool for the next start.

use crate::admin::{self, AdminState};
use crate::config::{Config, ConfigError, SinkConfig, SourceConfig};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineError};
use crate::sinks::key::KeyTemplate;
use crate::sinks::{self, ObjectSettings, SinkError};
use crate::sources::push::{self, PushSource, PushState};
use crate::sources::server::{self, ConnLimits};
use crate::spool::{Spool, SpoolError};
use crate::tls::{TlsError, server_tls};
use crate::wasm::{HostConfig, WasmError, WasmHost};
use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Why `sluice run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config is invalid or a secret is unreadable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The wasm engine could not start.
    #[error(transparent)]
    Wasm(#[from] WasmError),
    /// A pipeline could not be built.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A listener's TLS setup failed.
    #[error("listener `{listener}`: {source}")]
    Tls {
        /// Listener.
        listener: String,
        /// Why.
        source: TlsError,
    },
    /// An address could not be bound.
    #[error("cannot listen on {address} ({what}): {source}")]
    Bind {
        /// What the listener is for.
        what: String,
        /// The address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A sink could not start.
    #[error("sink `{sink}`: {source}")]
    Sink {
        /// Sink.
        sink: String,
        /// Why.
        source: SinkError,
    },
}

/// Runs the gateway until `stop` completes.
///
/// Once everything is up it prints one line per listener to stdout
/// (`listening <name> https://<address> sha256=<fingerprint>`, and
/// `admin http://<address>`), so scripts and tests can find ports chosen
/// with port 0.
///
/// # Errors
///
/// [`RunError`] when start-up fails; nothing is accepted then.
pub async fn run(config: Config, stop: impl Future<Output = ()>) -> Result<(), RunError> {
    let auth = config.resolve_secrets()?;
    let state_dir = config.state_dir();
    let metrics = Metrics::new();
    let spool = Spool::open(&state_dir, config.spool.clone())?;
    let (records, bytes) = spool.depth();
    if records > 0 {
        tracing::info!(
            records,
            bytes,
            "spool holds undelivered records; delivering them"
        );
    }

    let workers = match config.limits.workers {
        0 => std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
        n => n,
    };
    let instances: usize = config
        .pipelines
        .values()
        .map(Pipeline::instances_per_call)
        .sum::<usize>()
        * (workers + 1);
    let host = WasmHost::new(HostConfig {
        deadline: Duration::from_millis(config.limits.transform_deadline_ms),
        memory_cap: (config.limits.transform_memory_mib as usize) << 20,
        max_instances: u32::try_from(instances + 8).unwrap_or(u32::MAX),
        // $SLUICE_CACHE_DIR lets several gateways (or test runs) share
        // compiled components; by default the cache lives with the state.
        cache_dir: Some(
            std::env::var_os("SLUICE_CACHE_DIR")
                .map_or_else(|| state_dir.join("cache"), Into::into),
        ),
    })?;
    let mut pipelines: HashMap<String, Vec<Arc<Pipeline>>> = HashMap::new();
    for (name, p) in &config.pipelines {
        let built = Pipeline::build(name, p, &config, &host, metrics.clone())?;
        pipelines
            .entry(p.source.clone())
            .or_default()
            .push(Arc::new(built));
    }

    let (shutdown_tx, shutdown) = watch::channel(false);
    let handle = tokio::runtime::Handle::current();
    let mut sink_threads = Vec::new();
    for (name, s) in &config.sinks {
        let SinkConfig::Local(l) = s;
        let store = sinks::local::LocalStore::open(config.path(&l.path)).map_err(|source| {
            RunError::Sink {
                sink: name.clone(),
                source,
            }
        })?;
        let settings = ObjectSettings {
            name: name.as_str().into(),
            // Validated by `Config::load`.
            key: KeyTemplate::parse(&l.key).map_err(|e| RunError::Sink {
                sink: name.clone(),
                source: SinkError::Io {
                    path: config.file.clone(),
                    message: e.to_string(),
                },
            })?,
            encoding: l.encoding,
            compression: l.compression,
            compression_level: l.compression_level,
            rotate: l.rotate.clone(),
        };
        let (spool, metrics, handle, shutdown) = (
            spool.clone(),
            metrics.clone(),
            handle.clone(),
            shutdown.clone(),
        );
        sink_threads.push(
            std::thread::Builder::new()
                .name(format!("sink-{name}"))
                .spawn(move || sinks::run(settings, store, spool, metrics, &handle, shutdown))
                .map_err(|e| RunError::Sink {
                    sink: name.clone(),
                    source: SinkError::io(&config.file, &e),
                })?,
        );
    }

    let mut lines = Vec::new();
    let mut servers = Vec::new();
    let worker_slots = Arc::new(Semaphore::new(workers));
    for (lname, l) in &config.listeners {
        let mut sources = HashMap::new();
        for (sname, s) in &config.sources {
            let SourceConfig::Push(p) = s;
            if &p.listener != lname {
                continue;
            }
            sources.insert(
                sname.clone(),
                PushSource {
                    name: sname.as_str().into(),
                    config: p.clone(),
                    auth: auth
                        .get(sname)
                        .cloned()
                        .unwrap_or(crate::config::ResolvedAuth::None),
                    pipelines: pipelines.get(sname).cloned().unwrap_or_default(),
                },
            );
        }
        let tls =
            server_tls(&l.tls, |p| config.path(p), &state_dir).map_err(|source| RunError::Tls {
                listener: lname.clone(),
                source,
            })?;
        let listener = bind(l.address, &format!("listener {lname}")).await?;
        let address = listener.local_addr().unwrap_or(l.address);
        lines.push(format!(
            "listening {lname} https://{address} sha256={} cert={}",
            tls.fingerprint,
            tls.cert_path.display()
        ));
        tracing::info!(listener = lname.as_str(), %address, fingerprint = tls.fingerprint.as_str(), "HTTPS listener up");
        let state = Arc::new(PushState {
            sources,
            spool: spool.clone(),
            metrics: metrics.clone(),
            workers: worker_slots.clone(),
        });
        let limits = ConnLimits {
            max_connections: l.max_connections,
            header_timeout: Duration::from_secs(l.header_timeout_secs),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
        servers.push(tokio::spawn(server::serve(
            listener,
            Some(acceptor),
            limits,
            move |req| push::handle(state.clone(), req),
            shutdown.clone(),
        )));
    }

    let admin_state = Arc::new(AdminState {
        metrics: metrics.clone(),
        spool: spool.clone(),
        ready: false.into(),
    });
    let admin_listener = bind(config.admin.address, "admin").await?;
    let admin_address = admin_listener.local_addr().unwrap_or(config.admin.address);
    lines.push(format!("admin http://{admin_address}"));
    let st = admin_state.clone();
    let admin_task = tokio::spawn(server::serve(
        admin_listener,
        None,
        ConnLimits {
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
        },
        move |req| admin::handle(st.clone(), req),
        shutdown.clone(),
    ));

    admin_state.ready.store(true, Ordering::Release);
    {
        let mut out = std::io::stdout().lock();
        for line in &lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
    tracing::info!(state_dir = %state_dir.display(), "sluice is running");

    stop.await;
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    admin_state.ready.store(false, Ordering::Release);
    let _ = shutdown_tx.send(true);
    for s in servers {
        let _ = s.await;
    }
    // Sinks finish their open objects; blocking joins run off the reactor.
    let _ = tokio::task::spawn_blocking(move || {
        for t in sink_threads {
            let _ = t.join();
        }
    })
    .await;
    let _ = admin_task.await;
    let (records, _) = spool.depth();
    spool.close();
    tracing::info!(
        undelivered = records,
        "stopped; undelivered records stay in the spool"
    );
    Ok(())
}

async fn bind(address: SocketAddr, what: &str) -> Result<TcpListener, RunError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| RunError::Bind {
            what: what.to_string(),
            address,
            source,
        })
}
