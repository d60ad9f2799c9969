#!/usr/bin/env bash
# The project's test command: format check, clippy with -D warnings, every test.
# Needs redis-server, redis-cli and node on PATH (.ci/run installs them on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d testkit/js/node_modules/socket.io-client ]; then
  echo "==> npm ci (testkit/js)"
  npm ci --prefix testkit/js --no-audit --no-fund
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo test"
cargo test --workspace
