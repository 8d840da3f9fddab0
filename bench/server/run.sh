#!/usr/bin/env bash
# Runs every server benchmark with one command and prints figures and
# ratios. Installs the comparison servers' dependencies locally (gitignored):
# bench/node_modules (npm `ws`) and bench/.venv (pip `websockets`).
#
#   bench/server/run.sh            # all scenarios
#   bench/server/run.sh fanout     # one of: fanout latency ingest resume memory
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root/bench"
if [ ! -d node_modules/ws ]; then
  npm install --no-save --silent --prefix "$root/bench" ws@8 >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet 'websockets>=13'
fi
cd "$root"
export RUNWIRE_BENCH_NODE="node $root/bench/server/ws_broadcast.js"
export NODE_PATH="$root/bench/node_modules"
export RUNWIRE_BENCH_PYTHON="$root/bench/.venv/bin/python $root/bench/server/ws_broadcast.py"
exec cargo bench -p runwire-server --bench server -- "${@:-all}"
