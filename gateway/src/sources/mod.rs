//! Sources: where records come from.
//!
//! - [`push`]: HTTPS push (`POST /v1/push/{source}`), served by [`server`].

pub mod body;
pub mod push;
pub mod server;
