#!/usr/bin/env bash
# Front door benchmark: iogate-lb vs nginx (least_conn + upgrade headers) vs HAProxy (leastconn)
# in front of the same 2 iogate-node processes (+ Redis), with iogate-loadtest as the client,
# all on this machine in one run. Also measures going direct to the nodes (the floor).
#
#   bench/frontdoor.sh [ECHO_CLIENTS=1000] [IDLE_CLIENTS=10000] [SECONDS=20] [HELD_CLIENTS=50000]
#   bench/frontdoor.sh 50 200 3 300    # smoke run (CI)
#   PARTS=c bench/frontdoor.sh         # only part (c); PARTS=a,b,c,d,e,t is the default
#   LB_BIN=/tmp/lb-old PARTS=d bench/frontdoor.sh   # another iogate-lb build against the same
#                                      # baselines (A/B of two builds; not for RECORD=1)
#   PROXY_THREADS=1 PARTS=d bench/frontdoor.sh      # every proxy on one thread (default 2, this
#                                      # machine's cores): iogate-lb's `threads` (--threads), nginx's
#                                      # worker_processes, HAProxy's nbthread; records as its own
#                                      # section (frontdoor-threads)
#
# (a) echo: ECHO_CLIENTS WebSocket clients, 2 acked echoes/s each: RTT p50/p99 and the part the
#     proxy adds over going direct; the proxy's CPU seconds and RSS.
# (b) idle: IDLE_CLIENTS WebSocket sessions held open: the proxy's RSS per session.
# (c) new sessions: ECHO_CLIENTS/2 WebSocket clients churned (close, reconnect) at a rising
#     rate (CHURN_RATES, new sessions/s), SECONDS per rung, until connects fail or the achieved
#     rate falls under 90 % of the target: max sustained new sessions/s and p99 handshake time
#     (TCP connect to Socket.IO CONNECT acknowledged).
# (d) long-polling: ECHO_CLIENTS/2 polling-only clients with a cookie jar, 2 acked echoes/s
#     each, D_ROUNDS (3) rounds of the three proxies, compared by their medians. Stickiness:
#     nginx pins with a cookie it sets itself (open-source nginx has no
#     `sticky`: a map from the cookie to one-server upstreams), HAProxy with `cookie … insert`,
#     iogate-lb by learning the Engine.IO sid (no cookie). nginx without stickiness is run too,
#     to show what the cookie is for.
# (e) capacity: HELD_CLIENTS idle WebSocket sessions (default 50,000) through one iogate-lb, the
#     clients spread over 8 loopback source addresses (`--local-addrs`): sessions held (the
#     LB's own `iogate_lb_websockets` gauge and the nodes' established connections), connect
#     failures, the LB's RSS and the nodes'. The LB needs two descriptors per session: where the
#     open-files limit (raised to the hard limit) is too low, the part holds as many as it allows
#     and says so in its table — it does not report the full count as held.
# (t) TLS termination: the three proxies terminate TLS with the same certificate (ECDSA P-256,
#     TLS 1.3 negotiated; nginx and HAProxy with OpenSSL, iogate-lb with rustls): ECHO_CLIENTS
#     wss clients echoing as in (a) (RTT, added over plain direct, proxy CPU), then new wss
#     sessions at TLS_CHURN_RATE/s, each a full TLS handshake (the load generator resumes no
#     session, as distinct browsers would not): achieved rate, handshake p50/p99, proxy CPU per
#     new session.
# Installs nginx and haproxy from Debian packages when missing (needs root).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ECHO_N=${1:-1000}
IDLE_N=${2:-10000}
SECS=${3:-20}
HELD_WANT=${4:-50000}
POLL_N=$(( ECHO_N / 2 ))
# Part (d) runs the three proxies D_ROUNDS times and compares their medians: one 20 s run's CPU
# moves by ±10 % (iogate-lb ÷ nginx 0.99× and 1.12× in two runs of the same build).
D_ROUNDS=${D_ROUNDS:-3}
CHURN_N=$(( ECHO_N / 2 ))
CHURN_RATES=${CHURN_RATES:-"100 200 500 1000 2000 4000"}
# A proxied session costs the proxy two descriptors (client + upstream).
IDLE_N=$(cap_to_fds "$IDLE_N" $(( FDS / 2 - 500 )))
HELD_N=$(cap_to_fds "$HELD_WANT" $(( FDS / 2 - 500 )))
out_dir /tmp/iogate-frontdoor
need nginx:nginx haproxy:haproxy redis-server:redis-server curl:curl python3:python3 ss:iproute2 openssl:openssl
TLS_CHURN_RATE=${TLS_CHURN_RATE:-500}
# One certificate for every proxy's TLS listener (part t); TLS=1 makes start_proxy use it.
TLS=0
TLS_DIR="$OUT/tls"
mkdir -p "$TLS_DIR"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost" -addext "basicConstraints=critical,CA:FALSE" \
  -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>/dev/null
