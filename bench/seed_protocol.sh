#!/usr/bin/env bash
# The seed's load-test protocol, one command.
#
# For spawn rates 25, 50 and 100 users/s, and for the scenarios `seed`
# (GET /orders, the whole list, + POST /orders; 1-3 s think time) and
# `seed-paged` (GET /orders?limit=100 + POST): start a fresh orders-server
# (-w 1, new data dir: the seed's GET /orders returns every order, so the
# work grows with each POST and runs must start equal) pinned to CPU 0, run
# orders-loadtest pinned to CPU 1 for 60 s (Locust's -t: ramp included)
# with users = rate x 60, stopping early at the first failure or when the
# server's RSS (all its processes) passes RSS_LIMIT_MB; then `by-id` at
# 15,000 users held for 60 s, with memory per connection.
# Prints Markdown tables in the seed's shape. Each run's Locust-format CSV
# files go to RESULTS (bench/results/seed-protocol); from them
# bench/charts.py draws one PNG per spawn rate (users, req/s and p99 over
# time, the seed's own results marked) into CHARTS (docs/charts), with
# matplotlib from the bench venv (bench/venv.sh; CHARTS= skips the charts).
#
# Usage: bench/seed_protocol.sh    (env: RATES="25 50 100" RUN=60s
#        BYID_USERS=15000 RSS_LIMIT_MB=4096 SCENARIOS="seed seed-paged")
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
RATES=${RATES:-"25 50 100"}
RUN=${RUN:-60s}
SCENARIOS=${SCENARIOS:-"seed seed-paged"}
BYID_USERS=${BYID_USERS:-15000}
BYID_RATE=${BYID_RATE:-1000}
RSS_LIMIT_MB=${RSS_LIMIT_MB:-4096}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
RESULTS=${RESULTS:-bench/results/seed-protocol}
CHARTS=${CHARTS-docs/charts}
mkdir -p "$RESULTS"

build_release
TMP=$(mktemp -d)
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

# 15,000 users are 15,000 sockets in each process.
hard=$(ulimit -Hn)
ulimit -n "$hard"
echo "open-file limit: $(ulimit -n) (hard $hard)" >&2
if [ "$hard" -lt $((BYID_USERS + 1000)) ]; then
  echo "note: the hard open-file limit ($hard) is below $((BYID_USERS + 1000)); by-id will fail to open every connection" >&2
fi

start_server() { # -> sets SERVER_PID, PORT
  rm -rf "$TMP/data"
  taskset -c "$SERVER_CPU" "$SERVER" -w 1 -b 127.0.0.1:0 --data-dir "$TMP/data" >"$TMP/server.log" 2>&1 &
  SERVER_PID=$!
  PORT=$(wait_port "$TMP/server.log")
}

stop_server() { kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; }

# run_load NAME ARGS... : runs the load generator while watching RSS;
# leaves the summary in $TMP/NAME.json and the peak RSS in PEAK_KB.
run_load() {
  local name=$1; shift
  taskset -c "$LOAD_CPU" "$LOADTEST" -H "http://127.0.0.1:$PORT" --json "$TMP/$name.json" "$@" >"$TMP/$name.txt" 2>&1 &
  local lt=$! rss
  PEAK_KB=0; STOPPED_RSS=0
  while kill -0 "$lt" 2>/dev/null; do
    rss=$(tree_rss_kb "$SERVER_PID")
    [ "$rss" -gt "$PEAK_KB" ] && PEAK_KB=$rss
    if [ "$rss" -gt $((RSS_LIMIT_MB * 1024)) ]; then
      echo "  stopping early: server RSS $((rss / 1024)) MB passed RSS_LIMIT_MB=$RSS_LIMIT_MB" >&2
      kill -INT "$lt"; STOPPED_RSS=1
    fi
    sleep 1
  done
  wait "$lt" || true
}


