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
//! - [`config`]: the TOML config, its validation and secrets;
//! - [`sources`]: the HTTPS push source and the JumpCloud and JupiterOne pollers;
//! - [`http_client`]: the pollers' HTTPS client;
//! - [`pipeline`]: transforms applied to a source's records;
//! - [`spool`]: the durable SQLite spool (and poller checkpoints);
//! - [`sinks`]: object delivery (local directory);
//! - [`metrics`], [`admin`]: Prometheus metrics, health endpoints;
//! - [`tls`]: certificates for the listeners;
//! - [`commands`]: what the CLI's subcommands do.

pub mod admin;
pub mod builtins;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod egress;
pub mod encoding;
pub mod http_client;
pub mod metrics;
pub mod pipeline;
pub mod sinks;
pub mod sources;
pub mod spool;
pub mod store;
pub mod tls;
pub mod util;
pub mod wasm;
