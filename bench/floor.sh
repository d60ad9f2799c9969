#!/usr/bin/env bash
# The floor every other result is read against, on this machine:
#  - raw Redis sharded publish rate (redis-benchmark SPUBLISH, with and without pipelining);
#  - WebSocket echo round trip straight to one iogate-node, no load balancer, no Redis.
#
#   bench/floor.sh [REQUESTS=200000] [ECHO_CLIENTS=100] [SECONDS=10]
set -euo pipefail
cd "$(dirname "$0")/.."
REQ=${1:-200000}
CLIENTS=${2:-100}
SECS=${3:-10}
command -v redis-server >/dev/null || { echo "install redis-server (apt-get install -y redis-server redis-tools)" >&2; exit 1; }
cargo build --release -q -p iogate-node -p iogate-loadtest
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { local p; while :; do p=$(( 20000 + RANDOM % 12000 )); (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }; done; }
wait_tcp() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

RP=$(free_port)
redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
pids+=($!)
wait_tcp "$RP"
echo "== redis-benchmark SPUBLISH ($REQ requests, 50 connections)"
redis-benchmark -p "$RP" -q -n "$REQ" -c 50 spublish iogate-floor hello | tr '\r' '\n' | grep -E "requests per second" | tail -1 | sed 's/^/no pipelining: /'
redis-benchmark -p "$RP" -q -n "$REQ" -c 50 -P 16 spublish iogate-floor hello | tr '\r' '\n' | grep -E "requests per second" | tail -1 | sed 's/^/pipeline 16:   /'

NP=$(free_port)
./target/release/iogate-node --listen "127.0.0.1:$NP" --node-id floor --redis-url none >/dev/null 2>&1 &
pids+=($!)
wait_tcp "$NP"
echo "== WebSocket echo straight to one iogate-node: $CLIENTS clients, 10 echo/s each, ${SECS}s"
./target/release/iogate-loadtest --quiet --url "http://127.0.0.1:$NP" --scenario echo --clients "$CLIENTS" \
  --rate 10 --duration "${SECS}s" 2>&1 | grep -E "latency ms|acks"
