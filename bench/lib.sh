# Shared by the bench/*.sh scripts (sourced, not run): process bookkeeping, free ports,
# readiness waits, /proc sampling, starting Redis and iogate nodes, baseline installs, and the
# markdown result file each script writes.
#
# BENCH_PROFILE=debug uses the debug binaries (the CI smoke runs: they check that the scripts
# work, not how fast anything is). Default: release.
# shellcheck shell=bash

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FDS=$(ulimit -n)
PROFILE=${BENCH_PROFILE:-release}
BIN=target/$PROFILE
# LB_BIN=path runs another iogate-lb build against the same baselines (an A/B of two builds).
LB_BIN=${LB_BIN:-$BIN/iogate-lb}
if [ "${RECORD:-0}" = 1 ] && [ "$LB_BIN" != "$BIN/iogate-lb" ]; then
  echo "RECORD=1 records the workspace's own build; unset LB_BIN" >&2
  exit 2
fi
HZ=$(getconf CLK_TCK)

# cap_to_fds N MAX: N, or MAX with a note when the open-files limit does not allow N.
cap_to_fds() {
  if [ "$1" -gt "$2" ]; then
    echo "note: the open-files limit is $FDS; holding $2 idle sessions instead of $1" >&2
    echo "$2"
  else
    echo "$1"
  fi
}

# out_dir DEFAULT: sets OUT (the OUT environment variable wins), creates it, starts the
# loadtest log afresh.
out_dir() {
  OUT=${OUT:-$1}
  mkdir -p "$OUT"
  : >"$OUT/loadtest.log"
}

# Build the given packages in $PROFILE.
bench_build() {
  local args=(-q)
  for p in "$@"; do args+=(-p "$p"); done
  if [ "$PROFILE" = release ]; then args+=(--release); fi
  cargo build "${args[@]}"
}

# Install Debian packages for missing commands: need cmd:package ...
need() {
  local missing=()
  for pair in "$@"; do
    local cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "missing: ${missing[*]} (run as root, or: apt-get install -y ${missing[*]})" >&2
      exit 1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# The pinned Node.js baselines (bench/js/package.json).
need_js() {
  command -v node >/dev/null || need node:nodejs npm:npm
  [ -d bench/js/node_modules/@socket.io/redis-streams-adapter ] && [ -d bench/js/node_modules/bufferutil ] \
    || npm ci --prefix bench/js --no-audit --no-fund >/dev/null
}

# Every process a script starts goes into pids (children included: a backgrounded shell function
# is a subshell whose child is the real process), and is stopped on exit.
pids=()
kill_tree() { local c; for c in $(pgrep -P "$1"); do kill_tree "$c"; done; kill "$1" 2>/dev/null || true; }
cleanup() { for p in "${pids[@]}"; do kill_tree "$p"; done; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { local p; while :; do p=$(( 20000 + RANDOM % 12000 )); (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }; done; }
wait_tcp() { for _ in $(seq 1 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
wait_http() { for _ in $(seq 1 400); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "$1 never answered" >&2; return 1; }

# A process and its children (nginx workers); CPU ticks and RSS (KiB) summed over them.
tree() { echo "$1 $(pgrep -P "$1" | tr '\n' ' ')"; }
ticks() { local t=0; for p in $(tree "$1"); do t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0) )); done; echo "$t"; }
rss() { local r=0; for p in $(tree "$1"); do r=$(( r + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0) )); done; echo "$r"; }

# Start redis-server on a free port: sets RP and REDIS_PID.
start_redis() {
  RP=$(free_port)
  redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis-$RP.log" 2>&1 &
  REDIS_PID=$!; pids+=("$REDIS_PID")
  wait_tcp "$RP"
}

# Start one iogate-node: start_node PORT ID REDIS_URL [MORE ARGS]; sets NODE_PID.
start_node() {
  "$BIN/iogate-node" --listen "127.0.0.1:$1" --node-id "$2" --redis-url "$3" "${@:4}" >"$OUT/node-$1.log" 2>&1 &
  NODE_PID=$!; pids+=("$NODE_PID")
  wait_http "http://127.0.0.1:$1/readyz"
}