declare -A ROWS
TOTAL_RUNS=$(( $(wc -w <<<"$SCENARIOS") * $(wc -w <<<"$RATES") + 1 ))
RUN_NO=0
for scenario in $SCENARIOS; do
  for rate in $RATES; do
    users=$((rate * 60))
    RUN_NO=$((RUN_NO + 1))
    echo "== run $RUN_NO of $TOTAL_RUNS: $scenario, spawn rate $rate, $users users, $RUN" >&2
    start_server
    run_load "$scenario-$rate" -s "$scenario" -u "$users" -r "$rate" -t "$RUN" --stop-on-failure \
      --csv "$RESULTS/$scenario-$rate"
    stop_server
    j="$TMP/$scenario-$rate.json"
    if [ ! -s "$j" ]; then echo "  no summary:" >&2; cat "$TMP/$scenario-$rate.txt" >&2; continue; fi
    cat "$TMP/$scenario-$rate.txt" >&2
    reached=$(field "$j" users_reached); first=$(field "$j" users_at_first_failure)
    ok_users=$reached; note=""
    if [ -n "$first" ]; then ok_users=$((first - 1)); note=" (failures from $first users on)"; fi
    [ "$STOPPED_RSS" = 1 ] && note="$note (stopped: RSS limit)"
    ROWS[$scenario-$rate]="| $rate | $ok_users$note | $(printf '%.0f' "$(field "$j" requests_per_second)") | $(field "$j" p99_ms) | $(printf '%.1f' "$(field "$j" megabytes_per_second)") | $((PEAK_KB / 1024)) |"
  done
done

# by-id at 15,000 users: memory per connection.
echo "== run $TOTAL_RUNS of $TOTAL_RUNS: by-id, $BYID_USERS users at $BYID_RATE/s, held 60 s" >&2
start_server
taskset -c "$LOAD_CPU" "$LOADTEST" -H "http://127.0.0.1:$PORT" -s seed -u 20 -r 20 -t 5s >/dev/null 2>&1 || true
idle_kb=$(tree_rss_kb "$SERVER_PID")
hold=$((BYID_USERS / BYID_RATE + 60))
run_load by-id -s by-id -u "$BYID_USERS" -r "$BYID_RATE" -t "${hold}s" --csv "$RESULTS/by-id-$BYID_RATE"
stop_server
j="$TMP/by-id.json"; cat "$TMP/by-id.txt" >&2

echo
echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem/ {print $2}') GiB; server -w 1 on CPU $SERVER_CPU, orders-loadtest on CPU $LOAD_CPU; $(date -u +%F)"
for scenario in $SCENARIOS; do
  echo
  echo "### $scenario"
  echo
  echo "| spawn rate | users at 0% failures | req/s | p99 ms | body MB/s | server RSS peak MB |"
  echo "|---:|---:|---:|---:|---:|---:|"
  for rate in $RATES; do echo "${ROWS[$scenario-$rate]:-| $rate | (no result) | | | | |}"; done
done
echo
echo "### by-id"
echo
if [ -s "$j" ]; then
  users=$(field "$j" users_reached); peak=$PEAK_KB
  per_conn=$(( (peak - idle_kb) * 1024 / (users > 0 ? users : 1) ))
  echo "| users | requests | failures | req/s | p50 ms | p99 ms | max ms | server RSS idle / peak MB | per connection |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  echo "| $users | $(field "$j" requests) | $(field "$j" failures) | $(printf '%.0f' "$(field "$j" requests_per_second)") | $(field "$j" p50_ms) | $(field "$j" p99_ms) | $(field "$j" max_ms) | $((idle_kb / 1024)) / $((peak / 1024)) | ~$((per_conn / 1024)) KiB |"
else
  echo "(no result)"
fi

if [ -n "$CHARTS" ]; then
  echo "charts:" >&2
  "$(bench/venv.sh)" bench/charts.py seed "$RESULTS" "$CHARTS" >&2
fi
