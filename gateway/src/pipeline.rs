//! Pipelines: a source's records through an ordered list of transforms,
//! into spool rows for a sink.
//!
//! Each pipeline keeps a pool of idle "worker sets" (one [`Worker`] per
//! transform). A call checks one out, so every instance is used by one
//! thread at a time, and returns it afterwards; the gateway's shared
//! semaphore bounds how many run at once. A trap, deadline or memory-cap
//! hit fails a batch: the batch is then retried one record at a time, so
//! only the record that caused it is dead-lettered.

use crate::config::{Config, FailPolicy, PipelineConfig, Secret, config_value_string};
use crate::metrics::{BatchCounts, Metrics};
use crate::spool::NewRow;
use crate::wasm::{InputRecord, TransformComponent, WasmError, WasmHost, Worker, error_kind_str};
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Why a pipeline could not be built. sluice refuses to start on any.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The transform could not be found or loaded.
    #[error("{at}: pipeline `{pipeline}`, transform `{transform}`: {source}")]
    Load {
        /// Where the reference is: `file:line:column: \`key\``.
        at: String,
        /// Pipeline.
        pipeline: String,
        /// Transform reference.
        transform: String,
        /// Why.
        source: Box<crate::builtins::ResolveError>,
    },
    /// The component is not the pinned one.
    #[error(
        "pipeline `{pipeline}`, transform `{transform}`: sha256 is {actual}, but the config pins {expected}; \
         refusing to start (update the pin if the new component is intended)"
    )]
    PinMismatch {
        /// Pipeline.
        pipeline: String,
        /// Transform reference.
        transform: String,
        /// The pin.
        expected: String,
        /// What was loaded.
        actual: String,
    },
    /// A `${env:…}` or `${file:…}` value in a transform's config could not
    /// be read.
    #[error("pipeline `{pipeline}`, transform `{transform}`, config `{key}`: {message}")]
    Secret {
        /// Pipeline.
        pipeline: String,
        /// Transform reference.
        transform: String,
        /// The config key.
        key: String,
        /// Why (never the value).
        message: String,
    },
    /// The pipeline names a transform that is not uploaded yet; it runs
    /// once a version is activated.
    #[error(
        "pipeline `{pipeline}` waits for transform `{transform}`: upload and activate it \
         (sluice transform push {transform} FILE.wasm --activate)"
    )]
    Waiting {
        /// Pipeline.
        pipeline: String,
        /// The transform it waits for.
        transform: String,
    },
    /// The transform rejected its config, or could not be instantiated.
    #[error("pipeline `{pipeline}`: {source}")]
    Instantiate {
        /// Pipeline.
        pipeline: String,
        /// Why.
        source: Box<WasmError>,
    },
}

/// One transform of a pipeline.
#[derive(Debug, Clone)]
struct Step {
    label: String,
    /// `None` while the step waits for its transform to be uploaded.
    component: Option<TransformComponent>,
    config: Vec<(String, String)>,
    policy: FailPolicy,
    /// The uploaded transform this step follows (it changes on activation),
    /// or `None` for a fixed one (built-in, file or pinned).
    follows: Option<String>,
}

/// The steps in use, and which generation they are. A worker set belongs
/// to one generation; a set of an older one is dropped instead of reused.
#[derive(Debug)]
struct Steps {
    generation: u64,
    steps: Vec<Step>,
}

/// A swap that passed validation and can be committed.
#[derive(Debug)]
pub struct PreparedSwap {
    steps: Vec<Step>,
}

/// A record in flight between steps.
struct Item {
    /// Index into the pipeline's input, for the original bytes.
    origin: usize,
    /// Its bytes: a copy of the input at first, then a slice of the answer
    /// of the step that emitted it (see `OutputRecord`), which the next step
    /// and the spool read in place.
    data: Bytes,
    route: Option<String>,
    metadata: Vec<(String, String)>,
}

