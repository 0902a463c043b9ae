#!/usr/bin/env bash
# Key-value operations per second from a Tern function, beside the same
# operations done directly by a plain client, in one run:
#
#   bench/kv.sh                  # embedded (sled) and cluster (JetStream)
#   C=32 bench/kv.sh
#
# tern: the kv-guest function does PER gets (or increments) per request,
# from C concurrent HTTP clients: 2,000,000 gets (2,000 requests of 1,000)
# and 20,000 increments (200 of 100) embedded; 200,000 gets and 2,000
# increments in the cluster, where each is a round trip. direct: the same number of
# operations from C threads (sled, in a data dir on the same disk) or C
# tasks (the JetStream key-value client, on the same nats-server).
# Increments are durable when they return on both sides (sled flushes,
# JetStream acks). Each rate is the median of three runs, tern and direct
# alternating.
set -euo pipefail
cd "$(dirname "$0")/.."
C=${C:-16}
NATS_PORT=18330
UP_ADDR=127.0.0.1:18331
CLUSTER_ADDR=127.0.0.1:18332

command -v nats-server >/dev/null || apt-get install -y nats-server >/dev/null
rustup target add wasm32-wasip2 >/dev/null
cargo build --release -p tern-cli -p kv-bench
cargo build --target wasm32-wasip2 --profile guest -p kv-guest
WASM=target/wasm32-wasip2/guest/kv_guest.wasm
TERN=target/release/tern
BENCH=target/release/kv-bench

source bench/procs.sh
export RUST_LOG=warn

# pair TERN_CMD... -- DIRECT_CMD...: three runs of each, alternating (so a
# slow spell of the machine does not land on one side only); prints each
# side's median rate.
pair() {
  local t=() d=() split
  for split in "$@"; do [[ $split == -- ]] && break; t+=("$split"); done
  d=("${@:$((${#t[@]} + 2))}")
  local ts=() ds=()
  for _ in 1 2 3; do ts+=("$("${t[@]}")"); ds+=("$("${d[@]}")"); done
  printf '%s\n' "${ts[@]}" | sort -n | sed -n 2p
  printf '%s\n' "${ds[@]}" | sort -n | sed -n 2p
}
row() { printf '%-28s %12s %12s %8s\n' "$1" "$2" "$3" "$(awk -v a="$2" -v b="$3" 'BEGIN { printf "%.2f", a / b }')"; }

echo "tern $(git rev-parse --short HEAD), $(nproc) cores, $(date -u +%F), C=$C"
printf '%-28s %12s %12s %8s\n' "ops/s" "tern" "direct" "ratio"

# Embedded: tern up with its buckets in sled, then raw sled on the same disk.
start_embedded $TERN $UP_ADDR
export TERN_URL=http://$UP_ADDR TERN_TOKEN=$(cat "$tmp/embedded/admin-token")
$TERN deploy $WASM --name kvbench --route '/kvbench/*' --kv bench --min-scale 1 > /dev/null 2>&1
$TERN kv set bench k "$(head -c 64 /dev/zero | tr '\0' x)" 2>/dev/null
# (tern up stays up, idle, while the direct client runs.)
read -r get direct_get < <(pair $BENCH tern "$TERN_URL" get 2000 1000 "$C" -- $BENCH sled "$tmp/direct-sled" get 2000000 "$C" | paste -sd' ')
read -r incr direct_incr < <(pair $BENCH tern "$TERN_URL" incr 200 100 "$C" -- $BENCH sled "$tmp/direct-sled" incr 20000 "$C" | paste -sd' ')
row "embedded get (sled)" "$get" "$direct_get"
row "embedded increment (sled)" "$incr" "$direct_incr"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

# Cluster: buckets are JetStream key-value on one nats-server.
start_nats $NATS_PORT
start_cluster $TERN $CLUSTER_ADDR
export TERN_URL=http://$CLUSTER_ADDR TERN_TOKEN=$(cat "$tmp/gateway/admin-token")
$TERN deploy $WASM --name kvbench --route '/kvbench/*' --kv bench --min-scale 1 > /dev/null 2>&1
$TERN kv set bench k "$(head -c 64 /dev/zero | tr '\0' x)" 2>/dev/null
$TERN kv set direct k x 2>/dev/null   # makes the direct client's bucket (tern_direct)
read -r get direct_get < <(pair $BENCH tern "$TERN_URL" get 200 1000 "$C" -- $BENCH jetstream "$NATS" tern_direct get 200000 "$C" | paste -sd' ')
read -r incr direct_incr < <(pair $BENCH tern "$TERN_URL" incr 20 100 "$C" -- $BENCH jetstream "$NATS" tern_direct incr 2000 "$C" | paste -sd' ')
row "cluster get (JetStream)" "$get" "$direct_get"
row "cluster increment (JetStream)" "$incr" "$direct_incr"
