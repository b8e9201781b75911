#!/usr/bin/env bash
# How many users of the seed-paged scenario (GET /orders?limit=100 + POST,
# 1-3 s think time) one server core holds with 0 failures and p99 under
# 100 ms, and what gives out first.
#
# For each step of USERS: a fresh orders-server pinned to CPU 0, with as
# many workers as the open-file limit needs (a process here may hold at
# most 20,000 descriptors, a hard limit not even root can raise, and a
# worker's worker_connections defaults to that limit less 64: one worker
# per PER_WORKER users, all on the same core); the users spread over
# load-generator processes of
# at most PER_PROCESS users each (well under a process's 20,000 open
# files), each on its own source address (127.0.0.2, .3, ...: its own
# ephemeral ports), all pinned to CPU 1. Spawn rate RATE users/s in all,
# then HOLD seconds at the step. Prints one row per step: users reached,
# failures, req/s, the worst p99 of the processes, the server's peak RSS
# and its CPU time per request over the step, and how busy each of the two
# CPUs was while all users ran (from /proc/stat, over the last HOLD seconds
# of the generators, less 5; every 5 s also on stderr): the one near 100%
# is what gives out first. Stops at the first step that fails (failures,
# or p99 >= 100 ms).
#
# Usage: bench/one_core.sh   (env: USERS="10000 20000 30000" PER_PROCESS=7500
#        PER_WORKER=15000 RATE=1000 HOLD=60)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
USERS=${USERS:-"10000 20000 30000"}
PER_PROCESS=${PER_PROCESS:-7500}
PER_WORKER=${PER_WORKER:-15000}
RATE=${RATE:-1000}
HOLD=${HOLD:-60}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
RESULTS=${RESULTS:-bench/results/one-core}
mkdir -p "$RESULTS"

build_release
TMP=$(mktemp -d)
SERVER_PID=
LOADERS=()
cleanup() {
  for p in "${LOADERS[@]}" $SERVER_PID; do kill "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
CLK_TCK=$(getconf CLK_TCK)

any_alive() { local p; for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
# per_request TICKS REQUESTS -> CPU µs per request
per_request() { awk -v t="$1" -v n="$2" -v k="$CLK_TCK" 'BEGIN {printf "%.1f", (n > 0 ? t / k * 1e6 / n : 0)}'; }

printf '| users | server workers | reached | failures | req/s | p99 ms (worst process) | server RSS peak MB | server CPU µs/request (step average) | server CPU busy %% | generators'"'"' CPU busy %% |\n'
printf '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for users in $USERS; do
  rm -rf "$TMP/data"
  workers=$(( (users + PER_WORKER - 1) / PER_WORKER ))
  taskset -c "$SERVER_CPU" "$SERVER" -w "$workers" -b 127.0.0.1:0 --data-dir "$TMP/data" >"$TMP/server.log" 2>&1 &
  SERVER_PID=$!
  PORT=$(wait_port "$TMP/server.log")
  procs=$(( (users + PER_PROCESS - 1) / PER_PROCESS ))
  ramp=$(( (users + RATE - 1) / RATE ))
  LOADERS=()
  rm -f "$RESULTS/$users"-*.json
  for i in $(seq "$procs"); do
    share=$((users / procs)); [ "$i" = "$procs" ] && share=$((users - (procs - 1) * (users / procs)))
    taskset -c "$LOAD_CPU" "$LOADTEST" -H "http://127.0.0.1:$PORT" -s seed-paged \
      -u "$share" -r "$(awk -v r="$RATE" -v p="$procs" 'BEGIN {print r / p}')" -t "$((ramp + HOLD))s" \
      --source-ip "127.0.0.$((i + 1))" --progress-every 0 --json "$RESULTS/$users-$i.json" >"$TMP/load-$i.txt" 2>&1 &
    LOADERS+=($!)
  done
  echo "== $users users: $workers server workers on CPU $SERVER_CPU, $procs load generators on CPU $LOAD_CPU, ramp ${ramp} s, hold ${HOLD} s" >&2
  s0=$(tree_ticks "$SERVER_PID"); peak=0; started=$SECONDS
  # Each second's CPU counters, to measure the last HOLD seconds (the
  # generators build their clients first, which takes a while at 20,000
  # users: the run starts late and ends when they exit).
  AT=(); SERVER_BUSY=(); LOAD_BUSY=(); last=$SECONDS
  while any_alive "${LOADERS[@]}"; do
    r=$(tree_rss_kb "$SERVER_PID"); [ "$r" -gt "$peak" ] && peak=$r
    AT+=($SECONDS); SERVER_BUSY+=("$(cpu_busy "$SERVER_CPU")"); LOAD_BUSY+=("$(cpu_busy "$LOAD_CPU")")
    n=${#AT[@]}
    if [ $((SECONDS - last)) -ge 5 ] && [ "$n" -gt 5 ]; then
      echo "   $((SECONDS - started)) s: server CPU $(busy_percent "${SERVER_BUSY[n-6]}" "${SERVER_BUSY[n-1]}")% busy, generators' CPU $(busy_percent "${LOAD_BUSY[n-6]}" "${LOAD_BUSY[n-1]}")% busy" >&2
      last=$SECONDS
    fi
    sleep 1
  done
  # The window: from HOLD-3 s to 2 s before the generators ended.
  end=0; from=; to=
  [ "${#AT[@]}" -gt 0 ] && end=${AT[${#AT[@]}-1]}
  for i in "${!AT[@]}"; do
    [ -z "$from" ] && [ "${AT[i]}" -ge $((end - HOLD + 3)) ] && from=$i
    [ "${AT[i]}" -le $((end - 2)) ] && to=$i
  done
  s1=$(tree_ticks "$SERVER_PID")
  for p in "${LOADERS[@]}"; do wait "$p" || true; done
  LOADERS=()
  kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
  reached=0 failures=0 rps=0 p99=0 requests=0
  for i in $(seq "$procs"); do
    j="$RESULTS/$users-$i.json"
    [ -s "$j" ] || { echo "no summary from load generator $i:" >&2; cat "$TMP/load-$i.txt" >&2; continue; }
    reached=$((reached + $(field "$j" users_reached)))
    failures=$((failures + $(field "$j" failures)))
    requests=$((requests + $(field "$j" requests)))
    rps=$(awk -v a="$rps" -v b="$(field "$j" requests_per_second)" 'BEGIN {print a + b}')
    p99=$(awk -v a="$p99" -v b="$(field "$j" p99_ms)" 'BEGIN {print (b > a) ? b : a}')
  done
  server_busy=-; load_busy=-
  if [ -n "$from" ] && [ -n "$to" ] && [ "$to" -gt "$from" ]; then
    server_busy=$(busy_percent "${SERVER_BUSY[from]}" "${SERVER_BUSY[to]}")
    load_busy=$(busy_percent "${LOAD_BUSY[from]}" "${LOAD_BUSY[to]}")
  fi
  printf '| %s | %s | %s | %s | %.0f | %s | %s | %s | %s | %s |\n' "$users" "$workers" "$reached" "$failures" "$rps" "$p99" \
    "$((peak / 1024))" "$(per_request $((s1 - s0)) "$requests")" "$server_busy" "$load_busy"
  if [ "$failures" -gt 0 ] || awk -v p="$p99" 'BEGIN {exit !(p >= 100)}'; then
    echo "step $users failed (failures $failures, p99 $p99 ms): stopping" >&2
    break
  fi
done
