#!/usr/bin/env bash
# A real S3 server for the tests: Ceph radosgw (Debian's packages) on a
# one-node memstore cluster, TLS with a test CA, SSE-KMS with the `testing`
# backend, and nginx in front of it to answer a wrong
# x-amz-expected-bucket-owner with 403 as AWS does (radosgw ignores it).
# Recipe: ../shared/reference/s3-test-server.md (measured on this machine kind).
#
#   scripts/s3-test-server.sh up DIR     # install if needed, start, write DIR/env
#   scripts/s3-test-server.sh down DIR   # stop every process by its PID file
#   scripts/s3-test-server.sh rgw-stop DIR | rgw-start DIR   # only radosgw (outage tests)
#
# DIR/env holds the endpoints, CA, keys and bucket for the tests. `up` is
# idempotent: when the servers in DIR answer, it changes nothing.
set -euo pipefail
cmd="${1:?usage: s3-test-server.sh up|down DIR}"
D="$(mkdir -p "${2:?DIR}" && cd "$2" && pwd)"
OWNER=123456789012  # the account nginx treats as the bucket owner

# Ports are picked per `up` and kept in DIR/ports, never fixed: a server left
# running by another checkout (or another CI job on the same machine) must not
# be mistaken for ours. A mon of a foreign cluster on our port is exactly how a
# fixed port fails ("osd ... 'wrong fsid'").
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_ports() {
  # Below the kernel's ephemeral range, so no outgoing connection holds them.
  for _ in $(seq 1 200); do
    local base=$(( 20000 + (RANDOM % 3000) * 4 ))
    if ! listening "$base" && ! listening $((base + 1)) && ! listening $((base + 2)) && ! listening $((base + 3)); then
      printf 'MON_PORT=%s\nRGW_PORT=%s\nRGW_PLAIN=%s\nNGINX_PORT=%s\n' "$base" $((base + 1)) $((base + 2)) $((base + 3)) > "$D/ports"
      return 0
    fi
  done
  echo "s3-test-server.sh: no free block of 4 ports found in 20000-32000" >&2
  return 1
}
# shellcheck disable=SC1091
[ -f "$D/ports" ] && . "$D/ports"

stop() {
  for p in nginx/nginx.pid run/rgw.pid run/osd.pid run/mon.pid; do
    [ -f "$D/$p" ] || continue
    pid="$(cat "$D/$p" 2>/dev/null || true)"
    rm -f "$D/$p"
    [ -n "$pid" ] || continue
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
}

if [ "$cmd" = down ]; then
  stop
  exit 0
fi
if [ "$cmd" = rgw-stop ]; then
  pid="$(cat "$D/run/rgw.pid")"
  kill "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
  kill -9 "$pid"
  exit 0
fi
if [ "$cmd" = rgw-start ]; then
  radosgw -c "$D/ceph.conf" -n client.rgw.test --pid-file "$D/run/rgw.pid"
  for _ in $(seq 1 120); do
    curl -fsS --cacert "$D/pki/ca.pem" "https://localhost:$RGW_PORT/" >/dev/null 2>&1 && exit 0
    sleep 0.5
  done
  echo "radosgw did not come back" >&2
  exit 1
fi
[ "$cmd" = up ] || { echo "usage: s3-test-server.sh up|down DIR" >&2; exit 2; }
if [ -f "$D/env" ] && [ -f "$D/ports" ] && curl -fsS --cacert "$D/pki/ca.pem" "https://localhost:$RGW_PORT/" >/dev/null 2>&1 \
   && curl -fsS -o /dev/null --cacert "$D/pki/ca.pem" "https://localhost:$NGINX_PORT/" 2>/dev/null; then
  exit 0
fi
trap 'status=$?; echo "s3-test-server.sh: failed (exit $status) at line $LINENO; last log lines:" >&2; tail -n 5 "$D"/log/*.log >&2 2>/dev/null || true; exit $status' ERR
stop

"$(dirname "$0")/debian-packages.sh" radosgw=radosgw ceph-mon=ceph-mon ceph-osd=ceph-osd \
  nginx=nginx openssl=openssl curl=curl

rm -rf "$D"/{mon,osd,run,log,pki,nginx,ceph.conf,keyring,monmap,env,ports}
mkdir -p "$D"/{mon/ceph-a,osd/ceph-0,run,log,pki,nginx/logs}
pick_ports
# shellcheck disable=SC1091
. "$D/ports"

# Test CA (v3, CA:TRUE) and a server certificate with SANs: what rustls/webpki accepts.
(
  cd "$D/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=sluice-test-ca" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
  printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
    'extendedKeyUsage=serverAuth' 'subjectAltName=DNS:localhost,IP:127.0.0.1' > server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -out server.pem -extfile server.ext 2>/dev/null
)

