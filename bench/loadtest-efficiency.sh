#!/usr/bin/env bash
# Efficiency of the load generator itself: N idle WebSocket clients (heartbeats only) held by
# iogate-loadtest, and the same N held by the official socket.io-client in Node.js, against the
# same iogate-node, on this machine, in one run. Prints RSS and CPU (% of one core) of each
# client process during the idle window, and the ratios.
#
#   bench/loadtest-efficiency.sh [N=10000] [IDLE_SECONDS=30]
#
# Needs: a release build (done here), node + npm ci in testkit/js (done here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
IDLE=${2:-30}
ulimit -n 200000 2>/dev/null || ulimit -n 65536 2>/dev/null || true
[ -d testkit/js/node_modules/socket.io-client ] || npm ci --prefix testkit/js --no-audit --no-fund
cargo build --release -q -p iogate-node -p iogate-loadtest

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { local p; while :; do p=$(( 20000 + RANDOM % 40000 )); (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }; done; }
PORT=$(free_port)
./target/release/iogate-node --listen "127.0.0.1:$PORT" --node-id bench --redis-url none >/tmp/iogate-bench-node.log 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
URL="http://127.0.0.1:$PORT"

sockets() { curl -fsS "$URL/metrics" | awk '/^iogate_node_sockets\{transport="websocket"\}/ {print $2}'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

measure() { # name pid -> prints "name rss_mib cpu_pct"
  local name=$1 pid=$2
  for _ in $(seq 1 600); do [ "$(sockets)" -ge "$N" ] 2>/dev/null && break; sleep 0.2; done
  local got; got=$(sockets)
  sleep 3 # let the connect burst settle
  local t0 c0 t1 c1
  t0=$(date +%s.%N); c0=$(ticks "$pid")
  sleep "$IDLE"
  t1=$(date +%s.%N); c1=$(ticks "$pid")
  local rss; rss=$(rss_kb "$pid")
  awk -v n="$name" -v g="$got" -v r="$rss" -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v hz="$hz" \
    'BEGIN { printf "%s connected=%s rss_mib=%.1f cpu_pct_of_one_core=%.2f\n", n, g, r/1024, (c1-c0)*100/hz/(t1-t0) }'
}

./target/release/iogate-loadtest --url "$URL" --scenario idle --clients "$N" --connect-rate 2000 \
  --duration $(( IDLE + 120 ))s --quiet >/dev/null 2>&1 &
LT=$!; pids+=($LT)
ours=$(measure iogate-loadtest "$LT")
kill "$LT"; wait "$LT" 2>/dev/null || true
for _ in $(seq 1 100); do [ "$(sockets)" -eq 0 ] 2>/dev/null && break; sleep 0.2; done

node bench/idle-clients.mjs "$URL" "$N" 2000 >/dev/null 2>&1 &
JS=$!; pids+=($JS)
theirs=$(measure socket.io-client "$JS")
kill "$JS"; wait "$JS" 2>/dev/null || true

echo "$ours"
echo "$theirs"
ro=$(echo "$ours" | sed -E 's/.*rss_mib=([0-9.]+).*/\1/'); rt=$(echo "$theirs" | sed -E 's/.*rss_mib=([0-9.]+).*/\1/')
co=$(echo "$ours" | sed -E 's/.*cpu_pct_of_one_core=([0-9.]+).*/\1/'); ct=$(echo "$theirs" | sed -E 's/.*cpu_pct_of_one_core=([0-9.]+).*/\1/')
awk -v ro="$ro" -v rt="$rt" -v co="$co" -v ct="$ct" \
  'BEGIN { printf "ratio socket.io-client / iogate-loadtest: rss %.1fx, cpu %.1fx\n", rt/ro, ct/(co+0.001) }'
