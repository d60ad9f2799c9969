#!/usr/bin/env bash
# Clients that move, with and without Socket.IO connection state recovery, measured with the
# official socket.io-client and its own reconnection (bench/js/recovery-clients.mjs): CLIENTS
# clients through iogate-lb (quick form) over two nodes + Redis, a sender on the node that stays
# up broadcasting `chat:message` at RATE/s, and after 5 s one of two events on the other node:
#
#   kill -9   the node dies; WebSocket clients
#   SIGTERM   the node shuts down gracefully; long-polling clients
#
# Stacks, each started fresh per event:
#   iogate, recovery off   2 × iogate-node (defaults)
#   iogate, recovery on    2 × iogate-node with `recovery: {enabled: true}`
#   socket.io + streams    2 × Node.js socket.io 4.8 with @socket.io/redis-streams-adapter and
#                          `connectionStateRecovery: {}` (bench/js/socketio-recovery-node.mjs)
#
# Per run: clients that moved, of those reconnects how many came back with `socket.recovered`,
# messages lost / duplicated / out of order over every client.
#
# Usage: bench/recovery.sh [CLIENTS=100] [COUNT=200]   (RATE=10; RECORD=1 writes docs/benchmarks.md)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
CLIENTS=${1:-100}
COUNT=${2:-200}
RATE=${RATE:-10}
SIGNAL_AT=$(( RATE * 5 < COUNT / 2 ? RATE * 5 : COUNT / 2 ))
out_dir /tmp/iogate-bench/recovery
need redis-server:redis-server curl:curl python3:python3
need_js
bench_build iogate-node iogate-lb
md_open recovery "bench/recovery.sh $*"
md "Versions: iogate-node $("$BIN/iogate-node" --version | awk '{print $2}'), Node.js $(node --version), socket.io $(node -p 'require("./bench/js/node_modules/socket.io/package.json").version'), @socket.io/redis-streams-adapter $(node -p 'require("./bench/js/node_modules/@socket.io/redis-streams-adapter/package.json").version'), socket.io-client $(node -p 'require("./bench/js/node_modules/socket.io-client/package.json").version'), $(redis-server --version | awk '{print $1, $3}'). $CLIENTS clients, $COUNT broadcasts at $RATE/s, the event after $SIGNAL_AT." "" \
   "| stack | event | clients moved | reconnects recovered | lost / expected | duplicated | out of order | disconnect reasons | connected at the end |" \
   "|---|---|---|---|---|---|---|---|---|"
printf 'recovery:\n  enabled: true\n' >"$OUT/recovery-on.yaml"

# run STACK LABEL SIGNAL TRANSPORT EVENT_LABEL
run() {
  local stack=$1 label=$2 sig=$3 transport=$4 event=$5 p victim n
  start_redis
  N1=$(free_port); N2=$(free_port)
  for p in "$N1" "$N2"; do
    case $stack in
      off) start_node "$p" "n$p" "redis://127.0.0.1:$RP" ;;
      on) start_node "$p" "n$p" "redis://127.0.0.1:$RP" --config "$OUT/recovery-on.yaml" ;;
      socketio)
        node bench/js/socketio-recovery-node.mjs "n$p" "$p" "redis://127.0.0.1:$RP" >"$OUT/socketio-$p.log" 2>&1 &
        NODE_PID=$!; pids+=("$NODE_PID")
        wait_http "http://127.0.0.1:$p/readyz" ;;
    esac
    [ "$p" = "$N1" ] && victim=$NODE_PID || n=$NODE_PID
  done
  LBP=$(free_port); start_lb "$LBP" "$N1" "$N2"
  local res="$OUT/$stack-$sig-$transport.json"
  : >"$res"
  node bench/js/recovery-clients.mjs "http://127.0.0.1:$LBP" "http://127.0.0.1:$N2" "$transport" \
    "$CLIENTS" "$RATE" "$COUNT" "$SIGNAL_AT" >"$res" 2>"$OUT/$stack-$sig-$transport.log" &
  local cl=$!; pids+=("$cl")
  for _ in $(seq 1 1200); do grep -q '^SIGNAL' "$res" && break; kill -0 "$cl" 2>/dev/null || break; sleep 0.05; done
  kill "-$sig" "$victim" 2>/dev/null || true
  wait "$cl" || true
  python3 - "$res" "$label" "$event" <<'PY' | tee -a "$MD"
import json, sys
f, label, event = sys.argv[1:]
lines = [l for l in open(f) if l.startswith("{")]
if not lines:
    print(f"| {label} | {event} | run failed (see {f.replace('.json', '.log')}) | | | | | | |")
    sys.exit()
d = json.loads(lines[-1])
disc = ", ".join(f"{v} × {k}" for k, v in sorted(d["disconnects"].items())) or "none"
print(f"| {label} | {event} | {d['moved']} of {d['clients']} | {d['recovered']} of {d['reconnects']} | "
      f"{d['lost']} of {d['expected']} | {d['duplicated']} | {d['out_of_order']} | {disc} | {d['connected']} |")
PY
  stop_pid "$LB_PID"; stop_pid "$victim"; stop_pid "$n"; stop_pid "$REDIS_PID"
}

for stack in off on socketio; do
  case $stack in
    off) label="iogate, recovery off" ;;
    on) label="iogate, recovery on" ;;
    socketio) label="socket.io + redis-streams-adapter" ;;
  esac
  echo "==> $label: kill -9, WebSocket" >&2
  run "$stack" "$label" KILL websocket "kill -9 one node, WebSocket"
  echo "==> $label: SIGTERM, polling" >&2
  run "$stack" "$label" TERM polling "SIGTERM one node, polling"
done
md "" "Lost counts every client's missing broadcasts (a client that moved without recovery misses what was sent while it reconnected). The sender is connected straight to the node that stays up, so no broadcast is lost on its way in."
md_record
echo "results in $MD" >&2
