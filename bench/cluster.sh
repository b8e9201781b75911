#!/usr/bin/env bash
# The seed's two architectures with MongoDB, across hosts, on one machine.
#
# scripts/topology.sh makes one network namespace per host on one bridge:
# `db` (SecantusDB, a MongoDB wire-protocol server on WiredTiger), `app1`
# and `app2` (orders-server -w WORKERS, MongoDB backend), `lb` (nginx with
# conf/nginx.conf, its per-address limits raised: every simulated user
# shares the client's one address) and `client` (orders-loadtest). For
# each spawn rate, with a fresh database, it runs the seed's protocol
# (users = rate x 60, Locust's -t DURATION, ramp included, stopping at the
# first failure) with the seed-paged scenario (GET /orders?limit=100 + POST
# /orders, 1-3 s think time):
#   architecture 1: client -> lb -> app1 + app2 -> db
#   architecture 2: client -> app1 -> db   (one app host, no load balancer)
# and prints the seed-shaped tables. Everything shares this machine's CPUs
# (no pinning: five hosts on two cores), so compare the two architectures
# with each other, not with single-host numbers. Everything is torn down at
# the end, on Ctrl-C and on failure. The last line is `failures: N`, the
# total over all runs.
#
# The database: secantusd-rs (SecantusDB's Rust build) when it is at
# SECANTUSD_RS (default ~/.cache/secantus-mdb/bin/secantusd-rs; build it
# once, ~7 minutes, needs cmake: `cargo install secantus-mdb --version
# 0.5.3-beta.193 --locked --ignore-rust-version --root ~/.cache/secantus-mdb`),
# else secantusd-py from PyPI (installed here into .venv-db). secantusd-py
# is one Python process that needs ~20 ms for a 100-order page: with it the
# database, not the app tier, sets every number.
#
# Usage: bench/cluster.sh     (env: DURATION=60s RATES="25 50 100" WORKERS=2
#                              SECANTUSD_RS=path SECANTUSD_PY=path)
# With neither database binary it stops at once, saying so.
# Needs root (network namespaces), nginx, python3-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
export PATH="$PATH:/usr/sbin:/sbin"
DURATION=${DURATION:-60s}
RATES=${RATES:-"25 50 100"}
WORKERS=${WORKERS:-2}
SECANTUS_VERSION=0.7.0b3
APP_PORT=8000
DB_PORT=27017
P=ocl$$

cargo build --release --quiet --bin orders-server
cargo build --release --quiet -p orders-loadtest
SECANTUSD_RS=${SECANTUSD_RS:-$HOME/.cache/secantus-mdb/bin/secantusd-rs}
SECANTUSD_PY=${SECANTUSD_PY:-$PWD/.venv-db/bin/secantusd-py}
if [ -x "$SECANTUSD_RS" ]; then
  DB_KIND="SecantusDB $(basename "$SECANTUSD_RS") (Rust build 0.5.3-beta.193, WiredTiger)"
  DB_BIN=$SECANTUSD_RS
else
  if [ "$SECANTUSD_PY" = "$PWD/.venv-db/bin/secantusd-py" ] &&
     ! .venv-db/bin/pip show SecantusDB 2>/dev/null | grep -q "^Version: $SECANTUS_VERSION\$"; then
    { python3 -m venv .venv-db && .venv-db/bin/pip install -q "SecantusDB==$SECANTUS_VERSION"; } ||
      echo "cannot install SecantusDB $SECANTUS_VERSION into .venv-db" >&2
  fi
  DB_KIND="SecantusDB $SECANTUS_VERSION secantusd-py (Python, WiredTiger): the database bounds these numbers"
  echo "note: $SECANTUSD_RS not built; using secantusd-py (see the header)" >&2
  DB_BIN=$SECANTUSD_PY
fi
# Without a database every user would fail: say so and stop instead.
if [ ! -x "$DB_BIN" ]; then
  echo "no database could be started: neither $SECANTUSD_RS nor $SECANTUSD_PY is an executable (see the header)" >&2
  exit 1
