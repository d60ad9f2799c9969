#!/usr/bin/env bash
# Front door benchmark: iogate-lb vs nginx (least_conn + upgrade headers) vs HAProxy (leastconn)
# in front of the same 2 iogate-node processes (+ Redis), with iogate-loadtest as the client,
# all on this machine in one run. Also measures going direct to the nodes (the floor).
#
#   bench/frontdoor.sh [ECHO_CLIENTS=1000] [IDLE_CLIENTS=10000] [SECONDS=20]
#   bench/frontdoor.sh 50 200 3        # smoke run (CI)
#   PARTS=b bench/frontdoor.sh         # only part (b)
#
# (a) echo: ECHO_CLIENTS WebSocket clients, 2 acked echoes/s each: RTT p50/p99 and the part the
#     proxy adds over going direct; the proxy's CPU seconds and RSS.
# (b) idle: IDLE_CLIENTS WebSocket sessions held open: the proxy's RSS per session.
# Installs nginx and haproxy from Debian packages when missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FDS=$(ulimit -n)
# A proxied session costs the proxy two descriptors (client + upstream).
MAX_IDLE=$(( FDS / 2 - 500 ))
ECHO_N=${1:-1000}
IDLE_N=${2:-10000}
SECS=${3:-20}
if [ "$IDLE_N" -gt "$MAX_IDLE" ]; then
  echo "note: the open-files limit is $FDS; holding $MAX_IDLE idle sessions instead of $IDLE_N" >&2
  IDLE_N=$MAX_IDLE
fi
OUT=${OUT:-/tmp/iogate-frontdoor}
mkdir -p "$OUT"

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
cargo build --release -q -p iogate-node -p iogate-lb -p iogate-loadtest

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { local p; while :; do p=$(( 20000 + RANDOM % 12000 )); (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }; done; }
wait_tcp() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
hz=$(getconf CLK_TCK)
# CPU ticks and RSS (KiB) summed over a process and its children (nginx workers).
tree() { echo "$1 $(pgrep -P "$1" | tr '\n' ' ')"; }
ticks() { local t=0; for p in $(tree "$1"); do t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0) )); done; echo "$t"; }
rss() { local r=0; for p in $(tree "$1"); do r=$(( r + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0) )); done; echo "$r"; }

RP=$(free_port)
redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
pids+=($!)
wait_tcp "$RP"
N1=$(free_port); N2=$(free_port)
for p in "$N1" "$N2"; do
  ./target/release/iogate-node --listen "127.0.0.1:$p" --node-id "n$p" --redis-url "redis://127.0.0.1:$RP" >"$OUT/node-$p.log" 2>&1 &
  pids+=($!)
  wait_tcp "$p"
done
node_sockets() { local s=0; for p in "$N1" "$N2"; do s=$(( s + $(curl -fsS "127.0.0.1:$p/metrics" | awk '/^iogate_node_sockets\{transport="websocket"\}/ {print $2}') )); done; echo "$s"; }

start_proxy() { # name -> sets PPID_ and PORT
  PORT=$(free_port)
  case $1 in
    iogate-lb)
      local admin; admin=$(free_port)
      ./target/release/iogate-lb --listen "127.0.0.1:$PORT" --upstream "127.0.0.1:$N1" --upstream "127.0.0.1:$N2" \
        --admin "127.0.0.1:$admin" --pid-file "$OUT/lb.pid" --upgrade-sock "$OUT/lb.sock" >"$OUT/lb.log" 2>&1 &
      PPID_=$!
      for _ in $(seq 1 100); do [ "$(curl -fsS "127.0.0.1:$admin/api/backends" 2>/dev/null | grep -c '"up"')" -eq 2 ] && break; sleep 0.1; done ;;
    nginx)
      mkdir -p "$OUT/nginx"
      cat >"$OUT/nginx/nginx.conf" <<CONF
worker_processes 2;
worker_rlimit_nofile $FDS;
events { worker_connections $(( FDS / 2 )); }
http {
  access_log off;
  upstream io { least_conn; server 127.0.0.1:$N1; server 127.0.0.1:$N2; }
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  server {
    listen 127.0.0.1:$PORT;
    location / {
      proxy_pass http://io;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_read_timeout 600s;
    }
  }
}
CONF
      "$NGINX" -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" -g "daemon off; pid $OUT/nginx/nginx.pid; error_log $OUT/nginx/error.log;" &
      PPID_=$! ;;
    haproxy)
      cat >"$OUT/haproxy.cfg" <<CONF
global
  maxconn $(( FDS / 2 - 100 ))
  nbthread 2
defaults
  mode http
  timeout connect 2s
  timeout client 600s
  timeout server 600s
  timeout tunnel 600s
