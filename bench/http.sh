#!/usr/bin/env bash
# HTTP benchmark of one worker against the bare may_minihttp ceiling.
#
# Builds release, starts orders-server (-w 1) pinned to CPU 0 on a fresh
# data dir, seeds 100 orders, and drives it with wrk (-t1 -c100, keep-alive)
# pinned to CPU 1: GET /orders/<id>, POST /orders (bench/post.lua) and
# GET /orders (the 100 orders, also in MB/s), and GET by id and the list
# revalidated with their ETags (If-None-Match, bench/revalidate.lua and
# bench/revalidate_list.lua: a 304 with no body);
# then the same GET against
# examples/ceiling.rs (a bare may_minihttp server answering a fixed order).
# Each case RUNS times (the ceiling and GET by id in alternation, both servers
# up on the same CPU); prints the median req/s, the ratio to the ceiling,
# and the server's CPU time per request: utime+stime of the server's whole
# process tree (master and workers, all threads) read from /proc before and
# after each wrk run, divided by the requests wrk completed. That figure
# does not depend on how fast the load generator is. Also prints the group
# commit's mean batch size. The cost of the metrics: GET by id also runs
# against a build with the `metrics-off` feature (every metrics update a
# no-op), and against this build with the access log on (to a file), in
# the same alternation; the ratios are printed. Ratios are what to
# compare: absolute numbers drift between runs and machines.
#
# BACKEND=mongo: the same cases (GET by id, GET /orders?limit=100 on a
# 100-order collection, POST) on the MongoDB backend instead, against
# secantusd-rs (SecantusDB's Rust build, at SECANTUSD_RS; build it once:
# `cargo install secantus-mdb --version 0.5.3-beta.193 --locked
# --ignore-rust-version --root ~/.cache/secantus-mdb`, needs cmake) on the
# load generator's CPU, fresh for the run: the server's CPU per request is
# its own (the database's is not counted). Lists are measured on a small
# collection because SecantusDB sorts a page with a collection scan.
#
# The embedded run's results also go to RESULTS_CSV (case,req_s,cpu_us;
# bench/results/http.csv), drawn by bench/charts.py as a bar chart into
# CHART (docs/charts/http.png; CHART= skips it) with the bench venv's
# matplotlib (bench/venv.sh).
#
# BASELINE=REV (a git revision): GET by id also runs against that
# revision's build (built here into target/baseline from a git worktree),
# in the same alternation, and the ratios of req/s and of CPU per request
# to it are printed: how a change compares with the build before it.
#
# Usage: bench/http.sh            (env: DURATION=10s RUNS=3 CONNS=100 BACKEND=embedded
#                                  BASELINE=REV)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
CONNS=${CONNS:-100}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

cargo build --release --quiet --bin orders-server --example ceiling
cargo build --release --quiet --bin orders-server --features metrics-off --target-dir target/metrics-off
BIN=${ORDERS_SERVER_BIN:-target/release/orders-server}
BIN_OFF=target/metrics-off/release/orders-server
if [ -n "${BASELINE:-}" ]; then
  BASE_REV=$(git rev-parse --short "$BASELINE")
  BIN_BASE=$(build_baseline "$BASELINE")
fi
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

# wrk_run PID URL [script] -> prints "req_per_s mb_per_s errors cpu_us_per_request"
# (PID: the server whose process tree's CPU time is counted)
wrk_run() { wrk_cpu "$1" -t1 -c"$CONNS" -d"$DURATION" ${3:+-s "$3"} "$2"; }

# bench "NAME PID URL [script]"...: RUNS rounds; in each round, one run of
# every case in turn (the ceiling and GET by id alternate, so drift between
# runs hits both alike); stores the medians in RPS/MBS/CPU[NAME].
declare -A RPS MBS ERRS CPU RPS_L MBS_L CPU_L
bench() {
  local case name pid url script
  for _ in $(seq "$RUNS"); do
    for case in "$@"; do
      read -r name pid url script <<<"$case"
      read -r rps mbs e cpu < <(wrk_run "$pid" "$url" "$script")
      RPS_L[$name]+="$rps"$'\n'; MBS_L[$name]+="$mbs"$'\n'; CPU_L[$name]+="$cpu"$'\n'
      ERRS[$name]=$(( ${ERRS[$name]:-0} + e ))
    done
  done
  for case in "$@"; do
    read -r name _ <<<"$case"
    RPS[$name]=$(printf '%s' "${RPS_L[$name]}" | median)
    MBS[$name]=$(printf '%s' "${MBS_L[$name]}" | median)
    CPU[$name]=$(printf '%s' "${CPU_L[$name]}" | median)
  done
}

