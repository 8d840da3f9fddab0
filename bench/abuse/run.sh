#!/usr/bin/env bash
# Starts `runwire serve` on a free loopback port with short admission deadlines and a
# memory store, replays the abuse cases of abuse.py against it with small counts, and
# stops it. Exits non-zero when a case fails (see abuse.py). Used by .ci/run.
#
#   RUNWIRE=target/debug/runwire bench/abuse/run.sh [abuse.py options]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
runwire="${RUNWIRE:-runwire}"
tmp="$(mktemp -d)"
cleanup() {
  [ -f "$tmp/pid" ] && kill "$(cat "$tmp/pid")" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
"$runwire" serve --listen 127.0.0.1:0 --store memory \
  --set header_timeout_ms=1000 --set handshake_timeout_ms=1000 \
  --set keep_alive_timeout_ms=1000 --set body_timeout_ms=1000 \
  --set hello_timeout_ms=1000 --set max_pre_hello_per_address=32 \
  --set close_timeout_ms=1000 --set pong_timeout_ms=1000 \
  >"$tmp/out" 2>"$tmp/err" &
echo $! >"$tmp/pid"
until grep -q "runwire serve listening on" "$tmp/out"; do
  kill -0 "$(cat "$tmp/pid")" 2>/dev/null || { cat "$tmp/out" "$tmp/err" >&2; exit 1; }
  sleep 0.05
done
addr="$(grep "runwire serve listening on" "$tmp/out" | head -1 | awk '{print $NF}')"
python3 "$here/abuse.py" "http://$addr" --count 40 --interval-ms 200 --shed-wait-s 10 \
  --runs 100 "$@"