# Memory per idle client: hold_idle CLIENTS — CLIENTS idle WebSocket clients round-robin straight
# to the nodes on N1 and N2 (pids P1, P2), measured once all are established. Sets IDLE_GOT
# (clients held), IDLE_R0 / IDLE_R1 (the nodes' RSS in KiB before / after), IDLE_KIB (per client)
# and IDLE_LT (the generator, still holding them: the caller stops it).
hold_idle() {
  IDLE_R0=$(( $(rss "$P1") + $(rss "$P2") ))
  loadtest --url "http://127.0.0.1:$N1" --url "http://127.0.0.1:$N2" --scenario idle --clients "$1" \
    --connect-rate 2000 --duration 600s --local-addrs 8 &
  IDLE_LT=$!; pids+=("$IDLE_LT")
  wait_established "$1" "$N1" "$N2"
  IDLE_GOT=$(established "$N1" "$N2"); sleep 3
  IDLE_R1=$(( $(rss "$P1") + $(rss "$P2") ))
  IDLE_KIB=$(awk -v a="$IDLE_R0" -v b="$IDLE_R1" -v g="$IDLE_GOT" 'BEGIN { printf "%.1f", (b-a)/(g>0?g:1) }')
}

# Redis, two iogate-nodes (ports N1, N2) and iogate-lb in front of them on PORT.
start_two_nodes_behind_lb() {
  start_redis
  N1=$(free_port); N2=$(free_port)
  start_node "$N1" "n$N1" "redis://127.0.0.1:$RP"
  start_node "$N2" "n$N2" "redis://127.0.0.1:$RP"
  PORT=$(free_port)
  start_lb "$PORT" "$N1" "$N2"
}