BODY='{"product":"ProductY","quantity":2,"customer_name":"Bob Anderson","customer_address":"101 Pine St"}'
seed() { # PORT -> ID of the first of 100 new orders
  for _ in $(seq 100); do curl -sf -o /dev/null -XPOST "http://127.0.0.1:$1/orders" -d "$BODY"; done
  curl -sf "http://127.0.0.1:$1/orders?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["orders"][0]["_id"])'
}

if [ "${BACKEND:-embedded}" = mongo ]; then
  SECANTUSD_RS=${SECANTUSD_RS:-$HOME/.cache/secantus-mdb/bin/secantusd-rs}
  [ -x "$SECANTUSD_RS" ] || { echo "$SECANTUSD_RS missing (see the header)" >&2; exit 1; }
  DBPORT=$(free_port)
  taskset -c "$LOAD_CPU" "$SECANTUSD_RS" --port "$DBPORT" --storage-path "$TMP/db" >"$TMP/db.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$DBPORT") 2>/dev/null && break; sleep 0.1; done
  taskset -c "$SERVER_CPU" "$BIN" -w 1 -b 127.0.0.1:0 --data-dir "$TMP/data" \
    --mongo-uri "mongodb://127.0.0.1:$DBPORT/orders_db" >"$TMP/server.log" 2>&1 &
  PIDS+=($!)
  SERVER_PID=$!
  PORT=$(wait_port "$TMP/server.log")
  ID=$(seed "$PORT")
  bench "get_id $SERVER_PID http://127.0.0.1:$PORT/orders/$ID" "list100 $SERVER_PID http://127.0.0.1:$PORT/orders?limit=100"
  bench "post $SERVER_PID http://127.0.0.1:$PORT/orders bench/post.lua"
  echo
  echo "orders-server bench, MongoDB backend (secantusd-rs on CPU $LOAD_CPU with wrk): wrk -t1 -c$CONNS -d$DURATION, median of $RUNS, server on CPU $SERVER_CPU"
  printf '%-34s %12s %10s %14s %8s\n' "case" "req/s" "MB/s" "CPU us/req" "errors"
  for c in "GET /orders/<id>:get_id" "GET /orders?limit=100 (100):list100" "POST /orders:post"; do
    printf '%-34s %12.0f %10.1f %14s %8s\n' "${c%%:*}" "${RPS[${c##*:}]}" "${MBS[${c##*:}]}" "${CPU[${c##*:}]}" "${ERRS[${c##*:}]}"
  done
  exit 0
fi

# --- both servers, on the same CPU ---
CPORT=$(free_port)
taskset -c "$SERVER_CPU" target/release/examples/ceiling "127.0.0.1:$CPORT" >"$TMP/ceiling.log" 2>&1 &
PIDS+=($!)
CEILING_PID=$!
wait_port "$TMP/ceiling.log" >/dev/null
taskset -c "$SERVER_CPU" "$BIN" -w 1 -b 127.0.0.1:0 --data-dir "$TMP/data" >"$TMP/server.log" 2>&1 &
PIDS+=($!)
SERVER_PID=$!
PORT=$(wait_port "$TMP/server.log")
taskset -c "$SERVER_CPU" "$BIN_OFF" -w 1 -b 127.0.0.1:0 --data-dir "$TMP/data" >"$TMP/server-off.log" 2>&1 &
PIDS+=($!)
OFF_PID=$!
OFF_PORT=$(wait_port "$TMP/server-off.log")
taskset -c "$SERVER_CPU" "$BIN" -w 1 -b 127.0.0.1:0 --data-dir "$TMP/data" --access-log "$TMP/access.log" >"$TMP/server-log.log" 2>&1 &
PIDS+=($!)
LOG_PID=$!
LOG_PORT=$(wait_port "$TMP/server-log.log")
BASE_CASE=()
if [ -n "${BIN_BASE:-}" ]; then
  taskset -c "$SERVER_CPU" "$BIN_BASE" -w 1 -b 127.0.0.1:0 --data-dir "$TMP/data" >"$TMP/server-base.log" 2>&1 &
  PIDS+=($!)
  BASE_PID=$!
  BASE_PORT=$(wait_port "$TMP/server-base.log")
  BASE_CASE=("get_id_base $BASE_PID http://127.0.0.1:$BASE_PORT/orders/")
fi
ID=$(seed "$PORT")
# The order's tag, for the revalidation case (none from a build without ETags).
ETAG=$(curl -sfI "http://127.0.0.1:$PORT/orders/$ID" | awk 'tolower($1) == "etag:" {print $2}' | tr -d '\r')
export ETAG
REVALIDATE=()
[ -n "$ETAG" ] && REVALIDATE=("revalidate $SERVER_PID http://127.0.0.1:$PORT/orders/$ID bench/revalidate.lua")

