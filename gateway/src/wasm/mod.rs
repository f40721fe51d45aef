//! The WebAssembly host: runs transform components under limits.
//!
//! One [`WasmHost`] per process holds the wasmtime `Engine` (pooling
//! allocator, epoch interruption) and the `Linker`. A [`TransformComponent`]
//! is a compiled, pre-instantiated component (`*Pre`), shareable across
//! threads. A [`TransformInstance`] is one configured instance in its own
//! `Store`, owned by one worker and reused across batches.
//!
//! Isolation: a trap, a deadline hit or a memory-cap hit fails only the
//! batch in flight; the instance is discarded and [`Worker`] builds a fresh
//! one for the next batch. Nothing a guest does can take the process down:
//! wasmtime turns every guest fault into an error value.
//!
//! Time limits use epochs, not fuel: a background thread bumps the engine's
//! epoch every [`EPOCH_TICK`], and `create` and each batch get a deadline in
//! ticks (a batch's calls share it). This costs far less per instruction
//! than fuel, and a deadline is all we need.

mod cache;
mod contract;
mod error;
mod stderr;

pub use contract::{ErrorKind, InputRecord, OutputRecord, RecordError, RecordResult};
pub use error::{TrapCause, WasmError};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use stderr::StderrTail;
use wasmtime::component::{Component, HasSelf, Linker, ResourceAny};
use wasmtime::{
    Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
};
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, ResourceTable, WasiCtx, WasiCtxView, WasiView,
};

/// How often the epoch advances. Deadlines are rounded up to this.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Settings for the host. One per process.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// How long one call (one batch, or instance creation) may run.
    pub deadline: Duration,
    /// The most linear memory one instance may use, in bytes.
    pub memory_cap: usize,
    /// How many instances may exist at once (pool slots). Each slot reserves
    /// address space up front, so size it to the expected concurrency.
    pub max_instances: u32,
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Counts the WebAssembly instructions each instance runs (wasmtime's
    /// fuel), for benchmarks: on a shared machine the count is exact where
    /// timings are not. Slows every guest down; never on in the gateway.
    pub count_instructions: bool,
}

impl HostConfig {
    /// The default compiled-component cache: `$SLUICE_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/sluice`, else `~/.cache/sluice`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        cache::default_dir()
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            deadline: Duration::from_secs(1),
            memory_cap: 64 << 20,
            max_instances: 64,
            cache_dir: cache::default_dir(),
            count_instructions: false,
        }
    }
}

/// The process-wide wasm host: engine, linker and limits.
#[derive(Clone)]
pub struct WasmHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    engine: Engine,
    linker: Linker<HostState>,
    config: HostConfig,
}

impl std::fmt::Debug for WasmHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmHost")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl WasmHost {
    /// Builds the engine and linker and starts the epoch ticker.
    ///
    /// # Errors
    ///
    /// [`WasmError::Engine`] when wasmtime rejects the configuration (for
    /// example a pool larger than the address space allows).
    pub fn new(config: HostConfig) -> Result<Self, WasmError> {
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true);
        wasm.epoch_interruption(true);
        wasm.consume_fuel(config.count_instructions);
        // For `perf record`: names the JIT code of the components in
        // /tmp/perf-PID.map. Off by default (the map grows per compile).
        if std::env::var_os("SLUICE_WASM_PERFMAP").is_some() {
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }

        let n = config.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        // A Rust wasip2 component has one linear memory and a handful of
        // core instances (the program plus canonical-ABI shims).
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 8)
            .total_stacks(n)
            .max_memory_size(config.memory_cap);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));

        let engine = Engine::new(&wasm).map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        // Every contract version's `log`, so that any kind of component
        // links (see `contract`).
        contract::v0_3::sluice::transform::log::add_to_linker::<_, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        contract::v0_2::sluice::transform::log::add_to_linker::<_, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        contract::v0_1::sluice::transform::log::add_to_linker::<_, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| WasmError::Engine(format!("{e:#}")))?;

        // The ticker holds only a weak reference, so it ends by itself once
        // every clone of the engine is dropped.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| WasmError::Engine(format!("cannot start the epoch thread: {e}")))?;

        Ok(WasmHost {
            inner: Arc::new(HostInner {
                engine,
                linker,
                config,
            }),
        })
    }

    /// The host's settings.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// Compiles (or loads from the cache) and pre-instantiates a component.
    /// `name` is used in every error and log line about it.
    ///
    /// # Errors
    ///
    /// [`WasmError::NotWasm`], [`WasmError::CoreModule`],
    /// [`WasmError::Compile`], [`WasmError::Imports`] or
    /// [`WasmError::WrongWorld`], each naming the transform.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<TransformComponent, WasmError> {
        let name: Arc<str> = Arc::from(name);
        check_header(&name, bytes)?;
        let sha256 = crate::util::hex_sha256(bytes);
        let component = match &self.inner.config.cache_dir {
            Some(dir) => cache::load_or_compile(&self.inner.engine, dir, &sha256, bytes),
            None => Component::from_binary(&self.inner.engine, bytes),
        }
        .map_err(|e| WasmError::Compile {
            name: name.to_string(),
            reason: format!("{e:#}"),
        })?;

        let pre =
            self.inner
                .linker
                .instantiate_pre(&component)
                .map_err(|e| WasmError::Imports {
                    name: name.to_string(),
                    reason: format!("{e:#}"),
                })?;
        let pre = contract::Pre::new(pre).map_err(|reason| WasmError::WrongWorld {
            name: name.to_string(),
            reason,
        })?;
        Ok(TransformComponent {
            name,
            sha256,
            pre,
            host: self.clone(),
        })
    }

    /// Reads a component file and [`load`](Self::load)s it, named after the
    /// file stem.
    ///
    /// # Errors
    ///
    /// [`WasmError::Read`], or any error of [`load`](Self::load).
    pub fn load_file(&self, path: &Path) -> Result<TransformComponent, WasmError> {
        let bytes = std::fs::read(path).map_err(|e| WasmError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "transform".into());
        self.load(&name, &bytes)
    }
}