/// A built pipeline.
pub struct Pipeline {
    /// Its name in the config.
    pub name: Arc<str>,
    /// The source feeding it.
    pub source: Arc<str>,
    route: String,
    sink: Arc<str>,
    dead_letter_sink: Arc<str>,
    batch_size: usize,
    /// Swapped whole on activation. Concurrency: a call takes the `Arc`
    /// once and runs every batch of its input on that generation, so
    /// batches in flight finish on the old instances while new calls use
    /// the new ones; no record is run twice or skipped.
    steps: std::sync::RwLock<Arc<Steps>>,
    idle: Mutex<Vec<(u64, Vec<Worker>)>>,
    metrics: Metrics,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Route given to dead letters.
pub const DEAD_LETTER_ROUTE: &str = "dead_letter";

impl Pipeline {
    /// Loads and pins every transform and instantiates one worker set, so a
    /// bad component or config stops sluice before any data flows.
    ///
    /// # Errors
    ///
    /// [`PipelineError`].
    ///
    /// A step naming a transform that is neither a built-in nor uploaded
    /// (a plain name, no pin, no path) does not fail: the pipeline is built
    /// waiting for it (see [`Pipeline::waiting`]) and comes up on the
    /// first activation of that name.
    pub fn build(
        name: &str,
        cfg: &PipelineConfig,
        config: &Config,
        host: &WasmHost,
        metrics: Metrics,
        store: Option<&crate::store::Store>,
    ) -> Result<Self, PipelineError> {
        let mut steps = Vec::new();
        for (index, t) in cfg.transforms.iter().enumerate() {
            let index = index.to_string();
            let load_err = |source| PipelineError::Load {
                at: config.locate(&["pipelines", name, "transforms", &index, "use"]),
                pipeline: name.into(),
                transform: t.uses.clone(),
                source: Box::new(source),
            };
            let (component, follows) =
                match resolve(&t.uses, t.sha256.as_deref(), config, host, store) {
                    Ok((component, follows)) => (Some(component), follows),
                    Err(crate::builtins::ResolveError::Unknown { .. })
                        if can_wait_for(&t.uses, t.sha256.as_deref()) =>
                    {
                        (None, Some(t.uses.clone()))
                    }
                    Err(e) => return Err(load_err(e)),
                };
            if let (Some(pin), Some(component)) = (&t.sha256, &component)
                && !pin.eq_ignore_ascii_case(component.sha256())
            {
                return Err(PipelineError::PinMismatch {
                    pipeline: name.into(),
                    transform: t.uses.clone(),
                    expected: pin.to_ascii_lowercase(),
                    actual: component.sha256().to_string(),
                });
            }
            // Values may be secrets (an HMAC key for `redact`): `${env:…}`
            // and `${file:…}` are read here, and passed only to the guest.
            let mut config = Vec::with_capacity(t.config.len());
            for (k, v) in &t.config {
                let Some(text) = config_value_string(v) else {
                    continue;
                };
                let value = match Secret::parse(&text) {
                    Ok(Secret::Literal(_)) | Err(_) => text,
                    Ok(secret) => {
                        let resolved =
                            secret.resolve().map_err(|message| PipelineError::Secret {
                                pipeline: name.into(),
                                transform: t.uses.clone(),
                                key: k.clone(),
                                message,
                            })?;
                        String::from_utf8_lossy(resolved.expose()).into_owned()
                    }
                };
                config.push((k.clone(), value));
            }
            steps.push(Step {
                label: follows.clone().unwrap_or_else(|| t.uses.clone()),
                component,
                config,
                policy: t.on_error,
                follows: follows.filter(|_| t.sha256.is_none()),
            });
        }
        let pipeline = Self {
            name: name.into(),
            source: cfg.source.as_str().into(),
            route: cfg.route.clone().unwrap_or_else(|| cfg.source.clone()),
            sink: cfg.sink.as_str().into(),
            dead_letter_sink: cfg.dead_letter_sink.as_deref().unwrap_or(&cfg.sink).into(),
            batch_size: cfg.batch_size,
            steps: std::sync::RwLock::new(Arc::new(Steps {
                generation: 0,
                steps,
            })),
            idle: Mutex::new(Vec::new()),
            metrics,
        };
        if pipeline.waiting().is_empty() {
            let current = pipeline.current();
            let set = pipeline.new_worker_set(&current.steps)?;
            pipeline.checkin(current.generation, set);
        }
        Ok(pipeline)
    }

