#!/usr/bin/env bash
# The main job: build sluice and run the gateway on examples/quickstart.toml
# (HTTPS push on 127.0.0.1:8443 -> ecs-jumpcloud -> target/quickstart/out).
# Stop it with Ctrl-C; undelivered data stays in the spool for next time.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p sluice
export SLUICE_PUSH_TOKEN="${SLUICE_PUSH_TOKEN:-quickstart-token}"
echo "push token: \$SLUICE_PUSH_TOKEN (set it to choose another)"
exec target/release/sluice run --config examples/quickstart.toml
