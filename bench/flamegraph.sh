#!/usr/bin/env bash
# Flame graphs of iogate-lb's hot paths, for docs/flamegraphs/: perf samples the LB (release
# build, DWARF unwinding from .eh_frame, so inlined functions fold into their callers) while
# iogate-loadtest drives, through it to two iogate-nodes,
#   ws       — CLIENTS WebSocket clients, 2 acked echoes/s each (the tunnel after the 101);
#   polling  — CLIENTS/2 long-polling clients, 2 acked echoes/s each (no cookie: sid routing);
#   connect  — new WebSocket sessions at CHURN_RATE/s (handshake, sid learning, upgrade).
# Each SECONDS long. The stacks are folded and drawn with inferno (crates.io; installed with
# `cargo install inferno` when missing). Writes $OUT/lb-<part>.svg; RECORD=1 copies them to
# docs/flamegraphs/.
#
#   bench/flamegraph.sh [CLIENTS=1000] [SECONDS=15]
#   bench/flamegraph.sh 50 2        # smoke run
set -euo pipefail
source "$(dirname "$0")/lib.sh"
CLIENTS=${1:-1000}
SECS=${2:-15}
CHURN_RATE=${CHURN_RATE:-1000}
PARTS=${PARTS:-ws,polling,connect}
out_dir /tmp/iogate-flamegraph
need perf:linux-perf redis-server:redis-server curl:curl
if ! command -v inferno-flamegraph >/dev/null; then
  cargo install -q --locked inferno --version 0.12.3 >&2
fi
bench_build iogate-node iogate-lb iogate-loadtest

start_two_nodes_behind_lb

# profile PART LOADTEST-ARGS...: run the load, sample the LB meanwhile, draw the graph.
profile() {
  local part=$1; shift
  loadtest --url "http://127.0.0.1:$PORT" "$@" --json "$OUT/$part.json" &
  local lt=$!; pids+=("$lt")
  sleep 2   # past the ramp-up: the samples cover the steady state
  perf record -q -F 299 --call-graph dwarf,16384 -p "$LB_PID" -o "$OUT/$part.perf" -- sleep "$SECS" 2>/dev/null
  wait "$lt" || true
  perf script -i "$OUT/$part.perf" 2>/dev/null | inferno-collapse-perf >"$OUT/$part.folded"
  inferno-flamegraph --title "iogate-lb: $part ($*)" --width 1400 <"$OUT/$part.folded" >"$OUT/lb-$part.svg"
  rm -f "$OUT/$part.perf"
  echo "$part: $(wc -l <"$OUT/$part.folded") stacks, $OUT/lb-$part.svg" >&2
}
case ",$PARTS," in *,ws,*)
  profile ws --scenario echo --transport websocket --clients "$CLIENTS" --total-rate $(( CLIENTS * 2 )) \
    --duration "$(( SECS + 4 ))s" --local-addrs 4 ;;
esac
case ",$PARTS," in *,polling,*)
  profile polling --scenario echo --transport polling --clients $(( CLIENTS / 2 )) --total-rate "$CLIENTS" \
    --duration "$(( SECS + 4 ))s" --local-addrs 4 ;;
esac
case ",$PARTS," in *,connect,*)
  profile connect --scenario churn --transport websocket --clients $(( CLIENTS / 2 )) \
    --connect-rate 2000 --rate "$CHURN_RATE" --duration "$(( SECS + 4 ))s" --local-addrs 4 ;;
esac
if [ "${RECORD:-0}" = 1 ]; then
  mkdir -p docs/flamegraphs
  cp "$OUT"/lb-*.svg docs/flamegraphs/
  echo "copied to docs/flamegraphs/" >&2
fi
