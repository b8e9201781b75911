#!/usr/bin/env bash
# Capacity and cost: which machine size to buy for how many users.
#
# Emulates the seed's machine sizes on this machine with cgroup v1 limits
# (this machine's cgroup2 mount has no controllers): the server's CPU time
# is capped with cpu.cfs_quota_us (1 vCPU = one core's time per period) and
# its memory with memory.limit_in_bytes; the server may run on the CPUs of
# the size (taskset: CPU 0 for 1 vCPU, CPUs 0-1 for 2). The load generator
# (orders-loadtest, seed-paged: GET /orders?limit=100 + POST, 1-3 s think)
# runs on CPU 1 -- so for 2-vCPU sizes it shares a core with the server,
# and those rows are lower bounds. Each size gets the seed's protocol at its
# hardest spawn rate (RATE users/s for 60 s, users = RATE x 60, stop at the
# first failure), then the answer to the seed's question is checked: its
# 3,900 users on the size this prints as the one to buy.
#
# Prices: DigitalOcean basic droplets (regular CPU), US$ per month, as
# listed in issue 16 (DigitalOcean's published list prices; not re-checked
# from this machine, which reaches no web site).
#
# Usage: bench/capacity.sh   (env: SIZES="1:1:6 2:2:18 2:4:24" RATE=100 RUN=60s
#        CHECK_USERS=3900)   SIZES: vCPUs:GB:US$ per month. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SIZES=${SIZES:-"1:1:6 2:2:18 2:4:24"}
RATE=${RATE:-100}
RUN=${RUN:-60s}
CHECK_USERS=${CHECK_USERS:-3900}
LOAD_CPU=${LOAD_CPU:-1}
CG=
RESULTS=${RESULTS:-bench/results/capacity}
mkdir -p "$RESULTS"

build_release
TMP=$(mktemp -d)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && { kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; }
  [ -n "$CG" ] && rmdir "/sys/fs/cgroup/cpu/$CG" "/sys/fs/cgroup/memory/$CG" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

# start_server VCPUS GB: a fresh server in a fresh cgroup with the size's
# limits (a new memory cgroup: its peak counts this run alone).
start_server() {
  local vcpus=$1 gb=$2 cpus=0
  [ "$vcpus" -ge 2 ] && cpus=0-1
  rm -rf "$TMP/data"
  [ -n "$CG" ] && rmdir "/sys/fs/cgroup/cpu/$CG" "/sys/fs/cgroup/memory/$CG" 2>/dev/null
  CG=orders-capacity-$$-$vcpus-$gb-$RANDOM
  mkdir "/sys/fs/cgroup/cpu/$CG" "/sys/fs/cgroup/memory/$CG"
  echo 100000 >"/sys/fs/cgroup/cpu/$CG/cpu.cfs_period_us"
  echo $((vcpus * 100000)) >"/sys/fs/cgroup/cpu/$CG/cpu.cfs_quota_us"
  echo $((gb * 1024 * 1024 * 1024)) >"/sys/fs/cgroup/memory/$CG/memory.limit_in_bytes"
  sh -c 'echo $$ >"/sys/fs/cgroup/cpu/$0/cgroup.procs" && echo $$ >"/sys/fs/cgroup/memory/$0/cgroup.procs" && exec "$@"' \
    "$CG" taskset -c "$cpus" "$SERVER" -w "$vcpus" -b 127.0.0.1:0 --data-dir "$TMP/data" >"$TMP/server.log" 2>&1 &
  SERVER_PID=$!
  PORT=$(wait_port "$TMP/server.log")
}
stop_server() { kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; }

# run NAME USERS RATE -> the summary JSON in $RESULTS/NAME.json
run() {
  rm -f "$RESULTS/$1.json"
  taskset -c "$LOAD_CPU" "$LOADTEST" -H "http://127.0.0.1:$PORT" -s seed-paged -u "$2" -r "$3" -t "$RUN" \
    --stop-on-failure --progress-every 0 --json "$RESULTS/$1.json" >"$TMP/$1.txt" 2>&1 || true
  cat "$TMP/$1.txt" >&2
}

echo "| size (emulated) | users at 0% failures | req/s | p99 ms | server memory peak MB (page cache included) | US\$/month | users per US\$ |"
echo "|---|---:|---:|---:|---:|---:|---:|"
best= best_price=
for size in $SIZES; do
  IFS=: read -r vcpus gb price <<<"$size"
  users=$((RATE * 60))
  echo "== $vcpus vCPU / $gb GB: $users users at $RATE/s, $RUN" >&2
  start_server "$vcpus" "$gb"
  run "size-$vcpus-$gb" "$users" "$RATE"
  peak=$(( $(cat "/sys/fs/cgroup/memory/$CG/memory.max_usage_in_bytes") / 1024 / 1024 ))
  stop_server
  j="$RESULTS/size-$vcpus-$gb.json"
  [ -s "$j" ] || { echo "no summary for $vcpus vCPU / $gb GB" >&2; continue; }
  ok=$(field "$j" users_reached); first=$(field "$j" users_at_first_failure); shown="≥ $ok (the protocol's most)"
  [ -n "$first" ] && { ok=$((first - 1)); shown=$ok; }
  printf '| %s vCPU / %s GB | %s | %.0f | %s | %s | %s | %s%.0f |\n' "$vcpus" "$gb" "$shown" "$(field "$j" requests_per_second)" \
    "$(field "$j" p99_ms)" "$peak" "$price" "$([ -n "$first" ] || echo "≥ ")" "$(awk -v u="$ok" -v p="$price" 'BEGIN {print u / p}')"
  if [ "$ok" -ge "$CHECK_USERS" ] && { [ -z "$best" ] || [ "$price" -lt "$best_price" ]; }; then
    best="$vcpus:$gb"; best_price=$price
  fi
done

echo
if [ -z "$best" ]; then
  echo "no size held $CHECK_USERS users"
  exit 1
fi
IFS=: read -r vcpus gb <<<"$best"
echo "for $CHECK_USERS users (the seed's best): the cheapest size that held them, $vcpus vCPU / $gb GB (US\$ $best_price/month); checking:"
start_server "$vcpus" "$gb"
run check "$CHECK_USERS" "$RATE"
stop_server
j="$RESULTS/check.json"
echo "check: $CHECK_USERS users on $vcpus vCPU / $gb GB: users reached $(field "$j" users_reached), failures $(field "$j" failures), req/s $(printf '%.0f' "$(field "$j" requests_per_second)"), p99 $(field "$j" p99_ms) ms"
