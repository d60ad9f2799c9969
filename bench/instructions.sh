#!/usr/bin/env bash
# User-space instructions per message, iogate-lb vs nginx, counted by valgrind's callgrind.
# CPU seconds on this 2-vCPU box move by ±5 % from run to run, so a change to a per-message path
# worth a few per cent cannot be told from noise by bench/frontdoor.sh alone; instruction counts
# repeat. Each proxy runs under callgrind in front of the same two iogate-nodes (nginx with the
# cookie stickiness of bench/frontdoor.sh, one worker process; iogate-lb as built), and each
# path is run twice with CLIENTS clients for SECONDS: once sending 2 acked echoes/s each, once
# connected and silent. The difference holds only the echoes: the handshakes, the Engine.IO pings,
# the disconnects and the proxy's own timers (health checks, a clock thread) cancel out. It is
# divided by the echoes acked and, for long-polling, by the HTTP requests the proxy counted
# (iogate_lb_requests_total, nginx's stub_status). System calls are the kernel's and not counted;
# a `rep movsb` copy counts once per byte, so memcpy's share is shown apart.
#
#   bench/instructions.sh [CLIENTS=50] [SECONDS=15]
#   bench/instructions.sh 5 2      # smoke run
#   LB_BIN=/tmp/lb-old PROXIES=iogate-lb bench/instructions.sh   # an A/B of two LB builds,
#                                                                # without the nginx rows
set -euo pipefail
source "$(dirname "$0")/lib.sh"
CLIENTS=${1:-50}
SECS=${2:-15}
PROXIES=${PROXIES:-iogate-lb nginx}
if [ "${RECORD:-0}" = 1 ] && [ "$PROXIES" != "iogate-lb nginx" ]; then
  echo "RECORD=1 records both proxies; unset PROXIES" >&2; exit 1
fi
out_dir /tmp/iogate-instructions
need valgrind:valgrind nginx:nginx redis-server:redis-server curl:curl
bench_build iogate-node iogate-lb iogate-loadtest
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
md_open instructions "bench/instructions.sh $*"
md "Versions: iogate-lb $("$LB_BIN" --version | awk '{print $2}'), $("$NGINX" -v 2>&1 | sed 's/.*: //'), $(valgrind --version)." ""

start_redis
N1=$(free_port); N2=$(free_port)
start_node "$N1" "n$N1" "redis://127.0.0.1:$RP"
start_node "$N2" "n$N2" "redis://127.0.0.1:$RP"

# callgrind_self FILE: "total memcpy malloc" — instructions in all, in memcpy/memmove, and in
# glibc's malloc/free/realloc or mimalloc, from a callgrind dump.
callgrind_self() {
  callgrind_annotate --threshold=100 "$1" 2>/dev/null | python3 -c '
import re, sys
total = memcpy = malloc = 0
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*)", line)
    if not m:
        continue
    n, what = int(m.group(1).replace(",", "")), m.group(2)
    if "PROGRAM TOTALS" in what:
        total = n
    elif "memmove" in what or "memcpy" in what:
        memcpy += n
    elif re.search(r"malloc/(malloc|arena)\.c:|\?\?\?:_?mi_", what):
        malloc += n
print(total, memcpy, malloc)'
}

# phase NAME PID URL TRANSPORT SCENARIO COUNT-COMMAND: one counted load run. Sets PH (the
# instructions, memcpy's, malloc's), PH_REQ (requests the proxy counted) and PH_ACKS.
phase() {
  local name=$1 pid=$2 url=$3 transport=$4 scenario=$5 count=$6 r0 r1 f
  r0=$($count)
  callgrind_control -i on "$pid" >/dev/null
  loadtest --url "$url" --cookies --transport "$transport" --scenario "$scenario" --clients "$CLIENTS" \
    --connect-rate 100 --rate 2 --duration "${SECS}s" --json "$OUT/$name-$transport-$scenario.json" || true
  callgrind_control -i off "$pid" >/dev/null
  r1=$($count)
  callgrind_control -d "$pid" >/dev/null
  f=$(ls -t "$OUT/$name.callgrind".* | head -1)
  read -r -a PH < <(callgrind_self "$f")
  PH_REQ=$(( r1 - r0 ))
  PH_ACKS=$(jget "$OUT/$name-$transport-$scenario.json" "d['accounting']['acks_received']")
}