cat "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" >"$TLS_DIR/haproxy.pem"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
bench_build iogate-node iogate-lb iogate-loadtest
# PARTS=t or PARTS=e alone records as its own section (frontdoor-tls, frontdoor-capacity), so
# the full run's tables stay.
PARTS=${PARTS:-a,b,c,d,e,t}
PROXY_THREADS=${PROXY_THREADS:-2}
if [ "$PROXY_THREADS" != 2 ]; then md_open frontdoor-threads "PROXY_THREADS=$PROXY_THREADS PARTS=$PARTS bench/frontdoor.sh${*:+ $*}"
elif [ "$PARTS" = t ]; then md_open frontdoor-tls "PARTS=t bench/frontdoor.sh${*:+ $*}"
elif [ "$PARTS" = e ]; then md_open frontdoor-capacity "PARTS=e bench/frontdoor.sh${*:+ $*}"
elif [ "$PARTS" = a,b,c,d,e,t ]; then md_open frontdoor "bench/frontdoor.sh${*:+ $*}"
else md_open frontdoor "PARTS=$PARTS bench/frontdoor.sh${*:+ $*}"; fi
md "Versions: iogate-lb $("$LB_BIN" --version | awk '{print $2}'), $("$NGINX" -v 2>&1 | sed 's/.*: //'), $("$HAPROXY" -v | head -1 | awk '{print $1, $3}'). Threads per proxy: $PROXY_THREADS (iogate-lb \`threads\`, nginx \`worker_processes\`, HAProxy \`nbthread\`)." ""

start_redis
N1=$(free_port); N2=$(free_port)
start_node "$N1" "n$N1" "redis://127.0.0.1:$RP"
start_node "$N2" "n$N2" "redis://127.0.0.1:$RP"
DIRECT=(--url "http://127.0.0.1:$N1" --url "http://127.0.0.1:$N2")

# start_proxy iogate-lb|nginx|nginx-nosticky|haproxy: sets PROXY_PID and PORT.
start_proxy() {
  PORT=$(free_port)
  case $1 in
    iogate-lb)
      LB_ARGS=(--threads "$PROXY_THREADS")
      if [ "$TLS" = 1 ]; then LB_ARGS+=(--tls-cert "$TLS_DIR/cert.pem" --tls-key "$TLS_DIR/key.pem"); fi
      start_lb "$PORT" "$N1" "$N2"
      PROXY_PID=$LB_PID ;;
    nginx|nginx-nosticky)
      local conf="$OUT/nginx-$1"
      mkdir -p "$conf"
      local listen="listen 127.0.0.1:$PORT;"
      if [ "$TLS" = 1 ]; then
        # What nginx's docs recommend for HTTPS servers: a shared session cache.
        listen="listen 127.0.0.1:$PORT ssl; ssl_certificate $TLS_DIR/cert.pem; ssl_certificate_key $TLS_DIR/key.pem; ssl_session_cache shared:SSL:10m; ssl_session_timeout 10m;"
      fi
      nginx_conf "$1" "$listen" "$PROXY_THREADS" "$N1" "$N2" >"$conf/nginx.conf"
      "$NGINX" -p "$conf" -c "$conf/nginx.conf" -g "daemon off; pid $conf/nginx.pid; error_log $conf/error.log;" &
      PROXY_PID=$!; pids+=("$PROXY_PID")
      wait_tcp "$PORT" ;;
    haproxy)
      cat >"$OUT/haproxy.cfg" <<CONF
global
  maxconn $(( FDS / 2 - 100 ))
  nbthread $PROXY_THREADS
defaults
  mode http
  timeout connect 2s
  timeout client 600s
  timeout server 600s
  timeout tunnel 600s
