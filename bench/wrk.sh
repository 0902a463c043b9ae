# Shared by the bench scripts: run wrk, and print results as a Markdown
# table with a ratio against a baseline row. Source it; needs DURATION.

# measure NAME URL CONNS: one line "name conns requests/s p50 p99 non2xx".
measure() {
  local threads=$(( $3 > 1 ? 2 : 1 )) out
  out=$(wrk -t"$threads" -c"$3" -d"$DURATION" --latency "$2")
  printf '%s %s %s %s %s %s\n' "$1" "$3" \
    "$(awk '/^Requests\/sec/ {print $2}' <<<"$out")" "$(awk '$1=="50%" {print $2}' <<<"$out")" \
    "$(awk '$1=="99%" {print $2}' <<<"$out")" "$(awk '/Non-2xx or 3xx/ {print $NF}' <<<"$out" | grep . || echo 0)"
}

# table FIRST_COLUMN BASELINE_NAME RESULT_LINES...: rows by connections,
# each with its requests/s as a multiple of the baseline's at the same
# connection count.
table() {
  local first=$1 baseline=$2
  shift 2
  echo "| $first | conns | requests/s | p50 | p99 | non-2xx | vs $baseline |"
  echo "|---|---|---|---|---|---|---|"
  for c in 1 64; do
    local base
    base=$(printf '%s\n' "$@" | awk -v c=$c -v b="$baseline" '$1==b && $2==c {print $3}')
    printf '%s\n' "$@" | awk -v c=$c -v base="$base" \
      '$2==c {printf "| %s | %s | %.0f | %s | %s | %s | %.2fx |\n", $1, $2, $3, $4, $5, $6, $3/base}'
  done
}