/// Tells a component from a core module or a non-wasm file by the header,
/// so the error can say what to do instead of a parser message.
fn check_header(name: &str, bytes: &[u8]) -> Result<(), WasmError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0x00, 0x01, 0x00]) => Ok(()),
        Some([0, b'a', b's', b'm', 0x01, 0x00, 0x00, 0x00]) => Err(WasmError::CoreModule {
            name: name.to_string(),
        }),
        Some([0, b'a', b's', b'm', ..]) => Err(WasmError::Compile {
            name: name.to_string(),
            reason: "unsupported WebAssembly binary version".into(),
        }),
        _ => Err(WasmError::NotWasm {
            name: name.to_string(),
            size: bytes.len(),
        }),
    }
}

/// A compiled, pre-instantiated transform component. Cheap to clone and
/// shareable across threads; create [`TransformInstance`]s from it.
#[derive(Clone)]
pub struct TransformComponent {
    name: Arc<str>,
    sha256: String,
    pre: contract::Pre,
    host: WasmHost,
}

impl std::fmt::Debug for TransformComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformComponent")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl TransformComponent {
    /// The name used in errors and logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Lower-case hex sha256 of the component bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Creates a configured instance in a fresh store.
    ///
    /// # Errors
    ///
    /// [`WasmError::Config`] when the transform rejects its configuration;
    /// [`WasmError::Trap`] when `create` traps or runs past the deadline
    /// (also during start-up code); [`WasmError::PoolExhausted`] when every
    /// pool slot is taken.
    pub fn instantiate(&self, config: &[(String, String)]) -> Result<TransformInstance, WasmError> {
        let limits = &self.host.inner.config;
        let stderr = StderrTail::new(STDERR_CAPTURE);
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                cap: limits.memory_cap,
                hit: false,
            },
            transform: self.name.clone(),
        };
        let mut store = Store::new(&self.host.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        // The deadline must be set before instantiating: start-up code runs
        // during instantiation, and a new store's deadline is already past.
        set_deadline(&mut store, limits.deadline);
        if limits.count_instructions {
            store
                .set_fuel(u64::MAX)
                .map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        }

        let world = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(&store, &stderr, e))?;
        let created = world
            .create(&mut store, config)
            .map_err(|e| self.classify(&store, &stderr, e))?;
        let handle = created.map_err(|e| WasmError::Config {
            name: self.name.to_string(),
            key: e.key,
            message: e.message,
        })?;
        Ok(TransformInstance {
            component: self.clone(),
            store,
            world,
            handle,
            stderr,
        })
    }

    /// Turns a wasmtime error from a guest call into a [`WasmError`] naming
    /// this transform and the cause.
    fn classify(
        &self,
        store: &Store<HostState>,
        stderr: &StderrTail,
        e: wasmtime::Error,
    ) -> WasmError {
        let limits = &self.host.inner.config;
        let cause = if store.data().limiter.hit {
            TrapCause::MemoryCap {
                limit: limits.memory_cap,
            }
        } else if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
            match trap {
                wasmtime::Trap::Interrupt => TrapCause::Deadline {
                    limit: limits.deadline,
                },
                wasmtime::Trap::AllocationTooLarge => TrapCause::MemoryCap {
                    limit: limits.memory_cap,
                },
                other => TrapCause::Trap {
                    message: other.to_string(),
                },
            }
        } else {
            let message = format!("{e:#}");
            if message.contains("maximum concurrent") || message.contains("pooling") {
                return WasmError::PoolExhausted {
                    name: self.name.to_string(),
                    reason: message,
                };
            }
            TrapCause::Trap { message }
        };
        WasmError::Trap {
            name: self.name.to_string(),
            cause,
            stderr: stderr_tail(stderr),
        }
    }
}

