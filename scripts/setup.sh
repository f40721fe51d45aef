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