FSID=$(cat /proc/sys/kernel/random/uuid)
cat > "$D/ceph.conf" <<CONF
[global]
fsid = $FSID
mon host = v1:127.0.0.1:$MON_PORT
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
# The OSD joins the CRUSH map by our own \`ceph osd crush add\` (mon_cmd,
# below), not by the commands it sends the monitor as it starts: those may go
# out before its monitor client has the cluster's fsid (see mon_cmd), and an
# OSD start has no retry for them.
osd crush update on start = false
osd class update on start = false
osd objectstore = memstore
memstore device bytes = 2147483648
run dir = $D/run
log file = $D/log/\$name.log
admin socket = $D/run/\$name.asok
ms bind ipv6 = false
mon data = $D/mon/\$cluster-\$id
osd data = $D/osd/\$cluster-\$id
keyring = $D/keyring
[client.rgw.test]
rgw frontends = beast ssl_endpoint=127.0.0.1:$RGW_PORT ssl_certificate=$D/pki/server.pem ssl_private_key=$D/pki/server.key endpoint=127.0.0.1:$RGW_PLAIN
rgw crypt s3 kms backend = testing
rgw crypt s3 kms encryption keys = testkey-1=YmluCmJvb3N0CmJvb3N0LWJ1aWxkCmNlcGguY29uZgo= testkey-2=aWIKTWFrZWZpbGUKbWFuCm91dApzcmMKVGVzdGluZwo=
rgw crypt require ssl = false
rgw dns name = localhost
CONF
C="-c $D/ceph.conf"
# A Ceph client (the CLI, an OSD) that fetched the monitor addresses first
# sends its first commands with a zero fsid until the monitor's map reaches
# it, and the monitor refuses them: "handle_command on fsid 00000000-... != ..."
# in its log, "wrong fsid" or "problem getting command descriptions" here. On a
# fast machine that race is lost often, so every command is retried; each one
# below is idempotent.
mon_cmd() {
  local out
  for _ in $(seq 1 20); do
    if out="$(timeout 10 ceph $C "$@" 2>&1)"; then return 0; fi
    sleep 0.25
  done
  echo "ceph $* failed 20 times; last: $out" >&2
  grep -h "handle_command on fsid" "$D/log/mon.a.log" | tail -n 3 >&2 || true
  return 1
}
ceph-authtool --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
monmaptool --create --add a v1:127.0.0.1:$MON_PORT --fsid "$FSID" "$D/monmap" >/dev/null
ceph-mon $C --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring"
ceph-mon $C -i a --pid-file "$D/run/mon.pid"
# The monitor must answer before the OSD is created and registered.
# Ask for the fsid, not just any answer: only our own monitor knows $FSID.
mon_ok=""
for _ in $(seq 1 60); do
  if [ "$(timeout 5 ceph $C fsid 2>/dev/null)" = "$FSID" ]; then mon_ok=1; break; fi
  sleep 0.5
done
[ -n "$mon_ok" ] || { echo "ceph-mon did not answer on 127.0.0.1:$MON_PORT with fsid $FSID" >&2; tail -n 20 "$D/log/mon.a.log" >&2 || true; exit 1; }
# The OSD's own uuid, given: memstore's mkfs would leave it zero.
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
ceph-osd $C -i 0 --mkfs --osd-uuid "$OSD_UUID" >"$D/log/osd-mkfs.out" 2>&1
mon_cmd osd create "$OSD_UUID" 0
mon_cmd osd crush add osd.0 1.0 root=default host=sluice-test
started=""
for i in 1 2 3; do
  if ceph-osd $C -i 0 --pid-file "$D/run/osd.pid" >"$D/log/osd-start-$i.out" 2>&1; then started=1; break; fi
  sleep 1
done
if [ -z "$started" ]; then
  echo "ceph-osd did not start; what each of the three starts printed, then what the monitor refused:" >&2
  cat "$D"/log/osd-start-*.out >&2
  grep -h "handle_command on fsid\|preprocess_boot" "$D/log/mon.a.log" | tail -n 10 >&2 || true
  exit 1
fi
radosgw $C -n client.rgw.test --pid-file "$D/run/rgw.pid"
up=""
for _ in $(seq 1 120); do
  if curl -fsS --cacert "$D/pki/ca.pem" "https://localhost:$RGW_PORT/" >/dev/null 2>&1; then up=1; break; fi
  sleep 1
done
[ -n "$up" ] || { echo "radosgw did not answer on https://localhost:$RGW_PORT within 120 s" >&2; exit 1; }
radosgw-admin $C user create --uid=test --display-name=test \
  --access-key=RGWTESTACCESSKEY --secret-key=RGWTESTSECRETKEY0123456789 >/dev/null

cat > "$D/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $D/nginx/nginx.pid;
error_log $D/nginx/logs/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    log_format s3hdr '\$request_method \$request_uri status=\$status owner="\$http_x_amz_expected_bucket_owner" sse="\$http_x_amz_server_side_encryption"';
    # AWS answers a wrong x-amz-expected-bucket-owner with 403; radosgw ignores the header.
    map \$http_x_amz_expected_bucket_owner \$owner_mismatch { "" 0; "$OWNER" 0; default 1; }
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        server_name localhost;
        ssl_certificate     $D/pki/server.pem;
        ssl_certificate_key $D/pki/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        access_log $D/nginx/logs/s3.log s3hdr;
        location / {
            if (\$owner_mismatch) {
                add_header Content-Type application/xml always;
                return 403 '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>';
            }
            proxy_pass http://127.0.0.1:$RGW_PLAIN;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            proxy_set_header Connection "";
        }
    }
}
CONF
nginx -p "$D/nginx/" -c "$D/nginx/nginx.conf"

cat > "$D/env" <<ENV
SLUICE_TEST_S3_ENDPOINT=https://localhost:$RGW_PORT
SLUICE_TEST_S3_OWNER_ENDPOINT=https://localhost:$NGINX_PORT
SLUICE_TEST_S3_OWNER=$OWNER
SLUICE_TEST_S3_OWNER_LOG=$D/nginx/logs/s3.log
SLUICE_TEST_S3_CA=$D/pki/ca.pem
SLUICE_TEST_S3_ACCESS_KEY=RGWTESTACCESSKEY
SLUICE_TEST_S3_SECRET_KEY=RGWTESTSECRETKEY0123456789
SLUICE_TEST_S3_KMS_KEY=testkey-1
ENV
echo "s3 test server up: radosgw https://localhost:$RGW_PORT, nginx https://localhost:$NGINX_PORT (env: $D/env)"
