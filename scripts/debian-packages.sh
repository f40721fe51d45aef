#!/usr/bin/env bash
# Installs Debian packages the tests need, if a command (or an absolute
# path) they provide is missing: scripts/debian-packages.sh WHAT=PACKAGE...
# (for example tinyproxy=tinyproxy systemd-analyze=systemd
# /usr/include/google/protobuf/descriptor.proto=libprotobuf-dev). No
# service is started: the tests run their own instances.
set -euo pipefail
missing=()
for pair in "$@"; do
  what="${pair%%=*}"
  case "$what" in
    /*) [ -e "$what" ] || missing+=("${pair#*=}") ;;
    *) command -v "$what" >/dev/null || missing+=("${pair#*=}") ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
