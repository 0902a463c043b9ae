# Process helpers shared by the bench scripts (source it). Everything started
# with `bg` or `start_*` is killed, and the scratch dir $tmp removed, on exit.

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
# Runs "$@" in the background, its stderr into $tmp/roles.log.
bg() { "$@" > /dev/null 2>> "$tmp/roles.log" & pids+=($!); }
# Waits until a gateway's stdout file ($1) says it serves.
wait_up() { for _ in $(seq 1 100); do grep -q "tern is up" "$1" 2>/dev/null && return; sleep 0.1; done; echo "did not start: $1"; cat "$tmp/roles.log"; exit 1; }

# start_nats PORT: a nats-server with room for 8 MiB bodies and JetStream
# (file storage in $tmp); sets $NATS.
start_nats() {
  printf 'listen: 127.0.0.1:%s\nmax_payload: 16MB\njetstream { store_dir: "%s" }\n' "$1" "$tmp/js" > "$tmp/nats.conf"
  bg nats-server -c "$tmp/nats.conf"
  NATS=nats://127.0.0.1:$1
  sleep 0.5
}

# start_embedded TERN ADDR: `tern up` with its data in $tmp/embedded.
start_embedded() {
  "$1" up --data-dir "$tmp/embedded" --listen "$2" > "$tmp/up.out" 2>> "$tmp/roles.log" &
  pids+=($!)
  wait_up "$tmp/up.out"
}

# start_cluster TERN ADDR: scheduler, one worker and a gateway on ADDR, as
# separate processes on $NATS; the gateway's data (admin token) in $tmp/gateway.
start_cluster() {
  bg "$1" scheduler --nats "$NATS" --data-dir "$tmp/scheduler"
  bg "$1" worker --nats "$NATS" --data-dir "$tmp/worker"
  "$1" gateway --nats "$NATS" --data-dir "$tmp/gateway" --listen "$2" > "$tmp/gw.out" 2>> "$tmp/roles.log" &
  pids+=($!)
  wait_up "$tmp/gw.out"
}