frontend fe
  bind 127.0.0.1:$PORT$( [ "$TLS" = 1 ] && echo " ssl crt $TLS_DIR/haproxy.pem" )
  default_backend be
backend be
  balance leastconn
  option forwardfor
  cookie SRV insert indirect nocache httponly
  server n1 127.0.0.1:$N1 cookie n1
  server n2 127.0.0.1:$N2 cookie n2
CONF
      "$HAPROXY" -db -f "$OUT/haproxy.cfg" >"$OUT/haproxy.log" 2>&1 &
      PROXY_PID=$!; pids+=("$PROXY_PID")
      wait_tcp "$PORT" ;;
  esac
}
stop_proxy() { stop_pid "$PROXY_PID"; }

# open_target direct|PROXY: sets urls (iogate-loadtest's --url flags) and PROXY_PID (empty when
# going direct); close_target stops the proxy, if any. proxy_ticks / proxy_rss: 0 when direct.
open_target() {
  if [ "$1" = direct ]; then urls=("${DIRECT[@]}"); PROXY_PID=""; else start_proxy "$1"; urls=(--url "http://127.0.0.1:$PORT"); fi
}
close_target() { if [ -n "$PROXY_PID" ]; then stop_proxy; fi; }
proxy_ticks() { if [ -n "$PROXY_PID" ]; then ticks "$PROXY_PID"; else echo 0; fi; }
proxy_rss() { if [ -n "$PROXY_PID" ]; then rss "$PROXY_PID"; else echo 0; fi; }

# Echo run through URLs; fields of the JSON summary for the tables.
lat() { jget "$1" "'%.3f' % d['accounting']['latency_ms']['$2']"; }
fails() { jget "$1" "sum(d['accounting']['failures'].values())"; }

# What the ratio table at the end compares, per proxy.
declare -A A_ADD50 A_CPU B_KIB CMAX CP99 C_US D_P99 D_CPU T_ADD50 T_CPU T_P99 T_US
if [[ $PARTS == *a* ]]; then
  echo "== (a) echo: $ECHO_N WebSocket clients" >&2
  md "### (a) $ECHO_N WebSocket clients, 2 acked echoes/s each, ${SECS} s" "" \
     "| | RTT p50 | RTT p99 | added over direct (p50 / p99) | proxy CPU | proxy RSS | ack timeouts |" \
     "|---|---|---|---|---|---|---|"
  loadtest "${DIRECT[@]}" --scenario echo --clients "$ECHO_N" --connect-rate 1000 --rate 2 \
    --duration "${SECS}s" --json "$OUT/direct-echo.json"
  d50=$(lat "$OUT/direct-echo.json" p50); d99=$(lat "$OUT/direct-echo.json" p99)
  md "| direct | $d50 ms | $d99 ms | — | — | — | $(jget "$OUT/direct-echo.json" "d['accounting']['acks_timed_out']") |"
  for proxy in iogate-lb nginx haproxy; do
    start_proxy "$proxy"
    c0=$(ticks "$PROXY_PID")
    loadtest --url "http://127.0.0.1:$PORT" --scenario echo --clients "$ECHO_N" --connect-rate 1000 --rate 2 \
      --duration "${SECS}s" --json "$OUT/$proxy-echo.json"
    c1=$(ticks "$PROXY_PID"); r=$(rss "$PROXY_PID")
    f="$OUT/$proxy-echo.json"
    A_ADD50[$proxy]=$(awk -v a="$(lat "$f" p50)" -v d="$d50" 'BEGIN { print a - d }')
    A_CPU[$proxy]=$(awk -v c="$(( c1 - c0 ))" -v hz="$HZ" 'BEGIN { print c / hz }')
    md "$(awk -v n="$proxy" -v a="$(lat "$f" p50)" -v b="$(lat "$f" p99)" -v da="$d50" -v db="$d99" \
      -v c="$(( c1 - c0 ))" -v hz="$HZ" -v r="$r" -v l="$(jget "$f" "d['accounting']['acks_timed_out']")" \
      'BEGIN { printf "| %s | %.3f ms | %.3f ms | %+.3f / %+.3f ms | %.2f s | %.1f MiB | %d |", n, a, b, a-da, b-db, c/hz, r/1024, l }')"
    stop_proxy
  done
  md ""
