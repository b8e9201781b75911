#!/usr/bin/env bash
# Builds the Debian package: target/debian/orders-server_<version>_amd64.deb
# (dpkg-deb, no other tool). What it installs:
#   /usr/bin/orders-server                         the release binary
#   /lib/systemd/system/orders-server.service      the unit, pointed at /usr/bin
#   /etc/orders-server/orders-server.toml          conffile (kept on upgrade if edited)
#   /etc/orders-server/orders-server.env           made by postinst from the template,
#                                                  root-owned, mode 0600, never overwritten
#   /usr/share/orders-server/                      env template, nginx.conf, Prometheus
#                                                  files, tuning/ (applied only by hand:
#                                                  `orders-server check` says what differs)
#   /usr/share/doc/orders-server/                  README, BENCHMARKS, copyright
# Maintainer scripts: postinst creates the system user `orders-server`,
# enables the unit and starts it (on upgrade, a running server switches to the
# new binary in place with USR2); prerm stops it on
# removal; postrm on purge removes the configuration, the logs and the
# user, and the data in /var/lib/orders-server only when
# ORDERS_SERVER_PURGE_DATA=yes is set (orders are never deleted silently).
#
# Usage: scripts/package.sh [--no-build]   (prints the .deb's path; env:
#        ORDERS_SERVER_BIN, the binary to package, default the release build
#        (under CARGO_TARGET_DIR when set);
#        PACKAGE_DIR, where to build, default target/debian;
#        PACKAGE_VERSION_SUFFIX, appended to the version, e.g. +2: an upgrade)
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)${PACKAGE_VERSION_SUFFIX:-}
ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
[ "${1:-}" = "--no-build" ] || cargo build --locked --release --quiet --bin orders-server
BIN=${ORDERS_SERVER_BIN:-${CARGO_TARGET_DIR:-target}/release/orders-server}
OUT=${PACKAGE_DIR:-target/debian}
ROOT=$OUT/orders-server_${VERSION}_$ARCH
rm -rf "$ROOT"
install -d "$ROOT/DEBIAN" "$ROOT/usr/bin" "$ROOT/lib/systemd/system" "$ROOT/etc/orders-server" \
  "$ROOT/usr/share/orders-server" "$ROOT/usr/share/doc/orders-server"

install -m 0755 "$BIN" "$ROOT/usr/bin/orders-server"
sed 's|/usr/local/bin/orders-server|/usr/bin/orders-server|g' systemd/orders-server.service \
  >"$ROOT/lib/systemd/system/orders-server.service"
chmod 0644 "$ROOT/lib/systemd/system/orders-server.service"
install -m 0644 conf/orders-server.toml "$ROOT/etc/orders-server/orders-server.toml"
install -m 0644 systemd/orders-server.env.example conf/nginx.conf conf/prometheus.yml \
  conf/orders-server.rules.yml "$ROOT/usr/share/orders-server/"
cp -r tuning "$ROOT/usr/share/orders-server/tuning"
install -m 0644 README.md BENCHMARKS.md "$ROOT/usr/share/doc/orders-server/"
cat >"$ROOT/usr/share/doc/orders-server/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: orders-server
Files: *
License: MIT
EOF

INSTALLED_KB=$(du -sk "$ROOT" | cut -f1)
cat >"$ROOT/DEBIAN/control" <<EOF
Package: orders-server
Version: $VERSION
Architecture: $ARCH
Maintainer: orders-server developers <orders-server@localhost>
Installed-Size: $INSTALLED_KB
Depends: libc6, passwd
Section: net
Priority: optional
Description: prefork HTTP API server for the orders API
 The seed's Flask orders API (CRUD on /orders) as a prefork Rust server:
 a master forks workers that serve with coroutines, on an embedded store
 (no database server needed) or MongoDB. Managed with systemctl
 start/stop/reload; configured in /etc/orders-server.
EOF
echo /etc/orders-server/orders-server.toml >"$ROOT/DEBIAN/conffiles"

cat >"$ROOT/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if ! getent passwd orders-server >/dev/null; then
        useradd --system --user-group --no-create-home --home-dir /var/lib/orders-server \
            --shell /usr/sbin/nologin orders-server
    fi
    # Secrets live here: root-owned, 0600, made once and never overwritten.
    if [ ! -e /etc/orders-server/orders-server.env ]; then
        install -m 0600 -o root -g root /usr/share/orders-server/orders-server.env.example \
            /etc/orders-server/orders-server.env
    fi
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
fi
if [ "$1" = configure ] || [ "$1" = abort-upgrade ]; then
    if [ -x /usr/bin/deb-systemd-helper ]; then
        deb-systemd-helper unmask orders-server.service >/dev/null || true
        if deb-systemd-helper --quiet was-enabled orders-server.service; then
            deb-systemd-helper enable orders-server.service >/dev/null || true
        else
            deb-systemd-helper update-state orders-server.service >/dev/null || true
        fi
    fi
    if [ -d /run/systemd/system ]; then
        if [ -n "$2" ] && systemctl is-active --quiet orders-server.service; then
            # An upgrade of a running server: the new binary is in place;
            # the master switches to it in place (USR2: same main pid, a
            # new generation of workers, no request refused). It ignores
            # USR2 while workers start or retire: ask again every 2 s for
            # up to 30 s. Changes to the unit file itself take effect at the
            # next restart. A server that does not switch (e.g. one older
            # than in-place upgrades) is restarted, Debian's default.
            pid=$(systemctl show -p MainPID --value orders-server.service)
            switched=no
            for _ in $(seq 15); do
                systemctl kill --kill-who=main -s USR2 orders-server.service || true
                for _ in $(seq 8); do
                    if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = /usr/bin/orders-server ]; then
                        switched=yes
                        break 2
                    fi
                    sleep 0.25
                done
            done
            if [ "$switched" = yes ] && systemctl is-active --quiet orders-server.service; then
                :
            else
                echo "orders-server: the running server did not switch to the new binary in place; restarting it" >&2
                deb-systemd-invoke restart orders-server.service >/dev/null || true
            fi
        else
            deb-systemd-invoke start orders-server.service >/dev/null || true
        fi
    fi
fi
exit 0
EOF

cat >"$ROOT/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    deb-systemd-invoke stop orders-server.service >/dev/null || true
fi
exit 0
EOF

cat >"$ROOT/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
fi
if [ "$1" = remove ] && [ -x /usr/bin/deb-systemd-helper ]; then
    deb-systemd-helper mask orders-server.service >/dev/null || true
fi
if [ "$1" = purge ]; then
    if [ -x /usr/bin/deb-systemd-helper ]; then
        deb-systemd-helper purge orders-server.service >/dev/null || true
        deb-systemd-helper unmask orders-server.service >/dev/null || true
    fi
    rm -f /etc/orders-server/orders-server.env
    rm -rf /var/log/orders-server
    # The orders themselves go only when asked.
    if [ "${ORDERS_SERVER_PURGE_DATA:-}" = yes ]; then
        rm -rf /var/lib/orders-server
    fi
    if getent passwd orders-server >/dev/null && [ ! -d /var/lib/orders-server ]; then
        userdel orders-server >/dev/null 2>&1 || true
    fi
fi
exit 0
EOF
chmod 0755 "$ROOT/DEBIAN/postinst" "$ROOT/DEBIAN/prerm" "$ROOT/DEBIAN/postrm"

dpkg-deb --root-owner-group --build "$ROOT" "$OUT/" >/dev/null
echo "$OUT/orders-server_${VERSION}_$ARCH.deb"
