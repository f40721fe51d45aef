//! `sluice run`: start every listener, pipeline and sink of a config and
//! run until told to stop.
//!
//! Start-up order matters: the spool opens first (so recovered data is
//! delivered), then transforms are loaded and pinned (a bad component stops
//! sluice before it accepts anything), then sinks start, and listeners last.
//! Shutdown runs the other way: listeners stop accepting and drain, then
//! sinks finish their open objects, then the spool closes. Whatever is not
//! delivered stays in the spool for the next start.

use crate::admin::{self, AdminState, TransformsApi};
use crate::config::{Config, ConfigError, Secrets, SinkConfig, SourceConfig};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineError};
use crate::sinks::{self, ObjectSettings, SinkError};
use crate::sources::jumpcloud::JumpCloud;
use crate::sources::jupiterone::JupiterOne;
use crate::sources::poller::{PollCtx, PollError, Poller, run_loop};
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
    /// The transform store could not be opened.
    #[error("{0}")]
    Store(String),
    /// A pipeline waits for a transform that nothing could upload.
    #[error(
        "{at}: pipeline `{pipeline}` names transform `{transform}`, which is neither a built-in \
         ({builtins}) nor uploaded, and the admin API that would upload it is off: set [admin] token \
         and run `sluice transform push {transform} FILE.wasm --activate`, or fix the name"
    )]
    NothingCanUpload {
        /// Where the reference is.
        at: String,
        /// Pipeline.
        pipeline: String,
        /// The transform.
        transform: String,
        /// The built-in names.
        builtins: String,
    },
    /// A poller could not be set up.
    #[error("source `{source_name}`: {message}")]
    Poller {
        /// The source.
        source_name: String,
        /// Why.
        message: String,
    },
    /// Cluster mode could not start.
    #[error(transparent)]
    Cluster(crate::cluster::ClusterError),
    /// A sink could not start.
    #[error("sink `{sink}`: {source}")]
    Sink {
        /// Sink.
        sink: String,
        /// Why.
        source: SinkError,
    },
}

/// What every long-running command shares: the spool, the pipelines, the
/// sinks (each on its own thread) and the shutdown signal.
pub(crate) struct Core {
    pub(crate) secrets: Secrets,
    pub(crate) state_dir: std::path::PathBuf,
    pub(crate) metrics: Metrics,
    pub(crate) spool: Arc<Spool>,
    pub(crate) pipelines: HashMap<String, Vec<Arc<Pipeline>>>,
    pub(crate) workers: Arc<Semaphore>,
    pub(crate) host: WasmHost,
    pub(crate) store: Arc<crate::store::Store>,
    pub(crate) shutdown_tx: watch::Sender<bool>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Tells the sinks to finish (after everything that feeds them).
    sinks_stop: watch::Sender<bool>,
    /// Makes pollers and their contexts (for `run` and backfills).
    pub(crate) pollers: Pollers,
    sink_threads: Vec<std::thread::JoinHandle<()>>,
}

/// Builds pollers of the config's sources, and the context each runs in.
#[derive(Clone)]
pub(crate) struct Pollers {
    config: Arc<Config>,
    keys: Arc<std::collections::BTreeMap<String, crate::config::SecretValue>>,
    /// Proxy passwords, by `sources.NAME`.
    proxy_passwords: Arc<std::collections::BTreeMap<String, crate::config::SecretValue>>,
    spool: Arc<Spool>,
    pipelines: Arc<HashMap<String, Vec<Arc<Pipeline>>>>,
    workers: Arc<Semaphore>,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Pollers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pollers")
    }
}

impl Pollers {
    /// A poller for source `name`, if it is one, with its interval.
    pub(crate) fn poller(&self, name: &str) -> Result<Option<(Poller, Duration)>, RunError> {
        let err = |e: PollError| RunError::Poller {
            source_name: name.to_string(),
            message: e.to_string(),
        };
        let key = || {
            self.keys
                .get(name)
                .cloned()
                .ok_or_else(|| err(PollError::Fatal("no API key".into())))
        };
        let config = &self.config;
        Ok(match config.sources.get(name) {
            Some(SourceConfig::Jumpcloud(j)) => {
                let ca = j.ca_file.as_deref().map(|p| config.path(p));
                let proxy = self.proxy("sources", name, j.proxy.as_ref()).map_err(err)?;
                let interval = Duration::from_secs(j.interval_secs);
                Some((
                    Poller::JumpCloud(JumpCloud::new(j.clone(), &key()?, ca, proxy).map_err(err)?),
                    interval,
                ))
            }
            Some(SourceConfig::Jupiterone(j)) => {
                let ca = j.ca_file.as_deref().map(|p| config.path(p));
                let proxy = self.proxy("sources", name, j.proxy.as_ref()).map_err(err)?;
                let interval = Duration::from_secs(j.interval_secs);
                Some((
                    Poller::JupiterOne(
                        JupiterOne::new(j.clone(), &key()?, ca, proxy).map_err(err)?,
                    ),
                    interval,
                ))
            }
            _ => None,
        })
    }