fi

if [[ $PARTS == *b* ]]; then
  echo "== (b) idle: $IDLE_N WebSocket sessions" >&2
  md "### (b) $IDLE_N idle WebSocket sessions" "" \
     "| | sessions | RSS before → with sessions | per session |" "|---|---|---|---|"
  for proxy in iogate-lb nginx haproxy; do
    start_proxy "$proxy"
    sleep 1
    r0=$(rss "$PROXY_PID")
    loadtest --url "http://127.0.0.1:$PORT" --scenario idle --clients "$IDLE_N" --connect-rate 2000 \
      --duration 600s &
    LT=$!; pids+=("$LT")
    wait_established "$IDLE_N" "$N1" "$N2"
    got=$(established "$N1" "$N2"); sleep 2
    r1=$(rss "$PROXY_PID")
    B_KIB[$proxy]=$(awk -v g="$got" -v a="$r0" -v b="$r1" 'BEGIN { print (b-a)/(g>0?g:1) }')
    md "$(awk -v n="$proxy" -v g="$got" -v a="$r0" -v b="$r1" \
      'BEGIN { printf "| %s | %d | %.1f → %.1f MiB | %.1f KiB |", n, g, a/1024, b/1024, (b-a)/(g>0?g:1) }')"
    stop_pid "$LT"
    stop_proxy
    for _ in $(seq 1 100); do [ "$(established "$N1" "$N2")" -eq 0 ] && break; sleep 0.2; done
  done
  md ""
fi

if [[ $PARTS == *c* ]]; then
  echo "== (c) new sessions/s: $CHURN_N WebSocket clients churned" >&2
  md "### (c) new WebSocket sessions per second ($CHURN_N clients churned, ${SECS} s per rung)" "" \
     "| | target/s | achieved/s | handshake p50 | handshake p99 | connect failures | proxy CPU | |" \
     "|---|---|---|---|---|---|---|---|"
  for proxy in direct iogate-lb nginx haproxy; do
    CMAX[$proxy]=0; CP99[$proxy]="—"
    for rate in $CHURN_RATES; do
      open_target "$proxy"
      c0=$(proxy_ticks)
      f="$OUT/$proxy-churn-$rate.json"
      loadtest "${urls[@]}" --scenario churn --clients "$CHURN_N" --connect-rate 2000 --rate "$rate" \
        --duration "${SECS}s" --local-addrs 8 --json "$f" || true
      c1=$(proxy_ticks)
      close_target
      [ -s "$f" ] || { md "| $proxy | $rate | loadtest failed | | | | | |"; break; }
      achieved=$(jget "$f" "round((d['connects'] - d['clients']) / $SECS)")
      nf=$(fails "$f")
      ok=$(awk -v a="$achieved" -v t="$rate" -v f="$nf" 'BEGIN { print (f == 0 && a >= 0.9 * t) ? 1 : 0 }')
      p99=$(jget "$f" "d['accounting']['connect_ms']['p99']")
      md "$(awk -v n="$proxy" -v t="$rate" -v a="$achieved" -v p50="$(jget "$f" "d['accounting']['connect_ms']['p50']")" \
        -v p99="$p99" -v f="$nf" -v c="$(( c1 - c0 ))" -v hz="$HZ" -v ok="$ok" \
        'BEGIN { printf "| %s | %d | %d | %.2f ms | %.2f ms | %d | %s | %s |", n, t, a, p50, p99, f, (n == "direct" ? "—" : sprintf("%.2f s", c/hz)), (ok ? "pass" : "**stop**") }')"
      [ "$ok" = 1 ] || break
      CMAX[$proxy]=$achieved; CP99[$proxy]=$(printf '%.2f ms' "$p99")
      C_US[$proxy]=$(awk -v c="$(( c1 - c0 ))" -v hz="$HZ" -v a="$achieved" -v s="$SECS" 'BEGIN { print (a > 0 ? c / hz * 1e6 / (a * s) : 0) }')
      # Let TIME_WAIT sockets of the rung clear a little before the next one.
      sleep 2
    done
  done
  md "" "Max sustained new sessions/s (p99 handshake at that rate): direct ${CMAX[direct]} (${CP99[direct]}), iogate-lb ${CMAX[iogate-lb]} (${CP99[iogate-lb]}), nginx ${CMAX[nginx]} (${CP99[nginx]}), HAProxy ${CMAX[haproxy]} (${CP99[haproxy]})." ""
