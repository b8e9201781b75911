#!/usr/bin/env bash
# orders-server under a real systemd: builds the Debian package, boots a
# minimal Debian bookworm tree with systemd-nspawn (in a network namespace
# of its own, with net.ipv4.tcp_migrate_req = 1 as tuning/ recommends),
# installs the package in it and checks, through systemctl and journalctl
# inside, what operators do: start (Type=notify), status, the journal,
# reload under load, a binary upgrade (USR2) under load then a graceful
# stop, restart under load, and a package upgrade under load. Load comes
# from wrk in the same namespace (GET /orders?limit=1, idempotent). The tree is made
# once with debootstrap (about a minute) and cached in CACHE; each run
# boots a fresh copy. Everything is torn down on success, failure and
# Ctrl-C. The last line is `systemd: ok`, or `systemd: FAILED: <checks>`.
#
# Usage: scripts/systemd-check.sh   (env: CACHE=~/.cache/orders-server/bookworm
#        PORT=18080 LOAD=6)   Needs root, debootstrap, systemd-container, wrk.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
CACHE=${CACHE:-$HOME/.cache/orders-server/bookworm}
PORT=${PORT:-18080}
LOAD=${LOAD:-6}
MACHINE=orders-check-$$
NETNS=orders-check-$$
FAILED=()

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v wrk >/dev/null || need+=(wrk)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" || exit 1
fi

if [ ! -x "$CACHE/bin/systemctl" ]; then
  echo "debootstrap: a minimal bookworm with systemd into $CACHE (once)" >&2
  rm -rf "$CACHE.tmp"
  mkdir -p "$(dirname "$CACHE")"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$CACHE.tmp" \
    http://deb.debian.org/debian >/dev/null || { echo "systemd: FAILED: debootstrap"; exit 1; }
  mv "$CACHE.tmp" "$CACHE"
fi

# Two packages: the build, and the same build as a newer version (upgrade).
cargo build --locked --release --quiet --bin orders-server
PKG=$(mktemp -d)
ROOT=$(mktemp -d /var/tmp/orders-nspawn.XXXXXX)
NSPAWN=
cleanup() {
  if [ -n "$NSPAWN" ] && kill -0 "$NSPAWN" 2>/dev/null; then
    in_c systemctl poweroff >/dev/null 2>&1 || kill "$NSPAWN" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$NSPAWN" 2>/dev/null
  fi
  rm -rf "$ROOT" "$PKG"
  ip netns del "$NETNS" 2>/dev/null
}
trap cleanup EXIT
trap 'echo "systemd: FAILED: interrupted"; exit 130' INT TERM

V1=$(PACKAGE_DIR=$PKG/v1 scripts/package.sh --no-build)
V2=$(PACKAGE_DIR=$PKG/v2 PACKAGE_VERSION_SUFFIX=+check2 scripts/package.sh --no-build)
[ -f "$V1" ] && [ -f "$V2" ] || { echo "systemd: FAILED: cannot build the packages"; exit 1; }
cp -a "$CACHE/." "$ROOT/"
install -d "$ROOT/opt/packages"
cp "$V1" "$V2" "$ROOT/opt/packages/"
# The host's port 80 is not ours: a drop-in, made before the package starts the unit.
install -d "$ROOT/etc/systemd/system/orders-server.service.d"
cat >"$ROOT/etc/systemd/system/orders-server.service.d/check.conf" <<EOF
[Service]
ExecStart=
ExecStart=/usr/bin/orders-server -c /etc/orders-server/orders-server.toml --bind 127.0.0.1:$PORT --data-dir /var/lib/orders-server -w 2
EOF

# A namespace of its own: loopback only, and the migration of queued
# connections between listeners that zero-failure reloads and restarts
# rely on, set without touching the host.
ip netns add "$NETNS" || { echo "systemd: FAILED: ip netns add"; exit 1; }
ip netns exec "$NETNS" ip link set lo up
ip netns exec "$NETNS" sysctl -qw net.ipv4.tcp_migrate_req=1 || { echo "systemd: FAILED: tcp_migrate_req (Linux 5.14+)"; exit 1; }
mkdir -p /run/systemd/nspawn
systemd-nspawn -D "$ROOT" --boot --register=no --keep-unit --console=pipe --machine="$MACHINE" \
  --network-namespace-path="/run/netns/$NETNS" >"$PKG/boot.log" 2>&1 &
NSPAWN=$!
INIT=
for _ in $(seq 100); do
  INIT=$(pgrep -P "$NSPAWN" | head -1)
  [ -n "$INIT" ] && break
  sleep 0.1
done
in_c() { nsenter -t "$INIT" -a "$@"; }
[ -n "$INIT" ] && in_c systemctl is-system-running --wait >/dev/null 2>&1
in_c true || { echo "systemd: FAILED: boot"; cat "$PKG/boot.log"; exit 1; }

