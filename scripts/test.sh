#!/usr/bin/env bash
# The test command: set up, start the S3 test server (radosgw + nginx, see
# scripts/s3-test-server.sh) and a 3-member etcd cluster (Debian's
# etcd-server, see scripts/etcd-test-cluster.sh), run every test of the workspace (native unit
# tests of the SDK and transforms, the host, and the end-to-end tests that
# run the real binary on real components over real sockets and TLS), then
# stop the servers by their PID files, whatever the outcome. Last, the SDK is
# packaged as it would be published (no upload), so it stays usable outside
# this repository.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# tinyproxy: the corporate proxy of the egress tests (Debian's package).
scripts/debian-packages.sh tinyproxy=tinyproxy
s3_dir="${CARGO_TARGET_DIR:-target}/s3-test-server"
etcd_dir="${CARGO_TARGET_DIR:-target}/etcd-test"
trap 'scripts/s3-test-server.sh down "$s3_dir"; scripts/etcd-test-cluster.sh down "$etcd_dir"' EXIT
scripts/s3-test-server.sh up "$s3_dir"
scripts/etcd-test-cluster.sh up "$etcd_dir"
SLUICE_S3_TEST_DIR="$(cd "$s3_dir" && pwd)" SLUICE_ETCD_TEST_DIR="$(cd "$etcd_dir" && pwd)" \
  cargo test --workspace --locked "$@"
cargo package -p sluice-sdk --locked
