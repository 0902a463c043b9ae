#!/usr/bin/env bash
# Streamed response bodies, in one run: time to first byte of a response
# whose guest writes its first line at once and the next 200 ms later, and
# throughput of a 1 GiB body written 4 KiB at a time, through `tern up`,
# through a cluster (gateway → NATS → worker, separate processes), and
# through `wasmtime serve` 48.0.8 on the same component
# (tests/guests/stream).
#
#   bench/stream.sh               # MIB=1024 RUNS=5
#
# Goals (issue 14): throughput ≥ 0.8x wasmtime's embedded and ≥ 0.5x
# through NATS; first byte ≤ 1.2x wasmtime's.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/procs.sh
MIB=${MIB:-1024}
RUNS=${RUNS:-5}
UP_ADDR=127.0.0.1:18510
CLUSTER_ADDR=127.0.0.1:18511
WT_ADDR=127.0.0.1:18512
NATS_PORT=18513

command -v nats-server >/dev/null || apt-get install -y nats-server >/dev/null
if ! wasmtime --version 2>/dev/null | grep -q '48.0.8'; then
  echo "installing wasmtime-cli 48.0.8 (compiles for a while)"
  cargo install wasmtime-cli@48.0.8 --locked
fi
rustup target add wasm32-wasip2 >/dev/null
cargo build --release -p tern-cli
cargo build --target wasm32-wasip2 --profile guest -p stream
WASM=target/wasm32-wasip2/guest/stream.wasm
TERN=target/release/tern
export RUST_LOG=warn

start_embedded $TERN $UP_ADDR
TERN_URL=http://$UP_ADDR TERN_TOKEN=$(cat "$tmp/embedded/admin-token") \
  $TERN deploy $WASM --name stream --route /lines --route /bytes --min-scale 1 --max-body 4GiB > /dev/null 2>&1
start_nats $NATS_PORT
start_cluster $TERN $CLUSTER_ADDR
sleep 1
TERN_URL=http://$CLUSTER_ADDR TERN_TOKEN=$(cat "$tmp/gateway/admin-token") \
  $TERN deploy $WASM --name stream --route /lines --route /bytes --min-scale 1 --max-body 4GiB > /dev/null 2>&1
bg wasmtime serve -S cli --addr $WT_ADDR $WASM
for addr in $UP_ADDR $CLUSTER_ADDR $WT_ADDR; do
  for _ in $(seq 1 100); do curl -sf "http://$addr/lines?n=1" > /dev/null && break; sleep 0.1; done
done

median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
ttfb() { for _ in $(seq 1 "$RUNS"); do curl -s -o /dev/null -w '%{time_starttransfer}\n' "http://$1/lines?n=2&ms=200"; done | median; }
mibs() { for _ in $(seq 1 "$RUNS"); do curl -s -o /dev/null -w '%{speed_download}\n' "http://$1/bytes?mib=$MIB"; done | median; }

declare -A first rate
for name in wasmtime-serve tern-embedded tern-cluster; do
  case $name in
    wasmtime-serve) addr=$WT_ADDR ;; tern-embedded) addr=$UP_ADDR ;; tern-cluster) addr=$CLUSTER_ADDR ;;
  esac
  first[$name]=$(ttfb $addr)
  rate[$name]=$(mibs $addr)
done

echo
echo "tern $(git rev-parse --short HEAD), $MIB MiB body, median of $RUNS, $(nproc) cores, $(date -u +%F)"
echo
echo "| server | first byte | vs wasmtime | MiB/s | vs wasmtime |"
echo "|---|---|---|---|---|"
for name in wasmtime-serve tern-embedded tern-cluster; do
  awk -v n=$name -v f=${first[$name]} -v fb=${first[wasmtime-serve]} -v r=${rate[$name]} -v rb=${rate[wasmtime-serve]} \
    'BEGIN { printf "| %s | %.2f ms | %.2fx | %.0f | %.2fx |\n", n, f * 1000, f / fb, r / 1048576, r / rb }'
done
