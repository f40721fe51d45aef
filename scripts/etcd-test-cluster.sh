#!/usr/bin/env bash
# A real 3-member etcd cluster for the cluster-mode tests: Debian's
# etcd-server on loopback ports, TLS with a test CA for clients (client
# certificates required) and for peers.
#
#   scripts/etcd-test-cluster.sh up DIR        # install if needed, start, write DIR/env
#   scripts/etcd-test-cluster.sh down DIR      # stop every member by its PID file
#   scripts/etcd-test-cluster.sh stop DIR N    # stop member N (1-3) only (quorum tests)
#   scripts/etcd-test-cluster.sh start DIR N   # start it again, on its data
#
# DIR/env holds the endpoints and the client's CA, certificate and key.
# `up` is idempotent: when the three members in DIR answer, it changes
# nothing, so a test run reuses the cluster and each test writes under its
# own key prefix.
set -euo pipefail
cmd="${1:?usage: etcd-test-cluster.sh up|down|stop|start DIR [N]}"
D="$(mkdir -p "${2:?DIR}" && cd "$2" && pwd)"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Ports are picked per `up` and kept in DIR/ports (see s3-test-server.sh):
# a cluster left by another checkout must never be mistaken for ours. They
# are below the kernel's ephemeral range (32768 and up), so no outgoing
# connection holds one when a member binds it, at `up` or when a test
# restarts a member: one CI run lost a member to "bind: address already in
# use" in 33000-39000. The S3 test server uses 20000-32000.
pick_ports() {
  for _ in $(seq 1 200); do
    local base=$(( 10000 + (RANDOM % 1600) * 6 ))
    local free=1
    for i in 0 1 2 3 4 5; do listening $((base + i)) && free=""; done
    if [ -n "$free" ]; then
      printf 'BASE=%s\n' "$base" > "$D/ports"
      return 0
    fi
  done
  echo "etcd-test-cluster.sh: no free block of 6 ports found in 10000-19600" >&2
  return 1
}
# shellcheck disable=SC1091
[ -f "$D/ports" ] && . "$D/ports"
client_port() { echo $((BASE + 2 * ($1 - 1))); }
peer_port() { echo $((BASE + 2 * ($1 - 1) + 1)); }

start_member() {
  local n="$1" cluster=""
  for i in 1 2 3; do cluster+="m$i=https://127.0.0.1:$(peer_port "$i"),"; done
  # --log-outputs to a file and a PID file, so `down` finds it again.
  nohup etcd --name "m$n" --data-dir "$D/m$n" \
    --listen-client-urls "https://127.0.0.1:$(client_port "$n")" \
    --advertise-client-urls "https://127.0.0.1:$(client_port "$n")" \
    --listen-peer-urls "https://127.0.0.1:$(peer_port "$n")" \
    --initial-advertise-peer-urls "https://127.0.0.1:$(peer_port "$n")" \
    --initial-cluster "${cluster%,}" --initial-cluster-state new \
    --initial-cluster-token "sluice-test-$BASE" \
    --cert-file "$D/pki/server.pem" --key-file "$D/pki/server.key" \
    --client-cert-auth --trusted-ca-file "$D/pki/ca.pem" \
    --peer-cert-file "$D/pki/server.pem" --peer-key-file "$D/pki/server.key" \
    --peer-client-cert-auth --peer-trusted-ca-file "$D/pki/ca.pem" \
    --heartbeat-interval 100 --election-timeout 1000 \
    --logger zap --log-outputs "$D/log/m$n.log" \
    >"$D/log/m$n.out" 2>&1 &
  echo $! > "$D/run/m$n.pid"
}

stop_member() {
  local f="$D/run/m$1.pid"
  [ -f "$f" ] || return 0
  local pid
  pid="$(cat "$f" 2>/dev/null || true)"
  rm -f "$f"
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

ctl() {
  ETCDCTL_API=3 etcdctl --endpoints "$1" --cacert "$D/pki/ca.pem" \
    --cert "$D/pki/client.pem" --key "$D/pki/client.key" --dial-timeout 2s --command-timeout 3s "${@:2}"
}
endpoints() {
  local e=""
  for i in 1 2 3; do e+="https://127.0.0.1:$(client_port "$i"),"; done
  echo "${e%,}"
}
healthy() { ctl "$(endpoints)" endpoint health >/dev/null 2>&1; }

case "$cmd" in
  down)
    for i in 1 2 3; do stop_member "$i"; done
    exit 0 ;;
  stop)
    stop_member "${3:?member 1-3}"
    exit 0 ;;
  start)
    n="${3:?member 1-3}"
    start_member "$n"
    for _ in $(seq 1 100); do
      ctl "https://127.0.0.1:$(client_port "$n")" endpoint health >/dev/null 2>&1 && exit 0
      sleep 0.2
    done
    echo "etcd member m$n did not come back" >&2
    exit 1 ;;
  up) ;;
  *) echo "usage: etcd-test-cluster.sh up|down|stop|start DIR [N]" >&2; exit 2 ;;
esac

if [ -f "$D/env" ] && [ -f "$D/ports" ] && command -v etcdctl >/dev/null && healthy; then
  exit 0
fi
for i in 1 2 3; do stop_member "$i"; done
"$(dirname "$0")/debian-packages.sh" etcd=etcd-server etcdctl=etcd-client openssl=openssl

rm -rf "$D"/{m1,m2,m3,run,log,pki,env,ports}
mkdir -p "$D"/{run,log,pki}
pick_ports
# shellcheck disable=SC1091
. "$D/ports"

# Test CA, a server certificate (also used between peers, so it is good for
# both TLS roles) and a client certificate for sluice and etcdctl.
(
  cd "$D/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=sluice-etcd-test-ca" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
  printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
    'extendedKeyUsage=serverAuth,clientAuth' 'subjectAltName=DNS:localhost,IP:127.0.0.1' > server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -out server.pem -extfile server.ext 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=sluice" -keyout client.key -out client.csr 2>/dev/null
  printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
    'extendedKeyUsage=clientAuth' > client.ext
  openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -out client.pem -extfile client.ext 2>/dev/null
)
for i in 1 2 3; do start_member "$i"; done
up=""
for _ in $(seq 1 150); do
  if healthy; then up=1; break; fi
  sleep 0.2
done
if [ -z "$up" ]; then
  echo "etcd test cluster did not become healthy on $(endpoints); last log lines:" >&2
  tail -n 5 "$D"/log/*.log >&2 || true
  exit 1
fi
cat > "$D/env" <<ENV
SLUICE_TEST_ETCD_ENDPOINTS=$(endpoints)
SLUICE_TEST_ETCD_CA=$D/pki/ca.pem
SLUICE_TEST_ETCD_CERT=$D/pki/client.pem
SLUICE_TEST_ETCD_KEY=$D/pki/client.key
ENV
echo "etcd test cluster up: $(endpoints) (env: $D/env)"