/// The last this many bytes the guest wrote to stderr are kept (a panic
/// message fits easily); older bytes are dropped, writes never fail.
const STDERR_CAPTURE: usize = 16 << 10;

/// The last line(s) of the guest's stderr, for an error message.
fn stderr_tail(pipe: &StderrTail) -> Option<String> {
    let bytes = pipe.contents();
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let start = text.len().saturating_sub(1024);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    Some(text[start..].replace('\n', " | "))
}

fn set_deadline(store: &mut Store<HostState>, deadline: Duration) {
    store.set_epoch_deadline(deadline_ticks(deadline));
}

/// The epoch deadline for a call of `deadline`: whole ticks, rounded up,
/// at least one, plus one because the current epoch may be about to tick
/// (which would shorten the first); a deadline is never cut short.
fn deadline_ticks(deadline: Duration) -> u64 {
    let ticks = deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()).max(1);
    u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1)
}

/// The most records passed into a guest in one call. A larger batch goes in
/// parts of this size, in order and under one deadline, so that what a
/// call moves (the records in, the outputs out, the guest's buffers for
/// them) stays in the CPU's caches and the host's allocator does not give
/// its memory back and fault it in again at every batch: at 1,024 records
/// per call the same guest code ran ~30% slower per record than at 64.
const CALL_RECORDS: usize = 64;

/// One configured transform instance, owned by one worker.
pub struct TransformInstance {
    component: TransformComponent,
    store: Store<HostState>,
    world: contract::Bound,
    handle: ResourceAny,
    stderr: StderrTail,
}

impl std::fmt::Debug for TransformInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformInstance")
            .field("component", &self.component)
            .finish_non_exhaustive()
    }
}

impl TransformInstance {
    /// Processes a batch: one result per record, in order (in calls of at
    /// most [`CALL_RECORDS`] records).
    ///
    /// # Errors
    ///
    /// [`WasmError::Trap`] when the call traps, hits the deadline or the
    /// memory cap: the whole batch failed and this instance must be dropped
    /// (a trapped store cannot be used again). [`WasmError::BadAnswer`] when
    /// the answer breaks the contract (the wrong number of results, an
    /// offset or index out of range).
    pub fn process(&mut self, batch: &[InputRecord]) -> Result<Vec<RecordResult>, WasmError> {
        // One deadline for the whole batch, however many calls it takes.
        set_deadline(&mut self.store, self.component.host.inner.config.deadline);
        // A guest may survive a refused allocation (`try_reserve`); only a
        // refusal during this batch may explain a trap in this batch.
        self.store.data_mut().limiter.hit = false;
        let mut results = Vec::with_capacity(batch.len());
        for part in batch.chunks(CALL_RECORDS) {
            let answers = self
                .world
                .process(&mut self.store, self.handle, part)
                .map_err(|e| self.component.classify(&self.store, &self.stderr, e))?
                .map_err(|reason| WasmError::BadAnswer {
                    name: self.component.name.to_string(),
                    reason,
                })?;
            results.extend(answers);
        }
        Ok(results)
    }

    /// The component this instance runs.
    pub fn component(&self) -> &TransformComponent {
        &self.component
    }

    /// The WebAssembly instructions this instance has run so far, when the
    /// host counts them ([`HostConfig::count_instructions`]).
    pub fn instructions(&self) -> Option<u64> {
        self.store.get_fuel().ok().map(|left| u64::MAX - left)
    }
}

/// Runs batches through a component, replacing the instance after a
/// failure. The CLI and each gateway worker own one.
#[derive(Debug)]
pub struct Worker {
    component: TransformComponent,
    config: Vec<(String, String)>,
    instance: Option<TransformInstance>,
}

impl Worker {
    /// Creates a worker and its first instance, so that a configuration the
    /// transform rejects is reported before any data flows.
    ///
    /// # Errors
    ///
    /// Any error of [`TransformComponent::instantiate`].
    pub fn new(
        component: TransformComponent,
        config: Vec<(String, String)>,
    ) -> Result<Self, WasmError> {
        let instance = component.instantiate(&config)?;
        Ok(Worker {
            component,
            config,
            instance: Some(instance),
        })
    }

