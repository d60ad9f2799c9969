#!/usr/bin/env bash
# The project's test command: format check, clippy with -D warnings, the library's docs, every test,
# the deployment files.
# Needs redis-server, redis-cli, node, chromium, dnsmasq, prometheus, kubernetes-validate, podman
# and runc (.ci/run installs them on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."

for dir in testkit/js demo; do
  if [ ! -d "$dir/node_modules/socket.io-client" ]; then
    echo "==> npm ci ($dir)"
    npm ci --prefix "$dir" --no-audit --no-fund
  fi
done

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo doc (iogate-node's public API, warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p iogate-node
echo "==> cargo test"
cargo test --workspace
echo "==> deployment files (systemd-analyze verify, promtool, kubernetes-validate)"
bash scripts/check-deploy.sh
echo "==> container image (podman build and run)"
bash scripts/check-container.sh
