#!/usr/bin/env bash
# How many seed-paged users one server core holds, measured with wrk as
# the users instead of orders-loadtest.
#
# bench/one_core.sh drives the users with orders-loadtest (goose: one HTTP
# client per user); at 25,000 users its p99 passed 100 ms with the
# generators' core the busier of the two (BENCHMARKS.md, "How far one core
# goes"). Here each user is one wrk connection running bench/seed_paged.lua
# (GET /orders?limit=100 and POST /orders, 1-3 s of think time after each
# answer: the requests and pace of the `seed-paged` scenario), to see how
# far the server goes with another generator.
#
# For each step of USERS, in a private network namespace (so the host's
# settings are untouched: somaxconn and tcp_max_syn_backlog 65535 as
# tuning/ recommends, and all ephemeral ports 1024-65535 for the loopback
# connections): a fresh orders-server pinned to CPU 0 (one worker per
# PER_WORKER users: the 20,000-descriptor limit per process), and one wrk
# process (-t1) per PER_PROCESS users on CPU 1, started one after the other
# at RATE users/s, all ending at the same moment, HOLD s after the last
# one started. Small processes, because wrk scans all of a thread's timers
# (one per user thinking) on every turn of its event loop. Prints one row
# per step: users, requests, failures (socket errors and non-2xx answers;
# a wrk process none of whose requests was answered counts as one), req/s
# over the hold (the server's /metrics request counter), the worst p99 of
# the wrk processes (all of each one's run, ramp included), the server's
# peak RSS,
# and how busy each CPU was during the hold (from /proc/stat; CPU 0 also
# does the kernel's loopback work for the clients' packets): the one near
# 100% is what gives out first.
#
# Usage: bench/one_core_wrk.sh   (env: USERS="20000 30000 40000"
#        PER_PROCESS=200 RATE=1000 PER_WORKER=15000 HOLD=60;
#        ORDERS_SERVER_BIN=FILE: that build instead of this tree's; DEBUG=1 also
#        prints, at the end of each hold, the workers' mappings and
#        descriptors, socket counts, accept queues, connections in SYN-SENT
#        and the server's connection counters)   Needs root, iproute2, wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
export PATH="$PATH:/usr/sbin:/sbin"
USERS=${USERS:-"20000 30000 40000"}
PER_PROCESS=${PER_PROCESS:-200}
PER_WORKER=${PER_WORKER:-15000}
HOLD=${HOLD:-60}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=8000
METRICS_PORT=9180
RATE=${RATE:-1000}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

if [ -n "${ORDERS_SERVER_BIN:-}" ]; then
  BIN=$(realpath "$ORDERS_SERVER_BIN")
else
  cargo build --release --quiet --bin orders-server
  BIN=$PWD/target/release/orders-server
