#!/usr/bin/env bash
# Warm requests/s and latency through the cluster path, beside the embedded
# mode and a bare hop, in one run:
#
#   tern      gateway -> NATS -> worker (separate processes) -> wasm hello
#   embedded  tern up (in-process bus) -> wasm hello
#   bare hop  hyper -> NATS -> responder (bench/nats-hop, no wasm, no Tern)
#
#   bench/cluster.sh               # 10 s per measurement
#   DURATION=30s bench/cluster.sh
#
# Every process shares this machine's cores with wrk and nats-server.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/wrk.sh
DURATION=${DURATION:-10s}
NATS_PORT=18300
CLUSTER_ADDR=127.0.0.1:18301
EMBEDDED_ADDR=127.0.0.1:18302
HOP_ADDR=127.0.0.1:18303

command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
command -v nats-server >/dev/null || apt-get install -y nats-server >/dev/null
rustup target add wasm32-wasip2 >/dev/null
cargo build --release -p tern-cli -p nats-hop
cargo build --target wasm32-wasip2 --profile guest -p hello
WASM=target/wasm32-wasip2/guest/hello.wasm
TERN=target/release/tern
HOP=target/release/nats-hop

source bench/procs.sh
export RUST_LOG=warn
start_nats $NATS_PORT
start_cluster $TERN $CLUSTER_ADDR
start_embedded $TERN $EMBEDDED_ADDR
bg $HOP responder $NATS
bg $HOP front $NATS $HOP_ADDR
sleep 1

for gw in gateway embedded; do
  TERN_URL=http://$([ $gw = gateway ] && echo $CLUSTER_ADDR || echo $EMBEDDED_ADDR) \
  TERN_TOKEN=$(cat "$tmp/$gw/admin-token") $TERN deploy $WASM --name hello --route /hello > /dev/null 2>&1
done
for addr in $CLUSTER_ADDR $EMBEDDED_ADDR $HOP_ADDR; do
  [ -n "$(curl -s http://$addr/hello)" ] || { echo "nothing served on $addr"; cat "$tmp/roles.log"; exit 1; }
  wrk -t2 -c64 -d2s http://$addr/hello > /dev/null
done

results=()
for c in 1 64; do
  results+=("$(measure tern-cluster http://$CLUSTER_ADDR/hello $c)")
  results+=("$(measure tern-embedded http://$EMBEDDED_ADDR/hello $c)")
  results+=("$(measure bare-hop http://$HOP_ADDR/hello $c)")
done

echo
echo "hello, wrk $DURATION per row, $(nproc) cores, $(uname -r), $(nats-server --version), $(date -u +%Y-%m-%d)"
echo
table path bare-hop "${results[@]}"
