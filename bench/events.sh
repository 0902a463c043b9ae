#!/usr/bin/env bash
# Events per second end to end, beside the raw JetStream publish, consume
# and ack rate measured in the same run on the same nats-server:
#
#   bench/events.sh            # 100,000 events per side
#   N=300000 bench/events.sh
#
# Scheduler, worker and gateway run as separate processes on one
# nats-server with JetStream (file storage). The plain-event test guest is
# deployed with --on-event 'bench.*'; the client (bench/events) publishes
# with JetStream acks and waits until Tern's trigger has acked every event.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100000}
NATS_PORT=18320
CLUSTER_ADDR=127.0.0.1:18321

command -v nats-server >/dev/null || apt-get install -y nats-server >/dev/null
rustup target add wasm32-wasip2 >/dev/null
cargo build --release -p tern-cli -p events-bench
cargo build --target wasm32-wasip2 --profile guest -p plain-event
WASM=target/wasm32-wasip2/guest/plain_event.wasm
TERN=target/release/tern

source bench/procs.sh
export RUST_LOG=warn
start_nats $NATS_PORT
start_cluster $TERN $CLUSTER_ADDR
export TERN_URL=http://$CLUSTER_ADDR TERN_TOKEN=$(cat "$tmp/gateway/admin-token")
$TERN deploy $WASM --name bench --on-event 'bench.*' --min-scale 1 > /dev/null 2>&1

echo "tern $(git rev-parse --short HEAD), $(nproc) cores, $(date -u +%F), N=$N"
target/release/events-bench "$NATS" "$N"
