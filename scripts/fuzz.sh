#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) from its seed corpus
# (fuzz/corpus/<target>, taken from the test fixtures), for SECONDS each
# (default 20: the smoke run .ci/run does), or RUNS executions each when
# FUZZ_RUNS is set. Prints each target's execution count; a crash fails the
# script and leaves the input in fuzz/artifacts/<target>/.
#
# cargo-fuzz needs nightly compiler flags: RUSTC_BOOTSTRAP=1 allows them on
# the pinned toolchain (for fuzzing only; nothing else is built this way).
# The targets are built without a sanitizer (`-s none`): sluice has no
# unsafe code, and the properties are asserted by the targets themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
export RUSTC_BOOTSTRAP=1
cd fuzz
cargo fuzz build -s none -O
for target in $(cargo fuzz list); do
  mkdir -p "runs/$target"
  if [ -n "${FUZZ_RUNS:-}" ]; then
    limit="-runs=$FUZZ_RUNS"
  else
    limit="-max_total_time=$seconds"
  fi
  log="runs/$target.log"
  if ! cargo fuzz run -s none -O "$target" "runs/$target" "corpus/$target" -- "$limit" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $target FAILED (input in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  echo "fuzz: $target: $(grep -E '^Done [0-9]+ runs' "$log" | tail -1)"
done
