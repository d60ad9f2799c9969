#!/usr/bin/env bash
# Sessions through routine operations, measured the way a new user would try them: iogate-lb in
# its quick form (`--listen … --upstream …`), iogate-loadtest with --reconnect broadcasting at
# 4 msgs/s, and one operation in the middle of the run:
#
#   drain     2 iogate-node + Redis; SIGTERM one node (its paced drain); 100 polling + 100 WebSocket
#   upgrade   2 iogate-node + Redis; binary upgrade of the LB (-u + SIGQUIT); 150 polling + 150 WebSocket
#   replicas  2 iogate-node + Redis behind two LB replicas behind HAProxy `mode tcp` round-robin;
#             100 polling + 100 polling→WebSocket
#   nodejs    2 plain Node.js socket.io servers (no extra route); echo with acks; 100 polling + 100 WebSocket
#
# For each: requests answered 400 "Session ID unknown" by the LB, disconnect reasons, sessions lost
# (reconnects), messages lost of expected (acks for nodejs), clients connected.
#
# Usage: bench/continuity.sh [SECONDS]   (default 20; RECORD=1 writes docs/benchmarks.md)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SECS=${1:-20}
out_dir /tmp/iogate-bench/continuity
need haproxy:haproxy redis-server:redis-server
command -v node >/dev/null || need node:nodejs
[ -d testkit/js/node_modules/socket.io ] || npm ci --prefix testkit/js --no-audit --no-fund >/dev/null
bench_build iogate-node iogate-lb iogate-loadtest
md_open continuity "bench/continuity.sh $SECS"
md "| operation | clients | 400s from the LB | disconnects | sessions lost | lost / expected | connected |" \
   "|---|---|---|---|---|---|---|"

# lt NAME TRANSPORT CLIENTS SCENARIO URL: a background loadtest run writing $OUT/NAME.json.
lt() {
  loadtest --url "$5" --scenario "$4" --transport "$2" --clients "$3" --total-rate "${RATE:-4}" \
    --duration "${SECS}s" --reconnect --drain 3s --json "$OUT/$1.json" &
  pids+=("$!")
}
metric() { curl -fsS "127.0.0.1:$1/metrics" | awk -v k="$2" '$1 == k {print $2}'; }
sid400() { echo $(( $(metric "$1" 'iogate_lb_sid_unknown_total{reason="unknown"}') + $(metric "$1" 'iogate_lb_sid_unknown_total{reason="backend_down"}') )); }
# row NAME OPERATION 400S JSON...: one table row summed over the runs' JSON reports.
row() {
  local name=$1 op=$2 e400=$3; shift 3
  python3 - "$op" "$e400" "$@" <<'PY' | tee -a "$MD"
import json, sys
op, e400, files = sys.argv[1], sys.argv[2], sys.argv[3:]
runs = [json.load(open(f))[0] for f in files]
clients = sum(r["clients"] for r in runs)
disc = {}
for r in runs:
    for k, v in r["accounting"]["disconnects"].items():
        if k != "io client disconnect":
            disc[k] = disc.get(k, 0) + v
lost = sum(r["accounting"]["lost"] + r["accounting"]["acks_timed_out"] for r in runs)
expected = sum(r["accounting"]["expected"] + r["accounting"]["acks_sent"] for r in runs)
recon = sum(r["reconnects"] for r in runs)
peak = sum(r["connected_peak"] for r in runs)
d = ", ".join(f"{v} × {k}" for k, v in sorted(disc.items())) or "none"
print(f"| {op} | {clients} | {e400} | {d} | {recon} | {lost} of {expected} | {peak} of {clients} |")
PY
}

echo "==> drain: SIGTERM one of two nodes" >&2
start_redis
N1=$(free_port); N2=$(free_port)
start_node "$N1" n1 "redis://127.0.0.1:$RP"; NODE1=$NODE_PID
start_node "$N2" n2 "redis://127.0.0.1:$RP"
LBP=$(free_port); start_lb "$LBP" "$N1" "$N2"
lt drain-p polling 100 broadcast "http://127.0.0.1:$LBP"; A=$!
lt drain-w websocket 100 broadcast "http://127.0.0.1:$LBP"; B=$!
sleep $(( SECS / 3 + 1 ))
kill -TERM "$NODE1"
wait "$A" "$B"
row drain "SIGTERM one node (paced drain)" "$(sid400 "$LB_ADMIN")" "$OUT/drain-p.json" "$OUT/drain-w.json"
stop_pid "$LB_PID"; stop_pid "$NODE_PID"; stop_pid "$REDIS_PID"