    /// The proxy of `kind.name` (its `proxy` table, else `HTTPS_PROXY`).
    fn proxy(
        &self,
        kind: &str,
        name: &str,
        cfg: Option<&crate::egress::ProxyConfig>,
    ) -> Result<Option<crate::egress::Proxy>, PollError> {
        egress_proxy(&self.config, &self.proxy_passwords, kind, name, cfg).map_err(PollError::Fatal)
    }

    /// The context a poller of source `name` runs in, with its cursor
    /// under `checkpoint`.
    pub(crate) fn ctx(&self, name: &str, checkpoint: String) -> PollCtx {
        PollCtx {
            name: name.into(),
            checkpoint,
            spool: self.spool.clone(),
            pipelines: self.pipelines.get(name).cloned().unwrap_or_default(),
            workers: self.workers.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            progress: None,
            fence: None,
        }
    }
}

/// The proxy of source or sink `kind.name`: its `proxy` table (password
/// from `passwords`), else `HTTPS_PROXY`, else none.
pub(crate) fn egress_proxy(
    config: &Config,
    passwords: &std::collections::BTreeMap<String, crate::config::SecretValue>,
    kind: &str,
    name: &str,
    cfg: Option<&crate::egress::ProxyConfig>,
) -> Result<Option<crate::egress::Proxy>, String> {
    crate::egress::Proxy::resolve(
        cfg,
        passwords.get(&format!("{kind}.{name}")).cloned(),
        &|p| config.path(p),
    )
}

/// Where pipeline `pipeline` names `transform`: `file:line:column: \`key\``.
pub(crate) fn use_location(config: &Config, pipeline: &str, transform: &str) -> String {
    let index = config.pipelines.get(pipeline).map_or(0, |p| {
        p.transforms
            .iter()
            .position(|t| t.uses == transform)
            .unwrap_or(0)
    });
    config.locate(&[
        "pipelines",
        pipeline,
        "transforms",
        &index.to_string(),
        "use",
    ])
}

/// The error for a pipeline that waits for `transform` with no admin API.
pub(crate) fn nothing_can_upload(config: &Config, pipeline: &str, transform: &str) -> RunError {
    RunError::NothingCanUpload {
        at: use_location(config, pipeline, transform),
        pipeline: pipeline.into(),
        transform: transform.into(),
        builtins: crate::builtins::names(),
    }
}

