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
#    delivery latency ≤ 100 ms and nothing lost is the max sustained deliveries/s. A rung whose
#    first p99 lies within REPEAT_BAND× (1.5) of either bound is run REPEATS times in all (3) and
#    judged by the median p99 of its runs (a message lost or late in any run stops the ladder):
#    one 10 s run's p99 is the worst of a few dozen bursts and moves by ±30 % between runs, so a
#    single run decided the maximum rates by that noise. REPEATS=1 runs every rung once.
#    Per run: p50/p99, loss, each node's and the LB's CPU (% of one core), the nodes'
#    peak RSS, the generator's CPU. After the 2 s drain the generator listens LATE_WINDOW more
#    (5 s): deliveries then are "late", what never arrives is "lost" — a run with late ones
#    but none lost failed on latency, not on delivery.
# 2. p99 at FIXED_RATE messages/s (a rung of the ladder; added when missing; the median when repeated).
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
REPEATS=${REPEATS:-3}
REPEAT_BAND=${REPEAT_BAND:-1.5}
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

# run_once STACK RATE RUN: one broadcast run; sets RUN_ROW (its table row without the last
# cell), RUN_CLEAN (1: nothing lost or late, no connect failure, something received), RUN_P99
# (ms), RUN_GOT (deliveries/s) and RUN_CPU (both nodes, % of one core).
run_once() {
  local stack=$1 rate=$2 run=$3 json="$OUT/$1-broadcast-$2-$3.json"
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
  if [ ! -s "$json" ]; then
    # The row without its last cell (run_rung adds the rung's verdict or an empty one).
    RUN_ROW="| $stack | $rate | $run | loadtest failed (see $OUT/loadtest.log) | | | | | | | |"
    RUN_CLEAN=0; RUN_P99=0; RUN_GOT=0; RUN_CPU=0; return
  fi
  local line
  line=$(python3 - "$json" "$stack" "$rate" "$run" "$STEP" "$d1" "$d2" "$HZ" "$t0" "$t1" "$m1" "$m2" "$dl" "$VIA" <<'PY'
import json, sys
f, stack, rate, run, step, d1, d2, hz, t0, t1, m1, m2, dl, via = sys.argv[1:]
d = json.load(open(f))[0]; a = d["accounting"]
wall = float(t1) - float(t0)
fails = sum(a["failures"].values())
p99 = a["latency_ms"]["p99"]
clean = a["lost"] == 0 and a.get("late", 0) == 0 and fails == 0 and a["received"] > 0
got = a["received"] / float(step)
cpu = (int(d1) + int(d2)) * 100 / int(hz) / wall
print("%d %.1f %.0f %.0f" % (clean, p99, got, cpu))
lb_cpu = "%.0f %%" % (int(dl) * 100 / int(hz) / wall) if via == "lb" else "—"
note = " (%d connect failures)" % fails if fails else ""
print("| %s | %s | %s | %.0f | %.1f ms | %.1f ms | %d of %d (late %d)%s | %.0f %% / %.0f %% | %s | %.0f / %.0f MiB | %.0f %% |" % (
  stack, rate, run, got, a["latency_ms"]["p50"], p99, a["lost"], a["expected"], a.get("late", 0), note,
  int(d1) * 100 / int(hz) / wall, int(d2) * 100 / int(hz) / wall, lb_cpu,
  int(m1) / 1024, int(m2) / 1024, d["generator_cpu_pct"]))
PY
)
  read -r RUN_CLEAN RUN_P99 RUN_GOT RUN_CPU < <(head -n 1 <<<"$line")
  RUN_ROW=$(tail -n 1 <<<"$line")
}

# near_bound P99: true when P99 (ms) lies within REPEAT_BAND× of either bound (100 ms, 1 s).
near_bound() { awk -v p="$1" -v b="$REPEAT_BAND" 'BEGIN { exit !((p >= 100 / b && p <= 100 * b) || (p >= 1000 / b && p <= 1000 * b)) }'; }

# run_rung STACK RATE: the rung's first run, and REPEATS - 1 more when its p99 is near a bound;
# sets RUNG to ok (median p99 ≤ 100 ms, nothing lost in any run), slow (nothing lost, median
# p99 ≤ 1 s) or fail, and RUNG_GOT / RUNG_P99 / RUNG_CPU to the runs' medians.
run_rung() {
  local stack=$1 rate=$2 runs=1 run=1 clean=1 p99s=() gots=() cpus=() rows=()
  while :; do
    run_once "$stack" "$rate" "$run"
    rows+=("$RUN_ROW"); p99s+=("$RUN_P99"); gots+=("$RUN_GOT"); cpus+=("$RUN_CPU")
    [ "$RUN_CLEAN" = 1 ] || { clean=0; break; }
    if [ "$run" = 1 ] && [ "$REPEATS" -gt 1 ] && near_bound "$RUN_P99"; then runs=$REPEATS; fi
    [ "$run" -ge "$runs" ] && break
    run=$(( run + 1 ))
  done
  RUNG_P99=$(median "${p99s[@]}"); RUNG_GOT=$(median "${gots[@]}"); RUNG_CPU=$(median "${cpus[@]}")
  RUNG=$(awk -v c="$clean" -v p="$RUNG_P99" 'BEGIN { print !c ? "fail" : (p <= 100 ? "ok" : (p <= 1000 ? "slow" : "fail")) }')
  local verdict median_text=""
  verdict=$(case $RUNG in ok) echo pass ;; slow) echo "p99 > 100 ms" ;; *) echo "**stop**" ;; esac)
  [ "${#p99s[@]}" -gt 1 ] && median_text=" (median p99 $RUNG_P99 ms)"
  [ "$clean" = 0 ] && median_text=" (a run lost a message, delivered one late, failed a connect or failed to run)"
  local i last=$(( ${#rows[@]} - 1 ))
  for i in "${!rows[@]}"; do
    if [ "$i" = "$last" ]; then md "${rows[$i]} $verdict$median_text |"; else md "${rows[$i]} |"; fi
  done
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
  md "| stack | msgs/s | run | deliveries/s | p50 | p99 | lost (never delivered) | CPU node 1 / 2 | CPU LB | peak RSS node 1 / 2 | generator CPU | rung |" \
     "|---|---|---|---|---|---|---|---|---|---|---|---|"
  MAX[$stack]=0; LOSSLESS[$stack]=0; FIXED_P99[$stack]="—"; FIXED_CPU[$stack]="—"
  for rate in $RATES; do
    run_rung "$stack" "$rate"
    [ "$RUNG" = fail ] && break
    LOSSLESS[$stack]=$RUNG_GOT
    [ "$RUNG" = ok ] && MAX[$stack]=$RUNG_GOT
    if [ "$rate" = "$FIXED" ]; then
      FIXED_P99[$stack]="$RUNG_P99 ms"
      FIXED_CPU[$stack]=$RUNG_CPU
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
