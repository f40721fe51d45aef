#!/usr/bin/env bash
# The test command: set up, then run every test of the workspace (native
# unit tests of the SDK and transforms, the host, and the end-to-end tests
# that run the real binary on real components).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --locked "$@"
