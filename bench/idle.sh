#!/usr/bin/env bash
# What idle costs, printed beside nginx (1.22 from Debian, `return 200`)
# started by this script:
#  1. memory: one worker; CONNS keep-alive connections (default 10,000) each
#     make one request (GET /healthz; nginx: GET /) and then stay idle. The
#     worker's resident memory (VmRSS) is read before, and again once they
#     have been idle SETTLE seconds (default 3: orders-server parks a
#     connection idle for 1 s); printed per connection.
#  2. CPU: WORKERS workers (default 8) and the master with no connection,
#     over IDLE seconds (default 30): the CPU time (user + system, every
#     thread) of the whole process tree, in clock ticks and as a share of
#     one core.
# The server runs on CPU 0, the clients on CPU 1. Printed for this build
# and, with BASELINE=REV, that revision's build (or BASELINE_BIN=FILE).
#
# Usage: bench/idle.sh   (env: CONNS, SETTLE, WORKERS, IDLE, BASELINE=REV or BASELINE_BIN=FILE)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
CONNS=${CONNS:-10000} SETTLE=${SETTLE:-3} WORKERS=${WORKERS:-8} IDLE=${IDLE:-30}
command -v nginx >/dev/null || { echo "bench/idle.sh needs nginx (apt-get install nginx-light)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
compare_builds
CLK_TCK=$(getconf CLK_TCK)

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
first_child() { awk '{print $1}' "/proc/$1/task/$1/children"; }

# start NAME WORKERS -> starts server NAME (a build, or nginx) on CPU 0;
# sets MASTER and PORT
start() {
  local name=$1 workers=$2 bin
  if [ "$name" = nginx ]; then
    PORT=$(free_port)
    start_nginx "$TMP/nginx" "$PORT" "$workers"
    MASTER=$NGINX_PID
    taskset -a -p -c 0 "$MASTER" >/dev/null
    for c in $(cat "/proc/$MASTER/task/$MASTER/children"); do taskset -a -p -c 0 "$c" >/dev/null; done
  else
    bin=$(build_bin "$name")
    rm -rf "$TMP/data"
    taskset -c 0 "$bin" -w "$workers" -b 127.0.0.1:0 --data-dir "$TMP/data" >"$TMP/server.log" 2>&1 &
    MASTER=$!
    PORT=$(wait_port "$TMP/server.log")
    # Every worker serving: the master logs "listening" once they all are.
  fi
  PIDS+=("$MASTER")
}

build_bin() { local b; for b in "${BUILDS[@]}"; do [ "${b%%:*}" != "$1" ] || echo "${b#*:}"; done; }

stop() { kill -TERM "$MASTER"; wait "$MASTER" 2>/dev/null || true; }

# idle_memory NAME PATH -> sets BEFORE_KB, AFTER_KB and PER_CONN (bytes)
# (run in this shell, never in $(...): its processes must be cleaned up)
idle_memory() {
  start "$1" 1
  local worker before after
  worker=$(first_child "$MASTER")
  sleep 1
  before=$(rss_kb "$worker")
  mkfifo "$TMP/hold"
  taskset -c 1 python3 bench/idle_clients.py "$PORT" "$CONNS" "$2" --again <"$TMP/hold" >"$TMP/clients.out" &
  local clients=$!
  PIDS+=("$clients")
  exec 3>"$TMP/hold"
  for _ in $(seq 600); do grep -q ready "$TMP/clients.out" 2>/dev/null && break; sleep 0.1; done
  grep -q ready "$TMP/clients.out" || { echo "clients did not connect" >&2; exit 1; }
  sleep "$SETTLE"
  after=$(rss_kb "$worker")
  exec 3>&-
  wait "$clients" || { echo "$1: connections were not served again" >&2; exit 1; }
  rm -f "$TMP/hold"
  stop
  BEFORE_KB=$before AFTER_KB=$after PER_CONN=$(( (after - before) * 1024 / CONNS ))
}

# idle_cpu NAME -> sets TICKS, used by the whole tree over IDLE seconds
idle_cpu() {
  start "$1" "$WORKERS"
  sleep 3
  local t0 t1
  t0=$(tree_ticks "$MASTER")
  sleep "$IDLE"
  t1=$(tree_ticks "$MASTER")
  stop
  TICKS=$((t1 - t0))
}

echo "== memory: one worker, $CONNS keep-alive connections idle after one request each"
printf '%-22s %14s %14s %22s\n' server "RSS before" "RSS idle" "bytes per connection"
for b in "${BUILDS[@]}" "nginx:"; do
  name=${b%%:*}
  path=/healthz; [ "$name" = nginx ] && path=/
  idle_memory "$name" "$path"
  printf '%-22s %11d KiB %11d KiB %22d\n' "$name" "$BEFORE_KB" "$AFTER_KB" "$PER_CONN"
done

echo "== CPU: $WORKERS workers and the master, no connection, over $IDLE s"
printf '%-22s %8s %16s\n' server ticks "% of one core"
for b in "${BUILDS[@]}" "nginx:"; do
  name=${b%%:*}
  idle_cpu "$name"
  printf '%-22s %8d %15.3f%%\n' "$name" "$TICKS" "$(awk -v t="$TICKS" -v hz="$CLK_TCK" -v s="$IDLE" 'BEGIN {print 100 * t / hz / s}')"
done