# Start iogate-lb in its quick form in front of the given ports: start_lb PORT UPSTREAM_PORT...;
# sets LB_PID and LB_ADMIN; returns once every upstream is up.
start_lb() {
  local port=$1; shift
  LB_ADMIN=$(free_port)
  local ups=()
  for u in "$@"; do ups+=(--upstream "127.0.0.1:$u"); done
  # LB_ARGS: more flags (--tls-cert/--tls-key), if the caller set them; LB_WRAP: a command the
  # LB runs under (valgrind), which must keep the LB's pid (exec).
  ${LB_WRAP[@]+"${LB_WRAP[@]}"} "$LB_BIN" --listen "127.0.0.1:$port" "${ups[@]}" ${LB_ARGS[@]+"${LB_ARGS[@]}"} --admin "127.0.0.1:$LB_ADMIN" \
    --pid-file "$OUT/lb-$port.pid" --upgrade-sock "$OUT/lb-$port.sock" >"$OUT/lb-$port.log" 2>&1 &
  LB_PID=$!; pids+=("$LB_PID")
  for _ in $(seq 1 200); do
    [ "$(curl -fsS "127.0.0.1:$LB_ADMIN/api/backends" 2>/dev/null | grep -o '"up"' | wc -l)" -ge $# ] && return 0
    sleep 0.1
  done
  echo "iogate-lb never saw its upstreams up" >&2; return 1
}

stop_pid() { kill_tree "$1"; wait "$1" 2>/dev/null || true; }

# lb_metric_sum FAMILY: the sum of every series of a metric family on the admin endpoint of the
# iogate-lb started last (LB_ADMIN). Fails, naming the family, when it has no series at all: an
# absent metric is not zero.
lb_metric_sum() {
  curl -fsS "127.0.0.1:$LB_ADMIN/metrics" | awk -v m="$1" '
    $1 == m || index($1, m "{") == 1 { s += $2; n++ }
    END { if (n == 0) { print m " is not on the LB'"'"'s /metrics" > "/dev/stderr"; exit 1 } print s }'
}

# nginx as the front-door baselines run it, on stdout:
#   nginx_conf nginx|nginx-nosticky LISTEN WORKERS N1 N2 [STATUS_PORT]
# LISTEN is the whole listen directive (TLS options included); the upstreams are the nodes on
# ports N1 and N2. "nginx" pins clients with a cookie: open-source nginx has no sticky
# directive, so the first request of a client goes to the least_conn group and the response
# pins the client with a cookie naming the server; later requests carrying the cookie go to a
# group of that one server. "nginx-nosticky" balances every request with least_conn. With
# STATUS_PORT, a second server there answers stub_status (nginx's own request count).
nginx_conf() {
  local pass='http://io' cookie='' status=
  if [ "$1" = nginx ]; then
    pass='http://$sticky'
    cookie='add_header Set-Cookie "srv=$backend_name; Path=/; HttpOnly" always;'
  fi
  [ -n "${6:-}" ] && status="server { listen 127.0.0.1:$6; location / { stub_status; } }"
  cat <<CONF
worker_processes $3;
worker_rlimit_nofile $FDS;
events { worker_connections $(( FDS / 2 )); }
http {
  access_log off;
  upstream io { least_conn; server 127.0.0.1:$4; server 127.0.0.1:$5; keepalive 64; }
  upstream io_n1 { server 127.0.0.1:$4; keepalive 64; }
  upstream io_n2 { server 127.0.0.1:$5; keepalive 64; }
  map \$cookie_srv \$sticky { n1 io_n1; n2 io_n2; default io; }
  map \$upstream_addr \$backend_name { 127.0.0.1:$4 n1; 127.0.0.1:$5 n2; default ""; }
  # Upstream keepalive as nginx's docs recommend: HTTP/1.1 and no "Connection: close" on
  # plain requests (an empty value drops the header), "upgrade" on WebSocket handshakes.
  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
  server {
    $2
    location / {
      proxy_pass $pass;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_read_timeout 600s;
      $cookie
    }
  }
  $status
}
CONF
}

loadtest() { "$BIN/iogate-loadtest" --quiet "$@" 2>>"$OUT/loadtest.log"; }
# median N...: the median of the numbers (the mean of the middle two for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { printf "%.10g\n", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# jget FILE EXPR: evaluate a Python expression over the first phase summary `d` of a JSON report.
jget() { python3 -c "import json,sys; d=json.load(open('$1'))[0]; print($2)"; }

# The markdown result file: md_open NAME "command line"; md LINE...; md_record at the end.
md_open() {
  MD_NAME=$1
  MD="$OUT/$1.md"
  {
    echo "Command: \`$2\` (profile: $PROFILE)"
    echo
    echo "Machine: $(nproc) vCPU ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), open-files limit $FDS, $(date -u +%Y-%m-%d)."
    echo
  } >"$MD"
}
md() { printf '%s\n' "$@" | tee -a "$MD"; }

# Established server-side TCP connections on the given local ports (works for any server).
established() {
  local f="" p
  for p in "$@"; do f="${f:+$f or }sport = :$p"; done
  ss -Htn state established "( $f )" | wc -l
}

# Wait until `established PORTS...` reaches N, or stops growing for 3 s: wait_established N PORT...
wait_established() {
  local n=$1; shift
  local last=-1 still=0 now
  for _ in $(seq 1 1200); do
    now=$(established "$@")
    [ "$now" -ge "$n" ] && return 0
    if [ "$now" -eq "$last" ] && [ "$now" -gt 0 ]; then still=$(( still + 1 )); else still=0; fi
    [ "$still" -ge 15 ] && return 0
    last=$now; sleep 0.2
  done
}

# md_record: with RECORD=1, put this run's markdown into docs/benchmarks.md between the markers
# `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` (NAME as given to md_open), replacing the
# previous run's. Without RECORD the docs are left alone (smoke runs, trial runs).
md_record() {
  [ "${RECORD:-0}" = 1 ] || return 0
  python3 - "$MD" "$MD_NAME" docs/benchmarks.md <<'PY'
import sys, re
md, name, doc = sys.argv[1:]
new = open(md).read().rstrip() + "\n"
text = open(doc).read()
start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
if start not in text or end not in text:
    sys.exit(f"docs/benchmarks.md has no {start} … {end} section")
head, rest = text.split(start, 1)
_, tail = rest.split(end, 1)
open(doc, "w").write(head + start + "\n" + new + end + tail)
print(f"recorded in docs/benchmarks.md ({name})", file=sys.stderr)
PY
}
