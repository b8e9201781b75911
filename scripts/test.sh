#!/usr/bin/env bash
# The project's test command: installs what the tests need on a fresh
# Debian machine (when missing), then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v ss >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "missing: ${need[*]} (install them, or run as root on Debian)" >&2
    exit 1
  fi
fi

cargo test --locked --all-targets "$@"
