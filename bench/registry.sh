#!/usr/bin/env bash
# The registry in a cluster (JetStream's TERN_REGISTRY, two schedulers)
# beside `tern up`'s sled, in one run:
#   - deploy latency: `tern deploy` of a new version of one function,
#     RUNS times (p50, p99; the CLI's own start is in both columns);
#   - admin read latency: `tern list` and `tern describe`, RUNS times;
#   - failover: kill -9 of the leading scheduler, then a deploy every
#     50 ms until one is acknowledged (the kill to that), FAILOVERS times,
#     the killed scheduler restarted between runs.
#
#   bench/registry.sh                 # RUNS=100 FAILOVERS=10 LEASE=5s
#   LEASE=2s FAILOVERS=5 bench/registry.sh
#
# Prints Markdown for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-100}
FAILOVERS=${FAILOVERS:-10}
LEASE=${LEASE:-5s}
NATS_PORT=18340
CLUSTER_ADDR=127.0.0.1:18341
EMBEDDED_ADDR=127.0.0.1:18342
command -v nats-server >/dev/null || apt-get install -y nats-server >/dev/null
rustup target add wasm32-wasip2 >/dev/null
cargo build --release -p tern-cli
cargo build --target wasm32-wasip2 --profile guest -p hello
WASM=target/wasm32-wasip2/guest/hello.wasm
TERN=$(pwd)/target/release/tern
source bench/procs.sh
export RUST_LOG=info,cranelift=warn,wasmtime=warn,async_nats=warn

start_nats $NATS_PORT
declare -A sched_pid
start_scheduler() {
  "$TERN" scheduler --nats "$NATS" --data-dir "$tmp/s$1" --lease "$LEASE" >/dev/null 2>> "$tmp/s$1.log" &
  sched_pid[$1]=$!
  pids+=($!)
}
start_scheduler 0
start_scheduler 1
bg "$TERN" worker --nats "$NATS" --data-dir "$tmp/worker"
"$TERN" gateway --nats "$NATS" --data-dir "$tmp/gateway" --listen $CLUSTER_ADDR > "$tmp/gw.out" 2>> "$tmp/roles.log" &
pids+=($!)
wait_up "$tmp/gw.out"
start_embedded "$TERN" $EMBEDDED_ADDR

cluster() { TERN_URL=http://$CLUSTER_ADDR TERN_TOKEN=$(cat "$tmp/gateway/admin-token") "$TERN" "$@"; }
embedded() { TERN_URL=http://$EMBEDDED_ADDR TERN_TOKEN=$(cat "$tmp/embedded/admin-token") "$TERN" "$@"; }
until cluster status --json 2>/dev/null | grep -Eq '"leading": *true'; do sleep 0.2; done

# latency NAME CMD...: runs CMD RUNS times; prints "p50 p99" in ms.
latency() {
  local out=$tmp/times.$1
  shift
  : > "$out"
  for _ in $(seq 1 "$RUNS"); do
    local t0=$(date +%s%N)
    "$@" > /dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
    echo $(( ($(date +%s%N) - t0) / 1000 )) >> "$out"
  done
  sort -n "$out" | awk '{a[NR]=$1} END {i = int(NR*0.99); if (i < 1) i = 1; printf "%.1f %.1f", a[int(NR*0.5)+1]/1000, a[i]/1000}'
}

echo "tern $(git rev-parse --short HEAD), $(nproc) cores, $(date -u +%F), RUNS=$RUNS, lease $LEASE"
echo
echo "| operation | sled (tern up) p50 / p99 ms | JetStream, 2 schedulers p50 / p99 ms | p50 ratio |"
echo "|---|---|---|---|"
for target in embedded cluster; do
  $target deploy $WASM --name warm --route /warm > /dev/null 2>&1
done
row() {
  local what=$1
  shift
  read -r s50 s99 <<< "$(latency "e$RUNS" embedded "$@")"
  read -r j50 j99 <<< "$(latency "c$RUNS" cluster "$@")"
  echo "| $what | $s50 / $s99 | $j50 / $j99 | $(awk -v a="$j50" -v b="$s50" 'BEGIN {printf "%.2fx", a/b}') |"
}
row "deploy (a new version of one function)" deploy $WASM --name bench --route /bench
row "tern list" list --json
row "tern describe" describe bench --json
row "tern status (no registry read but the active versions)" status --json

echo
echo "Failover: kill -9 of the leader; the first deploy acknowledged after it, and the other scheduler leading (lease $LEASE)"
echo
echo "| run | leader killed | first deploy acknowledged ms | other scheduler leads ms |"
echo "|---|---|---|---|"
: > "$tmp/failovers"
for run in $(seq 1 "$FAILOVERS"); do
  holder=$(cluster status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"]["leader"])')
  victim=""
  for i in 0 1; do [ "$(cat "$tmp/s$i/node-id")" = "$holder" ] && victim=$i; done
  [ -n "$victim" ] || { echo "no scheduler of ours leads ($holder)"; exit 1; }
  kill -9 "${sched_pid[$victim]}"
  t0=$(date +%s%N)
  # Any scheduler takes a deploy; placing it waits for a leader.
  until cluster deploy $WASM --name failover --route /failover --json > /dev/null 2>&1; do sleep 0.05; done
  deployed=$(( ($(date +%s%N) - t0) / 1000000 ))
  until cluster status --json 2>/dev/null | grep -Eq '"leading": *true'; do sleep 0.05; done
  led=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "$led" >> "$tmp/failovers"
  echo "| $run | s$victim | $deployed | $led |"
  start_scheduler "$victim"
  sleep 1
done
sort -n "$tmp/failovers" | awk -v lease="$LEASE" '{a[NR]=$1} END {printf "\nleader failover over %d runs: p50 %d ms, max %d ms (lease %s)\n", NR, a[int((NR+1)/2)], a[NR], lease}'
