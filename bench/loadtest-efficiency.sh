#!/usr/bin/env bash
# Efficiency of the load generator itself: N idle WebSocket clients (heartbeats only) held by
# iogate-loadtest, and the same N held by the official socket.io-client in Node.js, against the
# same iogate-node, on this machine, in one run. Prints RSS and CPU (% of one core) of each
# client process during the idle window, and the ratios.
#
#   bench/loadtest-efficiency.sh [N=10000] [IDLE_SECONDS=30]
#   bench/loadtest-efficiency.sh 100 2     # smoke run (CI)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
N=${1:-10000}
IDLE=${2:-30}
out_dir /tmp/iogate-loadtest-efficiency
need curl:curl ss:iproute2
need_js
bench_build iogate-node iogate-loadtest
md_open loadtest-efficiency "bench/loadtest-efficiency.sh $*"
md "Versions: iogate-loadtest $("$BIN/iogate-loadtest" --version | awk '{print $2}'), Node.js $(node --version), socket.io-client $(node -p 'require("./bench/js/node_modules/socket.io-client/package.json").version')." "" \
   "| client process | connected | RSS | CPU while idle (% of one core) |" "|---|---|---|---|"

PORT=$(free_port)
start_node "$PORT" bench none
URL="http://127.0.0.1:$PORT"

# measure NAME PID: wait for the N sessions, let the burst settle, sample CPU over IDLE seconds.
measure() {
  local name=$1 pid=$2
  wait_established "$N" "$PORT"
  local got; got=$(established "$PORT")
  sleep 3
  local t0 c0 t1 c1
  t0=$(date +%s.%N); c0=$(ticks "$pid")
  sleep "$IDLE"
  t1=$(date +%s.%N); c1=$(ticks "$pid")
  awk -v n="$name" -v g="$got" -v r="$(rss "$pid")" -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v hz="$HZ" \
    'BEGIN { printf "%s %d %.1f %.2f\n", n, g, r/1024, (c1-c0)*100/hz/(t1-t0) }'
}

"$BIN/iogate-loadtest" --url "$URL" --scenario idle --clients "$N" --connect-rate 2000 \
  --duration $(( IDLE + 120 ))s --quiet >/dev/null 2>&1 &
LT=$!; pids+=("$LT")
read -r _ og orss ocpu <<<"$(measure iogate-loadtest "$LT")"
stop_pid "$LT"
for _ in $(seq 1 100); do [ "$(established "$PORT")" -eq 0 ] && break; sleep 0.2; done

node bench/js/idle-clients.mjs "$URL" "$N" 2000 >/dev/null 2>&1 &
JS=$!; pids+=("$JS")
read -r _ tg trss tcpu <<<"$(measure socket.io-client "$JS")"
stop_pid "$JS"

md "| iogate-loadtest | $og | $orss MiB | $ocpu % |" "| socket.io-client (Node.js) | $tg | $trss MiB | $tcpu % |"
md "$(awk -v ro="$orss" -v rt="$trss" -v co="$ocpu" -v ct="$tcpu" \
  'BEGIN { printf "| ratio (socket.io-client ÷ iogate-loadtest) | | %.1f× | %.1f× |", rt/ro, ct/(co>0?co:0.01) }')"
md_record
echo "results in $MD" >&2
