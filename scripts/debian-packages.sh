#!/usr/bin/env bash
# Installs Debian packages the tests need, if a command they provide is
# missing: scripts/debian-packages.sh COMMAND=PACKAGE... (for example
# tinyproxy=tinyproxy systemd-analyze=systemd). No service is started: the
# tests run their own instances.
set -euo pipefail
missing=()
for pair in "$@"; do
  command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
