#!/usr/bin/env bash
# What a hostile JSON body costs to parse: one worker (max_body_size 16 MiB)
# is sent two bodies that are valid orders padded with junk, and the peak
# resident memory the worker reached (VmHWM) is read before and after each:
#   keys:    the four fields and 1,000,000 other keys  (~11.9 MB)
#   objects: the four fields and an array of 4,500,000 empty objects (~9 MB)
# Printed for this build and, with BASELINE=REV, for that revision's build
# (built into target/baseline, as bench/http.sh does; or BASELINE_BIN=FILE,
# a binary built already), in the same run.
#
# Usage: bench/body_memory.sh      (env: BASELINE=REV or BASELINE_BIN=FILE)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
compare_builds

python3 - "$TMP" <<'PY'
import sys
fields = '"product":"P","quantity":1,"customer_name":"N","customer_address":"A"'
keys = "".join('"k%d":0,' % i for i in range(1_000_000))
open(sys.argv[1] + "/keys.json", "w").write("{" + keys + fields + "}")
objects = ",".join(["{}"] * 4_500_000)
open(sys.argv[1] + "/objects.json", "w").write('{"x":[' + objects + "]," + fields + "}")
PY

hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

printf '%-24s %-10s %12s %16s %10s\n' build body "body bytes" "peak RSS grew" "x body"
for b in "${BUILDS[@]}"; do
  name=${b%%:*} bin=${b#*:}
  rm -rf "$TMP/data"
  "$bin" -w 1 -b 127.0.0.1:0 --data-dir "$TMP/data" --max-body-size 16777216 >"$TMP/server.log" 2>&1 &
  PIDS+=($!)
  master=$!
  port=$(wait_port "$TMP/server.log")
  worker=$(cat "/proc/$master/task/$master/children" | awk '{print $1}')
  for body in keys objects; do
    size=$(stat -c %s "$TMP/$body.json")
    before=$(hwm_kb "$worker")
    status=$(curl -s -o /dev/null -w '%{http_code}' -XPOST -H 'Content-Type: application/json' \
      --data-binary "@$TMP/$body.json" "http://127.0.0.1:$port/orders")
    after=$(hwm_kb "$worker")
    grew=$(( (after - before) * 1024 ))
    printf '%-24s %-10s %12d %13.1f MB %10s\n' "$name" "$body ($status)" "$size" \
      "$(awk -v g="$grew" 'BEGIN {print g / 1e6}')" "$(awk -v g="$grew" -v s="$size" 'BEGIN {printf "%.1f", g / s}')"
  done
  kill -TERM "$master"; wait "$master" 2>/dev/null || true
done
