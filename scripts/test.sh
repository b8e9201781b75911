#!/usr/bin/env bash
# The project's test command: installs what the tests need on a fresh
# Debian machine (when missing), then runs the whole test suite of the
# workspace (the server and orders-loadtest).
#
# Needed besides cargo: wrk (load during reloads and upgrades), nginx (the
# load-balancer test; its stream module and HAProxy for the PROXY protocol), systemd-analyze (the unit check), iproute2 (ss, ip),
# and Locust (the CI smoke run of the seed's locustfile) in a venv at
# loadtest/.venv (Debian refuses system-wide pip installs). Several tests
# need root (private network namespaces for the reload tests, dropping
# privileges), as on the dev and CI machines.
set -euo pipefail
cd "$(dirname "$0")/.."

# Locust's version, pinned so runs stay comparable.
LOCUST_VERSION=2.47.0
# Schemathesis's version, pinned.
SCHEMATHESIS_VERSION=4.32.5
# REDbot's and httplint's versions, pinned (tests/checkers.rs: HTTP checkers
# no one here wrote, run on the live server).
REDBOT_VERSION=2.7.1
HTTPLINT_VERSION=2026.10.4
# SecantusDB's version, pinned: a MongoDB wire-protocol server on WiredTiger
# (GPL-2.0, beta), run as a separate process by the MongoDB tests, never
# linked. Its venv also has pymongo (the seed's driver, for the interop tests).
SECANTUS_VERSION=0.7.0b3

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
# sysctl (scripts/topology.sh).
command -v sysctl >/dev/null || [ -x /usr/sbin/sysctl ] || [ -x /sbin/sysctl ] || need+=(procps)
command -v ss >/dev/null && command -v ip >/dev/null || need+=(iproute2)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
# The PROXY protocol tests (tests/proxy.rs): HAProxy, and nginx's stream module.
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
# The TLS tests (tests/tls.rs): openssl (certificates, s_client) and sslscan.
command -v openssl >/dev/null || need+=(openssl)
command -v sslscan >/dev/null || need+=(sslscan)
command -v systemd-analyze >/dev/null || need+=(systemd)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "missing: ${need[*]} (install them, or run as root on Debian)" >&2
    exit 1
  fi
fi

# promtool and a Prometheus server (tests/observability.rs), without the
# packages Debian recommends beside it (exporters that would start services).
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
  else
    echo "missing: prometheus (promtool) (install it, or run as root on Debian)" >&2
    exit 1
  fi
fi

if ! loadtest/.venv/bin/locust --version 2>/dev/null | grep -q "$LOCUST_VERSION"; then
  python3 -m venv loadtest/.venv
  loadtest/.venv/bin/pip install -q "locust==$LOCUST_VERSION"
fi
# Schemathesis (tests/fuzz.rs: docs/openapi.yaml fuzzed against the server),
# in a venv of its own.
if ! .venv-contract/bin/st --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv .venv-contract
  .venv-contract/bin/pip install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

# REDbot and httplint (tests/checkers.rs), in a venv of their own.
if ! .venv-lint/bin/pip show redbot 2>/dev/null | grep -q "^Version: $REDBOT_VERSION\$" ||
   ! .venv-lint/bin/pip show httplint 2>/dev/null | grep -q "^Version: $HTTPLINT_VERSION\$"; then
  python3 -m venv .venv-lint
  .venv-lint/bin/pip install -q "redbot==$REDBOT_VERSION" "httplint==$HTTPLINT_VERSION"
fi

# SecantusDB (harness/src/secantus.rs starts .venv-db/bin/secantusd-py).
if ! .venv-db/bin/pip show SecantusDB 2>/dev/null | grep -q "^Version: $SECANTUS_VERSION\$"; then
  python3 -m venv .venv-db
  .venv-db/bin/pip install -q "SecantusDB==$SECANTUS_VERSION"
fi

# nginx and sysctl live in sbin, which a non-login root shell may lack.
export PATH="$PATH:/usr/sbin:/sbin"
# The test-only fault routes (src/faults.rs) are compiled in for the tests
# and never into a release build.
FEATURES=orders-server/test-hooks
# Style first (seconds): formatted as rustfmt formats, and no clippy warning
# in any target of the workspace, with the test hooks compiled in or not.
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo clippy --locked --workspace --all-targets --features "$FEATURES" -- -D warnings
# The loadtest crate's tests start the server binary: build it first.
cargo build --locked --features "$FEATURES" --bin orders-server
cargo test --locked --workspace --all-targets --features "$FEATURES" "$@"

# A release build carries none of the test hooks.
cargo build --locked --release --bin orders-server
# The coroutine-driven runtimes, optimized as they ship: an optimizer that
# keeps a thread-local's address across a coroutine's move between
# threads broke the MongoDB runtime in release builds only.
cargo test --locked --release --lib runtime
RELEASE_BIN=${CARGO_TARGET_DIR:-target}/release/orders-server
[ -x "$RELEASE_BIN" ] || { echo "$RELEASE_BIN was not built" >&2; exit 1; }
if grep -q -a '/__test/' "$RELEASE_BIN"; then
  echo "$RELEASE_BIN contains the test hooks" >&2
  exit 1
fi
echo "release build: no test hooks"

# The package under a real systemd (issue 13): about 3 minutes, plus a
# minute the first time to debootstrap the cached Debian tree.
# ORDERS_SYSTEMD_CHECK=0 skips it (e.g. while iterating on one test).
if [ "${ORDERS_SYSTEMD_CHECK:-1}" != 0 ]; then
  scripts/systemd-check.sh
fi
