#!/usr/bin/env bash
# The container image of deploy/container/Dockerfile, built and run for real with podman:
# - static binaries built here (this machine cannot pull the Rust build image, so the image is
#   built with BINARIES=prebuilt: the same runtime stage, FROM scratch), checked to be static;
# - a cluster from that image: two iogate-node containers joined through a Redis on the host
#   (reached by the name `localhost`: glibc's static name lookup in a FROM scratch image), an
#   iogate-lb container in front, then the image's iogate-loadtest broadcasting through the LB:
#   every message delivered (`--assert loss=0`), cross-node deliveries on both nodes.
# podman on this kind of machine needs runc (crun refuses its hybrid cgroups), no default ulimits
# (a container may not set RLIMIT_NPROC here) and the host network (no CNI bridge); the
# flags below say so. PROFILE=release builds the binaries you would ship (default: debug, faster).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v podman >/dev/null || { echo "podman is missing (apt-get install podman runc)" >&2; exit 1; }
command -v runc >/dev/null || { echo "runc is missing (apt-get install runc)" >&2; exit 1; }
profile=${PROFILE:-debug}
flag=(); [ "$profile" = release ] && flag=(--release)
triple=x86_64-unknown-linux-gnu
echo "==> static binaries ($profile)"
RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_DEV_DEBUG=0 \
  cargo build -q "${flag[@]}" --target "$triple" --target-dir target/static \
  -p iogate-lb -p iogate-node -p iogate-loadtest
rm -rf target/container && mkdir -p target/container
for b in iogate-lb iogate-node iogate-loadtest; do
  cp "target/static/$triple/$profile/$b" target/container/
  ldd "target/container/$b" 2>&1 | grep -qE "statically linked|not a dynamic executable" \
    || { echo "$b is not statically linked:" >&2; ldd "target/container/$b" >&2; exit 1; }
done
cp /etc/ssl/certs/ca-certificates.crt target/container/

work=$(mktemp -d)
image=localhost/iogate-check:$$
names=()
redis_pid=
cleanup() {
  for n in "${names[@]}"; do podman rm -f "$n" >/dev/null 2>&1 || true; done
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
  podman rmi -f "$image" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
printf '[containers]\ndefault_ulimits = []\n' >"$work/containers.conf"
export CONTAINERS_CONF="$work/containers.conf"
run=(podman run -d --runtime runc --network host)

echo "==> podman build (BINARIES=prebuilt)"
podman build -q -f deploy/container/Dockerfile --build-arg BINARIES=prebuilt -t "$image" . >/dev/null
size=$(podman image inspect "$image" --format '{{.Size}}')
echo "image: $image, $((size / 1024 / 1024)) MiB, FROM scratch"
[ "$(podman image inspect "$image" --format '{{.Config.User}}')" = "65532:65532" ] \
  || { echo "the image does not run as 65532:65532" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url substring what [how many times it must appear, default 1]
  for _ in $(seq 1 100); do
    body=$(curl -fsS "$1" 2>/dev/null || true)
    if [ "$(grep -cF -- "$2" <<<"$body")" -ge "${4:-1}" ]; then return 0; fi
    sleep 0.2
  done
  echo "timed out waiting for $3 ($1)" >&2
  for n in "${names[@]}"; do echo "--- $n" >&2; podman logs "$n" >&2 || true; done
  exit 1
}

rp=$(free_port); redis-server --port "$rp" --save "" --appendonly no >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 1 50); do redis-cli -p "$rp" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
n1=$(free_port); n2=$(free_port); lp=$(free_port); ap=$(free_port)
for i in 1 2; do
  port=$([ $i = 1 ] && echo "$n1" || echo "$n2")
  names+=("iogate-check-$$-n$i")
  "${run[@]}" --name "iogate-check-$$-n$i" "$image" \
    --listen "127.0.0.1:$port" --node-id "c$i" --redis-url "redis://localhost:$rp" >/dev/null
  wait_http "http://127.0.0.1:$port/readyz" '"bus":"up"' "node c$i ready with its bus up"
done
names+=("iogate-check-$$-lb")
"${run[@]}" --name "iogate-check-$$-lb" --entrypoint /usr/local/bin/iogate-lb "$image" \
  --listen "127.0.0.1:$lp" --admin "127.0.0.1:$ap" \
  --upstream "127.0.0.1:$n1" --upstream "127.0.0.1:$n2" >/dev/null
wait_http "http://127.0.0.1:$ap/api/backends" '"state": "up"' "the LB with both nodes up" 2

echo "==> the image's iogate-loadtest through the LB"
podman run --rm --runtime runc --network host --entrypoint /usr/local/bin/iogate-loadtest "$image" \
  --url "http://127.0.0.1:$lp" --scenario broadcast --clients 40 --total-rate 20 \
  --duration 4s --assert "loss=0,connected>=100%" --json - --quiet >"$work/summary.json"
python3 - "$work/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))[0]
a = s["accounting"]
assert s["connects"] == 40, s
assert a["expected"] > 0 and a["received"] == a["expected"] and a["lost"] == 0, a
print(f"loadtest in the image: 40 clients, {a['received']} of {a['expected']} deliveries, {a['lost']} lost")
PY
for p in "$n1" "$n2"; do
  got=$(curl -fsS "http://127.0.0.1:$p/metrics" | awk '/^iogate_node_bus_received_total/ {s+=$2} END {print s+0}')
  [ "${got%.*}" -gt 0 ] || { echo "node on :$p received nothing over the bus" >&2; exit 1; }
done
podman logs "iogate-check-$$-lb" 2>&1 | grep -q "cannot write the pid file" \
  && { echo "iogate-lb cannot write its pid file in the image" >&2; exit 1; }
echo "container: image built FROM scratch, 2 nodes + LB + loadtest from it, every message delivered"
