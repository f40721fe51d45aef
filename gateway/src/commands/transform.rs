//! `sluice transform list` and `sluice transform run`.
//!
//! `run` reads newline-delimited records, runs them through a component in
//! batches on the same wasm host the gateway uses, writes outputs to stdout
//! and one JSON line per failed record to stderr. It never stops at a bad
//! record: the exit status says whether any failed.

use crate::builtins::{self, ResolveError};
use crate::encoding::{Encoder, Encoding};
use crate::wasm::{self, HostConfig, InputRecord, WasmError, WasmHost, Worker};
use serde_json::json;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

/// Options of `sluice transform run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// A built-in name or a path to a `.wasm` component.
    pub transform: String,
    /// Configuration given to the transform.
    pub config: Vec<(String, String)>,
    /// Output encoding.
    pub output: Encoding,
    /// Records per batch into the component (passed in calls of at most 64).
    pub batch: usize,
    /// The `source` metadata given to each record.
    pub source: String,
    /// Deadline per batch.
    pub deadline: Duration,
    /// Memory cap per instance, bytes.
    pub memory_cap: usize,
    /// Compiled-component cache; `None` disables it.
    pub cache_dir: Option<PathBuf>,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// Input records read (non-empty lines).
    pub records: u64,
    /// Output records written.
    pub outputs: u64,
    /// Input records that failed (transform error, trap, or encoding).
    pub failed: u64,
}

/// Errors that stop a run before or during processing (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The transform could not be found or loaded, or rejected its config.
    #[error(transparent)]
    Transform(#[from] ResolveError),
    /// Reading input or writing output failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl From<WasmError> for RunError {
    fn from(e: WasmError) -> Self {
        RunError::Transform(ResolveError::Load(e))
    }
}

/// Writes the built-ins as a table: name, sha256, size.
///
/// # Errors
///
/// The write error.
pub fn list(out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{:<16} {:<64} {:>9}", "NAME", "SHA256", "BYTES")?;
    for b in builtins::BUILTINS {
        writeln!(out, "{:<16} {:<64} {:>9}", b.name, b.sha256, b.bytes.len())?;
    }
    Ok(())
}

/// Runs `input` through the transform.
///
/// # Errors
///
/// [`RunError`] for anything that stops the run; per-record failures are
/// reported on `errors` and counted in the summary instead.
pub fn run(
    opts: &RunOptions,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    errors: &mut dyn Write,
) -> Result<RunSummary, RunError> {
    let host = WasmHost::new(HostConfig {
        deadline: opts.deadline,
        memory_cap: opts.memory_cap,
        max_instances: 2,
        cache_dir: opts.cache_dir.clone(),
        count_instructions: false,
    })?;
    let component = builtins::resolve(&host, &opts.transform)?;
    let mut worker = Worker::new(component, opts.config.clone())?;
    let mut encoder = Encoder::new(opts.output);
    let mut summary = RunSummary::default();
    let mut line_no = 0u64;
    let mut eof = false;
    let io = |what: &str| {
        let what = what.to_string();
        move |source| RunError::Io { what, source }
    };

    while !eof {
        let mut batch = Vec::with_capacity(opts.batch);
        let mut lines = Vec::with_capacity(opts.batch);
        let received_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        while batch.len() < opts.batch.max(1) {
            let mut buf = Vec::new();
            if input
                .read_until(b'\n', &mut buf)
                .map_err(io("cannot read input"))?
                == 0
            {
                eof = true;
                break;
            }
            line_no += 1;
            while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                buf.pop();
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            batch.push(wasm::input_record(buf, &opts.source, &received_at, None));
            lines.push(line_no);
        }
        if batch.is_empty() {
            continue;
        }
        summary.records += batch.len() as u64;
        process_batch(
            &mut worker,
            &batch,
            &lines,
            &mut encoder,
            &mut summary,
            out,
            errors,
        )?;
        out.flush().map_err(io("cannot write output"))?;
    }
    Ok(summary)
}

fn process_batch(
    worker: &mut Worker,
    batch: &[InputRecord],
    lines: &[u64],
    encoder: &mut Encoder,
    summary: &mut RunSummary,
    out: &mut dyn Write,
    errors: &mut dyn Write,
) -> Result<(), RunError> {
    let report = |errors: &mut dyn Write, line: u64, kind: &str, message: &str| {
        let doc = json!({"line": line, "error": {"kind": kind, "message": message}});
        writeln!(errors, "{doc}").map_err(|source| RunError::Io {
            what: "cannot write errors".into(),
            source,
        })
    };
    let results = match worker.process(batch) {
        Ok(results) => results,
        // One record made the whole call fail (a trap, the deadline, the
        // memory cap): find it by going one at a time, as the gateway
        // does, so only that line is reported (the worker has already
        // replaced its instance).
        Err(e) if e.is_batch_failure() && batch.len() > 1 => {
            for (record, line) in batch.iter().zip(lines) {
                process_batch(
                    worker,
                    std::slice::from_ref(record),
                    std::slice::from_ref(line),
                    encoder,
                    summary,
                    out,
                    errors,
                )?;
            }
            return Ok(());
        }
        Err(e) if e.is_batch_failure() => {
            let kind = match &e {
                WasmError::Trap {
                    cause: wasm::TrapCause::Deadline { .. },
                    ..
                } => "deadline",
                WasmError::Trap {
                    cause: wasm::TrapCause::MemoryCap { .. },
                    ..
                } => "memory-cap",
                _ => "trap",
            };
            let message = e.to_string();
            for &line in lines {
                report(errors, line, kind, &message)?;
            }
            summary.failed += lines.len() as u64;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let mut buf = Vec::new();
    for (result, &line) in results.into_iter().zip(lines) {
        match result {
            Ok(outputs) => {
                buf.clear();
                let mut failed = None;
                for o in &outputs {
                    if let Err(e) = encoder.encode(&o.data, &mut buf) {
                        failed = Some(e);
                        break;
                    }
                }
                match failed {
                    None => {
                        out.write_all(&buf).map_err(|source| RunError::Io {
                            what: "cannot write output".into(),
                            source,
                        })?;
                        summary.outputs += outputs.len() as u64;
                    }
                    Some(e) => {
                        report(errors, line, "encode", &e.to_string())?;
                        summary.failed += 1;
                    }
                }
            }
            Err(e) => {
                report(errors, line, wasm::error_kind_str(e.kind), &e.message)?;
                summary.failed += 1;
            }
        }
    }
    Ok(())
}
