//! Command implementations behind the `sluice` CLI. Each returns a typed
//! error; `main` maps errors to exit statuses.

pub mod admin_client;
pub mod backfill;
pub mod check;
pub mod run;
pub mod s3;
pub mod scaffold;
pub mod spool;
pub mod transform;