check() { # NAME COMMAND...: runs a check, records a failure
  local name=$1; shift
  if "$@"; then echo "ok   $name" >&2; else echo "FAIL $name" >&2; FAILED+=("$name"); fi
}

# under_load NAME COMMAND...: wrk on the host for LOAD seconds while COMMAND
# runs a second in; the check passes when wrk saw no error and no non-2xx.
under_load() {
  local name=$1; shift
  ip netns exec "$NETNS" wrk -t1 -c20 -d"${LOAD}s" "http://127.0.0.1:$PORT/orders?limit=1" >"$PKG/wrk.txt" 2>&1 &
  local w=$!
  sleep 1
  "$@" >"$PKG/step.txt" 2>&1
  local rc=$?
  wait $w
  local errors non2xx
  errors=$(awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10}' "$PKG/wrk.txt")
  non2xx=$(awk '/Non-2xx/ {print $5}' "$PKG/wrk.txt")
  echo "     $name: $(awk '/requests in/ {print $1}' "$PKG/wrk.txt") requests, ${errors:-0} socket errors, ${non2xx:-0} non-2xx, step rc $rc" >&2
  [ "$rc" = 0 ] && [ "${errors:-0}" = 0 ] && [ "${non2xx:-0}" = 0 ]
}

serving() { in_c systemctl is-active --quiet orders-server; }
journal_has() { in_c journalctl -u orders-server --no-pager -q | grep -q "$1"; }
main_pid() { in_c systemctl show -p MainPID --value orders-server; }

# Install: postinst creates the user, enables and starts the unit.
check "install the package" in_c dpkg -i "/opt/packages/$(basename "$V1")"
check "started (Type=notify: active once every worker serves)" serving
check "status shows the status line" sh -c "nsenter -t $INIT -a systemctl status orders-server --no-pager | grep -q 'Status: \"serving on 127.0.0.1:$PORT\"'"
check "journal has the master and worker lines" sh -c "nsenter -t $INIT -a journalctl -u orders-server --no-pager -q | grep -q 'worker 1 gen 1 started' && nsenter -t $INIT -a journalctl -u orders-server --no-pager -q | grep -q 'listening on'"
check "env file root-owned 0600" sh -c "[ \"\$(nsenter -t $INIT -a stat -c '%U %a' /etc/orders-server/orders-server.env)\" = 'root 600' ]"
check "data dir owned by the service user" sh -c "[ \"\$(nsenter -t $INIT -a stat -c '%U' /var/lib/orders-server)\" = orders-server ]"

check "reload under load: 0 failed requests" under_load reload in_c systemctl reload orders-server
check "reload: a new generation serves" journal_has "generation 2 serves"

OLD=$(main_pid)
check "binary upgrade (USR2) under load: 0 failed requests" under_load upgrade in_c sh -c "kill -USR2 $OLD; sleep 3"
check "upgrade: same main pid, running the new binary" sh -c "[ \"\$(nsenter -t $INIT -a systemctl show -p MainPID --value orders-server)\" = $OLD ] && nsenter -t $INIT -a journalctl -u orders-server --no-pager -q | grep -q 'binary upgrade: adopted'"
check "stop after an upgrade: graceful, unit inactive (not failed)" sh -c "nsenter -t $INIT -a systemctl stop orders-server; [ \"\$(nsenter -t $INIT -a systemctl is-active orders-server)\" = inactive ]"
check "stop: nothing SIGKILLed" sh -c "! nsenter -t $INIT -a journalctl -u orders-server --no-pager -q | grep -q 'status=9/KILL'"

check "start again" sh -c "nsenter -t $INIT -a systemctl start orders-server"
check "restart under load: 0 failed requests" under_load restart in_c systemctl restart orders-server
check "restart: the new master took over the listener systemd kept" journal_has "took over the listening socket systemd kept"
check "package upgrade under load: 0 failed requests" under_load upgrade-package in_c sh -c "dpkg -i /opt/packages/$(basename "$V2") && sleep 2"
check "package upgrade: switched in place (same main pid)" sh -c "nsenter -t $INIT -a journalctl -u orders-server --no-pager -q | grep -c 'binary upgrade: adopted' | grep -qx 2"
check "serving after the package upgrade" serving
check "remove stops it" sh -c "nsenter -t $INIT -a dpkg -r orders-server >/dev/null; ! nsenter -t $INIT -a systemctl is-active --quiet orders-server"
check "purge keeps the orders unless asked" sh -c "nsenter -t $INIT -a dpkg -P orders-server >/dev/null; nsenter -t $INIT -a test -e /var/lib/orders-server/data.mdb"

if [ ${#FAILED[@]} = 0 ]; then
  echo "systemd: ok"
else
  echo "systemd: FAILED: $(IFS=';'; echo "${FAILED[*]}")"
  exit 1
fi