# measure NAME PID URL COUNT-COMMAND: both paths, a row each.
measure() {
  local name=$1 pid=$2 url=$3 count=$4 transport idle
  # warm-up: the proxy's first connections and lazily built state are not counted
  loadtest --url "$url" --cookies --transport polling --scenario echo --clients "$CLIENTS" --connect-rate 100 \
    --rate 2 --duration 3s || true
  for transport in websocket polling; do
    phase "$name" "$pid" "$url" "$transport" idle "$count"; idle=("${PH[@]}" "$PH_REQ")
    phase "$name" "$pid" "$url" "$transport" echo "$count"
    [ "$PH_ACKS" -gt 0 ] || { echo "$name $transport: no echo acked" >&2; exit 1; }
    local ir=$(( PH[0] - idle[0] )) req=$(( PH_REQ - idle[3] ))
    PER_ECHO[$name-$transport]=$(( ir / PH_ACKS ))
    md "$(awk -v p="$name" -v t="$transport" -v a="$PH_ACKS" -v r="$req" -v i="$ir" -v c="$(( PH[1] - idle[1] ))" \
      -v m="$(( PH[2] - idle[2] ))" 'BEGIN {
        printf "| %s | %s | %d | %s | %.0f | %s | %.0f | %.0f |", p, t, a, (t == "polling" ? r : "—"), i/a,
          (t == "polling" && r > 0 ? sprintf("%.0f", i/r) : "—"), c/a, m/a }')"
  done
}
declare -A PER_ECHO

md "### Instructions per echo ($CLIENTS clients, 2 acked echoes/s each, ${SECS} s, minus the same clients silent)" "" \
   "| proxy | transport | echoes acked | requests | per echo | per request | of which memcpy, per echo | of which malloc/free, per echo |" \
   "|---|---|---|---|---|---|---|---|"

if [[ " $PROXIES " == *" iogate-lb "* ]]; then
  # iogate-lb, as built (its worker threads; callgrind runs them one at a time).
  PORT=$(free_port)
  LB_WRAP=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/iogate-lb.callgrind.%p")
  start_lb "$PORT" "$N1" "$N2"
  LBP=$LB_PID
  lb_requests() { lb_metric_sum iogate_lb_requests_total; }
  measure iogate-lb "$LBP" "http://127.0.0.1:$PORT" lb_requests
  stop_pid "$LBP"
fi

if [[ " $PROXIES " == *" nginx "* ]]; then
  # nginx: one worker, no master process, so callgrind follows the one process that serves.
  PORT=$(free_port); STATUS=$(free_port)
  conf="$OUT/nginx"; mkdir -p "$conf"
  nginx_conf nginx "listen 127.0.0.1:$PORT;" 1 "$N1" "$N2" "$STATUS" >"$conf/nginx.conf"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/nginx.callgrind.%p" \
    "$NGINX" -p "$conf" -c "$conf/nginx.conf" \
    -g "daemon off; master_process off; pid $conf/nginx.pid; error_log $conf/error.log;" >"$OUT/nginx.log" 2>&1 &
  NP=$!; pids+=("$NP")
  wait_tcp "$PORT"
  # stub_status counts the requests made to it too; both phases read it twice, so they cancel.
  nginx_requests() { curl -fsS "127.0.0.1:$STATUS/" | awk 'NR == 3 { print $3 }'; }
  measure nginx "$NP" "http://127.0.0.1:$PORT" nginx_requests
  stop_pid "$NP"
fi

[ -n "${PER_ECHO[nginx-polling]:-}" ] && [ -n "${PER_ECHO[iogate-lb-polling]:-}" ] &&
  md "" "iogate-lb ÷ nginx, instructions per echo: WebSocket $(awk -v a="${PER_ECHO[iogate-lb-websocket]}" -v b="${PER_ECHO[nginx-websocket]}" 'BEGIN { printf "%.1f×", a/b }'), long-polling $(awk -v a="${PER_ECHO[iogate-lb-polling]}" -v b="${PER_ECHO[nginx-polling]}" 'BEGIN { printf "%.1f×", a/b }')." ""
md_record
