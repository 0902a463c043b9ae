#!/usr/bin/env bash
# Density on one worker (`tern up`, default settings): deploy 10,000
# functions through the admin API, request 1,000 of them round-robin (warm:
# loaded and recently used) and read the process's RSS, then time cold
# requests to functions never requested before. A second run gives the
# node a small memory budget (--memory-budget 64, functions of 16 MiB), so
# that every cold request must unload the least recently used idle
# function to find room.
#
#   bench/density.sh                      # 10,000 functions
#   FUNCTIONS=3000 bench/density.sh
#   BASE=c8b4f1e bench/density.sh         # the same runs against a build of REV, beside
#
# The functions are one component (hello) under 10,000 names, as a platform
# with many small functions of one template has; compiled once, its code is
# shared. Prints Markdown tables for BENCHMARKS.md. Every request must answer
# 200; the client exits 1 and says so otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
FUNCTIONS=${FUNCTIONS:-10000}
ADDR=127.0.0.1:18320
rustup target add wasm32-wasip2 >/dev/null
cargo build --release -p tern-cli -p density
cargo build --target wasm32-wasip2 --profile guest -p hello
WASM=target/wasm32-wasip2/guest/hello.wasm
CLIENT=target/release/density
source bench/procs.sh

# run NAME TERN [TERN UP FLAGS] -- [CLIENT FLAGS]
run() {
  local name=$1 tern=$2 up=() client=()
  shift 2
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do up+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  client=("$@")
  rm -rf "$tmp/d"
  RUST_LOG=warn "$tern" up --listen $ADDR --data-dir "$tmp/d" "${up[@]}" > "$tmp/up.out" 2>> "$tmp/roles.log" &
  local pid=$!
  pids+=($pid)
  wait_up "$tmp/up.out"
  echo "== $name"
  $CLIENT http://$ADDR "$(cat "$tmp/d/admin-token")" $WASM $pid "${client[@]}" || echo "(errors: see above)"
  kill $pid; wait $pid 2>/dev/null || true
}

echo "tern $(git rev-parse --short HEAD), $(nproc) cores, $(date -u +%F)"
run "this tree: $FUNCTIONS functions, 1,000 warm, default budget" target/release/tern -- \
  --functions "$FUNCTIONS" --warm 1000 --cold 200
run "this tree: a full node (--memory-budget 64, functions of 16 MiB), every cold request evicts" \
  target/release/tern --memory-budget 64 -- \
  --functions 2000 --warm 300 --cold 200 --query '&memory_mib=16&idle_ms=3600000'
if [ -n "${BASE:-}" ]; then
  # Built in a worktree into target/compare-base, as bench/compare.sh does.
  git worktree add -q "$tmp/base" "$BASE"
  root=$(pwd)
  (cd "$tmp/base" && CARGO_TARGET_DIR="$root/target/compare-base" cargo build --release -p tern-cli)
  git worktree remove --force "$tmp/base"
  # (An earlier tern up may lack --memory-budget: only the first run.)
  run "$BASE: $FUNCTIONS functions, 1,000 warm, default budget" target/compare-base/release/tern -- \
    --functions "$FUNCTIONS" --warm 1000 --cold 200
fi
