//! Small helpers shared across modules.

use sha2::{Digest, Sha256};

/// Lower-case hex sha256 of `bytes`.
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
