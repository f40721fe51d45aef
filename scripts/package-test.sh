#!/usr/bin/env bash
# Builds the Debian package (scripts/package-deb.sh), installs it with
# dpkg -i on this machine, and checks it as installed: the files and the
# system user are there, `sluice check` passes on /etc/sluice/sluice.toml as
# the service would run it (user sluice, secrets from sluice.env), and
# `systemd-analyze verify` accepts the unit. The service is not started
# (CI machines run no systemd); the gateway itself is tested by
# scripts/test.sh. The package is removed again at the end. Run by .ci/run,
# not by scripts/test.sh, because it installs into the system.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(scripts/package-deb.sh | tail -n 1)
scripts/debian-packages.sh systemd-analyze=systemd
# Clean up what this script made, and only that.
made_state=$([ -e /var/lib/sluice ] && echo no || echo yes)
cleanup() {
  dpkg --purge sluice >/dev/null 2>&1 || true
  if [ "$made_state" = yes ]; then rm -rf /var/lib/sluice; fi
}
trap cleanup EXIT
dpkg -i "$deb"
fail() { echo "package test: $*" >&2; exit 1; }
[ -x /usr/bin/sluice ] || fail "no /usr/bin/sluice"
id sluice >/dev/null || fail "no user sluice"
[ "$(stat -c '%U:%G %a' /etc/sluice/sluice.env)" = "root:sluice 640" ] || fail "sluice.env is not root:sluice 0640"
dpkg-query -W -f='${Conffiles}\n' sluice | grep -q /etc/sluice/sluice.toml || fail "sluice.toml is not a conffile"
# As the unit runs it: the state directory systemd would make, the user,
# the secrets file as its environment.
install -d -o sluice -g sluice -m 0750 /var/lib/sluice
set -a; . /etc/sluice/sluice.env; set +a
runuser -u sluice -- env HOME=/var/lib/sluice /usr/bin/sluice check --config /etc/sluice/sluice.toml
systemd-analyze verify /lib/systemd/system/sluice.service
/usr/bin/sluice --version
echo "package test: $deb installs, checks and verifies"
