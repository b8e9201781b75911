#!/usr/bin/env bash
# What TLS costs: orders-server terminating TLS itself, against the same
# build in clear and against the deployment it replaces (nginx terminating
# TLS in front of orders-server in clear).
#
# Builds release, makes a P-256 certificate with openssl, and starts on
# CPU 0, sharing one data dir with one order: orders-server -w 1 in clear,
# orders-server -w 1 with certfile/keyfile, and nginx (one worker, TLS 1.2
# and 1.3, the same certificate, upstream keep-alive to the clear server as
# conf/nginx.conf does). wrk (-t1 -c$CONNS, on CPU 1) asks for the order:
#   keep-alive: GET /orders/<id> over each of the three;
#   handshakes: the same with `Connection: close` (a new TLS connection per
#     request) against orders-server TLS and nginx TLS.
# RUNS rounds, the cases alternating; prints the medians of req/s and of
# CPU time per request: utime+stime of each server's whole process tree
# from /proc before and after each run (for nginx in front, nginx's and
# the clear orders-server's together), divided by the requests wrk
# completed. Then the ratios the issue's targets are about: orders-server
# TLS against nginx-TLS + orders-server, and against its own clear text.
#
# Usage: bench/tls.sh   (env: DURATION=10s RUNS=3 CONNS=100
#        ORDERS_SERVER_BIN=FILE: that build instead of this tree's)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
CONNS=${CONNS:-100}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "nginx is missing" >&2; exit 1; }

cargo build --release --quiet --bin orders-server
BIN=${ORDERS_SERVER_BIN:-target/release/orders-server}
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
chmod 600 "$TMP/key.pem"

taskset -c "$SERVER_CPU" "$BIN" -w 1 -b 127.0.0.1:0 --data-dir "$TMP/data" >"$TMP/clear.log" 2>&1 &
PIDS+=($!); CLEAR_PID=$!
CLEAR_PORT=$(wait_port "$TMP/clear.log")
taskset -c "$SERVER_CPU" "$BIN" -w 1 -b 127.0.0.1:0 --data-dir "$TMP/data" \
  --certfile "$TMP/cert.pem" --keyfile "$TMP/key.pem" >"$TMP/tls.log" 2>&1 &
PIDS+=($!); TLS_PID=$!
TLS_PORT=$(wait_port "$TMP/tls.log")

NGINX_PORT=$(free_port)
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $TMP/nginx/nginx.pid; error_log $TMP/nginx/error.log warn; user root;
events { worker_connections 4096; }
http {
  access_log off; keepalive_timeout 75s; keepalive_requests 1000000;
  client_body_temp_path $TMP/nginx/body; proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi; uwsgi_temp_path $TMP/nginx/uwsgi; scgi_temp_path $TMP/nginx/scgi;
  upstream app { server 127.0.0.1:$CLEAR_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT ssl;
    ssl_certificate $TMP/cert.pem; ssl_certificate_key $TMP/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
taskset -c "$SERVER_CPU" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" 2>"$TMP/nginx/stderr.log" &
PIDS+=($!); NGINX_PID=$!
for _ in $(seq 100); do curl -skf "https://127.0.0.1:$NGINX_PORT/healthz" >/dev/null && break; sleep 0.1; done

BODY='{"product":"ProductY","quantity":2,"customer_name":"Bob Anderson","customer_address":"101 Pine St"}'
curl -sf -o /dev/null -XPOST "http://127.0.0.1:$CLEAR_PORT/orders" -d "$BODY"
ID=$(curl -sf "http://127.0.0.1:$CLEAR_PORT/orders?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["orders"][0]["_id"])')
for url in "https://127.0.0.1:$TLS_PORT" "https://127.0.0.1:$NGINX_PORT"; do
  curl -skf "$url/orders/$ID" >/dev/null || { echo "$url does not serve the order" >&2; exit 1; }
done


CLOSE="Connection: close"
CASES=(
  "clear|$CLEAR_PID|http://127.0.0.1:$CLEAR_PORT/orders/$ID|"
  "tls|$TLS_PID|https://127.0.0.1:$TLS_PORT/orders/$ID|"
  "nginx|$NGINX_PID,$CLEAR_PID|https://127.0.0.1:$NGINX_PORT/orders/$ID|"
  "tls_new|$TLS_PID|https://127.0.0.1:$TLS_PORT/orders/$ID|$CLOSE"
  "nginx_new|$NGINX_PID,$CLEAR_PID|https://127.0.0.1:$NGINX_PORT/orders/$ID|$CLOSE"
)
declare -A RPS_L CPU_L ERRS RPS CPU
for _ in $(seq "$RUNS"); do
  for c in "${CASES[@]}"; do
    IFS='|' read -r name pids url header <<<"$c"
    read -r rps _ e cpu < <(wrk_cpu "$pids" -t1 -c"$CONNS" -d"$DURATION" ${header:+-H "$header"} "$url")
    RPS_L[$name]+="$rps"$'\n'; CPU_L[$name]+="$cpu"$'\n'
    ERRS[$name]=$(( ${ERRS[$name]:-0} + e ))
  done
done
for c in "${CASES[@]}"; do
  IFS='|' read -r name _ <<<"$c"
  RPS[$name]=$(printf '%s' "${RPS_L[$name]}" | median)
  CPU[$name]=$(printf '%s' "${CPU_L[$name]}" | median)
done

echo
echo "TLS bench: wrk -t1 -c$CONNS -d$DURATION, median of $RUNS, servers on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU ($(nproc) CPUs), P-256 certificate"
printf '%-58s %10s %12s %8s\n' "case: GET /orders/<id>" "req/s" "CPU us/req" "errors"
row() { printf '%-58s %10.0f %12s %8s\n' "$1" "${RPS[$2]}" "${CPU[$2]}" "${ERRS[$2]}"; }
row "orders-server, clear, keep-alive" clear
row "orders-server TLS, keep-alive" tls
row "nginx TLS -> orders-server clear, keep-alive (both counted)" nginx
row "orders-server TLS, a new connection per request" tls_new
row "nginx TLS -> orders-server, a new connection per request" nginx_new
echo "keep-alive: orders-server TLS costs $(ratio "${CPU[tls]}" "${CPU[nginx]}") of nginx TLS + orders-server's CPU per request, $(ratio "${CPU[tls]}" "${CPU[clear]}") of its own clear text"
echo "handshakes: a new TLS connection per request costs orders-server $(ratio "${CPU[tls_new]}" "${CPU[nginx_new]}") of nginx + orders-server's CPU"