fi
NS=orders-one-core-$$
TMP=$(mktemp -d)
cleanup() {
  ip netns pids "$NS" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
in_ns() { ip netns exec "$NS" "$@"; }

# wrk_field FILE -> "requests failures p99_ms" of one wrk output (no result,
# or no request answered at all: one failure)
wrk_field() {
  awk '
    /requests in/ { n = $1 }
    /Socket errors:/ { gsub(",", ""); e += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { e += $5 }
    $1 == "99%" { v = $2; u = v; gsub(/[0-9.]/, "", u); sub(/[a-z]+$/, "", v)
                  p = (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : (u == "m") ? v * 60000 : v }
    END { if (n == "" || n == 0) print "0 1 0"; else printf "%d %d %.1f\n", n, e, p }' "$1"
}

# served -> requests the server has answered so far (its /metrics)
# (empty if it did not answer)
served() {
  local page
  page=$(in_ns curl -sf --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics") || return 0
  awk '/^orders_http_requests_total/ {s += $2} END {printf "%d", s}' <<<"$page"
}

printf '| users | server workers | requests | failures | req/s (hold) | p99 ms (worst process) | server RSS peak MB | CPU 0 (server) busy %% | CPU 1 (wrk) busy %% |\n'
printf '|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for users in $USERS; do
  ip netns del "$NS" 2>/dev/null || true
  ip netns add "$NS"
  in_ns ip link set lo up
  in_ns sysctl -qw net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 \
    net.ipv4.ip_local_port_range="1024 65535"
  rm -rf "$TMP/data" "$TMP"/wrk-*.txt
  workers=$(( (users + PER_WORKER - 1) / PER_WORKER ))
  ip netns exec "$NS" taskset -c "$SERVER_CPU" "$BIN" -w "$workers" -b "127.0.0.1:$PORT" --backlog 65535 \
    --metrics-bind "127.0.0.1:$METRICS_PORT" --data-dir "$TMP/data" >"$TMP/server.log" 2>&1 &
  SERVER_PID=$!
  wait_port "$TMP/server.log" >/dev/null
  procs=$(( (users + PER_PROCESS - 1) / PER_PROCESS ))
  ramp=$(( (users + RATE - 1) / RATE ))
  echo "== $users users: $workers server workers on CPU $SERVER_CPU, $procs wrk processes on CPU $LOAD_CPU (ramp $ramp s, hold $HOLD s)" >&2
  LOADERS=()
  # One end for all: the ramp's planned end, plus the hold.
  deadline=$((EPOCHSECONDS + ramp + 1 + HOLD))
  for i in $(seq "$procs"); do
    share=$((users / procs)); [ "$i" = "$procs" ] && share=$((users - (procs - 1) * (users / procs)))
    ip netns exec "$NS" taskset -c "$LOAD_CPU" wrk -t1 -c"$share" -d"$((deadline - EPOCHSECONDS))s" --timeout 10s --latency \
      -s bench/seed_paged.lua "http://127.0.0.1:$PORT" -- "$i" >"$TMP/wrk-$i.txt" 2>&1 &
    LOADERS+=($!)
    sleep "$(awk -v n="$share" -v r="$RATE" 'BEGIN {print n / r}')"
  done
  # The hold: from 3 s after the last process started to 3 s before the end.
  sleep 3
  server_a=$(cpu_busy "$SERVER_CPU"); load_a=$(cpu_busy "$LOAD_CPU"); served_a=$(served); at_a=$EPOCHREALTIME
  peak=0
  while [ "$EPOCHSECONDS" -lt $((deadline - 3)) ]; do
    r=$(tree_rss_kb "$SERVER_PID"); [ "$r" -gt "$peak" ] && peak=$r
    sleep 1
  done
  if [ -n "${DEBUG:-}" ]; then
    for w in $(cat "/proc/$SERVER_PID/task/$SERVER_PID/children"); do echo "worker $w: $(wc -l <"/proc/$w/maps") maps, $(ls "/proc/$w/fd" | wc -l) fds" >&2; done
    in_ns ss -s >&2
    echo "listeners (Recv-Q: connections waiting to be accepted):" >&2; in_ns ss -lnt >&2
    echo "connections still in SYN-SENT: $(in_ns ss -tn state syn-sent | tail -n +2 | wc -l)" >&2
    in_ns curl -s --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^orders_http_connections' >&2 || true
  fi
  server_b=$(cpu_busy "$SERVER_CPU"); load_b=$(cpu_busy "$LOAD_CPU"); served_b=$(served); at_b=$EPOCHREALTIME
  for p in "${LOADERS[@]}"; do wait "$p" || true; done
  requests=0 failures=0 p99=0
  for i in $(seq "$procs"); do
    read -r n e p < <(wrk_field "$TMP/wrk-$i.txt")
    [ "$n" = 0 ] && { echo "wrk $i: no request answered: $(grep -E 'requests in|errors' "$TMP/wrk-$i.txt" | tr -s ' ' | tr '\n' ' ')" >&2; [ -n "${DEBUG:-}" ] && cat "$TMP/wrk-$i.txt" >&2; }
    requests=$((requests + n)); failures=$((failures + e))
    p99=$(awk -v a="$p99" -v b="$p" 'BEGIN {print (b > a) ? b : a}')
  done
  [ "$failures" -gt 0 ] && { echo "the server's log, last lines:" >&2; tail -5 "$TMP/server.log" >&2; }
  kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true
  rps=-
  if [ -n "$served_a" ] && [ -n "$served_b" ]; then
    rps=$(awk -v n="$((served_b - served_a))" -v a="$at_a" -v b="$at_b" 'BEGIN {printf "%.0f", (b > a ? n / (b - a) : 0)}')
  fi
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$users" "$workers" "$requests" "$failures" "$rps" "$p99" \
    "$((peak / 1024))" "$(busy_percent "$server_a" "$server_b")" "$(busy_percent "$load_a" "$load_b")"
done
