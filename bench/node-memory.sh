#!/usr/bin/env bash
# Node memory per idle client: CLIENTS idle WebSocket clients straight to two freshly started
# nodes (+ Redis), the nodes' RSS growth divided by the clients — iogate-node with each
# `engineio.ws_read_buffer` in WS_READ_BUFFERS, then Node.js socket.io + @socket.io/redis-adapter
# (with bufferutil and utf-8-validate). The same measurement as the idle part of
# bench/cluster.sh, alone, so a per-socket setting can be compared quickly.
#
#   bench/node-memory.sh [CLIENTS=10000]
#   WS_READ_BUFFERS="4096 1024" bench/node-memory.sh 200     # smoke run
set -euo pipefail
source "$(dirname "$0")/lib.sh"
CLIENTS=${1:-10000}
BUFFERS=${WS_READ_BUFFERS:-"4096 2048 1024 512"}
CLIENTS=$(cap_to_fds "$CLIENTS" $(( FDS - 1000 )))
out_dir /tmp/iogate-node-memory
need redis-server:redis-server python3:python3 ss:iproute2
need_js
bench_build iogate-node iogate-loadtest
md_open node-memory "WS_READ_BUFFERS=\"$BUFFERS\" bench/node-memory.sh $*"
md "| server | \`engineio.ws_read_buffer\` | clients held | nodes' RSS before → after | per idle client |" "|---|---|---|---|---|"

# measure LABEL BUFFER START-COMMAND...: start two nodes with START (a function of port and
# id), hold the clients, write the row.
measure() {
  local label=$1 buffer=$2 starter=$3
  start_redis
  N1=$(free_port); N2=$(free_port)
  "$starter" "$N1"; P1=$STARTED
  "$starter" "$N2"; P2=$STARTED
  sleep 2
  hold_idle "$CLIENTS"
  md "| $label | $buffer | $IDLE_GOT | $(( IDLE_R0 / 1024 )) → $(( IDLE_R1 / 1024 )) MiB | $IDLE_KIB KiB |"
  stop_pid "$IDLE_LT"; stop_pid "$P1"; stop_pid "$P2"; stop_pid "$REDIS_PID"
}
iogate_node() {
  printf 'engineio:\n  ws_read_buffer: %s\n' "$BUFFER" >"$OUT/node-$BUFFER.yaml"
  start_node "$1" "n$1" "redis://127.0.0.1:$RP" --config "$OUT/node-$BUFFER.yaml"
  STARTED=$NODE_PID
}
socketio_node() {
  node bench/js/socketio-cluster-node.mjs "n$1" "$1" "redis://127.0.0.1:$RP" >"$OUT/socketio-$1.log" 2>&1 &
  STARTED=$!; pids+=("$STARTED")
  wait_http "http://127.0.0.1:$1/readyz"
}
for BUFFER in $BUFFERS; do
  measure iogate-node "$BUFFER" iogate_node
done
measure "Node.js socket.io" "—" socketio_node
md ""
md_record
echo "results in $MD" >&2
