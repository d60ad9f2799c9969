#!/usr/bin/env bash
# The deployment files, checked offline:
# - the systemd units under deploy/systemd with `systemd-analyze verify` against the freshly
#   built binaries. systemd reports a bad value (a typo'd ProtectSystem=, an unknown directive)
#   as a warning and still exits 0, so any output at all fails the check;
# - the Prometheus rules under deploy/prometheus with `promtool check rules` and their unit
#   tests with `promtool test rules` (every alert fires on its series and not on the others);
# - the Kubernetes manifests under deploy/k8s with `kubernetes-validate --strict` (the API
#   schemas of Kubernetes 1.37; an unknown field fails), and the iogate configs inside their
#   ConfigMaps with `iogate-lb --check` and `iogate-node --check`.
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

command -v kubernetes-validate >/dev/null || { echo "kubernetes-validate is missing (pip install kubernetes-validate; .ci/run installs it in a venv)" >&2; exit 1; }
kubernetes-validate --strict --quiet deploy/k8s/*.yaml
# The configs inside the ConfigMaps, read with PyYAML (a dependency of kubernetes-validate: the
# python3 beside it has it).
py=
for c in "$(dirname "$(command -v kubernetes-validate)")/python3" python3; do
  if "$c" -c 'import yaml' 2>/dev/null; then py=$c; break; fi
done
[ -n "$py" ] || { echo "no python3 with PyYAML found beside kubernetes-validate" >&2; exit 1; }
"$py" - "$d" deploy/k8s/lb.yaml deploy/k8s/node.yaml <<'PY'
import sys, yaml
out = sys.argv[1]
for path in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(path)):
        if doc and doc.get("kind") == "ConfigMap":
            for name, text in doc.get("data", {}).items():
                open(f"{out}/{name}", "w").write(text)
PY
IOGATE_LB_ADMIN_TOKEN=check-only target/debug/iogate-lb --check --config "$d/lb.yaml"
target/debug/iogate-node --check --config "$d/node.yaml"
echo "deploy: Kubernetes manifests validated (deploy/k8s), their iogate configs checked"
