#!/usr/bin/env bash
# The project's test command: installs what the tests need on a fresh
# Debian machine (when missing), then runs the whole test suite.
#
# Needed besides cargo: wrk (load during reloads and upgrades), nginx (the
# load-balancer test), systemd-analyze (the unit check), ss from iproute2
# (the backlog check). Several tests need root (network namespaces for
# tcp_migrate_req, dropping privileges), as on the dev and CI machines.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v ss >/dev/null || need+=(iproute2)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v systemd-analyze >/dev/null || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "missing: ${need[*]} (install them, or run as root on Debian)" >&2
    exit 1
  fi
fi

# nginx and sysctl live in sbin, which a non-login root shell may lack.
export PATH="$PATH:/usr/sbin:/sbin"
cargo test --locked --all-targets "$@"
