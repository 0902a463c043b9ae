#!/usr/bin/env bash
# Cold-start latency from zero, beside the warm latency of the same function,
# in embedded mode and over NATS (scheduler, worker and gateway as separate
# processes), in one run:
#
#   bench/coldstart.sh          # 50 cold starts per mode
#   N=100 bench/coldstart.sh
#
# `hello` is deployed with --idle 1s. The client (bench/coldstart) waits
# until the scheduler reports zero replicas, then times one request (cold:
# held by the activator while the worker loads the component from its
# artifact cache) and one right after (warm). The artifact is always cached:
# the worker compiled it at deploy. Each cycle waits ~2 s for the idle window
# and the scheduler's 1 s tick, so 50 cycles take ~2 min per mode.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-50}
NATS_PORT=18310
CLUSTER_ADDR=127.0.0.1:18311
EMBEDDED_ADDR=127.0.0.1:18312

command -v nats-server >/dev/null || apt-get install -y nats-server >/dev/null
rustup target add wasm32-wasip2 >/dev/null
cargo build --release -p tern-cli -p coldstart
cargo build --target wasm32-wasip2 --profile guest -p hello
WASM=target/wasm32-wasip2/guest/hello.wasm
TERN=target/release/tern
CLIENT=target/release/coldstart

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
bg() { "$@" > /dev/null 2>> "$tmp/roles.log" & pids+=($!); }
wait_up() { for _ in $(seq 1 100); do grep -q "tern is up" "$1" 2>/dev/null && return; sleep 0.1; done; echo "did not start: $1"; exit 1; }

printf 'listen: 127.0.0.1:%s\nmax_payload: 16MB\n' $NATS_PORT > "$tmp/nats.conf"
bg nats-server -c "$tmp/nats.conf"
NATS=nats://127.0.0.1:$NATS_PORT
sleep 0.5
export RUST_LOG=warn
$TERN up --data-dir "$tmp/embedded" --listen $EMBEDDED_ADDR > "$tmp/up.out" 2>> "$tmp/roles.log" &
pids+=($!)
wait_up "$tmp/up.out"
bg $TERN scheduler --nats $NATS --data-dir "$tmp/scheduler"
bg $TERN worker --nats $NATS --data-dir "$tmp/worker"
$TERN gateway --nats $NATS --data-dir "$tmp/gateway" --listen $CLUSTER_ADDR > "$tmp/gw.out" 2>> "$tmp/roles.log" &
pids+=($!)
wait_up "$tmp/gw.out"

run() { # name addr data-dir
  local url=http://$2 token
  token=$(cat "$tmp/$3/admin-token")
  TERN_URL=$url TERN_TOKEN=$token $TERN deploy $WASM --name hello --route /hello --idle 1s > /dev/null 2>&1
  echo "== $1 ($N cold starts)"
  $CLIENT "$url" "$token" hello /hello "$N"
}

echo "tern $(git rev-parse --short HEAD), $(nproc) cores, $(date -u +%F)"
run "embedded: tern up, in-process bus" $EMBEDDED_ADDR embedded
run "over NATS: gateway, scheduler, worker as separate processes" $CLUSTER_ADDR gateway
