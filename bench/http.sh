#!/usr/bin/env bash
# Warm HTTP requests/s and latency of the hello example: `tern up` (embedded
# mode: gateway -> in-process bus -> worker) beside `wasmtime serve -S cli`
# 48.0.8 serving the same component, with wrk at c=1 and c=64, in one run.
# The ratio is against default `wasmtime serve`; a second wasmtime row uses
# the same keep-resident settings as Tern (wasmtime's CLI has no switch for
# PAGEMAP_SCAN, which Tern also enables). A second table puts Tern with its
# metrics and receipts on (the default) beside `tern up --no-metrics`: their
# cost, which should stay under 10%. A third table puts the Python and
# JavaScript examples (componentize-py, componentize-js; built with their
# own build.sh, skipped with POLYGLOT=0) in Tern, fresh and with
# `--instance-reuse 1000`, beside `wasmtime serve` on the same components.
#
#   bench/http.sh                 # 10 s per measurement
#   DURATION=30s bench/http.sh
#
# Prints a Markdown table for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/wrk.sh
DURATION=${DURATION:-10s}
TERN_ADDR=127.0.0.1:18190
WT_ADDR=127.0.0.1:18191
WT_TUNED_ADDR=127.0.0.1:18192
TERN_BARE_ADDR=127.0.0.1:18193

need() { command -v "$1" >/dev/null || { echo "installing $2"; apt-get install -y "$2" >/dev/null; }; }
need wrk wrk
if ! wasmtime --version 2>/dev/null | grep -q '48.0.8'; then
  echo "installing wasmtime-cli 48.0.8 (compiles for a while)"
  cargo install wasmtime-cli@48.0.8 --locked
fi
rustup target add wasm32-wasip2 >/dev/null
cargo build --release -p tern-cli
cargo build --target wasm32-wasip2 --profile guest -p hello
WASM=target/wasm32-wasip2/guest/hello.wasm
TERN=target/release/tern

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

# start_tern NAME ADDR [FLAGS]: tern up with hello deployed.
start_tern() {
  local name=$1 addr=$2
  shift 2
  RUST_LOG=warn $TERN up --listen "$addr" --data-dir "$tmp/$name" "$@" > "$tmp/$name.out" 2> "$tmp/$name.err" &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q "tern is up" "$tmp/$name.out" 2>/dev/null && break; sleep 0.1; done
  TERN_URL=http://$addr TERN_TOKEN=$(cat "$tmp/$name/admin-token") \
    $TERN deploy $WASM --name hello --route /hello > /dev/null 2>&1
}
start_tern tern $TERN_ADDR
start_tern tern-bare $TERN_BARE_ADDR --no-metrics

wasmtime serve -S cli --addr $WT_ADDR $WASM > /dev/null 2> "$tmp/wasmtime.err" &
pids+=($!)
wasmtime serve -S cli --addr $WT_TUNED_ADDR -O pooling-allocator=y \
  -O pooling-memory-keep-resident=$((2 << 20)) -O pooling-table-keep-resident=$((64 << 10)) \
  $WASM > /dev/null 2> "$tmp/wasmtime-tuned.err" &
pids+=($!)
for addr in $WT_ADDR $WT_TUNED_ADDR; do
  for _ in $(seq 1 100); do curl -sf http://$addr/hello > /dev/null && break; sleep 0.1; done
done

[ "$(curl -s http://$TERN_ADDR/hello)" = "Hello, world!" ] || { echo "tern does not serve hello"; exit 1; }
[ "$(curl -s http://$TERN_BARE_ADDR/hello)" = "Hello, world!" ] || { echo "tern --no-metrics does not serve hello"; exit 1; }
[ "$(curl -s http://$WT_ADDR/hello)" = "Hello, world!" ] || { echo "wasmtime serve does not serve hello"; exit 1; }
[ "$(curl -s http://$WT_TUNED_ADDR/hello)" = "Hello, world!" ] || { echo "tuned wasmtime serve does not serve hello"; exit 1; }


# Warm both (instance slots, caches) before measuring.
wrk -t2 -c64 -d2s http://$TERN_ADDR/hello > /dev/null
wrk -t2 -c64 -d2s http://$TERN_BARE_ADDR/hello > /dev/null
wrk -t2 -c64 -d2s http://$WT_ADDR/hello > /dev/null
wrk -t2 -c64 -d2s http://$WT_TUNED_ADDR/hello > /dev/null

