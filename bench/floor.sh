#!/usr/bin/env bash
# The floor every other result is read against, on this machine:
#  - raw Redis sharded publish rate (redis-benchmark SPUBLISH, with and without pipelining);
#  - WebSocket echo round trip straight to one iogate-node, no load balancer, no Redis.
#
#   bench/floor.sh [REQUESTS=200000] [ECHO_CLIENTS=100] [SECONDS=10]
#   bench/floor.sh 2000 10 2          # smoke run (CI)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
REQ=${1:-200000}
CLIENTS=${2:-100}
SECS=${3:-10}
out_dir /tmp/iogate-floor
need redis-server:redis-server redis-benchmark:redis-tools python3:python3 curl:curl
bench_build iogate-node iogate-loadtest
md_open floor "bench/floor.sh $*"
md "Versions: $(redis-server --version | awk '{print $1, $3}'), iogate-node $("$BIN/iogate-node" --version | awk '{print $2}')." "" \
   "| measurement | result |" "|---|---|"

start_redis
spublish() { # extra redis-benchmark args -> "N publishes/s, p50 X ms"
  redis-benchmark -p "$RP" -q -n "$REQ" -c 50 "$@" spublish iogate-floor hello | tr '\r' '\n' \
    | grep -E "requests per second" | tail -1 \
    | sed -E 's/.*: ([0-9.]+) requests per second, p50=([0-9.]+) msec.*/\1 publishes\/s, p50 \2 ms/'
}
md "| \`redis-benchmark -c 50 spublish\` (no pipelining) | $(spublish) |"
md "| \`redis-benchmark -c 50 -P 16 spublish\` | $(spublish -P 16) |"

NP=$(free_port)
start_node "$NP" floor none
f="$OUT/echo.json"
loadtest --url "http://127.0.0.1:$NP" --scenario echo --clients "$CLIENTS" --rate 10 --duration "${SECS}s" --json "$f"
md "$(jget "$f" "'| WebSocket echo to one iogate-node, $CLIENTS clients × 10/s | RTT p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, %d of %d acks lost |' % (d['accounting']['latency_ms']['p50'], d['accounting']['latency_ms']['p99'], d['accounting']['latency_ms']['p999'], d['accounting']['acks_timed_out'], d['accounting']['acks_sent'])")"
md_record
echo "results in $MD" >&2