fi
SERVER=$PWD/target/release/orders-server
LOADTEST=$PWD/target/release/orders-loadtest
TMP=$(mktemp -d)
cleanup() { scripts/topology.sh down "$P" >/dev/null 2>&1 || true; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

# 6,000 users are 6,000 sockets in the load generator and 12,000 in nginx.
ulimit -n "$(ulimit -Hn)"

scripts/topology.sh up "$P" >&2
DB=$(scripts/topology.sh addr db)
APP1=$(scripts/topology.sh addr app1)
APP2=$(scripts/topology.sh addr app2)
LB=$(scripts/topology.sh addr lb)

in_ns() { local host=$1; shift; ip netns exec "$P-$host" "$@"; }
# spawn HOST OUT CMD...: CMD in the background on HOST, output to OUT; sets
# SPAWNED to its pid (`ip netns exec` execs CMD, so the pid is CMD's).
spawn() {
  local host=$1 out=$2; shift 2
  ip netns exec "$P-$host" "$@" >"$out" 2>&1 &
  SPAWNED=$!
}

# wait_reachable HOST ADDR PORT: until ADDR:PORT accepts a connection from HOST.
wait_reachable() {
  for _ in $(seq 200); do
    in_ns "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && return
    sleep 0.1
  done
  echo "nothing listens on $2:$3" >&2; exit 1
}

start_db() { # a fresh database
  rm -rf "$TMP/db"
  spawn db "$TMP/db.log" "$DB_BIN" --host "$DB" --port $DB_PORT --storage-path "$TMP/db"
  DB_PID=$SPAWNED
  for _ in $(seq 200); do
    in_ns client bash -c "exec 3<>/dev/tcp/$DB/$DB_PORT" 2>/dev/null && return
    kill -0 "$DB_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "no database could be started ($DB_BIN); its output:" >&2
  tail -n 20 "$TMP/db.log" >&2
  exit 1
}

start_app() { # HOST ADDR
  spawn "$1" "$TMP/$1.log" "$SERVER" -w "$WORKERS" -b "$2:$APP_PORT" --data-dir "$TMP/$1" \
    --mongo-uri "mongodb://$DB:$DB_PORT/orders_db"
  eval "PID_$1=$SPAWNED"
  wait_reachable client "$2" $APP_PORT
}

start_lb() { # conf/nginx.conf between its markers, pointed at app1 and app2
  local part
  part=$(sed -n '/# --- orders-server begin ---/,/# --- orders-server end ---/p' conf/nginx.conf |
    sed -e "s/10.0.0.11:8000/$APP1:$APP_PORT/; s/10.0.0.12:8000/$APP2:$APP_PORT/" \
        -e "s/listen 80 backlog=16384 reuseport;/listen $LB:80 backlog=16384;/" \
        -e "s/rate=100r\/s/rate=1000000r\/s/; s/limit_conn orders_conns 1000;/limit_conn orders_conns 60000;/")
  mkdir -p "$TMP/nginx"
  cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off; worker_processes 1; worker_rlimit_nofile 65535; pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn; user root;
events { worker_connections 32768; }
http {
  access_log off; default_type application/json;
  client_body_temp_path $TMP/nginx/body; proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi; uwsgi_temp_path $TMP/nginx/uwsgi; scgi_temp_path $TMP/nginx/scgi;
  $part
}
EOF
  spawn lb "$TMP/nginx/stderr.log" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf"
  LB_PID=$SPAWNED
  wait_reachable client "$LB" 80
}

stop_all() { # TERM everything of this run; nginx's master stops its workers
  local pid
  for pid in ${LB_PID:-} ${PID_app1:-} ${PID_app2:-} ${DB_PID:-}; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  LB_PID= PID_app1= PID_app2= DB_PID=
}


FAILURES=0
declare -A ROWS
for arch in 1 2; do
  for rate in $RATES; do
    users=$((rate * 60))
    echo "== architecture $arch: spawn rate $rate, $users users, $DURATION" >&2
    start_db
    start_app app1 "$APP1"
    if [ $arch = 1 ]; then start_app app2 "$APP2"; start_lb; target="http://$LB:80"; else target="http://$APP1:$APP_PORT"; fi
    j="$TMP/a$arch-$rate.json"
    in_ns client "$LOADTEST" -H "$target" -s seed-paged -u "$users" -r "$rate" -t "$DURATION" \
      --stop-on-failure --json "$j" >"$TMP/a$arch-$rate.txt" 2>&1 || true
    stop_all
    cat "$TMP/a$arch-$rate.txt" >&2
    if [ ! -s "$j" ]; then
      ROWS[$arch-$rate]="| $rate | (no result) | | |"; FAILURES=$((FAILURES + 1)); continue
    fi
    failures=$(field "$j" failures); FAILURES=$((FAILURES + ${failures:-0}))
    reached=$(field "$j" users_reached); first=$(field "$j" users_at_first_failure)
    ok_users=$reached; note=""
    if [ -n "$first" ]; then ok_users=$((first - 1)); note=" (failures from $first users on)"; fi
    rps=$(field "$j" requests_per_second)
    ROWS[$arch-$rate]="| $rate | ${ok_users:-?}$note | $(printf '%.0f' "${rps:-0}") | $(field "$j" p99_ms) |"
  done
done

echo
echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem/ {print $2}') GiB, shared by all five hosts; $(date -u +%F)"
echo "Database: $DB_KIND; app hosts: orders-server -w $WORKERS; scenario seed-paged, $DURATION per run"
for arch in 1 2; do
  echo
  if [ $arch = 1 ]; then echo "### Architecture 1: 2 app hosts + nginx + database"; else echo "### Architecture 2: 1 app host + database, no load balancer"; fi
  echo
  echo "| spawn rate | users at 0% failures | req/s | p99 ms |"
  echo "|---:|---:|---:|---:|"
  for rate in $RATES; do echo "${ROWS[$arch-$rate]}"; done
done
echo
echo "failures: $FAILURES"
