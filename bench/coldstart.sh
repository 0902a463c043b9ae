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

source bench/procs.sh
export RUST_LOG=warn
start_nats $NATS_PORT
start_embedded $TERN $EMBEDDED_ADDR
start_cluster $TERN $CLUSTER_ADDR

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
