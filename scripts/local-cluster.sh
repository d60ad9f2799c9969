#!/usr/bin/env bash
# Start a local iogate cluster: one redis-server, iogate-node processes and iogate-lb in front.
#
#   scripts/local-cluster.sh                 # Redis on a free port, nodes on :4001-:4003,
#                                            # iogate-lb on :8080 (admin API on 127.0.0.1:9100)
#   REDIS_URL=redis://10.0.0.5:6379 scripts/local-cluster.sh   # use an existing Redis
#   NODES=2 BASE_PORT=5001 LB_PORT=8081 ADMIN_PORT=9101 scripts/local-cluster.sh
#
# Ctrl-C (or SIGTERM) stops every process this script started, and nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-3}
BASE_PORT=${BASE_PORT:-4001}
LB_PORT=${LB_PORT:-8080}
ADMIN_PORT=${ADMIN_PORT:-9100}
RUN_DIR=${RUN_DIR:-$PWD/.up}
PIDFILE="$RUN_DIR/local-cluster.pid"

mkdir -p "$RUN_DIR"
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "a local cluster is already running (pid $(cat "$PIDFILE")); stop it with Ctrl-C or: kill $(cat "$PIDFILE")" >&2
  exit 1
fi
echo $$ > "$PIDFILE"

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "stopping ${#pids[@]} processes"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -f "$PIDFILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { # a port nothing listens on
  local p
  while :; do
    p=$(( 20000 + RANDOM % 40000 ))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
wait_http() { # url timeout_s
  for _ in $(seq 1 $(( $2 * 10 ))); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2
  return 1
}

echo "==> building iogate-node and iogate-lb (release)"
cargo build --release -q -p iogate-node -p iogate-lb

if [ -z "${REDIS_URL:-}" ]; then
  if ! command -v redis-server >/dev/null; then
    echo "redis-server is not installed. Install it with: sudo apt-get install -y redis-server" >&2
    echo "(or point REDIS_URL at an existing Redis >= 7)" >&2
    exit 1
  fi
  REDIS_PORT=${REDIS_PORT:-$(free_port)}
  mkdir -p "$RUN_DIR/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$RUN_DIR/redis" --logfile "$RUN_DIR/redis.log" &
  pids+=($!)
  for _ in $(seq 1 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -p "$REDIS_PORT" ping >/dev/null
  REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
fi

for i in $(seq 1 "$NODES"); do
  port=$(( BASE_PORT + i - 1 ))
  ./target/release/iogate-node --config config/node.yaml --listen "127.0.0.1:$port" \
    --node-id "node-$i" --redis-url "$REDIS_URL" >"$RUN_DIR/node-$i.log" 2>&1 &
  pids+=($!)
done
for i in $(seq 1 "$NODES"); do
  wait_http "http://127.0.0.1:$(( BASE_PORT + i - 1 ))/readyz" 30
done

# iogate-lb in front of the nodes; edit $RUN_DIR/lb.yaml while it runs to reload it.
{
  echo "listeners:"
  echo "  - address: 127.0.0.1:$LB_PORT"
  echo "admin:"
  echo "  listen: 127.0.0.1:$ADMIN_PORT"
  echo "upstreams:"
  for i in $(seq 1 "$NODES"); do
    echo "  - id: node-$i"
    echo "    address: 127.0.0.1:$(( BASE_PORT + i - 1 ))"
  done
  echo "shutdown:"
  echo "  grace: 2s"
} > "$RUN_DIR/lb.yaml"
./target/release/iogate-lb --config "$RUN_DIR/lb.yaml" --pid-file "$RUN_DIR/lb.pid" \
  --upgrade-sock "$RUN_DIR/lb-upgrade.sock" >"$RUN_DIR/lb.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$ADMIN_PORT/api/backends" 2>/dev/null | grep -q '"up"'; then break; fi
  sleep 0.1
done
wait_http "http://127.0.0.1:$LB_PORT/readyz" 30

echo
echo "iogate local cluster is up"
echo "  Socket.IO through the LB: http://127.0.0.1:$LB_PORT  (log $RUN_DIR/lb.log, config $RUN_DIR/lb.yaml)"
echo "  LB admin API:  http://127.0.0.1:$ADMIN_PORT/api/backends   http://127.0.0.1:$ADMIN_PORT/metrics"
echo "  redis:  $REDIS_URL"
for i in $(seq 1 "$NODES"); do
  port=$(( BASE_PORT + i - 1 ))
  echo "  node-$i: http://127.0.0.1:$port  (Socket.IO at /socket.io, /readyz, /metrics; log $RUN_DIR/node-$i.log)"
done
echo "Ctrl-C stops everything."
wait -n "${pids[@]}" || true
echo "a process exited; shutting down" >&2
