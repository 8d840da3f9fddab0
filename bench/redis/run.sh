#!/usr/bin/env bash
# Redis scale-out benchmarks: fan-out through Redis with two server nodes vs
# one node on the embedded SQLite store, publish-to-deliver latency across
# nodes, and ingest events/s into Redis.
#
# usage: bench/redis/run.sh [fanout|latency|ingest]     (default: all three)
# needs: redis-server on the PATH (Debian: apt-get install -y redis-server)
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install -y redis-server)" >&2; exit 2; }
exec cargo bench -p runwire-server --bench redis -- "$@"
