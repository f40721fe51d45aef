//! End-to-end tests: the real `sluice` binary, real components.
//!
//! One test binary with a module per topic (wasmtime's `tests/all`
//! pattern), so the heavy dependency graph links once.

mod admin;
mod authoring;
mod builtins;
mod cli;
mod cluster;
mod durability;
mod egress;
mod examples;
mod faultproxy;
mod gw;
mod hostile;
mod local;
mod metrics;
mod pipelines;
mod pollers;
mod push;
mod s3;
mod s3env;
mod secrets;
mod spool;
mod stubs;
mod support;