impl Core {
    /// Opens the spool, loads and pins every transform, starts the sinks.
    pub(crate) async fn start(config: &Config) -> Result<Self, RunError> {
        let secrets = config.resolve_secrets()?;
        let state_dir = config.state_dir();
        let metrics = Metrics::new();
        for name in config.sinks.keys() {
            metrics.declare_sink(name);
        }
        for (name, s) in &config.sources {
            metrics.declare_source(name, !matches!(s, SourceConfig::Push(_)));
        }
        let sink_names: Vec<String> = config.sinks.keys().cloned().collect();
        let spool = Spool::open(
            &state_dir,
            config.spool.clone(),
            &sink_names,
            metrics.clone(),
        )?;
        for (sink, log) in spool.logs() {
            let (records, bytes) = log.depth();
            if records == 0 {
                continue;
            }
            if config.sinks.contains_key(sink) {
                tracing::info!(
                    sink,
                    records,
                    bytes,
                    "spool holds undelivered records; delivering them"
                );
            } else {
                tracing::warn!(
                    sink,
                    records,
                    bytes,
                    "spool holds records for a sink that is no longer in the config; they are kept. \
                     Put the sink back to deliver them, or drop them with `sluice spool drop --sink NAME`"
                );
            }
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
            count_instructions: false,
        })?;
        let store = Arc::new(
            crate::store::Store::open(&state_dir).map_err(|e| RunError::Store(e.to_string()))?,
        );
        for (name, entry) in store.list() {
            if let Some(v) = entry.active_version() {
                metrics.transform_active(&name, v.version, &v.sha256, None);
            }
        }
        let mut pipelines: HashMap<String, Vec<Arc<Pipeline>>> = HashMap::new();
        for (name, p) in &config.pipelines {
            let built = Pipeline::build(name, p, config, &host, metrics.clone(), Some(&store))?;
            for transform in built.waiting() {
                if secrets.admin_token.is_none() {
                    return Err(nothing_can_upload(config, name, &transform));
                }
                metrics.pipeline_waiting(name, &transform, true);
            }
            pipelines
                .entry(p.source.clone())
                .or_default()
                .push(Arc::new(built));
        }
        let (shutdown_tx, shutdown) = watch::channel(false);
        let instance: Option<Arc<str>> = config.cluster.as_ref().map(|c| c.instance_id().into());
        // Sinks stop last, after the listeners and pollers have finished
        // what they had in flight (see `stop`), so those records are
        // delivered before sluice exits.
        let (sinks_stop, sinks_stopping) = watch::channel(false);
        let handle = tokio::runtime::Handle::current();
        let mut sink_threads = Vec::new();
        for (name, s) in &config.sinks {
            let sink_err = |source| RunError::Sink {
                sink: name.clone(),
                source,
            };
            let naming = sinks::Naming::of(s).map_err(|e| {
                sink_err(SinkError::Io {
                    path: config.file.clone(),
                    message: e.to_string(),
                })
            })?;
            let (spool, metrics, handle, shutdown) = (
                spool.clone(),
                metrics.clone(),
                handle.clone(),
                sinks_stopping.clone(),
            );
            let sink_name: Arc<str> = name.as_str().into();
            let thread = match s {
                SinkConfig::Local(l) => {
                    let store =
                        sinks::local::LocalStore::open(config.path(&l.path)).map_err(sink_err)?;
                    let settings = ObjectSettings {
                        name: sink_name,
                        key: naming.key,
                        object_name: naming.name,
                        encoding: naming.encoding,
                        compression: naming.compression,
                        compression_level: l.compression_level,
                        rotate: l.rotate.clone(),
                        max_in_flight: l.max_in_flight,
                        instance: instance.clone(),
                    };
                    std::thread::Builder::new()
                        .name(format!("sink-{name}"))
                        .spawn(move || {
                            guarded(&settings.name.clone(), &metrics.clone(), || {
                                sinks::delivery::run(
                                    settings, store, spool, metrics, &handle, shutdown,
                                )
                            })
                        })
                }
                SinkConfig::S3(c) => {
                    let proxy =
                        egress_proxy(config, &secrets.proxy, "sinks", name, c.proxy.as_ref())
                            .map_err(|m| sink_err(SinkError::Fatal(m)))?;
                    let client = sinks::s3::client(
                        c,
                        c.ca_file.as_deref().map(|p| config.path(p)).as_deref(),
                        secrets.s3.get(name).cloned(),
                        proxy.as_ref(),
                    )
                    .await
                    .map_err(|m| sink_err(SinkError::Fatal(m)))?;
                    let temp = state_dir.join("sink-tmp").join(name);
                    // Files left here by an earlier process are objects it
                    // was building; their records are in the spool, and an
                    // object recorded before the crash is rebuilt.
                    let _ = std::fs::remove_dir_all(&temp);
                    std::fs::create_dir_all(&temp)
                        .map_err(|e| sink_err(SinkError::io(&temp, &e)))?;
                    let settings = ObjectSettings {
                        name: sink_name,
                        key: naming.key,
                        object_name: naming.name,
                        encoding: naming.encoding,
                        compression: naming.compression,
                        compression_level: c.compression_level,
                        rotate: c.rotate.clone(),
                        max_in_flight: c.max_in_flight,
                        instance: instance.clone(),
                    };
                    let cfg = c.clone();
                    std::thread::Builder::new()
                        .name(format!("sink-{name}"))
                        .spawn(move || {
                            // The connection test proves credentials, TLS, the
                            // owner guard and encryption before the first object.
                            let mut stop = shutdown.clone();
                            let tested = handle.block_on(async {
                                tokio::select! {
                                    r = sinks::s3::S3Store::connection_test(&client, &cfg) => Some(r),
                                    _ = stop.wait_for(|s| *s) => None,
                                }
                            });
                            let Some(tested) = tested else { return };
                            match tested {
                                Ok(key) => tracing::info!(
                                    sink = &*settings.name,
                                    bucket = cfg.bucket.as_str(),
                                    key,
                                    "S3 connection test written"
                                ),
                                Err(f) if f.is_fatal() => {
                                    metrics.sink_failed(&settings.name, &f.code, &f.explain(&cfg));
                                    metrics.sink_stopped(&settings.name, &f.explain(&cfg));
                                    return;
                                }
                                Err(f) => {
                                    metrics.sink_failed(&settings.name, &f.code, &f.explain(&cfg))
                                }
                            }
                            let store = sinks::s3::S3Store::new(client, cfg, handle.clone(), temp);
                            guarded(&settings.name.clone(), &metrics.clone(), || {
                                sinks::delivery::run(settings, store, spool, metrics, &handle, shutdown)
                            });
                        })
                }
            };
            sink_threads.push(thread.map_err(|e| sink_err(SinkError::io(&config.file, &e)))?);
        }
        let workers = Arc::new(Semaphore::new(workers));
        let pollers = Pollers {
            config: Arc::new(config.clone()),
            keys: Arc::new(secrets.api.clone()),
            proxy_passwords: Arc::new(secrets.proxy.clone()),
            spool: spool.clone(),
            pipelines: Arc::new(pipelines.clone()),
            workers: workers.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
        };
        Ok(Self {
            secrets,
            state_dir,
            metrics,
            spool,
            pipelines,
            pollers,
            workers,
            host,
            store,
            shutdown_tx,
            shutdown,
            sinks_stop,
            sink_threads,
        })
    }

    /// Signals shutdown, lets sinks finish their open objects, closes the
    /// spool. Returns the records left undelivered.
    pub(crate) async fn stop(self) -> u64 {
        let _ = self.shutdown_tx.send(true);
        let _ = self.sinks_stop.send(true);
        let threads = self.sink_threads;
        // Blocking joins run off the reactor.
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        let (records, _) = self.spool.depth();
        self.spool.close();
        records
    }
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
    let core = Core::start(&config).await?;
    let state_dir = core.state_dir.clone();
    let shutdown = core.shutdown.clone();

    let mut lines = Vec::new();
    let mut servers = Vec::new();
    let body_budget = push::BodyBudget::new(config.limits.max_body_memory_bytes);
    for (lname, l) in &config.listeners {
        let mut sources = HashMap::new();
        for (sname, s) in &config.sources {
            let SourceConfig::Push(p) = s else { continue };
            if &p.listener != lname {
                continue;
            }
            sources.insert(
                sname.clone(),
                PushSource {
                    name: sname.as_str().into(),
                    config: p.clone(),
                    auth: core
                        .secrets
                        .push
                        .get(sname)
                        .cloned()
                        .unwrap_or(crate::config::ResolvedAuth::None),
                    pipelines: core.pipelines.get(sname).cloned().unwrap_or_default(),
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
            spool: core.spool.clone(),
            metrics: core.metrics.clone(),
            workers: core.workers.clone(),
            body_timeout: Duration::from_secs(l.body_timeout_secs),
            body_budget: body_budget.clone(),
        });
        let limits = ConnLimits {
            max_connections: l.max_connections,
            header_timeout: Duration::from_secs(l.header_timeout_secs),
            idle_timeout: Duration::from_secs(l.idle_timeout_secs),
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
    // Cluster mode: pollers run where they are led (see crate::cluster).
    // etcd need not answer yet; the pollers wait for it, nothing else does.
    let etcd = match &config.cluster {
        Some(c) => {
            let instance = c.instance_id();
            let pollers: Vec<String> = config
                .sources
                .iter()
                .filter(|(_, s)| !matches!(s, SourceConfig::Push(_)))
                .map(|(n, _)| n.clone())
                .collect();
            core.metrics.declare_cluster(&instance, &pollers);
            let etcd =
                crate::cluster::etcd::Etcd::start(c, &|p| config.path(p), core.metrics.clone())
                    .await
                    .map_err(RunError::Cluster)?;
            tracing::info!(
                instance_id = instance.as_str(),
                prefix = c.prefix.as_str(),
                lease_ttl_secs = c.lease_ttl_secs,
                "cluster mode: each poller runs on the one replica that leads it"
            );
            Some((Arc::new(etcd), instance, c.prefix.clone(), c.cursor_commit))
        }
        None => None,
    };
    for name in config.sources.keys() {
        if let Some((poller, interval)) = core.pollers.poller(name)? {
            let ctx = core.pollers.ctx(name, name.clone());
            tracing::info!(
                source = name.as_str(),
                interval_secs = interval.as_secs(),
                "poller started"
            );
            servers.push(match &etcd {
                Some((c, instance, _, mode)) => tokio::spawn(crate::cluster::run_poller(
                    c.clone(),
                    instance.clone(),
                    *mode,
                    ctx,
                    interval,
                    poller,
                )),
                None => tokio::spawn(run_loop(ctx, interval, poller)),
            });
        }
    }

    let token = core.secrets.admin_token.clone();
    let registry = etcd.as_ref().map(|(e, _, prefix, _)| {
        Arc::new(crate::cluster::registry::Registry::new(
            e.etcd_client(),
            prefix,
            core.store.clone(),
        ))
    });
    let transforms = Arc::new(TransformsApi {
        store: core.store.clone(),
        host: core.host.clone(),
        pipelines: core.pipelines.values().flatten().cloned().collect(),
        // Both pin forms: `use = "name@sha256:…"` and `use = "name"` with
        // `sha256 = "…"`. A pinned version cannot be deleted.
        pinned: config
            .pipelines
            .values()
            .flat_map(|p| &p.transforms)
            .filter_map(|t| match &t.sha256 {
                _ if t.uses.contains("@sha256:") => Some(t.uses.to_ascii_lowercase()),
                Some(sha) => Some(format!("{}@sha256:{}", t.uses, sha).to_ascii_lowercase()),
                None => None,
            })
            .collect(),
        max_upload: config.admin.max_upload_bytes,
        swap_lock: tokio::sync::Mutex::new(()),
        registry: registry.clone(),
    });
    // Every replica follows the cluster's registry, with or without an
    // admin token of its own.
    if let Some(registry) = registry {
        let (api, metrics) = (transforms.clone(), core.metrics.clone());
        let mut stop = shutdown.clone();
        servers.push(tokio::spawn(async move {
            tokio::select! {
                () = registry.follow(move |index| {
                    let (api, metrics) = (api.clone(), metrics.clone());
                    Box::pin(async move { admin::apply_cluster(&metrics, &api, &index).await })
                }) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }));
    }
    let transforms = token.as_ref().map(|_| transforms);
    let backfills = token
        .as_ref()
        .map(|_| crate::commands::backfill::Backfills::new(core.pollers.clone()));
    let admin_state = Arc::new(AdminState {
        metrics: core.metrics.clone(),
        spool: core.spool.clone(),
        ready: false.into(),
        token,
        transforms,
        backfills,
    });
    let admin_tls = match &config.admin.tls {
        Some(t) => Some(
            server_tls(t, |p| config.path(p), &state_dir).map_err(|source| RunError::Tls {
                listener: "admin".into(),
                source,
            })?,
        ),
        None => None,
    };
    let admin_listener = bind(config.admin.address, "admin").await?;
    let admin_address = admin_listener.local_addr().unwrap_or(config.admin.address);
    lines.push(match &admin_tls {
        Some(t) => format!(
            "admin https://{admin_address} sha256={} cert={}",
            t.fingerprint,
            t.cert_path.display()
        ),
        None => format!("admin http://{admin_address}"),
    });
    let st = admin_state.clone();
    // The admin listener stays up until everything else has stopped, so
    // `/readyz` answers 503 (rather than refusing connections) while
    // requests drain and sinks finish, and `/metrics` can be read.
    let (admin_stop, admin_shutdown) = watch::channel(false);
    let admin_task = tokio::spawn(server::serve(
        admin_listener,
        admin_tls.map(|t| tokio_rustls::TlsAcceptor::from(t.config)),
        ConnLimits {
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        },
        move |req| admin::handle(st.clone(), req),
        admin_shutdown,
    ));

    // `sluice backfill` beside this gateway finds the admin API here
    // (its address may come from port 0).
    if let Some(line) = lines.last() {
        let line = line
            .replace("://0.0.0.0:", "://127.0.0.1:")
            .replace("://[::]:", "://[::1]:");
        if let Err(e) = std::fs::write(state_dir.join("admin.url"), format!("{line}\n")) {
            tracing::warn!(error = %e, "cannot write state_dir/admin.url; `sluice backfill` will not find the admin API");
        }
    }
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
    let _ = core.shutdown_tx.send(true);
    for s in servers {
        let _ = s.await;
    }
    let undelivered = core.stop().await;
    let _ = admin_stop.send(true);
    let _ = admin_task.await;
    tracing::info!(
        undelivered,
        "stopped; undelivered records stay in the spool"
    );
    Ok(())
}

/// Runs a sink's loop; if it panics, the sink is marked stopped (metric,
/// `/readyz`, log) instead of vanishing without a word. Its records stay
/// in the spool for the next start.
fn guarded(sink: &str, metrics: &Metrics, f: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        metrics.sink_stopped(sink, &format!("the sink's thread failed: {what}"));
    }
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
