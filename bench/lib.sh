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