results=()
for c in 1 64; do
  results+=("$(measure tern "http://$TERN_ADDR/hello" $c)")
  results+=("$(measure tern-no-metrics "http://$TERN_BARE_ADDR/hello" $c)")
  results+=("$(measure wasmtime-serve "http://$WT_ADDR/hello" $c)")
  results+=("$(measure wasmtime-serve-tuned "http://$WT_TUNED_ADDR/hello" $c)")
done

echo
echo "hello example, wrk $DURATION per row, $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
echo
table server wasmtime-serve "${results[@]}"
echo
echo "metrics and receipts on (tern) against off (tern up --no-metrics):"
echo
tern_rows=()
for r in "${results[@]}"; do [[ $r == tern* ]] && tern_rows+=("$r"); done
table server tern-no-metrics "${tern_rows[@]}"

[ "${POLYGLOT:-1}" = 0 ] && exit 0
echo
echo "building the Python and JavaScript examples (componentize-py, componentize-js)"
examples/python-hello/build.sh "$tmp/hello_py.wasm" > /dev/null
examples/javascript-hello/build.sh "$tmp/hello_js.wasm" > /dev/null
WT_PY_ADDR=127.0.0.1:18194
WT_JS_ADDR=127.0.0.1:18195
for lang in py js; do
  TERN_URL=http://$TERN_ADDR TERN_TOKEN=$(cat "$tmp/tern/admin-token") \
    $TERN deploy "$tmp/hello_$lang.wasm" --name "hello-$lang" --route "/$lang/hello" > /dev/null 2>&1
  TERN_URL=http://$TERN_ADDR TERN_TOKEN=$(cat "$tmp/tern/admin-token") \
    $TERN deploy "$tmp/hello_$lang.wasm" --name "hello-$lang-reuse" --route "/$lang-reuse/hello" \
    --instance-reuse 1000 > /dev/null 2>&1
done
wasmtime serve -S cli --addr $WT_PY_ADDR "$tmp/hello_py.wasm" > /dev/null 2> "$tmp/wasmtime-py.err" &
pids+=($!)
wasmtime serve -S cli --addr $WT_JS_ADDR "$tmp/hello_js.wasm" > /dev/null 2> "$tmp/wasmtime-js.err" &
pids+=($!)
for addr in $WT_PY_ADDR $WT_JS_ADDR; do
  for _ in $(seq 1 300); do curl -sf http://$addr/hello > /dev/null && break; sleep 0.1; done
done
for url in http://$TERN_ADDR/py/hello http://$WT_PY_ADDR/hello; do
  [ "$(curl -s "$url")" = "Hello, world! (from Python)" ] || { echo "$url does not serve the Python hello"; exit 1; }
done
for url in http://$TERN_ADDR/js/hello http://$WT_JS_ADDR/hello; do
  [ "$(curl -s "$url")" = "Hello, world! (from JavaScript)" ] || { echo "$url does not serve the JavaScript hello"; exit 1; }
done
for url in http://$TERN_ADDR/py/hello http://$TERN_ADDR/py-reuse/hello http://$WT_PY_ADDR/hello \
  http://$TERN_ADDR/js/hello http://$TERN_ADDR/js-reuse/hello http://$WT_JS_ADDR/hello; do
  wrk -t2 -c64 -d2s "$url" > /dev/null
done
py=() js=()
for c in 1 64; do
  py+=("$(measure tern-python "http://$TERN_ADDR/py/hello" $c)")
  py+=("$(measure tern-python-reuse-1000 "http://$TERN_ADDR/py-reuse/hello" $c)")
  py+=("$(measure wasmtime-serve-python "http://$WT_PY_ADDR/hello" $c)")
  js+=("$(measure tern-javascript "http://$TERN_ADDR/js/hello" $c)")
  js+=("$(measure tern-javascript-reuse-1000 "http://$TERN_ADDR/js-reuse/hello" $c)")
  js+=("$(measure wasmtime-serve-javascript "http://$WT_JS_ADDR/hello" $c)")
done
echo
echo "Python hello (componentize-py), a fresh instance per request, and with --instance-reuse 1000:"
echo
table server wasmtime-serve-python "${py[@]}"
echo
echo "JavaScript hello (componentize-js), a fresh instance per request, and with --instance-reuse 1000:"
echo
table server wasmtime-serve-javascript "${js[@]}"
