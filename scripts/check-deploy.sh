#!/usr/bin/env bash
# The deployment files, checked offline:
# - the systemd units under deploy/systemd with `systemd-analyze verify` against the freshly
#   built binaries. systemd reports a bad value (a typo'd ProtectSystem=, an unknown directive)
#   as a warning and still exits 0, so any output at all fails the check;
# - the Prometheus rules under deploy/prometheus with `promtool check rules` and their unit
#   tests with `promtool test rules` (every alert fires on its series and not on the others).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v systemd-analyze >/dev/null || { echo "systemd-analyze is missing (apt-get install systemd)" >&2; exit 1; }
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
for u in iogate-lb iogate-node; do
  [ -x "target/debug/$u" ] || cargo build -q -p "$u"
  sed "s|/usr/local/bin/$u|$PWD/target/debug/$u|g" "deploy/systemd/$u.service" >"$d/$u.service"
done
if ! out=$(systemd-analyze verify "$d"/*.service 2>&1) || [ -n "$out" ]; then
  echo "systemd-analyze verify found problems in deploy/systemd:" >&2
  echo "$out" >&2
  exit 1
fi
echo "deploy: systemd units verified (iogate-lb.service, iogate-node.service)"
command -v promtool >/dev/null || { echo "promtool is missing (apt-get install prometheus)" >&2; exit 1; }
promtool check rules deploy/prometheus/iogate-rules.yml
(cd deploy/prometheus && promtool test rules iogate-rules.test.yml)
echo "deploy: Prometheus rules checked and unit-tested"