fi

if [[ $PARTS == *d* ]]; then
  echo "== (d) long-polling: $POLL_N clients, $D_ROUNDS rounds" >&2
  md "### (d) $POLL_N long-polling clients (cookie jar on), 2 acked echoes/s each, ${SECS} s, $D_ROUNDS rounds" "" \
     "| | round | stickiness | connected | connect failures | RTT p50 | RTT p99 | ack timeouts | proxy CPU | proxy RSS |" \
     "|---|---|---|---|---|---|---|---|---|---|"
  declare -A D_CPUS D_P99S
  for round in $(seq 1 "$D_ROUNDS"); do
    # Round 1 also runs the floor and nginx without stickiness; the proxies' order turns
    # around every round, so a drift of the machine during the part weighs on each alike.
    if [ "$round" = 1 ]; then order="direct iogate-lb nginx haproxy nginx-nosticky"
    elif (( round % 2 )); then order="iogate-lb nginx haproxy"
    else order="haproxy nginx iogate-lb"; fi
    for proxy in $order; do
      case $proxy in
        direct) how="none needed (clients pick a node)";; iogate-lb) how="Engine.IO sid learned, no cookie";;
        nginx) how="cookie set by nginx (map)";; haproxy) how="cookie insert";; nginx-nosticky) how="none (least_conn only)";;
      esac
      open_target "$proxy"
      c0=$(proxy_ticks)
      f="$OUT/$proxy-polling-$round.json"
      loadtest "${urls[@]}" --transport polling --cookies --scenario echo --clients "$POLL_N" --connect-rate 500 \
        --rate 2 --duration "${SECS}s" --json "$f" || true
      c1=$(proxy_ticks); r=$(proxy_rss)
      close_target
      D_P99S[$proxy]+=" $(lat "$f" p99)"
      D_CPUS[$proxy]+=" $(awk -v c="$(( c1 - c0 ))" -v hz="$HZ" 'BEGIN { print c / hz }')"
      md "$(awk -v n="$proxy" -v k="$round" -v h="$how" -v g="$(jget "$f" "d['connected_peak']")" -v f="$(fails "$f")" \
        -v a="$(lat "$f" p50)" -v b="$(lat "$f" p99)" -v l="$(jget "$f" "d['accounting']['acks_timed_out']")" \
        -v c="$(( c1 - c0 ))" -v hz="$HZ" -v r="$r" \
        'BEGIN { printf "| %s | %d | %s | %d | %d | %s | %s | %d | %s | %s |", n, k, h, g, f, (g > 0 ? sprintf("%.3f ms", a) : "—"), (g > 0 ? sprintf("%.3f ms", b) : "—"), l, (n == "direct" ? "—" : sprintf("%.2f s", c/hz)), (n == "direct" ? "—" : sprintf("%.1f MiB", r/1024)) }')"
    done
  done
  for proxy in "${!D_CPUS[@]}"; do
    # shellcheck disable=SC2086 # the lists are space-separated numbers
    D_CPU[$proxy]=$(median ${D_CPUS[$proxy]}); D_P99[$proxy]=$(median ${D_P99S[$proxy]})
  done
  md "" "$(printf 'Median of the %s rounds: proxy CPU iogate-lb %.2f s, nginx %.2f s, HAProxy %.2f s; RTT p99 %.3f, %.3f, %.3f ms (the ratios below).' \
    "$D_ROUNDS" "${D_CPU[iogate-lb]}" "${D_CPU[nginx]}" "${D_CPU[haproxy]}" "${D_P99[iogate-lb]}" "${D_P99[nginx]}" "${D_P99[haproxy]}")" ""
fi

