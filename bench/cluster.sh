#!/usr/bin/env bash
# Cluster benchmark: 2 × iogate-node + Redis (connection state recovery off, then on) vs 2 ×
# Node.js socket.io + @socket.io/redis-adapter + Redis, each behind the same front door
# (iogate-lb) or with the clients straight on the nodes, with iogate-loadtest as the client, all
# on this machine in one run.
#
#   bench/cluster.sh [CLIENTS=2000] [STEP_SECONDS=10] [IDLE_CLIENTS=10000] [FIXED_RATE=10]
#   bench/cluster.sh 50 2 200 5          # smoke run (CI)
#   RATES="5 10 20 40" bench/cluster.sh  # the message-rate ladder (messages/s over all clients)
#   VIA=direct bench/cluster.sh          # clients round-robin straight on the two nodes (no LB):
#                                        # the nodes' cost alone; recorded as `cluster-direct`
#
# 1. Broadcast fan-out: CLIENTS WebSocket clients spread by the LB (or round-robin) over both nodes; every
#    `chat:message` goes to all of them (CLIENTS deliveries per message). The total message rate
#    climbs the ladder, one STEP_SECONDS run per rung, until a message is lost or p99 passes
#    1 s: the last rung reached is the max lossless deliveries/s; the highest rung with p99
#    delivery latency ≤ 100 ms and nothing lost is the max sustained deliveries/s. Per rung: p50/p99, loss, each node's and the LB's CPU (% of one core), the nodes'
#    peak RSS, the generator's CPU. After the 2 s drain the generator listens LATE_WINDOW more
#    (5 s): deliveries then are "late", what never arrives is "lost" — a rung with late ones
#    but none lost failed on latency, not on delivery.
# 2. p99 at FIXED_RATE messages/s (a rung of the ladder; added when missing).
# 3. Memory per idle client: IDLE_CLIENTS WebSocket clients straight to the two freshly started
#    nodes (before the ladder); the nodes' RSS growth divided by the clients.
# 4. With recovery on (`recovery: {enabled: true}`, every broadcast appended to a Redis stream
#    and delivered from it): the same ladder, and after it Redis memory per tracked message —
#    MEMORY USAGE of the namespace's stream divided by its length (entries are kept for
#    max_disconnection + one heartbeat + 10 s, so the stream holds the last minutes of the ladder).
# Installs redis-server from Debian and the pinned baselines (bench/js) from npm when missing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
CLIENTS=${1:-2000}
STEP=${2:-10}
IDLE_N=${3:-10000}
FIXED=${4:-10}
VIA=${VIA:-lb}
LATE_WINDOW=${LATE_WINDOW:-5s}
case $VIA in lb|direct) ;; *) echo "VIA must be lb or direct" >&2; exit 2 ;; esac
RATES=${RATES:-"1 2 5 10 20 30 50 75 100 150 200 300 500"}
case " $RATES " in *" $FIXED "*) ;; *) RATES=$(printf '%s\n' $RATES "$FIXED" | sort -n | uniq | tr '\n' ' ');; esac
IDLE_N=$(cap_to_fds "$IDLE_N" $(( FDS - 1000 )))
out_dir /tmp/iogate-cluster
need redis-server:redis-server redis-cli:redis-tools curl:curl python3:python3 ss:iproute2
need_js
bench_build iogate-node iogate-lb iogate-loadtest
if [ "$VIA" = direct ]; then md_open cluster-direct "VIA=direct bench/cluster.sh $*"; else md_open cluster "bench/cluster.sh $*"; fi
md "Versions: iogate-node $("$BIN/iogate-node" --version | awk '{print $2}'), Node.js $(node --version), socket.io $(node -p 'require("./bench/js/node_modules/socket.io/package.json").version'), @socket.io/redis-adapter $(node -p 'require("./bench/js/node_modules/@socket.io/redis-adapter/package.json").version'), $(redis-server --version | awk '{print $1, $3}')." ""

printf 'recovery:\n  enabled: true\n' >"$OUT/recovery-on.yaml"

# start_stack iogate|iogate-recovery|socketio: Redis, two nodes (P1/P2 on N1/N2), iogate-lb on LBP.
start_stack() {
  start_redis
  N1=$(free_port); N2=$(free_port)
  local port pidvar=P1
  for port in "$N1" "$N2"; do
    case $1 in
      iogate) start_node "$port" "n$port" "redis://127.0.0.1:$RP"; printf -v "$pidvar" '%s' "$NODE_PID" ;;
      iogate-recovery)
        start_node "$port" "n$port" "redis://127.0.0.1:$RP" --config "$OUT/recovery-on.yaml"
        printf -v "$pidvar" '%s' "$NODE_PID" ;;
      socketio)
        node bench/js/socketio-cluster-node.mjs "n$port" "$port" "redis://127.0.0.1:$RP" >"$OUT/socketio-$port.log" 2>&1 &
        printf -v "$pidvar" '%s' "$!"; pids+=("$!")
        wait_http "http://127.0.0.1:$port/readyz" ;;
    esac
    pidvar=P2
  done
  LB_PID=
  if [ "$VIA" = lb ]; then
    LBP=$(free_port)
    start_lb "$LBP" "$N1" "$N2"
    URLS=(--url "http://127.0.0.1:$LBP")
  else
    URLS=(--url "http://127.0.0.1:$N1" --url "http://127.0.0.1:$N2")
  fi
}
stop_stack() { [ -n "$LB_PID" ] && stop_pid "$LB_PID"; stop_pid "$P1"; stop_pid "$P2"; stop_pid "$REDIS_PID"; }
lb_ticks() { if [ -n "$LB_PID" ]; then ticks "$LB_PID"; else echo 0; fi; }