bench "ceiling $CEILING_PID http://127.0.0.1:$CPORT/orders/$ID" "get_id $SERVER_PID http://127.0.0.1:$PORT/orders/$ID" \
  "get_id_off $OFF_PID http://127.0.0.1:$OFF_PORT/orders/$ID" "get_id_log $LOG_PID http://127.0.0.1:$LOG_PORT/orders/$ID" \
  ${BASE_CASE:+"${BASE_CASE[0]}$ID"} "${REVALIDATE[@]}"
kill -TERM "$OFF_PID" "$LOG_PID" ${BASE_PID:-}; wait "$OFF_PID" "$LOG_PID" ${BASE_PID:-} || true
LOG_LINES=$(wc -l <"$TMP/access.log")
ETAG_LIST=$(curl -sfI "http://127.0.0.1:$PORT/orders" | awk 'tolower($1) == "etag:" {print $2}' | tr -d '\r')
export ETAG_LIST
LIST_CASES=("list100 $SERVER_PID http://127.0.0.1:$PORT/orders")
[ -n "$ETAG_LIST" ] && LIST_CASES+=("revalidate_list $SERVER_PID http://127.0.0.1:$PORT/orders bench/revalidate_list.lua")
bench "${LIST_CASES[@]}"
# POST last: it grows the store.
bench "post $SERVER_PID http://127.0.0.1:$PORT/orders bench/post.lua"
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true
BATCH=$(grep -o 'mean batch [0-9.]*' "$TMP/server.log" | awk '{print $3}' | tail -1)

echo
echo "orders-server bench: wrk -t1 -c$CONNS -d$DURATION, median of $RUNS, server on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU ($(nproc) CPUs)"
printf '%-34s %12s %10s %10s %14s %8s\n' "case" "req/s" "MB/s" "vs ceiling" "CPU us/req" "errors"
row() { printf '%-34s %12.0f %10.1f %10s %14s %8s\n' "$1" "${RPS[$2]}" "${MBS[$2]}" "$(ratio "${RPS[$2]}" "${RPS[ceiling]}")" "${CPU[$2]}" "${ERRS[$2]}"; }
row "ceiling (bare may_minihttp)" ceiling
row "GET /orders/<id>" get_id
row "GET /orders/<id>, metrics-off build" get_id_off
row "GET /orders/<id>, access log on" get_id_log
[ -n "${BIN_BASE:-}" ] && row "GET /orders/<id>, baseline $BASE_REV" get_id_base
[ -n "$ETAG" ] && row "GET /orders/<id>, If-None-Match (304)" revalidate
row "GET /orders (100 orders)" list100
[ -n "$ETAG_LIST" ] && row "GET /orders, If-None-Match (304)" revalidate_list
row "POST /orders (durable)" post
echo "group commit: mean batch ${BATCH:-?} writes per fsync'd commit"
echo "access log cost: GET by id at $(ratio "${RPS[get_id_log]}" "${RPS[get_id]}") of the req/s with it off, $(ratio "${CPU[get_id_log]}" "${CPU[get_id]}") of the CPU per request ($LOG_LINES lines written)"
RESULTS_CSV=${RESULTS_CSV:-bench/results/http.csv}
CHART=${CHART-docs/charts/http.png}
mkdir -p "$(dirname "$RESULTS_CSV")"
{
  echo "case,req_s,cpu_us"
  for c in "ceiling (bare may_minihttp):ceiling" "GET /orders/<id>:get_id" "GET /orders/<id>, metrics-off:get_id_off" \
           "GET /orders/<id>, access log:get_id_log" "GET /orders (100 orders):list100" "POST /orders (durable):post"; do
    echo "\"${c%%:*}\",${RPS[${c##*:}]},${CPU[${c##*:}]}"
  done
} >"$RESULTS_CSV"
if [ -n "$CHART" ]; then
  "$(bench/venv.sh)" bench/charts.py bars "$RESULTS_CSV" "$CHART" >&2
fi
echo "metrics cost: GET by id at $(ratio "${RPS[get_id]}" "${RPS[get_id_off]}") of the metrics-off build's req/s, $(ratio "${CPU[get_id]}" "${CPU[get_id_off]}") of its CPU per request"
if [ -n "${BIN_BASE:-}" ]; then
  echo "vs baseline $BASELINE ($BASE_REV): GET by id at $(ratio "${RPS[get_id]}" "${RPS[get_id_base]}") of its req/s, $(ratio "${CPU[get_id]}" "${CPU[get_id_base]}") of its CPU per request"
fi
if [ -n "$ETAG" ]; then
  echo "revalidation: a 304 (If-None-Match) costs $(ratio "${CPU[revalidate]}" "${CPU[get_id]}") of the CPU of the 200 it replaces for an order, $(ratio "${CPU[revalidate_list]:-0}" "${CPU[list100]}") for the 100-order list"
fi
