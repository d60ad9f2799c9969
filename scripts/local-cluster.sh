#!/usr/bin/env bash
# `make up`: a local iogate cluster — one redis-server, three iogate-node processes (:4001-:4003)
# serving the chat demo, and iogate-lb on :8080 with its admin API on 127.0.0.1:9100.
# Configuration: config/local/node.yaml and config/local/lb.yaml.
#
#   make up                                   # Redis on a free port
#   REDIS_URL=redis://10.0.0.5:6379 make up   # use an existing Redis (>= 7)
#   make down                                 # (from another terminal) stop it
#
# Ctrl-C, `make down` or SIGTERM stops every process this script started, and nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR=${RUN_DIR:-$PWD/.up}
PIDFILE="$RUN_DIR/up.pid"
NODES=3
BASE_PORT=4001

mkdir -p "$RUN_DIR"
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "a local cluster is already running (pid $(cat "$PIDFILE")); stop it with: make down" >&2
  exit 1
fi
for port in 8080 9100 4001 4002 4003; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use; stop whatever listens there first" >&2
    exit 1
  fi
done
echo $$ > "$PIDFILE"

pids=()
cleanup() {
  trap - EXIT INT TERM HUP
  trap '' PIPE # the terminal or pipe may be gone: stop the processes regardless
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -f "$PIDFILE"
  { echo; echo "stopped ${#pids[@]} processes"; } 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

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
  echo "timed out waiting for $1 (logs in $RUN_DIR)" >&2
  return 1
}

if [ -z "${REDIS_URL:-}" ] && ! command -v redis-server >/dev/null; then
  echo "redis-server is not installed. Install it with: sudo apt-get install -y redis-server" >&2
  echo "(or point REDIS_URL at an existing Redis >= 7)" >&2
  exit 1
fi
if [ ! -d demo/node_modules/socket.io-client ]; then
  echo "==> npm ci (demo: the official socket.io-client browser bundle)"
  npm ci --prefix demo --no-audit --no-fund
fi
echo "==> building iogate-node and iogate-lb (release, link-time optimised: the first build takes several minutes)"
cargo build --release -q -p iogate-node -p iogate-lb

if [ -z "${REDIS_URL:-}" ]; then
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
  ./target/release/iogate-node --config config/local/node.yaml --listen "127.0.0.1:$port" \
    --node-id "node-$i" --redis-url "$REDIS_URL" >"$RUN_DIR/node-$i.log" 2>&1 &
  pids+=($!)
done
for i in $(seq 1 "$NODES"); do
  wait_http "http://127.0.0.1:$(( BASE_PORT + i - 1 ))/readyz" 30
done

./target/release/iogate-lb --config config/local/lb.yaml --pid-file "$RUN_DIR/lb.pid" \
  --upgrade-sock "$RUN_DIR/lb-upgrade.sock" >"$RUN_DIR/lb.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  [ "$(curl -fsS http://127.0.0.1:9100/api/backends 2>/dev/null | grep -c '"up"')" -eq "$NODES" ] && break
  sleep 0.1
done
# The LB answers 404 for the nodes' /readyz (exposure.blocked_paths): wait for the demo page.
wait_http "http://127.0.0.1:8080/" 30

echo
echo "iogate local cluster is up"
echo "  chat demo:      http://127.0.0.1:8080/   (open it in two browser tabs)"
echo "  Socket.IO:      http://127.0.0.1:8080    (through iogate-lb; log $RUN_DIR/lb.log)"
echo "  LB admin API:   http://127.0.0.1:9100/api/backends   http://127.0.0.1:9100/metrics"
for i in $(seq 1 "$NODES"); do
  port=$(( BASE_PORT + i - 1 ))
  echo "  node-$i:         http://127.0.0.1:$port  (/readyz, /metrics; log $RUN_DIR/node-$i.log)"
done
echo "  redis:          $REDIS_URL"
echo "Ctrl-C or 'make down' stops everything."
wait -n "${pids[@]}" || true
echo "a process exited; shutting down (logs in $RUN_DIR)" >&2
