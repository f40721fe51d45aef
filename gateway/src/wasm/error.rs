//! Errors of the wasm host. Each names the transform and says what to do.

use std::path::PathBuf;
use std::time::Duration;

/// Why a guest call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrapCause {
    /// The call ran past its deadline (an endless loop, or far too slow).
    Deadline {
        /// The configured deadline.
        limit: Duration,
    },
    /// The instance tried to grow its memory past the cap.
    MemoryCap {
        /// The configured cap in bytes.
        limit: usize,
    },
    /// Any other trap: a panic, `unreachable`, an out-of-bounds access.
    Trap {
        /// wasmtime's description.
        message: String,
    },
}

impl std::fmt::Display for TrapCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrapCause::Deadline { limit } => {
                write!(f, "exceeded its deadline of {limit:?}")
            }
            TrapCause::MemoryCap { limit } => {
                write!(f, "exceeded its memory cap of {} MiB", limit >> 20)
            }
            TrapCause::Trap { message } => write!(f, "trapped: {message}"),
        }
    }
}

/// An error from loading or running a transform component.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// wasmtime rejected the engine configuration.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    /// The component file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not WebAssembly at all.
    #[error("transform `{name}`: not a WebAssembly component (no `\\0asm` header; {size} bytes)")]
    NotWasm {
        /// The transform.
        name: String,
        /// The size of what was given.
        size: usize,
    },
    /// A core module was given where a component is needed.
    #[error(
        "transform `{name}`: this is a core WebAssembly module, not a component; \
         build it with `cargo build --target wasm32-wasip2` (which emits components)"
    )]
    CoreModule {
        /// The transform.
        name: String,
    },
    /// wasmtime could not compile the component.
    #[error("transform `{name}`: invalid component: {reason}")]
    Compile {
        /// The transform.
        name: String,
        /// wasmtime's message.
        reason: String,
    },
    /// The component imports something the host does not provide.
    #[error(
        "transform `{name}`: imports something Sluice does not provide (transforms get only \
         `sluice:transform/log` and a closed-off WASI): {reason}"
    )]
    Imports {
        /// The transform.
        name: String,
        /// wasmtime's message.
        reason: String,
    },
    /// The component does not export `sluice:transform/transformer`.
    #[error(
        "transform `{name}`: does not implement `sluice:transform/transformer@0.3.0` \
         (nor the older `@0.2.0` or `@0.1.0`, which Sluice still runs): {reason}"
    )]
    WrongWorld {
        /// The transform.
        name: String,
        /// wasmtime's message.
        reason: String,
    },
    /// The transform rejected its configuration.
    #[error("transform `{name}` rejected its configuration: {}{message}", key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Config {
        /// The transform.
        name: String,
        /// The offending key.
        key: Option<String>,
        /// The transform's message.
        message: String,
    },
    /// A call trapped, hit the deadline or the memory cap.
    #[error("transform `{name}` {cause}{}", stderr.as_ref().map(|s| format!(" (guest stderr: {s})")).unwrap_or_default())]
    Trap {
        /// The transform.
        name: String,
        /// What happened.
        cause: TrapCause,
        /// The tail of what the guest wrote to stderr, e.g. a panic message.
        stderr: Option<String>,
    },
    /// The transform broke the contract (wrong number of results).
    #[error("transform `{name}` broke the contract: {reason}")]
    BadAnswer {
        /// The transform.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// Every instance slot of the pool is in use.
    #[error("transform `{name}`: no free instance slot ({reason}); raise the instance limit")]
    PoolExhausted {
        /// The transform.
        name: String,
        /// wasmtime's message.
        reason: String,
    },
}

impl WasmError {
    /// True when the error belongs to one batch (the component itself is
    /// fine and later batches may succeed); false when the component cannot
    /// be used at all.
    pub fn is_batch_failure(&self) -> bool {
        matches!(self, WasmError::Trap { .. } | WasmError::BadAnswer { .. })
    }
}
