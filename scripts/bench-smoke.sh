#!/usr/bin/env bash
# Smoke run of every bench/ script with tiny numbers on the debug binaries: checks that each
# script still starts its baselines, drives them and writes its result table. It says nothing
# about performance (see docs/benchmarks.md for the real runs). Run by .ci/run after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_PROFILE=debug
base=$(mktemp -d /tmp/iogate-bench-smoke.XXXXXX)
trap 'rm -rf "$base"' EXIT

# check NAME PATTERN...: the script's markdown exists and has every pattern.
check() {
  local md="$base/$1/$1.md"; shift
  [ -s "$md" ] || { echo "bench smoke: $md missing" >&2; exit 1; }
  for p in "$@"; do
    grep -qE "$p" "$md" || { echo "bench smoke: '$p' not in $md:" >&2; cat "$md" >&2; exit 1; }
  done
}

echo "==> bench smoke: floor"
OUT="$base/floor" bench/floor.sh 2000 10 2 >/dev/null
check floor "publishes/s" "RTT p50 [0-9.]+ ms"

echo "==> bench smoke: loadtest-efficiency"
OUT="$base/loadtest-efficiency" bench/loadtest-efficiency.sh 100 2 >/dev/null
check loadtest-efficiency "^\| iogate-loadtest \| 100 \|" "^\| socket.io-client \(Node.js\) \| 100 \|"

echo "==> bench smoke: frontdoor"
OUT="$base/frontdoor" CHURN_RATES="20 40" TLS_CHURN_RATE=20 D_ROUNDS=2 bench/frontdoor.sh 40 100 2 60 >/dev/null
check frontdoor "^\| iogate-lb \| [0-9.]+ ms" "^\| nginx \| [0-9.]+ ms" "^\| haproxy \| [0-9.]+ ms" \
  "^\| iogate-lb \| 100 \|" "^\| haproxy \| 20 \|" "^\| iogate-lb \| 1 \| Engine.IO sid learned, no cookie \| 20 \| 0 \|" \
  "^\| haproxy \| 2 \| cookie insert \| 20 \| 0 \|" "^\| nginx \| 2 \| cookie set by nginx \(map\) \| 20 \| 0 \|" \
  "^Median of the 2 rounds: proxy CPU iogate-lb [0-9.]+ s, nginx [0-9.]+ s" "^\| \(d\) proxy CPU, polling \| [0-9.]+ s \| [0-9.]+ s \| [0-9.]+ s \| ([0-9.]+×|—) \|" \
  "^\| 60 \| 60 / 60 \| 0 \| [0-9.]+ → [0-9.]+ MiB \|" "^### \(t\) TLS termination" "^\| \(t\) TLS: proxy CPU per new session \| [0-9.]+ µs \| [0-9.]+ µs \| [0-9.]+ µs \|"

echo "==> bench smoke: cluster"
OUT="$base/cluster" RATES="2 5" LATE_WINDOW=1s bench/cluster.sh 40 2 100 5 >/dev/null
check cluster "^\| iogate \| 2 \| 1 \| [0-9]+ \|.* of [0-9]+ \(late [0-9]+\) \|" "^\| iogate-recovery \| 2 \| 1 \| [0-9]+ \|" "^\| socketio \| 2 \| 1 \| [0-9]+ \|" \
  "memory per idle client" "^\| Redis memory per tracked message \| \| [0-9]+ bytes"
echo "==> bench smoke: cluster, clients straight on the nodes"
# Every rung repeated (a band that holds any p99), so the median path runs too.
OUT="$base/cluster-direct" VIA=direct RATES="2" REPEATS=2 REPEAT_BAND=100000 LATE_WINDOW=1s bench/cluster.sh 40 2 100 2 >/dev/null
check cluster-direct "straight on the nodes" "^\| iogate \| 2 \| 1 \| [0-9]+ \|.*\| — \|.*\| \|$" \
  "^\| iogate \| 2 \| 2 \| [0-9]+ \|.*\| — \|.*\| (pass|p99 > 100 ms) \(median p99 [0-9.]+ ms\) \|$" "^\| socketio \| 2 \| 2 \| [0-9]+ \|"
echo "==> bench smoke: slowloris"
OUT="$base/slowloris" bench/slowloris.sh 200 20 3 >/dev/null
check slowloris "closed by the LB: 200 of 200 opened" "^\| open client connections at the peak \(iogate_lb_client_connections\) \| [0-9]+ \|" \
  "^\| closed after their first byte: min / p50 / p99 / max \| [0-9.]+ / "
echo "==> bench smoke: continuity"
OUT="$base/continuity" bench/continuity.sh 6 >/dev/null
check continuity "^\| SIGTERM one node \(paced drain\) \| 200 \| 0 \|" "^\| binary upgrade \(-u \+ SIGQUIT\) \| 300 \| 0 \|" \
  "^\| 2 LB replicas behind HAProxy mode tcp \| 200 \| 0 \|" "^\| quick form, 2 plain Node.js socket.io servers \| 200 \| 0 \|"
echo "==> bench smoke: recovery"
# 15 s of broadcasts, the event at 5 s: a drain (5 s grace) moves clients before the end.
OUT="$base/recovery" RATE=20 bench/recovery.sh 10 300 >/dev/null
check recovery "^\| iogate, recovery off \| kill -9 one node, WebSocket \| [1-9][0-9]* of 10 \|" \
  "^\| iogate, recovery on \| SIGTERM one node, polling \| [1-9][0-9]* of 10 \| ([0-9]+) of \1 \| 0 of 3000 \| 0 \| 0 \|" \
  "^\| socket.io \+ redis-streams-adapter \| kill -9 one node, WebSocket \| [1-9][0-9]* of 10 \|"
echo "==> bench smoke: node-memory"
OUT="$base/node-memory" WS_READ_BUFFERS="4096 1024" bench/node-memory.sh 100 >/dev/null
check node-memory "^\| iogate-node \| 4096 \| [0-9]+ \|" "^\| iogate-node \| 1024 \| [0-9]+ \|" "^\| Node.js socket.io \| — \| [0-9]+ \|"
echo "==> bench smoke: instructions"
OUT="$base/instructions" bench/instructions.sh 5 2 >/dev/null
check instructions "^\| iogate-lb \| websocket \| [1-9][0-9]* \| — \| -?[0-9]+ \|" "^\| iogate-lb \| polling \| [1-9][0-9]* \| [0-9]+ \|" \
  "^\| nginx \| websocket \| [1-9][0-9]* \|" "^\| nginx \| polling \| [1-9][0-9]* \|" "iogate-lb ÷ nginx, instructions per echo"
echo "==> bench smoke: flamegraph"
OUT="$base/flamegraph" bench/flamegraph.sh 40 2 >/dev/null
for part in ws polling connect; do
  grep -q "<svg" "$base/flamegraph/lb-$part.svg" && [ "$(wc -l <"$base/flamegraph/$part.folded")" -gt 0 ] \
    || { echo "bench smoke: no flame graph for $part" >&2; exit 1; }
done
echo "bench smoke: ok"