if [[ $PARTS == *e* ]]; then
  echo "== (e) capacity: $HELD_N idle WebSocket sessions through one iogate-lb" >&2
  md "### (e) $HELD_WANT idle WebSocket sessions through one iogate-lb" ""
  if [ "$HELD_N" -lt "$HELD_WANT" ]; then
    md "**Not run at $HELD_WANT here:** the open-files limit is $FDS (the hard limit; raising it needs CAP_SYS_RESOURCE or \`LimitNOFILE=\`/\`--ulimit nofile=\`), and the LB needs two descriptors per session, so this run holds $HELD_N — what the limit allows. $HELD_WANT sessions need an open-files limit of at least $(( 2 * HELD_WANT + 1000 ))." ""
  fi
  md "| sessions asked | held: LB's \`iogate_lb_websockets\` / nodes' established | connect failures | iogate-lb RSS before → with | per session | nodes' RSS before → with | per session |" \
     "|---|---|---|---|---|---|---|"
  # Two fresh nodes (E1, E2; pids Q1, Q2) for this part: nodes that held the earlier parts'
  # sessions would reuse that memory, and their RSS would not show what a session costs them.
  E1=$(free_port); start_node "$E1" "n$E1" "redis://127.0.0.1:$RP"; Q1=$NODE_PID
  E2=$(free_port); start_node "$E2" "n$E2" "redis://127.0.0.1:$RP"; Q2=$NODE_PID
  PORT=$(free_port); LB_ARGS=(--threads "$PROXY_THREADS")
  start_lb "$PORT" "$E1" "$E2"
  sleep 1
  r0=$(rss "$LB_PID"); n0=$(( $(rss "$Q1") + $(rss "$Q2") ))
  f="$OUT/iogate-lb-held.json"
  # Held for SECS once the ramp has settled; measured meanwhile, the report read at its end.
  loadtest --url "http://127.0.0.1:$PORT" --scenario idle --clients "$HELD_N" --connect-rate 2000 \
    --duration "$(( SECS + 10 ))s" --local-addrs 8 --json "$f" &
  LT=$!; pids+=("$LT")
  wait_established "$HELD_N" "$E1" "$E2"
  sleep 2
  got=$(established "$E1" "$E2")
  ws=$(lb_metric_sum iogate_lb_websockets)
  r1=$(rss "$LB_PID"); n1=$(( $(rss "$Q1") + $(rss "$Q2") ))
  wait "$LT" || true
  stop_pid "$LB_PID"
  if [ -s "$f" ]; then nf=$(fails "$f"); else nf="loadtest failed"; fi
  md "$(awk -v w="$HELD_N" -v ws="$ws" -v g="$got" -v f="$nf" -v a="$r0" -v b="$r1" -v c="$n0" -v d="$n1" \
    'BEGIN { printf "| %d | %d / %d | %s | %.1f → %.1f MiB | %.2f KiB | %.1f → %.1f MiB | %.1f KiB |", w, ws, g, f, a/1024, b/1024, (b-a)/(ws>0?ws:1), c/1024, d/1024, (d-c)/(g>0?g:1) }')" ""
  stop_pid "$Q1"; stop_pid "$Q2"
fi

