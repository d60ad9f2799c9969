#!/usr/bin/env bash
# Instructions per long-polling request, iogate-lb vs nginx, counted by valgrind's callgrind.
# CPU seconds on this 2-vCPU box move by ±5 % from run to run, so a change to the per-request
# path worth a few per cent cannot be told from noise by bench/frontdoor.sh alone; instruction
# counts repeat. Each proxy runs under callgrind in front of the same two iogate-nodes (nginx
# with the cookie stickiness of bench/frontdoor.sh part (d), one worker process; iogate-lb as
# built), counting only while CLIENTS long-polling clients (cookie jar on) send 2 acked echoes/s
# each for SECONDS; the proxy's own request count (iogate_lb_requests_total, nginx's
# stub_status) divides the count. User-space instructions only: system calls are the kernel's,
# and a `rep movsb` copy counts once per byte, so memcpy's share is shown apart.
#
#   bench/instructions.sh [CLIENTS=50] [SECONDS=15]
#   bench/instructions.sh 5 2      # smoke run
set -euo pipefail
source "$(dirname "$0")/lib.sh"
CLIENTS=${1:-50}
SECS=${2:-15}
out_dir /tmp/iogate-instructions
need valgrind:valgrind callgrind_control:valgrind nginx:nginx redis-server:redis-server curl:curl
bench_build iogate-node iogate-lb iogate-loadtest
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
md_open instructions "bench/instructions.sh $*"
md "Versions: iogate-lb $("$LB_BIN" --version | awk '{print $2}'), $("$NGINX" -v 2>&1 | sed 's/.*: //'), $(valgrind --version)." ""

start_redis
N1=$(free_port); N2=$(free_port)
start_node "$N1" "n$N1" "redis://127.0.0.1:$RP"
start_node "$N2" "n$N2" "redis://127.0.0.1:$RP"

# callgrind_self FILE: "total memcpy malloc" — instructions in all, in memcpy/memmove, and in
# glibc's malloc/free/realloc, from a callgrind dump.
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
    elif re.search(r"malloc/(malloc|arena)\.c:", what):
        malloc += n
print(total, memcpy, malloc)'
}

# measure NAME PID URL COUNT-COMMAND OWN: warm up, count instructions over the load, one row.
# OWN: requests COUNT-COMMAND's first reading adds to the count itself.
measure() {
  local name=$1 pid=$2 url=$3 count=$4 own=$5 r0 r1 n f
  loadtest --url "$url" --cookies --transport polling --scenario echo --clients "$CLIENTS" --connect-rate 100 \
    --rate 2 --duration 3s || true
  callgrind_control -i on "$pid" >/dev/null
  r0=$($count)
  loadtest --url "$url" --cookies --transport polling --scenario echo --clients "$CLIENTS" --connect-rate 100 \
    --rate 2 --duration "${SECS}s" --json "$OUT/$name.json" || true
  r1=$($count)
  callgrind_control -i off "$pid" >/dev/null
  callgrind_control -d "$pid" >/dev/null
  f=$(ls -t "$OUT/$name.callgrind".* | head -1)
  n=$(( r1 - r0 - own ))
  read -r total memcpy malloc < <(callgrind_self "$f")
  [ "$n" -gt 0 ] && [ "$total" -gt 0 ] || { echo "$name: no requests or no instructions counted" >&2; exit 1; }
  IR[$name]=$(( total / n ))
  md "$(awk -v p="$name" -v n="$n" -v t="$total" -v c="$memcpy" -v m="$malloc" -v a="$(jget "$OUT/$name.json" "d['accounting']['acks_received']")" \
    'BEGIN { printf "| %s | %d | %d | %d | %.0f | %.0f | %.0f |", p, a, n, t, t/n, c/n, m/n }')"
}
declare -A IR

md "### Instructions per long-polling request ($CLIENTS clients, 2 acked echoes/s each, ${SECS} s, cookie jar on)" "" \
   "| proxy | echoes acked | requests | instructions | per request | of which memcpy | of which malloc/free |" \
   "|---|---|---|---|---|---|---|"

# iogate-lb, as built (its worker threads; callgrind runs them one at a time).
PORT=$(free_port); ADMIN=$(free_port)
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/iogate-lb.callgrind.%p" \
  "$LB_BIN" --listen "127.0.0.1:$PORT" --upstream "127.0.0.1:$N1" --upstream "127.0.0.1:$N2" \
  --admin "127.0.0.1:$ADMIN" --pid-file "$OUT/lb.pid" --upgrade-sock "$OUT/lb.sock" >"$OUT/lb.log" 2>&1 &
LBP=$!; pids+=("$LBP")
wait_http "http://127.0.0.1:$ADMIN/metrics"
lb_requests() { curl -fsS "127.0.0.1:$ADMIN/metrics" | awk '/^iogate_lb_requests_total/ { s += $2 } END { print s + 0 }'; }
measure iogate-lb "$LBP" "http://127.0.0.1:$PORT" lb_requests 0
stop_pid "$LBP"

# nginx: one worker, no master process, so callgrind follows the one process that serves.
PORT=$(free_port); STATUS=$(free_port)
conf="$OUT/nginx"; mkdir -p "$conf"
nginx_conf nginx "listen 127.0.0.1:$PORT;" 1 "$N1" "$N2" "$STATUS" >"$conf/nginx.conf"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/nginx.callgrind.%p" \
  "$NGINX" -p "$conf" -c "$conf/nginx.conf" \
  -g "daemon off; master_process off; pid $conf/nginx.pid; error_log $conf/error.log;" >"$OUT/nginx.log" 2>&1 &
NP=$!; pids+=("$NP")
wait_tcp "$PORT"
# stub_status counts the requests made to it too: the first reading is one of the difference.
nginx_requests() { curl -fsS "127.0.0.1:$STATUS/" | awk 'NR == 3 { print $3 }'; }
measure nginx "$NP" "http://127.0.0.1:$PORT" nginx_requests 1
stop_pid "$NP"

md "" "iogate-lb ÷ nginx: $(awk -v a="${IR[iogate-lb]}" -v b="${IR[nginx]}" 'BEGIN { printf "%.1f×", a/b }') instructions per request." ""
md_record
