#!/usr/bin/env bash
# Installs what building and testing Sluice needs, idempotently, on a fresh
# machine: the wasm32-wasip2 target for the toolchain that
# rust-toolchain.toml selects (1.95.0). It never updates or installs a
# toolchain: that would change the compiler under every build.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
rustc --version

# promtool (for `promtool check metrics` in the gateway tests), from
# Debian's prometheus package. Only the one binary is extracted into the
# target folder: the package's server and service files are not installed.
target_dir="${CARGO_TARGET_DIR:-target}"
tools="$target_dir/tools"
if [ ! -x "$tools/promtool" ]; then
  mkdir -p "$tools/deb"
  (
    cd "$tools/deb"
    if ! apt-get download prometheus >/dev/null 2>&1; then
      # A fresh machine may have no package lists yet.
      apt-get update -qq
      apt-get download prometheus
    fi
    dpkg -x prometheus_*.deb root
  )
  cp "$tools/deb/root/usr/bin/promtool" "$tools/promtool"
  rm -rf "$tools/deb"
fi
"$tools/promtool" --version | head -1

# protoc and protobuf's well-known types (Debian's protobuf-compiler and
# libprotobuf-dev): the etcd-client crate compiles etcd's gRPC definitions
# when sluice is built (cluster mode, docs/cluster.md).
"$(dirname "$0")/debian-packages.sh" protoc=protobuf-compiler \
  /usr/include/google/protobuf/descriptor.proto=libprotobuf-dev