echo "==> upgrade: binary upgrade of the LB" >&2
start_redis
N1=$(free_port); N2=$(free_port)
start_node "$N1" u1 "redis://127.0.0.1:$RP"; NODE1=$NODE_PID
start_node "$N2" u2 "redis://127.0.0.1:$RP"; NODE2=$NODE_PID
LBP=$(free_port); start_lb "$LBP" "$N1" "$N2"
lt upgrade-p polling 150 broadcast "http://127.0.0.1:$LBP"; A=$!
lt upgrade-w websocket 150 broadcast "http://127.0.0.1:$LBP"; B=$!
sleep $(( SECS / 3 + 1 ))
"$BIN/iogate-lb" --listen "127.0.0.1:$LBP" --upstream "127.0.0.1:$N1" --upstream "127.0.0.1:$N2" \
  --admin "127.0.0.1:$LB_ADMIN" --pid-file "$OUT/lb-$LBP.pid" --upgrade-sock "$OUT/lb-$LBP.sock" -u \
  >"$OUT/lb-$LBP-new.log" 2>&1 &
NEW_LB=$!; pids+=("$NEW_LB")
for _ in $(seq 1 100); do [ -S "$OUT/lb-$LBP.sock.sids" ] && break; sleep 0.05; done
kill -QUIT "$LB_PID"
wait "$A" "$B"
row upgrade "binary upgrade (-u + SIGQUIT)" "$(sid400 "$LB_ADMIN")" "$OUT/upgrade-p.json" "$OUT/upgrade-w.json"
stop_pid "$NEW_LB"; stop_pid "$LB_PID"; stop_pid "$NODE1"; stop_pid "$NODE2"; stop_pid "$REDIS_PID"

echo "==> replicas: two LBs behind HAProxy mode tcp" >&2
start_redis
N1=$(free_port); N2=$(free_port)
start_node "$N1" r1 "redis://127.0.0.1:$RP"; NODE1=$NODE_PID
start_node "$N2" r2 "redis://127.0.0.1:$RP"; NODE2=$NODE_PID
L1=$(free_port); start_lb "$L1" "$N1" "$N2"; LB1=$LB_PID; ADMIN1=$LB_ADMIN
L2=$(free_port); start_lb "$L2" "$N1" "$N2"; LB2=$LB_PID; ADMIN2=$LB_ADMIN
HP=$(free_port)
cat >"$OUT/haproxy.cfg" <<EOF
global
  maxconn 4000
defaults
  mode tcp
  timeout connect 2s
  timeout client 600s
  timeout server 600s
frontend fe
  bind 127.0.0.1:$HP
  default_backend lbs
backend lbs
  balance roundrobin
  server lb1 127.0.0.1:$L1
  server lb2 127.0.0.1:$L2
EOF
haproxy -db -f "$OUT/haproxy.cfg" >"$OUT/haproxy.log" 2>&1 &
HA=$!; pids+=("$HA"); wait_tcp "$HP"
lt replicas-p polling 100 broadcast "http://127.0.0.1:$HP"; A=$!
lt replicas-u upgrade 100 broadcast "http://127.0.0.1:$HP"; B=$!
wait "$A" "$B"
row replicas "2 LB replicas behind HAProxy mode tcp" "$(( $(sid400 "$ADMIN1") + $(sid400 "$ADMIN2") ))" \
  "$OUT/replicas-p.json" "$OUT/replicas-u.json"
stop_pid "$HA"; stop_pid "$LB1"; stop_pid "$LB2"; stop_pid "$NODE1"; stop_pid "$NODE2"; stop_pid "$REDIS_PID"

echo "==> nodejs: quick form in front of two plain socket.io servers" >&2
J1=$(free_port); J2=$(free_port)
for p in "$J1" "$J2"; do
  (cd testkit/js && exec node server.mjs "js$p" "$p" --plain) >"$OUT/js-$p.log" 2>&1 &
  pids+=("$!")
  wait_tcp "$p"
done
LBP=$(free_port); start_lb "$LBP" "$J1" "$J2"
RATE=40 lt nodejs-p polling 100 echo "http://127.0.0.1:$LBP"; A=$!
RATE=40 lt nodejs-w websocket 100 echo "http://127.0.0.1:$LBP"; B=$!
wait "$A" "$B"
row nodejs "quick form, 2 plain Node.js socket.io servers" "$(sid400 "$LB_ADMIN")" \
  "$OUT/nodejs-p.json" "$OUT/nodejs-w.json"
md "" "Sessions lost = reconnects (a session ended by the operation: the client got a new one); lost / expected = broadcast deliveries (acks for the Node.js row). A drained node's clients move to the other node and miss what was broadcast while they reconnected (connection state recovery is what closes that gap)."
md_record