# run_rung STACK RATE: one broadcast run; writes its table row and sets RUNG to ok (p99 ≤ 100 ms,
# nothing lost), slow (nothing lost, p99 ≤ 1 s) or fail.
run_rung() {
  local stack=$1 rate=$2 json="$OUT/$1-broadcast-$2.json"
  loadtest "${URLS[@]}" --scenario broadcast --clients "$CLIENTS" --connect-rate 2000 \
    --total-rate "$rate" --duration "${STEP}s" --drain 2s --late-window "$LATE_WINDOW" \
    --local-addrs 4 --json "$json" &
  local lt=$!; pids+=("$lt")
  wait_established "$CLIENTS" "$N1" "$N2"
  local c1 c2 cl t0 m1=0 m2=0 r
  c1=$(ticks "$P1"); c2=$(ticks "$P2"); cl=$(lb_ticks); t0=$(date +%s.%N)
  while kill -0 "$lt" 2>/dev/null; do
    r=$(rss "$P1"); [ "$r" -gt "$m1" ] && m1=$r
    r=$(rss "$P2"); [ "$r" -gt "$m2" ] && m2=$r
    sleep 0.5
  done
  wait "$lt" || true
  local t1 d1 d2 dl
  t1=$(date +%s.%N); d1=$(( $(ticks "$P1") - c1 )); d2=$(( $(ticks "$P2") - c2 )); dl=$(( $(lb_ticks) - cl ))
  [ -s "$json" ] || { md "| $stack | $rate | loadtest failed (see $OUT/loadtest.log) | | | | | | | | |"; RUNG=fail; return; }
  RUNG_NODE_CPU=$(awk -v a="$d1" -v b="$d2" -v hz="$HZ" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.0f", (a + b) * 100 / hz / (t1 - t0) }')
  local line
  line=$(python3 - "$json" "$stack" "$rate" "$STEP" "$CLIENTS" "$d1" "$d2" "$HZ" "$t0" "$t1" "$m1" "$m2" "$dl" "$VIA" <<'PY'
import json, sys
f, stack, rate, step, clients, d1, d2, hz, t0, t1, m1, m2, dl, via = sys.argv[1:]
d = json.load(open(f))[0]; a = d["accounting"]
wall = float(t1) - float(t0)
fails = sum(a["failures"].values())
p99 = a["latency_ms"]["p99"]
lossless = a["lost"] == 0 and a.get("late", 0) == 0 and fails == 0 and a["received"] > 0
status = "ok" if lossless and p99 <= 100 else ("slow" if lossless and p99 <= 1000 else "fail")
verdict = {"ok": "pass", "slow": "p99 > 100 ms", "fail": "**stop**"}[status]
if fails:
  verdict += " (%d connect failures)" % fails
print(status)
lb_cpu = "%.0f %%" % (int(dl) * 100 / int(hz) / wall) if via == "lb" else "—"
print("| %s | %s | %.0f | %.1f ms | %.1f ms | %d of %d (late %d) | %.0f %% / %.0f %% | %s | %.0f / %.0f MiB | %.0f %% | %s |" % (
  stack, rate, a["received"] / float(step), a["latency_ms"]["p50"], p99, a["lost"], a["expected"], a.get("late", 0),
  int(d1) * 100 / int(hz) / wall, int(d2) * 100 / int(hz) / wall, lb_cpu,
  int(m1) / 1024, int(m2) / 1024, d["generator_cpu_pct"], verdict))
PY
)
  md "$(tail -n 1 <<<"$line")"
  RUNG=$(head -n 1 <<<"$line")
}

declare -A MAX LOSSLESS FIXED_P99 FIXED_CPU IDLE_KIB
STREAM_BYTES="—"
for stack in iogate iogate-recovery socketio; do
  # On fresh nodes, before any traffic has grown their heaps.
  start_stack "$stack"
  echo "== $stack: $IDLE_N idle clients straight to the nodes" >&2
  sleep 2
  hold_idle "$IDLE_N"
  IDLE_KIB[$stack]=$IDLE_KIB
  md "$stack idle: $IDLE_GOT clients, nodes' RSS $(( IDLE_R0 / 1024 )) → $(( IDLE_R1 / 1024 )) MiB = ${IDLE_KIB[$stack]} KiB per client." ""
  stop_pid "$IDLE_LT"
  for _ in $(seq 1 100); do [ "$(established "$N1" "$N2")" -eq 0 ] && break; sleep 0.2; done
  via_text=$([ "$VIA" = lb ] && echo "through iogate-lb" || echo "straight on the nodes")
  echo "== $stack: broadcast ladder, $CLIENTS clients $via_text, ${STEP}s per rung" >&2
  md "### $stack: broadcast fan-out, $CLIENTS clients $via_text, ${STEP} s per rung" ""
  md "| stack | msgs/s | deliveries/s | p50 | p99 | lost (never delivered) | CPU node 1 / 2 | CPU LB | peak RSS node 1 / 2 | generator CPU | |" \
     "|---|---|---|---|---|---|---|---|---|---|---|"
  MAX[$stack]=0; LOSSLESS[$stack]=0; FIXED_P99[$stack]="—"; FIXED_CPU[$stack]="—"
  for rate in $RATES; do
    run_rung "$stack" "$rate"
    [ "$RUNG" = fail ] && break
    f="$OUT/$stack-broadcast-$rate.json"
    got=$(jget "$f" "round(d['accounting']['received'] / $STEP)")
    LOSSLESS[$stack]=$got
    [ "$RUNG" = ok ] && MAX[$stack]=$got
    if [ "$rate" = "$FIXED" ]; then
      FIXED_P99[$stack]=$(jget "$f" "'%.1f ms' % d['accounting']['latency_ms']['p99']")
      FIXED_CPU[$stack]=$RUNG_NODE_CPU
    fi
  done
  md ""
  if [ "$stack" = iogate-recovery ]; then
    # The root namespace's stream: {key_prefix-csr}/
    # Length, memory, and the size of the last entry's encoded packet (field `e`).
    read -r xlen bytes ebytes < <(redis-cli -p "$RP" --raw eval "local l = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1) return {redis.call('XLEN', KEYS[1]), redis.call('MEMORY', 'USAGE', KEYS[1], 'SAMPLES', '0'), l[1] and string.len(l[1][2][2]) or 0}" 1 "{iogate-csr}/" | tr '\n' ' '; echo)
    if [ "${xlen:-0}" -gt 0 ]; then
      STREAM_BYTES=$(( bytes / xlen ))
      md "iogate-recovery: the stream holds $xlen tracked messages in $(( bytes / 1024 )) KiB = $STREAM_BYTES bytes per message (the encoded packet — event name, loadtest message, audience — is $ebytes bytes; the rest is the entry id, the writer's order tag and the stream's own overhead)." ""
    fi
  fi
  stop_stack
done

md "### Summary" "" \
   "| | iogate-node | iogate-node, recovery on | Node socket.io + redis-adapter | ratio iogate ÷ Node | recovery on ÷ off |" "|---|---|---|---|---|---|"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f×", a/b; else print "— (baseline never passed)" }'; }
ratio2() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a/b; else print "—" }'; }
row() { # row LABEL KEY-ARRAY-NAME
  local -n v=$2
  md "| $1 | ${v[iogate]} | ${v[iogate-recovery]} | ${v[socketio]} | $(ratio "${v[iogate]}" "${v[socketio]}") | $(ratio2 "${v[iogate-recovery]}" "${v[iogate]}") |"
}
row "max sustained deliveries/s (p99 ≤ 100 ms, 0 lost)" MAX
row "max lossless deliveries/s (p99 ≤ 1 s)" LOSSLESS
md "| p99 at $FIXED msgs/s ($(( FIXED * CLIENTS )) deliveries/s) | ${FIXED_P99[iogate]} | ${FIXED_P99[iogate-recovery]} | ${FIXED_P99[socketio]} | | |"
md "| both nodes' CPU at $FIXED msgs/s (% of one core) | ${FIXED_CPU[iogate]} % | ${FIXED_CPU[iogate-recovery]} % | ${FIXED_CPU[socketio]} % | $(ratio "${FIXED_CPU[iogate]/—/0}" "${FIXED_CPU[socketio]/—/0}") | $(ratio2 "${FIXED_CPU[iogate-recovery]/—/0}" "${FIXED_CPU[iogate]/—/0}") |"
md "$(awk -v a="${IDLE_KIB[iogate]}" -v r="${IDLE_KIB[iogate-recovery]}" -v b="${IDLE_KIB[socketio]}" 'BEGIN { printf "| memory per idle client | %.1f KiB | %.1f KiB | %.1f KiB | %.1f× | %.2f× |", a, r, b, (b>0 ? a/b : 0), (a>0 ? r/a : 0) }')"
md "| Redis memory per tracked message | | $STREAM_BYTES bytes | | | |"
md "" "Ratios: iogate-node (recovery off) ÷ Node socket.io; recovery on ÷ off."
md_record
echo "results in $MD" >&2
