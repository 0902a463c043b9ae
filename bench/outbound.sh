#!/usr/bin/env bash
# Reaching out, in one run with wrk at c=1 and c=64:
#   1. a function proxying every request to a local upstream (the fetch
#      test guest, granted --allow-outbound http://127.0.0.1:PORT) beside
#      wrk hitting the same upstream directly (bench-upstream: bare hyper);
#   2. a function calling another over http://b.tern.internal (a → b,
#      through Tern's invoke path) beside b called alone: the goal is that
#      the internal hop costs at most 2x one warm request (a → b at least
#      0.5x b's requests/s).
#
#   bench/outbound.sh                 # 10 s per measurement
#   DURATION=30s bench/outbound.sh
#
# Prints Markdown tables for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/wrk.sh
source bench/procs.sh
DURATION=${DURATION:-10s}
TERN_ADDR=127.0.0.1:18400
UPSTREAM_ADDR=127.0.0.1:18401

command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
rustup target add wasm32-wasip2 >/dev/null
cargo build --release -p tern-cli -p bench-upstream
cargo build --target wasm32-wasip2 --profile guest -p fetch
WASM=target/wasm32-wasip2/guest/fetch.wasm
TERN=target/release/tern
export RUST_LOG=warn

bg target/release/bench-upstream $UPSTREAM_ADDR
start_embedded $TERN $TERN_ADDR
export TERN_URL=http://$TERN_ADDR TERN_TOKEN=$(cat "$tmp/embedded/admin-token")
deploy() { $TERN deploy $WASM --min-scale 1 "$@" > /dev/null; }
deploy --name proxy --route /proxy --env NAME=proxy --env NEXT=http://$UPSTREAM_ADDR/ \
  --allow-outbound http://$UPSTREAM_ADDR
deploy --name b --route /b --env NAME=b
deploy --name a --route /a --env NAME=a --env NEXT=http://b.tern.internal/ --allow-outbound http://b.tern.internal

check() { [ "$(curl -s "$1")" = "$2" ] || { echo "$1 does not answer $2"; cat "$tmp/roles.log"; exit 1; }; }
check http://$UPSTREAM_ADDR/ "hello from upstream"
check http://$TERN_ADDR/proxy "$(printf 'hello from upstream\nvia proxy')"
check http://$TERN_ADDR/a "$(printf 'end from b\nvia a')"

for url in http://$UPSTREAM_ADDR/ http://$TERN_ADDR/proxy http://$TERN_ADDR/b http://$TERN_ADDR/a; do
  wrk -t2 -c64 -d2s "$url" > /dev/null
done

proxy=() internal=()
for c in 1 64; do
  proxy+=("$(measure upstream-direct "http://$UPSTREAM_ADDR/" $c)")
  proxy+=("$(measure tern-proxy "http://$TERN_ADDR/proxy" $c)")
  internal+=("$(measure b-alone "http://$TERN_ADDR/b" $c)")
  internal+=("$(measure a-calls-b "http://$TERN_ADDR/a" $c)")
done

echo
echo "tern $(git rev-parse --short HEAD), wrk $DURATION per row, $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
echo
table path upstream-direct "${proxy[@]}"
echo
table path b-alone "${internal[@]}"
