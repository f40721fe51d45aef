//! Sources: where records come from.
//!
//! - [`push`]: HTTPS push (`POST /v1/push/{source}`), served by [`server`];
//! - [`jumpcloud`], [`jupiterone`]: pollers, on the shared [`poller`]
//!   framework (watermark cursor committed with each page).

pub mod body;
pub mod jumpcloud;
pub mod jupiterone;
pub mod poller;
pub mod push;
pub mod server;
