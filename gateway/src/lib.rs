//! Sluice: an on-premises edge gateway for security and IoT telemetry.
//!
//! Data path: sources (HTTPS push, SaaS pollers) → pipeline of WebAssembly
//! transforms ([`wasm`]) → durable spool → sinks. This crate is both the
//! `sluice` binary and the library its tests and benchmarks use.
//!
//! Modules:
//! - [`wasm`]: the component host (engine, limits, instances, workers);
//! - [`builtins`]: the transforms embedded in the binary;
//! - [`encoding`]: JSON lines and CSV, shared by the CLI and the sinks;
//! - [`commands`]: what the CLI's subcommands do.

pub mod builtins;
pub mod commands;
pub mod encoding;
pub mod util;
pub mod wasm;
