#!/usr/bin/env bash
# The test command: set up, start the S3 test server (radosgw + nginx, see
# scripts/s3-test-server.sh), run every test of the workspace (native unit
# tests of the SDK and transforms, the host, and the end-to-end tests that
# run the real binary on real components over real sockets and TLS), then
# stop the server by its PID files, whatever the outcome. Last, the SDK is
# packaged as it would be published (no upload), so it stays usable outside
# this repository.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# tinyproxy: the corporate proxy of the egress tests (Debian's package).
scripts/debian-packages.sh tinyproxy=tinyproxy
s3_dir="${CARGO_TARGET_DIR:-target}/s3-test-server"
trap 'scripts/s3-test-server.sh down "$s3_dir"' EXIT
scripts/s3-test-server.sh up "$s3_dir"
SLUICE_S3_TEST_DIR="$(cd "$s3_dir" && pwd)" cargo test --workspace --locked "$@"
cargo package -p sluice-sdk --locked