    /// The transforms this pipeline waits for (named in the config, not
    /// uploaded yet); empty once it runs.
    pub fn waiting(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .current()
            .steps
            .iter()
            .filter(|s| s.component.is_none())
            .filter_map(|s| s.follows.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Each step's transform and the sha256 it runs (`None` while it waits
    /// for its first upload), in order.
    pub fn steps(&self) -> Vec<(String, Option<String>)> {
        self.current()
            .steps
            .iter()
            .map(|s| {
                (
                    s.label.clone(),
                    s.component.as_ref().map(|c| c.sha256().to_string()),
                )
            })
            .collect()
    }

    /// The configs of the steps that follow `transform` (what an
    /// activation of it will instantiate it with).
    pub fn configs_for(&self, transform: &str) -> Vec<Vec<(String, String)>> {
        self.current()
            .steps
            .iter()
            .filter(|s| s.follows.as_deref() == Some(transform))
            .map(|s| s.config.clone())
            .collect()
    }

    fn current(&self) -> Arc<Steps> {
        self.steps
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The uploaded transforms this pipeline follows.
    pub fn follows(&self) -> Vec<String> {
        self.current()
            .steps
            .iter()
            .filter_map(|s| s.follows.clone())
            .collect()
    }

    /// Whether every step following `transform` runs the component with
    /// `sha256` (true when none follows it).
    pub fn runs(&self, transform: &str, sha256: &str) -> bool {
        self.current()
            .steps
            .iter()
            .filter(|s| s.follows.as_deref() == Some(transform))
            .all(|s| s.component.as_ref().is_some_and(|c| c.sha256() == sha256))
    }

    /// Checks that `component` can replace every step following
    /// `transform` (each instantiates with its step's config). `None` when
    /// no step follows it.
    ///
    /// # Errors
    ///
    /// [`PipelineError::Instantiate`]: the swap must not happen.
    pub fn prepare_swap(
        &self,
        transform: &str,
        component: &TransformComponent,
    ) -> Result<Option<PreparedSwap>, PipelineError> {
        let current = self.current();
        if !current
            .steps
            .iter()
            .any(|s| s.follows.as_deref() == Some(transform))
        {
            return Ok(None);
        }
        let mut steps = current.steps.clone();
        for step in steps
            .iter_mut()
            .filter(|s| s.follows.as_deref() == Some(transform))
        {
            step.component = Some(component.clone());
            Worker::new(component.clone(), step.config.clone()).map_err(|source| {
                PipelineError::Instantiate {
                    pipeline: self.name.to_string(),
                    source: Box::new(source),
                }
            })?;
        }
        Ok(Some(PreparedSwap { steps }))
    }

    /// Makes a prepared swap current: calls that start from now on use it.
    pub fn commit_swap(&self, prepared: PreparedSwap) {
        let mut guard = self
            .steps
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = guard.generation + 1;
        *guard = Arc::new(Steps {
            generation,
            steps: prepared.steps,
        });
        drop(guard);
        // Idle sets of the old generation are dropped now rather than at
        // their next checkout, so their instance slots free up.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(g, _)| *g == generation);
    }

    /// How many component instances one concurrent call needs.
    pub fn instances_per_call(cfg: &PipelineConfig) -> usize {
        cfg.transforms.len()
    }

    fn new_worker_set(&self, steps: &[Step]) -> Result<Vec<Worker>, PipelineError> {
        steps
            .iter()
            .map(|s| {
                let component = s.component.clone().ok_or_else(|| PipelineError::Waiting {
                    pipeline: self.name.to_string(),
                    transform: s.label.clone(),
                })?;
                Worker::new(component, s.config.clone()).map_err(|source| {
                    PipelineError::Instantiate {
                        pipeline: self.name.to_string(),
                        source: Box::new(source),
                    }
                })
            })
            .collect()
    }

    /// A worker set for the current generation, and that generation.
    fn checkout(&self) -> Result<(Arc<Steps>, Vec<Worker>), PipelineError> {
        let current = self.current();
        let idle = {
            let mut idle = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            idle.retain(|(g, _)| *g == current.generation);
            idle.pop()
        };
        match idle {
            Some((_, set)) => Ok((current, set)),
            None => {
                let set = self.new_worker_set(&current.steps)?;
                Ok((current, set))
            }
        }
    }

    fn checkin(&self, generation: u64, set: Vec<Worker>) {
        if generation == self.current().generation {
            self.idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((generation, set));
        }
    }

    /// Runs records through the transforms. Blocking (it runs WebAssembly):
    /// call it from a blocking thread. Every input ends up as output rows,
    /// dead-letter rows, or counted as dropped.
    ///
    /// # Errors
    ///
    /// Only when no instance can be created; no row is produced then and
    /// the caller must not acknowledge the records.
    pub fn process(
        &self,
        records: &[Vec<u8>],
        received_at_ms: i64,
    ) -> Result<Vec<NewRow>, PipelineError> {
        let received_at: Arc<str> = chrono::DateTime::from_timestamp_millis(received_at_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into();
        // This call's own copy of the name: every record's input shares it,
        // and a call on another worker thread counts references on its own.
        let source: Arc<str> = Arc::from(&*self.source);
        let mut rows = Vec::with_capacity(records.len());
        let (current, mut workers) = self.checkout()?;
        let mut dead = 0;
        for (chunk_no, chunk) in records.chunks(self.batch_size).enumerate() {
            let base = chunk_no * self.batch_size;
            let mut items: Vec<Item> = chunk
                .iter()
                .enumerate()
                .map(|(i, data)| Item {
                    origin: base + i,
                    data: Bytes::copy_from_slice(data),
                    route: None,
                    metadata: Vec::new(),
                })
                .collect();
            for (step, worker) in current.steps.iter().zip(workers.iter_mut()) {
                let started = Instant::now();
                let mut counts = BatchCounts {
                    input: items.len(),
                    ..BatchCounts::default()
                };
                let mut next = Vec::with_capacity(items.len());
                let mut failed = Vec::new();
                run_step(worker, &source, &received_at, items, &mut next, &mut failed);
                for (item, error) in failed {
                    counts.errors += 1;
                    self.metrics.transform_failed(
                        &self.name,
                        &step.label,
                        policy_str(step.policy),
                        &error,
                    );
                    match step.policy {
                        FailPolicy::DeadLetter => {
                            dead += 1;
                            rows.push(self.dead_letter(
                                &records[item.origin],
                                &step.label,
                                &error,
                                received_at_ms,
                            ));
                        }
                        FailPolicy::Drop => counts.dropped += 1,
                        FailPolicy::Pass => {
                            counts.passed += 1;
                            next.push(item);
                        }
                    }
                }
                if counts.passed > 0 {
                    // A passed record keeps its place among the others
                    // (stable: several outputs of one record stay in order).
                    next.sort_by_key(|item| item.origin);
                }
                counts.output = next.len() - counts.passed;
                self.metrics.transform_batch(
                    &self.name,
                    &step.label,
                    &counts,
                    started.elapsed().as_secs_f64(),
                );
                items = next;
            }
            rows.extend(items.into_iter().map(|item| NewRow {
                sink: self.sink.clone(),
                route: item.route.unwrap_or_else(|| self.route.clone()),
                source: self.source.clone(),
                received_at_ms,
                data: item.data,
            }));
        }
        self.checkin(current.generation, workers);
        if dead > 0 {
            self.metrics.dead_lettered(&self.name, dead);
        }
        Ok(rows)
    }

    fn dead_letter(
        &self,
        original: &[u8],
        transform: &str,
        error: &str,
        received_at_ms: i64,
    ) -> NewRow {
        let mut doc = serde_json::Map::new();
        doc.insert("pipeline".into(), self.name.as_ref().into());
        doc.insert("source".into(), self.source.as_ref().into());
        doc.insert("transform".into(), transform.into());
        doc.insert("error".into(), error.into());
        doc.insert("received_at_ms".into(), received_at_ms.into());
        let (key, value) = original_field(original);
        doc.insert(key.into(), value);
        NewRow {
            sink: self.dead_letter_sink.clone(),
            route: DEAD_LETTER_ROUTE.into(),
            source: self.source.clone(),
            received_at_ms,
            data: serde_json::Value::Object(doc)
                .to_string()
                .into_bytes()
                .into(),
        }
    }
}

/// The original bytes of a dead letter, verbatim: `original` as a string
/// when they are UTF-8, else `original_base64`, so binary input is not
/// mangled. (Every source checks UTF-8 today, so this is a safeguard.)
fn original_field(original: &[u8]) -> (&'static str, serde_json::Value) {
    match std::str::from_utf8(original) {
        Ok(s) => ("original", s.into()),
        Err(_) => {
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(original);
            ("original_base64", encoded.into())
        }
    }
}

/// Resolves a transform reference: `name@sha256:<hex>`, or a name with a
/// `sha256` pin (a stored version or a built-in with that digest, whatever
/// version is active; fixed), a name (its active uploaded version, else
/// the built-in; followed across activations), or a file (fixed; a pin is
/// checked by the caller). Returns the component and the name it follows,
/// if any.
fn resolve(
    uses: &str,
    pin: Option<&str>,
    config: &Config,
    host: &WasmHost,
    store: Option<&crate::store::Store>,
) -> Result<(TransformComponent, Option<String>), crate::builtins::ResolveError> {
    use crate::builtins::ResolveError;
    let looks_like_path = uses.contains('/') || uses.ends_with(".wasm");
    let pinned = match pin {
        Some(sha) if !looks_like_path && !uses.contains("@sha256:") => {
            Some((uses, sha.to_ascii_lowercase()))
        }
        _ => uses
            .split_once("@sha256:")
            .map(|(n, s)| (n, s.to_ascii_lowercase())),
    };
    if let Some((name, sha)) = pinned {
        let sha = sha.as_str();
        if let Some(store) = store
            && store
                .get(name)
                .and_then(|e| e.find(&crate::store::Which::Sha256(sha.into())).cloned())
                .is_some()
        {
            let bytes = store.blob(sha).map_err(|e| ResolveError::Unknown {
                name: uses.into(),
                known: e.to_string(),
            })?;
            return Ok((host.load(name, &bytes)?, None));
        }
        let builtin = crate::builtins::resolve(host, name).ok();
        return match builtin {
            Some(c) if c.sha256().eq_ignore_ascii_case(sha) => Ok((c, None)),
            Some(c) => Err(ResolveError::PinNotFound {
                pin: sha.into(),
                found: format!(
                    "no stored version of {name:?} has it and the built-in's sha256 is {}",
                    c.sha256()
                ),
            }),
            None => Err(ResolveError::PinNotFound {
                pin: sha.into(),
                found: format!(
                    "no stored version of {name:?} has it and there is no built-in of that name"
                ),
            }),
        };
    }
    if let Some(store) = store
        && let Some(active) = store.get(uses).and_then(|e| e.active_version().cloned())
    {
        let bytes = store
            .blob(&active.sha256)
            .map_err(|e| ResolveError::Unknown {
                name: uses.into(),
                known: e.to_string(),
            })?;
        return Ok((host.load(uses, &bytes)?, Some(uses.to_string())));
    }
    if looks_like_path {
        let path = config
            .path(std::path::Path::new(uses))
            .display()
            .to_string();
        return Ok((crate::builtins::resolve(host, &path)?, None));
    }
    // A built-in name is followed too: uploading and activating a version
    // under that name replaces the built-in in running pipelines.
    Ok((
        crate::builtins::resolve(host, uses)?,
        Some(uses.to_string()),
    ))
}

/// Whether a reference that resolves to nothing may wait to be uploaded:
/// a plain transform name, not a path and not pinned to a digest.
fn can_wait_for(uses: &str, pin: Option<&str>) -> bool {
    pin.is_none()
        && !uses.contains('/')
        && !uses.ends_with(".wasm")
        && !uses.contains("@sha256:")
        && crate::store::valid_name(uses)
}

/// The first transform any of `pipelines` waits for, and that pipeline.
/// Cheap when none waits (no allocation): sources ask on every request.
pub fn first_waiting(pipelines: &[Arc<Pipeline>]) -> Option<(Arc<str>, String)> {
    pipelines
        .iter()
        .filter(|p| p.current().steps.iter().any(|s| s.component.is_none()))
        .find_map(|p| p.waiting().into_iter().next().map(|t| (p.name.clone(), t)))
}

/// Every sink the pipelines write to (data and dead letters), once each.
pub fn sinks_of(pipelines: &[Arc<Pipeline>]) -> Vec<Arc<str>> {
    let mut sinks: Vec<Arc<str>> = Vec::new();
    for p in pipelines {
        for s in [&p.sink, &p.dead_letter_sink] {
            if !sinks.iter().any(|x| x == s) {
                sinks.push(s.clone());
            }
        }
    }
    sinks
}

/// Why [`run_all`] produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum RunAllError {
    /// sluice is shutting down.
    #[error("shutting down")]
    Closed,
    /// A worker thread panicked.
    #[error("transform worker failed: {0}")]
    Worker(String),
    /// No instance could be created.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// Runs `records` through every pipeline of a source, each call on a
/// blocking thread once one of the `workers` permits is free. Returns all
/// their rows, to be committed in one spool transaction; on error none.
///
/// # Errors
///
/// [`RunAllError`].
pub async fn run_all(
    pipelines: &[Arc<Pipeline>],
    workers: &Arc<tokio::sync::Semaphore>,
    records: Arc<Vec<Vec<u8>>>,
    received_at_ms: i64,
) -> Result<Vec<NewRow>, RunAllError> {
    // A large input (a poller's page) is split across the workers so it
    // uses every core; a small one (a push request) runs as one call.
    let parts = if records.len() >= PARALLEL_MIN {
        workers.available_permits().max(1)
    } else {
        1
    };
    let chunk = records.len().div_ceil(parts).max(1);
    let mut rows = Vec::new();
    for pipeline in pipelines {
        let mut calls = Vec::with_capacity(parts);
        for start in (0..records.len()).step_by(chunk) {
            let permit = workers
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| RunAllError::Closed)?;
            let (p, r) = (pipeline.clone(), records.clone());
            let end = (start + chunk).min(r.len());
            calls.push(tokio::task::spawn_blocking(move || {
                let _permit = permit;
                p.process(&r[start..end], received_at_ms)
            }));
        }
        // Joined in order, so rows keep the input's order.
        for call in calls {
            rows.extend(
                call.await
                    .map_err(|e| RunAllError::Worker(e.to_string()))??,
            );
        }
    }
    Ok(rows)
}

/// Inputs at least this long are split across workers.
const PARALLEL_MIN: usize = 2048;

fn policy_str(p: FailPolicy) -> &'static str {
    match p {
        FailPolicy::DeadLetter => "dead-letter",
        FailPolicy::Drop => "drop",
        FailPolicy::Pass => "pass",
    }
}

/// Runs `items` through one worker: successes go to `next` (one item per
/// output), failures to `failed` with their error message.
fn run_step(
    worker: &mut Worker,
    source: &Arc<str>,
    received_at: &Arc<str>,
    items: Vec<Item>,
    next: &mut Vec<Item>,
    failed: &mut Vec<(Item, String)>,
) {
    // The records move into the call and back out of it: the host only
    // borrows them (it packs their bytes into one buffer per call), so a
    // failed record still has its original bytes for dead-letter.
    let origins: Vec<usize> = items.iter().map(|i| i.origin).collect();
    let inputs: Vec<InputRecord> = items
        .into_iter()
        .map(|item| InputRecord {
            data: item.data,
            source: source.clone(),
            received_at: received_at.clone(),
            route: item.route,
            metadata: item.metadata,
        })
        .collect();
    let back = |(origin, input): (usize, InputRecord)| Item {
        origin,
        data: input.data,
        route: input.route,
        metadata: input.metadata,
    };
    match worker.process(&inputs) {
        Ok(results) => {
            for ((origin, input), result) in origins.into_iter().zip(inputs).zip(results) {
                match result {
                    Ok(outputs) => next.extend(outputs.into_iter().map(|o| Item {
                        origin,
                        data: o.data,
                        route: o.route.or_else(|| input.route.clone()),
                        metadata: o.metadata,
                    })),
                    Err(e) => failed.push((
                        back((origin, input)),
                        format!("{}: {}", error_kind_str(e.kind), e.message),
                    )),
                }
            }
        }
        // One record made the whole call fail; find it by going one at a
        // time (the worker has already replaced its instance).
        Err(e) if e.is_batch_failure() && inputs.len() > 1 => {
            for item in origins.into_iter().zip(inputs).map(back) {
                run_step(worker, source, received_at, vec![item], next, failed);
            }
        }
        Err(e) => {
            let message = e.to_string();
            failed.extend(
                origins
                    .into_iter()
                    .zip(inputs)
                    .map(|pair| (back(pair), message.clone())),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::original_field;

    #[test]
    fn a_dead_letter_keeps_bytes_that_are_not_utf8_as_base64() {
        assert_eq!(
            original_field(b"{\"a\":1}"),
            ("original", "{\"a\":1}".into())
        );
        // 0xff 0x00 0x41 in base64, computed by hand: 11111111 00000000
        // 01000001 -> 111111 110000 000001 000001 -> "/wBB".
        assert_eq!(
            original_field(b"\xff\x00A"),
            ("original_base64", "/wBB".into())
        );
    }
}