frontend fe
  bind 127.0.0.1:$PORT
  default_backend be
backend be
  balance leastconn
  option forwardfor
  server n1 127.0.0.1:$N1
  server n2 127.0.0.1:$N2
CONF
      "$HAPROXY" -db -f "$OUT/haproxy.cfg" >"$OUT/haproxy.log" 2>&1 &
      PPID_=$! ;;
  esac
  pids+=($PPID_)
  wait_tcp "$PORT"
}

loadtest() { ./target/release/iogate-loadtest --quiet "$@" 2>/dev/null; }
jget() { python3 -c "import json,sys; d=json.load(open('$1'))[0]; print($2)"; }

results="$OUT/results.txt"
: >"$results"
PARTS=${PARTS:-a,b}
if [[ $PARTS == *a* ]]; then
echo "== (a) echo: $ECHO_N WebSocket clients, 2 echo/s each, ${SECS}s" | tee -a "$results"
loadtest --url "http://127.0.0.1:$N1" --url "http://127.0.0.1:$N2" --scenario echo --clients "$ECHO_N" \
  --connect-rate 1000 --rate 2 --duration "${SECS}s" --json "$OUT/direct-echo.json"
d50=$(jget "$OUT/direct-echo.json" "d['accounting']['latency_ms']['p50']"); d99=$(jget "$OUT/direct-echo.json" "d['accounting']['latency_ms']['p99']")
printf '%-10s p50 %7.3f ms  p99 %7.3f ms\n' direct "$d50" "$d99" | tee -a "$results"
for proxy in iogate-lb nginx haproxy; do
  start_proxy "$proxy"
  c0=$(ticks "$PPID_")
  loadtest --url "http://127.0.0.1:$PORT" --scenario echo --clients "$ECHO_N" --connect-rate 1000 --rate 2 \
    --duration "${SECS}s" --json "$OUT/$proxy-echo.json"
  c1=$(ticks "$PPID_"); r=$(rss "$PPID_")
  p50=$(jget "$OUT/$proxy-echo.json" "d['accounting']['latency_ms']['p50']"); p99=$(jget "$OUT/$proxy-echo.json" "d['accounting']['latency_ms']['p99']")
  lost=$(jget "$OUT/$proxy-echo.json" "d['accounting']['acks_timed_out']")
  awk -v n="$proxy" -v a="$p50" -v b="$p99" -v da="$d50" -v db="$d99" -v c="$(( c1 - c0 ))" -v hz="$hz" -v r="$r" -v l="$lost" \
    'BEGIN { printf "%-10s p50 %7.3f ms  p99 %7.3f ms  added p50 %+.3f p99 %+.3f ms  cpu %.2f s  rss %.1f MiB  ack timeouts %d\n", n, a, b, a-da, b-db, c/hz, r/1024, l }' | tee -a "$results"
  kill "$PPID_"; wait "$PPID_" 2>/dev/null || true
done

fi
if [[ $PARTS == *b* ]]; then
echo "== (b) idle: $IDLE_N WebSocket sessions" | tee -a "$results"
for proxy in iogate-lb nginx haproxy; do
  start_proxy "$proxy"
  sleep 1
  r0=$(rss "$PPID_")
  loadtest --url "http://127.0.0.1:$PORT" --scenario idle --clients "$IDLE_N" --connect-rate 2000 \
    --duration $(( SECS + 60 ))s --json "$OUT/$proxy-idle.json" &
  LT=$!
  # Wait until every session is up, or the count stops growing for 3 s (a proxy refusing some).
  last=-1; still=0
  for _ in $(seq 1 600); do
    now=$(node_sockets)
    [ "$now" -ge "$IDLE_N" ] && break
    if [ "$now" -eq "$last" ] && [ "$now" -gt 0 ]; then still=$(( still + 1 )); else still=0; fi
    [ "$still" -ge 15 ] && break
    last=$now; sleep 0.2
  done
  got=$(node_sockets); sleep 2
  r1=$(rss "$PPID_")
  awk -v n="$proxy" -v g="$got" -v a="$r0" -v b="$r1" \
    'BEGIN { printf "%-10s sessions %d  rss idle %.1f MiB -> %.1f MiB  = %.2f KiB per session\n", n, g, a/1024, b/1024, (b-a)/(g>0?g:1) }' | tee -a "$results"
  [ -f "$OUT/$proxy-idle.json" ] || true
  kill "$LT" 2>/dev/null; wait "$LT" 2>/dev/null || true
  kill "$PPID_"; wait "$PPID_" 2>/dev/null || true
  for _ in $(seq 1 100); do [ "$(node_sockets)" -eq 0 ] && break; sleep 0.2; done
done
fi
echo "results in $results"
