#!/usr/bin/env bash
# The main job, until the gateway's `sluice run` lands: build sluice and run
# sample JumpCloud Directory Insights events through the built-in
# ecs-jumpcloud transform, printing the ECS documents.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p sluice
target/release/sluice transform list
target/release/sluice transform run ecs-jumpcloud --input examples/jumpcloud-events.jsonl