if [[ $PARTS == *t* ]]; then
  echo "== (t) TLS termination: $ECHO_N wss clients, then new wss sessions at $TLS_CHURN_RATE/s" >&2
  md "### (t) TLS termination: $ECHO_N wss clients, 2 acked echoes/s each, ${SECS} s; then new wss sessions at $TLS_CHURN_RATE/s ($CHURN_N clients churned, full handshakes)" "" \
     "| | RTT p50 | RTT p99 | added over plain direct (p50 / p99) | proxy CPU (echo) | new sessions/s achieved | TLS+WebSocket handshake p50 / p99 | connect failures | proxy CPU per new session |" \
     "|---|---|---|---|---|---|---|---|---|"
  [ -n "${d50:-}" ] || { loadtest "${DIRECT[@]}" --scenario echo --clients "$ECHO_N" --connect-rate 1000 --rate 2 \
    --duration "${SECS}s" --json "$OUT/direct-echo.json"; d50=$(lat "$OUT/direct-echo.json" p50); d99=$(lat "$OUT/direct-echo.json" p99); }
  TLS=1
  for proxy in iogate-lb nginx haproxy; do
    start_proxy "$proxy"
    turl=(--url "https://localhost:$PORT" --ca "$TLS_DIR/cert.pem")
    c0=$(ticks "$PROXY_PID")
    f="$OUT/$proxy-tls-echo.json"
    loadtest "${turl[@]}" --scenario echo --clients "$ECHO_N" --connect-rate 500 --rate 2 \
      --duration "${SECS}s" --json "$f" || true
    c1=$(ticks "$PROXY_PID")
    g="$OUT/$proxy-tls-churn.json"
    loadtest "${turl[@]}" --scenario churn --clients "$CHURN_N" --connect-rate 1000 --rate "$TLS_CHURN_RATE" \
      --duration "${SECS}s" --local-addrs 8 --json "$g" || true
    c2=$(ticks "$PROXY_PID")
    stop_proxy
    [ -s "$f" ] && [ -s "$g" ] || { md "| $proxy | loadtest failed | | | | | | | |"; continue; }
    achieved=$(jget "$g" "round((d['connects'] - d['clients']) / $SECS)")
    T_ADD50[$proxy]=$(awk -v a="$(lat "$f" p50)" -v d="$d50" 'BEGIN { print a - d }')
    T_CPU[$proxy]=$(awk -v c="$(( c1 - c0 ))" -v hz="$HZ" 'BEGIN { print c / hz }')
    T_P99[$proxy]=$(jget "$g" "d['accounting']['connect_ms']['p99']")
    T_US[$proxy]=$(awk -v c="$(( c2 - c1 ))" -v hz="$HZ" -v a="$achieved" -v s="$SECS" 'BEGIN { print (a > 0 ? c / hz * 1e6 / (a * s) : 0) }')
    md "$(awk -v n="$proxy" -v a="$(lat "$f" p50)" -v b="$(lat "$f" p99)" -v da="$d50" -v db="$d99" \
      -v c="$(( c1 - c0 ))" -v hz="$HZ" -v ach="$achieved" -v h50="$(jget "$g" "d['accounting']['connect_ms']['p50']")" \
      -v h99="${T_P99[$proxy]}" -v nf="$(( $(fails "$f") + $(fails "$g") ))" -v us="${T_US[$proxy]}" \
      'BEGIN { printf "| %s | %.3f ms | %.3f ms | %+.3f / %+.3f ms | %.2f s | %d | %.2f / %.2f ms | %d | %.0f µs |", n, a, b, a-da, b-db, c/hz, ach, h50, h99, nf, us }')"
    for _ in $(seq 1 100); do [ "$(established "$N1" "$N2")" -eq 0 ] && break; sleep 0.2; done
    sleep 2
  done
  TLS=0
  md ""
fi

# Ratios: iogate-lb ÷ nginx and iogate-lb ÷ HAProxy for every measured quantity (lower is better
# for all of them except the new-session rate).
ratio_row() { # label, key of array name, unit
  local -n arr=$2
  [ -n "${arr[iogate-lb]:-}" ] && [ -n "${arr[nginx]:-}" ] && [ -n "${arr[haproxy]:-}" ] || return 0
  md "$(awk -v l="$1" -v u="$3" -v i="${arr[iogate-lb]}" -v n="${arr[nginx]}" -v h="${arr[haproxy]}" \
    'function r(a, b) { return b > 0 ? sprintf("%.2f×", a / b) : "—" }
     function v(x) { return x >= 100 ? sprintf("%.0f", x) : sprintf("%.3g", x) }
     BEGIN { printf "| %s | %s %s | %s %s | %s %s | %s | %s |", l, v(i), u, v(n), u, v(h), u, r(i, n), r(i, h) }')"
}
# (e) measures iogate-lb alone: PARTS=e has no ratios.
if [[ $PARTS =~ [abcdt] ]]; then
md "### Ratios" "" "| | iogate-lb | nginx | HAProxy | iogate-lb ÷ nginx | iogate-lb ÷ HAProxy |" "|---|---|---|---|---|---|"
ratio_row "(a) added RTT p50" A_ADD50 ms
ratio_row "(a) proxy CPU" A_CPU s
ratio_row "(b) RSS per idle session" B_KIB KiB
ratio_row "(c) max sustained new sessions/s" CMAX /s
ratio_row "(c) proxy CPU per new session" C_US µs
ratio_row "(d) polling RTT p99" D_P99 ms
ratio_row "(d) proxy CPU, polling" D_CPU s
ratio_row "(t) TLS: added RTT p50" T_ADD50 ms
ratio_row "(t) TLS: proxy CPU, echo" T_CPU s
ratio_row "(t) TLS: handshake p99" T_P99 ms
ratio_row "(t) TLS: proxy CPU per new session" T_US µs
md ""
fi
md_record
echo "results in $MD" >&2
