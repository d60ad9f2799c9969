#!/usr/bin/env bash
# `make down`: stop the local cluster started by `make up` (only the processes it started).
set -euo pipefail
cd "$(dirname "$0")/.."
PIDFILE="${RUN_DIR:-$PWD/.up}/up.pid"
if [ ! -f "$PIDFILE" ] || ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "no local cluster is running"
  rm -f "$PIDFILE"
  exit 0
fi
pid=$(cat "$PIDFILE")
kill -TERM "$pid"
for _ in $(seq 1 300); do
  kill -0 "$pid" 2>/dev/null || { echo "stopped"; exit 0; }
  sleep 0.1
done
echo "the cluster (pid $pid) did not stop within 30 s" >&2
exit 1
