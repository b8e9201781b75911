#!/usr/bin/env bash
# What net.core.somaxconn and net.ipv4.tcp_max_syn_backlog change for a
# burst of new connections, shown rather than cited.
#
# In a private network namespace (the host's settings are not touched), for
# the kernel's defaults (somaxconn 4096, tcp_max_syn_backlog 2048) and the
# recommended values (65535 both): start orders-server -w 1 with
# --backlog 65535, stop its worker (SIGSTOP: a worker busy for a moment),
# open BURST connections at once, and read the kernel's counters
# (TcpExtListenOverflows, TcpExtListenDrops: handshakes dropped because the
# accept queue was full); then let the worker go and count the connections
# it accepted. Prints one line per setting pair.
#
# Usage: bench/backlog.sh   (env: BURST=20000)   Needs root, iproute2, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
BURST=${BURST:-20000}
# Client processes the burst is spread over (each within its open-file limit).
PROCS=${PROCS:-4}
# One client: opens N connections at once, waits 2 s, prints how many
# completed their handshake.
CLIENT=$(cat <<'EOF'
import resource, socket, sys, time
n = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = []
for _ in range(n):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", 8000))
    socks.append(s)
time.sleep(2)
# Established from the client's side: the handshake completed.
def established(s):
    try:
        s.getpeername()
        return True
    except OSError:
        return False
print(sum(1 for s in socks if established(s)))
EOF
)
cargo build --release --quiet --bin orders-server
BIN=$PWD/target/release/orders-server
NS=orders-backlog-$$
TMP=$(mktemp -d)
cleanup() { ip netns pids "$NS" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; ip netns del "$NS" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

counter() { # NAME -> value in the namespace
  ip netns exec "$NS" cat /proc/net/netstat | awk -v n="$1" '
    /^TcpExt:/ { if (!h) { split($0, names); h = 1 } else { split($0, vals); for (i in names) if (names[i] == n) print vals[i] } }'
}

run() { # SOMAXCONN SYN_BACKLOG
  ip netns del "$NS" 2>/dev/null || true
  ip netns add "$NS"
  ip -n "$NS" link set lo up
  ip netns exec "$NS" sysctl -q -w net.core.somaxconn="$1" net.ipv4.tcp_max_syn_backlog="$2"
  rm -rf "$TMP/data"
  ip netns exec "$NS" "$BIN" -w 1 -b 127.0.0.1:8000 --backlog 65535 --data-dir "$TMP/data" >"$TMP/server.log" 2>&1 &
  local master=$!
  for _ in $(seq 100); do grep -q "listening on" "$TMP/server.log" && break; sleep 0.1; done
  local worker
  worker=$(cat "/proc/$master/task/$master/children")
  kill -STOP "$worker"
  local o0 d0
  o0=$(counter ListenOverflows); d0=$(counter ListenDrops)
  # Several processes, started together: each stays within its open-file limit.
  local i
  for i in $(seq "$PROCS"); do
    ip netns exec "$NS" python3 -c "$CLIENT" "$((BURST / PROCS))" >"$TMP/part.$i" &
  done
  wait $(jobs -p | grep -v "^$master\$") 2>/dev/null || true
  cat "$TMP"/part.* | awk '{s += $1} END {print s}' >"$TMP/burst.txt"
  rm -f "$TMP"/part.*
  local o1 d1
  o1=$(counter ListenOverflows); d1=$(counter ListenDrops)
  kill -CONT "$worker"
  kill -TERM "$master"; wait "$master" 2>/dev/null || true
  printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$2" "$BURST" "$(cat "$TMP/burst.txt")" "$((o1 - o0))" "$((d1 - d0))"
}

echo "| somaxconn | tcp_max_syn_backlog | connects | handshakes completed within 2 s | ListenOverflows | ListenDrops |"
echo "|---:|---:|---:|---:|---:|---:|"
run 4096 2048
run 65535 65535
