#!/usr/bin/env bash
# The main job, until the gateway's `sluice run` lands: build sluice and run
# a sample of JumpCloud-like events through the built-in add-fields
# transform, printing the transformed records.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p sluice
target/release/sluice transform list
target/release/sluice transform run add-fields \
  --config observer.vendor=sluice --config observer.type=gateway \
  --input examples/jumpcloud-events.jsonl
