# Helpers shared by the bench scripts (sourced, not run).

# wait_port LOG -> the port of the first "listening on HOST:PORT" in LOG
# (orders-server's, or the ceiling example's); fails after 10 s.
wait_port() {
  local port
  for _ in $(seq 100); do
    port=$(grep -o 'listening on [0-9.:]*' "$1" 2>/dev/null | head -1 | sed 's/.*://') || true
    [ -n "${port:-}" ] && { echo "$port"; return; }
    sleep 0.1
  done
  echo "server did not start:" >&2; cat "$1" >&2; exit 1
}

# tree_ticks PID... -> utime+stime (clock ticks) of each PID and its
# children, all threads.
tree_ticks() {
  local total=0 p t
  for p in "$@"; do
    for t in "$p" $(cat "/proc/$p/task/$p/children" 2>/dev/null); do
      # Fields 14 and 15 of /proc/PID/stat, counted after the command name's ")".
      total=$((total + $(sed 's/.*) //' "/proc/$t/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0) + 0))
    done
  done
  echo "$total"
}

# tree_rss_kb PID -> resident memory (KiB) of PID and its children.
tree_rss_kb() {
  local total=0 t
  for t in "$1" $(cat "/proc/$1/task/$1/children" 2>/dev/null); do
    total=$((total + $(awk '/VmRSS/ {print $2}' "/proc/$t/status" 2>/dev/null || echo 0) + 0))
  done
  echo "$total"
}

# field JSON KEY -> the key's value in an orders-loadtest summary ('' if null).
field() {
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); v=d.get(sys.argv[2]); print('' if v is None else v)" "$1" "$2"
}

# build_release: builds orders-server and orders-loadtest (release), sets
# SERVER and LOADTEST to them, and raises the open-file limit to the hard
# one (tens of thousands of connections).
build_release() {
  cargo build --release --quiet --bin orders-server
  cargo build --release --quiet -p orders-loadtest
  SERVER=target/release/orders-server
  LOADTEST=target/release/orders-loadtest
  ulimit -n "$(ulimit -Hn)"
}

# cpu_busy CPU -> "busy total" jiffies of one CPU so far, from /proc/stat
# (idle and iowait are not busy)
cpu_busy() { awk -v c="cpu$1" '$1 == c {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }

# busy_percent "BUSY0 TOTAL0" "BUSY1 TOTAL1" -> percent of the CPU busy in
# between two cpu_busy readings
busy_percent() { awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " "); d = y[2] - x[2]; printf "%.0f", (d > 0 ? 100 * (y[1] - x[1]) / d : 0)}'; }

# build_baseline REV -> builds revision REV's orders-server (release) from a
# worktree at target/baseline-src into target/baseline; prints the binary.
build_baseline() {
  local src=target/baseline-src
  git worktree remove --force "$src" 2>/dev/null || rm -rf "$src"
  git worktree add --detach --force "$src" "$1" >&2
  cargo build --release --quiet --bin orders-server --manifest-path "$src/Cargo.toml" \
    --target-dir target/baseline >&2
  echo target/baseline/release/orders-server
}

# free_port -> a TCP port free on 127.0.0.1 now
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_nginx DIR PORT WORKERS -> starts nginx (`return 200`, keep-alive
# 75 s, no log) in the foreground of a background job, its files in DIR;
# sets NGINX_PID (its master) once it answers.
start_nginx() {
  mkdir -p "$1"
  cat >"$1/nginx.conf" <<CONF
daemon off; worker_processes $3; worker_rlimit_nofile 65535; pid $1/nginx.pid;
error_log $1/error.log warn; user root;
events { worker_connections 32768; }
http {
  access_log off; keepalive_timeout 75s; keepalive_requests 1000000;
  client_body_temp_path $1/body; proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi; uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi;
  server { listen 127.0.0.1:$2; location / { return 200 "ok\n"; } }
}
CONF
  nginx -p "$1" -c "$1/nginx.conf" 2>"$1/stderr.log" &
  NGINX_PID=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$2/" >/dev/null && return
    sleep 0.1
  done
  echo "nginx did not start:" >&2; cat "$1/stderr.log" "$1/error.log" >&2; exit 1
}

# compare_builds -> builds this tree's orders-server (release) and sets
# BUILDS to "name:binary" entries: this build, and with BASELINE=REV
# (build_baseline) or BASELINE_BIN=FILE, the baseline. Also makes TMP (a
# temporary directory) and PIDS (processes to kill), both cleaned up at exit.
compare_builds() {
  cargo build --release --quiet --bin orders-server
  BUILDS=("this build:target/release/orders-server")
  if [ -n "${BASELINE:-}" ]; then
    BUILDS+=("$BASELINE:$(build_baseline "$BASELINE")")
  elif [ -n "${BASELINE_BIN:-}" ]; then
    BUILDS+=("baseline:$BASELINE_BIN")
  fi
  TMP=$(mktemp -d)
  PIDS=()
  trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"' EXIT
}

# wrk_cpu "PID[,PID...]" WRK_ARGS... -> "req_per_s mb_per_s errors
# cpu_us_per_request": runs wrk with WRK_ARGS on LOAD_CPU; errors are
# socket errors and non-2xx answers; the CPU time is that of the PIDs'
# process trees (tree_ticks) over the run, divided by the requests wrk
# completed.
wrk_cpu() {
  local pids out before after rps mbs errs non2xx reqs cpu
  IFS=, read -ra pids <<<"$1"
  shift
  before=$(tree_ticks "${pids[@]}")
  out=$(taskset -c "$LOAD_CPU" wrk "$@")
  after=$(tree_ticks "${pids[@]}")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  cpu=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$reqs" 'BEGIN {printf "%.2f", (n > 0 ? t / hz * 1e6 / n : 0)}')
  mbs=$(awk '/Transfer\/sec/ {v=$2; if (v ~ /GB/) {sub("GB","",v); v*=1024} else if (v ~ /KB/) {sub("KB","",v); v/=1024} else {sub("MB","",v)}; print v}' <<<"$out")
  errs=$(awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  echo "$rps ${mbs:-0} $(( ${errs:-0} + ${non2xx:-0} )) $cpu"
}

# median -> the median of the numbers on standard input, one per line
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# ratio A B -> A / B, to two decimals
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
