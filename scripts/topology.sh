#!/usr/bin/env bash
# The seed's architecture 1 on one machine: one network namespace per host,
# joined through a bridge, as if on one LAN. Used by bench/cluster.sh and by
# tests/cluster.rs.
#
#   scripts/topology.sh up PREFIX     creates PREFIX-db, PREFIX-app1,
#                                     PREFIX-app2, PREFIX-lb, PREFIX-client
#                                     (and PREFIX-sw, holding the bridge)
#   scripts/topology.sh down PREFIX   removes them (and every process still
#                                     running in them)
#   scripts/topology.sh addr HOST     prints HOST's address (db, app1, ...)
#
# Addresses: 10.77.0.0/24 inside every topology (namespaces isolate them, so
# several topologies can exist at once): db .10, app1 .11, app2 .12, lb .20,
# client .30. Each host's link delays what it sends by DELAY (default
# 0.25ms) with tc netem where the kernel has it (sch_netem); where it does
# not, the script says so and a hop costs only what the kernel's veth and
# bridge cost. Needs root.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

SUBNET=10.77.0
HOSTS="db:10 app1:11 app2:12 lb:20 client:30"
DELAY=${DELAY:-0.25ms}

usage() { echo "usage: $0 up|down PREFIX | addr HOST" >&2; exit 2; }

addr() { # HOST -> address
  local h
  for h in $HOSTS; do
    [ "${h%%:*}" = "$1" ] && { echo "$SUBNET.${h##*:}"; return; }
  done
  echo "unknown host: $1" >&2; exit 2
}

up() {
  local p=$1 sw=$1-sw h name ns netem=1
  ip netns add "$sw"
  ip -n "$sw" link set lo up
  ip -n "$sw" link add br0 type bridge
  ip -n "$sw" link set br0 up
  for h in $HOSTS; do
    name=${h%%:*}; ns=$p-$name
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$sw" link add "v-$name" type veth peer name eth0 netns "$ns"
    ip -n "$sw" link set "v-$name" master br0 up
    ip -n "$ns" addr add "$SUBNET.${h##*:}/24" dev eth0
    ip -n "$ns" link set eth0 up
    # Room for load tests: every host here is a server or a load generator.
    ip netns exec "$ns" sysctl -q -w net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 \
      net.ipv4.ip_local_port_range="10000 65000" net.ipv4.tcp_tw_reuse=1
    if [ $netem = 1 ] && ! ip netns exec "$ns" tc qdisc add dev eth0 root netem delay "$DELAY" 2>/dev/null; then
      netem=0
    fi
  done
  if [ $netem = 1 ]; then
    echo "topology $p: up, each hop delayed by $DELAY (netem)"
  else
    echo "topology $p: up, no hop delay (this kernel has no sch_netem)"
  fi
}

down() {
  local p=$1 h ns pids
  for h in $HOSTS sw:0; do
    ns=$p-${h%%:*}
    [ -e "/run/netns/$ns" ] || continue
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
}

[ $# -ge 2 ] || usage
case $1 in
  up) down "$2"; up "$2" ;;
  down) down "$2" ;;
  addr) addr "$2" ;;
  *) usage ;;
esac
