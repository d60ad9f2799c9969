#!/usr/bin/env bash
# Slow-loris against iogate-lb: SLOW connections (bench/slowloris.py) each send a request line
# and then one header line every 2 s, never finishing the header, while ECHO good WebSocket
# clients echo through the same LB. Measures the LB's open client connections and RSS at the
# peak, when the slow connections are closed (seconds after their first byte; the deadline is
# timeouts.client_header, 10 s by default), the RSS afterwards, and the good clients' RTT
# without and with the attack.
#
#   bench/slowloris.sh [SLOW=10000] [ECHO=200] [SECONDS=20]
#   bench/slowloris.sh 200 20 3        # smoke run (CI)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SLOW=${1:-10000}
ECHO_N=${2:-200}
SECS=${3:-20}
SLOW=$(cap_to_fds "$SLOW" $(( FDS - 1000 )))
out_dir /tmp/iogate-slowloris
need redis-server:redis-server curl:curl python3:python3
bench_build iogate-node iogate-lb iogate-loadtest
md_open slowloris "bench/slowloris.sh $*"

start_two_nodes_behind_lb
metric() { curl -fsS "127.0.0.1:$LB_ADMIN/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
lat() { jget "$1" "'%.3f' % d['accounting']['latency_ms']['$2']"; }

loadtest --url "http://127.0.0.1:$PORT" --scenario echo --clients "$ECHO_N" --connect-rate 1000 --rate 2 \
  --duration "${SECS}s" --json "$OUT/quiet.json"
rss0=$(rss "$LB_PID")

# The attack, with the good clients echoing through it.
python3 bench/slowloris.py 127.0.0.1 "$PORT" "$SLOW" 2 $(( SECS + 30 )) 2000 >"$OUT/slow.jsonl" &
SLOW_PID=$!; pids+=("$SLOW_PID")
loadtest --url "http://127.0.0.1:$PORT" --scenario echo --clients "$ECHO_N" --connect-rate 1000 --rate 2 \
  --duration "${SECS}s" --json "$OUT/attack.json" &
LT_PID=$!; pids+=("$LT_PID")
peak_conns=0; peak_rss=0
while kill -0 "$SLOW_PID" 2>/dev/null; do
  c=$(metric iogate_lb_client_connections); c=${c:-0}; r=$(rss "$LB_PID")
  [ "${c%.*}" -gt "$peak_conns" ] && peak_conns=${c%.*}
  [ "$r" -gt "$peak_rss" ] && peak_rss=$r
  sleep 0.25
done
wait "$LT_PID" || true
rss1=$(rss "$LB_PID")
left=$(metric iogate_lb_client_connections)
done_line=$(grep '"event": "done"' "$OUT/slow.jsonl")
sj() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); print($2)" "$done_line"; }

md "### $SLOW slow-loris connections (one header line every 2 s) and $ECHO_N echoing WebSocket clients through iogate-lb" "" \
   "timeouts.client_header: 10 s (default). Slow connections closed by the LB: $(sj x "d['closed_by_server']") of $(sj x "d['opened']") opened ($(sj x "d['answered']") answered, $(sj x "d['still_open']") still open at the end, $(sj x "d['connect_failed']") connects failed)." "" \
   "| | value |" "|---|---|" \
   "| open client connections at the peak (iogate_lb_client_connections) | $peak_conns |" \
   "| closed after their first byte: min / p50 / p99 / max | $(sj x "'%s / %s / %s / %s s' % tuple(d['close_after_first_byte_s'][k] for k in ('min','p50','p99','max'))") |" \
   "| LB RSS before / at the peak / after | $(( rss0 / 1024 )) / $(( peak_rss / 1024 )) / $(( rss1 / 1024 )) MiB |" \
   "| open client connections after | ${left:-?} |" \
   "| good clients' RTT p50 / p99, quiet | $(lat "$OUT/quiet.json" p50) / $(lat "$OUT/quiet.json" p99) ms |" \
   "| good clients' RTT p50 / p99, under attack | $(lat "$OUT/attack.json" p50) / $(lat "$OUT/attack.json" p99) ms |" \
   "| good clients' ack timeouts, quiet / under attack | $(jget "$OUT/quiet.json" "d['accounting']['acks_timed_out']") / $(jget "$OUT/attack.json" "d['accounting']['acks_timed_out']") |"
md_record