    /// Processes a batch. After a failure the instance is dropped and the
    /// next call starts from a fresh one, so one bad batch never poisons
    /// the ones after it.
    ///
    /// # Errors
    ///
    /// The batch's [`WasmError`]; the caller decides what happens to its
    /// records (the CLI reports them, the gateway dead-letters them).
    pub fn process(&mut self, batch: &[InputRecord]) -> Result<Vec<RecordResult>, WasmError> {
        let instance = match &mut self.instance {
            Some(i) => i,
            slot @ None => slot.insert(self.component.instantiate(&self.config)?),
        };
        let result = instance.process(batch);
        if result.is_err() {
            self.instance = None;
        }
        result
    }

    /// The component this worker runs.
    pub fn component(&self) -> &TransformComponent {
        &self.component
    }

    /// The instructions its current instance has run, when counted (see
    /// [`TransformInstance::instructions`]).
    pub fn instructions(&self) -> Option<u64> {
        self.instance.as_ref()?.instructions()
    }
}

/// Per-store host state.
struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    transform: Arc<str>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HostState {
    /// The guest's `log` call, in either contract version.
    fn log(&self, level: tracing::Level, message: String) {
        const MAX: usize = 4096;
        let mut message = message;
        if message.len() > MAX {
            let cut = (0..=MAX)
                .rev()
                .find(|&i| message.is_char_boundary(i))
                .unwrap_or(0);
            message.truncate(cut);
            message.push('…');
        }
        let transform = &*self.transform;
        match level {
            tracing::Level::TRACE => {
                tracing::trace!(target: "sluice::transform", transform, "{message}");
            }
            tracing::Level::DEBUG => {
                tracing::debug!(target: "sluice::transform", transform, "{message}");
            }
            tracing::Level::INFO => {
                tracing::info!(target: "sluice::transform", transform, "{message}");
            }
            tracing::Level::WARN => {
                tracing::warn!(target: "sluice::transform", transform, "{message}");
            }
            tracing::Level::ERROR => {
                tracing::error!(target: "sluice::transform", transform, "{message}");
            }
        }
    }
}

/// The `log` import of each contract version: one function behind two
/// generated traits.
macro_rules! log_host {
    ($($version:ident),*) => {$(
        impl contract::$version::sluice::transform::log::Host for HostState {
            fn log(
                &mut self,
                level: contract::$version::sluice::transform::log::Level,
                message: String,
            ) {
                use contract::$version::sluice::transform::log::Level;
                let level = match level {
                    Level::Trace => tracing::Level::TRACE,
                    Level::Debug => tracing::Level::DEBUG,
                    Level::Info => tracing::Level::INFO,
                    Level::Warn => tracing::Level::WARN,
                    Level::Error => tracing::Level::ERROR,
                };
                HostState::log(self, level, message);
            }
        }

        impl contract::$version::sluice::transform::types::Host for HostState {}
    )*};
}

log_host!(v0_3, v0_2, v0_1);

/// Caps linear memory per store and remembers whether the cap was hit, so a
/// resulting trap (the guest's allocator aborts) is reported as such.
struct MemoryLimiter {
    cap: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap || maximum.is_some_and(|m| desired > m) {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000 && maximum.is_none_or(|m| desired <= m))
    }
}

/// Transforms get no clock: both WASI clocks read zero. The record's
/// `received-at` is the time a transform should use.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Builds an input record from raw bytes and metadata.
pub fn input_record(
    data: Vec<u8>,
    source: &str,
    received_at: &str,
    route: Option<String>,
) -> InputRecord {
    InputRecord {
        data: data.into(),
        source: source.into(),
        received_at: received_at.into(),
        route,
        metadata: Vec::new(),
    }
}

/// The WIT name of an error kind.
pub fn error_kind_str(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidInput => "invalid-input",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::Internal => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_tells_kinds_apart() {
        assert!(check_header("t", b"\0asm\x0d\x00\x01\x00rest").is_ok());
        assert!(matches!(
            check_header("t", b"\0asm\x01\x00\x00\x00"),
            Err(WasmError::CoreModule { .. })
        ));
        assert!(matches!(
            check_header("t", b"{\"json\":1}"),
            Err(WasmError::NotWasm { size: 10, .. })
        ));
        assert!(matches!(
            check_header("t", b""),
            Err(WasmError::NotWasm { .. })
        ));
    }

    #[test]
    fn deadline_rounds_up_to_ticks() {
        // 5 ms ticks: whole ticks rounded up, plus the one that may be
        // about to end.
        assert_eq!(deadline_ticks(Duration::from_secs(1)), 201);
        assert_eq!(deadline_ticks(Duration::from_millis(5)), 2);
        assert_eq!(deadline_ticks(Duration::from_millis(6)), 3);
        assert_eq!(deadline_ticks(Duration::from_millis(1)), 2);
        assert_eq!(deadline_ticks(Duration::ZERO), 2, "never zero ticks");
        assert_eq!(deadline_ticks(Duration::MAX), u64::MAX);
    }
}
