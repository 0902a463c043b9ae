#!/usr/bin/env bash
# Warm HTTP requests/s of the hello example: this tree's `tern up` beside
# the same at an earlier revision, in one run, to see what a change did to
# the request path. Both are release builds; the earlier one is built in a
# worktree, into target/compare-base (not this tree's target/release: the
# workspace crates have the same names in both trees, and cargo would take
# one tree's build of a crate for the other's).
#
#   bench/compare.sh REV              # e.g. bench/compare.sh main~5
#   DURATION=30s bench/compare.sh REV
#
# Prints a Markdown table for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/wrk.sh
REV=${1:?usage: bench/compare.sh REV}
DURATION=${DURATION:-10s}
BASE_ADDR=127.0.0.1:18193
NOW_ADDR=127.0.0.1:18194
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  git worktree remove --force "$tmp/base" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

target=$(pwd)/target
git worktree add -q "$tmp/base" "$REV"
(cd "$tmp/base" && CARGO_TARGET_DIR=$target/compare-base cargo build --release -p tern-cli)
cp "$target/compare-base/release/tern" "$tmp/tern-base"
cargo build --release -p tern-cli
cargo build --target wasm32-wasip2 --profile guest -p hello
WASM=target/wasm32-wasip2/guest/hello.wasm

start() { # NAME BINARY ADDR
  RUST_LOG=warn "$2" up --listen "$3" --data-dir "$tmp/$1" > "$tmp/$1.out" 2> "$tmp/$1.err" &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q "tern is up" "$tmp/$1.out" 2>/dev/null && break; sleep 0.1; done
  TERN_URL=http://$3 TERN_TOKEN=$(cat "$tmp/$1/admin-token") "$2" deploy $WASM --name hello --route /hello > /dev/null
  [ "$(curl -s "http://$3/hello")" = "Hello, world!" ] || { echo "$1 does not serve hello"; exit 1; }
  wrk -t2 -c64 -d2s "http://$3/hello" > /dev/null
}
start base "$tmp/tern-base" $BASE_ADDR
start now target/release/tern $NOW_ADDR

results=()
for c in 1 64; do
  results+=("$(measure "tern@$REV" "http://$BASE_ADDR/hello" $c)")
  results+=("$(measure "tern-now" "http://$NOW_ADDR/hello" $c)")
done

echo
echo "hello example, wrk $DURATION per row, $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
echo
table server "tern@$REV" "${results[@]}"
