#!/usr/bin/env bash
# Builds the Debian package, target/debian/sluice_<version>_<arch>.deb, from
# a release build: /usr/bin/sluice; /etc/sluice/sluice.toml (the quick start
# as a service, local sink under /var/lib/sluice/out) and sluice.env (its
# secrets), both conffiles; the hardened systemd unit; docs, the alert rules
# and the dashboard under /usr/share/doc/sluice. Installing makes a system
# user `sluice`; the service is not started until you have set the token.
# Needs only dpkg-deb (Debian's dpkg), no cargo-deb.
#
# SLUICE_DEB_PROFILE picks the cargo profile (default: release). CI sets it
# to `dev` and packages the binary its tests already built: what it checks
# (files, user, modes, `sluice check`, the unit) does not depend on the
# optimisation level, and a second full release build would cost CI a
# quarter of an hour.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
profile="${SLUICE_DEB_PROFILE:-release}"
cargo build --profile "$profile" --locked -p sluice
case "$profile" in dev) out=debug ;; *) out="$profile" ;; esac
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
root="$target/debian/sluice_${version}_${arch}"
rm -rf "$root"
install -D -m 0755 "$target/$out/sluice" "$root/usr/bin/sluice"
strip --strip-debug "$root/usr/bin/sluice"
install -D -m 0644 deploy/debian/sluice.toml "$root/etc/sluice/sluice.toml"
install -D -m 0640 deploy/debian/sluice.env "$root/etc/sluice/sluice.env"
install -D -m 0644 deploy/debian/sluice.service "$root/lib/systemd/system/sluice.service"
doc="$root/usr/share/doc/sluice"
install -D -m 0644 README.md "$doc/README.md"
for page in docs/*.md; do install -D -m 0644 "$page" "$doc/$page"; done
install -D -m 0644 deploy/debian/low-port.conf "$doc/low-port.conf"
install -D -m 0644 deploy/prometheus/alerts.yml "$doc/prometheus/alerts.yml"
install -D -m 0644 deploy/grafana/sluice.json "$doc/grafana/sluice.json"
mkdir -p "$root/DEBIAN"
printf '%s\n' /etc/sluice/sluice.toml /etc/sluice/sluice.env > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/control" <<CONTROL
Package: sluice
Version: $version
Architecture: $arch
Maintainer: Sluice maintainers <sluice@localhost>
Depends: adduser, libc6
Section: net
Priority: optional
Installed-Size: $(du -sk "$root" | cut -f1)
Homepage: https://localhost/sluice
Description: edge gateway for security and IoT telemetry
 Receives pushed streams over HTTPS and polls SaaS APIs (JumpCloud,
 JupiterOne), runs every record through WebAssembly transforms, keeps a
 durable spool and delivers to S3 or a local folder.
CONTROL
cat > "$root/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  adduser --system --group --home /var/lib/sluice --no-create-home --quiet sluice
  # The secrets file is readable by the service, not by other users.
  chown root:sluice /etc/sluice/sluice.env
  chmod 0640 /etc/sluice/sluice.env
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
    # An upgrade restarts a running service; a first install leaves it off.
    systemctl try-restart sluice.service >/dev/null || true
  fi
  if [ -z "$2" ]; then
    echo "sluice: set the token in /etc/sluice/sluice.env, then: systemctl enable --now sluice"
  fi
fi
exit 0
SCRIPT
cat > "$root/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl stop sluice.service >/dev/null 2>&1 || true
  systemctl disable sluice.service >/dev/null 2>&1 || true
fi
exit 0
SCRIPT
cat > "$root/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
# /var/lib/sluice is kept even on purge: it may hold records not delivered yet.
exit 0
SCRIPT
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
dpkg-deb --root-owner-group -Zxz --build "$root" "$root.deb" >/dev/null
echo "$root.deb"
